"""``corral lab``: a multi-host lab on one Linux machine, as root, for HA and chaos runs.

Each "host" is a network namespace wired to one bridge in the root namespace, on the
benchmarking range 198.18.0.0/15 (DESIGN.md, Network)::

    root netns: bridge crl-<name> 198.18.0.1/15 ── veth <name>-c1 ══ eth0 in netns <name>-c1
                                             ── veth <name>-n1 ══ eth0 in netns <name>-n1
    controllers <name>-cI: 198.18.0.(10+I)   nodes <name>-nI: 198.18.1.(10+I)
    every namespace: lo up, default route via 198.18.0.1

The flow, in the order of the code: names and the state file (``LabState``, ``<dir>/state.json``:
what runs where, with each process's id and start time so a recycled pid is never killed);
plumbing (``ip``, ``iptables``); detached processes; then the three verbs.

``lab up`` checks nothing of the lab exists yet, writes the state file first (so ``lab down``
can undo a ``lab up`` that died at any later step), builds the bridge and the namespaces, creates
the cluster PKI and the Raft secret once (as ``localcluster.ControlPlane`` does; every
controller is given the same ``--pki-dir`` and ``--secret-file``), starts one ``corral
controller`` per controller namespace, waits for each API, writes ``<dir>/admin.kubeconfig``
(one context per controller), runs ``corral join`` inside each node namespace, starts one
``corral agent`` per node (Docker runtime, Corral's bridge ``corral0`` inside the node's
namespace; Docker's sandboxes get their veth from that namespace; ``--overlay`` between nodes),
and waits until every node is Ready. Processes run detached (their own session, output in
``<dir>/<host>.log``) and outlive ``lab up``.

``lab status`` tells, from the state file, which processes live, which controller leads (its
``/metrics``) and which nodes are Ready. ``lab kill HOST`` signals a host's process (SIGKILL, or
TERM/STOP/CONT) and ``lab start HOST`` starts a dead one again with the same command line
(``host_args``: same data dir and addresses), for failover and chaos runs.

``lab down`` works from the state file and, when that is gone, from the naming convention
alone (namespaces and links named ``<name>-c<I>``/``<name>-n<I>``, the bridge ``crl-<name>``, pod
containers labelled ``corral.dev/node-name=<name>-n<I>``), so it is idempotent and undoes a
crashed lab too: it stops every process (recorded, or found in a lab namespace) with SIGTERM,
then SIGKILL; removes the pods' containers (they live in Docker, not in the namespaces); deletes
the namespaces (their bridges and iptables rules die with them), the root bridge and the
FORWARD rule ``lab up`` added, and the directory unless ``--keep``.

Agents run with ``--overlay``: each node's WireGuard interface ``<name>-w<I>`` lives in its
namespace, its detached ``corral wg`` process too, so ``lab down`` stops it with the others
(``ip netns pids``) and the interface goes with the namespace. Pods on different nodes reach
each other through it; on the bridge only WireGuard's UDP passes between nodes.

This is a composition root (tests/test_layering.py exempts it): it starts controllers and agents.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from controlplane.auth.join import CA_FILE, NODE_KUBECONFIG, SERVING_CERT, SERVING_KEY
from controlplane.auth.pki import (
    MODE_DIR,
    MODE_SECRET,
    ClusterPKI,
    PKIError,
    write_atomic,
)
from controlplane.client import NODES, ApiClient, ApiError
from controlplane.up import Progress
from nodeagent import images
from nodeagent.runtime.base import LABEL_NODE_NAME

# -- names and numbers -------------------------------------------------------------------------

DEFAULT_DIR = Path("/var/lib/corral/lab")
DEFAULT_NAME = "lab"
#: The lab's range (RFC 2544 benchmarking), the root namespace's address on its bridge.
SUBNET = ipaddress.ip_network("198.18.0.0/15")
GATEWAY = "198.18.0.1"
#: Hosts get <third octet>.(HOST_OFFSET + index): controllers on .0, nodes on .1.
CONTROLLER_OCTET, NODE_OCTET, HOST_OFFSET = 0, 1, 10
PEER_PORT, API_PORT, AGENT_PORT = 2380, 6443, 10250
MAX_CONTROLLERS, MAX_NODES = 7, 50
#: Linux's IFNAMSIZ less the NUL: bridge "crl-<name>" and veths "<name>-n50" must fit.
MAX_IFNAME_LEN = 15
BRIDGE_PREFIX = "crl-"
NAME_RE = re.compile(r"[a-z]([a-z0-9-]{0,9}[a-z0-9])?")
#: Inside every host namespace.
HOST_IFNAME = "eth0"
STATE_FILE = "state.json"
SECRET_FILE = "raft-secret"
KUBECONFIG_FILE = "admin.kubeconfig"
CONTROLLER_READY_TIMEOUT_S = 60.0
NODES_READY_TIMEOUT_S = 120.0
JOIN_TIMEOUT_S = 60.0
#: Services' ClusterIPs (the controllers' default) and the LoadBalancer pool: inside SUBNET,
#: so every namespace on the bridge reaches an announced address on-link.
DEFAULT_SERVICE_RANGE = "10.96.0.0/12"
DEFAULT_LB_POOL = "198.19.255.0/24"
#: The signals ``lab kill`` sends: as Chaos Mesh's and Pumba's kill, stop and continue.
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP,
           "CONT": signal.SIGCONT}
#: How long ``down`` waits after SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0
POLL_S = 0.25
XTABLES_WAIT_S = "5"
_LEADING = re.compile(r'^leader_election_master_status\{name="corral-controller"\} 1(\.0)?$',
                      re.MULTILINE)


class LabError(Exception):
    """The lab cannot be made, read or removed as asked; the message says why, in one line."""


def bridge_name(name: str) -> str:
    return BRIDGE_PREFIX + name


def host_re(name: str) -> re.Pattern[str]:
    """Namespaces, root-side veths and node names of lab ``name``, and nothing of another lab
    (anchored: lab "a" never matches "a-n1-c1" of lab "a-n1")."""
    return re.compile(rf"{re.escape(name)}-[cn][0-9]+")


def forward_rule(name: str) -> list[str]:
    """The root namespace's FORWARD rule letting hosts talk across the bridge: with
    br_netfilter loaded (Docker loads it) bridged frames meet iptables, whose FORWARD policy
    Docker sets to DROP."""
    bridge = bridge_name(name)
    return ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", f"corral lab {name}",
            "-j", "ACCEPT"]


def overlay_ifname(host: Host) -> str:
    """The node's WireGuard interface, ``<name>-w<I>``: the UAPI socket directory
    (/var/run/wireguard) is shared by every namespace, so each node's name must be its own."""
    return f"{host.name.rsplit('-', 1)[0]}-w{host.index}"


def validate_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise LabError(f"--name {name!r}: 1-11 lowercase letters, digits or '-', starting with "
                       "a letter (it names interfaces, which Linux limits to 15 characters)")


@dataclass
class Host:
    """One lab host: a namespace, its address and the process it runs."""

    name: str
    role: str  # "controller" or "node"
    index: int
    ip: str
    pid: int = 0
    #: The process's start time (clock ticks since boot): with pid, who it is.
    start: int = 0

    @property
    def short(self) -> str:
        """``c1``, ``n2``: its data dir and log under the lab's dir."""
        return self.name.rsplit("-", 1)[1]

    @property
    def url(self) -> str:
        return f"https://{self.ip}:{API_PORT}"


@dataclass
class LabState:
    """``<dir>/state.json``: written before anything is made, rewritten after each start."""

    name: str
    dir: str
    controllers: list[Host] = field(default_factory=list)
    nodes: list[Host] = field(default_factory=list)
    service_cluster_ip_range: str = DEFAULT_SERVICE_RANGE
    load_balancer_ip_pool: str = DEFAULT_LB_POOL
    #: Controllers' flags for faster node-loss runs (None: the controllers' defaults).
    node_monitor_grace_period: float | None = None
    #: UNSAFE reads (no Raft barrier) on every controller: for showing a chaos run catches it.
    unsafe_local_reads: bool = False

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def hosts(self) -> list[Host]:
        return self.controllers + self.nodes

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.controllers]

    def host(self, name: str) -> Host:
        """The host called ``name`` (``<lab>-c1`` or just ``c1``); LabError if none."""
        for h in self.hosts:
            if name in (h.name, h.short):
                return h
        raise LabError(f"lab {self.name} has no host {name!r} "
                       f"(it has {', '.join(h.name for h in self.hosts)})")

    def save(self) -> None:
        write_atomic(self.path / STATE_FILE, json.dumps(asdict(self), indent=1).encode(),
                     MODE_SECRET)

    @classmethod
    def load(cls, directory: Path) -> LabState | None:
        """The state in ``directory``, None when there is none; LabError when it is damaged."""
        path = directory / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(name=raw["name"], dir=raw["dir"],
                       controllers=[Host(**h) for h in raw["controllers"]],
                       nodes=[Host(**h) for h in raw["nodes"]],
                       service_cluster_ip_range=raw.get("service_cluster_ip_range",
                                                        DEFAULT_SERVICE_RANGE),
                       load_balancer_ip_pool=raw.get("load_balancer_ip_pool", DEFAULT_LB_POOL),
                       node_monitor_grace_period=raw.get("node_monitor_grace_period"),
                       unsafe_local_reads=bool(raw.get("unsafe_local_reads", False)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{path} is damaged ({exc}); `corral lab down --name NAME` works "
                           "without it") from None


def plan(name: str, directory: Path, controllers: int, nodes: int) -> LabState:
    def host(role: str, octet: int, i: int) -> Host:
        return Host(f"{name}-{role[0]}{i}", role, i, f"198.18.{octet}.{HOST_OFFSET + i}")
    return LabState(name, str(directory),
                    [host("controller", CONTROLLER_OCTET, i) for i in range(1, controllers + 1)],
                    [host("node", NODE_OCTET, i) for i in range(1, nodes + 1)])


# -- plumbing ----------------------------------------------------------------------------------

def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def _netns_list() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    """Interface names of the root namespace (``veth@if3`` is listed as ``veth``)."""
    out = _run("ip", "-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.count(":") >= 2]


def _iptables_forward(*args: str, check: bool = True) -> int:
    return _run("iptables", "-w", XTABLES_WAIT_S, *args, check=check).returncode


def make_bridge(name: str) -> None:
    bridge = bridge_name(name)
    _run("ip", "link", "add", "name", bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", bridge)
    _run("ip", "link", "set", "dev", bridge, "up")
    rule = forward_rule(name)
    if _iptables_forward("-C", "FORWARD", *rule, check=False) != 0:
        _iptables_forward("-I", "FORWARD", "1", *rule)


def make_host(name: str, host: Host) -> None:
    """The namespace, its veth (created with its inside end already in the namespace, so no
    stray name appears in the root namespace), address, lo and default route."""
    _run("ip", "netns", "add", host.name)
    _run("ip", "link", "add", host.name, "type", "veth", "peer", "name", HOST_IFNAME,
         "netns", host.name)
    _run("ip", "link", "set", "dev", host.name, "master", bridge_name(name), "up")
    _run("ip", "-n", host.name, "addr", "add", f"{host.ip}/{SUBNET.prefixlen}", "dev",
         HOST_IFNAME)
    _run("ip", "-n", host.name, "link", "set", "dev", HOST_IFNAME, "up")
    _run("ip", "-n", host.name, "link", "set", "dev", "lo", "up")
    _run("ip", "-n", host.name, "route", "add", "default", "via", GATEWAY)


# -- processes ---------------------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    """Our environment with this checkout importable and unbuffered logs."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""),
            "PYTHONUNBUFFERED": "1"}


def _corral(netns: str, *args: str) -> list[str]:
    """``corral <args>`` inside ``netns`` (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "controlplane.cli", *args]


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat, 0 when there is no such process (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return 0 if fields[0] in ("Z", "X") else int(fields[19])


def alive(host: Host) -> bool:
    return host.pid > 0 and start_time(host.pid) == host.start


def spawn(host: Host, log: Path, args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``corral <args>`` in the host's namespace, detached: its own session, output
    appended to ``log``. Records pid and start time in ``host``."""
    with open(log, "ab") as out:
        process = subprocess.Popen(_corral(host.name, *args), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=_child_env())
    host.pid, host.start = process.pid, start_time(process.pid)
    return process


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(pids: set[int], grace: float = STOP_GRACE_S) -> int:
    """SIGTERM, then SIGKILL what still runs after ``grace`` seconds; how many were killed."""
    started = {pid: start_time(pid) for pid in pids}
    running = {pid for pid, start in started.items() if start}
    _signal(running, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        time.sleep(POLL_S)
        running = {pid for pid in running if start_time(pid) == started[pid]}
    _signal(running, signal.SIGKILL)
    return len(running)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


# -- talking to the lab ------------------------------------------------------------------------

def admin_ssl(directory: Path) -> ssl.SSLContext:
    pki = ClusterPKI.load(directory / "pki")
    return pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)


def _get(url: str, context: ssl.SSLContext, timeout: float = 2.0) -> str | None:
    """The body of a 200 answer, None for any failure (a dead controller is normal here)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.read().decode() if answer.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def leads(host: Host, context: ssl.SSLContext) -> bool | None:
    """Whether the controller runs the control loops (its /metrics); None: no answer."""
    body = _get(host.url + "/metrics", context)
    return None if body is None else bool(_LEADING.search(body))


async def node_readiness(urls: list[str], context: ssl.SSLContext) -> dict[str, bool]:
    """Node name -> Ready, from whichever controller answers; ApiError when none does."""
    async with ApiClient(urls, context, timeout=3.0, user_agent="corral-lab") as client:
        listed = await client.list(NODES)
    return {n["metadata"]["name"]: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (n.get("status") or {}).get("conditions") or ()) for n in listed.items}


def write_lab_kubeconfig(state: LabState, pki: ClusterPKI) -> Path:
    """One cluster and one context per controller (kubectl takes one server per cluster
    entry), all with the admin credential; the current context is the first controller's."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    user = f"{state.name}-admin"
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": c.name, "cluster": {
            "server": c.url, "certificate-authority-data": b64(pki.ca_pem)}}
            for c in state.controllers],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(pki.admin_cert_pem),
            "client-key-data": b64(pki.admin_key_pem)}}],
        "contexts": [{"name": c.name, "context": {"cluster": c.name, "user": user}}
                     for c in state.controllers],
        "current-context": state.controllers[0].name,
        "preferences": {},
    }
    path = state.path / KUBECONFIG_FILE
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode(), MODE_SECRET)
    return path


# -- lab up ------------------------------------------------------------------------------------

def _preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab makes network namespaces: run it as root")
    for tool in ("ip", "iptables", "nsenter"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing (Debian: apt-get install iproute2 iptables "
                           "util-linux)")
    try:
        images.docker_client()
    except images.BaseImageError as exc:
        raise LabError(f"the nodes run pods in Docker: {exc}") from None


def _namespace_pids(namespaces: list[str]) -> set[int]:
    pids: set[int] = set()
    for ns in namespaces:
        out = _run("ip", "netns", "pids", ns, check=False).stdout
        pids.update(int(p) for p in out.split() if p.isdigit())
    pids.discard(os.getpid())
    return pids


def _remains_of_lab(holder: str) -> str | None:
    """The lab whose bridge ``holder`` is, when not one process runs in any of its namespaces
    any more: what a killed ``lab up`` or an interrupted test run leaves. Nothing of it can
    be in use, so a new lab may take its place; a live lab is never named here."""
    other = holder.removeprefix(BRIDGE_PREFIX)
    if other == holder or not NAME_RE.fullmatch(other):
        return None
    mine = host_re(other)
    if _namespace_pids([n for n in _netns_list() if mine.fullmatch(n)]):
        return None
    return other


def _refuse_existing(name: str, directory: Path, progress: Callable[[str], None]) -> None:
    if (directory / STATE_FILE).exists():
        raise LabError(f"a lab is recorded in {directory / STATE_FILE}: "
                       f"`corral lab down --dir {directory}` first")
    if directory.is_dir() and any(directory.iterdir()):
        # A kept lab's logs and stores: a new cluster's secret and PKI must not meet them.
        raise LabError(f"{directory} is not empty: remove it or give another --dir")
    mine = host_re(name)
    taken = [n for n in _netns_list() if mine.fullmatch(n)]
    taken += [n for n in _root_links() if n == bridge_name(name) or mine.fullmatch(n)]
    holders = [line.split()[1] for line in
               _run("ip", "-o", "-4", "addr", "show", check=False).stdout.splitlines()
               if f" {GATEWAY}/" in line]
    if holders and not taken:
        # Every lab uses the same addresses: two at once would route to one of them only.
        other = _remains_of_lab(holders[0])
        if other is None:
            raise LabError(f"{holders[0]} holds {GATEWAY} already: one lab at a time on a "
                           "machine (`corral lab down` the other)")
        progress(f"lab {other} holds {GATEWAY} but nothing runs in it (an interrupted run): "
                 "removing its remains")
        remove_lab(other, None, progress)
    if taken:
        raise LabError(f"lab {name!r} exists already ({', '.join(sorted(set(taken)))}): "
                       f"`corral lab down --name {name} --dir DIR` first, or another --name")


def up(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    name: str = args.name or DEFAULT_NAME
    validate_name(name)
    if not 1 <= args.controllers <= MAX_CONTROLLERS:
        raise LabError(f"--controllers must be 1..{MAX_CONTROLLERS}")
    if not 0 <= args.nodes <= MAX_NODES:
        raise LabError(f"--nodes must be 0..{MAX_NODES}")
    try:
        ipaddress.ip_network(args.service_cluster_ip_range)
    except ValueError as exc:
        raise LabError(f"--service-cluster-ip-range: {exc}") from None
    _preflight()
    directory: Path = args.dir.resolve()
    _refuse_existing(name, directory, progress)
    directory.mkdir(mode=MODE_DIR, parents=True, exist_ok=True)
    state = plan(name, directory, args.controllers, args.nodes)
    state.service_cluster_ip_range = args.service_cluster_ip_range
    state.load_balancer_ip_pool = args.load_balancer_ip_pool
    state.node_monitor_grace_period = args.node_monitor_grace_period
    state.unsafe_local_reads = args.unsafe_local_reads
    state.save()  # first: from here on, `lab down` knows what to undo
    try:
        _up(state, progress)
    except Exception as exc:  # noqa: BLE001 - every failure gets the hint, in one line
        what = exc if isinstance(exc, (LabError, PKIError, OSError)) else \
            f"{type(exc).__name__}: {exc}"
        raise LabError(f"{what} (`corral lab down --dir {directory}` removes what was "
                       "made)") from None


def _up(state: LabState, progress: Callable[[str], None]) -> None:
    name, directory = state.name, state.path
    make_bridge(name)
    for host in state.hosts:
        make_host(name, host)
    progress(f"network: bridge {bridge_name(name)} {GATEWAY}/{SUBNET.prefixlen}; "
             f"{len(state.hosts)} hosts (namespaces {name}-c*, {name}-n*)")

    pki = ClusterPKI.create(directory / "pki")
    write_atomic(directory / SECRET_FILE, secrets.token_hex(16).encode())
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for c in state.controllers:
        processes[c.name] = start_host(state, c)
    context = pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)
    for c in state.controllers:
        _wait_controller(c, processes[c.name], context, directory)
        progress(f"controller {c.name}: API answers at {c.url}")
    kubeconfig = write_lab_kubeconfig(state, pki)

    _join_nodes(state, pki)
    for n in state.nodes:
        processes[n.name] = start_host(state, n)
    if state.nodes:
        progress(f"agents started on {', '.join(n.name for n in state.nodes)}")
        asyncio.run(_wait_nodes(state, processes, context, progress))
    _print_ready(state, kubeconfig)


def host_args(state: LabState, host: Host) -> list[str]:
    """The ``corral`` command line of a host's process: the same at every (re)start."""
    directory = state.path
    if host.role == "controller":
        peers = ",".join(f"{o.ip}:{PEER_PORT}" for o in state.controllers if o is not host)
        return ["controller", "--listen-peer", f"{host.ip}:{PEER_PORT}", "--peers", peers,
                "--listen-api", f"{host.ip}:{API_PORT}", "--tls-san", host.ip,
                "--data-dir", str(directory / host.short),
                "--secret-file", str(directory / SECRET_FILE),
                "--pki-dir", str(directory / "pki"),
                "--service-cluster-ip-range", state.service_cluster_ip_range,
                "--load-balancer-ip-pool", state.load_balancer_ip_pool,
                *(["--node-monitor-grace-period", str(state.node_monitor_grace_period)]
                  if state.node_monitor_grace_period is not None else []),
                *(["--unsafe-local-reads"] if state.unsafe_local_reads else [])]
    d = directory / host.short
    return ["agent", "--kubeconfig", str(d / NODE_KUBECONFIG),
            "--tls-cert-file", str(d / SERVING_CERT),
            "--tls-private-key-file", str(d / SERVING_KEY),
            "--client-ca-file", str(d / CA_FILE), "--node-name", host.name, "--node-ip", host.ip,
            "--server", ",".join(state.urls), "--port", str(AGENT_PORT), "--data-dir", str(d),
            "--runtime", "docker", "--pod-network", "bridge", "--image-pull-fallback",
            "--overlay", "--overlay-interface", overlay_ifname(host),
            "--service-proxy", "--cluster-dns"]


def start_host(state: LabState, host: Host) -> subprocess.Popen[bytes]:
    """Start a host's process (again) and record it in the state file."""
    process = spawn(host, state.path / f"{host.short}.log", host_args(state, host))
    state.save()
    return process


def _wait_controller(c: Host, process: subprocess.Popen[bytes], context: ssl.SSLContext,
                     directory: Path) -> None:
    deadline = time.monotonic() + CONTROLLER_READY_TIMEOUT_S
    log = directory / f"{c.short}.log"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"controller {c.name} exited ({_log_tail(log)}); see {log}")
        if _get(c.url + "/readyz", context) is not None:
            return
        time.sleep(POLL_S)
    raise LabError(f"controller {c.name} did not answer within "
                   f"{CONTROLLER_READY_TIMEOUT_S:.0f} s; see {log}")


def _join_nodes(state: LabState, pki: ClusterPKI) -> None:
    """``corral join`` in every node's namespace at once, each to a controller in turn."""
    running = []
    for n in state.nodes:
        server = state.controllers[(n.index - 1) % len(state.controllers)].url
        running.append((n, subprocess.Popen(
            _corral(n.name, "join", "--server", server, "--token", pki.join_token,
                    "--ca-hash", pki.ca_fingerprint(), "--node-name", n.name,
                    "--node-ip", n.ip, "--dir", str(state.path / n.short)),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=_child_env())))
    for n, process in running:
        try:
            out, _ = process.communicate(timeout=JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise LabError(f"node {n.name}: corral join took over {JOIN_TIMEOUT_S:.0f} s") \
                from None
        if process.returncode != 0:
            lines = out.strip().splitlines()
            raise LabError(f"node {n.name}: {lines[-1] if lines else 'corral join failed'}")


async def _wait_nodes(state: LabState, processes: dict[str, subprocess.Popen[bytes]],
                      context: ssl.SSLContext, progress: Callable[[str], None]) -> None:
    deadline = time.monotonic() + NODES_READY_TIMEOUT_S
    ready: set[str] = set()
    while time.monotonic() < deadline:
        for n in state.nodes:
            if processes[n.name].poll() is not None:
                log = state.path / f"{n.short}.log"
                raise LabError(f"agent {n.name} exited ({_log_tail(log)}); see {log}")
        try:
            readiness = await node_readiness(state.urls, context)
        except ApiError:
            readiness = {}
        for n in state.nodes:
            if readiness.get(n.name) and n.name not in ready:
                ready.add(n.name)
                progress(f"node {n.name} ({n.ip}): Ready")
        if len(ready) == len(state.nodes):
            return
        await asyncio.sleep(POLL_S * 2)
    missing = sorted({n.name for n in state.nodes} - ready)
    raise LabError(f"nodes not Ready within {NODES_READY_TIMEOUT_S:.0f} s: "
                   f"{', '.join(missing)}; see {state.path}/n*.log")


def _print_ready(state: LabState, kubeconfig: Path) -> None:
    contexts = ", ".join(c.name for c in state.controllers)
    sys.stdout.write(
        f"\nThe lab {state.name!r} is up ({len(state.controllers)} controllers, "
        f"{len(state.nodes)} nodes). From this shell (the root namespace reaches "
        f"{SUBNET} through {bridge_name(state.name)}):\n\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        "  kubectl get nodes -o wide\n\n"
        f"The kubeconfig has one context per controller ({contexts}); the current one is "
        f"{state.controllers[0].name}. Another controller:\n\n"
        f"  kubectl --context {state.controllers[-1].name} get nodes\n\n"
        f"A shell on a host: ip netns exec {state.hosts[-1].name} bash\n"
        f"Logs: {state.path}/<host>.log. `corral lab status --dir {state.path}`, "
        f"`corral lab down --dir {state.path}`.\n\n")
    sys.stdout.flush()


# -- lab status --------------------------------------------------------------------------------

def _recorded(directory: Path) -> LabState:
    state = LabState.load(directory)
    if state is None:
        raise LabError(f"no lab recorded in {directory} (no {STATE_FILE})")
    return state


def status(args: argparse.Namespace) -> None:
    directory: Path = args.dir.resolve()
    state = _recorded(directory)
    try:
        context: ssl.SSLContext | None = admin_ssl(directory)
    except PKIError:
        context = None
    readiness: dict[str, bool] | None = None
    if context is not None and state.nodes:
        try:
            readiness = asyncio.run(node_readiness(state.urls, context))
        except ApiError:
            readiness = None
    out = [f"lab {state.name} in {directory} (bridge {bridge_name(state.name)})"]
    for h in state.hosts:
        running = alive(h)
        words = [f"{h.name:<14}", f"{h.role:<10}", f"{h.ip:<13}", f"pid {h.pid:<8}",
                 "running" if running else "dead   " if h.pid else "not started"]
        if h.role == "controller" and running and context is not None:
            lead = leads(h, context)
            words.append("no answer" if lead is None else "leader" if lead else "follower")
        elif h.role == "node":
            words.append("(API unreachable)" if readiness is None else
                         "Ready" if readiness.get(h.name) else "NotReady")
        out.append("  " + " ".join(words).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


# -- lab kill, lab start -----------------------------------------------------------------------

def kill(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """Send a signal to hosts' processes (KILL: a crash; STOP/CONT: a pause); the state file
    keeps them, so ``lab start`` brings a killed one back as it was."""
    state = _recorded(args.dir.resolve())
    hosts = [state.host(h) for h in args.hosts]
    for h in hosts:
        if not alive(h):
            raise LabError(f"{h.name} is not running")
    for h in hosts:
        os.kill(h.pid, SIGNALS[args.signal])
        progress(f"{h.name}: SIG{args.signal} sent to pid {h.pid}")


def start(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """Start hosts whose process is dead, with the command line they had (same data dir, same
    addresses): a restarted controller rejoins its peers, a restarted agent adopts its pods."""
    state = _recorded(args.dir.resolve())
    hosts = [state.host(h) for h in args.hosts]
    running = [h.name for h in hosts if alive(h)]
    if running:
        raise LabError(f"{', '.join(running)} running already")
    for h in hosts:
        start_host(state, h)
        progress(f"{h.name}: started, pid {h.pid}")


# -- lab down ----------------------------------------------------------------------------------

def remove_pod_containers(name: str) -> int:
    """Every container (sandboxes and app containers) of the lab's nodes, by their
    node-name label; containers of other labs or a ``corral up`` on the engine stay."""
    try:
        client = images.docker_client()
    except images.BaseImageError as exc:
        raise LabError(f"cannot remove the pods' containers: {exc}") from None
    import docker.errors

    mine = host_re(name)
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL_NODE_NAME}):
        if mine.fullmatch(container.labels.get(LABEL_NODE_NAME, "")):
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                pass  # gone meanwhile
            except docker.errors.APIError as exc:
                raise LabError(f"cannot remove container {container.short_id}: "
                               f"{exc.explanation or exc}") from None
    return removed


def down(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    directory: Path = args.dir.resolve()
    state = LabState.load(directory)
    if state is not None and args.name and args.name != state.name:
        raise LabError(f"{directory / STATE_FILE} records lab {state.name!r}, not {args.name!r}")
    name = state.name if state is not None else (args.name or DEFAULT_NAME)
    validate_name(name)
    if os.geteuid() != 0:
        raise LabError("removing the lab's namespaces needs root")
    remove_lab(name, state, progress)
    if args.keep or not directory.exists():
        pass
    elif state is not None:
        shutil.rmtree(directory)
        progress(f"deleted {directory}")
    else:
        progress(f"left {directory}: it holds no {STATE_FILE}, so it is no lab's")
    progress(f"lab {name} is down")


def remove_lab(name: str, state: LabState | None, progress: Callable[[str], None]) -> None:
    """Everything of lab ``name`` in the kernel and in Docker (its directory stays): its
    processes, pod containers, namespaces, bridge and FORWARD rule."""
    mine = host_re(name)
    namespaces = [n for n in _netns_list() if mine.fullmatch(n)]

    # Recorded processes (verified by start time), and whatever else runs in a lab namespace.
    pids = {h.pid for h in (state.hosts if state else []) if alive(h)}
    pids |= _namespace_pids(namespaces)
    if pids:
        killed = stop_processes(pids)
        progress(f"stopped {len(pids)} processes" + (f" ({killed} with SIGKILL)" if killed else ""))

    try:
        removed = remove_pod_containers(name)
    except LabError as exc:
        # Without Docker there is nothing to remove of a lab that never had nodes; otherwise
        # the rest is still torn down, then the error is told.
        had_nodes = bool(state and state.nodes) or any(
            re.search(r"-n[0-9]+$", ns) for ns in namespaces)
        docker_error: LabError | None = exc if had_nodes else None
    else:
        docker_error = None
        if removed:
            progress(f"removed {removed} pod containers")
    for ns in namespaces:
        _run("ip", "netns", "del", ns, check=False)
    # The root ends of the veths die with the namespaces; a crash between `link add` and its
    # move cannot leave one (the peer is made inside), but a stray one is removed all the same.
    for link in _root_links():
        if mine.fullmatch(link) or link == bridge_name(name):
            _run("ip", "link", "del", "dev", link, check=False)
    rule = forward_rule(name)
    while shutil.which("iptables") and _iptables_forward("-C", "FORWARD", *rule,
                                                         check=False) == 0:
        _iptables_forward("-D", "FORWARD", *rule)
    left = [n for n in _netns_list() if mine.fullmatch(n)]
    if left:
        raise LabError(f"could not delete namespaces {', '.join(left)}")
    if namespaces:
        progress(f"deleted {len(namespaces)} namespaces and the bridge {bridge_name(name)}")
    if docker_error is not None:
        raise docker_error


# -- the command -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral lab",
        description="A multi-host lab on this machine (root): each controller and node agent "
        f"in its own network namespace on {SUBNET}.")
    verbs = p.add_subparsers(dest="verb", required=True,
                             metavar="{up,status,kill,start,down}")

    def common(v: argparse.ArgumentParser) -> None:
        v.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                       help="the lab's state, logs and kubeconfig (default %(default)s)")
        v.add_argument("--name", default=None,
                       help=f"names its namespaces, bridge and nodes (default {DEFAULT_NAME}; "
                       f"down: the one in {STATE_FILE})")

    u = verbs.add_parser("up", help="make the lab and wait until every node is Ready")
    u.add_argument("--controllers", type=int, default=3)
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--service-cluster-ip-range", default=DEFAULT_SERVICE_RANGE, metavar="CIDR",
                   help="the Services' ClusterIPs (default %(default)s)")
    u.add_argument("--load-balancer-ip-pool", default=DEFAULT_LB_POOL, metavar="CIDR",
                   help="LoadBalancer Services' external IPs, announced on the lab bridge "
                   "(default %(default)s)")
    u.add_argument("--node-monitor-grace-period", type=float, default=None, metavar="SECONDS",
                   help="controllers mark a silent node NotReady after this long (default: "
                   "the controllers' 40 s)")
    u.add_argument("--unsafe-local-reads", action="store_true",
                   help="UNSAFE controllers that read without a Raft barrier, to show that "
                   "`corral chaos` catches stale reads")
    common(u)
    s = verbs.add_parser("status", help="processes, the leader, nodes Ready")
    s.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    k = verbs.add_parser("kill", help="signal hosts' processes (default SIGKILL)")
    k.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    k.add_argument("--signal", choices=sorted(SIGNALS), default="KILL")
    k.add_argument("hosts", nargs="+", metavar="HOST", help="e.g. lab-c1 or c1")
    r = verbs.add_parser("start", help="start killed hosts again, as they were")
    r.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("hosts", nargs="+", metavar="HOST")
    d = verbs.add_parser("down", help="remove everything the lab made (also after a crash)")
    common(d)
    d.add_argument("--keep", action="store_true", help="keep the directory (logs, state)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The API client warns on each failover; a dead controller is expected in a lab.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    progress = Progress()
    try:
        if args.verb == "up":
            up(args, progress)
        elif args.verb == "status":
            status(args)
        elif args.verb == "kill":
            kill(args, progress)
        elif args.verb == "start":
            start(args, progress)
        else:
            down(args, progress)
    except (LabError, PKIError, OSError) as exc:
        sys.stderr.write(f"corral lab {args.verb}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"corral lab {args.verb}: interrupted; `corral lab down` cleans up\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        sys.stderr.write(f"corral lab {args.verb}: {type(exc).__name__}: {exc}\n")
        return 1
    return 0

