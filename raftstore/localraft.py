"""A throwaway local RaftStore cluster: member processes on loopback, for HA tests and benchmarks.

A benchmark may run some members in its own process (``start(in_process=...)`` and
``member_config``), as a controller embeds its member.

Each member is ``python -m raftstore.member`` with its own data dir under one temporary
directory, a peer port and an etcd v3 JSON client port; ``EtcdStore(cluster.endpoints)`` talks
to it. Faults are injected by index: ``kill`` (SIGKILL), ``restart`` (same data dir), ``pause``
and ``resume`` (SIGSTOP/SIGCONT). ``stop`` kills everything and removes the data.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftstore.durability import FsyncPolicy
from raftstore.gateway import member_id_of
from raftstore.localprocess import LOOPBACK, MemberProcess, free_ports, post_json, track, untrack
from raftstore.raft import RaftConfig

log = logging.getLogger(__name__)


class RaftClusterError(RuntimeError):
    """A member exited or the cluster did not elect a leader in time (with log tails)."""


@dataclass
class _Member(MemberProcess):
    index: int = 0
    peer: str = ""  # host:port of Raft traffic


class RaftCluster:
    def __init__(
        self,
        size: int = 3,
        *,
        secret: str | None = None,
        fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
        heartbeat: float = 0.1,
        election_timeout: tuple[float, float] = (0.5, 1.0),
        base_dir: str | None = None,
        start_timeout: float = 30.0,
        progress_notify_interval: float | None = None,
    ) -> None:
        self.size = size
        self.secret = secret or secrets.token_hex(16)
        self.fsync = fsync
        self.heartbeat = heartbeat
        self.election_timeout = election_timeout
        self._base_dir = base_dir
        self._start_timeout = start_timeout
        self._progress_notify_interval = progress_notify_interval
        self._root: str | None = None
        self._members: list[_Member] = []
        self._in_process: set[int] = set()

    def start(self, *, in_process: tuple[int, ...] = ()) -> RaftCluster:
        """Spawn the members, except those in ``in_process``: the caller runs those itself
        with ``RaftStore.open(cluster.member_config(i))`` and must do so before waiting."""
        self._in_process = set(in_process)
        self._root = tempfile.mkdtemp(prefix="corral-raft-", dir=self._base_dir)
        track(self)
        ports = free_ports(2 * self.size)
        self._members = [
            _Member(name=f"m{i}", data_dir=os.path.join(self._root, f"m{i}"),
                    client_port=ports[2 * i + 1], index=i, peer=f"{LOOPBACK}:{ports[2 * i]}")
            for i in range(self.size)
        ]
        with open(self.secret_file, "w") as f:
            f.write(self.secret)
        try:
            for m in self._members:
                if m.index not in self._in_process:
                    m.spawn(self.command(m.index))
            if not self._in_process:
                self.wait_leader()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ raises
            raise
        return self

    def member_config(self, i: int) -> RaftConfig:
        """The settings member ``i`` runs with, for running it in this process."""
        m = self._members[i]
        return RaftConfig(
            address=m.peer,
            peers=[p.peer for p in self._members if p is not m],
            data_dir=Path(m.data_dir),
            secret=self.secret,
            fsync=self.fsync,
            heartbeat=self.heartbeat,
            election_timeout=self.election_timeout,
        )

    @property
    def secret_file(self) -> str:
        assert self._root is not None
        return os.path.join(self._root, "secret")

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self._members]

    @property
    def peers(self) -> list[str]:
        return [m.peer for m in self._members]

    def command(self, i: int, *, secret_file: str | None = None) -> list[str]:
        m = self._members[i]
        return [
            sys.executable, "-m", "raftstore.member",
            "--listen-peer", m.peer,
            "--peers", ",".join(p.peer for p in self._members if p is not m),
            "--listen-client", f"{LOOPBACK}:{m.client_port}",
            "--data-dir", m.data_dir,
            "--secret-file", secret_file or self.secret_file,
            "--fsync", self.fsync.value,
            "--heartbeat", str(self.heartbeat),
            "--election-timeout", *(str(t) for t in self.election_timeout),
        ] + (
            ["--watch-progress-notify-interval", str(self._progress_notify_interval)]
            if self._progress_notify_interval is not None else []
        )  # fmt: skip

    # -- faults -------------------------------------------------------------------------------

    def kill(self, i: int) -> None:
        self._members[i].kill()

    def restart(self, i: int, *, secret_file: str | None = None) -> None:
        """Start member ``i`` again on its data dir; returns before it has joined."""
        self.kill(i)
        self._members[i].spawn(self.command(i, secret_file=secret_file))

    def pause(self, i: int) -> None:
        self._members[i].signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._members[i].signal(signal.SIGCONT)

    def is_running(self, i: int) -> bool:
        return self._members[i].running

    def pid(self, i: int) -> int | None:
        proc = self._members[i].process
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- observation ----------------------------------------------------------------------------

    def status(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        m = self._members[i]
        if not m.running:
            return None
        try:
            return post_json(m.client_url + "/v3/maintenance/status", {}, timeout)
        except (OSError, ValueError):
            return None

    def leader_index(self) -> int | None:
        """The member that a running member names as leader (and that runs), or None."""
        ids = {member_id_of(m.peer): m.index for m in self._members}
        for i in range(self.size):
            status = self.status(i)
            leader = ids.get(int(status.get("leader", 0))) if status else None
            if leader is not None and (
                self._members[leader].running or leader in self._in_process
            ):
                return leader
        return None

    def wait_leader(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or self._start_timeout)
        while time.monotonic() < deadline:
            for m in self._members:
                if m.process is not None and m.process.poll() not in (None, -9):
                    raise RaftClusterError(
                        f"member {m.index} exited with {m.process.returncode}:\n{m.log_tail()}"
                    )
            leader = self.leader_index()
            if leader is not None:
                return leader
            time.sleep(0.05)
        tails = "\n".join(f"--- m{m.index}\n{m.log_tail()}" for m in self._members)
        raise RaftClusterError(f"no leader after {timeout or self._start_timeout}s\n{tails}")

    def digest(self, i: int) -> tuple[int, str]:
        """(revision, state hash) of member ``i``'s local replica."""
        with urllib.request.urlopen(
            self._members[i].client_url + "/corral/v1/digest", timeout=2.0
        ) as response:
            body = json.loads(response.read())
        return int(body["revision"]), str(body["digest"])

    def log_tail(self, i: int) -> str:
        return self._members[i].log_tail()

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        for i in range(len(self._members)):
            self.kill(i)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._members = []
        untrack(self)

    def __enter__(self) -> RaftCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
