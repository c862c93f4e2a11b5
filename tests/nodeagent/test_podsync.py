"""podsync, table-driven: Pod + observed runtime state -> actions, and -> PodStatus. The cases
follow the kubelet's kuberuntime_manager_test (computePodActions) and getPhase."""

from __future__ import annotations

from typing import Any

import pytest

from nodeagent.podsync import (
    CRASH_LOOP_BACK_OFF,
    ERR_IMAGE_NEVER_PULL,
    REASON_LIVENESS,
    REASON_SPEC_CHANGED,
    REASON_UNKNOWN_STATE,
    BackOff,
    Observed,
    PullAction,
    StartContainer,
    backoff_key,
    compute_pod_actions,
    container_config,
    group_by_pod,
    image_pull_action,
    in_backoff,
    never_pull_message,
    next_backoff,
    pod_status,
    sandbox_config,
    strays,
)
from nodeagent.runtime.base import (
    KIND_INIT,
    KIND_REGULAR,
    LABEL_ATTEMPT,
    LABEL_CONTAINER_KIND,
    LABEL_MANAGED,
    LABEL_POD_UID,
    LABEL_SPEC_HASH,
    ContainerState,
    ContainerStatus,
    Mount,
    SandboxState,
    SandboxStatus,
    spec_hash,
)

T0 = 1_700_000_000.0
UID = "uid-1"


def make_pod(policy: str = "Always", inits: int = 0, containers: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": UID},
        "spec": {
            "nodeName": "n1", "restartPolicy": policy,
            "initContainers": [{"name": f"init{i + 1}", "image": "busybox:1"}
                               for i in range(inits)],
            "containers": [{"name": f"foo{i + 1}", "image": "busybox:1"}
                           for i in range(containers)],
        },
    }


def sandbox(sid: str = "sb1", state: str = "ready", attempt: int = 0,
            created: float = T0) -> SandboxStatus:
    return SandboxStatus(id=sid, pod_uid=UID, state=SandboxState(state), ip="10.244.0.5",
                         created_at=created, labels={LABEL_MANAGED: "true", LABEL_POD_UID: UID,
                                                     LABEL_ATTEMPT: str(attempt)})


def ctr(pod: dict[str, Any], name: str, state: str = "running", code: int | None = None, *,
        attempt: int = 0, init: bool = False, changed: bool = False, started: float = T0,
        finished: float | None = None) -> ContainerStatus:
    key = "initContainers" if init else "containers"
    spec = next(c for c in pod["spec"][key] if c["name"] == name)
    exited = state == "exited"
    return ContainerStatus(
        id=f"{name}-{attempt}", sandbox_id="sb1", name=name, image=spec["image"],
        image_id="sha256:abc", state=ContainerState(state), created_at=started + attempt,
        exit_code=code, started_at=started if state != "created" else None,
        finished_at=(finished if finished is not None else started + 1) if exited else None,
        labels={LABEL_MANAGED: "true", LABEL_POD_UID: UID, LABEL_ATTEMPT: str(attempt),
                LABEL_CONTAINER_KIND: KIND_INIT if init else KIND_REGULAR,
                LABEL_SPEC_HASH: "0" * 16 if changed else spec_hash(spec)})


def observe(pod: dict[str, Any], sandboxes: str, states: dict[str, tuple[Any, ...]],
            inits: dict[str, tuple[Any, ...]] | None = None) -> Observed:
    """``sandboxes``: "none", "ready", "notready" or "two-ready". A container absent from
    ``states`` runs (unless ``inits`` is given); one whose state is ABSENT has no instance."""
    boxes = {"none": (), "ready": (sandbox(),), "notready": (sandbox(state="notready"),),
             "two-ready": (sandbox(), sandbox("sb2", created=T0 + 1))}[sandboxes]
    cs = [ctr(pod, n, *states.get(n, ("running",))) for n in
          (c["name"] for c in pod["spec"]["containers"])
          if (inits is None or n in states) and states.get(n) != ABSENT]
    cs += [ctr(pod, n, *st, init=True) for n, st in (inits or {}).items()]
    return Observed(boxes, tuple(cs))


def summary(actions: Any) -> dict[str, Any]:
    return {
        "kill_pod": actions.kill_pod, "create": actions.create_sandbox,
        "attempt": actions.attempt,
        "init": actions.next_init.name if actions.next_init else None,
        "start": [s.name for s in actions.to_start],
        "kill": sorted((k.name, k.reason) for k in actions.to_kill),
    }


def expect(kill_pod: bool = False, create: bool = False, attempt: int = 0,
           init: str | None = None, start: tuple[str, ...] = (),
           kill: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    return {"kill_pod": kill_pod, "create": create, "attempt": attempt, "init": init,
            "start": list(start), "kill": sorted(kill)}


ABSENT = ("absent",)
NOTHING = expect()
ALL3 = ("foo1", "foo2", "foo3")

# (case, restartPolicy, sandboxes, container states, expected)
ACTIONS = [
    ("everything is good; do nothing", "Always", "ready", {}, NOTHING),
    ("new pod: sandbox and all containers", "Always", "none",
     {"foo1": ABSENT, "foo2": ABSENT, "foo3": ABSENT},
     expect(kill_pod=True, create=True, start=ALL3)),
    ("Always restarts exited containers, whatever the code", "Always", "ready",
     {"foo1": ("exited", 0), "foo2": ("exited", 111)}, expect(start=("foo1", "foo2"))),
    ("OnFailure restarts only failed ones", "OnFailure", "ready",
     {"foo1": ("exited", 0), "foo2": ("exited", 111)}, expect(start=("foo2",))),
    ("Never restarts none", "Never", "ready",
     {"foo1": ("exited", 0), "foo2": ("exited", 111)}, NOTHING),
    ("Never, all exited: kill the pod (sandbox)", "Never", "ready",
     {"foo1": ("exited", 0), "foo2": ("exited", 1), "foo3": ("exited", 0)},
     expect(kill_pod=True)),
    ("OnFailure, all succeeded: kill the pod", "OnFailure", "ready",
     {"foo1": ("exited", 0), "foo2": ("exited", 0), "foo3": ("exited", 0)},
     expect(kill_pod=True)),
    ("dead sandbox, Always: recreate everything", "Always", "notready", {},
     expect(kill_pod=True, create=True, attempt=1, start=ALL3)),
    ("dead sandbox, OnFailure: all but the succeeded one", "OnFailure", "notready",
     {"foo2": ("exited", 0)}, expect(kill_pod=True, create=True, attempt=1,
                                     start=("foo1", "foo3"))),
    ("dead sandbox, Never, after running: kill, no new sandbox", "Never", "notready", {},
     expect(kill_pod=True, attempt=1)),
    ("two ready sandboxes: start over in a new one", "Always", "two-ready", {},
     expect(kill_pod=True, create=True, attempt=1, start=ALL3)),
    ("unknown state: kill it and start anew", "Always", "ready", {"foo3": ("unknown",)},
     expect(start=("foo3",), kill=(("foo3", REASON_UNKNOWN_STATE),))),
    ("created but never started: start a new one", "Never", "ready", {"foo3": ("created",)},
     expect(start=("foo3",))),
]


@pytest.mark.parametrize("case,policy,sandboxes,states,expected", ACTIONS,
                         ids=lambda v: str(v)[:50])
def test_compute_pod_actions(case: str, policy: str, sandboxes: str,
                             states: dict[str, tuple[Any, ...]], expected: dict[str, Any]) -> None:
    pod = make_pod(policy)
    observed = observe(pod, sandboxes, states)
    assert summary(compute_pod_actions(pod, observed, T0 + 100)) == expected, case


@pytest.mark.parametrize("policy", ["Always", "Never"])
def test_spec_change_kills_and_recreates_whatever_the_policy(policy: str) -> None:
    pod = make_pod(policy)
    observed = Observed((sandbox(),), (ctr(pod, "foo1"), ctr(pod, "foo2", changed=True),
                                       ctr(pod, "foo3")))
    actions = compute_pod_actions(pod, observed, T0 + 100)
    assert summary(actions) == expect(start=("foo2",), kill=(("foo2", REASON_SPEC_CHANGED),))
    assert actions.to_start == (StartContainer("foo2", 1),)


@pytest.mark.parametrize("policy,restarts", [("Always", True), ("OnFailure", True),
                                             ("Never", False)])
def test_failed_liveness_kills_and_restarts_per_policy(policy: str, restarts: bool) -> None:
    pod = make_pod(policy)
    actions = compute_pod_actions(pod, observe(pod, "ready", {}), T0 + 100,
                                  liveness={"foo1": False, "foo2": True})
    assert [k.reason for k in actions.to_kill] == [REASON_LIVENESS]
    assert [s.name for s in actions.to_start] == (["foo1"] if restarts else [])


# (case, restartPolicy, sandboxes, init states, regular states, expected)
INIT_ACTIONS = [
    ("new pod: sandbox, then the first init container", "Always", "none", {}, {},
     expect(kill_pod=True, create=True, init="init1")),
    ("init1 done: init2 next", "Always", "ready", {"init1": ("exited", 0)}, {},
     expect(init="init2")),
    ("init in progress: wait", "Always", "ready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("running",)}, {}, NOTHING),
    ("all inits done: start all containers", "Always", "ready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("exited", 0)}, {},
     expect(start=ALL3)),
    ("init failed, Always: retry it", "Always", "ready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("exited", 137)}, {},
     expect(init="init3")),
    ("init failed, OnFailure: retry it", "OnFailure", "ready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("exited", 137)}, {},
     expect(init="init3")),
    ("init failed, Never: kill the pod", "Never", "ready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("exited", 137)}, {},
     expect(kill_pod=True)),
    ("dead sandbox: start over from the first init", "Always", "notready",
     {"init1": ("exited", 0), "init2": ("exited", 0), "init3": ("exited", 0)},
     {"foo1": ("running",)}, expect(kill_pod=True, create=True, attempt=1, init="init1")),
    ("regular containers exist: inits are done", "Always", "ready",
     {}, {"foo1": ("running",), "foo2": ("running",), "foo3": ("exited", 1)},
     expect(start=("foo3",))),
]


@pytest.mark.parametrize("case,policy,sandboxes,inits,states,expected", INIT_ACTIONS,
                         ids=lambda v: str(v)[:50])
def test_compute_pod_actions_with_init_containers(
        case: str, policy: str, sandboxes: str, inits: dict[str, tuple[Any, ...]],
        states: dict[str, tuple[Any, ...]], expected: dict[str, Any]) -> None:
    pod = make_pod(policy, inits=3)
    observed = observe(pod, sandboxes, states, inits)
    assert summary(compute_pod_actions(pod, observed, T0 + 100)) == expected, case


def test_deleted_or_terminal_pod_is_killed() -> None:
    pod = make_pod()
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert compute_pod_actions(pod, observe(pod, "ready", {}), T0).kill_pod
    pod = make_pod("Never")
    pod["status"] = {"phase": "Failed"}
    assert summary(compute_pod_actions(pod, observe(pod, "ready", {}), T0)) == \
        expect(kill_pod=True)


# Back-off

def test_backoff_doubles_from_10_to_300_and_resets_after_10_minutes() -> None:
    entry, delays, t = None, [], T0
    for _ in range(8):
        entry = next_backoff(entry, t, t)
        delays.append(entry.delay)
        t += entry.delay + 1
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert entry is not None
    assert in_backoff(entry, t, t + 299) and not in_backoff(entry, t, t + 300)
    # ran 10+ minutes since the last restart, then died: immediate restart, back to 10 s
    died = entry.last_update + 601
    assert not in_backoff(entry, died, died)
    assert next_backoff(entry, died, died).delay == 10


def test_crash_loop_through_compute_pod_actions() -> None:
    pod = make_pod(containers=1)
    spec = pod["spec"]["containers"][0]
    backoff: dict[str, BackOff] = {}
    t, waits = T0, []
    for attempt in range(5):
        died = t + 1
        observed = Observed((sandbox(),), (ctr(pod, "foo1", "exited", 1, attempt=attempt,
                                               started=t, finished=died),))
        actions = compute_pod_actions(pod, observed, died, backoff=backoff)
        if not actions.to_start:
            reason, message = actions.waiting["foo1"]
            assert reason == CRASH_LOOP_BACK_OFF
            assert message.startswith("back-off ") and message.endswith("pod=p_ns(uid-1)")
            assert actions.requeue_at is not None
            waits.append(actions.requeue_at - died)
            actions = compute_pod_actions(pod, observed, actions.requeue_at, backoff=backoff)
        else:
            waits.append(0)
        assert actions.to_start == (StartContainer("foo1", attempt + 1),)
        backoff = dict(actions.backoff)
        t = actions.backoff[backoff_key("foo1", spec)].last_update
    assert waits == [0, 10, 20, 40, 80]


# Status

def status_of(pod: dict[str, Any], observed: Observed, **kw: Any) -> dict[str, Any]:
    return pod_status(pod, observed, T0 + 100, host_ip="198.18.0.2", **kw)


# (restartPolicy, regular states, waiting overrides, expected phase)
PHASES = [
    ("Always", {}, {}, "Running"),
    ("Always", {"foo1": ("created",)}, {}, "Pending"),
    ("Always", {"foo1": ("exited", 0), "foo2": ("exited", 0), "foo3": ("exited", 1)}, {},
     "Running"),
    ("OnFailure", {"foo1": ("exited", 0), "foo2": ("exited", 0), "foo3": ("exited", 0)}, {},
     "Succeeded"),
    ("OnFailure", {"foo1": ("exited", 0), "foo2": ("exited", 0), "foo3": ("exited", 2)}, {},
     "Running"),
    ("Never", {"foo1": ("exited", 0), "foo2": ("exited", 0), "foo3": ("exited", 0)}, {},
     "Succeeded"),
    ("Never", {"foo1": ("exited", 0), "foo2": ("exited", 137), "foo3": ("exited", 0)}, {},
     "Failed"),
    ("Never", {"foo1": ("exited", 0), "foo2": ("exited", 137)}, {}, "Running"),
    ("Always", {"foo1": ("exited", 1)}, {"foo1": (CRASH_LOOP_BACK_OFF, "back-off 10s")},
     "Running"),
]


@pytest.mark.parametrize("policy,states,waiting,phase", PHASES, ids=str)
def test_phase(policy: str, states: dict[str, tuple[Any, ...]],
               waiting: dict[str, tuple[str, str]], phase: str) -> None:
    pod = make_pod(policy)
    assert status_of(pod, observe(pod, "ready", states), waiting=waiting)["phase"] == phase


def test_status_of_a_running_pod() -> None:
    pod = make_pod(containers=2)
    pod["spec"]["containers"][1]["readinessProbe"] = {"httpGet": {"port": 80}}
    previous = ctr(pod, "foo1", "exited", 2, attempt=0, started=T0 - 50, finished=T0 - 40)
    observed = Observed((sandbox(),), (previous, ctr(pod, "foo1", attempt=1),
                                       ctr(pod, "foo2")))
    status = status_of(pod, observed)
    foo1, foo2 = status["containerStatuses"]
    assert foo1 == {
        "name": "foo1", "ready": True, "started": True, "restartCount": 1,
        "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}},
        "lastState": {"terminated": {
            "exitCode": 2, "reason": "Error", "containerID": "docker://foo1-0",
            "startedAt": "2023-11-14T22:12:30Z", "finishedAt": "2023-11-14T22:12:40Z"}},
        "image": "busybox:1", "imageID": "sha256:abc", "containerID": "docker://foo1-1",
    }
    assert foo2["ready"] is False  # has a readinessProbe, no result yet
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.244.0.5" and status["hostIP"] == "198.18.0.2"
    assert status["startTime"] == "2023-11-14T22:15:00Z"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["message"] == "containers with unready status: [foo2]"
    assert conditions["Initialized"]["status"] == "True"

    ready = status_of(pod | {"status": status}, observed, readiness={"foo2": True})
    conditions = {c["type"]: c for c in ready["conditions"]}
    assert conditions["Ready"]["status"] == conditions["ContainersReady"]["status"] == "True"
    assert ready["startTime"] == status["startTime"]
    assert conditions["PodScheduled"]["lastTransitionTime"] == "2023-11-14T22:15:00Z"


def test_status_while_initializing_and_waiting_reasons() -> None:
    pod = make_pod(inits=2, containers=1)
    observed = observe(pod, "ready", {}, {"init1": ("exited", 0), "init2": ("running",)})
    status = status_of(pod, observed)
    assert status["phase"] == "Pending"
    assert [s["ready"] for s in status["initContainerStatuses"]] == [True, False]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Initialized"] == {
        "type": "Initialized", "status": "False", "lastProbeTime": None,
        "lastTransitionTime": "2023-11-14T22:15:00Z", "reason": "ContainersNotInitialized",
        "message": "containers with incomplete status: [init2]"}

    pod = make_pod(containers=1)
    assert status_of(pod, observe(pod, "none", {"foo1": ("created",)}))[
        "containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    message = never_pull_message("busybox:1")
    empty = Observed((sandbox(),), ())
    waiting = status_of(pod, empty, waiting={"foo1": (ERR_IMAGE_NEVER_PULL, message)})
    assert waiting["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImageNeverPull",
                    "message": 'Container image "busybox:1" is not present with pull policy '
                               'of Never'}}
    assert waiting["phase"] == "Pending"


def test_crash_loop_status_shows_the_last_termination() -> None:
    pod = make_pod(containers=1)
    observed = Observed((sandbox(),), (ctr(pod, "foo1", "exited", 1, attempt=3),))
    status = status_of(pod, observed, waiting={"foo1": (CRASH_LOOP_BACK_OFF, "back-off 40s")})
    foo1 = status["containerStatuses"][0]
    assert foo1["state"] == {"waiting": {"reason": "CrashLoopBackOff",
                                         "message": "back-off 40s"}}
    assert foo1["lastState"]["terminated"]["exitCode"] == 1
    assert foo1["restartCount"] == 3 and foo1["ready"] is False


def test_never_pod_with_failed_init_is_failed_and_terminal_phase_sticks() -> None:
    pod = make_pod("Never", inits=1, containers=1)
    observed = observe(pod, "ready", {}, {"init1": ("exited", 3)})
    assert status_of(pod, observed)["phase"] == "Failed"
    pod = make_pod("Never", containers=1)
    pod["status"] = {"phase": "Succeeded"}
    assert status_of(pod, Observed())["phase"] == "Succeeded"


# Spec hash, images, configs, grouping

def test_spec_hash_is_stable_over_dict_ordering() -> None:
    a = {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}], "ports": []}
    b = {"ports": [], "env": [{"value": "1", "name": "A"}], "image": "x", "name": "c"}
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(a | {"image": "y"})
    assert len(spec_hash(a)) == 16


@pytest.mark.parametrize("container,present,action", [
    ({"image": "busybox"}, True, PullAction.PULL),
    ({"image": "busybox:latest"}, True, PullAction.PULL),
    ({"image": "busybox:1.36"}, True, PullAction.USE_PRESENT),
    ({"image": "busybox:1.36"}, False, PullAction.PULL),
    ({"image": "reg:5000/busybox"}, True, PullAction.PULL),
    ({"image": "b@sha256:00"}, True, PullAction.USE_PRESENT),
    ({"image": "busybox", "imagePullPolicy": "IfNotPresent"}, True, PullAction.USE_PRESENT),
    ({"image": "busybox", "imagePullPolicy": "Never"}, True, PullAction.USE_PRESENT),
    ({"image": "busybox", "imagePullPolicy": "Never"}, False, PullAction.NEVER_PULL_MISSING),
], ids=str)
def test_image_pull_action(container: dict[str, Any], present: bool,
                           action: PullAction) -> None:
    assert image_pull_action(container, present) is action


def test_configs_carry_the_labels_that_make_adoption_work() -> None:
    pod = make_pod(inits=1, containers=1)
    pod["spec"]["containers"][0].update(
        command=["sh"], args=["-c", "httpd"], workingDir="/www",
        env=[{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}],
        ports=[{"containerPort": 80, "hostPort": 8080}],
        resources={"limits": {"cpu": "500m", "memory": "64Mi"}})
    plain = container_config(pod, StartContainer("foo1", 2))
    assert plain.env == (("A", "1"),)  # valueFrom needs the agent's resolution
    config = container_config(pod, StartContainer("foo1", 2), env=[("A", "1"), ("B", "ref")],
                              mounts=[Mount("/data", "/var/lib/x")])
    assert config.command == ("sh",) and config.args == ("-c", "httpd")
    assert config.env == (("A", "1"), ("B", "ref"))
    assert config.mounts == (Mount("/data", "/var/lib/x"),)
    assert (config.cpu_limit, config.memory_limit) == (0.5, 64 * 2**20)
    assert config.labels[LABEL_ATTEMPT] == "2"
    assert config.labels[LABEL_SPEC_HASH] == spec_hash(pod["spec"]["containers"][0])
    assert config.labels[LABEL_POD_UID] == UID
    init = container_config(pod, StartContainer("init1", 0, init=True))
    assert init.labels[LABEL_CONTAINER_KIND] == KIND_INIT
    box = sandbox_config(pod, 1)
    assert box.labels[LABEL_ATTEMPT] == "1" and box.hostname == "p"
    assert [(p.container_port, p.host_port) for p in box.port_mappings] == [(80, 8080)]


def test_group_by_pod_and_strays() -> None:
    pod = make_pod(containers=1)
    mine = ctr(pod, "foo1")
    other = ContainerStatus(id="x", sandbox_id="sb9", name="c", image="i",
                            state=ContainerState.RUNNING, created_at=T0,
                            labels={LABEL_MANAGED: "true", LABEL_POD_UID: "gone"})
    foreign = ContainerStatus(id="y", sandbox_id="", name="c", image="i",
                              state=ContainerState.RUNNING, created_at=T0)
    groups = group_by_pod([sandbox()], [mine, other, foreign])
    assert groups[UID] == Observed((sandbox(),), (mine,))
    assert strays([UID], [sandbox()], [mine, other, foreign]) == ([], ["x"])
