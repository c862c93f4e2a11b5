"""The chaos report: its verdict as a table of check results (an undecided check never passes),
its files read back as written, a summary that leads with the verdict and the seed, and a timeline
figure drawn for a synthetic run of a few thousand operations and three faults."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest
from chaos_histories import cas, failed, read, write

from chaos.history import Kind, Operation, Outcome, Value
from chaos.linearizability import KeyResult, Result, Witness
from chaos.linearizability import Verdict as LinVerdict
from chaos.report import (
    HISTORY_JSONL,
    REPORT_JSON,
    LostWrites,
    ReplicaState,
    Report,
    Verdict,
    load,
)
from chaos.timeline import FaultEvent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EQUAL = {"lab-c1": ReplicaState(40, "ab12"), "lab-c2": ReplicaState(40, "ab12")}


def _result(*verdicts: LinVerdict) -> Result:
    """A checker result with one key per verdict, folded as ``check_history`` folds them."""
    keys = {f"k{i}": KeyResult(v, operations=3, steps=5,
                               exhausted="time" if v is LinVerdict.UNKNOWN else None)
            for i, v in enumerate(verdicts)}
    overall = next((v for v in (LinVerdict.NOT_LINEARIZABLE, LinVerdict.UNKNOWN)
                    if v in verdicts), LinVerdict.LINEARIZABLE)
    return Result(overall, keys)


def _report(linearizability: Result | None = None, lost: LostWrites | None = None,
            replicas: dict[str, ReplicaState] | None = None,
            history: list[Operation] | None = None, faults: list[FaultEvent] | None = None,
            ended: float = 30.0) -> Report:
    return Report(
        scenario="kill-leader", seed=1234, options={"duration": ended, "interval": 10, "hold": 5},
        lab={"controllers": ["lab-c1", "lab-c2", "lab-c3"], "nodes": ["lab-n1"]},
        started=0.0, ended=ended, faults=[] if faults is None else faults,
        history=[] if history is None else history,
        linearizability=_result(LinVerdict.LINEARIZABLE) if linearizability is None
        else linearizability,
        lost_writes=LostWrites() if lost is None else lost,
        replicas=EQUAL if replicas is None else replicas,
    )


LOST = LostWrites(lost=(write(1, 1, 2),))
UNCHECKED = LostWrites(unchecked_keys=("k3",))
VERDICTS: dict[str, tuple[Report, Verdict]] = {
    "every check passed": (_report(), Verdict.PASS),
    "a key not linearizable": (
        _report(_result(LinVerdict.LINEARIZABLE, LinVerdict.NOT_LINEARIZABLE)), Verdict.FAIL),
    "a key out of budget": (
        _report(_result(LinVerdict.LINEARIZABLE, LinVerdict.UNKNOWN)), Verdict.UNKNOWN),
    "no key checked": (_report(Result(LinVerdict.LINEARIZABLE, {})), Verdict.UNKNOWN),
    "out of budget, and a write lost": (
        _report(_result(LinVerdict.UNKNOWN), lost=LOST), Verdict.FAIL),
    "a write lost": (_report(lost=LOST), Verdict.FAIL),
    "a key's final value unread": (_report(lost=UNCHECKED), Verdict.UNKNOWN),
    "replicas differ": (
        _report(replicas={**EQUAL, "lab-c3": ReplicaState(40, "ffff")}), Verdict.FAIL),
    "replicas at different revisions": (
        _report(replicas={**EQUAL, "lab-c3": ReplicaState(39, "ab12")}), Verdict.FAIL),
    "a replica unread": (
        _report(replicas={**EQUAL, "lab-c3": ReplicaState(0, None)}), Verdict.UNKNOWN),
    "no replica read": (_report(replicas={}), Verdict.UNKNOWN),
    "a replica unread, the others differ": (
        _report(replicas={"lab-c1": ReplicaState(40, "ab12"), "lab-c2": ReplicaState(40, "ff"),
                          "lab-c3": ReplicaState(0, None)}), Verdict.FAIL),
}


@pytest.mark.parametrize("name", VERDICTS)
def test_verdict(name: str) -> None:
    report, expected = VERDICTS[name]
    assert report.verdict is expected


@pytest.mark.parametrize(("lin", "lost", "replicas"), itertools.product(
    [_result(LinVerdict.LINEARIZABLE), _result(LinVerdict.UNKNOWN),
     _result(LinVerdict.NOT_LINEARIZABLE), Result(LinVerdict.LINEARIZABLE, {})],
    [LostWrites(), LOST, UNCHECKED],
    [EQUAL, {}, {**EQUAL, "lab-c3": ReplicaState(0, None)}, {**EQUAL, "x": ReplicaState(1, "z")}],
))
def test_a_run_passes_only_when_every_check_passed(
        lin: Result, lost: LostWrites, replicas: dict[str, ReplicaState]) -> None:
    report = _report(lin, lost, replicas)
    grades = set(report.checks().values())
    assert (report.verdict is Verdict.PASS) == (grades == {Verdict.PASS})
    assert (report.verdict is Verdict.FAIL) == (Verdict.FAIL in grades)


def test_counts_and_latency_of_ok_operations() -> None:
    history = [write(1, 0, 0.01), read(1, 1, 1.03), failed(write(2, 2, 5)), cas(1, 3, True, 3, None)]
    report = _report(history=history)
    assert report.op_counts["write"] == {"ok": 1, "fail": 1, "unknown": 0}
    assert report.op_counts["cas"] == {"ok": 0, "fail": 0, "unknown": 1}
    assert report.latency.count == 2
    assert report.latency.max == pytest.approx(0.03)


def test_files_load_back_as_written(tmp_path: Path) -> None:
    history = [write(1, 0.5, 1.0, client=1), read(1, 1.2, 1.4, client=2), cas(1, 2, True, 2, 3),
               write(3, 4, None, client=2), failed(read(None, 5, 6)), write("v", 11, 11.2)]
    witness = Witness(prefix=(history[0],), state=1, stuck=history[1])
    lin = Result(LinVerdict.NOT_LINEARIZABLE, {
        "k": KeyResult(LinVerdict.NOT_LINEARIZABLE, 5, 17, witness=witness)})
    faults = [FaultEvent("kill", ["lab-c1"], 3.0, 8.0, detail="leader", extra={"signal": 9}),
              FaultEvent("pause", ["lab-c2"], 9.0)]
    report = _report(lin, LostWrites((history[2],), ("other",)), history=history, faults=faults)
    paths = report.write_all(tmp_path)
    assert sorted(p.name for p in paths.values()) == sorted(
        ["report.json", "history.jsonl", "summary.txt", "timeline.png"])
    assert load(tmp_path) == report
    obj = json.loads((tmp_path / REPORT_JSON).read_text())
    assert obj["verdict"] == "fail"
    assert obj["faults"][0]["detail"] == "leader"
    assert obj["recovery"]["faults"][0]["after_start"] == pytest.approx(8.2)
    assert obj["recovery"]["faults"][0]["after_heal"] == pytest.approx(3.2)
    assert len((tmp_path / HISTORY_JSONL).read_text().splitlines()) == len(history)


def test_summary_leads_with_the_verdict_and_shows_the_seed_and_each_fault() -> None:
    faults = [FaultEvent("kill", ["lab-c1"], 10.0, 15.0, detail="the leader"),
              FaultEvent("partition", ["lab-c2", "lab-c3"], 20.0, 25.0)]
    report = _report(_result(LinVerdict.UNKNOWN), history=[write(1, 12.0, 12.5)], faults=faults)
    summary = report.summary()
    lines = summary.splitlines()
    assert lines[0].startswith("verdict: UNKNOWN")
    assert "1234" in lines[0]
    assert "out of budget (time): k0" in summary
    kill, partition = lines[-2:]
    assert "kill lab-c1 (the leader): first ack +2.50 s" in kill
    assert "partition lab-c2,lab-c3" in partition and "first ack +missing" in partition
    assert "(1 without one: missing)" in summary


def synthetic_run(seed: int, duration: float, clients: int = 8,
                  keys: int = 5) -> tuple[list[Operation], list[FaultEvent]]:
    """A workload of sequential clients and three faults: a kill and a partition that stall the
    cluster for an election after they start and after they heal, and a pause never healed.
    Values are not checked by the report, so they only need to be well formed."""
    rng = random.Random(seed)
    faults = [FaultEvent("kill", ["lab-c1"], 0.2 * duration, 0.3 * duration, "leader"),
              FaultEvent("partition", ["lab-c2", "lab-c3"], 0.5 * duration, 0.6 * duration),
              FaultEvent("pause", ["lab-c3"], 0.85 * duration)]
    stalls = [(t, t + rng.uniform(0.8, 2.0)) for f in faults[:2] for t in (f.start, f.end)]
    history: list[Operation] = []
    for client in range(clients):
        t = rng.uniform(0.0, 0.05)
        while t < duration:
            kind = rng.choice((Kind.READ, Kind.READ, Kind.WRITE, Kind.CAS))
            stalled = any(a <= t < b for a, b in stalls)
            fate = rng.random()
            value: Value = len(history)
            op_input = None if kind is Kind.READ else (
                (value - 1, value) if kind is Kind.CAS else value)
            if stalled and fate < 0.5:
                op = Operation(client, f"k{rng.randrange(keys)}", kind, op_input, None,
                               Outcome.UNKNOWN, t, math.inf)
                t += 1.0  # the client's timeout
            else:
                latency = rng.lognormvariate(math.log(0.008), 0.6) * (30 if stalled else 1)
                outcome = Outcome.FAIL if stalled or fate < 0.003 else Outcome.OK
                output = (fate < 0.5) if kind is Kind.CAS and outcome is Outcome.OK else None
                op = Operation(client, f"k{rng.randrange(keys)}", kind, op_input, output,
                               outcome, t, t + latency)
                t += latency
            history.append(op)
            t += rng.uniform(0.0, 0.05)
    history.sort(key=lambda op: op.invoked)
    return history, faults


def test_timeline_png_for_a_few_thousand_operations_and_three_faults(tmp_path: Path) -> None:
    history, faults = synthetic_run(seed=7, duration=60.0)
    assert len(history) > 2000
    report = _report(history=history, faults=faults, ended=60.0)
    path = report.write_png(tmp_path / "timeline.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    assert all(f.after_start is not None for f in report.recovery.faults)
