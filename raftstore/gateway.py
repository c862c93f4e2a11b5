"""An etcd v3 JSON gateway over any Store, so etcd tooling can drive a Corral store member.

RaftStore members run in their own processes. Tests, benchmarks, ``EtcdStore`` and users' etcd
v3 JSON tooling reach them through this HTTP endpoint, which answers exactly as etcd 3.4's
grpc-gateway does (observed against etcd 3.4.23): ``POST /v3/kv/range`` and friends, protobuf
messages as JSON with base64 bytes, int64 as decimal strings and zero fields left out.

Flow, in the order of this file:

- spec constants: gRPC codes, the HTTP status grpc-gateway v1 gives each, etcd's error texts;
- ``GatewayError`` and the two error shapes: ``{"error", "message", "code"}`` for a unary call,
  ``{"error": {"grpc_code", "http_code", "message", "http_status"}}`` inside a watch stream;
- request decoding as Go's jsonpb does it (snake_case or lowerCamel names, int64 as number or
  string, enums by name or number, bytes as padded standard base64, null = absent, unknown
  fields ignored, only the first JSON value of a body read);
- key ranges: etcd's [key, range_end) mapped onto what a Store can read: one key, a prefix (or
  everything), or a prefix from a start key (how clients page); any other interval is refused
  as not supported by this server, never approximated;
- pure request decoders and response encoders;
- the aiohttp shell: unary handlers, the watch stream, ``GET /health`` and ``make_app``.

A watch request is etcd's bidirectional Watch stream over one HTTP request: JSON
``create_request`` / ``cancel_request`` / ``progress_request`` objects in the body, one
``{"result": WatchResponse}`` line per message in the chunked response. Unlike etcd, the response
ends once the request body is complete and no watch is left on the stream (etcd would keep an
empty stream open until the client hangs up).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from raftstore.commands import txn_command
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
    OpResult,
    Put,
    Status,
    Store,
    StoreError,
    Unavailable,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# -- spec constants --------------------------------------------------------------------------


class Code(enum.IntEnum):
    """gRPC status codes (google.golang.org/grpc/codes), as etcd's error bodies carry them."""

    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# grpc-gateway v1's runtime.HTTPStatusFromCode, which etcd 3.4 uses.
HTTP_STATUS: Final[Mapping[Code, int]] = {
    Code.OK: 200,
    Code.CANCELED: 408,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# etcd's texts (etcdserver/api/v3rpc/rpctypes, mvcc); clients match on them.
ERR_KEY_NOT_PROVIDED: Final = "etcdserver: key is not provided"
ERR_KEY_NOT_FOUND: Final = "etcdserver: key not found"  # also etcd's answer to an empty txn op
ERR_DUPLICATE_KEY: Final = "etcdserver: duplicate key given in txn request"
ERR_TOO_MANY_OPS: Final = "etcdserver: too many operations in txn request"
ERR_LEASE_NOT_FOUND: Final = "etcdserver: requested lease not found"
ERR_VALUE_PROVIDED: Final = "etcdserver: value is provided"
ERR_LEASE_PROVIDED: Final = "etcdserver: lease is provided"
ERR_COMPACTED: Final = "etcdserver: mvcc: required revision has been compacted"
ERR_FUTURE_REV: Final = "etcdserver: mvcc: required revision is a future revision"
ERR_TIMEOUT: Final = "etcdserver: request timed out"
ERR_WATCH_DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
NOT_SUPPORTED: Final = "not supported by this server"

MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024  # request bodies above this get 413
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
ETCD_API_VERSION: Final = "3.4.0"  # reported by /v3/maintenance/status
AUTO_WATCH_ID: Final = 0  # etcd: watch_id 0 in a create request means "assign one"
PROGRESS_WATCH_ID: Final = -1  # etcd 3.4 answers a progress_request with watch_id -1

HEALTH_KEY: Final = "health"  # read linearizably by GET /health
HEALTH_TIMEOUT_S: Final = 1.0  # etcd's health check gives its read one second
TERM_REFRESH_S: Final = 1.0  # how stale the raft_term in response headers may get
WATCH_PROGRESS_INTERVAL_S: Final = 5.0  # progress notifications for watches that ask
WATCH_IDLE_PROGRESS_S: Final = 600.0  # store wake-ups for watches that did not ask (etcd: 10 min)
WATCH_QUEUE_MESSAGES: Final = 256  # messages buffered per stream before store reads pause
WATCH_BATCH_BYTES: Final = 1024 * 1024  # past this, events of the next revision go in a new message
DISCONNECT_POLL_S: Final = 1.0  # how often an idle watch stream checks for a gone client

SORT_ORDERS: Final = ("NONE", "ASCEND", "DESCEND")
SORT_TARGETS: Final = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")
COMPARE_RESULTS: Final = ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")
COMPARE_TARGETS: Final = ("VERSION", "CREATE", "MOD", "VALUE", "LEASE")
WATCH_FILTERS: Final = ("NOPUT", "NODELETE")

_SORT_NONE, _SORT_ASCEND, _SORT_DESCEND = 0, 1, 2
_TARGET_KEY = 0

# -- errors ----------------------------------------------------------------------------------


class GatewayError(Exception):
    """A request this server answers with an etcd error body; nothing was written."""

    def __init__(self, code: Code, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def invalid(message: str) -> GatewayError:
    return GatewayError(Code.INVALID_ARGUMENT, message)


def unsupported(what: str) -> GatewayError:
    return invalid(f"{what} is {NOT_SUPPORTED}")


def from_store_error(exc: StoreError) -> GatewayError:
    """The etcd error a client would have got for the same failure from etcd."""
    if isinstance(exc, Compacted):
        return GatewayError(Code.OUT_OF_RANGE, ERR_COMPACTED)
    if isinstance(exc, FutureRevision):
        return GatewayError(Code.OUT_OF_RANGE, ERR_FUTURE_REV)
    if isinstance(exc, Unavailable):
        text = str(exc)
        return GatewayError(Code.UNAVAILABLE, f"etcdserver: {text}" if text else ERR_TIMEOUT)
    if isinstance(exc, InvalidRequest):
        return invalid(str(exc) or "invalid request")
    return GatewayError(Code.UNKNOWN, str(exc) or type(exc).__name__)


def error_body(err: GatewayError) -> JSON:
    """grpc-gateway v1's unary error body (``details`` is empty, hence absent)."""
    return {"error": err.message, "message": err.message, "code": int(err.code)}


def stream_error_chunk(err: GatewayError) -> JSON:
    """grpc-gateway v1's in-stream error message (int32 fields stay JSON numbers)."""
    status = err.http_status
    return {
        "error": {
            "grpc_code": int(err.code),
            "http_code": status,
            "message": err.message,
            "http_status": _HTTP_REASONS.get(status, "Internal Server Error"),
        }
    }


_HTTP_REASONS: Final[Mapping[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def too_large(size: int, limit: int) -> GatewayError:
    """A body over the limit: etcd's gRPC wording and code, but 413 rather than etcd's 429,
    which would invite a client to retry the same body."""
    return GatewayError(
        Code.RESOURCE_EXHAUSTED,
        f"grpc: received message larger than max ({size} vs. {limit})",
        http_status=413,
    )


# -- request decoding (jsonpb rules) ---------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_DECIMAL = re.compile(r"-?[0-9]+")


class Message:
    """One protobuf message read from JSON the way jsonpb reads it; errors are GatewayErrors."""

    __slots__ = ("_obj", "_where")

    def __init__(self, obj: object, where: str) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise invalid(f"{where}: expected a JSON object, got {_json_type(obj)}")
        self._obj: dict[str, Any] = obj
        self._where = where

    def _raw(self, name: str) -> Any:
        value = self._obj.get(name)
        if value is None:
            value = self._obj.get(_camel(name))
        return value

    def has(self, name: str) -> bool:
        return self._raw(name) is not None

    def _bad(self, name: str, expected: str, value: Any) -> GatewayError:
        return invalid(f"{self._where}.{name}: expected {expected}, got {_json_type(value)}")

    def get_bytes(self, name: str) -> bytes:
        value = self._raw(name)
        if value is None:
            return b""
        if not isinstance(value, str):
            raise self._bad(name, "a base64 string", value)
        try:
            # Go's base64.StdEncoding: padding required, CR and LF ignored.
            return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{self._where}.{name}: illegal base64 data") from None

    def get_int64(self, name: str) -> int:
        value = self._raw(name)
        if value is None:
            return 0
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise self._bad(name, "an int64 (number or decimal string)", value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise invalid(f"{self._where}.{name}: {number} does not fit in an int64")
        return number

    def get_bool(self, name: str) -> bool:
        value = self._raw(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._bad(name, "true or false", value)
        return value

    def _enum_value(self, name: str, value: Any, names: Sequence[str]) -> int:
        if isinstance(value, str) and value in names:
            return names.index(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return value
        raise invalid(f"{self._where}.{name}: unknown value {value!r} (one of {', '.join(names)})")

    def get_enum(self, name: str, names: Sequence[str]) -> int:
        value = self._raw(name)
        return 0 if value is None else self._enum_value(name, value, names)

    def get_enums(self, name: str, names: Sequence[str]) -> list[int]:
        return [self._enum_value(name, v, names) for v in self._list(name)]

    def get_message(self, name: str) -> Message | None:
        value = self._raw(name)
        return None if value is None else Message(value, f"{self._where}.{name}")

    def get_messages(self, name: str) -> list[Message]:
        return [Message(v, f"{self._where}.{name}[{i}]") for i, v in enumerate(self._list(name))]

    def _list(self, name: str) -> list[Any]:
        value = self._raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(name, "a JSON array", value)
        return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}" if len(repr(value)) < 40 else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_first_value(body: bytes, *, final: bool = True) -> tuple[Any, int] | None:
    """The first JSON value in ``body`` and the bytes it took, or None if there is none yet.

    Go's json.Decoder, which grpc-gateway uses, reads one value and ignores what follows.
    Raises ``GatewayError`` for a body that is not UTF-8 or whose first value is malformed,
    and ``_Incomplete`` when more bytes could still complete it (unless ``final``).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not final and exc.reason == "unexpected end of data":
            text = body[: exc.start].decode("utf-8")
        else:
            raise invalid("request body is not valid UTF-8") from None
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        return None
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _Incomplete(f"invalid JSON: {exc.msg} at offset {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        raise invalid(f"invalid JSON: {exc}") from None
    return value, len(text[:end].encode("utf-8"))


class _Incomplete(GatewayError):
    """Malformed JSON so far; at the end of the body it is the client's error."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.INVALID_ARGUMENT, message)


# -- key ranges ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRange:
    """What an etcd (key, range_end) means to a Store.

    One key; or every key under the prefix ``key`` ("" is the whole keyspace), starting at
    ``start`` when that is set. ``start`` is the Store's ``continue_key``, which every backend
    reads as an inclusive start key: it is how a client pages through a prefix, asking for
    [last key + "\0", prefix end).
    """

    key: str
    prefix: bool = False
    start: str | None = None

    def contains(self, key: str) -> bool:
        if not self.prefix:
            return key == self.key
        # For valid UTF-8, code point order is byte order, which is etcd's key order.
        return key.startswith(self.key) and (self.start is None or key >= self.start)


def key_text(raw: bytes, where: str) -> str:
    """A key as the Store's str; the Store interface has no room for non-UTF-8 keys."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise unsupported(f"{where}: a key that is not valid UTF-8") from None


def key_range(key: bytes, range_end: bytes, where: str) -> KeyRange:
    """Map [key, range_end) onto a Store read; other intervals are refused, never approximated.

    Served: one key (empty range_end, or key + "\0"); everything from ``key`` on (range_end
    "\0"); and [key, prefix_end(P)) for a prefix P of ``key``: the prefix P itself when
    key == P, else P from ``key`` on.
    """
    if not range_end or range_end == key + b"\0":
        return KeyRange(key_text(key, where))
    if range_end == b"\0":
        start = None if key in (b"", b"\0") else key_text(key, where)
        return KeyRange("", prefix=True, start=start)
    # prefix_end(P) == range_end exactly when P is range_end with its last byte decremented,
    # followed by any number of 0xFF bytes.
    base = range_end[:-1] + bytes([range_end[-1] - 1]) if range_end[-1] else None
    if base is None or not key.startswith(base):
        raise unsupported(
            f'{where}: a range_end that is neither empty (one key), "\\0" (from the key on) '
            "nor the prefix end of a prefix of the key"
        )
    end = len(base)
    while end < len(key) and key[end] == 0xFF:
        end += 1
    prefix = key_text(key[:end], where)
    return KeyRange(prefix, prefix=True, start=None if end == len(key) else key_text(key, where))


# -- decoded requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    range: KeyRange
    limit: int = 0
    revision: int = 0
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    sort_order: int = _SORT_NONE
    sort_target: int = _TARGET_KEY
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0

    @property
    def effective_sort_order(self) -> int:
        # etcd: a sort target other than KEY with no order given sorts ascending.
        if self.sort_order == _SORT_NONE and self.sort_target != _TARGET_KEY:
            return _SORT_ASCEND
        return self.sort_order

    @property
    def reads_everything(self) -> bool:
        """Sorting or filtering needs the whole range before ``limit`` applies (as in etcd)."""
        return (
            self.effective_sort_order != _SORT_NONE
            or self.min_mod_revision != 0
            or self.max_mod_revision != 0
            or self.min_create_revision != 0
            or self.max_create_revision != 0
        )


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: str
    value: bytes
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    range: KeyRange
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One request_* of a txn: the Store op plus what the response should show."""

    op: Op
    read: RangeRequest | None = None  # request_range: its options
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]


@dataclass(frozen=True, slots=True)
class WatchCreate:
    range: KeyRange
    start_revision: int = 0
    progress_notify: bool = False
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    watch_id: int = AUTO_WATCH_ID


def _required_key(m: Message, where: str) -> bytes:
    key = m.get_bytes("key")
    if not key:
        raise invalid(ERR_KEY_NOT_PROVIDED)
    return key


def decode_range(m: Message) -> RangeRequest:
    key = _required_key(m, "range")
    return RangeRequest(
        range=key_range(key, m.get_bytes("range_end"), "range"),
        limit=max(m.get_int64("limit"), 0),
        revision=max(m.get_int64("revision"), 0),  # etcd reads <= 0 as "current"
        serializable=m.get_bool("serializable"),
        keys_only=m.get_bool("keys_only"),
        count_only=m.get_bool("count_only"),
        sort_order=m.get_enum("sort_order", SORT_ORDERS),
        sort_target=m.get_enum("sort_target", SORT_TARGETS),
        min_mod_revision=m.get_int64("min_mod_revision"),
        max_mod_revision=m.get_int64("max_mod_revision"),
        min_create_revision=m.get_int64("min_create_revision"),
        max_create_revision=m.get_int64("max_create_revision"),
    )


def decode_put(m: Message) -> PutRequest:
    key = _required_key(m, "put")
    value, lease = m.get_bytes("value"), m.get_int64("lease")
    ignore_value, ignore_lease = m.get_bool("ignore_value"), m.get_bool("ignore_lease")
    if ignore_value and value:
        raise invalid(ERR_VALUE_PROVIDED)
    if ignore_lease and lease:
        raise invalid(ERR_LEASE_PROVIDED)
    if lease:
        raise GatewayError(Code.NOT_FOUND, ERR_LEASE_NOT_FOUND)  # this server has no leases
    return PutRequest(
        key=key_text(key, "put"),
        value=value,
        prev_kv=m.get_bool("prev_kv"),
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def decode_delete_range(m: Message) -> DeleteRangeRequest:
    key = _required_key(m, "deleterange")
    keys = key_range(key, m.get_bytes("range_end"), "deleterange")
    if keys.start is not None:
        raise unsupported("deleterange: a range that is not one key or a whole prefix")
    return DeleteRangeRequest(range=keys, prev_kv=m.get_bool("prev_kv"))


_COMPARE_TARGET_OF = (
    CompareTarget.VERSION,
    CompareTarget.CREATE,
    CompareTarget.MOD,
    CompareTarget.VALUE,
)
_COMPARE_FIELD_OF = ("version", "create_revision", "mod_revision", "value")
_COMPARE_RESULT_OF = (
    CompareResult.EQUAL,
    CompareResult.GREATER,
    CompareResult.LESS,
    CompareResult.NOT_EQUAL,
)


def decode_compare(m: Message) -> Compare:
    key = _required_key(m, "compare")
    target = m.get_enum("target", COMPARE_TARGETS)
    result = m.get_enum("result", COMPARE_RESULTS)
    if m.get_bytes("range_end"):
        raise unsupported("compare: a range_end")
    if target == COMPARE_TARGETS.index("LEASE"):
        raise unsupported("compare: target LEASE")
    field = _COMPARE_FIELD_OF[target]
    # Like etcd, read the field the target names; another union member set instead counts as 0.
    value: int | bytes = m.get_bytes(field) if field == "value" else m.get_int64(field)
    return Compare(
        key_text(key, "compare"), _COMPARE_TARGET_OF[target], _COMPARE_RESULT_OF[result], value
    )


def decode_txn_op(m: Message) -> TxnOp:
    if (r := m.get_message("request_range")) is not None:
        read = decode_range(r)
        if read.range.prefix:
            raise unsupported("txn: request_range with a range_end (only single keys)")
        if read.revision:
            raise unsupported("txn: request_range at a revision")
        return TxnOp(Get(read.range.key), read=read)
    if (p := m.get_message("request_put")) is not None:
        put = decode_put(p)
        if put.ignore_value or put.ignore_lease:
            raise unsupported("txn: request_put with ignore_value or ignore_lease")
        return TxnOp(Put(put.key, put.value), prev_kv=put.prev_kv)
    if (d := m.get_message("request_delete_range")) is not None:
        delete = decode_delete_range(d)
        return TxnOp(Delete(delete.range.key, delete.range.prefix), prev_kv=delete.prev_kv)
    if m.has("request_txn"):
        raise unsupported("txn: a nested request_txn")
    raise invalid(ERR_KEY_NOT_FOUND)  # what etcd answers for an empty op


def decode_txn(m: Message) -> TxnRequest:
    compares, success, failure = (
        m.get_messages("compare"),
        m.get_messages("success"),
        m.get_messages("failure"),
    )
    request = TxnRequest(
        compares=tuple(decode_compare(c) for c in compares),
        success=tuple(decode_txn_op(op) for op in success),
        failure=tuple(decode_txn_op(op) for op in failure),
    )
    try:  # the log's own checks (duplicate keys in a branch, sizes), before the store sees it
        txn_command(
            None,
            request.compares,
            [op.op for op in request.success],
            [op.op for op in request.failure],
        )
    except InvalidRequest as exc:
        raise invalid(f"etcdserver: {exc}") from None
    return request


def decode_watch_create(m: Message) -> WatchCreate:
    # etcd accepts an empty key here (and then watches a key that cannot exist).
    filters = m.get_enums("filters", WATCH_FILTERS)
    return WatchCreate(
        range=key_range(m.get_bytes("key"), m.get_bytes("range_end"), "watch"),
        start_revision=max(m.get_int64("start_revision"), 0),
        progress_notify=m.get_bool("progress_notify"),
        prev_kv=m.get_bool("prev_kv"),
        no_put=WATCH_FILTERS.index("NOPUT") in filters,
        no_delete=WATCH_FILTERS.index("NODELETE") in filters,
        watch_id=m.get_int64("watch_id"),
    )


# -- response encoding -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _set(out: JSON, name: str, value: Any) -> None:
    """proto3 JSON as etcd's gateway emits it: zero values absent, int64 as a string."""
    if not value:
        return
    if isinstance(value, bool):
        out[name] = True
    elif isinstance(value, int):
        out[name] = str(value)
    elif isinstance(value, bytes):
        out[name] = _b64(value)
    else:
        out[name] = value


def kv_json(kv: KeyValue, *, keys_only: bool = False) -> JSON:
    out: JSON = {}
    _set(out, "key", kv.key.encode("utf-8", "surrogateescape"))
    _set(out, "create_revision", kv.create_revision)
    _set(out, "mod_revision", kv.mod_revision)
    _set(out, "version", kv.version)
    if not keys_only:
        _set(out, "value", kv.value)
    return out


def event_json(event: Event, *, prev_kv: bool) -> JSON:
    """A mvccpb.Event; PUT is enum 0, so a PUT event has no "type" at all."""
    assert event.kv is not None
    out: JSON = {}
    if event.type is EventType.DELETE:
        out["type"] = "DELETE"
        # etcd's tombstone carries only the key and the deletion revision.
        out["kv"] = kv_json(
            KeyValue(event.kv.key, b"", 0, event.kv.mod_revision or event.revision, 0)
        )
    else:
        out["kv"] = kv_json(event.kv)
    if prev_kv and event.prev_kv is not None:
        out["prev_kv"] = kv_json(event.prev_kv)
    return out


def _event_size(event: Event) -> int:
    kvs = (event.kv, event.prev_kv)
    return sum(len(kv.key) + len(kv.value) for kv in kvs if kv is not None)


def finish_range(
    kvs: Sequence[KeyValue], count: int, more: bool, req: RangeRequest, header: JSON
) -> JSON:
    """Filter, sort, cut at ``limit`` and encode, in etcd's order (count is before filtering)."""
    picked = [
        kv
        for kv in kvs
        if not (req.max_mod_revision and kv.mod_revision > req.max_mod_revision)
        and not (req.min_mod_revision and kv.mod_revision < req.min_mod_revision)
        and not (req.max_create_revision and kv.create_revision > req.max_create_revision)
        and not (req.min_create_revision and kv.create_revision < req.min_create_revision)
    ]
    order = req.effective_sort_order
    if order != _SORT_NONE:
        sort_key: Callable[[KeyValue], Any] = (
            (lambda kv: kv.key.encode("utf-8", "surrogateescape")),
            (lambda kv: kv.version),
            (lambda kv: kv.create_revision),
            (lambda kv: kv.mod_revision),
            (lambda kv: kv.value),
        )[req.sort_target]
        picked.sort(key=sort_key, reverse=order == _SORT_DESCEND)
    if req.limit and len(picked) > req.limit:
        picked = picked[: req.limit]
        more = True
    out: JSON = {"header": header}
    if not req.count_only and picked:
        out["kvs"] = [kv_json(kv, keys_only=req.keys_only) for kv in picked]
    _set(out, "more", more)
    _set(out, "count", count)
    return out


def member_id_of(name: str) -> int:
    """A stable, non-zero uint64 id for a member the Store knows only by name."""
    return (
        int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big")
        or 1
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _error_response(err: GatewayError) -> web.Response:
    return web.json_response(error_body(err), status=err.http_status, dumps=_dumps)


# -- body reading ----------------------------------------------------------------------------


class _Body:
    """A request body read as JSON values, at most ``limit`` bytes of it buffered at a time."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._content = request.content
        self._limit = limit
        self._buf = bytearray()
        self._eof = False
        self._worth_parsing = False  # has the buffer changed in a way that may complete a value?
        length = request.content_length
        if length is not None and length > limit:
            raise too_large(length, limit)

    async def _read_chunk(self) -> None:
        chunk = await self._content.readany()
        if not chunk:
            self._eof = True
            self._worth_parsing = True
            return
        self._buf += chunk
        if len(self._buf) > self._limit:
            raise too_large(len(self._buf), self._limit)
        # Every JSON object or array ends in a bracket: parse only when one arrives.
        self._worth_parsing = self._worth_parsing or b"}" in chunk or b"]" in chunk

    async def next_value(self) -> tuple[bool, Any]:
        """(True, value) for the next value of a stream of them; (False, None) at the end."""
        while True:
            if self._worth_parsing or self._eof:
                self._worth_parsing = False
                try:
                    found = decode_first_value(bytes(self._buf), final=self._eof)
                except _Incomplete:
                    if self._eof:
                        raise
                    found = None
                if found is not None:
                    value, used = found
                    del self._buf[:used]
                    self._worth_parsing = True  # the rest may hold another complete value
                    return True, value
                if self._eof:
                    return False, None
            await self._read_chunk()

    async def first_message(self) -> Message:
        """A unary call's request: the body's first JSON value (empty body: empty message)."""
        while not self._eof:
            await self._read_chunk()
        found = decode_first_value(bytes(self._buf))
        return Message(found[0] if found is not None else {}, "request")


# -- the aiohttp shell -----------------------------------------------------------------------


class _Gateway:
    """Handlers over one Store; holds the ids and the cached raft term for response headers."""

    def __init__(
        self,
        store: Store,
        *,
        cluster_id: int,
        member_id: int,
        member_name: str | None,
        version: str,
        max_body_bytes: int,
        raft_term: Callable[[], int] | None,
        progress_interval: float,
    ) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.member_name = member_name
        self.version = version
        self.max_body_bytes = max_body_bytes
        self.progress_interval = progress_interval
        self._term_source = raft_term
        self._term = 0
        self._term_at = float("-inf")
        self._term_task: asyncio.Task[Status] | None = None
        self.streams: set[_WatchStream] = set()

    # -- headers --------------------------------------------------------------------------

    def header(self, revision: int) -> JSON:
        """A ResponseHeader; revision 0 (left out) is what etcd sends in member lists and in a
        watch canceled by compaction."""
        out: JSON = {}
        _set(out, "cluster_id", self.cluster_id)
        _set(out, "member_id", self.member_id)
        _set(out, "revision", revision)
        _set(out, "raft_term", self.term())
        return out

    def term(self) -> int:
        if self._term_source is not None:
            return self._term_source()
        self._refresh_term_soon()
        return self._term

    def note_status(self, status: Status) -> None:
        self._term = status.term
        self._term_at = asyncio.get_running_loop().time()

    def _refresh_term_soon(self) -> None:
        """Keep the header's raft_term fresh without making each request wait for status()."""
        now = asyncio.get_running_loop().time()
        if now - self._term_at < TERM_REFRESH_S or self._term_task is not None:
            return
        self._term_at = now
        self._term_task = asyncio.create_task(self.status(), name="gateway-term-refresh")
        self._term_task.add_done_callback(self._term_refreshed)

    def _term_refreshed(self, task: asyncio.Task[Any]) -> None:
        self._term_task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("gateway: status() for the raft term failed: %s", exc)

    async def status(self) -> Status:
        status = await self.store.status()
        self.note_status(status)
        return status

    def member_id_for(self, name: str, status: Status) -> int:
        if name == self.member_name or (self.member_name is None and len(status.members) == 1):
            return self.member_id
        return member_id_of(name)

    async def startup(self, app: web.Application) -> None:
        try:
            await self.status()
        except Exception as exc:  # a store without quorum yet must not stop the server
            log.warning("gateway: initial status() failed: %s", exc)

    async def shutdown(self, app: web.Application) -> None:
        for stream in list(self.streams):
            stream.stop()
        if self._term_task is not None:
            self._term_task.cancel()

    # -- unary calls ----------------------------------------------------------------------

    async def unary(
        self, request: web.Request, handle: Callable[[Message], Awaitable[JSON]]
    ) -> web.Response:
        """Decode, call, encode; every failure becomes an etcd error body, never a traceback."""
        try:
            message = await _Body(request, self.max_body_bytes).first_message()
            result = await handle(message)
        except GatewayError as err:
            return _error_response(err)
        except StoreError as exc:
            return _error_response(from_store_error(exc))
        except Exception:
            log.exception("gateway: %s failed", request.path)
            return _error_response(GatewayError(Code.INTERNAL, "internal error (see server log)"))
        return web.json_response(result, dumps=_dumps)

    async def range(self, m: Message) -> JSON:
        req = decode_range(m)
        return await self.do_range(req)

    async def do_range(self, req: RangeRequest) -> JSON:
        store, key = self.store, req.range.key
        if not req.range.prefix:
            if req.revision:
                # limit=1: under prefix ``key`` the key itself, if present, comes first.
                rr = await store.range(
                    key, limit=1, revision=req.revision, serializable=req.serializable
                )
                kvs = [kv for kv in rr.kvs[:1] if kv.key == key]
                revision = rr.revision
            else:
                kv, revision = await store.get(key, serializable=req.serializable)
                kvs = [kv] if kv is not None else []
            return finish_range(kvs, len(kvs), False, req, self.header(revision))
        rr = await store.range(
            key,
            limit=0 if req.reads_everything else req.limit,
            continue_key=req.range.start,
            revision=req.revision,
            serializable=req.serializable,
        )
        count = max(rr.count, len(rr.kvs))
        return finish_range(rr.kvs, count, rr.more, req, self.header(rr.revision))

    async def put(self, m: Message) -> JSON:
        req = decode_put(m)
        if req.ignore_value or req.ignore_lease:
            op_result, revision = await self._put_existing(req)
        else:
            result = await self.store.txn((), (Put(req.key, req.value),))
            op_result, revision = result.results[0], result.revision
        out: JSON = {"header": self.header(revision)}
        if req.prev_kv and op_result.prev_kvs:
            out["prev_kv"] = kv_json(op_result.prev_kvs[0])
        return out

    async def _put_existing(self, req: PutRequest) -> tuple[OpResult, int]:
        """ignore_value / ignore_lease: etcd requires the key to exist (no leases exist here)."""
        while True:
            if req.ignore_value:
                kv, _ = await self.store.get(req.key)
                if kv is None:
                    raise invalid(ERR_KEY_NOT_FOUND)
                guard = Compare.mod_revision(req.key, kv.mod_revision)
                value = kv.value
            else:
                guard = Compare(req.key, CompareTarget.CREATE, CompareResult.GREATER, 0)
                value = req.value
            result = await self.store.txn((guard,), (Put(req.key, value),))
            if result.succeeded:
                return result.results[0], result.revision
            if not req.ignore_value:
                raise invalid(ERR_KEY_NOT_FOUND)
            # The key changed between the read and the write: read it again.

    async def delete_range(self, m: Message) -> JSON:
        req = decode_delete_range(m)
        result = await self.store.txn((), (Delete(req.range.key, req.range.prefix),))
        op_result = result.results[0]
        out: JSON = {"header": self.header(result.revision)}
        _set(out, "deleted", op_result.deleted)
        if req.prev_kv and op_result.prev_kvs:
            out["prev_kvs"] = [kv_json(kv) for kv in op_result.prev_kvs]
        return out

    async def txn(self, m: Message) -> JSON:
        req = decode_txn(m)
        result = await self.store.txn(
            req.compares, [op.op for op in req.success], [op.op for op in req.failure]
        )
        ops = req.success if result.succeeded else req.failure
        out: JSON = {"header": self.header(result.revision)}
        _set(out, "succeeded", result.succeeded)
        sub_header: JSON = {}
        _set(sub_header, "revision", result.revision)
        responses = [
            self._op_response(op, op_result, sub_header)
            for op, op_result in zip(ops, result.results, strict=True)
        ]
        if responses:
            out["responses"] = responses
        return out

    @staticmethod
    def _op_response(op: TxnOp, result: OpResult, header: JSON) -> JSON:
        if isinstance(op.op, Get):
            assert op.read is not None
            kvs = list(result.kvs)
            return {"response_range": finish_range(kvs, len(kvs), False, op.read, dict(header))}
        out: JSON = {"header": dict(header)}
        if isinstance(op.op, Put):
            if op.prev_kv and result.prev_kvs:
                out["prev_kv"] = kv_json(result.prev_kvs[0])
            return {"response_put": out}
        _set(out, "deleted", result.deleted)
        if op.prev_kv and result.prev_kvs:
            out["prev_kvs"] = [kv_json(kv) for kv in result.prev_kvs]
        return {"response_delete_range": out}

    async def compaction(self, m: Message) -> JSON:
        revision = m.get_int64("revision")
        m.get_bool("physical")  # validated; compaction here is always complete on return
        await self.store.compact(revision)
        status = await self.status()
        return {"header": self.header(status.revision)}

    async def maintenance_status(self, m: Message) -> JSON:
        status = await self.status()
        out: JSON = {"header": self.header(status.revision), "version": self.version}
        if status.leader:
            _set(out, "leader", self.member_id_for(status.leader, status))
        _set(out, "raftIndex", status.applied_index)
        _set(out, "raftTerm", status.term)
        _set(out, "raftAppliedIndex", status.applied_index)
        return out

    async def member_list(self, m: Message) -> JSON:
        status = await self.status()
        members = []
        for member in status.members:
            entry: JSON = {}
            _set(entry, "ID", self.member_id_for(member.name, status))
            _set(entry, "name", member.name)
            _set(entry, "peerURLs", [member.peer_url] if member.peer_url else [])
            _set(entry, "clientURLs", list(member.client_urls))
            members.append(entry)
        # etcd's cluster calls leave the revision out of the header.
        out: JSON = {"header": self.header(0)}
        if members:
            out["members"] = members
        return out

    async def health(self, request: web.Request) -> web.Response:
        """etcd's /health: healthy when a linearizable read succeeds within a second."""
        healthy = True
        try:
            await asyncio.wait_for(self.store.get(HEALTH_KEY), HEALTH_TIMEOUT_S)
        except (TimeoutError, StoreError) as exc:
            log.info("gateway: health check failed: %s", exc or type(exc).__name__)
            healthy = False
        except Exception:
            log.exception("gateway: health check failed")
            healthy = False
        body = '{"health":"true"}' if healthy else '{"health":"false"}'
        return web.Response(text=body, status=200 if healthy else 503, content_type="text/plain")

    # -- watch ----------------------------------------------------------------------------

    async def watch(self, request: web.Request) -> web.StreamResponse:
        try:
            body = _Body(request, self.max_body_bytes)
            found, value = await body.next_value()
            create = Message(value if found else {}, "request").get_message("create_request")
            if create is None:
                raise invalid(
                    f"watch: the first request must be a create_request ({NOT_SUPPORTED})"
                )
            first = decode_watch_create(create)
            created_revision = (await self.status()).revision
        except GatewayError as err:
            return _error_response(err)
        except StoreError as exc:
            return _error_response(from_store_error(exc))
        except Exception:
            log.exception("gateway: /v3/watch failed")
            return _error_response(GatewayError(Code.INTERNAL, "internal error (see server log)"))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = _WatchStream(self, request, response, body)
        self.streams.add(stream)
        try:
            await stream.run(first, created_revision)
        finally:
            self.streams.discard(stream)
        return response


@dataclass(slots=True)
class _Watcher:
    id: int
    create: WatchCreate
    revision: int  # the last revision this watcher told the client about
    task: asyncio.Task[None] | None = None


class _WatchStream:
    """One HTTP watch request: etcd's Watch stream with its watchers, reader and writer.

    Watchers and the body reader put messages on one bounded queue; ``run`` writes them out in
    order. The stream ends when the request body is done and no watcher is left, on a stream
    error, when the client goes away, or when the server shuts down.
    """

    def __init__(
        self, gw: _Gateway, request: web.Request, response: web.StreamResponse, body: _Body
    ) -> None:
        self._gw = gw
        self._request = request
        self._response = response
        self._body = body
        self._out: asyncio.Queue[JSON | None] = asyncio.Queue(WATCH_QUEUE_MESSAGES)
        self._watchers: dict[int, _Watcher] = {}
        self._next_id = 0
        self._body_done = False
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        try:
            self._out.put_nowait(None)
        except asyncio.QueueFull:
            pass  # the writer checks _stopping after every message

    def _maybe_finish(self) -> None:
        if self._body_done and not self._watchers:
            self.stop()

    async def run(self, first: WatchCreate, created_revision: int) -> None:
        await self._start(first, created_revision)
        reader = asyncio.create_task(self._read_requests(), name="gateway-watch-reader")
        try:
            await self._write_loop()
        finally:
            tasks = [reader] + [w.task for w in self._watchers.values() if w.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_loop(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self._out.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if self._client_gone():
                    return
                continue
            if item is None:
                return
            try:
                await self._response.write((_dumps(item) + "\n").encode())
            except ConnectionError:
                return
            if self._stopping and self._out.empty():
                return

    def _client_gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()

    async def _send_result(self, result: JSON) -> None:
        await self._out.put({"result": result})

    async def _fail(self, err: GatewayError) -> None:
        """A stream-level error ends every watch on the stream, as a gRPC stream error would."""
        await self._out.put(stream_error_chunk(err))
        self.stop()

    # -- requests from the body -----------------------------------------------------------

    async def _read_requests(self) -> None:
        try:
            while True:
                found, value = await self._body.next_value()
                if not found:
                    return
                await self._dispatch(Message(value, "request"))
        except GatewayError as err:
            # grpc-gateway stops reading a body it cannot decode; the watches go on.
            log.info("gateway: watch stream: ignoring the rest of the request body: %s", err)
        except Exception as exc:  # the client went away mid-body
            log.debug("gateway: watch stream: request body ended: %r", exc)
        finally:
            self._body_done = True
            self._maybe_finish()

    async def _dispatch(self, m: Message) -> None:
        if (c := m.get_message("create_request")) is not None:
            try:
                create = decode_watch_create(c)
            except GatewayError as err:
                await self._refuse(err.message)
                return
            try:
                created_revision = (await self._gw.status()).revision
            except StoreError as exc:
                await self._refuse(from_store_error(exc).message)
                return
            if not await self._start(create, created_revision):
                await self._refuse(ERR_WATCH_DUPLICATE_ID)
        elif (c := m.get_message("cancel_request")) is not None:
            watcher = self._watchers.pop(c.get_int64("watch_id"), None)
            if watcher is None:
                return  # etcd ignores a cancel for a watch it does not have
            if watcher.task is not None:
                watcher.task.cancel()
            await self._send_result(self._canceled(watcher))
            self._maybe_finish()
        elif m.get_message("progress_request") is not None and self._watchers:
            # Every watcher has told the client everything up to its own revision.
            reached = min(w.revision for w in self._watchers.values())
            await self._send_result(
                {"header": self._gw.header(reached), "watch_id": str(PROGRESS_WATCH_ID)}
            )

    async def _refuse(self, reason: str) -> None:
        """A create that fails once the stream is open: etcd's created+canceled answer."""
        result: JSON = {"header": self._gw.header(0), "watch_id": str(PROGRESS_WATCH_ID)}
        result.update(created=True, canceled=True, cancel_reason=reason)
        await self._send_result(result)

    def _canceled(self, watcher: _Watcher) -> JSON:
        result: JSON = {"header": self._gw.header(watcher.revision)}
        _set(result, "watch_id", watcher.id)
        result["canceled"] = True
        return result

    # -- watchers -------------------------------------------------------------------------

    async def _start(self, create: WatchCreate, created_revision: int) -> bool:
        """Answer "created" and start the watcher; False if its watch_id is already in use.

        The created message is queued here, in request order, so that a cancel right behind the
        create can never overtake it.
        """
        watch_id = create.watch_id
        if watch_id == AUTO_WATCH_ID:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            return False
        watcher = _Watcher(watch_id, create, created_revision)
        self._watchers[watch_id] = watcher
        created: JSON = {"header": self._gw.header(created_revision)}
        _set(created, "watch_id", watch_id)
        created["created"] = True
        await self._send_result(created)
        watcher.task = asyncio.create_task(
            self._run_watcher(watcher), name=f"gateway-watch-{watch_id}"
        )
        return True

    async def _run_watcher(self, w: _Watcher) -> None:
        # An explicit start revision: "now" is the revision the created header announced.
        start = w.create.start_revision or w.revision + 1
        interval = self._gw.progress_interval if w.create.progress_notify else WATCH_IDLE_PROGRESS_S
        events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(WATCH_QUEUE_MESSAGES)
        pump = asyncio.create_task(
            self._pump(w.create.range.key, start, interval, events), name=f"gateway-pump-{w.id}"
        )
        try:
            while True:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                if not await self._deliver(w, batch):
                    return
        except Compacted as exc:
            result: JSON = {"header": self._gw.header(0)}
            _set(result, "watch_id", w.id)
            result["canceled"] = True
            _set(result, "compact_revision", exc.compact_revision)
            await self._send_result(result)
        except StoreError as exc:
            await self._fail(from_store_error(exc))
        except Exception:
            log.exception("gateway: watch %d failed", w.id)
            await self._fail(GatewayError(Code.INTERNAL, "internal error (see server log)"))
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if self._watchers.get(w.id) is w:
                del self._watchers[w.id]
                self._maybe_finish()

    async def _pump(
        self,
        prefix: str,
        start: int,
        interval: float,
        out: asyncio.Queue[Event | BaseException | None],
    ) -> None:
        """Move the Store's events onto ``out`` so the watcher can batch what has arrived."""
        events = self._gw.store.watch(prefix, start_revision=start, progress_interval=interval)
        try:
            async for event in events:
                await out.put(event)
        except Exception as exc:
            await out.put(exc)
        else:
            await out.put(None)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _deliver(self, w: _Watcher, batch: list[Event | BaseException | None]) -> bool:
        """Send what ``batch`` holds; False once the watcher is finished."""
        pending: list[Event] = []
        pending_bytes = 0

        async def flush() -> None:
            nonlocal pending_bytes
            pending_bytes = 0
            if not pending:
                return
            w.revision = max(w.revision, pending[-1].revision)
            result: JSON = {"header": self._gw.header(w.revision)}
            _set(result, "watch_id", w.id)
            result["events"] = [event_json(e, prev_kv=w.create.prev_kv) for e in pending]
            pending.clear()
            await self._send_result(result)

        for item in batch:
            if isinstance(item, BaseException):
                await flush()
                raise item
            if item is None:
                await flush()
                result: JSON = {"header": self._gw.header(w.revision)}
                _set(result, "watch_id", w.id)
                result.update(canceled=True, cancel_reason="the store ended the watch")
                await self._send_result(result)
                return False
            if item.type is EventType.PROGRESS:
                await flush()
                w.revision = max(w.revision, item.revision)
                if w.create.progress_notify:
                    result = {"header": self._gw.header(item.revision)}
                    _set(result, "watch_id", w.id)
                    await self._send_result(result)
                continue
            if item.kv is None or not w.create.range.contains(item.kv.key):
                continue
            if (item.type is EventType.PUT and w.create.no_put) or (
                item.type is EventType.DELETE and w.create.no_delete
            ):
                continue
            # Messages stay bounded, but one revision's events are never split (etcd splits
            # only when asked to "fragment").
            if pending_bytes >= WATCH_BATCH_BYTES and item.revision != pending[-1].revision:
                await flush()
            pending.append(item)
            pending_bytes += _event_size(item)
        await flush()
        return True


def make_app(
    store: Store,
    *,
    cluster_id: int,
    member_id: int,
    member_name: str | None = None,
    version: str = ETCD_API_VERSION,
    max_body_bytes: int = MAX_REQUEST_BYTES,
    raft_term: Callable[[], int] | None = None,
    progress_interval: float = WATCH_PROGRESS_INTERVAL_S,
) -> web.Application:
    """An aiohttp app serving etcd 3.4's v3 JSON gateway API over ``store``.

    ``member_name`` is this member's name in ``store.status().members`` (it gets ``member_id``;
    other members get ids derived from their names). ``raft_term``, if given, is read for every
    response header; otherwise the term comes from ``store.status()``, refreshed at most every
    second in the background. ``progress_interval`` is how often watches that set
    ``progress_notify`` hear progress (etcd's --experimental-watch-progress-notify-interval).
    """
    gw = _Gateway(
        store,
        cluster_id=cluster_id,
        member_id=member_id,
        member_name=member_name,
        version=version,
        max_body_bytes=max_body_bytes,
        raft_term=raft_term,
        progress_interval=progress_interval,
    )
    app = web.Application(client_max_size=max_body_bytes)
    unary: dict[str, Callable[[Message], Awaitable[JSON]]] = {
        "/v3/kv/range": gw.range,
        "/v3/kv/put": gw.put,
        "/v3/kv/deleterange": gw.delete_range,
        "/v3/kv/txn": gw.txn,
        "/v3/kv/compaction": gw.compaction,
        "/v3/maintenance/status": gw.maintenance_status,
        "/v3/cluster/member/list": gw.member_list,
    }
    for path, handle in unary.items():
        app.router.add_post(path, _bind(gw, handle))
    app.router.add_post("/v3/watch", gw.watch)
    app.router.add_get("/health", gw.health)
    app.on_startup.append(gw.startup)
    app.on_shutdown.append(gw.shutdown)
    return app


def _bind(
    gw: _Gateway, handle: Callable[[Message], Awaitable[JSON]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await gw.unary(request, handle)

    return handler
