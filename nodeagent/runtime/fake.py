"""FakeRuntime: the Runtime in memory, for tests and hollow nodes.

Nothing runs. A started container stays running until the test says otherwise: on demand
(``exit_container``), or by a ``program`` set for its name before it starts (exit with a code
some seconds after each start, for the next N starts). Time comes from an injected clock and a
programmed exit is dated exactly when it was due, whenever the fake next looks, so tests on a
fake clock are deterministic. Ids count up (``sandbox-1``, ``ctr-1``); sandbox IPs too.

Knobs: ``images`` (present locally), ``pull_failures`` (image -> message),
``create_failures`` (container name -> message), ``stop_exit_code``.

Logs, exec and attach: a container's output is what the test writes (``write_log``), dated by
the clock; ``container_logs`` reads it per ``LogOptions`` and, following, waits for more until
the container exits. ``exec_results`` maps a command to what it does: an ``ExecResult`` (exit
code, stdout, stderr) or a callable of (command, stdin) returning one; the output comes once
stdin is closed when stdin is open (so ``cat`` is ``lambda cmd, data: ExecResult(0, data)``),
at once otherwise; an unknown command exits 127. ``attach`` streams what is written from then
on until the container exits, and records what the client sends in ``attached_stdin``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from nodeagent.runtime.base import (
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

#: What a container killed by stop_container exits with (SIGKILL), as Docker reports it.
SIGKILL_EXIT_CODE = 137
#: What an exec of a command ``exec_results`` does not know exits with (a shell's "not found").
UNKNOWN_COMMAND_EXIT_CODE = 127
#: Seconds between looks at a followed container: programmed exits settle only when looked at.
FOLLOW_POLL_S = 0.05


@dataclass(frozen=True)
class ExecResult:
    """What a fake exec'd command does: exit with ``exit_code`` after writing its output."""
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


ExecBehaviour = ExecResult | Callable[[tuple[str, ...], bytes], ExecResult]


@dataclass(frozen=True)
class _LogEntry:
    at: float
    stream: int
    data: bytes


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
        #: What each container was created with, and every stop asked for (id, timeout).
        self.configs: dict[str, ContainerConfig] = {}
        self.stops: list[tuple[str, float]] = []
        self._sandboxes: dict[str, SandboxStatus] = {}
        self._containers: dict[str, ContainerStatus] = {}
        self._exits_at: dict[str, tuple[float, int]] = {}
        self._programs: dict[str, _Program] = {}
        self._ids = itertools.count(1)
        self.exec_results: dict[tuple[str, ...], ExecBehaviour] = {}
        self.execs: list[tuple[str, tuple[str, ...]]] = []
        self.attached_stdin: dict[str, bytes] = {}
        self._logs: dict[str, list[_LogEntry]] = {}
        self._written = asyncio.Event()

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

    def write_log(self, container_id: str, text: str | bytes, stream: int = STDOUT) -> None:
        """The container writes ``text`` (to STDOUT or STDERR) now; each line is one log entry
        (``tail`` counts them)."""
        self._container(container_id)
        data = text.encode() if isinstance(text, str) else text
        now = self.clock()
        self._logs.setdefault(container_id, []).extend(
            _LogEntry(now, stream, line) for line in data.splitlines(keepends=True))
        self._wake()

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
        self.configs[container_id] = config
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
        self.stops.append((container_id, timeout))
        self._settle()
        if self._container(container_id).state is ContainerState.RUNNING:
            self._finish(container_id, self.stop_exit_code, _exit_reason(self.stop_exit_code),
                         self.clock())

    async def remove_container(self, container_id: str) -> None:
        self._container(container_id)
        self._exits_at.pop(container_id, None)
        self._logs.pop(container_id, None)
        del self._containers[container_id]
        self._wake()

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None
                              ) -> list[ContainerStatus]:
        self._settle()
        return [c for c in self._containers.values()
                if (sandbox_id is None or c.sandbox_id == sandbox_id)
                and _matches(c.labels, labels)]

    # logs, exec, attach

    async def container_logs(self, container_id: str, options: LogOptions
                             ) -> AsyncIterator[bytes]:
        self._container(container_id)
        entries = [e for e in self._logs.get(container_id, ())
                   if options.since is None or e.at >= options.since]
        if options.tail is not None:
            entries = entries[-options.tail:] if options.tail > 0 else []
        sent = len(self._logs.get(container_id, ()))
        for entry in entries:
            yield _log_line(entry, options.timestamps)
        if options.follow:
            async for entry in self._follow(container_id, sent):
                yield _log_line(entry, options.timestamps)

    async def _follow(self, container_id: str, start: int) -> AsyncIterator[_LogEntry]:
        """The container's entries from index ``start`` on, as written, until it exits."""
        sent = start
        while True:
            self._written.clear()
            self._settle()
            written = self._logs.get(container_id, [])
            for entry in written[sent:]:
                yield entry
            sent = len(written)
            container = self._containers.get(container_id)
            if container is None or container.state is ContainerState.EXITED:
                return
            try:
                await asyncio.wait_for(self._written.wait(), FOLLOW_POLL_S)
            except TimeoutError:
                pass

    async def exec(self, container_id: str, command: Sequence[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        self._running(container_id)
        cmd = tuple(command)
        self.execs.append((container_id, cmd))
        behaviour = self.exec_results.get(cmd, ExecResult(
            UNKNOWN_COMMAND_EXIT_CODE, stderr=f"fake: {cmd[0] if cmd else ''}: not found\n"
            .encode()))
        session = FakeExecSession(cmd, behaviour, tty=tty)
        if not stdin:
            await session.close_stdin()
        return session

    async def attach(self, container_id: str, *, stdin: bool = False,
                     tty: bool = False) -> ExecSession:
        self._running(container_id)
        return FakeAttachSession(self, container_id, len(self._logs.get(container_id, ())))

    def _running(self, container_id: str) -> None:
        self._settle()
        container = self._container(container_id)
        if container.state is not ContainerState.RUNNING:
            raise RuntimeFailure(f"container {container_id} is not running")

    def _wake(self) -> None:
        self._written.set()

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
        self._wake()


def _log_line(entry: _LogEntry, timestamps: bool) -> bytes:
    if not timestamps:
        return entry.data
    return rfc3339_nano(entry.at).encode() + b" " + entry.data


def rfc3339_nano(at: float) -> str:
    """``at`` as the kubelet's log timestamps: RFC 3339, UTC, nine fraction digits."""
    whole = int(at // 1)
    nanos = round((at - whole) * 1e9)
    if nanos == 1_000_000_000:
        whole, nanos = whole + 1, 0
    stamp = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


@dataclass
class FakeExecSession:
    """An exec'd fake command: its output comes once stdin has closed."""
    command: tuple[str, ...]
    behaviour: ExecBehaviour
    tty: bool = False
    stdin: bytearray = field(default_factory=bytearray)
    resizes: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False
    _result: ExecResult | None = None
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        await self._ended.wait()
        result = self._result
        if result is None:  # closed before it ran
            return
        # With a TTY there is one output stream, as a terminal has.
        for stream, data in ((STDOUT, result.stdout),
                             (STDOUT if self.tty else STDERR, result.stderr)):
            if data:
                yield stream, data

    async def write_stdin(self, data: bytes) -> None:
        if self._ended.is_set():
            raise RuntimeFailure("stdin is closed")
        self.stdin += data

    async def close_stdin(self) -> None:
        if self._ended.is_set():
            return
        behaviour = self.behaviour
        self._result = behaviour if isinstance(behaviour, ExecResult) \
            else behaviour(self.command, bytes(self.stdin))
        self._ended.set()

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    async def wait(self) -> int:
        await self._ended.wait()
        return self._result.exit_code if self._result is not None else SIGKILL_EXIT_CODE

    async def close(self) -> None:
        self.closed = True
        self._ended.set()


class FakeAttachSession:
    """Attached to a fake container: what is written from now on, until it exits."""

    def __init__(self, runtime: FakeRuntime, container_id: str, start: int) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self._start = start
        self.resizes: list[tuple[int, int]] = []
        self.closed = False

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        async for entry in self.runtime._follow(self.container_id, self._start):
            yield entry.stream, entry.data

    async def write_stdin(self, data: bytes) -> None:
        self.runtime.attached_stdin[self.container_id] = \
            self.runtime.attached_stdin.get(self.container_id, b"") + data

    async def close_stdin(self) -> None:
        """The fake main process has no stdin to end."""

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    async def wait(self) -> int:
        while True:
            container = self.runtime._container(self.container_id)
            if container.state is ContainerState.EXITED and container.exit_code is not None:
                return container.exit_code
            await asyncio.sleep(FOLLOW_POLL_S)
            self.runtime._settle()

    async def close(self) -> None:
        self.closed = True


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()
