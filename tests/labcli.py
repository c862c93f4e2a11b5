"""Driving ``corral lab`` from tests: the command, what it leaves in the kernel and in Docker,
clients of its controllers, pods and the namespaces of pods.

Shared by the lab tests (``test_lab.py``, ``test_lab_services.py``); they run the real command
as a user does and reach pods only inside the namespaces the lab (or the test) created.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controlplane.client import PODS, ApiClient

ROOT = Path(__file__).resolve().parents[1]
LAB_TIMEOUT_S = 180.0
POD_TIMEOUT_S = 60.0
NODE_LABEL = "corral.dev/node-name"
POD_UID_LABEL = "corral.dev/pod-uid"


def corral_lab(*args: str, timeout: float = LAB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane.cli", "lab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def check_privileged(require: Callable[[str], None]) -> None:
    """Root, iproute2, iptables, nsenter and a running Docker engine, or ``require`` says so."""
    if os.geteuid() != 0:
        require("root")
    for tool in ("ip", "iptables", "nsenter", "docker"):
        if shutil.which(tool) is None:
            require(tool)
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        require("a running Docker engine")


@contextmanager
def lab_up(require: Callable[[str], None], parent: Path, prefix: str, *args: str
           ) -> Iterator[tuple[str, Path]]:
    """``corral lab up <args>`` under a unique name starting with ``prefix``; its name and
    directory for the block; ``lab down`` after it, whatever happened."""
    check_privileged(require)
    name, directory = prefix + uuid.uuid4().hex[:6], parent / "lab"
    try:
        up = corral_lab("up", "--dir", str(directory), "--name", name, *args)
        assert up.returncode == 0, up.stdout + up.stderr
        yield name, directory
    finally:
        corral_lab("down", "--dir", str(directory), "--name", name)


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    shown = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False)
    return shown.returncode == 0


def lab_containers(name: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={NODE_LABEL}",
                          "--format", f'{{{{.ID}}}} {{{{.Label "{NODE_LABEL}"}}}}'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split()[1].startswith(f"{name}-n")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(kubeconfig: Path, *urls: str) -> ApiClient:
    """A client of the lab's admin kubeconfig, of ``urls`` (failing over in that order)."""
    return ApiClient.from_kubeconfig(kubeconfig, urls=list(urls), timeout=5.0)


async def running_pods(kubeconfig: Path, url: str, selector: str, count: int, *,
                       ready: bool = False) -> list[dict]:
    """Wait until exactly ``count`` pods matching ``selector`` run with an IP (and are Ready,
    with ``ready``); at least ``count`` when the set is still growing is not enough: a
    scale-down is done when the others are gone."""
    deadline = time.monotonic() + POD_TIMEOUT_S
    pods: list[dict] = []
    async with client(kubeconfig, url) as api:
        while time.monotonic() < deadline:
            pods = (await api.list(PODS, "default", label_selector=selector)).items
            up = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                  and p["status"].get("podIP") and (not ready or is_ready(p))]
            if len(up) == count == len(pods):
                return up
            await asyncio.sleep(0.5)
    raise AssertionError(f"pods {selector} not {count} Running: "
                         f"{[(p['metadata']['name'], p.get('status')) for p in pods]}")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def pod_pid(pod: dict[str, Any]) -> int:
    """The host pid of a process in ``pod`` (any of its containers: they share the pod's
    network namespace)."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter",
                          f"label={POD_UID_LABEL}={pod['metadata']['uid']}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert ids, f"no running container of pod {pod['metadata']['name']}"
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(pid)


def pod_netns(pod: dict[str, Any]) -> list[str]:
    """argv prefix running a command inside ``pod``'s network namespace: the pod's own traffic
    path (its veth, its node's bridge and rules), with the host's tools."""
    return ["nsenter", f"--net=/proc/{pod_pid(pod)}/ns/net"]


def kubectl(kubeconfig: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
