"""FakeRuntime: the Runtime in memory, for tests and hollow nodes.

Nothing runs. A started container stays running until the test says otherwise: on demand
(``exit_container``), or by a ``program`` set for its name before it starts (exit with a code
some seconds after each start, for the next N starts). Time comes from an injected clock and a
programmed exit is dated exactly when it was due, whenever the fake next looks, so tests on a
fake clock are deterministic. Ids count up (``sandbox-1``, ``ctr-1``); sandbox IPs too.

Knobs: ``images`` (present locally), ``pull_failures`` (image -> message),
``create_failures`` (container name -> message), ``stop_exit_code``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from nodeagent.runtime.base import (
    LABEL_POD_UID,
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    CreateContainerError,
    ImagePullError,
    NotFound,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)

log = logging.getLogger(__name__)

#: What a container killed by stop_container exits with (SIGKILL), as Docker reports it.
SIGKILL_EXIT_CODE = 137


@dataclass
class _Program:
    exit_after: float
    exit_code: int
    times: int | None


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    return not wanted or all(labels.get(k) == v for k, v in wanted.items())


def _exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


class FakeRuntime:
    """An in-memory ``Runtime``. ``clock`` returns seconds since the epoch."""

    def __init__(self, clock: Callable[[], float], *, images: set[str] | None = None) -> None:
        self.clock = clock
        self.images: set[str] = set(images or ())
        self.pull_failures: dict[str, str] = {}
        self.create_failures: dict[str, str] = {}
        self.stop_exit_code = SIGKILL_EXIT_CODE
        self.pulls: list[str] = []
        self._sandboxes: dict[str, SandboxStatus] = {}
        self._containers: dict[str, ContainerStatus] = {}
        self._exits_at: dict[str, tuple[float, int]] = {}
        self._programs: dict[str, _Program] = {}
        self._ids = itertools.count(1)

    # knobs

    def program(self, name: str, *, exit_after: float, exit_code: int,
                times: int | None = None) -> None:
        """Containers named ``name`` exit with ``exit_code`` ``exit_after`` seconds after each
        start, for the next ``times`` starts (every start when None)."""
        self._programs[name] = _Program(exit_after, exit_code, times)

    def exit_container(self, container_id: str, exit_code: int, reason: str = "") -> None:
        """Make a running container exit now (a crash, a kill from outside, an OOM)."""
        self._settle()
        self._finish(container_id, exit_code, reason or _exit_reason(exit_code), self.clock())

    # sandboxes

    async def run_sandbox(self, config: SandboxConfig) -> str:
        n = next(self._ids)
        sandbox_id = f"sandbox-{n}"
        self._sandboxes[sandbox_id] = SandboxStatus(
            id=sandbox_id, pod_uid=config.pod_uid, state=SandboxState.READY,
            ip=f"10.244.0.{n % 250 + 2}", created_at=self.clock(),
            labels={**config.labels, LABEL_POD_UID: config.pod_uid})
        log.debug("sandbox %s for pod %s/%s", sandbox_id, config.namespace, config.name)
        return sandbox_id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        for c in await self.list_containers(sandbox_id):
            await self.stop_container(c.id, 0)
        self._sandboxes[sandbox_id] = replace(sandbox, state=SandboxState.NOTREADY)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self._sandbox(sandbox_id)
        for c in await self.list_containers(sandbox_id):
            await self.remove_container(c.id)
        del self._sandboxes[sandbox_id]

    async def list_sandboxes(self, labels: Mapping[str, str] | None = None
                             ) -> list[SandboxStatus]:
        return [s for s in self._sandboxes.values() if _matches(s.labels, labels)]

    # containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        if self._sandbox(sandbox_id).state is not SandboxState.READY:
            raise CreateContainerError(f"sandbox {sandbox_id} is not ready")
        if config.name in self.create_failures:
            raise CreateContainerError(self.create_failures[config.name])
        if config.image not in self.images:
            raise CreateContainerError(f"no such image: {config.image}")
        container_id = f"ctr-{next(self._ids)}"
        self._containers[container_id] = ContainerStatus(
            id=container_id, sandbox_id=sandbox_id, name=config.name, image=config.image,
            image_id=_image_id(config.image), state=ContainerState.CREATED,
            created_at=self.clock(), labels=dict(config.labels))
        return container_id

    async def start_container(self, container_id: str) -> None:
        container = self._container(container_id)
        if container.state is not ContainerState.CREATED:
            raise CreateContainerError(f"container {container_id} is {container.state}")
        now = self.clock()
        self._containers[container_id] = replace(container, state=ContainerState.RUNNING,
                                                 started_at=now)
        program = self._programs.get(container.name)
        if program is not None:
            self._exits_at[container_id] = (now + program.exit_after, program.exit_code)
            if program.times is not None:
                program.times -= 1
                if program.times == 0:
                    del self._programs[container.name]

    async def stop_container(self, container_id: str, timeout: float) -> None:
        self._settle()
        if self._container(container_id).state is ContainerState.RUNNING:
            self._finish(container_id, self.stop_exit_code, _exit_reason(self.stop_exit_code),
                         self.clock())

    async def remove_container(self, container_id: str) -> None:
        self._container(container_id)
        self._exits_at.pop(container_id, None)
        del self._containers[container_id]

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None
                              ) -> list[ContainerStatus]:
        self._settle()
        return [c for c in self._containers.values()
                if (sandbox_id is None or c.sandbox_id == sandbox_id)
                and _matches(c.labels, labels)]

    # images

    async def pull_image(self, image: str) -> str:
        self.pulls.append(image)
        if image in self.pull_failures:
            raise ImagePullError(self.pull_failures[image])
        self.images.add(image)
        return _image_id(image)

    async def image_present(self, image: str) -> bool:
        return image in self.images

    # internals

    def _sandbox(self, sandbox_id: str) -> SandboxStatus:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"no sandbox {sandbox_id}") from None

    def _container(self, container_id: str) -> ContainerStatus:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"no container {container_id}") from None

    def _settle(self) -> None:
        """Apply the programmed exits that are due, each at the time it was due."""
        now = self.clock()
        for container_id, (at, code) in sorted(self._exits_at.items(), key=lambda i: i[1]):
            if at <= now:
                self._finish(container_id, code, _exit_reason(code), at)

    def _finish(self, container_id: str, code: int, reason: str, at: float) -> None:
        container = self._container(container_id)
        self._exits_at.pop(container_id, None)
        if container.state is not ContainerState.RUNNING:
            return
        self._containers[container_id] = replace(
            container, state=ContainerState.EXITED, exit_code=code, reason=reason,
            finished_at=at)


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()
