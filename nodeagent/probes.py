"""Container probes: liveness, readiness and startup, as the kubelet's prober runs them.

Design. A pure core and a thin asyncio shell, in the order the code appears:

1. ``ProbeSpec.parse``: a container's ``livenessProbe`` / ``readinessProbe`` / ``startupProbe``
   dict, defaulted as the API server defaults it (initialDelaySeconds 0, periodSeconds 10,
   timeoutSeconds 1, successThreshold 1, failureThreshold 3), with exactly one handler:
   ``HTTPGet``, ``TCPSocket`` or ``Exec``. A probe we cannot run (grpc, no handler, a named
   port the container does not declare, a field that is not a number) parses to ``Invalid``,
   which fails every time with its message: the user sees why in the Events, the agent never
   crashes on a bad spec.
2. ``ProbeState`` and ``observe``: the kubelet worker's threshold logic. Outcomes are counted
   in runs of equal consecutive results; the reported ``Result`` flips only when a run reaches
   successThreshold (success) or failureThreshold (failure). Initial results: readiness
   Failure (not ready until proven), liveness Success (alive until proven dead), startup
   Unknown. ``finished`` says when a worker stops probing: a startup probe that decided, a
   liveness probe that failed (the container is about to be killed; its replacement, a new
   container id, gets a fresh worker, as the kubelet's ``onHold``).
3. The handlers' I/O: ``http_probe`` (aiohttp; 200 <= status < 400 succeeds; HTTPS does not
   verify certificates; redirects are followed on the same host only, a redirect elsewhere is
   judged by its own status, as the kubelet does without ``followNonLocalRedirects``),
   ``tcp_probe`` (a connect) and ``exec_probe`` (``Runtime.exec``, exit 0 succeeds, output is
   the message). Each is bounded by timeoutSeconds and returns a ``ProbeResult`` whose message
   reads like the kubelet's (``HTTP probe failed with statuscode: 500``, ``dial tcp
   10.244.0.5:8080: connect: connection refused``).
4. ``ProbeManager``: the agent calls ``update`` after each sync of a pod with the current
   instance of each container. One worker task per (pod uid, container name, probe kind,
   container id) runs while that instance runs: it waits initialDelaySeconds from the
   container's start (liveness and readiness also wait until the startup probe, if any, has
   succeeded), then probes every periodSeconds. A replaced or vanished instance's workers are
   cancelled, so a new instance starts fresh. On a change of result the manager calls
   ``on_change(pod_uid)`` (the agent queues a resync of that pod, which reads ``readiness``,
   ``liveness`` and ``started``); on every failed probe ``on_event`` gets the Warning
   ``Unhealthy`` Event the kubelet would record.

Not done: gRPC probes, probes of restartable init containers (sidecars), the kubelet's random
initial jitter, and terminationGracePeriodSeconds on probes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from controlplane.client.tasks import spawn
from nodeagent.runtime.base import (
    ContainerState,
    ContainerStatus,
    Runtime,
    RuntimeFailure,
)

log = logging.getLogger(__name__)

# Defaults and minimums of the Probe fields (k8s.io/api core/v1 Probe; pkg/apis/core/v1
# SetDefaults_Probe: a zero means the default).
INITIAL_DELAY_SECONDS = 0
PERIOD_SECONDS = 10
TIMEOUT_SECONDS = 1
SUCCESS_THRESHOLD = 1
FAILURE_THRESHOLD = 3
#: Redirects followed on the same host before giving up (Go's http.Client default).
MAX_REDIRECTS = 10
#: What the kubelet sends as User-Agent and Accept; some apps recognise probes by it.
PROBE_USER_AGENT = "kube-probe/corral"
PROBE_ACCEPT = "*/*"

#: The Event the kubelet records on a failed probe (events.ContainerUnhealthy).
REASON_UNHEALTHY = "Unhealthy"
EVENT_TYPE_WARNING = "Warning"


class ProbeKind(enum.StrEnum):
    LIVENESS = "Liveness"
    READINESS = "Readiness"
    STARTUP = "Startup"

    @property
    def field(self) -> str:
        """The container spec's field: ``livenessProbe`` and so on."""
        return self.value.lower() + "Probe"


class Result(enum.StrEnum):
    """A probe's reported result, as the kubelet's ``results.Result``."""
    UNKNOWN = "Unknown"
    SUCCESS = "Success"
    FAILURE = "Failure"


# 1. The spec

@dataclass(frozen=True)
class HTTPGet:
    port: int
    path: str = "/"
    host: str | None = None
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TCPSocket:
    port: int
    host: str | None = None


@dataclass(frozen=True)
class Exec:
    command: tuple[str, ...]


@dataclass(frozen=True)
class Invalid:
    """A probe we cannot run; it fails with ``message`` so that the reason shows in Events."""
    message: str


Handler = HTTPGet | TCPSocket | Exec | Invalid


class _SpecError(ValueError):
    pass


@dataclass(frozen=True)
class ProbeSpec:
    handler: Handler
    initial_delay: int = INITIAL_DELAY_SECONDS
    period: int = PERIOD_SECONDS
    timeout: int = TIMEOUT_SECONDS
    success_threshold: int = SUCCESS_THRESHOLD
    failure_threshold: int = FAILURE_THRESHOLD

    @classmethod
    def parse(cls, probe: Mapping[str, Any], kind: ProbeKind,
              container: Mapping[str, Any] | None = None) -> ProbeSpec:
        """The probe dict of ``container`` (whose ``ports`` resolve a named port). Never
        raises: what cannot be run becomes an ``Invalid`` handler. successThreshold is 1 for
        liveness and startup whatever the dict says (the API rejects anything else)."""
        try:
            handler: Handler = _handler(probe, container or {})
            timing = [_seconds(probe, key, default, minimum) for key, default, minimum in (
                ("initialDelaySeconds", INITIAL_DELAY_SECONDS, 0),
                ("periodSeconds", PERIOD_SECONDS, 1),
                ("timeoutSeconds", TIMEOUT_SECONDS, 1),
                ("successThreshold", SUCCESS_THRESHOLD, 1),
                ("failureThreshold", FAILURE_THRESHOLD, 1))]
        except _SpecError as e:
            return cls(Invalid(str(e)))
        initial_delay, period, timeout, success_threshold, failure_threshold = timing
        if kind is not ProbeKind.READINESS:
            success_threshold = 1
        return cls(handler, initial_delay, period, timeout, success_threshold, failure_threshold)


def _seconds(probe: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = probe.get(key)
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _SpecError(f"{key} must be an integer, not {value!r}")
    return max(minimum, value)


def _handler(probe: Mapping[str, Any], container: Mapping[str, Any]) -> Handler:
    kinds = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(k) is not None]
    if len(kinds) != 1:
        raise _SpecError("a probe needs exactly one handler of exec, httpGet, tcpSocket, grpc")
    body = probe[kinds[0]]
    if not isinstance(body, Mapping):
        raise _SpecError(f"{kinds[0]} must be an object")
    if kinds[0] == "grpc":
        raise _SpecError("grpc probes are not supported")
    if kinds[0] == "exec":
        command = body.get("command") or []
        if not isinstance(command, list) or not command:
            raise _SpecError("exec.command must be a non-empty list")
        return Exec(tuple(str(part) for part in command))
    port = _port(body.get("port"), container)
    host = body.get("host") or None
    if kinds[0] == "tcpSocket":
        return TCPSocket(port, host)
    scheme = str(body.get("scheme") or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise _SpecError(f"httpGet.scheme must be HTTP or HTTPS, not {scheme!r}")
    path = str(body.get("path") or "/")
    headers = tuple((str(h.get("name", "")), str(h.get("value", "")))
                    for h in body.get("httpHeaders") or [] if isinstance(h, Mapping))
    return HTTPGet(port, path if path.startswith("/") else "/" + path, host, scheme, headers)


def _port(port: Any, container: Mapping[str, Any]) -> int:
    """A port number, or the containerPort of the container's port of that name (the kubelet's
    ``findPortByName``); numeric strings count as numbers, as an IntOrString does."""
    if isinstance(port, str) and not port.isdigit():
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                port = declared.get("containerPort")
                break
        else:
            raise _SpecError(f"couldn't find port {port!r} in the container's ports")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise _SpecError(f"invalid port {port!r}") from None
    if not 0 < number < 65536:
        raise _SpecError(f"invalid port {number}")
    return number


# 2. Thresholds

@dataclass(frozen=True)
class ProbeState:
    """The reported ``result`` and the current run of equal outcomes (``last``, ``run``)."""
    result: Result
    last: bool | None = None
    run: int = 0


def initial_state(kind: ProbeKind) -> ProbeState:
    """Readiness starts failed, liveness succeeded, startup unknown (the kubelet's initial
    values): a container is not ready, but alive, before any probe ran."""
    return ProbeState({ProbeKind.READINESS: Result.FAILURE, ProbeKind.LIVENESS: Result.SUCCESS,
                       ProbeKind.STARTUP: Result.UNKNOWN}[kind])


def observe(state: ProbeState, spec: ProbeSpec, ok: bool) -> ProbeState:
    """``state`` after one probe outcome: the run grows or restarts, and the result becomes
    the outcome once the run reaches its threshold."""
    run = state.run + 1 if state.last is ok else 1
    threshold = spec.success_threshold if ok else spec.failure_threshold
    result = (Result.SUCCESS if ok else Result.FAILURE) if run >= threshold else state.result
    return ProbeState(result, ok, run)


def finished(kind: ProbeKind, state: ProbeState) -> bool:
    """Whether the worker stops probing: a startup probe that decided, or a liveness probe
    that failed (the container will be killed; its replacement gets a new worker)."""
    if kind is ProbeKind.STARTUP:
        return state.result is not Result.UNKNOWN
    return kind is ProbeKind.LIVENESS and state.result is Result.FAILURE


# 3. Running one probe

@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


async def http_probe(session: aiohttp.ClientSession, handler: HTTPGet, host: str,
                     timeout: float) -> ProbeResult:
    """GET the handler's URL on ``host`` (the handler's own host wins) within ``timeout``."""
    url = URL(f"{handler.scheme.lower()}://{_hostport(handler.host or host, handler.port)}"
              f"{handler.path}")
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": PROBE_ACCEPT}
    headers.update(handler.headers)
    first = url
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, headers=headers, allow_redirects=False,
                                       ssl=False) as response:
                    status, location = response.status, response.headers.get("Location")
                if not (300 <= status < 400 and location):
                    break
                target = url.join(URL(location))
                if target.host != url.host:
                    break
                url = target
            else:
                return ProbeResult(False, f'Get "{first}": stopped after {MAX_REDIRECTS} '
                                          "redirects")
    except TimeoutError:
        return ProbeResult(False, f'Get "{url}": context deadline exceeded '
                                  "(Client.Timeout exceeded while awaiting headers)")
    except aiohttp.ClientConnectorError as e:
        return ProbeResult(False, f'Get "{url}": {_dial_error(url.host or "", handler.port, e)}')
    except aiohttp.ClientError as e:
        return ProbeResult(False, f'Get "{url}": {e}')
    if 200 <= status < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {status}")


async def tcp_probe(host: str, port: int, timeout: float) -> ProbeResult:
    """Open a TCP connection to ``host:port`` within ``timeout`` and close it."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp {_hostport(host, port)}: i/o timeout")
    except OSError as e:
        return ProbeResult(False, _dial_error(host, port, e))
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # the peer reset the connection: it was accepted, which is all we asked
    return ProbeResult(True)


async def exec_probe(runtime: Runtime, container_id: str, command: Sequence[str],
                     timeout: float) -> ProbeResult:
    """Run ``command`` in the container; exit 0 succeeds, the output is the message. The
    session is always closed, which kills a command still running after ``timeout``."""
    output = bytearray()
    session = None
    try:
        async with asyncio.timeout(timeout):
            session = await runtime.exec(container_id, command)
            async for _, chunk in session.output():
                output += chunk
            code = await session.wait()
    except TimeoutError:
        return ProbeResult(False, f"command {shlex.join(command)!r} timed out")
    except RuntimeFailure as e:
        return ProbeResult(False, str(e))
    finally:
        if session is not None:
            await session.close()
    return ProbeResult(code == 0, output.decode(errors="replace"))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_error(host: str, port: int, e: OSError) -> str:
    """A connect failure in Go's words, which is what users search for."""
    cause = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
    if isinstance(cause, ConnectionRefusedError):
        detail = "connect: connection refused"
    else:
        detail = cause.strerror or str(cause)
    return f"dial tcp {_hostport(host, port)}: {detail}"


# 4. The manager

@dataclass(frozen=True)
class ProbeEvent:
    """A Warning Event about a container, as the kubelet records on a failed probe."""
    pod_uid: str
    container: str
    reason: str
    message: str
    type: str = EVENT_TYPE_WARNING


@dataclass
class _Instance:
    """Probe state of one container instance; replaced wholesale when the instance is."""
    container_id: str
    started_at: float
    specs: dict[ProbeKind, ProbeSpec]
    states: dict[ProbeKind, ProbeState]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def is_started(self) -> bool:
        return (ProbeKind.STARTUP not in self.states
                or self.states[ProbeKind.STARTUP].result is Result.SUCCESS)


class ProbeManager:
    """Runs the probes of the running containers of the agent's pods.

    ``clock`` gives epoch seconds on the runtime's clock (containers' ``started_at`` are on
    it); ``sleep`` waits; both are injectable so tests run on fast or fake time."""

    def __init__(self, runtime: Runtime, on_change: Callable[[str], None], *,
                 on_event: Callable[[ProbeEvent], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._runtime = runtime
        self._on_change = on_change
        self._on_event = on_event
        self._clock = clock
        self._sleep = sleep
        self._pods: dict[str, dict[str, _Instance]] = {}
        self._pod_ips: dict[str, str | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def update(self, pod: Mapping[str, Any], pod_ip: str | None,
               containers: Mapping[str, ContainerStatus]) -> None:
        """Make the workers match ``pod``'s running container instances (``containers`` maps
        a container name to its current instance). Keeps workers of unchanged instances, so
        it is cheap to call after every sync."""
        uid = pod["metadata"]["uid"]
        self._pod_ips[uid] = pod_ip
        current = self._pods.setdefault(uid, {})
        specs = {c["name"]: c for c in pod.get("spec", {}).get("containers") or []}
        for name in list(current):
            status = containers.get(name)
            if (name not in specs or status is None or status.state is not ContainerState.RUNNING
                    or status.id != current[name].container_id):
                self._stop(current.pop(name))
        for name, container in specs.items():
            status = containers.get(name)
            if name in current or status is None or status.state is not ContainerState.RUNNING:
                continue
            probes = {kind: ProbeSpec.parse(container[kind.field], kind, container)
                      for kind in ProbeKind if container.get(kind.field)}
            if probes:
                current[name] = self._start(uid, name, status, probes)
        if not current:
            self.remove(uid)

    def remove(self, pod_uid: str) -> None:
        """Stop every worker of the pod and forget it (the pod is gone or no longer ours)."""
        for instance in self._pods.pop(pod_uid, {}).values():
            self._stop(instance)
        self._pod_ips.pop(pod_uid, None)

    def readiness(self, pod_uid: str) -> dict[str, bool]:
        """Container name -> ready, for containers with a readiness or startup probe: ready
        once started and (if it has one) the readiness probe succeeded."""
        return {name: i.is_started and (ProbeKind.READINESS not in i.states
                                        or i.states[ProbeKind.READINESS].result is Result.SUCCESS)
                for name, i in self._pods.get(pod_uid, {}).items()
                if ProbeKind.READINESS in i.states or ProbeKind.STARTUP in i.states}

    def liveness(self, pod_uid: str) -> dict[str, bool]:
        """Container name -> alive, for containers with a liveness or startup probe: False
        when either failed (the kubelet kills the container in both cases)."""
        return {name: all(i.states[k].result is not Result.FAILURE
                          for k in (ProbeKind.LIVENESS, ProbeKind.STARTUP) if k in i.states)
                for name, i in self._pods.get(pod_uid, {}).items()
                if ProbeKind.LIVENESS in i.states or ProbeKind.STARTUP in i.states}

    def started(self, pod_uid: str) -> dict[str, bool]:
        """Container name -> started, for containers with a startup probe (a running container
        without one is started)."""
        return {name: i.is_started for name, i in self._pods.get(pod_uid, {}).items()
                if ProbeKind.STARTUP in i.states}

    async def aclose(self) -> None:
        """Cancel every worker and wait for them; close the HTTP session."""
        for uid in list(self._pods):
            self.remove(uid)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _start(self, uid: str, name: str, status: ContainerStatus,
               specs: dict[ProbeKind, ProbeSpec]) -> _Instance:
        instance = _Instance(status.id, status.started_at or status.created_at, specs,
                             {kind: initial_state(kind) for kind in specs})
        if ProbeKind.STARTUP not in specs:
            instance.started.set()
        for kind in specs:
            task = spawn(self._work(uid, name, instance, kind),
                         name=f"probe {kind.value.lower()} {uid}/{name} {status.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            instance.tasks.append(task)
        return instance

    @staticmethod
    def _stop(instance: _Instance) -> None:
        for task in instance.tasks:
            task.cancel()

    async def _work(self, uid: str, name: str, instance: _Instance, kind: ProbeKind) -> None:
        """One probe of one container instance, until cancelled or ``finished``."""
        spec = instance.specs[kind]
        if kind is not ProbeKind.STARTUP:
            await instance.started.wait()
        delay = instance.started_at + spec.initial_delay - self._clock()
        if delay > 0:
            await self._sleep(delay)
        while True:
            began = self._clock()
            outcome = await self._probe(uid, instance.container_id, spec)
            if not outcome.ok:
                self._emit(ProbeEvent(uid, name, REASON_UNHEALTHY,
                                      f"{kind.value} probe failed: {outcome.message}"))
            old = instance.states[kind]
            new = instance.states[kind] = observe(old, spec, outcome.ok)
            if new.result is not old.result:
                log.info("%s probe of %s/%s: %s", kind.value, uid, name, new.result.value)
                if kind is ProbeKind.STARTUP and new.result is Result.SUCCESS:
                    instance.started.set()
                self._notify(uid)
            if finished(kind, new):
                return
            await self._sleep(max(0.0, spec.period - (self._clock() - began)))

    async def _probe(self, uid: str, container_id: str, spec: ProbeSpec) -> ProbeResult:
        handler = spec.handler
        match handler:
            case Invalid(message):
                return ProbeResult(False, message)
            case Exec(command):
                return await exec_probe(self._runtime, container_id, command, spec.timeout)
        host = handler.host or self._pod_ips.get(uid)
        if host is None:
            return ProbeResult(False, "the pod has no IP yet")
        if isinstance(handler, TCPSocket):
            return await tcp_probe(host, handler.port, spec.timeout)
        if self._session is None:
            # force_close: no keep-alive between probes, as the kubelet (a probe checks that a
            # new connection is served, and an idle pooled one would pin the server).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True))
        return await http_probe(self._session, handler, host, spec.timeout)

    def _notify(self, uid: str) -> None:
        try:
            self._on_change(uid)
        except Exception:
            log.exception("on_change(%s) failed", uid)

    def _emit(self, event: ProbeEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("on_event(%s) failed", event)
