"""What the runtime tests share: the lifecycle every Runtime promises, and a small agent loop
that drives a Runtime through ``podsync`` (run on FakeRuntime and on DockerRuntime)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from nodeagent import images
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
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    CreateContainerError,
    ImagePullError,
    NotFound,
    Runtime,
    SandboxConfig,
    SandboxState,
)

T0 = 1_700_000_000.0
IMAGE = "corral/base:1"


async def lifecycle_contract(rt: Runtime, image: str, labels: dict[str, str]) -> None:
    """What every Runtime promises, whatever runs underneath (also run on DockerRuntime):
    ``image`` must be present and have ``sleep``; ``labels`` set this run's objects apart."""
    sid = await rt.run_sandbox(SandboxConfig("u1", "ns", "p", "p", labels=labels))
    [box] = await rt.list_sandboxes(labels)
    assert (box.id, box.state, box.pod_uid) == (sid, SandboxState.READY, "u1") and box.ip
    assert await rt.list_sandboxes({**labels, "corral.dev/other": "x"}) == []
    cid = await rt.create_container(sid, ContainerConfig(
        "c", image, command=("sleep", "30"), labels={**labels, "corral.dev/k": "v"}))
    [c] = await rt.list_containers(sid, {"corral.dev/k": "v"})
    assert (c.id, c.sandbox_id, c.name, c.image) == (cid, sid, "c", image)
    assert c.state is ContainerState.CREATED and c.image_id.startswith("sha256:")
    await rt.start_container(cid)
    [c] = await rt.list_containers(labels=labels)
    assert c.state is ContainerState.RUNNING and c.started_at is not None
    await rt.stop_container(cid, timeout=0)
    await rt.stop_container(cid, timeout=0)  # idempotent
    [c] = await rt.list_containers(sid)
    assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Error")
    assert c.finished_at is not None

    await rt.stop_sandbox(sid)
    await rt.stop_sandbox(sid)  # idempotent
    assert (await rt.list_sandboxes(labels))[0].state is SandboxState.NOTREADY
    with pytest.raises(CreateContainerError):
        await rt.create_container(sid, ContainerConfig("d", image, labels=labels))
    await rt.remove_sandbox(sid)
    assert await rt.list_sandboxes(labels) == [] and await rt.list_containers(labels=labels) == []
    with pytest.raises(NotFound):
        await rt.remove_container(cid)
    with pytest.raises(NotFound):
        await rt.remove_sandbox(sid)


class MiniAgent:
    """List, group by pod, compute actions, carry them out, report status; remove strays.
    What the real agent will do around a DockerRuntime, minus the API and the event loop."""

    def __init__(self, rt: Runtime, clock: Callable[[], float]) -> None:
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


def remove_labelled(docker_client: Any, labels: Mapping[str, str]) -> None:
    """Remove every container having all of ``labels``, running or not."""
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for c in docker_client.api.containers(all=True, filters=filters):
        docker_client.api.remove_container(c["Id"], force=True)


@contextmanager
def base_image(docker_client: Any, tag: str, leftovers: Mapping[str, str]) -> Iterator[str]:
    """The base image as ``tag``; afterwards, whatever failed, the containers labelled with
    ``leftovers`` and the image are removed."""
    import docker.errors

    try:
        images.build_base_image(docker_client, tag)
        yield tag
    finally:
        remove_labelled(docker_client, leftovers)
        try:
            docker_client.images.remove(tag)
        except docker.errors.ImageNotFound:
            pass


async def container_status(rt: Runtime, cid: str) -> ContainerStatus:
    [c] = [c for c in await rt.list_containers() if c.id == cid]
    return c


async def wait_for(rt: Runtime, cid: str, done: Callable[[ContainerStatus], bool],
                   timeout: float = 10) -> ContainerStatus:
    """Container ``cid`` once ``done`` holds for it, or as it is after ``timeout`` seconds
    (the caller asserts on what it got)."""
    deadline = time.monotonic() + timeout
    while not done(c := await container_status(rt, cid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return c


def exited(c: ContainerStatus) -> bool:
    return c.state is ContainerState.EXITED
