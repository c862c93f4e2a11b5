"""Host-local IPAM: which Pod holds which address of the node's podCIDR, kept on disk the way
CNI's host-local plugin keeps it, so it survives an agent restart.

The state directory holds one file per allocated address, named by the address and containing
the owner (the sandbox id), plus ``last_reserved_ip`` for the round-robin cursor. Every write is
a temporary file renamed into place, so a crash leaves either the old or the new file, never a
torn one. A ``lock`` file taken with ``flock`` (and a threading lock, as flock is per open file)
serialises allocations within and across processes.

The choice of address is ``addresses.pick_next``; this module is only the bookkeeping around
it. Files for addresses outside the current subnet (the node's podCIDR changed) are ignored by
lookups and removed by the next ``allocate`` or by ``release`` of their owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from nodeagent.network.addresses import parse_pod_cidr, pick_next
from nodeagent.network.base import PodNetworkError

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LAST_RESERVED_FILE = "last_reserved_ip"


class HostLocalIPAM:
    """Allocations of ``subnet`` kept in ``state_dir`` (created if missing)."""

    def __init__(self, subnet: str, state_dir: Path) -> None:
        try:
            self.subnet = parse_pod_cidr(subnet)
        except ValueError as exc:
            raise PodNetworkError(str(exc)) from None
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()

    def allocate(self, owner: str) -> str:
        """An address for ``owner``: the one it holds already, else the next free one after the
        last handed out. PodNetworkError when the subnet is full."""
        _check_owner(owner)
        with self._locked():
            held = self._scan()
            for stale, holder in held.items():
                if stale not in self.subnet:
                    log.info("ipam: dropping %s of %s, outside podCIDR %s", stale, holder,
                             self.subnet)
                    self._remove(stale)
            mine = [a for a, holder in held.items() if holder == owner and a in self.subnet]
            if mine:
                return str(min(mine))
            in_subnet = [a for a in held if a in self.subnet]
            address = pick_next(self.subnet, in_subnet, self._last_reserved())
            if address is None:
                raise PodNetworkError(f"no free IP in {self.subnet}")
            self._write(str(address), owner + "\n")
            self._write(LAST_RESERVED_FILE, str(address) + "\n")
            log.debug("ipam: %s -> %s", owner, address)
            return str(address)

    def release(self, owner: str) -> None:
        """Free every address ``owner`` holds (also outside the subnet); nothing held is fine."""
        with self._locked():
            for address, holder in self._scan().items():
                if holder == owner:
                    self._remove(address)
                    log.debug("ipam: released %s of %s", address, owner)

    def lookup(self, owner: str) -> str | None:
        """The address ``owner`` holds in the current subnet, or None."""
        with self._locked():
            mine = [a for a, holder in self._scan().items()
                    if holder == owner and a in self.subnet]
        return str(min(mine)) if mine else None

    def allocations(self) -> dict[str, str]:
        """Owner -> address of every allocation in the current subnet."""
        with self._locked():
            held = self._scan()
        return {holder: str(a) for a, holder in sorted(held.items()) if a in self.subnet}

    # -- the files -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.state_dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _scan(self) -> dict[IPv4Address, str]:
        held: dict[IPv4Address, str] = {}
        for entry in self.state_dir.iterdir():
            try:
                address = ip_address(entry.name)
            except ValueError:
                continue  # lock, cursor, temporary files
            if not isinstance(address, IPv4Address):
                continue
            try:
                held[address] = entry.read_text().strip()
            except FileNotFoundError:
                continue
        return held

    def _last_reserved(self) -> IPv4Address | None:
        try:
            address = ip_address((self.state_dir / LAST_RESERVED_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return address if isinstance(address, IPv4Address) else None

    def _write(self, name: str, content: str) -> None:
        tmp = self.state_dir / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_dir / name)

    def _remove(self, address: IPv4Address) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / str(address)).unlink()


def _check_owner(owner: str) -> None:
    if not owner or owner != owner.strip() or "\n" in owner:
        raise PodNetworkError(f"invalid IPAM owner {owner!r}")
