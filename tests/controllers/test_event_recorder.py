"""The event recorder under pressure: bounded writes in flight, drops beyond its queue."""

from __future__ import annotations

import asyncio
from typing import Any

from controlplane.client.events import NORMAL, EventRecorder


class _GatedClient:
    """Accepts Event creates only once the gate opens; counts the most in flight at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.created: list[dict[str, Any]] = []
        self.in_flight = self.most_in_flight = 0

    async def create(self, _res: Any, _namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.gate.wait()
        self.in_flight -= 1
        self.created.append(obj)
        return obj


async def test_a_recorder_drops_what_does_not_fit_its_queue() -> None:
    client = _GatedClient()
    recorder = EventRecorder(client, "test", max_writes=2, max_waiting=3)  # type: ignore[arg-type]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    tasks = [asyncio.create_task(recorder.record(pod, NORMAL, "Tried", f"message {i}"))
             for i in range(5)]
    await asyncio.sleep(0.01)
    assert recorder.dropped == 2 and client.most_in_flight == 2
    client.gate.set()
    await asyncio.gather(*tasks)
    assert [e["message"] for e in client.created] == ["message 0", "message 1", "message 2"]
    assert client.created[0]["involvedObject"]["name"] == "p"
    await recorder.record(pod, NORMAL, "Later", "room again")  # the queue drained
    assert client.created[-1]["reason"] == "Later" and recorder.dropped == 2
