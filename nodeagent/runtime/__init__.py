"""Container runtimes behind one interface (``base.Runtime``, CRI in small) and its in-memory
fake (``fake.FakeRuntime``), and ``docker.DockerRuntime`` on the Docker engine. ProcessRuntime
will sit beside them."""

from nodeagent.runtime.base import (
    KIND_INIT,
    KIND_REGULAR,
    LABEL_ATTEMPT,
    LABEL_CONTAINER_KIND,
    LABEL_CONTAINER_NAME,
    LABEL_MANAGED,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SPEC_HASH,
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    CreateContainerError,
    DNSConfig,
    ExecSession,
    ImagePullError,
    LogOptions,
    Mount,
    NotFound,
    PortMapping,
    Runtime,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
    STDERR,
    STDOUT,
    spec_hash,
)
from nodeagent.runtime.docker import DockerRuntime

__all__ = [
    "KIND_INIT", "KIND_REGULAR", "LABEL_ATTEMPT", "LABEL_CONTAINER_KIND", "LABEL_CONTAINER_NAME",
    "LABEL_MANAGED", "LABEL_POD_NAME", "LABEL_POD_NAMESPACE", "LABEL_POD_UID", "LABEL_SPEC_HASH",
    "ContainerConfig", "ContainerState", "ContainerStatus", "CreateContainerError", "DNSConfig",
    "DockerRuntime",
    "ExecSession", "ImagePullError", "LogOptions", "Mount", "NotFound", "PortMapping", "Runtime", "RuntimeFailure",
    "SandboxConfig", "SandboxState", "SandboxStatus", "STDERR", "STDOUT", "spec_hash",
]
