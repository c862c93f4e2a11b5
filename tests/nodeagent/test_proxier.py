"""The proxier's programming latency (kube-proxy's network_programming_duration_seconds): one
sample per Endpoints change from its trigger-time annotation to the apply that included it, on a
fake clock with Endpoints written straight to an in-process API; then end to end with the
Endpoints controller stamping the changes of a Pod."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.client import ENDPOINTS, PODS, SERVICES, ApiClient
from controlplane.controllers import endpoints as endpoints_controller
from controlplane.controllers.endpoints import EndpointsController, format_trigger_time
from nodeagent.proxy import Proxier, RecordingApplier
from nodeagent.proxy.proxier import TRIGGER_TIME_ANNOTATION, trigger_time
from tests.controllers.ctlharness import eventually, running

Obj = dict[str, Any]
START = 1_700_000_000.0


def stamped(ip: str, trigger: float | None, current: Obj | None = None) -> Obj:
    """Endpoints ``web`` with one address and the trigger time (an update of ``current``)."""
    meta = dict((current or {}).get("metadata") or {"name": "web"})
    meta["annotations"] = {TRIGGER_TIME_ANNOTATION: format_trigger_time(trigger)} \
        if trigger else {}
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 8080}]}]}


def applied(applier: RecordingApplier, ip: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(applier.applied) and any(f"--to-destination {ip}:8080" in rule
                                             for rule in applier.applied[-1].nat.rules)
    return check


def samples(proxier: Proxier, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(proxier.programming_latencies) >= count
    return check


def test_the_annotation_is_the_controllers_and_parses_as_it_writes_it() -> None:
    assert TRIGGER_TIME_ANNOTATION == endpoints_controller.TRIGGER_TIME_ANNOTATION
    assert trigger_time(stamped("10.244.1.2", START + 0.25)) == START + 0.25
    assert trigger_time({"metadata": {"annotations": {
        TRIGGER_TIME_ANNOTATION: "2023-11-14T22:13:20.250000001Z"}}}) == START + 0.25
    for bad in ("yesterday", "2023-11-14T22:13:20", 5):
        assert trigger_time({"metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: bad}}}) is None
    assert trigger_time(None) is None


async def test_one_latency_per_change_after_its_apply(client: ApiClient) -> None:
    now = [START]
    applier = RecordingApplier()
    proxier = Proxier(client, applier, debounce=0.02, resync=3600, retry=0.05,
                      clock=lambda: now[0])
    await client.create(SERVICES, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.10.10", "ports": [{"port": 80, "targetPort": 8080}]}})

    async def applies_after(calls: int) -> bool:
        return applier.calls > calls

    async with running(proxier.run()):
        await asyncio.wait_for(proxier.synced.wait(), 10)
        now[0] = START + 1.5
        current = await client.create(ENDPOINTS, "default", stamped("10.244.1.2", START + 1))
        await eventually(applied(applier, "10.244.1.2"))
        assert list(proxier.programming_latencies) == [0.5]

        # A failed apply keeps the change's time; the retry that succeeds records it, once.
        applier.fail = RuntimeError("iptables-restore: failed")
        calls = applier.calls
        now[0] = START + 3
        current = await client.update(ENDPOINTS, stamped("10.244.1.3", START + 2, current))
        await eventually(lambda: applies_after(calls))
        assert list(proxier.programming_latencies) == [0.5]
        applier.fail = None
        await eventually(applied(applier, "10.244.1.3"))
        assert list(proxier.programming_latencies) == [0.5, 1.0]

        # A change without a new stamp (a label), and one stamped before the proxier started
        # (an old change it never saw happen): applied, no sample.
        calls = applier.calls
        current = await client.update(ENDPOINTS, {**current, "metadata": current["metadata"]
                                                  | {"labels": {"x": "y"}}})
        await eventually(lambda: applies_after(calls))
        await client.update(ENDPOINTS, stamped("10.244.1.4", START - 60, current))
        await eventually(applied(applier, "10.244.1.4"))
        assert list(proxier.programming_latencies) == [0.5, 1.0]


async def test_end_to_end_with_the_endpoints_controller(client: ApiClient) -> None:
    applier = RecordingApplier()
    proxier = Proxier(client, applier, debounce=0.02, resync=3600)
    async with running(EndpointsController(client).run(), proxier.run()):
        await client.create(SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        await eventually(samples(proxier, 1))  # the Endpoints created, stamped
        await client.create(PODS, "default", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
        # No IP yet: the Endpoints stay as they are, so no sample; ready, one.
        await client.patch(PODS, "default", "a", {"status": {
            "phase": "Running", "podIP": "10.244.1.7",
            "conditions": [{"type": "Ready", "status": "True"}]}}, subresource="status")
        await eventually(applied(applier, "10.244.1.7"))
        await eventually(samples(proxier, 2))
        await asyncio.sleep(0.2)
        assert len(proxier.programming_latencies) == 2
        assert all(0 <= latency < 5 for latency in proxier.programming_latencies)
