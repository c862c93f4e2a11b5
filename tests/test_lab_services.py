"""Services on a ``corral lab`` of three controllers and three nodes, as a user sees them (issue
7): every agent runs the Service proxy and cluster DNS, the controllers hand out ClusterIPs,
NodePorts and LoadBalancer IPs.

One lab for the module (``lab down`` at the end, also on failure); the Deployment ``web`` runs
``httpd`` on 8080 (its page is the pod's name; ``/ready`` is its readiness file) and a
persistent echo server on 9000 (``nc -ll``: the pod's name, then every line back). The client
pod's traffic is sent from inside its own network namespace (``nsenter --net``), so it takes the
pod's path: its veth, its node's bridge and rules, the overlay to other nodes.

The failover test runs last: it kills and restarts controllers.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from labcli import (
    client,
    corral_lab,
    kubectl,
    lab_up,
    pod_netns,
    run,
    running_pods,
)

from controlplane.client import (
    DEPLOYMENTS,
    ENDPOINTS,
    PODS,
    SERVICES,
    ApiError,
    NotFound,
)

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

NODES = 3
#: A small range, so that a ClusterIP handed out twice would show among the churned Services.
SERVICE_RANGE = "10.96.0.0/24"
#: The readiness probe's period; failureThreshold 1, so a backend is unready within it.
PROBE_PERIOD_S = 2
#: Allowed on top of the probe period for the status, the Endpoints and the rules to follow.
PROPAGATION_S = 1.0
FQDN = "web.default.svc.cluster.local"

WEB = ("echo $POD_NAME > /w/index.html; touch /w/ready; httpd -p 8080 -h /w; "
       "printf '#!/bin/sh\\necho $POD_NAME\\nexec cat\\n' > /w/echo; chmod +x /w/echo; "
       "exec nc -ll -p 9000 -e /w/echo")

#: GET / on a new connection each time: ``[time, body or error]`` per request, one JSON a line.
GETS = r"""
import json, socket, sys, time
host, port, count, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(count):
    started = time.time()
    try:
        with socket.create_connection((host, port), timeout=2) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        answer = body.decode().strip() if b" 200 " in head.split(b"\r\n")[0] else "bad:" + repr(head)
    except OSError as exc:
        answer = "error:" + type(exc).__name__
    print(json.dumps([started, answer]), flush=True)
    time.sleep(pause)
"""

#: ``count`` connections held open to the echo port: prints the backends' names, then sends a
#: numbered line on each every 0.2 s until a line arrives on stdin; then prints
#: ``[[backend, null or [time, error]], ...]``.
HOLD = r"""
import json, select, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def line(c):
    got = b""
    while not got.endswith(b"\n"):
        chunk = c.recv(64)
        if not chunk:
            raise ConnectionError("closed by the peer")
        got += chunk
    return got

conns = []
for _ in range(count):
    c = socket.create_connection((host, port), timeout=3)
    conns.append([c, line(c).decode().strip(), None])
print(json.dumps([name for _, name, _ in conns]), flush=True)
n = 0
while not select.select([sys.stdin], [], [], 0.2)[0]:
    n += 1
    for entry in conns:
        if entry[2] is not None:
            continue
        token = f"{n}\n".encode()
        try:
            entry[0].sendall(token)
            got = line(entry[0])
            if got != token:
                raise ValueError(f"echo {got!r} for {token!r}")
        except (OSError, ValueError) as exc:
            entry[2] = [time.time(), repr(exc)]
print(json.dumps([[name, failed] for _, name, failed in conns]), flush=True)
"""


#: GET /version from the API through the ``kubernetes`` Service, verifying the serving
#: certificate against the cluster CA under the in-cluster name.
KUBERNETES = r"""
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection((sys.argv[1], 443), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
        tls.sendall(b"GET /version HTTP/1.0\r\nHost: kubernetes.default.svc\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
print(data.partition(b"\r\n\r\n")[2].decode())
"""


@dataclass
class Lab:
    name: str
    directory: Path
    urls: list[str]
    node_ips: dict[str, str]
    created: list[str] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"

    def api(self) -> Any:
        return client(self.kubeconfig, *self.urls)


@pytest.fixture(scope="module")
def lab(require: Callable[[str], None], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Lab]:
    with lab_up(require, tmp_path_factory.mktemp("lab"), "s", "--controllers", "3",
                "--nodes", str(NODES), "--service-cluster-ip-range", SERVICE_RANGE
                ) as (name, directory):
        doc = yaml.safe_load((directory / "admin.kubeconfig").read_text())
        urls = [c["cluster"]["server"] for c in doc["clusters"]]
        node_ips = {f"{name}-n{i}": f"198.18.1.{10 + i}" for i in range(1, NODES + 1)}
        yield Lab(name, directory, urls, node_ips)


def web_deployment(replicas: int) -> dict[str, Any]:
    container = {
        "name": "web", "image": "corral/base:latest", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", WEB],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "echo",
                                                             "containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                           "periodSeconds": PROBE_PERIOD_S, "failureThreshold": 1},
        "volumeMounts": [{"name": "w", "mountPath": "/w"}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "w", "emptyDir": {}}]}}}}


def service(name: str, kind: str = "ClusterIP") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                               {"name": "echo", "port": 9000, "targetPort": 9000}]}}


@pytest.fixture(scope="module")
def web(lab: Lab) -> dict[str, Any]:
    """The Deployment (3 replicas, one per node), the Service ``web`` and a client pod;
    what the tests need of them."""
    client_pod = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "client", "labels": {"role": "client"}},
                  "spec": {"containers": [{"name": "client", "image": "corral/base:latest",
                                           "imagePullPolicy": "IfNotPresent",
                                           "command": ["sleep", "3600"]}]}}

    async def create() -> dict[str, Any]:
        async with lab.api() as api:  # the Service first: pods get its variables
            made = await api.create(SERVICES, "default", service("web"))
            await api.create(DEPLOYMENTS, "default", web_deployment(3))
            await api.create(PODS, "default", client_pod)
            return made

    svc = run(create())
    backends = run(running_pods(lab.kubeconfig, lab.urls[0], "app=web", 3, ready=True))
    client, = run(running_pods(lab.kubeconfig, lab.urls[0], "role=client", 1))
    return {"cluster_ip": svc["spec"]["clusterIP"], "backends": backends, "client": client}


def python_in(prefix: list[str], script: str, *args: object) -> list[str]:
    """argv running the test's Python ``script`` under ``prefix`` (a namespace)."""
    return [*prefix, sys.executable, "-c", script, *map(str, args)]


def gets(prefix: list[str], host: str, port: int, count: int, pause: float = 0.0
         ) -> list[tuple[float, str]]:
    """``count`` GETs from the namespace of ``prefix``: (time, body or error) each."""
    done = subprocess.run(python_in(prefix, GETS, host, port, count, pause),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [tuple(json.loads(line)) for line in done.stdout.splitlines()]


def answered_from(prefix: list[str], host: str, port: int, expected: set[str],
                  timeout: float = 20.0) -> Counter[str]:
    """GETs from the namespace of ``prefix`` until the answering backends are exactly
    ``expected`` (rules follow Services and Endpoints within moments); their counts."""
    deadline = time.monotonic() + timeout
    while True:
        seen = Counter(answer for _, answer in gets(prefix, host, port, 60))
        if set(seen) == expected:
            return seen
        assert time.monotonic() < deadline, f"{host}:{port} answered by {seen}, " \
            f"expected {expected}"
        time.sleep(0.5)


def answered_by(client_pod: dict[str, Any], cluster_ip: str, expected: set[str]
                ) -> Counter[str]:
    """``answered_from`` the client pod to the ClusterIP's port 80."""
    return answered_from(pod_netns(client_pod), cluster_ip, 80, expected)


def names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def test_clusterip_resolves_and_spreads_over_all_nodes(lab: Lab, web: dict[str, Any]) -> None:
    backends = web["backends"]
    assert {p["spec"]["nodeName"] for p in backends} == set(lab.node_ips), \
        "the three replicas are spread over the three nodes"
    lookup = kubectl(lab.kubeconfig, "exec", "client", "--", "nslookup", FQDN)
    assert lookup.returncode == 0, lookup.stdout + lookup.stderr
    assert web["cluster_ip"] in lookup.stdout.split("Name:", 1)[-1], lookup.stdout
    assert ipaddress.ip_address(web["cluster_ip"]) in ipaddress.ip_network(SERVICE_RANGE)

    seen = answered_by(web["client"], web["cluster_ip"], names(backends))
    assert min(seen.values()) >= 5, f"60 requests over 3 backends: {seen}"


def test_the_kubernetes_service_leads_to_every_api_server(lab: Lab, web: dict[str, Any]
                                                         ) -> None:
    """Every controller is an endpoint of ``default/kubernetes``; from a pod, its ClusterIP
    answers /version with a certificate valid for ``kubernetes.default.svc``; the pod's
    environment names it (and the pod's own Services) as the kubelet's does."""
    async def kubernetes() -> tuple[str, list[str]]:
        async with lab.api() as api:
            svc = await api.get(SERVICES, "default", "kubernetes")
            ep = await api.get(ENDPOINTS, "default", "kubernetes")
        return svc["spec"]["clusterIP"], sorted(
            f"{a['ip']}:{s['ports'][0]['port']}" for s in ep.get("subsets") or []
            for a in s["addresses"])

    expected = sorted(u.removeprefix("https://") for u in lab.urls)
    deadline = time.monotonic() + 15  # each controller renews every 10 s
    while (found := run(kubernetes()))[1] != expected:
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    cluster_ip = found[0]
    assert cluster_ip == str(ipaddress.ip_network(SERVICE_RANGE)[1])
    done = subprocess.run(python_in(pod_netns(web["client"]), KUBERNETES, cluster_ip,
                                    lab.directory / "pki" / "ca.crt"),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gitVersion"].startswith("v1."), done.stdout

    # What in-cluster clients read to find the API, and the variables of the pod's Services.
    env = kubectl(lab.kubeconfig, "exec", "client", "--", "env")
    assert env.returncode == 0, env.stderr
    variables = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)
    assert variables["KUBERNETES_SERVICE_HOST"] == cluster_ip
    assert variables["KUBERNETES_SERVICE_PORT"] == "443"
    assert variables["WEB_SERVICE_HOST"] == web["cluster_ip"]
    assert variables["WEB_SERVICE_PORT_HTTP"] == "80"
    assert variables["WEB_PORT_9000_TCP"] == f"tcp://{web['cluster_ip']}:9000"


def test_a_backend_failing_readiness_stops_receiving_within_the_probe_period(
        lab: Lab, web: dict[str, Any]) -> None:
    victim = min(names(web["backends"]))
    others = names(web["backends"]) - {victim}
    argv = python_in(pod_netns(web["client"]), GETS, web["cluster_ip"], 80, 300, 0.03)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as stream:
        time.sleep(2.0)
        unready_at = time.time()  # before the file goes: the measured delay is an upper bound
        removed = kubectl(lab.kubeconfig, "exec", victim, "--", "rm", "/w/ready")
        assert removed.returncode == 0, removed.stderr
        out, err = stream.communicate(timeout=120)
    assert stream.returncode == 0, err
    answers = [tuple(json.loads(line)) for line in out.splitlines()]
    assert not [a for a in answers if a[1] not in names(web["backends"])], answers
    to_victim = [t for t, who in answers if who == victim and t >= unready_at]
    last = max(to_victim, default=unready_at) - unready_at
    print(f"backend {victim}: last request {last:.2f} s after its readiness file was removed "
          f"(probe period {PROBE_PERIOD_S} s, failureThreshold 1)")
    assert last <= PROBE_PERIOD_S + PROPAGATION_S, f"still served {last:.2f} s later"
    later = [who for t, who in answers if t > unready_at + PROBE_PERIOD_S + PROPAGATION_S]
    assert len(later) >= 20 and set(later) == others, Counter(later)

    restored = kubectl(lab.kubeconfig, "exec", victim, "--", "touch", "/w/ready")
    assert restored.returncode == 0, restored.stderr
    answered_by(web["client"], web["cluster_ip"], names(web["backends"]))


def test_scaling_keeps_established_connections_to_surviving_backends(
        lab: Lab, web: dict[str, Any]) -> None:
    argv = python_in(pod_netns(web["client"]), HOLD, web["cluster_ip"], 9000, 12)
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as hold:
        try:
            first = json.loads(hold.stdout.readline() or "null")
            assert first and set(first) <= names(web["backends"]), hold.stderr.read()

            scaled = kubectl(lab.kubeconfig, "scale", "deployment/web", "--replicas=6")
            assert scaled.returncode == 0, scaled.stderr
            six = run(running_pods(lab.kubeconfig, lab.urls[0], "app=web", 6, ready=True))
            answered_by(web["client"], web["cluster_ip"], names(six))

            down_at = time.time()
            scaled = kubectl(lab.kubeconfig, "scale", "deployment/web", "--replicas=2")
            assert scaled.returncode == 0, scaled.stderr
            two = run(running_pods(lab.kubeconfig, lab.urls[0], "app=web", 2, ready=True))
            answered_by(web["client"], web["cluster_ip"], names(two))
            time.sleep(1.0)  # a few more rounds of echoes on the surviving connections
            out, err = hold.communicate("stop\n", timeout=60)
        finally:
            hold.kill()
    assert hold.returncode == 0, err
    held = json.loads(out.splitlines()[-1])
    survivors = [failed for backend, failed in held if backend in names(two)]
    assert survivors, f"no connection to a surviving backend: {held}"
    assert survivors == [None] * len(survivors), held
    assert all(failed is None or failed[0] >= down_at for _, failed in held), \
        f"a connection failed before the scale-down: {held}"
    web["backends"] = two


def test_nodeport_on_every_node_and_loadbalancer_ip_from_outside(lab: Lab, web: dict[str, Any]
                                                                  ) -> None:
    async def create() -> tuple[dict[str, Any], dict[str, Any]]:
        async with lab.api() as api:
            return (await api.create(SERVICES, "default", service("web-np", "NodePort")),
                    await api.create(SERVICES, "default", service("web-lb", "LoadBalancer")))

    node_port_svc, lb = run(create())
    node_port = next(p["nodePort"] for p in node_port_svc["spec"]["ports"] if p["port"] == 80)
    expected = names(web["backends"])
    with OutsideNamespace(lab) as argv:
        for ip in lab.node_ips.values():
            answered_from(argv, ip, node_port, expected)
        external = wait_ingress(lab, "web-lb")
        assert ipaddress.ip_address(external) in ipaddress.ip_network("198.19.255.0/24")
        shown = kubectl(lab.kubeconfig, "get", "service", "web-lb")
        assert external in shown.stdout, shown.stdout
        answered_from(argv, external, 80, expected)
    assert lb["spec"]["clusterIP"] != node_port_svc["spec"]["clusterIP"]


def wait_ingress(lab: Lab, name: str, timeout: float = 20.0) -> str:
    async def ingress() -> str | None:
        async with lab.api() as api:
            svc = await api.get(SERVICES, "default", name)
        entries = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        return entries[0].get("ip") if entries else None

    deadline = time.monotonic() + timeout
    while (ip := run(ingress())) is None:
        assert time.monotonic() < deadline, f"no status.loadBalancer.ingress on {name}"
        time.sleep(0.5)
    return ip


class OutsideNamespace:
    """A namespace on the lab's bridge that is no node and no pod (198.18.2.10): argv prefix
    to run in it. Removed at the end of the block."""

    def __init__(self, lab: Lab) -> None:
        self.netns = f"{lab.name}-x1"
        self.veth = f"{lab.name}-x1"
        self.bridge = f"crl-{lab.name}"

    def __enter__(self) -> list[str]:
        for argv in (["ip", "netns", "add", self.netns],
                     ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                      "netns", self.netns],
                     ["ip", "link", "set", self.veth, "master", self.bridge, "up"],
                     ["ip", "-n", self.netns, "addr", "add", "198.18.2.10/15", "dev", "eth0"],
                     ["ip", "-n", self.netns, "link", "set", "eth0", "up"],
                     ["ip", "-n", self.netns, "link", "set", "lo", "up"]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.__exit__()
                raise AssertionError(f"{argv}: {done.stderr}")
        return ["ip", "netns", "exec", self.netns]

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


def test_controller_failover_during_service_churn_never_duplicates_a_cluster_ip(
        lab: Lab) -> None:
    """Four clients create and delete Services through every controller while the leader is
    SIGKILLed and restarted three times: no two live Services ever share a ClusterIP, every
    acknowledged one is there at the end with the IP it was given."""
    alive: dict[str, str] = {}  # acknowledged, not deleted: name -> ClusterIP
    lock = threading.Lock()
    stop = threading.Event()
    clashes: list[str] = []
    leaders: list[str] = []
    counts = Counter[str]()

    def churn(worker: int) -> None:
        async def main() -> None:
            async with client(lab.kubeconfig, *lab.urls) as api:
                mine: list[str] = []
                i = 0
                while not stop.is_set():
                    i += 1
                    name = f"churn-{worker}-{i}"
                    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                            "spec": {"ports": [{"port": 80}]}}
                    try:
                        made = await api.create(SERVICES, "default", body)
                    except ApiError:
                        count("create failed")  # maybe made: then the final check sees it
                        continue
                    ip = made["spec"]["clusterIP"]
                    with lock:
                        holder = next((n for n, other in alive.items() if other == ip), None)
                        if holder is not None:
                            clashes.append(f"{name} got {ip} of live {holder}")
                        alive[name] = ip
                    count("created")
                    mine.append(name)
                    if len(mine) > 25:
                        gone = mine.pop(0)
                        with lock:  # before the delete: its IP may be handed out at once
                            alive.pop(gone)
                        while not await deleted(api, gone):
                            count("delete failed")
                        count("deleted")

        async def deleted(api: Any, name: str) -> bool:
            try:
                await api.delete(SERVICES, "default", name)
            except NotFound:
                return True  # an earlier attempt did it
            except ApiError:  # Unavailable: no controller answered, or no quorum yet
                return False
            return True

        def count(what: str) -> None:
            with lock:
                counts[what] += 1

        run(main())

    workers = [threading.Thread(target=churn, args=(w,), daemon=True) for w in range(4)]
    for w in workers:
        w.start()
    try:
        for _ in range(3):
            time.sleep(4.0)
            leader = lab_leader(lab)
            killed = corral_lab("kill", "--dir", str(lab.directory), leader)
            assert killed.returncode == 0, killed.stderr
            successor = lab_leader(lab)  # the dead one is never reported as leading
            leaders.append(f"{leader} -> {successor}")
            started = corral_lab("start", "--dir", str(lab.directory), leader)
            assert started.returncode == 0, started.stderr
        time.sleep(4.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    print(f"churn: {dict(counts)}; leaders killed: {', '.join(leaders)}")
    assert not clashes, clashes
    assert counts["created"] >= 100 and counts["deleted"] >= 20, counts

    async def listed() -> dict[str, str]:
        async with lab.api() as api:
            items = (await api.list(SERVICES, "default")).items
        return {s["metadata"]["name"]: s["spec"].get("clusterIP") for s in items}

    final = run(listed())
    churned = {n: ip for n, ip in final.items() if n.startswith("churn-")}
    ips = [ip for ip in final.values() if ip and ip != "None"]
    assert len(ips) == len(set(ips)), Counter(ips).most_common(3)
    for name, ip in alive.items():  # nothing acknowledged lost, nothing changed
        assert churned.get(name) == ip, (name, ip, churned.get(name))


def lab_leader(lab: Lab, timeout: float = 30.0) -> str:
    """The controller that leads now (``lab status``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = corral_lab("status", "--dir", str(lab.directory))
        leaders = [line.split()[0] for line in status.stdout.splitlines()
                   if line.endswith(" leader")]
        if len(leaders) == 1:
            return leaders[0]
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(0.5)
