"""Announcing LoadBalancer IPs on the node's network: MetalLB's layer-2 mode, with the kernel
answering ARP.

Every LoadBalancer ingress IP is held by one node at a time, chosen without any coordination
other than the API: each agent computes the same election from the same Services and Nodes
(pure, first in this file). ``announced_ips`` are the ingress IPs of the Services that Corral's
load balancer serves (type LoadBalancer without ``loadBalancerClass``, the ones
``controlplane.controllers.servicelb`` gives an IP); ``candidates`` are the Ready nodes not
labelled ``node.kubernetes.io/exclude-from-external-load-balancers``; ``elect`` picks, for an
IP, the candidate with the smallest sha256 of ``node + "#" + ip``, as MetalLB's speakers do, so
the IPs spread over the nodes and one node's loss moves only its own IPs.

Then the shell, ``Announcer`` (one per agent with ``--service-proxy``), with informers of its
own on Services and Nodes. Whenever either changes (debounced), and every ``resync`` seconds,
``sync`` makes the dummy interface ``corral-lb0`` (as kube-proxy's IPVS mode has
``kube-ipvs0``) hold exactly the IPs this node is elected for, each as a /32: an IP there is
local, so Linux answers ARP for it on the uplink (``arp_ignore`` 0, its default) and the proxy's
rules for it (``rules``: CORRAL-EXT- chains) take the traffic. Each IP taken is announced by a
gratuitous ARP on the uplink (the interface holding the node IP: ``network.garp``), so the
segment's hosts move their neighbour entry from the node that held it before at once. An IP
the node is no longer elected for is removed. Where the kernel has no dummy link type, an
empty bridge holds the IPs instead (the same to routing and ARP). When the announcer stops
(the agent stops) it deletes the interface, so a stopped agent leaves no IP answering;
``remove_device`` does the same for ``corral down``.

Limits, as MetalLB's layer 2: one node takes all the traffic of an IP; a node that keeps its
network but loses the API (a partition) keeps answering for its IPs while another takes them
over. Every command goes through ``network.command.run``; ``host_netns`` names a namespace
playing the host (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
from collections.abc import Iterable

from controlplane.client import NODES, SERVICES, ApiClient, FuncHandler, InformerFactory
from controlplane.client.tasks import spawn
from nodeagent.network import garp
from nodeagent.network.base import PodNetworkError
from nodeagent.network.command import run
from nodeagent.proxy.rules import Obj, ingress_ips

log = logging.getLogger(__name__)

#: The interface holding the announced IPs.
LB_DEVICE = "corral-lb0"
#: Nodes with this label never hold a LoadBalancer IP (Kubernetes' well-known label).
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
#: A change is acted on this long after it came: a burst of changes is one sync.
DEBOUNCE_SECONDS = 0.1
#: The interface is checked this often even without changes (repairs what others removed).
RESYNC_SECONDS = 30.0
#: A failed sync is retried after this long.
RETRY_SECONDS = 2.0


# -- the election (pure) -------------------------------------------------------------------------

def announced_ips(service: Obj) -> tuple[str, ...]:
    """The ingress IPs to announce for ``service``: those of Corral's own load balancer."""
    if (service.get("spec") or {}).get("loadBalancerClass"):
        return ()
    return ingress_ips(service)


def candidates(nodes: Iterable[Obj]) -> list[str]:
    """The names of the nodes that may hold an IP: Ready and not excluded."""
    names = []
    for node in nodes:
        meta = node.get("metadata") or {}
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in conditions if isinstance(c, dict))
        if ready and EXCLUDE_LABEL not in (meta.get("labels") or {}) and meta.get("name"):
            names.append(meta["name"])
    return names


def elect(ip: str, nodes: Iterable[str]) -> str | None:
    """The node holding ``ip``: the smallest sha256(node + "#" + ip); None without nodes."""
    return min(nodes, key=lambda node: hashlib.sha256(f"{node}#{ip}".encode()).digest(),
               default=None)


def elected_ips(node: str, services: Iterable[Obj], nodes: Iterable[Obj]) -> set[str]:
    """The IPs ``node`` is to hold."""
    names = candidates(nodes)
    return {ip for service in services for ip in announced_ips(service)
            if elect(ip, names) == node}


# -- the shell ----------------------------------------------------------------------------------

class Announcer:
    """One node's announcer; ``run()`` until cancelled."""

    def __init__(self, client: ApiClient, node_name: str, node_ip: str, *,
                 host_netns: str | None = None, device: str = LB_DEVICE,
                 debounce: float = DEBOUNCE_SECONDS, resync: float = RESYNC_SECONDS,
                 retry: float = RETRY_SECONDS,
                 informers: InformerFactory | None = None) -> None:
        self.node_name = node_name
        self.node_ip = node_ip
        self.host_netns = host_netns
        self.device = device
        self.debounce = debounce
        self.resync = resync
        self.retry = retry
        informers = informers or InformerFactory(client)
        self.services = informers.informer(SERVICES)
        self.nodes = informers.informer(NODES)
        self._changed = asyncio.Event()
        for informer in (self.services, self.nodes):
            informer.add_handler(FuncHandler(self._mark, lambda _o, _n: self._mark(None),
                                             self._mark))

    def _mark(self, _obj: Obj | None) -> None:
        self._changed.set()

    def desired(self) -> set[str]:
        """The IPs this node is elected for, from the informers' caches now."""
        return elected_ips(self.node_name, self.services.list(), self.nodes.list())

    async def run(self) -> None:
        tasks = [spawn(self.services.run(), name="announcer services informer"),
                 spawn(self.nodes.run(), name="announcer nodes informer")]
        try:
            await self.services.synced.wait()
            await self.nodes.synced.wait()
            while True:
                self._changed.clear()
                wait = self.resync
                try:
                    await self.sync()
                except PodNetworkError as exc:
                    log.error("announcer: %s", exc)
                    wait = self.retry
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
                await asyncio.sleep(self.debounce)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.teardown()
            except PodNetworkError as exc:
                log.warning("announcer: IPs not withdrawn: %s", exc)

    async def sync(self) -> None:
        """Make the interface hold exactly the elected IPs (nothing to do: one ``ip`` call)."""
        want, have = self.desired(), await self.addresses()
        if want - have:
            await self._ensure_device()
        for ip in sorted(have - want):
            await run(*self._ip("addr", "del", f"{ip}/32", "dev", self.device))
            log.info("announcer: %s released", ip)
        uplink = await self._uplink() if want - have else None
        for ip in sorted(want - have):
            await run(*self._ip("addr", "add", f"{ip}/32", "dev", self.device))
            log.info("announcer: %s held on %s", ip, self.node_name)
            if uplink is not None:
                await self._announce(uplink, ip)

    async def addresses(self) -> set[str]:
        """The IPv4 addresses the interface holds (none when it does not exist)."""
        shown = await run(*self._ip("-o", "-4", "addr", "show", "dev", self.device),
                          check=False)
        return {address.split("/")[0] for _, address in _inet(shown.stdout)}

    async def teardown(self) -> None:
        """Delete the interface and so every IP it holds."""
        await remove_device(host_netns=self.host_netns, device=self.device)

    async def _ensure_device(self) -> None:
        if not await _device_exists(self.host_netns, self.device):
            added = await run(*self._ip("link", "add", self.device, "type", "dummy"),
                              check=False)
            if added.returncode:
                log.info("announcer: no dummy link type (%s); an empty bridge holds the IPs",
                         added.stderr.strip())
                await run(*self._ip("link", "add", self.device, "type", "bridge"))
        await run(*self._ip("link", "set", "dev", self.device, "up"))

    async def _uplink(self) -> str | None:
        """The interface holding the node IP; None (logged) when no interface does."""
        shown = await run(*self._ip("-o", "-4", "addr", "show"))
        for ifname, address in _inet(shown.stdout):
            if address.split("/")[0] == self.node_ip and ifname != self.device:
                return ifname
        log.warning("announcer: no interface holds the node IP %s: no gratuitous ARP",
                    self.node_ip)
        return None

    async def _announce(self, uplink: str, ip: str) -> None:
        """A gratuitous ARP for ``ip`` on ``uplink``: best effort (ARP replies still work)."""
        try:
            if self.host_netns is None:
                garp.send(uplink, ip)
            else:
                await run("ip", "netns", "exec", self.host_netns, sys.executable,
                          garp.__file__, uplink, ip)
        except (OSError, PodNetworkError) as exc:
            log.warning("announcer: gratuitous ARP for %s on %s: %s", ip, uplink, exc)

    def _ip(self, *args: str) -> tuple[str, ...]:
        return _ip(self.host_netns, *args)


async def remove_device(*, host_netns: str | None = None, device: str = LB_DEVICE) -> None:
    """Delete the announcer's interface, if there is one (``corral down``)."""
    if await _device_exists(host_netns, device):
        await run(*_ip(host_netns, "link", "del", "dev", device))
        log.info("announcer: %s deleted", device)


async def _device_exists(host_netns: str | None, device: str) -> bool:
    return (await run(*_ip(host_netns, "link", "show", "dev", device), check=False)) \
        .returncode == 0


def _ip(host_netns: str | None, *args: str) -> tuple[str, ...]:
    return ("ip", "-n", host_netns, *args) if host_netns else ("ip", *args)


def _inet(shown: str) -> list[tuple[str, str]]:
    """(interface, address/prefix) of each line of ``ip -o -4 addr show``."""
    found = []
    for line in shown.splitlines():
        words = line.split()
        if "inet" in words[:-1] and len(words) > 1:
            found.append((words[1].split("@")[0], words[words.index("inet") + 1]))
    return found
