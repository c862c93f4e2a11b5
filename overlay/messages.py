"""WireGuard's four wire formats (whitepaper section 5.4), as frozen dataclasses, and TAI64N.

Every message starts with a little-endian 32-bit word holding the type (1..4) in its low byte and
three reserved zero bytes; indices are little-endian 32-bit, the transport counter little-endian
64-bit. ``message_type`` classifies a datagram before anything else looks at it: it refuses a
reserved byte that is not zero, an unknown type and a length that does not fit the type, so the
rest of the overlay only ever unpacks well-formed buffers.

Each dataclass validates its fields when built, ``pack()`` produces exactly the wire bytes and
``unpack(data)`` parses them back (raising ``MessageError``). Key, tag, MAC and nonce sizes come
from ``overlay.crypto``. The handshake messages carry mac1 and mac2 as plain fields: ``noise.py``
leaves them zero, and ``cookie.py`` computes and checks them on the packed bytes (the last 32).
Both handshake messages share ``_HandshakeMACs``: ``bytes_for_mac1()`` (the message up to mac1)
and ``bytes_for_mac2()`` (up to mac2) are the exact spans the whitepaper's section 5.4.4 covers,
and ``with_macs`` returns a copy with the two fields set.

``tai64n`` makes the 12-byte timestamp an initiation carries, as wireguard-go does: big-endian
seconds since 1970 plus 2^62 + 10 (TAI64's label, with TAI-UTC's 10 s), then big-endian
nanoseconds rounded down to a multiple of 2^24 ns (~16.8 ms), which whitens the clock a passive
observer could read while keeping timestamps from one host ordered. Because the layout is
big-endian and fixed-width, byte-wise comparison is chronological order (``timestamp_after``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import ClassVar, Self

from overlay.crypto import KEY_LEN, MAC_LEN, MAX_COUNTER, TAG_LEN, XNONCE_LEN

MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4

MESSAGE_INITIATION_SIZE = 148  # bytes
MESSAGE_RESPONSE_SIZE = 92  # bytes
MESSAGE_COOKIE_REPLY_SIZE = 64  # bytes
MESSAGE_TRANSPORT_HEADER_SIZE = 16  # bytes: type, receiver, counter
MESSAGE_TRANSPORT_MIN_SIZE = 32  # bytes: header + Poly1305 tag (a keepalive)

INDEX_BITS = 32  # session indices (sender, receiver) are 32-bit little-endian
TIMESTAMP_SIZE = 12  # bytes, TAI64N
ENCRYPTED_STATIC_SIZE = KEY_LEN + TAG_LEN
ENCRYPTED_TIMESTAMP_SIZE = TIMESTAMP_SIZE + TAG_LEN
ENCRYPTED_NOTHING_SIZE = TAG_LEN
ENCRYPTED_COOKIE_SIZE = MAC_LEN + TAG_LEN

#: TAI64 label for 1970 (2^62) plus the 10 s TAI was ahead of UTC then, as the kernel module
#: and wireguard-go write it.
TAI64N_BASE = 2**62 + 10
#: Nanoseconds are rounded down to a multiple of 2^24 ns to whiten the timestamp.
TAI64N_WHITENER_MASK = 2**24 - 1

_ZERO_MAC = bytes(MAC_LEN)
_SIZES = {
    MESSAGE_INITIATION: MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE: MESSAGE_RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: MESSAGE_COOKIE_REPLY_SIZE,
}
_TAI64N = struct.Struct(">QI")

Buffer = bytes | bytearray | memoryview


class MessageError(ValueError):
    """A datagram or field that is not a well-formed WireGuard message."""


def message_type(data: Buffer) -> int:
    """The type of a datagram, after checking its reserved bytes and its length for that type."""
    if len(data) < 4:
        raise MessageError("datagram too short")
    word = int.from_bytes(data[:4], "little")
    if word == MESSAGE_TRANSPORT:
        if len(data) < MESSAGE_TRANSPORT_MIN_SIZE:
            raise MessageError("transport message too short")
        return word
    size = _SIZES.get(word)
    if size is None:
        raise MessageError("unknown message type or non-zero reserved bytes")
    if len(data) != size:
        raise MessageError(f"type {word} message must be {size} bytes, got {len(data)}")
    return word


def _check_index(value: int, what: str) -> None:
    if not 0 <= value < 2**INDEX_BITS:
        raise MessageError(f"{what} must be a 32-bit unsigned integer")


def _check_bytes(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise MessageError(f"{what} must be {size} bytes")


def _expect(data: Buffer, kind: int) -> None:
    if message_type(data) != kind:
        raise MessageError(f"not a type {kind} message")


class _HandshakeMACs:
    """What the two handshake messages share: mac1 and mac2 end the packed message."""

    def pack(self) -> bytes:
        raise NotImplementedError

    def bytes_for_mac1(self) -> bytes:
        """The bytes mac1 covers: the whole message up to mac1."""
        return self.pack()[: -2 * MAC_LEN]

    def bytes_for_mac2(self) -> bytes:
        """The bytes mac2 covers: the whole message up to mac2 (mac1 included)."""
        return self.pack()[:-MAC_LEN]

    def with_macs(self, mac1: bytes, mac2: bytes = _ZERO_MAC) -> Self:
        """A copy with mac1 and mac2 set (mac2 zero unless given)."""
        return replace(self, mac1=mac1, mac2=mac2)  # type: ignore[type-var]  # subclasses are dataclasses


@dataclass(frozen=True)
class MessageInitiation(_HandshakeMACs):
    """Type 1: the initiator's ephemeral key, its encrypted static key and timestamp, two MACs."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = _ZERO_MAC
    mac2: bytes = _ZERO_MAC

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II32s48s28s16s16s")

    def __post_init__(self) -> None:
        _check_index(self.sender, "sender")
        _check_bytes(self.ephemeral, KEY_LEN, "ephemeral")
        _check_bytes(self.encrypted_static, ENCRYPTED_STATIC_SIZE, "encrypted static")
        _check_bytes(self.encrypted_timestamp, ENCRYPTED_TIMESTAMP_SIZE, "encrypted timestamp")
        _check_bytes(self.mac1, MAC_LEN, "mac1")
        _check_bytes(self.mac2, MAC_LEN, "mac2")

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: Buffer) -> MessageInitiation:
        _expect(data, MESSAGE_INITIATION)
        _, *fields = cls._STRUCT.unpack(data)
        return cls(*fields)


@dataclass(frozen=True)
class MessageResponse(_HandshakeMACs):
    """Type 2: the responder's ephemeral key, an empty authenticated payload, two MACs."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = _ZERO_MAC
    mac2: bytes = _ZERO_MAC

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<III32s16s16s16s")

    def __post_init__(self) -> None:
        _check_index(self.sender, "sender")
        _check_index(self.receiver, "receiver")
        _check_bytes(self.ephemeral, KEY_LEN, "ephemeral")
        _check_bytes(self.encrypted_nothing, ENCRYPTED_NOTHING_SIZE, "encrypted nothing")
        _check_bytes(self.mac1, MAC_LEN, "mac1")
        _check_bytes(self.mac2, MAC_LEN, "mac2")

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: Buffer) -> MessageResponse:
        _expect(data, MESSAGE_RESPONSE)
        _, *fields = cls._STRUCT.unpack(data)
        return cls(*fields)


@dataclass(frozen=True)
class MessageCookieReply:
    """Type 3: a cookie encrypted with XChaCha20-Poly1305 under a random 24-byte nonce."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II24s32s")

    def __post_init__(self) -> None:
        _check_index(self.receiver, "receiver")
        _check_bytes(self.nonce, XNONCE_LEN, "nonce")
        _check_bytes(self.encrypted_cookie, ENCRYPTED_COOKIE_SIZE, "encrypted cookie")

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie
        )

    @classmethod
    def unpack(cls, data: Buffer) -> MessageCookieReply:
        _expect(data, MESSAGE_COOKIE_REPLY)
        _, *fields = cls._STRUCT.unpack(data)
        return cls(*fields)


@dataclass(frozen=True)
class MessageTransport:
    """Type 4: receiver index, 64-bit counter (the AEAD nonce), then ciphertext and tag."""

    receiver: int
    counter: int
    encrypted: bytes

    HEADER: ClassVar[struct.Struct] = struct.Struct("<IIQ")

    def __post_init__(self) -> None:
        _check_index(self.receiver, "receiver")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise MessageError("counter must be a 64-bit unsigned integer")
        if not isinstance(self.encrypted, bytes) or len(self.encrypted) < TAG_LEN:
            raise MessageError("transport payload shorter than its tag")

    def pack(self) -> bytes:
        return self.HEADER.pack(MESSAGE_TRANSPORT, self.receiver, self.counter) + self.encrypted

    @classmethod
    def unpack(cls, data: Buffer) -> MessageTransport:
        _expect(data, MESSAGE_TRANSPORT)
        _, receiver, counter = cls.HEADER.unpack_from(data)
        return cls(receiver, counter, bytes(data[MESSAGE_TRANSPORT_HEADER_SIZE:]))


def tai64n(now: float) -> bytes:
    """The whitened TAI64N label of ``now`` (seconds since the Unix epoch)."""
    seconds = math.floor(now)
    nanoseconds = min(int((now - seconds) * 1_000_000_000), 999_999_999)
    if seconds < 0:
        raise ValueError("time before 1970")
    return _TAI64N.pack(TAI64N_BASE + seconds, nanoseconds & ~TAI64N_WHITENER_MASK)


def timestamp_after(newer: bytes, older: bytes) -> bool:
    """Whether TAI64N ``newer`` is strictly later than ``older`` (byte order is time order)."""
    if len(newer) != TIMESTAMP_SIZE or len(older) != TIMESTAMP_SIZE:
        raise ValueError("TAI64N timestamps are 12 bytes")
    return newer > older
