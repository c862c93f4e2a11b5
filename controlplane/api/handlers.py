"""The REST handlers: one path for every kind, from URL to registry call to response.

``ResourceHandler.handle`` parses the target (``requests.parse_target``), decides the verb from
the method and URL, authorizes it, runs it through the ``Registry`` and encodes the answer
(JSON, YAML, a Table, or PartialObjectMetadata). Subresources with their own shape (scale,
binding, eviction, log) are small adapters over the same registry calls; status and a
namespace's finalize are updates of the object itself that change one part of it. Watches stream
newline-delimited JSON events until the client leaves, the timeout passes or history runs out.
The pod subresources that reach into a node (log, and the WebSocket ones exec and attach) are
proxied to the agent of the pod's node, presenting the API's client certificate (``AGENT_SSL``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from ..auth.authn import User
from ..auth.authz import RequestAttributes, authorize, needs_existing
from . import errors, requests, table
from .metrics import ApiMetrics
from .registry import PODS, ListOptions, Registry, WriteOptions, decode
from .requests import Output, Target
from .resources import ResourceType, lookup
from .selectors import parse_field_selector, selector_to_string
from .strategy import Obj

log = logging.getLogger(__name__)

#: Kubernetes' default watch timeout is --min-request-timeout (1800 s) times [1, 2).
MIN_REQUEST_TIMEOUT = 1800
NODES = lookup("", "v1", "nodes")
#: The pod annotation naming the container kubectl and the API use when none is given.
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
#: Per-request state the middlewares and handlers share.
USER = web.RequestKey("user", User)
VERB = web.RequestKey("verb", str)
TARGET = web.RequestKey("target", Target)
#: The client TLS context for the agents: trusts the cluster CA, presents the admin credential.
AGENT_SSL = web.AppKey("agent_ssl", ssl.SSLContext)
#: Subresources that connect to a process in a container: always a WebSocket, verb "create".
CONNECT = frozenset({"exec", "attach"})
#: Largest WebSocket message relayed (as the agent's limit).
MAX_RELAY_MESSAGE = 4 * 1024 * 1024


def dumps(obj: Any) -> bytes:
    # "replace": text from a URL may hold undecodable bytes; an answer must still go out.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def status_success(rt: ResourceType, obj: Obj, code: int = 200) -> Obj:
    """The Status Kubernetes answers a verb whose result is not an object."""
    meta = obj.get("metadata") or {}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": code,
            "details": {"name": meta.get("name", ""), "group": rt.group, "kind": rt.plural,
                        "uid": meta.get("uid", "")}}


class ResourceHandler:
    def __init__(self, registry: Registry, metrics: ApiMetrics,
                 clock: Callable[[], datetime]) -> None:
        self.registry = registry
        self.metrics = metrics
        self.clock = clock

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = requests.parse_target(request.path)
        if target is None:
            raise errors.ApiError(404, "NotFound",
                                  "the server could not find the requested resource")
        verb = self._verb(request, target)
        handler = self._routes.get((target.subresource, verb))
        if handler is None or (target.subresource and verb == "watch"):
            where = f"{target.rt.plural}/{target.subresource}" if target.subresource \
                else target.rt.plural
            raise errors.method_not_allowed(f"{request.method} is not supported on {where}")
        request[VERB], request[TARGET] = verb, target
        output = requests.output_for(request.headers.get("Accept", ""))
        await self._authorize(request, verb, target)
        return await handler(request, target, verb, output)

    @property
    def _routes(self) -> dict[tuple[str, str], Callable[..., Awaitable[web.StreamResponse]]]:
        """(subresource, verb) -> handler: everything else is 405, whatever the URL."""
        return {
            ("", "get"): self._get, ("", "list"): self._list, ("", "watch"): self._watch,
            ("", "create"): self._create, ("", "update"): self._update,
            ("", "patch"): self._patch, ("", "delete"): self._delete,
            ("", "deletecollection"): self._deletecollection,
            ("status", "get"): self._get, ("status", "update"): self._update,
            ("status", "patch"): self._patch,
            ("finalize", "update"): self._update,
            ("scale", "get"): self._scale, ("scale", "update"): self._scale,
            ("scale", "patch"): self._scale,
            ("binding", "create"): self._binding, ("eviction", "create"): self._eviction,
            ("log", "get"): self._log,
            ("exec", "create"): self._connect, ("attach", "create"): self._connect,
        }

    @staticmethod
    def _verb(request: web.Request, target: Target) -> str:
        method, named = request.method, bool(target.name)
        if target.subresource in CONNECT and named and method in ("GET", "POST"):
            # Kubernetes authorizes exec and attach as "create", by GET (WebSocket) or POST,
            # so a read-only role (a node's) cannot open a shell.
            return "create"
        if method == "GET":
            if requests.is_watch(request.query, target):
                return "watch"
            return "get" if named else "list"
        if method == "POST" and (not named or target.subresource):
            return "create"
        if method == "PUT" and named:
            return "update"
        if method == "PATCH" and named:
            return "patch"
        if method == "DELETE" and not target.subresource:
            return "delete" if named else "deletecollection"
        raise errors.method_not_allowed(f"{method} is not supported on this URL")

    async def _authorize(self, request: web.Request, verb: str, target: Target) -> None:
        user: User | None = request.get(USER)
        if user is None:  # --insecure: every caller is the administrator
            return
        if user.is_admin:
            return
        name = target.name
        if verb == "create" and not name:
            # A create names its object in the body; rules like "a node's own Node" need it.
            body, _ = await self._read_body(request)
            meta = body.get("metadata") if isinstance(body, dict) else None
            name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
        attrs = RequestAttributes(verb=verb, group=target.rt.group, resource=target.rt.plural,
                                  subresource=target.subresource, namespace=target.namespace,
                                  name=name)
        existing = None
        if needs_existing(user, attrs):
            kv = await self.registry.get_kv(target.rt, target.namespace, target.name)
            existing = decode(kv) if kv is not None else None
        authorize(user, attrs, existing)

    # ------------------------------------------------------------ responses

    def _respond(self, request: web.Request, obj: Any, output: Output, *, status: int = 200,
                 warnings: list[str] | None = None) -> web.Response:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(f'299 - "{_header_text(w)}"' for w in warnings)
        if output.yaml:
            return web.Response(body=yaml.safe_dump(obj, sort_keys=False).encode(),
                                status=status, content_type=requests.YAML, headers=headers)
        return web.Response(body=dumps(obj), status=status, content_type=requests.JSON,
                            headers=headers)

    def _shape(self, target: Target, obj: Obj, output: Output, request: web.Request) -> Any:
        """One object as the client asked for it (itself, a one-row Table, or its metadata)."""
        if output.as_kind == "Table":
            return self._table(target, [obj], request, {})
        if output.as_kind == "PartialObjectMetadata":
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata", {})}
        return obj

    def _table(self, target: Target, objs: list[Obj], request: web.Request,
               list_meta: dict[str, Any], *, headers: bool = True) -> Obj:
        include = request.query.get("includeObject", "Metadata")
        if include not in ("None", "Metadata", "Object"):
            raise errors.bad_request(f"includeObject {include!r} is invalid: want None, "
                                     "Metadata or Object")
        result = table.to_table(target.rt.strategy.columns(), objs, include_object=include,
                                list_meta=list_meta, now=self.clock())
        if not headers:
            result["columnDefinitions"] = []
        return result

    # ------------------------------------------------------------ verbs

    async def _get(self, request: web.Request, target: Target, verb: str,
                   output: Output) -> web.Response:
        obj = await self.registry.get(target.rt, target.namespace, target.name)
        return self._respond(request, self._shape(target, obj, output, request), output)

    async def _list(self, request: web.Request, target: Target, verb: str,
                    output: Output) -> web.Response:
        opts = requests.list_options(request.query, target)
        result = await self.registry.list(target.rt, target.namespace, opts)
        list_meta: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if result.remaining is not None:
            list_meta["remainingItemCount"] = result.remaining
        if output.as_kind == "Table":
            return self._respond(request, self._table(target, result.items, request, list_meta),
                                 output)
        if output.as_kind == "PartialObjectMetadata":
            body = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta,
                    "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": o.get("metadata", {})} for o in result.items]}
            return self._respond(request, body, output)
        rt = target.rt
        return self._respond(request, {"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                                       "metadata": list_meta, "items": result.items}, output)

    async def _read_body(self, request: web.Request, *, allow_patch: bool = False
                         ) -> tuple[Any, str]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.too_large(requests.MAX_BODY) from None
        return requests.parse_body(raw, request.headers.get("Content-Type", ""),
                                   allow_patch=allow_patch)

    def _write_options(self, request: web.Request, patch_type: str = "") -> WriteOptions:
        params = requests.write_params(request.query, request.headers.get("User-Agent", ""),
                                       patch_type)
        return WriteOptions(dry_run=params.dry_run, field_manager=params.field_manager,
                            field_validation=params.field_validation, force=params.force)

    async def _create(self, request: web.Request, target: Target, verb: str,
                      output: Output) -> web.Response:
        body, _ = await self._read_body(request)
        opts = self._write_options(request)
        obj = await self.registry.create(target.rt, target.namespace, body, opts)
        return self._respond(request, self._shape(target, obj, output, request), output,
                             status=201, warnings=opts.warnings)

    async def _update(self, request: web.Request, target: Target, verb: str,
                      output: Output) -> web.Response:
        body, _ = await self._read_body(request)
        opts = self._write_options(request)
        obj = await self.registry.update(target.rt, target.namespace, target.name, body, opts,
                                         subresource=target.subresource)
        return self._respond(request, self._shape(target, obj, output, request), output,
                             warnings=opts.warnings)

    async def _patch(self, request: web.Request, target: Target, verb: str,
                     output: Output) -> web.Response:
        body, patch_type = await self._read_body(request, allow_patch=True)
        opts = self._write_options(request, patch_type)
        obj, created = await self.registry.patch(target.rt, target.namespace, target.name,
                                                 patch_type, body, opts,
                                                 subresource=target.subresource)
        return self._respond(request, self._shape(target, obj, output, request), output,
                             status=201 if created else 200, warnings=opts.warnings)

    async def _delete_body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        raw = await request.read()
        if not raw.strip():
            return None
        body, _ = requests.parse_body(raw, request.headers.get("Content-Type", "application/json"))
        return body

    async def _delete(self, request: web.Request, target: Target, verb: str,
                      output: Output) -> web.Response:
        opts = requests.delete_options(request.query, await self._delete_body(request))
        obj, gone = await self.registry.delete(target.rt, target.namespace, target.name, opts)
        if gone and target.rt is not PODS:
            return self._respond(request, status_success(target.rt, obj), output)
        return self._respond(request, self._shape(target, obj, output, request), output,
                             status=200 if gone else 202)

    async def _deletecollection(self, request: web.Request, target: Target, verb: str,
                                output: Output) -> web.Response:
        opts = requests.delete_options(request.query, await self._delete_body(request))
        list_opts = requests.list_options(request.query, target)
        items = await self.registry.delete_collection(target.rt, target.namespace, list_opts,
                                                      opts)
        rt = target.rt
        return self._respond(request, {"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                                       "metadata": {}, "items": items}, output)

    # ------------------------------------------------------------ subresources

    def _scale_of(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector") or {}
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": selector_to_string(selector)},
        }

    async def _scale(self, request: web.Request, target: Target, verb: str,
                     output: Output) -> web.Response:
        """autoscaling/v1 Scale over spec.replicas, with the parent's resourceVersion.

        A change is written as a merge patch of spec.replicas (carrying the Scale's
        resourceVersion when the client gave one), so it never overwrites other fields.
        """
        rt = target.rt
        if verb == "get":
            obj = await self.registry.get(rt, target.namespace, target.name)
            return self._respond(request, self._scale_of(obj), output)
        body, patch_type = await self._read_body(request, allow_patch=verb == "patch")
        if patch_type == "apply":
            raise errors.unsupported_media_type("application/apply-patch+yaml")
        opts = self._write_options(request, patch_type)
        if verb == "patch":
            obj = await self.registry.get(rt, target.namespace, target.name)
            scale = self.registry.patch_object(rt, self._scale_of(obj), patch_type, body, opts)
        elif isinstance(body, dict):
            scale = body
        else:
            raise errors.bad_request("the body of a Scale must be a JSON object")
        replicas = _dig(scale, "spec", "replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("autoscaling", "Scale", target.name, [errors.invalid_value(
                "spec.replicas", replicas, "must be greater than or equal to 0")])
        change: dict[str, Any] = {"spec": {"replicas": replicas}}
        rv = _dig(scale, "metadata", "resourceVersion") if verb == "update" else None
        if rv:
            change["metadata"] = {"resourceVersion": rv}
        updated, _ = await self.registry.patch(rt, target.namespace, target.name, "merge",
                                               change, opts)
        return self._respond(request, self._scale_of(updated), output)

    async def _binding(self, request: web.Request, target: Target, verb: str, output: Output
                       ) -> web.Response:
        """pods/binding: set spec.nodeName once, as the scheduler does."""
        body, _ = await self._read_body(request)
        node = _dig(body, "target", "name")
        if not isinstance(node, str) or not node:
            raise errors.invalid("", "Binding", target.name, [errors.required("target.name")])
        uid = _dig(body, "metadata", "uid")
        opts = self._write_options(request)
        pod = await self.registry.bind(target.namespace, target.name, node, opts,
                                       uid=uid if isinstance(uid, str) else "")
        return self._respond(request, status_success(target.rt, pod, 201), output, status=201)

    async def _eviction(self, request: web.Request, target: Target, verb: str, output: Output
                        ) -> web.Response:
        """pods/eviction: a delete (no PodDisruptionBudgets are served, so always allowed)."""
        body, _ = await self._read_body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of an Eviction must be a JSON object")
        opts = requests.delete_options(request.query, body.get("deleteOptions"))
        pod, _ = await self.registry.delete(target.rt, target.namespace, target.name, opts)
        return self._respond(request, status_success(target.rt, pod, 201), output, status=201)

    async def _agent_target(self, request: web.Request, target: Target) -> tuple[str, str, str]:
        """(agent URL, container, node name) for a request to a pod's container: the pod must
        be bound, and the container named (or the pod's only one, or its
        ``kubectl.kubernetes.io/default-container``) one of its containers."""
        pod = await self.registry.get(target.rt, target.namespace, target.name)
        spec = pod.get("spec") or {}
        node_name = spec.get("nodeName")
        if not node_name:
            raise errors.bad_request(
                f'pod {target.name} does not have a host assigned')
        containers = [c.get("name") for c in spec.get("containers") or ()]
        default = ((pod.get("metadata") or {}).get("annotations") or {}).get(
            DEFAULT_CONTAINER_ANNOTATION)
        container = request.query.get("container") or (
            containers[0] if len(containers) == 1 else default if default in containers else "")
        if not container:
            raise errors.bad_request(
                f"a container name must be specified for pod {target.name}, choose one of: "
                f"{containers}")
        if container not in containers:
            raise errors.bad_request(
                f"container {container} is not valid for pod {target.name}")
        node = await self.registry.get(NODES, "", node_name)
        url = _agent_url(node)
        if url is None:
            raise errors.unavailable(f"node {node_name} publishes no agent endpoint")
        return url, container, node_name

    async def _log(self, request: web.Request, target: Target, verb: str, output: Output
                   ) -> web.StreamResponse:
        """pods/log: proxied to the agent of the pod's node (its daemon endpoint)."""
        url, container, node_name = await self._agent_target(request, target)
        upstream = f"{url}/containerLogs/{target.namespace}/{target.name}/{container}"
        params = {k: v for k, v in request.query.items()
                  if k in ("follow", "tailLines", "previous", "timestamps", "sinceSeconds",
                           "limitBytes")}
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        # No total timeout: `kubectl logs -f` follows for as long as the user wants.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(upstream, params=params,
                                       ssl=request.app.get(AGENT_SSL, True)) as answer:
                    if answer.status != 200:
                        raise errors.ApiError(answer.status, "BadRequest",
                                              (await answer.text())[:1000])
                    await response.prepare(request)
                    async for chunk in answer.content.iter_any():
                        await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError, ConnectionResetError) as exc:
            if response.prepared:
                return response
            raise errors.unavailable(f"cannot reach the agent of node {node_name}: {exc}"
                                     ) from None
        return response

    async def _connect(self, request: web.Request, target: Target, verb: str, output: Output
                       ) -> web.StreamResponse:
        """pods/exec and pods/attach: a WebSocket relayed to the agent of the pod's node.

        The agent is dialled first with the client's query and subprotocols, so that its
        answer (a refusal, or the subprotocol it picked) decides what the client gets; then
        messages go both ways unchanged until either side closes.
        """
        sub = target.subresource
        if sub == "exec" and not request.query.getall("command", []):
            raise errors.bad_request("you must specify at least one command for the container")
        # The target is checked first: kubectl retries any refused WebSocket with SPDY, and
        # the answer to that retry is the error it shows.
        url, container, node_name = await self._agent_target(request, target)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",") if p.strip()]
        upstream = f"{url}/{sub}/{target.namespace}/{target.name}/{container}"
        params = [(k, v) for k, v in request.query.items() if k != "container"]
        agent_ssl = request.app.get(AGENT_SSL, True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
                # The agent's reason, if it has one (a stopped container), else its word that
                # a WebSocket is required.
                raise await _agent_refusal(session, upstream, params, agent_ssl, None)
            try:
                agent_ws = await session.ws_connect(upstream, params=params, protocols=offered,
                                                    ssl=agent_ssl,
                                                    max_msg_size=MAX_RELAY_MESSAGE)
            except aiohttp.WSServerHandshakeError as exc:
                raise await _agent_refusal(session, upstream, params, agent_ssl, exc.status
                                           ) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.unavailable(f"cannot reach the agent of node {node_name}: {exc}"
                                         ) from None
            async with agent_ws:
                client_ws = web.WebSocketResponse(
                    protocols=(agent_ws.protocol,) if agent_ws.protocol else (),
                    max_msg_size=MAX_RELAY_MESSAGE)
                await client_ws.prepare(request)
                await _relay(client_ws, agent_ws)
        return client_ws

    # ------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, target: Target, verb: str,
                     output: Output) -> web.StreamResponse:
        opts: ListOptions = requests.list_options(request.query, target)
        if target.name:
            opts.field_selector = parse_field_selector(f"metadata.name={target.name}")
        timeout = requests.int_param(request.query, "timeoutSeconds")
        if timeout is None:
            timeout = int(MIN_REQUEST_TIMEOUT * (1 + random.random()))
        bookmarks = requests.flag_param(request.query, "allowWatchBookmarks")
        response = web.StreamResponse(headers={"Content-Type": requests.JSON,
                                               "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        rt = target.rt
        first_table = True
        async with self.metrics.watching(rt.group, rt.plural):
            events = self.registry.watch(rt, target.namespace, opts, bookmarks)
            try:
                async with asyncio.timeout(timeout):
                    async for kind, obj in events:
                        if output.as_kind == "Table" and kind != "BOOKMARK":
                            obj = self._table(target, [obj], request, {}, headers=first_table)
                            first_table = False
                        elif output.as_kind == "PartialObjectMetadata" and kind != "BOOKMARK":
                            obj = self._shape(target, obj, output, request)
                        await response.write(dumps({"type": kind, "object": obj}) + b"\n")
                        self.metrics.watch_events.labels(rt.group, rt.plural).inc()
            except TimeoutError:
                pass
            except errors.ApiError as exc:
                await self._write_quietly(response, {"type": "ERROR", "object": exc.status()})
            except ConnectionResetError:
                pass  # the client left
            except Exception:  # noqa: BLE001 - the stream has started: end it, never a 500
                log.exception("watch of %s ended by an internal error", rt.plural)
                status = errors.ApiError(500, "InternalError", "the watch ended unexpectedly")
                await self._write_quietly(response, {"type": "ERROR", "object": status.status()})
            finally:
                await events.aclose()
        return response

    @staticmethod
    async def _write_quietly(response: web.StreamResponse, event: Obj) -> None:
        try:
            await response.write(dumps(event) + b"\n")
        except ConnectionResetError:
            pass


def _header_text(text: str) -> str:
    """``text`` as a quoted-string of a header: quotes and backslashes escaped, control
    characters (from field names a client sent, say) written as \\uXXXX."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f else c for c in text)


async def _agent_refusal(session: aiohttp.ClientSession, upstream: str,
                         params: list[tuple[str, str]], agent_ssl: ssl.SSLContext | bool,
                         status: int | None) -> errors.ApiError:
    """The agent's refusal of an upgrade (``status``; None: a request without one) as a
    Status: a WebSocket handshake drops the answer's body, so the same request is asked again
    without the upgrade (the agent checks everything before it upgrades, starts nothing
    without one, and then says a WebSocket is required) to read its words."""
    message = f"the node agent refused the connection ({status})"
    try:
        async with session.get(upstream, params=params, ssl=agent_ssl) as answer:
            if status is None or answer.status == status:
                status = answer.status
                message = (await answer.text()).strip()[:1000] or message
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        if status is None:
            return errors.unavailable(f"cannot reach the node agent: {exc}")
    reason = {400: "BadRequest", 403: "Forbidden", 404: "NotFound"}.get(status or 0,
                                                                        "InternalError")
    return errors.ApiError(status if status in (400, 403, 404) else 500, reason, message)


async def _relay(client: web.WebSocketResponse, agent: aiohttp.ClientWebSocketResponse) -> None:
    """Copy messages both ways until either side closes, then close the other."""

    async def pump(source: Any, sink: Any) -> None:
        async for msg in source:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)

    loop = asyncio.get_running_loop()
    tasks = {loop.create_task(pump(client, agent), name="relay to agent"),
             loop.create_task(pump(agent, client), name="relay to client")}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(
                    result, (ConnectionResetError, aiohttp.ClientError)):
                log.warning("exec relay ended by %s: %s", type(result).__name__, result)
        await agent.close()
        await client.close()


def _agent_url(node: Obj) -> str | None:
    status = node.get("status") or {}
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port"))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or ()}
    host = addresses.get("InternalIP") or addresses.get("Hostname")
    if not port or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}"


def _dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` through JSON objects only; None where the path leaves them (a body
    is untrusted: any level may be a list, a string or null)."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
