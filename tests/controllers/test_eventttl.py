"""Events expire after the TTL (kube-apiserver's --event-ttl), swept by the leader."""

from __future__ import annotations

import time
from typing import Any

from controlplane.client import EVENTS, ApiClient
from controlplane.controllers.eventttl import EventTTLController, last_seen

Obj = dict[str, Any]
NOW = time.time()


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago))


def event(name: str, namespace: str = "default", **fields: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
            "reason": "Tested", "message": name, "type": "Normal", **fields}


def test_last_seen_prefers_the_last_occurrence() -> None:
    assert last_seen({"lastTimestamp": "1970-01-01T00:01:00Z",
                      "eventTime": "1970-01-01T00:02:00.000000Z"}) == 60
    assert last_seen({"eventTime": "1970-01-01T00:02:00.500000Z"}) == 120.5
    assert last_seen({"metadata": {"creationTimestamp": "1970-01-01T00:00:03Z"}}) == 3
    assert last_seen({"lastTimestamp": "yesterday"}) is None


async def test_a_sweep_deletes_only_expired_events(client: ApiClient) -> None:
    await client.create(EVENTS, "default", event("old", lastTimestamp=_stamp(7200)))
    await client.create(EVENTS, "kube-system", event("old-elsewhere", "kube-system",
                                                     lastTimestamp=_stamp(4000)))
    await client.create(EVENTS, "default", event("recurred", firstTimestamp=_stamp(7200),
                                                 lastTimestamp=_stamp(60)))
    await client.create(EVENTS, "default", event("new-style",
                                                 eventTime=_stamp(5000)[:-1] + ".000000Z"))
    await client.create(EVENTS, "default", event("unstamped"))  # created now
    sweeper = EventTTLController(client, ttl=3600, clock=lambda: NOW)
    assert await sweeper.sweep() == 3
    left = sorted(e["metadata"]["name"] for e in (await client.list(EVENTS)).items)
    assert left == ["recurred", "unstamped"]
    assert await sweeper.sweep() == 0
