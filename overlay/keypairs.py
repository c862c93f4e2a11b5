"""Transport keypairs, a peer's previous/current/next slots, and the receiver-index table.

A finished handshake yields one ``Keypair``: a 32-byte key per direction, the two 32-bit
session indices (ours, which the peer puts in every packet it sends us, and theirs), the
creation time and whether we initiated. The file reads in this order:

1. ``Keypair``. Its send side hands out nonces with ``next_nonce``: a counter behind a lock, so
   the device may encrypt from several threads and still never use a nonce twice, which with
   ChaCha20-Poly1305 would reveal the XOR of two plaintexts and allow forgeries. Nonces stop at
   REJECT_AFTER_MESSAGES (``NonceExhausted``) and never wrap. Its receive side is an injected
   replay filter (``validate(counter) -> bool``, called only after a packet authenticates).
   Keys are held in bytearrays so ``zero`` can overwrite them in place (best effort: Python may
   keep copies, the same limit wireguard-go admits for Go); a zeroed keypair refuses to give
   out keys or nonces. Keys never appear in ``repr``.
2. ``KeySlots``: a peer's three keypairs, rotated exactly as wireguard-go's
   ``BeginSymmetricSession`` / ``ReceivedWithKeypair`` do. The initiator knows the responder
   has the keys (the response proved it), so its new keypair becomes ``current`` at once. The
   responder cannot know that its response arrived, so it parks the new keypair in ``next``
   and keeps sending on the old ``current`` until the first data packet authenticates under
   the new one (``received_with``). Keypairs that drop out are zeroed and passed to an
   ``on_retire`` callback (the device removes their index from the ``IndexTable``).
3. ``IndexTable``: receiver index -> (peer, handshake or keypair). A fresh random index per
   handshake, from an injected RNG, hides how many sessions exist; the index stays the same
   when the handshake turns into a keypair (``swap_index_for_keypair``).

``KeySlots`` and ``IndexTable`` lock internally: the send and receive paths may run on
different threads.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from overlay.crypto import KEY_LEN
from overlay.messages import INDEX_BITS
from overlay.timers import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME

log = logging.getLogger(__name__)

_INDEX_ALLOCATION_TRIES = 1000  # random draws before concluding the RNG or the table is broken

P = TypeVar("P")
H = TypeVar("H")


class ReplayFilter(Protocol):
    """The receive window of one keypair (``overlay.replay.ReplayFilter`` fits)."""

    def validate(self, counter: int) -> bool: ...


class RandomBits(Protocol):
    """What the index table needs from an RNG; ``secrets.SystemRandom`` fits."""

    def getrandbits(self, k: int, /) -> int: ...


class NonceExhausted(Exception):
    """The keypair has handed out every nonce it may (or was zeroed): rekey before sending."""


class KeyMaterialZeroed(Exception):
    """The keypair's keys were wiped; it must not be used any more."""


class Keypair:
    """One session's transport keys and counters. Identity, not value, equality."""

    __slots__ = ("_send_key", "_receive_key", "local_index", "remote_index", "created", "is_initiator",
                 "replay_filter", "_lock", "_send_counter", "_zeroed")

    def __init__(self, *, send_key: bytes, receive_key: bytes, local_index: int, remote_index: int,
                 created: float, is_initiator: bool, replay_filter: ReplayFilter) -> None:
        if len(send_key) != KEY_LEN or len(receive_key) != KEY_LEN:
            raise ValueError(f"transport keys must be {KEY_LEN} bytes")
        for name, index in (("local_index", local_index), ("remote_index", remote_index)):
            if not 0 <= index < 2**INDEX_BITS:
                raise ValueError(f"{name} must be a {INDEX_BITS}-bit unsigned integer")
        self._send_key = bytearray(send_key)
        self._receive_key = bytearray(receive_key)
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.is_initiator = is_initiator
        self.replay_filter = replay_filter
        self._lock = threading.Lock()
        self._send_counter = 0
        self._zeroed = False

    def __repr__(self) -> str:
        role = "initiator" if self.is_initiator else "responder"
        return (f"Keypair(local_index={self.local_index:#010x}, remote_index={self.remote_index:#010x}, "
                f"{role}, created={self.created}, sent={self._send_counter}, zeroed={self._zeroed})")

    @property
    def send_key(self) -> bytes:
        """The key we encrypt with. Raises ``KeyMaterialZeroed`` once wiped."""
        if self._zeroed:
            raise KeyMaterialZeroed(repr(self))
        return bytes(self._send_key)

    @property
    def receive_key(self) -> bytes:
        """The key we decrypt with. Raises ``KeyMaterialZeroed`` once wiped."""
        if self._zeroed:
            raise KeyMaterialZeroed(repr(self))
        return bytes(self._receive_key)

    @property
    def send_counter(self) -> int:
        """How many nonces have been handed out, which is also the next one."""
        return self._send_counter

    @property
    def zeroed(self) -> bool:
        return self._zeroed

    def next_nonce(self) -> int:
        """The nonce (transport counter) for the next packet; each value is returned at most
        once across all threads. Raises ``NonceExhausted`` from REJECT_AFTER_MESSAGES on."""
        with self._lock:
            nonce = self._send_counter
            if nonce >= REJECT_AFTER_MESSAGES:
                raise NonceExhausted(repr(self))
            self._send_counter = nonce + 1
            return nonce

    def usable_for_sending(self, now: float) -> bool:
        """Younger than REJECT_AFTER_TIME, nonces left, not zeroed."""
        return (not self._zeroed and now - self.created < REJECT_AFTER_TIME
                and self._send_counter < REJECT_AFTER_MESSAGES)

    def usable_for_receiving(self, now: float) -> bool:
        """Not older than REJECT_AFTER_TIME and not zeroed (wireguard-go drops a packet when
        ``created + REJECT_AFTER_TIME`` is before now)."""
        return not self._zeroed and now - self.created <= REJECT_AFTER_TIME

    def zero(self) -> None:
        """Overwrite both keys and retire the nonce counter; idempotent."""
        with self._lock:
            self._send_key[:] = bytes(KEY_LEN)
            self._receive_key[:] = bytes(KEY_LEN)
            self._send_counter = REJECT_AFTER_MESSAGES
            self._zeroed = True


def _ignore(keypair: Keypair) -> None:
    return None


class KeySlots:
    """A peer's previous, current and next keypairs."""

    def __init__(self, *, on_retire: Callable[[Keypair], None] = _ignore) -> None:
        self._lock = threading.Lock()
        self._on_retire = on_retire
        self._previous: Keypair | None = None
        self._current: Keypair | None = None
        self._next: Keypair | None = None

    def __repr__(self) -> str:
        return f"KeySlots(previous={self._previous!r}, current={self._current!r}, next={self._next!r})"

    @property
    def previous(self) -> Keypair | None:
        return self._previous

    @property
    def current(self) -> Keypair | None:
        return self._current

    @property
    def next(self) -> Keypair | None:
        return self._next

    def install(self, keypair: Keypair) -> None:
        """Place a freshly derived keypair. Initiator: it becomes current; the old current (or
        an unconfirmed next, which is newer) becomes previous. Responder: it becomes next,
        replacing any unconfirmed next, and previous is dropped: on promotion the current one
        takes its place."""
        retired: list[Keypair] = []
        with self._lock:
            if keypair.is_initiator:
                if self._next is not None:
                    retired += [k for k in (self._previous, self._current) if k is not None]
                    self._previous, self._next = self._next, None
                else:
                    retired += [self._previous] if self._previous is not None else []
                    self._previous = self._current
                self._current = keypair
            else:
                retired += [k for k in (self._previous, self._next) if k is not None]
                self._previous, self._next = None, keypair
        self._retire(retired)

    def received_with(self, keypair: Keypair) -> bool:
        """A transport packet authenticated under ``keypair``. If that is the responder's
        ``next``, promote it (current -> previous, next -> current) and return True: the
        handshake is complete. Otherwise change nothing and return False."""
        if self._next is not keypair:  # the common case, without the lock
            return False
        with self._lock:
            if self._next is not keypair:
                return False
            retired = [self._previous] if self._previous is not None else []
            self._previous, self._current, self._next = self._current, keypair, None
        self._retire(retired)
        return True

    def current_for_sending(self, now: float) -> Keypair | None:
        """The keypair to encrypt with, or None when there is none or it has expired (older
        than REJECT_AFTER_TIME, nonces exhausted, zeroed): then a handshake is needed first."""
        current = self._current
        if current is None or not current.usable_for_sending(now):
            return None
        return current

    def clear(self) -> None:
        """Retire all three keypairs (the ZERO_KEYS action, or the peer's removal)."""
        with self._lock:
            retired = [k for k in (self._previous, self._current, self._next) if k is not None]
            self._previous = self._current = self._next = None
        self._retire(retired)

    def _retire(self, keypairs: list[Keypair]) -> None:
        for keypair in keypairs:
            keypair.zero()
            self._on_retire(keypair)


@dataclass(frozen=True, slots=True)
class IndexEntry(Generic[P, H]):
    """What a receiver index names: a peer's handshake in progress, or one of its keypairs."""

    peer: P
    handshake: H | None = None
    keypair: Keypair | None = None


class IndexTable(Generic[P, H]):
    """Receiver index -> ``IndexEntry``, shared by every peer of a device."""

    def __init__(self, *, rng: RandomBits | None = None) -> None:
        self._rng: RandomBits = rng if rng is not None else secrets.SystemRandom()
        self._lock = threading.Lock()
        self._table: dict[int, IndexEntry[P, H]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def new_index_for_handshake(self, peer: P, handshake: H) -> int:
        """Reserve a random index not in use and map it to ``handshake``."""
        for _ in range(_INDEX_ALLOCATION_TRIES):
            index = self._rng.getrandbits(INDEX_BITS)
            with self._lock:
                if index not in self._table:
                    self._table[index] = IndexEntry(peer, handshake=handshake)
                    return index
        raise RuntimeError(f"no free receiver index after {_INDEX_ALLOCATION_TRIES} random draws")

    def swap_index_for_keypair(self, keypair: Keypair) -> bool:
        """The handshake at ``keypair.local_index`` became ``keypair``: keep the index and the
        peer, point it at the keypair. False (and no change) if the index is no longer held,
        e.g. the handshake was abandoned meanwhile."""
        with self._lock:
            entry = self._table.get(keypair.local_index)
            if entry is None:
                log.debug("index %#010x vanished before its keypair was installed", keypair.local_index)
                return False
            self._table[keypair.local_index] = IndexEntry(entry.peer, keypair=keypair)
            return True

    def lookup(self, index: int) -> IndexEntry[P, H] | None:
        with self._lock:
            return self._table.get(index)

    def delete(self, index: int) -> None:
        """Release ``index``; deleting an unknown index is a no-op."""
        with self._lock:
            self._table.pop(index, None)
