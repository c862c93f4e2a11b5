"""Commands of the replicated log: how Store calls become bytes in Raft entries, and back.

The flow: ``txn_command`` turns a Store call into a plain tuple after checking everything that
can be checked without state (types, key sizes, duplicate keys in a branch); ``pack_batch``
msgpacks a list of such tuples, behind a CRC32, into one log entry; ``unpack_batch`` is the inverse and re-checks
every command, so a malformed or foreign entry never reaches the state machine.

Command tuples:
    ("txn", request_id, compares, success, failure)
        compare: (key, target, result, value)   target/result as in store.CompareTarget/Result
        op:      ("put", key, value) | ("del", key, prefix) | ("get", key)
    ("compact", request_id, revision)

``request_id`` is bytes (or None): the state machine remembers recent ids and answers a retried
command with the first result instead of applying it again.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import msgpack

from raftstore.store import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    Get,
    InvalidRequest,
    Op,
    Put,
    prefix_end,
)

MAX_KEY_BYTES = 1536  # etcd's default --max-request-bytes is 1.5 MiB; keys are far smaller
MAX_VALUE_BYTES = 3 * 1024 * 1024  # the API refuses bodies over 3 MiB; etcd allows 1.5 MiB
MAX_OPS = 128  # etcd's --max-txn-ops default

_TARGETS = {t.value for t in CompareTarget}
_RESULTS = {r.value for r in CompareResult}

Command = tuple[Any, ...]


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidRequest(f"key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidRequest("key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest("key must be valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise InvalidRequest(f"key longer than {MAX_KEY_BYTES} bytes")
    return key


def _check_request_id(request_id: object) -> bytes | None:
    if request_id is not None and not (isinstance(request_id, bytes) and 0 < len(request_id) <= 64):
        raise InvalidRequest("request id must be 1-64 bytes")
    return request_id


def _check_compare(raw: object) -> tuple[str, str, str, int | bytes]:
    if not isinstance(raw, (tuple, list)) or len(raw) != 4:
        raise InvalidRequest("compare must be (key, target, result, value)")
    key, target, result, value = raw
    _check_key(key)
    if target not in _TARGETS:
        raise InvalidRequest(f"unknown compare target {target!r}")
    if result not in _RESULTS:
        raise InvalidRequest(f"unknown compare result {result!r}")
    if target == CompareTarget.VALUE.value:
        if not isinstance(value, bytes):
            raise InvalidRequest("a value compare needs bytes")
    elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"a {target} compare needs a non-negative integer")
    return (key, target, result, value)


def _check_op(raw: object) -> tuple[Any, ...]:
    if not isinstance(raw, (tuple, list)) or not raw:
        raise InvalidRequest("op must be a non-empty tuple")
    kind = raw[0]
    if kind == "put" and len(raw) == 3:
        if not isinstance(raw[2], bytes):
            raise InvalidRequest("put value must be bytes")
        if len(raw[2]) > MAX_VALUE_BYTES:
            raise InvalidRequest(f"value larger than {MAX_VALUE_BYTES} bytes")
        return ("put", _check_key(raw[1]), raw[2])
    if kind == "del" and len(raw) == 3:
        if not isinstance(raw[2], bool):
            raise InvalidRequest("delete prefix flag must be a bool")
        key = raw[1]
        if raw[2] and key == "":
            return ("del", "", True)  # delete everything
        return ("del", _check_key(key), raw[2])
    if kind == "get" and len(raw) == 2:
        return ("get", _check_key(raw[1]))
    raise InvalidRequest(f"unknown op {kind!r}")


def _check_branch(raw: object) -> tuple[tuple[Any, ...], ...]:
    if not isinstance(raw, (tuple, list)):
        raise InvalidRequest("a transaction branch must be a list of ops")
    if len(raw) > MAX_OPS:
        raise InvalidRequest("too many operations in txn request")
    ops = tuple(_check_op(op) for op in raw)
    written: set[str] = set()
    ranges: list[tuple[str, str]] = []
    for op in ops:
        if op[0] == "put":
            if op[1] in written:
                raise InvalidRequest("duplicate key given in txn request")
            written.add(op[1])
        elif op[0] == "del":
            ranges.append((op[1], prefix_end(op[1]) if op[2] else op[1] + "\x00"))
    for start, end in ranges:
        for key in written:
            if start <= key and (end == "" or key < end):
                raise InvalidRequest("duplicate key given in txn request")
    return ops


def check_command(raw: object) -> Command:
    """The command as a canonical tuple, or InvalidRequest saying what is wrong with it."""
    if not isinstance(raw, (tuple, list)) or not raw:
        raise InvalidRequest("command must be a non-empty tuple")
    kind = raw[0]
    if kind == "txn" and len(raw) == 5:
        compares = raw[2]
        if not isinstance(compares, (tuple, list)):
            raise InvalidRequest("compares must be a list")
        if len(compares) > MAX_OPS:
            raise InvalidRequest("too many operations in txn request")
        return (
            "txn",
            _check_request_id(raw[1]),
            tuple(_check_compare(c) for c in compares),
            _check_branch(raw[3]),
            _check_branch(raw[4]),
        )
    if kind == "compact" and len(raw) == 3:
        revision = raw[2]
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise InvalidRequest("compact revision must be a non-negative integer")
        return ("compact", _check_request_id(raw[1]), revision)
    raise InvalidRequest(f"unknown command {kind!r}")


def _op_tuple(op: Op) -> tuple[Any, ...]:
    if isinstance(op, Put):
        return ("put", op.key, op.value)
    if isinstance(op, Delete):
        return ("del", op.key, op.prefix)
    if isinstance(op, Get):
        return ("get", op.key)
    raise InvalidRequest(f"not a transaction op: {op!r}")


def txn_command(
    request_id: bytes | None,
    compares: Sequence[Compare],
    success: Sequence[Op],
    failure: Sequence[Op],
) -> Command:
    """A checked txn command from Store arguments."""
    raw = (
        "txn",
        request_id,
        [
            (c.key, CompareTarget(c.target).value, CompareResult(c.result).value, c.value)
            for c in compares
        ],
        [_op_tuple(op) for op in success],
        [_op_tuple(op) for op in failure],
    )
    return check_command(raw)


def compact_command(request_id: bytes | None, revision: int) -> Command:
    return check_command(("compact", request_id, revision))


def pack_batch(commands: Sequence[Command]) -> bytes:
    """One log entry: a CRC32 of the body, then the msgpacked commands."""
    body = msgpack.packb(list(commands), use_bin_type=True)
    return struct.pack("<I", zlib.crc32(body)) + body


def unpack_batch(data: bytes) -> list[Command | InvalidRequest]:
    """Decode one log entry; each command checked, a bad one replaced by its error.

    A damaged entry (checksum mismatch, not msgpack) yields a single InvalidRequest.
    """
    if len(data) < 4 or struct.unpack_from("<I", data)[0] != zlib.crc32(data[4:]):
        return [InvalidRequest("log entry fails its checksum")]
    try:
        raw = msgpack.unpackb(data[4:], raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        return [InvalidRequest(f"undecodable log entry: {exc}")]
    if not isinstance(raw, tuple):
        return [InvalidRequest("log entry is not a list of commands")]
    out: list[Command | InvalidRequest] = []
    for item in raw:
        try:
            out.append(check_command(item))
        except InvalidRequest as exc:
            out.append(exc)
    return out
