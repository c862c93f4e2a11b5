"""overlay.keypairs: nonces never reused (also across threads), expiry at the exact limits,
the previous/current/next rotation of initiator and responder, and the index table."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.keypairs import (
    IndexTable,
    KeyMaterialZeroed,
    Keypair,
    KeySlots,
    NonceExhausted,
)
from overlay.timers import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME

SEND_KEY = bytes(range(0xA0, 0xC0))
RECEIVE_KEY = bytes(range(0x40, 0x60))
EPS = 1e-6


class AcceptAll:
    def validate(self, counter: int) -> bool:
        return True


def make_keypair(local_index: int = 1, *, created: float = 0.0, is_initiator: bool = True) -> Keypair:
    return Keypair(send_key=SEND_KEY, receive_key=RECEIVE_KEY, local_index=local_index,
                   remote_index=0xFFFF_FFFF, created=created, is_initiator=is_initiator,
                   replay_filter=AcceptAll())


def near_exhaustion(keypair: Keypair, left: int) -> Keypair:
    """Skip the keypair ahead to ``left`` nonces before REJECT_AFTER_MESSAGES (2^64 sends would
    take a while)."""
    keypair._send_counter = REJECT_AFTER_MESSAGES - left
    return keypair


# -- Keypair ----------------------------------------------------------------------------------


def test_repr_never_shows_keys() -> None:
    text = repr(make_keypair())
    for key in (SEND_KEY, RECEIVE_KEY):
        assert key.hex() not in text
        assert repr(key)[2:30] not in text
    assert "0x00000001" in text and "initiator" in text


@pytest.mark.parametrize(
    "overrides",
    [
        {"send_key": b"\x00" * 31},
        {"receive_key": b"\x00" * 33},
        {"local_index": -1},
        {"remote_index": 2**32},
    ],
)
def test_bad_keypair_fields_are_refused(overrides: dict[str, object]) -> None:
    fields: dict[str, object] = dict(send_key=SEND_KEY, receive_key=RECEIVE_KEY, local_index=0,
                                     remote_index=2**32 - 1, created=0.0, is_initiator=False,
                                     replay_filter=AcceptAll())
    with pytest.raises(ValueError):
        Keypair(**{**fields, **overrides})  # type: ignore[arg-type]


def test_keys_are_readable_until_zeroed() -> None:
    keypair = make_keypair()
    assert (keypair.send_key, keypair.receive_key) == (SEND_KEY, RECEIVE_KEY)
    keypair.zero()
    keypair.zero()  # idempotent
    assert keypair.zeroed
    assert keypair._send_key == bytes(32) and keypair._receive_key == bytes(32)
    with pytest.raises(KeyMaterialZeroed):
        _ = keypair.send_key
    with pytest.raises(KeyMaterialZeroed):
        _ = keypair.receive_key
    with pytest.raises(NonceExhausted):
        keypair.next_nonce()
    assert not keypair.usable_for_sending(0.0) and not keypair.usable_for_receiving(0.0)


def test_nonces_count_up_from_zero() -> None:
    keypair = make_keypair()
    assert [keypair.next_nonce() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert keypair.send_counter == 5


def test_nonces_stop_just_below_reject_after_messages_and_stay_stopped() -> None:
    keypair = near_exhaustion(make_keypair(), 2)
    assert keypair.usable_for_sending(0.0)
    assert keypair.next_nonce() == REJECT_AFTER_MESSAGES - 2
    assert keypair.next_nonce() == REJECT_AFTER_MESSAGES - 1
    for _ in range(3):
        with pytest.raises(NonceExhausted):
            keypair.next_nonce()
    assert keypair.send_counter == REJECT_AFTER_MESSAGES
    assert not keypair.usable_for_sending(0.0)
    assert keypair.usable_for_receiving(0.0)  # receiving is bounded by the peer's counter


def _take_nonces(keypair: Keypair, threads: int, per_thread: int) -> list[int]:
    got: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(out: list[int]) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                out.append(keypair.next_nonce())
            except NonceExhausted:
                pass

    workers = [threading.Thread(target=work, args=(out,)) for out in got]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for out in got:
        assert out == sorted(out)  # each thread sees its own nonces increase
    return [n for out in got for n in out]


def test_no_nonce_is_handed_out_twice_across_threads() -> None:
    keypair = make_keypair()
    nonces = _take_nonces(keypair, threads=8, per_thread=2000)
    assert sorted(nonces) == list(range(8 * 2000))


def test_threads_racing_to_exhaustion_get_each_last_nonce_once() -> None:
    keypair = near_exhaustion(make_keypair(), 100)
    nonces = _take_nonces(keypair, threads=8, per_thread=50)
    assert sorted(nonces) == list(range(REJECT_AFTER_MESSAGES - 100, REJECT_AFTER_MESSAGES))


@settings(max_examples=50, deadline=None)
@given(left=st.integers(0, 40), ops=st.lists(st.sampled_from(["nonce", "zero"]), max_size=60))
def test_nonces_are_strictly_increasing_and_never_reach_the_limit(left: int, ops: list[str]) -> None:
    keypair = near_exhaustion(make_keypair(), left)
    handed: list[int] = []
    for op in ops:
        if op == "zero":
            keypair.zero()
            continue
        try:
            handed.append(keypair.next_nonce())
        except NonceExhausted:
            assert keypair.zeroed or len(handed) == left
    assert handed == sorted(set(handed))
    assert all(n < REJECT_AFTER_MESSAGES for n in handed)
    assert len(handed) <= left


@pytest.mark.parametrize(
    ("age", "sending", "receiving"),
    [
        (0.0, True, True),
        (REJECT_AFTER_TIME - EPS, True, True),
        (REJECT_AFTER_TIME, False, True),  # wireguard-go: send while age < 180, receive while <= 180
        (REJECT_AFTER_TIME + EPS, False, False),
    ],
)
def test_expiry_by_age(age: float, sending: bool, receiving: bool) -> None:
    keypair = make_keypair(created=500.0)
    assert keypair.usable_for_sending(500.0 + age) is sending
    assert keypair.usable_for_receiving(500.0 + age) is receiving


# -- KeySlots ---------------------------------------------------------------------------------


@pytest.fixture
def retired() -> list[Keypair]:
    return []


@pytest.fixture
def slots(retired: list[Keypair]) -> KeySlots:
    return KeySlots(on_retire=retired.append)


def _state(slots: KeySlots) -> tuple[Keypair | None, Keypair | None, Keypair | None]:
    return slots.previous, slots.current, slots.next


def test_initiator_installs_as_current_at_once(slots: KeySlots, retired: list[Keypair]) -> None:
    a, b, c = (make_keypair(i, is_initiator=True) for i in (1, 2, 3))
    slots.install(a)
    assert _state(slots) == (None, a, None)
    slots.install(b)
    assert _state(slots) == (a, b, None)
    slots.install(c)
    assert _state(slots) == (b, c, None)
    assert retired == [a] and a.zeroed and not b.zeroed


def test_responder_parks_next_until_data_arrives_on_it(slots: KeySlots, retired: list[Keypair]) -> None:
    old_previous, old_current = make_keypair(1), make_keypair(2)
    slots.install(old_previous)
    slots.install(old_current)
    new = make_keypair(3, is_initiator=False)
    slots.install(new)
    # Responder: previous dropped, keep sending on the old current until confirmation.
    assert _state(slots) == (None, old_current, new)
    assert retired == [old_previous]
    assert slots.current_for_sending(0.0) is old_current
    assert not slots.received_with(old_current)
    assert _state(slots) == (None, old_current, new)
    assert slots.received_with(new)
    assert _state(slots) == (old_current, new, None)
    assert slots.current_for_sending(0.0) is new
    assert not slots.received_with(new)  # only the first packet promotes
    assert retired == [old_previous]


def test_promotion_retires_the_previous(slots: KeySlots, retired: list[Keypair]) -> None:
    first, second = make_keypair(1, is_initiator=False), make_keypair(2, is_initiator=False)
    slots.install(first)
    assert slots.current_for_sending(0.0) is None  # nothing confirmed yet
    assert slots.received_with(first)
    assert _state(slots) == (None, first, None)
    slots.install(second)
    assert slots.received_with(second)
    third = make_keypair(3, is_initiator=False)
    slots.install(third)
    assert slots.received_with(third)
    assert _state(slots) == (second, third, None)
    assert retired == [first]


def test_responder_replaces_an_unconfirmed_next(slots: KeySlots, retired: list[Keypair]) -> None:
    current = make_keypair(1)
    slots.install(current)
    stale, fresh = make_keypair(2, is_initiator=False), make_keypair(3, is_initiator=False)
    slots.install(stale)
    slots.install(fresh)
    assert _state(slots) == (None, current, fresh)
    assert retired == [stale] and stale.zeroed
    assert not slots.received_with(stale)


def test_initiator_install_over_an_unconfirmed_next(slots: KeySlots, retired: list[Keypair]) -> None:
    """wireguard-go: the unconfirmed next is newer than current, so it becomes previous and
    both the old previous and the old current go."""
    previous, current = make_keypair(1), make_keypair(2)
    slots.install(previous)
    slots.install(current)
    parked = make_keypair(3, is_initiator=False)
    slots.install(parked)  # drops previous
    mine = make_keypair(4, is_initiator=True)
    slots.install(mine)
    assert _state(slots) == (parked, mine, None)
    assert retired == [previous, current]


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        ("fresh", True),
        ("age", False),
        ("nonces", False),
        ("zeroed", False),
    ],
)
def test_current_for_sending_refuses_an_expired_keypair(slots: KeySlots, spoil: str, expected: bool) -> None:
    keypair = make_keypair(created=0.0)
    slots.install(keypair)
    now = REJECT_AFTER_TIME if spoil == "age" else 0.0
    if spoil == "nonces":
        near_exhaustion(keypair, 0)
    elif spoil == "zeroed":
        keypair.zero()
    assert (slots.current_for_sending(now) is keypair) is expected


def test_clear_retires_everything(slots: KeySlots, retired: list[Keypair]) -> None:
    a, b, c = make_keypair(1), make_keypair(2), make_keypair(3, is_initiator=False)
    for keypair in (a, b, c):
        slots.install(keypair)
    slots.clear()
    assert _state(slots) == (None, None, None)
    assert sorted(k.local_index for k in retired) == [1, 2, 3]
    assert all(k.zeroed for k in retired)
    assert "send_key" not in repr(slots) and SEND_KEY.hex() not in repr(slots)


def test_only_one_thread_promotes_next(slots: KeySlots) -> None:
    new = make_keypair(2, is_initiator=False)
    slots.install(make_keypair(1))
    slots.install(new)
    results: list[bool] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        results.append(slots.received_with(new))

    workers = [threading.Thread(target=work) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results.count(True) == 1
    assert slots.current is new


# -- IndexTable --------------------------------------------------------------------------------


class ScriptedBits:
    def __init__(self, values: list[int]) -> None:
        self._values: Iterator[int] = iter(values)
        self.asked: list[int] = []

    def getrandbits(self, k: int, /) -> int:
        self.asked.append(k)
        return next(self._values)


def test_index_table_allocates_unused_random_indices_and_swaps_to_keypairs() -> None:
    rng = ScriptedBits([7, 7, 7, 9])
    table: IndexTable[str, str] = IndexTable(rng=rng)
    assert table.new_index_for_handshake("peer-a", "hs-a") == 7
    assert table.new_index_for_handshake("peer-b", "hs-b") == 9  # 7 is taken: drawn again
    assert rng.asked == [32, 32, 32, 32]
    entry = table.lookup(7)
    assert entry is not None and (entry.peer, entry.handshake, entry.keypair) == ("peer-a", "hs-a", None)

    keypair = make_keypair(7)
    assert table.swap_index_for_keypair(keypair)
    entry = table.lookup(7)
    assert entry is not None and (entry.peer, entry.handshake, entry.keypair) == ("peer-a", None, keypair)
    assert not table.swap_index_for_keypair(make_keypair(8))  # never allocated
    assert table.lookup(8) is None

    table.delete(7)
    table.delete(7)
    assert table.lookup(7) is None and len(table) == 1


def test_index_table_gives_up_on_a_broken_rng() -> None:
    table: IndexTable[str, str] = IndexTable(rng=ScriptedBits([5] * 2000))
    table.new_index_for_handshake("p", "h")
    with pytest.raises(RuntimeError):
        table.new_index_for_handshake("p", "h")


def test_default_rng_draws_32_bit_indices() -> None:
    table: IndexTable[int, int] = IndexTable()
    indices = {table.new_index_for_handshake(0, i) for i in range(200)}
    assert len(indices) == 200 and all(0 <= i < 2**32 for i in indices)


def test_retired_keypairs_leave_the_index_table() -> None:
    """The wiring the device uses: KeySlots retires, IndexTable forgets."""
    table: IndexTable[str, str] = IndexTable(rng=ScriptedBits([1, 2, 3]))
    slots = KeySlots(on_retire=lambda keypair: table.delete(keypair.local_index))
    for _ in range(3):
        index = table.new_index_for_handshake("peer", "hs")
        keypair = make_keypair(index, is_initiator=True)
        table.swap_index_for_keypair(keypair)
        slots.install(keypair)
    assert table.lookup(1) is None
    for index in (2, 3):
        entry = table.lookup(index)
        assert entry is not None and entry.keypair is not None and entry.keypair.local_index == index
