"""Fault injection. First without privileges: the partition rules as text, who counts as the
leader, refusals, and a restart whose process dies at once. Then for real (privileged), without
a Corral lab: three namespaces on a bridge of a fourth (so nothing meets the root namespace's
routes, nor a lab running beside), two "controllers" and a "node" recorded in a lab state file,
each running a tiny server (a TCP echo, and a UDP port that logs which host each datagram came
from) that ``LabFaults`` kills, pauses and starts again through the test's starter.

Reachability is the set of (sender, receiver) pairs whose datagrams arrive: datagrams, because a
one-way partition still lets them through the other way while TCP dies both ways. Every
namespace has a unique name; every process in them is killed and the namespaces deleted in the
fixture's ``finally``. No packet is sent to an address outside them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaos.faults import (
    CHAIN,
    FaultError,
    LabFaults,
    drop_input,
    heal_input,
    unique_leader,
)
from controlplane.lab import Host, LabState, alive, start_time

PORT = 7070
SUBNET = "192.0.2"  # TEST-NET-1, only on the test's own bridge

SERVER = r"""
import socket, sys, threading
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", int(sys.argv[1])))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", int(sys.argv[1])))
tcp.listen(16)

def log_datagrams():
    with open(sys.argv[2], "a") as log:
        while True:
            log.write(udp.recv(128).decode() + "\n")
            log.flush()

def echo(conn):
    while data := conn.recv(64):
        conn.sendall(data)

threading.Thread(target=log_datagrams, daemon=True).start()
print("ready", flush=True)
while True:
    threading.Thread(target=echo, args=(tcp.accept()[0],), daemon=True).start()
"""

SENDER = r"""
import socket, sys, time
token, port, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    for ip in targets:
        try:
            s.sendto(token.encode(), (ip, port))
        except OSError:
            pass
    time.sleep(0.05)
"""

#: Pings over one TCP connection: a line on stdin sends a byte, "ok" or the error comes back.
PINGER = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
print("connected", flush=True)
for _ in sys.stdin:
    try:
        conn.sendall(b"x")
        print("ok" if conn.recv(1) == b"x" else "closed", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""


def sh(*argv: str, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=check,
                          timeout=30)


def host(name: str, role: str = "controller", index: int = 1, pid: int = 0,
         start: int = 0) -> Host:
    return Host(name, role, index, f"{SUBNET}.{10 + index}", pid, start)


def write_state(directory: Path, controllers: list[Host]) -> None:
    LabState("t", str(directory), controllers).save()


def myself(name: str, index: int = 1) -> Host:
    """A host whose process is this test's: alive, never signalled."""
    return host(name, index=index, pid=os.getpid(), start=start_time(os.getpid()))


# -- the rules, as text ------------------------------------------------------------------------

EMPTY = ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"]


def test_drops_make_the_chain_its_jumps_and_a_rule_per_source() -> None:
    assert drop_input(EMPTY, ["192.0.2.11", "192.0.2.12", "192.0.2.11"]) == (
        "*filter\n"
        f":{CHAIN} - [0:0]\n"
        f"-I INPUT 1 -j {CHAIN}\n"
        f"-I FORWARD 1 -j {CHAIN}\n"
        f"-A {CHAIN} -s 192.0.2.11/32 -j DROP\n"
        f"-A {CHAIN} -s 192.0.2.12/32 -j DROP\n"
        "COMMIT\n")


def test_drops_add_only_what_is_missing() -> None:
    saved = [*EMPTY, f"-N {CHAIN}", f"-A INPUT -j {CHAIN}", f"-A FORWARD -j {CHAIN}",
             f"-A {CHAIN} -s 192.0.2.11/32 -j DROP"]
    assert drop_input(saved, ["192.0.2.11"]) is None
    assert drop_input(saved, ["192.0.2.11", "192.0.2.13"]) == (
        f"*filter\n-A {CHAIN} -s 192.0.2.13/32 -j DROP\nCOMMIT\n")


def test_heal_removes_every_jump_and_the_chain_and_nothing_else() -> None:
    saved = [*EMPTY, f"-N {CHAIN}", f"-N {CHAIN}-X", "-A INPUT -p tcp --dport 9 -j ACCEPT",
             f"-A INPUT -j {CHAIN}", f"-A OUTPUT -o eth0 -j {CHAIN}",
             f"-A FORWARD -j {CHAIN}-X", f"-A {CHAIN} -s 192.0.2.11/32 -j DROP"]
    assert heal_input(saved) == (
        "*filter\n"
        f"-D INPUT -j {CHAIN}\n"
        f"-D OUTPUT -o eth0 -j {CHAIN}\n"
        f"-F {CHAIN}\n"
        f"-X {CHAIN}\n"
        "COMMIT\n")
    assert heal_input(EMPTY) is None


@pytest.mark.parametrize(("answers", "leader"), [
    ([True, False, False], 0),
    ([None, False, True], 2),
    ([False, False, False], None),
    ([True, None, True], None),  # a deposed leader still saying so
    ([None, None, None], None),
])
def test_only_a_unique_answer_names_the_leader(answers: list[bool | None],
                                               leader: int | None) -> None:
    hosts = [host(f"t-c{i}", index=i) for i in range(1, 4)]
    assert unique_leader(zip(hosts, answers, strict=True)) == (
        None if leader is None else hosts[leader])


# -- LabFaults without privileges --------------------------------------------------------------

def test_no_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FaultError, match=f"no lab recorded in {tmp_path}"):
        LabFaults(tmp_path)


def test_leader_asks_live_controllers_only(tmp_path: Path) -> None:
    write_state(tmp_path, [myself("t-c1", 1), host("t-c2", index=2, pid=0),
                           myself("t-c3", 3)])
    asked: list[str] = []

    def probe(h: Host) -> bool | None:
        asked.append(h.name)
        return h.name == "t-c3"

    leader = LabFaults(tmp_path, probe=probe).leader()
    assert leader is not None and leader.name == "t-c3"
    assert sorted(asked) == ["t-c1", "t-c3"]


def test_refusals(tmp_path: Path) -> None:
    write_state(tmp_path, [myself("t-c1", 1), host("t-c2", index=2)])
    faults = LabFaults(tmp_path)
    with pytest.raises(FaultError, match="cannot kill t-c2: not running"):
        faults.kill(faults.host("c1"), faults.host("c2"))
    with pytest.raises(FaultError, match="no host 't-c9'"):
        faults.host("t-c9")
    with pytest.raises(FaultError, match="two or more groups"):
        faults.partition([[faults.host("c1")], [faults.host("c1")]])
    with pytest.raises(FaultError, match="two or more groups"):
        faults.partition_one_way([faults.host("c1")], [])
    assert faults.timeline == []


def test_a_restart_that_dies_at_once_is_an_error(tmp_path: Path) -> None:
    write_state(tmp_path, [host("t-c1", pid=2 ** 22 + 1, start=1)])

    def start_false(state: LabState, h: Host) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(["false"])
        h.pid, h.start = process.pid, start_time(process.pid)
        return process

    faults = LabFaults(tmp_path, starter=start_false)
    with pytest.raises(FaultError, match="t-c1 exited at once"):
        faults.restart(faults.host("c1"))


# -- for real: three namespaces ----------------------------------------------------------------

@dataclass
class Net:
    """The test's hosts: their state directory and a starter running the server in each."""

    dir: Path
    hosts: list[Host]

    def start(self, state: LabState, h: Host) -> subprocess.Popen[bytes]:
        """The servers' starter, for LabFaults as for the fixture: records pid and start."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", h.name, sys.executable, "-c", SERVER, str(PORT),
             str(self.dir / f"{h.short}.udp")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        h.pid, h.start = process.pid, start_time(process.pid)
        state.save()
        return process

    def faults(self) -> LabFaults:
        return LabFaults(self.dir, starter=self.start)

    def reachable(self) -> set[tuple[str, str]]:
        """(sender, receiver) short names of the pairs whose datagrams arrive."""
        token = uuid.uuid4().hex[:8]
        senders = [subprocess.Popen(["ip", "netns", "exec", h.name, sys.executable, "-c",
                                     SENDER, f"{token} {h.short}", str(PORT),
                                     *[o.ip for o in self.hosts if o is not h]])
                   for h in self.hosts]
        for sender in senders:
            assert sender.wait(timeout=10) == 0
        time.sleep(0.2)
        pairs = set()
        for h in self.hosts:
            log = self.dir / f"{h.short}.udp"
            for line in log.read_text().splitlines() if log.exists() else []:
                got, sender_name = line.split()
                if got == token:
                    pairs.add((sender_name, h.short))
        return pairs

    def rules(self, h: Host) -> list[str]:
        return sh("ip", "netns", "exec", h.name, "iptables", "-S").stdout.splitlines()


ALL = {(a, b) for a in ("c1", "c2", "n1") for b in ("c1", "c2", "n1") if a != b}
UNRELATED = "-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT"


@pytest.fixture
def net(require: Callable[[str], None], tmp_path: Path) -> Iterator[Net]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in
                                    ("ip", "iptables", "iptables-restore")):
        require("root, ip netns and iptables")
    tag = uuid.uuid4().hex[:6]
    switch = f"cf{tag}-sw"
    hosts = [host(f"cf{tag}-c1", index=1), host(f"cf{tag}-c2", index=2),
             host(f"cf{tag}-n1", "node", index=3)]
    made: list[str] = []
    state = LabState(f"cf{tag}", str(tmp_path), hosts[:2], hosts[2:])
    net = Net(tmp_path, hosts)
    try:
        for name in (switch, *(h.name for h in hosts)):
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for h in hosts:
            port = f"p{h.short}"
            sh("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", h.name)
            sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", h.name, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            sh("ip", "-n", h.name, "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", h.name, "iptables", *UNRELATED.split())
            net.start(state, h)
        yield net
    finally:
        for name in made:
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                stop_leftover(int(pid))
        for name in made:
            sh("ip", "netns", "del", name, check=False)


def stop_leftover(pid: int) -> None:
    """SIGKILL a server left running (stopped or not) and reap it when it is ours."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


privileged = pytest.mark.privileged


@privileged
def test_partition_cuts_both_ways_between_groups_only(net: Net) -> None:
    assert net.reachable() == ALL
    c1, c2, _ = net.hosts
    faults = net.faults()
    event = faults.partition([[c1], [c2]])
    assert (event.kind, event.targets, event.end) == ("partition", [c1.name, c2.name], None)
    assert net.reachable() == ALL - {("c1", "c2"), ("c2", "c1")}
    assert faults.heal() == [event] and event.end is not None and event.end >= event.start
    assert net.reachable() == ALL
    assert all(CHAIN not in "\n".join(net.rules(h)) for h in net.hosts)
    assert all(UNRELATED in net.rules(h) for h in net.hosts)
    assert faults.heal() == []


@privileged
def test_a_partition_cuts_established_connections(net: Net) -> None:
    c1, c2, _ = net.hosts
    pinger = subprocess.Popen(["ip", "netns", "exec", c1.name, sys.executable, "-c", PINGER,
                               c2.ip, str(PORT)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    stdin, stdout = pinger.stdin, pinger.stdout
    assert stdin is not None and stdout is not None
    try:
        assert stdout.readline() == "connected\n"

        def ping() -> str:
            stdin.write("\n")
            stdin.flush()
            return stdout.readline().strip()

        assert ping() == "ok"
        with net.faults() as faults:
            faults.partition([[c1], [c2]])
            assert ping() == "TimeoutError"
    finally:
        pinger.kill()
        pinger.wait()


@privileged
def test_one_way_drops_one_direction_only(net: Net) -> None:
    c1, c2, n1 = net.hosts
    faults = net.faults()
    event = faults.partition_one_way([c1, n1], [c2])
    assert event.extra == {"from": [c1.name, n1.name], "to": [c2.name]}
    assert net.reachable() == ALL - {("c1", "c2"), ("n1", "c2")}
    assert CHAIN not in "\n".join(net.rules(c1) + net.rules(n1))  # only the receiver drops
    faults.heal()
    assert net.reachable() == ALL


@privileged
def test_kill_restart_pause_resume(net: Net) -> None:
    faults = net.faults()
    old = faults.host("c1").pid
    killed = faults.kill(faults.host("c1"))
    assert not alive(faults.host("c1")) and killed.end is None
    with pytest.raises(FaultError, match="not running"):
        faults.kill(faults.host("c1"))
    assert faults.restart(faults.host("c1")) is killed and killed.end is not None
    restarted = faults.host("c1")
    assert alive(restarted) and restarted.pid != old
    assert LabState.load(net.dir).host("c1").pid == restarted.pid  # recorded
    assert ("n1", "c1") in net.reachable()

    paused = faults.pause(faults.host("c2"), faults.host("n1"))
    assert all(proc_state(faults.host(n).pid) == "T" for n in ("c2", "n1"))
    assert faults.resume(faults.host("c2")) is paused and paused.end is None  # n1 still
    assert faults.resume(faults.host("n1")) is paused and paused.end is not None
    assert proc_state(faults.host("n1").pid) != "T"

    faults.kill(restarted)  # our own child: reaped, no zombie left
    assert not Path(f"/proc/{restarted.pid}").exists()
    assert [e.kind for e in faults.heal()] == ["kill"]
    assert [e.kind for e in faults.timeline] == ["kill", "pause", "kill"]
    assert net.reachable() == ALL


@privileged
def test_heal_after_a_crash_of_ours_undoes_everything(net: Net) -> None:
    c1, c2, n1 = net.hosts
    crashed = net.faults()
    crashed.partition([[c1], [c2, n1]])
    crashed.partition_one_way([c2], [n1])
    crashed.pause(crashed.host("n1"))
    crashed.kill(crashed.host("c2"))
    # A new run knows nothing of those faults: it finds them in the kernel and in /proc.
    fresh = net.faults()
    assert fresh.heal() == []
    assert all(CHAIN not in "\n".join(net.rules(h)) for h in net.hosts)
    assert all(UNRELATED in net.rules(h) for h in net.hosts)
    assert proc_state(fresh.host("n1").pid) != "T"
    assert alive(fresh.host("c2"))
    assert net.reachable() == ALL
    assert fresh.heal() == []


@privileged
def test_the_context_manager_heals_on_ctrl_c(net: Net) -> None:
    c1, c2, n1 = net.hosts
    with pytest.raises(KeyboardInterrupt), net.faults() as faults:
        faults.partition([[c1], [c2], [n1]])
        faults.pause(faults.host("c2"))
        raise KeyboardInterrupt
    assert all(e.end is not None for e in faults.timeline)
    assert proc_state(faults.host("c2").pid) != "T"
    assert net.reachable() == ALL


def proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]
