"""ProcessRuntime: the Runtime for hosts without Docker; containers are host processes.

Nothing is isolated. The image is a name only: nothing is pulled or unpacked, and the command
runs from the host's filesystem, so ``image_present`` is true for any image and ``pull_image``
returns a stable id (``sha256:`` and the SHA-256 of the name). A container's command is its
Kubernetes ``command`` + ``args`` (an image has no ENTRYPOINT to fall back on: no command is a
CreateContainerError). Pods share the host's network (there is no pod network here): every
sandbox's IP, ready or not, is ``host_ip`` and container ports are host ports; hostname, DNS,
mounts and cpu/memory limits are not applied (mounts are logged and ignored). Time of creation
comes from ``clock``; start and finish times are the supervisor's wall clock, as Docker's times
are Docker's.

All state lives in files under ``state_dir``, so a fresh ProcessRuntime over the same directory
(the agent restarted) sees what the last one left, running or not:

- ``sandboxes/<id>/sandbox.json``: the pod's identity, labels, creation time, ready or not.
  A sandbox is only a directory: it is also the working directory of its containers that set
  none.
- ``containers/<id>/config.json`` (written once, at creation): labels, argv, env, working
  directory, sandbox, stdin. ``state.json`` (written by the supervisor): pids, start time, and
  at the end exit code and finish time. ``log``: stdout and stderr in CRI's log format, one
  entry a line (``2016-10-06T00:17:09.669794202Z stdout F text``; ``P`` marks a piece of a line
  longer than ``MAX_LOG_LINE``). ``stdin``: a FIFO, when the container keeps stdin open.

In the order the code appears:

1. The supervisor, this module's ``__main__`` (``python -m nodeagent.runtime.process supervise
   <dir>``), so that a container outlives the agent: started in a session of its own, it forks
   (the agent only waits for the first half, which reports whether the command started); the
   second half runs the command in yet another session (its process group is what stop
   signals), timestamps its output lines into ``log``, and when the command ends kills what it
   left in its process group (as a container's PID namespace ends with its init), reads the
   pipes dry and records the exit code (128 + n for a signal n: 137 for SIGKILL) and time.
   A process is known by its pid *and* its start time in ``/proc/<pid>/stat`` (and the boot
   id), so a reused pid is never taken for it.
2. ProcessRuntime: sandboxes and containers on those files. A container is running while its
   process or supervisor lives and no exit is recorded; when both are gone without one (killed
   from outside, the host rebooted) it is UNKNOWN, and stopping it records exit code 255.
   stop_container is SIGTERM to the process group, SIGKILL after ``timeout`` (at once for 0).
3. Logs (``container_logs``, and ``attach``, which follows the log from now): the log file read
   and, to follow, polled every ``FOLLOW_POLL_S`` until the container has ended and all is read.
4. ``exec``: a host process with the container's environment and working directory, in a
   session of its own, with pipes or a pseudo-terminal. It is not tied to the container: it
   does not end when the container stops.

``attach`` with stdin writes into the container's FIFO, which the process holds open for
reading and writing: its stdin never ends, whoever attaches and leaves (stdinOnce is not
supported). Containers get no TTY: ``tty`` only makes all of attach's output STDOUT.

The agent must not take its containers down when it stops: under systemd, ``KillMode=process``.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import pty
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nodeagent.runtime.base import (
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
    LogOptions,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)

log = logging.getLogger(__name__)

SANDBOX_FILE = "sandbox.json"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
LOG_FILE = "log"
STDIN_FIFO = "stdin"
#: The supervisor: this module, run with ``supervise <container dir>``.
SUPERVISOR_MODULE = "nodeagent.runtime.process"
#: Where the supervisor's own stdout and stderr go (its tracebacks, should it fail).
SUPERVISOR_LOG_FILE = "supervisor.log"

#: PATH of a container whose env sets none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: A log line longer than this is written in pieces tagged P (CRI's partial lines).
MAX_LOG_LINE = 16 * 1024
#: Seconds between the supervisor's checks for its command's exit.
SUPERVISOR_POLL_S = 0.05
#: Seconds the supervisor keeps reading the pipes after its command exited.
DRAIN_S = 1.0
#: Seconds between reads of a log that is followed, and between checks of a stopping container.
FOLLOW_POLL_S = 0.1
STOP_POLL_S = 0.05
#: Seconds a container gets to be reported exited after SIGKILL.
KILL_WAIT_S = 10.0
#: The exit code of a container whose exit status was lost with its supervisor (containerd's).
LOST_EXIT_CODE = 255
LOST_MESSAGE = "the process and its supervisor are gone; the exit status is lost"

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


# -- files and processes -----------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | None:
    """The file's object, or None when it is absent (removed meanwhile) or half-written."""
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically: a reader sees the old object or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of live process ``pid``; None when it is gone
    or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(state: Mapping[str, Any], key: str) -> bool:
    """Whether the process recorded under ``key`` (``pid`` or ``supervisor``) still runs."""
    pid, start = state.get(key), state.get(f"{key}_start")
    return (pid is not None and state.get("boot_id") == _boot_id()
            and _proc_start(int(pid)) == start)


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


def _rfc3339_nano(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def _exec_error(argv0: str, error: OSError) -> str:
    """Docker's words for a command that could not start."""
    if isinstance(error, FileNotFoundError) and "/" not in argv0:
        return f'exec: "{argv0}": executable file not found in $PATH'
    return f'exec: "{argv0}": {(error.strerror or str(error)).lower()}'


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


# -- 1. the supervisor -------------------------------------------------------------------------

def supervise(directory: Path) -> int:
    """Start the container in ``directory`` and leave a process behind that sees it to its end.
    Returns this (first) process's exit code: 0 when the command started, 1 when not (the
    reason on stderr)."""
    config = json.loads((directory / CONFIG_FILE).read_text())
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as report:
            error = report.read().decode()
        if error:
            sys.stderr.write(error + "\n")
        return 1 if error else 0
    os.close(read_end)
    output = os.open(directory / SUPERVISOR_LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for fd in (1, 2):
        os.dup2(output, fd)
    os.close(output)
    try:
        process = _spawn(config, directory)
    except _StartError as e:
        error = str(e)
    except OSError as e:
        error = _exec_error(config["command"][0], e)
    else:
        error = ""
    if error:
        _write_json(directory / STATE_FILE, {"error": error})
        os.write(write_end, error.encode())
        os._exit(1)
    _write_json(directory / STATE_FILE, {
        "pid": process.pid, "pid_start": _proc_start(process.pid),
        "supervisor": os.getpid(), "supervisor_start": _proc_start(os.getpid()),
        "boot_id": _boot_id(), "started_at": time.time()})
    os.close(write_end)  # the first half reads EOF: started
    _pump(process, directory)
    os._exit(0)


class _StartError(Exception):
    """The command cannot start, for a reason of ours (not the OS's)."""


def _spawn(config: Mapping[str, Any], directory: Path) -> subprocess.Popen[bytes]:
    cwd = config["cwd"]
    if not os.path.isdir(cwd):
        raise _StartError(f'working directory "{cwd}" is not a directory')
    env = dict(config["env"])
    env.setdefault("PATH", DEFAULT_PATH)
    stdin = os.open(directory / STDIN_FIFO if config["stdin"] else os.devnull, os.O_RDWR)
    try:
        return subprocess.Popen(config["command"], env=env, cwd=cwd, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    finally:
        os.close(stdin)


def _pump(process: subprocess.Popen[bytes], directory: Path) -> None:
    """Copy the command's output into the log until it has ended, then record its exit."""
    assert process.stdout is not None and process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    pending = {"stdout": b"", "stderr": b""}
    wait_status: int | None = None
    drain_until = 0.0
    with open(directory / LOG_FILE, "ab", buffering=0) as out:
        while selector.get_map():
            for key, _ in selector.select(SUPERVISOR_POLL_S):
                stream = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                pending[stream] = _write_log(out, stream, pending[stream] + data, final=not data)
            if wait_status is None:
                pid, status = os.waitpid(process.pid, os.WNOHANG)
                if pid:
                    wait_status, drain_until = status, time.monotonic() + DRAIN_S
                    _kill_group(process.pid)  # what it left behind may hold the pipes
            elif time.monotonic() > drain_until:
                break  # something escaped the group and holds the pipes: enough
        for stream, rest in pending.items():
            _write_log(out, stream, rest, final=True)
    if wait_status is None:  # the command closed its output and runs on
        wait_status = os.waitpid(process.pid, 0)[1]
        _kill_group(process.pid)
    state = _read_json(directory / STATE_FILE) or {}
    _write_json(directory / STATE_FILE, {**state, "exit_code": _exit_code(wait_status),
                                         "finished_at": time.time()})


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (nothing, usually)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _write_log(out: BinaryIO, stream: str, data: bytes, *, final: bool) -> bytes:
    """Write ``data``'s complete lines as CRI log entries; returns the incomplete rest (written
    too when ``final``, or in ``MAX_LOG_LINE`` pieces when it grows that long)."""
    *lines, rest = data.split(b"\n")
    stamp = _rfc3339_nano(time.time_ns()).encode()
    entries = [b"%s %s F %s\n" % (stamp, stream.encode(), line) for line in lines]
    while len(rest) >= MAX_LOG_LINE:
        entries.append(b"%s %s P %s\n" % (stamp, stream.encode(), rest[:MAX_LOG_LINE]))
        rest = rest[MAX_LOG_LINE:]
    if final and rest:
        entries.append(b"%s %s F %s\n" % (stamp, stream.encode(), rest))
        rest = b""
    if entries:
        out.write(b"".join(entries))
    return rest


# -- 2. the runtime ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    """One line of a CRI log."""
    timestamp: str
    stream: str
    partial: bool
    content: bytes

    @classmethod
    def parse(cls, line: bytes) -> _Entry:
        stamp, stream, tag, content = (line.split(b" ", 3) + [b"", b"", b""])[:4]
        return cls(stamp.decode(), stream.decode(), tag == b"P", content)

    def render(self, timestamps: bool) -> bytes:
        text = self.content if self.partial else self.content + b"\n"
        return self.timestamp.encode() + b" " + text if timestamps else text


class ProcessRuntime:
    """The ``Runtime`` on host processes, its state under ``state_dir``."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time,
                 host_ip: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.host_ip = host_ip
        self._sandboxes = self.state_dir / "sandboxes"
        self._containers = self.state_dir / "containers"
        self._sandboxes.mkdir(parents=True, exist_ok=True)
        self._containers.mkdir(parents=True, exist_ok=True)

    # sandboxes

    async def run_sandbox(self, config: SandboxConfig) -> str:
        sandbox_id = uuid.uuid4().hex
        directory = self._sandboxes / sandbox_id
        directory.mkdir()
        _write_json(directory / SANDBOX_FILE, {
            "id": sandbox_id, "pod_uid": config.pod_uid, "namespace": config.namespace,
            "name": config.name, "hostname": config.hostname, "created_at": self.clock(),
            "state": SandboxState.READY.value,
            "labels": {**config.labels, LABEL_POD_UID: config.pod_uid, LABEL_MANAGED: "true"}})
        log.debug("sandbox %s for pod %s/%s", sandbox_id, config.namespace, config.name)
        return sandbox_id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        await asyncio.gather(*(self.stop_container(c.id, 0)
                               for c in await self.list_containers(sandbox_id)
                               if c.state in (ContainerState.RUNNING, ContainerState.UNKNOWN)))
        _write_json(self._sandboxes / sandbox_id / SANDBOX_FILE,
                    {**sandbox, "state": SandboxState.NOTREADY.value})

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self._sandbox(sandbox_id)
        for c in await self.list_containers(sandbox_id):
            try:
                await self.remove_container(c.id)
            except NotFound:
                pass  # removed meanwhile
        shutil.rmtree(self._sandboxes / sandbox_id, ignore_errors=True)

    async def list_sandboxes(self, labels: Mapping[str, str] | None = None
                             ) -> list[SandboxStatus]:
        found = []
        for directory in self._sandboxes.iterdir():
            sandbox = _read_json(directory / SANDBOX_FILE)
            if sandbox is not None and _matches(sandbox["labels"], labels):
                found.append(SandboxStatus(
                    id=sandbox["id"], pod_uid=sandbox["pod_uid"],
                    state=SandboxState(sandbox["state"]), ip=self.host_ip,
                    created_at=sandbox["created_at"], labels=sandbox["labels"]))
        return sorted(found, key=lambda s: (s.created_at, s.id))

    # containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sandbox = self._sandbox(sandbox_id)
        if sandbox["state"] != SandboxState.READY.value:
            raise CreateContainerError(f"sandbox {sandbox_id} is not ready")
        argv = [*config.command, *config.args]
        if not argv:
            raise CreateContainerError(
                "ProcessRuntime needs a command: images are not unpacked")
        if config.mounts:
            log.warning("container %s: mounts are not applied by ProcessRuntime: %s",
                        config.name, ", ".join(m.container_path for m in config.mounts))
        container_id = uuid.uuid4().hex
        directory = self._containers / container_id
        directory.mkdir()
        (directory / LOG_FILE).touch()
        if config.stdin:
            os.mkfifo(directory / STDIN_FIFO)
        _write_json(directory / CONFIG_FILE, {
            "id": container_id, "sandbox_id": sandbox_id, "name": config.name,
            "image": config.image, "command": argv, "env": [list(e) for e in config.env],
            "cwd": config.working_dir or str(self._sandboxes / sandbox_id),
            "stdin": config.stdin, "created_at": self.clock(),
            "labels": {**config.labels, LABEL_CONTAINER_NAME: config.name,
                       LABEL_MANAGED: "true"}})
        return container_id

    async def start_container(self, container_id: str) -> None:
        current = self._status(container_id)
        if current.state is not ContainerState.CREATED:
            raise CreateContainerError(f"container {container_id} is {current.state}")
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        first_half = await asyncio.create_subprocess_exec(
            sys.executable, "-m", SUPERVISOR_MODULE, "supervise",
            str(self._containers / container_id), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd="/",
            start_new_session=True)
        _, stderr = await first_half.communicate()
        if first_half.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            raise CreateContainerError(lines[-1])

    async def stop_container(self, container_id: str, timeout: float) -> None:
        current = self._status(container_id)
        if current.state is ContainerState.UNKNOWN:
            directory = self._containers / container_id
            state = _read_json(directory / STATE_FILE) or {}
            _write_json(directory / STATE_FILE, {**state, "exit_code": LOST_EXIT_CODE,
                                                 "finished_at": self.clock(),
                                                 "message": LOST_MESSAGE})
            return
        if current.state is not ContainerState.RUNNING:
            return
        if timeout > 0:
            self._signal(container_id, signal.SIGTERM)
            if await self._wait_stopped(container_id, timeout):
                return
        self._signal(container_id, signal.SIGKILL)
        if not await self._wait_stopped(container_id, KILL_WAIT_S):
            raise RuntimeFailure(f"container {container_id} did not exit after SIGKILL")

    async def remove_container(self, container_id: str) -> None:
        await self.stop_container(container_id, 0)
        shutil.rmtree(self._containers / container_id, ignore_errors=True)

    async def list_containers(self, sandbox_id: str | None = None,
                              labels: Mapping[str, str] | None = None
                              ) -> list[ContainerStatus]:
        found = []
        for directory in self._containers.iterdir():
            try:
                c = self._status(directory.name)
            except NotFound:
                continue  # removed meanwhile
            if (sandbox_id is None or c.sandbox_id == sandbox_id) and _matches(c.labels, labels):
                found.append(c)
        return sorted(found, key=lambda c: (c.created_at, c.id))

    # images

    async def pull_image(self, image: str) -> str:
        return _image_id(image)

    async def image_present(self, image: str) -> bool:
        return True

    # internals

    def _sandbox(self, sandbox_id: str) -> dict[str, Any]:
        sandbox = _read_json(self._sandboxes / sandbox_id / SANDBOX_FILE) \
            if _is_id(sandbox_id) else None
        if sandbox is None:
            raise NotFound(f"no sandbox {sandbox_id}")
        return sandbox

    def _config(self, container_id: str) -> dict[str, Any]:
        config = _read_json(self._containers / container_id / CONFIG_FILE) \
            if _is_id(container_id) else None
        if config is None:
            raise NotFound(f"no container {container_id}")
        return config

    def _status(self, container_id: str) -> ContainerStatus:
        config = self._config(container_id)
        state_file = self._containers / container_id / STATE_FILE
        state = _read_json(state_file) or {}
        if "pid" not in state:
            status = ContainerState.CREATED
        elif "exit_code" in state:
            status = ContainerState.EXITED
        elif _alive(state, "pid") or _alive(state, "supervisor"):
            status = ContainerState.RUNNING
        else:  # both gone: read again, the supervisor may have recorded the exit meanwhile
            state = _read_json(state_file) or {}
            status = ContainerState.EXITED if "exit_code" in state else ContainerState.UNKNOWN
        exit_code = state.get("exit_code")
        message = LOST_MESSAGE if status is ContainerState.UNKNOWN \
            else state.get("error") or state.get("message", "")
        return ContainerStatus(
            id=container_id, sandbox_id=config["sandbox_id"], name=config["name"],
            image=config["image"], image_id=_image_id(config["image"]), state=status,
            created_at=config["created_at"], exit_code=exit_code,
            reason=_exit_reason(exit_code) if exit_code is not None else "", message=message,
            started_at=state.get("started_at"), finished_at=state.get("finished_at"),
            labels=config["labels"])

    def _signal(self, container_id: str, signum: signal.Signals) -> None:
        """Signal the container's process group, if its leader is still the process we
        started."""
        state = _read_json(self._containers / container_id / STATE_FILE) or {}
        if _alive(state, "pid"):
            try:
                os.killpg(int(state["pid"]), signum)
            except ProcessLookupError:
                pass

    async def _wait_stopped(self, container_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._status(container_id).state is ContainerState.RUNNING:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(STOP_POLL_S)
        return True

    def _ended(self, container_id: str) -> bool:
        """Whether the container has run and ended (or is gone): its log will not grow."""
        try:
            state = self._status(container_id).state
        except NotFound:
            return True
        return state in (ContainerState.EXITED, ContainerState.UNKNOWN)

    # -- 3. logs and attach --------------------------------------------------------------------

    async def container_logs(self, container_id: str, options: LogOptions
                             ) -> AsyncIterator[bytes]:
        self._config(container_id)
        path = self._containers / container_id / LOG_FILE
        data = await asyncio.to_thread(_read_from, path, 0)
        complete = data[:data.rfind(b"\n") + 1]
        since = _rfc3339_nano(int(options.since * 1e9)) if options.since is not None else ""
        entries = [e for e in map(_Entry.parse, complete.splitlines()) if e.timestamp >= since]
        if options.tail is not None:
            entries = entries[len(entries) - options.tail:] if options.tail > 0 else []
        if entries:
            yield b"".join(e.render(options.timestamps) for e in entries)
        if options.follow:
            async for entry in self._follow(container_id, len(complete), lambda: False):
                if entry.timestamp >= since:
                    yield entry.render(options.timestamps)

    async def _follow(self, container_id: str, offset: int, stop: Callable[[], bool]
                      ) -> AsyncIterator[_Entry]:
        """The log's entries from byte ``offset`` on, as they are written, until the container
        has ended and all is read (or ``stop()``)."""
        path = self._containers / container_id / LOG_FILE
        pending = b""
        while True:
            ended = self._ended(container_id) or stop()
            data = await asyncio.to_thread(_read_from, path, offset)
            offset += len(data)
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                yield _Entry.parse(line)
            if ended:
                return
            if not data:
                await asyncio.sleep(FOLLOW_POLL_S)

    async def attach(self, container_id: str, *, stdin: bool = False,
                     tty: bool = False) -> ExecSession:
        config = self._config(container_id)
        if self._status(container_id).state is not ContainerState.RUNNING:
            raise RuntimeFailure(f"container {container_id} is not running")
        directory = self._containers / container_id
        fifo: int | None = None
        if stdin:
            if not config["stdin"]:
                raise RuntimeFailure(f"container {config['name']} was not created with stdin")
            try:
                fifo = os.open(directory / STDIN_FIFO, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                raise RuntimeFailure(f"container {config['name']}: stdin: {e.strerror}") \
                    from None
            os.set_blocking(fifo, True)
        offset = (directory / LOG_FILE).stat().st_size
        return _AttachSession(self, container_id, offset, fifo, tty)

    # -- 4. exec -------------------------------------------------------------------------------

    async def exec(self, container_id: str, command: Sequence[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        config = self._config(container_id)
        if self._status(container_id).state is not ContainerState.RUNNING:
            raise RuntimeFailure(f"container {container_id} is not running")
        if not command:
            raise RuntimeFailure("exec needs a command")
        env = dict(config["env"])
        env.setdefault("PATH", DEFAULT_PATH)
        master = slave = None
        if tty:
            master, slave = pty.openpty()
        stdin_arg = (slave if tty else subprocess.PIPE) if stdin else subprocess.DEVNULL
        try:
            process = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=config["cwd"], stdin=stdin_arg,
                stdout=slave if tty else subprocess.PIPE,
                stderr=slave if tty else subprocess.PIPE, start_new_session=True)
        except OSError as e:
            if master is not None:
                os.close(master)
            raise RuntimeFailure(_exec_error(command[0], e)) from None
        finally:
            if slave is not None:
                os.close(slave)
        return _ExecSession(process, master)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    return not wanted or all(labels.get(k) == v for k, v in wanted.items())


def _is_id(name: str) -> bool:
    """Ids are ours (hex): a path-like id never reaches the filesystem."""
    return bool(name) and all(c in "0123456789abcdef" for c in name)


class _ExecSession:
    """An exec'd process: its pipes, or the master side of its pseudo-terminal."""

    def __init__(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        self._process = process
        self._master = master
        self._chunks: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._closed = False
        self._readers: list[asyncio.Task[None]] = []
        if master is not None:
            os.set_blocking(master, False)
            asyncio.get_running_loop().add_reader(master, self._read_pty)
            self._open_streams = 1
        else:
            assert process.stdout is not None and process.stderr is not None
            loop = asyncio.get_running_loop()
            self._readers = [
                loop.create_task(self._read_pipe(STDOUT, process.stdout), name="exec stdout"),
                loop.create_task(self._read_pipe(STDERR, process.stderr), name="exec stderr")]
            self._open_streams = 2

    async def _read_pipe(self, stream: int, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(65536):
                self._chunks.put_nowait((stream, chunk))
        finally:
            self._chunks.put_nowait(None)

    def _read_pty(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the terminal's other side is gone
            data = b""
        if data:
            self._chunks.put_nowait((STDOUT, data))
        else:
            asyncio.get_running_loop().remove_reader(self._master)
            self._chunks.put_nowait(None)

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        while self._open_streams:
            item = await self._chunks.get()
            if item is None:
                self._open_streams -= 1
            else:
                yield item

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            return
        if self._process.stdin is None:
            raise RuntimeFailure("exec was started without stdin")
        try:
            self._process.stdin.write(data)
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise RuntimeFailure("the process no longer reads its stdin") from None

    async def close_stdin(self) -> None:
        if self._master is not None:
            await self.write_stdin(b"\x04")  # a terminal's end of input: ^D
        elif self._process.stdin is not None:
            self._process.stdin.close()

    async def resize(self, width: int, height: int) -> None:
        if self._master is not None:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self._process.wait()
        return 128 - code if code < 0 else code

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._process.returncode is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self._process.wait()
        for task in self._readers:
            task.cancel()
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)


class _AttachSession:
    """A container's main process, attached: its log followed from the moment of attaching,
    and its stdin FIFO."""

    def __init__(self, runtime: ProcessRuntime, container_id: str, offset: int,
                 fifo: int | None, tty: bool) -> None:
        self._runtime = runtime
        self._container_id = container_id
        self._offset = offset
        self._fifo = fifo
        self._tty = tty
        self._closed = False

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        async for entry in self._runtime._follow(self._container_id, self._offset,
                                                 lambda: self._closed):
            stream = STDERR if entry.stream == "stderr" and not self._tty else STDOUT
            yield stream, entry.render(timestamps=False)

    async def write_stdin(self, data: bytes) -> None:
        if self._fifo is None:
            raise RuntimeFailure("attached without stdin")
        try:
            await asyncio.to_thread(_write_all, self._fifo, data)
        except OSError as e:
            raise RuntimeFailure(f"stdin: {e.strerror}") from None

    async def close_stdin(self) -> None:
        if self._fifo is not None:
            os.close(self._fifo)
            self._fifo = None

    async def resize(self, width: int, height: int) -> None:
        """Containers have no TTY: nothing to resize."""

    async def wait(self) -> int:
        while True:
            status = self._runtime._status(self._container_id)
            if status.state is ContainerState.EXITED and status.exit_code is not None:
                return status.exit_code
            if status.state is ContainerState.UNKNOWN:
                raise RuntimeFailure(status.message)
            await asyncio.sleep(FOLLOW_POLL_S)

    async def close(self) -> None:
        self._closed = True
        await self.close_stdin()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "supervise":
        sys.stderr.write("usage: python -m nodeagent.runtime.process supervise <container dir>\n")
        return 2
    return supervise(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
