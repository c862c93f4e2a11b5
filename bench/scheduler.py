"""Scheduler benchmark: hollow nodes and plain pods on a 3-controller cluster, pods/s from
creation to bound, against kube-scheduler's scheduler_perf threshold.

Workload (kube-scheduler's scheduler_perf "SchedulingBasic", at 1,000 nodes instead of 5,000):

  * ``ControlPlane(3)``: three ``corral controller`` processes on loopback, HTTPS, their embedded
    Raft store with fsync on every commit. The Raft leader's controller runs the control loops
    (scheduler, replicaset, node lifecycle, serviceaccount: ``controlplane.controller``).
  * ``--nodes`` (1,000; ``--quick`` 100) hollow nodes (``nodeagent.hollow.HollowFleet``) in this
    process, each as scheduler_perf's node-default.yaml: 4 cpu, 32Gi, 110 pods, Ready. The fleet
    renews one Lease per node every 10 s, spread over the period (1,000 nodes: a steady 100
    writes/s that the cluster serves during the measurement, as it would for real kubelets).
    The fleet runs with ``mark_running=False``: pods once bound stay Pending, so no pod status
    write is added per pod. scheduler_perf has no kubelets, and what is measured here is the
    scheduler's throughput; ``--kubelets`` puts the status writes back (diagnostics).
  * ``--pods`` (10,000; ``--quick`` 1,000) pods as scheduler_perf's pod-default.yaml (one pause
    container, requests = limits = 100m cpu, 500Mi memory, container port 80), created through
    the API by ``--concurrency`` (64) concurrent creators spread round-robin over the three
    controllers, one ApiClient (keep-alive session) per controller.

Before the measurement, one warm-up pod whose nodeSelector names the last node registered must
be bound: then the scheduler has seen every node. It is not counted.

What is measured. A pod's creation time is when its POST is sent (``time.perf_counter``, before
the request, so it includes the API's create latency); its bound time is when the watch shows it
with ``spec.nodeName`` set: a handler on the fleet's pod informer (the one pod watch this process
opens; its handler runs synchronously on the watch event). Throughput is pods bound over the time
from the first creation to the last bound; latencies are bound minus creation, nearest-rank
percentiles. Memory: every controller's VmRSS sampled every 0.5 s (maximum) and its VmHWM
(peak) from /proc/PID/status at the end; the leader is named (``leader_election_master_status``
on /metrics). CPU: each controller's main thread (asyncio: HTTP, TLS, JSON, registry, and on the
leader the control loops) and other threads (the Raft tick thread), this process, and the whole
machine over the measured window. The API requests served in the window, by verb and resource,
summed over the controllers' /metrics, say how many writes each pod cost.

The peer: no kube-scheduler binary exists on this machine (nor in the Debian or PyPI package
lists), so the reference is the threshold kube-scheduler must meet in its own scheduler_perf
suite for SchedulingBasic at 5,000 nodes and 10,000 pods: 680 pods/s. The ratio printed is N/680.
That threshold is met by kube-scheduler against an in-memory etcd-backed apiserver on a CI
machine with many cores, and without pod-creation cost inside the measured window: a generous
reference for three Python controllers and this process on 2 cores.

``--profile`` samples the leader with py-spy (``--nonblocking``) during the measured window and
prints its busiest functions, per thread; the figures of such a run are a little lower.

The last line is ``scheduler: N pods/s, p99 L s``.
Usage: ``python bench/scheduler.py [--quick] [--nodes N] [--pods P] [--concurrency C]
[--kubelets] [--profile] [-v]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from benchkit import interrupt, machine_busy, nearest_rank
from prometheus_client.parser import text_string_to_metric_families

from controlplane.client import NODES, PODS, ApiClient, FuncHandler
from controlplane.localcluster import ControlPlane
from nodeagent.hollow import HollowFleet, node_object

log = logging.getLogger("bench.scheduler")

CONTROLLERS = 3
NODES_N, PODS_N = 1_000, 10_000
QUICK_NODES, QUICK_PODS = 100, 1_000
CONCURRENCY = 64
NAMESPACE = "default"
#: kube-scheduler's scheduler_perf threshold for SchedulingBasic, 5,000 nodes / 10,000 pods.
PEER_PODS_S = 680.0
TARGET_RSS_MB = 1024.0
RSS_SAMPLE_S = 0.5
#: A run gives up when no pod got bound for this long.
STALL_S = 60.0
PROFILE_RATE = 97  # samples/s
PROFILE_TOP = 25


@dataclass(frozen=True)
class Settings:
    quick: bool
    nodes: int
    pods: int
    concurrency: int
    kubelets: bool = False
    profile: bool = False
    fsync: str = "always"


# -- objects ------------------------------------------------------------------------------------


def bench_node(name: str) -> dict[str, Any]:
    """scheduler_perf's node-default.yaml: 4 cpu, 32Gi, 110 pods."""
    return node_object(name, cpu="4", memory="32Gi", pods=110)


def bench_pod(name: str, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    """scheduler_perf's pod-default.yaml."""
    resources = {"cpu": "100m", "memory": "500Mi"}
    spec: dict[str, Any] = {"containers": [{
        "name": "pause", "image": "registry.k8s.io/pause:3.10",
        "ports": [{"containerPort": 80}],
        "resources": {"limits": dict(resources), "requests": dict(resources)}}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


# -- process figures ----------------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return math.nan


class RssSampler(threading.Thread):
    """The largest VmRSS each process reached, sampled every RSS_SAMPLE_S."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True, name="rss sampler")
        self.pids = pids
        self.max_kb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for label, pid in self.pids.items():
                rss = proc_status_kb(pid, "VmRSS")
                if not math.isnan(rss):
                    self.max_kb[label] = max(self.max_kb[label], rss)
            self._halt.wait(RSS_SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def thread_split(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread and of its other threads."""
    try:
        threads = psutil.Process(pid).threads()
    except psutil.Error:
        return (math.nan, math.nan)
    main = sum(t.user_time + t.system_time for t in threads if t.id == pid)
    return main, sum(t.user_time + t.system_time for t in threads if t.id != pid)


@dataclass
class CpuSample:
    at: float
    per_process: dict[str, tuple[float, float]]
    busy: float


def cpu_sample(pids: dict[str, int]) -> CpuSample:
    return CpuSample(time.monotonic(), {label: thread_split(pid) for label, pid in pids.items()},
                     machine_busy())


# -- the controllers' /metrics ------------------------------------------------------------------

Requests = Counter[tuple[str, str, str]]  # (verb, resource, subresource) -> 2xx answers
#: (controller, what) -> (seconds summed, count): request latency by verb/resource and store
#: call latency by operation, from the controllers' histograms.
Latencies = dict[tuple[str, str], tuple[float, float]]


@dataclass
class Scrape:
    requests: Requests = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=dict)
    leader: str | None = None

    def __sub__(self, other: Scrape) -> Scrape:
        latencies = {}
        for key, (total, count) in self.latencies.items():
            total0, count0 = other.latencies.get(key, (0.0, 0.0))
            latencies[key] = (total - total0, count - count0)
        return Scrape(self.requests - other.requests, latencies, self.leader)


def scrape(url: str, context: Any, label: str, into: Scrape) -> None:
    """Successful requests served by verb, resource and subresource; latency sums; whether
    this controller leads."""
    with urllib.request.urlopen(url + "/metrics", timeout=10.0, context=context) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "apiserver_request_total" and labels.get("code", "").startswith("2"):
                key = (labels["verb"], labels["resource"], labels.get("subresource", ""))
                into.requests[key] += int(sample.value)
            elif name == "leader_election_master_status" and sample.value == 1:
                into.leader = label
            elif name.endswith(("_sum", "_count")) and name.startswith(
                    ("apiserver_request_duration_seconds", "corral_store_request_duration")):
                if "operation" in labels:
                    what = f"store {labels['operation']}"
                else:
                    sub = labels.get("subresource", "")
                    what = f"{labels['verb']} {labels['resource']}" + (f"/{sub}" if sub else "")
                total, count = into.latencies.get((label, what), (0.0, 0.0))
                if name.endswith("_sum"):
                    total += sample.value
                else:
                    count += sample.value
                into.latencies[(label, what)] = (total, count)


def scrape_all(plane: ControlPlane) -> Scrape:
    context = plane.ssl_context()
    result = Scrape()
    for i, url in enumerate(plane.urls):
        try:
            scrape(url, context, f"c{i}", result)
        except OSError as exc:
            log.warning("c%d: /metrics not read: %s", i, exc)
    return result


# -- profile of the leader ----------------------------------------------------------------------


class Profiler:
    """py-spy sampling one process (--nonblocking: it is not paused) until ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.path = os.path.join(tempfile.gettempdir(), f"corral-sched-{pid}.txt")
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""

    def start(self) -> None:
        binary = shutil.which("py-spy")
        if binary is None:
            self.error = "py-spy is not installed"
            return
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(self.pid), "--rate", str(PROFILE_RATE),
             "--nonblocking", "--threads", "--format", "raw", "-o", self.path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> list[str]:
        if self.proc is None:
            return [f"profile: {self.error}"]
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return ["profile: py-spy did not stop"]
        if not os.path.exists(self.path):
            return [f"profile: py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"]
        return summarize_profile(self.path)


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'file.py:func'."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name}" if file else name


def summarize_profile(path: str) -> list[str]:
    """Per thread: samples; overall: the functions with most samples on top of the stack (self)
    and anywhere in it (inclusive)."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
            frames = [fr for fr in frames if not fr.startswith(("thread", "process"))]
            if not frames:
                continue
            total += count
            threads[thread] += count
            own[_frame_name(frames[-1])] += count
            for name in {_frame_name(fr) for fr in frames}:
                inclusive[name] += count
    if not total:
        return ["profile: no samples"]
    lines = [f"profile of the leader (py-spy, {PROFILE_RATE} samples/s of running threads, "
             f"{total} samples; raw stacks in {path}):"]
    lines += [f"  thread {name}: {100 * n / total:.1f}%" for name, n in threads.most_common(4)]
    lines.append("  -- self (top of stack)")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(PROFILE_TOP)]
    lines.append("  -- inclusive")
    lines += [f"  {100 * n / total:5.1f}%  {name}"
              for name, n in inclusive.most_common(PROFILE_TOP)]
    return lines


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Result:
    sent: dict[str, float] = field(default_factory=dict)  # pod -> POST sent (perf_counter)
    created: dict[str, float] = field(default_factory=dict)  # pod -> POST answered
    bound: dict[str, float] = field(default_factory=dict)  # pod -> seen bound
    failed: Counter[str] = field(default_factory=Counter)
    cpu: tuple[CpuSample, CpuSample] | None = None
    requests: Requests = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=dict)
    leader: str | None = None
    profile: list[str] = field(default_factory=list)
    setup_s: float = 0.0


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def measure(plane: ControlPlane, settings: Settings, pids: dict[str, int],
                  began: float, *, ipam: bool = False) -> Result:
    result = Result()
    context = plane.ssl_context()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            ApiClient([url], context, user_agent="bench-scheduler")) for url in plane.urls]
        # The fleet talks to the controllers other than the first client's, round robin.
        fleet_client = await stack.enter_async_context(
            ApiClient(plane.urls[1:] + plane.urls[:1], context, user_agent="hollow-fleet"))
        names = [f"hollow-{i:05d}" for i in range(settings.nodes)]
        fleet = HollowFleet(fleet_client, names, node=bench_node,
                            mark_running=settings.kubelets)
        wanted: set[str] = set()

        def seen(pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            if name in wanted and name not in result.bound and pod["spec"].get("nodeName"):
                result.bound[name] = time.perf_counter()

        fleet.pods.add_handler(FuncHandler(seen, lambda old, new: seen(new)))
        fleet_task = asyncio.create_task(fleet.run(), name="hollow fleet")
        try:
            await wait_for(lambda: fleet.registered.is_set() or fleet_task.done(), 300,
                           "nodes registered")
            if fleet_task.done():
                fleet_task.result()
            await wait_for(fleet.pods.synced.is_set, 60, "pod informer synced")
            log.info("%d nodes registered (%.1f s)", len(names), time.monotonic() - began)
            if ipam:
                await wait_for_pod_cidrs(clients[0], len(names))
            # Warm-up: bound only once the scheduler has seen the last node.
            wanted.add("warm-up")
            await clients[0].create(PODS, NAMESPACE, bench_pod(
                "warm-up", {"kubernetes.io/hostname": names[-1]}))
            await wait_for(lambda: "warm-up" in result.bound, 120, "warm-up pod bound")
            result.bound.clear()
            wanted.clear()
            result.setup_s = time.monotonic() - began
            log.info("warm-up pod bound; measuring (%.1f s)", result.setup_s)

            pod_names = [f"pod-{i:05d}" for i in range(settings.pods)]
            wanted.update(pod_names)
            before = scrape_all(plane)
            profiler = None
            if settings.profile:
                if before.leader in pids:
                    profiler = Profiler(pids[before.leader])
                    profiler.start()
            start_cpu = cpu_sample({**pids, "bench": os.getpid()})
            queue = iter(enumerate(pod_names))

            async def creator() -> None:
                for i, name in queue:
                    client = clients[i % len(clients)]
                    result.sent[name] = time.perf_counter()
                    try:
                        await client.create(PODS, NAMESPACE, bench_pod(name))
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        result.failed[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                        wanted.discard(name)
                        continue
                    result.created[name] = time.perf_counter()

            creators = [asyncio.create_task(creator()) for _ in range(settings.concurrency)]
            last_count, last_change = -1, time.monotonic()
            while len(result.bound) < len(wanted) or not all(t.done() for t in creators):
                if len(result.bound) != last_count:
                    last_count, last_change = len(result.bound), time.monotonic()
                elif time.monotonic() - last_change > STALL_S:
                    log.warning("no pod bound for %.0f s: giving up", STALL_S)
                    break
                if fleet_task.done():
                    fleet_task.result()
                await asyncio.sleep(0.05)
            end_cpu = cpu_sample({**pids, "bench": os.getpid()})
            result.cpu = (start_cpu, end_cpu)
            if profiler is not None:
                result.profile = profiler.stop()
            window = scrape_all(plane) - before
            result.requests, result.latencies, result.leader = (
                window.requests, window.latencies, window.leader)
            for task in creators:
                task.cancel()
            await asyncio.gather(*creators, return_exceptions=True)
        finally:
            fleet_task.cancel()
            await asyncio.gather(fleet_task, return_exceptions=True)
    return result


# -- report -------------------------------------------------------------------------------------


def report(result: Result, settings: Settings, rss: RssSampler, pids: dict[str, int],
           wall: float) -> float:
    """Print the figures; pods/s."""
    bound = [name for name in result.bound if name in result.sent]
    first = min(result.sent.values(), default=math.nan)
    last = max((result.bound[name] for name in bound), default=math.nan)
    span = last - first
    rate = len(bound) / span if span > 0 else math.nan
    latencies = [result.bound[name] - result.sent[name] for name in bound]
    created_last = max(result.created.values(), default=math.nan)
    create_lat = [result.created[n] - result.sent[n] for n in result.created]
    print(f"pods bound: {len(bound):,} of {settings.pods:,} in {span:.2f} s (first creation to "
          f"last bound); creation took {created_last - first:.2f} s "
          f"({len(result.created) / (created_last - first):,.0f} pods/s created, create p50 "
          f"{1000 * nearest_rank(create_lat, 0.5):.0f} ms, p99 "
          f"{1000 * nearest_rank(create_lat, 0.99):.0f} ms)")
    if result.failed:
        print(f"failed creates: {dict(result.failed.most_common(5))}")
    print("creation to bound: " + ", ".join(
        f"p{int(q * 100)} {nearest_rank(latencies, q):.3f} s" for q in (0.5, 0.9, 0.99, 1.0)))
    # Binds per second of the run: where it ramps, stalls or tails off.
    if bound:
        seconds = Counter(int(result.bound[n] - first) for n in bound)
        print("pods bound in each second: "
              + " ".join(str(seconds.get(s, 0)) for s in range(int(span) + 1)))
    # Writes per pod.
    if result.requests:
        top = sorted(result.requests.items(), key=lambda kv: -kv[1])
        parts = [f"{verb} {res}{'/' + sub if sub else ''} {n:,}" for (verb, res, sub), n in top
                 if n >= max(1, len(bound) // 100)]
        writes = sum(n for (verb, _, _), n in result.requests.items()
                     if verb in ("create", "update", "patch", "delete", "deletecollection"))
        print(f"API requests served in the window (2xx, all controllers): {', '.join(parts)}; "
              f"writes {writes:,} = {writes / max(len(bound), 1):.2f} per pod, "
              f"{writes / span:,.0f} writes/s")
    if result.latencies:
        by_controller: dict[str, list[str]] = {}
        for (label, what), (total, count) in sorted(result.latencies.items()):
            if count >= max(1, len(bound) // 100):
                by_controller.setdefault(label, []).append(
                    f"{what} {1000 * total / count:.1f} ms x{count:,.0f}")
        for label, parts in by_controller.items():
            lead = " (leader)" if label == result.leader else ""
            print(f"{label}{lead} mean latency in the window: " + ", ".join(parts))
    if result.cpu is not None:
        start, end = result.cpu
        window = end.at - start.at
        parts = []
        ours = 0.0
        for label, (main, other) in end.per_process.items():
            main0, other0 = start.per_process[label]
            ours += main - main0 + other - other0
            lead = " (leader)" if label == result.leader else ""
            if label == "bench":
                parts.append(f"bench process {100 * (main - main0 + other - other0) / window:.0f}%")
            else:
                parts.append(f"{label}{lead} {100 * (main - main0 + other - other0) / window:.0f}%"
                             f" (main thread {100 * (main - main0) / window:.0f}%, other "
                             f"{100 * (other - other0) / window:.0f}%)")
        cores = psutil.cpu_count() or 1
        print(f"CPU over the {window:.1f} s window, % of one core: " + "; ".join(parts)
              + f"; machine busy {100 * (end.busy - start.busy) / window:.0f}% of "
              f"{100 * cores}%, of which not these processes (kernel, snapshot writers, "
              f"anything else running) {100 * (end.busy - start.busy - ours) / window:.0f}%")
    worst = 0.0
    parts = []
    for label, pid in pids.items():
        hwm = proc_status_kb(pid, "VmHWM") / 1024
        sampled = rss.max_kb.get(label, math.nan) / 1024
        worst = max(worst, hwm if not math.isnan(hwm) else sampled)
        lead = " (leader)" if label == result.leader else ""
        parts.append(f"{label}{lead} max VmRSS {sampled:.0f} MB, VmHWM {hwm:.0f} MB")
    print("controller memory: " + "; ".join(parts))
    for line in result.profile:
        print(line)
    print(f"setup (cluster start, {settings.nodes:,} nodes registered, warm-up pod bound) "
          f"{result.setup_s:.1f} s; wall time {wall:.1f} s")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"peer: kube-scheduler's scheduler_perf threshold, SchedulingBasic 5000 nodes/10k pods: "
          f"{PEER_PODS_S:.0f} pods/s (no kube-scheduler binary on this machine); "
          f"ratio Corral/threshold {rate / PEER_PODS_S:.2f}")
    print(f"targets: pods/s >= {PEER_PODS_S:.0f}: {verdict(rate >= PEER_PODS_S)}; controller "
          f"peak memory <= {TARGET_RSS_MB:.0f} MB: {verdict(worst <= TARGET_RSS_MB)} "
          f"({worst:.0f} MB)" + ("; --quick within 60 s: " + verdict(wall <= 60.0)
                                  if settings.quick else ""))
    p99 = nearest_rank(latencies, 0.99)
    print(f"scheduler: {rate:.0f} pods/s, p99 {p99:.2f} s")
    return rate


def log_lines(plane: ControlPlane, per_controller: int = 6) -> list[str]:
    """Leadership changes, warnings and errors in the controllers' logs (the log is the file
    beside each controller's data dir), last ones first cut."""
    lines: list[str] = []
    for i in range(CONTROLLERS):
        path = plane.kubeconfig(i).removesuffix(".kubeconfig") + ".log"
        try:
            with open(path, errors="replace") as f:
                text = f.read().splitlines()
        except OSError:
            continue
        found = [line for line in text if (" WARNING " in line or " ERROR " in line
                                            or "Traceback" in line)
                 and "API server listening" not in line]
        lines.extend(f"c{i} log: {line[:240]}" for line in found[-per_controller:])
        if len(found) > per_controller:
            lines.append(f"c{i} log: ({len(found) - per_controller} earlier warnings)")
    return lines


def controller_extra_args(nodes: int) -> tuple[str, ...]:
    """Node IPAM, where the controllers run it, gets a cluster CIDR with a /24 for every node
    (the default /16 holds 256), so that registration does not end in CIDRNotAvailable."""
    from controlplane.controller import build_parser

    flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    if "--cluster-cidr" not in flags or nodes <= 256:
        return ()
    return ("--cluster-cidr", "10.0.0.0/8")


async def wait_for_pod_cidrs(client: ApiClient, count: int, timeout: float = 120.0) -> None:
    """With node IPAM on, let every node get its podCIDR before the measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = (await client.list(NODES)).items
        if sum(1 for n in nodes if (n.get("spec") or {}).get("podCIDR")) >= count:
            return
        await asyncio.sleep(0.5)
    log.warning("not every node got a podCIDR within %.0f s", timeout)


def main_sync(settings: Settings) -> int:
    began = time.monotonic()
    mode = "quick" if settings.quick else "full"
    print(f"scheduler benchmark ({mode}): {settings.nodes:,} hollow nodes, {settings.pods:,} pods "
          f"by {settings.concurrency} creators over {CONTROLLERS} controllers; "
          f"{psutil.cpu_count()} CPUs; kubelet status writes "
          f"{'on' if settings.kubelets else 'off'}; store fsync {settings.fsync}", flush=True)
    extra = controller_extra_args(settings.nodes)
    with ControlPlane(CONTROLLERS, fsync=settings.fsync, extra_args=extra) as plane:
        pids = plane.pids()
        log.info("%d controllers up in %.1f s", CONTROLLERS, time.monotonic() - began)
        rss = RssSampler(pids)
        rss.start()
        try:
            result = asyncio.run(measure(plane, settings, pids, began, ipam=bool(extra)))
        finally:
            rss.stop()
        for line in log_lines(plane):
            print(line)
        wall = time.monotonic() - began
        report(result, settings, rss, pids, wall)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_NODES} nodes and {QUICK_PODS:,} pods (within 60 s)")
    parser.add_argument("--nodes", type=int, default=None,
                        help=f"hollow nodes (default {NODES_N:,}; --quick {QUICK_NODES})")
    parser.add_argument("--pods", type=int, default=None,
                        help=f"pods (default {PODS_N:,}; --quick {QUICK_PODS:,})")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="concurrent pod creators (default %(default)s)")
    parser.add_argument("--kubelets", action="store_true",
                        help="hollow kubelets report bound pods Running (a status write each)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the leader with py-spy during the window")
    parser.add_argument("--fsync", choices=("always", "interval", "none"), default="always",
                        help="the store's fsync policy (diagnostics; default %(default)s, as "
                        "a real cluster runs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    nodes = args.nodes if args.nodes is not None else (QUICK_NODES if args.quick else NODES_N)
    pods = args.pods if args.pods is not None else (QUICK_PODS if args.quick else PODS_N)
    if nodes < 1 or pods < 1 or args.concurrency < 1:
        parser.error("--nodes, --pods and --concurrency must be at least 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return main_sync(Settings(quick=args.quick, nodes=nodes, pods=pods,
                                  concurrency=args.concurrency, kubelets=args.kubelets,
                                  profile=args.profile, fsync=args.fsync))
    except KeyboardInterrupt:
        log.warning("interrupted; cluster stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
