"""What the benchmarks share: percentiles, machine CPU, signals turned into Ctrl-C so that
every benchmark's cleanup (``finally``) runs when it is stopped, and that cleanup's report. Imported by the scripts in
this directory (``python bench/<name>.py`` puts it on the path)."""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


def clean_up(close: Callable[[], str], workdir: Path) -> None:
    """A benchmark's ``finally``: ``close()`` its test bed (a line saying what it removed; a
    failure is told, never raised over the result), remove ``workdir``, one line on stderr."""
    t0 = time.monotonic()
    try:
        line = close()
    except Exception as exc:  # noqa: BLE001 - told, and the rest still cleaned
        line = f"failed: {exc}"
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"cleanup ({time.monotonic() - t0:.1f} s): {line}; {workdir} removed", file=sys.stderr)
