"""Store benchmark: RaftStore against a 3-member etcd, both through the Store interface.

One workload, run on each system in turn (never both at once: the machine has 2 cores):

  * warm-up: every one of the 1,000 keys is written once, then a short unrecorded burst;
  * 64 concurrent writers for a fixed duration, each looping
    ``put("/bench/k<random 0..999>", 256 random bytes)``;
  * then 1 writer for a fixed duration.

Each put's latency is taken with ``time.perf_counter`` around the awaited call; writes/s is
completed puts over the time from the start of the phase until the last writer returned.

RaftStore: ``RaftCluster(3)`` with member 0 inside this process (``RaftStore.open`` on
``cluster.member_config(0)``), the way a controller embeds its member; members 1 and 2 are
``python -m raftstore.member`` processes. Whether member 0 led during each phase is sampled and
reported, because a follower forwards every entry to the leader.
etcd: ``EtcdCluster(3)`` (etcd 3.4, default durability) through ``EtcdStore``.
Both sides fsync every commit (RaftStore's default ``FsyncPolicy.ALWAYS``, etcd's default).

Memory: after the throughput phases, 100,000 keys of 256 bytes are loaded into the RaftStore;
once member processes 1 and 2 have applied them, their RSS is reported (target < 300 MB).

The last line is ``store: raftstore/etcd throughput ratio R, p99 ratio P`` (64 writers).
Usage: ``python bench/store.py [--quick] [--follower]``; --quick finishes within 60 s;
--follower makes the in-process member a follower (by default it usually wins the election).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from raftstore.etcd import EtcdStore
from raftstore.localetcd import EtcdCluster, etcd_version
from raftstore.localraft import RaftCluster
from raftstore.raft import RaftStore
from raftstore.store import Store, StoreError

KEYS = 1_000
VALUE_BYTES = 256
MANY_WRITERS = 64
KEY_PREFIX = "/bench/k"
RSS_PREFIX = "/bench/rss/k"
RSS_KEYS = 100_000
RSS_TARGET_MB = 300.0
# As many concurrent puts as the 64-writer phase. Far more (256, 1,000) makes each group-commit
# entry so large that a follower falls behind (pysyncobj's receive buffer handling is quadratic
# in the backlog) and the load crawls at ~1,500 puts/s while that follower's memory balloons.
RSS_LOAD_CONCURRENCY = MANY_WRITERS
APPLY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Settings:
    quick: bool
    follower: bool  # open member 0 only after members 1 and 2 elected a leader
    many_s: float  # duration of the 64-writer phase
    one_s: float  # duration of the 1-writer phase
    warm_s: float  # unrecorded 64-writer burst after the first write of every key
    rss_keys: int


FULL = Settings(
    quick=False, follower=False, many_s=10.0, one_s=10.0, warm_s=2.0, rss_keys=RSS_KEYS
)
QUICK = Settings(
    quick=True, follower=False, many_s=3.0, one_s=3.0, warm_s=0.5, rss_keys=RSS_KEYS
)


@dataclass
class Phase:
    writers: int
    ops: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    leader_note: str = ""

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1] * 1000.0

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


@dataclass
class SystemResult:
    name: str
    many: Phase
    one: Phase
    notes: list[str] = field(default_factory=list)


# -- workload ---------------------------------------------------------------------------------


async def _writer(store: Store, phase: Phase, deadline: float, rng: random.Random) -> None:
    latencies = phase.latencies
    clock = time.perf_counter
    while clock() < deadline:
        key = f"{KEY_PREFIX}{rng.randrange(KEYS)}"
        value = rng.randbytes(VALUE_BYTES)
        start = clock()
        try:
            await store.put(key, value)
        except StoreError:
            phase.errors += 1
            continue
        latencies.append(clock() - start)
        phase.ops += 1


async def run_phase(store: Store, writers: int, seconds: float, seed: int) -> Phase:
    phase = Phase(writers)
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_writer(store, phase, deadline, random.Random(seed * 1000 + w)) for w in range(writers))
    )
    phase.elapsed = time.perf_counter() - start
    return phase


async def put_all(store: Store, keys: list[str], concurrency: int, seed: int) -> tuple[int, int]:
    """Write every key once with ``concurrency`` workers; (highest revision seen, errors)."""
    rng = random.Random(seed)
    it = iter(keys)
    top = 0
    errors = 0

    async def worker() -> None:
        nonlocal top, errors
        for key in it:
            for _attempt in range(5):
                try:
                    top = max(top, await store.put(key, rng.randbytes(VALUE_BYTES)))
                    break
                except StoreError:
                    errors += 1
            else:
                raise RuntimeError(f"could not write {key} after 5 attempts")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return top, errors


async def warm_up(store: Store, settings: Settings) -> None:
    await put_all(store, [f"{KEY_PREFIX}{i}" for i in range(KEYS)], MANY_WRITERS, seed=1)
    await run_phase(store, MANY_WRITERS, settings.warm_s, seed=2)


async def workload(
    store: Store,
    settings: Settings,
    leader_sampler: Callable[[asyncio.Event], Coroutine[Any, Any, str]] | None = None,
) -> tuple[Phase, Phase]:
    await warm_up(store, settings)
    phases = []
    for writers, seconds, seed in ((MANY_WRITERS, settings.many_s, 3), (1, settings.one_s, 4)):
        if leader_sampler is None:
            phases.append(await run_phase(store, writers, seconds, seed))
            continue
        stop = asyncio.Event()
        sampler = asyncio.create_task(leader_sampler(stop))
        try:
            phase = await run_phase(store, writers, seconds, seed)
        finally:
            stop.set()
        phase.leader_note = await sampler
        phases.append(phase)
    return phases[0], phases[1]


# -- etcd -------------------------------------------------------------------------------------


async def bench_etcd(settings: Settings) -> SystemResult:
    cluster = EtcdCluster(3)
    name = etcd_version(cluster.binary)
    await asyncio.to_thread(cluster.start)
    store = EtcdStore(cluster.endpoints)
    try:
        many, one = await workload(store, settings)
        leader = await asyncio.to_thread(cluster.leader_index)
    finally:
        await store.close()
        await asyncio.to_thread(cluster.stop)
    leader_name = f"member {leader}" if leader is not None else "unknown"
    notes = [f"etcd: the client sends to member 0; etcd leader after the run: {leader_name}"]
    return SystemResult(name, many, one, notes)


# -- RaftStore ---------------------------------------------------------------------------------


def _leader_sampler(
    store: RaftStore, interval: float = 0.05
) -> Callable[[asyncio.Event], Coroutine[Any, Any, str]]:
    """A task body sampling ``store.is_leader`` until ``stop`` is set; returns a summary."""

    async def sample(stop: asyncio.Event) -> str:
        led = total = 0
        while not stop.is_set():
            total += 1
            led += store.is_leader
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
        if total == 0:
            return "leadership not sampled"
        if led == total:
            return "member 0 (in-process) was leader throughout"
        if led == 0:
            return "member 0 (in-process) was a follower throughout (forwarding to the leader)"
        return f"member 0 (in-process) was leader in {100 * led / total:.0f}% of samples"

    return sample


async def _wait_applied(cluster: RaftCluster, index: int, revision: int) -> float:
    start = time.perf_counter()
    deadline = start + APPLY_TIMEOUT_S
    while True:
        try:
            applied, _ = await asyncio.to_thread(cluster.digest, index)
        except OSError:
            applied = 0
        if applied >= revision:
            return time.perf_counter() - start
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"member {index} reached revision {applied}, not {revision}, "
                f"in {APPLY_TIMEOUT_S:.0f} s"
            )
        await asyncio.sleep(0.2)


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return math.nan
    return psutil.Process(pid).memory_info().rss / 1e6


def _proc_status_mb(pid: int | None) -> dict[str, float]:
    """VmHWM (peak RSS) and the anonymous/file-backed parts of the RSS, from /proc."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "RssAnon", "RssFile"):
                    fields[name] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return fields


async def measure_rss(store: RaftStore, cluster: RaftCluster, settings: Settings) -> list[str]:
    before = {i: _rss_mb(cluster.pid(i)) for i in (1, 2)}
    keys = [f"{RSS_PREFIX}{i}" for i in range(settings.rss_keys)]
    start = time.perf_counter()
    top, errors = await put_all(store, keys, RSS_LOAD_CONCURRENCY, seed=5)
    load_s = time.perf_counter() - start
    total_keys = KEYS + settings.rss_keys
    lines = [
        (
            f"memory: loaded {settings.rss_keys:,} keys of {VALUE_BYTES} B through the "
            f"in-process store in {load_s:.1f} s ({settings.rss_keys / load_s:,.0f} puts/s at "
            f"concurrency {RSS_LOAD_CONCURRENCY}, {errors} retried)"
        )
    ]
    if settings.rss_keys < RSS_KEYS:
        lines.append(
            f"memory: REDUCED LOAD ({settings.rss_keys:,} keys; the target is for {RSS_KEYS:,})"
        )
    for i in (1, 2):
        waited = await _wait_applied(cluster, i, top)
        pid = cluster.pid(i)
        rss = _rss_mb(pid)
        status = _proc_status_mb(pid)
        peak = status.get("VmHWM", rss)
        verdict = "met" if max(rss, peak) < RSS_TARGET_MB else "NOT met"
        lines.append(
            f"memory: member {i} (process {pid}) holding {total_keys:,} keys: RSS {rss:.0f} MB "
            f"(peak {peak:.0f} MB; anon {status.get('RssAnon', math.nan):.0f} MB, file-backed "
            f"{status.get('RssFile', math.nan):.0f} MB; {before[i]:.0f} MB before the load; "
            f"caught up {waited:.1f} s after it); target < {RSS_TARGET_MB:.0f} MB: {verdict}"
        )
    return lines


async def bench_raft(settings: Settings) -> tuple[SystemResult, list[str]]:
    cluster = RaftCluster(3)
    store: RaftStore | None = None
    try:
        cluster.start(in_process=(0,))
        if settings.follower:
            # Members 1 and 2 are a quorum: they elect one of themselves before member 0 runs.
            await asyncio.to_thread(cluster.wait_leader)
        store = await RaftStore.open(cluster.member_config(0))
        leader = await asyncio.to_thread(cluster.wait_leader)
        many, one = await workload(store, settings, leader_sampler=_leader_sampler(store))
        memory = await measure_rss(store, cluster, settings)
    finally:
        if store is not None:
            await store.close()
        await asyncio.to_thread(cluster.stop)
    notes = [
        f"raftstore: first leader member {leader}",
        f"raftstore 64 writers: {many.leader_note}",
        f"raftstore 1 writer: {one.leader_note}",
    ]
    return SystemResult("raftstore", many, one, notes), memory


# -- report -------------------------------------------------------------------------------------


def table(results: list[SystemResult]) -> list[str]:
    header = f"{'system':<16}{'writers':>8}{'writes/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    header += f"{'puts':>9}{'errors':>8}{'secs':>7}"
    lines = [header, "-" * len(header)]
    for result in results:
        for phase in (result.many, result.one):
            lines.append(
                f"{result.name:<16}{phase.writers:>8}{phase.rate:>11,.0f}{phase.p50:>9.2f}"
                f"{phase.p99:>9.2f}{phase.ops:>9,}{phase.errors:>8}{phase.elapsed:>7.1f}"
            )
    return lines


def ratios(raft: Phase, etcd: Phase) -> tuple[float, float]:
    return raft.rate / etcd.rate, raft.p99 / etcd.p99


async def main_async(settings: Settings) -> None:
    began = time.perf_counter()
    mode = "quick" if settings.quick else "full"
    if settings.follower:
        mode += ", member 0 joins as a follower"
    print(
        f"store benchmark ({mode}): 3 members each, {VALUE_BYTES} B values over {KEYS:,} keys, "
        f"{MANY_WRITERS} writers for {settings.many_s:g} s then 1 writer for {settings.one_s:g} s; "
        f"{psutil.cpu_count()} CPUs; fsync on every commit on both sides",
        flush=True,
    )
    etcd = await bench_etcd(settings)
    print(f"etcd done ({time.perf_counter() - began:.1f} s)", flush=True)
    raft, memory = await bench_raft(settings)
    print(f"raftstore done ({time.perf_counter() - began:.1f} s)", flush=True)
    print()
    for line in table([etcd, raft]):
        print(line)
    print()
    for line in [*etcd.notes, *raft.notes, *memory]:
        print(line)
    r1, p1 = ratios(raft.one, etcd.one)
    r64, p64 = ratios(raft.many, etcd.many)
    print(f"1 writer: raftstore/etcd throughput ratio {r1:.2f}, p99 ratio {p1:.2f}")
    met = "met" if r64 >= 1.0 and p64 <= 1.0 else "NOT met"
    print(f"targets at {MANY_WRITERS} writers: throughput ratio >= 1.0, p99 ratio <= 1.0: {met}")
    print(f"wall time {time.perf_counter() - began:.1f} s")
    print(f"store: raftstore/etcd throughput ratio {r64:.2f}, p99 ratio {p64:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="short phases; finishes within 60 s"
    )
    parser.add_argument(
        "--follower",
        action="store_true",
        help="start the in-process member 0 only after members 1 and 2 elected a leader, so "
        "that it runs as a follower (as 2 of 3 controllers do); by default it usually leads",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = dataclasses.replace(QUICK if args.quick else FULL, follower=args.follower)
    asyncio.run(main_async(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
