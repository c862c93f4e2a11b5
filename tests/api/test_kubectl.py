"""The real kubectl against three ``corral controller`` processes over HTTPS.

``/usr/bin/kubectl`` is a dispatcher that runs the kubectl matching the server's /version
(see docs/api.md); every command here goes through it, with the admin kubeconfig the first
controller wrote. Objects live in a namespace per test, so tests stay independent.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import yaml
from harness import KUBECTL, Kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.slow]

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {tier: web}
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""


def test_server_version_picks_a_json_kubectl(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["major"] == "1"
    client_minor = version["clientVersion"]["minor"]
    assert client_minor == version["serverVersion"]["minor"]


def test_apply_client_side_then_change(kubectl: Kubectl, ns: str) -> None:
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST).stdout
    assert "configmap/settings created" in out and "deployment.apps/web created" in out
    assert "service/web created" in out
    again = kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST).stdout
    assert "configmap/settings unchanged" in again and "deployment.apps/web unchanged" in again
    changed = MANIFEST.replace("busybox:1.36", "busybox:1.37").replace("mode: fast",
                                                                        "mode: slow")
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=changed).stdout
    assert "deployment.apps/web configured" in out and "configmap/settings configured" in out
    deploy = kubectl.json("get", "-n", ns, "deployment", "web")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.37"
    assert deploy["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]
    assert kubectl.json("get", "-n", ns, "cm", "settings")["data"] == {"mode": "slow"}


def test_apply_server_side_and_conflict(kubectl: Kubectl, ns: str) -> None:
    out = kubectl("apply", "--server-side", "-n", ns, "-f", "-", stdin=MANIFEST).stdout
    assert "deployment.apps/web serverside-applied" in out
    kubectl("scale", "-n", ns, "deployment/web", "--replicas=5")
    changed = MANIFEST.replace("replicas: 2", "replicas: 3")
    conflict = kubectl("apply", "--server-side", "-n", ns, "-f", "-", stdin=changed, check=False)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower() and ".spec.replicas" in conflict.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-", stdin=changed)
    assert kubectl.json("get", "-n", ns, "deploy", "web")["spec"]["replicas"] == 3


def test_get_wide_yaml_and_columns(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    kubectl("create", "-n", ns, "-f", "-", stdin=json.dumps(pod))
    pods = kubectl("get", "pods", "-n", ns).stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:4] == ["p1", "0/1", "Pending", "0"]
    wide = kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    deploys = kubectl("get", "deploy", "-n", ns).stdout.splitlines()
    assert deploys[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploys[1].split()[:2] == ["web", "0/2"]
    services = kubectl("get", "svc", "-n", ns).stdout.splitlines()[0].split()
    assert services == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    doc = yaml.safe_load(kubectl("get", "-n", ns, "cm", "settings", "-o", "yaml").stdout)
    assert doc["data"] == {"mode": "fast"} and doc["metadata"]["labels"] == {"tier": "web"}


def test_get_watch_sees_changes(kubectl: Kubectl, ns: str) -> None:
    kubectl("create", "configmap", "watched", "-n", ns, "--from-literal=a=1")
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", kubectl.kubeconfig, "--cache-dir", kubectl.cache_dir,
         "get", "cm", "-n", ns, "-w", "--output-watch-events"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        header, first = proc.stdout.readline(), proc.stdout.readline()
        assert header.split()[:3] == ["EVENT", "NAME", "DATA"]
        assert first.split()[:3] == ["ADDED", "watched", "1"]
        kubectl("label", "cm", "watched", "-n", ns, "seen=yes")
        kubectl("delete", "cm", "watched", "-n", ns)
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:
        proc.kill()
        proc.wait()
    assert [line.split()[:2] for line in lines] == [["MODIFIED", "watched"],
                                                     ["DELETED", "watched"]]


def test_describe_label_annotate_scale(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST)
    described = kubectl("describe", "-n", ns, "deployment", "web").stdout
    assert "Replicas:" in described and "busybox:1.36" in described
    assert "RollingUpdate" in described
    kubectl("label", "-n", ns, "cm", "settings", "team=core")
    kubectl("annotate", "-n", ns, "cm", "settings", "note=hello")
    cm = kubectl.json("get", "-n", ns, "cm", "settings")
    assert cm["metadata"]["labels"]["team"] == "core"
    assert cm["metadata"]["annotations"]["note"] == "hello"
    listed = kubectl("get", "cm", "-n", ns, "-l", "team=core", "-o", "name").stdout.split()
    assert listed == ["configmap/settings"]
    kubectl("scale", "-n", ns, "deployment/web", "--replicas=4")
    assert kubectl.json("get", "-n", ns, "deploy", "web")["spec"]["replicas"] == 4
    kubectl("label", "-n", ns, "cm", "settings", "team-")
    assert "team" not in kubectl.json("get", "-n", ns, "cm", "settings")["metadata"]["labels"]


def test_diff(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST)
    same = kubectl("diff", "-n", ns, "-f", "-", stdin=MANIFEST, check=False)
    assert same.returncode == 0, same.stderr
    changed = MANIFEST.replace("mode: fast", "mode: slow")
    diff = kubectl("diff", "-n", ns, "-f", "-", stdin=changed, check=False)
    assert diff.returncode == 1, diff.stderr
    assert "+  mode: slow" in diff.stdout
    assert kubectl.json("get", "-n", ns, "cm", "settings")["data"] == {"mode": "fast"}


def test_create_generators(kubectl: Kubectl, ns: str) -> None:
    kubectl("create", "configmap", "gen", "-n", ns, "--from-literal=k=v")
    kubectl("create", "secret", "generic", "pw", "-n", ns, "--from-literal=password=s3cr3t")
    kubectl("create", "deployment", "made", "-n", ns, "--image=busybox:1.36", "--replicas=2")
    assert kubectl.json("get", "-n", ns, "cm", "gen")["data"] == {"k": "v"}
    secret = kubectl.json("get", "-n", ns, "secret", "pw")
    assert secret["type"] == "Opaque" and secret["data"]["password"] == "czNjcjN0"
    made = kubectl.json("get", "-n", ns, "deploy", "made")
    assert made["spec"]["replicas"] == 2
    assert made["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"


def test_delete_cascades_to_dependents(kubectl: Kubectl, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=MANIFEST)
    owner = kubectl.json("get", "-n", ns, "deploy", "web")
    for i in range(2):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"web-{i}", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": owner["metadata"]["uid"], "controller": True}]},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}
        kubectl("create", "-n", ns, "-f", "-", stdin=json.dumps(pod))
    kubectl("delete", "-n", ns, "deployment", "web")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip():
            break
        time.sleep(0.2)
    assert kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip() == ""
    missing = kubectl("get", "-n", ns, "deploy", "web", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_delete_namespace_waits_until_everything_in_it_is_gone(kubectl: Kubectl) -> None:
    name = f"d-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    kubectl("apply", "-n", name, "-f", "-", stdin=MANIFEST)
    kubectl("delete", "namespace", name, "--timeout=30s")
    missing = kubectl("get", "namespace", name, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    kubectl("create", "namespace", name)
    assert kubectl("get", "all", "-n", name, "-o", "name").stdout.strip() == ""
    kubectl("delete", "namespace", name, "--wait=false")


def test_errors_reach_the_user(kubectl: Kubectl, ns: str) -> None:
    bad = MANIFEST.replace("name: settings", "name: Bad_Name")
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=bad, check=False)
    assert out.returncode != 0 and "Invalid value" in out.stderr
    typo = MANIFEST.replace("replicas: 2", "replicas: 2\n  replicaz: 3")
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=typo, check=False)
    assert out.returncode != 0 and 'unknown field "spec.replicaz"' in out.stderr
    missing = kubectl("get", "-n", ns, "cm", "nothing", check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
