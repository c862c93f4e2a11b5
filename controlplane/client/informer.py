"""An informer: a cache of one resource kept current by list and watch, with handlers told of
every change (client-go's reflector, store, indexer and shared informer in one class).

Flow of ``run()``: list (the cache becomes what the list says; handlers see the difference:
adds, updates of objects whose resourceVersion moved, deletes of objects gone) and set
``synced`` after the first; then watch from the list's resourceVersion with bookmarks, applying
each event to the cache and indexes and calling the handlers. When the server ends a watch
(its timeout), watch again from the last resourceVersion seen; when the connection breaks, do so
after a back-off (a resourceVersion too old for the server then gives ``Expired``); on
``Expired`` or any other error, relist after the back-off. With ``resync``, a task hands every
cached object to ``on_update(obj, obj)`` that often, so level-triggered controllers revisit
everything even when nothing changed.

Sharing (client-go's SharedInformerFactory): ``InformerFactory`` hands every controller of a
process the same informer per resource, so the leader keeps one pod watch, not one per
controller. Each controller still ``run()``s the informers it uses: the first ``run()`` starts
the list and watch, later ones join it, and it stops when the last of them is cancelled.

The cache hands out the stored dicts themselves, shared by every handler and caller: never
mutate one (``copy.deepcopy`` it first, or take a ``snapshot()``), as with client-go's caches.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Callable
from contextlib import aclosing
from typing import Protocol

from .resources import Resource
from .rest import ApiClient, ApiError, Expired, Obj, Unavailable
from .tasks import spawn

log = logging.getLogger(__name__)

#: First pause after an error (seconds); doubled per further error up to BACKOFF_MAX.
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 30.0
#: Each watch asks the server to end it after a random time in this range (seconds), as
#: client-go does, so that long-lived connections are renewed and spread over controllers.
WATCH_SECONDS = (300, 600)
#: Objects per page of a list.
LIST_PAGE = 500

Indexer = Callable[[Obj], list[str]]


def key_of(obj: Obj) -> str:
    """The cache key of an object: "namespace/name", or "name" for a cluster-scoped one."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class Handler(Protocol):
    """What an informer tells of changes. Called synchronously, in the order handlers were
    added: be quick (enqueue a key) and do not mutate the objects."""

    def on_add(self, obj: Obj) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...


class FuncHandler:
    """A ``Handler`` from up to three callables; the missing ones ignore their events."""

    def __init__(self, on_add: Callable[[Obj], None] | None = None,
                 on_update: Callable[[Obj, Obj], None] | None = None,
                 on_delete: Callable[[Obj], None] | None = None) -> None:
        self._add, self._update, self._delete = on_add, on_update, on_delete

    def on_add(self, obj: Obj) -> None:
        if self._add is not None:
            self._add(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if self._update is not None:
            self._update(old, new)

    def on_delete(self, obj: Obj) -> None:
        if self._delete is not None:
            self._delete(obj)


def _safe_index(informer: str, name: str, indexer: Indexer, obj: Obj) -> list[str]:
    try:
        return indexer(obj)
    except Exception:
        log.exception("%s: indexer %s failed on %s", informer, name, key_of(obj))
        return []


class Informer:
    """A watch-fed cache of ``res`` (in ``namespace``, matching the selectors).

    ``indexers`` name functions from an object to the values it is found under with
    ``by_index`` (say, pods by ``spec.nodeName``).
    """

    def __init__(self, client: ApiClient, res: Resource, *, namespace: str = "",
                 label_selector: str = "", field_selector: str = "",
                 indexers: dict[str, Indexer] | None = None,
                 resync: float | None = None) -> None:
        self.client = client
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        #: Set once the first list has filled the cache.
        self.synced = asyncio.Event()
        #: The revision the cache reflects: where the next watch starts.
        self.resource_version = ""
        self._items: dict[str, Obj] = {}
        self._indexers = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._handlers: list[Handler] = []
        self._delay = BACKOFF_INITIAL
        self._name = f"informer {res.plural}" + (f" in {namespace}" if namespace else "")
        self._task: asyncio.Task[None] | None = None
        self._runners = 0

    # ------------------------------------------------------------ reading the cache

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> list[Obj]:
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[Obj]:
        """The objects the indexer ``index`` files under ``value``, by key."""
        return [self._items[key] for key in sorted(self._indices[index].get(value, ()))]

    def snapshot(self) -> dict[str, Obj]:
        """A deep copy of the cache, key to object, that the caller may change freely."""
        return copy.deepcopy(self._items)

    @property
    def running(self) -> bool:
        """Whether the list and watch are going on (some ``run()`` not yet cancelled)."""
        return self._task is not None

    def add_indexer(self, name: str, indexer: Indexer) -> None:
        """Index by ``indexer`` too (objects already cached included); a name once only."""
        if name in self._indexers:
            if self._indexers[name] is not indexer:
                raise ValueError(f"{self._name}: another indexer is already named {name!r}")
            return
        self._indexers[name] = indexer
        self._indices[name] = {}
        for key, obj in self._items.items():
            for value in _safe_index(self._name, name, indexer, obj):
                self._indices[name].setdefault(value, set()).add(key)

    def add_handler(self, handler: Handler) -> None:
        """Tell ``handler`` of changes from now on; objects already cached reach it as adds."""
        self._handlers.append(handler)
        for obj in list(self._items.values()):
            self._call(handler, "on_add", obj)

    # ------------------------------------------------------------ list and watch

    async def run(self) -> None:
        """Keep the cache current until cancelled (every caller of ``run`` cancelled, when
        the informer is shared)."""
        if self._task is None:
            self._task = spawn(self._run(), name=self._name)
        task = self._task
        self._runners += 1
        try:
            await asyncio.shield(task)
        finally:
            self._runners -= 1
            if not self._runners and self._task is task:
                # Stopped: a later run() starts afresh and waits for its own first list.
                self._task = None
                self.synced.clear()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        resync = spawn(self._resync_loop(), name=f"{self._name} resync") if self.resync else None
        relist = True
        try:
            while True:
                try:
                    if relist:
                        await self._relist()
                        relist = False
                    await self._watch()
                    continue  # the server ended the watch: go on from where it was
                except Unavailable as exc:
                    log.warning("%s: %s; again in %.1f s", self._name, exc.message, self._delay)
                except ApiError as exc:
                    relist = True
                    level = logging.INFO if isinstance(exc, Expired) else logging.WARNING
                    log.log(level, "%s: %s; relisting in %.1f s", self._name, exc, self._delay)
                except Exception:
                    relist = True
                    log.exception("%s failed; relisting in %.1f s", self._name, self._delay)
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, BACKOFF_MAX)
        finally:
            if resync is not None:
                resync.cancel()
                await asyncio.gather(resync, return_exceptions=True)

    async def _relist(self) -> None:
        listed = await self.client.list(self.res, self.namespace,
                                        label_selector=self.label_selector,
                                        field_selector=self.field_selector, limit=LIST_PAGE)
        self._replace(listed.items)
        self.resource_version = listed.resource_version
        self._delay = BACKOFF_INITIAL
        if not self.synced.is_set():
            log.debug("%s synced: %d objects", self._name, len(self._items))
            self.synced.set()

    def _replace(self, items: list[Obj]) -> None:
        """Make the cache ``items``, telling the handlers what changed since it was last seen.

        An object gone is told with its last state known here (client-go passes a
        "final state unknown" tombstone instead).
        """
        fresh = {key_of(obj): obj for obj in items}
        for key in [key for key in self._items if key not in fresh]:
            self._dispatch("on_delete", self._remove(key))
        for key, obj in fresh.items():
            old = self._items.get(key)
            if old is None:
                self._put(key, obj)
                self._dispatch("on_add", obj)
            elif _rv(old) != _rv(obj):
                self._put(key, obj)
                self._dispatch("on_update", old, obj)

    async def _watch(self) -> None:
        events = self.client.watch(self.res, self.namespace,
                                   resource_version=self.resource_version,
                                   label_selector=self.label_selector,
                                   field_selector=self.field_selector,
                                   timeout_seconds=random.randint(*WATCH_SECONDS))
        async with aclosing(events):
            async for kind, obj in events:
                self._apply(kind, obj)
                self._delay = BACKOFF_INITIAL

    def _apply(self, kind: str, obj: Obj) -> None:
        """One watch event into the cache and to the handlers."""
        if kind in ("ADDED", "MODIFIED"):
            key = key_of(obj)
            old = self._items.get(key)
            self._put(key, obj)
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        elif kind == "DELETED":
            key = key_of(obj)
            if key in self._items:
                self._remove(key)
                self._dispatch("on_delete", obj)
        elif kind != "BOOKMARK":
            log.warning("%s: ignoring a watch event of type %r", self._name, kind)
            return
        self.resource_version = _rv(obj) or self.resource_version

    # ------------------------------------------------------------ cache and indexes

    def _put(self, key: str, obj: Obj) -> None:
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, values in self._index_values(obj):
            for value in values:
                self._indices[name].setdefault(value, set()).add(key)

    def _remove(self, key: str) -> Obj:
        obj = self._items.pop(key)
        self._unindex(key, obj)
        return obj

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, values in self._index_values(obj):
            index = self._indices[name]
            for value in values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def _index_values(self, obj: Obj) -> list[tuple[str, list[str]]]:
        return [(name, _safe_index(self._name, name, indexer, obj))
                for name, indexer in self._indexers.items()]

    # ------------------------------------------------------------ handlers

    def _dispatch(self, method: str, *args: Obj) -> None:
        for handler in self._handlers:
            self._call(handler, method, *args)

    def _call(self, handler: Handler, method: str, *args: Obj) -> None:
        try:
            getattr(handler, method)(*args)
        except Exception:
            log.exception("%s: %s of %r failed on %s", self._name, method, handler,
                          key_of(args[-1]))

    async def _resync_loop(self) -> None:
        assert self.resync is not None
        while True:
            await asyncio.sleep(self.resync)
            for obj in list(self._items.values()):
                self._dispatch("on_update", obj, obj)


class InformerFactory:
    """One ``Informer`` per resource (all namespaces, no selectors) for every controller that
    asks through this factory; each asker adds its own indexers and handlers."""

    def __init__(self, client: ApiClient, *, resync: float | None = None) -> None:
        self.client = client
        self.resync = resync
        self._informers: dict[Resource, Informer] = {}

    def informer(self, res: Resource, *, indexers: dict[str, Indexer] | None = None
                 ) -> Informer:
        informer = self._informers.get(res)
        if informer is None:
            informer = Informer(self.client, res, resync=self.resync)
            self._informers[res] = informer
        for name, indexer in (indexers or {}).items():
            informer.add_indexer(name, indexer)
        return informer
