"""Probes: spec parsing and the threshold logic as tables; http and tcp probes against local
servers on 127.0.0.1; exec probes and the ProbeManager against a stub runtime, on a fixed clock
with fast sleeps (every requested sleep is recorded and lasts a few milliseconds)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controlplane.auth.pki import ClusterPKI
from nodeagent.probes import (
    MAX_REDIRECTS,
    PROBE_USER_AGENT,
    REASON_UNHEALTHY,
    Exec,
    HTTPGet,
    Invalid,
    ProbeEvent,
    ProbeKind,
    ProbeManager,
    ProbeResult,
    ProbeSpec,
    ProbeState,
    Result,
    TCPSocket,
    exec_probe,
    finished,
    http_probe,
    initial_state,
    observe,
    tcp_probe,
)
from nodeagent.runtime.base import (
    STDOUT,
    ContainerState,
    ContainerStatus,
    RuntimeFailure,
)

L, R, S = ProbeKind.LIVENESS, ProbeKind.READINESS, ProbeKind.STARTUP
OK, FAIL, UNK = Result.SUCCESS, Result.FAILURE, Result.UNKNOWN
T0 = 1_700_000_000.0


# 1. Parsing

WEB = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}


@pytest.mark.parametrize(("probe", "kind", "expected"), [
    ({"tcpSocket": {"port": 80}}, R, ProbeSpec(TCPSocket(80), 0, 10, 1, 1, 3)),
    ({"tcpSocket": {"port": 80}, "periodSeconds": 0, "timeoutSeconds": 0},
     R, ProbeSpec(TCPSocket(80), 0, 10, 1, 1, 3)),
    ({"exec": {"command": ["cat", "/ok"]}, "initialDelaySeconds": 5, "periodSeconds": 2,
      "timeoutSeconds": 3, "successThreshold": 2, "failureThreshold": 4},
     R, ProbeSpec(Exec(("cat", "/ok")), 5, 2, 3, 2, 4)),
    ({"exec": {"command": ["true"]}, "successThreshold": 2}, L, ProbeSpec(Exec(("true",)))),
    ({"exec": {"command": ["true"]}, "successThreshold": 2}, S, ProbeSpec(Exec(("true",)))),
    ({"httpGet": {"port": "http", "path": "healthz", "scheme": "https", "host": "10.0.0.1",
                  "httpHeaders": [{"name": "X-A", "value": "1"}]}},
     L, ProbeSpec(HTTPGet(8080, "/healthz", "10.0.0.1", "HTTPS", (("X-A", "1"),)))),
    ({"httpGet": {"port": "8081"}}, L, ProbeSpec(HTTPGet(8081))),
    ({"tcpSocket": {"port": "grpc"}}, L,
     ProbeSpec(Invalid("couldn't find port 'grpc' in the container's ports"))),
    ({"tcpSocket": {"port": 70000}}, L, ProbeSpec(Invalid("invalid port 70000"))),
    ({"grpc": {"port": 9000}}, L, ProbeSpec(Invalid("grpc probes are not supported"))),
    ({"periodSeconds": 3}, L, ProbeSpec(Invalid(
        "a probe needs exactly one handler of exec, httpGet, tcpSocket, grpc"))),
    ({"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}, L, ProbeSpec(Invalid(
        "a probe needs exactly one handler of exec, httpGet, tcpSocket, grpc"))),
    ({"exec": {"command": []}}, L, ProbeSpec(Invalid("exec.command must be a non-empty list"))),
    ({"httpGet": {"port": 80, "scheme": "FTP"}}, L,
     ProbeSpec(Invalid("httpGet.scheme must be HTTP or HTTPS, not 'FTP'"))),
    ({"tcpSocket": {"port": 80}, "periodSeconds": "ten"}, L,
     ProbeSpec(Invalid("periodSeconds must be an integer, not 'ten'"))),
])
def test_parse(probe: dict[str, Any], kind: ProbeKind, expected: ProbeSpec) -> None:
    assert ProbeSpec.parse(probe, kind, WEB) == expected


# 2. Thresholds

@pytest.mark.parametrize(("kind", "success", "failure", "outcomes", "results"), [
    (R, 1, 3, [True], [OK]),
    (R, 1, 3, [False, False, False, False], [FAIL, FAIL, FAIL, FAIL]),
    (R, 1, 3, [True, False, False, True, False, False, False], [OK, OK, OK, OK, OK, OK, FAIL]),
    (R, 2, 1, [True, False, True, True, False], [FAIL, FAIL, FAIL, OK, FAIL]),
    (L, 1, 3, [False, False, True, False, False, False], [OK, OK, OK, OK, OK, FAIL]),
    (L, 1, 1, [False], [FAIL]),
    (S, 1, 2, [False, True], [UNK, OK]),
    (S, 1, 2, [False, False], [UNK, FAIL]),
])
def test_thresholds(kind: ProbeKind, success: int, failure: int, outcomes: list[bool],
                    results: list[Result]) -> None:
    spec = ProbeSpec(Exec(("true",)), success_threshold=success, failure_threshold=failure)
    state, seen = initial_state(kind), []
    for ok in outcomes:
        state = observe(state, spec, ok)
        seen.append(state.result)
    assert seen == results


def test_initial_results() -> None:
    assert [initial_state(k).result for k in (R, L, S)] == [FAIL, OK, UNK]


@pytest.mark.parametrize(("kind", "result", "done"), [
    (S, UNK, False), (S, OK, True), (S, FAIL, True),
    (L, OK, False), (L, FAIL, True),
    (R, OK, False), (R, FAIL, False),
])
def test_finished(kind: ProbeKind, result: Result, done: bool) -> None:
    assert finished(kind, ProbeState(result)) is done


# 3. Handlers

@pytest.fixture
async def web_server() -> AsyncIterator[TestServer]:
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]),
                            text=request.headers.get("X-Probe", ""))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    async def headers(request: web.Request) -> web.Response:
        ok = (request.headers.get("X-Probe") == "yes"
              and request.headers.get("User-Agent") == PROBE_USER_AGENT)
        return web.Response(status=200 if ok else 400)

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow", slow)
    app.router.add_get("/headers", headers)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_of(server: TestServer) -> int:
    assert server.port is not None
    return server.port


@pytest.mark.parametrize(("path", "expected"), [
    ("/status/200", ProbeResult(True)),
    ("/status/399", ProbeResult(True)),
    ("/status/500", ProbeResult(False, "HTTP probe failed with statuscode: 500")),
    ("/status/404", ProbeResult(False, "HTTP probe failed with statuscode: 404")),
    ("/redirect?to=/status/204", ProbeResult(True)),
    ("/redirect?to=/status/503", ProbeResult(False, "HTTP probe failed with statuscode: 503")),
    # Another host is not followed: the 302 itself is judged, and it is a success.
    ("/redirect?to=http://other.invalid/status/500", ProbeResult(True)),
    ("/headers", ProbeResult(True)),
])
async def test_http_probe(web_server: TestServer, session: aiohttp.ClientSession, path: str,
                          expected: ProbeResult) -> None:
    handler = HTTPGet(port_of(web_server), path, headers=(("X-Probe", "yes"),))
    assert await http_probe(session, handler, "127.0.0.1", 1.0) == expected


async def test_https_probe_does_not_verify_the_certificate(
        pki: ClusterPKI, session: aiohttp.ClientSession) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/", ok)
    server = TestServer(app, host="127.0.0.1")
    # Signed by the cluster CA, which the probe does not trust: it must not matter.
    await server.start_server(ssl=pki.server_ssl_context(
        *pki.issue_server_cert("probe", ["127.0.0.1"])))
    try:
        handler = HTTPGet(port_of(server), scheme="HTTPS")
        assert await http_probe(session, handler, "127.0.0.1", 1.0) == ProbeResult(True)
    finally:
        await server.close()


async def test_http_probe_gives_up_on_a_redirect_loop(web_server: TestServer,
                                                      session: aiohttp.ClientSession) -> None:
    result = await http_probe(session, HTTPGet(port_of(web_server), "/loop"), "127.0.0.1", 1.0)
    assert result == ProbeResult(False, f'Get "http://127.0.0.1:{web_server.port}/loop": '
                                        f"stopped after {MAX_REDIRECTS} redirects")


async def test_http_probe_times_out(web_server: TestServer,
                                    session: aiohttp.ClientSession) -> None:
    handler = HTTPGet(port_of(web_server), "/slow", host="127.0.0.1")
    result = await http_probe(session, handler, "10.9.9.9", 0.2)
    assert result == ProbeResult(False, f'Get "http://127.0.0.1:{web_server.port}/slow": '
                                        "context deadline exceeded "
                                        "(Client.Timeout exceeded while awaiting headers)")


async def test_http_probe_connection_refused(session: aiohttp.ClientSession) -> None:
    port = closed_port()
    result = await http_probe(session, HTTPGet(port, "/healthz"), "127.0.0.1", 1.0)
    assert result == ProbeResult(False, f'Get "http://127.0.0.1:{port}/healthz": '
                                        f"dial tcp 127.0.0.1:{port}: connect: connection refused")


async def test_tcp_probe() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await tcp_probe("127.0.0.1", port, 1.0) == ProbeResult(True)
    port = closed_port()
    assert await tcp_probe("127.0.0.1", port, 1.0) == ProbeResult(
        False, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


class StubSession:
    """An ExecSession that prints ``output``, then hangs or exits with ``code``."""

    def __init__(self, code: int, output: bytes, hang: bool) -> None:
        self.code, self.data, self.hang, self.closed = code, output, hang, False

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        if self.data:
            yield STDOUT, self.data
        if self.hang:
            await asyncio.Event().wait()

    async def write_stdin(self, data: bytes) -> None:
        pass

    async def close_stdin(self) -> None:
        pass

    async def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        return self.code

    async def close(self) -> None:
        self.closed = True


class StubRuntime:
    """Only ``exec``: the command ``["check", WHAT]`` in container ``cid`` exits with
    ``codes[cid, WHAT]`` (0 unless set); "hang" hangs; "gone" raises RuntimeFailure."""

    def __init__(self) -> None:
        self.codes: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str]] = []
        self.sessions: list[StubSession] = []

    def count(self, cid: str, what: str) -> int:
        return self.calls.count((cid, what))

    async def exec(self, container_id: str, command: Sequence[str], *, stdin: bool = False,
                   tty: bool = False) -> StubSession:
        what = command[-1]
        self.calls.append((container_id, what))
        if what == "gone":
            raise RuntimeFailure(f"container {container_id} is not running")
        code = self.codes.get((container_id, what), 0)
        session = StubSession(code, f"{what}: exit {code}".encode(), what == "hang")
        self.sessions.append(session)
        return session


@pytest.mark.parametrize(("what", "code", "expected"), [
    ("fine", 0, ProbeResult(True, "fine: exit 0")),
    ("sick", 1, ProbeResult(False, "sick: exit 1")),
    ("hang", 0, ProbeResult(False, "command 'check hang' timed out")),
    ("gone", 0, ProbeResult(False, "container c1 is not running")),
])
async def test_exec_probe(what: str, code: int, expected: ProbeResult) -> None:
    rt = StubRuntime()
    rt.codes["c1", what] = code
    assert await exec_probe(rt, "c1", ["check", what], 0.2) == expected  # type: ignore[arg-type]
    assert all(s.closed for s in rt.sessions)


# 4. The manager

class Harness:
    """A ProbeManager on a StubRuntime, a fixed clock at T0 and fast sleeps."""

    def __init__(self) -> None:
        self.rt = StubRuntime()
        self.changes: list[str] = []
        self.events: list[ProbeEvent] = []
        self.sleeps: list[float] = []
        self.manager = ProbeManager(self.rt, self.changes.append,  # type: ignore[arg-type]
                                    on_event=self.events.append, clock=lambda: T0,
                                    sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0.002)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.manager.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}


def check(what: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": ["check", what]}, "periodSeconds": 1, **fields}


def pod(**probes: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "i", **probes}]}}


def running(cid: str, started_at: float = T0 - 100,
            state: ContainerState = ContainerState.RUNNING) -> dict[str, ContainerStatus]:
    return {"app": ContainerStatus(cid, "sb", "app", "i", state, started_at - 1,
                                   started_at=started_at)}


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def test_readiness_flips_both_ways_and_calls_on_change(h: Harness) -> None:
    h.manager.update(pod(readinessProbe=check("ready")), "10.244.0.5", running("c1"))
    assert h.manager.readiness("u1") == {"app": False}
    assert h.manager.liveness("u1") == {} and h.manager.started("u1") == {}
    await until(lambda: h.changes == ["u1"])
    assert h.manager.readiness("u1") == {"app": True}
    h.rt.codes["c1", "ready"] = 1
    await until(lambda: h.changes == ["u1", "u1"])
    assert h.manager.readiness("u1") == {"app": False}
    assert h.rt.count("c1", "ready") == 1 + 3  # failureThreshold 3
    assert h.events[0] == ProbeEvent("u1", "app", REASON_UNHEALTHY,
                                     "Readiness probe failed: ready: exit 1", "Warning")
    assert 1.0 in h.sleeps


async def test_liveness_fails_after_failure_threshold_and_stops_probing(h: Harness) -> None:
    h.rt.codes["c1", "alive"] = 1
    h.manager.update(pod(livenessProbe=check("alive", failureThreshold=2)), None, running("c1"))
    assert h.manager.liveness("u1") == {"app": True}
    await until(lambda: h.changes == ["u1"])
    assert h.manager.liveness("u1") == {"app": False}
    assert [e.message for e in h.events] == ["Liveness probe failed: alive: exit 1"] * 2
    await asyncio.sleep(0.05)
    assert h.rt.count("c1", "alive") == 2


async def test_startup_gates_liveness_and_readiness(h: Harness) -> None:
    h.rt.codes["c1", "start"] = 1
    spec = pod(startupProbe=check("start", failureThreshold=1000), livenessProbe=check("alive"),
               readinessProbe=check("ready"))
    h.manager.update(spec, None, running("c1"))
    await until(lambda: h.rt.count("c1", "start") >= 5)
    assert h.rt.count("c1", "alive") == h.rt.count("c1", "ready") == 0
    assert h.manager.started("u1") == {"app": False}
    assert h.manager.readiness("u1") == {"app": False}
    assert h.manager.liveness("u1") == {"app": True}
    h.rt.codes["c1", "start"] = 0
    await until(lambda: h.manager.readiness("u1") == {"app": True})
    assert h.manager.started("u1") == {"app": True}
    assert h.rt.count("c1", "alive") >= 1
    assert h.changes == ["u1", "u1"]  # started, then ready


async def test_startup_without_readiness_probe_gates_ready(h: Harness) -> None:
    h.rt.codes["c1", "start"] = 1
    h.manager.update(pod(startupProbe=check("start")), None, running("c1"))
    assert h.manager.readiness("u1") == {"app": False}
    h.rt.codes["c1", "start"] = 0
    await until(lambda: h.manager.started("u1") == {"app": True})
    assert h.manager.readiness("u1") == {"app": True}


async def test_failed_startup_probe_fails_liveness(h: Harness) -> None:
    h.rt.codes["c1", "start"] = 1
    h.manager.update(pod(startupProbe=check("start", failureThreshold=2),
                         livenessProbe=check("alive")), None, running("c1"))
    await until(lambda: h.changes == ["u1"])
    assert h.manager.liveness("u1") == {"app": False}
    assert h.manager.started("u1") == {"app": False}
    assert h.rt.count("c1", "alive") == 0
    assert [e.message for e in h.events] == ["Startup probe failed: start: exit 1"] * 2


async def test_initial_delay_counts_from_the_container_start(h: Harness) -> None:
    h.manager.update(pod(readinessProbe=check("ready", initialDelaySeconds=30)), None,
                     running("c1", started_at=T0 - 10))
    await until(lambda: h.changes == ["u1"])
    assert h.sleeps[0] == 20


async def test_a_new_container_instance_starts_fresh(h: Harness) -> None:
    h.rt.codes["c1", "alive"] = 1
    spec = pod(livenessProbe=check("alive", failureThreshold=1), readinessProbe=check("ready"))
    h.manager.update(spec, None, running("c1"))
    await until(lambda: h.manager.liveness("u1") == {"app": False}
                and h.manager.readiness("u1") == {"app": True})
    h.manager.update(spec, None, running("c1", state=ContainerState.EXITED))
    assert h.manager.readiness("u1") == {} and h.manager.liveness("u1") == {}
    h.manager.update(spec, None, running("c2"))
    assert h.manager.readiness("u1") == {"app": False}
    assert h.manager.liveness("u1") == {"app": True}
    await until(lambda: h.manager.readiness("u1") == {"app": True})
    before = h.rt.count("c1", "ready")
    await asyncio.sleep(0.05)
    assert h.rt.count("c1", "ready") == before
    assert h.rt.count("c2", "ready") > 1


async def test_same_instance_keeps_its_workers(h: Harness) -> None:
    h.manager.update(pod(readinessProbe=check("ready")), None, running("c1"))
    await until(lambda: h.manager.readiness("u1") == {"app": True})
    h.manager.update(pod(readinessProbe=check("ready")), None, running("c1"))
    assert h.manager.readiness("u1") == {"app": True}


async def test_remove_stops_the_workers(h: Harness) -> None:
    h.manager.update(pod(readinessProbe=check("ready")), None, running("c1"))
    await until(lambda: h.rt.count("c1", "ready") >= 2)
    h.manager.remove("u1")
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert h.manager.readiness("u1") == {}


async def test_unsupported_probe_fails_with_its_reason(h: Harness) -> None:
    h.manager.update(pod(readinessProbe={"grpc": {"port": 9000}, "periodSeconds": 1}), None,
                     running("c1"))
    await until(lambda: len(h.events) >= 2)
    assert h.events[0].message == "Readiness probe failed: grpc probes are not supported"
    assert h.manager.readiness("u1") == {"app": False}


async def test_http_probe_on_the_pod_ip_by_named_port(web_server: TestServer) -> None:
    changes: list[str] = []
    manager = ProbeManager(StubRuntime(), changes.append)  # type: ignore[arg-type]
    container = {"name": "app", "image": "i",
                 "ports": [{"name": "http", "containerPort": web_server.port}],
                 "readinessProbe": {"httpGet": {"port": "http", "path": "/status/200"}}}
    manager.update({"metadata": {"uid": "u1"}, "spec": {"containers": [container]}},
                   "127.0.0.1", running("c1", started_at=0.0))
    try:
        await until(lambda: changes == ["u1"])
        assert manager.readiness("u1") == {"app": True}
    finally:
        await manager.aclose()
