"""The agent's HTTPS server: what the kubelet serves on its port, for the API server's proxy.

``GET /containerLogs/{namespace}/{pod}/{container}`` streams a container's log (query:
``follow``, ``tailLines``, ``previous``, ``timestamps``, ``sinceSeconds``, ``limitBytes``, as
the API's pods/log passes them on); ``/exec/...`` and ``/attach/...`` (GET or POST, with
``command`` repeated for exec, and ``stdin``, ``stdout``, ``stderr``, ``tty``) upgrade to a
WebSocket speaking the channel protocols of ``nodeagent.streams``.

In the order the code appears:

1. Who may call. TLS with a client certificate verified against the cluster CA is required
   (``serving_ssl_context``: CERT_REQUIRED), and then ``authorize`` decides on the verified
   certificate: by default only ``system:masters`` (the controllers' admin credential, which
   the API server presents when it proxies), since exec is a shell in every pod of the node.
2. Which container. The runtime's labels name pod namespace, pod, container and attempt
   (``find_container``): the newest instance by creation, and for ``previous`` the one before
   it among the same pod's (by uid) instances, as ``kubectl logs --previous`` expects.
3. The handlers. Bad queries are 400, unknown containers 404, in the kubelet's words, as plain
   text (the API server wraps them into a Status). Exec and attach check everything and start
   the runtime session before they upgrade, so that every failure is an HTTP answer and not a
   half-open WebSocket.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeagent import streams
from nodeagent.runtime.base import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    ContainerState,
    ContainerStatus,
    ExecSession,
    LogOptions,
    NotFound,
    Runtime,
    RuntimeFailure,
)

log = logging.getLogger(__name__)

#: The group whose members may use this server (Kubernetes' cluster-admin group).
MASTERS_GROUP = "system:masters"
#: ``getpeercert()``'s name of the subject's organization (each one a group).
_ORGANIZATION = "organizationName"
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0", ""})

#: (namespace, pod, container, previous) -> that container, or None.
ContainerLookup = Callable[[str, str, str, bool], Awaitable[ContainerStatus | None]]
#: A verified peer certificate (``getpeercert()`` form; None without one) -> allowed?
Authorizer = Callable[[Mapping[str, Any] | None], bool]


class BadRequest(ValueError):
    """A query the server cannot act on; the text says why."""


# -- 1. who may call ----------------------------------------------------------------------------

def serving_ssl_context(ca_pem: bytes, cert_file: Path | str, key_file: Path | str
                        ) -> ssl.SSLContext:
    """The server side of the agent's TLS: its serving certificate (from
    ``ClusterPKI.issue_server_cert``), and a client certificate of the cluster CA required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def cert_groups(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The organizations of a verified certificate's subject: its groups, as the API reads
    them."""
    return tuple(value for rdn in (peercert or {}).get("subject", ())
                 for attr, value in rdn if attr == _ORGANIZATION)


def masters_only(peercert: Mapping[str, Any] | None) -> bool:
    """The default authorizer: only members of ``system:masters``."""
    return MASTERS_GROUP in cert_groups(peercert)


# -- 2. which container -------------------------------------------------------------------------

async def find_container(runtime: Runtime, namespace: str, pod: str, container: str,
                         previous: bool = False) -> ContainerStatus | None:
    """The runtime's instance of ``container`` of ``namespace/pod``: the newest, or with
    ``previous`` the one it replaced; None when there is none."""
    found = await runtime.list_containers(labels={
        LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: pod, LABEL_CONTAINER_NAME: container})
    if not found:
        return None
    newest = max(found, key=lambda c: (c.created_at, c.attempt))
    # A pod deleted and created again under its name has a new uid: its instances only.
    same_pod = sorted((c for c in found if c.pod_uid == newest.pod_uid),
                      key=lambda c: (c.attempt, c.created_at))
    if not previous:
        return same_pod[-1]
    return same_pod[-2] if len(same_pod) > 1 else None


# -- 3. the handlers ----------------------------------------------------------------------------

def _flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise BadRequest(f"{name}={value!r} is not a boolean (true or false)")


def _count(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise BadRequest(f"{name} must be at least {minimum}, not {number}")
    return number


def log_options(query: Mapping[str, str], now: float) -> tuple[LogOptions, bool, int | None]:
    """(LogOptions, previous, limitBytes) of a containerLogs query."""
    since = _count(query, "sinceSeconds", minimum=1)
    options = LogOptions(follow=_flag(query, "follow"), tail=_count(query, "tailLines", minimum=0),
                         since=now - since if since is not None else None,
                         timestamps=_flag(query, "timestamps"))
    return options, _flag(query, "previous"), _count(query, "limitBytes", minimum=1)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class AgentServer:
    """The agent's HTTPS endpoint over ``runtime``.

    ``ssl_context`` must require client certificates (``serving_ssl_context``);
    ``authorize`` decides on the verified certificate (``masters_only``); ``lookup`` finds a
    container (``find_container`` over ``runtime``); ``clock`` dates ``sinceSeconds``.
    """

    def __init__(self, runtime: Runtime, ssl_context: ssl.SSLContext, *,
                 authorize: Authorizer = masters_only, lookup: ContainerLookup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if ssl_context.verify_mode is not ssl.CERT_REQUIRED:
            raise ValueError("the agent's server must require client certificates "
                             "(ssl.CERT_REQUIRED): it runs commands in every pod of the node")
        self.runtime = runtime
        self.ssl_context = ssl_context
        self.authorize = authorize
        self.lookup: ContainerLookup = lookup or partial(find_container, runtime)
        self.clock = clock
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._authorize])
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        for verb in ("exec", "attach"):
            for method in ("GET", "POST"):
                app.router.add_route(method, f"/{verb}/{{namespace}}/{{pod}}/{{container}}",
                                     self._exec if verb == "exec" else self._attach)
        return app

    async def start(self, host: str, port: int) -> int:
        """Serve on ``host:port`` (0: any free port); the port bound."""
        # handler_cancellation: a client that leaves ends a followed log at once.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # middlewares

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as e:
            return _text(400, str(e))
        except NotFound as e:
            return _text(404, str(e))
        except RuntimeFailure as e:
            return _text(500, str(e))

    @web.middleware
    async def _authorize(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        if not self.authorize(peercert):
            log.info("refused %s %s: the client certificate is not authorized",
                     request.method, request.path)
            return _text(403, f"Forbidden: only {MASTERS_GROUP} may use the node agent's API")
        return await handler(request)

    # handlers

    async def _container(self, request: web.Request, previous: bool = False
                         ) -> ContainerStatus:
        ns, pod, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
        found = await self.lookup(ns, pod, name, previous)
        if found is None:
            if previous:
                raise NotFound(f'previous terminated container "{name}" in pod "{pod}" '
                               "not found")
            raise NotFound(f'container "{name}" in pod "{pod}" not found in namespace "{ns}" '
                           "on this node")
        return found

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        options, previous, limit = log_options(request.query, self.clock())
        container = await self._container(request, previous)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        left = limit
        chunks = self.runtime.container_logs(container.id, options)
        try:
            async for chunk in chunks:
                if left is not None:
                    chunk = chunk[:left]
                    left -= len(chunk)
                await response.write(chunk)
                if left == 0:
                    break
        except NotFound:
            pass  # removed while we read: the log ends there
        except ConnectionResetError:
            pass  # the client left
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        command = request.query.getall("command", [])
        if not command:
            raise BadRequest("command is required: give it as command=...&command=...")
        return await self._session(request, command)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        return await self._session(request, None)

    async def _session(self, request: web.Request, command: list[str] | None
                       ) -> web.StreamResponse:
        """Exec ``command`` (attach when None) and serve it over the upgraded WebSocket."""
        query = request.query
        stdin, stdout, stderr, tty = (_flag(query, k) for k in
                                      ("stdin", "stdout", "stderr", "tty"))
        if not (stdin or stdout or stderr):
            raise BadRequest("you must specify at least one of stdin, stdout, stderr")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",") if p.strip()]
        if offered and streams.negotiate(offered) is None:
            raise BadRequest(f"none of the offered subprotocols {offered} is served; "
                             f"this server speaks {list(streams.PROTOCOLS)}")
        container = await self._container(request)
        if container.state is not ContainerState.RUNNING:
            raise BadRequest(f'container "{container.name}" in pod '
                             f'"{request.match_info["pod"]}" is not running')
        # Last of the checks: the API asks again without an upgrade to read a refusal's words.
        ws = web.WebSocketResponse(protocols=streams.PROTOCOLS,
                                   max_msg_size=streams.MAX_MESSAGE)
        if not ws.can_prepare(request).ok:
            raise BadRequest("a WebSocket upgrade (channel.k8s.io subprotocols) is required; "
                             "SPDY is not supported")
        session: ExecSession
        if command is None:
            session = await self.runtime.attach(container.id, stdin=stdin, tty=tty)
        else:
            session = await self.runtime.exec(container.id, command, stdin=stdin, tty=tty)
        try:
            await ws.prepare(request)
        except BaseException:
            await session.close()
            raise
        log.info("%s in %s (%s)", "attach" if command is None else f"exec {command}",
                 container.id, ws.ws_protocol or streams.PROTOCOL_V1)
        await streams.serve_session(ws, session, stdin=stdin, stdout=stdout,
                                    stderr=stderr and not tty, command=command or ())
        return ws
