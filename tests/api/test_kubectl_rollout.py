"""``kubectl rollout`` against three ``corral controller`` processes with hollow nodes: the
Deployment controller's revisions and status are what kubectl reads (status, history, undo,
pause, resume, restart), and a BlueGreen Deployment promoted by ``kubectl rollout resume``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml
from harness import Kubectl
from labkit import hollow_nodes

from controlplane.localcluster import ControlPlane

pytestmark = [pytest.mark.kubectl, pytest.mark.slow]

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        resources:
          requests: {cpu: 100m}
"""


@pytest.fixture(scope="module", autouse=True)
def nodes(control_plane: ControlPlane) -> Iterator[None]:
    with hollow_nodes(control_plane.urls, control_plane.ssl_context(),
                      [f"node-{i}" for i in range(3)]):
        yield


def _status(kubectl: Kubectl, ns: str) -> str:
    return kubectl("rollout", "status", "-n", ns, "deploy/web", "--timeout=60s",
                   timeout=90).stdout


def _images(kubectl: Kubectl, ns: str) -> list[str]:
    pods = kubectl.json("get", "pods", "-n", ns, "-l", "app=web")["items"]
    return sorted(p["spec"]["containers"][0]["image"] for p in pods
                  if not p["metadata"].get("deletionTimestamp"))


def _replicasets(kubectl: Kubectl, ns: str) -> dict[str, tuple[str, int]]:
    """Revision -> (image, replicas) of the Deployment's ReplicaSets."""
    sets = kubectl.json("get", "rs", "-n", ns, "-l", "app=web")["items"]
    return {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]:
            (rs["spec"]["template"]["spec"]["containers"][0]["image"], rs["spec"]["replicas"])
            for rs in sets}


def test_rollout_status_history_and_undo(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=DEPLOYMENT)
    assert 'deployment "web" successfully rolled out' in _status(kubectl, ns)
    ready = kubectl("get", "deploy", "-n", ns, "web").stdout.splitlines()[1].split()
    assert ready[:4] == ["web", "3/3", "3", "3"]

    kubectl("set", "image", "-n", ns, "deploy/web", "main=busybox:1.37")
    kubectl("annotate", "-n", ns, "deploy/web", "kubernetes.io/change-cause=upgrade to 1.37")
    assert "successfully rolled out" in _status(kubectl, ns)
    assert _images(kubectl, ns) == ["busybox:1.37"] * 3
    assert _replicasets(kubectl, ns) == {"1": ("busybox:1.36", 0), "2": ("busybox:1.37", 3)}
    history = kubectl("rollout", "history", "-n", ns, "deploy/web").stdout
    lines = [line.split(None, 1) for line in history.splitlines()[2:] if line.strip()]
    assert [line[0] for line in lines] == ["1", "2"]
    assert lines[1][1].strip() == "upgrade to 1.37"
    first = kubectl("rollout", "history", "-n", ns, "deploy/web", "--revision=1").stdout
    assert "busybox:1.36" in first

    out = kubectl("rollout", "undo", "-n", ns, "deploy/web").stdout
    assert "deployment.apps/web rolled back" in out
    assert "successfully rolled out" in _status(kubectl, ns)
    assert _images(kubectl, ns) == ["busybox:1.36"] * 3
    # The old ReplicaSet came back as revision 3: no third ReplicaSet.
    assert _replicasets(kubectl, ns) == {"2": ("busybox:1.37", 0), "3": ("busybox:1.36", 3)}


def test_pause_resume_and_restart(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=DEPLOYMENT)
    _status(kubectl, ns)
    kubectl("rollout", "pause", "-n", ns, "deploy/web")
    kubectl("set", "image", "-n", ns, "deploy/web", "main=busybox:1.37")
    paused = kubectl("rollout", "status", "-n", ns, "deploy/web", "--timeout=3s", check=False)
    assert paused.returncode != 0
    assert list(_replicasets(kubectl, ns)) == ["1"]  # paused: no rollout
    kubectl("rollout", "resume", "-n", ns, "deploy/web")
    assert "successfully rolled out" in _status(kubectl, ns)
    assert _images(kubectl, ns) == ["busybox:1.37"] * 3

    kubectl("rollout", "restart", "-n", ns, "deploy/web")
    assert "successfully rolled out" in _status(kubectl, ns)
    assert sorted(_replicasets(kubectl, ns)) == ["1", "2", "3"]
    assert _replicasets(kubectl, ns)["3"] == ("busybox:1.37", 3)


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


def _blue_green() -> str:
    """DEPLOYMENT with 2 replicas as a BlueGreen waiting for manual promotion, and its
    active Service."""
    deployment = yaml.safe_load(DEPLOYMENT)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["strategy"] = {"type": "BlueGreen", "blueGreen": {
        "activeService": "web", "autoPromotionEnabled": False, "scaleDownDelaySeconds": 1}}
    return yaml.safe_dump_all([SERVICE, deployment])


def _wait_for(predicate, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.3)


def test_blue_green_promoted_by_rollout_resume(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=_blue_green())
    assert "successfully rolled out" in _status(kubectl, ns)
    kubectl("set", "image", "-n", ns, "deploy/web", "main=busybox:1.37")

    def paused() -> bool:  # the new side is available: paused for promotion
        return bool(kubectl.json("get", "deploy", "-n", ns, "web")["spec"].get("paused"))
    _wait_for(paused, "paused for promotion")
    sets = kubectl.json("get", "rs", "-n", ns, "-l", "app=web")["items"]
    hashes = {rs["spec"]["template"]["spec"]["containers"][0]["image"]:
              rs["metadata"]["labels"]["pod-template-hash"] for rs in sets}
    selector = kubectl.json("get", "svc", "-n", ns, "web")["spec"]["selector"]
    assert selector == {"app": "web", "pod-template-hash": hashes["busybox:1.36"]}

    out = kubectl("rollout", "resume", "-n", ns, "deploy/web").stdout
    assert "resumed" in out
    assert "successfully rolled out" in _status(kubectl, ns)
    selector = kubectl.json("get", "svc", "-n", ns, "web")["spec"]["selector"]
    assert selector == {"app": "web", "pod-template-hash": hashes["busybox:1.37"]}
    assert _images(kubectl, ns) == ["busybox:1.37"] * 2
    assert _replicasets(kubectl, ns) == {"1": ("busybox:1.36", 0), "2": ("busybox:1.37", 2)}
