"""The channel protocols of exec and attach, as tables: subprotocol negotiation, message framing,
resize and close decoding, and the exit Status each protocol puts on the error stream."""

from __future__ import annotations

import json

import pytest

from nodeagent import streams
from nodeagent.streams import PROTOCOL_V1, PROTOCOL_V4, PROTOCOL_V5, ProtocolError


@pytest.mark.parametrize("offered, chosen", [
    ([PROTOCOL_V5, PROTOCOL_V4], PROTOCOL_V5),
    ([PROTOCOL_V4, PROTOCOL_V5], PROTOCOL_V5),          # ours decides, not the client's order
    (["v4.channel.k8s.io", "v3.channel.k8s.io"], PROTOCOL_V4),
    ([" channel.k8s.io "], PROTOCOL_V1),
    (["base64.channel.k8s.io"], None),
    (["SPDY/3.1"], None),
    ([], None),
])
def test_negotiate(offered: list[str], chosen: str | None) -> None:
    assert streams.negotiate(offered) == chosen


@pytest.mark.parametrize("stream, data, message", [
    (0, b"ls\n", b"\x00ls\n"),
    (1, b"", b"\x01"),
    (2, b"oops", b"\x02oops"),
    (255, b"\x00", b"\xff\x00"),
])
def test_encode_decode_round_trip(stream: int, data: bytes, message: bytes) -> None:
    assert streams.encode(stream, data) == message
    assert streams.decode(message) == (stream, data)


def test_bad_frames() -> None:
    with pytest.raises(ProtocolError, match="stream id"):
        streams.decode(b"")
    with pytest.raises(ValueError, match="not a byte"):
        streams.encode(256, b"")


@pytest.mark.parametrize("data, size", [
    (b'{"Width":80,"Height":24}', (80, 24)),
    (b'{"Height":0,"Width":65535,"extra":1}', (65535, 0)),
])
def test_resize(data: bytes, size: tuple[int, int]) -> None:
    assert streams.decode_resize(data) == size


@pytest.mark.parametrize("data, error", [
    (b"80x24", "not JSON"),
    (b"[80,24]", "JSON object"),
    (b'{"Width":80}', "Height"),
    (b'{"Width":-1,"Height":2}', "Width"),
    (b'{"Width":true,"Height":2}', "Width"),
    (b'{"Width":"80","Height":2}', "Width"),
    (b"\xff\xfe", "not JSON"),
])
def test_bad_resize(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        streams.decode_resize(data)


def test_close() -> None:
    assert streams.decode_close(b"\x00") == streams.STREAM_STDIN
    for bad in (b"", b"\x00\x01"):
        with pytest.raises(ProtocolError, match="exactly one stream"):
            streams.decode_close(bad)


@pytest.mark.parametrize("protocol", [PROTOCOL_V5, PROTOCOL_V4])
def test_exit_status_v4_and_later(protocol: str) -> None:
    assert json.loads(streams.exit_status(protocol, 0)) == {"metadata": {}, "status": "Success"}
    failure = json.loads(streams.exit_status(protocol, 3, ["sh", "-c", "exit 3"]))
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert failure["message"] == ("command terminated with non-zero exit code: error executing "
                                  "command ['sh', '-c', 'exit 3'], exit code 3")


def test_exit_status_v1_is_text() -> None:
    assert streams.exit_status(PROTOCOL_V1, 0) == b""
    assert streams.exit_status(PROTOCOL_V1, 2) == \
        b"command terminated with non-zero exit code: exit code 2"
    assert streams.error_status(PROTOCOL_V1, "boom") == b"boom"


def test_error_status() -> None:
    status = json.loads(streams.error_status(PROTOCOL_V5, "the runtime failed"))
    assert status["status"] == "Failure" and status["message"] == "the runtime failed"
