"""One process at a time on a directory: an advisory ``flock`` that dies with its holder.

``corral up`` holds its data directory; ``corral chaos run`` holds the lab's directory, since
two workloads on one lab's registers would each see the other's writes as stale reads.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "lock"


class Busy(Exception):
    """Another process holds the directory."""


@contextlib.contextmanager
def holding(directory: Path, what: str, lock_file: str = LOCK_FILE) -> Iterator[None]:
    """The directory's lock for as long as the block runs (released if the process dies);
    ``Busy`` when another process holds it (``what``: the kind of process, as in "corral up")."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / lock_file, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another {what} is running on {directory}") from None
        yield
