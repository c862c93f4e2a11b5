"""The Store contract, checked against every backend in conftest.BACKENDS.

etcd is the reference: every expectation here was first observed on etcd 3.4, so a backend that
passes behaves like etcd where Corral (and Kubernetes before it) relies on it. The tests go in the
order of the interface: revisions and key metadata, range (prefix, pages, count, history),
compaction, transactions (compares, branches, atomicity), delete, watch, status, concurrency,
member loss.

Tests share a server per backend, so they never assume an absolute revision: they write under
their own ``prefix`` and reason about revisions relative to their own writes. Tables are lists
of ``pytest.param`` with ids, read top to bottom like a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from raftstore.store import (
    Compacted,
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    Event,
    EventType,
    FutureRevision,
    Get,
    InvalidRequest,
    KeyValue,
    Op,
    Put,
    Store,
    StoreError,
    Unavailable,
)

if TYPE_CHECKING:
    from conftest import MemberControl

T = TypeVar("T")

EVENT_WAIT_S = 2.0
PROGRESS_WAIT_S = 3.0
PROGRESS_INTERVAL_S = 0.2
FAILOVER_WAIT_S = 10.0
CAS_WORKERS = 16

EQ = CompareResult.EQUAL
NE = CompareResult.NOT_EQUAL
LT = CompareResult.LESS
GT = CompareResult.GREATER
MOD = CompareTarget.MOD
CREATE = CompareTarget.CREATE
VERSION = CompareTarget.VERSION
VALUE = CompareTarget.VALUE


# -- helpers ---------------------------------------------------------------------------------


async def current_revision(store: Store, prefix: str) -> int:
    return (await store.get(prefix + "\x00probe"))[1]


async def next_change(watch: AsyncIterator[Event], timeout: float = EVENT_WAIT_S) -> Event:
    """The next PUT/DELETE, skipping PROGRESS events."""

    async def first() -> Event:
        async for event in watch:
            if event.type is not EventType.PROGRESS:
                return event
        raise AssertionError("watch ended")

    return await asyncio.wait_for(first(), timeout)


async def changes(watch: AsyncIterator[Event], n: int) -> list[Event]:
    return [await next_change(watch) for _ in range(n)]


async def until_progress(watch: AsyncIterator[Event], n: int) -> tuple[list[Event], Event]:
    """Everything up to the ``n``th PROGRESS event, and that event."""
    seen: list[Event] = []
    async for event in watch:
        if event.type is EventType.PROGRESS:
            n -= 1
            if n == 0:
                return seen, event
        seen.append(event)
    raise AssertionError("watch ended")


@asynccontextmanager
async def watching(
    store: Store, prefix: str, **options: Any
) -> AsyncIterator[AsyncIterator[Event]]:
    """``store.watch``, closed at the end: an abandoned stream would hold a connection."""
    watch = store.watch(prefix, **options)
    try:
        yield watch
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()


def summary(events: Sequence[Event], prefix: str) -> list[tuple[str, str, int]]:
    """(type, key without prefix, revision) per event: what a table can spell out."""
    return [
        (e.type.value, e.kv.key.removeprefix(prefix) if e.kv else "", e.revision) for e in events
    ]


def meta(kv: KeyValue | None) -> tuple[bytes, int, int, int] | None:
    """(value, create_revision, mod_revision, version), or None for a missing key."""
    return None if kv is None else (kv.value, kv.create_revision, kv.mod_revision, kv.version)


# -- revisions and key metadata --------------------------------------------------------------

# (txn shape, revision delta). The store holds "a" before each case; "missing" never exists.
REVISION_CASES = [
    pytest.param([], [Put("new", b"1")], 1, id="put"),
    pytest.param([], [Put("new", b"1"), Put("new2", b"2")], 1, id="two-puts-one-revision"),
    pytest.param([], [Put("a", b"same")], 1, id="overwrite-same-value"),
    pytest.param([], [Delete("a")], 1, id="delete-existing"),
    pytest.param([], [Delete("missing")], 0, id="delete-missing"),
    pytest.param([], [Delete("missing/", prefix=True)], 0, id="delete-missing-prefix"),
    pytest.param([], [Put("new", b"1"), Delete("missing")], 1, id="put-and-delete-missing"),
    pytest.param([], [Get("a")], 0, id="read-only"),
    pytest.param([], [], 0, id="empty"),
    pytest.param([Compare.absent("a")], [Put("new", b"1")], 0, id="failed-compare-no-ops"),
]


@pytest.mark.parametrize(("compares", "ops", "delta"), REVISION_CASES)
async def test_one_revision_per_write_txn(
    store: Store, prefix: str, compares: list[Compare], ops: list[Op], delta: int
) -> None:
    await store.put(prefix + "a", b"same")
    before = await current_revision(store, prefix)

    result = await store.txn(
        [Compare(prefix + c.key, c.target, c.result, c.value) for c in compares],
        [_prefixed(op, prefix) for op in ops],
    )

    assert result.revision == before + delta
    assert await current_revision(store, prefix) == before + delta


def _prefixed(op: Op, prefix: str) -> Op:
    if isinstance(op, Put):
        return Put(prefix + op.key, op.value)
    if isinstance(op, Delete):
        return Delete(prefix + op.key, op.prefix)
    return Get(prefix + op.key)


async def test_key_metadata_through_put_put_delete_put(store: Store, prefix: str) -> None:
    key = prefix + "k"
    r1 = await store.put(key, b"v1")
    r2 = await store.put(key, b"v2")
    r3, deleted = await store.delete(key)
    r4 = await store.put(key, b"v3")

    assert (r2, r3, r4) == (r1 + 1, r1 + 2, r1 + 3)
    assert deleted == 1
    history = [  # (revision, what a read at that revision sees)
        (r1, (b"v1", r1, r1, 1)),
        (r2, (b"v2", r1, r2, 2)),
        (r3, None),
        (r4, (b"v3", r4, r4, 1)),  # re-created: a new life, version restarts at 1
    ]
    for revision, expected in history:
        page = await store.range(key, revision=revision)
        assert meta(page.kvs[0] if page.kvs else None) == expected, f"at revision {revision}"
    kv, read_at = await store.get(key)
    assert meta(kv) == (b"v3", r4, r4, 1)
    assert read_at == r4


async def test_get_missing_key(store: Store, prefix: str) -> None:
    last = await store.put(prefix + "other", b"x")
    assert await store.get(prefix + "missing") == (None, last)


async def test_put_returns_revision_and_get_reads_it(store: Store, prefix: str) -> None:
    revision = await store.put(prefix + "k", b"\x00\xffbinary")
    kv, read_at = await store.get(prefix + "k")
    assert kv == KeyValue(prefix + "k", b"\x00\xffbinary", revision, revision, 1)
    assert read_at == revision


async def test_empty_value_is_a_value(store: Store, prefix: str) -> None:
    revision = await store.put(prefix + "k", b"")
    kv, _ = await store.get(prefix + "k")
    assert meta(kv) == (b"", revision, revision, 1)


async def test_serializable_reads_see_own_writes(store: Store, prefix: str) -> None:
    revision = await store.put(prefix + "k", b"v")
    kv, _ = await store.get(prefix + "k", serializable=True)
    page = await store.range(prefix, serializable=True)
    assert meta(kv) == (b"v", revision, revision, 1)
    assert [kv.key for kv in page.kvs] == [prefix + "k"]


# -- range -----------------------------------------------------------------------------------


async def test_range_prefix_in_key_order(store: Store, prefix: str) -> None:
    for name in ["a/2", "b/1", "a/1", "a", "a/", "ab", "a/3/deep", "a0"]:
        await store.put(prefix + name, name.encode())

    page = await store.range(prefix + "a/")

    assert [kv.key.removeprefix(prefix) for kv in page.kvs] == ["a/", "a/1", "a/2", "a/3/deep"]
    assert [kv.value for kv in page.kvs] == [b"a/", b"a/1", b"a/2", b"a/3/deep"]
    assert (page.count, page.more, page.continue_key) == (4, False, None)
    assert page.revision == await current_revision(store, prefix)


async def test_range_of_nothing(store: Store, prefix: str) -> None:
    page = await store.range(prefix + "none/")
    assert (page.kvs, page.count, page.more, page.continue_key) == ([], 0, False, None)


async def test_range_empty_prefix_means_every_key(store: Store, prefix: str) -> None:
    for name in ["x", "y"]:
        await store.put(prefix + name, b"1")
    page = await store.range("")
    ours = [kv.key for kv in page.kvs if kv.key.startswith(prefix)]
    assert ours == [prefix + "x", prefix + "y"]
    assert page.count == len(page.kvs) >= 2


async def test_range_limit_and_count(store: Store, prefix: str) -> None:
    for i in range(5):
        await store.put(f"{prefix}k{i}", b"v")
    page = await store.range(prefix, limit=2)
    assert [kv.key.removeprefix(prefix) for kv in page.kvs] == ["k0", "k1"]
    assert page.more
    assert page.count == 5  # the whole range, not this page
    whole = await store.range(prefix, limit=5)
    assert (len(whole.kvs), whole.more, whole.count, whole.continue_key) == (5, False, 5, None)


async def test_range_pages_at_a_pinned_revision(store: Store, prefix: str) -> None:
    for i in range(5):
        await store.put(f"{prefix}k{i}", str(i).encode())
    first = await store.range(prefix, limit=2)
    # Changes after the first page must not show in the later pages read at its revision.
    await store.put(prefix + "k2", b"changed")
    await store.delete(prefix + "k3")
    await store.put(prefix + "k9", b"new")

    pages = [first]
    while pages[-1].more:
        assert pages[-1].continue_key is not None
        pages.append(
            await store.range(
                prefix, limit=2, continue_key=pages[-1].continue_key, revision=first.revision
            )
        )

    # (keys, more, count): count runs from the page's start key to the end, as in etcd,
    # which is what Kubernetes reports as remainingItemCount + len(items).
    expected = [(["k0", "k1"], True, 5), (["k2", "k3"], True, 3), (["k4"], False, 1)]
    assert [
        ([kv.key.removeprefix(prefix) for kv in p.kvs], p.more, p.count) for p in pages
    ] == expected
    assert [kv.value for p in pages for kv in p.kvs] == [b"0", b"1", b"2", b"3", b"4"]
    head = await current_revision(store, prefix)
    assert [p.revision for p in pages] == [first.revision, head, head]  # etcd's header revision
    assert pages[-1].continue_key is None


async def test_range_at_past_revisions(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "a", b"1")
    r2 = await store.put(prefix + "a", b"2")
    r3 = await store.put(prefix + "b", b"1")
    r4, _ = await store.delete(prefix + "a")
    r5 = await store.put(prefix + "c", b"1")

    table = [  # revision -> {key: (value, create, mod, version)}
        (r1 - 1, {}),  # before anything of ours existed
        (r1, {"a": (b"1", r1, r1, 1)}),
        (r2, {"a": (b"2", r1, r2, 2)}),
        (r3, {"a": (b"2", r1, r2, 2), "b": (b"1", r3, r3, 1)}),
        (r4, {"b": (b"1", r3, r3, 1)}),  # a deleted
        (r5, {"b": (b"1", r3, r3, 1), "c": (b"1", r5, r5, 1)}),
    ]
    for revision, expected in table:
        page = await store.range(prefix, revision=revision)
        seen = {kv.key.removeprefix(prefix): meta(kv) for kv in page.kvs}
        assert seen == expected, f"at revision {revision}"
        assert page.count == len(expected)
        assert page.revision == r5  # as in etcd: the store's revision, not the one asked for


async def test_range_future_revision(store: Store, prefix: str) -> None:
    now = await store.put(prefix + "k", b"v")
    for ahead in [1, 1000]:
        with pytest.raises(FutureRevision):
            await store.range(prefix, revision=now + ahead)


# -- compaction ------------------------------------------------------------------------------


async def test_range_at_compacted_revision(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "k", b"1")
    r2 = await store.put(prefix + "k", b"2")
    r3 = await store.put(prefix + "other", b"1")
    await store.compact(r2)

    with pytest.raises(Compacted) as caught:
        await store.range(prefix, revision=r1)
    assert (caught.value.compact_revision, caught.value.requested) == (r2, r1)

    # The compaction revision itself and everything later stay readable.
    at_r2 = await store.range(prefix, revision=r2)
    assert [meta(kv) for kv in at_r2.kvs] == [(b"2", r1, r2, 2)]
    assert len((await store.range(prefix, revision=r3)).kvs) == 2
    assert (await store.status()).compact_revision == r2


COMPACT_ERRORS = [  # compact at (revision relative to the last compaction / head) -> error
    pytest.param("compacted", 0, Compacted, id="same-revision-again"),
    pytest.param("compacted", -1, Compacted, id="older-revision"),
    pytest.param("head", 1, FutureRevision, id="future-revision"),
]


@pytest.mark.parametrize(("base", "offset", "error"), COMPACT_ERRORS)
async def test_compact_errors(
    store: Store, prefix: str, base: str, offset: int, error: type[StoreError]
) -> None:
    await store.put(prefix + "k", b"1")
    compacted = await store.put(prefix + "k", b"2")
    head = await store.put(prefix + "k", b"3")
    await store.compact(compacted)
    with pytest.raises(error):
        await store.compact((compacted if base == "compacted" else head) + offset)


async def test_compact_keeps_latest_values(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "k", b"1")
    r2 = await store.put(prefix + "k", b"2")
    await store.compact(await store.put(prefix + "x", b"x"))
    kv, _ = await store.get(prefix + "k")
    assert meta(kv) == (b"2", r1, r2, 2)


# -- transactions ----------------------------------------------------------------------------

# The store holds "k" written twice (create r1, mod r2, version 2, value b"v2"); "m" is missing.
# value: a callable of (r1, r2) for revision compares, else the literal.
COMPARE_CASES = [
    ("k", MOD, EQ, lambda r1, r2: r2, True),
    ("k", MOD, EQ, lambda r1, r2: r1, False),
    ("k", MOD, NE, lambda r1, r2: r1, True),
    ("k", MOD, NE, lambda r1, r2: r2, False),
    ("k", MOD, LT, lambda r1, r2: r2 + 1, True),
    ("k", MOD, LT, lambda r1, r2: r2, False),
    ("k", MOD, GT, lambda r1, r2: r1, True),
    ("k", MOD, GT, lambda r1, r2: r2, False),
    ("k", CREATE, EQ, lambda r1, r2: r1, True),
    ("k", CREATE, EQ, lambda r1, r2: 0, False),  # Compare.absent on an existing key
    ("k", VERSION, EQ, 2, True),
    ("k", VERSION, GT, 1, True),
    ("k", VERSION, GT, 2, False),
    ("k", VERSION, LT, 3, True),
    ("k", VALUE, EQ, b"v2", True),
    ("k", VALUE, EQ, b"v1", False),
    ("k", VALUE, NE, b"v1", True),
    ("k", VALUE, GT, b"v1", True),  # bytewise
    ("k", VALUE, LT, b"v3", True),
    ("k", VALUE, LT, b"v10", False),
    ("m", CREATE, EQ, 0, True),  # Compare.absent
    ("m", MOD, EQ, 0, True),  # a missing key has revisions and version 0
    ("m", VERSION, EQ, 0, True),
    ("m", MOD, LT, 1, True),
    ("m", VALUE, EQ, b"", False),  # etcd: any value compare on a missing key fails,
    ("m", VALUE, NE, b"x", False),  # even "not equal"
]


@pytest.mark.parametrize(
    ("key", "target", "result", "value", "holds"),
    [
        pytest.param(*case, id=f"{case[0]}-{case[1].name}-{case[2].name}-{i}")
        for i, case in enumerate(COMPARE_CASES)
    ],
)
async def test_txn_compare(
    store: Store,
    prefix: str,
    key: str,
    target: CompareTarget,
    result: CompareResult,
    value: int | bytes | Callable[[int, int], int],
    holds: bool,
) -> None:
    r1 = await store.put(prefix + "k", b"v1")
    r2 = await store.put(prefix + "k", b"v2")
    operand = value(r1, r2) if callable(value) else value

    outcome = await store.txn(
        [Compare(prefix + key, target, result, operand)],
        [Put(prefix + "ran", b"success")],
        [Put(prefix + "ran", b"failure")],
    )

    assert outcome.succeeded is holds
    assert outcome.revision == r2 + 1
    ran, _ = await store.get(prefix + "ran")
    assert ran is not None and ran.value == (b"success" if holds else b"failure")


async def test_txn_compare_helpers(store: Store, prefix: str) -> None:
    key = prefix + "k"
    created = await store.txn([Compare.absent(key)], [Put(key, b"1")])
    again = await store.txn([Compare.absent(key)], [Put(key, b"2")])
    updated = await store.txn([Compare.mod_revision(key, created.revision)], [Put(key, b"3")])
    stale = await store.txn([Compare.mod_revision(key, created.revision)], [Put(key, b"4")])

    outcomes = [created, again, updated, stale]
    assert [t.succeeded for t in outcomes] == [True, False, True, False]
    assert updated.revision == created.revision + 1
    assert stale.revision == updated.revision
    kv, _ = await store.get(key)
    assert kv is not None and kv.value == b"3"


async def test_txn_all_compares_must_hold(store: Store, prefix: str) -> None:
    await store.put(prefix + "k", b"v")
    outcome = await store.txn(
        [Compare(prefix + "k", VALUE, EQ, b"v"), Compare.absent(prefix + "k")],
        [Put(prefix + "ran", b"success")],
    )
    assert not outcome.succeeded
    assert outcome.results == ()
    assert (await store.get(prefix + "ran"))[0] is None


async def test_txn_branch_results(store: Store, prefix: str) -> None:
    r_a = await store.put(prefix + "a", b"old")
    r_b = await store.put(prefix + "b", b"b")
    r_c = await store.put(prefix + "c", b"c")

    ok = await store.txn(
        [Compare(prefix + "a", VALUE, EQ, b"old")],
        [
            Put(prefix + "a", b"new"),  # prev_kvs: the value it replaced
            Put(prefix + "fresh", b"f"),  # prev_kvs: nothing
            Get(prefix + "b"),
            Get(prefix + "missing"),
            Delete(prefix + "c"),  # prev_kvs: what it deleted
            Get(prefix + "a"),  # reads this txn's own write
        ],
        [Get(prefix + "b")],
    )
    rev = ok.revision
    assert ok.succeeded and rev == r_c + 1
    assert [([meta(kv) for kv in r.kvs], [meta(kv) for kv in r.prev_kvs]) for r in ok.results] == [
        ([], [(b"old", r_a, r_a, 1)]),
        ([], []),
        ([(b"b", r_b, r_b, 1)], []),
        ([], []),
        ([], [(b"c", r_c, r_c, 1)]),
        ([(b"new", r_a, rev, 2)], []),
    ]
    assert [r.deleted for r in ok.results] == [1, 0, 0, 0, 1, 0]

    failed = await store.txn(
        [Compare(prefix + "a", VALUE, EQ, b"old")],
        [Put(prefix + "a", b"never")],
        [Get(prefix + "a"), Get(prefix + "c")],
    )
    assert not failed.succeeded and failed.revision == rev
    assert [[meta(kv) for kv in r.kvs] for r in failed.results] == [[(b"new", r_a, rev, 2)], []]


async def test_txn_is_atomic_one_revision(store: Store, prefix: str) -> None:
    await store.put(prefix + "gone/1", b"1")
    await store.put(prefix + "gone/2", b"2")
    before = await store.put(prefix + "kept", b"k")

    result = await store.txn(
        [],
        [Put(prefix + "x", b"x"), Put(prefix + "y", b"y"), Delete(prefix + "gone/", prefix=True)],
    )

    assert result.revision == before + 1
    page = await store.range(prefix)
    assert [kv.key.removeprefix(prefix) for kv in page.kvs] == ["kept", "x", "y"]
    assert {kv.mod_revision for kv in page.kvs if kv.key != prefix + "kept"} == {result.revision}
    assert result.results[2].deleted == 2


async def test_failed_txn_writes_nothing(store: Store, prefix: str) -> None:
    before = await store.put(prefix + "k", b"v")
    result = await store.txn(
        [Compare.absent(prefix + "k")],
        [Put(prefix + "x", b"x"), Delete(prefix + "k")],
    )
    assert not result.succeeded and result.revision == before
    page = await store.range(prefix)
    assert [kv.key for kv in page.kvs] == [prefix + "k"]


INVALID_TXNS = [  # etcd rejects a branch that writes one key twice (put/put, put/delete)
    pytest.param([Put("k", b"1"), Put("k", b"2")], id="put-put-same-key"),
    pytest.param([Put("k", b"1"), Delete("k")], id="put-delete-same-key"),
    pytest.param([Delete("k"), Put("k", b"1")], id="delete-put-same-key"),
    pytest.param([Put("d/1", b"1"), Delete("d/", prefix=True)], id="put-inside-deleted-prefix"),
]


@pytest.mark.parametrize("ops", INVALID_TXNS)
async def test_invalid_txn_writes_nothing(store: Store, prefix: str, ops: list[Op]) -> None:
    before = await store.put(prefix + "k", b"v")
    with pytest.raises(InvalidRequest):
        await store.txn([], [_prefixed(op, prefix) for op in ops])
    assert await current_revision(store, prefix) == before


async def test_overlapping_deletes_are_allowed(store: Store, prefix: str) -> None:
    await store.put(prefix + "d/1", b"1")
    result = await store.txn([], [Delete(prefix + "d/", prefix=True), Delete(prefix + "d/1")])
    assert [r.deleted for r in result.results] == [1, 0]


async def test_empty_key_put_is_invalid(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.put("", b"v")


# -- delete ----------------------------------------------------------------------------------


async def test_delete_prefix(store: Store, prefix: str) -> None:
    for name in ["d/1", "d/2", "d/2/x", "d", "dz"]:
        await store.put(prefix + name, b"v")
    revision, deleted = await store.delete(prefix + "d/", prefix=True)
    assert deleted == 3
    page = await store.range(prefix)
    assert [kv.key.removeprefix(prefix) for kv in page.kvs] == ["d", "dz"]
    assert page.revision == revision


async def test_delete_missing_key(store: Store, prefix: str) -> None:
    before = await store.put(prefix + "k", b"v")
    assert await store.delete(prefix + "missing") == (before, 0)


# -- watch -----------------------------------------------------------------------------------


async def test_watch_from_now(store: Store, prefix: str) -> None:
    before = await store.put(prefix + "k", b"before")
    async with watching(store, prefix) as watch:
        first = asyncio.ensure_future(next_change(watch, timeout=5.0))
        # "Now" is when the watch is established, which the caller cannot observe: keep
        # writing until the watch reports one of the writes; it must not report older ones.
        writes: list[int] = []
        while not first.done() and len(writes) < 200:
            writes.append(await store.put(prefix + "k", f"w{len(writes)}".encode()))
            await asyncio.sleep(0.01)
        event = await first
        assert event.type is EventType.PUT
        assert event.revision > before and event.revision in writes
        # From there on, every write arrives, in order.
        later = [revision for revision in writes if revision > event.revision]
        assert [e.revision for e in await changes(watch, len(later))] == later


async def test_watch_replays_history_in_order(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "a", b"1")
    txn: list[Op] = [Put(prefix + "c", b"1"), Put(prefix + "b", b"1"), Delete(prefix + "a")]
    r2 = (await store.txn([], txn)).revision
    r3 = await store.put(prefix + "b", b"2")
    r4, _ = await store.delete(prefix, prefix=True)

    async with watching(store, prefix, start_revision=r1) as watch:
        events = await changes(watch, 7)

    # Events of one transaction share its revision and come in the order of its ops.
    assert summary(events, prefix) == [
        ("PUT", "a", r1),
        ("PUT", "c", r2),
        ("PUT", "b", r2),
        ("DELETE", "a", r2),
        ("PUT", "b", r3),
        ("DELETE", "b", r4),  # a prefix delete: one event per key, in key order
        ("DELETE", "c", r4),
    ]


async def test_watch_from_past_then_live(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "k", b"1")
    async with watching(store, prefix, start_revision=r1) as watch:
        assert summary([await next_change(watch)], prefix) == [("PUT", "k", r1)]
        r2 = await store.put(prefix + "k", b"2")
        assert summary([await next_change(watch)], prefix) == [("PUT", "k", r2)]


async def test_watch_prefix_filters(store: Store, prefix: str) -> None:
    start = await current_revision(store, prefix) + 1
    for name in ["x/1", "y/1", "x", "xz", "x/2/deep", "w"]:
        await store.put(prefix + name, b"v")
    async with watching(store, prefix + "x/", start_revision=start) as watch:
        events = await changes(watch, 2)
    assert [e.kv.key.removeprefix(prefix) for e in events if e.kv] == ["x/1", "x/2/deep"]


async def test_watch_event_kvs(store: Store, prefix: str) -> None:
    key = prefix + "k"
    r1 = await store.put(key, b"v1")
    r2 = await store.put(key, b"v2")
    r3, _ = await store.delete(key)

    async with watching(store, prefix, start_revision=r1) as watch:
        created, updated, deleted = await changes(watch, 3)

    table = [  # (event, type, revision, kv, prev_kv)
        (created, EventType.PUT, r1, (b"v1", r1, r1, 1), None),
        (updated, EventType.PUT, r2, (b"v2", r1, r2, 2), (b"v1", r1, r1, 1)),
        # DELETE: kv as etcd reports it (empty value, zero create_revision and version,
        # mod_revision the deletion), prev_kv what was deleted.
        (deleted, EventType.DELETE, r3, (b"", 0, r3, 0), (b"v2", r1, r2, 2)),
    ]
    for event, kind, revision, kv, prev_kv in table:
        assert (event.type, event.revision) == (kind, revision)
        assert event.kv is not None and event.kv.key == key
        assert meta(event.kv) == kv
        assert meta(event.prev_kv) == prev_kv
        if event.prev_kv is not None:
            assert event.prev_kv.key == key


async def test_watch_progress_when_idle(store: Store, prefix: str) -> None:
    last = await store.put(prefix + "k", b"v")
    async with watching(
        store, prefix, start_revision=last, progress_interval=PROGRESS_INTERVAL_S
    ) as watch:
        seen, progress = await asyncio.wait_for(until_progress(watch, 1), PROGRESS_WAIT_S)
    assert summary(seen, prefix) == [("PUT", "k", last)]
    assert progress.kv is None and progress.prev_kv is None
    assert progress.revision >= last  # everything up to it was delivered


async def test_watch_revisions_never_go_back(store: Store, prefix: str) -> None:
    start = await store.put(prefix + "k", b"0")
    async with watching(
        store, prefix, start_revision=start, progress_interval=PROGRESS_INTERVAL_S
    ) as watch:
        collector = asyncio.ensure_future(
            asyncio.wait_for(until_progress(watch, 2), 2 * PROGRESS_WAIT_S)
        )
        for i in range(1, 4):
            await store.put(prefix + "k", str(i).encode())
        seen, progress = await collector
    revisions = [e.revision for e in seen] + [progress.revision]
    assert revisions == sorted(revisions)
    changed = [e.revision for e in seen if e.type is not EventType.PROGRESS]
    assert changed == [start, start + 1, start + 2, start + 3]


async def test_watch_from_compacted_revision(store: Store, prefix: str) -> None:
    r1 = await store.put(prefix + "k", b"1")
    await store.put(prefix + "k", b"2")
    r3 = await store.put(prefix + "k", b"3")
    await store.compact(r3)

    async with watching(store, prefix, start_revision=r1) as watch:
        with pytest.raises(Compacted) as caught:
            await asyncio.wait_for(anext(watch), EVENT_WAIT_S)
    assert caught.value.compact_revision == r3
    assert caught.value.requested == r1

    # From the compaction revision on, history is still there.
    async with watching(store, prefix, start_revision=r3) as watch:
        assert summary([await next_change(watch)], prefix) == [("PUT", "k", r3)]


# -- status ----------------------------------------------------------------------------------


async def test_status(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "k", b"1")
    last = await store.put(prefix + "k", b"2")
    await store.txn([], [Get(prefix + "k")])  # reads do not move the revision
    await store.compact(first)

    status = await store.status()

    assert status.revision == last
    assert status.compact_revision == first
    names = [m.name for m in status.members]
    assert len(names) >= 1 and len(set(names)) == len(names)
    assert status.leader in names
    assert [m.name for m in status.members if m.is_leader] == [status.leader]
    assert status.term >= 1
    assert status.applied_index >= 1


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_compare_and_swap_increments(store: Store, prefix: str) -> None:
    key = prefix + "counter"
    await store.put(key, b"0")
    attempts = 0

    async def increment() -> None:
        nonlocal attempts
        kv, _ = await store.get(key)
        while True:
            attempts += 1
            assert kv is not None
            result = await store.txn(
                [Compare.mod_revision(key, kv.mod_revision)],
                [Put(key, str(int(kv.value) + 1).encode())],
                [Get(key)],  # on conflict, the current value comes back: no extra read
            )
            if result.succeeded:
                return
            kv = result.results[0].kvs[0]

    await asyncio.gather(*(increment() for _ in range(CAS_WORKERS)))

    kv, _ = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.version) == (str(CAS_WORKERS).encode(), CAS_WORKERS + 1)
    assert attempts >= CAS_WORKERS


# -- member loss -----------------------------------------------------------------------------


async def retry_unavailable(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """Retry while the store is Unavailable (what a client does during an election)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await call()
        except Unavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_survives_losing_the_first_member(
    store: Store, prefix: str, members: MemberControl
) -> None:
    start = await store.put(prefix + "k", b"before")
    loop = asyncio.get_running_loop()
    async with watching(store, prefix, start_revision=start) as watch:
        assert summary([await next_change(watch)], prefix) == [("PUT", "k", start)]
        await members.kill(0)
        try:
            deadline = loop.time() + FAILOVER_WAIT_S
            await retry_unavailable(lambda: store.put(prefix + "k", b"after"), deadline)
            kv, _ = await retry_unavailable(lambda: store.get(prefix + "k"), deadline)
            assert kv is not None and kv.value == b"after"
            # The watch resumes on another member and goes on from where it was.
            event = await next_change(watch, timeout=FAILOVER_WAIT_S)
            assert event.revision > start and event.kv is not None
            assert event.kv.value == b"after"
        finally:
            await members.restart(0)
    status = await retry_unavailable(store.status, loop.time() + FAILOVER_WAIT_S)
    assert status.leader is not None
    assert len(status.members) == members.size
