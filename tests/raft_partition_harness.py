"""Three RaftStore member processes in one network namespace, a write load, and the leader
paused (SIGSTOP) or cut off (iptables) again and again; then: do all replicas converge?

Run it as root inside a namespace of its own (``tests/test_raft_partition.py`` does)::

    ip netns add rpX && ip -n rpX link set lo up
    ip netns exec rpX python tests/raft_partition_harness.py --faults pause,partition

Each member listens on its own loopback address (127.0.0.11, .12, .13) and binds its outgoing
Raft connections to that address too (pysyncobj binds its server to 0.0.0.0, hence one port
each as well) (``member`` mode patches ``socket.connect`` before running
``raftstore.member``), so every packet names both members by IP and a partition is one
``iptables -s A -d B -j DROP`` rule per direction, whichever side opened the connection. A
partition drops, at the leader, what arrives from the others (what the lab's ``partition-leader``
scenario does); ``--two-way`` also drops what arrives at the others from the leader.

Prints one JSON object: the fault timeline, each member's (revision, digest) at the end, whether
they converged and how long that took, and the CRITICAL lines of the members' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_PORT = 2380
CLIENT_PORT = 2379


def member_ip(i: int) -> str:
    return f"127.0.0.{11 + i}"


def _member(argv: list[str]) -> int:
    """Run raftstore.member with outgoing connections bound to the --listen-peer address."""
    own = argv[argv.index("--listen-peer") + 1].rpartition(":")[0]
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex

    def bind_first(sock: socket.socket) -> None:
        if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM:
            with contextlib.suppress(OSError):
                if sock.getsockname()[1] == 0:
                    sock.bind((own, 0))

    def patched_connect(self: socket.socket, address: Any) -> None:
        bind_first(self)
        return connect(self, address)

    def patched_connect_ex(self: socket.socket, address: Any) -> int:
        bind_first(self)
        return connect_ex(self, address)

    socket.socket.connect = patched_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = patched_connect_ex  # type: ignore[method-assign]
    if os.environ.get("RP_TRACE"):
        _install_trace()
    from raftstore import member

    return member.main(argv)


def _install_trace() -> None:
    """Log every Raft message a member receives or sends (type and indices), for debugging."""
    import logging

    from pysyncobj import transport

    log = logging.getLogger("rp.trace")

    def brief(message: Any) -> str:
        if not isinstance(message, dict):
            return repr(message)[:40]
        out = {k: v for k, v in message.items() if k not in ("entries", "data", "serialized")}
        entries = message.get("entries")
        if entries:
            out["entries"] = f"{entries[0][1]}..{entries[-1][1]}(t{entries[-1][2]})"
        if "serialized" in message:
            out["serialized"] = message["serialized"] is not None
        return str(out)

    recv = transport.TCPTransport._onMessageReceived
    send = transport.TCPTransport.send

    def on_received(self: Any, node: Any, message: Any) -> None:
        if not (isinstance(message, dict) and message.get("type") == "corral_keepalive"):
            log.warning("RECV %s %s", node, brief(message))
        recv(self, node, message)

    def on_send(self: Any, node: Any, message: Any) -> bool:
        ok = send(self, node, message)
        if not (isinstance(message, dict) and message.get("type") == "corral_keepalive"):
            log.warning("SEND %s ok=%s %s", node, ok, brief(message))
        return ok

    transport.TCPTransport._onMessageReceived = on_received
    transport.TCPTransport.send = on_send

    from pysyncobj import syncobj

    on_tick = syncobj.SyncObj._onTick
    last = [0.0]

    def ticked(self: Any, timeToWait: float = 0.0) -> None:
        on_tick(self, timeToWait)
        if time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            status = self.getStatus()
            log.warning("STATUS %s", {k: (str(v) if not isinstance(v, (int, float, str)) else v)
                                      for k, v in status.items()})

    syncobj.SyncObj._onTick = ticked


class Cluster:
    def __init__(self, root: Path, *, size: int = 3, trace: bool = False) -> None:
        self.root = root
        self.size = size
        self.trace = trace
        self.secret_file = root / "secret"
        self.secret_file.write_text(secrets.token_hex(16))
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.peers = [f"{member_ip(i)}:{PEER_PORT + 10 * i}" for i in range(size)]
        self.urls = [f"http://{member_ip(i)}:{CLIENT_PORT + 10 * i}" for i in range(size)]

    def log_path(self, i: int) -> Path:
        return self.root / f"m{i}.log"

    def start(self, i: int) -> None:
        argv = [
            sys.executable, __file__, "member",
            "--listen-peer", self.peers[i],
            "--peers", ",".join(p for p in self.peers if p != self.peers[i]),
            "--listen-client", f"{member_ip(i)}:{CLIENT_PORT + 10 * i}",
            "--data-dir", str(self.root / f"m{i}"),
            "--secret-file", str(self.secret_file),
            "--fsync", "interval",
        ]
        # RP_BASELINE: a directory holding another raftstore package, to compare with it.
        path = [os.environ["RP_BASELINE"]] if os.environ.get("RP_BASELINE") else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, str(REPO)]))
        if self.trace:
            env["RP_TRACE"] = "1"
        with open(self.log_path(i), "ab") as out:
            self.procs[i] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def signal(self, i: int, sig: signal.Signals) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def _get(self, i: int, path: str, body: dict[str, Any] | None = None,
             timeout: float = 1.0) -> dict[str, Any] | None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.urls[i] + path, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (OSError, ValueError):
            return None

    def digest(self, i: int) -> tuple[int, str] | None:
        body = self._get(i, "/corral/v1/digest")
        return None if body is None else (int(body["revision"]), str(body["digest"]))

    def leader(self) -> int | None:
        from raftstore.gateway import member_id_of

        ids = {member_id_of(p): i for i, p in enumerate(self.peers)}
        votes: dict[int, int] = {}
        for i in range(self.size):
            status = self._get(i, "/v3/maintenance/status", {})
            if status is not None and int(status.get("leader", 0)) in ids:
                leader = ids[int(status["leader"])]
                votes[leader] = votes.get(leader, 0) + 1
        if not votes:
            return None
        leader, count = max(votes.items(), key=lambda kv: kv[1])
        return leader if count * 2 > self.size else None

    def wait_leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise RuntimeError("no leader")

    def critical_lines(self) -> list[str]:
        lines = []
        for i in range(self.size):
            with contextlib.suppress(OSError):
                lines += [f"m{i}: {line}" for line in self.log_path(i).read_text(
                    errors="replace").splitlines() if "CRITICAL" in line or "Traceback" in line
                    or "conflicts with a committed" in line]
        return lines


def iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", "5", *args], check=True)


def cut(leader: int, size: int, two_way: bool, add: bool) -> None:
    op = "-I" if add else "-D"
    for j in range(size):
        if j == leader:
            continue
        iptables(op, "INPUT", "-s", member_ip(j), "-d", member_ip(leader), "-j", "DROP")
        if two_way:
            iptables(op, "INPUT", "-s", member_ip(leader), "-d", member_ip(j), "-j", "DROP")


class Load:
    """Writers pinned to each member (so followers forward commands too) plus counts."""

    def __init__(self, urls: list[str], per_member: int) -> None:
        from raftstore.etcd import EtcdStore

        self.stores = [EtcdStore([u], timeout=2.0) for u in urls]
        self.acked: dict[str, int] = {}
        self.failed = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(s, f"m{i}w{w}"))
                       for i, s in enumerate(self.stores) for w in range(per_member)]

    async def _run(self, store: Any, name: str) -> None:
        from raftstore.store import StoreError

        n = 0
        while not self._stop.is_set():
            key = f"/load/{name}/{n % 50}"
            try:
                self.acked[key] = await store.put(key, f"{name}-{n}".encode())
            except (TimeoutError, StoreError, OSError):
                self.failed += 1
                await asyncio.sleep(0.05)
            n += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.stores:
            await s.close()


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="corral-rp-"))
    cluster = Cluster(root, trace=args.trace)
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s {what}")

    loop = asyncio.get_running_loop()
    load = None
    result: dict[str, Any] = {"seed": args.seed, "root": str(root)}
    try:
        for i in range(cluster.size):
            cluster.start(i)
        leader = await loop.run_in_executor(None, cluster.wait_leader)
        note(f"leader m{leader}")
        load = Load(cluster.urls, args.writers)
        await asyncio.sleep(args.warmup)
        faults = args.faults.split(",")
        for r in range(args.rounds):
            fault = faults[r % len(faults)]
            leader = await loop.run_in_executor(None, cluster.wait_leader)
            if fault == "pause":
                note(f"SIGSTOP m{leader}")
                cluster.signal(leader, signal.SIGSTOP)
                await asyncio.sleep(args.fault_seconds)
                cluster.signal(leader, signal.SIGCONT)
                note(f"SIGCONT m{leader}")
            else:
                note(f"partition m{leader}")
                cut(leader, cluster.size, args.two_way, add=True)
                try:
                    await asyncio.sleep(args.fault_seconds)
                finally:
                    cut(leader, cluster.size, args.two_way, add=False)
                note(f"heal m{leader}")
            await asyncio.sleep(args.gap + rng.random())
        await asyncio.sleep(args.settle)
        acked_during = len(load.acked)
        await load.stop()
        load = None
        note(f"load stopped ({acked_during} keys acked)")
        # Converged: every member answers with the same (revision, digest), stable twice.
        deadline = time.monotonic() + args.converge
        start = time.monotonic()
        digests: list[Any] = []
        converged = None
        previous = None
        while time.monotonic() < deadline:
            digests = [await loop.run_in_executor(None, cluster.digest, i)
                       for i in range(cluster.size)]
            if all(d is not None for d in digests) and len(set(digests)) == 1:
                if previous == digests[0]:
                    converged = round(time.monotonic() - start, 2)
                    break
                previous = digests[0]
            else:
                previous = None
            await asyncio.sleep(0.25)
        note("converged" if converged is not None else "NOT converged")
        result.update(
            converged_after=converged,
            digests=digests,
            critical=cluster.critical_lines(),
            timeline=timeline,
        )
        return result
    finally:
        if load is not None:
            await load.stop()
        cluster.stop()
        if args.keep:
            result["kept"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(REPO))
    if argv and argv[0] == "member":
        return _member(argv[1:])
    p = argparse.ArgumentParser()
    p.add_argument("--faults", default="pause,partition")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--fault-seconds", type=float, default=5.0)
    p.add_argument("--gap", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--converge", type=float, default=20.0)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--two-way", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(scenario(args))
    print(json.dumps(result, indent=1))
    return 0 if result["converged_after"] is not None and not result["critical"] else 1


if __name__ == "__main__":
    sys.exit(main())
