"""The Kubernetes remote-command channel protocols over WebSocket (exec and attach).

A client (kubectl, the ``kubernetes`` Python client) asks for one of the WebSocket subprotocols
below; every binary message is one byte naming a stream, then that stream's data:

- ``channel.k8s.io`` (v1): 0 stdin, 1 stdout, 2 stderr, 3 error as plain text;
- ``v4.channel.k8s.io``: adds 4 resize (JSON ``{"Width": .., "Height": ..}``), and the error
  stream carries one JSON ``Status``: ``Success``, or ``Failure`` with reason
  ``NonZeroExitCode`` and a cause ``ExitCode`` whose message is the code (how clients learn
  the exit code);
- ``v5.channel.k8s.io``: adds 255 close, whose data is the id of the stream the sender is done
  with (clients send it to end stdin).

In the order the code appears: the constants; ``negotiate`` (the server's pick among what the
client offered, v5 first); pure encoders and decoders (``encode``/``decode``,
``decode_resize``, ``decode_close``, ``exit_status`` and ``error_status`` for stream 3); then
``serve_session``, the I/O shell that pumps an ``ExecSession`` both ways over an aiohttp
``WebSocketResponse``: the session's output out, stdin, resize and close in, and at the end the
exit status on stream 3 before the WebSocket closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import WSMsgType, web

from nodeagent.runtime.base import STDERR, STDOUT, ExecSession, RuntimeFailure

log = logging.getLogger(__name__)

PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
PROTOCOL_V1 = "channel.k8s.io"
#: Served subprotocols, most preferred first.
PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4, PROTOCOL_V1)

#: Stream ids (the first byte of every message).
STREAM_STDIN = 0
STREAM_STDOUT = STDOUT
STREAM_STDERR = STDERR
STREAM_ERROR = 3
STREAM_RESIZE = 4
STREAM_CLOSE = 255

#: Reason and cause type of a non-zero exit, as the kubelet reports it.
REASON_NON_ZERO_EXIT = "NonZeroExitCode"
CAUSE_EXIT_CODE = "ExitCode"

#: Largest message a client may send (stdin chunks, resize): generous, but bounded.
MAX_MESSAGE = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """A message that breaks the channel protocol; the text says how."""


def negotiate(offered: Sequence[str]) -> str | None:
    """The subprotocol to answer with: the most preferred of ours the client offered."""
    wanted = {p.strip() for p in offered}
    return next((p for p in PROTOCOLS if p in wanted), None)


def encode(stream: int, data: bytes) -> bytes:
    """One message: the stream id, then the data."""
    if not 0 <= stream <= 255:
        raise ValueError(f"stream id {stream} is not a byte")
    return bytes((stream,)) + data


def decode(message: bytes) -> tuple[int, bytes]:
    """(stream id, data) of one binary message."""
    if not message:
        raise ProtocolError("empty message: every message starts with a stream id")
    return message[0], message[1:]


def decode_resize(data: bytes) -> tuple[int, int]:
    """(width, height) of a resize message's JSON ``{"Width": w, "Height": h}``."""
    try:
        size = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"resize is not JSON: {e}") from None
    if not isinstance(size, dict):
        raise ProtocolError("resize must be a JSON object with Width and Height")
    return _dimension(size, "Width"), _dimension(size, "Height")


def _dimension(size: dict[str, Any], name: str) -> int:
    value = size.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise ProtocolError(f"resize {name} must be an integer from 0 to 65535, not {value!r}")
    return value


def decode_close(data: bytes) -> int:
    """The stream id a v5 close message closes."""
    if len(data) != 1:
        raise ProtocolError(f"close must name exactly one stream, got {len(data)} bytes")
    return data[0]


def _status(body: dict[str, Any]) -> bytes:
    return json.dumps({"metadata": {}, **body}, separators=(",", ":")).encode()


def exit_status(protocol: str, exit_code: int, command: Sequence[str] = ()) -> bytes:
    """Stream 3's data for a process that ended with ``exit_code``.

    v4 and v5 carry a Status (Success, or NonZeroExitCode with the code as a cause); v1 has no
    exit codes, only an error text, and nothing at all on success.
    """
    if exit_code == 0:
        return _status({"status": "Success"}) if protocol != PROTOCOL_V1 else b""
    what = f"error executing command {list(command)}, exit code {exit_code}" if command \
        else f"exit code {exit_code}"
    message = f"command terminated with non-zero exit code: {what}"
    if protocol == PROTOCOL_V1:
        return message.encode()
    return _status({"status": "Failure", "message": message, "reason": REASON_NON_ZERO_EXIT,
                    "details": {"causes": [{"reason": CAUSE_EXIT_CODE,
                                            "message": str(exit_code)}]}})


def error_status(protocol: str, message: str) -> bytes:
    """Stream 3's data for a session that failed without an exit code (say, the runtime)."""
    if protocol == PROTOCOL_V1:
        return message.encode()
    return _status({"status": "Failure", "message": message, "reason": "InternalError",
                    "code": 500})


async def serve_session(ws: web.WebSocketResponse, session: ExecSession, *, stdin: bool,
                        stdout: bool = True, stderr: bool = True,
                        command: Sequence[str] = ()) -> None:
    """Pump ``session`` over ``ws`` (prepared, with a subprotocol of ``PROTOCOLS``) until the
    process ends or the client leaves, then close both.

    Output streams the client did not ask for are dropped. Input the protocol does not allow
    (stdin when not asked for, unknown streams) is ignored, as the kubelet ignores it; a
    malformed resize or close ends the session with an error status instead of a traceback.
    """
    protocol = ws.ws_protocol or PROTOCOL_V1
    wanted = {STREAM_STDOUT: stdout, STREAM_STDERR: stderr}

    async def pump_out() -> int:
        async for stream, chunk in session.output():
            if chunk and wanted.get(stream, False):
                await ws.send_bytes(encode(stream, chunk))
        return await session.wait()

    out = asyncio.get_running_loop().create_task(pump_out(), name="exec output")
    inp = asyncio.get_running_loop().create_task(
        _pump_in(ws, session, stdin=stdin, protocol=protocol), name="exec input")
    try:
        done, _ = await asyncio.wait({out, inp}, return_when=asyncio.FIRST_COMPLETED)
        if out in done:
            status = exit_status(protocol, out.result(), command)
        elif inp.result() is not None:
            status = error_status(protocol, f"bad message from the client: {inp.result()}")
        else:
            return  # the client left: nobody to tell
        if status:
            await ws.send_bytes(encode(STREAM_ERROR, status))
    except RuntimeFailure as e:
        await _send_quietly(ws, encode(STREAM_ERROR, error_status(protocol, str(e))))
    except ConnectionResetError:
        pass  # the client left while we wrote
    finally:
        for task in (out, inp):
            task.cancel()
        await asyncio.gather(out, inp, return_exceptions=True)
        await session.close()
        await ws.close()


async def _pump_in(ws: web.WebSocketResponse, session: ExecSession, *, stdin: bool,
                   protocol: str) -> str | None:
    """Apply the client's messages to ``session`` until the client closes; the protocol error
    that ended it, if any."""
    async for msg in ws:
        if msg.type is not WSMsgType.BINARY:
            continue  # text (base64) framings are not served; pings are answered by aiohttp
        try:
            stream, data = decode(msg.data)
            if stream == STREAM_STDIN and stdin:
                if data:
                    await session.write_stdin(data)
            elif stream == STREAM_RESIZE and protocol != PROTOCOL_V1:
                await session.resize(*decode_resize(data))
            elif stream == STREAM_CLOSE and protocol == PROTOCOL_V5:
                if decode_close(data) == STREAM_STDIN and stdin:
                    await session.close_stdin()
        except ProtocolError as e:
            log.info("exec session: %s", e)
            return str(e)
    return None


async def _send_quietly(ws: web.WebSocketResponse, message: bytes) -> None:
    try:
        await ws.send_bytes(message)
    except ConnectionResetError:
        pass
