"""Events expire: one last seen more than ``ttl`` ago is deleted.

kube-apiserver keeps Events for ``--event-ttl`` (1 h) by writing each one under an etcd lease.
Corral's store has no leases, so the leader sweeps instead: every ``period`` it lists the
Events (page by page) and deletes those whose last occurrence is older than the TTL, each
delete carrying the resourceVersion it saw, so an Event that recurred meanwhile (a new
``lastTimestamp``) is kept. Without this, every Pod ever scheduled would leave an Event in the
replicated state for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..client import EVENTS, ApiClient, ApiError, Conflict, NotFound, key_of
from ..client.timestamps import parse_time

log = logging.getLogger(__name__)

#: kube-apiserver's --event-ttl default.
EVENT_TTL_SECONDS = 3600.0
#: How often the Events are swept; an Event lives at most ttl + period.
SWEEP_SECONDS = 60.0
#: Events read per page of the sweep's list.
PAGE = 500
#: Deletes in flight at once.
CONCURRENT_DELETES = 8

Obj = dict[str, Any]


def last_seen(event: Obj) -> float | None:
    """When an Event last happened (seconds since the epoch): ``lastTimestamp``, else
    ``eventTime`` (events.k8s.io style), else its creation; None if none can be read."""
    meta = event.get("metadata") or {}
    for text in (event.get("lastTimestamp"), event.get("eventTime"),
                 meta.get("creationTimestamp")):
        moment = parse_time(text)
        if moment is not None:
            return moment
    return None


class EventTTLController:
    def __init__(self, client: ApiClient, *, ttl: float = EVENT_TTL_SECONDS,
                 period: float = SWEEP_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._ttl = ttl
        self._period = period
        self._clock = clock
        self._deletes = asyncio.Semaphore(CONCURRENT_DELETES)

    async def run(self) -> None:
        while True:
            try:
                expired = await self.sweep()
                if expired:
                    log.info("deleted %d expired events", expired)
            except ApiError as exc:
                log.warning("event sweep: %s", exc.message)
            await asyncio.sleep(self._period)

    async def sweep(self) -> int:
        """Delete the Events older than the TTL; how many went."""
        cutoff = self._clock() - self._ttl
        events = (await self._client.list(EVENTS, limit=PAGE)).items
        old = [e for e in events if (seen := last_seen(e)) is not None and seen < cutoff]
        results = await asyncio.gather(*(self._delete(e) for e in old))
        return sum(results)

    async def _delete(self, event: Obj) -> bool:
        meta = event["metadata"]
        async with self._deletes:
            try:
                await self._client.delete(EVENTS, meta["namespace"], meta["name"],
                                          uid=meta.get("uid"),
                                          resource_version=meta.get("resourceVersion"))
            except (Conflict, NotFound):
                return False  # recurred (kept) or gone already
            except ApiError as exc:
                log.info("expired event %s not deleted: %s", key_of(event), exc.message)
                return False
        return True
