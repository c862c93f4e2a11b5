"""``corral lab`` as a user runs it: three controllers and two nodes, each in its own network
namespace on 198.18.0.0/15, real Docker pods on each node's own ``corral0``.

What it must show: every controller answers (one kubeconfig context each), both nodes go
Ready, a Deployment's pods run and answer HTTP from inside their node's namespace; SIGKILL of the
leading controller leaves an API that answers and schedules a new pod; ``lab status`` tells who
is dead and who leads; ``lab down`` leaves no namespace, bridge, FORWARD rule or pod container,
and running it again is fine. ``lab down`` also removes a crashed lab by its names alone, and
``lab up`` takes the place of a lab in which nothing runs any more (never of a live one).

Pods on different nodes reach each other by Pod IP through the overlay (issue 6), and a capture
on the lab's bridge during such a request sees, between the nodes, only WireGuard messages and
never the answer's payload in clear; ``lab down`` stops the nodes' detached ``corral wg`` too.
Each lab has a unique short --name, and ``lab down`` runs at the end also when a test fails.

Agents run the Service proxy and cluster DNS: from inside a pod, ``web.default.svc.cluster.local``
resolves (the pod's resolv.conf names its node's bridge gateway) to the Service's ClusterIP, and
requests to the ClusterIP are answered by both backends, one on each node.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import yaml
from labcli import (
    NODE_LABEL,
    check_privileged,
    client,
    corral_lab,
    lab_containers,
    link_exists,
    netns_names,
    run,
    running_pods,
)

from controlplane.client import DEPLOYMENTS, NODES, PODS, SERVICES, ApiError

HTTPD = "echo hi > /w/index.html; exec httpd -f -p 8080 -h /w"


@pytest.fixture
def privileged(require: Callable[[str], None]) -> None:
    check_privileged(require)


@pytest.fixture
def lab(privileged: None, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A unique lab name and directory; ``lab down`` afterwards whatever happened."""
    name, directory = "t" + uuid.uuid4().hex[:6], tmp_path / "lab"
    yield name, directory
    corral_lab("down", "--dir", str(directory), "--name", name)


def web_deployment() -> dict[str, Any]:
    pod = {
        "containers": [{"name": "httpd", "image": "corral/base:latest",
                        "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", HTTPD],
                        "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
        "volumes": [{"name": "w", "emptyDir": {}}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod}}}


def http_from_node(node: str, ip: str) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen('http://{ip}:8080/', " \
           "timeout=5).read().decode(), end='')"
    done = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pinned_pod(name: str, node: str, payload: str) -> dict[str, Any]:
    """An httpd pod on ``node`` (``nodeName``) whose index.html is ``payload``."""
    serve = f"echo {payload} > /w/index.html; exec httpd -f -p 8080 -h /w"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "xnode"}},
            "spec": {"nodeName": node, "containers": [{
                "name": "httpd", "image": "corral/base:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", serve],
                "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
                "volumes": [{"name": "w", "emptyDir": {}}]}}


def kubectl_http_get(kubeconfig: Path, pod: str, ip: str) -> str:
    """The body of GET http://ip:8080/ from inside ``pod``, through kubectl exec. Busybox's
    ``nc`` speaks the HTTP: the static Debian busybox's ``wget`` dies of SIGSEGV (exit 139)."""
    request = f"printf 'GET / HTTP/1.0\\r\\nHost: {ip}\\r\\n\\r\\n' | nc -w 10 {ip} 8080"
    done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "exec", pod, "-c",
                           "httpd", "--", "sh", "-c", request],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    head, sep, body = done.stdout.partition("\n\n")  # text mode made \r\n \n
    assert sep and head.startswith("HTTP/1.") and " 200 " in head.splitlines()[0], done.stdout
    return body


SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, ETH_P_ALL = 263, 1, 1, 0x0003
WG_PORT = 51820
NODES_NET = ipaddress.ip_network("198.18.1.0/24")


class BridgeCapture:
    """Every frame crossing the lab's bridge while running (AF_PACKET, the bridge made
    promiscuous so frames forwarded between its ports are seen too)."""

    def __init__(self, bridge: str) -> None:
        self.frames: list[bytes] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((bridge, 0))
        mreq = struct.pack("iHH8s", socket.if_nametoindex(bridge), PACKET_MR_PROMISC, 0, b"")
        self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self._sock.recv(65535))
            except TimeoutError:
                pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def between_nodes(frames: list[bytes]) -> list[tuple[str, str, int, bytes]]:
    """(src, dst, IP protocol, IP payload) of the IPv4 frames between two lab nodes."""
    found = []
    for f in frames:
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            continue
        ihl = (f[14] & 0x0F) * 4
        src, dst = ipaddress.ip_address(f[26:30]), ipaddress.ip_address(f[30:34])
        if src in NODES_NET and dst in NODES_NET:
            total = struct.unpack("!H", f[16:18])[0]
            found.append((str(src), str(dst), f[23], f[14 + ihl:14 + total]))
    return found


def check_cross_node_pods(name: str, directory: Path, url: str) -> dict[int, str]:
    """Two pods on different nodes fetch each other's page by Pod IP; on the bridge meanwhile
    only WireGuard messages pass between the nodes and the page is never seen in clear."""
    kubeconfig = directory / "admin.kubeconfig"
    payload = {n: f"overlay-{n}-{uuid.uuid4().hex}" for n in (1, 2)}

    async def create_pods() -> None:
        async with client(kubeconfig, url) as api:
            for n in (1, 2):
                await api.create(PODS, "default",
                                 pinned_pod(f"x{n}", f"{name}-n{n}", payload[n]))

    run(create_pods())
    pods = {p["metadata"]["name"]: p for p in run(running_pods(kubeconfig, url, "app=xnode", 2))}
    assert pods["x1"]["spec"]["nodeName"] == f"{name}-n1"
    assert pods["x2"]["spec"]["nodeName"] == f"{name}-n2"
    ip1, ip2 = pods["x1"]["status"]["podIP"], pods["x2"]["status"]["podIP"]
    assert ipaddress.ip_address(ip1) not in ipaddress.ip_network(ip2 + "/24", strict=False)

    with BridgeCapture(f"crl-{name}") as capture:
        assert kubectl_http_get(kubeconfig, "x1", ip2) == payload[2] + "\n"
        assert kubectl_http_get(kubeconfig, "x2", ip1) == payload[1] + "\n"
        time.sleep(0.5)
    assert capture.frames
    for n in (1, 2):
        assert not [f for f in capture.frames if payload[n].encode() in f], "payload in clear"
    crossing = between_nodes(capture.frames)
    data = 0
    for src, dst, proto, body in crossing:
        assert proto == socket.IPPROTO_UDP, (src, dst, proto)
        sport, dport = struct.unpack("!HH", body[:4])
        assert (sport, dport) == (WG_PORT, WG_PORT), (src, dst, sport, dport)
        message = body[8:]
        assert message[0] in (1, 2, 3, 4) and message[1:4] == b"\0\0\0", message[:4].hex()
        data += message[0] == 4
    assert data >= 4, f"{data} WireGuard data messages between the nodes"
    return payload


def check_service_and_dns(directory: Path, url: str, payload: dict[int, str]) -> None:
    """A ClusterIP Service ``web`` over the pods x1 and x2 (one per node): from inside x1 its
    name resolves through the node's cluster DNS to the ClusterIP, and requests to the ClusterIP
    reach both backends (x1 through the hairpin, x2 through the overlay)."""
    kubeconfig = directory / "admin.kubeconfig"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "xnode"},
                        "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}

    async def create() -> str:
        async with client(kubeconfig, url) as api:
            made = await api.create(SERVICES, "default", service)
        return str(made["spec"]["clusterIP"])

    cluster_ip = run(create())
    fqdn = "web.default.svc.cluster.local"
    get = (f"printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 "
           "| tail -n 1")
    script = (f"cat /etc/resolv.conf; echo ==; nslookup {fqdn}; echo ==; "
              f"for i in 1 2 3 4 5 6 7 8 9 10 11 12; do {get}; done")
    seen: set[str] = set()
    deadline = time.monotonic() + 20  # the proxies' rules and the endpoints come within moments
    while True:
        done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "exec", "x1", "-c",
                               "httpd", "--", "sh", "-c", script],
                              capture_output=True, text=True, timeout=60, check=False)
        resolv, _, rest = done.stdout.partition("==\n")
        lookup, _, answers = rest.partition("==\n")
        seen = {line.strip() for line in answers.splitlines() if line.strip()}
        resolved = cluster_ip in lookup.split("Name:", 1)[-1]
        if resolved and {payload[1], payload[2]} <= seen:
            break
        assert time.monotonic() < deadline, (
            f"ClusterIP {cluster_ip}: {done.stdout!r} {done.stderr!r}")
        time.sleep(1)
    nameservers = [line.split()[1] for line in resolv.splitlines()
                   if line.startswith("nameserver")]
    assert len(nameservers) == 1 and ipaddress.ip_address(nameservers[0]) in \
        ipaddress.ip_network("10.244.0.0/16"), resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv, resolv
    assert seen <= {payload[1], payload[2]}, seen


def overlay_processes(name: str) -> list[int]:
    """Processes of ``corral wg <name>-wI`` still running anywhere."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"overlay.main" in argv and any(a.startswith(f"{name}-w".encode()) for a in argv):
            found.append(int(proc.name))
    return found


@pytest.mark.privileged
@pytest.mark.slow
def test_lab_up_survives_leader_loss_and_down_removes_everything(
        lab: tuple[str, Path]) -> None:
    name, directory = lab
    started = corral_lab("up", "--controllers", "3", "--nodes", "2",
                         "--dir", str(directory), "--name", name)
    assert started.returncode == 0, started.stdout + started.stderr
    for n in (1, 2):
        assert f"node {name}-n{n} (198.18.1.{10 + n}): Ready" in started.stdout

    kubeconfig = directory / "admin.kubeconfig"
    doc = yaml.safe_load(kubeconfig.read_text())
    controllers = [f"{name}-c{i}" for i in (1, 2, 3)]
    assert [c["name"] for c in doc["contexts"]] == controllers
    assert doc["current-context"] == f"{name}-c1"
    urls = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
    assert urls[f"{name}-c2"] == "https://198.18.0.12:6443"

    async def nodes_via(url: str) -> dict[str, str]:
        async with client(kubeconfig, url) as api:
            listed = (await api.list(NODES)).items
        return {n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"]
                                            if c["type"] == "Ready") for n in listed}

    for url in urls.values():  # every controller answers, from the root namespace
        assert run(nodes_via(url)) == {f"{name}-n1": "True", f"{name}-n2": "True"}

    async def create(url: str, res: Any, obj: dict[str, Any]) -> None:
        async with client(kubeconfig, url) as api:
            await api.create(res, "default", obj)

    run(create(urls[f"{name}-c1"], DEPLOYMENTS, web_deployment()))
    pods = run(running_pods(kubeconfig, urls[f"{name}-c1"], "app=web", 2))
    for pod in pods:  # each pod answers inside its own node's namespace
        node = pod["spec"]["nodeName"]
        assert node in (f"{name}-n1", f"{name}-n2")
        assert http_from_node(node, pod["status"]["podIP"]) == "hi\n"

    # Across nodes, through the overlay: each node runs its own `corral wg <name>-wI`.
    assert len(overlay_processes(name)) == 2
    payload = check_cross_node_pods(name, directory, urls[f"{name}-c1"])
    check_service_and_dns(directory, urls[f"{name}-c1"], payload)  # Service proxy, cluster DNS

    # SIGKILL the leading controller: another one answers and a new pod gets scheduled and runs.
    status = corral_lab("status", "--dir", str(directory))
    assert status.returncode == 0, status.stderr
    leader = [line.split()[0] for line in status.stdout.splitlines() if line.endswith(" leader")]
    assert len(leader) == 1, status.stdout
    state = json.loads((directory / "state.json").read_text())
    pid = next(h["pid"] for h in state["controllers"] if h["name"] == leader[0])
    os.kill(pid, signal.SIGKILL)
    survivor = urls[next(c for c in controllers if c != leader[0])]
    single = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "after", "labels": {"app": "after"}},
              "spec": web_deployment()["spec"]["template"]["spec"]}
    deadline = time.monotonic() + 30
    while True:
        try:
            run(create(survivor, PODS, single))
            break
        except ApiError:  # no quorum for a moment, while a new leader is elected
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    after = run(running_pods(kubeconfig, survivor, "app=after", 1))[0]
    assert http_from_node(after["spec"]["nodeName"], after["status"]["podIP"]) == "hi\n"

    status = corral_lab("status", "--dir", str(directory))
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert " dead" in lines[leader[0]], status.stdout
    assert sum(line.endswith(" leader") for line in lines.values()) == 1, status.stdout
    assert not lines[leader[0]].endswith(" leader")
    for n in (1, 2):
        assert lines[f"{name}-n{n}"].endswith(" running Ready"), status.stdout

    down = corral_lab("down", "--dir", str(directory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [ns for ns in netns_names() if ns.startswith(f"{name}-")]
    assert not link_exists(f"crl-{name}")
    assert not lab_containers(name)
    assert f"corral lab {name}" not in subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False).stdout
    assert not directory.exists()
    assert not overlay_processes(name)
    assert not [p for p in Path("/var/run/wireguard").glob(f"{name}-w*")]
    again = corral_lab("down", "--dir", str(directory), "--name", name)
    assert again.returncode == 0, again.stderr


@pytest.mark.privileged
def test_down_removes_a_crashed_lab_by_its_names(lab: tuple[str, Path]) -> None:
    """No state file: the namespaces, the bridge and a pod container of the lab's node are
    found by their names and removed; other namespaces stay."""
    name, directory = lab
    other = f"{name}x-c1"  # another lab's namespace that a sloppy prefix match would take
    bridge = f"crl-{name}"
    for argv in (["ip", "netns", "add", f"{name}-c1"], ["ip", "netns", "add", f"{name}-n1"],
                 ["ip", "netns", "add", other],
                 ["ip", "link", "add", "name", bridge, "type", "bridge"]):
        subprocess.run(argv, check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{name}-n1", "sleep", "60"])
    container = subprocess.run(
        ["docker", "run", "-d", "--network", "none", "--label", f"{NODE_LABEL}={name}-n1",
         "corral/base:latest", "sleep", "60"], capture_output=True, text=True, check=False)
    try:
        down = corral_lab("down", "--dir", str(directory), "--name", name)
        assert down.returncode == 0, down.stderr
        assert sleeper.wait(timeout=15) is not None
        names = netns_names()
        assert f"{name}-c1" not in names and f"{name}-n1" not in names
        assert other in names
        assert not link_exists(bridge)
        if container.returncode == 0:  # the base image is there when the agent tests ran
            assert not lab_containers(name)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)
        sleeper.kill()


@pytest.mark.privileged
def test_up_takes_the_place_of_a_dead_lab_and_never_of_a_live_one(
        lab: tuple[str, Path]) -> None:
    """Another lab's bridge holds the gateway: while a process runs in one of its namespaces
    ``lab up`` refuses; once none does (a killed run's remains) they are removed."""
    from controlplane import lab as labmod

    name, directory = lab
    other = f"{name}z"
    said: list[str] = []
    for argv in (["ip", "link", "add", "name", f"crl-{other}", "type", "bridge"],
                 ["ip", "addr", "add", f"{labmod.GATEWAY}/15", "dev", f"crl-{other}"],
                 ["ip", "netns", "add", f"{other}-c1"]):
        subprocess.run(argv, check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{other}-c1", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while not subprocess.run(["ip", "netns", "pids", f"{other}-c1"], capture_output=True,
                                 text=True, check=False).stdout.strip():
            assert time.monotonic() < deadline, "sleep never showed in the namespace"
            time.sleep(0.1)
        with pytest.raises(labmod.LabError, match="one lab at a time"):
            labmod._refuse_existing(name, directory, said.append)
        assert link_exists(f"crl-{other}") and f"{other}-c1" in netns_names()

        sleeper.kill()
        sleeper.wait(timeout=10)
        labmod._refuse_existing(name, directory, said.append)
        assert not link_exists(f"crl-{other}") and f"{other}-c1" not in netns_names()
        assert any(f"lab {other} holds" in line for line in said), said
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "del", f"{other}-c1"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"crl-{other}"], capture_output=True, check=False)


def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path) -> None:
    done = corral_lab("up", "--name", "Bad_Name", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--name 'Bad_Name'" in done.stderr
    done = corral_lab("status", "--dir", str(tmp_path / "none"))
    assert done.returncode == 2 and "no lab recorded" in done.stderr
