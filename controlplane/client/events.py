"""Events, as controllers record them: what happened to an object, for `kubectl describe`.

Recording never fails the caller: an Event is a courtesy to the user, so a refused or lost one
is logged and dropped. Under pressure a recorder also drops rather than queue without bound:
at most ``max_writes`` writes go at once, and once ``max_waiting`` records wait for one, new
ones are dropped and counted, as client-go's event broadcaster drops when its queue of 1,000
is full. A burst (10,000 pods scheduled at once) then costs the store a bounded number of
writes, not one more per pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .resources import EVENTS
from .rest import ApiClient, ApiError

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
#: Event writes in flight at most, and records waiting beyond which new ones are dropped.
MAX_WRITES = 8
MAX_WAITING = 1000


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, *, host: str = "",
                 clock: Callable[[], datetime] = _utcnow, max_writes: int = MAX_WRITES,
                 max_waiting: int = MAX_WAITING) -> None:
        self._client = client
        self._component = component
        #: The node that saw it (kubelets' events carry it: ``kubectl describe`` shows it).
        self._source = {"component": component, **({"host": host} if host else {})}
        self._clock = clock
        self._slots = asyncio.Semaphore(max_writes)
        self._max_waiting = max_waiting
        self._waiting = 0
        #: Records dropped because too many waited.
        self.dropped = 0

    async def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self._waiting >= self._max_waiting:
            if not self.dropped % self._max_waiting:
                log.warning("%s: too many events waiting; dropping events (%d so far)",
                            self._component, self.dropped + 1)
            self.dropped += 1
            return
        self._waiting += 1
        try:
            async with self._slots:
                await self._write(obj, type_, reason, message)
        finally:
            self._waiting -= 1

    async def _write(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.",
                         "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""),
                               "kind": obj.get("kind", ""), "namespace": meta.get("namespace"),
                               "name": meta.get("name"), "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": self._source, "reportingComponent": self._component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self._client.create(EVENTS, namespace, event)
        except ApiError as exc:
            log.info("event %s for %s/%s dropped: %s", reason, namespace, meta.get("name"),
                     exc.message)
