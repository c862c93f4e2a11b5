"""The one generic registry: create, get, list, update, patch and delete of any kind.

Kubernetes' generic store (``staging/src/k8s.io/apiserver/pkg/registry/generic/registry``)
in small: every verb follows one flow for every kind, and a kind's ``Strategy`` supplies what
is special about it. Objects are stored as msgpack under ``ResourceType.key``; an object's
``metadata.resourceVersion`` is the store's ``mod_revision`` of its key, never stored in the
value. Every write is one store transaction guarded by a compare: create-if-absent, or
"unchanged since the version I read" for updates and deletes, so two writers never both win.

The flow of a write: read the current object (updates) -> apply the patch (patches) -> decode
against the kind's schema (``fieldValidation``) -> carry over what the client may not set ->
strategy prepare + default -> validate (metadata generically, then the strategy) -> record
managed fields -> compare-and-swap in the store (skipped with ``dryRun``).

Deletion sets ``deletionTimestamp`` and the finalizers the propagation policy asks for
(``orphan``, ``foregroundDeletion``), honours graceful deletion, and removes the object when
its last finalizer goes (a namespace: when ``spec.finalizers`` is empty too). Everything else
deletion causes is done by controllers on the leader, never here: dependents by the garbage
collector (``controllers.garbagecollector``), a namespace's content by the namespace
controller (``controllers.namespace``), which then finalizes it (``namespaces/{name}/finalize``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import uuid
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import msgpack

from raftstore.store import (
    Compacted,
    Compare,
    CompareTarget,
    Delete,
    EventType,
    FutureRevision,
    Get,
    KeyValue,
    Op,
    Put,
    Store,
    Unavailable,
)

from . import apply as ssa
from . import errors, schema, validation
from . import patch as patches
from .resources import ResourceType, lookup
from .selectors import FieldSelector, LabelSelector
from .strategy import Obj

#: Attempts of an unconditional update or a patch that lost a race to another writer.
CONFLICT_RETRIES = 8
#: Attempts of a write whose allocation ranges another API server changed meanwhile.
ALLOCATION_RETRIES = 32
NAMESPACES = lookup("", "v1", "namespaces")
PODS = lookup("", "v1", "pods")
#: Characters Kubernetes uses for generateName suffixes (no vowels, no look-alikes).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class AllocationPlan(Protocol):
    compares: list[Compare]
    ops: list[Op]


class Allocations(Protocol):
    """What a kind allocates from shared ranges (Services: ``allocators.ServiceAllocations``).

    ``plan(old, new)`` (create: ``old`` None; delete: ``new`` None) fills ``new`` in place and
    answers the compares and ops that go into the object's own transaction; it runs under
    ``lock``, with the transaction."""

    lock: asyncio.Lock

    async def plan(self, old: Obj | None, new: Obj | None) -> AllocationPlan: ...


@dataclass
class WriteOptions:
    """What a write request said besides its body, and what it collects for the response."""

    dry_run: bool = False
    field_manager: str = ""
    #: "Strict", "Warn" (the API's default) or "Ignore".
    field_validation: str = "Warn"
    force: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListOptions:
    label_selector: LabelSelector | None = None
    field_selector: FieldSelector | None = None
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass(frozen=True)
class DeleteOptions:
    grace_period: int | None = None
    propagation: str = ""  # "", "Background", "Foreground", "Orphan"
    uid: str = ""
    resource_version: str = ""
    dry_run: bool = False


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def encode(obj: Obj) -> bytes:
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return msgpack.packb(obj, use_bin_type=True)


def decode(kv: KeyValue, revision: int | None = None) -> Obj:
    """The stored object with its resourceVersion (``revision`` overrides, for deletions)."""
    obj = msgpack.unpackb(kv.value, raw=False)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision or kv.mod_revision)
    return obj


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _without_volatile(obj: Obj) -> Obj:
    """The object as compared to detect a no-op write (Kubernetes skips those)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


class _NoOp:
    """A write that changed nothing, carrying what to answer."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: A compare-and-swap that found the key changed since it was read.
LOST = object()


def _ownership(obj: Obj) -> list[tuple[Any, ...]]:
    """managedFields without their timestamps: a change of owners alone is a real write."""
    return [(m.get("manager"), m.get("operation"), m.get("subresource"), m.get("fieldsV1"))
            for m in (obj.get("metadata") or {}).get("managedFields") or ()]


def _spec_part(obj: Obj) -> Obj:
    """What metadata.generation counts: everything except metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def encode_continue(revision: int, start_key: str) -> str:
    raw = json.dumps({"v": "corral/1", "rv": revision, "start": start_key}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data.get("v") != "corral/1":
            raise ValueError("unknown version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise errors.bad_request(f"invalid continue token: {exc}") from None


class Registry:
    """Generic REST storage of every kind in ``resources.RESOURCES`` over one Store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = _utcnow,
        watch_progress_interval: float = 5.0,
        allocations: dict[tuple[str, str], Allocations] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.watch_progress_interval = watch_progress_interval
        #: (group, plural) -> what writes of that kind allocate, in the same transaction.
        self.allocations = dict(allocations or {})
        self._locks: dict[str, list[Any]] = {}

    # ---------------------------------------------------------------- reads

    async def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        kv = await self.get_kv(rt, namespace, name)
        if kv is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return decode(kv)

    async def current(self, rt: ResourceType, namespace: str, name: str, *, attempt: int = 0,
                      at_least: int = 0) -> KeyValue | None:
        """The stored object a write starts from.

        A first attempt reads the local replica: no log entry, no round trip. That is safe
        because every write is a compare-and-swap on what was read, so a stale read fails and
        the retry (``attempt`` > 0) reads linearizably. A key missing locally, or older than
        the version the client names (``at_least``), is read linearizably at once, so nobody is
        told NotFound or Conflict because this replica lags.
        """
        key = rt.key(namespace, name)
        if attempt == 0:
            kv, _ = await self._store_call(self.store.get(key, serializable=True))
            if kv is not None and kv.mod_revision >= at_least:
                return kv
        kv, _ = await self._store_call(self.store.get(key))
        return kv

    async def get_kv(self, rt: ResourceType, namespace: str, name: str) -> KeyValue | None:
        kv, _ = await self._store_call(self.store.get(rt.key(namespace, name)))
        return kv

    async def list(self, rt: ResourceType, namespace: str, opts: ListOptions) -> ListResult:
        """A page of objects; pages of one list all read the revision of the first."""
        prefix = rt.key_prefix(namespace)
        revision, serializable, start = 0, False, None
        if opts.continue_token:
            revision, start = decode_continue(opts.continue_token)
            if not start.startswith(prefix):
                raise errors.bad_request("continue token does not belong to this list")
        elif opts.resource_version not in ("", "0"):
            wanted = _parse_rv(opts.resource_version)
            if opts.resource_version_match == "Exact":
                revision = wanted
        elif opts.resource_version == "0":
            serializable = True
        filtered = opts.label_selector is not None or opts.field_selector is not None
        items: list[Obj] = []
        while True:
            want = opts.limit - len(items) if opts.limit else 0
            try:
                page = await self._store_call(self.store.range(
                    prefix, limit=want, continue_key=start, revision=revision,
                    serializable=serializable,
                ))
            except Compacted as exc:
                raise errors.expired(
                    f"The provided continue parameter is too old to display a consistent list "
                    f"result (revision {exc.requested} compacted). You can start a new list "
                    "without the continue parameter.") from None
            except FutureRevision:
                raise errors.timeout(f"Too large resource version: {revision}") from None
            # A page read at a past revision reports that revision, not the store's current one.
            revision = revision or page.revision
            for kv in page.kvs:
                obj = decode(kv)
                if not filtered or self._matches(rt, obj, opts):
                    items.append(obj)
            if not page.more:
                return ListResult(items, revision)
            start = page.continue_key
            if opts.limit and len(items) >= opts.limit:
                remaining = None if filtered else page.count - len(page.kvs)
                return ListResult(items, revision, encode_continue(revision, start or ""),
                                  remaining)

    def _matches(self, rt: ResourceType, obj: Obj, opts: ListOptions) -> bool:
        meta = obj.get("metadata") or {}
        if opts.label_selector is not None and not opts.label_selector.matches(meta.get("labels")):
            return False
        if opts.field_selector is not None:
            return opts.field_selector.matches(self.field_set(rt, obj))
        return True

    @staticmethod
    def field_set(rt: ResourceType, obj: Obj) -> dict[str, str]:
        meta = obj.get("metadata") or {}
        fields = {"metadata.name": meta.get("name", "")}
        if rt.namespaced:
            fields["metadata.namespace"] = meta.get("namespace", "")
        fields.update(rt.strategy.field_labels(obj))
        return fields

    # ---------------------------------------------------------------- create

    async def create(self, rt: ResourceType, namespace: str, body: Obj,
                     opts: WriteOptions) -> Obj:
        obj = await self._prepare_create(rt, namespace, self._decode_body(rt, body, opts))
        obj = ssa.track_update(None, obj, manager=opts.field_manager or "unknown",
                               api_version=rt.group_version,
                               now=obj["metadata"]["creationTimestamp"],
                               ignore=_reset_fields(rt, ""))
        return await self._put_new(rt, obj, opts)

    async def _prepare_create(self, rt: ResourceType, namespace: str, obj: Obj) -> Obj:
        """A decoded body made into a new object: system metadata, defaults, validation."""
        meta = _meta(obj)
        self._check_namespace(rt, namespace, meta)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(_NAME_ALPHABET) for _ in range(5))
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "managedFields", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.clock())
        if rt.strategy.track_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        rt.strategy.prepare_for_create(obj)
        rt.strategy.default(obj)
        self._validate(rt, obj, validation.validate_object_meta(
            meta, namespaced=rt.namespaced, name_validator=rt.strategy.name_validator)
            + rt.strategy.validate(obj))
        if rt.namespaced:
            await self._check_namespace_open(namespace)
        return obj

    async def _put_new(self, rt: ResourceType, obj: Obj, opts: WriteOptions) -> Obj:
        meta = obj["metadata"]
        key = rt.key(meta.get("namespace", ""), meta["name"])
        if opts.dry_run:
            kv = await self.get_kv(rt, meta.get("namespace", ""), meta["name"])
            if kv is not None:
                raise errors.already_exists(rt.group, rt.plural, meta["name"])
        result, obj = await self._commit(rt, key, Compare.absent(key), None, obj, opts.dry_run)
        if result is None:
            return obj
        if result is LOST:
            raise errors.already_exists(rt.group, rt.plural, meta["name"])
        obj["metadata"]["resourceVersion"] = str(result.revision)
        return obj

    async def _commit(self, rt: ResourceType, key: str, guard: Compare, old: Obj | None,
                      new: Obj | None, dry_run: bool) -> tuple[Any, Obj | None]:
        """Write ``new`` at ``key`` (None: delete it) if ``guard`` holds; (the transaction's
        result, None for a dry run, ``LOST`` when the guard failed; the object written).

        A kind with ``allocations`` writes them in the same transaction: the object and what it
        holds commit together or not at all. When only a range moved (another API server
        allocated), the allocation is planned again from a fresh copy of ``new``."""
        hook = self.allocations.get((rt.group, rt.plural))
        if hook is None:
            if dry_run:
                return None, new
            op = Put(key, encode(new)) if new is not None else Delete(key)
            result = await self._store_call(self.store.txn([guard], [op]))
            return (result if result.succeeded else LOST), new
        for attempt in range(ALLOCATION_RETRIES):
            obj = json_copy(new) if new is not None else None
            async with hook.lock:
                plan = await hook.plan(old, obj)
                if dry_run:
                    return None, obj
                op = Put(key, encode(obj)) if obj is not None else Delete(key)
                result = await self._store_call(self.store.txn(
                    [guard, *plan.compares], [op, *plan.ops], [Get(key)]))
            if result.succeeded:
                return result, obj
            if not plan.compares or not _holds(guard, result.results[0].kvs):
                return LOST, obj
            await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(attempt, 6)))
        raise errors.conflict(rt.group, rt.plural, (new or old or {}).get("metadata", {}).get(
            "name", ""), "the allocation ranges kept changing; please try again")

    def _check_namespace(self, rt: ResourceType, namespace: str, meta: dict[str, Any]) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and given != namespace:
            raise errors.bad_request("the namespace of the provided object does not match "
                                     "the namespace sent on the request")
        meta["namespace"] = namespace

    async def _check_namespace_open(self, namespace: str) -> None:
        kv = await self.current(NAMESPACES, "", namespace)
        if kv is None:
            raise errors.not_found("", "namespaces", namespace)
        ns = decode(kv)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.ApiError(
                403, "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated", kind="namespaces", name=namespace)

    # ---------------------------------------------------------------- the write loop

    async def _rewrite(self, rt: ResourceType, namespace: str, name: str,
                       attempt_write: Callable[[KeyValue | None], Awaitable[Any]], *,
                       at_least: int = 0, conditional: bool = False) -> Any:
        """Run ``attempt_write`` on the current object until it wins its compare-and-swap.

        ``attempt_write(kv)`` returns the result, or ``LOST`` when the key moved under it.
        The first attempt reads the local replica (``current``); what it concludes from that
        read (an error, a no-op ``NOOP(result)``, a lost race) is decided again from a
        linearizable read, so a lagging replica never answers for the cluster. Writers of one
        key in this process take turns; a write that names a resourceVersion (``conditional``)
        fails on a lost race, others retry with back-off, as Kubernetes' GuaranteedUpdate.
        """
        async with self._key_lock(rt.key(namespace, name)):
            for attempt in range(CONFLICT_RETRIES):
                kv = await self.current(rt, namespace, name, attempt=attempt, at_least=at_least)
                try:
                    result = await attempt_write(kv)
                except errors.ApiError:
                    if attempt == 0:
                        continue
                    raise
                if isinstance(result, _NoOp):
                    if attempt == 0:
                        continue
                    return result.value
                if result is not LOST:
                    return result
                if conditional and attempt > 0:
                    break
                if attempt > 0:
                    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise self._stale(rt, name)

    @asynccontextmanager
    async def _key_lock(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]

    # ---------------------------------------------------------------- update

    async def update(self, rt: ResourceType, namespace: str, name: str, body: Obj,
                     opts: WriteOptions, *, subresource: str = "") -> Obj:
        new = self._decode_body(rt, body, opts)
        meta = _meta(new)
        self._check_namespace(rt, namespace, meta)
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})")
        meta["name"] = name
        wanted_rv = meta.get("resourceVersion") or ""
        wanted = _parse_rv(wanted_rv) if wanted_rv else 0

        async def attempt_write(kv: KeyValue | None) -> Any:
            if kv is None:
                raise errors.not_found(rt.group, rt.plural, name)
            if wanted and wanted != kv.mod_revision:
                raise self._stale(rt, name)
            old = decode(kv)
            candidate = self._prepare_update(rt, json_copy(new), old, opts, subresource)
            return await self._swap(rt, kv, old, candidate, opts)

        return await self._rewrite(rt, namespace, name, attempt_write, at_least=wanted,
                                   conditional=bool(wanted))

    @staticmethod
    def _stale(rt: ResourceType, name: str) -> errors.ApiError:
        return errors.conflict(rt.group, rt.plural, name,
                               "the object has been modified; please apply your changes to "
                               "the latest version and try again")

    def _prepare_update(self, rt: ResourceType, new: Obj, old: Obj, opts: WriteOptions,
                        subresource: str) -> Obj:
        """The object an update writes: client changes minus what it may not change."""
        meta, old_meta = _meta(new), old["metadata"]
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise errors.conflict(rt.group, rt.plural, old_meta["name"],
                                  f"Precondition failed: UID in precondition: {meta['uid']}, "
                                  f"UID in object meta: {old_meta.get('uid')}")
        for key in ("uid", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generation"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if old_meta.get("deletionTimestamp"):
            # A deleting object may lose finalizers, never gain new ones (Kubernetes).
            added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
            if added:
                raise errors.invalid(rt.group, rt.kind, old_meta["name"], [errors.forbidden_field(
                    "metadata.finalizers", "no new finalizers can be added if the object is "
                    "being deleted")])
        if subresource == "status":
            rt.strategy.prepare_for_status_update(new, old)
            causes = rt.strategy.validate_status_update(new, old)
        elif subresource == "finalize":
            rt.strategy.prepare_for_finalize(new, old)
            causes = rt.strategy.validate(new)
        else:
            rt.strategy.prepare_for_update(new, old)
            rt.strategy.default(new)
            causes = (validation.validate_object_meta(
                meta, namespaced=rt.namespaced, name_validator=rt.strategy.name_validator)
                + validation.validate_object_meta_update(meta, old_meta)
                + rt.strategy.validate_update(new, old))
        self._validate(rt, new, causes)
        if rt.strategy.track_generation and _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if "managedFields" not in meta and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        return ssa.track_update(old, new, manager=opts.field_manager or "unknown",
                                api_version=rt.group_version, now=rfc3339(self.clock()),
                                subresource=subresource, ignore=_reset_fields(rt, subresource))

    async def _swap(self, rt: ResourceType, kv: KeyValue, old: Obj, new: Obj,
                    opts: WriteOptions) -> Any:
        """Write ``new`` over ``old`` if the key is still at ``kv``: the written object,
        ``NOOP(old)`` when nothing changed (no write, as Kubernetes), or ``LOST``."""
        if _without_volatile(new) == _without_volatile(old) and \
                _ownership(new) == _ownership(old):
            return _NoOp(old)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") \
                and not old["metadata"].get("deletionGracePeriodSeconds") \
                and not rt.strategy.holds_deletion(new):
            # The last finalizer is gone: the object goes away now (Kubernetes'
            # ShouldDeleteDuringUpdate; a namespace waits for its spec.finalizers too).
            return new if opts.dry_run else await self._remove(rt, kv, new)
        result, written = await self._commit(
            rt, kv.key, Compare.mod_revision(kv.key, kv.mod_revision), old, new, opts.dry_run)
        if result is None:
            return written
        if result is LOST:
            return LOST
        written["metadata"]["resourceVersion"] = str(result.revision)
        return written

    # ---------------------------------------------------------------- patch

    async def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str,
                    body: Any, opts: WriteOptions, *, subresource: str = "") -> tuple[Obj, bool]:
        """Apply a patch to the current object; (result, created). Retries lost races."""

        async def attempt_write(kv: KeyValue | None) -> Any:
            if kv is None:
                if patch_type != "apply":
                    raise errors.not_found(rt.group, rt.plural, name)
                return await self._apply_create(rt, namespace, name, body, opts), True
            old = decode(kv)
            patched = self._patched(rt, old, patch_type, body, opts)
            pmeta = _meta(patched)
            wanted_rv = pmeta.get("resourceVersion") or ""
            if wanted_rv and _parse_rv(wanted_rv) != kv.mod_revision:
                raise self._stale(rt, name)
            pmeta["resourceVersion"] = str(kv.mod_revision)
            new = self._decode_body(rt, patched, opts)
            if _meta(new).get("name") != name:
                raise errors.bad_request("the name of the object may not be changed by a patch")
            candidate = self._prepare_update(rt, new, old, opts, subresource)
            if patch_type == "apply":
                candidate["metadata"]["managedFields"] = patched["metadata"].get("managedFields")
            done = await self._swap(rt, kv, old, candidate, opts)
            if isinstance(done, _NoOp):
                return _NoOp((done.value, False))
            return LOST if done is LOST else (done, False)

        return await self._rewrite(rt, namespace, name, attempt_write)

    def _patched(self, rt: ResourceType, old: Obj, patch_type: str, body: Any,
                 opts: WriteOptions) -> Obj:
        try:
            if patch_type == "json":
                return patches.json_patch(old, body)
            if patch_type == "merge":
                return patches.merge_patch(old, body)
            if patch_type == "strategic":
                return patches.strategic_merge_patch(old, body, rt.group, rt.kind)
            return self._apply_config(rt, old, body, opts)
        except patches.PatchError as exc:
            raise exc.api_error() from None

    def _apply_config(self, rt: ResourceType, live: Obj | None, config: Any,
                      opts: WriteOptions) -> Obj:
        if not isinstance(config, dict):
            raise errors.bad_request("the apply configuration must be an object")
        if not opts.field_manager:
            raise errors.bad_request(
                "PATCH, application/apply-patch+yaml requests must have a fieldManager")
        if config.get("apiVersion") != rt.group_version or config.get("kind") != rt.kind:
            raise errors.bad_request(
                f"the apply configuration must have apiVersion {rt.group_version} and kind "
                f"{rt.kind}")
        config = self._decode_body(rt, config, opts)
        try:
            return ssa.apply(live, config, manager=opts.field_manager, force=opts.force,
                             group=rt.group, kind=rt.kind, api_version=rt.group_version,
                             now=rfc3339(self.clock()), ignore=_reset_fields(rt, ""))
        except ssa.ApplyConflict as exc:
            raise exc.api_error() from None

    async def _apply_create(self, rt: ResourceType, namespace: str, name: str, body: Any,
                            opts: WriteOptions) -> Obj:
        """An apply patch on a missing object creates it, owned by the applier as Apply."""
        obj = self._apply_config(rt, None, body, opts)
        meta = _meta(obj)
        if meta.get("name", name) != name:
            raise errors.bad_request("the name of the object does not match the name on the URL")
        meta["name"] = name
        managed = meta.get("managedFields")
        obj = await self._prepare_create(rt, namespace, obj)
        if managed is not None:
            obj["metadata"]["managedFields"] = managed
        return await self._put_new(rt, obj, opts)

    def patch_object(self, rt: ResourceType, obj: Obj, patch_type: str, body: Any,
                     opts: WriteOptions) -> Obj:
        """``obj`` with a patch applied (for subresources with their own shape, like Scale)."""
        return self._patched(rt, obj, patch_type, body, opts)

    async def bind(self, namespace: str, name: str, node: str, opts: WriteOptions, *,
                   uid: str = "") -> Obj:
        """pods/binding: assign a pending pod to ``node``, at most once (the scheduler's write);
        with ``uid`` (the Binding's metadata.uid), only the pod of that uid."""

        async def attempt_write(kv: KeyValue | None) -> Any:
            if kv is None:
                raise errors.not_found("", "pods", name)
            old = decode(kv)
            if uid and old["metadata"].get("uid") != uid:
                raise errors.conflict("", "pods/binding", name,
                                      f"Precondition failed: UID in precondition: {uid}, "
                                      f"UID in object meta: {old['metadata'].get('uid')}")
            spec = old.get("spec") or {}
            if spec.get("nodeName"):
                assigned = spec["nodeName"]
                raise errors.conflict("", "pods", name,
                                      f'pod {name} is already assigned to node "{assigned}"')
            if old["metadata"].get("deletionTimestamp"):
                raise errors.conflict("", "pods", name, f"pod {name} is being deleted, cannot be "
                                      "assigned to a host")
            new = json_copy(old)
            new["spec"]["nodeName"] = node
            conditions = [c for c in (new.setdefault("status", {}).get("conditions") or ())
                          if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True",
                               "lastTransitionTime": rfc3339(self.clock())})
            new["status"]["conditions"] = conditions
            return await self._swap(PODS, kv, old, new, opts)

        return await self._rewrite(PODS, namespace, name, attempt_write)

    # ---------------------------------------------------------------- delete

    async def delete(self, rt: ResourceType, namespace: str, name: str,
                     opts: DeleteOptions) -> tuple[Obj, bool]:
        """Delete or start deleting; (object, gone now). ``propagation`` Orphan or Foreground
        adds its finalizer, for the garbage collector to work."""
        wanted = _parse_rv(opts.resource_version) if opts.resource_version else 0

        async def attempt_write(kv: KeyValue | None) -> Any:
            if kv is None:
                raise errors.not_found(rt.group, rt.plural, name)
            obj = decode(kv)
            meta = obj["metadata"]
            if opts.uid and opts.uid != meta.get("uid"):
                raise errors.conflict(rt.group, rt.plural, name,
                                      f"Precondition failed: UID in precondition: {opts.uid}, "
                                      f"UID in object meta: {meta.get('uid')}")
            if wanted and wanted != kv.mod_revision:
                raise errors.conflict(rt.group, rt.plural, name,
                                      "Precondition failed: the resourceVersion in the "
                                      "precondition does not match")
            return await self._delete_once(rt, kv, obj, opts)

        return await self._rewrite(rt, namespace, name, attempt_write, at_least=wanted,
                                   conditional=bool(wanted or opts.uid))

    async def _delete_once(self, rt: ResourceType, kv: KeyValue, obj: Obj,
                           opts: DeleteOptions) -> Any:
        """(object, gone now), NOOP when already deleting as asked, or LOST."""
        meta = obj["metadata"]
        finalizers = _deletion_finalizers(list(meta.get("finalizers") or ()), opts.propagation)
        grace = rt.strategy.graceful_delete(obj, opts.grace_period)
        lingers = bool(finalizers) or grace > 0 or rt.strategy.holds_deletion(obj)
        if not lingers:
            removed = obj if opts.dry_run else await self._remove(rt, kv, obj)
            return LOST if removed is LOST else (removed, True)
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or ()) \
                and (meta.get("deletionGracePeriodSeconds") or 0) <= grace:
            return _NoOp((obj, False))  # already deleting, nothing new asked
        new = json_copy(obj)
        nmeta = new["metadata"]
        if not nmeta.get("deletionTimestamp") or grace < (
                nmeta.get("deletionGracePeriodSeconds") or 0):
            # When it may be removed at the latest, as Kubernetes sets it.
            nmeta["deletionTimestamp"] = rfc3339(self.clock() + timedelta(seconds=grace))
        nmeta["deletionGracePeriodSeconds"] = grace
        if finalizers:
            nmeta["finalizers"] = finalizers
        rt.strategy.prepare_for_delete(new)
        if opts.dry_run:
            return new, False
        result = await self._store_call(self.store.txn(
            [Compare.mod_revision(kv.key, kv.mod_revision)], [Put(kv.key, encode(new))]))
        if not result.succeeded:
            return LOST
        nmeta["resourceVersion"] = str(result.revision)
        return new, False

    async def _remove(self, rt: ResourceType, kv: KeyValue, obj: Obj) -> Any:
        """Delete the key if it is still at ``kv``: ``obj`` with the deletion's revision;
        ``LOST`` if it moved. Its dependents are the garbage collector's business; what it
        holds in allocation ranges is released in the same transaction."""
        stored = decode(kv) if (rt.group, rt.plural) in self.allocations else obj
        result, _ = await self._commit(rt, kv.key, Compare.mod_revision(kv.key, kv.mod_revision),
                                       stored, None, False)
        if result is LOST:
            return LOST
        obj["metadata"]["resourceVersion"] = str(result.revision)
        return obj

    async def delete_collection(self, rt: ResourceType, namespace: str, list_opts: ListOptions,
                                opts: DeleteOptions) -> list[Obj]:
        result = await self.list(rt, namespace, list_opts)
        deleted = []
        for obj in result.items:
            meta = obj["metadata"]
            try:
                done, _ = await self.delete(rt, meta.get("namespace", ""), meta["name"], opts)
                deleted.append(done)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
        return deleted

    # ---------------------------------------------------------------- watch

    async def watch(self, rt: ResourceType, namespace: str, opts: ListOptions,
                    bookmarks: bool) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events as Kubernetes' watch sends them, filtered by the selectors.

        An object that stops matching the selectors is reported DELETED, one that starts
        matching ADDED, as Kubernetes' filtered watches do. Without a resourceVersion (or
        with "0") the current objects come first as ADDED.
        """
        rv = opts.resource_version
        if rv in ("", "0"):
            listed = await self.list(rt, namespace, ListOptions(
                label_selector=opts.label_selector, field_selector=opts.field_selector))
            for obj in listed.items:
                yield "ADDED", obj
            start = listed.resource_version + 1
        else:
            start = _parse_rv(rv) + 1
        events = self.store.watch(rt.key_prefix(namespace), start_revision=start,
                                  progress_interval=self.watch_progress_interval)
        try:
            async for event in events:
                if event.type is EventType.PROGRESS:
                    if bookmarks:
                        yield "BOOKMARK", {"kind": rt.kind, "apiVersion": rt.group_version,
                                           "metadata": {"resourceVersion": str(event.revision)}}
                    continue
                translated = self._translate(rt, event, opts)
                if translated is not None:
                    yield translated
        except Compacted as exc:
            raise errors.expired(f"too old resource version: {exc.requested - 1} "
                                 f"({exc.compact_revision})") from None
        finally:
            await events.aclose()

    def _translate(self, rt: ResourceType, event: Any, opts: ListOptions) -> tuple[str, Obj] | None:
        filtered = opts.label_selector is not None or opts.field_selector is not None
        if event.type is EventType.DELETE:
            if event.prev_kv is None:
                return None
            obj = decode(event.prev_kv, event.revision)
            if filtered and not self._matches(rt, obj, opts):
                return None
            return "DELETED", obj
        obj = decode(event.kv)
        if not filtered:
            return ("ADDED" if event.kv.create_revision == event.kv.mod_revision
                    else "MODIFIED"), obj
        now = self._matches(rt, obj, opts)
        before = event.prev_kv is not None and self._matches(rt, decode(event.prev_kv), opts)
        if now and before:
            return "MODIFIED", obj
        if now:
            return "ADDED", obj
        if before:
            # Kubernetes sends the last state that matched, at the revision it stopped.
            return "DELETED", decode(event.prev_kv, event.revision)
        return None

    # ---------------------------------------------------------------- helpers

    def _decode_body(self, rt: ResourceType, body: Any, opts: WriteOptions) -> Obj:
        """Check the body's shape against the kind's schema, per ``fieldValidation``."""
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a {rt.kind} must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version is not None and api_version != rt.group_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.group_version})")
        if kind is not None and kind != rt.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        decoded = schema.decode(body, rt.schema)
        if decoded.type_errors:
            raise errors.bad_request(
                "; ".join(c["message"] for c in decoded.type_errors), decoded.type_errors)
        if decoded.unknown_fields and opts.field_validation != "Ignore":
            if opts.field_validation == "Strict":
                raise errors.bad_request(
                    decoded.strict_message(),
                    [errors.cause("FieldValueInvalid", f, f'unknown field "{f}"')
                     for f in decoded.unknown_fields])
            opts.warnings.extend(decoded.warnings())
        obj = decoded.object
        obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
        return obj

    def _validate(self, rt: ResourceType, obj: Obj, causes: list[errors.Cause]) -> None:
        if causes:
            raise errors.invalid(rt.group, rt.kind, _meta(obj).get("name", ""), causes)

    async def _store_call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except Unavailable as exc:
            raise errors.unavailable(f"the cluster state store is unavailable: {exc}") from None


def _reset_fields(rt: ResourceType, subresource: str) -> tuple[str, ...]:
    """Top-level fields a write through this endpoint cannot own (Kubernetes' reset fields)."""
    return ("status",) if rt.strategy.has_status and subresource == "" else ()


def _holds(guard: Compare, found: tuple[KeyValue, ...]) -> bool:
    """Whether an equality ``guard`` on revisions holds for the key as ``found`` (a Get)."""
    kv = found[0] if found else None
    if guard.target is CompareTarget.CREATE:
        return (kv.create_revision if kv else 0) == guard.value
    return (kv.mod_revision if kv else 0) == guard.value


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise errors.bad_request(f"invalid resource version: {text!r}") from None
    if value < 0:
        raise errors.bad_request(f"invalid resource version: {text!r}")
    return value


def json_copy(obj: Obj) -> Obj:
    """A deep copy of JSON data (faster than copy.deepcopy for plain dicts and lists)."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


#: The garbage collector's finalizer for each propagation policy that needs one.
_GC_FINALIZERS = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}


def _deletion_finalizers(finalizers: list[str], propagation: str) -> list[str]:
    """The finalizers a delete leaves: the one its propagation policy asks for replaces the
    other policy's (a second delete may change its mind, as in Kubernetes); a delete that
    names no policy leaves them as they are."""
    if not propagation:
        return finalizers
    wanted = _GC_FINALIZERS.get(propagation)
    kept = [f for f in finalizers if f not in _GC_FINALIZERS.values() or f == wanted]
    return kept + [wanted] if wanted and wanted not in kept else kept
