"""The agent's HTTPS server over a FakeRuntime: container logs (tail, since, timestamps, limit,
follow, previous), exec and attach over the v5/v4 channel protocols (output, stdin, exit code,
resize), the kubelet's 400/404 answers, and who may call (system:masters only, TLS required)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from controlplane.auth.pki import ClusterPKI
from nodeagent import streams
from nodeagent.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    STDERR,
    ContainerConfig,
    SandboxConfig,
)
from nodeagent.runtime.fake import ExecResult, FakeRuntime
from nodeagent.server import AgentServer, find_container, serving_ssl_context

T0 = 1_700_000_000.25
IMAGE = "corral/base:1"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Agent:
    url: str
    runtime: FakeRuntime
    clock: Clock
    session: aiohttp.ClientSession

    async def get(self, path: str, **params: str) -> tuple[int, str]:
        async with self.session.get(self.url + path, params=params) as answer:
            return answer.status, await answer.text()


def server_context(pki: ClusterPKI, tmp_path: Path) -> ssl.SSLContext:
    cert, key = pki.issue_server_cert("node-1", ["127.0.0.1"])
    (tmp_path / "agent.crt").write_bytes(cert)
    (tmp_path / "agent.key").write_bytes(key)
    return serving_ssl_context(pki.ca_pem, tmp_path / "agent.crt", tmp_path / "agent.key")


async def start_container(rt: FakeRuntime, pod: str, name: str, *, uid: str = "uid-1",
                          attempt: int = 0, sandbox: str | None = None) -> str:
    labels = {LABEL_POD_NAMESPACE: "ns", LABEL_POD_NAME: pod, LABEL_POD_UID: uid}
    if sandbox is None:
        sandbox = await rt.run_sandbox(SandboxConfig(uid, "ns", pod, pod, labels=labels))
    cid = await rt.create_container(sandbox, ContainerConfig(name, IMAGE, labels={
        **labels, LABEL_CONTAINER_NAME: name, LABEL_ATTEMPT: str(attempt)}))
    await rt.start_container(cid)
    return cid


@pytest.fixture
async def agent(pki: ClusterPKI, tmp_path: Path) -> AsyncIterator[Agent]:
    clock = Clock()
    rt = FakeRuntime(clock, images={IMAGE})
    server = AgentServer(rt, server_context(pki, tmp_path), clock=clock)
    port = await server.start("127.0.0.1", 0)
    client_ssl = pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:
        yield Agent(f"https://127.0.0.1:{port}", rt, clock, session)
    await server.stop()


# -- logs --------------------------------------------------------------------------------------

async def test_logs_tail_since_timestamps_limit(agent: Agent) -> None:
    cid = await start_container(agent.runtime, "web", "main")
    agent.runtime.write_log(cid, "one\ntwo\n")
    agent.clock.now += 10
    agent.runtime.write_log(cid, "three\n", stream=STDERR)
    path = "/containerLogs/ns/web/main"
    assert await agent.get(path) == (200, "one\ntwo\nthree\n")
    assert await agent.get(path, tailLines="2") == (200, "two\nthree\n")
    assert await agent.get(path, tailLines="0") == (200, "")
    assert await agent.get(path, sinceSeconds="5") == (200, "three\n")
    assert await agent.get(path, limitBytes="6") == (200, "one\ntw")
    status, text = await agent.get(path, timestamps="true", tailLines="1")
    assert (status, text) == (200, "2023-11-14T22:13:30.250000000Z three\n")


async def test_logs_follow_until_the_container_exits(agent: Agent) -> None:
    rt = agent.runtime
    cid = await start_container(rt, "web", "main")
    rt.write_log(cid, "before\n")
    async with agent.session.get(agent.url + "/containerLogs/ns/web/main",
                                 params={"follow": "true"}) as answer:
        assert answer.status == 200
        assert await answer.content.readline() == b"before\n"
        rt.write_log(cid, "after\n")
        assert await asyncio.wait_for(answer.content.readline(), 5) == b"after\n"
        rt.exit_container(cid, 0)
        assert await asyncio.wait_for(answer.content.read(), 5) == b""


async def test_logs_previous(agent: Agent) -> None:
    rt = agent.runtime
    first = await start_container(rt, "web", "main")
    rt.write_log(first, "first run\n")
    path = "/containerLogs/ns/web/main"
    status, text = await agent.get(path, previous="true")
    assert status == 404
    assert text == 'previous terminated container "main" in pod "web" not found\n'
    rt.exit_container(first, 1)
    agent.clock.now += 1
    [box] = await rt.list_sandboxes()
    second = await start_container(rt, "web", "main", attempt=1, sandbox=box.id)
    rt.write_log(second, "second run\n")
    assert await agent.get(path) == (200, "second run\n")
    assert await agent.get(path, previous="true") == (200, "first run\n")
    # The same name for a new pod (new uid): the old pod's instances are not its "previous".
    agent.clock.now += 1
    await start_container(rt, "web", "main", uid="uid-2")
    assert (await agent.get(path, previous="1"))[0] == 404


async def test_find_container_picks_newest_and_previous() -> None:
    rt = FakeRuntime(Clock(), images={IMAGE})
    assert await find_container(rt, "ns", "web", "main") is None
    first = await start_container(rt, "web", "main")
    [box] = await rt.list_sandboxes()
    second = await start_container(rt, "web", "main", attempt=1, sandbox=box.id)
    assert (await find_container(rt, "ns", "web", "main")).id == second  # type: ignore[union-attr]
    assert (await find_container(rt, "ns", "web", "main", True)).id == first  # type: ignore[union-attr]
    assert await find_container(rt, "other", "web", "main") is None


@pytest.mark.parametrize("params, error", [
    ({"tailLines": "x"}, "tailLines='x' is not an integer"),
    ({"tailLines": "-1"}, "tailLines must be at least 0"),
    ({"follow": "maybe"}, "follow='maybe' is not a boolean"),
    ({"sinceSeconds": "0"}, "sinceSeconds must be at least 1"),
    ({"limitBytes": "0"}, "limitBytes must be at least 1"),
])
async def test_logs_bad_query(agent: Agent, params: dict[str, str], error: str) -> None:
    await start_container(agent.runtime, "web", "main")
    status, text = await agent.get("/containerLogs/ns/web/main", **params)
    assert status == 400 and text.startswith(error)


async def test_logs_unknown_container(agent: Agent) -> None:
    status, text = await agent.get("/containerLogs/ns/nope/main")
    assert status == 404 and 'container "main" in pod "nope" not found' in text


# -- exec and attach ---------------------------------------------------------------------------

async def run_ws(agent: Agent, path: str, params: list[tuple[str, str]], *,
                 protocols: tuple[str, ...] = (streams.PROTOCOL_V5, streams.PROTOCOL_V4),
                 send: list[bytes] = ()) -> tuple[str | None, dict[int, bytes]]:
    """Connect, send ``send``, read until the server closes: (protocol, data per stream)."""
    got: dict[int, bytes] = {}
    async with agent.session.ws_connect(agent.url + path, params=params,
                                        protocols=protocols) as ws:
        for message in send:
            await ws.send_bytes(message)
        async for msg in ws:
            assert msg.type is aiohttp.WSMsgType.BINARY
            stream, data = streams.decode(msg.data)
            got[stream] = got.get(stream, b"") + data
        return ws.protocol, got


async def test_exec_output_and_exit_code(agent: Agent) -> None:
    cid = await start_container(agent.runtime, "web", "main")
    agent.runtime.exec_results[("sh", "-c", "echo hi; exit 3")] = ExecResult(3, b"hi\n", b"err\n")
    query = [("command", "sh"), ("command", "-c"), ("command", "echo hi; exit 3"),
             ("stdout", "true"), ("stderr", "true")]
    protocol, got = await run_ws(agent, "/exec/ns/web/main", query)
    assert protocol == streams.PROTOCOL_V5
    assert got[1] == b"hi\n" and got[2] == b"err\n"
    status = json.loads(got[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert agent.runtime.execs == [(cid, ("sh", "-c", "echo hi; exit 3"))]
    # stderr not asked for: not sent; success: a Success Status.
    agent.runtime.exec_results[("true",)] = ExecResult(0, b"", b"ignored")
    protocol, got = await run_ws(agent, "/exec/ns/web/main",
                                 [("command", "true"), ("stdout", "1")],
                                 protocols=(streams.PROTOCOL_V4,))
    assert protocol == streams.PROTOCOL_V4 and 2 not in got
    assert json.loads(got[3]) == {"metadata": {}, "status": "Success"}


async def test_exec_stdin_closed_by_v5_close(agent: Agent) -> None:
    await start_container(agent.runtime, "web", "main")
    agent.runtime.exec_results[("cat",)] = lambda cmd, data: ExecResult(0, data.upper())
    _, got = await run_ws(agent, "/exec/ns/web/main",
                          [("command", "cat"), ("stdin", "true"), ("stdout", "true")],
                          send=[b"\x00hello ", b"\x00world", b'\x04{"Width":80,"Height":24}',
                                b"\xff\x00"])
    assert got[1] == b"HELLO WORLD" and json.loads(got[3])["status"] == "Success"


async def test_exec_bad_message_ends_with_an_error_status(agent: Agent) -> None:
    await start_container(agent.runtime, "web", "main")
    agent.runtime.exec_results[("cat",)] = lambda cmd, data: ExecResult(0, data)
    _, got = await run_ws(agent, "/exec/ns/web/main",
                          [("command", "cat"), ("stdin", "true"), ("stdout", "true")],
                          send=[b"\x04not json"])
    status = json.loads(got[3])
    assert status["status"] == "Failure" and "resize is not JSON" in status["message"]


async def test_attach_streams_output_and_stdin(agent: Agent) -> None:
    rt = agent.runtime
    cid = await start_container(rt, "web", "main")
    rt.write_log(cid, "old\n")
    async with agent.session.ws_connect(
            agent.url + "/attach/ns/web/main", params={"stdin": "true", "stdout": "true"},
            protocols=(streams.PROTOCOL_V5,)) as ws:
        await ws.send_bytes(b"\x00input")
        rt.write_log(cid, "new\n")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert streams.decode(msg.data) == (1, b"new\n")
        rt.exit_container(cid, 7)
        msg = await asyncio.wait_for(ws.receive(), 5)
        stream, data = streams.decode(msg.data)
        assert stream == 3 and json.loads(data)["details"]["causes"][0]["message"] == "7"
    assert rt.attached_stdin[cid] == b"input"


@pytest.mark.parametrize("path, params, code, error", [
    ("/exec/ns/web/main", [("stdout", "true")], 400, "command is required"),
    ("/exec/ns/web/main", [("command", "ls")], 400, "at least one of stdin, stdout, stderr"),
    ("/exec/ns/web/nope", [("command", "ls"), ("stdout", "1")], 404,
     'container "nope" in pod "web" not found'),
    ("/attach/ns/gone/main", [("stdout", "1")], 404, 'container "main" in pod "gone"'),
])
async def test_exec_refusals(agent: Agent, path: str, params: list[tuple[str, str]], code: int,
                             error: str) -> None:
    await start_container(agent.runtime, "web", "main")
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with agent.session.ws_connect(agent.url + path, params=params,
                                            protocols=(streams.PROTOCOL_V5,)):
            pass
    assert failed.value.status == code
    async with agent.session.get(agent.url + path, params=params,
                                 headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                          "Sec-WebSocket-Version": "13",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                 ) as answer:
        assert answer.status == code and error in await answer.text()


async def test_exec_needs_an_upgrade_and_a_known_protocol(agent: Agent) -> None:
    await start_container(agent.runtime, "web", "main")
    async with agent.session.post(agent.url + "/exec/ns/web/main",
                                  params=[("command", "ls"), ("stdout", "1")]) as answer:
        assert answer.status == 400 and "SPDY is not supported" in await answer.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with agent.session.ws_connect(agent.url + "/exec/ns/web/main",
                                            params=[("command", "ls"), ("stdout", "1")],
                                            protocols=("base64.channel.k8s.io",)):
            pass
    assert failed.value.status == 400


async def test_exec_in_a_stopped_container(agent: Agent) -> None:
    cid = await start_container(agent.runtime, "web", "main")
    agent.runtime.exit_container(cid, 0)
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with agent.session.ws_connect(agent.url + "/exec/ns/web/main",
                                            params=[("command", "ls"), ("stdout", "1")],
                                            protocols=(streams.PROTOCOL_V5,)):
            pass
    assert failed.value.status == 400


# -- who may call ------------------------------------------------------------------------------

async def test_only_masters_may_call(agent: Agent, pki: ClusterPKI) -> None:
    await start_container(agent.runtime, "web", "main")
    cert, key = pki.issue_client_cert("system:node:n1", ["system:nodes"])
    node_ssl = pki.client_ssl_context(cert, key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=node_ssl)) as session:
        async with session.get(agent.url + "/containerLogs/ns/web/main") as answer:
            assert answer.status == 403 and "system:masters" in await answer.text()
    anonymous = pki.client_ssl_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=anonymous)) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(agent.url + "/containerLogs/ns/web/main") as answer:
                await answer.read()


def test_the_server_requires_client_certificates(pki: ClusterPKI, tmp_path: Path) -> None:
    context = server_context(pki, tmp_path)
    context.verify_mode = ssl.CERT_OPTIONAL
    with pytest.raises(ValueError, match="CERT_REQUIRED"):
        AgentServer(FakeRuntime(Clock()), context)
