"""Canary Deployments on hollow nodes with the scheduler and the ReplicaSet controller: the
canary share of each step (whenever the pods settle, new == ceil(replicas * w / 100) and
new + old == replicas; the settled shares in order are the steps'), availability never below
replicas, timed and indefinite pauses, a rollback to the stable side at once, and a resize
mid-canary (the step's weight holds for the new size)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ctlharness import eventually
from strategykit import (
    NS,
    Recorder,
    World,
    cluster,
    condition,
    deployment,
    events,
    replica_sets,
    resume,
    roll_back_to,
    rolled_out,
    set_image,
)

from controlplane.client import DEPLOYMENTS, ApiClient

STEP = "deployment.corral.dev/canary-step"
PAUSE_START = "deployment.corral.dev/canary-pause-start"


@pytest.fixture
async def loops(client: ApiClient) -> AsyncIterator[None]:
    async with cluster(client):
        yield


async def first_rollout(client: ApiClient, replicas: int, steps: list) -> None:
    """v1, straight at all replicas (no old side: no steps)."""
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", replicas, "Canary",
                                                    {"steps": steps}))
    await eventually(lambda: rolled_out(client, replicas, "app:v1"))


class Shares:
    """At every pod event (replayed in resourceVersion order): available pods never below
    ``least``, live pods never above ``most``; where the pods are settled (every live one
    Ready, as many as the Deployment's spec.replicas at that moment), the new image's
    share."""

    def __init__(self, new: str, old: str, least: int, most: int) -> None:
        self.new, self.old, self.least, self.most = new, old, least, most
        #: (new, old, time seen) of each settled moment whose share differs from the last
        #: (from the first change on: the state the recorder started from is not one)
        self.settled: list[tuple[int, int, float]] = []

    def check(self, recorder: Recorder) -> Shares:
        for event, world in recorder.replay():
            if event.kind == "pods" and not event.initial:
                self._at(world, event.at)
        return self

    def _at(self, world: World, at: float) -> None:
        live = world.pods()
        ready = world.ready()
        assert ready >= self.least, f"{ready} available < {self.least}"
        assert len(live) <= self.most, f"{len(live)} pods > {self.most}"
        new, old = world.count(self.new), world.count(self.old)
        replicas = world.objects["deployments"]["web"]["spec"]["replicas"]
        if ready == len(live) == replicas and new + old == replicas and \
                (not self.settled or self.settled[-1][:2] != (new, old)):
            self.settled.append((new, old, at))

    def shares(self) -> list[tuple[int, int]]:
        return [(new, old) for new, old, _ in self.settled]


async def test_steps_shares_pauses_and_resume(client: ApiClient, loops: None) -> None:
    steps = [{"setWeight": 20}, {"pause": {"duration": 1}}, {"setWeight": 50}, {"pause": {}},
             {"setWeight": 80}]
    await first_rollout(client, 10, steps)
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")

        async def paused() -> dict | None:
            d = await client.get(DEPLOYMENTS, NS, "web")
            return d if d["spec"].get("paused") else None
        d = await eventually(paused)
        sizes = {image: rs["spec"]["replicas"] for image, rs in
                 (await replica_sets(client)).items()}
        assert sizes == {"app:v1": 5, "app:v2": 5}
        await asyncio.sleep(0.5)  # paused: stays at 50%
        assert {image: rs["spec"]["replicas"] for image, rs in
                (await replica_sets(client)).items()} == sizes
        d = await client.get(DEPLOYMENTS, NS, "web")
        assert (condition(d, "Progressing") or {}).get("reason") == "DeploymentPaused"
        new = (await replica_sets(client))["app:v2"]
        assert new["metadata"]["annotations"][STEP] == "3"
        assert d["metadata"]["annotations"]["deployment.corral.dev/paused-for"] == \
            f"{new['metadata']['labels']['pod-template-hash']}/2/3"  # hash/revision/step

        await resume(client)
        d = await eventually(lambda: rolled_out(client, 10, "app:v2"))
    finally:
        await recorder.stop()

    shares = Shares("app:v2", "app:v1", least=10, most=13).check(recorder)
    assert shares.shares() == [(2, 8), (5, 5), (8, 2), (10, 0)]
    at = {(new, old): t for new, old, t in shares.settled}
    assert at[5, 5] - at[2, 8] >= 1.0  # the timed pause, then the step's pods
    assert not d["spec"].get("paused")  # resumed past the pause step, not paused again
    new = (await replica_sets(client))["app:v2"]
    assert new["metadata"]["annotations"][STEP] == "5"
    assert (condition(d, "Progressing") or {}).get("reason") == "NewReplicaSetAvailable"
    assert [m for _, m in await events(client, "CanaryStep")] == [
        "Step 1/5: setWeight 20", "Step 2/5: pause 1s", "Step 3/5: setWeight 50",
        "Step 4/5: pause until the Deployment is resumed", "Step 5/5: setWeight 80",
        f"Steps done: replica set {new['metadata']['name']} takes all 10 replicas"]


async def test_no_steps_goes_straight_to_all(client: ApiClient, loops: None) -> None:
    await first_rollout(client, 3, [])
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")
        await eventually(lambda: rolled_out(client, 3, "app:v2"))
    finally:
        await recorder.stop()
    shares = Shares("app:v2", "app:v1", least=3, most=6).check(recorder)
    assert shares.shares() == [(3, 0)]


async def test_rollback_to_the_stable_side_is_at_once(client: ApiClient, loops: None) -> None:
    await first_rollout(client, 5, [{"setWeight": 20}, {"pause": {"duration": 60}}])
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")

        async def pausing() -> dict | None:
            sets = await replica_sets(client)
            new = sets.get("app:v2")
            return sets if new is not None and \
                PAUSE_START in new["metadata"].get("annotations", {}) else None
        sets = await eventually(pausing)
        await roll_back_to(client, sets["app:v1"])
        await eventually(lambda: rolled_out(client, 5, "app:v1"), timeout=5)
    finally:
        await recorder.stop()
    shares = Shares("app:v2", "app:v1", least=5, most=6).check(recorder)
    assert shares.shares() == [(1, 4), (0, 5)]
    sets = await replica_sets(client)
    assert (sets["app:v1"]["spec"]["replicas"], sets["app:v2"]["spec"]["replicas"]) == (5, 0)
    told = [m for _, m in await events(client, "CanaryStep")]
    assert told == ["Step 1/2: setWeight 20", "Step 2/2: pause 60s",
                    f"Replica set {sets['app:v1']['metadata']['name']} served before this "
                    f"rollout: it takes all 5 replicas at once"]


async def test_a_resize_keeps_the_step_weight(client: ApiClient, loops: None) -> None:
    """Defined behaviour: resized mid-canary, both sides are sized to the current step's
    weight of the new size (new = ceil(replicas * w / 100)), by the same rules as a step; the
    step itself (here a pause) goes on where it was."""
    await first_rollout(client, 4, [{"setWeight": 25}, {"pause": {"duration": 60}}])
    recorder = await Recorder(client).start()
    try:
        await set_image(client, "app:v2")

        async def at(new: int, old: int) -> dict | None:
            sets = await replica_sets(client)
            ok = {i: (rs["spec"]["replicas"], rs.get("status", {}).get("availableReplicas", 0))
                  for i, rs in sets.items()} == {"app:v1": (old, old), "app:v2": (new, new)}
            return sets if ok and PAUSE_START in \
                sets["app:v2"]["metadata"].get("annotations", {}) else None
        before = await eventually(lambda: at(1, 3))
        await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 8}})
        grown = await eventually(lambda: at(2, 6))
        await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 3}})
        shrunk = await eventually(lambda: at(1, 2))
    finally:
        await recorder.stop()
    for sets in (grown, shrunk):
        annotations = sets["app:v2"]["metadata"]["annotations"]
        assert annotations[STEP] == "1"  # still the pause step, its clock not restarted
        assert annotations[PAUSE_START] == \
            before["app:v2"]["metadata"]["annotations"][PAUSE_START]
    shares = Shares("app:v2", "app:v1", least=3, most=10).check(recorder)
    assert shares.shares() == [(1, 3), (2, 6), (1, 2)]
