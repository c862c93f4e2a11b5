"""The pod worker: carries out one pod's sync against the Runtime, as the kubelet's
``SyncPod`` does, and says what to report.

``podsync`` decides (pure); this module acts. One ``sync(pod)`` reads what the runtime has of
the pod, asks ``compute_pod_actions`` what to do, does it in the kubelet's order (kill, create
the sandbox, start the next init container or the missing regular ones), and returns the
PodStatus to write and when to look again. Everything a start needs is resolved here, at the
moment of the start, as the kubelet does: the image per imagePullPolicy, the environment (also
from ConfigMaps and Secrets), the volumes as host directories.

Failures of a start are the pod's, never the agent's: an image that cannot be pulled, an
environment that cannot be resolved, a container that cannot be created each become the
container's waiting reason (ErrImagePull then ImagePullBackOff, ErrImageNeverPull,
CreateContainerConfigError, CreateContainerError), a Warning Event, and a retry after a
back-off (10 s doubling to 300 s, the kubelet's), while the agent goes on with other pods.

Images in labs without a registry: with ``image_fallback`` a failed pull of an image present
on the node uses the local one and says so in a Warning Event (``corral up`` turns it on).

Termination: ``terminate(pod, grace)`` stops the containers (SIGTERM, then SIGKILL after the
grace period), then the sandbox. ``remove(uid)`` removes whatever the runtime still has of a pod
and its volumes. Dead container instances beyond the latest and the previous one of each
container are removed after every sync (the kubelet's default ``MaxPerPodContainer`` of 1 dead
instance, plus the one lastState and ``logs --previous`` read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeagent.envvars import (
    REASON_CREATE_CONTAINER_CONFIG_ERROR,
    ContainerConfigError,
    SourceLookup,
    resolve_env,
)
from nodeagent.podsync import (
    CRASH_LOOP_BACK_OFF,
    CREATE_CONTAINER_ERROR,
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    BackOffs,
    Observed,
    PodActions,
    PullAction,
    StartContainer,
    compute_pod_actions,
    container_config,
    image_pull_action,
    never_pull_message,
    pod_status,
    sandbox_config,
)
from nodeagent.probes import ProbeManager
from nodeagent.runtime.base import (
    LABEL_POD_UID,
    ContainerState,
    ContainerStatus,
    CreateContainerError,
    DNSConfig,
    ImagePullError,
    Mount,
    NotFound,
    Runtime,
    RuntimeFailure,
    SandboxState,
)
from nodeagent.serviceenv import service_env
from nodeagent.volumes import VolumeError, VolumeManager

log = logging.getLogger(__name__)

Obj = dict[str, Any]
#: ``emit(pod, type, reason, message)``: an Event about ``pod``.
Emit = Callable[[Obj, str, str, str], Awaitable[None]]

NORMAL, WARNING = "Normal", "Warning"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
#: Retry back-off of failed starts (pulls, creations) and sandbox creations: the kubelet's.
RETRY_INITIAL_SECONDS = 10.0
RETRY_MAX_SECONDS = 300.0
DEFAULT_GRACE_SECONDS = 30.0
#: Keys of pod-level failures among the containers' (names that no container can have).
SANDBOX, VOLUMES = "/sandbox", "/volumes"
#: Dead instances kept per container besides the running or latest one.
KEEP_DEAD_INSTANCES = 1


@dataclass
class _Failure:
    """A start that failed: shown as ``reason`` until ``retry_at``, then tried again."""
    reason: str
    message: str
    retry_at: float
    delay: float


@dataclass
class _PodState:
    """What the worker remembers of a pod between syncs (lost on restart, as the kubelet's)."""
    backoff: BackOffs = field(default_factory=dict)
    failures: dict[str, _Failure] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncResult:
    status: Obj
    #: Seconds until the pod should be synced again regardless of events (None: on events).
    requeue_after: float | None


def grace_seconds(pod: Obj) -> float:
    """The pod's termination grace: what its deletion asked for, else its spec's."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    for value in (meta.get("deletionGracePeriodSeconds"),
                  spec.get("terminationGracePeriodSeconds")):
        if value is not None:
            return float(value)
    return DEFAULT_GRACE_SECONDS


class PodWorker:
    """Syncs pods through ``runtime``. ``node_name`` and ``host_ip`` go into env and status."""

    def __init__(self, runtime: Runtime, *, node_name: str, host_ip: str, lookup: SourceLookup,
                 volumes: VolumeManager, probes: ProbeManager, emit: Emit,
                 image_fallback: bool = False, container_id_prefix: str = "docker://",
                 clock: Callable[[], float] = time.time,
                 dns_for: Callable[[Obj], DNSConfig | None] | None = None,
                 services: Callable[[], Iterable[Obj]] = tuple) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.host_ip = host_ip
        self.lookup = lookup
        self.volumes = volumes
        self.probes = probes
        self.emit = emit
        self.image_fallback = image_fallback
        self.container_id_prefix = container_id_prefix
        self.clock = clock
        #: The resolv.conf of a pod's sandbox (cluster DNS); None: the runtime's default.
        self.dns_for = dns_for
        #: The cluster's Services now (the agent's informer cache), for their variables.
        self.services = services
        self._pods: dict[str, _PodState] = {}

    async def observe(self, uid: str) -> Observed:
        labels = {LABEL_POD_UID: uid}
        boxes, ctrs = await asyncio.gather(self.runtime.list_sandboxes(labels),
                                           self.runtime.list_containers(labels=labels))
        return Observed(tuple(boxes), tuple(ctrs))

    async def sync(self, pod: Obj) -> SyncResult:
        """Bring the runtime to what ``pod`` (not being deleted) wants; its status to write."""
        uid = pod["metadata"]["uid"]
        state = self._pods.setdefault(uid, _PodState())
        now = self.clock()
        observed = await self.observe(uid)
        actions = compute_pod_actions(pod, observed, now, backoff=state.backoff,
                                      liveness=self.probes.liveness(uid))
        state.backoff = actions.backoff
        waiting = dict(actions.waiting)
        retry_at = [actions.requeue_at] if actions.requeue_at is not None else []
        meta = pod["metadata"]
        for name, (reason, _) in actions.waiting.items():
            if reason == CRASH_LOOP_BACK_OFF:
                await self.emit(pod, WARNING, "BackOff", f"Back-off restarting failed container "
                                f"{name} in pod {meta['name']}_{meta.get('namespace')}({uid})")
        await self._kill(pod, observed, actions)
        starts = [actions.next_init] if actions.next_init else list(actions.to_start)
        if starts:
            sandbox_id = await self._sandbox(pod, observed, actions, state, waiting, retry_at)
            if sandbox_id is not None:
                mounts = await self._volumes(pod, state, waiting, retry_at, starts)
                if mounts is not None:
                    pod_ip = await self._pod_ip(pod, sandbox_id)
                    for start in starts:
                        await self._start(pod, state, sandbox_id, start, mounts, pod_ip,
                                          waiting, retry_at)
        observed = await self.observe(uid)
        await self._remove_dead(observed)
        sandbox = observed.ready_sandbox()
        running = {c.name: c for c in observed.containers
                   if c.state is ContainerState.RUNNING and not c.is_init}
        self.probes.update(pod, sandbox.ip if sandbox else None, running)
        for name, failure in state.failures.items():
            waiting.setdefault(name, (failure.reason, failure.message))
        status = pod_status(pod, observed, now, host_ip=self.host_ip,
                            container_id_prefix=self.container_id_prefix, waiting=waiting,
                            readiness=self.probes.readiness(uid))
        after = max(0.1, min(retry_at) - self.clock()) if retry_at else None
        return SyncResult(status, after)

    # -- the steps of a sync ---------------------------------------------------------------

    async def _kill(self, pod: Obj, observed: Observed, actions: PodActions) -> None:
        grace = grace_seconds(pod)
        if actions.kill_pod:
            await self._stop_all(pod, observed, grace)
            return
        for kill in actions.to_kill:
            await self.emit(pod, NORMAL, "Killing",
                            f"Container {kill.name} {kill.reason}, will be restarted")
            await self._quietly(self.runtime.stop_container(kill.id, grace))

    async def _stop_all(self, pod: Obj, observed: Observed, grace: float) -> None:
        running = [c for c in observed.containers if c.state is ContainerState.RUNNING]
        for c in running:
            await self.emit(pod, NORMAL, "Killing", f"Stopping container {c.name}")
        await asyncio.gather(*(self._quietly(self.runtime.stop_container(c.id, grace))
                               for c in running))
        for box in observed.sandboxes:
            await self._quietly(self.runtime.stop_sandbox(box.id))

    async def _sandbox(self, pod: Obj, observed: Observed, actions: PodActions,
                       state: _PodState, waiting: dict[str, tuple[str, str]],
                       retry_at: list[float]) -> str | None:
        if not actions.create_sandbox:
            return actions.sandbox_id
        if self._backing_off(state, SANDBOX, retry_at):
            return None
        try:
            dns = self.dns_for(pod) if self.dns_for is not None else None
            sandbox_id = await self.runtime.run_sandbox(sandbox_config(pod, actions.attempt,
                                                                       dns=dns))
        except RuntimeFailure as exc:
            message = f"Failed to create pod sandbox: {exc}"
            self._fail(state, SANDBOX, "FailedCreatePodSandBox", message, retry_at)
            await self.emit(pod, WARNING, "FailedCreatePodSandBox", message)
            return None
        state.failures.pop(SANDBOX, None)
        for box in observed.sandboxes:  # the old ones: their containers are dead with them
            await self._quietly(self.runtime.remove_sandbox(box.id))
        return sandbox_id

    async def _volumes(self, pod: Obj, state: _PodState, waiting: dict[str, tuple[str, str]],
                       retry_at: list[float], starts: list[StartContainer]
                       ) -> Mapping[str, tuple[Mount, ...]] | None:
        if self._backing_off(state, VOLUMES, retry_at):
            return None
        try:
            mounts = await self.volumes.setup(pod)
        except VolumeError as exc:
            if exc.reason == REASON_CREATE_CONTAINER_CONFIG_ERROR:
                # A mount the spec cannot mean (no such volume, a bad subPath): the containers'
                # own error, as the kubelet reports it.
                for start in starts:
                    self._fail(state, start.name, exc.reason, str(exc), retry_at)
                await self.emit(pod, WARNING, "Failed", f"Error: {exc}")
                return None
            # The pod stays ContainerCreating (no waiting reason of its own), as with the kubelet.
            self._fail(state, VOLUMES, "FailedMount", str(exc), retry_at)
            await self.emit(pod, WARNING, "FailedMount", str(exc))
            return None
        state.failures.pop(VOLUMES, None)
        return mounts

    async def _pod_ip(self, pod: Obj, sandbox_id: str) -> str:
        boxes = await self.runtime.list_sandboxes({LABEL_POD_UID: pod["metadata"]["uid"]})
        return next((b.ip or "" for b in boxes if b.id == sandbox_id), "")

    async def _start(self, pod: Obj, state: _PodState, sandbox_id: str, start: StartContainer,
                     mounts: Mapping[str, tuple[Mount, ...]], pod_ip: str,
                     waiting: dict[str, tuple[str, str]], retry_at: list[float]) -> None:
        spec = self._spec(pod, start)
        if self._backing_off(state, start.name, retry_at):
            failure = state.failures[start.name]
            if failure.reason == ERR_IMAGE_PULL:
                failure.reason = IMAGE_PULL_BACK_OFF
                failure.message = f'Back-off pulling image "{spec["image"]}"'
            return
        if not await self._image(pod, state, start, spec, retry_at):
            return
        try:
            env = await resolve_env(pod, spec, self.lookup, pod_ip=pod_ip,
                                    host_ip=self.host_ip, node_name=self.node_name,
                                    services=service_env(self.services(), pod))
        except ContainerConfigError as exc:
            self._fail(state, start.name, REASON_CREATE_CONTAINER_CONFIG_ERROR, str(exc), retry_at)
            await self.emit(pod, WARNING, "Failed", f"Error: {exc}")
            return
        config = container_config(pod, start, env=env, mounts=mounts.get(start.name, ()))
        container_id = None
        try:
            container_id = await self.runtime.create_container(sandbox_id, config)
            await self.emit(pod, NORMAL, "Created", f"Created container: {start.name}")
            await self.runtime.start_container(container_id)
        except CreateContainerError as exc:
            if container_id is not None:  # created but would not start: not an instance
                await self._quietly(self.runtime.remove_container(container_id))
            self._fail(state, start.name, CREATE_CONTAINER_ERROR, str(exc), retry_at)
            await self.emit(pod, WARNING, "Failed", f"Error: {exc}")
            return
        state.failures.pop(start.name, None)
        await self.emit(pod, NORMAL, "Started", f"Started container {start.name}")

    async def _image(self, pod: Obj, state: _PodState, start: StartContainer, spec: Obj,
                     retry_at: list[float]) -> bool:
        """Make the image available per imagePullPolicy; False (failure recorded) if not."""
        image = spec["image"]
        present = await self.runtime.image_present(image)
        action = image_pull_action(spec, present)
        if action is PullAction.NEVER_PULL_MISSING:
            message = never_pull_message(image)
            state.failures[start.name] = _Failure(ERR_IMAGE_NEVER_PULL, message,
                                                  self.clock(), 0.0)
            await self.emit(pod, WARNING, ERR_IMAGE_NEVER_PULL, message)
            return False
        if action is PullAction.USE_PRESENT:
            await self.emit(pod, NORMAL, "Pulled",
                            f'Container image "{image}" already present on machine')
            return True
        await self.emit(pod, NORMAL, "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            await self.runtime.pull_image(image)
        except ImagePullError as exc:
            if self.image_fallback and present:
                await self.emit(pod, WARNING, "PullFailedUsingLocalImage",
                                f'Failed to pull image "{image}": {exc}; using the image '
                                "present on the node (image pull fallback is on)")
                return True
            message = f'Failed to pull image "{image}": {exc}'
            self._fail(state, start.name, ERR_IMAGE_PULL, message, retry_at)
            await self.emit(pod, WARNING, "Failed", message)
            return False
        await self.emit(pod, NORMAL, "Pulled", f'Successfully pulled image "{image}" in '
                        f"{time.monotonic() - started:.3f}s")
        return True

    def _backing_off(self, state: _PodState, key: str, retry_at: list[float]) -> bool:
        failure = state.failures.get(key)
        if failure is None or self.clock() >= failure.retry_at:
            return False
        retry_at.append(failure.retry_at)
        return True

    def _fail(self, state: _PodState, name: str, reason: str, message: str,
              retry_at: list[float]) -> None:
        old = state.failures.get(name)
        delay = RETRY_INITIAL_SECONDS if old is None else min(old.delay * 2, RETRY_MAX_SECONDS)
        failure = _Failure(reason, message, self.clock() + delay, delay)
        state.failures[name] = failure
        retry_at.append(failure.retry_at)

    @staticmethod
    def _spec(pod: Obj, start: StartContainer) -> Obj:
        key = "initContainers" if start.init else "containers"
        return next(c for c in pod["spec"].get(key) or [] if c["name"] == start.name)

    async def _remove_dead(self, observed: Observed) -> None:
        """Container GC: per container, dead instances beyond the newest ones kept."""
        by_name: dict[tuple[str, bool], list[ContainerStatus]] = {}
        for c in observed.containers:
            by_name.setdefault((c.name, c.is_init), []).append(c)
        for instances in by_name.values():
            instances.sort(key=lambda c: (c.attempt, c.created_at))
            for c in instances[:-(1 + KEEP_DEAD_INSTANCES)]:
                if c.state is ContainerState.EXITED:
                    await self._quietly(self.runtime.remove_container(c.id))

    # -- the end of a pod ------------------------------------------------------------------

    async def terminate(self, pod: Obj, grace: float) -> Obj:
        """Stop everything of ``pod`` within ``grace`` seconds; the final status to report."""
        uid = pod["metadata"]["uid"]
        self.probes.remove(uid)
        observed = await self.observe(uid)
        await self._stop_all(pod, observed, grace)
        observed = await self.observe(uid)
        return pod_status(pod, observed, self.clock(), host_ip=self.host_ip,
                          container_id_prefix=self.container_id_prefix)

    async def stop(self, pod: Obj) -> None:
        """A pod that ended (Succeeded or Failed): nothing of it runs; its containers stay for
        ``kubectl logs`` until the pod is deleted."""
        uid = pod["metadata"]["uid"]
        self.probes.remove(uid)
        observed = await self.observe(uid)
        if any(c.state is ContainerState.RUNNING for c in observed.containers) or any(
                b.state is SandboxState.READY for b in observed.sandboxes):
            await self._stop_all(pod, observed, grace_seconds(pod))

    async def remove(self, uid: str) -> None:
        """Remove what the runtime has of pod ``uid`` and its volumes (the pod is gone)."""
        self.probes.remove(uid)
        self._pods.pop(uid, None)
        observed = await self.observe(uid)
        for c in observed.containers:
            if c.state is ContainerState.RUNNING:
                await self._quietly(self.runtime.stop_container(c.id, 0))
        for box in observed.sandboxes:
            await self._quietly(self.runtime.remove_sandbox(box.id))
        for c in observed.containers:  # any left outside a sandbox
            await self._quietly(self.runtime.remove_container(c.id))
        await self.volumes.cleanup(uid)

    @staticmethod
    async def _quietly(call: Awaitable[None]) -> None:
        """A stop or remove that found nothing to do is done; other failures are logged and
        left for the next sync to retry."""
        try:
            await call
        except NotFound:
            pass
        except RuntimeFailure as exc:
            log.warning("runtime: %s", exc)
