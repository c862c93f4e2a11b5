"""BridgeNetwork: the node's Pod network, doing what the CNI ``bridge`` plugin with
``host-local`` IPAM does, with iproute2 and iptables.

Layout on a node whose podCIDR is 10.244.1.0/24::

    host namespace                               pod namespace (one per sandbox)
    corral0 (bridge, 10.244.1.1/24) --- vethXXXXXXXX <=veth=> eth0 (10.244.1.N/24)
                                                             default via 10.244.1.1

The flow, in the order of the code:

``setup`` (idempotent, also run by the first ``attach``) creates the bridge, gives it the
gateway address (the podCIDR's first host), turns on IPv4 forwarding so Pod traffic can be
routed off the node (to the overlay, to other hosts), and, with ``masquerade``, adds a NAT rule
in its own chain ``CORRAL-POSTROUTING`` so traffic from Pods to outside the cluster CIDR leaves
with the node's address. Every rule is checked (``iptables -C``) before it is added, so running
setup again adds nothing.

``attach`` allocates an address (``HostLocalIPAM``), creates a veth pair whose host end is named
after the sandbox id (``veth`` + 8 hex digits of its hash: stable, so a restarted agent finds it,
and within the kernel's 15 characters) and whose other end is created directly inside the
sandbox's namespace as ``eth0``, so no temporary name ever appears in the host namespace. The host
end joins the bridge; inside the sandbox the address, ``lo`` and the default route are set with
``nsenter --net=PATH ip``. Any failure rolls back: the veth is deleted and the address released,
so a retry starts clean and a failed attach leaks nothing.

``detach`` deletes the host end (the kernel removes both ends of a veth pair; when the
namespace died, the kernel already did) and releases the address. ``teardown`` removes the bridge
and the NAT rule, for tests and ``corral lab down``.

``host_netns`` names a network namespace (``ip -n NAME``) that plays the host: tests and the
multi-host lab run each node's "host" side in its own namespace. None is the agent's own.
Every command goes through ``command.run``; every failure is a one-line PodNetworkError.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from nodeagent.network.addresses import gateway_of, parse_pod_cidr
from nodeagent.network.base import PodNetworkError
from nodeagent.network.command import run
from nodeagent.network.ipam import HostLocalIPAM

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "corral0"
#: The interface name inside every Pod, as in Kubernetes.
POD_IFNAME = "eth0"
#: Host ends of Pod veths: this prefix and 8 hex digits of sha256(sandbox id).
VETH_PREFIX = "veth"
#: Our NAT chain in the host namespace, jumped to from POSTROUTING.
NAT_CHAIN = "CORRAL-POSTROUTING"
#: Linux's IFNAMSIZ less the terminating NUL.
MAX_IFNAME_LEN = 15
#: Seconds iptables waits for the xtables lock that other tools (kube-proxy, docker) also take.
XTABLES_WAIT_S = "5"


def _batch(*commands: tuple[str, ...]) -> str:
    """``ip -batch`` input: one command per line (arguments here never hold spaces)."""
    return "".join(" ".join(command) + "\n" for command in commands)


def veth_name(sandbox_id: str) -> str:
    """The host end of the sandbox's veth: stable across agent restarts, 12 characters."""
    return VETH_PREFIX + hashlib.sha256(sandbox_id.encode()).hexdigest()[:8]


class BridgeNetwork:
    """The real PodNetwork of a node (see the module docstring)."""

    def __init__(
        self,
        pod_cidr: str,
        state_dir: Path,
        *,
        bridge: str = DEFAULT_BRIDGE,
        mtu: int = 1500,
        host_netns: str | None = None,
        cluster_cidr: str | None = None,
        masquerade: bool = True,
    ) -> None:
        try:
            self.network = parse_pod_cidr(pod_cidr)
            if cluster_cidr is not None:
                parse_pod_cidr(cluster_cidr)
        except ValueError as exc:
            raise PodNetworkError(str(exc)) from None
        if not bridge or len(bridge) > MAX_IFNAME_LEN or "/" in bridge or " " in bridge:
            raise PodNetworkError(f"invalid bridge name {bridge!r}")
        if not 68 <= mtu <= 65535:
            raise PodNetworkError(f"invalid MTU {mtu}")
        self.pod_cidr = str(self.network)
        self.gateway = str(gateway_of(self.network))
        self.bridge = bridge
        self.mtu = mtu
        self.host_netns = host_netns
        self.cluster_cidr = cluster_cidr
        self.masquerade = masquerade
        self.ipam = HostLocalIPAM(self.pod_cidr, Path(state_dir) / "ipam")
        # Setup and teardown one at a time (they share the bridge and the NAT chain); attaches
        # and detaches of different sandboxes run at once (each touches only its own veth and
        # its IPAM file, which has its own lock), but a sandbox's attach never interleaves
        # with its own detach.
        self._lock = asyncio.Lock()
        self._sandbox_locks: dict[str, asyncio.Lock] = {}
        self._set_up = False

    # -- PodNetwork ------------------------------------------------------------------------

    def _sandbox_lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._sandbox_locks.setdefault(sandbox_id, asyncio.Lock())

    async def attach(self, sandbox_id: str, netns_path: str) -> str:
        if not self._set_up:
            await self.setup()
        async with self._sandbox_lock(sandbox_id):
            veth = veth_name(sandbox_id)
            held = self.ipam.lookup(sandbox_id)
            if held is not None and await self._link_exists(veth):
                return held
            try:
                address = await self._attach(sandbox_id, veth, netns_path)
            except BaseException:
                await self._rollback(sandbox_id, veth)
                raise
            log.info("network: sandbox %s attached as %s (%s, netns %s)",
                     sandbox_id, address, veth, netns_path)
            return address

    async def detach(self, sandbox_id: str, netns_path: str | None) -> None:
        async with self._sandbox_lock(sandbox_id):
            veth = veth_name(sandbox_id)
            # Deleting the host end removes the pair; if the namespace died the kernel removed
            # both already, so netns_path is not needed.
            await self._delete_link(veth)
            self.ipam.release(sandbox_id)
            log.info("network: sandbox %s detached", sandbox_id)
        self._sandbox_locks.pop(sandbox_id, None)

    def ip_of(self, sandbox_id: str) -> str | None:
        return self.ipam.lookup(sandbox_id)

    # -- the bridge ------------------------------------------------------------------------

    async def setup(self) -> None:
        """Bridge with the gateway address, forwarding on, the NAT rule; safe to repeat."""
        async with self._lock:
            await self._setup()

    async def teardown(self) -> None:
        """Remove the bridge and our NAT rule (and the chain once empty). IP forwarding is left
        on: other software on the host may rely on it. Pods' veths are not touched."""
        async with self._lock:
            await self._delete_link(self.bridge)
            if self.masquerade:
                await self._remove_masquerade()
            self._set_up = False
            log.info("network: bridge %s torn down", self.bridge)

    async def _setup(self) -> None:
        if not await self._link_exists(self.bridge):
            result = await run(*self._host_ip("link", "add", "name", self.bridge,
                                              "type", "bridge"), check=False)
            if result.returncode != 0 and not await self._link_exists(self.bridge):
                raise PodNetworkError(f"cannot create bridge {self.bridge}: "
                                      f"{result.stderr.strip()}")
        await run(*self._host_ip("link", "set", "dev", self.bridge, "mtu", str(self.mtu), "up"))
        await self._set_bridge_address()
        await run(*self._host_exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
        # Pod-to-Service traffic DNATed to a pod on the same bridge comes back bridged, not
        # routed: only with bridged traffic through iptables (br_netfilter) does conntrack undo
        # the DNAT on the reply (kubenet and kube-proxy need the same). Where the module is not
        # loaded the key is absent: best effort, said once.
        bridged = await run(*self._host_exec(
            "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"), check=False)
        if bridged.returncode != 0:
            log.warning("network: net.bridge.bridge-nf-call-iptables not set (%s): Services "
                        "between pods of this node need br_netfilter", bridged.stderr.strip())
        if self.masquerade:
            await self._ensure_masquerade()
        self._set_up = True
        log.info("network: bridge %s up with %s/%d", self.bridge, self.gateway,
                 self.network.prefixlen)

    async def _set_bridge_address(self) -> None:
        """The gateway address on the bridge, and no other IPv4 address: after a podCIDR change
        the old gateway would route the old range to a bridge that no longer serves it."""
        want = f"{self.gateway}/{self.network.prefixlen}"
        shown = await run(*self._host_ip("-o", "-4", "addr", "show", "dev", self.bridge))
        have = [words[words.index("inet") + 1] for words in
                (line.split() for line in shown.stdout.splitlines()) if "inet" in words]
        for stale in have:
            if stale != want:
                await run(*self._host_ip("addr", "del", stale, "dev", self.bridge))
        if want not in have:
            await run(*self._host_ip("addr", "add", want, "dev", self.bridge))

    # -- NAT -------------------------------------------------------------------------------

    def _masquerade_rule(self) -> tuple[str, ...]:
        inside = self.cluster_cidr or self.pod_cidr
        return ("-s", self.pod_cidr, "!", "-d", inside, "-j", "MASQUERADE")

    async def _iptables(self, *args: str, check: bool = True) -> int:
        result = await run(*self._host_exec("iptables", "-w", XTABLES_WAIT_S, "-t", "nat",
                                            *args), check=check)
        return result.returncode

    async def _ensure_masquerade(self) -> None:
        if await self._iptables("-S", NAT_CHAIN, check=False) != 0:
            await self._iptables("-N", NAT_CHAIN)
        if await self._iptables("-C", "POSTROUTING", "-j", NAT_CHAIN, check=False) != 0:
            await self._iptables("-A", "POSTROUTING", "-j", NAT_CHAIN)
        rule = self._masquerade_rule()
        if await self._iptables("-C", NAT_CHAIN, *rule, check=False) != 0:
            await self._iptables("-A", NAT_CHAIN, *rule)

    async def _remove_masquerade(self) -> None:
        if await self._iptables("-S", NAT_CHAIN, check=False) != 0:
            return
        rule = self._masquerade_rule()
        while await self._iptables("-C", NAT_CHAIN, *rule, check=False) == 0:
            await self._iptables("-D", NAT_CHAIN, *rule)
        listed = await run(*self._host_exec("iptables", "-w", XTABLES_WAIT_S, "-t", "nat",
                                            "-S", NAT_CHAIN))
        if len(listed.stdout.strip().splitlines()) > 1:
            return  # another BridgeNetwork in this namespace still has its rule here
        while await self._iptables("-C", "POSTROUTING", "-j", NAT_CHAIN, check=False) == 0:
            await self._iptables("-D", "POSTROUTING", "-j", NAT_CHAIN)
        await self._iptables("-X", NAT_CHAIN)

    # -- one sandbox -----------------------------------------------------------------------

    async def _attach(self, sandbox_id: str, veth: str, netns_path: str) -> str:
        if not os.path.exists(netns_path):
            raise PodNetworkError(f"network namespace {netns_path} does not exist")
        address = self.ipam.allocate(sandbox_id)
        await self._delete_link(veth)  # the host end left by an attach that crashed midway
        mtu = str(self.mtu)
        # Two ``ip -batch`` runs, one per namespace: each process start costs more than the
        # netlink calls it makes, and attaches are on every pod's startup path.
        await run(*self._host_ip("-batch", "-"), stdin=_batch(
            ("link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", POD_IFNAME,
             "mtu", mtu, "netns", netns_path),
            ("link", "set", "dev", veth, "master", self.bridge, "up"),
            # Hairpin: a pod reaching itself through a Service's DNAT leaves and re-enters
            # by the same port, which a bridge refuses without it (the kubelet's hairpin-veth).
            ("link", "set", "dev", veth, "type", "bridge_slave", "hairpin", "on")))
        cidr = f"{address}/{self.network.prefixlen}"
        await run(*self._pod_ip(netns_path, "-batch", "-"), stdin=_batch(
            ("addr", "add", cidr, "dev", POD_IFNAME),
            ("link", "set", "dev", POD_IFNAME, "up"),
            ("link", "set", "dev", "lo", "up"),
            ("route", "add", "default", "via", self.gateway, "dev", POD_IFNAME)))
        return address

    async def _rollback(self, sandbox_id: str, veth: str) -> None:
        """Undo a partial attach; errors here are logged, the attach's own error is raised."""
        try:
            await self._delete_link(veth)
        except PodNetworkError as exc:
            log.warning("network: rollback of %s left %s: %s", sandbox_id, veth, exc)
        self.ipam.release(sandbox_id)

    # -- commands --------------------------------------------------------------------------

    def _host_ip(self, *args: str) -> tuple[str, ...]:
        return ("ip", "-n", self.host_netns, *args) if self.host_netns else ("ip", *args)

    def _host_exec(self, *argv: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.host_netns, *argv) if self.host_netns else argv

    @staticmethod
    def _pod_ip(netns_path: str, *args: str) -> tuple[str, ...]:
        return ("nsenter", f"--net={netns_path}", "ip", *args)

    async def _link_exists(self, name: str) -> bool:
        result = await run(*self._host_ip("link", "show", "dev", name), check=False)
        return result.returncode == 0

    async def _delete_link(self, name: str) -> None:
        """Delete the host-side link ``name`` if present; gone already (or meanwhile) is fine."""
        if not await self._link_exists(name):
            return
        result = await run(*self._host_ip("link", "del", "dev", name), check=False)
        if result.returncode != 0 and await self._link_exists(name):
            raise PodNetworkError(f"cannot delete {name}: {result.stderr.strip()}")
