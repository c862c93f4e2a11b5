"""A throwaway local etcd cluster: the reference that ``EtcdStore`` is tested and benchmarked on.

``EtcdCluster(size)`` runs 1 or 3 members of the etcd binary (Debian's ``etcd-server``, 3.4) on
free loopback ports, each with a data dir under one temporary directory, and waits until every
member reports ``/health`` (which in 3.4 needs a leader and a quorum read). Tests then kill and
restart members by index to exercise failover; ``stop()`` kills everything and removes the data.

The flow below: locating the binary, picking ports, the member command line, starting and health
checks, fault injection (``kill``/``restart``/``leader_index``), and the context-manager glue.
Every call is synchronous (subprocess + blocking loopback HTTP) so one cluster can outlive many
event loops (pytest gives each test its own); the async context manager runs the same code in a
worker thread so it does not stall a running loop.

Durability is etcd's default (fsync on every commit) because this cluster is the yardstick for
RaftStore; pass ``base_dir="/dev/shm"`` only when comparing against a backend that also skips the
disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from types import TracebackType

from raftstore.localprocess import LOOPBACK, MemberProcess, free_ports, post_json, track, untrack

log = logging.getLogger(__name__)

ETCD_BINARY_ENV = "CORRAL_ETCD_BINARY"
DEFAULT_ETCD_BINARY = "/usr/bin/etcd"
START_TIMEOUT_S = 30.0
HEALTH_POLL_S = 0.05
HTTP_PROBE_TIMEOUT_S = 1.0
PORT_CLASH_RETRIES = 3

class EtcdNotFound(RuntimeError):
    """The etcd binary is not installed where we looked."""


class EtcdStartError(RuntimeError):
    """A member exited or never became healthy; the message carries its log tail."""


def find_etcd_binary(binary: str | None = None) -> str:
    """The etcd executable: ``binary``, else $CORRAL_ETCD_BINARY, else PATH, else /usr/bin/etcd.

    An explicit path (argument or environment) is the only one tried, so a typo is an error
    instead of silently testing some other etcd.
    """
    explicit = binary or os.environ.get(ETCD_BINARY_ENV)
    candidates = [explicit] if explicit else [shutil.which("etcd"), DEFAULT_ETCD_BINARY]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    looked = explicit or f"PATH and {DEFAULT_ETCD_BINARY}"
    raise EtcdNotFound(
        f"etcd binary not found (looked at {looked}); install it (Debian: apt-get install "
        f"etcd-server) or point {ETCD_BINARY_ENV} at an etcd 3.4+ executable"
    )


def etcd_version(binary: str) -> str:
    """"etcd 3.4.23" as ``binary --version`` says, for benchmark reports ("etcd" if it cannot)."""
    try:
        out = subprocess.run(
            [binary, "--version"], check=False, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "etcd"
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return "etcd " + line.split(":", 1)[1].strip()
    return "etcd"


@dataclass
class _Member(MemberProcess):
    peer_port: int = 0

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"


class EtcdCluster:
    """``size`` local etcd members on loopback; see the module docstring.

    ``heartbeat_ms``/``election_ms`` default to etcd's own (100/1000 ms); tests that kill leaders
    lower them so failover fits in a test's time budget. ``progress_notify_interval`` (seconds)
    sets ``--experimental-watch-progress-notify-interval`` (etcd 3.4's default is 10 minutes, far
    too slow to observe watch PROGRESS events in a test).
    """

    def __init__(
        self,
        size: int = 1,
        *,
        binary: str | None = None,
        base_dir: str | None = None,
        heartbeat_ms: int | None = None,
        election_ms: int | None = None,
        progress_notify_interval: float | None = None,
        start_timeout: float = START_TIMEOUT_S,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        self.size = size
        self.binary = find_etcd_binary(binary)
        self._base_dir = base_dir
        self._heartbeat_ms = heartbeat_ms
        self._election_ms = election_ms
        self._progress_notify_interval = progress_notify_interval
        self._start_timeout = start_timeout
        self._extra_args = extra_args
        self._root: str | None = None
        self._token = f"corral-{uuid.uuid4().hex[:12]}"
        self._members: list[_Member] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait until all are healthy; retried on a port clash."""
        if self._members:
            raise RuntimeError("this EtcdCluster is already started")
        self._root = tempfile.mkdtemp(prefix="corral-etcd-", dir=self._base_dir)
        track(self)
        try:
            self._start_members()
        except BaseException:
            self.stop()
            raise
        log.info("etcd cluster of %d up at %s", self.size, ", ".join(self.endpoints))
        return self

    def _start_members(self) -> None:
        for attempt in range(1, PORT_CLASH_RETRIES + 1):
            self._members = self._plan_members(attempt)
            for member in self._members:
                self._spawn(member)
            try:
                self._wait_healthy(range(self.size))
                return
            except EtcdStartError as exc:
                clash = any("address already in use" in m.log_tail() for m in self._members)
                if not clash or attempt == PORT_CLASH_RETRIES:
                    raise
                log.warning("etcd port clash, retrying with other ports: %s", exc)
                self._kill_all()

    def stop(self) -> None:
        """SIGKILL every member and delete the data dirs. Idempotent."""
        self._kill_all()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._members = []
        untrack(self)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs, one per member, in member order (also of killed members)."""
        return [m.client_url for m in self._members]

    @property
    def peer_urls(self) -> list[str]:
        return [m.peer_url for m in self._members]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members]

    # -- fault injection --------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (no clean shutdown: what a crash or power loss looks like)."""
        self._members[i].kill()

    def restart(self, i: int) -> None:
        """Start member ``i`` again on its data dir (killing it first if it still runs)."""
        self.kill(i)
        self._spawn(self._members[i])
        self._wait_healthy([i])

    def is_running(self, i: int) -> bool:
        return self._members[i].running

    def leader_index(self) -> int | None:
        """Index of the member the running members agree is leader, or None."""
        ids: dict[int, int] = {}
        leaders: list[int] = []
        for i, member in enumerate(self._members):
            if not member.running:
                continue
            try:
                status = post_json(
                    member.client_url + "/v3/maintenance/status", {}, HTTP_PROBE_TIMEOUT_S
                )
            except (OSError, ValueError):
                continue
            ids[int(status["header"]["member_id"])] = i
            if int(status.get("leader", 0)):
                leaders.append(int(status["leader"]))
        for leader in leaders:
            if leader in ids:
                return ids[leader]
        return None

    # -- context managers -------------------------------------------------------------------

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EtcdCluster:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- internals --------------------------------------------------------------------------

    def _plan_members(self, attempt: int) -> list[_Member]:
        assert self._root is not None
        ports = free_ports(2 * self.size)
        members = []
        for i in range(self.size):
            data_dir = os.path.join(self._root, f"attempt{attempt}", f"m{i}")
            os.makedirs(os.path.dirname(data_dir), exist_ok=True)
            members.append(
                _Member(
                    name=f"m{i}",
                    client_port=ports[2 * i],
                    peer_port=ports[2 * i + 1],
                    data_dir=data_dir,
                )
            )
        return members

    def _command(self, member: _Member) -> list[str]:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        cmd = [
            self.binary,
            "--name", member.name,
            "--data-dir", member.data_dir,
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", "warn",
        ]  # fmt: skip
        if self._heartbeat_ms is not None:
            cmd += ["--heartbeat-interval", str(self._heartbeat_ms)]
        if self._election_ms is not None:
            cmd += ["--election-timeout", str(self._election_ms)]
        if self._progress_notify_interval is not None:
            interval_ms = max(1, round(self._progress_notify_interval * 1000))
            cmd += ["--experimental-watch-progress-notify-interval", f"{interval_ms}ms"]
        return cmd + list(self._extra_args)

    def _spawn(self, member: _Member) -> None:
        # On restart etcd ignores the --initial-* flags because the data dir already exists.
        member.spawn(self._command(member))
        log.debug("started etcd %s", member.name)

    def _wait_healthy(self, indices: range | list[int]) -> None:
        deadline = time.monotonic() + self._start_timeout
        pending = set(indices)
        while pending:
            for i in sorted(pending):
                member = self._members[i]
                if not member.running:
                    raise EtcdStartError(
                        f"etcd member {member.name} exited while starting; log tail:\n"
                        + member.log_tail()
                    )
                if self._healthy(member):
                    pending.discard(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {self._members[i].name}\n{self._members[i].log_tail()}"
                    for i in sorted(pending)
                )
                raise EtcdStartError(
                    f"etcd members {sorted(pending)} not healthy after "
                    f"{self._start_timeout:.0f}s; log tails:\n{tails}"
                )
            time.sleep(HEALTH_POLL_S)

    @staticmethod
    def _healthy(member: _Member) -> bool:
        try:
            with urllib.request.urlopen(
                member.client_url + "/health", timeout=HTTP_PROBE_TIMEOUT_S
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _kill_all(self) -> None:
        for i in range(len(self._members)):
            self.kill(i)
