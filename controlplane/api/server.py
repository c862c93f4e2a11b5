"""The API server: an aiohttp application over one Store, served over HTTPS.

Middlewares run in this order for every request: errors (any ``ApiError`` becomes a Status
answer; anything else a 500 Status without a traceback) -> authentication (a verified client
certificate or a static bearer token; 401 otherwise) -> the in-flight limit (429, as
kube-apiserver's max-requests-inflight) -> metrics. Resource URLs go to
``handlers.ResourceHandler``; discovery, OpenAPI, health, version and metrics are served here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from raftstore.store import Store

from ..auth.authn import TokenAuthenticator, User, authenticate
from ..auth.join import ca_handler, join_handler
from ..auth.pki import ClusterPKI
from . import discovery, errors, openapi
from .allocators import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR, ServiceAllocations
from .handlers import AGENT_SSL, TARGET, USER, VERB, ResourceHandler, dumps
from .metrics import ApiMetrics, InstrumentedStore
from .registry import Registry, WriteOptions
from .requests import MAX_BODY, Target
from .resources import lookup
from .strategy import Obj

#: Services: what the ``kubernetes`` Service is, and whose writes allocate.
SERVICES = lookup("", "v1", "services")

log = logging.getLogger(__name__)

#: The minor version /version reports. The installed kubectl dispatcher picks the kubectl
#: matching it; 1.31 sends JSON bodies everywhere, 1.32's `create namespace|configmap|secret|
#: deployment` send protobuf, which this server does not decode (docs/api.md).
SERVED_MINOR = "31"
VERSION = {
    "major": "1", "minor": SERVED_MINOR, "gitVersion": f"v1.{SERVED_MINOR}.0+corral",
    "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-11-26T00:00:00Z",
    "goVersion": "cpython3.11", "compiler": "cpython", "platform": "linux/amd64",
}
#: Paths anyone may read, as kube-apiserver grants system:public-info-viewer.
PUBLIC = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz", "/healthz/",
                    "/livez/", "/readyz/", "/corral/v1/ca", "/corral/v1/join"})
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Path endings of requests that last as long as the client wants: not counted as in flight.
_LONG_RUNNING = ("/log", "/exec", "/attach")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ApiServer:
    """One API server. ``insecure`` turns authentication off (a dev flag, never the default)."""

    def __init__(
        self,
        store: Store,
        *,
        pki: ClusterPKI | None,
        insecure: bool = False,
        tokens: TokenAuthenticator | None = None,
        clock: Callable[[], datetime] = _utcnow,
        max_inflight: int = 400,
        max_mutating_inflight: int = 200,
        watch_progress_interval: float = 5.0,
        service_cluster_ip_range: str = DEFAULT_SERVICE_CIDR,
        service_node_port_range: str = DEFAULT_NODE_PORT_RANGE,
    ) -> None:
        if pki is None and not insecure:
            raise ValueError("an API server needs the cluster PKI unless it runs --insecure")
        self.metrics = ApiMetrics()
        self.store = InstrumentedStore(store, self.metrics)
        self.service_allocations = ServiceAllocations(
            self.store, SERVICES.key_prefix(), cluster_ip_range=service_cluster_ip_range,
            node_port_range=service_node_port_range)
        self.registry = Registry(self.store, clock=clock,
                                 watch_progress_interval=watch_progress_interval,
                                 allocations={("", "services"): self.service_allocations})
        self.port = 0
        self.pki = pki
        self.insecure = insecure
        self.tokens = tokens
        self.limits = {False: max_inflight, True: max_mutating_inflight}
        self.inflight = {False: 0, True: 0}
        self.resources = ResourceHandler(self.registry, self.metrics, clock)
        self._runner: web.AppRunner | None = None
        self._seeding: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[
            self._errors, self._authenticate, self._limit, self._measure])
        get = app.router.add_get
        # Kubernetes answers these with and without a trailing slash.
        for path in ("/version", "/version/"):
            get(path, self._version)
        for path in ("/healthz", "/livez", "/readyz"):
            get(path, self._health)
            get(path + "/", self._health)
        get("/metrics", self._metrics)
        get("/corral/v1/digest", self._digest)
        get("/openapi/v3", self._openapi_index)
        get("/openapi/v3/{path:.+}", self._openapi_doc)
        for path in ("/api", "/api/"):
            get(path, self._api)
        for path in ("/apis", "/apis/"):
            get(path, self._apis)
        if self.pki is not None:
            # What the API presents to node agents when it proxies logs, exec and attach: the
            # admin credential, and the agent's serving certificate checked against the CA.
            app[AGENT_SSL] = self.pki.client_ssl_context(self.pki.admin_cert_pem,
                                                         self.pki.admin_key_pem)
            get("/corral/v1/ca", ca_handler(self.pki))
            app.router.add_post("/corral/v1/join", join_handler(self.pki))
        app.router.add_route("*", "/api/{path:.*}", self._resource)
        app.router.add_route("*", "/apis/{path:.*}", self._resource)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Serve on ``host:port`` (0: any free port); the port bound.

        The port is bound before the store has a quorum (the other controllers may still be
        starting); ``/readyz`` says "not ready" until the cluster's namespaces are seeded.
        """
        # handler_cancellation: a client that leaves ends its handler (watches above all).
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._seeding = asyncio.get_running_loop().create_task(self._seed(), name="seed")
        return int(self._runner.addresses[0][1])

    async def _seed(self) -> None:
        """Create the namespaces every cluster has, then the ``kubernetes`` Service in
        ``default`` (the first IP of the service range, port 443 to this API; its Endpoints are
        the endpoints work's), retrying until the store answers.

        Idempotent (create-if-absent), so every controller does it at start.
        """
        namespaces = lookup("", "v1", "namespaces")
        seeds: list[tuple[Any, str, Obj]] = [
            (namespaces, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            for name in ("default", "kube-system", "kube-public", "kube-node-lease")]
        seeds.append((SERVICES, "default", self._kubernetes_service()))
        delay = 0.1
        for rt, namespace, body in seeds:
            name = body["metadata"]["name"]
            while True:
                try:
                    await self.registry.create(rt, namespace, body,
                                               WriteOptions(field_manager="corral-controller"))
                    break
                except errors.ApiError as exc:
                    if exc.code == 409:
                        break
                    if exc.code == 422:
                        log.warning("cannot create the %s %s: %s", rt.kind, name, exc.message)
                        break
                    log.warning("seeding %s %s: %s; retrying", rt.kind, name, exc.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    def _kubernetes_service(self) -> Obj:
        """The ``default/kubernetes`` Service, as kube-apiserver's controller makes it."""
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                     "clusterIP": self.service_allocations.ips.first(),
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": self.port or 6443}]},
        }

    async def wait_seeded(self) -> None:
        """Return once the cluster's namespaces exist (tests and in-process users)."""
        assert self._seeding is not None, "start() first"
        await asyncio.shield(self._seeding)

    @property
    def seeded(self) -> bool:
        return self._seeding is not None and self._seeding.done() \
            and not self._seeding.cancelled() and self._seeding.exception() is None

    async def stop(self) -> None:
        if self._seeding is not None:
            self._seeding.cancel()
            await asyncio.gather(self._seeding, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ middlewares

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as exc:
            return self._status(exc)
        except web.HTTPRequestEntityTooLarge:
            return self._status(errors.too_large(MAX_BODY))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._status(errors.ApiError(exc.status, exc.reason.replace(" ", ""),
                                                exc.reason))
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            return self._status(errors.ApiError(500, "InternalError",
                                                "an internal error occurred; see the server log"))

    @staticmethod
    def _status(exc: errors.ApiError) -> web.Response:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return web.Response(body=dumps(exc.status()), status=exc.code,
                            content_type="application/json", headers=headers)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.insecure or request.path in PUBLIC:
            return await handler(request)
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        user: User | None = authenticate(peercert, request.headers.get("Authorization"),
                                         self.tokens)
        if user is None:
            raise errors.unauthorized()
        request[USER] = user
        return await handler(request)

    @web.middleware
    async def _limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse work beyond the in-flight limits instead of queueing it without bound."""
        if request.query.get("watch") in ("true", "1") or "/watch/" in request.path \
                or request.path.endswith(_LONG_RUNNING):
            return await handler(request)  # long-running requests are not counted
        mutating = request.method in _MUTATING
        if self.inflight[mutating] >= self.limits[mutating]:
            self.metrics.rejected.labels("mutating" if mutating else "readOnly").inc()
            raise errors.too_many_requests()
        self.inflight[mutating] += 1
        gauge = self.metrics.inflight.labels("mutating" if mutating else "readOnly")
        gauge.inc()
        try:
            return await handler(request)
        finally:
            self.inflight[mutating] -= 1
            gauge.dec()

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except errors.ApiError as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:
            code = 499  # the client went away (nginx's code for it)
            raise
        finally:
            target: Target | None = request.get(TARGET)
            labels = (request.get(VERB, request.method.lower()),
                      target.rt.group if target else "",
                      target.rt.plural if target else "",
                      target.subresource if target else "")
            if labels[0] != "watch":
                self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
            self.metrics.requests.labels(*labels, str(code)).inc()

    # ------------------------------------------------------------ plain endpoints

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        listing = self._discovery_document(request.path)
        if listing is not None:
            return web.Response(body=listing, content_type="application/json")
        return await self.resources.handle(request)

    @staticmethod
    def _discovery_document(path: str) -> bytes | None:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) == 2:
            found = discovery.resource_list("", parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 2:
            found = discovery.api_group(parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 3:
            found = discovery.resource_list(parts[1], parts[2])
        else:
            return None
        if found is None:
            raise errors.ApiError(404, "NotFound",
                                  "the server could not find the requested resource")
        return found

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def _health(self, request: web.Request) -> web.Response:
        if request.path.startswith("/livez"):
            return web.Response(text="ok")
        if not self.seeded:
            return web.Response(status=500, text="[-]cluster namespaces not seeded yet\n")
        try:
            # Linearizable: a controller cut off from the majority must not look ready.
            async with asyncio.timeout(5):
                await self.store.get("/registry/core/namespaces/default")
        except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
            return web.Response(status=500, text=f"[-]store failed: {type(exc).__name__}\n")
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": self.metrics.content_type})

    async def _digest(self, request: web.Request) -> web.Response:
        """This controller's replica: (revision, hash of the keyspace), equal on replicas that
        applied the same log (chaos runs compare them after healing), as ``corral store
        serve`` answers it."""
        digest = getattr(self.store.inner, "digest", None)
        if digest is None:
            raise errors.ApiError(404, "NotFound",
                                  "this controller has no replica of its own (external etcd)")
        revision, value = await asyncio.to_thread(digest)
        return web.json_response({"revision": str(revision), "digest": value})

    async def _openapi_index(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.index())

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        doc = openapi.document_for_path(path)
        if doc is None:
            raise errors.ApiError(404, "NotFound", f"no OpenAPI document for {path}")
        return web.Response(body=doc, content_type="application/json",
                            headers={"ETag": f'"{openapi.etag(doc)}"',
                                     "Cache-Control": "public, immutable"})

    async def _api(self, request: web.Request) -> web.Response:
        return self._discovery(request, legacy=True)

    async def _apis(self, request: web.Request) -> web.Response:
        return self._discovery(request, legacy=False)

    @staticmethod
    def _discovery(request: web.Request, *, legacy: bool) -> web.Response:
        aggregated = discovery.wants_aggregated(request.headers.get("Accept", ""))
        if aggregated is not None:
            version = "v2" if aggregated == discovery.AGGREGATED_V2 else "v2beta1"
            return web.Response(body=discovery.aggregated(legacy, version),
                                headers={"Content-Type": aggregated})
        body = discovery.api_versions() if legacy else discovery.api_group_list()
        return web.Response(body=body, content_type="application/json")

