"""Property test: KVStateMachine against a deliberately naive model of etcd's MVCC semantics.

The model keeps a full copy of the keyspace at every revision and a flat event list, so each
answer (range at any revision, events since a revision, compare results) is computed the
obvious way. Hypothesis drives both with the same random commands and compares every answer.
"""

from __future__ import annotations

import pickle

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftstore.commands import check_command, pack_batch, unpack_batch
from raftstore.statemachine import KVStateMachine
from raftstore.store import Compacted, FutureRevision, InvalidRequest, TxnResult

KEYS = ["a", "a/1", "a/2", "a/10", "ab", "b", "b/1", "c"]
PREFIXES = ["", "a", "a/", "b", "c", "d"]
keys = st.sampled_from(KEYS)
values = st.binary(max_size=4)
targets = st.sampled_from(["mod_revision", "create_revision", "version", "value"])
results = st.sampled_from(["==", "!=", "<", ">"])


@st.composite
def compares(draw: st.DrawFn) -> tuple:
    target = draw(targets)
    value = draw(values) if target == "value" else draw(st.integers(0, 12))
    return (draw(keys), target, draw(results), value)


ops = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("del"), keys, st.booleans()),
    st.tuples(st.just("get"), keys),
)


class Model:
    """etcd's semantics the slow and obvious way."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.states: dict[int, dict[str, tuple]] = {1: {}}
        self.events: list[tuple] = []  # (revision, key, after | None, before | None)

    @property
    def data(self) -> dict[str, tuple]:
        return self.states[self.revision]

    def compare(self, key: str, target: str, result: str, value: object) -> bool:
        record = self.data.get(key)
        if record is None and target == "value":
            return False
        record = record or (b"", 0, 0, 0)
        field = {"value": 0, "create_revision": 1, "mod_revision": 2, "version": 3}[target]
        a = record[field]
        return {"==": a == value, "!=": a != value, "<": a < value, ">": a > value}[result]

    def txn(self, cmps: list, success: list, failure: list) -> tuple[bool, int]:
        ok = all(self.compare(*c) for c in cmps)
        rev = self.revision + 1
        data = dict(self.data)
        new_events = []
        for op in success if ok else failure:
            if op[0] == "put":
                prev = data.get(op[1])
                rec = (op[2], prev[1] if prev else rev, rev, prev[3] + 1 if prev else 1)
                data[op[1]] = rec
                new_events.append((rev, op[1], rec, prev))
            elif op[0] == "del":
                doomed = sorted(k for k in data if (k.startswith(op[1]) if op[2] else k == op[1]))
                for k in doomed:
                    new_events.append((rev, k, None, data.pop(k)))
        if new_events:
            self.revision = rev
            self.states[rev] = data
            self.events.extend(new_events)
        return ok, self.revision

    def range_at(self, prefix: str, revision: int) -> list[tuple]:
        return sorted((k, v) for k, v in self.states[revision].items() if k.startswith(prefix))


class StateMachineVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = KVStateMachine(history_limit=10_000)
        self.model = Model()

    def _apply(self, command: tuple) -> object:
        # Through the log encoding, as the Raft shell does.
        (decoded,) = unpack_batch(pack_batch([check_command(command)]))
        return self.sm.apply(decoded)

    @rule(cmps=st.lists(compares(), max_size=2), success=st.lists(ops, max_size=3),
          failure=st.lists(ops, max_size=2))
    def txn(self, cmps: list, success: list, failure: list) -> None:
        try:
            check_command(("txn", None, cmps, success, failure))
        except InvalidRequest:
            return  # duplicate keys in a branch: refused before the state machine, as etcd does
        result = self._apply(("txn", None, cmps, success, failure))
        assert isinstance(result, TxnResult)
        assert (result.succeeded, result.revision) == self.model.txn(cmps, success, failure)

    @rule(rev=st.integers(0, 40))
    def compact(self, rev: int) -> None:
        result = self._apply(("compact", None, rev))
        if rev > self.model.revision:
            assert isinstance(result, FutureRevision)
        elif rev <= self.model.compact_revision:
            assert isinstance(result, Compacted)
        else:
            assert isinstance(result, TxnResult)
            self.model.compact_revision = rev

    @rule(prefix=st.sampled_from(PREFIXES), back=st.integers(0, 10), limit=st.integers(0, 3))
    def range_at_revision(self, prefix: str, back: int, limit: int) -> None:
        rev = max(1, self.model.revision - back)
        try:
            got = self.sm.range(prefix, revision=rev, limit=limit)
        except Compacted:
            assert rev < self.model.compact_revision
            return
        assert rev >= self.model.compact_revision
        want = self.model.range_at(prefix, rev)
        page = want[:limit] if limit else want
        assert [(kv.key, (kv.value, kv.create_revision, kv.mod_revision, kv.version))
                for kv in got.kvs] == page
        assert got.count == len(want)
        assert got.more == (bool(limit) and len(want) > limit)

    @rule(prefix=st.sampled_from(PREFIXES), back=st.integers(0, 10))
    def events_since(self, prefix: str, back: int) -> None:
        rev = max(1, self.model.revision - back)
        try:
            got = list(self.sm.events_since(rev, prefix))
        except Compacted:
            assert rev < self.model.compact_revision
            return
        want = [e for e in self.model.events if e[0] >= rev and e[1].startswith(prefix)]
        assert [(e.revision, e.kv.key, e.type.value) for e in got] == [
            (r, k, "PUT" if after else "DELETE") for r, k, after, _ in want
        ]
        for event, (_, _, after, before) in zip(got, want):
            if after:
                assert (event.kv.value, event.kv.create_revision, event.kv.version) == (
                    after[0], after[1], after[3])
            if before:
                assert event.prev_kv is not None and event.prev_kv.mod_revision == before[2]
            else:
                assert event.prev_kv is None

    @precondition(lambda self: self.model.revision > 1)
    @rule()
    def snapshot_round_trip(self) -> None:
        # pysyncobj snapshots pickle the state machine; the copy must be the same state.
        copy = pickle.loads(pickle.dumps(self.sm))
        assert copy.digest() == self.sm.digest()
        self.sm = copy

    @invariant()
    def same_keyspace(self) -> None:
        assert self.sm.revision == self.model.revision
        assert self.sm.compact_revision == self.model.compact_revision
        current = self.sm.range("")
        assert [(kv.key, (kv.value, kv.create_revision, kv.mod_revision, kv.version))
                for kv in current.kvs] == sorted(self.model.data.items())


TestStateMachineVsModel = StateMachineVsModel.TestCase
TestStateMachineVsModel.settings = settings(max_examples=150, stateful_step_count=40,
                                            deadline=None)


def test_retried_request_applies_once() -> None:
    sm = KVStateMachine()
    cmd = check_command(("txn", b"req-1", [], [("put", "k", b"v")], []))
    first = sm.apply(cmd)
    again = sm.apply(cmd)
    assert first == again
    assert sm.get("k").version == 1 and sm.revision == 2


def test_dedup_memory_is_bounded_and_deterministic() -> None:
    a, b = KVStateMachine(dedup_limit=3), KVStateMachine(dedup_limit=3)
    for sm in (a, b):
        for i in range(10):
            sm.apply(check_command(("txn", b"r%d" % i, [], [("put", "k", b"%d" % i)], [])))
    assert len(a._seen) == 3 and list(a._seen) == list(b._seen) == [b"r7", b"r8", b"r9"]


def test_history_is_bounded_at_revision_boundaries() -> None:
    sm = KVStateMachine(history_limit=8)
    for i in range(50):
        sm.apply(check_command(("txn", None, [], [("put", "a", b"x"), ("put", "b", b"y")], [])))
    assert len(sm._history) <= 10
    assert sm.compact_revision == sm._history[0][0]
    first = [e for e in sm._history if e[0] == sm.compact_revision]
    assert len(first) == 2  # both events of the oldest kept revision survived together
