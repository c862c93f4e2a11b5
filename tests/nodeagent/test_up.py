"""``corral up`` as a user runs it: one process, real Docker containers on Corral's bridge, real
kubectl and the official Python client. What issue 5 must show, end to end: the web example
answers on every pod IP; containers killed restart in place (and crash-loop with back-off);
deleted and evicted pods are replaced; a restartPolicy Never pod ends Failed with its exit
code; exec works from kubectl and the Python client; bad specs say why in the pod's status
and Events while the other pods keep serving; Ctrl-C and a second ``corral up`` resume the
cluster without restarting a pod.

The cluster uses its own cluster CIDR and bridge (``corralt0``, 10.251.0.0/16), so it does not
meet a ``corral up`` of the user's; ``corral down --purge`` and a label sweep remove
everything it made, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftstore.localprocess import free_ports
from tests.api.harness import KUBECTL, Kubectl

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.kubectl]

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = "corralt0"
CLUSTER_CIDR = "10.251.0.0/16"
READY_LINE = ": Ready"
START_TIMEOUT_S = 90.0


class Up:
    """A ``corral up`` of this module, run as a user runs it; ``restart`` is Ctrl-C and run
    again on the same directory."""

    def __init__(self, data_dir: Path, args: list[str], cache: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.kubectl = Kubectl(str(data_dir / "admin.kubeconfig"), cache)
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        process = self.process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "up", *self.args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if READY_LINE in line:
                # Keep draining its output so that it never blocks on a full pipe.
                threading.Thread(target=lambda: self.output.extend(process.stdout or ()),
                                 daemon=True).start()
                return
        process.kill()
        raise AssertionError("corral up did not come up:\n" + "".join(self.output))

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def restart(self) -> int:
        code = self.stop()
        self.start()
        return code


def sweep() -> None:
    """Whatever is left of this module's cluster: its containers and its bridge."""
    import docker

    client = docker.from_env()
    for c in client.api.containers(all=True, filters={"label": "corral.dev/managed=true"}):
        labels = c.get("Labels") or {}
        if labels.get("corral.dev/pod-namespace", "").startswith("up-"):
            client.api.remove_container(c["Id"], force=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, require: Callable[[str], None]) -> Iterator[Up]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        require("root, iproute2 and nsenter")
    if shutil.which(KUBECTL) is None:
        require("kubectl")
    from nodeagent import images

    try:
        images.docker_client().close()
    except images.BaseImageError:
        require("docker")
    data_dir = tmp_path_factory.mktemp("up") / "data"
    api_port, peer_port = free_ports(2)
    args = ["--data-dir", str(data_dir), "--listen-api", f"127.0.0.1:{api_port}",
            "--listen-peer", f"127.0.0.1:{peer_port}", "--runtime", "docker",
            "--pod-network", "bridge", "--cluster-cidr", CLUSTER_CIDR, "--bridge", BRIDGE,
            "--node-name", "up-node"]
    cluster = Up(data_dir, args, str(tmp_path_factory.mktemp("kubecache")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        subprocess.run([sys.executable, "-m", "controlplane.cli", "down", "--data-dir",
                        str(data_dir), "--purge"], cwd=ROOT, capture_output=True, timeout=120)
        sweep()


@pytest.fixture
def ns(up: Up) -> Iterator[str]:
    name = f"up-{uuid.uuid4().hex[:6]}"
    up.kubectl("create", "namespace", name)
    yield name
    up.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout} s (last: {last!r})")


def pods(up: Up, ns: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", ns] + (["-l", selector] if selector else [])
    return up.kubectl.json(*args)["items"]


def pod(up: Up, ns: str, name: str) -> dict[str, Any]:
    return up.kubectl.json("get", "pod", "-n", ns, name)


def ready(p: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in p.get("status", {}).get("conditions", []))


def http_get(ip: str, port: int = 8080) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as answer:
        return answer.read().decode().strip()


def apply(up: Up, ns: str, manifest: dict[str, Any] | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    up.kubectl("apply", "-n", ns, "-f", "-", stdin=text)


def bare_pod(name: str, command: str, *, policy: str = "Always", image: str =
             "corral/base:latest", pull: str = "IfNotPresent", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": pull,
                                     "command": ["sh", "-c", command], **extra}]}}


def container_id(p: dict[str, Any]) -> str:
    return p["status"]["containerStatuses"][0]["containerID"].removeprefix("docker://")


def docker_kill(cid: str) -> None:
    subprocess.run(["docker", "kill", cid], check=True, capture_output=True)


def web_pods(up: Up, ns: str) -> list[dict[str, Any]] | None:
    found = pods(up, ns, "app=web")
    return found if len(found) == 3 and all(ready(p) for p in found) else None


# -- 1. the web example --------------------------------------------------------------------------

def test_web_example_answers_on_every_pod_ip(up: Up, ns: str) -> None:
    apply(up, ns, (ROOT / "examples" / "web.yaml").read_text())
    found = wait_for(lambda: web_pods(up, ns), timeout=90)
    ips = {p["status"]["podIP"] for p in found}
    assert len(ips) == 3 and all(ip.startswith("10.251.") for ip in ips)
    for p in found:
        assert http_get(p["status"]["podIP"]) == f"hello from {p['metadata']['name']}"
        assert p["status"]["hostIP"] == "127.0.0.1"
        assert p["status"]["containerStatuses"][0]["containerID"].startswith("docker://")
    # The API proxies logs to the agent: kubectl fails (check=True) if that path is broken;
    # httpd -f writes nothing, so the answer is empty.
    assert up.kubectl("logs", "-n", ns, found[0]["metadata"]["name"]).stdout == ""


# -- 2. self-healing -----------------------------------------------------------------------------

def test_killed_container_restarts_in_place_and_crashloops(up: Up, ns: str) -> None:
    apply(up, ns, bare_pod("sleeper", "exec sleep 3600"))
    first = wait_for(lambda: (p := pod(up, ns, "sleeper")) and ready(p) and p)
    docker_kill(container_id(first))
    again = wait_for(lambda: (p := pod(up, ns, "sleeper")) and ready(p)
                     and p["status"]["containerStatuses"][0]["restartCount"] == 1 and p)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]  # the same pod, in place
    last = again["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137

    apply(up, ns, bare_pod("crasher", "echo dying; exit 2"))
    crashing = wait_for(lambda: _waiting_reason(pod(up, ns, "crasher")) == "CrashLoopBackOff"
                        and pod(up, ns, "crasher"), timeout=60)
    status = crashing["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 1 and status["lastState"]["terminated"]["exitCode"] == 2
    assert "back-off" in status["state"]["waiting"]["message"]
    assert "dying" in up.kubectl("logs", "-n", ns, "crasher", "--previous").stdout
    reasons = {e["reason"] for e in up.kubectl.json("get", "events", "-n", ns)["items"]}
    assert {"Created", "Started", "Killing"} & reasons


def _waiting_reason(p: dict[str, Any]) -> str:
    statuses = p.get("status", {}).get("containerStatuses") or [{}]
    return ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason", "")


def test_deleted_and_evicted_pods_are_replaced(up: Up, ns: str) -> None:
    up.kubectl("create", "deployment", "rs", "-n", ns, "--image=corral/base:latest",
               "--replicas=2", "--", "sleep", "3600")
    start = wait_for(lambda: (f := pods(up, ns, "app=rs")) and len(f) == 2
                     and all(ready(p) for p in f) and f, timeout=90)
    victim = start[0]["metadata"]["name"]
    up.kubectl("delete", "pod", "-n", ns, victim, "--wait=false")
    after_delete = wait_for(lambda: _replaced(up, ns, {victim}), timeout=60)
    evictee = sorted(after_delete)[0]
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api = k8s.CoreV1Api(k8s_config.new_client_from_config(up.kubectl.kubeconfig))
    api.create_namespaced_pod_eviction(evictee, ns, k8s.V1Eviction(
        metadata=k8s.V1ObjectMeta(name=evictee, namespace=ns)))
    wait_for(lambda: _replaced(up, ns, {victim, evictee}), timeout=60)


def _replaced(up: Up, ns: str, gone: set[str]) -> set[str] | None:
    found = [p for p in pods(up, ns, "app=rs") if not p["metadata"].get("deletionTimestamp")]
    names = {p["metadata"]["name"] for p in found}
    if len(found) == 2 and not names & gone and all(ready(p) for p in found):
        return names
    return None


def test_never_pod_killed_ends_failed_with_exit_code(up: Up, ns: str) -> None:
    apply(up, ns, bare_pod("once", "exec sleep 3600", policy="Never"))
    running = wait_for(lambda: (p := pod(up, ns, "once")) and ready(p) and p)
    docker_kill(container_id(running))
    failed = wait_for(lambda: (p := pod(up, ns, "once"))["status"]["phase"] == "Failed" and p)
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 137 and terminated["reason"] == "Error"
    assert failed["status"]["containerStatuses"][0]["restartCount"] == 0


def test_probes_gate_readiness_and_restart_the_unhealthy(up: Up, ns: str) -> None:
    probe = {"periodSeconds": 1, "failureThreshold": 1}
    apply(up, ns, bare_pod(
        "probed", "touch /tmp/ok /tmp/ready && exec sleep 3600",
        livenessProbe={"exec": {"command": ["cat", "/tmp/ok"]}, "initialDelaySeconds": 1,
                       **probe},
        readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, **probe}))
    wait_for(lambda: ready(pod(up, ns, "probed")))
    up.kubectl("exec", "-n", ns, "probed", "--", "rm", "/tmp/ready")
    wait_for(lambda: not ready(pod(up, ns, "probed")))
    assert pod(up, ns, "probed")["status"]["containerStatuses"][0]["restartCount"] == 0
    up.kubectl("exec", "-n", ns, "probed", "--", "rm", "/tmp/ok")
    wait_for(lambda: pod(up, ns, "probed")["status"]["containerStatuses"][0]["restartCount"]
             == 1)
    assert "Liveness probe failed" in _event(up, ns, "probed", "Unhealthy")
    assert "failed liveness probe" in _event(up, ns, "probed", "Killing")
    wait_for(lambda: ready(pod(up, ns, "probed")))  # the new instance made its files again


# -- 4. exec -------------------------------------------------------------------------------------

def test_exec_from_kubectl_and_the_python_client(up: Up, ns: str) -> None:
    apply(up, ns, bare_pod("shell", "exec sleep 3600"))
    wait_for(lambda: ready(pod(up, ns, "shell")))
    done = up.kubectl("exec", "-n", ns, "shell", "--", "sh", "-c", "echo out; exit 3",
                      check=False)
    assert (done.stdout.strip(), done.returncode) == ("out", 3)
    piped = up.kubectl("exec", "-i", "-n", ns, "shell", "--", "cat", stdin="through stdin\n")
    assert piped.stdout == "through stdin\n"

    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.stream import stream

    api = k8s.CoreV1Api(k8s_config.new_client_from_config(up.kubectl.kubeconfig))
    out = stream(api.connect_get_namespaced_pod_exec, "shell", ns,
                 command=["sh", "-c", "echo $HOSTNAME"], stderr=True, stdin=False,
                 stdout=True, tty=False)
    assert out.strip() == "shell"
    session = stream(api.connect_get_namespaced_pod_exec, "shell", ns,
                     command=["sh", "-c", "exit 5"], stderr=True, stdin=False, stdout=True,
                     tty=False, _preload_content=False)
    session.run_forever(timeout=10)
    assert session.returncode == 5


# -- 5. bad specs --------------------------------------------------------------------------------

def test_bad_specs_say_why_and_the_rest_keeps_serving(up: Up, ns: str) -> None:
    apply(up, ns, bare_pod("fine", "mkdir -p /w && echo ok > /w/index.html && "
                                   "exec httpd -f -p 8080 -h /w"))
    apply(up, ns, bare_pod("noimage", "true", image="no-such-image:1", pull="Never"))
    apply(up, ns, bare_pod("pullfail", "true", image="no-such-image:1"))
    nocmd = bare_pod("nocmd", "")
    nocmd["spec"]["containers"][0]["command"] = ["/no/such/binary"]
    apply(up, ns, nocmd)
    nocm = bare_pod("nocm", "sleep 3600", volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])
    nocm["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "absent"}}]
    apply(up, ns, nocm)
    apply(up, ns, bare_pod("huge", "true", resources={"requests": {"cpu": "1000"}}))
    latest = bare_pod("latest", "exec sleep 3600", pull="Always")  # no registry: fallback
    apply(up, ns, latest)

    wait_for(lambda: _waiting_reason(pod(up, ns, "noimage")) == "ErrImageNeverPull")
    wait_for(lambda: _waiting_reason(pod(up, ns, "pullfail")) in ("ErrImagePull",
                                                                  "ImagePullBackOff"))
    wait_for(lambda: _waiting_reason(pod(up, ns, "nocmd")) == "CreateContainerError")
    assert "/no/such/binary" in json.dumps(pod(up, ns, "nocmd")["status"])
    wait_for(lambda: _event(up, ns, "nocm", "FailedMount"))
    assert 'configmap "absent" not found' in _event(up, ns, "nocm", "FailedMount")
    assert pod(up, ns, "nocm")["status"]["phase"] == "Pending"
    wait_for(lambda: _event(up, ns, "huge", "FailedScheduling"))
    assert "Insufficient cpu" in _event(up, ns, "huge", "FailedScheduling")
    assert "is not present with pull policy of Never" in _event(up, ns, "noimage",
                                                               "ErrImageNeverPull")
    wait_for(lambda: ready(pod(up, ns, "latest")))
    assert "using the image present on the node" in _event(up, ns, "latest",
                                                            "PullFailedUsingLocalImage")
    fine = wait_for(lambda: (p := pod(up, ns, "fine")) and ready(p) and p)
    assert http_get(fine["status"]["podIP"]) == "ok"


def _event(up: Up, ns: str, name: str, reason: str) -> str:
    """The messages of ``name``'s Events of ``reason``, one per line ("" if none)."""
    return "\n".join(str(e["message"]) for e in up.kubectl.json("get", "events", "-n", ns)[
        "items"] if e["involvedObject"]["name"] == name and e["reason"] == reason)


# -- 3. resume -----------------------------------------------------------------------------------

def test_stop_and_resume_restarts_no_pod(up: Up, ns: str) -> None:
    apply(up, ns, (ROOT / "examples" / "web.yaml").read_text())
    before = {p["metadata"]["name"]: p for p in wait_for(lambda: web_pods(up, ns), timeout=90)}
    assert up.restart() == 0
    time.sleep(3)  # the resumed agent relists and syncs every pod
    after = {p["metadata"]["name"]: p for p in wait_for(lambda: web_pods(up, ns), timeout=60)}
    assert after.keys() == before.keys()
    for name, p in after.items():
        status = p["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0
        assert status["containerID"] == before[name]["status"]["containerStatuses"][0][
            "containerID"]
        assert http_get(p["status"]["podIP"]) == f"hello from {name}"
