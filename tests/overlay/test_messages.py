"""overlay.messages: exact sizes and offsets, round trips, refusal of malformed datagrams,
TAI64N."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.messages import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_INITIATION,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_TRANSPORT,
    MESSAGE_TRANSPORT_MIN_SIZE,
    MessageCookieReply,
    MessageError,
    MessageInitiation,
    MessageResponse,
    MessageTransport,
    message_type,
    tai64n,
    timestamp_after,
)

AnyMessage = MessageInitiation | MessageResponse | MessageCookieReply | MessageTransport
u32 = st.integers(min_value=0, max_value=2**32 - 1)


def blob(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


initiations = st.builds(MessageInitiation, u32, blob(32), blob(48), blob(28), blob(16), blob(16))
responses = st.builds(MessageResponse, u32, u32, blob(32), blob(16), blob(16), blob(16))
cookie_replies = st.builds(MessageCookieReply, u32, blob(24), blob(32))
transports = st.builds(
    MessageTransport, u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=200)
)

INITIATION = MessageInitiation(
    0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, mac1=b"1" * 16, mac2=b"2" * 16
)
RESPONSE = MessageResponse(7, 9, b"E" * 32, b"N" * 16, mac1=b"1" * 16, mac2=b"2" * 16)
COOKIE = MessageCookieReply(7, b"n" * 24, b"c" * 32)
TRANSPORT = MessageTransport(7, 1, b"x" * 16)
SAMPLES = [
    (INITIATION, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE),
    (RESPONSE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE),
    (COOKIE, MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE),
    (TRANSPORT, MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_MIN_SIZE),
]


@settings(max_examples=25, deadline=None)
@given(st.one_of(initiations, responses, cookie_replies, transports))
def test_every_message_round_trips(message: AnyMessage) -> None:
    wire = message.pack()
    assert type(message).unpack(wire) == message
    assert type(message).unpack(memoryview(bytearray(wire))) == message


@pytest.mark.parametrize(("message", "kind", "size"), SAMPLES)
def test_layout_type_word_and_size(message: AnyMessage, kind: int, size: int) -> None:
    wire = message.pack()
    assert len(wire) == size
    assert wire[:4] == bytes([kind, 0, 0, 0])
    assert message_type(wire) == kind


def test_field_offsets_are_the_whitepapers() -> None:
    wire = INITIATION.pack()
    assert wire[4:8] == bytes([1, 2, 3, 4])  # sender, little-endian
    assert wire[8:40] == b"E" * 32
    assert wire[40:88] == b"S" * 48
    assert wire[88:116] == b"T" * 28
    assert wire[116:132] == b"1" * 16 and wire[132:148] == b"2" * 16
    wire = RESPONSE.pack()
    assert wire[4:8] == (7).to_bytes(4, "little") and wire[8:12] == (9).to_bytes(4, "little")
    assert wire[12:44] == b"E" * 32 and wire[44:60] == b"N" * 16
    assert wire[60:76] == b"1" * 16 and wire[76:92] == b"2" * 16
    wire = COOKIE.pack()
    assert wire[8:32] == b"n" * 24 and wire[32:64] == b"c" * 32
    wire = MessageTransport(7, 0x0102030405060708, b"x" * 20).pack()
    assert wire[4:8] == (7).to_bytes(4, "little")
    assert wire[8:16] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert wire[16:] == b"x" * 20


def test_mac_spans_and_with_macs() -> None:
    bare = INITIATION.with_macs(bytes(16))
    assert bare.mac2 == bytes(16)
    assert bare.bytes_for_mac1() == INITIATION.pack()[:116]
    filled = bare.with_macs(b"m" * 16, b"k" * 16)
    assert filled.pack()[116:148] == b"m" * 16 + b"k" * 16
    assert filled.bytes_for_mac2() == filled.pack()[:132]
    assert filled.bytes_for_mac1() == bare.bytes_for_mac1()
    assert RESPONSE.bytes_for_mac1() == RESPONSE.pack()[:60]
    assert RESPONSE.bytes_for_mac2() == RESPONSE.pack()[:76]
    assert RESPONSE.with_macs(b"m" * 16).pack()[60:92] == b"m" * 16 + bytes(16)


@pytest.mark.parametrize(("message", "kind", "size"), SAMPLES)
def test_non_zero_reserved_bytes_are_refused(message: AnyMessage, kind: int, size: int) -> None:
    wire = message.pack()
    for position in (1, 2, 3):
        bad = bytearray(wire)
        bad[position] = 1
        with pytest.raises(MessageError):
            message_type(bytes(bad))
        with pytest.raises(MessageError):
            type(message).unpack(bytes(bad))


@pytest.mark.parametrize(("message", "kind", "size"), SAMPLES[:3])
def test_handshake_messages_of_the_wrong_length_are_refused(
    message: AnyMessage, kind: int, size: int
) -> None:
    wire = message.pack()
    for bad in (wire[:-1], wire + b"\x00", wire[:4]):
        with pytest.raises(MessageError):
            message_type(bad)
        with pytest.raises(MessageError):
            type(message).unpack(bad)


def test_transport_needs_header_and_tag() -> None:
    wire = TRANSPORT.pack()
    assert message_type(wire + b"more") == MESSAGE_TRANSPORT
    with pytest.raises(MessageError):
        message_type(wire[:-1])
    with pytest.raises(MessageError):
        MessageTransport.unpack(wire[:16])


@pytest.mark.parametrize(
    "data", [b"", b"\x01\x00\x00", bytes(148), b"\x05" + bytes(147), b"\xff" * 92]
)
def test_unknown_or_truncated_datagrams_are_refused(data: bytes) -> None:
    with pytest.raises(MessageError):
        message_type(data)


def test_unpacking_as_the_wrong_type_is_refused() -> None:
    with pytest.raises(MessageError):
        MessageResponse.unpack(INITIATION.pack())
    with pytest.raises(MessageError):
        MessageInitiation.unpack(TRANSPORT.pack() + bytes(116))


@pytest.mark.parametrize(
    "build",
    [
        lambda: MessageInitiation(-1, b"E" * 32, b"S" * 48, b"T" * 28),
        lambda: MessageInitiation(2**32, b"E" * 32, b"S" * 48, b"T" * 28),
        lambda: MessageInitiation(1, b"E" * 31, b"S" * 48, b"T" * 28),
        lambda: MessageInitiation(1, b"E" * 32, b"S" * 48, b"T" * 28, mac1=b"1"),
        lambda: MessageResponse(1, 2**32, b"E" * 32, b"N" * 16),
        lambda: MessageResponse(1, 2, b"E" * 32, b"N" * 17),
        lambda: MessageCookieReply(1, b"n" * 12, b"c" * 32),
        lambda: MessageTransport(1, 2**64, b"x" * 16),
        lambda: MessageTransport(1, 0, b"x" * 15),
    ],
)
def test_invalid_fields_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(MessageError):
        build()


# --- TAI64N -----------------------------------------------------------------------------------


def test_tai64n_layout() -> None:
    # 1700000000 s + 2^62 + 10 big-endian; 123456789 ns whitened to 0x07000000.
    assert tai64n(1_700_000_000.123456789) == bytes.fromhex("400000006553f10a07000000")
    assert tai64n(0.0) == bytes.fromhex("400000000000000a00000000")
    assert len(tai64n(1e9)) == 12
    with pytest.raises(ValueError):
        tai64n(-1.0)


def test_tai64n_whitens_nanoseconds_to_2_24() -> None:
    assert tai64n(100.0) == tai64n(100.0 + 0.0167)  # same 16.77 ms bucket
    assert tai64n(100.0 + 0.0168) != tai64n(100.0)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 4e9), st.floats(0, 4e9))
def test_tai64n_byte_order_is_time_order(a: float, b: float) -> None:
    ta, tb = tai64n(a), tai64n(b)
    if a <= b:
        assert not timestamp_after(ta, tb)
    if timestamp_after(ta, tb):
        assert a > b
    if b - a > 0.02:
        assert timestamp_after(tb, ta)


def test_timestamp_after_is_strict_and_checks_sizes() -> None:
    t = tai64n(5.0)
    assert not timestamp_after(t, t)
    assert timestamp_after(t, bytes(12))
    with pytest.raises(ValueError):
        timestamp_after(t, b"")
