"""API benchmark: ConfigMap create+get+update through 3 controllers, embedded store against etcd.

One workload, run against each backend in turn (never both at once: the machine has 2 cores):

  * ``ControlPlane(3)``: three ``corral controller`` processes (HTTPS, cluster CA), storing into
    their embedded Raft group (``fsync="always"``), then into a 3-member ``EtcdCluster`` (etcd's
    default durability: fsync on every commit) through ``--etcd-endpoints``;
  * 64 concurrent clients (``--clients``), spread round-robin over the 3 controller URLs, each
    looping: create a ConfigMap with a unique name and 10 small data keys (POST, 201), get it
    (GET, 200), update one key of the object just read (PUT with its resourceVersion, 200);
  * a warm-up (connections, TLS handshakes, the first Raft snapshots) that is not counted, then a
    measured window of fixed length (20 s; ``--quick`` 8 s; ``--duration``).

The load comes from ``--procs`` client processes (multiprocessing, spawn); each runs asyncio +
aiohttp with one ``ClientSession`` per controller URL whose connector holds one keep-alive
connection per client on that URL, and the admin client certificate. An operation counts when it
started inside the measured window; its latency is ``time.monotonic`` around the awaited request
and the read of the whole response. Rates are successful counted operations over the time from the
start of the window until the last of them completed (failed ones are reported as errors, and do
not stretch that time: one request stuck until the store's 10 s timeout would otherwise skew the
rate by half a window). p50/p99 are nearest-rank percentiles of the merged samples of all client
processes. Writes = creates + updates.

Where the time goes, sampled over the window: the CPU time (psutil) of each controller, split
into its main thread (asyncio: HTTP, TLS, JSON, the registry) and its other threads (pysyncobj's
tick thread), of the etcd members, of the client processes and of the whole machine (what else
runs there competes with everything measured); the processes the controllers fork (RaftStore
snapshot writers); writes completed per second; and per controller, the clients' write latency
next to the controller's own ``/metrics`` histograms (request latency by verb, latency of its
calls into the store), scraped at both ends of the window. Warnings in the controllers' logs are
shown. ``--profile`` runs controller c0 of the embedded cluster under cProfile (main thread only,
its whole life) and prints its top functions; the figures of such a run are not representative.
``--backend`` and ``--controllers`` are for diagnostics (one backend only, or 1 or 5 members).

The last line is ``api: embedded/etcd write throughput ratio R, writes/s W, p99 P ms`` where W and
P are the embedded store's write throughput and write p99.
Usage: ``python bench/api.py [--quick] [--clients N] [--duration S] [--warmup S] [--procs P]
[--profile] [--backend etcd|embedded] [--controllers 1|3|5] [-v]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import pstats
import random
import signal
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import psutil
from benchkit import interrupt, machine_busy
from prometheus_client.parser import text_string_to_metric_families

from controlplane.auth.pki import client_ssl_context
from controlplane.localcluster import ControlPlane
from raftstore.localetcd import EtcdCluster, etcd_version

log = logging.getLogger("bench.api")

CONTROLLERS = 3
CLIENTS = 64
NAMESPACE = "default"
DATA_KEYS = 10
BACKENDS = ("etcd", "embedded")  # the peer first, as in bench/store.py
OPS = ("create", "get", "update")
WRITE_OPS = ("create", "update")
REQUEST_TIMEOUT_S = 30.0
CHILD_POLL_S = 0.2
READY_TIMEOUT_S = 90.0  # client processes importing aiohttp and opening sessions
RESULT_GRACE_S = 90.0  # after the window: in-flight requests finish within REQUEST_TIMEOUT_S
PROFILE_EXIT_TIMEOUT_S = 60.0
PROFILE_TOP = 25
# Targets of the issue (Kubernetes' own SLO for mutating calls is p99 <= 1 s).
TARGET_WRITES_S = 2_000.0
TARGET_P99_MS = 100.0
TARGET_RATIO = 1.0


@dataclass(frozen=True)
class Settings:
    quick: bool
    clients: int
    duration: float  # measured window per backend, seconds
    warmup: float  # uncounted load before the window, seconds
    procs: int  # client processes
    profile: bool = False
    backends: tuple[str, ...] = ("etcd", "embedded")
    controllers: int = CONTROLLERS


# -- the load (runs in each client process) --------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one client process needs; picklable (the SSL context is rebuilt from the PEMs)."""

    index: int
    backend: str
    urls: list[str]
    workers: list[int]  # global client numbers run by this process
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    seed: int
    run: str  # in every ConfigMap name, so that names never repeat across runs on one cluster


@dataclass
class LoadStats:
    """One process's counted operations (those that started inside the window)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    errors: Counter[str] = field(default_factory=Counter)  # "op: status or exception"
    warm_ops: int = 0
    warm_errors: Counter[str] = field(default_factory=Counter)
    last_done: float = 0.0  # monotonic time the last counted successful operation completed
    by_controller: dict[int, list[float]] = field(default_factory=dict)  # write latencies
    per_second: Counter[int] = field(default_factory=Counter)  # writes completed, by second
    checked: int = 0  # updates whose answer was checked against what was sent
    bad_answers: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # first answer of each failure kind


def _configmap(name: str, rng: random.Random) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "corral-bench"}},
        "data": {f"key{i}": f"value-{i}-{rng.getrandbits(64):016x}" for i in range(DATA_KEYS)},
    }


async def _client(
    number: int,
    spec: LoadSpec,
    session: Any,
    base: str,
    window: tuple[float, float],
    stats: LoadStats,
) -> None:
    start_window, end_window = window
    clock = time.monotonic
    controller_writes = stats.by_controller.setdefault(number % len(spec.urls), [])
    rng = random.Random(spec.seed * 100_003 + number)
    collection = f"{base}/api/v1/namespaces/{NAMESPACE}/configmaps"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    expected = {"create": 201, "get": 200, "update": 200}
    seq = 0

    async def request(op: str, method: str, url: str, body: bytes | None) -> bytes | None:
        """One timed request; the body of an expected answer, None otherwise."""
        start = clock()
        try:
            async with session.request(method, url, data=body, headers=headers) as answer:
                payload = await answer.read()
                outcome = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            payload, outcome = None, type(exc).__name__  # type: ignore[assignment]
        done = clock()
        ok = outcome == expected[op]
        if start < start_window:
            stats.warm_ops += 1
            if not ok:
                stats.warm_errors[f"{op}: {outcome}"] += 1
        elif ok:
            stats.latencies[op].append(done - start)
            if op in WRITE_OPS:
                controller_writes.append(done - start)
                stats.per_second[int(done - start_window)] += 1
            stats.last_done = max(stats.last_done, done)
        else:
            stats.errors[f"{op}: {outcome}"] += 1
        if not ok and f"{op} -> {outcome}" not in stats.examples:
            stats.examples[f"{op} -> {outcome}"] = repr(payload[:300]) if payload else ""
        return payload if ok else None

    while clock() < end_window:
        name = f"bench-{spec.run}-{number}-{seq}"
        seq += 1
        created = await request(
            "create", "POST", collection, json.dumps(_configmap(name, rng)).encode()
        )
        if created is None or clock() >= end_window:
            continue
        url = f"{collection}/{name}"
        got = await request("get", "GET", url, None)
        if got is None or clock() >= end_window:
            continue
        new_value = f"updated-{rng.getrandbits(64):016x}"
        try:
            obj = json.loads(got)
            obj["data"]["key0"] = new_value
        except (ValueError, KeyError, TypeError) as exc:
            stats.bad_answers.append(f"get of {name}: {exc!r} in {got[:300]!r}")
            continue
        updated = await request("update", "PUT", url, json.dumps(obj).encode())
        if updated is not None and seq == 1:
            # Once per client: the answer carries what was sent and a newer resourceVersion.
            stats.checked += 1
            try:
                answer = json.loads(updated)
                rv_before = int(obj["metadata"]["resourceVersion"])
                rv_after = int(answer["metadata"]["resourceVersion"])
                good = answer["data"].get("key0") == new_value and rv_after > rv_before
            except (ValueError, KeyError, TypeError):
                good = False
            if not good:
                stats.bad_answers.append(f"update of {name}: sent key0={new_value!r} on "
                                         f"{obj['metadata'].get('resourceVersion')!r}, got "
                                         f"{updated[:300]!r}")


async def _load_async(spec: LoadSpec, conn: multiprocessing.connection.Connection) -> LoadStats:
    context = client_ssl_context(spec.ca_pem, spec.cert_pem, spec.key_pem)
    per_url = Counter(spec.urls[n % len(spec.urls)] for n in spec.workers)
    sessions = {
        url: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=context, limit=count, limit_per_host=count, keepalive_timeout=300
            ),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        for url, count in per_url.items()
    }
    try:
        conn.send(("ready", os.getpid()))
        window = await asyncio.to_thread(conn.recv)
        stats = LoadStats()
        if window is None:  # the coordinator gave up
            return stats
        await asyncio.gather(
            *(
                _client(n, spec, sessions[spec.urls[n % len(spec.urls)]],
                        spec.urls[n % len(spec.urls)], window, stats)
                for n in spec.workers
            )
        )
        return stats
    finally:
        for session in sessions.values():
            await session.close()


def _load_main(spec: LoadSpec, conn: multiprocessing.connection.Connection) -> None:
    """Entry point of a client process: run the load, send back ("result", LoadStats)."""
    # Ctrl-C goes to the whole process group; the coordinator stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = asyncio.run(_load_async(spec, conn))
        conn.send(("result", stats))
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


# -- CPU accounting --------------------------------------------------------------------------


@dataclass
class CpuSample:
    at: float
    per_process: dict[str, tuple[float, float]]  # label -> (main thread, other threads) seconds
    machine_busy: float  # seconds, all CPUs


def _thread_split(pid: int) -> tuple[float, float]:
    try:
        proc = psutil.Process(pid)
        threads = proc.threads()
    except psutil.Error:
        return (math.nan, math.nan)
    main = sum(t.user_time + t.system_time for t in threads if t.id == pid)
    other = sum(t.user_time + t.system_time for t in threads if t.id != pid)
    return (main, other)


def _sample(watched: dict[str, int]) -> CpuSample:
    return CpuSample(
        at=time.monotonic(),
        per_process={label: _thread_split(pid) for label, pid in watched.items()},
        machine_busy=machine_busy(),
    )


def _watch_children(parents: dict[str, int], until: float) -> dict[str, tuple[int, float]]:
    """Poll the processes the controllers fork (RaftStore snapshot writers) until ``until``:
    per controller, how many were seen and the CPU seconds they had used when last seen."""
    seen: dict[int, tuple[str, float]] = {}
    while True:
        for label, pid in parents.items():
            try:
                children = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                try:
                    times = child.cpu_times()
                except psutil.Error:
                    continue
                seen[child.pid] = (label, times.user + times.system)
        if time.monotonic() >= until:
            break
        time.sleep(min(CHILD_POLL_S, max(0.0, until - time.monotonic())))
    summary: dict[str, tuple[int, float]] = {label: (0, 0.0) for label in parents}
    for label, cpu in seen.values():
        n, total = summary[label]
        summary[label] = (n + 1, total + cpu)
    return summary


def _etcd_pids(binary: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for child in psutil.Process().children(recursive=False):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0] == binary and "--name" in cmd:
            found[f"etcd {cmd[cmd.index('--name') + 1]}"] = child.pid
    return dict(sorted(found.items()))


# -- the controllers' own metrics ----------------------------------------------------------------

STORE_HISTOGRAM = "corral_store_request_duration_seconds"
REQUEST_HISTOGRAM = "apiserver_request_duration_seconds"
SCRAPE_TIMEOUT_S = 10.0
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str, context: Any) -> Scrape | None:
    """The two latency histograms of one controller's /metrics (None if it did not answer)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=SCRAPE_TIMEOUT_S,
                                    context=context) as answer:
            text = answer.read().decode()
    except OSError as exc:
        log.warning("could not scrape %s/metrics: %s", url, exc)
        return None
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith((STORE_HISTOGRAM, REQUEST_HISTOGRAM)):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _diff(after: Scrape | None, before: Scrape | None) -> Scrape | None:
    if after is None or before is None:
        return None
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def _histogram(window: Scrape, base: str, **match: str) -> tuple[float, float, float]:
    """(count, mean ms, p99 bucket bound ms) of the samples of ``base`` whose labels match."""
    count = total = 0.0
    buckets: dict[float, float] = {}
    for (name, labels), value in window.items():
        got = dict(labels)
        if any(got.get(k) != v for k, v in match.items()):
            continue
        if name == base + "_count":
            count += value
        elif name == base + "_sum":
            total += value
        elif name == base + "_bucket":
            bound = float(got["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    if count <= 0:
        return (0.0, math.nan, math.nan)
    p99 = next((le for le, n in sorted(buckets.items()) if n >= 0.99 * count), math.inf)
    return (count, 1000.0 * total / count, 1000.0 * p99)


def metrics_line(label: str, window: Scrape | None, seconds: float) -> str:
    if window is None:
        return f"{label}: /metrics not available"

    def verb(name: str) -> str:
        _, mean, p99 = _histogram(window, REQUEST_HISTOGRAM, verb=name, resource="configmaps")
        return f"{name} {mean:.1f} ms (p99 <= {p99:g})"

    parts = [f"server-side mean {verb('create')}, {verb('get')}, {verb('update')}"]
    for operation in ("get", "txn"):
        n, mean, p99 = _histogram(window, STORE_HISTOGRAM, operation=operation)
        parts.append(f"store {operation} {n / seconds:,.0f}/s mean {mean:.1f} ms p99 <= "
                     f"{p99:g} ms")
    return f"{label}: " + "; ".join(parts)


# -- one backend ------------------------------------------------------------------------------


@dataclass
class BackendResult:
    name: str
    settings: Settings
    latencies: dict[str, list[float]]
    errors: Counter[str]
    warm_ops: int
    warm_errors: Counter[str]
    elapsed: float
    cpu: dict[str, tuple[float, float]]  # label -> (main, other) CPU seconds in the window
    cpu_window: float
    machine_busy: float
    by_controller: dict[int, list[float]]  # write latencies by controller index
    per_second: Counter[int]  # writes completed in each second of the window
    forks: dict[str, tuple[int, float]]  # controller -> (children seen, their CPU seconds)
    server: list[Scrape | None]  # per controller: its /metrics histograms over the window
    checked: int
    bad_answers: list[str]
    examples: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def count(self, op: str) -> int:
        if op == "writes":
            return sum(len(self.latencies[o]) for o in WRITE_OPS)
        if op == "all":
            return sum(len(v) for v in self.latencies.values())
        return len(self.latencies[op])

    def samples(self, op: str) -> list[float]:
        if op == "writes":
            return [x for o in WRITE_OPS for x in self.latencies[o]]
        if op == "all":
            return [x for v in self.latencies.values() for x in v]
        return self.latencies[op]

    def rate(self, op: str) -> float:
        return self.count(op) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, op: str, q: float) -> float:
        """Nearest-rank percentile, milliseconds."""
        ordered = sorted(self.samples(op))
        if not ordered:
            return math.nan
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1] * 1000.0

    def error_count(self, op: str) -> int:
        ops = {"writes": WRITE_OPS, "all": OPS}.get(op, (op,))
        return sum(n for key, n in self.errors.items() if key.split(":", 1)[0] in ops)


class _ProfiledControlPlane(ControlPlane):
    """A ControlPlane whose controller ``profiled`` runs under ``python -m cProfile``."""

    def __init__(self, *args: Any, profiled: int, profile_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profiled = profiled
        self.profile_path = profile_path

    def command(self, i: int) -> list[str]:
        cmd = super().command(i)
        if i == self.profiled:
            module = cmd.index("-m")
            cmd[module : module + 2] = [
                "-m", "cProfile", "-o", self.profile_path, "-m", cmd[module + 1]
            ]  # fmt: skip
        return cmd


def _stop_load(procs: list[multiprocessing.process.BaseProcess]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def drive_load(
    backend: str,
    plane: ControlPlane,
    settings: Settings,
    extra_pids: dict[str, int],
    seed: int,
) -> BackendResult:
    """Run the client processes against ``plane``; their merged results and the CPU figures."""
    assert plane.pki is not None
    urls = plane.urls
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: list[multiprocessing.connection.Connection] = []
    try:
        for p in range(settings.procs):
            spec = LoadSpec(
                index=p,
                backend=backend,
                urls=urls,
                workers=[n for n in range(settings.clients) if n % settings.procs == p],
                ca_pem=plane.pki.ca_pem,
                cert_pem=plane.pki.admin_cert_pem,
                key_pem=plane.pki.admin_key_pem,
                seed=seed,
                run=f"{backend[:4]}{os.getpid() % 10_000}s{seed}",
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_load_main, args=(spec, child), name=f"api-load-{p}",
                               daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            conns.append(parent)
        client_pids = {}
        for p, conn in enumerate(conns):
            kind, payload = _receive(conn, procs[p], time.monotonic() + READY_TIMEOUT_S)
            if kind != "ready":
                raise RuntimeError(f"client process {p} failed to start: {payload}")
            client_pids[f"client {p}"] = payload

        watched = {**plane.pids(), **extra_pids, **client_pids,
                   "coordinator": os.getpid()}
        scrape_context = plane.ssl_context()
        start = time.monotonic() + settings.warmup
        end = start + settings.duration
        for conn in conns:
            conn.send((start, end))
        log.info("%s: warm-up %.0f s, then %.0f s measured", backend, settings.warmup,
                 settings.duration)
        time.sleep(max(0.0, start - time.monotonic()))
        before = _sample(watched)
        scraped_before = [_scrape(url, scrape_context) for url in urls]
        forks = _watch_children(plane.pids(), end)
        after = _sample(watched)
        scraped_after = [_scrape(url, scrape_context) for url in urls]

        results: list[LoadStats] = []
        deadline = end + RESULT_GRACE_S
        for p, conn in enumerate(conns):
            kind, payload = _receive(conn, procs[p], deadline)
            if kind != "result":
                raise RuntimeError(f"client process {p} failed: {payload}")
            results.append(payload)
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(None)  # harmless if the process already has its window
            conn.close()
        _stop_load(procs)

    merged: dict[str, list[float]] = {op: [] for op in OPS}
    errors: Counter[str] = Counter()
    warm_errors: Counter[str] = Counter()
    by_controller: dict[int, list[float]] = {i: [] for i in range(len(urls))}
    per_second: Counter[int] = Counter()
    for stats in results:
        per_second.update(stats.per_second)
        for op in OPS:
            merged[op].extend(stats.latencies[op])
        for i, samples in stats.by_controller.items():
            by_controller[i].extend(samples)
        errors.update(stats.errors)
        warm_errors.update(stats.warm_errors)
    last_done = max((s.last_done for s in results), default=0.0)
    cpu = {
        label: (after.per_process[label][0] - before.per_process[label][0],
                after.per_process[label][1] - before.per_process[label][1])
        for label in watched
    }
    return BackendResult(
        name=backend,
        settings=settings,
        latencies=merged,
        errors=errors,
        warm_ops=sum(s.warm_ops for s in results),
        warm_errors=warm_errors,
        elapsed=max(0.0, last_done - start),
        cpu=cpu,
        cpu_window=after.at - before.at,
        machine_busy=after.machine_busy - before.machine_busy,
        by_controller=by_controller,
        per_second=per_second,
        forks=forks,
        server=[_diff(a, b) for a, b in zip(scraped_after, scraped_before, strict=True)],
        checked=sum(s.checked for s in results),
        bad_answers=[a for s in results for a in s.bad_answers][:5],
        examples={k: v for s in results for k, v in s.examples.items()},
    )


def _receive(
    conn: multiprocessing.connection.Connection,
    proc: multiprocessing.process.BaseProcess,
    deadline: float,
) -> tuple[str, Any]:
    while True:
        if conn.poll(0.2):
            try:
                message: tuple[str, Any] = conn.recv()
            except EOFError:
                proc.join(5)
                return ("error", f"process exited with code {proc.exitcode}")
            return message
        if not proc.is_alive() and not conn.poll(0):
            return ("error", f"process exited with code {proc.exitcode}")
        if time.monotonic() > deadline:
            return ("error", "timed out")


def _profile_report(plane: _ProfiledControlPlane, path: str) -> list[str]:
    """SIGTERM the profiled controller so that cProfile writes its file; its top functions."""
    pids = plane.pids()
    pid = pids.get(f"c{plane.profiled}")
    if pid is None:
        return ["profile: controller process not found"]
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(PROFILE_EXIT_TIMEOUT_S)
    except psutil.TimeoutExpired:
        return [(f"profile: controller c{plane.profiled} did not exit on SIGTERM in "
                 f"{PROFILE_EXIT_TIMEOUT_S:.0f} s; no profile")]
    except psutil.Error as exc:
        return [f"profile: {exc}"]
    if not os.path.exists(path):
        return ["profile: cProfile wrote no file"]
    lines = [(f"profile of controller c{plane.profiled} (cProfile, main thread, whole life; "
              f"saved as {path}):")]
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(path, stream=out)
        stats.sort_stats(sort).print_stats(PROFILE_TOP)
        text = out.getvalue().splitlines()
        # Keep the column header and the rows; drop pstats' preamble.
        head = next((i for i, line in enumerate(text) if line.lstrip().startswith("ncalls")), 0)
        lines.append(f"-- by {sort}")
        lines.extend(line for line in text[head:] if line.strip())
    return lines


def _log_warnings(plane: ControlPlane, per_controller: int = 4) -> list[str]:
    """The last warnings/errors in each controller's log tail (its first 3 and last 20 lines),
    leaving out the start-up notice."""
    lines: list[str] = []
    for i in range(plane.size):
        tail = [line for line in plane.log_tail(i).splitlines()
                if (" WARNING " in line or " ERROR " in line or "Traceback" in line)
                and "API server listening" not in line]
        lines.extend(f"  c{i} log: {line[:240]}" for line in tail[-per_controller:])
    return lines


def run_backend(backend: str, settings: Settings, seed: int) -> BackendResult:
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        extra: dict[str, int] = {}
        endpoints: list[str] | None = None
        notes: list[str] = []
        if backend == "etcd":
            cluster = stack.enter_context(EtcdCluster(3))
            endpoints = cluster.endpoints
            extra = _etcd_pids(cluster.binary)
            notes.append(f"etcd: {etcd_version(cluster.binary)}, 3 members; every controller's "
                         "EtcdStore prefers the first endpoint (member m0)")
        profile_path = ""
        if settings.profile and backend == "embedded":
            profile_path = os.path.join(tempfile.gettempdir(),
                                        f"corral-api-c0-{os.getpid()}.prof")
            plane: ControlPlane = _ProfiledControlPlane(
                settings.controllers, etcd_endpoints=endpoints, fsync="always",
                profiled=0, profile_path=profile_path)
        else:
            plane = ControlPlane(settings.controllers, etcd_endpoints=endpoints, fsync="always")
        stack.enter_context(plane)
        log.info("%s: %d controllers up in %.1f s at %s", backend, settings.controllers,
                 time.monotonic() - began, ", ".join(plane.urls))
        result = drive_load(backend, plane, settings, extra, seed)
        result.notes = notes
        result.notes.extend(_log_warnings(plane))
        if profile_path:
            assert isinstance(plane, _ProfiledControlPlane)
            result.notes.extend(_profile_report(plane, profile_path))
    return result


# -- report -----------------------------------------------------------------------------------


def table(results: list[BackendResult]) -> list[str]:
    header = (f"{'backend':<10}{'op':<8}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'ops':>9}{'errors':>8}{'secs':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        for op in (*OPS, "writes", "all"):
            lines.append(
                f"{r.name:<10}{op:<8}{r.rate(op):>9,.0f}{r.percentile(op, 0.50):>9.1f}"
                f"{r.percentile(op, 0.99):>9.1f}{r.percentile(op, 1.0):>9.1f}{r.count(op):>9,}"
                f"{r.error_count(op):>8}{r.elapsed:>7.1f}"
            )
    return lines


def cpu_lines(r: BackendResult) -> list[str]:
    window = r.cpu_window or math.nan

    def pct(seconds: float) -> str:
        return f"{100 * seconds / window:.0f}%"

    parts = []
    known = 0.0
    for label, (main, other) in r.cpu.items():
        known += main + other
        if label.startswith("c") and label[1:].isdigit():
            parts.append(f"{label} {pct(main + other)} (main thread {pct(main)}, other "
                         f"threads {pct(other)})")
        else:
            parts.append(f"{label} {pct(main + other)}")
    cores = psutil.cpu_count() or 1
    lines = [f"{r.name}: CPU in the {window:.1f} s window, % of one core: " + "; ".join(parts)]
    forked = [f"{label} {n} ({cpu:.1f} CPU-s)" for label, (n, cpu) in r.forks.items()]
    lines.append(f"{r.name}: child processes forked by the controllers during the window "
                 "(RaftStore snapshot writers; CPU as last seen, a lower bound): "
                 + ", ".join(forked))
    lines.append(
        f"{r.name}: machine busy {pct(r.machine_busy)} of {100 * cores}%; not in the processes "
        f"above (kernel threads, snapshot children, anything else running): "
        f"{pct(max(0.0, r.machine_busy - known))}"
    )
    return lines


def _nearest_rank(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] * 1000.0


def controller_lines(r: BackendResult) -> list[str]:
    """Writes per second over the window; per controller: the clients' view of its writes, and
    its own /metrics histograms."""
    seconds = int(r.settings.duration)
    timeline = [r.per_second.get(i, 0) for i in range(seconds)]
    lines = [f"{r.name}: writes completed in each second of the window: "
             + " ".join(str(n) for n in timeline)]
    for i, samples in sorted(r.by_controller.items()):
        rate = len(samples) / r.elapsed if r.elapsed > 0 else 0.0
        lines.append(
            f"{r.name} c{i}: clients see writes/s {rate:,.0f}, write p50 "
            f"{_nearest_rank(samples, 0.5):.1f} ms, p99 {_nearest_rank(samples, 0.99):.1f} ms")
        lines.append(metrics_line(f"{r.name} c{i}", r.server[i], r.cpu_window))
    return lines


def detail_lines(r: BackendResult) -> list[str]:
    lines = [*r.notes]
    lines.append(f"{r.name}: {r.warm_ops:,} warm-up operations not counted"
                 + (f" ({sum(r.warm_errors.values())} failed: "
                    f"{dict(r.warm_errors.most_common(5))})" if r.warm_errors else ""))
    if r.errors:
        lines.append(f"{r.name}: failed operations in the window: {dict(r.errors.most_common())}")
    lines.append(f"{r.name}: {r.checked} update answers checked against what was sent")
    lines.extend(f"{r.name}: wrong answer: {a}" for a in r.bad_answers)
    lines.extend(f"{r.name}: first failure of its kind: {kind}: {body}"
                 for kind, body in sorted(r.examples.items()))
    return lines


def main_sync(settings: Settings) -> None:
    # Whatever else runs on the machine competes with every process measured here.
    background = psutil.cpu_percent(interval=1.0) * (psutil.cpu_count() or 1)
    began = time.monotonic()
    mode = "quick" if settings.quick else "full"
    per_proc = math.ceil(settings.clients / settings.procs)
    print(
        f"api benchmark ({mode}): ConfigMap create+get+update, {settings.clients} clients over "
        f"{settings.controllers} controllers from {settings.procs} client process(es) (up to "
        f"{per_proc} each); {settings.warmup:g} s warm-up then {settings.duration:g} s measured "
        f"per backend; {psutil.cpu_count()} CPUs; fsync on every commit on both backends",
        flush=True,
    )
    print(f"machine busy before the start: {background:.0f}% of one core (other work competes "
          "with the figures below)", flush=True)
    results = []
    for seed, backend in enumerate(BACKENDS, start=1):
        if backend in settings.backends:
            results.append(run_backend(backend, settings, seed))
            print(f"{backend} done ({time.monotonic() - began:.1f} s)", flush=True)
    by_name = {r.name: r for r in results}
    print()
    for line in table(results):
        print(line)
    print()
    for r in results:
        for line in [*cpu_lines(r), *controller_lines(r), *detail_lines(r)]:
            print(line)
    if settings.profile:
        print("NOTE: controller c0 ran under cProfile; these figures are not representative")
    embedded, etcd = by_name.get("embedded"), by_name.get("etcd")
    w = embedded.rate("writes") if embedded else math.nan
    p = embedded.percentile("writes", 0.99) if embedded else math.nan
    etcd_w = etcd.rate("writes") if etcd else math.nan
    ratio = w / etcd_w if etcd_w > 0 else math.nan
    if etcd:
        print(f"etcd backend: writes/s {etcd_w:,.0f}, write p99 "
              f"{etcd.percentile('writes', 0.99):.1f} ms")
    if len(results) < len(BACKENDS):
        print(f"NOTE: only {', '.join(by_name)} measured (--backend); the ratio needs both")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"targets: writes/s >= {TARGET_WRITES_S:,.0f}: {verdict(w >= TARGET_WRITES_S)}; "
        f"write p99 <= {TARGET_P99_MS:.0f} ms: {verdict(p <= TARGET_P99_MS)}; "
        f"embedded/etcd ratio >= {TARGET_RATIO:.1f}: {verdict(ratio >= TARGET_RATIO)}"
    )
    print(f"wall time {time.monotonic() - began:.1f} s")
    print(f"api: embedded/etcd write throughput ratio {ratio:.2f}, writes/s {w:.0f}, "
          f"p99 {p:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="8 s measured per backend (default 20 s)")
    parser.add_argument("--clients", type=int, default=CLIENTS,
                        help="concurrent clients (default %(default)s)")
    parser.add_argument("--duration", type=float, default=None,
                        help="measured seconds per backend (default 20, --quick 8)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="uncounted seconds of load before each window (default 5, "
                        "--quick 2)")
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes the clients are spread over (default "
                        "%(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="run controller c0 of the embedded cluster under cProfile and "
                        "print its top functions (slows it down)")
    parser.add_argument("--controllers", type=int, choices=(1, 3, 5), default=CONTROLLERS,
                        help="controllers, and embedded store members (diagnostics; default "
                        "%(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="measure only this backend (diagnostics; no ratio)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.procs < 1 or args.procs > args.clients:
        parser.error("need 1 <= --procs <= --clients")
    duration = args.duration if args.duration is not None else (8.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    if duration <= 0 or warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(quick=args.quick, clients=args.clients, duration=duration,
                        warmup=warmup, procs=args.procs, profile=args.profile,
                        backends=(args.backend,) if args.backend else BACKENDS,
                        controllers=args.controllers)
    # SIGTERM unwinds like Ctrl-C, so every cluster's context manager stops it.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        main_sync(settings)
    except KeyboardInterrupt:
        log.warning("interrupted; clusters stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
