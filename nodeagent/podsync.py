"""Pod sync: what the agent should do about one Pod, and what it should report. Pure.

Design. The kubelet's kuberuntime ``computePodActions`` in small. Inputs are the Pod (a dict
from the API), what the runtime shows of it (``Observed``: its sandboxes and container
instances, found by the ``corral.dev/pod-uid`` label), per-container back-off state and probe
results, and ``now``. Outputs are a ``PodActions`` for the agent to carry out through a
``Runtime`` and a PodStatus dict to write. No I/O and no clock: the agent's loop reads the
runtime, calls these, and acts, so an agent that restarts needs nothing but ``list_*`` to
carry on (back-off state is lost, as the kubelet's is).

In the order the code appears:

1. ``Observed`` and helpers: group runtime objects by pod, find strays (ours, but of no pod we
   run), the latest instance of each container (highest attempt).
2. Back-off (``BackOff``): the kubelet's per-container restart back-off: the first restart is
   immediate, then 10 s doubling to 300 s, measured from the container's exit; an entry not
   touched for 10 minutes (twice the maximum) starts over, so a container that ran that long
   before dying is restarted at once again.
3. ``compute_pod_actions``: sandbox (create a new one, and kill the pod, when there is none,
   more than one ready, or the latest is not ready; under restartPolicy Never a pod whose
   sandbox died after running does not get one), init containers (one at a time, in order,
   each must exit 0; a failed one is retried unless restartPolicy is Never, which fails the
   pod), regular containers (start the missing, restart the exited per restartPolicy, recreate
   those whose spec hash changed or that failed liveness), back-off on every restart, and
   ``kill_pod`` when nothing runs and nothing will.
4. ``pod_status``: containerStatuses and initContainerStatuses (state, lastState,
   restartCount, ready, started, ids), phase by the kubelet's ``getPhase``, the four
   conditions, podIP, hostIP, startTime. Field names and reasons are Kubernetes'.
5. Translation of the Pod spec into runtime configs (``sandbox_config``, ``container_config``)
   with the labels that make adoption work, and ``image_pull_action`` (imagePullPolicy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from controlplane.client.quantity import parse_quantity
from nodeagent.runtime.base import (
    KIND_INIT,
    KIND_REGULAR,
    LABEL_ATTEMPT,
    LABEL_CONTAINER_KIND,
    LABEL_CONTAINER_NAME,
    LABEL_MANAGED,
    LABEL_NODE_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SPEC_HASH,
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    DNSConfig,
    Mount,
    PortMapping,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
    spec_hash,
)

Obj = dict[str, Any]

#: The kubelet's container restart back-off (pkg/kubelet: backOffPeriod, MaxContainerBackOff).
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
#: An entry untouched this long starts over (flowcontrol.Backoff: twice the maximum).
BACKOFF_RESET_SECONDS = 2 * BACKOFF_MAX_SECONDS

ALWAYS, ON_FAILURE, NEVER = "Always", "OnFailure", "Never"

# Reasons, as the kubelet spells them.
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
CREATE_CONTAINER_ERROR = "CreateContainerError"
COMPLETED = "Completed"
ERROR = "Error"

REASON_SPEC_CHANGED = "spec hash changed"
REASON_LIVENESS = "failed liveness probe"
REASON_UNKNOWN_STATE = "unknown state"


# 1. What the runtime shows

@dataclass(frozen=True)
class Observed:
    """One pod's sandboxes and container instances, as listed by the runtime."""
    sandboxes: tuple[SandboxStatus, ...] = ()
    containers: tuple[ContainerStatus, ...] = ()

    def latest(self, name: str, *, init: bool = False) -> ContainerStatus | None:
        """The newest instance of the container ``name`` (highest attempt, then creation)."""
        mine = [c for c in self.containers if c.name == name and c.is_init == init]
        return max(mine, key=lambda c: (c.attempt, c.created_at), default=None)

    def previous(self, name: str, *, init: bool = False) -> ContainerStatus | None:
        """The instance before the latest, if it exited (lastState's source)."""
        mine = sorted((c for c in self.containers if c.name == name and c.is_init == init),
                      key=lambda c: (c.attempt, c.created_at))
        return mine[-2] if len(mine) > 1 and mine[-2].state is ContainerState.EXITED else None

    def ready_sandbox(self) -> SandboxStatus | None:
        ready = [s for s in self.sandboxes if s.state is SandboxState.READY]
        return max(ready, key=lambda s: s.created_at, default=None)


def group_by_pod(sandboxes: Iterable[SandboxStatus], containers: Iterable[ContainerStatus]
                 ) -> dict[str, Observed]:
    """Runtime objects by their pod uid label."""
    boxes: dict[str, list[SandboxStatus]] = {}
    ctrs: dict[str, list[ContainerStatus]] = {}
    for s in sandboxes:
        boxes.setdefault(s.pod_uid, []).append(s)
    for c in containers:
        ctrs.setdefault(c.pod_uid, []).append(c)
    return {uid: Observed(tuple(boxes.get(uid, ())), tuple(ctrs.get(uid, ())))
            for uid in boxes.keys() | ctrs.keys()}


def strays(pod_uids: Iterable[str], sandboxes: Iterable[SandboxStatus],
           containers: Iterable[ContainerStatus]) -> tuple[list[str], list[str]]:
    """Ids of our sandboxes and containers that belong to no pod in ``pod_uids``: to remove.
    Objects without ``corral.dev/managed`` are not ours and never listed."""
    keep = set(pod_uids)
    return ([s.id for s in sandboxes if s.labels.get(LABEL_MANAGED) and s.pod_uid not in keep],
            [c.id for c in containers if c.labels.get(LABEL_MANAGED) and c.pod_uid not in keep])


# 2. Back-off

@dataclass(frozen=True)
class BackOff:
    """One container's restart back-off: the current delay, and when it was last set."""
    delay: float
    last_update: float


#: Back-off entries of one pod, by ``backoff_key``.
BackOffs = Mapping[str, BackOff]


def backoff_key(name: str, container: Mapping[str, Any]) -> str:
    """Per container name and spec, as the kubelet's stable key: a changed spec starts over."""
    return f"{name}_{spec_hash(container)}"


def in_backoff(entry: BackOff | None, finished_at: float, now: float) -> bool:
    if entry is None or now - entry.last_update > BACKOFF_RESET_SECONDS:
        return False
    return now - finished_at < entry.delay


def next_backoff(entry: BackOff | None, finished_at: float, now: float) -> BackOff:
    if entry is None or finished_at - entry.last_update > BACKOFF_RESET_SECONDS:
        return BackOff(BACKOFF_INITIAL_SECONDS, now)
    return BackOff(min(entry.delay * 2, BACKOFF_MAX_SECONDS), now)


def backoff_message(name: str, pod: Obj, entry: BackOff) -> str:
    meta = pod["metadata"]
    return (f"back-off {entry.delay:g}s restarting failed container={name} "
            f"pod={meta['name']}_{meta.get('namespace', 'default')}({meta.get('uid', '')})")


# 3. Actions

@dataclass(frozen=True)
class StartContainer:
    name: str
    attempt: int
    init: bool = False


@dataclass(frozen=True)
class KillContainer:
    id: str
    name: str
    reason: str


@dataclass(frozen=True)
class PodActions:
    """What to do, in this order: ``kill_pod`` (stop every container and sandbox of the pod),
    ``to_kill``, ``create_sandbox`` (labelled with ``attempt``), then start ``next_init`` or
    ``to_start`` in ``sandbox_id``, or in the new sandbox when one was created (``sandbox_id``
    is then the old one, if any).

    ``waiting`` names the containers held back by back-off (name -> (CrashLoopBackOff,
    message), for ``pod_status``); ``requeue_at`` is when the earliest of them may start; ``backoff`` is
    the pod's back-off state to keep for the next call."""
    kill_pod: bool = False
    create_sandbox: bool = False
    sandbox_id: str | None = None
    attempt: int = 0
    next_init: StartContainer | None = None
    to_start: tuple[StartContainer, ...] = ()
    to_kill: tuple[KillContainer, ...] = ()
    waiting: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    requeue_at: float | None = None
    backoff: BackOffs = field(default_factory=dict)


def restart_policy(pod: Obj) -> str:
    return pod.get("spec", {}).get("restartPolicy") or ALWAYS


def should_restart(pod: Obj, latest: ContainerStatus | None) -> bool:
    """The kubelet's ShouldContainerBeRestarted, for a container that is not running."""
    if latest is None or latest.state in (ContainerState.CREATED, ContainerState.UNKNOWN):
        return True
    policy = restart_policy(pod)
    if policy == NEVER:
        return False
    return not (policy == ON_FAILURE and latest.exit_code == 0)


def is_terminating(pod: Obj) -> bool:
    """Deleted, or already reported terminal: nothing of it should run."""
    return (pod["metadata"].get("deletionTimestamp") is not None
            or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"))


def compute_pod_actions(pod: Obj, observed: Observed, now: float, *,
                        backoff: BackOffs | None = None,
                        liveness: Mapping[str, bool] | None = None) -> PodActions:
    """What the agent should do for ``pod`` given ``observed``. ``liveness`` maps a container
    name to its liveness probe result (False: failed; absent: no result, alive)."""
    backoff = dict(backoff or {})
    if is_terminating(pod):
        return PodActions(kill_pod=True, backoff=backoff)
    spec = pod["spec"]
    inits: list[Obj] = spec.get("initContainers") or []
    policy = restart_policy(pod)
    create, sandbox_id, attempt = _sandbox_changed(observed)

    if create:
        if policy == NEVER and attempt != 0 and observed.containers:
            # The pod ran once and its sandbox is gone: Never means it is not run again.
            return PodActions(kill_pod=True, sandbox_id=sandbox_id, attempt=attempt,
                              backoff=backoff)
        if inits:
            wanted: list[tuple[Obj, bool]] = [(inits[0], True)]
        else:
            wanted = [(c, False) for c in spec["containers"]
                      if not (policy == ON_FAILURE and _succeeded(observed.latest(c["name"])))]
            if not wanted:
                # Every container already succeeded (OnFailure): nothing to run it for.
                return PodActions(kill_pod=True, sandbox_id=sandbox_id, attempt=attempt,
                                  backoff=backoff)
        plan = _plan_starts(pod, observed, wanted, now, backoff)
        return PodActions(kill_pod=True, create_sandbox=True, sandbox_id=sandbox_id,
                          attempt=attempt, next_init=plan.init, to_start=plan.regular,
                          waiting=plan.waiting, requeue_at=plan.requeue_at, backoff=backoff)

    init_next, init_done, init_failed = _next_init(pod, observed)
    if init_failed:
        return PodActions(kill_pod=True, sandbox_id=sandbox_id, attempt=attempt,
                          backoff=backoff)
    if not init_done:
        wanted = [(init_next, True)] if init_next is not None else []
        plan = _plan_starts(pod, observed, wanted, now, backoff)
        return PodActions(sandbox_id=sandbox_id, attempt=attempt, next_init=plan.init,
                          waiting=plan.waiting, requeue_at=plan.requeue_at, backoff=backoff)

    wanted, kills, keep = [], [], 0
    for container in spec["containers"]:
        name = container["name"]
        latest = observed.latest(name)
        if latest is None or latest.state is not ContainerState.RUNNING:
            if should_restart(pod, latest):
                wanted.append((container, False))
            if latest is not None and latest.state is ContainerState.UNKNOWN:
                kills.append(KillContainer(latest.id, name, REASON_UNKNOWN_STATE))
            continue
        if latest.spec_hash != spec_hash(container):
            kills.append(KillContainer(latest.id, name, REASON_SPEC_CHANGED))
            wanted.append((container, False))
        elif liveness is not None and liveness.get(name) is False:
            kills.append(KillContainer(latest.id, name, REASON_LIVENESS))
            if policy != NEVER:
                wanted.append((container, False))
        else:
            keep += 1
    plan = _plan_starts(pod, observed, wanted, now, backoff)
    return PodActions(kill_pod=keep == 0 and not wanted, sandbox_id=sandbox_id, attempt=attempt,
                      to_start=plan.regular, to_kill=tuple(kills), waiting=plan.waiting,
                      requeue_at=plan.requeue_at, backoff=backoff)


def _sandbox_changed(observed: Observed) -> tuple[bool, str | None, int]:
    """(create a new sandbox?, the sandbox to use or the latest one, attempt for a new one)."""
    if not observed.sandboxes:
        return True, None, 0
    latest = max(observed.sandboxes, key=lambda s: s.created_at)
    ready = [s for s in observed.sandboxes if s.state is SandboxState.READY]
    if len(ready) > 1 or latest.state is not SandboxState.READY:
        return True, latest.id, latest.attempt + 1
    return False, latest.id, latest.attempt


def _succeeded(status: ContainerStatus | None) -> bool:
    return status is not None and status.state is ContainerState.EXITED and status.exit_code == 0


def _next_init(pod: Obj, observed: Observed) -> tuple[Obj | None, bool, bool]:
    """(init container to run next, initialization done?, initialization failed for good?).
    Like the kubelet's findNextInitContainerToRun: walk back from the last init container that
    ran; a running one means wait, a failed one is retried, a succeeded one hands over to the
    next."""
    inits: list[Obj] = pod["spec"].get("initContainers") or []
    if not inits or any(observed.latest(c["name"]) for c in pod["spec"]["containers"]):
        return None, True, False
    for i in range(len(inits) - 1, -1, -1):
        latest = observed.latest(inits[i]["name"], init=True)
        if latest is None:
            continue
        if latest.state is ContainerState.RUNNING:
            return None, False, False
        if latest.state is ContainerState.EXITED and latest.exit_code != 0:
            if restart_policy(pod) == NEVER:
                return None, False, True
            return inits[i], False, False
        if latest.state is not ContainerState.EXITED:
            return inits[i], False, False
        if i == len(inits) - 1:
            return None, True, False
        return inits[i + 1], False, False
    return inits[0], False, False


@dataclass
class _Plan:
    init: StartContainer | None = None
    regular: tuple[StartContainer, ...] = ()
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    requeue_at: float | None = None


def _plan_starts(pod: Obj, observed: Observed, wanted: list[tuple[Obj, bool]], now: float,
                 backoff: dict[str, BackOff]) -> _Plan:
    """Apply back-off to the containers to start (updating ``backoff``), as the kubelet's
    doBackOff: a container whose last instance exited restarts only when its back-off has
    passed, and each restart lengthens it."""
    plan = _Plan()
    starts: list[StartContainer] = []
    for container, init in wanted:
        name = container["name"]
        latest = observed.latest(name, init=init)
        start = StartContainer(name, 0 if latest is None else latest.attempt + 1, init)
        if latest is not None and latest.state is ContainerState.EXITED:
            key = backoff_key(name, container)
            finished = latest.finished_at if latest.finished_at is not None else now
            entry = backoff.get(key)
            if in_backoff(entry, finished, now):
                assert entry is not None
                plan.waiting[name] = (CRASH_LOOP_BACK_OFF, backoff_message(name, pod, entry))
                due = finished + entry.delay
                plan.requeue_at = due if plan.requeue_at is None else min(plan.requeue_at, due)
                continue
            backoff[key] = next_backoff(entry, finished, now)
        if init:
            plan.init = start
        else:
            starts.append(start)
    plan.regular = tuple(starts)
    return plan


# 4. Status

def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(pod: Obj, observed: Observed, now: float, *,
               host_ip: str, container_id_prefix: str = "docker://",
               waiting: Mapping[str, tuple[str, str]] | None = None,
               readiness: Mapping[str, bool] | None = None) -> Obj:
    """The PodStatus the agent reports. ``waiting`` maps a container name to the (reason,
    message) of why it is not running when the runtime cannot show it: CrashLoopBackOff from
    ``PodActions.waiting``, ErrImagePull, ErrImageNeverPull, CreateContainerError from a failed
    start. ``readiness`` maps a container name to its readiness probe result (a container
    without a readinessProbe is ready when running; with one, once its probe said so)."""
    old: Obj = pod.get("status") or {}
    spec = pod["spec"]
    inits: list[Obj] = spec.get("initContainers") or []
    waiting = waiting or {}
    readiness = readiness or {}
    default_reason = POD_INITIALIZING if inits else CONTAINER_CREATING
    init_statuses = [_container_status(c, observed.latest(c["name"], init=True),
                                       observed.previous(c["name"], init=True), default_reason,
                                       waiting, readiness, container_id_prefix, init=True)
                     for c in inits]
    statuses = [_container_status(c, observed.latest(c["name"]), observed.previous(c["name"]),
                                  default_reason, waiting, readiness, container_id_prefix)
                for c in spec["containers"]]
    phase = str(old["phase"]) if old.get("phase") in ("Succeeded", "Failed") \
        else _phase(restart_policy(pod), init_statuses, statuses)

    status: Obj = {"phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                   "startTime": old.get("startTime") or rfc3339(now)}
    sandbox = observed.ready_sandbox()
    if sandbox is not None and sandbox.ip:
        status["podIP"] = sandbox.ip
        status["podIPs"] = [{"ip": sandbox.ip}]
    elif old.get("podIP"):
        # The sandbox is gone (the pod ended, or is being recreated): keep what was reported.
        status["podIP"] = old["podIP"]
        status["podIPs"] = old.get("podIPs") or [{"ip": old["podIP"]}]
    status["conditions"] = _conditions(old, phase, init_statuses, statuses, now)
    if inits:
        status["initContainerStatuses"] = init_statuses
    status["containerStatuses"] = statuses
    return status


def _terminated(c: ContainerStatus, prefix: str) -> Obj:
    code = c.exit_code if c.exit_code is not None else 0
    out: Obj = {"exitCode": code, "reason": c.reason or (COMPLETED if code == 0 else ERROR),
                "containerID": prefix + c.id}
    if c.message:
        out["message"] = c.message
    if c.started_at is not None:
        out["startedAt"] = rfc3339(c.started_at)
    if c.finished_at is not None:
        out["finishedAt"] = rfc3339(c.finished_at)
    return out


def _container_status(container: Obj, latest: ContainerStatus | None,
                      previous: ContainerStatus | None, default_reason: str,
                      waiting: Mapping[str, tuple[str, str]], readiness: Mapping[str, bool],
                      prefix: str, *, init: bool = False) -> Obj:
    name = container["name"]
    state: Obj
    last: Obj = {}
    if previous is not None:
        last = {"terminated": _terminated(previous, prefix)}
    if latest is None or latest.state in (ContainerState.CREATED, ContainerState.UNKNOWN):
        state = {"waiting": {"reason": default_reason}}
    elif latest.state is ContainerState.RUNNING:
        state = {"running": {"startedAt": rfc3339(latest.started_at or latest.created_at)}}
    else:
        state = {"terminated": _terminated(latest, prefix)}
    if name in waiting:
        reason, message = waiting[name]
        if "terminated" in state:
            last = state
        state = {"waiting": {"reason": reason, "message": message}}
    running = "running" in state
    if init:
        ready = "terminated" in state and _succeeded(latest)
    elif "readinessProbe" in container or name in readiness:
        # A probe decides: readiness, or a startup probe not yet passed.
        ready = running and readiness.get(name, False)
    else:
        ready = running
    status: Obj = {
        "name": name, "state": state, "lastState": last, "ready": ready, "started": running,
        "restartCount": latest.attempt if latest is not None else 0,
        "image": container.get("image", ""),
        "imageID": latest.image_id if latest is not None else "",
    }
    if latest is not None:
        status["containerID"] = prefix + latest.id
    return status


def _phase(policy: str, inits: list[Obj], containers: list[Obj]) -> str:
    """The kubelet's getPhase, over the statuses just built."""
    pending_init = failed_init = 0
    for s in inits:
        term = s["state"].get("terminated") or s["lastState"].get("terminated") \
            if "running" not in s["state"] else None
        if term is None:
            pending_init += 1
        elif term["exitCode"] != 0:
            failed_init += 1
    if failed_init and policy == NEVER:
        return "Failed"
    running = waiting = stopped = succeeded = 0
    for s in containers:
        if "running" in s["state"]:
            running += 1
        elif "terminated" in s["state"]:
            stopped += 1
            succeeded += s["state"]["terminated"]["exitCode"] == 0
        elif "terminated" in s["lastState"]:
            stopped += 1
        else:
            waiting += 1
    if pending_init or failed_init or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == ALWAYS:
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == NEVER else "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str, message: str, old: Obj, now: float) -> Obj:
    status = "True" if ok else "False"
    prior = next((c for c in old.get("conditions") or [] if c.get("type") == kind), None)
    since = prior["lastTransitionTime"] if prior and prior.get("status") == status \
        else rfc3339(now)
    cond: Obj = {"type": kind, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": since}
    if not ok:
        cond["reason"] = reason
        cond["message"] = message
    return cond


def _conditions(old: Obj, phase: str, inits: list[Obj], statuses: list[Obj],
                now: float) -> list[Obj]:
    """PodScheduled, Initialized, ContainersReady and Ready, as the kubelet's status manager
    (readiness gates are not supported: Ready is ContainersReady)."""
    not_init = [s["name"] for s in inits if not s["ready"]]
    done = phase == "Succeeded"
    unready = [s["name"] for s in statuses if not s["ready"]]
    ready_reason = "PodCompleted" if done else "ContainersNotReady"
    ready_msg = "" if done else f"containers with unready status: [{' '.join(unready)}]"
    return [
        _condition("PodScheduled", True, "", "", old, now),
        _condition("Initialized", not not_init or done, "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(not_init)}]", old, now),
        _condition("ContainersReady", not unready and not done, ready_reason, ready_msg,
                   old, now),
        _condition("Ready", not unready and not done, ready_reason, ready_msg, old, now),
    ]


# 5. From the Pod spec to runtime configs

class PullAction(StrEnum):
    PULL = "pull"
    USE_PRESENT = "use-present"
    NEVER_PULL_MISSING = "never-pull-missing"


def pull_policy(container: Obj) -> str:
    """imagePullPolicy, defaulted as the API does: Always for ``:latest`` or no tag."""
    if container.get("imagePullPolicy"):
        return str(container["imagePullPolicy"])
    image = container.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition("@")[0]
    return "Always" if "@" not in image and (":" not in tag or tag.endswith(":latest")) \
        else "IfNotPresent"


def image_pull_action(container: Obj, present: bool) -> PullAction:
    """What to do about the image before creating the container. NEVER_PULL_MISSING is
    reported as ErrImageNeverPull with ``never_pull_message``."""
    policy = pull_policy(container)
    if policy == "Always" or (policy == "IfNotPresent" and not present):
        return PullAction.PULL
    return PullAction.USE_PRESENT if present else PullAction.NEVER_PULL_MISSING


def never_pull_message(image: str) -> str:
    return f'Container image "{image}" is not present with pull policy of Never'


def pod_labels(pod: Obj) -> dict[str, str]:
    meta = pod["metadata"]
    return {LABEL_MANAGED: "true", LABEL_POD_UID: meta["uid"],
            LABEL_POD_NAMESPACE: meta.get("namespace", "default"), LABEL_POD_NAME: meta["name"],
            LABEL_NODE_NAME: pod["spec"].get("nodeName", "")}


def sandbox_config(pod: Obj, attempt: int, *, dns: DNSConfig | None = None) -> SandboxConfig:
    meta, spec = pod["metadata"], pod["spec"]
    ports = tuple(PortMapping(p["containerPort"], p.get("protocol", "TCP"), p["hostPort"],
                              p.get("hostIP"))
                  for c in spec["containers"] for p in c.get("ports") or []
                  if p.get("hostPort"))
    return SandboxConfig(
        pod_uid=meta["uid"], namespace=meta.get("namespace", "default"), name=meta["name"],
        hostname=spec.get("hostname") or meta["name"],
        labels={**pod_labels(pod), LABEL_ATTEMPT: str(attempt)}, port_mappings=ports, dns=dns)


def container_config(pod: Obj, start: StartContainer, *,
                     env: Sequence[tuple[str, str]] | None = None,
                     mounts: Sequence[Mount] = ()) -> ContainerConfig:
    """The runtime config of ``start``'s container. ``env`` is the container's whole
    environment as the agent resolved it (envFrom, valueFrom, $(VAR) expansion); without it the
    plain ``value`` entries are taken. ``mounts`` are its volumeMounts as host paths."""
    key = "initContainers" if start.init else "containers"
    container = next(c for c in pod["spec"].get(key) or [] if c["name"] == start.name)
    limits = (container.get("resources") or {}).get("limits") or {}
    if env is None:
        env = [(e["name"], e.get("value", "")) for e in container.get("env") or []
               if "valueFrom" not in e]
    return ContainerConfig(
        name=start.name, image=container["image"],
        command=tuple(container.get("command") or ()), args=tuple(container.get("args") or ()),
        env=tuple(env), working_dir=container.get("workingDir"),
        ports=tuple(PortMapping(p["containerPort"], p.get("protocol", "TCP"))
                    for p in container.get("ports") or []),
        mounts=tuple(mounts),
        cpu_limit=float(parse_quantity(limits["cpu"])) if "cpu" in limits else None,
        memory_limit=int(parse_quantity(limits["memory"])) if "memory" in limits else None,
        labels={**pod_labels(pod), LABEL_CONTAINER_NAME: start.name,
                LABEL_CONTAINER_KIND: KIND_INIT if start.init else KIND_REGULAR,
                LABEL_ATTEMPT: str(start.attempt), LABEL_SPEC_HASH: spec_hash(container)},
        stdin=bool(container.get("stdin")), tty=bool(container.get("tty")))
