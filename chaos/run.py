"""``corral chaos``: one scenario against a running lab, the workload during it, the checks
after it, and the report.

The flow: the lab's state (controllers' URLs, the admin credential); the workload's registers
created; then the scenario played in this (the main) thread, so that Ctrl-C lands here and the
faults are healed in ``LabFaults``' ``finally``, while the workload's clients run on an asyncio
loop in a second thread; the clients stopped once the scenario is over and healed; then, with
every controller up again, the replicas' digests compared at one revision, every register read,
and the history checked (linearizability per key within a time budget, lost writes). The report
goes to ``--out`` (report.json, history.jsonl, summary.txt, timeline.png) and its summary to
stdout. Exit status: 0 pass, 1 fail, 3 unknown, 2 for bad options or a lab that cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from chaos.faults import FaultError, LabFaults
from chaos.linearizability import Budget, check_history
from chaos.lostwrites import find_lost_writes
from chaos.replicas import compare_replicas
from chaos.report import LostWrites, ReplicaState, Report, Verdict
from chaos.scenarios import (
    SCENARIOS,
    Members,
    ScenarioError,
    check_scenario,
    run_scenario,
)
from chaos.workload import REBIND, Workload, WorkloadConfig
from controlplane.dirlock import Busy, holding
from controlplane.lab import DEFAULT_DIR, LabError, admin_ssl

log = logging.getLogger(__name__)

T = TypeVar("T")

EXIT = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.UNKNOWN: 3}
#: How long the replicas get to agree after healing, and the checker per key.
REPLICA_TIMEOUT_S = 60.0
CHECK_SECONDS_PER_KEY = 60.0
#: In the lab's directory: held by the run playing on that lab.
CHAOS_LOCK = "chaos.lock"


@dataclass
class ChaosOptions:
    scenario: str
    lab_dir: Path = DEFAULT_DIR
    out: Path | None = None
    duration: float = 60.0
    interval: float = 10.0
    hold: float = 5.0
    restart_delay: float = 2.0
    steps: int | None = None
    seed: int | None = None
    keys: int = 8
    clients: int = 6
    rebind: float = REBIND
    check_seconds: float = CHECK_SECONDS_PER_KEY


class _Loop:
    """An asyncio loop in a thread of its own: the workload keeps running while the main
    thread plays the scenario."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos workload",
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()


def run_chaos(options: ChaosOptions) -> Report:
    """Play the scenario, check, and return the report (written to ``options.out`` if set)."""
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    faults = LabFaults(options.lab_dir)
    state = faults.state
    check_scenario(options.scenario, Members(tuple(h.name for h in state.controllers),
                                             tuple(h.name for h in state.nodes)))
    # Two workloads on one lab would each read the other's values as stale.
    with holding(options.lab_dir, "corral chaos run", CHAOS_LOCK):
        context = admin_ssl(state.path)
        workload = Workload(WorkloadConfig(urls=state.urls, ssl=context, keys=options.keys,
                                           clients=options.clients, rebind=options.rebind,
                                           seed=seed))
        with _Loop() as loop:
            loop.call(workload.setup())
            stop_clients = loop.call(_event())
            started = time.monotonic()
            clients = loop.submit(workload.run(stop_clients))
            try:
                timeline = run_scenario(options.scenario, faults, duration=options.duration,
                                        interval=options.interval, hold=options.hold,
                                        restart_delay=options.restart_delay, seed=seed,
                                        stop=threading.Event(), max_steps=options.steps)
            finally:
                loop.loop.call_soon_threadsafe(stop_clients.set)
                history = clients.result()
            ended = time.monotonic()
            check = loop.call(compare_replicas(state.urls, context, timeout=REPLICA_TIMEOUT_S))
            final = loop.call(workload.final_values())
    lost = find_lost_writes(history, final)
    keys = {op.key for op in history}
    result = check_history(history, budget=Budget(seconds=options.check_seconds))
    replicas = {url: ReplicaState(sample[0], sample[1] if check.equal is not None else None)
                if sample is not None else ReplicaState(0, None)
                for url, sample in check.samples.items()}
    report = Report(
        scenario=options.scenario, seed=seed,
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        lab={"name": state.name, "controllers": [h.name for h in state.controllers],
             "nodes": [h.name for h in state.nodes]},
        started=started, ended=ended, faults=timeline, history=history,
        linearizability=result,
        lost_writes=LostWrites(tuple(lost), tuple(sorted(keys - set(final)))),
        replicas=replicas)
    if options.out is not None:
        report.write_all(options.out)
    return report


async def _event() -> asyncio.Event:
    """An Event made on the workload's loop (it belongs to the loop that awaits it)."""
    return asyncio.Event()


# -- the command -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral chaos",
        description="Play a fault scenario against a `corral lab` while clients read, write "
        "and compare-and-swap ConfigMaps; check the history (linearizability per key, lost "
        "writes) and the replicas' hashes; write a report. Exit 0 pass, 1 fail, 3 unknown.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{run,list}")
    r = verbs.add_parser("run", help="play one scenario and check")
    r.add_argument("scenario", metavar="SCENARIO", help="see `corral chaos list`")
    r.add_argument("--lab-dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("--out", type=Path, default=None,
                   help="directory for report.json, history.jsonl, summary.txt, timeline.png")
    r.add_argument("--duration", type=float, default=60.0, metavar="SECONDS")
    r.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                   help="between two faults (default %(default)s)")
    r.add_argument("--hold", type=float, default=5.0, metavar="SECONDS",
                   help="how long a pause or partition lasts (default %(default)s)")
    r.add_argument("--restart-delay", type=float, default=2.0, metavar="SECONDS",
                   help="how long killed processes stay dead (default %(default)s)")
    r.add_argument("--steps", type=int, default=None, help="stop after this many faults")
    r.add_argument("--seed", type=int, default=None, help="default: a random one, reported")
    r.add_argument("--keys", type=int, default=8, help="registers (ConfigMaps)")
    r.add_argument("--clients", type=int, default=6)
    r.add_argument("--rebind", type=float, default=REBIND, metavar="P",
                   help="chance per operation that a client moves to a random controller "
                   f"(default {REBIND}; 0: clients move only when theirs fails)")
    r.add_argument("--check-seconds", type=float, default=CHECK_SECONDS_PER_KEY,
                   help="the checker's budget per key; beyond it a key is 'unknown'")
    verbs.add_parser("list", help="the scenarios")
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.scenario not in SCENARIOS:
        raise ScenarioError(f"no scenario {args.scenario!r} (`corral chaos list`)")
    for name in ("duration", "interval", "hold", "restart_delay", "check_seconds"):
        if getattr(args, name) < 0:
            raise ScenarioError(f"--{name.replace('_', '-')} must not be negative")
    if not 1 <= args.keys <= 1000 or not 1 <= args.clients <= 64:
        raise ScenarioError("--keys must be 1..1000 and --clients 1..64")
    if not 0.0 <= args.rebind <= 1.0:
        raise ScenarioError("--rebind must be 0..1")
    if args.steps is not None and args.steps < 1:
        raise ScenarioError("--steps must be at least 1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A dead controller is the point here: the clients' failover warnings are noise.
    logging.getLogger("controlplane.client").setLevel(logging.ERROR)
    if args.verb == "list":
        width = max(len(name) for name in SCENARIOS)
        for scenario in SCENARIOS.values():
            sys.stdout.write(f"{scenario.name:<{width}}  {scenario.help}\n")
        return 0
    try:
        _validate(args)
        options = ChaosOptions(
            scenario=args.scenario, lab_dir=args.lab_dir.resolve(), out=args.out,
            duration=args.duration, interval=args.interval, hold=args.hold,
            restart_delay=args.restart_delay, steps=args.steps, seed=args.seed,
            keys=args.keys, clients=args.clients, rebind=args.rebind,
            check_seconds=args.check_seconds)
        report = run_chaos(options)
    except (Busy, ScenarioError, FaultError, LabError, OSError, RuntimeError) as exc:
        sys.stderr.write(f"corral chaos: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("corral chaos: interrupted; the faults were healed\n")
        return 130
    sys.stdout.write(report.summary().rstrip("\n") + "\n")
    if args.out is not None:
        sys.stdout.write(f"report: {args.out}\n")
    return EXIT[report.verdict]
