"""WireGuard's per-peer timers as a pure state machine: events in, deadlines and actions out.

WireGuard keeps a session alive, fresh and quiet with five timers per peer (whitepaper §6,
wireguard-go ``device/timers.go``). Here they are deadlines on an injected clock rather than
threads: the device loop reports what happened (``data_sent(now)``, ...), asks
``next_deadline()`` how long it may sleep, and calls ``fire(now)``, which returns the
``Action`` values to carry out. Nothing here sleeps, spawns or sends, so every rule is a table
test on a fake clock, and the randomness (the retransmission jitter) comes from an injected RNG.

The file reads in this order:

1. The spec constants, named as in the whitepaper, in seconds or messages; ``keypairs.py`` and
   ``replay.py`` import the ones they need from here.
2. ``should_initiate_on_send`` / ``should_initiate_on_receive``: the two "keep the key fresh"
   predicates, pure functions of one keypair's age, send counter and role. Both thresholds are
   strict ("older than", "exceeds"), as in wireguard-go.
3. ``PeerTimers``: the five timers and their events.

   ============================  ==========================================  =================
   timer                         armed by                                    on expiry
   ============================  ==========================================  =================
   retransmit handshake          ``handshake_initiated``: REKEY_TIMEOUT +     resend the
                                 jitter; stopped by ``handshake_complete``    initiation, or
                                                                             GIVE_UP after
                                                                             MAX_TIMER_HANDSHAKES
   send keepalive (passive)      ``data_received``: KEEPALIVE_TIMEOUT, if     SEND_KEEPALIVE
                                 not already pending; stopped by
                                 ``any_authenticated_packet_sent``
   new handshake                 ``data_sent``: KEEPALIVE_TIMEOUT +           SEND_HANDSHAKE_
                                 REKEY_TIMEOUT + jitter, if not pending;     INITIATION
                                 stopped by
                                 ``any_authenticated_packet_received``
   zero key material             ``session_derived``: 3 * REJECT_AFTER_TIME   ZERO_KEYS
                                 (re-armed); also by giving up, if not
                                 pending
   persistent keepalive          ``any_authenticated_packet_traversal``:      SEND_KEEPALIVE
                                 the configured interval, if non-zero
   ============================  ==========================================  =================

How the device drives it (the wireguard-go call sites):

- after sending a transport packet (data or keepalive): ``any_authenticated_packet_traversal``,
  ``any_authenticated_packet_sent``, and ``data_sent`` if it carried data; then, when
  ``should_initiate_on_send`` holds for the current keypair, ``request_handshake``.
- after a transport packet authenticates: ``any_authenticated_packet_traversal``,
  ``any_authenticated_packet_received``, ``data_received`` if it carried data; and
  ``last_minute_handshake_due`` (which wraps ``should_initiate_on_receive``) to decide on a
  ``request_handshake``. If the packet promoted the responder's "next" keypair,
  ``handshake_complete``.
- to send an initiation that was not asked for by ``fire`` (new data, no usable keypair):
  ``request_handshake(now)``; only if it returns True, build and send the message. After
  sending any initiation: ``any_authenticated_packet_traversal``,
  ``any_authenticated_packet_sent``, ``handshake_initiated``.
- after sending a response (responder) or consuming one (initiator): ``session_derived``; the
  initiator also calls ``handshake_complete``, and both count the handshake message as an
  authenticated packet sent or received.
- ``SEND_HANDSHAKE_INITIATION`` from ``fire`` is already cleared by the rate limit: send it.
  ``GIVE_UP`` means drop the packets staged for this peer; the next packet to send starts
  over with ``request_handshake``. ``ZERO_KEYS`` means drop every keypair and the pending
  handshake.
- a non-zero persistent keepalive takes effect on the next authenticated packet; wireguard-go
  sends a keepalive at once when the interval is set on a running device, which arms it.

Initiations are rate-limited to one per REKEY_TIMEOUT, as wireguard-go's
``SendHandshakeInitiation`` does: the check and the claim happen in one call
(``request_handshake``, or inside ``fire``) so two callers cannot both pass.

Not thread-safe, like a raft ``Node``'s core: the device serialises the calls for one peer.
"""

from __future__ import annotations

import enum
import logging
import random
from typing import Protocol

log = logging.getLogger(__name__)

REKEY_AFTER_MESSAGES = 2**60  # messages sent on one keypair before a new handshake is wanted
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1  # messages: nonces at or above this are never used nor accepted
REKEY_AFTER_TIME = 120.0  # seconds: keypair age after which the initiator rekeys on send
REJECT_AFTER_TIME = 180.0  # seconds: keypair age after which it is refused for sending
REKEY_ATTEMPT_TIME = 90.0  # seconds: how long initiations are retried before giving up
REKEY_TIMEOUT = 5.0  # seconds: wait for a response before retransmitting an initiation
REKEY_TIMEOUT_JITTER_MAX_MS = 334  # milliseconds (exclusive): random extra wait per timer
KEEPALIVE_TIMEOUT = 10.0  # seconds: passive keepalive delay; new handshake after this + REKEY_TIMEOUT
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # retransmissions before giving up


class JitterSource(Protocol):
    """What the timers need from an RNG; ``random.Random`` and ``secrets.SystemRandom`` fit."""

    def randrange(self, start: int, /) -> int: ...


class Action(enum.Enum):
    """What ``PeerTimers.fire`` asks the device to do."""

    SEND_HANDSHAKE_INITIATION = "send-handshake-initiation"
    SEND_KEEPALIVE = "send-keepalive"
    ZERO_KEYS = "zero-keys"
    GIVE_UP = "give-up"


def should_initiate_on_send(*, created: float, send_counter: int, is_initiator: bool, now: float) -> bool:
    """True when, having just sent on a keypair, a new handshake is due: its send counter
    (nonces handed out) exceeds REKEY_AFTER_MESSAGES, or we initiated it and it is older than
    REKEY_AFTER_TIME. Only the initiator rekeys on age, so both ends do not race to."""
    return send_counter > REKEY_AFTER_MESSAGES or (is_initiator and now - created > REKEY_AFTER_TIME)


def should_initiate_on_receive(*, created: float, is_initiator: bool, now: float) -> bool:
    """True when, having just received on a keypair we initiated, it is too close to
    REJECT_AFTER_TIME to wait for the send path: older than REJECT_AFTER_TIME -
    KEEPALIVE_TIMEOUT - REKEY_TIMEOUT (165 s), so a handshake still fits before it dies."""
    return is_initiator and now - created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT


class _Timer(enum.Enum):
    RETRANSMIT_HANDSHAKE = "retransmit-handshake"
    SEND_KEEPALIVE = "send-keepalive"
    NEW_HANDSHAKE = "new-handshake"
    ZERO_KEY_MATERIAL = "zero-key-material"
    PERSISTENT_KEEPALIVE = "persistent-keepalive"


class PeerTimers:
    """The timers of one peer. Times are seconds on the caller's monotonic clock."""

    def __init__(self, *, rng: JitterSource | None = None, persistent_keepalive_interval: int = 0,
                 label: str = "peer") -> None:
        if persistent_keepalive_interval < 0:
            raise ValueError("persistent_keepalive_interval must be >= 0 seconds")
        self._rng: JitterSource = rng if rng is not None else random.Random()
        #: Seconds between keepalives when nothing else is sent; 0 turns it off.
        self.persistent_keepalive_interval = persistent_keepalive_interval
        self._label = label
        self._deadlines: dict[_Timer, float] = {}
        self._need_another_keepalive = False
        self._handshake_attempts = 0
        self._sent_last_minute_handshake = False
        self._last_initiation: float | None = None

    # -- inspection ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time at which ``fire`` has something to do, or None if no timer runs."""
        return min(self._deadlines.values(), default=None)

    @property
    def handshake_attempts(self) -> int:
        """Retransmissions of the current initiation so far (0 after a fresh request)."""
        return self._handshake_attempts

    # -- events ----------------------------------------------------------------------------

    def data_sent(self, now: float) -> None:
        """A transport packet carrying data was sent: expect to hear back (anything) within
        KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, or start a new handshake."""
        if _Timer.NEW_HANDSHAKE not in self._deadlines:
            self._deadlines[_Timer.NEW_HANDSHAKE] = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def data_received(self, now: float) -> None:
        """A transport packet carrying data authenticated: owe the peer a keepalive within
        KEEPALIVE_TIMEOUT unless something else is sent first."""
        if _Timer.SEND_KEEPALIVE not in self._deadlines:
            self._deadlines[_Timer.SEND_KEEPALIVE] = now + KEEPALIVE_TIMEOUT
        else:
            self._need_another_keepalive = True

    def any_authenticated_packet_sent(self, now: float) -> None:
        """Any authenticated packet (data, keepalive, handshake) was sent: no keepalive owed."""
        self._deadlines.pop(_Timer.SEND_KEEPALIVE, None)

    def any_authenticated_packet_received(self, now: float) -> None:
        """Any authenticated packet (data, keepalive, handshake) was received: the peer is alive."""
        self._deadlines.pop(_Timer.NEW_HANDSHAKE, None)

    def any_authenticated_packet_traversal(self, now: float) -> None:
        """An authenticated packet is about to be sent or was received: push the persistent
        keepalive back by its interval."""
        if self.persistent_keepalive_interval > 0:
            self._deadlines[_Timer.PERSISTENT_KEEPALIVE] = now + self.persistent_keepalive_interval

    def handshake_initiated(self, now: float) -> None:
        """An initiation was sent: retransmit it after REKEY_TIMEOUT + jitter without a response."""
        self._deadlines[_Timer.RETRANSMIT_HANDSHAKE] = now + REKEY_TIMEOUT + self._jitter()

    def handshake_complete(self, now: float) -> None:
        """A response was consumed (initiator) or the first data arrived on the new keypair
        (responder): stop retransmitting and allow another last-minute handshake later."""
        self._deadlines.pop(_Timer.RETRANSMIT_HANDSHAKE, None)
        self._handshake_attempts = 0
        self._sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        """New transport keys exist: zero all key material 3 * REJECT_AFTER_TIME from now
        unless another session replaces them first."""
        self._deadlines[_Timer.ZERO_KEY_MATERIAL] = now + 3 * REJECT_AFTER_TIME

    def stop(self) -> None:
        """The peer is removed or the device goes down: cancel every timer."""
        self._deadlines.clear()
        self._need_another_keepalive = False

    # -- decisions -------------------------------------------------------------------------

    def request_handshake(self, now: float) -> bool:
        """A fresh (not retransmitted) initiation is wanted. Restarts the retry count; returns
        True, and claims the slot, only if no initiation was sent in the last REKEY_TIMEOUT."""
        self._handshake_attempts = 0
        return self._claim_initiation(now)

    def last_minute_handshake_due(self, *, created: float, is_initiator: bool, now: float) -> bool:
        """``should_initiate_on_receive`` for the current keypair, answered True at most once
        until the next ``handshake_complete`` (receiving is frequent; one try is enough)."""
        if self._sent_last_minute_handshake:
            return False
        if should_initiate_on_receive(created=created, is_initiator=is_initiator, now=now):
            self._sent_last_minute_handshake = True
            return True
        return False

    def fire(self, now: float) -> list[Action]:
        """Run every timer whose deadline is at or before ``now``, earliest first, and return
        the actions they ask for (each at most once)."""
        actions: list[Action] = []
        due = sorted((d, t.value, t) for t, d in self._deadlines.items() if d <= now)
        for _, _, timer in due:
            deadline = self._deadlines.get(timer)
            if deadline is None or deadline > now:
                continue  # cancelled or re-armed by a timer that ran before it
            del self._deadlines[timer]
            for action in self._expire(timer, now):
                if action not in actions:
                    actions.append(action)
        return actions

    # -- internals -------------------------------------------------------------------------

    def _expire(self, timer: _Timer, now: float) -> list[Action]:
        if timer is _Timer.RETRANSMIT_HANDSHAKE:
            return self._expired_retransmit_handshake(now)
        if timer is _Timer.SEND_KEEPALIVE:
            if self._need_another_keepalive:
                self._need_another_keepalive = False
                self._deadlines[_Timer.SEND_KEEPALIVE] = now + KEEPALIVE_TIMEOUT
            return [Action.SEND_KEEPALIVE]
        if timer is _Timer.NEW_HANDSHAKE:
            log.debug("%s: retrying handshake, nothing heard for %.0f s after sending data",
                      self._label, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)
            return [Action.SEND_HANDSHAKE_INITIATION] if self.request_handshake(now) else []
        if timer is _Timer.ZERO_KEY_MATERIAL:
            log.debug("%s: removing all keys, no new session for %.0f s", self._label, 3 * REJECT_AFTER_TIME)
            return [Action.ZERO_KEYS]
        return [Action.SEND_KEEPALIVE] if self.persistent_keepalive_interval > 0 else []

    def _expired_retransmit_handshake(self, now: float) -> list[Action]:
        if self._handshake_attempts > MAX_TIMER_HANDSHAKES:
            log.debug("%s: handshake did not complete after %d attempts, giving up",
                      self._label, MAX_TIMER_HANDSHAKES + 2)
            self._deadlines.pop(_Timer.SEND_KEEPALIVE, None)
            self._deadlines.setdefault(_Timer.ZERO_KEY_MATERIAL, now + 3 * REJECT_AFTER_TIME)
            return [Action.GIVE_UP]
        self._handshake_attempts += 1
        log.debug("%s: handshake did not complete after %.0f s, retrying (try %d)",
                  self._label, REKEY_TIMEOUT, self._handshake_attempts + 1)
        return [Action.SEND_HANDSHAKE_INITIATION] if self._claim_initiation(now) else []

    def _claim_initiation(self, now: float) -> bool:
        if self._last_initiation is not None and now - self._last_initiation < REKEY_TIMEOUT:
            return False
        self._last_initiation = now
        return True

    def _jitter(self) -> float:
        return self._rng.randrange(REKEY_TIMEOUT_JITTER_MAX_MS) / 1000.0
