"""Service proxy benchmark (issue 7): HTTP requests per second through a ClusterIP (iptables
DNAT to 3 backends, rules written by Corral's proxy) against straight to one backend's pod IP,
in the same run; and the proxy's rule programming latency with 1,000 Services.

Throughput. Network namespaces ``csb-<run id>-*``: ``node`` holds a bridge ``br0``
(10.244.1.1/24, ip_forward and bridge-nf-call-iptables on, as ``BridgeNetwork`` sets them),
three backend pods ``b1``..``b3`` (10.244.1.11-13) and two client pods ``cip`` (10.244.1.20,
for the ClusterIP) and ``direct`` (10.244.1.21) hang off it by veth pairs, each pod with its
default route via 10.244.1.1. Two clients, not one: a connection through the ClusterIP reaches
b1 with the same 4-tuple as a direct one from the same client port, but with an unrelated
initial sequence number and timestamp (the client derives both from the address it dialled), so
b1's TIME_WAIT sockets of one target refuse the other target's SYNs and every such connection
waits for a 1 s SYN retransmit: with one client the targets slowed each other's rounds. The rules of one
ClusterIP Service (10.96.77.77:80 -> :8080, 3 endpoints, cluster CIDR 10.244.0.0/16) are built
by ``rules.build`` and written into the node namespace by the real ``IptablesApplier``. A
request to the ClusterIP takes a real pod's path: client pod -> bridge -> the node's PREROUTING
(CORRAL-SERVICES, the Service's chain, a random endpoint, DNAT) -> the backend's veth; the reply
is un-NATed by conntrack. The direct path goes client -> bridge -> backend b1 (bridged, still
through the node's conntrack, as bridge-nf-call-iptables makes it).

Each backend is a minimal HTTP/1.1 server (Python asyncio protocol: reads the request head,
answers 200 with a 3-byte body and ``Connection: close``). The load is a closed loop of
``--procs`` client processes x ``--threads`` threads (default 2 x 8: 16 concurrent requests),
each request a NEW TCP connection (connect, GET, read to EOF, close), so every request sets up
a conntrack entry and, through the ClusterIP, walks the nat chains and DNATs: the per-connection
cost is what a Service adds (packets of an established connection only hit conntrack). Rounds:
``--rounds`` (3) of ``--seconds`` (10; ``--quick`` 2 rounds of 4 s) against each target,
alternating which goes first, after a 1 s warm-up of each. A request is counted when the full
200 answer arrived; failures (refused, timeout, reset) are counted apart. R = median ClusterIP
rps / median direct rps. In the node namespace the conntrack TIME_WAIT timeout is set to 10 s
(the namespace's own sysctl) so that tens of thousands of short connections per round do not fill
its table across rounds; both targets see the same table.

What limits it: everything runs on this machine's 2 cores: the Python clients (the kernel's
TCP set-up and tear-down, and the interpreter per request) and the Python backends take most of
the CPU, so the figures are CPU-bound by Python on both paths and R says how much the DNAT path
costs *relative to* a Python client and server, not the kernel's forwarding limit. The per-round
lines show the client processes' and backends' CPU (% of one core) and the machine's busy %: a
machine at ~200% is saturated. Direct goes to one backend (one Python process, at most one core)
while the ClusterIP spreads over three, which favours the ClusterIP when a backend is the
bottleneck; the backends' CPU column shows whether it is.

Programming latency, as kube-proxy's ``network_programming_duration_seconds`` SLI. In this
process: an API server (``InProcessCluster`` over a MemoryStore), and a ``Proxier`` with an
``IptablesApplier`` writing into namespace ``csb-<run id>-lat``. ``--services`` (1000; ``--quick``
200) selector-less Services (ClusterIPs allocated by the API) each get an Endpoints with 3
addresses written straight through the API; being selector-less, the Endpoints controller does
not run and the benchmark sets ``endpoints.kubernetes.io/last-change-trigger-time`` itself, as
the controller would, to the wall time just before each write. Once the proxier has them all in
place, one forced full sync (``Proxier.sync(force=True)``: build, iptables-save, restore of
every chain, jumps checked) is timed, then ``--changes`` (200; ``--quick`` 50) Endpoints updates
(a random Service gets one of its 3 addresses replaced) at ``--rate`` (10/s). The proxier
records, after each successful apply, now minus the trigger time of each Endpoints change it
included: API write, watch delivery, the proxier's 0.1 s debounce, building all the rules and
the partial ``iptables-restore``. Its periodic full resync (every 30 s) may fall into the run,
as it would on a node.

Output: per-round lines, the latency summary, then ``services: rule programming p99 X ms for N
services`` and, last, ``services: clusterIP/direct throughput ratio R``. Targets (issue 7):
R >= 0.9, p99 <= 1 s for 1,000 Services.

Cleanup, always (``finally``, also on Ctrl-C or SIGTERM): clients and backends killed, the
proxier stopped, the API server stopped, every namespace of this run deleted (the rules, veths
and bridge go with them), the temporary directory (the PKI) removed. No packet leaves the
namespaces created here.

Usage: ``python bench/services.py [--quick] [--skip-throughput] [--skip-latency]
[--seconds N] [--rounds N] [--procs N] [--threads N] [--services N] [--changes N] [--rate R]``
(root; ip, iptables).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil
from benchkit import clean_up, interrupt, machine_busy, nearest_rank

from controlplane.auth.pki import ClusterPKI
from controlplane.client import ENDPOINTS, SERVICES
from controlplane.controllers.endpoints import (
    TRIGGER_TIME_ANNOTATION,
    format_trigger_time,
)
from controlplane.localcluster import InProcessCluster
from nodeagent.proxy import IptablesApplier, Proxier, build
from raftstore.memory import MemoryStore

GATEWAY = "10.244.1.1"
CLUSTER_CIDR = "10.244.0.0/16"
BACKEND_IPS = ("10.244.1.11", "10.244.1.12", "10.244.1.13")
#: One client pod per target (module docstring).
CLIENT_IPS = {"clusterIP": "10.244.1.20", "direct": "10.244.1.21"}
CLUSTER_IP = "10.96.77.77"
SERVICE_PORT, BACKEND_PORT = 80, 8080
#: What each round's clients connect to.
TARGETS = {"clusterIP": (CLUSTER_IP, SERVICE_PORT), "direct": (BACKEND_IPS[0], BACKEND_PORT)}
SECONDS, QUICK_SECONDS = 10.0, 4.0
ROUNDS, QUICK_ROUNDS = 3, 2
WARMUP_SECONDS = 1.0
PROCS, THREADS = 2, 8
SERVICES_N, QUICK_SERVICES = 1000, 200
CHANGES, QUICK_CHANGES = 200, 50
RATE = 10.0
TIME_WAIT_S = 10
READY_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 120.0
TARGET_RATIO, TARGET_P99_MS = 0.9, 1000.0

T = TypeVar("T")

SERVER = r"""
import asyncio, sys
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
          b"Connection: close\r\n\r\n" + sys.argv[1].encode()[:2].ljust(2) + b"\n")

class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.head = transport, b""

    def data_received(self, data):
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.write(ANSWER)
            self.transport.close()

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(Http, "0.0.0.0", int(sys.argv[2]), backlog=4096, reuse_address=True)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

CLIENT = r"""
import json, socket, sys, threading, time
host, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start, stop = float(sys.argv[4]), float(sys.argv[5])
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
counts = []

def worker():
    ok = failed = 0
    while time.monotonic() < start:
        time.sleep(0.001)
    while time.monotonic() < stop:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(REQUEST)
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
            if answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\n"):
                ok += 1
            else:
                failed += 1
        except OSError:
            failed += 1
    counts.append((ok, failed))

workers = [threading.Thread(target=worker) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps({"ok": sum(c[0] for c in counts), "failed": sum(c[1] for c in counts),
                  "cpu": time.process_time()}))
"""


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise RuntimeError(f"{' '.join(argv)}: {last}")
    return result.stdout


@dataclass
class Round:
    target: str  # "clusterIP" or "direct"
    index: int
    seconds: float
    ok: int
    failed: int
    client_cpu: float  # seconds, all client processes
    backend_cpu: float  # seconds, all backends
    machine: float  # busy CPU seconds of the whole machine

    @property
    def rps(self) -> float:
        return self.ok / self.seconds

    def row(self) -> str:
        return (f"round {self.index + 1} {self.target:<9} {self.rps:8.0f} rps  failed "
                f"{self.failed:<4} client CPU {100 * self.client_cpu / self.seconds:4.0f}%  "
                f"backends CPU {100 * self.backend_cpu / self.seconds:4.0f}%  machine busy "
                f"{100 * self.machine / self.seconds:4.0f}%")


class Namespaces:
    """This run's network namespaces and processes, all removed by ``close``."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.created: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []

    def add(self, role: str) -> str:
        name = f"csb-{self.run_id}-{role}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def spawn(self, netns: str, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE,
                                text=True)
        self.processes.append(proc)
        return proc

    def close(self) -> str:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for name in reversed(self.created):
            sh("ip", "netns", "delete", name, check=False)
        left = [n for n in self.created if n in sh("ip", "netns", "list", check=False)]
        return (f"{len(self.processes)} processes stopped, {len(self.created)} namespaces "
                f"deleted" + (f"; LEFT: {', '.join(left)}" if left else ""))


class Testbed:
    """The throughput layout (module docstring): node, three backends, one client."""

    def __init__(self, spaces: Namespaces) -> None:
        self.spaces = spaces
        self.node = spaces.add("node")
        self.clients: dict[str, str] = {}  # target -> its client pod's namespace
        self.backends: list[psutil.Process] = []

    def set_up(self) -> None:
        node, tag = self.node, self.spaces.run_id
        sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", node, "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        sh("ip", "-n", node, "link", "set", "br0", "up")
        for setting in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                        f"net.netfilter.nf_conntrack_tcp_timeout_time_wait={TIME_WAIT_S}"):
            sh("ip", "netns", "exec", node, "sysctl", "-q", "-w", setting)
        pods = [(f"b{i + 1}", ip) for i, ip in enumerate(BACKEND_IPS)] + \
            [(f"client-{target}", ip) for target, ip in CLIENT_IPS.items()]
        for index, (role, ip) in enumerate(pods):
            pod = self.spaces.add(role)
            veth = f"cs{tag}v{index}"
            sh("ip", "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
               "netns", pod)
            sh("ip", "-n", node, "link", "set", veth, "master", "br0", "up")
            sh("ip", "-n", pod, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", GATEWAY)
            if role.startswith("client-"):
                self.clients[role.removeprefix("client-")] = pod
                continue
            server = self.spaces.spawn(pod, sys.executable, "-c", SERVER, role, str(BACKEND_PORT))
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError(f"backend {role} did not start")
            self.backends.append(psutil.Process(server.pid))
        service = {"metadata": {"namespace": "default", "name": "web"},
                   "spec": {"clusterIP": CLUSTER_IP, "ports": [
                       {"name": "http", "port": SERVICE_PORT, "targetPort": BACKEND_PORT}]}}
        endpoints = {"metadata": {"namespace": "default", "name": "web"},
                     "subsets": [{"addresses": [{"ip": ip} for ip in BACKEND_IPS],
                                  "ports": [{"name": "http", "port": BACKEND_PORT}]}]}
        rules = build([service], [endpoints], cluster_cidr=CLUSTER_CIDR, node_ips=[GATEWAY])
        asyncio.run(IptablesApplier(host_netns=node).apply(rules))

    def backend_cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.backends)

    def load(self, target: str, seconds: float, procs: int,
             threads: int) -> dict[str, float]:
        """One closed-loop run of all client processes against ``target``; their summed
        counts and CPU."""
        host, port = TARGETS[target]
        start = time.monotonic() + 0.5
        clients = [self.spaces.spawn(self.clients[target], sys.executable, "-c", CLIENT, host,
                                     str(port), str(threads), str(start), str(start + seconds))
                   for _ in range(procs)]
        totals = {"ok": 0, "failed": 0, "cpu": 0.0}
        for client in clients:
            out, _ = client.communicate(timeout=seconds + 30)
            if client.returncode != 0:
                raise RuntimeError(f"client exited {client.returncode}")
            for key, value in json.loads(out).items():
                totals[key] += value
        return totals


def throughput(bed: Testbed, *, seconds: float, rounds: int, procs: int,
               threads: int) -> tuple[list[Round], float]:
    for target in TARGETS:
        if not bed.load(target, WARMUP_SECONDS, procs, threads)["ok"]:
            raise RuntimeError(f"no answer from the {target} target in the warm-up")
    results: list[Round] = []
    for index in range(rounds):
        order = list(TARGETS) if index % 2 == 0 else list(reversed(TARGETS))
        for target in order:
            backend0, busy0 = bed.backend_cpu(), machine_busy()
            totals = bed.load(target, seconds, procs, threads)
            results.append(Round(target, index, seconds, int(totals["ok"]),
                                 int(totals["failed"]),
                                 totals["cpu"], bed.backend_cpu() - backend0,
                                 machine_busy() - busy0))
            print(results[-1].row(), flush=True)
    medians = {t: statistics.median(r.rps for r in results if r.target == t) for t in TARGETS}
    print(f"throughput: clusterIP median {medians['clusterIP']:.0f} rps, direct median "
          f"{medians['direct']:.0f} rps ({procs} x {threads} concurrent, a new connection per "
          "request)", flush=True)
    return results, medians["clusterIP"] / medians["direct"]


# -- programming latency ----------------------------------------------------------------------

def endpoints_object(name: str, ips: list[str],
                     resource_version: str | None = None) -> dict[str, Any]:
    """Endpoints for selector-less Service ``name``, stamped as the Endpoints controller does."""
    meta: dict[str, Any] = {"name": name, "namespace": "default",
                  "annotations": {TRIGGER_TIME_ANNOTATION: format_trigger_time(time.time())}}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}]}]}


def pod_ip(n: int) -> str:
    return f"10.245.{n // 250}.{n % 250 + 1}"


async def gather_limited(calls: list[Coroutine[Any, Any, T]], limit: int = 32) -> list[T]:
    """Await the coroutines, ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await call
    return await asyncio.gather(*(one(c) for c in calls))


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.05)


async def programming_latency(netns: str, workdir: Path, *, services: int, changes: int,
                              rate: float) -> float:
    """Measure (module docstring); prints the summary; returns the p99 in ms."""
    cluster = InProcessCluster(ClusterPKI.create(workdir / "pki"), MemoryStore())
    await cluster.start_server()
    applier = IptablesApplier(host_netns=netns)
    proxier_task: asyncio.Task | None = None
    try:
        async with cluster.admin_client([cluster.url]) as client:
            names = [f"svc-{i:04d}" for i in range(services)]
            await gather_limited([client.create(SERVICES, "default", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"name": "http", "port": SERVICE_PORT,
                                    "targetPort": BACKEND_PORT}]}}) for name in names])
            current = dict(zip(names, await gather_limited([
                client.create(ENDPOINTS, "default", endpoints_object(
                    name, [pod_ip(3 * i + k) for k in range(3)]))
                for i, name in enumerate(names)]), strict=True))
            proxier = Proxier(client, applier, cluster_cidr=CLUSTER_CIDR, node_ips=[GATEWAY])
            proxier_task = asyncio.create_task(proxier.run())
            began = time.monotonic()
            await until(lambda: proxier.synced.is_set()
                        and len(proxier.endpoints.keys()) == services, SETTLE_TIMEOUT_S,
                        "the first sync")
            first = time.monotonic() - began
            built = time.monotonic()
            rules = proxier.rules()
            build_s = time.monotonic() - built
            synced = time.monotonic()
            await proxier.sync(force=True)
            full_s = time.monotonic() - synced
            chains = len(rules.nat.chains) + len(rules.filter.chains)
            count = len(rules.nat.rules) + len(rules.filter.rules)
            print(f"latency: {services} services x 3 endpoints: {chains} chains, {count} rules; "
                  f"first sync (list + full apply) {1000 * first:.0f} ms; one forced full sync "
                  f"{1000 * full_s:.0f} ms (of which building the rules {1000 * build_s:.0f} "
                  "ms)", flush=True)

            proxier.programming_latencies.clear()
            syncs0, next_ip = proxier.syncs, 3 * services
            picker = random.Random(7)
            start = time.monotonic()
            for n in range(changes):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                name = picker.choice(names)
                old = current[name]
                ips = [a["ip"] for a in old["subsets"][0]["addresses"]]
                ips[picker.randrange(3)] = pod_ip(next_ip)
                next_ip += 1
                current[name] = await client.update(ENDPOINTS, endpoints_object(
                    name, ips, old["metadata"]["resourceVersion"]))
            await until(lambda: len(proxier.programming_latencies) >= changes,
                        SETTLE_TIMEOUT_S, "every change programmed")
            ms = [1000 * s for s in proxier.programming_latencies]
            p99 = nearest_rank(ms, 0.99)
            print(f"latency: {changes} Endpoints changes at {rate:g}/s in "
                  f"{proxier.syncs - syncs0} syncs: programming p50 {nearest_rank(ms, 0.5):.0f} "
                  f"ms, p99 {p99:.0f} ms, max {max(ms):.0f} ms (from the trigger time to the "
                  "rules in place: API write, watch, 0.1 s debounce, build, iptables-restore)",
                  flush=True)
            return p99
    finally:
        if proxier_task is not None:
            proxier_task.cancel()
            await asyncio.gather(proxier_task, return_exceptions=True)
        for url in list(cluster.servers):
            await cluster.stop_server(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter rounds, fewer services and changes")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="per round")
    parser.add_argument("--rounds", type=int, default=None, help="per target")
    parser.add_argument("--procs", type=int, default=PROCS, help="client processes")
    parser.add_argument("--threads", type=int, default=THREADS, help="per client process")
    parser.add_argument("--services", type=int, default=None)
    parser.add_argument("--changes", type=int, default=None)
    parser.add_argument("--rate", type=float, default=RATE, help="changes per second")
    args = parser.parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    services = args.services or (QUICK_SERVICES if args.quick else SERVICES_N)
    changes = args.changes or (QUICK_CHANGES if args.quick else CHANGES)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, iptables)")
    missing = [t for t in ("ip", "iptables", "iptables-restore", "iptables-save")
               if shutil.which(t) is None]
    if missing:
        parser.error(f"missing: {', '.join(missing)}")
    signal.signal(signal.SIGTERM, interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    busy0 = machine_busy()
    time.sleep(1.0)
    idle_busy = machine_busy() - busy0
    version = sh("iptables", "--version").strip()
    print(f"services benchmark: {version}; {psutil.cpu_count()} CPUs, machine busy "
          f"{100 * idle_busy:.0f}% before the run", flush=True)
    if idle_busy > 0.25:
        print(f"WARNING: the machine was {100 * idle_busy:.0f}% busy before the run: other work "
              "shares the cores, the figures are lower and noisier", flush=True)
    began = time.monotonic()
    spaces = Namespaces(secrets.token_hex(3))
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-services-"))
    ratio_text, p99_text = "n/a (skipped)", "n/a (skipped)"
    try:
        try:
            if not args.skip_throughput:
                bed = Testbed(spaces)
                bed.set_up()
                _, ratio = throughput(bed, seconds=seconds, rounds=rounds, procs=args.procs,
                                      threads=args.threads)
                ratio_text = f"{ratio:.2f}"
                print(f"target R >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}",
                      flush=True)
            if not args.skip_latency:
                p99 = asyncio.run(programming_latency(spaces.add("lat"), workdir,
                                                      services=services, changes=changes,
                                                      rate=args.rate))
                p99_text = f"{p99:.0f} ms"
                print(f"target p99 <= {TARGET_P99_MS:.0f} ms: "
                      f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"services: failed: {exc}")
            return 1
        print(f"wall time {time.monotonic() - began:.1f} s")
        print(f"services: rule programming p99 {p99_text} for {services} services")
        print(f"services: clusterIP/direct throughput ratio {ratio_text}")
    except KeyboardInterrupt:
        print("services: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        clean_up(spaces.close, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
