"""Overlay throughput benchmark (issue 6): one iperf3 TCP stream between two network namespaces
through Corral's WireGuard interface, against wireguard-go, at tunnel MTU 1420 and 8920, with
plain veth (no tunnel) as the physical limit, all in one run.

Layout (as in ``tests/overlay/test_interop.py``): two namespaces ``cob-<run id>-a`` and
``cob-<run id>-b`` joined by a veth pair (``cob<id>va``/``cob<id>vb``, underlay 198.18.61.1/24
and .2/24, MTU 9000, so a 8920-byte inner packet plus 60 bytes of IPv4 + UDP + WireGuard fits
unfragmented). Each implementation in turn (its processes are stopped before the next one's start,
so an idle pair takes no CPU from the measured one):

  * Corral: ``python -m overlay.main -f cob<id>c1`` started in namespace A and ``... cob<id>c2``
    in B with ``ip netns exec`` (foreground, ``LOG_LEVEL=error``); the UDP socket and the TUN
    interface are in the namespace the process runs in, so the encrypted UDP crosses the veth.
  * wireguard-go: ``WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f cob<id>g1``
    (and ``g2``) the same way.

Both sides get keys from ``wg genkey``/``wg pubkey`` and are configured with ``wg set`` through
their UAPI sockets (``/var/run/wireguard/<ifname>.sock``): listen port 51820, the other side as
the one peer with AllowedIPs its /32 and its underlay endpoint. Tunnel addresses 10.201.0.1/24
(A) and 10.201.0.2/24 (B). A 1 s iperf3 warm-up (not counted) completes the handshake. Then per
MTU (1420, 8920; ``ip link set mtu`` on both interfaces): ``iperf3 -s -1`` in B, ``iperf3 -c
10.201.0.2 -t 10 -J`` in A (``--quick``: ``-t 3``). Throughput is the receiver's
``bits_per_second``. Plain veth: the veth's MTU is set to 1420, then 8920, and iperf3 runs over
the underlay addresses; it is set back to 9000 before the tunnels.

CPU: user + system seconds of the implementation's processes on *both* sides (psutil; their
children and reaped children included), and of the whole machine (``benchkit.machine_busy``:
iperf3 and everything else on it), over the iperf3 client's run; each divided by the GB (10^9
bytes of TCP payload) the receiver got: "CPU s per GB moved".

R1, R2 = Corral Gbit/s / wireguard-go Gbit/s at MTU 1420 and 8920. Targets (issue 6): R1 >= 1.0
and R2 >= 1.0. The last line is
``overlay: corral/wireguard-go throughput ratio R1 at 1420, R2 at 8920``.

Cleanup, always (``finally``, also on Ctrl-C or SIGTERM): iperf3 servers and clients killed, the
interface processes SIGTERM (SIGKILL after 5 s), the namespaces deleted (with the veth and any
interface left in them), this run's UAPI sockets and key files removed; the cleanup line goes to
stderr and says what was left.

Usage: ``python bench/overlay.py [--quick] [--seconds N]`` (root; iperf3, wireguard-go, wg, ip).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil
from benchkit import clean_up, interrupt, machine_busy

from overlay.uapi import serving_pid

SOCKET_DIR = Path("/var/run/wireguard")
SECONDS, QUICK_SECONDS = 10, 3
WARMUP_SECONDS = 1
MTUS = (1420, 8920)
UNDERLAY_MTU = 9000
UNDERLAY_A, UNDERLAY_B = "198.18.61.1", "198.18.61.2"
TUNNEL_A, TUNNEL_B = "10.201.0.1", "10.201.0.2"
PORT = 51820
WIREGUARD_GO_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
CORRAL_ENV = {"PYTHONPATH": str(ROOT), "LOG_LEVEL": "error"}
STOP_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 15.0
TARGET_RATIO = 1.0
GB = 1e9


def run(*argv: str, timeout: float = 15, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          input=stdin)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def tree_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system, reaped children included) of each process of the trees."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            top = psutil.Process(pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                found[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two ``tree_cpu`` snapshots (a process new in ``after`` counts whole)."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


@dataclass
class Result:
    path: str  # "plain veth", "corral", "wireguard-go"
    mtu: int
    bits_per_second: float = math.nan
    received_bytes: float = math.nan
    seconds: float = math.nan
    retransmits: int = 0
    impl_cpu: float = math.nan  # CPU s of the implementation's processes, both sides
    machine_cpu: float = math.nan
    span: float = math.nan
    error: str = ""

    @property
    def gbits(self) -> float:
        return self.bits_per_second / 1e9

    def per_gb(self, cpu: float) -> float:
        return cpu / (self.received_bytes / GB) if self.received_bytes > 0 else math.nan

    def row(self) -> str:
        if self.error:
            return f"{self.path:<13} {self.mtu:>5}  failed: {self.error}"
        impl = (f"{self.impl_cpu:7.1f} {self.per_gb(self.impl_cpu):8.2f} "
                f"{100 * self.impl_cpu / self.span:6.0f}%" if not math.isnan(self.impl_cpu)
                else f"{'-':>7} {'-':>8} {'-':>7}")
        return (f"{self.path:<13} {self.mtu:>5} {self.gbits:8.2f} {self.received_bytes / GB:7.2f} "
                f"{self.retransmits:6d}  {impl}  {self.per_gb(self.machine_cpu):8.2f} "
                f"{100 * self.machine_cpu / self.span:6.0f}%")


HEADER = (f"{'path':<13} {'MTU':>5} {'Gbit/s':>8} {'GB':>7} {'retr':>6}  {'impl s':>7} "
          f"{'s/GB':>8} {'CPU':>7}  {'mach s/GB':>8} {'busy':>7}")


class Testbed:
    """This run's namespaces, veth, interface processes, iperf3 processes and key files."""

    def __init__(self, run_id: str, workdir: Path) -> None:
        self.run_id = run_id
        self.workdir = workdir
        self.ns_a, self.ns_b = f"cob-{run_id}-a", f"cob-{run_id}-b"
        self.veth_a, self.veth_b = f"cob{run_id}va", f"cob{run_id}vb"
        self.namespaces: list[str] = []
        self.interfaces: list[str] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.iperfs: list[subprocess.Popen[bytes]] = []

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", self.veth_a, "netns", self.ns_a, "mtu", str(UNDERLAY_MTU),
            "type", "veth", "peer", "name", self.veth_b, "netns", self.ns_b,
            "mtu", str(UNDERLAY_MTU))
        for ns, dev, address in ((self.ns_a, self.veth_a, UNDERLAY_A),
                                 (self.ns_b, self.veth_b, UNDERLAY_B)):
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")

    def set_veth_mtu(self, mtu: int) -> None:
        run("ip", "-n", self.ns_a, "link", "set", self.veth_a, "mtu", str(mtu))
        run("ip", "-n", self.ns_b, "link", "set", self.veth_b, "mtu", str(mtu))

    def start(self, impl: str, ns: str, ifname: str) -> subprocess.Popen[bytes]:
        """The implementation's process for ``ifname`` in ``ns``, once its UAPI socket answers."""
        if impl == "corral":
            argv, env = [sys.executable, "-m", "overlay.main", "-f", ifname], CORRAL_ENV
        else:
            argv, env = ["wireguard-go", "-f", ifname], WIREGUARD_GO_ENV
        self.interfaces.append(ifname)
        with open(self.workdir / f"{ifname}.log", "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env}, start_new_session=True)
        self.daemons.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while serving_pid(ifname) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{impl} {ifname} did not serve its UAPI socket: "
                                   f"{self.log_tail(ifname)}")
            time.sleep(0.05)
        return proc

    def log_tail(self, ifname: str, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / f"{ifname}.log").read_text(errors="replace").splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        return "(no log)"

    def keys(self) -> tuple[Path, str]:
        """A private key file (0600, in the work dir) and its public key."""
        private = run("wg", "genkey").strip()
        public = run("wg", "pubkey", stdin=private + "\n").strip()
        path = self.workdir / f"key-{secrets.token_hex(4)}"
        path.touch(0o600)
        path.write_text(private + "\n")
        return path, public

    def tunnel(self, impl: str, if_a: str, if_b: str) -> list[int]:
        """Both interfaces of ``impl`` up and configured; the pids serving them."""
        procs = [self.start(impl, self.ns_a, if_a), self.start(impl, self.ns_b, if_b)]
        (key_a, pub_a), (key_b, pub_b) = self.keys(), self.keys()
        for ifname, key, peer, allowed, endpoint in (
                (if_a, key_a, pub_b, TUNNEL_B, UNDERLAY_B), (if_b, key_b, pub_a, TUNNEL_A, UNDERLAY_A)):
            run("wg", "set", ifname, "private-key", str(key), "listen-port", str(PORT),
                "peer", peer, "allowed-ips", f"{allowed}/32", "endpoint", f"{endpoint}:{PORT}")
        for ns, ifname, address in ((self.ns_a, if_a, TUNNEL_A), (self.ns_b, if_b, TUNNEL_B)):
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
            run("ip", "-n", ns, "link", "set", ifname, "mtu", str(MTUS[0]), "up")
        pids = [serving_pid(if_a), serving_pid(if_b)]
        return [pid if pid is not None else proc.pid for pid, proc in zip(pids, procs)]

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """Stop one implementation's processes before the next one starts (SIGTERM, then
        SIGKILL after STOP_TIMEOUT_S), so that an idle one takes no CPU from the other."""
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def set_tunnel_mtu(self, if_a: str, if_b: str, mtu: int) -> None:
        run("ip", "-n", self.ns_a, "link", "set", if_a, "mtu", str(mtu))
        run("ip", "-n", self.ns_b, "link", "set", if_b, "mtu", str(mtu))

    # -- measuring ------------------------------------------------------------------------------

    def iperf3(self, address: str, seconds: int, result: Result | None,
               impl_pids: list[int]) -> None:
        """One TCP stream A -> ``address`` in B; fills ``result`` (None: a warm-up)."""
        server = subprocess.Popen(["ip", "netns", "exec", self.ns_b, "iperf3", "-s", "-1", "-B",
                                   address], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        self.iperfs.append(server)
        try:
            report: dict = {}
            for _ in range(50):
                cpu0, busy0, t0 = tree_cpu(impl_pids), machine_busy(), time.monotonic()
                client = subprocess.Popen(["ip", "netns", "exec", self.ns_a, "iperf3", "-c",
                                           address, "-t", str(seconds), "-J"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True)
                self.iperfs.append(client)
                out, _ = client.communicate(timeout=seconds + 30)
                span, busy, cpu1 = time.monotonic() - t0, machine_busy() - busy0, tree_cpu(impl_pids)
                with contextlib.suppress(ValueError):
                    report = json.loads(out)
                # iperf3 3.12 exits 0 with an "error" key when the server is not listening yet.
                if client.returncode == 0 and report and "error" not in report:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"iperf3 to {address} failed: "
                                   f"{report.get('error') or out[-300:]!r}")
            if result is None:
                return
            received = report["end"]["sum_received"]
            result.bits_per_second = float(received["bits_per_second"])
            result.received_bytes = float(received["bytes"])
            result.seconds = float(received["seconds"])
            result.retransmits = int(report["end"].get("sum_sent", {}).get("retransmits", 0))
            result.span, result.machine_cpu = span, busy
            if impl_pids:
                result.impl_cpu = cpu_used(cpu0, cpu1)
        finally:
            for proc in self.iperfs:  # this run's server, and its client when interrupted
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    # -- cleanup --------------------------------------------------------------------------------

    def stop_daemons(self) -> str:
        for ifname in self.interfaces:
            pid = serving_pid(ifname)
            if pid is not None and pid not in {p.pid for p in self.daemons}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        running = [proc for proc in self.daemons if proc.poll() is None]
        for proc in running:
            proc.terminate()
        killed = 0
        for proc in running:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed += 1
        for ifname in self.interfaces:
            pid = serving_pid(ifname)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed += 1
        return (f"{len(running)} of {len(self.daemons)} interface processes still running, stopped"
                + (f" ({killed} killed)" if killed else ""))

    def close(self) -> str:
        steps = []
        running = [proc for proc in self.iperfs if proc.poll() is None]
        for proc in running:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        steps.append(f"{len(running)} iperf3 processes killed")
        try:
            steps.append(self.stop_daemons())
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still runs
            steps.append(f"stopping interface processes failed: {exc}")
        sockets = 0
        for ifname in self.interfaces:
            path = SOCKET_DIR / f"{ifname}.sock"
            if path.exists():
                sockets += 1
                path.unlink(missing_ok=True)
        steps.append(f"{sockets} UAPI sockets left behind removed")
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
        # The veth lives in the namespaces; links named like ours anywhere else are ours too.
        for dev in (self.veth_a, self.veth_b, *self.interfaces):
            if run("ip", "link", "show", dev, check=False).strip():
                run("ip", "link", "del", dev, check=False)
        left_ns = [ns for ns in self.namespaces
                   if ns in run("ip", "netns", "list", check=False).split()]
        left_links = [dev for dev in (self.veth_a, self.veth_b, *self.interfaces)
                      if run("ip", "link", "show", dev, check=False).strip()]
        left_socks = [i for i in self.interfaces if (SOCKET_DIR / f"{i}.sock").exists()]
        left = left_ns + left_links + left_socks
        steps.append(f"namespaces {', '.join(self.namespaces) or '-'} deleted; "
                     + (f"LEFT OVER: {', '.join(left)}" if left else "nothing left"))
        return "; ".join(steps)


def measure(bed: Testbed, seconds: int) -> list[Result]:
    results: list[Result] = []
    bed.setup()
    # Plain veth: the TCP stream sees the same MTU as through a tunnel.
    for mtu in MTUS:
        bed.set_veth_mtu(mtu)
        result = Result("plain veth", mtu)
        bed.iperf3(UNDERLAY_B, seconds, result, [])
        results.append(result)
        print(result.row(), flush=True)
    bed.set_veth_mtu(UNDERLAY_MTU)
    for impl, tag in (("corral", "c"), ("wireguard-go", "g")):
        if_a, if_b = f"cob{bed.run_id}{tag}1", f"cob{bed.run_id}{tag}2"
        started = len(bed.daemons)
        try:
            try:
                pids = bed.tunnel(impl, if_a, if_b)
                bed.iperf3(TUNNEL_B, WARMUP_SECONDS, None, pids)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                for mtu in MTUS:
                    results.append(Result(impl, mtu, error=str(exc)[:300]))
                    print(results[-1].row(), flush=True)
                continue
            for mtu in MTUS:
                result = Result(impl, mtu)
                try:
                    bed.set_tunnel_mtu(if_a, if_b, mtu)
                    bed.iperf3(TUNNEL_B, seconds, result, pids)
                except (RuntimeError, subprocess.TimeoutExpired, KeyError) as exc:
                    logs = " / ".join(f"{i}: {bed.log_tail(i, 3)}" for i in (if_a, if_b))
                    result.error = f"{str(exc)[:300]} ({logs})"
                results.append(result)
                print(result.row(), flush=True)
        finally:
            bed.stop(bed.daemons[started:])
    return results


def ratio_text(results: list[Result], mtu: int) -> tuple[float, str]:
    by = {(r.path, r.mtu): r for r in results}
    corral, go = by.get(("corral", mtu)), by.get(("wireguard-go", mtu))
    if not corral or not go or corral.error or go.error or not go.bits_per_second > 0:
        return math.nan, "n/a"
    ratio = corral.bits_per_second / go.bits_per_second
    return ratio, f"{ratio:.2f}"


def tree_state() -> str:
    """The commit, and the files of overlay/ that differ from it (others may be editing them)."""
    try:
        head = run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
        changed = run("git", "-C", str(ROOT), "status", "--porcelain", "--", "overlay").splitlines()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    files = [f"{line[3:]}{' (new)' if line.startswith('??') else ''}" for line in changed]
    return f"commit {head}" + (f", uncommitted: {', '.join(files)}" if files else ", clean")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per iperf3 run")
    parser.add_argument("--seconds", type=int, default=None,
                        help=f"iperf3 -t per run (default {SECONDS}; --quick {QUICK_SECONDS})")
    args = parser.parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, TUN)")
    missing = [t for t in ("ip", "iperf3", "wireguard-go", "wg") if shutil.which(t) is None]
    if missing or not os.path.exists("/dev/net/tun"):
        parser.error(f"missing: {', '.join(missing) or '/dev/net/tun'}")
    signal.signal(signal.SIGTERM, interrupt)
    go_version = run("wireguard-go", "--version", check=False).split("\n", 1)[0].strip()
    busy0 = machine_busy()
    time.sleep(1.0)
    idle_busy = machine_busy() - busy0
    print(f"overlay benchmark: one iperf3 TCP stream ({seconds} s) from namespace A to B over a "
          f"veth (underlay MTU {UNDERLAY_MTU}): plain, Corral's overlay, {go_version}; "
          f"{psutil.cpu_count()} CPUs, machine busy {100 * idle_busy:.0f}% before the run",
          flush=True)
    print(f"overlay code: {tree_state()}", flush=True)
    if idle_busy > 0.25:
        print(f"WARNING: the machine was {100 * idle_busy:.0f}% busy before the run: other work "
              "shares the 2 cores, throughput is lower and noisier", flush=True)
    print("impl s: CPU seconds of the implementation's processes on both sides; s/GB: per 10^9 "
          "bytes received; CPU: of one core; mach: the whole machine", flush=True)
    print(HEADER, flush=True)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-overlay-"))
    bed = Testbed(secrets.token_hex(3), workdir)
    failed = False
    try:
        try:
            results = measure(bed, seconds)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"overlay: setup failed: {exc}")
            return 1
        r1, t1 = ratio_text(results, MTUS[0])
        r2, t2 = ratio_text(results, MTUS[1])
        failed = any(r.error for r in results)
        met = [f"R{i} >= {TARGET_RATIO:.1f}: {'met' if r >= TARGET_RATIO else 'NOT met'} ({t})"
               for i, (r, t) in enumerate(((r1, t1), (r2, t2)), 1)]
        print(f"targets: {'; '.join(met)}; wall time {time.monotonic() - began:.1f} s")
        print(f"overlay: corral/wireguard-go throughput ratio {t1} at {MTUS[0]}, {t2} at {MTUS[1]}")
    except KeyboardInterrupt:
        print("overlay: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        clean_up(bed.close, workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
