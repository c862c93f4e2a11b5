"""Events, as controllers record them: what happened to an object, for `kubectl describe`.

Recording never fails the caller: an Event is a courtesy to the user, so a refused or lost one
is logged and dropped (Kubernetes' event broadcaster drops under pressure too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..client import EVENTS, ApiClient, ApiError

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._client = client
        self._component = component
        self._clock = clock

    async def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
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
            "source": {"component": self._component}, "reportingComponent": self._component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self._client.create(EVENTS, namespace, event)
        except ApiError as exc:
            log.info("event %s for %s/%s dropped: %s", reason, namespace, meta.get("name"),
                     exc.message)
