"""The API client: Kubernetes REST verbs over one aiohttp session, failing over between
controllers.

Flow: errors first (``ApiError`` carries the server's ``Status``; ``error_from_status`` picks the
subclass a caller catches: ``NotFound``, ``Conflict``, ``Expired``...). Then ``ApiClient``: every
verb goes through ``_request``, which sends to the controller that answered last and, on a
connection error, a timeout, 503 (no quorum) or 429 (too busy), moves to the next URL, round
robin, for at most ``ROUNDS`` passes over the list. The verbs follow, then ``watch``, which
opens the stream the same way and yields its newline-delimited events; last the kubeconfig
loader.

Retries and idempotency: a request that timed out or lost its connection after it was sent may
have been applied. Retried, a create then fails with ``AlreadyExists``, an update or a delete
carrying a resourceVersion or uid with ``Conflict``, a delete with ``NotFound``: callers that
retry writes must read those as "maybe it was me". Merge and apply patches are safe to apply
twice; a JSON patch that appends to a list is not.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import ssl as ssllib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml
from cryptography.hazmat.primitives import serialization

from .resources import PODS, Resource

log = logging.getLogger(__name__)

Obj = dict[str, Any]

#: Passes over the controller URLs a request makes before it gives up.
ROUNDS = 3
#: Pause before each pass after the first, doubled each time (seconds).
ROUND_PAUSE = 0.2
#: Answers that say "ask another controller" (no store quorum; too many requests in flight).
RETRY_STATUS = frozenset({429, 503})
#: A watch event larger than this ends the stream (the server caps bodies at 3 MiB).
MAX_EVENT_BYTES = 16 << 20
JSON = "application/json"
PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML
}
#: Status reasons of HTTP codes, for answers that carry no Status body.
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """A failed request, holding the Kubernetes ``Status`` that says why."""

    def __init__(self, status: Obj) -> None:
        self.status = status
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @property
    def code(self) -> int:
        code = self.status.get("code")
        return code if isinstance(code, int) else 0

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")


class NotFound(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Conflict(ApiError):
    """A resourceVersion or uid precondition failed, or an apply conflicted with another
    field manager."""


class Expired(ApiError):
    """The resourceVersion (or continue token) is older than the server's history: relist."""


class Invalid(ApiError):
    pass


class Forbidden(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Unavailable(ApiError):
    """No controller answered (or all said 503): the request may or may not have applied."""


_BY_REASON: dict[str, type[ApiError]] = {
    "NotFound": NotFound, "AlreadyExists": AlreadyExists, "Conflict": Conflict,
    "Expired": Expired, "Gone": Expired, "Invalid": Invalid, "Forbidden": Forbidden,
    "Unauthorized": Unauthorized, "ServiceUnavailable": Unavailable,
}
_BY_CODE: dict[int, type[ApiError]] = {
    404: NotFound, 409: Conflict, 410: Expired, 422: Invalid, 403: Forbidden, 401: Unauthorized,
    503: Unavailable,
}


def error_from_status(status: Obj) -> ApiError:
    """The ``ApiError`` subclass for a Status: by its reason, else by its code."""
    cls = _BY_REASON.get(str(status.get("reason") or ""))
    if cls is None:
        cls = _BY_CODE.get(status.get("code") or 0, ApiError)
    return cls(status)


def failure(code: int, message: str, reason: str = "") -> Obj:
    """A Status of our own making, for failures the server did not describe."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason or _REASONS.get(code, "Unknown"),
            "code": code}


def _error_of_answer(code: int, raw: bytes) -> ApiError:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return error_from_status(body)
    return error_from_status(failure(code, raw[:1000].decode("utf-8", "replace").strip()))


# ---------------------------------------------------------------- client


@dataclass(frozen=True)
class ObjectList:
    items: list[Obj]
    #: The store revision the list was read at: where a watch continues from.
    resource_version: str


class ApiClient:
    """An async client of the Kubernetes API of one cluster, reachable at any of ``urls``.

    Use as ``async with ApiClient(urls, ssl) as client:``; one session (keep-alive
    connections) serves every request. ``timeout`` bounds each attempt of a request (and the
    silence of a watch with bookmarks, whose server sends one every few seconds).
    """

    def __init__(self, urls: list[str], ssl: ssllib.SSLContext | None = None, *,
                 timeout: float = 30.0, user_agent: str = "corral") -> None:
        if not urls:
            raise ValueError("an ApiClient needs at least one controller URL")
        self.urls = [url.rstrip("/") for url in urls]
        self.timeout = timeout
        self._ssl = ssl
        self._headers = {"User-Agent": user_agent, "Accept": JSON}
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path | str, *, urls: list[str] | None = None,
                        timeout: float = 30.0, user_agent: str = "corral") -> ApiClient:
        """A client of the current context of a kubeconfig with a client certificate; of
        ``urls`` instead of its server when given (every controller of the cluster)."""
        server, tls = _read_kubeconfig(Path(path))
        return cls(urls or [server], tls, timeout=timeout, user_agent=user_agent)

    async def __aenter__(self) -> ApiClient:
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def url(self) -> str:
        """The controller the next request goes to first (the last one that answered)."""
        return self.urls[self._current]

    # ------------------------------------------------------------ transport

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       body: Any = None, content_type: str = JSON, watch: bool = False,
                       timeout: aiohttp.ClientTimeout | None = None
                       ) -> tuple[aiohttp.ClientResponse, bytes]:
        """The answer of the first controller that gives one, with its body read.

        A watch's answer comes back open and unread (the caller reads and releases it).
        Raises the server's error, or ``Unavailable`` when no controller answered.
        """
        if self._session is None:
            raise RuntimeError("use the ApiClient as 'async with ApiClient(...)'")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else None
        timeout = timeout or aiohttp.ClientTimeout(total=self.timeout)
        last: ApiError | None = None
        for attempt in range(ROUNDS * len(self.urls)):
            if attempt and attempt % len(self.urls) == 0:
                await asyncio.sleep(ROUND_PAUSE * 2 ** (attempt // len(self.urls) - 1))
            index = self._current
            url = self.urls[index] + path
            try:
                response = await self._session.request(method, url, params=params, data=data,
                                                       headers=headers, timeout=timeout)
                if watch and response.status < 400:
                    return response, b""
                async with response:
                    raw = await response.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    TimeoutError) as exc:
                last = Unavailable(failure(503, f"{method} {url}: {exc!r}"))
            else:
                if response.status < 400:
                    return response, raw
                error = _error_of_answer(response.status, raw)
                if response.status not in RETRY_STATUS:
                    raise error
                last = error
            log.warning("%s %s failed (%s); trying the next controller", method, url, last)
            if self._current == index:  # another request may have moved on already
                self._current = (index + 1) % len(self.urls)
        assert last is not None
        raise last

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        _, raw = await self._request(method, path, **kw)
        return json.loads(raw) if raw.strip() else None

    # ------------------------------------------------------------ verbs

    async def get(self, res: Resource, namespace: str, name: str) -> Obj:
        return await self._call("GET", res.path(namespace, name))

    async def list(self, res: Resource, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0) -> ObjectList:
        """Every matching object, read ``limit`` at a time (0: in one answer), at one revision."""
        params = _selectors(label_selector, field_selector)
        if limit:
            params["limit"] = str(limit)
        items: list[Obj] = []
        while True:
            page = await self._call("GET", res.path(namespace), params=params)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return ObjectList(items, str(meta.get("resourceVersion", "")))
            params["continue"] = meta["continue"]

    async def create(self, res: Resource, namespace: str, obj: Obj, *,
                     field_manager: str | None = None) -> Obj:
        """Create ``obj``; ``AlreadyExists`` if its name is taken (see the module docstring)."""
        return await self._call("POST", res.path(namespace), body=obj,
                                params=_manager(field_manager))

    async def update(self, res: Resource, obj: Obj, *, subresource: str = "") -> Obj:
        """Replace ``obj`` (namespace and name from its metadata).

        Its ``metadata.resourceVersion`` makes this a compare-and-swap: ``Conflict`` when the
        object changed since it was read. Without one the update is unconditional.
        """
        meta = obj.get("metadata") or {}
        path = res.path(meta.get("namespace", ""), meta.get("name", ""), subresource)
        return await self._call("PUT", path, body=obj)

    async def patch(self, res: Resource, namespace: str, name: str, patch: Any, *,
                    patch_type: str = "merge", subresource: str = "",
                    field_manager: str | None = None, force: bool = False) -> Obj:
        """Patch an object: ``patch_type`` is "merge", "strategic", "json" or "apply"
        (server-side apply, which wants a ``field_manager``; ``force`` takes over fields)."""
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"patch_type {patch_type!r} is not one of "
                             f"{', '.join(PATCH_CONTENT_TYPES)}")
        params = _manager(field_manager)
        if force:
            params["force"] = "true"
        return await self._call("PATCH", res.path(namespace, name, subresource), body=patch,
                                content_type=PATCH_CONTENT_TYPES[patch_type], params=params)

    async def delete(self, res: Resource, namespace: str, name: str, *,
                     propagation: str | None = None, grace_period: int | None = None,
                     uid: str | None = None, resource_version: str | None = None) -> Obj:
        """Delete an object; the answer is a Status, or the object while finalizers or a
        grace period hold it. ``uid``/``resource_version`` are preconditions (``Conflict``)."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation is not None:
            options["propagationPolicy"] = propagation
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version))
                         if v is not None}
        if preconditions:
            options["preconditions"] = preconditions
        return await self._call("DELETE", res.path(namespace, name), body=options)

    async def delete_collection(self, res: Resource, namespace: str = "", *,
                                label_selector: str = "", field_selector: str = "",
                                propagation: str | None = None) -> list[Obj]:
        """Delete every matching object (all of ``namespace``'s without selectors); the
        objects as deleted, those that linger (finalizers, a grace period) included."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation is not None:
            options["propagationPolicy"] = propagation
        answer = await self._call("DELETE", res.path(namespace),
                                  params=_selectors(label_selector, field_selector), body=options)
        return list((answer or {}).get("items") or ())

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> None:
        """Bind a pod to a node (pods/binding, as the scheduler does); ``Conflict`` if it is
        bound already, or (given ``uid``) if the pod of that name is another one."""
        meta = {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})}
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        await self._call("POST", PODS.path(namespace, name, "binding"), body=binding)

    # ------------------------------------------------------------ watch

    async def watch(self, res: Resource, namespace: str = "", *, resource_version: str,
                    label_selector: str = "", field_selector: str = "",
                    timeout_seconds: int | None = None, bookmarks: bool = True
                    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events after ``resource_version`` until the server ends the stream.

        Types are ADDED, MODIFIED, DELETED and, with ``bookmarks``, BOOKMARK (an object with
        only ``metadata.resourceVersion``: progress to resume from). An ERROR event raises its
        Status (``Expired`` when the revision is compacted: relist); a lost connection raises
        ``Unavailable``. Close the iterator (``contextlib.aclosing``) to end the watch early.
        """
        params = _selectors(label_selector, field_selector)
        params.update(watch="true", resourceVersion=resource_version)
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        # Only bookmarks make a silent stream suspicious: without them, a quiet watch is normal.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                        sock_read=self.timeout if bookmarks else None)
        response, _ = await self._request("GET", res.path(namespace), params=params,
                                          watch=True, timeout=timeout)
        async with response:
            buffer = bytearray()
            try:
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[:end + 1]
                        if line.strip():
                            yield _event(line)
                    if len(buffer) > MAX_EVENT_BYTES:
                        raise ApiError(failure(500, f"a watch event of {res.plural} is larger "
                                                    f"than {MAX_EVENT_BYTES} bytes"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    TimeoutError) as exc:
                raise Unavailable(failure(503, f"the watch of {res.plural} at "
                                               f"{response.url.origin()} broke: {exc!r}")
                                  ) from exc


def _event(line: bytes) -> tuple[str, Obj]:
    try:
        event = json.loads(line)
        kind, obj = event["type"], event["object"]
    except (ValueError, UnicodeDecodeError, TypeError, KeyError) as exc:
        raise ApiError(failure(500, f"a watch event is not valid: {exc}")) from None
    if kind == "ERROR":
        raise error_from_status(obj if isinstance(obj, dict) else failure(500, str(obj)))
    return kind, obj


def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _manager(field_manager: str | None) -> dict[str, str]:
    return {"fieldManager": field_manager} if field_manager else {}


# ---------------------------------------------------------------- kubeconfig


def _read_kubeconfig(path: Path) -> tuple[str, ssllib.SSLContext]:
    """The server and a TLS context of a kubeconfig's current context.

    Certificates inline (``*-data``) or as files relative to the kubeconfig. Our own copy of
    what ``controlplane.auth.kubeconfig`` does, since the node agent may not import the server.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        context = _named(doc, "contexts", doc["current-context"])
        cluster = _named(doc, "clusters", context["cluster"])
        user = _named(doc, "users", context["user"])
        return cluster["server"], _tls(_material(path, cluster, "certificate-authority"),
                                       _material(path, user, "client-certificate"),
                                       _material(path, user, "client-key"))
    except (OSError, yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"kubeconfig {path} cannot be used: {exc!r}") from exc


def _tls(ca: bytes, cert: bytes, key: bytes) -> ssllib.SSLContext:
    """A context trusting ``ca`` and presenting ``cert``.

    ssl loads keys only from files: the key is written encrypted with a one-time password.
    """
    tls = ssllib.create_default_context(cadata=ca.decode("ascii"))
    password = secrets.token_bytes(32)
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password))
    with tempfile.NamedTemporaryFile(prefix="corral-client-") as chain:
        chain.write(cert + b"\n" + encrypted)
        chain.flush()
        tls.load_cert_chain(chain.name, password=password)
    return tls


def _named(doc: Obj, section: str, name: str) -> Obj:
    for entry in doc[section]:
        if entry["name"] == name:
            return entry[section[:-1]]
    raise KeyError(f"no {section[:-1]} named {name!r}")


def _material(path: Path, body: Obj, field: str) -> bytes:
    if body.get(f"{field}-data"):
        return base64.b64decode(body[f"{field}-data"], validate=True)
    return (path.parent / Path(body[field]).expanduser()).read_bytes()
