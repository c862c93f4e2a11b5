"""The report of one chaos run: what faults.md asks a trustworthy chaos report to show, for machines
(``report.json`` and ``history.jsonl``) and for people (``summary.txt`` and ``timeline.png``).

Flow: the runner fills a ``Report`` with plain inputs — the scenario, seed and options, the lab,
the run's start and end on the operations' clock, the fault timeline, the history, and the
checkers' results (``check_history``'s ``Result``, the lost writes, the replica states read after
healing) — so the report depends on no lab and runs no checker. From them it grades each check
(``checks``) and the run (``verdict``): a run passes only when every check passed; a failed check
fails it; a check that could not decide (a checker's exhausted budget, a key or replica that
could not be read, nothing checked at all) makes it unknown, never a pass. It derives the
recovery after each fault (``chaos.recovery``), the operation counts and the latency of ok
operations; writes them as JSON, the history one operation a line beside it (``load`` reads both
back), a few lines of text, and a timeline figure (``write_png``); ``write_all`` writes the four.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.history import Kind, Operation, Outcome
from chaos.linearizability import KeyResult, Result, Witness
from chaos.linearizability import Verdict as LinVerdict
from chaos.recovery import (
    FaultRecovery,
    Percentiles,
    Recovery,
    measure_recovery,
    percentiles,
)
from chaos.timeline import FaultEvent

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
HISTORY_JSONL = "history.jsonl"
SUMMARY_TXT = "summary.txt"
TIMELINE_PNG = "timeline.png"

#: The most latency points the figure draws; beyond it the ok operations are thinned evenly (an
#: even thinning keeps the density honest), and a line of each time bin's maximum over all of
#: them keeps every slow one in view.
MAX_LATENCY_POINTS = 20_000
LATENCY_BINS = 300
#: How many lost writes the summary lists (report.json has them all).
SUMMARY_LOST_WRITES = 5
OUTCOME_COLOURS = {Outcome.OK: "#2ca02c", Outcome.FAIL: "#d62728", Outcome.UNKNOWN: "#ff7f0e"}
#: Fault kinds take these in turn: none is an outcome's green, red or orange, so a fault's shading
#: is never read as an outcome.
FAULT_COLOURS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#1f77b4", "#9467bd")
KIND_STYLES = {Kind.READ: ("o", "#444444"), Kind.WRITE: ("s", "#1f77b4"),
               Kind.CAS: ("^", "#9467bd")}
FIGURE_INCHES = (15.0, 10.0)
FIGURE_DPI = 110


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ReplicaState:
    """A controller's store read after healing: its applied revision and a digest of its state;
    ``digest`` None when it could not be read (which makes the check unknown, not passed)."""

    revision: int
    digest: str | None


@dataclass(frozen=True)
class LostWrites:
    """``find_lost_writes``'s answer, and the keys it could not check because their final read
    failed (an unchecked key may hide a lost write)."""

    lost: tuple[Operation, ...] = ()
    unchecked_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """One chaos run, on the operations' monotonic clock (``started``/``ended`` bound the run;
    the figure and the summary count seconds from ``started``). ``options`` and ``lab`` are
    JSON-able summaries of the run's settings (duration, interval, hold, ...) and of the lab
    (controllers, nodes)."""

    scenario: str
    seed: int
    options: dict[str, Any]
    lab: dict[str, Any]
    started: float
    ended: float
    faults: list[FaultEvent]
    history: list[Operation]
    linearizability: Result
    lost_writes: LostWrites
    replicas: dict[str, ReplicaState] = field(default_factory=dict)

    # -- grading ------------------------------------------------------------------------------

    def checks(self) -> dict[str, Verdict]:
        """Each check's grade, in the order faults.md lists them."""
        return {
            "linearizability": self._linearizability_check(),
            "lost writes": self._lost_writes_check(),
            "replica hashes": self._replica_check(),
        }

    @property
    def verdict(self) -> Verdict:
        grades = set(self.checks().values())
        for verdict in (Verdict.FAIL, Verdict.UNKNOWN):
            if verdict in grades:
                return verdict
        return Verdict.PASS

    def _linearizability_check(self) -> Verdict:
        if self.linearizability.verdict is LinVerdict.NOT_LINEARIZABLE:
            return Verdict.FAIL
        # An empty result says nothing about the cluster: no key was checked.
        if self.linearizability.verdict is LinVerdict.UNKNOWN or not self.linearizability.keys:
            return Verdict.UNKNOWN
        return Verdict.PASS

    def _lost_writes_check(self) -> Verdict:
        if self.lost_writes.lost:
            return Verdict.FAIL
        return Verdict.UNKNOWN if self.lost_writes.unchecked_keys else Verdict.PASS

    def _replica_check(self) -> Verdict:
        read = {(s.revision, s.digest) for s in self.replicas.values() if s.digest is not None}
        if len(read) > 1:
            return Verdict.FAIL
        unread = any(s.digest is None for s in self.replicas.values())
        return Verdict.UNKNOWN if unread or not read else Verdict.PASS

    @property
    def replicas_equal(self) -> bool:
        return self._replica_check() is Verdict.PASS

    # -- derived statistics -------------------------------------------------------------------

    @functools.cached_property
    def recovery(self) -> Recovery:
        return measure_recovery(self.history, self.faults)

    @functools.cached_property
    def op_counts(self) -> dict[str, dict[str, int]]:
        """Operations per kind and outcome, every pair present (zeros included) so that tables
        built from reports line up."""
        counted = Counter((op.kind, op.outcome) for op in self.history)
        return {kind.value: {outcome.value: counted[kind, outcome] for outcome in Outcome}
                for kind in Kind}

    @functools.cached_property
    def latency(self) -> Percentiles:
        """Seconds from invocation to return of the ok operations."""
        return percentiles(op.returned - op.invoked for op in self.history
                           if op.outcome is Outcome.OK)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything but the history (``history.jsonl``), with the grades and the derived
        statistics written out for readers; ``from_json`` recomputes those from the history."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "verdict": self.verdict.value,
            "checks": {name: grade.value for name, grade in self.checks().items()},
            "options": self.options,
            "lab": self.lab,
            "started": self.started,
            "ended": self.ended,
            "faults": [fault.to_json() for fault in self.faults],
            "linearizability": self.linearizability.to_json(),
            "lost_writes": {"lost": [op.to_json() for op in self.lost_writes.lost],
                            "unchecked_keys": list(self.lost_writes.unchecked_keys)},
            "replicas": {name: {"revision": s.revision, "digest": s.digest}
                         for name, s in self.replicas.items()},
            "replicas_equal": self.replicas_equal,
            "recovery": self.recovery.to_json(),
            "operations": {"total": len(self.history), "counts": self.op_counts,
                           "latency_ok": self.latency.to_json()},
            "history": HISTORY_JSONL,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], history: list[Operation]) -> Report:
        lost = obj["lost_writes"]
        return cls(
            scenario=obj["scenario"], seed=obj["seed"], options=obj["options"], lab=obj["lab"],
            started=obj["started"], ended=obj["ended"],
            faults=[FaultEvent.from_json(f) for f in obj["faults"]],
            history=history,
            linearizability=_result_from_json(obj["linearizability"]),
            lost_writes=LostWrites(tuple(Operation.from_json(op) for op in lost["lost"]),
                                   tuple(lost["unchecked_keys"])),
            replicas={name: ReplicaState(s["revision"], s["digest"])
                      for name, s in obj["replicas"].items()},
        )

    # -- text ---------------------------------------------------------------------------------

    def summary(self) -> str:
        """A few lines for people: the verdict first, then why, then what the run was."""
        checks = self.checks()
        recovery, latency = self.recovery, self.latency
        run = self.ended - self.started
        lines = [
            f"verdict: {self.verdict.value.upper()}  (scenario {self.scenario}, seed {self.seed})",
            f"  linearizability: {checks['linearizability']}: {self._linearizability_text()}",
            f"  lost writes: {checks['lost writes']}: {self._lost_writes_text()}",
            f"  replica hashes: {checks['replica hashes']}: {self._replicas_text()}",
            f"  first ack write after fault start: {_recovery_text(recovery.after_start)}",
            f"  first ack write after fault heal: {_recovery_text(recovery.after_heal)}",
            f"  operations: {self._ops_text()}",
            f"  ok latency: {_percentiles_text(latency)}",
            f"  run: {run:.1f} s, seed {self.seed}, options {_pairs(self.options)}",
            f"  lab: {_pairs(self.lab)}",
            f"faults ({len(self.faults)}, seconds from the start):",
        ]
        lines += [f"  {self._fault_text(fault, recovered)}"
                  for fault, recovered in zip(self.faults, recovery.faults, strict=True)]
        return "\n".join(lines) + "\n"

    def _linearizability_text(self) -> str:
        keys = self.linearizability.keys
        by_verdict: dict[LinVerdict, list[str]] = {}
        for key, result in keys.items():
            by_verdict.setdefault(result.verdict, []).append(key)
        linearizable = len(by_verdict.get(LinVerdict.LINEARIZABLE, []))
        parts = [f"{len(keys)} keys checked, {linearizable} linearizable"]
        if bad := by_verdict.get(LinVerdict.NOT_LINEARIZABLE):
            parts.append(f"not linearizable: {_names(bad)}")
        if undecided := by_verdict.get(LinVerdict.UNKNOWN):
            budgets = sorted({keys[k].exhausted or "?" for k in undecided})
            parts.append(f"out of budget ({'/'.join(budgets)}): {_names(undecided)}")
        return "; ".join(parts)

    def _lost_writes_text(self) -> str:
        lost = self.lost_writes.lost
        text = f"{len(lost)} acknowledged writes lost"
        if lost:
            shown = ", ".join(
                f"{op.key}={op.input[1] if isinstance(op.input, tuple) else op.input} "
                f"(client {op.client}, acknowledged at {op.returned - self.started:.2f} s)"
                for op in lost[:SUMMARY_LOST_WRITES])
            more = len(lost) - SUMMARY_LOST_WRITES
            text += f": {shown}" + (f" and {more} more" if more > 0 else "")
        if self.lost_writes.unchecked_keys:
            text += f"; final value unread: {_names(self.lost_writes.unchecked_keys)}"
        return text

    def _replicas_text(self) -> str:
        if not self.replicas:
            return "no replica was read"
        states = sorted(self.replicas.items())
        if self.replicas_equal:
            revision, digest = states[0][1].revision, states[0][1].digest
            return f"{len(states)} controllers equal at revision {revision}, digest {digest}"
        return ", ".join(f"{name} r{s.revision} {s.digest or 'unread'}" for name, s in states)

    def _ops_text(self) -> str:
        kinds = "; ".join(
            f"{kind} " + "/".join(f"{n} {outcome}" for outcome, n in counts.items())
            for kind, counts in self.op_counts.items())
        return f"{len(self.history)} ({kinds})"

    def _fault_text(self, fault: FaultEvent, recovered: FaultRecovery) -> str:
        detail = f" ({fault.detail})" if fault.detail else ""
        if fault.end is None:
            end, after_heal = "  never healed", ""
        else:
            end = f"{fault.end - self.started:7.2f}"
            after_heal = f", after heal +{_seconds(recovered.after_heal)}"
        return (f"{fault.start - self.started:7.2f} - {end}  {fault.kind} "
                f"{','.join(fault.targets)}{detail}: first ack +{_seconds(recovered.after_start)}"
                f"{after_heal}; {recovered.failed} failed, {recovered.unknown} unknown")

    # -- figure -------------------------------------------------------------------------------

    def write_png(self, path: Path | str) -> Path:
        """One figure on a shared axis of seconds from the start: the faults per target, the
        operations per client coloured by outcome, the latency of ok operations (log scale)."""
        # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
        from matplotlib.figure import Figure

        targets = sorted({t for fault in self.faults for t in fault.targets})
        by_client: dict[int, list[Operation]] = {}
        for op in self.history:
            by_client.setdefault(op.client, []).append(op)
        figure = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI, layout="constrained")
        faults_ax, ops_ax, latency_ax = figure.subplots(
            3, 1, sharex=True,
            gridspec_kw={"height_ratios": [max(1.0, 0.35 * len(targets)),
                                           max(1.5, 0.3 * len(by_client)), 3.0]})
        span = max(self.ended - self.started, 1e-9)
        colours = _fault_colours(self.faults)
        for ax in (faults_ax, ops_ax, latency_ax):
            for fault in self.faults:
                ax.axvspan(fault.start - self.started, self._fault_end(fault) - self.started,
                           color=colours[fault.kind], alpha=0.08, linewidth=0)
        self._draw_faults(faults_ax, targets, colours, span)
        self._draw_ops(ops_ax, by_client, pixel=span / (FIGURE_INCHES[0] * FIGURE_DPI))
        self._draw_latency(latency_ax)
        latency_ax.set_xlim(0.0, span)
        latency_ax.set_xlabel("seconds from the start of the run")
        figure.suptitle(
            f"{self.scenario} (seed {self.seed}): {self.verdict.value.upper()}; first ack "
            f"write after fault start: {_percentiles_text(self.recovery.after_start)}")
        figure.savefig(path, format="png")
        return Path(path)

    def _fault_end(self, fault: FaultEvent) -> float:
        return self.ended if fault.end is None else fault.end

    def _draw_faults(self, ax: Axes, targets: list[str], colours: dict[str, str],
                     span: float) -> None:
        from matplotlib.patches import Patch

        for fault in self.faults:
            start = fault.start - self.started
            width = self._fault_end(fault) - fault.start
            for target in fault.targets:
                row = targets.index(target)
                ax.broken_barh([(start, width)], (row - 0.4, 0.8), facecolors=colours[fault.kind],
                               hatch="//" if fault.end is None else None, edgecolor="black",
                               linewidth=0.5)
                if width > 0.04 * span:
                    ax.text(start + 0.005 * span, row, fault.kind, va="center", fontsize=7,
                            clip_on=True)
        ax.set_yticks(range(len(targets)), targets, fontsize=8)
        ax.set_ylim(-0.6, max(len(targets), 1) - 0.4)
        ax.invert_yaxis()
        ax.set_ylabel("faults")
        handles = [Patch(facecolor=c, edgecolor="black", label=k) for k, c in colours.items()]
        if any(fault.end is None for fault in self.faults):
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                                 label="never healed"))
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                      fontsize=8, title="fault kind", title_fontsize=8)

    def _draw_ops(self, ax: Axes, by_client: dict[int, list[Operation]], pixel: float) -> None:
        """Ok operations as bars merged where they touch within a pixel (lossless at this
        resolution, and bounded however long the run); every failed and unknown operation as a
        tick at its invocation, an unknown one with a line to the end of the run (it may still
        take effect)."""
        from matplotlib.collections import LineCollection

        clients = sorted(by_client)
        row = {client: i for i, client in enumerate(clients)}
        ok_bars: list[list[tuple[float, float]]] = []
        unknown_lines: list[list[tuple[float, float]]] = []
        for client in clients:
            ok = [(op.invoked - self.started, op.returned - self.started)
                  for op in by_client[client] if op.outcome is Outcome.OK]
            ok_bars += [[(a, row[client]), (b, row[client])] for a, b in _merge(ok, pixel)]
        end = self.ended - self.started
        marks: dict[Outcome, tuple[list[float], list[float]]] = {
            Outcome.FAIL: ([], []), Outcome.UNKNOWN: ([], [])}
        for op in self.history:
            if op.outcome is Outcome.OK:
                continue
            x, y = op.invoked - self.started, row[op.client]
            marks[op.outcome][0].append(x)
            marks[op.outcome][1].append(y)
            if op.outcome is Outcome.UNKNOWN:
                unknown_lines.append([(x, y + 0.3), (end, y + 0.3)])
        ax.add_collection(LineCollection(ok_bars, colors=OUTCOME_COLOURS[Outcome.OK],
                                         linewidths=5, capstyle="butt", label="ok (bars merged "
                                         "within a pixel)"))
        ax.add_collection(LineCollection(unknown_lines, colors=OUTCOME_COLOURS[Outcome.UNKNOWN],
                                         linewidths=0.8, alpha=0.5))
        for outcome, marker in ((Outcome.FAIL, "|"), (Outcome.UNKNOWN, "x")):
            xs, ys = marks[outcome]
            ax.scatter(xs, ys, marker=marker, s=40, linewidths=1.2,
                       color=OUTCOME_COLOURS[outcome],
                       label=f"{outcome.value} ({len(xs)})" + (
                           ", line to the end of the run" if outcome is Outcome.UNKNOWN else ""))
        ax.set_yticks(range(len(clients)), [str(c) for c in clients], fontsize=7)
        ax.set_ylim(-0.6, max(len(clients), 1) - 0.4 + 0.3)
        ax.invert_yaxis()
        ax.set_ylabel("operations per client")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)

    def _draw_latency(self, ax: Axes) -> None:
        ok = [op for op in self.history if op.outcome is Outcome.OK]
        stride = max(1, math.ceil(len(ok) / MAX_LATENCY_POINTS))
        for kind, (marker, colour) in KIND_STYLES.items():
            points = [op for op in ok[::stride] if op.kind is kind]
            ax.scatter([op.invoked - self.started for op in points],
                       [max(op.returned - op.invoked, 1e-4) for op in points],
                       s=4, marker=marker, color=colour, alpha=0.5, linewidths=0,
                       label=f"{kind.value} ok ({sum(op.kind is kind for op in ok)})")
        if ok:
            width = max(self.ended - self.started, 1e-9) / LATENCY_BINS
            slowest: dict[int, float] = {}
            for op in ok:
                b = int((op.invoked - self.started) // width)
                slowest[b] = max(slowest.get(b, 0.0), op.returned - op.invoked)
            # NaN breaks the line over bins without an ok operation instead of bridging them.
            bins = range(min(slowest), max(slowest) + 1)
            ax.step([(b + 0.5) * width for b in bins],
                    [max(slowest[b], 1e-4) if b in slowest else math.nan for b in bins],
                    where="mid", color="black", linewidth=0.7, label="max per bin (all ok ops)")
        ax.set_yscale("log")
        ax.set_ylabel("latency of ok ops (s)")
        title = "all shown" if stride == 1 else f"1 in {stride} shown"
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, title=title,
                  title_fontsize=7, markerscale=3)

    # -- files --------------------------------------------------------------------------------

    def write_all(self, directory: Path | str) -> dict[str, Path]:
        """report.json, history.jsonl, summary.txt and timeline.png in ``directory`` (created if
        needed), by name."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {name: directory / name
                 for name in (REPORT_JSON, HISTORY_JSONL, SUMMARY_TXT, TIMELINE_PNG)}
        paths[REPORT_JSON].write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        paths[HISTORY_JSONL].write_text("".join(
            json.dumps(op.to_json(), allow_nan=False) + "\n" for op in self.history))
        paths[SUMMARY_TXT].write_text(self.summary())
        self.write_png(paths[TIMELINE_PNG])
        log.info("chaos report %s (%s) written to %s", self.scenario, self.verdict.value,
                 directory)
        return paths


def load(directory: Path | str) -> Report:
    """The report ``write_all`` wrote in ``directory``, history included."""
    directory = Path(directory)
    with (directory / HISTORY_JSONL).open() as lines:
        history = [Operation.from_json(json.loads(line)) for line in lines if line.strip()]
    return Report.from_json(json.loads((directory / REPORT_JSON).read_text()), history)


def _result_from_json(obj: dict[str, Any]) -> Result:
    """``Result.to_json`` read back (the checker's module has no reader of its own)."""
    def witness(w: dict[str, Any] | None) -> Witness | None:
        if w is None:
            return None
        return Witness(tuple(Operation.from_json(op) for op in w["prefix"]), w["state"],
                       Operation.from_json(w["stuck"]))

    return Result(LinVerdict(obj["verdict"]), {
        key: KeyResult(LinVerdict(k["verdict"]), k["operations"], k["steps"],
                       witness(k["witness"]), k["exhausted"])
        for key, k in obj["keys"].items()})


def _merge(intervals: Iterable[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """The union of ``intervals``, joining those less than ``gap`` apart."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _fault_colours(faults: Sequence[FaultEvent]) -> dict[str, str]:
    """A colour per fault kind, in order of first appearance, the same in every lane."""
    kinds = dict.fromkeys(fault.kind for fault in faults)
    return {kind: FAULT_COLOURS[i % len(FAULT_COLOURS)] for i, kind in enumerate(kinds)}


def _seconds(value: float | None) -> str:
    if value is None:
        return "missing"
    return f"{value * 1000:.0f} ms" if value < 1.0 else f"{value:.2f} s"


def _percentiles_text(stats: Percentiles) -> str:
    return f"p50 {_seconds(stats.p50)}, p99 {_seconds(stats.p99)}, max {_seconds(stats.max)}"


def _recovery_text(stats: Percentiles) -> str:
    faults = stats.count + stats.missing
    if faults == 0:
        return "no faults to measure"
    text = f"{_percentiles_text(stats)} over {stats.count} of {faults} faults"
    return text + (f" ({stats.missing} without one: missing)" if stats.missing else "")


def _pairs(values: dict[str, Any]) -> str:
    """``k=v, ...``, a list as its items joined by commas."""
    return ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list | tuple) else v}"
        for k, v in values.items()) or "-"


def _names(names: Sequence[str], most: int = 10) -> str:
    more = len(names) - most
    return ", ".join(names[:most]) + (f" and {more} more" if more > 0 else "")
