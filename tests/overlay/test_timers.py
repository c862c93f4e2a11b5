"""overlay.timers: every WireGuard timer rule on an injected clock, as tables of events and
expected actions; retransmission with jitter bounds and giving up; the rekey predicates at
their exact thresholds."""

from __future__ import annotations

import random

import pytest

from overlay.timers import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX_MS,
    Action,
    PeerTimers,
    should_initiate_on_receive,
    should_initiate_on_send,
)

HS = Action.SEND_HANDSHAKE_INITIATION
KA = Action.SEND_KEEPALIVE
ZERO = Action.ZERO_KEYS
GIVE_UP = Action.GIVE_UP


class FixedJitter:
    """An RNG whose randrange always answers ``value`` and remembers the bounds it was asked."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.bounds: list[int] = []

    def randrange(self, start: int, /) -> int:
        self.bounds.append(start)
        return self.value


def test_spec_constants() -> None:
    assert REKEY_AFTER_MESSAGES == 1 << 60
    assert (REKEY_AFTER_TIME, REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME) == (120.0, 180.0, 90.0)
    assert (REKEY_TIMEOUT, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX_MS) == (5.0, 10.0, 334)
    assert MAX_TIMER_HANDSHAKES == 18  # wireguard-go: RekeyAttemptTime / RekeyTimeout


# -- the rekey predicates, at and one step past each threshold -------------------------------

T0 = 1000.0
EPS = 1e-6


@pytest.mark.parametrize(
    ("age", "send_counter", "is_initiator", "expected"),
    [
        (0.0, 0, True, False),
        (0.0, REKEY_AFTER_MESSAGES - 1, False, False),
        (0.0, REKEY_AFTER_MESSAGES, False, False),  # "exceeds": not at the threshold itself
        (0.0, REKEY_AFTER_MESSAGES + 1, False, True),
        (0.0, REKEY_AFTER_MESSAGES + 1, True, True),
        (REKEY_AFTER_TIME - EPS, 0, True, False),
        (REKEY_AFTER_TIME, 0, True, False),  # "older than"
        (REKEY_AFTER_TIME + EPS, 0, True, True),
        (REKEY_AFTER_TIME + EPS, 0, False, False),  # only the initiator rekeys on age
        (REJECT_AFTER_TIME - EPS, 0, False, False),
    ],
)
def test_should_initiate_on_send(age: float, send_counter: int, is_initiator: bool, expected: bool) -> None:
    assert should_initiate_on_send(created=T0, send_counter=send_counter, is_initiator=is_initiator,
                                   now=T0 + age) is expected


LAST_MINUTE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT


@pytest.mark.parametrize(
    ("age", "is_initiator", "expected"),
    [
        (0.0, True, False),
        (LAST_MINUTE - EPS, True, False),
        (LAST_MINUTE, True, False),
        (LAST_MINUTE + EPS, True, True),
        (LAST_MINUTE + EPS, False, False),
        (REJECT_AFTER_TIME, False, False),
    ],
)
def test_should_initiate_on_receive(age: float, is_initiator: bool, expected: bool) -> None:
    assert LAST_MINUTE == 165.0
    assert should_initiate_on_receive(created=T0, is_initiator=is_initiator, now=T0 + age) is expected


def test_last_minute_handshake_answers_once_until_handshake_complete() -> None:
    timers = PeerTimers(rng=FixedJitter())
    old = dict(created=0.0, is_initiator=True)
    assert not timers.last_minute_handshake_due(**old, now=LAST_MINUTE)
    assert timers.last_minute_handshake_due(**old, now=LAST_MINUTE + 1)
    assert not timers.last_minute_handshake_due(**old, now=LAST_MINUTE + 2)
    timers.handshake_complete(LAST_MINUTE + 3)
    assert timers.last_minute_handshake_due(**old, now=LAST_MINUTE + 4)
    assert not PeerTimers().last_minute_handshake_due(created=0.0, is_initiator=False, now=179.0)


# -- the timers, as scripts: (time, event) lines and (time, "fire", expected actions) lines ---

Step = tuple  # (t, event_name) | (t, "fire", [actions]) | (t, "deadline", expected)

SCRIPTS: dict[str, list[Step]] = {
    "passive keepalive after KEEPALIVE_TIMEOUT of receiving without sending": [
        (0, "data_received"),
        (0, "deadline", 10.0),
        (10 - EPS, "fire", []),
        (10, "fire", [KA]),
        (10, "deadline", None),
    ],
    "any authenticated packet sent cancels the owed keepalive": [
        (0, "data_received"),
        (3, "any_authenticated_packet_sent"),
        (10, "fire", []),
        (10, "deadline", None),
    ],
    "a second receive while a keepalive is owed does not postpone it but asks for another": [
        (0, "data_received"),
        (5, "data_received"),
        (5, "deadline", 10.0),
        (10, "fire", [KA]),
        (10, "deadline", 20.0),
        (20, "fire", [KA]),
        (20, "deadline", None),
    ],
    "new handshake after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT of sending without hearing back": [
        (0, "data_sent"),
        (0, "deadline", 15.0),
        (14, "data_sent"),  # already pending: not pushed back
        (14, "deadline", 15.0),
        (15 - EPS, "fire", []),
        (15, "fire", [HS]),
        (15, "deadline", None),
    ],
    "any authenticated packet received cancels the new-handshake timer": [
        (0, "data_sent"),
        (14, "any_authenticated_packet_received"),
        (15, "fire", []),
        (15, "deadline", None),
    ],
    "the new-handshake timer respects the one-initiation-per-REKEY_TIMEOUT limit": [
        (12, "request_handshake"),
        (0, "data_sent"),
        (15, "fire", []),
    ],
    "retransmit the initiation after REKEY_TIMEOUT without a response": [
        (0, "request_handshake"),
        (0, "handshake_initiated"),
        (0, "deadline", 5.0),
        (5 - EPS, "fire", []),
        (5, "fire", [HS]),
    ],
    "handshake_complete stops retransmission": [
        (0, "request_handshake"),
        (0, "handshake_initiated"),
        (4, "handshake_complete"),
        (5, "fire", []),
        (5, "deadline", None),
    ],
    "zero all key material 3 * REJECT_AFTER_TIME after the last session": [
        (0, "session_derived"),
        (0, "deadline", 540.0),
        (540 - EPS, "fire", []),
        (540, "fire", [ZERO]),
        (540, "deadline", None),
    ],
    "a new session postpones zeroing": [
        (0, "session_derived"),
        (100, "session_derived"),
        (540, "fire", []),
        (640, "fire", [ZERO]),
    ],
    "persistent keepalive after the interval of no authenticated traffic": [
        (0, "interval=25"),
        (0, "any_authenticated_packet_traversal"),
        (10, "any_authenticated_packet_traversal"),
        (35 - EPS, "fire", []),
        (35, "fire", [KA]),
    ],
    "persistent keepalive off: traversal arms nothing": [
        (0, "any_authenticated_packet_traversal"),
        (0, "deadline", None),
    ],
    "persistent keepalive turned off while armed: the timer fires quietly": [
        (0, "interval=25"),
        (0, "any_authenticated_packet_traversal"),
        (1, "interval=0"),
        (25, "fire", []),
    ],
    "a passive and a persistent keepalive due together give one keepalive": [
        (0, "interval=10"),
        (0, "data_received"),
        (0, "any_authenticated_packet_traversal"),
        (10, "fire", [KA]),
    ],
    "stop cancels every timer": [
        (0, "interval=25"),
        (0, "any_authenticated_packet_traversal"),
        (0, "data_received"),
        (0, "data_sent"),
        (0, "handshake_initiated"),
        (0, "session_derived"),
        (1, "stop"),
        (1, "deadline", None),
        (1000, "fire", []),
    ],
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_timer_script(name: str) -> None:
    timers = PeerTimers(rng=FixedJitter(0))
    for step in SCRIPTS[name]:
        t, what = float(step[0]), step[1]
        if what == "fire":
            assert timers.fire(t) == step[2], f"{name}: fire at {t}"
        elif what == "deadline":
            assert timers.next_deadline() == step[2], f"{name}: deadline at {t}"
        elif what.startswith("interval="):
            timers.persistent_keepalive_interval = int(what.removeprefix("interval="))
        elif what == "stop":
            timers.stop()
        elif what == "request_handshake":
            assert timers.request_handshake(t)
        else:
            getattr(timers, what)(t)


def test_request_handshake_is_rate_limited_to_one_per_rekey_timeout() -> None:
    timers = PeerTimers(rng=FixedJitter())
    assert timers.request_handshake(0.0)
    assert not timers.request_handshake(REKEY_TIMEOUT - EPS)
    assert timers.request_handshake(REKEY_TIMEOUT)


def test_fire_runs_earlier_timers_first_and_skips_what_they_cancelled() -> None:
    """Giving up (due at 100.x) cancels the owed keepalive that falls due later in the same
    fire call, as wireguard-go's expiredRetransmitHandshake does."""
    timers = PeerTimers(rng=FixedJitter())
    _retransmit_until_give_up(timers, start=0.0, stop_before_give_up=True)
    give_up_at = timers.next_deadline()
    assert give_up_at is not None
    timers.data_received(give_up_at - KEEPALIVE_TIMEOUT + 1)  # keepalive due 1 s after give-up
    assert timers.fire(give_up_at + 2) == [GIVE_UP]


# -- retransmission, jitter, giving up --------------------------------------------------------


def _retransmit_until_give_up(timers: PeerTimers, *, start: float,
                              stop_before_give_up: bool = False) -> list[float]:
    """Drive a handshake nobody answers, as the device would; return the initiation times."""
    assert timers.request_handshake(start)
    timers.handshake_initiated(start)
    sent = [start]
    while True:
        deadline = timers.next_deadline()
        assert deadline is not None
        if stop_before_give_up and timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
            return sent
        actions = timers.fire(deadline)
        if actions == [GIVE_UP]:
            return sent
        assert actions == [HS]
        timers.handshake_initiated(deadline)
        sent.append(deadline)


@pytest.mark.parametrize("seed", range(5))
def test_retransmission_jitter_stays_in_bounds_and_gives_up_after_rekey_attempt_time(seed: int) -> None:
    rng = random.Random(seed)
    timers = PeerTimers(rng=rng)
    sent = _retransmit_until_give_up(timers, start=T0)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    max_gap = REKEY_TIMEOUT + (REKEY_TIMEOUT_JITTER_MAX_MS - 1) / 1000
    assert all(REKEY_TIMEOUT <= gap <= max_gap + EPS for gap in gaps)
    assert len(sent) == MAX_TIMER_HANDSHAKES + 2  # the first initiation and 19 retries
    assert sent[-1] - sent[0] >= REKEY_ATTEMPT_TIME  # retried for at least REKEY_ATTEMPT_TIME
    assert len(set(gaps)) > 1  # jitter really varies


def test_after_giving_up_keys_are_zeroed_later_and_new_data_starts_over() -> None:
    timers = PeerTimers(rng=FixedJitter())
    sent = _retransmit_until_give_up(timers, start=T0)
    give_up_at = sent[-1] + REKEY_TIMEOUT
    assert give_up_at - T0 == pytest.approx((MAX_TIMER_HANDSHAKES + 2) * REKEY_TIMEOUT)
    # After giving up, only the zeroing timer runs, 3 * REJECT_AFTER_TIME later.
    assert timers.next_deadline() == pytest.approx(give_up_at + 3 * REJECT_AFTER_TIME)
    assert timers.fire(give_up_at + 3 * REJECT_AFTER_TIME) == [ZERO]
    assert timers.request_handshake(give_up_at + 600)
    assert timers.handshake_attempts == 0


def test_giving_up_keeps_an_already_pending_zeroing_deadline() -> None:
    timers = PeerTimers(rng=FixedJitter())
    timers.session_derived(T0)
    _retransmit_until_give_up(timers, start=T0)
    assert timers.next_deadline() == T0 + 3 * REJECT_AFTER_TIME


def test_giving_up_cancels_an_owed_keepalive() -> None:
    timers = PeerTimers(rng=FixedJitter())
    _retransmit_until_give_up(timers, start=0.0, stop_before_give_up=True)
    give_up_at = timers.next_deadline()
    assert give_up_at is not None
    timers.data_received(give_up_at - 1)
    assert timers.fire(give_up_at) == [GIVE_UP]
    assert timers.next_deadline() == give_up_at + 3 * REJECT_AFTER_TIME


def test_a_fresh_request_resets_the_retry_count() -> None:
    timers = PeerTimers(rng=FixedJitter())
    timers.request_handshake(0.0)
    timers.handshake_initiated(0.0)
    assert timers.fire(5.0) == [HS]
    timers.handshake_initiated(5.0)
    assert timers.handshake_attempts == 1
    assert timers.request_handshake(10.0)  # e.g. the new-handshake rule
    assert timers.handshake_attempts == 0


@pytest.mark.parametrize(
    ("jitter_ms", "event", "base"),
    [
        (0, "handshake_initiated", REKEY_TIMEOUT),
        (REKEY_TIMEOUT_JITTER_MAX_MS - 1, "handshake_initiated", REKEY_TIMEOUT),
        (0, "data_sent", KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
        (REKEY_TIMEOUT_JITTER_MAX_MS - 1, "data_sent", KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
    ],
)
def test_jitter_is_drawn_below_334_ms_and_added(jitter_ms: int, event: str, base: float) -> None:
    rng = FixedJitter(jitter_ms)
    timers = PeerTimers(rng=rng)
    getattr(timers, event)(T0)
    assert rng.bounds == [REKEY_TIMEOUT_JITTER_MAX_MS]
    assert timers.next_deadline() == T0 + base + jitter_ms / 1000


def test_negative_persistent_keepalive_is_refused() -> None:
    with pytest.raises(ValueError):
        PeerTimers(persistent_keepalive_interval=-1)
