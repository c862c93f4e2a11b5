"""EtcdStore: the Store interface over an external etcd 3.4+ cluster, via its JSON gateway.

etcd's gRPC-gateway (``POST /v3/...``, served on the client port) speaks the same protobuf
messages as gRPC, as JSON: keys and values are base64, int64 fields are decimal strings, and a
field left at its zero value is absent. Using it keeps Corral on one HTTP stack (aiohttp) instead
of pulling in grpcio; the cost is a JSON round trip per call.

The flow below, in file order:

- encoding: str keys <-> base64 bytes (UTF-8 with surrogateescape, so that ``prefix_end`` keys
  that cut a multi-byte character survive the round trip), raw kvs -> ``KeyValue``;
- error mapping: the gateway's ``{"code", "message"}`` bodies -> ``Compacted``,
  ``FutureRevision``, ``InvalidRequest``, ``Unavailable`` or ``StoreError``;
- transport: one aiohttp session, endpoint failover. A request that never reached a server
  (connection refused) moves to the next endpoint, whatever it is. A request whose connection
  broke after it was sent is retried elsewhere only when it is a read; for a write the outcome is
  unknown and the caller gets ``Unavailable``;
- the Store methods (get, range, txn, put, delete, compact, status, membership);
- watch: one streaming POST per watch, newline-delimited ``{"result": WatchResponse}`` objects,
  resumed on another endpoint after a broken connection from the next revision not yet seen.

etcd 3.4 reports the compaction revision only when it cancels a watch, so ``Compacted`` errors
from reads and ``Status.compact_revision`` find it by probing reads at old revisions (a binary
search, usually one request because the last answer is remembered as a floor).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp

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
    Member,
    Op,
    OpResult,
    Put,
    RangeResult,
    Status,
    Store,
    StoreError,
    TxnResult,
    Unavailable,
    prefix_end,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# gRPC status codes that the gateway puts in error bodies (google.golang.org/grpc/codes).
GRPC_INVALID_ARGUMENT = 3
GRPC_DEADLINE_EXCEEDED = 4
GRPC_NOT_FOUND = 5
GRPC_FAILED_PRECONDITION = 9
GRPC_OUT_OF_RANGE = 11
GRPC_UNAVAILABLE = 14

# etcd error texts (etcdserver/api/v3rpc/rpctypes) that decide the mapping.
ERR_COMPACTED = "required revision has been compacted"
ERR_FUTURE_REV = "required revision is a future revision"
ERR_TOO_MANY_REQUESTS = "too many requests"

# Every key (etcd's convention): from "\0" up to and including the largest key.
ALL_KEYS = "\x00"
# Probe key for revision/compaction probes: a single key, count only, so nothing is transferred.
PROBE_KEY = "\x00"

WATCH_RECONNECT_PAUSE_S = 0.1
# TCP connect bound: a member that does not even accept within this is skipped for the next one
# (nothing was sent, so that is safe for writes too).
CONNECT_TIMEOUT_S = 1.0

_COMPARE_TARGETS = {
    CompareTarget.MOD: ("MOD", "mod_revision"),
    CompareTarget.CREATE: ("CREATE", "create_revision"),
    CompareTarget.VERSION: ("VERSION", "version"),
    CompareTarget.VALUE: ("VALUE", "value"),
}
_COMPARE_RESULTS = {
    CompareResult.EQUAL: "EQUAL",
    CompareResult.NOT_EQUAL: "NOT_EQUAL",
    CompareResult.LESS: "LESS",
    CompareResult.GREATER: "GREATER",
}

# Connect failures: the request never left this host, so any request may go to another endpoint.
_NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,) + (
    (aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()
)
# Anything else on the wire: the server may or may not have acted on the request.
_IN_FLIGHT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


# -- encoding --------------------------------------------------------------------------------


def _enc_key(key: str) -> str:
    return base64.b64encode(key.encode("utf-8", "surrogateescape")).decode("ascii")


def _dec_key(raw: str) -> str:
    return base64.b64decode(raw).decode("utf-8", "surrogateescape")


def _enc_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _int(raw: Any) -> int:
    """An int64 field: a decimal string, or absent (zero)."""
    return int(raw) if raw else 0


def _kv(raw: JSON) -> KeyValue:
    return KeyValue(
        key=_dec_key(raw.get("key", "")),
        value=base64.b64decode(raw.get("value", "")),
        create_revision=_int(raw.get("create_revision")),
        mod_revision=_int(raw.get("mod_revision")),
        version=_int(raw.get("version")),
    )


def _revision(response: JSON) -> int:
    return _int(response.get("header", {}).get("revision"))


def _key_range(prefix: str, *, is_prefix: bool = True) -> JSON:
    """``key``/``range_end`` of a request; the empty prefix means every key."""
    if not is_prefix:
        return {"key": _enc_key(prefix)}
    if not prefix:
        return {"key": _enc_key(ALL_KEYS), "range_end": _enc_key(ALL_KEYS)}
    end = prefix_end(prefix)
    # prefix_end is "" only for keys of all-0xFF bytes: then the range runs to the end ("\0").
    return {"key": _enc_key(prefix), "range_end": _enc_key(end or ALL_KEYS)}


def _compare(compare: Compare) -> JSON:
    target, field = _COMPARE_TARGETS[compare.target]
    value = compare.value
    if compare.target is CompareTarget.VALUE:
        if not isinstance(value, bytes):
            raise InvalidRequest(f"a value compare needs bytes, got {type(value).__name__}")
        encoded: str = _enc_bytes(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"a {compare.target.value} compare needs an int, got {value!r}")
        encoded = str(value)
    return {
        "key": _enc_key(compare.key),
        "target": target,
        "result": _COMPARE_RESULTS[compare.result],
        field: encoded,
    }


def _request_op(op: Op) -> JSON:
    if isinstance(op, Put):
        return {
            "request_put": {"key": _enc_key(op.key), "value": _enc_bytes(op.value), "prev_kv": True}
        }
    if isinstance(op, Delete):
        return {
            "request_delete_range": {**_key_range(op.key, is_prefix=op.prefix), "prev_kv": True}
        }
    if isinstance(op, Get):
        return {"request_range": {"key": _enc_key(op.key)}}
    raise InvalidRequest(f"not a transaction op: {op!r}")


def _op_result(raw: JSON) -> OpResult:
    if "response_range" in raw:
        return OpResult(kvs=tuple(_kv(kv) for kv in raw["response_range"].get("kvs", ())))
    if "response_put" in raw:
        prev = raw["response_put"].get("prev_kv")
        return OpResult(prev_kvs=(_kv(prev),) if prev else ())
    if "response_delete_range" in raw:
        prevs = raw["response_delete_range"].get("prev_kvs", ())
        return OpResult(prev_kvs=tuple(_kv(kv) for kv in prevs))
    raise StoreError(f"etcd returned an op response this client does not know: {raw!r}")


def _is_write(ops: Sequence[Op]) -> bool:
    return any(isinstance(op, Put | Delete) for op in ops)


# -- error mapping ---------------------------------------------------------------------------


class _CompactedRevision(StoreError):
    """Internal: etcd said 'compacted' without saying up to where; EtcdStore fills that in."""


def _error(body: JSON | None, http_status: int, path: str) -> StoreError:
    """The StoreError for a gateway error body (``{"error", "code", "message"}``)."""
    if body is None:
        return StoreError(f"etcd {path}: HTTP {http_status} without a JSON body")
    message = str(body.get("message") or body.get("error") or body)
    code = _int(body.get("code") or body.get("grpc_code"))
    if ERR_COMPACTED in message:
        return _CompactedRevision(message)
    if ERR_FUTURE_REV in message:
        return FutureRevision(message)
    if code in (GRPC_UNAVAILABLE, GRPC_DEADLINE_EXCEEDED) or ERR_TOO_MANY_REQUESTS in message:
        return Unavailable(f"etcd {path}: {message}")
    if code in (GRPC_INVALID_ARGUMENT, GRPC_OUT_OF_RANGE, GRPC_NOT_FOUND, GRPC_FAILED_PRECONDITION):
        return InvalidRequest(f"etcd {path}: {message}")
    return StoreError(f"etcd {path}: {message} (grpc code {code}, HTTP {http_status})")


def _parse(payload: bytes) -> JSON | None:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class EtcdStore(Store):
    """Store over etcd's JSON gateway at ``endpoints`` (client URLs such as http://host:2379).

    ``timeout`` bounds each HTTP request (and each endpoint's connect for a watch). Requests go
    to one preferred endpoint and move on when it fails, so a healthy cluster serves every call
    from one member's keep-alive connections.
    """

    def __init__(self, endpoints: list[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._preferred = 0
        self._timeout = timeout
        connect = min(CONNECT_TIMEOUT_S, timeout)
        self._request_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
        # A watch is open-ended; only connecting is bounded. A member that dies resets the
        # connection, which resumes the watch elsewhere.
        self._watch_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Open watch streams, so that close() can end them (closing the session does not wake
        # a reader blocked on a streaming response).
        self._watch_streams: set[aiohttp.ClientResponse] = set()
        # Highest revision known to be at or below etcd's compaction point: compaction only
        # moves forward, so the probe for the compaction revision starts here.
        self._compact_floor = 0

    # -- transport -------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        """The shared session, made on first use because aiohttp binds it to the running loop."""
        if self._closed:
            raise StoreError("EtcdStore is closed")
        if self._session is None:
            # No connection limit: each watch holds a connection for its lifetime, and aiohttp's
            # default cap of 100 would let 100 watches starve every other request.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                headers={"Content-Type": "application/json"},
            )
        return self._session

    def _endpoint_order(self) -> list[int]:
        n = len(self._endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    def _failed(self, index: int, reason: BaseException | str) -> None:
        """Stop preferring a failing endpoint (unless a concurrent call already moved on)."""
        if self._preferred == index:
            self._preferred = (index + 1) % len(self._endpoints)
            log.warning(
                "etcd endpoint %s failed (%s); switching to %s",
                self._endpoints[index],
                reason,
                self._endpoints[self._preferred],
            )

    async def _send(self, path: str, body: JSON, *, idempotent: bool) -> JSON:
        """POST ``body`` to ``path`` on the first endpoint that answers; the decoded response.

        ``idempotent`` requests (reads) are retried on the next endpoint after any transport
        failure or transient etcd error; others only when the request never left this host.
        """
        session = self._get_session()
        data = json.dumps(body)
        failures: list[str] = []
        for index in self._endpoint_order():
            endpoint = self._endpoints[index]
            try:
                async with session.post(
                    endpoint + path, data=data, timeout=self._request_timeout
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
            except _NOT_SENT_ERRORS as exc:
                failures.append(f"{endpoint}: {type(exc).__name__}: {exc}")
                self._failed(index, exc)
                continue
            except _IN_FLIGHT_ERRORS as exc:
                self._failed(index, exc)
                if not idempotent:
                    raise Unavailable(
                        f"etcd {path} at {endpoint} failed after sending "
                        f"({type(exc).__name__}: {exc}); outcome unknown"
                    ) from exc
                failures.append(f"{endpoint}: {type(exc).__name__}: {exc}")
                continue
            parsed = _parse(payload)
            if status == 200 and parsed is not None:
                return parsed
            error = _error(parsed, status, path)
            if isinstance(error, Unavailable) and idempotent:
                failures.append(f"{endpoint}: {error}")
                self._failed(index, error)
                continue
            raise error
        raise Unavailable(f"no etcd endpoint answered {path}: " + "; ".join(failures))

    async def _call(self, path: str, body: JSON, *, idempotent: bool, revision: int = 0) -> JSON:
        """``_send``, with etcd's bare "compacted" turned into ``Compacted`` for ``revision``."""
        try:
            return await self._send(path, body, idempotent=idempotent)
        except _CompactedRevision as exc:
            raise Compacted(await self._compact_revision(), revision) from exc

    # -- reads -----------------------------------------------------------------------------

    async def _range(self, request: JSON, *, revision: int = 0) -> JSON:
        if revision < 0:
            raise InvalidRequest(f"revision must be >= 0, not {revision}")
        if revision:
            request["revision"] = str(revision)
        return await self._call("/v3/kv/range", request, idempotent=True, revision=revision)

    async def get(self, key: str, *, serializable: bool = False) -> tuple[KeyValue | None, int]:
        response = await self._range({"key": _enc_key(key), "serializable": serializable})
        kvs = response.get("kvs")
        return (_kv(kvs[0]) if kvs else None), _revision(response)

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_key: str | None = None,
        revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        """etcd's range; the result's ``revision`` is etcd's header revision.

        That is the store's revision when the read was served, also when ``revision`` asked
        for an older state: a caller paging through a snapshot keeps passing its own revision.

        ``count`` is etcd's: the keys from the start key (``continue_key`` if given) to the end
        of the prefix, which is what Kubernetes turns into remainingItemCount.
        """
        if limit < 0:
            raise InvalidRequest(f"limit must be >= 0, not {limit}")
        request = _key_range(prefix)
        if continue_key is not None:
            request["key"] = _enc_key(continue_key)
        if limit:
            request["limit"] = str(limit)
        request["serializable"] = serializable
        response = await self._range(request, revision=revision)
        kvs = [_kv(raw) for raw in response.get("kvs", ())]
        more = bool(response.get("more"))
        return RangeResult(
            kvs=kvs,
            revision=_revision(response),
            more=more,
            count=_int(response.get("count")),
            continue_key=kvs[-1].key + "\x00" if more and kvs else None,
        )

    async def _current_revision(self) -> int:
        """The cluster's revision, through a linearizable read (not a member's local view)."""
        return _revision(await self._range({"key": _enc_key(PROBE_KEY), "count_only": True}))

    async def _compact_revision(self) -> int:
        """etcd's compaction revision: the oldest revision a read may still ask for.

        0 when nothing was ever compacted (or only revision 1, which is indistinguishable).
        Binary search between the remembered floor (compacted) and the current revision
        (always readable); each probe is a count-only read of one key.
        """
        low = max(self._compact_floor, 1)
        if await self._readable(low):
            return self._compact_floor
        high = await self._current_revision()
        while high - low > 1:
            mid = (low + high) // 2
            if await self._readable(mid):
                high = mid
            else:
                low = mid
        self._compact_floor = max(self._compact_floor, high)
        return high

    async def _readable(self, revision: int) -> bool:
        """Whether a read at ``revision`` is allowed (not compacted away)."""
        probe = {"key": _enc_key(PROBE_KEY), "count_only": True, "revision": str(revision)}
        try:
            await self._send("/v3/kv/range", probe, idempotent=True)
        except _CompactedRevision:
            return False
        return True

    # -- writes ----------------------------------------------------------------------------

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        request = {
            "compare": [_compare(c) for c in compares],
            "success": [_request_op(op) for op in success],
            "failure": [_request_op(op) for op in failure],
        }
        writes = _is_write(success) or _is_write(failure)
        response = await self._call("/v3/kv/txn", request, idempotent=not writes)
        return TxnResult(
            succeeded=bool(response.get("succeeded")),
            revision=_revision(response),
            results=tuple(_op_result(raw) for raw in response.get("responses", ())),
        )

    async def put(self, key: str, value: bytes) -> int:
        response = await self._call(
            "/v3/kv/put", {"key": _enc_key(key), "value": _enc_bytes(value)}, idempotent=False
        )
        return _revision(response)

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        response = await self._call(
            "/v3/kv/deleterange", _key_range(key, is_prefix=prefix), idempotent=False
        )
        return _revision(response), _int(response.get("deleted"))

    async def compact(self, revision: int) -> None:
        """Compact at ``revision``: reads and watches may ask for ``revision`` and later.

        Like etcd, compacting at or below the current compaction point raises ``Compacted``
        and past the current revision ``FutureRevision``. Not physical: etcd frees the space
        in the background, but old revisions are unreadable as soon as this returns.
        """
        if revision <= 0:
            raise InvalidRequest(f"compaction revision must be > 0, not {revision}")
        await self._call(
            "/v3/kv/compaction", {"revision": str(revision)}, idempotent=False, revision=revision
        )
        self._compact_floor = max(self._compact_floor, revision)

    # -- cluster ---------------------------------------------------------------------------

    async def status(self) -> Status:
        members_resp, status_resp, revision = await asyncio.gather(
            self._call("/v3/cluster/member/list", {}, idempotent=True),
            self._call("/v3/maintenance/status", {}, idempotent=True),
            self._current_revision(),
        )
        compact_revision = await self._compact_revision()
        leader_id = _int(status_resp.get("leader"))
        members = []
        leader_name: str | None = None
        for raw in members_resp.get("members", ()):
            is_leader = leader_id != 0 and _int(raw.get("ID")) == leader_id
            name = raw.get("name", "")
            if is_leader:
                leader_name = name
            members.append(
                Member(
                    name=name,
                    peer_url=(raw.get("peerURLs") or [""])[0],
                    client_urls=tuple(raw.get("clientURLs", ())),
                    is_leader=is_leader,
                )
            )
        return Status(
            members=tuple(members),
            leader=leader_name,
            term=_int(status_resp.get("raftTerm")),
            applied_index=_int(status_resp.get("raftAppliedIndex")),
            revision=revision,
            compact_revision=compact_revision,
        )

    async def add_member(self, name: str, peer_url: str) -> None:
        """Announce a member at ``peer_url``; it must then start with ``--name name``.

        etcd learns a member's name only when that member starts, so ``name`` is logged here
        but not sent.
        """
        response = await self._call(
            "/v3/cluster/member/add", {"peerURLs": [peer_url]}, idempotent=False
        )
        log.info(
            "added etcd member %s (%s) as id %x; start it with --name %s "
            "--initial-cluster-state existing",
            name,
            peer_url,
            _int(response.get("member", {}).get("ID")),
            name,
        )

    async def remove_member(self, name: str) -> None:
        """Remove the member called ``name`` (or with hex id ``name``, for unstarted ones)."""
        listing = await self._call("/v3/cluster/member/list", {}, idempotent=True)
        for raw in listing.get("members", ()):
            member_id = _int(raw.get("ID"))
            if raw.get("name") == name or f"{member_id:x}" == name:
                await self._call(
                    "/v3/cluster/member/remove", {"ID": str(member_id)}, idempotent=False
                )
                return
        raise InvalidRequest(f"etcd has no member named {name!r}")

    # -- watch -----------------------------------------------------------------------------

    async def watch(
        self, prefix: str, *, start_revision: int = 0, progress_interval: float = 5.0
    ) -> AsyncGenerator[Event, None]:
        """Events under ``prefix``, resumed on another endpoint if the stream breaks.

        ``progress_interval`` cannot be honoured per watch: etcd sends progress notifications
        at its server-wide ``--experimental-watch-progress-notify-interval`` (10 min by
        default in 3.4). PROGRESS events are only yielded when they move the stream forward,
        because etcd 3.4 also notifies watches that start in the future with the current
        (older) revision.

        The watch is created on the first iteration, so with ``start_revision=0`` "now" is
        then; pass an explicit revision to have no gap.
        """
        if start_revision < 0:
            raise InvalidRequest(f"start_revision must be >= 0, not {start_revision}")
        del progress_interval  # server-side in etcd; see the docstring
        cursor = _WatchCursor(prefix, start_revision)
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        while True:
            index = self._endpoint_order()[0]
            try:
                async with aclosing(self._watch_stream(index, cursor)) as stream:
                    async for event in stream:
                        yield event
            except _IN_FLIGHT_ERRORS as exc:
                if self._closed:
                    raise StoreError("EtcdStore was closed while watching") from exc
                self._failed(index, exc)
                now = loop.time()
                if cursor.established:  # it worked until now: a fresh deadline to resume
                    give_up_at = None
                    cursor.established = False
                if give_up_at is None:
                    give_up_at = now + self._timeout
                elif now > give_up_at:
                    raise Unavailable(
                        f"watch on {prefix!r}: no etcd endpoint for {self._timeout:.1f}s "
                        f"(last: {type(exc).__name__}: {exc})"
                    ) from exc
                log.info(
                    "watch on %r resuming at revision %d: %s", prefix, cursor.next_revision, exc
                )
                await asyncio.sleep(WATCH_RECONNECT_PAUSE_S)

    async def _watch_stream(self, index: int, cursor: _WatchCursor) -> AsyncGenerator[Event, None]:
        """One watch stream on endpoint ``index``, from ``cursor`` on; it advances the cursor.

        Ends only by raising: transient failures as ``ConnectionError`` (the caller resumes
        elsewhere), the rest as ``StoreError``s.
        """
        create: JSON = {**_key_range(cursor.prefix), "prev_kv": True, "progress_notify": True}
        if cursor.next_revision:
            create["start_revision"] = str(cursor.next_revision)
        async with self._get_session().post(
            self._endpoints[index] + "/v3/watch",
            data=json.dumps({"create_request": create}),
            timeout=self._watch_timeout,
        ) as resp:
            self._watch_streams.add(resp)
            try:
                if resp.status != 200:
                    error = _error(_parse(await resp.read()), resp.status, "/v3/watch")
                    await self._raise_watch_error(error, cursor.next_revision)
                async for message in _json_lines(resp.content):
                    if "error" in message:
                        error = _error(message["error"], resp.status, "/v3/watch")
                        await self._raise_watch_error(error, cursor.next_revision)
                    result: JSON = message.get("result", {})
                    if result.get("created"):
                        cursor.established = True
                        if not cursor.next_revision:
                            cursor.next_revision = _revision(result) + 1
                        continue
                    if result.get("canceled"):
                        compact_revision = _int(result.get("compact_revision"))
                        if compact_revision:
                            raise Compacted(compact_revision, cursor.next_revision)
                        reason = result.get("cancel_reason") or "no reason given"
                        raise StoreError(f"etcd cancelled the watch on {cursor.prefix!r}: {reason}")
                    events = result.get("events")
                    if events:
                        for raw in events:
                            event = _event(raw)
                            cursor.next_revision = event.revision + 1
                            yield event
                        continue
                    reached = _revision(result)
                    if reached >= cursor.next_revision - 1:
                        cursor.next_revision = reached + 1
                        yield Event(EventType.PROGRESS, reached)
                raise ConnectionError("etcd closed the watch stream")
            finally:
                self._watch_streams.discard(resp)

    async def _raise_watch_error(self, error: StoreError, requested: int) -> NoReturn:
        """Raise a watch stream's error; ``ConnectionError`` (resume elsewhere) if transient."""
        if isinstance(error, Unavailable):
            raise ConnectionError(str(error))
        if isinstance(error, _CompactedRevision):
            raise Compacted(await self._compact_revision(), requested) from error
        raise error

    async def close(self) -> None:
        self._closed = True
        for stream in list(self._watch_streams):
            stream.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class _WatchCursor:
    """Where a watch is: what survives a reconnect to another endpoint."""

    prefix: str
    # The first revision not yet delivered; 0 until etcd says where "now" is.
    next_revision: int
    # A stream is open and etcd confirmed the watch (resets the reconnect deadline).
    established: bool = False


def _event(raw: JSON) -> Event:
    kv = _kv(raw.get("kv", {}))
    prev = raw.get("prev_kv")
    kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
    return Event(kind, kv.mod_revision, kv, _kv(prev) if prev else None)


async def _json_lines(stream: aiohttp.StreamReader) -> AsyncIterator[JSON]:
    """Newline-delimited JSON objects, of any size (``readline`` caps lines at 128 KiB)."""
    buffer = bytearray()
    async for chunk in stream.iter_any():
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                parsed = _parse(line)
                if parsed is None:
                    raise StoreError(f"etcd watch sent something that is not JSON: {line[:200]!r}")
                yield parsed
