"""What local test clusters (localetcd, localraft) share: member processes on loopback.

A ``MemberProcess`` is one server process with a data dir, a log file beside it and a client
port; it can be spawned, signalled and SIGKILLed, and shows the useful part of its log when it
fails. ``track`` makes sure clusters still running when the interpreter exits are stopped, so a
crashed test run leaves no servers behind.
"""

from __future__ import annotations

import atexit
import json
import signal
import socket
import subprocess
import urllib.request
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (the members bind next)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def post_json(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@dataclass
class MemberProcess:
    name: str
    data_dir: str
    client_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def log_path(self) -> str:
        return self.data_dir + ".log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, command: list[str]) -> None:
        # The child keeps its own copy of the log's file descriptor; ours closes at once.
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (no clean shutdown: what a crash or power loss looks like)."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)  # a paused member dies too
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The log's first and last lines: servers state bad flags first, fatal errors last."""
        try:
            with open(self.log_path, errors="replace") as f:
                text = f.readlines()
        except OSError:
            return "(no log)"
        if len(text) <= lines + 3:
            return "".join(text)
        return "".join([*text[:3], "...\n", *text[-lines:]])


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()


def track(cluster: _Stoppable) -> None:
    _live.add(cluster)


def untrack(cluster: _Stoppable) -> None:
    _live.discard(cluster)


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_live):
        cluster.stop()
