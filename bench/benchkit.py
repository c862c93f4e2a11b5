"""What the benchmarks share: percentiles, machine CPU, and signals turned into Ctrl-C so that
every benchmark's cleanup (``finally``) runs when it is stopped. Imported by the scripts in
this directory (``python bench/<name>.py`` puts it on the path)."""

from __future__ import annotations

import math
from types import FrameType

import psutil


def nearest_rank(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1); NaN for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (idle and iowait excluded)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: SIGTERM stops a benchmark as Ctrl-C does, cleanup included."""
    raise KeyboardInterrupt(f"signal {signum}")
