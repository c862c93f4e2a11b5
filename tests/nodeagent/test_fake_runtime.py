"""FakeRuntime keeps the Runtime protocol's promises, and podsync drives it through a pod's
life: a few-line agent loop on a fake clock runs init containers, crashes, back-off, restarts,
restartPolicy Never/OnFailure, image policy, and an agent restart that adopts what runs."""

from __future__ import annotations

import copy
import inspect

import pytest

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
from nodeagent.runtime.docker import DockerRuntime
from nodeagent.runtime.fake import FakeRuntime

T0 = 1_700_000_000.0
from runtimekit import IMAGE, MiniAgent, lifecycle_contract, make_pod, state, statuses


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("cls", [FakeRuntime, DockerRuntime])
def test_runtime_implements_every_method_of_the_protocol_with_its_signature(cls: type) -> None:
    names = [n for n, _ in inspect.getmembers(Runtime, inspect.isfunction)
             if not n.startswith("_")]
    assert len(names) == 14
    for name in names:
        fake = getattr(cls, name)
        assert inspect.iscoroutinefunction(fake) or inspect.isasyncgenfunction(fake), name
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


async def test_fake_keeps_the_lifecycle_contract() -> None:
    await lifecycle_contract(FakeRuntime(Clock(), images={IMAGE}), IMAGE, {"corral.dev/t": "1"})


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
