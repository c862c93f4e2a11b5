"""FakeRuntime keeps the Runtime protocol's promises, and podsync drives it through a pod's
life: a few-line agent loop on a fake clock runs init containers, crashes, back-off, restarts,
restartPolicy Never/OnFailure, image policy, and an agent restart that adopts what runs."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest

from nodeagent.podsync import (
    CREATE_CONTAINER_ERROR,
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    BackOffs,
    Observed,
    PullAction,
    compute_pod_actions,
    container_config,
    group_by_pod,
    image_pull_action,
    never_pull_message,
    pod_status,
    sandbox_config,
    strays,
)
from nodeagent.runtime.base import (
    LABEL_MANAGED,
    LABEL_POD_UID,
    ContainerConfig,
    ContainerState,
    CreateContainerError,
    ImagePullError,
    NotFound,
    Runtime,
    SandboxConfig,
    SandboxState,
)
from nodeagent.runtime.fake import FakeRuntime

T0 = 1_700_000_000.0
IMAGE = "corral/base:1"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_fake_implements_every_method_of_the_protocol_with_its_signature() -> None:
    names = [n for n, _ in inspect.getmembers(Runtime, inspect.isfunction)
             if not n.startswith("_")]
    assert len(names) == 11
    for name in names:
        fake = getattr(FakeRuntime, name)
        assert inspect.iscoroutinefunction(fake), name
        assert inspect.signature(fake) == inspect.signature(getattr(Runtime, name)), name


async def test_sandbox_and_container_lifecycle() -> None:
    clock = Clock()
    rt = FakeRuntime(clock, images={IMAGE})
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels={"a": "1"}))
    assert sid == "sandbox-1"
    [box] = await rt.list_sandboxes({"a": "1"})
    assert (box.state, box.pod_uid, box.ip) == (SandboxState.READY, "u1", "10.244.0.3")
    assert await rt.list_sandboxes({"a": "2"}) == []

    cid = await rt.create_container(sid, ContainerConfig("c", IMAGE, labels={"k": "v"}))
    assert cid == "ctr-2"
    [c] = await rt.list_containers(sid, {"k": "v"})
    assert c.state is ContainerState.CREATED and c.image_id.startswith("sha256:")
    clock.now += 1
    await rt.start_container(cid)
    clock.now += 5
    await rt.stop_container(cid, timeout=30)
    await rt.stop_container(cid, timeout=30)  # idempotent
    [c] = await rt.list_containers()
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Error")
    assert (c.started_at, c.finished_at) == (T0 + 1, T0 + 6)

    await rt.stop_sandbox(sid)
    assert (await rt.list_sandboxes())[0].state is SandboxState.NOTREADY
    with pytest.raises(CreateContainerError):
        await rt.create_container(sid, ContainerConfig("d", IMAGE))
    await rt.remove_sandbox(sid)
    assert await rt.list_sandboxes() == [] and await rt.list_containers() == []
    with pytest.raises(NotFound):
        await rt.remove_container(cid)


async def test_knobs_programmed_and_on_demand_exits_images_and_create_failures() -> None:
    clock = Clock()
    rt = FakeRuntime(clock)
    assert not await rt.image_present(IMAGE)
    with pytest.raises(CreateContainerError):
        await rt.create_container(await rt.run_sandbox(SandboxConfig("u", "n", "p", "p")),
                                  ContainerConfig("c", IMAGE))
    rt.pull_failures["bad:1"] = "manifest unknown"
    with pytest.raises(ImagePullError, match="manifest unknown"):
        await rt.pull_image("bad:1")
    await rt.pull_image(IMAGE)
    assert await rt.image_present(IMAGE) and rt.pulls == ["bad:1", IMAGE]

    rt.program("crash", exit_after=5, exit_code=3, times=1)
    sid = (await rt.list_sandboxes())[0].id
    first = await rt.create_container(sid, ContainerConfig("crash", IMAGE))
    await rt.start_container(first)
    second = await rt.create_container(sid, ContainerConfig("crash", IMAGE))
    await rt.start_container(second)  # the program ran out: this one keeps running
    clock.now += 60
    by_id = {c.id: c for c in await rt.list_containers()}
    assert (by_id[first].exit_code, by_id[first].finished_at) == (3, T0 + 5)
    assert by_id[second].state is ContainerState.RUNNING
    rt.exit_container(second, 137, "OOMKilled")
    [c] = [c for c in await rt.list_containers() if c.id == second]
    assert (c.exit_code, c.reason, c.finished_at) == (137, "OOMKilled", T0 + 60)

    rt.create_failures["c"] = 'exec: "nope": executable file not found'
    with pytest.raises(CreateContainerError, match="executable file not found"):
        await rt.create_container(sid, ContainerConfig("c", IMAGE))


# The agent's loop, in a few lines

class MiniAgent:
    """List, group by pod, compute actions, carry them out, report status; remove strays.
    What the real agent will do around a DockerRuntime, minus the API and the event loop."""

    def __init__(self, rt: FakeRuntime, clock: Clock) -> None:
        self.rt, self.clock = rt, clock
        self.backoff: dict[str, BackOffs] = {}
        self.created: list[str] = []

    async def observe(self) -> dict[str, Observed]:
        return group_by_pod(await self.rt.list_sandboxes(), await self.rt.list_containers())

    async def sync(self, *pods: dict[str, Any]) -> None:
        now = self.clock()
        boxes, ctrs = await self.rt.list_sandboxes(), await self.rt.list_containers()
        stray_boxes, stray_ctrs = strays([p["metadata"]["uid"] for p in pods], boxes, ctrs)
        for cid in stray_ctrs:
            await self.rt.remove_container(cid)
        for sid in stray_boxes:
            await self.rt.remove_sandbox(sid)
        for pod in pods:
            uid = pod["metadata"]["uid"]
            observed = (await self.observe()).get(uid, Observed())
            actions = compute_pod_actions(pod, observed, now, backoff=self.backoff.get(uid))
            self.backoff[uid] = actions.backoff
            waiting = dict(actions.waiting)
            if actions.kill_pod:
                for box in observed.sandboxes:
                    await self.rt.stop_sandbox(box.id)
            for kill in actions.to_kill:
                await self.rt.stop_container(kill.id, timeout=30)
            sandbox_id = actions.sandbox_id
            if actions.create_sandbox:
                sandbox_id = await self.rt.run_sandbox(sandbox_config(pod, actions.attempt))
            for start in [actions.next_init] if actions.next_init else actions.to_start:
                assert start is not None and sandbox_id is not None
                config = container_config(pod, start)
                spec = next(c for c in pod["spec"].get("initContainers", [])
                            + pod["spec"]["containers"] if c["name"] == start.name)
                pull = image_pull_action(spec, await self.rt.image_present(config.image))
                if pull is PullAction.NEVER_PULL_MISSING:
                    waiting[start.name] = (ERR_IMAGE_NEVER_PULL, never_pull_message(config.image))
                    continue
                try:
                    if pull is PullAction.PULL:
                        await self.rt.pull_image(config.image)
                    cid = await self.rt.create_container(sandbox_id, config)
                except ImagePullError as e:
                    waiting[start.name] = (ERR_IMAGE_PULL, str(e))
                    continue
                except CreateContainerError as e:
                    waiting[start.name] = (CREATE_CONTAINER_ERROR, str(e))
                    continue
                await self.rt.start_container(cid)
                self.created.append(cid)
            observed = (await self.observe()).get(uid, Observed())
            pod["status"] = pod_status(pod, observed, now, host_ip="198.18.0.2",
                                       waiting=waiting)


def make_pod(uid: str, policy: str, containers: list[str], inits: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    return {"metadata": {"name": f"pod-{uid}", "namespace": "default", "uid": uid},
            "spec": {"nodeName": "n1", "restartPolicy": policy,
                     "initContainers": [{"name": n, "image": IMAGE} for n in inits],
                     "containers": [{"name": n, "image": IMAGE} for n in containers]}}


def statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pod["status"].get("initContainerStatuses", [])
            + pod["status"]["containerStatuses"]}


def state(pod: dict[str, Any], name: str) -> str:
    s = statuses(pod)[name]["state"]
    [(kind, detail)] = s.items()
    return f"{kind}:{detail.get('reason', '')}"


async def test_pod_life_init_crash_backoff_restart_adoption_and_spec_change() -> None:
    clock = Clock()
    rt = FakeRuntime(clock, images={IMAGE})
    rt.program("init", exit_after=2, exit_code=0)
    rt.program("worker", exit_after=5, exit_code=1, times=3)
    pod = make_pod("u1", "Always", ["web", "worker"], inits=("init",))
    agent = MiniAgent(rt, clock)

    await agent.sync(pod)
    assert pod["status"]["phase"] == "Pending"
    assert state(pod, "init") == "running:" and state(pod, "web") == "waiting:PodInitializing"
    assert pod["status"]["podIP"] == "10.244.0.3"

    clock.now += 2
    await agent.sync(pod)
    assert state(pod, "init") == "terminated:Completed"
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True"}

    # (time of sync, worker state after it, worker restartCount)
    script = [(T0 + 7, "running:", 1),                  # first crash: restarted at once
              (T0 + 12, "waiting:CrashLoopBackOff", 1),  # second: back-off 10 s
              (T0 + 22, "running:", 2),
              (T0 + 27, "waiting:CrashLoopBackOff", 2),  # third: back-off 20 s
              (T0 + 46, "waiting:CrashLoopBackOff", 2),
              (T0 + 47, "running:", 3)]                  # the program ran out: it stays up
    for at, expected, restarts in script:
        clock.now = at
        await agent.sync(pod)
        worker = statuses(pod)["worker"]
        assert (state(pod, "worker"), worker["restartCount"]) == (expected, restarts), at
        assert pod["status"]["phase"] == "Running"
    assert worker["lastState"]["terminated"]["exitCode"] == 1
    assert statuses(pod)["web"]["restartCount"] == 0

    # The agent restarts: a new one rebuilds its view from list_* alone, restarts nothing,
    # reports the same, and removes what belongs to no pod of its own.
    before = copy.deepcopy(pod["status"])
    stray_sid = await rt.run_sandbox(SandboxConfig("gone", "default", "old", "old",
                                                   labels={LABEL_MANAGED: "true"}))
    clock.now += 30
    agent = MiniAgent(rt, clock)
    await agent.sync(pod)
    assert agent.created == []
    assert pod["status"]["containerStatuses"] == before["containerStatuses"]
    assert pod["status"]["phase"] == "Running"
    assert stray_sid not in {s.id for s in await rt.list_sandboxes()}
    assert {s.labels[LABEL_POD_UID] for s in await rt.list_sandboxes()} == {"u1"}

    # A changed spec recreates that container alone.
    pod["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    await agent.sync(pod)
    assert len(agent.created) == 1 and statuses(pod)["web"]["restartCount"] == 1
    assert statuses(pod)["worker"]["restartCount"] == 3


@pytest.mark.parametrize("policy,codes,phase,restarts", [
    ("Never", [1], "Failed", 0),
    ("Never", [0], "Succeeded", 0),
    ("OnFailure", [1, 0], "Succeeded", 1),
    ("Always", [0, 0], "Running", 1),  # exit 0 is restarted too, and backs off
])
async def test_restart_policies_end_to_end(policy: str, codes: list[int], phase: str,
                                           restarts: int) -> None:
    clock = Clock()
    rt = FakeRuntime(clock, images={IMAGE})
    pod = make_pod("u2", policy, ["job"])
    agent = MiniAgent(rt, clock)
    await agent.sync(pod)
    for code in codes:
        [running] = [c for c in await rt.list_containers()
                     if c.state is ContainerState.RUNNING]
        clock.now += 3
        rt.exit_container(running.id, code)
        await agent.sync(pod)
    job = statuses(pod)["job"]
    assert (pod["status"]["phase"], job["restartCount"]) == (phase, restarts)
    if phase in ("Succeeded", "Failed"):
        assert job["state"]["terminated"]["exitCode"] == codes[-1]
        clock.now += 1000
        await agent.sync(pod)  # terminal: the sandbox is stopped, nothing starts again
        assert pod["status"]["phase"] == phase
        assert statuses(pod)["job"]["restartCount"] == restarts
        assert all(s.state is SandboxState.NOTREADY for s in await rt.list_sandboxes())
        assert pod["status"]["podIP"] == "10.244.0.3"


async def test_start_failures_show_their_reasons() -> None:
    clock = Clock()
    rt = FakeRuntime(clock)
    rt.pull_failures["ghost:1"] = "pull access denied for ghost"
    rt.create_failures["nocmd"] = 'exec: "nope": executable file not found in $PATH'
    pod = make_pod("u3", "Always", ["never", "bad", "nocmd", "ok"])
    pod["spec"]["containers"][0].update(image="local:1", imagePullPolicy="Never")
    pod["spec"]["containers"][1]["image"] = "ghost:1"
    agent = MiniAgent(rt, clock)
    await agent.sync(pod)
    by_name = statuses(pod)
    assert by_name["never"]["state"]["waiting"] == {
        "reason": "ErrImageNeverPull",
        "message": 'Container image "local:1" is not present with pull policy of Never'}
    assert by_name["bad"]["state"]["waiting"] == {"reason": "ErrImagePull",
                                                 "message": "pull access denied for ghost"}
    assert by_name["nocmd"]["state"]["waiting"]["reason"] == "CreateContainerError"
    assert state(pod, "ok") == "running:" and rt.pulls == ["ghost:1", IMAGE]
    assert pod["status"]["phase"] == "Pending"
