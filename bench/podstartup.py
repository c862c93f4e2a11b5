"""Pod startup benchmark: pods on ``corral up`` with Docker, creation to Running, against raw
``docker run -d`` of the same image in the same run.

Kubernetes' pod startup SLI, on one node: the time from a pod's creation until it is observed
Running, image already present, scheduling included (Kubernetes' SLO: p99 <= 5 s).

  * ``corral up --runtime docker`` (one controller: store, API, control loops with the scheduler;
    one node agent with DockerRuntime) runs as a child process on a temporary data dir and free
    loopback ports, as node ``podstartup-<run id>`` on its own pod network (bridge ``corralb0``,
    cluster CIDR 10.252.0.0/16, when root), apart from a user's ``corral up`` (corral0,
    10.244.0.0/16) and from tests. The benchmark waits for its kubeconfig and for the Node to be
    Ready, then one warm-up pod must be Running (not counted).
  * The peer first: ``--pods`` (100; ``--quick`` 20) ``docker run -d --network none
    corral/base:latest sleep 3600`` through the docker CLI (asyncio subprocesses),
    ``--concurrency`` (10) at a time; each is timed from the CLI's start until it returns (the
    container started). They are removed before the next phase. The docker phase comes first so
    that both phases see the same machine: ``corral up`` running and idle with its one warm-up
    pod, no other benchmark containers (the agent lists only its own node's containers, so the
    peer's do not load it).
  * Then the measured pods: a watch on pods is opened before the first create; ``--pods`` bare
    Pods (restartPolicy Always, image corral/base:latest, imagePullPolicy IfNotPresent, command
    ``sleep 3600``, terminationGracePeriodSeconds 0) are created by ``--concurrency`` concurrent
    creators (each creates its next pod once its previous one is seen Running; ``--burst``: once
    its create is answered). Per pod, t0 is taken just before its create call and t1 when the
    watch first shows it with ``status.phase`` Running (``time.monotonic``); latency = t1 - t0.
    The watch also gives when each pod was first seen bound (``spec.nodeName``), and Docker's
    timestamps of each pod's sandbox and container split bound-to-Running into stages.

p50/p99 are nearest-rank percentiles. R = corral p50 / docker run p50; the p99 ratio is printed
on an earlier line. Memory: the RSS (psutil) of the ``corral up`` process, which holds the
controller *and* the agent, at the moment the watch sees the 30th measured pod Running (31 pods
with the warm-up; Kubernetes' density test runs 30 pods per node), and after all of them.
CPU: the ``corral up`` process and the machine, over each phase. Other corral agents' containers
or ``corral up``/``corral agent`` processes at the start are named in a WARNING line: they share
the CPU and make the figures noisier (they do not touch this run's containers, nor it theirs).

Cleanup, always (``finally``, also on Ctrl-C or SIGTERM): SIGINT to ``corral up`` (SIGKILL if it
has not stopped within 30 s); ``corral down --data-dir DIR --purge``, which removes this node's
containers, its bridge and NAT rule, and the data dir; the docker peer's containers (by this
run's label); the temporary directory.

The last line is ``podstartup: corral p50 X ms p99 Y ms, docker run p50 Z ms, ratio R``.
Targets: p99 <= 1 s, R <= 2.0, RSS with 30 pods <= 100 MB.

``--split`` measures only the agent's memory, instead of all the above: ``corral controller``
(``--cluster-cidr 10.254.0.0/16``, a temporary data dir, free loopback ports) and ``corral
agent`` (Docker, bridge ``corralb1``, credentials from ``corral join`` with the controller's join
token and CA hash) as two child processes, node ``podstartup-split-<run id>``. Once the Node is
Ready, 30 pods (the same spec) are created, ``--concurrency`` at a time (closed loop); the RSS of
the agent process is read when the watch sees the 30th Running, the agent's and the controller's
again once all are Running and 2 s have passed, with the agent's peak (VmHWM). Its last line is
``split: agent process RSS with 30 pods Running: N MB (controller process: M MB)``; target
(issue 5): agent RSS with 30 pods <= 100 MB. Cleanup: SIGTERM to the agent, then to the
controller (SIGKILL after 30 s each), ``corral down --purge`` of the directory holding
``agent/`` (this node's containers, bridge corralb1 and its NAT rule), then a check that no
container of the node and no bridge corralb1 is left, and the temporary directory removed.

Usage: ``python bench/podstartup.py [--quick] [--pods N] [--concurrency N] [--burst]
[--split] [--log-level LEVEL] [--keep-log] [-v]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker
import psutil
from benchkit import interrupt, machine_busy, nearest_rank

from controlplane.auth.pki import JOIN_TOKEN_FILE, ClusterPKI
from controlplane.client import NODES, PODS, ApiClient
from nodeagent.runtime.base import LABEL_MANAGED, LABEL_NODE_NAME, LABEL_POD_NAME
from nodeagent.runtime.docker import LABEL_DOCKER_TYPE, TYPE_SANDBOX
from raftstore.localprocess import free_ports

log = logging.getLogger("bench.podstartup")

PODS_N, QUICK_PODS = 100, 20
CONCURRENCY = 10
NAMESPACE = "default"
IMAGE = "corral/base:latest"
COMMAND = ["sleep", "3600"]
#: Containers of the docker peer carry this label (value: the run's id) for the cleanup.
BENCH_LABEL = "corral.dev/bench-podstartup"
#: RSS is read when this many measured pods are Running (Kubernetes' density: 30 pods/node).
RSS_AT_PODS = 30
UP_READY_TIMEOUT_S = 180.0  # first start may build the base image
POD_TIMEOUT_S = 120.0  # a phase gives up when no pod got Running for this long
STOP_TIMEOUT_S = 30.0
#: corral up's own pod network, apart from the default corral0 / 10.244.0.0/16 and tests'.
BRIDGE = "corralb0"
CLUSTER_CIDR = "10.252.0.0/16"
#: --split: the separate agent's pod network, apart from corralb0 and the default corral0.
SPLIT_BRIDGE = "corralb1"
SPLIT_CLUSTER_CIDR = "10.254.0.0/16"
# Targets of the issue.
TARGET_P99_MS = 1000.0
TARGET_RATIO = 2.0
TARGET_RSS_MB = 100.0
K8S_SLO_P99_MS = 5000.0


@dataclass(frozen=True)
class Settings:
    quick: bool
    pods: int
    concurrency: int
    log_level: str = "WARNING"
    keep_log: bool = False
    burst: bool = False
    split: bool = False


# -- small helpers ------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return math.nan
    return t.user + t.system


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return math.nan


def hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


@dataclass
class CpuWindow:
    """CPU seconds of one process and of the machine between ``start`` and ``stop``."""

    pid: int
    at: float = 0.0
    proc: float = 0.0
    busy: float = 0.0
    span: float = 0.0
    proc_used: float = 0.0
    busy_used: float = 0.0

    def start(self) -> None:
        self.at, self.proc, self.busy = time.monotonic(), process_cpu(self.pid), machine_busy()

    def stop(self) -> None:
        self.span = time.monotonic() - self.at
        self.proc_used = process_cpu(self.pid) - self.proc
        self.busy_used = machine_busy() - self.busy

    def describe(self) -> str:
        if self.span <= 0:
            return "n/a"
        return (f"corral up process {100 * self.proc_used / self.span:.0f}%, machine busy "
                f"{100 * self.busy_used / self.span:.0f}% of {100 * (psutil.cpu_count() or 1)}% "
                f"over {self.span:.1f} s")


# -- what else runs here -----------------------------------------------------------------------


def other_corral_processes() -> list[str]:
    """Other ``corral up`` / ``corral agent`` processes on this machine."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info.get("cmdline") or []
        corral = [i for i, a in enumerate(argv)
                  if a == "controlplane.cli" or os.path.basename(a) == "corral"]
        if proc.info["pid"] != os.getpid() and (
                any(argv[i + 1:i + 2] in (["up"], ["agent"]) for i in corral)
                or "nodeagent.main" in argv):
            found.append(f"pid {proc.info['pid']}: {' '.join(argv)[:100]}")
    return found


def other_agents_containers(node: str) -> Counter[str]:
    """Corral-managed containers of nodes other than ``node``, counted by node name."""
    engine = docker.from_env()
    try:
        found = engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    finally:
        engine.close()
    return Counter(c["Labels"].get(LABEL_NODE_NAME, "?") for c in found
                   if (c.get("Labels") or {}).get(LABEL_NODE_NAME) != node)


def remove_containers(label: str) -> int:
    """Force-remove every container carrying ``label`` (``key=value``), in parallel threads."""
    engine = docker.from_env()

    def remove(c: Any) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)

    try:
        found = engine.containers.list(all=True, filters={"label": label})
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(remove, found))
    finally:
        engine.close()
    return len(found)


# -- corral up ----------------------------------------------------------------------------------


class CorralUp:
    """``corral up`` as a child process, its output in a log file of the data dir."""

    what = "corral up"

    def __init__(self, data_dir: Path, node: str, log_level: str) -> None:
        self.data_dir = data_dir
        self.node = node
        self.log_path = data_dir.parent / "up.log"
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        api, peer = free_ports(2)
        argv = [sys.executable, "-m", "controlplane.cli", "up", "--data-dir", str(self.data_dir),
                "--listen-api", f"127.0.0.1:{api}", "--listen-peer", f"127.0.0.1:{peer}",
                "--node-name", self.node, "--bridge", BRIDGE, "--cluster-cidr", CLUSTER_CIDR,
                "--runtime", "docker", "--log-level", self.log_level]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGINT (as Ctrl-C), then SIGKILL after STOP_TIMEOUT_S; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("corral up did not stop within %.0f s: killed", STOP_TIMEOUT_S)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def down(self) -> str:
        """``corral down --purge``: this node's containers, its bridge and NAT rule, the data
        dir; what it printed."""
        if not self.data_dir.exists():
            return "nothing to remove"
        done = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "down", "--data-dir", str(self.data_dir),
             "--purge"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
        out = "; ".join(line.strip() for line in (done.stdout + done.stderr).splitlines()
                        if line.strip())
        return out if done.returncode == 0 else f"failed (exit {done.returncode}): {out}"

    def tail(self, lines: int = 15) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def warnings(self, most: int = 8) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        found = [line for line in text if " WARNING " in line or " ERROR " in line
                 or "Traceback" in line]
        out = [f"corral up log: {line[:240]}" for line in found[:most]]
        if len(found) > most:
            out.append(f"corral up log: ({len(found) - most} more warnings)")
        return out


class SplitCluster:
    """``--split``: ``corral controller`` and ``corral agent`` as two child processes, the agent
    joined with ``corral join``. ``root`` holds ``controller/``, ``creds/`` and ``agent/``: it
    is the data dir ``corral down`` is given (it reads ``root/agent``)."""

    what = "corral controller / corral agent"

    def __init__(self, root: Path, node: str, log_level: str) -> None:
        self.root = root
        self.node = node
        self.log_level = log_level
        self.controller_dir = root / "controller"
        self.creds = root / "creds"
        self.agent_dir = root / "agent"
        self.kubeconfig = self.controller_dir / "admin.kubeconfig"
        self.logs = {"controller": root.parent / "controller.log",
                     "agent": root.parent / "agent.log"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api_url = ""

    def pid(self, which: str) -> int:
        return self.procs[which].pid

    def _spawn(self, which: str, argv: list[str]) -> None:
        with open(self.logs[which], "ab") as out:
            self.procs[which] = subprocess.Popen(
                [sys.executable, "-m", "controlplane.cli", *argv], cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_controller(self) -> None:
        api, peer = free_ports(2)
        self.api_url = f"https://127.0.0.1:{api}"
        self._spawn("controller", [
            "controller", "--listen-peer", f"127.0.0.1:{peer}", "--listen-api",
            f"127.0.0.1:{api}", "--data-dir", str(self.controller_dir), "--cluster-cidr",
            SPLIT_CLUSTER_CIDR, "--log-level", self.log_level])

    def join(self) -> None:
        """``corral join`` with the controller's join token and CA hash: the node's
        credentials in ``creds/``."""
        pki = self.controller_dir / "pki"
        token = (pki / JOIN_TOKEN_FILE).read_text().strip()
        done = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "join", "--server", self.api_url,
             "--token", token, "--ca-hash", ClusterPKI.load(pki).ca_fingerprint(),
             "--node-name", self.node, "--node-ip", "127.0.0.1", "--dir", str(self.creds)],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"corral join failed (exit {done.returncode}): "
                               + " | ".join((done.stdout + done.stderr).splitlines()[-5:]))

    def start_agent(self) -> None:
        self._spawn("agent", [
            "agent", "--kubeconfig", str(self.creds / "node.kubeconfig"), "--tls-cert-file",
            str(self.creds / "server.crt"), "--tls-private-key-file",
            str(self.creds / "server.key"), "--client-ca-file", str(self.creds / "ca.crt"),
            "--node-name", self.node, "--node-ip", "127.0.0.1", "--port", "0", "--data-dir",
            str(self.agent_dir), "--runtime", "docker", "--bridge", SPLIT_BRIDGE,
            "--cluster-cidr", SPLIT_CLUSTER_CIDR, "--log-level", self.log_level])

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self) -> str:
        """SIGTERM to the agent, then to the controller, each SIGKILLed after STOP_TIMEOUT_S;
        their exit statuses."""
        out = []
        for which in ("agent", "controller"):
            proc = self.procs.get(which)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("corral %s did not stop within %.0f s: killed", which,
                                STOP_TIMEOUT_S)
                    proc.kill()
                    proc.wait()
            out.append(f"{which} stopped (exit {proc.returncode})")
        return ", ".join(out) or "nothing started"

    def down(self) -> str:
        """``corral down --purge`` of ``root``: this node's containers, bridge and NAT rule, and
        ``root``; what it printed."""
        if not self.root.exists():
            return "nothing to remove"
        done = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "down", "--data-dir", str(self.root),
             "--purge"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
        out = "; ".join(line.strip() for line in (done.stdout + done.stderr).splitlines()
                        if line.strip())
        return out if done.returncode == 0 else f"failed (exit {done.returncode}): {out}"

    def leftovers(self) -> str:
        """After ``down``: force-removes any container of this node still there, and says
        whether the bridge is gone."""
        left = remove_containers(f"{LABEL_NODE_NAME}={self.node}")
        bridge = Path("/sys/class/net", SPLIT_BRIDGE).exists()
        return (f"{left} containers of node {self.node} were left (removed now)" if left else
                f"no container of node {self.node} left") + (
            f"; bridge {SPLIT_BRIDGE} STILL PRESENT" if bridge else
            f"; bridge {SPLIT_BRIDGE} gone")

    def tail(self, lines: int = 8) -> list[str]:
        out = []
        for which, path in self.logs.items():
            with contextlib.suppress(OSError):
                out += [f"{which}: {line}" for line in
                        path.read_text(errors="replace").splitlines()[-lines:]]
        return out


async def wait_up(up: CorralUp | SplitCluster) -> ApiClient:
    """The admin client once the kubeconfig exists and the Node is Ready."""
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    while not up.kubeconfig.exists():
        if not up.alive():
            raise RuntimeError(f"{up.what} ended: " + " | ".join(up.tail()))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no kubeconfig within {UP_READY_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)
    client = ApiClient.from_kubeconfig(up.kubeconfig, user_agent="bench-podstartup")
    await client.__aenter__()
    try:
        while True:
            if not up.alive():
                raise RuntimeError(f"{up.what} ended: " + " | ".join(up.tail()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Ready node within {UP_READY_TIMEOUT_S:.0f} s")
            with contextlib.suppress(Exception):
                for node in (await client.list(NODES)).items:
                    conditions = (node.get("status") or {}).get("conditions") or []
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in conditions):
                        return client
            await asyncio.sleep(0.2)
    except BaseException:
        await client.__aexit__(None, None, None)
        raise


# -- the measurement ----------------------------------------------------------------------------


def bench_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "podstartup"}},
            "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "sleep", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent", "command": COMMAND}]}}


@dataclass
class PodTimes:
    sent: dict[str, float] = field(default_factory=dict)  # t0: before the create call
    created: dict[str, float] = field(default_factory=dict)  # the create answered
    bound: dict[str, float] = field(default_factory=dict)  # first seen with spec.nodeName
    running: dict[str, float] = field(default_factory=dict)  # t1: first seen Running
    failed: Counter[str] = field(default_factory=Counter)
    rss_at: dict[int, float] = field(default_factory=dict)  # running count -> RSS MB


class PodWatch:
    """One watch on the namespace's pods; records when each pod is first bound and Running."""

    def __init__(self, client: ApiClient, times: PodTimes, pid: int) -> None:
        self.client = client
        self.times = times
        self.pid = pid
        self.wanted: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()
        self.running: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        listed = await self.client.list(PODS, NAMESPACE)
        self.task = asyncio.create_task(self._run(listed.resource_version), name="pod watch")

    async def _run(self, revision: str) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.client.watch(
                        PODS, NAMESPACE, resource_version=revision)) as events:
                    async for kind, pod in events:
                        revision = pod["metadata"].get("resourceVersion", revision)
                        if kind in ("ADDED", "MODIFIED"):
                            self._seen(pod)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reopened from the last revision
                log.warning("pod watch: %s; reopening", exc)
                await asyncio.sleep(0.1)

    def _seen(self, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        name = pod["metadata"]["name"]
        if name not in self.wanted:
            return
        t = self.times
        if name not in t.bound and (pod.get("spec") or {}).get("nodeName"):
            t.bound[name] = now
        if name not in t.running and (pod.get("status") or {}).get("phase") == "Running":
            t.running[name] = now
            self.running.setdefault(name, asyncio.Event()).set()
            t.bound.setdefault(name, now)
            count = len(t.running)
            if count in (RSS_AT_PODS, len(self.wanted)):
                t.rss_at[count] = rss_mb(self.pid)
            self.changed.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def wait_running(watch: PodWatch, names: list[str], what: str) -> None:
    """Until every one of ``names`` was seen Running, or POD_TIMEOUT_S without progress."""
    last, since = -1, time.monotonic()
    while True:
        running = sum(1 for n in names if n in watch.times.running)
        if running == len(names):
            return
        if running != last:
            last, since = running, time.monotonic()
        elif time.monotonic() - since > POD_TIMEOUT_S:
            raise TimeoutError(f"{what}: {running} of {len(names)} pods Running, none more "
                               f"within {POD_TIMEOUT_S:.0f} s")
        watch.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.changed.wait(), 1.0)


async def corral_phase(client: ApiClient, watch: PodWatch, names: list[str],
                       concurrency: int, burst: bool) -> None:
    """``concurrency`` creators; each waits until its pod is seen Running before it creates
    the next (as each ``docker run -d`` returns once its container started), or with ``burst``
    only until the create call is answered."""
    times = watch.times
    watch.wanted.update(names)
    queue = iter(names)

    async def creator() -> None:
        for name in queue:
            running = watch.running.setdefault(name, asyncio.Event())
            times.sent[name] = time.monotonic()
            try:
                await client.create(PODS, NAMESPACE, bench_pod(name))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                times.failed[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                watch.wanted.discard(name)
                continue
            times.created[name] = time.monotonic()
            if not burst:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(running.wait(), POD_TIMEOUT_S)

    await asyncio.gather(*(creator() for _ in range(concurrency)))
    await wait_running(watch, [n for n in names if n in watch.wanted], "corral pods")


@dataclass
class DockerTimes:
    latencies: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    span: float = 0.0


async def docker_phase(count: int, concurrency: int, run_id: str) -> DockerTimes:
    """``count`` raw ``docker run -d``, ``concurrency`` at a time, each timed around the CLI."""
    result = DockerTimes()
    binary = shutil.which("docker") or "docker"
    queue = iter(range(count))

    async def runner() -> None:
        for _ in queue:
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                binary, "run", "-d", "--network", "none", "--label", f"{BENCH_LABEL}={run_id}",
                IMAGE, *COMMAND, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            t1 = time.monotonic()
            if proc.returncode == 0:
                result.latencies.append(t1 - t0)
            else:
                result.failed[err.decode(errors="replace").strip()[:120]] += 1

    began = time.monotonic()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    result.span = time.monotonic() - began
    return result


def docker_time(text: str | None) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds, Z) as seconds since the epoch."""
    if not text or text.startswith("0001-"):
        return math.nan
    stamp, _, frac = text.rstrip("Z").partition(".")
    return (datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.UTC)
            .timestamp() + float(f"0.{frac or 0}"))


#: Stages of a pod's startup, from the watch and from Docker's own timestamps of the pod's
#: sandbox and container: (label, from, to).
STAGES = (("create to bound (API, scheduler)", "sent", "bound"),
          ("bound to sandbox created", "bound", "sandbox_created"),
          ("sandbox created to started", "sandbox_created", "sandbox_started"),
          ("sandbox started to container created (pod network, volumes)", "sandbox_started",
           "container_created"),
          ("container created to started", "container_created", "container_started"),
          ("container started to seen Running (status write, watch)", "container_started",
           "running"))


def breakdown(node: str, times: PodTimes, names: list[str],
              offset: float) -> dict[str, dict[str, float]]:
    """Per pod, the monotonic time of each point in STAGES; ``offset`` = wall - monotonic."""
    points: dict[str, dict[str, float]] = {
        n: {"sent": times.sent[n], "bound": times.bound.get(n, math.nan),
            "running": times.running.get(n, math.nan)} for n in names if n in times.sent}
    engine = docker.from_env()
    try:
        for summary in engine.api.containers(all=True,
                                             filters={"label": f"{LABEL_NODE_NAME}={node}"}):
            labels = summary.get("Labels") or {}
            name = labels.get(LABEL_POD_NAME, "")
            if name not in points or labels.get("corral.dev/attempt", "0") != "0":
                continue  # a restarted container's times are not the first start's
            info = engine.api.inspect_container(summary["Id"])
            kind = "sandbox" if labels.get(LABEL_DOCKER_TYPE) == TYPE_SANDBOX else "container"
            points[name][f"{kind}_created"] = docker_time(info.get("Created")) - offset
            points[name][f"{kind}_started"] = (
                docker_time((info.get("State") or {}).get("StartedAt")) - offset)
    finally:
        engine.close()
    return points


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    setup_s: float = 0.0
    warmup_s: float = 0.0
    times: PodTimes = field(default_factory=PodTimes)
    docker: DockerTimes = field(default_factory=DockerTimes)
    cpu_docker: CpuWindow | None = None
    cpu_corral: CpuWindow | None = None
    rss_idle: float = math.nan
    rss_end: float = math.nan
    hwm: float = math.nan
    corral_span: float = 0.0
    points: dict[str, dict[str, float]] = field(default_factory=dict)


async def measure(up: CorralUp, settings: Settings, run_id: str, run: Run,
                  began: float) -> None:
    client = await wait_up(up)
    try:
        run.setup_s = time.monotonic() - began
        log.info("node Ready after %.1f s", run.setup_s)
        watch = PodWatch(client, run.times, up.pid)
        await watch.start()
        try:
            t = time.monotonic()
            watch.wanted.add("warm-up")
            await client.create(PODS, NAMESPACE, bench_pod("warm-up"))
            await wait_running(watch, ["warm-up"], "warm-up pod")
            run.warmup_s = time.monotonic() - t
            for d in (run.times.bound, run.times.running):
                d.pop("warm-up", None)
            watch.wanted.clear()
            await asyncio.sleep(1.0)  # let the agent's post-start relist settle
            run.rss_idle = rss_mb(up.pid)
            log.info("warm-up pod Running in %.2f s; docker run phase", run.warmup_s)

            run.cpu_docker = CpuWindow(up.pid)
            run.cpu_docker.start()
            run.docker = await docker_phase(settings.pods, settings.concurrency, run_id)
            run.cpu_docker.stop()
            await asyncio.to_thread(remove_containers, f"{BENCH_LABEL}={run_id}")
            await asyncio.sleep(1.0)
            log.info("docker run phase done; corral phase")

            names = [f"pod-{i:03d}" for i in range(settings.pods)]
            run.cpu_corral = CpuWindow(up.pid)
            run.cpu_corral.start()
            t = time.monotonic()
            await corral_phase(client, watch, names, settings.concurrency, settings.burst)
            run.corral_span = time.monotonic() - t
            run.cpu_corral.stop()
            run.rss_end = rss_mb(up.pid)
            run.hwm = hwm_mb(up.pid)
            offset = time.time() - time.monotonic()
            run.points = await asyncio.to_thread(breakdown, up.node, run.times, names, offset)
        finally:
            await watch.stop()
    finally:
        await client.__aexit__(None, None, None)


def report(run: Run, settings: Settings, up: CorralUp, wall: float) -> None:
    t = run.times
    names = [n for n in t.sent if n in t.running]
    lat = [t.running[n] - t.sent[n] for n in names]
    to_bound = [t.bound[n] - t.sent[n] for n in names if n in t.bound]
    bound_run = [t.running[n] - t.bound[n] for n in names if n in t.bound]
    create = [t.created[n] - t.sent[n] for n in t.created]
    dk = run.docker.latencies

    def ms(samples: list[float], q: float) -> float:
        return 1000 * nearest_rank(samples, q)

    def dist(samples: list[float]) -> str:
        return ", ".join(f"p{int(q * 100)} {ms(samples, q):.0f} ms" for q in (0.5, 0.9, 0.99, 1.0))

    print(f"docker run -d: {len(dk)} of {settings.pods} containers in {run.docker.span:.2f} s, "
          f"{dist(dk)}; CPU: {run.cpu_docker.describe() if run.cpu_docker else 'n/a'}")
    if run.docker.failed:
        print(f"docker run failures: {dict(run.docker.failed.most_common(3))}")
    print(f"corral pods Running: {len(names)} of {settings.pods} in {run.corral_span:.2f} s "
          f"(first create to last Running); CPU: "
          f"{run.cpu_corral.describe() if run.cpu_corral else 'n/a'}")
    if t.failed:
        print(f"failed creates: {dict(t.failed.most_common(3))}")
    print(f"  creation to Running: {dist(lat)}")
    print(f"  of which create call: {dist(create)}; creation to bound: {dist(to_bound)}; "
          f"bound to Running: {dist(bound_run)}")
    if names:
        first = min(t.sent[n] for n in names)
        seconds = Counter(int(t.running[n] - first) for n in names)
        print("  pods Running in each second: "
              + " ".join(str(seconds.get(s, 0)) for s in range(max(seconds) + 1)))
    if run.points:
        print("  stages (watch, and Docker's timestamps of each pod's sandbox and container):")
        for label, a, b in STAGES:
            spans = [pt[b] - pt[a] for pt in run.points.values()
                     if not math.isnan(pt.get(a, math.nan)) and not math.isnan(pt.get(b, math.nan))]
            print(f"    {label}: {dist(spans)}")
    p50, p99 = ms(lat, 0.5), ms(lat, 0.99)
    d50, d99 = ms(dk, 0.5), ms(dk, 0.99)
    ratio = p50 / d50 if d50 > 0 else math.nan
    print(f"p99 ratio corral/docker run: {p99:.0f} / {d99:.0f} ms = "
          f"{p99 / d99 if d99 > 0 else math.nan:.2f}")
    rss30 = t.rss_at.get(RSS_AT_PODS, math.nan)
    print(f"corral up process (controller + agent in one process) RSS: idle with 1 pod "
          f"{run.rss_idle:.0f} MB, with {RSS_AT_PODS} pods Running (+ warm-up) {rss30:.0f} MB, "
          f"with {len(names)} {run.rss_end:.0f} MB, peak (VmHWM) {run.hwm:.0f} MB")
    for line in up.warnings():
        print(line)
    print(f"setup (corral up to node Ready) {run.setup_s:.1f} s, warm-up pod {run.warmup_s:.2f} s; "
          f"wall time {wall:.1f} s")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rss_line = (f"RSS with {RSS_AT_PODS} pods <= {TARGET_RSS_MB:.0f} MB: "
                f"{verdict(rss30 <= TARGET_RSS_MB)} ({rss30:.0f} MB, controller + agent)"
                if settings.pods >= RSS_AT_PODS else f"RSS: fewer than {RSS_AT_PODS} pods")
    print(f"targets: p99 <= {TARGET_P99_MS:.0f} ms: {verdict(p99 <= TARGET_P99_MS)}; "
          f"R <= {TARGET_RATIO}: {verdict(ratio <= TARGET_RATIO)}; {rss_line}; Kubernetes' SLO "
          f"p99 <= {K8S_SLO_P99_MS:.0f} ms: {verdict(p99 <= K8S_SLO_P99_MS)}")
    print(f"podstartup: corral p50 {p50:.0f} ms p99 {p99:.0f} ms, docker run p50 {d50:.0f} ms, "
          f"ratio {ratio:.2f}")


def main_sync(settings: Settings) -> int:
    mode = "quick" if settings.quick else "full"
    print(f"pod startup benchmark ({mode}): {settings.pods} pods on corral up (Docker), then "
          f"compared with {settings.pods} docker run -d; {settings.concurrency} at a time ("
          + ("burst: a creator goes on once its create is answered" if settings.burst else
             "closed loop: a creator goes on once its pod is Running, its docker run returned")
          + f"); {psutil.cpu_count()} CPUs", flush=True)
    run_id = uuid.uuid4().hex[:12]
    node = f"podstartup-{run_id}"
    warn_about_other_agents(node)
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="corral-podstartup-"))
    up = CorralUp(tmp / "data", node, settings.log_level)
    run = Run()
    failed = False
    try:
        up.start()
        try:
            asyncio.run(measure(up, settings, run_id, run, began))
        except (TimeoutError, RuntimeError) as exc:
            failed = True
            print(f"podstartup: failed: {exc}")
            for line in up.tail():
                print(f"corral up: {line}")
        if not failed:
            report(run, settings, up, time.monotonic() - began)
    finally:
        cleanup(up, run_id, tmp, settings.keep_log)
    return 1 if failed else 0


def cleanup(up: CorralUp, run_id: str, tmp: Path, keep_log: bool) -> None:
    """Stop corral up, ``corral down --purge`` its data dir, remove the peer's containers and
    the temporary directory. Every step runs even if one fails."""
    began = time.monotonic()
    steps: list[str] = []
    try:
        steps.append(f"corral up stopped (exit {up.stop()})")
    except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still runs
        steps.append(f"corral up not stopped: {exc}")
    try:
        steps.append(f"corral down (node {up.node}): {up.down()}")
    except Exception as exc:  # noqa: BLE001
        steps.append(f"corral down failed: {exc}")
    try:
        steps.append(f"{remove_containers(f'{BENCH_LABEL}={run_id}')} docker run containers "
                     f"removed")
    except Exception as exc:  # noqa: BLE001
        steps.append(f"docker run containers not removed: {exc}")
    if keep_log:
        kept = Path(tempfile.gettempdir()) / f"corral-podstartup-{run_id}.log"
        with contextlib.suppress(OSError):
            shutil.copy(up.log_path, kept)
            steps.append(f"corral up log kept in {kept}")
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        steps.append(f"{tmp} removed")
    print(f"cleanup ({time.monotonic() - began:.1f} s): " + "; ".join(steps), file=sys.stderr)


# -- --split: the agent as its own process ---------------------------------------------------


@dataclass
class SplitRun:
    setup_s: float = 0.0
    span: float = 0.0
    times: PodTimes = field(default_factory=PodTimes)
    rss_agent: float = math.nan
    rss_controller: float = math.nan
    hwm_agent: float = math.nan
    hwm_controller: float = math.nan


async def measure_split(split: SplitCluster, settings: Settings, run: SplitRun) -> None:
    began = time.monotonic()
    split.start_controller()
    for path in (split.kubeconfig, split.controller_dir / "pki" / JOIN_TOKEN_FILE):
        while not path.exists():
            if not split.alive():
                raise RuntimeError(f"{split.what} ended: " + " | ".join(split.tail()))
            if time.monotonic() - began > UP_READY_TIMEOUT_S:
                raise TimeoutError(f"no {path.name} within {UP_READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
    await asyncio.to_thread(split.join)
    split.start_agent()
    client = await wait_up(split)
    try:
        run.setup_s = time.monotonic() - began
        log.info("split: node Ready after %.1f s", run.setup_s)
        watch = PodWatch(client, run.times, split.pid("agent"))
        await watch.start()
        try:
            names = [f"pod-{i:03d}" for i in range(RSS_AT_PODS)]
            t = time.monotonic()
            await corral_phase(client, watch, names, settings.concurrency, burst=False)
            run.span = time.monotonic() - t
            await asyncio.sleep(2.0)
            agent, controller = split.pid("agent"), split.pid("controller")
            run.rss_agent, run.rss_controller = rss_mb(agent), rss_mb(controller)
            run.hwm_agent, run.hwm_controller = hwm_mb(agent), hwm_mb(controller)
        finally:
            await watch.stop()
    finally:
        await client.__aexit__(None, None, None)


def report_split(run: SplitRun, split: SplitCluster, wall: float) -> None:
    t = run.times
    names = [n for n in t.sent if n in t.running]
    lat = [t.running[n] - t.sent[n] for n in names]
    dist = ", ".join(f"p{int(q * 100)} {1000 * nearest_rank(lat, q):.0f} ms"
                     for q in (0.5, 0.9, 0.99, 1.0)) if lat else "n/a"
    print(f"split: {len(names)} of {RSS_AT_PODS} pods Running in {run.span:.2f} s (first create "
          f"to last Running); creation to Running: {dist}")
    if t.failed:
        print(f"split: failed creates: {dict(t.failed.most_common(3))}")
    at30 = t.rss_at.get(RSS_AT_PODS, math.nan)
    print(f"split: agent RSS when the watch saw the {RSS_AT_PODS}th pod Running {at30:.0f} MB, "
          f"2 s after {run.rss_agent:.0f} MB, peak (VmHWM) {run.hwm_agent:.0f} MB; controller "
          f"RSS {run.rss_controller:.0f} MB, peak {run.hwm_controller:.0f} MB")
    print(f"split: setup (controller start to node Ready, join included) {run.setup_s:.1f} s; "
          f"wall time {wall:.1f} s")
    ok = len(names) == RSS_AT_PODS and run.rss_agent <= TARGET_RSS_MB
    print(f"split: target agent RSS with {RSS_AT_PODS} pods <= {TARGET_RSS_MB:.0f} MB: "
          f"{'met' if ok else 'NOT met'} ({run.rss_agent:.0f} MB)")
    print(f"split: agent process RSS with {len(names)} pods Running: {run.rss_agent:.0f} MB "
          f"(controller process: {run.rss_controller:.0f} MB)")


def warn_about_other_agents(node: str) -> None:
    """Other corral agents on this machine do not disturb the run, but share its CPU."""
    others = [f"{n} containers of node {name}" for name, n in
              other_agents_containers(node).most_common(4)] + other_corral_processes()[:4]
    if others:
        print(f"WARNING: other corral agents share this machine's CPU, the figures are noisier: "
              f"{'; '.join(others)}", flush=True)


def split_main(settings: Settings) -> int:
    run_id = uuid.uuid4().hex[:12]
    node = f"podstartup-split-{run_id}"
    print(f"pod startup benchmark (split): corral controller and corral agent (Docker) as two "
          f"processes, {RSS_AT_PODS} pods on node {node}, {settings.concurrency} at a time; "
          f"{psutil.cpu_count()} CPUs", flush=True)
    warn_about_other_agents(node)
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="corral-podstartup-split-"))
    split = SplitCluster(tmp / "data", node, settings.log_level)
    run = SplitRun()
    failed = False
    try:
        try:
            asyncio.run(measure_split(split, settings, run))
        except (TimeoutError, RuntimeError) as exc:
            failed = True
            print(f"split: failed: {exc}")
            for line in split.tail():
                print(f"  {line}")
        if not failed:
            report_split(run, split, time.monotonic() - began)
            for which, path in split.logs.items():
                with contextlib.suppress(OSError):
                    for line in [x for x in path.read_text(errors="replace").splitlines()
                                 if " ERROR " in x or "Traceback" in x][:5]:
                        print(f"{which} log: {line[:240]}")
    finally:
        cleanup_split(split, tmp, settings.keep_log, run_id)
    return 1 if failed else 0


def cleanup_split(split: SplitCluster, tmp: Path, keep_log: bool, run_id: str) -> None:
    """Stop the agent and the controller, ``corral down --purge``, check that no container of
    the node and no bridge is left, remove the temporary directory. Every step runs."""
    began = time.monotonic()
    steps: list[str] = []
    for label, step in (("stop", split.stop), (f"corral down (node {split.node})", split.down),
                        ("left over", split.leftovers)):
        try:
            steps.append(f"{label}: {step()}")
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still runs
            steps.append(f"{label} failed: {exc}")
    if keep_log:
        for which, path in split.logs.items():
            kept = Path(tempfile.gettempdir()) / f"corral-podstartup-{run_id}-{which}.log"
            with contextlib.suppress(OSError):
                shutil.copy(path, kept)
                steps.append(f"{which} log kept in {kept}")
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    steps.append(f"{tmp} {'STILL PRESENT' if tmp.exists() else 'removed'}")
    print(f"cleanup ({time.monotonic() - began:.1f} s): " + "; ".join(steps), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PODS} pods")
    parser.add_argument("--pods", type=int, default=None,
                        help=f"pods, and docker runs (default {PODS_N}; --quick {QUICK_PODS})")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="creations (and docker runs) at a time (default %(default)s)")
    parser.add_argument("--log-level", default="WARNING",
                        help="corral up's (--split: controller's and agent's) --log-level (diagnostics: INFO; default %(default)s)")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep corral up's output (--split: the controller's and the agent's) in "
                        "the temporary directory's parent")
    parser.add_argument("--burst", action="store_true",
                        help="creators do not wait for their pod to be Running: all pods are "
                        "created within about a second and queue on the node")
    parser.add_argument("--split", action="store_true",
                        help=f"only the agent's memory: corral controller and corral agent as "
                        f"two processes, RSS of the agent with {RSS_AT_PODS} pods Running "
                        "(--pods, --quick and --burst do not apply)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    pods = args.pods if args.pods is not None else (QUICK_PODS if args.quick else PODS_N)
    if pods < 1 or args.concurrency < 1:
        parser.error("--pods and --concurrency must be at least 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, interrupt)
    try:
        settings = Settings(quick=args.quick, pods=pods, concurrency=args.concurrency,
                            log_level=args.log_level, keep_log=args.keep_log, burst=args.burst,
                            split=args.split)
        return split_main(settings) if settings.split else main_sync(settings)
    except KeyboardInterrupt:
        log.warning("interrupted; cleaned up")
        return 130


if __name__ == "__main__":
    sys.exit(main())
