"""Faults injected into a ``corral lab`` (issue 8): the I/O shell of the chaos suite, acting on the
hosts the lab's state file records (``controlplane.lab``: one network namespace and one process
per host).

The flow, in the order of the code: the partition rules as text (pure: what ``iptables-restore
--noflush`` gets to add drops to a namespace, or to remove them); then ``LabFaults``, whose verbs
are the faults Chaos Mesh and Pumba name: ``kill`` (SIGKILL) and ``restart``, ``pause`` (SIGSTOP)
and ``resume`` (SIGCONT), ``partition`` and ``partition_one_way``; and ``heal``, which undoes
them all.

Partitions: every affected host gets, in its own namespace, a chain ``CORRAL-CHAOS`` jumped to
first from INPUT (what arrives for the host: Raft on 2380, the API on 6443, the agent's 10250)
and FORWARD (what a node forwards to its pods), holding ``-s IP -j DROP`` for each host it must
not hear. A host drops what arrives from the hosts it is cut from, so one mechanism serves both
kinds: a partition makes every side drop the others, a one-way partition makes only the
receiving side drop (Chaos Mesh's ``direction: to``; TCP dies both ways, since its answers are
lost, while datagrams still flow the other way). Nothing is dropped in OUTPUT: a sender then
sees what a cut cable gives, silence and timeouts, not the EPERM a local DROP returns for a
datagram. The rules match every packet, established connections' too (no conntrack match), so a
partition cuts the Raft connections that are open when it begins. The workload's clients in the
root namespace are not cut from anyone: an isolated leader stays reachable to them.

Healing works from the kernel and /proc, not from memory, so it is idempotent and also undoes
what a crashed run left: rules are found by the chain's name, paused processes by their stopped
state, killed processes as recorded hosts that do not run (each started again as ``corral lab
start`` does). Each verb returns the ``FaultEvent`` it opens or closes and keeps it in
``timeline``; an event's ``start`` is taken before the fault's first effect and its ``end``
after its last undo, so the window covers every moment the fault may have acted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from chaos.timeline import FaultEvent
from controlplane.auth.pki import PKIError
from controlplane.lab import (
    Host,
    LabError,
    LabState,
    admin_ssl,
    alive,
    leads,
    start_host,
)

log = logging.getLogger(__name__)

#: The chain holding every partition rule in a host's namespace: heal finds them by this name.
CHAIN = "CORRAL-CHAOS"
#: The built-in chains that jump to it, first.
HOOKS = ("INPUT", "FORWARD")
XTABLES_WAIT_S = "5"
#: How long a signalled process may take to die, stop or continue.
SIGNAL_TIMEOUT_S = 5.0
#: How long a restarted process may take to run in its host's namespace.
START_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
POLL_S = 0.02

#: Starts a host's process again, as ``corral lab start`` does, recording it in the state.
Starter = Callable[[LabState, Host], subprocess.Popen[bytes]]
#: Whether a controller leads (True/False), None when it does not answer.
Probe = Callable[[Host], bool | None]


class FaultError(Exception):
    """A fault could not be injected or healed as asked; the message says why, in one line."""


# -- the rules, as text ------------------------------------------------------------------------

def drop_rule(source_ip: str) -> str:
    """The rule, as ``iptables -S`` prints it, dropping what arrives from ``source_ip``."""
    return f"-A {CHAIN} -s {source_ip}/32 -j DROP"


def _jump(hook: str) -> str:
    return f"-A {hook} -j {CHAIN}"


def drop_input(saved: Sequence[str], sources: Iterable[str]) -> str | None:
    """``iptables-restore --noflush`` input adding drops of what arrives from ``sources`` to a
    namespace whose filter table ``iptables -S`` printed as ``saved``; None when every rule is
    there already. Only what is missing is added, so rules of an earlier fault stay."""
    lines = [] if f"-N {CHAIN}" in saved else [f":{CHAIN} - [0:0]"]
    lines += [f"-I {hook} 1 -j {CHAIN}" for hook in HOOKS if _jump(hook) not in saved]
    lines += [rule for rule in dict.fromkeys(map(drop_rule, sources)) if rule not in saved]
    return _restore(lines) if lines else None


_JUMPS_TO_CHAIN = re.compile(rf"-A (?!{CHAIN} )\S+ .*-j {CHAIN}( |$)")


def heal_input(saved: Sequence[str]) -> str | None:
    """``iptables-restore --noflush`` input removing the chain and every jump to it (wherever a
    jump is, also one this version would not add), None when there is no chain."""
    if f"-N {CHAIN}" not in saved:
        return None
    jumps = ["-D" + line[2:] for line in saved if _JUMPS_TO_CHAIN.match(line)]
    return _restore([*jumps, f"-F {CHAIN}", f"-X {CHAIN}"])


def _restore(lines: list[str]) -> str:
    return "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"


def unique_leader(answers: Iterable[tuple[Host, bool | None]]) -> Host | None:
    """The one controller that says it leads; None when none or several do (a deposed leader
    that has not noticed yet must not be taken for the leader)."""
    leaders = [host for host, lead in answers if lead]
    return leaders[0] if len(leaders) == 1 else None


# -- processes and namespaces ------------------------------------------------------------------

def _proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (``T``: stopped), "" when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


def _in_namespace(host: Host) -> bool:
    """Whether the host's process runs in the host's network namespace (``ip netns exec`` has
    entered it)."""
    try:
        mine = os.stat(f"/proc/{host.pid}/ns/net")
        wanted = os.stat(f"/run/netns/{host.name}")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (wanted.st_dev, wanted.st_ino)


def _await(host: Host, done: Callable[[Host], bool], failure: str,
           timeout: float = SIGNAL_TIMEOUT_S) -> None:
    """Poll until ``done(host)``; FaultError "<host> (pid N) <failure> after T s" otherwise."""
    deadline = time.monotonic() + timeout
    while not done(host):
        if time.monotonic() > deadline:
            raise FaultError(f"{host.name} (pid {host.pid}) {failure} after {timeout:.0f} s")
        time.sleep(POLL_S)


def _netns(host: Host, *argv: str, stdin: str = "") -> str:
    """``argv`` run inside the host's namespace; its output, or FaultError with its error."""
    command = ["ip", "netns", "exec", host.name, *argv]
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FaultError(f"{host.name}: {' '.join(argv)}: {exc}") from None
    if result.returncode != 0:
        error = result.stderr.strip().splitlines()
        raise FaultError(f"{host.name}: {' '.join(argv)}: "
                         f"{error[-1] if error else f'exit status {result.returncode}'}")
    return result.stdout


def _saved_rules(host: Host) -> list[str]:
    return _netns(host, "iptables", "-w", XTABLES_WAIT_S, "-S").splitlines()


def _restore_rules(host: Host, text: str) -> None:
    _netns(host, "iptables-restore", "-w", XTABLES_WAIT_S, "--noflush", stdin=text)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """A Ctrl-C in the middle of a heal would leave faults in the lab: in the main thread, hold
    it until the heal is done, then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT,
                      signal.default_int_handler if previous is None else previous)
    if caught:
        raise KeyboardInterrupt


def _disjoint(groups: Sequence[Sequence[Host]]) -> list[list[Host]]:
    """The non-empty groups; FaultError unless two or more and no host in two."""
    sides = [list(group) for group in groups if group]
    names = [h.name for side in sides for h in side]
    if len(sides) < 2 or len(set(names)) != len(names):
        raise FaultError("a partition needs two or more groups of hosts, no host in two: "
                         f"got {[[h.name for h in side] for side in groups]}")
    return sides


def _names(hosts: Iterable[Host]) -> list[str]:
    return [h.name for h in hosts]


# -- the lab's faults --------------------------------------------------------------------------

class LabFaults:
    """Faults on the lab recorded in ``lab_dir``; ``with LabFaults(d) as faults:`` heals on the
    way out, also on Ctrl-C. ``starter`` and ``probe`` are the lab's own by default; tests give
    their own processes and answers."""

    def __init__(self, lab_dir: Path, *, starter: Starter = start_host,
                 probe: Probe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            state = LabState.load(lab_dir)
        except LabError as exc:
            raise FaultError(str(exc)) from None
        if state is None:
            raise FaultError(f"no lab recorded in {lab_dir} (`corral lab up` first)")
        self.state = state
        self.timeline: list[FaultEvent] = []
        self._starter = starter
        self._probe = probe
        self._clock = clock
        #: Host name -> the open kill or pause event that took it down.
        self._killed: dict[str, FaultEvent] = {}
        self._paused: dict[str, FaultEvent] = {}
        self._partitions: list[FaultEvent] = []
        #: Processes this object started: polled when they die, so that none stays a zombie.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.heal()

    # -- who is who ----------------------------------------------------------------------------

    def controllers(self) -> list[Host]:
        return list(self.state.controllers)

    def nodes(self) -> list[Host]:
        return list(self.state.nodes)

    def host(self, name: str) -> Host:
        """The host called ``name`` (``lab-c1`` or ``c1``)."""
        try:
            return self.state.host(name)
        except LabError as exc:
            raise FaultError(str(exc)) from None

    def leader(self) -> Host | None:
        """The controller that leads, asking every live one at once (a paused one answers
        nothing within the probe's timeout); None unless exactly one says so."""
        running = [c for c in self.state.controllers if alive(c)]
        if not running:
            return None
        probe = self._probe or self._lab_probe()
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            return unique_leader(zip(running, pool.map(probe, running), strict=True))

    def _lab_probe(self) -> Probe:
        try:
            context = admin_ssl(self.state.path)
        except (PKIError, OSError) as exc:
            raise FaultError(f"cannot ask the controllers who leads: {exc}") from None

        def probe(host: Host) -> bool | None:
            return leads(host, context)

        self._probe = probe
        return probe

    # -- kill and restart ----------------------------------------------------------------------

    def kill(self, *hosts: Host) -> FaultEvent:
        """SIGKILL the hosts' processes (each verified by its start time, so a recycled pid is
        never hit) and wait until they are gone: one event, open until the last is restarted."""
        event = self._inject("kill", hosts, signal.SIGKILL, self._killed)
        for name in event.targets:
            _await(self.host(name), self._gone, "still runs after SIGKILL")
        return event

    def _gone(self, host: Host) -> bool:
        child = self._children.get(host.name)
        if child is not None and child.poll() is None:  # poll() reaps it once it has died
            return False
        self._children.pop(host.name, None)
        return not alive(host)

    def restart(self, host: Host) -> FaultEvent | None:
        """Start a dead host's process again with its command line (a controller rejoins with
        its data dir, an agent adopts its pods) and wait until it runs in its namespace;
        nothing to do when it runs. Returns the kill event, closed when this was its last
        host; None when this object had not killed it."""
        host = self.host(host.name)  # the state's own entry: starting it records the new pid
        if not alive(host):
            self._start(host)
        return self._close_for(host, self._killed)

    def _start(self, host: Host) -> None:
        stale = self._children.pop(host.name, None)
        if stale is not None:
            stale.poll()  # reap it, if it died on its own
        try:
            process = self._starter(self.state, host)
        except (LabError, OSError) as exc:
            raise FaultError(f"cannot start {host.name}: {exc}") from None
        self._children[host.name] = process
        log_file = self.state.path / f"{host.short}.log"
        _await(host, lambda h: _in_namespace(h) or process.poll() is not None,
               f"not running in its namespace (see {log_file})", START_TIMEOUT_S)
        status = process.poll()
        if status is not None or not alive(host):
            raise FaultError(f"{host.name} exited at once (status {status}); see {log_file}")
        log.info("%s started again, pid %d", host.name, host.pid)

    # -- pause and resume ----------------------------------------------------------------------

    def pause(self, *hosts: Host) -> FaultEvent:
        """SIGSTOP the hosts' processes (all threads; a controller is one process, while an
        agent's detached WireGuard process runs on) and wait until each is stopped."""
        event = self._inject("pause", hosts, signal.SIGSTOP, self._paused)
        for name in event.targets:
            _await(self.host(name), lambda h: _proc_state(h.pid) in ("T", ""),
                   "not stopped by SIGSTOP")
        return event

    def resume(self, host: Host) -> FaultEvent | None:
        """SIGCONT the host's process if it is stopped and wait until it runs on. Returns the
        pause event, closed when this was its last host; None when this object had not paused
        it."""
        host = self.host(host.name)
        if alive(host) and _proc_state(host.pid) == "T":
            self._signal(host, signal.SIGCONT)
            _await(host, lambda h: _proc_state(h.pid) != "T", "still stopped after SIGCONT")
        return self._close_for(host, self._paused)

    # -- partitions ----------------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[Host]]) -> FaultEvent:
        """Cut hosts of different groups from each other (every packet, both ways); hosts in no
        group, and the root namespace, still reach everyone."""
        sides = _disjoint(groups)
        event = self._open("partition", [h for side in sides for h in side],
                           " | ".join(" ".join(_names(side)) for side in sides),
                           {"groups": [_names(side) for side in sides]})
        self._partitions.append(event)
        for i, side in enumerate(sides):
            others = [h.ip for j, other in enumerate(sides) if j != i for h in other]
            for host in side:
                self._drop_from(host, others)
        return event

    def partition_one_way(self, src_hosts: Sequence[Host],
                          dst_hosts: Sequence[Host]) -> FaultEvent:
        """Drop what ``src_hosts`` send to ``dst_hosts``; the other way passes."""
        src, dst = _disjoint([src_hosts, dst_hosts])
        event = self._open("partition-one-way", [*src, *dst],
                           f"{' '.join(_names(src))} -> {' '.join(_names(dst))} dropped",
                           {"from": _names(src), "to": _names(dst)})
        self._partitions.append(event)
        for host in dst:
            self._drop_from(host, [h.ip for h in src])
        return event

    @staticmethod
    def _drop_from(host: Host, sources: list[str]) -> None:
        text = drop_input(_saved_rules(host), sources)
        if text is not None:
            _restore_rules(host, text)

    # -- heal ----------------------------------------------------------------------------------

    def heal(self) -> list[FaultEvent]:
        """Undo every fault on the lab, ours or a crashed run's: partition rules removed, stopped
        processes continued, dead recorded processes started again, in that order (a restarted
        controller must reach its peers). Idempotent. Tries every host even when one fails,
        then raises one FaultError naming what failed. Returns the events it closed."""
        errors: list[str] = []
        with _sigint_deferred():
            closed = self._each_host(self._heal_rules, errors)
            if not errors:
                closed += self._partitions
                self._partitions = []
            closed += self._each_host(self.resume, errors)
            closed += self._each_host(self._restart_recorded, errors)
        now = self._clock()
        for event in closed:
            if event.end is None:
                event.end = now
        if closed:
            log.info("healed: %s", "; ".join(event.detail for event in closed))
        if errors:
            raise FaultError("heal incomplete: " + "; ".join(errors))
        return closed

    def _each_host(self, action: Callable[[Host], FaultEvent | None],
                   errors: list[str]) -> list[FaultEvent]:
        """``action`` on every host, even after one fails: the events it closed."""
        closed = []
        for host in self.state.hosts:
            try:
                event = action(host)
            except (FaultError, OSError) as exc:
                errors.append(str(exc))
                continue
            if event is not None and event.end is not None and event not in closed:
                closed.append(event)
        return closed

    @staticmethod
    def _heal_rules(host: Host) -> None:
        text = heal_input(_saved_rules(host))
        if text is not None:
            _restore_rules(host, text)
            log.info("%s: partition rules removed", host.name)

    def _restart_recorded(self, host: Host) -> FaultEvent | None:
        """Restart a host that ran once (a host never started is not the lab's to heal)."""
        if host.pid and not alive(host) and host.name not in self._killed:
            log.warning("%s (pid %d) was dead, not killed by this object: starting it again",
                        host.name, host.pid)
        return self.restart(host) if host.pid else None

    # -- events and signals ----------------------------------------------------------------------

    def _inject(self, kind: str, hosts: Sequence[Host], sig: signal.Signals,
                down: dict[str, FaultEvent]) -> FaultEvent:
        """Signal the hosts' processes, each checked to run first (by pid and start time)."""
        if not hosts:
            raise FaultError(f"{kind}: no host given")
        hosts = [self.host(h.name) for h in hosts]  # with the pids the state has now
        dead = [h.name for h in hosts if not alive(h)]
        if dead:
            raise FaultError(f"cannot {kind} {', '.join(dead)}: not running")
        event = self._open(kind, hosts, f"{sig.name} " + ", ".join(
            f"{h.name} (pid {h.pid})" for h in hosts))
        for host in hosts:
            down[host.name] = event
            self._signal(host, sig)
        return event

    def _open(self, kind: str, hosts: Iterable[Host], detail: str,
              extra: dict[str, Any] | None = None) -> FaultEvent:
        event = FaultEvent(kind, _names(hosts), self._clock(), detail=detail,
                           extra=extra or {})
        self.timeline.append(event)
        log.info("%s: %s", kind, detail)
        return event

    def _close_for(self, host: Host, down: dict[str, FaultEvent]) -> FaultEvent | None:
        """Forget ``host`` in ``down``; its event ends when no other host is down with it."""
        event = down.pop(host.name, None)
        if event is not None and event not in down.values():
            event.end = self._clock()
        return event

    @staticmethod
    def _signal(host: Host, sig: signal.Signals) -> None:
        try:
            os.kill(host.pid, sig)
        except ProcessLookupError:
            pass  # died meanwhile: the wait that follows tells
        except OSError as exc:
            raise FaultError(f"{sig.name} to {host.name} (pid {host.pid}): {exc}") from None
