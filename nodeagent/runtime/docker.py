"""DockerRuntime: the Runtime on the Docker engine, through the docker SDK.

The SDK blocks, so every engine call runs in a worker thread (``asyncio.to_thread``) through
``_call``, which is also where engine errors become the Runtime's: ``docker.errors.NotFound``
-> ``NotFound``, any other engine or transport error -> ``RuntimeFailure`` (or the subclass the
caller names: ``CreateContainerError``, ``ImagePullError``) with a one-line message.

In the order the code appears:

1. Sandboxes. A sandbox is a pause-style container from ``sandbox_image`` that owns the pod's
   network namespace, its
   shareable IPC namespace, hostname, DNS and published host ports. Its process is busybox
   ``sh`` running ``PAUSE_SCRIPT``: it sleeps forever and exits 0 at once on SIGTERM. (``sleep``
   as PID 1 would ignore SIGTERM, since PID 1 gets no default signal actions; ``init=True``
   would fix that but depends on the engine's docker-init; the trap needs only the image's sh.)
2. Containers join the sandbox's network and IPC namespaces (``container:<sandbox id>``); the
   PID namespace is their own, as a pod's is by default (shareProcessNamespace: false).
   Kubernetes ``command`` replaces ENTRYPOINT and ``args`` replace CMD; Docker drops the image's
   CMD when ENTRYPOINT is given, as Kubernetes does.
3. Listing. Docker label filters do the selection server-side; every object carries
   ``LABEL_MANAGED`` and a runtime-private type label (sandbox or container, as dockershim's
   ``io.kubernetes.docker.type``), containers also their sandbox's id. The private labels are
   not shown in the statuses' ``labels``. Docker's State becomes a ``ContainerStatus``;
   timestamps are RFC 3339 with nanoseconds, and Docker's zero time means none.
4. Images: presence by inspection, pulls streamed with errors read from the stream.
5. Logs: the engine's log stream (``api.logs`` with follow, tail, since, timestamps; the SDK
   takes the stdout/stderr multiplexing apart), read chunk by chunk in worker threads and
   cancelled by closing it when the caller stops reading.
6. Exec and attach hijack the engine's HTTP connection (``exec_start(socket=True)``,
   ``attach_socket``) into a raw byte stream, read and written in worker threads. Without a
   TTY the engine frames output in 8-byte headers (stream, 3 zero bytes, big-endian length),
   undone by the pure ``Demuxer``; with one, output is raw. Closing stdin half-closes the
   connection, which the engine passes on as EOF. The exit code comes from ``exec_inspect``
   (the container's ``State`` for attach) once the process has ended. The engine has no call
   to kill an exec'd process, so ``close`` kills it by host PID, and only after checking that
   it is in the container's own PID namespace (which a PID seen from another namespace, with
   the engine in a VM say, would not be); the engine's hijacked stream may buffer a first
   chunk of output in the SDK's HTTP reader, lost if the process wrote before the upgrade's
   headers were read (the SDK offers no way to reach it).

Times are Docker's (its clock); ``clock`` is used only when Docker gives no creation time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import requests

from nodeagent.network.base import PodNetwork, PodNetworkError
from nodeagent.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_CONTAINER_NAME,
    LABEL_MANAGED,
    LABEL_POD_UID,
    STDERR,
    STDOUT,
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    CreateContainerError,
    ExecSession,
    ImagePullError,
    LogOptions,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)

log = logging.getLogger(__name__)

#: Runtime-private labels: which kind of object, and a container's sandbox.
LABEL_DOCKER_TYPE = "corral.dev/docker-type"
LABEL_SANDBOX_ID = "corral.dev/sandbox-id"
TYPE_SANDBOX = "sandbox"
TYPE_CONTAINER = "container"
PRIVATE_LABELS = (LABEL_DOCKER_TYPE, LABEL_SANDBOX_ID)

#: The sandbox's process: sleep forever, exit 0 at once on SIGTERM/SIGINT.
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
#: Seconds the sandbox gets between SIGTERM and SIGKILL on stop (it exits on SIGTERM).
SANDBOX_STOP_TIMEOUT_S = 2
#: Containers still running when their sandbox stops are killed at once (CRI: forced).
SANDBOX_CONTAINER_STOP_TIMEOUT_S = 0
#: States in which a container's inspect data stay the same (see ``_inspect_all``).
STABLE_STATES = frozenset({"running", "exited", "dead"})
INSPECT_CACHE_MAX = 10_000
#: Docker's "never": zero time.
ZERO_TIME_PREFIX = "0001-01-01"

#: Docker State.Status -> ContainerState.
STATES = {"created": ContainerState.CREATED, "running": ContainerState.RUNNING,
          "paused": ContainerState.RUNNING, "restarting": ContainerState.RUNNING,
          "removing": ContainerState.EXITED, "exited": ContainerState.EXITED,
          "dead": ContainerState.EXITED}

#: Docker's multiplexed stream: a header of stream type, 3 zero bytes, big-endian payload size.
MUX_HEADER = struct.Struct(">BxxxI")
#: Docker's stream types in that header -> ours (stdin echoes and the daemon's own errors
#: are shown as stdout and stderr, as the docker CLI shows them).
MUX_STREAMS = {0: STDOUT, 1: STDOUT, 2: STDERR, 3: STDERR}
#: Bytes read from a hijacked connection at a time.
READ_SIZE = 64 * 1024
#: Seconds between looks at an ended process whose exit the engine has not recorded yet.
EXIT_POLL_S = 0.05

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
_T = TypeVar("_T")


def _one_line(error: BaseException) -> str:
    text = getattr(error, "explanation", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split()) or type(error).__name__


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of Docker's RFC 3339 (nanosecond) time; None for zero/none."""
    if not value or value.startswith(ZERO_TIME_PREFIX):
        return None
    match = _RFC3339.match(value)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    tz = "+00:00" if zone == "Z" else zone
    seconds = datetime.fromisoformat(whole + tz).timestamp()
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def exit_reason(state: Mapping[str, Any]) -> str:
    """The kubelet's word for an exit: OOMKilled, Completed or Error."""
    if state.get("OOMKilled"):
        return "OOMKilled"
    return "Completed" if state.get("ExitCode") == 0 else "Error"


def docker_name(container: str, labels: Mapping[str, str]) -> str | None:
    """``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>``, dockershim's names, so that
    ``docker ps`` says what runs; None (Docker picks) for objects without pod labels."""
    parts = [labels.get(k) for k in (LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID)]
    if not all(parts):
        return None
    return "_".join(["k8s", container, *map(str, parts), labels.get(LABEL_ATTEMPT, "0")])


def _label_filters(kind: str, labels: Mapping[str, str] | None) -> dict[str, list[str]]:
    wanted = {LABEL_MANAGED: "true", LABEL_DOCKER_TYPE: kind, **(labels or {})}
    return {"label": [f"{k}={v}" for k, v in wanted.items()]}


def _public(labels: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if k not in PRIVATE_LABELS}


def _ip(attrs: Mapping[str, Any]) -> str | None:
    settings = attrs.get("NetworkSettings") or {}
    for network in (settings.get("Networks") or {}).values():
        if network and network.get("IPAddress"):
            return str(network["IPAddress"])
    return settings.get("IPAddress") or None


class DockerRuntime:
    """The ``Runtime`` on a Docker engine. ``client`` is a ``docker.DockerClient``."""

    def __init__(self, client: docker.DockerClient, *, sandbox_image: str = "corral/base:latest",
                 network: PodNetwork | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.client = client
        self.api = client.api
        self.sandbox_image = sandbox_image
        #: The pod network plugin (CNI's place): with one, sandboxes start with Docker's
        #: ``none`` network and the plugin gives them their interface and IP; without, Docker's
        #: default bridge does.
        self.network = network
        self.network_mode = "none" if network is not None else "bridge"
        self.clock = clock
        #: container id -> (the state it was inspected in, the inspect data); see _inspect_all.
        self._inspected: dict[str, tuple[str, dict[str, Any]]] = {}

    async def _call(self, fn: Callable[..., _T], *args: Any,
                    failure: type[RuntimeFailure] = RuntimeFailure, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` in a thread, engine errors mapped to the Runtime's."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.NotFound as e:
            raise NotFound(_one_line(e)) from None
        except (docker.errors.DockerException, requests.RequestException) as e:
            raise failure(_one_line(e)) from None

    # sandboxes

    async def run_sandbox(self, config: SandboxConfig) -> str:
        sandbox_id = await self._call(self._create_sandbox, config)
        try:
            await self._call(self.api.start, sandbox_id)
            if self.network is not None:
                await self._attach_network(sandbox_id)
        except RuntimeFailure:
            await self._call(self.api.remove_container, sandbox_id, force=True)
            raise
        return sandbox_id

    async def _attach_network(self, sandbox_id: str) -> None:
        """Give a started sandbox its pod interface, through its process's namespace."""
        assert self.network is not None
        attrs = await self._call(self.api.inspect_container, sandbox_id)
        pid = (attrs.get("State") or {}).get("Pid")
        if not pid:
            raise RuntimeFailure(f"sandbox {sandbox_id[:12]} has no process to attach to")
        try:
            await self.network.attach(sandbox_id, f"/proc/{pid}/ns/net")
        except PodNetworkError as exc:
            raise RuntimeFailure(f"pod network: {exc}") from None

    async def _detach_network(self, sandbox_id: str, attrs: Mapping[str, Any]) -> None:
        if self.network is None:
            return
        pid = (attrs.get("State") or {}).get("Pid")
        try:
            await self.network.detach(sandbox_id, f"/proc/{pid}/ns/net" if pid else None)
        except PodNetworkError as exc:
            raise RuntimeFailure(f"pod network: {exc}") from None

    def _create_sandbox(self, config: SandboxConfig) -> str:
        # The low-level API: the high-level ``containers.create`` inspects what it created,
        # one more engine call per pod for nothing.
        dns = config.dns
        published = [p for p in config.port_mappings if p.host_port]
        host_config = self.api.create_host_config(
            network_mode=self.network_mode, ipc_mode="shareable",
            port_bindings={f"{p.container_port}/{p.protocol.lower()}":
                           (p.host_ip, p.host_port) if p.host_ip else p.host_port
                           for p in published} or None,
            dns=list(dns.servers) if dns and dns.servers else None,
            dns_search=list(dns.searches) if dns and dns.searches else None,
            dns_opt=list(dns.options) if dns and dns.options else None)
        created = self.api.create_container(
            self.sandbox_image, entrypoint=["sh", "-c", PAUSE_SCRIPT],
            name=docker_name("POD", config.labels), hostname=config.hostname,
            ports=[(p.container_port, p.protocol.lower()) for p in published] or None,
            host_config=host_config,
            labels={**config.labels, LABEL_POD_UID: config.pod_uid, LABEL_MANAGED: "true",
                    LABEL_DOCKER_TYPE: TYPE_SANDBOX})
        return str(created["Id"])

    async def stop_sandbox(self, sandbox_id: str) -> None:
        attrs = await self._call(self.api.inspect_container, sandbox_id)  # NotFound if absent
        running = [c.id for c in await self.list_containers(sandbox_id)
                   if c.state is ContainerState.RUNNING]
        await asyncio.gather(*(self.stop_container(c, SANDBOX_CONTAINER_STOP_TIMEOUT_S)
                               for c in running))
        await self._detach_network(sandbox_id, attrs)  # CNI DEL, while the namespace exists
        await self._call(self.api.stop, sandbox_id, timeout=SANDBOX_STOP_TIMEOUT_S)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        attrs = await self._call(self.api.inspect_container, sandbox_id)  # NotFound if absent
        await self._detach_network(sandbox_id, attrs)  # idempotent: also after a stop
        for c in await self.list_containers(sandbox_id):
            try:
                await self.remove_container(c.id)
            except NotFound:
                pass  # removed meanwhile
        self._inspected.pop(sandbox_id, None)
        await self._call(self.api.remove_container, sandbox_id, force=True)

    async def list_sandboxes(self, labels: Mapping[str, str] | None = None
                             ) -> list[SandboxStatus]:
        found = await self._call(self._inspect_all, _label_filters(TYPE_SANDBOX, labels))
        return [self._sandbox_status(attrs) for attrs in found]

    def _sandbox_status(self, attrs: Mapping[str, Any]) -> SandboxStatus:
        labels = _public((attrs.get("Config") or {}).get("Labels"))
        running = (attrs.get("State") or {}).get("Running", False)
        return SandboxStatus(
            id=attrs["Id"], pod_uid=labels.get(LABEL_POD_UID, ""),
            state=SandboxState.READY if running else SandboxState.NOTREADY,
            ip=(self.network.ip_of(attrs["Id"]) if self.network is not None else _ip(attrs))
            if running else None,
            created_at=parse_time(attrs.get("Created")) or self.clock(), labels=labels)

    # containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sandbox = await self._call(self.api.inspect_container, sandbox_id)
        if not (sandbox.get("State") or {}).get("Running"):
            raise CreateContainerError(f"sandbox {sandbox_id} is not ready")
        try:
            return await self._call(self._create_container, sandbox["Id"], config,
                                    failure=CreateContainerError)
        except NotFound as e:  # the image
            raise CreateContainerError(str(e)) from None

    def _create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        host_config = self.api.create_host_config(
            network_mode=f"container:{sandbox_id}", ipc_mode=f"container:{sandbox_id}",
            mounts=[docker.types.Mount(m.container_path, m.host_path, type="bind",
                                       read_only=m.read_only) for m in config.mounts],
            nano_cpus=round(config.cpu_limit * 1e9) if config.cpu_limit else None,
            mem_limit=config.memory_limit or None)
        created = self.api.create_container(
            config.image, name=docker_name(config.name, config.labels),
            entrypoint=list(config.command) or None, command=list(config.args) or None,
            environment=[f"{k}={v}" for k, v in config.env],
            working_dir=config.working_dir or None, host_config=host_config,
            stdin_open=config.stdin, tty=config.tty,
            labels={**config.labels, LABEL_CONTAINER_NAME: config.name, LABEL_MANAGED: "true",
                    LABEL_DOCKER_TYPE: TYPE_CONTAINER, LABEL_SANDBOX_ID: sandbox_id})
        return str(created["Id"])

    async def start_container(self, container_id: str) -> None:
        # Docker fails at start what the kubelet would report at creation (no such
        # executable, a bad mount): CreateContainerError for the agent to show.
        await self._call(self.api.start, container_id, failure=CreateContainerError)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        # Docker's stop is SIGTERM, then SIGKILL after t whole seconds; stopped: a no-op.
        await self._call(self.api.stop, container_id, timeout=max(0, math.ceil(timeout)))

    async def remove_container(self, container_id: str) -> None:
        self._inspected.pop(container_id, None)
        await self._call(self.api.remove_container, container_id, force=True)

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None
                              ) -> list[ContainerStatus]:
        wanted = {**(labels or {}), **({LABEL_SANDBOX_ID: sandbox_id} if sandbox_id else {})}
        found = await self._call(self._inspect_all, _label_filters(TYPE_CONTAINER, wanted))
        return [self._container_status(attrs) for attrs in found]

    def _container_status(self, attrs: Mapping[str, Any]) -> ContainerStatus:
        all_labels = (attrs.get("Config") or {}).get("Labels") or {}
        labels = _public(all_labels)
        state = attrs.get("State") or {}
        status = STATES.get(state.get("Status", ""), ContainerState.UNKNOWN)
        exited = status is ContainerState.EXITED
        return ContainerStatus(
            id=attrs["Id"], sandbox_id=all_labels.get(LABEL_SANDBOX_ID, ""),
            name=labels.get(LABEL_CONTAINER_NAME, attrs.get("Name", "").lstrip("/")),
            image=(attrs.get("Config") or {}).get("Image", ""), image_id=attrs.get("Image", ""),
            state=status, created_at=parse_time(attrs.get("Created")) or self.clock(),
            exit_code=state.get("ExitCode") if exited else None,
            reason=exit_reason(state) if exited else "",
            message=" ".join(str(state.get("Error") or "").split()),
            started_at=parse_time(state.get("StartedAt")),
            finished_at=parse_time(state.get("FinishedAt")) if exited else None,
            labels=labels)

    def _inspect_all(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Inspect every container matching ``filters``, skipping those removed meanwhile.

        One list call, and an inspect only for containers whose state changed since they
        were last inspected: a running container's inspect data do not change while it runs,
        an exited one's never do, and the agent lists the engine every second (the engine's
        CPU, on a small host, is what pods start with)."""
        found = []
        listed = self.api.containers(all=True, filters=dict(filters))
        for summary in listed:
            container_id, state = summary["Id"], summary.get("State", "")
            cached = self._inspected.get(container_id)
            if cached is not None and cached[0] == state and state in STABLE_STATES:
                found.append(cached[1])
                continue
            try:
                attrs = self.api.inspect_container(container_id)
            except docker.errors.NotFound:
                continue
            self._inspected[container_id] = (state, attrs)
            found.append(attrs)
        if len(self._inspected) > INSPECT_CACHE_MAX:
            self._inspected.clear()  # removed containers' entries: start over, rarely
        return found

    # images

    async def pull_image(self, image: str) -> str:
        try:
            return await self._call(self._pull, image, failure=ImagePullError)
        except NotFound as e:  # the registry has no such image
            raise ImagePullError(f"{image}: {e}") from None
        except ImagePullError as e:
            raise ImagePullError(f"{image}: {e}") from None

    def _pull(self, image: str) -> str:
        repository, tag = docker.utils.parse_repository_tag(image)
        for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise ImagePullError(" ".join(str(event["error"]).split()))
        return str(self.api.inspect_image(image)["Id"])

    async def image_present(self, image: str) -> bool:
        try:
            await self._call(self.api.inspect_image, image)
        except NotFound:
            return False
        return True

    # logs

    async def container_logs(self, container_id: str, options: LogOptions
                             ) -> AsyncIterator[bytes]:
        chunks = await self._call(
            self.api.logs, container_id, stream=True, follow=options.follow,
            tail="all" if options.tail is None else options.tail,
            since=options.since, timestamps=options.timestamps)
        try:
            while (chunk := await self._call(next, chunks, None)) is not None:
                yield chunk
        finally:
            # Unblocks a worker thread still waiting for a followed line.
            await asyncio.to_thread(chunks.close)

    # exec and attach

    async def exec(self, container_id: str, command: Sequence[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        created = await self._call(self.api.exec_create, container_id, list(command),
                                   stdin=stdin, tty=tty)
        exec_id = created["Id"]
        hijacked = await self._call(self.api.exec_start, exec_id, tty=tty, socket=True)
        return DockerExecSession(self, hijacked, tty=tty, exec_id=exec_id,
                                 container_id=container_id)

    async def attach(self, container_id: str, *, stdin: bool = False,
                     tty: bool = False) -> ExecSession:
        attrs = await self._call(self.api.inspect_container, container_id)
        if not (attrs.get("State") or {}).get("Running"):
            raise RuntimeFailure(f"container {container_id} is not running")
        # The container's own TTY decides the framing, whatever the client asked for.
        has_tty = bool((attrs.get("Config") or {}).get("Tty"))
        hijacked = await self._call(self.api.attach_socket, container_id, params={
            "stdin": int(stdin), "stdout": 1, "stderr": 1, "stream": 1})
        return DockerExecSession(self, hijacked, tty=has_tty, exec_id=None,
                                 container_id=container_id)

    async def _exit_code(self, exec_id: str | None, container_id: str) -> int:
        """The exit code of the exec (of the container when None), once the engine has it."""
        while True:
            if exec_id is not None:
                info = await self._call(self.api.exec_inspect, exec_id)
                running, code = info.get("Running"), info.get("ExitCode")
            else:
                state = (await self._call(self.api.inspect_container, container_id)
                         ).get("State") or {}
                running, code = state.get("Running"), state.get("ExitCode")
            if not running and code is not None:
                return int(code)
            await asyncio.sleep(EXIT_POLL_S)

    async def _kill_exec(self, exec_id: str, container_id: str) -> None:
        """SIGKILL an exec'd process still running, if its host PID provably is the
        container's (see the module docstring, 6)."""
        try:
            info = await self._call(self.api.exec_inspect, exec_id)
            state = (await self._call(self.api.inspect_container, container_id)
                     ).get("State") or {}
        except RuntimeFailure:
            return
        pid, init = info.get("Pid"), state.get("Pid")
        if not info.get("Running") or not pid or not init:
            return
        try:
            ours = os.readlink("/proc/self/ns/pid")
            theirs = os.readlink(f"/proc/{init}/ns/pid")
            if theirs == ours or os.readlink(f"/proc/{pid}/ns/pid") != theirs:
                log.info("exec %s left running: pid %s is not provably in container %s",
                         exec_id, pid, container_id)
                return
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError) as e:
            log.info("exec %s left running: cannot kill pid %s: %s", exec_id, pid, e)


class Demuxer:
    """Docker's multiplexed stream back into (stream, chunk) pairs; bytes in, frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by ``data``; a partial frame waits for the next feed."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= MUX_HEADER.size:
            kind, size = MUX_HEADER.unpack_from(self._buffer)
            end = MUX_HEADER.size + size
            if len(self._buffer) < end:
                break
            if kind not in MUX_STREAMS:
                raise RuntimeFailure(f"the engine sent a frame of unknown stream {kind}")
            frames.append((MUX_STREAMS[kind], bytes(self._buffer[MUX_HEADER.size:end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (non-zero at the end: the stream was cut)."""
        return len(self._buffer)


class DockerExecSession:
    """An ``ExecSession`` over a hijacked engine connection (exec, or attach when
    ``exec_id`` is None). Blocking socket calls run in worker threads."""

    def __init__(self, runtime: DockerRuntime, hijacked: Any, *, tty: bool,
                 exec_id: str | None, container_id: str) -> None:
        self.runtime = runtime
        self._hijacked = hijacked  # keeps the SDK's response (and so the connection) alive
        self._sock: socket.socket = getattr(hijacked, "_sock", hijacked)
        self.tty = tty
        self.exec_id = exec_id
        self.container_id = container_id
        self._closed = False

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        demuxer = None if self.tty else Demuxer()
        while True:
            try:
                data = await asyncio.to_thread(self._sock.recv, READ_SIZE)
            except OSError as e:
                if self._closed:
                    return
                raise RuntimeFailure(f"reading the output of {self._what}: {e}") from None
            if not data:
                break
            if demuxer is None:
                yield STDOUT, data
                continue
            for frame in demuxer.feed(data):
                yield frame
        if demuxer is not None and demuxer.pending:
            log.warning("%s: output ended inside a frame (%d bytes dropped)", self._what,
                        demuxer.pending)

    async def write_stdin(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._sock.sendall, data)
        except OSError as e:
            raise RuntimeFailure(f"writing the stdin of {self._what}: {e}") from None

    async def close_stdin(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed already: the process has its EOF

    async def resize(self, width: int, height: int) -> None:
        if not self.tty:
            return
        if self.exec_id is not None:
            await self.runtime._call(self.runtime.api.exec_resize, self.exec_id,
                                     height=height, width=width)
        else:
            await self.runtime._call(self.runtime.api.resize, self.container_id, height, width)

    async def wait(self) -> int:
        return await self.runtime._exit_code(self.exec_id, self.container_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        except OSError:
            pass
        self._sock.close()
        if self.exec_id is not None:
            await self.runtime._kill_exec(self.exec_id, self.container_id)

    @property
    def _what(self) -> str:
        return f"exec {self.exec_id}" if self.exec_id else f"attach to {self.container_id}"
