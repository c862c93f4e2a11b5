"""BlueGreen Deployments on hollow nodes with the scheduler and the ReplicaSet controller:
the active Service switches only to a fully available side (checked at every Service change
against the pods Ready at that moment), the old side is kept for scaleDownDelaySeconds, then
goes; manual promotion through `kubectl rollout resume`; an instant rollback within the
delay; a missing Service holds the rollout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ctlharness import eventually
from strategykit import (
    HASH,
    NS,
    Recorder,
    cluster,
    condition,
    deployment,
    events,
    image_of,
    replica_sets,
    resume,
    roll_back_to,
    rolled_out,
    selector_hash,
    service,
    set_image,
)

from controlplane.client import DEPLOYMENTS, PODS, SERVICES, ApiClient

SCALE_DOWN_AT = "deployment.corral.dev/scale-down-at"


@pytest.fixture
async def loops(client: ApiClient) -> AsyncIterator[None]:
    async with cluster(client):
        yield


def blue_green(image: str, replicas: int, **settings: object) -> dict:
    return deployment(image, replicas, "BlueGreen", {"activeService": "web", **settings})


async def active_hash(client: ApiClient, name: str = "web") -> str | None:
    return selector_hash(await client.get(SERVICES, NS, name))


async def hash_of(client: ApiClient, image: str) -> str | None:
    rs = (await replica_sets(client)).get(image)
    return rs["metadata"]["labels"][HASH] if rs is not None else None


async def first_rollout(client: ApiClient, replicas: int, **settings: object) -> str:
    """The Deployment at v1, the active Service on it; its hash."""
    await client.create(DEPLOYMENTS, NS, blue_green("app:v1", replicas, **settings))
    await eventually(lambda: rolled_out(client, replicas, "app:v1"))
    v1 = await hash_of(client, "app:v1")
    assert v1 is not None

    async def pointed() -> bool:
        return await active_hash(client) == v1
    await eventually(pointed)
    return v1


def switches_only_to_available_sides(recorder: Recorder, replicas: int) -> list[str]:
    """At each change of the active Service, every pod of the side it names is Ready, as
    many as ``replicas`` (the moment's pods, by resourceVersion). The hashes it was switched
    to, in order (where it pointed when the recorder started is not a switch)."""
    switched: list[str] = []
    current: str | None = None
    for event, world in recorder.replay():
        if event.kind != "services" or event.key != "web" or event.obj is None:
            continue
        pod_hash = selector_hash(event.obj)
        if current is None or pod_hash == current:
            current = pod_hash
            continue
        assert pod_hash is not None
        ready = world.ready(pod_hash=pod_hash)
        assert ready == replicas, f"switched to {pod_hash} with {ready}/{replicas} ready"
        switched.append(pod_hash)
        current = pod_hash
    return switched


def complete_only_once_old_is_gone(recorder: Recorder, replicas: int, old_image: str) -> None:
    """No Deployment status says rolled out (what `kubectl rollout status` waits for) while
    an old pod is live."""
    for event, world in recorder.replay():
        if event.kind != "deployments" or event.obj is None or image_of(event.obj) == old_image:
            continue
        d, status = event.obj, event.obj.get("status") or {}
        done = status.get("observedGeneration", 0) >= d["metadata"]["generation"] and \
            status.get("updatedReplicas") == status.get("replicas") == \
            status.get("availableReplicas") == replicas
        assert not (done and world.count(old_image)), "rolled out with the old side live"


async def test_auto_promotion_switches_when_available_then_scales_down_after_delay(
        client: ApiClient, loops: None) -> None:
    for name in ("web", "web-preview"):
        await client.create(SERVICES, NS, service(name))
    await first_rollout(client, 3, previewService="web-preview", scaleDownDelaySeconds=1)
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")
        d = await eventually(lambda: rolled_out(client, 3, "app:v2"))
    finally:
        await recorder.stop()

    sets = await replica_sets(client)
    v1, v2 = (sets[i]["metadata"]["labels"][HASH] for i in ("app:v1", "app:v2"))
    assert switches_only_to_available_sides(recorder, 3) == [v2]
    complete_only_once_old_is_gone(recorder, 3, "app:v1")
    svc = await client.get(SERVICES, NS, "web")
    assert svc["spec"]["selector"] == {"app": "web", HASH: v2}  # the user's key kept
    assert await active_hash(client, "web-preview") == v2
    # both sides ran at full size together, the old one kept >= 1 s after the switch
    peak = max(world.ready() for _, world in recorder.replay())
    assert peak == 6
    switch = next(e.at for e, _ in recorder.replay()
                  if e.kind == "services" and e.key == "web" and selector_hash(e.obj) == v2)
    first_old_gone = min(e.at for e, _ in recorder.replay() if e.kind == "pods" and (
        e.obj is None or e.obj["metadata"].get("deletionTimestamp")) and
        e.key.startswith(f"web-{v1}"))
    assert first_old_gone - switch >= 0.9
    old = sets["app:v1"]
    assert old["spec"]["replicas"] == 0 and SCALE_DOWN_AT in old["metadata"]["annotations"]
    assert SCALE_DOWN_AT not in sets["app:v2"]["metadata"].get("annotations", {})
    new_name = sets["app:v2"]["metadata"]["name"]
    assert ("Promoted", f"Switched service web to replica set {new_name}") in \
        await events(client)
    assert ("PreviewSwitched", f"Switched preview service web-preview to replica set "
            f"{new_name}") in await events(client)
    progressing = condition(d, "Progressing")
    assert progressing is not None and progressing["reason"] == "NewReplicaSetAvailable"
    assert not d["spec"].get("paused")


async def test_manual_promotion_waits_for_resume(client: ApiClient, loops: None) -> None:
    await client.create(SERVICES, NS, service("web"))
    v1 = await first_rollout(client, 2, autoPromotionEnabled=False, scaleDownDelaySeconds=1)
    first = await client.get(DEPLOYMENTS, NS, "web")
    assert not first["spec"].get("paused")  # the first rollout needs no promotion
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")

        async def awaiting() -> dict | None:
            d = await client.get(DEPLOYMENTS, NS, "web")
            progressing = condition(d, "Progressing") or {}
            return d if d["spec"].get("paused") and \
                progressing.get("reason") == "DeploymentPaused" else None
        d = await eventually(awaiting)
        v2 = await hash_of(client, "app:v2")
        assert d["metadata"]["annotations"]["deployment.corral.dev/paused-for"] == f"{v2}/2"
        await asyncio.sleep(0.5)
        assert await active_hash(client) == v1  # nobody resumed: no switch
        v2_rs = (await replica_sets(client))["app:v2"]
        assert v2_rs["status"].get("availableReplicas") == 2
        assert (await replica_sets(client))["app:v1"]["spec"]["replicas"] == 2
        assert await rolled_out(client, 2) is None

        await resume(client)
        d = await eventually(lambda: rolled_out(client, 2, "app:v2"))
    finally:
        await recorder.stop()
    assert switches_only_to_available_sides(recorder, 2) == [v2]
    complete_only_once_old_is_gone(recorder, 2, "app:v1")
    assert not d["spec"].get("paused")  # paused once for this side, not again
    assert len(await events(client, "AwaitingPromotion")) == 1


async def test_rollback_within_the_delay_is_instant(client: ApiClient, loops: None) -> None:
    await client.create(SERVICES, NS, service("web"))
    v1 = await first_rollout(client, 3, scaleDownDelaySeconds=30)
    await set_image(client, "app:v2")
    v2 = await eventually(lambda: hash_of(client, "app:v2"))

    async def on(pod_hash: str) -> bool:
        return await active_hash(client) == pod_hash
    await eventually(lambda: on(v2))
    sets = await replica_sets(client)
    assert sets["app:v1"]["spec"]["replicas"] == 3  # kept: within its delay
    assert SCALE_DOWN_AT in sets["app:v1"]["metadata"]["annotations"]
    v1_pods = sorted(p["metadata"]["name"] for p in (await client.list(PODS, NS)).items
                     if image_of(p) == "app:v1")

    recorder = await Recorder(client).start()
    try:
        await roll_back_to(client, sets["app:v1"])
        await eventually(lambda: on(v1), timeout=3)
    finally:
        await recorder.stop()
    assert switches_only_to_available_sides(recorder, 3) == [v1]
    now_v1 = sorted(p["metadata"]["name"] for p in (await client.list(PODS, NS)).items
                    if image_of(p) == "app:v1")
    assert now_v1 == v1_pods  # the same pods: nothing had to start
    sets = await replica_sets(client)

    async def stamps_moved() -> bool:
        sets.update(await replica_sets(client))
        return SCALE_DOWN_AT not in sets["app:v1"]["metadata"].get("annotations", {}) and \
            SCALE_DOWN_AT in sets["app:v2"]["metadata"].get("annotations", {})
    await eventually(stamps_moved)
    assert sets["app:v2"]["spec"]["replicas"] == 3  # now the one kept for its delay
    assert sets["app:v1"]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


async def test_a_missing_service_holds_the_rollout(client: ApiClient, loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, blue_green("app:v1", 2))

    async def held() -> dict | None:
        d = await client.get(DEPLOYMENTS, NS, "web")
        failure = condition(d, "ServiceFailure") or {}
        sets = await replica_sets(client)
        ready = sets and (sets["app:v1"].get("status") or {}).get("availableReplicas") == 2
        return d if ready and failure.get("reason") == "ServiceNotFound" else None
    d = await eventually(held)
    failure = condition(d, "ServiceFailure")
    assert failure is not None and failure["status"] == "True"
    assert failure["message"] == "Service web not found: the rollout waits for it"
    await asyncio.sleep(1.5)  # looked at again meanwhile (back-off): told once
    assert await events(client, "ServiceNotFound") == [
        ("ServiceNotFound", "Service web not found: the rollout waits for it")]

    await client.create(SERVICES, NS, service("web"))
    v1 = await hash_of(client, "app:v1")
    assert v1 is not None

    async def promoted() -> dict | None:
        d = await client.get(DEPLOYMENTS, NS, "web")
        return d if await active_hash(client) == v1 and \
            condition(d, "ServiceFailure") is None else None
    await eventually(promoted, timeout=5)
