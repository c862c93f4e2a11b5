"""The BlueGreen strategy's pure core: which old side serves, what one pass decides (sizes,
promotion, a pause for manual promotion, waits), the invariant that promotion needs a fully
available new side, checked over random states; then the shell over the fake ``RolloutIO``:
stamps before the switch, the switch a compare-and-swap on the Service."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_deployment_strategies import FakeIO, deployment, pods, replica_set, rollout

from controlplane.controllers.deployment import Superseded, bluegreen, strategies
from controlplane.controllers.deployment.bluegreen import (
    Plan,
    Settings,
    Side,
    State,
    decide,
    fully_available,
    serving,
    service_keys,
    settings_of,
)
from controlplane.controllers.deployment.replicas import ReplicaSetView

T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
AUTO = Settings(active="web", scale_down_delay=30)
MANUAL = Settings(active="web", auto_promotion=False, scale_down_delay=30)


def side(name: str, replicas: int, available: int | None = None, *,
         stamp: float | None = None) -> Side:
    """A side named as its hash; ``stamp``: seconds from T0 to its scale-down."""
    available = replicas if available is None else available
    at = T0 + timedelta(seconds=stamp) if stamp is not None else None
    return Side(ReplicaSetView(name, replicas, available=available, pods=replicas), name, at)


def state(new: Side, old: list[Side], active: str | None, **kw: Any) -> State:
    fields = {"replicas": 3, "new": new, "old": tuple(old), "active_hash": active,
              "settings": AUTO, "now": T0, "promotable_in": 0.0, **kw}
    return State(**fields)


def test_settings_and_service_index() -> None:
    d = {"metadata": {"namespace": "ns"}, "spec": {"strategy": {"type": "BlueGreen", "blueGreen": {
        "activeService": "web", "previewService": "web-preview"}}}}
    assert settings_of(d) == Settings("web", "web-preview", True, 0, 30)
    assert service_keys(d) == ["ns/web", "ns/web-preview"]
    assert service_keys({"metadata": {}, "spec": {"strategy": {"type": "Canary"}}}) == []


def test_which_old_side_serves() -> None:
    v1, v2 = side("v1", 3), side("v2", 3)
    assert serving(state(side("v3", 3), [v1, v2], "v1")) == [v1]
    assert serving(state(side("v3", 3), [v1, v2], None)) == [v1, v2]  # no hash: all with pods
    assert serving(state(side("v3", 3), [v1, side("v2", 0)], "zzz")) == [v1]
    assert serving(state(v2, [v1], "v2")) == []  # promoted


@pytest.mark.parametrize("s, expect", [
    # the new side at full size first
    (state(side("v2", 0), [side("v1", 3)], "v1"), Plan(sizes=[("v2", 3)])),
    # not all available yet: nothing
    (state(side("v2", 3, 2), [side("v1", 3)], "v1", promotable_in=None), Plan()),
    # all available: stamp the serving side, switch
    (state(side("v2", 3), [side("v1", 3)], "v1"),
     Plan(promote=True, stamp=("v1",), scale_down_at=T0 + timedelta(seconds=30))),
    # autoPromotionSeconds not over yet
    (state(side("v2", 3), [side("v1", 3)], "v1", promotable_in=4.0), Plan(wait=4.0, hold=True)),
    # manual: pause; resumed: switch
    (state(side("v2", 3), [side("v1", 3)], "v1", settings=MANUAL), Plan(pause=True)),
    (state(side("v2", 3), [side("v1", 3)], "v1", settings=MANUAL, resumed=True),
     Plan(promote=True, stamp=("v1",), scale_down_at=T0 + timedelta(seconds=30))),
    # the first rollout: nothing serves, no pause even when manual
    (state(side("v1", 3), [], None, settings=MANUAL),
     Plan(promote=True, scale_down_at=T0 + timedelta(seconds=30))),
    # a rollback within the delay: at once, manual or not
    (state(side("v1", 3, stamp=10), [side("v2", 3)], "v2", settings=MANUAL),
     Plan(promote=True, stamp=("v2",), scale_down_at=T0 + timedelta(seconds=30))),
    # promoted: the old side waits out its stamp, then goes
    (state(side("v2", 3), [side("v1", 3, stamp=5)], "v2"), Plan(wait=5.0, hold=True)),
    (state(side("v2", 3), [side("v1", 3, stamp=-1)], "v2"), Plan(sizes=[("v1", 0)])),
    # an old side that never served (superseded before promotion) goes at once
    (state(side("v3", 3), [side("v1", 3), side("v2", 3)], "v1"), Plan(sizes=[("v2", 0)])),
    # resized: the new side and the named serving one follow
    (state(side("v2", 3), [side("v1", 3)], "v1", replicas=5),
     Plan(sizes=[("v2", 5), ("v1", 5)])),
    # the active Service missing: the new side only, no scale-down, no promotion
    (state(side("v2", 3), [side("v1", 3, stamp=-1)], None, service_missing=True), Plan()),
    # paused: sizes only
    (state(side("v2", 3), [side("v1", 3, stamp=-1)], "v2", paused=True), Plan()),
    (state(side("v2", 3), [side("v1", 3)], "v1", paused=True), Plan()),
])
def test_decide(s: State, expect: Plan) -> None:
    assert decide(s) == expect


sides = st.builds(lambda name, replicas, missing, stamp: side(
    name, replicas, max(replicas - missing, 0), stamp=stamp),
    st.sampled_from(["a", "b", "c"]), st.integers(0, 4), st.integers(0, 2),
    st.one_of(st.none(), st.integers(-5, 5)))


@settings(max_examples=500, deadline=None, database=None)
@given(new=sides, old=st.lists(sides, max_size=3), active=st.sampled_from([None, "a", "b", "c"]),
       replicas=st.integers(0, 4), auto=st.booleans(), resumed=st.booleans(),
       paused=st.booleans(), missing=st.booleans(),
       promotable_in=st.one_of(st.none(), st.floats(0, 5)))
def test_promotion_only_to_a_fully_available_side(
        new: Side, old: list[Side], active: str | None, replicas: int, auto: bool,
        resumed: bool, paused: bool, missing: bool, promotable_in: float | None) -> None:
    old = [o for o in old if o.name != new.name]
    old = [o for i, o in enumerate(old) if o.name not in [p.name for p in old[:i]]]
    s = state(new, old, active, replicas=replicas, resumed=resumed, paused=paused,
              service_missing=missing, promotable_in=promotable_in,
              settings=Settings("web", auto_promotion=auto))
    plan = decide(s)
    if plan.promote:
        assert fully_available(new, replicas) and not paused and not missing
        assert not plan.sizes
    for name, size in plan.sizes:
        if size == 0 and replicas > 0:  # an old side that does not serve, while it is known
            assert name != new.name and name not in [o.name for o in serving(s)] and \
                not missing and not paused
    if plan.pause:
        assert not auto and fully_available(new, replicas)


# ---------------------------------------------------------------- the shell, over the fake


class ServiceIO(FakeIO):
    """The fake ``RolloutIO`` with Services (kept apart: a Service and the Deployment share the
    name "web")."""

    def __init__(self, *objects: dict, services: list[dict]) -> None:
        super().__init__(*objects)
        self.services = {s["metadata"]["name"]: s for s in services}

    async def patch_service(self, deployment: dict, service: dict, patch: dict) -> dict:
        name = service["metadata"]["name"]
        current = self.services.get(name)
        if current is None or current["metadata"]["resourceVersion"] != \
                service["metadata"]["resourceVersion"]:
            raise Superseded(name)
        out = copy.deepcopy(current)
        out["spec"]["selector"].update(patch["spec"]["selector"])
        out["spec"]["selector"] = {k: v for k, v in out["spec"]["selector"].items()
                                   if v is not None}
        out["metadata"]["resourceVersion"] = str(next(self.revision))
        self.writes.append(("service", name, patch["spec"]["selector"]))
        self.services[name] = out
        return copy.deepcopy(out)


def web_service(selector: dict) -> dict:
    return {"metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
            "spec": {"selector": dict(selector)}}


def blue_green_pair(io_services: list[dict]) -> tuple[ServiceIO, dict, dict, dict]:
    d = deployment("v2", 3, strategy="BlueGreen")
    d["spec"]["strategy"]["blueGreen"] = {"activeService": "web", "scaleDownDelaySeconds": 30}
    old = replica_set("web-v1", "v1", 3)
    old["metadata"]["labels"] = {"app": "web", "pod-template-hash": "v1"}
    new = replica_set("web-v2", "v2", 3, revision=2)
    new["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
    new["metadata"]["labels"] = {"app": "web", "pod-template-hash": "v2"}
    return ServiceIO(d, old, new, services=io_services), d, old, new


async def test_promotion_stamps_the_old_side_then_switches_the_service() -> None:
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v1"})])
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 3), new["metadata"]["uid"]:
                         pods(new, 3)})
    r.services = dict(io.services)
    await bluegreen.rollout(r)
    kinds = [(w[0], w[1]) for w in io.writes if w[0] != "status"]
    assert kinds == [("patch", "web-v1"), ("service", "web")]  # the stamp comes first
    assert io.objects["web-v1"]["metadata"]["annotations"][
        "deployment.corral.dev/scale-down-at"] == "2024-01-01T12:00:30Z"
    assert io.services["web"]["spec"]["selector"] == {"app": "web", "pod-template-hash": "v2"}
    assert ("Promoted", "Switched service web to replica set web-v2") in io.events


async def test_a_stale_service_is_not_switched() -> None:
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v1"})])
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 3), new["metadata"]["uid"]:
                         pods(new, 3)})
    r.services = {"web": copy.deepcopy(io.services["web"])}
    io.services["web"]["metadata"]["resourceVersion"] = "6"  # someone changed it meanwhile
    with pytest.raises(Superseded):
        await bluegreen.rollout(r)
    assert io.services["web"]["spec"]["selector"]["pod-template-hash"] == "v1"
    assert not [e for e in io.events if e[0] == "Promoted"]


async def test_a_new_side_not_all_ready_is_not_promoted() -> None:
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v1"})])
    pending = pods(new, 3)
    pending[2]["status"] = {"phase": "Pending"}
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 3),
                         new["metadata"]["uid"]: pending})
    r.services = dict(io.services)
    await bluegreen.rollout(r)
    assert [w for w in io.writes if w[0] != "status"] == []


async def test_the_scale_down_delay_does_not_count_against_the_progress_deadline() -> None:
    """Promoted long ago (Progressing last updated 20 minutes back, the deadline 10): while
    the old side waits out its delay the rollout is not late, and the scale-down that ends the
    wait renews Progressing."""
    long_ago = "2024-01-01T11:40:00Z"
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v2"})])
    d["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] = 3600
    d["status"] = {"observedGeneration": 2, "replicas": 6, "updatedReplicas": 3,
                   "readyReplicas": 6, "availableReplicas": 6, "conditions": [
                       {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                        "message": 'ReplicaSet "web-v2" is progressing.',
                        "lastUpdateTime": long_ago, "lastTransitionTime": long_ago}]}
    io.objects["web"] = copy.deepcopy(d)
    for stamp, moved in (("2024-01-01T12:30:00Z", False), ("2024-01-01T11:59:00Z", True)):
        old = copy.deepcopy(io.objects["web-v1"])
        old["metadata"]["annotations"]["deployment.corral.dev/scale-down-at"] = stamp
        io.objects["web-v1"] = old
        r = rollout(copy.deepcopy(io.objects["web"]), [old], io, new=io.objects["web-v2"],
                    pod_map={old["metadata"]["uid"]: pods(old, 3),
                             new["metadata"]["uid"]: pods(new, 3)})
        r.services = dict(io.services)
        await bluegreen.rollout(r)
        progressing = next(c for c in io.objects["web"]["status"]["conditions"]
                           if c["type"] == "Progressing")
        assert progressing["reason"] == "ReplicaSetUpdated"
        assert (progressing["lastUpdateTime"] != long_ago) == moved
        assert (io.objects["web-v1"]["spec"]["replicas"] == 0) == moved
        if not moved:
            assert r.requeue_after is not None and 1799 < r.requeue_after < 1801


# ---------------------------------------------------------------- review fixes


def test_an_auto_promotion_wait_holds_the_deadline_while_a_pod_flaps() -> None:
    """autoPromotionSeconds 3600, 20 minutes in one new pod goes unready: no promotion, the
    deadline held until the wait would have ended."""
    waiting = Settings(active="web", auto_promotion_seconds=3600)
    s = state(side("v2", 3, 2), [side("v1", 3)], "v1", settings=waiting, promotable_in=None,
              promotion_wait_ends=T0 + timedelta(minutes=40))
    assert decide(s) == Plan(hold=True)
    after = state(side("v2", 3, 2), [side("v1", 3)], "v1", settings=waiting,
                  promotable_in=None, promotion_wait_ends=T0 - timedelta(seconds=1))
    assert decide(after) == Plan()  # long over: the deadline counts again


def test_zero_replicas_sizes_only_never_promotes() -> None:
    s = state(side("v2", 0), [side("v1", 0)], "v1", replicas=0)
    assert decide(s) == Plan(hold=True)
    resized = state(side("v2", 3), [side("v1", 3)], "v1", replicas=0)
    assert decide(resized) == Plan(sizes=[("v2", 0), ("v1", 0)], hold=True)
    first = state(side("v2", 0), [], None, replicas=0)
    assert not decide(first).promote


def test_an_unknown_ready_time_is_not_promotable() -> None:
    s = state(side("v2", 3), [side("v1", 3)], "v1", promotable_in=None)
    assert decide(s) == Plan()


async def test_a_deployment_no_longer_blue_green_lets_the_active_service_go() -> None:
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v1"})])
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 3), new["metadata"]["uid"]:
                         pods(new, 3)})
    r.services = dict(io.services)
    await bluegreen.rollout(r)  # promoted: the Service remembered on the Deployment
    assert io.objects["web"]["metadata"]["annotations"][
        "deployment.corral.dev/active-service"] == "web"
    switched = copy.deepcopy(io.objects["web"])
    switched["spec"]["strategy"] = {"type": "RollingUpdate"}
    io.objects["web"] = switched
    assert bluegreen.service_names(switched) == ["web"]  # still watched, to be let go
    r = rollout(switched, [old], io, new=io.objects["web-v2"])
    r.services = dict(io.services)
    await strategies.let_go(r)
    assert io.services["web"]["spec"]["selector"] == {"app": "web"}
    assert "deployment.corral.dev/active-service" not in \
        io.objects["web"]["metadata"]["annotations"]
    assert bluegreen.service_names(io.objects["web"]) == []


async def test_a_new_active_service_lets_the_old_one_go() -> None:
    io, d, old, new = blue_green_pair([web_service({"app": "web", "pod-template-hash": "v1"})])
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 3), new["metadata"]["uid"]:
                         pods(new, 3)})
    r.services = dict(io.services)
    await bluegreen.rollout(r)  # promoted: "web" remembered
    renamed = copy.deepcopy(io.objects["web"])
    renamed["spec"]["strategy"]["blueGreen"]["activeService"] = "web-live"
    io.objects["web"] = renamed
    assert bluegreen.service_names(renamed)[-1] == "web"  # still watched, to be let go
    r = rollout(renamed, [old], io, new=io.objects["web-v2"])
    r.services = dict(io.services)
    await strategies.let_go(r)
    assert io.services["web"]["spec"]["selector"] == {"app": "web"}
    assert "deployment.corral.dev/active-service" not in \
        io.objects["web"]["metadata"]["annotations"]
    unchanged = copy.deepcopy(io.objects["web"])
    await strategies.let_go(rollout(unchanged, [old], io, new=io.objects["web-v2"]))
    assert io.objects["web"] == unchanged  # nothing remembered: nothing to do
