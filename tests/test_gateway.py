"""The etcd v3 JSON gateway (raftstore.gateway) over MemoryStore, and side by side with etcd.

Flow: a recording Store wrapper and a client fixture; the unary calls with their exact JSON;
error mapping; a table of bad input (clear error JSON, nothing reaches the store); watch
streams; shutdown; last, the same request script sent to a real etcd 3.4 member and to the
gateway, responses compared after normalising the ids that necessarily differ.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftstore.gateway import (
    ERR_COMPACTED,
    ERR_DUPLICATE_KEY,
    ERR_FUTURE_REV,
    ERR_KEY_NOT_FOUND,
    ERR_KEY_NOT_PROVIDED,
    ERR_LEASE_NOT_FOUND,
    ERR_TOO_MANY_OPS,
    ERR_WATCH_DUPLICATE_ID,
    MAX_REQUEST_BYTES,
    NOT_SUPPORTED,
    make_app,
    member_id_of,
)
from raftstore.memory import MemoryStore
from raftstore.store import (
    Compare,
    Event,
    FutureRevision,
    InvalidRequest,
    KeyValue,
    Member,
    Op,
    Put,
    RangeResult,
    Status,
    Store,
    StoreError,
    TxnResult,
    Unavailable,
)

JSON = dict[str, Any]
CLUSTER_ID = 0xC0FFEE
MEMBER_ID = 0xBEEF
PROGRESS_S = 0.2
LINE_TIMEOUT_S = 5.0
REQUIRE_ALL_ENV = "CORRAL_REQUIRE_PRIVILEGED"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def header(revision: int | None, term: int = 1) -> JSON:
    out: JSON = {"cluster_id": str(CLUSTER_ID), "member_id": str(MEMBER_ID)}
    if revision:
        out["revision"] = str(revision)
    out["raft_term"] = str(term)
    return out


def kv(key: str, value: str, create: int, mod: int, version: int) -> JSON:
    out: JSON = {
        "key": b64(key),
        "create_revision": str(create),
        "mod_revision": str(mod),
        "version": str(version),
    }
    if value:
        out["value"] = b64(value)
    return out


# -- a Store that records what reached it ----------------------------------------------------


class RecordingStore(Store):
    """MemoryStore behind a wrapper that records calls and can fail them on demand."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}
        self.open_watches = 0
        self.status_override: Status | None = None

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def data_calls(self) -> list[str]:
        """Calls other than status() (the gateway polls that for the raft term)."""
        return [c for c in self.calls if c != "status"]

    async def get(self, key: str, *, serializable: bool = False) -> tuple[KeyValue | None, int]:
        self._enter("get")
        return await self.inner.get(key, serializable=serializable)

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_key: str | None = None,
        revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        self._enter("range")
        return await self.inner.range(
            prefix,
            limit=limit,
            continue_key=continue_key,
            revision=revision,
            serializable=serializable,
        )

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._enter("txn")
        return await self.inner.txn(compares, success, failure)

    async def watch(
        self, prefix: str, *, start_revision: int = 0, progress_interval: float = 5.0
    ) -> AsyncGenerator[Event, None]:
        self._enter("watch")
        self.open_watches += 1
        try:
            async for event in self.inner.watch(
                prefix, start_revision=start_revision, progress_interval=progress_interval
            ):
                yield event
        finally:
            self.open_watches -= 1

    async def compact(self, revision: int) -> None:
        self._enter("compact")
        await self.inner.compact(revision)

    async def status(self) -> Status:
        self._enter("status")
        if self.status_override is not None:
            return self.status_override
        return await self.inner.status()


# -- the client ------------------------------------------------------------------------------


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    store: RecordingStore

    async def post(self, path: str, body: JSON) -> tuple[int, JSON]:
        async with self.client.post(path, data=json.dumps(body)) as resp:
            return resp.status, json.loads(await resp.read())

    async def ok(self, path: str, body: JSON) -> JSON:
        status, out = await self.post(path, body)
        assert status == 200, out
        return out

    async def raw(self, path: str, data: bytes) -> tuple[int, str]:
        async with self.client.post(path, data=data) as resp:
            return resp.status, (await resp.read()).decode("utf-8", "replace")


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    store = RecordingStore()
    app = make_app(store, cluster_id=CLUSTER_ID, member_id=MEMBER_ID, progress_interval=PROGRESS_S)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Gateway(client, store)


_LINE_BUFFERS: weakref.WeakKeyDictionary[aiohttp.ClientResponse, bytearray] = (
    weakref.WeakKeyDictionary()
)


async def next_line(resp: aiohttp.ClientResponse) -> JSON | None:
    """The next message of a watch stream, or None at its end (lines of any length)."""
    buffer = _LINE_BUFFERS.setdefault(resp, bytearray())
    while (end := buffer.find(b"\n")) < 0:
        chunk = await asyncio.wait_for(resp.content.readany(), LINE_TIMEOUT_S)
        if not chunk:
            assert not buffer.strip(), f"stream ended mid-line: {bytes(buffer[:200])!r}"
            return None
        buffer += chunk
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    parsed: JSON = json.loads(line)
    return parsed


# -- unary calls -----------------------------------------------------------------------------


async def test_put_and_range_answer_etcd_json(gw: Gateway) -> None:
    assert await gw.ok("/v3/kv/put", {"key": b64("a"), "value": b64("1")}) == {"header": header(2)}
    assert await gw.ok("/v3/kv/put", {"key": b64("a"), "value": b64("2"), "prev_kv": True}) == {
        "header": header(3),
        "prev_kv": kv("a", "1", 2, 2, 1),
    }
    await gw.ok("/v3/kv/put", {"key": b64("ab")})  # empty value: no "value" in the kv
    await gw.ok("/v3/kv/put", {"key": b64("b"), "value": b64("x")})

    assert await gw.ok("/v3/kv/range", {"key": b64("a")}) == {
        "header": header(5),
        "kvs": [kv("a", "2", 2, 3, 2)],
        "count": "1",
    }
    assert await gw.ok("/v3/kv/range", {"key": b64("zz")}) == {"header": header(5)}
    prefix_a = {"key": b64("a"), "range_end": b64("b")}
    assert await gw.ok("/v3/kv/range", prefix_a) == {
        "header": header(5),
        "kvs": [kv("a", "2", 2, 3, 2), kv("ab", "", 4, 4, 1)],
        "count": "2",
    }
    assert await gw.ok("/v3/kv/range", {**prefix_a, "limit": "1", "keys_only": True}) == {
        "header": header(5),
        "kvs": [{k: v for k, v in kv("a", "2", 2, 3, 2).items() if k != "value"}],
        "more": True,
        "count": "2",
    }
    assert await gw.ok("/v3/kv/range", {**prefix_a, "countOnly": True}) == {
        "header": header(5),
        "count": "2",
    }
    everything = await gw.ok("/v3/kv/range", {"key": "AA==", "range_end": "AA=="})
    assert [k["key"] for k in everything["kvs"]] == [b64("a"), b64("ab"), b64("b")]
    # At a past revision: the key as it was; the header keeps the current revision (as etcd).
    assert await gw.ok("/v3/kv/range", {"key": b64("a"), "revision": 2}) == {
        "header": header(5),
        "kvs": [kv("a", "1", 2, 2, 1)],
        "count": "1",
    }


async def test_range_sorts_and_filters_like_etcd(gw: Gateway) -> None:
    for key in ("k1", "k2", "k3"):
        await gw.ok("/v3/kv/put", {"key": b64(key), "value": b64(key)})
    await gw.ok("/v3/kv/put", {"key": b64("k1"), "value": b64("again")})
    prefix = {"key": b64("k"), "range_end": b64("l")}

    desc = await gw.ok("/v3/kv/range", {**prefix, "sort_order": "DESCEND"})
    assert [k["key"] for k in desc["kvs"]] == [b64("k3"), b64("k2"), b64("k1")]
    # A target without an order sorts ascending; with a limit the whole range is sorted first.
    by_mod = await gw.ok("/v3/kv/range", {**prefix, "sort_target": "MOD", "limit": 1})
    assert [k["key"] for k in by_mod["kvs"]] == [b64("k2")]
    assert by_mod["more"] is True and by_mod["count"] == "3"
    newest = await gw.ok("/v3/kv/range", {**prefix, "sort_target": 3, "sort_order": 2})
    assert newest["kvs"][0]["key"] == b64("k1")
    # count is the whole range, before the filters (etcd does the same).
    filtered = await gw.ok("/v3/kv/range", {**prefix, "max_mod_revision": "3"})
    assert [k["key"] for k in filtered["kvs"]] == [b64("k2")]
    assert filtered["count"] == "3" and "more" not in filtered


async def test_range_pages_through_a_prefix_and_reads_from_a_key(gw: Gateway) -> None:
    """[last key + "\\0", prefix end) is how EtcdStore and Kubernetes page through a prefix."""
    for key in ("k1", "k2", "k3", "l"):
        await gw.ok("/v3/kv/put", {"key": b64(key), "value": b64(key)})
    page = await gw.ok("/v3/kv/range", {"key": b64("k"), "range_end": b64("l"), "limit": 1})
    assert ([k["key"] for k in page["kvs"]], page["more"], page["count"]) == (
        [b64("k1")],
        True,
        "3",
    )
    rest = await gw.ok("/v3/kv/range", {"key": b64("k1\0"), "range_end": b64("l"), "limit": 1})
    # count is etcd's: the keys from the start key to the end of the range.
    assert ([k["key"] for k in rest["kvs"]], rest["more"], rest["count"]) == (
        [b64("k2")],
        True,
        "2",
    )
    from_key = await gw.ok(
        "/v3/kv/range", {"key": b64("k2"), "range_end": "AA==", "keys_only": True}
    )
    assert [k["key"] for k in from_key["kvs"]] == [b64("k2"), b64("k3"), b64("l")]
    single = await gw.ok("/v3/kv/range", {"key": b64("k1"), "range_end": b64("k1\0")})
    assert [k["key"] for k in single["kvs"]] == [b64("k1")]


async def test_deleterange_single_and_prefix(gw: Gateway) -> None:
    for key in ("d/1", "d/2", "e"):
        await gw.ok("/v3/kv/put", {"key": b64(key), "value": b64("v")})
    assert await gw.ok("/v3/kv/deleterange", {"key": b64("nope")}) == {"header": header(4)}
    out = await gw.ok(
        "/v3/kv/deleterange", {"key": b64("d/"), "range_end": b64("d0"), "prev_kv": True}
    )
    assert out == {
        "header": header(5),
        "deleted": "2",
        "prev_kvs": [kv("d/1", "v", 2, 2, 1), kv("d/2", "v", 3, 3, 1)],
    }
    assert await gw.ok("/v3/kv/deleterange", {"key": b64("e")}) == {
        "header": header(6),
        "deleted": "1",
    }


async def test_txn_branches_and_op_responses(gw: Gateway) -> None:
    await gw.ok("/v3/kv/put", {"key": b64("a"), "value": b64("1")})
    request = {
        "compare": [{"key": b64("a"), "target": "MOD", "result": "EQUAL", "mod_revision": "2"}],
        "success": [
            {"request_put": {"key": b64("a"), "value": b64("2"), "prev_kv": True}},
            {"request_range": {"key": b64("a")}},
            {"request_delete_range": {"key": b64("gone"), "prev_kv": True}},
        ],
        "failure": [{"request_range": {"key": b64("a"), "keys_only": True}}],
    }
    assert await gw.ok("/v3/kv/txn", request) == {
        "header": header(3),
        "succeeded": True,
        "responses": [
            {"response_put": {"header": {"revision": "3"}, "prev_kv": kv("a", "1", 2, 2, 1)}},
            {
                "response_range": {
                    "header": {"revision": "3"},
                    "kvs": [kv("a", "2", 2, 3, 2)],
                    "count": "1",
                }
            },
            {"response_delete_range": {"header": {"revision": "3"}}},
        ],
    }
    # Same request again: the compare fails, the failure branch runs, no "succeeded".
    assert await gw.ok("/v3/kv/txn", request) == {
        "header": header(3),
        "responses": [
            {
                "response_range": {
                    "header": {"revision": "3"},
                    "kvs": [{k: v for k, v in kv("a", "2", 2, 3, 2).items() if k != "value"}],
                    "count": "1",
                }
            }
        ],
    }
    assert await gw.ok("/v3/kv/txn", {}) == {"header": header(3), "succeeded": True}
    create = {
        "compare": [{"key": b64("new"), "target": "CREATE", "create_revision": "0"}],
        "success": [{"request_put": {"key": b64("new"), "value": b64("x")}}],
    }
    assert (await gw.ok("/v3/kv/txn", create)).get("succeeded") is True
    assert "succeeded" not in await gw.ok("/v3/kv/txn", create)
    by_value = {
        "compare": [{"key": b64("new"), "target": 3, "result": 3, "value": b64("y")}],
    }
    assert (await gw.ok("/v3/kv/txn", by_value)).get("succeeded") is True  # "x" != "y"


async def test_put_ignore_value_and_ignore_lease(gw: Gateway) -> None:
    await gw.ok("/v3/kv/put", {"key": b64("t"), "value": b64("keep")})
    await gw.ok("/v3/kv/put", {"key": b64("t"), "ignore_value": True})
    got = await gw.ok("/v3/kv/range", {"key": b64("t")})
    assert got["kvs"][0]["value"] == b64("keep") and got["kvs"][0]["version"] == "2"
    await gw.ok("/v3/kv/put", {"key": b64("t"), "value": b64("new"), "ignore_lease": True})
    for flag in ("ignore_value", "ignore_lease"):
        status, out = await gw.post("/v3/kv/put", {"key": b64("missing"), flag: True})
        assert (status, out["code"], out["message"]) == (400, 3, ERR_KEY_NOT_FOUND)


async def test_compaction_and_revision_errors(gw: Gateway) -> None:
    for i in range(4):
        await gw.ok("/v3/kv/put", {"key": b64("c"), "value": b64(str(i))})
    assert await gw.ok("/v3/kv/compaction", {"revision": "3", "physical": True}) == {
        "header": header(5)
    }
    compacted = {"error": ERR_COMPACTED, "message": ERR_COMPACTED, "code": 11}
    future = {"error": ERR_FUTURE_REV, "message": ERR_FUTURE_REV, "code": 11}
    assert await gw.post("/v3/kv/compaction", {"revision": "3"}) == (400, compacted)
    assert await gw.post("/v3/kv/compaction", {"revision": "99"}) == (400, future)
    assert await gw.post("/v3/kv/range", {"key": b64("c"), "revision": "2"}) == (400, compacted)
    assert await gw.post("/v3/kv/range", {"key": b64("c"), "revision": "99"}) == (400, future)
    prefix = {"key": b64("c"), "range_end": b64("d")}
    assert await gw.post("/v3/kv/range", {**prefix, "revision": "2"}) == (400, compacted)


async def test_status_member_list_and_health(gw: Gateway) -> None:
    status = await gw.ok("/v3/maintenance/status", {})
    assert status == {
        "header": header(1),
        "version": "3.4.0",
        "leader": str(MEMBER_ID),  # the only member is this one
        "raftTerm": "1",
    }
    members = await gw.ok("/v3/cluster/member/list", {})
    assert members == {
        "header": {k: v for k, v in header(0).items()},  # no revision, as etcd
        "members": [{"ID": str(MEMBER_ID), "name": "memory"}],
    }
    async with gw.client.get("/health") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"  # etcd's, too
        assert await resp.text() == '{"health":"true"}'
    gw.store.fail["get"] = Unavailable("no leader")
    async with gw.client.get("/health") as resp:
        assert (resp.status, await resp.text()) == (503, '{"health":"false"}')


async def test_other_members_get_ids_from_their_names() -> None:
    store = RecordingStore()
    store.status_override = Status(
        members=(
            Member("m0", "http://127.0.0.1:1", ("http://127.0.0.1:2",)),
            Member("m1", "http://127.0.0.1:3", is_leader=True),
        ),
        leader="m1",
        term=7,
        applied_index=40,
        revision=12,
        compact_revision=0,
    )
    app = make_app(store, cluster_id=CLUSTER_ID, member_id=MEMBER_ID, member_name="m0")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        gw = Gateway(client, store)
        members = (await gw.ok("/v3/cluster/member/list", {}))["members"]
        assert members == [
            {
                "ID": str(MEMBER_ID),
                "name": "m0",
                "peerURLs": ["http://127.0.0.1:1"],
                "clientURLs": ["http://127.0.0.1:2"],
            },
            {"ID": str(member_id_of("m1")), "name": "m1", "peerURLs": ["http://127.0.0.1:3"]},
        ]
        status = await gw.ok("/v3/maintenance/status", {})
        assert status["leader"] == str(member_id_of("m1"))
        assert status["header"]["raft_term"] == "7"
        assert (status["raftIndex"], status["raftAppliedIndex"]) == ("40", "40")


async def test_raft_term_can_come_from_a_callable() -> None:
    term = [5]
    store = RecordingStore()
    app = make_app(store, cluster_id=1, member_id=2, raft_term=lambda: term[0])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        gw = Gateway(client, store)
        assert (await gw.ok("/v3/kv/put", {"key": b64("k")}))["header"]["raft_term"] == "5"
        term[0] = 6
        assert (await gw.ok("/v3/kv/range", {"key": b64("k")}))["header"]["raft_term"] == "6"


# -- store errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "message"),
    [
        (Unavailable("no leader"), 503, 14, "etcdserver: no leader"),
        (Unavailable(), 503, 14, "etcdserver: request timed out"),
        (FutureRevision("later"), 400, 11, ERR_FUTURE_REV),
        (InvalidRequest("key must not be empty"), 400, 3, "key must not be empty"),
        (StoreError("disk on fire"), 500, 2, "disk on fire"),
        (RuntimeError("secret detail"), 500, 13, "internal error (see server log)"),
    ],
)
async def test_store_errors_become_grpc_gateway_errors(
    gw: Gateway, error: BaseException, status: int, code: int, message: str
) -> None:
    gw.store.fail["txn"] = error
    gw.store.fail["get"] = error
    for path, body in (("/v3/kv/put", {"key": b64("k")}), ("/v3/kv/range", {"key": b64("k")})):
        got_status, text = await gw.raw(path, json.dumps(body).encode())
        assert got_status == status
        assert json.loads(text) == {"error": message, "message": message, "code": code}
        assert "Traceback" not in text and "secret detail" not in text


# -- bad input -------------------------------------------------------------------------------

KEY_A = b64("a")
TOO_MANY = [{"request_range": {"key": b64(f"k{i}")}} for i in range(129)]


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


BAD_INPUT: list[tuple[str, str, bytes, int, int, str]] = [
    # id, path, body, HTTP status, gRPC code, text the message contains
    ("malformed-json", "/v3/kv/range", b"{bad json", 400, 3, "invalid JSON"),
    ("truncated-json", "/v3/kv/put", b'{"key": "YQ==", "value": ', 400, 3, "invalid JSON"),
    ("not-an-object", "/v3/kv/range", b"[]", 400, 3, "expected a JSON object"),
    ("not-utf8", "/v3/kv/put", b'{"key": "\xff\xfe"}', 400, 3, "UTF-8"),
    ("nan", "/v3/kv/range", b'{"key": "YQ==", "limit": NaN}', 400, 3, "invalid JSON"),
    ("deep-nesting", "/v3/kv/range", b"[" * 100_000, 400, 3, "invalid JSON"),
    ("key-number", "/v3/kv/range", _j({"key": 5}), 400, 3, "base64"),
    ("bad-base64", "/v3/kv/range", _j({"key": "!!!"}), 400, 3, "illegal base64"),
    ("no-padding", "/v3/kv/put", _j({"key": "YQ"}), 400, 3, "illegal base64"),
    ("bad-value", "/v3/kv/put", _j({"key": KEY_A, "value": "%%%"}), 400, 3, "illegal base64"),
    ("float-limit", "/v3/kv/range", _j({"key": KEY_A, "limit": 1.5}), 400, 3, "int64"),
    ("word-limit", "/v3/kv/range", _j({"key": KEY_A, "limit": "x"}), 400, 3, "int64"),
    ("int64-overflow", "/v3/kv/range", _j({"key": KEY_A, "revision": "9" * 20}), 400, 3, "int64"),
    ("string-bool", "/v3/kv/range", _j({"key": KEY_A, "serializable": "true"}), 400, 3, "true"),
    ("bad-enum", "/v3/kv/range", _j({"key": KEY_A, "sort_order": "NOPE"}), 400, 3, "unknown"),
    ("no-key", "/v3/kv/range", b"{}", 400, 3, ERR_KEY_NOT_PROVIDED),
    ("empty-body", "/v3/kv/put", b"", 400, 3, ERR_KEY_NOT_PROVIDED),
    ("non-utf8-key", "/v3/kv/put", _j({"key": b64(b"\xff")}), 400, 3, NOT_SUPPORTED),
    (
        "range-interval",
        "/v3/kv/range",
        _j({"key": KEY_A, "range_end": b64("c")}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "range-odd-interval",
        "/v3/kv/range",
        _j({"key": KEY_A, "range_end": b64("a\x01")}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "delete-from-key",
        "/v3/kv/deleterange",
        _j({"key": KEY_A, "range_end": "AA=="}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "delete-rest-of-prefix",
        "/v3/kv/deleterange",
        _j({"key": b64("ab"), "range_end": b64("b")}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "delete-interval",
        "/v3/kv/deleterange",
        _j({"key": KEY_A, "range_end": b64("c")}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    ("delete-no-key", "/v3/kv/deleterange", b"{}", 400, 3, ERR_KEY_NOT_PROVIDED),
    ("lease", "/v3/kv/put", _j({"key": KEY_A, "lease": "7"}), 404, 5, ERR_LEASE_NOT_FOUND),
    ("txn-empty-op", "/v3/kv/txn", _j({"success": [{}]}), 400, 3, ERR_KEY_NOT_FOUND),
    (
        "txn-duplicate-put",
        "/v3/kv/txn",
        _j({"success": [{"request_put": {"key": KEY_A}}, {"request_put": {"key": KEY_A}}]}),
        400,
        3,
        ERR_DUPLICATE_KEY,
    ),
    (
        "txn-put-in-deleted-prefix",
        "/v3/kv/txn",
        _j(
            {
                "failure": [
                    {"request_put": {"key": b64("ab")}},
                    {"request_delete_range": {"key": KEY_A, "range_end": b64("b")}},
                ]
            }
        ),
        400,
        3,
        ERR_DUPLICATE_KEY,
    ),
    ("txn-too-many", "/v3/kv/txn", _j({"success": TOO_MANY}), 400, 3, ERR_TOO_MANY_OPS),
    (
        "txn-prefix-read",
        "/v3/kv/txn",
        _j({"success": [{"request_range": {"key": KEY_A, "range_end": b64("b")}}]}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "txn-nested",
        "/v3/kv/txn",
        _j({"success": [{"request_txn": {}}]}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "txn-lease-compare",
        "/v3/kv/txn",
        _j({"compare": [{"key": KEY_A, "target": "LEASE"}]}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "txn-range-compare",
        "/v3/kv/txn",
        _j({"compare": [{"key": KEY_A, "range_end": b64("b")}]}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    (
        "txn-bad-in-failure-branch",
        "/v3/kv/txn",
        _j({"success": [{"request_put": {"key": KEY_A}}], "failure": [{"request_put": {}}]}),
        400,
        3,
        ERR_KEY_NOT_PROVIDED,
    ),
    ("compaction-word", "/v3/kv/compaction", _j({"revision": "abc"}), 400, 3, "int64"),
    ("watch-malformed", "/v3/watch", b"{bad", 400, 3, "invalid JSON"),
    ("watch-no-create", "/v3/watch", b"{}", 400, 3, "create_request"),
    (
        "watch-interval",
        "/v3/watch",
        _j({"create_request": {"key": KEY_A, "range_end": b64("c")}}),
        400,
        3,
        NOT_SUPPORTED,
    ),
    ("watch-bad-base64", "/v3/watch", _j({"create_request": {"key": "%"}}), 400, 3, "base64"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "needle"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
async def test_bad_input_gets_a_clear_error_and_reaches_no_store(
    gw: Gateway, path: str, body: bytes, status: int, code: int, needle: str
) -> None:
    before = await gw.store.inner.status()
    got_status, text = await gw.raw(path, body)
    assert got_status == status, text
    assert "Traceback" not in text
    out = json.loads(text)
    assert set(out) == {"error", "message", "code"}
    assert out["code"] == code and out["error"] == out["message"]
    assert needle in out["message"]
    assert gw.store.data_calls() == []
    assert (await gw.store.inner.status()).revision == before.revision


@pytest.mark.parametrize("path", ["/v3/kv/put", "/v3/kv/txn", "/v3/watch"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_huge_body_is_refused(gw: Gateway, path: str, chunked: bool) -> None:
    value = b64(b"x" * MAX_REQUEST_BYTES)  # base64 makes the body a third larger still
    body = _j({"key": KEY_A, "value": value})

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async with gw.client.post(path, data=chunks() if chunked else body) as resp:
        text = await resp.text()
        assert resp.status == 413
    out = json.loads(text)
    assert out["code"] == 8 and "larger than max" in out["message"]
    assert gw.store.data_calls() == []


async def test_unknown_fields_camel_case_and_trailing_data_are_accepted(gw: Gateway) -> None:
    """jsonpb: either field spelling, unknown fields ignored; json.Decoder: first value only."""
    await gw.ok("/v3/kv/put", {"key": KEY_A, "value": b64("v"), "someFutureField": 1})
    status, text = await gw.raw(
        "/v3/kv/range", b'{"key": "YQ==", "rangeEnd": "Yg==", "keysOnly": true} trailing junk'
    )
    assert status == 200
    assert json.loads(text)["kvs"] == [{"key": KEY_A, "create_revision": "2",
                                        "mod_revision": "2", "version": "1"}]  # fmt: skip


# -- watch -----------------------------------------------------------------------------------


async def open_watch(gw: Gateway, *requests: JSON) -> aiohttp.ClientResponse:
    body = b"".join(_j(r) + b"\n" for r in requests)
    resp = await gw.client.post("/v3/watch", data=body)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return resp


async def test_watch_streams_created_then_events(gw: Gateway) -> None:
    await gw.ok("/v3/kv/put", {"key": b64("w/a"), "value": b64("0")})
    prefix = {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": True}
    resp = await open_watch(gw, {"create_request": prefix})
    try:
        assert await next_line(resp) == {"result": {"header": header(2), "created": True}}
        txn = {
            "success": [
                {"request_put": {"key": b64("w/a"), "value": b64("1")}},
                {"request_put": {"key": b64("w/b"), "value": b64("2")}},
                {"request_put": {"key": b64("x"), "value": b64("not watched")}},
            ]
        }
        await gw.ok("/v3/kv/txn", txn)
        # One revision's events arrive in one message, as etcd sends them.
        assert await next_line(resp) == {
            "result": {
                "header": header(3),
                "events": [
                    {"kv": kv("w/a", "1", 2, 3, 2), "prev_kv": kv("w/a", "0", 2, 2, 1)},
                    {"kv": kv("w/b", "2", 3, 3, 1)},
                ],
            }
        }
        await gw.ok("/v3/kv/deleterange", {"key": b64("w/a")})
        # A PUT has no "type" (enum zero); a tombstone has only key and mod_revision.
        assert await next_line(resp) == {
            "result": {
                "header": header(4),
                "events": [
                    {
                        "type": "DELETE",
                        "kv": {"key": b64("w/a"), "mod_revision": "4"},
                        "prev_kv": kv("w/a", "1", 2, 3, 2),
                    }
                ],
            }
        }
    finally:
        resp.close()


async def test_watch_single_key_filters_and_history(gw: Gateway) -> None:
    await gw.ok("/v3/kv/put", {"key": b64("k"), "value": b64("1")})  # rev 2
    await gw.ok("/v3/kv/put", {"key": b64("k2"), "value": b64("x")})  # rev 3: not key "k"
    await gw.ok("/v3/kv/deleterange", {"key": b64("k")})  # rev 4
    await gw.ok("/v3/kv/put", {"key": b64("k"), "value": b64("2")})  # rev 5
    resp = await open_watch(
        gw, {"create_request": {"key": b64("k"), "start_revision": "2", "filters": ["NODELETE"]}}
    )
    try:
        assert (await next_line(resp)) == {"result": {"header": header(5), "created": True}}
        events: list[JSON] = []
        while len(events) < 2:
            message = await next_line(resp)
            assert message is not None
            events += message["result"]["events"]
        assert events == [{"kv": kv("k", "1", 2, 2, 1)}, {"kv": kv("k", "2", 5, 5, 1)}]
    finally:
        resp.close()


async def test_watch_from_a_key_to_the_prefix_end(gw: Gateway) -> None:
    resp = await open_watch(gw, {"create_request": {"key": b64("k2"), "range_end": b64("l")}})
    try:
        assert await next_line(resp) is not None
        for key in ("k1", "k2", "k3", "l"):
            await gw.ok("/v3/kv/put", {"key": b64(key), "value": b64("v")})
        keys: list[str] = []
        while len(keys) < 2:
            message = await next_line(resp)
            assert message is not None
            keys += [e["kv"]["key"] for e in message["result"]["events"]]
        assert keys == [b64("k2"), b64("k3")]
    finally:
        resp.close()


async def test_watch_progress_notify(gw: Gateway) -> None:
    resp = await open_watch(gw, {"create_request": {"key": KEY_A, "progress_notify": True}})
    try:
        assert (await next_line(resp)) == {"result": {"header": header(1), "created": True}}
        # A progress notification is a result with nothing but the header.
        assert (await next_line(resp)) == {"result": {"header": header(1)}}
    finally:
        resp.close()


async def test_watch_from_compacted_revision_is_canceled_and_ends(gw: Gateway) -> None:
    for i in range(3):
        await gw.ok("/v3/kv/put", {"key": KEY_A, "value": b64(str(i))})
    await gw.ok("/v3/kv/compaction", {"revision": "3"})
    resp = await open_watch(gw, {"create_request": {"key": KEY_A, "start_revision": "2"}})
    try:
        assert await next_line(resp) == {"result": {"header": header(4), "created": True}}
        # etcd leaves the revision out of this header.
        assert await next_line(resp) == {
            "result": {"header": header(None), "canceled": True, "compact_revision": "3"}
        }
        assert await next_line(resp) is None  # nothing left on the stream: it ends
    finally:
        resp.close()
    assert gw.store.open_watches == 0


async def test_watch_stream_carries_several_watches_and_cancels(gw: Gateway) -> None:
    resp = await open_watch(
        gw,
        {"create_request": {"key": b64("one")}},
        {"create_request": {"key": b64("two")}},
        {"cancel_request": {"watch_id": "0"}},
        {"create_request": {"key": b64("three"), "watch_id": "1"}},  # id in use
        {"cancel_request": {"watch_id": "42"}},  # unknown: ignored, as etcd does
        {"progress_request": {}},
    )
    try:
        assert await next_line(resp) == {"result": {"header": header(1), "created": True}}
        assert await next_line(resp) == {
            "result": {"header": header(1), "watch_id": "1", "created": True}
        }
        assert await next_line(resp) == {"result": {"header": header(1), "canceled": True}}
        assert await next_line(resp) == {
            "result": {
                "header": header(None),
                "watch_id": "-1",
                "created": True,
                "canceled": True,
                "cancel_reason": ERR_WATCH_DUPLICATE_ID,
            }
        }
        assert await next_line(resp) == {"result": {"header": header(1), "watch_id": "-1"}}
        await gw.ok("/v3/kv/put", {"key": b64("one"), "value": b64("x")})
        await gw.ok("/v3/kv/put", {"key": b64("two"), "value": b64("y")})
        assert await next_line(resp) == {
            "result": {
                "header": header(3),
                "watch_id": "1",
                "events": [{"kv": kv("two", "y", 3, 3, 1)}],
            }
        }
    finally:
        resp.close()


async def test_watch_requests_can_follow_on_an_open_body(gw: Gateway) -> None:
    """The request body is a stream too: a cancel may come long after the create."""
    requests: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (item := await requests.get()) is not None:
            yield item

    await requests.put(_j({"create_request": {"key": KEY_A}})[:10])  # split mid-object
    await requests.put(_j({"create_request": {"key": KEY_A}})[10:])
    async with gw.client.post("/v3/watch", data=body()) as resp:
        assert await next_line(resp) == {"result": {"header": header(1), "created": True}}
        await gw.ok("/v3/kv/put", {"key": KEY_A, "value": b64("v")})
        message = await next_line(resp)
        assert message is not None and len(message["result"]["events"]) == 1
        await requests.put(_j({"cancel_request": {"watch_id": 0}}))
        assert await next_line(resp) == {"result": {"header": header(2), "canceled": True}}
        await requests.put(None)
        assert await next_line(resp) is None
    assert gw.store.open_watches == 0


async def test_watch_messages_stay_bounded_but_keep_revisions_whole(gw: Gateway) -> None:
    big = b"x" * (600 * 1024)
    resp = await open_watch(gw, {"create_request": {"key": b64("big/"), "range_end": b64("big0")}})
    try:
        assert await next_line(resp) is not None
        for i in range(3):  # three revisions
            await gw.store.inner.put(f"big/{i}", big)
        await gw.store.inner.txn((), [Put(f"big/t{i}", big) for i in range(3)])  # one revision
        sizes: list[list[str]] = []  # the revisions in each message
        while sum(len(s) for s in sizes) < 6:
            message = await next_line(resp)
            assert message is not None
            sizes.append([e["kv"]["mod_revision"] for e in message["result"]["events"]])
        # A message closes once it holds WATCH_BATCH_BYTES (1 MiB): before its last revision
        # there is room for one 600 KiB event at most.
        assert all(len([r for r in revs if r != revs[-1]]) <= 1 for revs in sizes), sizes
        assert any(revs[-3:] == ["5", "5", "5"] for revs in sizes), sizes  # the txn: together
    finally:
        resp.close()


async def test_watch_store_failure_is_a_stream_error(gw: Gateway) -> None:
    gw.store.fail["watch"] = Unavailable("no leader")
    resp = await open_watch(gw, {"create_request": {"key": KEY_A}})
    try:
        assert (await next_line(resp)) == {"result": {"header": header(1), "created": True}}
        assert await next_line(resp) == {
            "error": {
                "grpc_code": 14,
                "http_code": 503,
                "message": "etcdserver: no leader",
                "http_status": "Service Unavailable",
            }
        }
        assert await next_line(resp) is None
    finally:
        resp.close()


async def test_watch_ends_when_the_client_goes_away(gw: Gateway) -> None:
    resp = await open_watch(gw, {"create_request": {"key": KEY_A}})
    assert (await next_line(resp)) is not None
    deadline = time.monotonic() + 5
    while gw.store.open_watches == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert gw.store.open_watches == 1
    resp.close()
    while gw.store.open_watches and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gw.store.open_watches == 0


async def test_server_shutdown_ends_open_watches() -> None:
    store = RecordingStore()
    runner = web.AppRunner(make_app(store, cluster_id=1, member_id=2))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"http://127.0.0.1:{port}/v3/watch", data=_j({"create_request": {"key": KEY_A}})
        )
        assert (await next_line(resp)) is not None
        started = time.monotonic()
        await asyncio.wait_for(runner.cleanup(), 10)
        assert time.monotonic() - started < 5
        assert await next_line(resp) is None
        resp.close()
    assert store.open_watches == 0


# -- side by side with a real etcd -----------------------------------------------------------

A, AB, B, NEW = b64("a"), b64("ab"), b64("b"), b64("new")
PREFIX_A = {"key": A, "range_end": B}

# (mode, path, body): "same" = identical JSON once ids and terms are normalised; "error" =
# same HTTP status and gRPC code (and message, when etcd's is one of its own texts); "shape" =
# our fields are a subset of etcd's at every level.
SCRIPT: list[tuple[str, str, JSON | bytes]] = [
    ("same", "/v3/kv/put", {"key": A, "value": b64("1")}),
    ("same", "/v3/kv/put", {"key": A, "value": b64("2"), "prev_kv": True}),
    ("same", "/v3/kv/put", {"key": AB, "value": ""}),
    ("same", "/v3/kv/put", {"key": B, "value": b64("xyz")}),
    ("same", "/v3/kv/range", {"key": A}),
    ("same", "/v3/kv/range", {"key": b64("missing")}),
    ("same", "/v3/kv/range", PREFIX_A),
    ("same", "/v3/kv/range", {**PREFIX_A, "limit": 1}),
    ("same", "/v3/kv/range", {**PREFIX_A, "limit": "1", "keys_only": True}),
    ("same", "/v3/kv/range", {**PREFIX_A, "count_only": True}),
    ("same", "/v3/kv/range", {"key": "AA==", "range_end": "AA=="}),
    ("same", "/v3/kv/range", {"key": A, "revision": 2}),
    ("same", "/v3/kv/range", {"key": A, "serializable": True}),
    ("same", "/v3/kv/range", {"key": "AA==", "range_end": "AA==", "sort_order": "DESCEND"}),
    (
        "same",
        "/v3/kv/range",
        {"key": "AA==", "range_end": "AA==", "sort_target": "MOD", "limit": 1},
    ),
    ("same", "/v3/kv/range", {"key": "AA==", "range_end": "AA==", "max_mod_revision": "3"}),
    ("same", "/v3/kv/range", {"key": A, "unknownField": 1, "serializable": None}),
    ("same", "/v3/kv/range", {"key": b64("a\0"), "range_end": B, "limit": 1}),
    ("same", "/v3/kv/range", {"key": AB, "range_end": "AA==", "count_only": True}),
    ("same", "/v3/kv/range", {"key": A, "range_end": b64("a\0")}),
    (
        "same",
        "/v3/kv/txn",
        {
            "compare": [{"key": A, "target": "MOD", "result": "EQUAL", "mod_revision": "3"}],
            "success": [
                {"request_put": {"key": A, "value": b64("3"), "prev_kv": True}},
                {"request_range": {"key": A}},
                {"request_range": {"key": b64("nope")}},
                {"request_delete_range": {"key": B, "prev_kv": True}},
                {"request_delete_range": {"key": b64("nope")}},
            ],
        },
    ),
    (
        "same",
        "/v3/kv/txn",
        {
            "compare": [{"key": A, "target": "MOD", "result": "EQUAL", "mod_revision": "3"}],
            "success": [{"request_put": {"key": A, "value": b64("4")}}],
            "failure": [{"request_range": {"key": A, "count_only": True}}],
        },
    ),
    ("same", "/v3/kv/txn", {}),
    ("same", "/v3/kv/txn", {"compare": [{"key": A, "target": "VALUE", "value": b64("3")}]}),
    (
        "same",
        "/v3/kv/txn",
        {
            "compare": [{"key": NEW, "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": NEW, "value": b64("n")}}],
        },
    ),
    ("same", "/v3/kv/txn", {"compare": [{"key": A, "target": 0, "result": 1, "version": 1}]}),
    ("same", "/v3/kv/put", {"key": NEW, "ignore_value": True}),
    ("error", "/v3/kv/put", {"key": NEW, "value": b64("v"), "ignore_value": True}),
    ("error", "/v3/kv/put", {"key": NEW, "lease": "5", "ignore_lease": True}),
    ("same", "/v3/kv/put", {"key": NEW, "value": b64("n2"), "ignore_lease": True}),
    ("same", "/v3/kv/deleterange", {"key": b64("nope"), "prev_kv": True}),
    ("same", "/v3/kv/deleterange", {"key": NEW, "prev_kv": True}),
    ("same", "/v3/kv/put", {"key": b64("p/1"), "value": b64("1")}),
    ("same", "/v3/kv/put", {"key": b64("p/2"), "value": b64("2")}),
    ("same", "/v3/kv/deleterange", {"key": b64("p/"), "range_end": b64("p0"), "prev_kv": True}),
    ("error", "/v3/kv/range", {}),
    ("error", "/v3/kv/range", {"key": A, "revision": 1000}),
    ("error", "/v3/kv/put", {"key": b64("missing"), "ignore_value": True}),
    ("error", "/v3/kv/put", {"key": A, "lease": "12345"}),
    (
        "error",
        "/v3/kv/txn",
        {"success": [{"request_put": {"key": A}}, {"request_put": {"key": A}}]},
    ),
    ("error", "/v3/kv/txn", {"compare": [{"key": A}], "success": [{}]}),
    ("error", "/v3/kv/txn", {"success": [{"request_put": {"key": ""}}]}),
    ("error", "/v3/kv/deleterange", {}),
    ("error", "/v3/kv/range", b"{bad json"),
    ("error", "/v3/kv/range", {"key": "!!!"}),
    ("error", "/v3/kv/range", {"key": A, "serializable": "true"}),
    ("error", "/v3/kv/range", {"key": A, "sort_order": "NOPE"}),
    ("same", "/v3/kv/compaction", {"revision": "4"}),
    ("error", "/v3/kv/compaction", {"revision": "4"}),
    ("error", "/v3/kv/compaction", {"revision": "1000"}),
    ("error", "/v3/kv/range", {"key": A, "revision": 2}),
    ("shape", "/v3/maintenance/status", {}),
    ("shape", "/v3/cluster/member/list", {}),
]


def normalise(obj: Any) -> Any:
    """Blank what must differ between two servers: cluster/member ids and the raft term."""
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in ("cluster_id", "member_id", "raft_term", "ID", "leader", "raftTerm"):
            out[k] = "<id>"
        else:
            out[k] = normalise(v)
    return out


def assert_shape_subset(ours: Any, theirs: Any, where: str = "") -> None:
    assert type(ours) is type(theirs), f"{where}: {ours!r} vs {theirs!r}"
    if isinstance(ours, dict):
        assert set(ours) <= set(theirs), f"{where}: {sorted(ours)} vs {sorted(theirs)}"
        for k in ours:
            assert_shape_subset(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(ours, list) and ours and theirs:
        assert_shape_subset(ours[0], theirs[0], f"{where}[0]")


@pytest.fixture
async def etcd_url() -> AsyncIterator[str]:
    from raftstore.localetcd import EtcdCluster, EtcdNotFound

    try:
        cluster = EtcdCluster(1)
    except EtcdNotFound as exc:
        if os.environ.get(REQUIRE_ALL_ENV) == "1":
            pytest.fail(f"{REQUIRE_ALL_ENV}=1 but {exc}")
        pytest.skip(str(exc))
    async with cluster:
        yield cluster.endpoints[0]


@pytest.mark.etcd
async def test_responses_match_a_real_etcd(gw: Gateway, etcd_url: str) -> None:
    async with aiohttp.ClientSession() as etcd:

        async def both(path: str, body: JSON | bytes) -> tuple[tuple[int, Any], tuple[int, Any]]:
            data = body if isinstance(body, bytes) else _j(body)
            async with etcd.post(etcd_url + path, data=data) as resp:
                theirs = (resp.status, json.loads(await resp.read()))
            async with gw.client.post(path, data=data) as resp:
                ours = (resp.status, json.loads(await resp.read()))
            return theirs, ours

        for mode, path, body in SCRIPT:
            step = f"{path} {body!r}"
            (their_status, theirs), (our_status, ours) = await both(path, body)
            assert our_status == their_status, f"{step}: {ours} vs etcd {theirs}"
            if mode == "same":
                assert normalise(ours) == normalise(theirs), step
            elif mode == "error":
                assert set(ours) == set(theirs) == {"error", "message", "code"}, step
                assert ours["code"] == theirs["code"], f"{step}: {ours} vs etcd {theirs}"
                if theirs["message"].startswith("etcdserver:"):
                    assert ours["message"] == theirs["message"], step
            else:
                assert_shape_subset(ours, theirs, step)
                assert normalise(ours["header"]) == normalise(theirs["header"]), step

        # /health: same body and content type.
        async with etcd.get(etcd_url + "/health") as resp:
            their_health = (resp.status, resp.content_type, await resp.text())
        async with gw.client.get("/health") as resp:
            assert (resp.status, resp.content_type, await resp.text()) == their_health

        # Watches: the created message and the replayed events, then a compacted watch.
        async def read_watch(resp: aiohttp.ClientResponse, events: int) -> list[JSON]:
            """The created message, then one message holding the first ``events`` events."""
            created = await next_line(resp)
            collected: list[JSON] = []
            last: JSON | None = None
            while len(collected) < events:
                last = await next_line(resp)
                assert last is not None
                collected += last["result"].get("events", [])
            messages = [created]
            if last is not None:
                last["result"]["events"] = collected  # etcd may split them differently
                messages.append(last)
            normalised: list[JSON] = normalise(messages)
            return normalised

        everything = {"key": "AA==", "range_end": "AA==", "start_revision": "5", "prev_kv": True}
        watch = _j({"create_request": everything})
        async with etcd.post(etcd_url + "/v3/watch", data=watch) as resp:
            await next_line(resp)
            replay = await next_line(resp)
        assert replay is not None
        expected = len(replay["result"]["events"])
        async with etcd.post(etcd_url + "/v3/watch", data=watch) as resp:
            theirs = await read_watch(resp, expected)
        async with gw.client.post("/v3/watch", data=watch) as resp:
            ours = await read_watch(resp, expected)
        assert ours == theirs

        watch = _j({"create_request": {"key": A, "start_revision": "2"}})
        replies = []
        for post in (
            etcd.post(etcd_url + "/v3/watch", data=watch),
            gw.client.post("/v3/watch", data=watch),
        ):
            async with post as resp:
                replies.append(normalise([await next_line(resp), await next_line(resp)]))
        assert replies[1] == replies[0]
