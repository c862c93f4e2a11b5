"""The Runtime boundary: what the agent asks of a container engine, shaped like Kubernetes' CRI
in small.

A *sandbox* is the pod-level environment (for Docker a pause-style container owning the network
namespace); *containers* run in it. The interface only does what it is told: no restart policy,
no back-off, no image policy. That is kubelet policy, and it lives in ``nodeagent.podsync``,
where it is pure and tested without an engine.

The runtime keeps no state of its own that the agent needs. Everything the agent must know to
rebuild its view after a restart is written as labels on sandboxes and containers when they are
created (the constants below), so ``list_sandboxes`` and ``list_containers`` alone tell which
pod, which container, which attempt and which spec each one is: the agent adopts what runs and
removes strays, as the kubelet does with the ``io.kubernetes.*`` labels.

Times are seconds since the epoch (floats), from the runtime's clock.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Every object we create carries this label: anything without it is not ours to touch.
LABEL_MANAGED = "corral.dev/managed"
LABEL_POD_UID = "corral.dev/pod-uid"
LABEL_POD_NAMESPACE = "corral.dev/pod-namespace"
LABEL_POD_NAME = "corral.dev/pod-name"
#: The node the pod is bound to: several agents (a lab) may share one engine.
LABEL_NODE_NAME = "corral.dev/node-name"
LABEL_CONTAINER_NAME = "corral.dev/container-name"
#: "init" or "regular": init containers are ordered and must exit 0.
LABEL_CONTAINER_KIND = "corral.dev/container-kind"
#: For a container its restart count (0 for the first run); for a sandbox how many times the
#: pod's sandbox was recreated. Decimal string.
LABEL_ATTEMPT = "corral.dev/attempt"
#: ``spec_hash`` of the container's spec: a change means the container must be recreated.
LABEL_SPEC_HASH = "corral.dev/spec-hash"

KIND_INIT = "init"
KIND_REGULAR = "regular"


class SandboxState(enum.StrEnum):
    READY = "ready"
    NOTREADY = "notready"


class ContainerState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class RuntimeFailure(Exception):
    """A runtime call failed; the message is what the pod's status and Events show."""


class NotFound(RuntimeFailure):
    """No sandbox, container or image of that id."""


class ImagePullError(RuntimeFailure):
    """The image could not be pulled (reported as ErrImagePull)."""


class CreateContainerError(RuntimeFailure):
    """The container could not be created (reported as CreateContainerError)."""


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    protocol: str = "TCP"
    host_port: int | None = None
    host_ip: str | None = None


@dataclass(frozen=True)
class DNSConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True)
class SandboxConfig:
    """What ``run_sandbox`` needs: the pod's identity (also written as labels), its hostname,
    host port mappings and DNS. ``labels`` includes the ``corral.dev/*`` labels."""
    pod_uid: str
    namespace: str
    name: str
    hostname: str
    labels: Mapping[str, str] = field(default_factory=dict)
    port_mappings: tuple[PortMapping, ...] = ()
    dns: DNSConfig | None = None


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    pod_uid: str
    state: SandboxState
    ip: str | None
    created_at: float
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def attempt(self) -> int:
        return int(self.labels.get(LABEL_ATTEMPT, "0"))


@dataclass(frozen=True)
class ContainerConfig:
    """What ``create_container`` needs, already resolved from the Pod spec: env values
    substituted, volumes turned into host paths, limits in cores and bytes."""
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[Mount, ...] = ()
    cpu_limit: float | None = None
    memory_limit: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Keep stdin open (for attach) and allocate a TTY, as the container spec's stdin/tty.
    stdin: bool = False
    tty: bool = False


@dataclass(frozen=True)
class ContainerStatus:
    """One container instance as the runtime sees it. ``reason`` is the runtime's word for an
    exit ("Completed", "Error", "OOMKilled"); attempt, spec hash and pod come from labels."""
    id: str
    sandbox_id: str
    name: str
    image: str
    state: ContainerState
    created_at: float
    image_id: str = ""
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod_uid(self) -> str:
        return self.labels.get(LABEL_POD_UID, "")

    @property
    def attempt(self) -> int:
        return int(self.labels.get(LABEL_ATTEMPT, "0"))

    @property
    def spec_hash(self) -> str:
        return self.labels.get(LABEL_SPEC_HASH, "")

    @property
    def is_init(self) -> bool:
        return self.labels.get(LABEL_CONTAINER_KIND) == KIND_INIT


#: Stream numbers of exec/attach output, as the Kubernetes channel protocols number them.
STDOUT, STDERR = 1, 2


@dataclass(frozen=True)
class LogOptions:
    """What ``container_logs`` returns, as the kubelet's log options: the last ``tail`` lines
    (all when None), only lines written at or after ``since`` (epoch seconds), each prefixed
    with its RFC 3339 (nanosecond) time and a space when ``timestamps``; ``follow`` keeps the
    stream open for new lines until the container exits or the caller stops reading."""
    follow: bool = False
    tail: int | None = None
    since: float | None = None
    timestamps: bool = False


class ExecSession(Protocol):
    """A process started by ``exec`` (or a container's main process, by ``attach``): stdin in,
    output chunks out, then its exit code. With a TTY, all output arrives as STDOUT."""

    def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(STDOUT or STDERR, chunk) until the process's output ends."""

    async def write_stdin(self, data: bytes) -> None:
        """Send ``data`` to the process's stdin (opened with ``stdin=True``)."""

    async def close_stdin(self) -> None:
        """End of input: the process reads EOF."""

    async def resize(self, width: int, height: int) -> None:
        """Set the TTY's size (columns, rows); ignored without a TTY."""

    async def wait(self) -> int:
        """The exit code, once the process has ended (for attach: the container's)."""

    async def close(self) -> None:
        """Release the session; an exec'd process still running is killed. Idempotent."""


class Runtime(Protocol):
    """A container engine, as the agent drives it. Every method is idempotent where CRI's is:
    stopping a stopped sandbox or container succeeds; removing an absent one raises NotFound.
    Failures raise ``RuntimeFailure`` subclasses."""

    async def run_sandbox(self, config: SandboxConfig) -> str:
        """Create and start a sandbox; returns its id. It is ready (has its IP) on return."""

    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Stop the sandbox and every container in it (they become exited)."""

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove the sandbox and every container in it, stopping them first."""

    async def list_sandboxes(self, labels: Mapping[str, str] | None = None
                             ) -> list[SandboxStatus]:
        """Sandboxes having all of ``labels`` (all of ours when None)."""

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        """Create (not start) a container in a ready sandbox; returns its id. The image must be
        present: pulling is the caller's decision (imagePullPolicy)."""

    async def start_container(self, container_id: str) -> None:
        """Start a created container."""

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (terminationGracePeriodSeconds)."""

    async def remove_container(self, container_id: str) -> None:
        """Remove a container, stopping it first if it runs."""

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None
                              ) -> list[ContainerStatus]:
        """Containers (running or not) in ``sandbox_id`` having all of ``labels``."""

    async def pull_image(self, image: str) -> str:
        """Pull ``image``; returns its image id. Raises ImagePullError."""

    async def image_present(self, image: str) -> bool:
        """Whether ``image`` is present locally (for imagePullPolicy IfNotPresent and Never)."""

    def container_logs(self, container_id: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's output (stdout and stderr interleaved as written), per ``options``.
        Raises NotFound for an unknown container (when iterated)."""

    async def exec(self, container_id: str, command: Sequence[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        """Start ``command`` in a running container (its namespaces, environment and working
        directory). Raises NotFound, or RuntimeFailure when the container is not running."""

    async def attach(self, container_id: str, *, stdin: bool = False,
                     tty: bool = False) -> ExecSession:
        """Attach to the container's main process: its output from now on and, with
        ``stdin``, its input (the container must have been created with stdin open)."""


def spec_hash(container: Mapping[str, Any]) -> str:
    """A container spec's hash, stable over dict ordering: 16 hex digits of the SHA-256 of its
    canonical JSON. The agent labels each container with it; a running container whose label
    differs from the hash of the Pod's current spec is recreated (as the kubelet's
    ``HashContainer``)."""
    canonical = json.dumps(container, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
