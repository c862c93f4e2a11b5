"""Node IPAM: every Node gets a pod CIDR of its own, the lowest free ``/node_mask`` of the
cluster CIDR (kube-controller-manager's range allocator, IPv4).

Flow, in code order: ``CidrSet``, the pure allocator (a bitmap of the cluster CIDR's node-sized
subnets: allocate the lowest free one, occupy, release; no I/O), then
``NodeIpamController``. Its handlers only enqueue node names. ``run`` starts the shared node
informer and, once it has synced and before any worker runs, occupies the CIDR of every node
that has one (oldest node first), so a new leader never hands out a range that is taken.
``reconcile(name)`` then, for a node that

* is gone: frees its CIDR, and gives the nodes waiting for one another look;
* has a podCIDR: makes sure it is occupied on this node's behalf; a CIDR outside the cluster
  CIDR, unparsable, or already held by another node is left alone (the API never lets a podCIDR
  change once set), logged, and told once by a Warning event ``CIDRNotAvailable`` on the node;
* has none: takes the lowest free CIDR (kept reserved for the node until the write is seen) and
  writes ``spec.podCIDR`` and ``spec.podCIDRs`` with a merge patch carrying the node's
  resourceVersion, a compare-and-swap: a node changed meanwhile (or a deposed leader's late
  write) conflicts, and the informer brings the node back for another look. When no CIDR is
  left it records what Kubernetes records, a Normal event ``CIDRNotAvailable`` ("Node N status
  is now: CIDRNotAvailable", component ``cidrAllocator``), once, and waits for a release.

Limits, as Kubernetes' range allocator: one allocator runs at a time (the leader); uniqueness
across nodes rests on that, since each write compares only its own node's resourceVersion. A
collision that a deposed leader's late write might still cause is seen by the informer and told
by the Warning event above.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from ..client import (
    NODES,
    ApiClient,
    Conflict,
    FuncHandler,
    InformerFactory,
    Invalid,
    NotFound,
    WorkQueue,
    run_workers,
)
from ..client.tasks import spawn
from ..client.events import NORMAL, WARNING, EventRecorder

log = logging.getLogger(__name__)

#: DESIGN.md's network: the cluster CIDR and one /24 per node.
CLUSTER_CIDR = "10.244.0.0/16"
NODE_MASK = 24
#: kube-controller-manager refuses more than 2**16 node CIDRs per cluster CIDR.
MAX_NODE_MASK_BITS = 16
COMPONENT = "cidrAllocator"
CIDR_NOT_AVAILABLE = "CIDRNotAvailable"
ERR_NO_CIDRS_REMAINING = ("CIDR allocation failed; there are no remaining CIDRs left to allocate "
                          "in the accepted range")

Obj = dict[str, Any]
Network = ipaddress.IPv4Network


class CidrError(ValueError):
    """A CIDR that the set cannot take: unparsable, not IPv4, or outside the cluster CIDR."""


class CidrExhausted(CidrError):
    """Every node CIDR is taken."""

    def __init__(self) -> None:
        super().__init__(ERR_NO_CIDRS_REMAINING)


class CidrSet:
    """The ``/node_mask`` subnets of one IPv4 cluster CIDR, each free or used (Kubernetes'
    cidrset). Subnet ``i`` is the i-th in address order; ``allocate_next`` takes the lowest free
    one. ``occupy`` and ``release`` take any CIDR inside the cluster CIDR and mark every subnet
    it overlaps, so a node given a larger or smaller range by hand is accounted for too."""

    def __init__(self, cluster_cidr: str, node_mask: int) -> None:
        try:
            cluster = ipaddress.ip_network(cluster_cidr, strict=True)
        except ValueError as exc:
            raise CidrError(f"cluster CIDR {cluster_cidr!r}: {exc}") from None
        if not isinstance(cluster, Network):
            raise CidrError(f"cluster CIDR {cluster_cidr}: only IPv4 is supported")
        if not cluster.prefixlen <= node_mask <= cluster.max_prefixlen:
            raise CidrError(f"node CIDR mask /{node_mask} must be between the cluster CIDR's "
                            f"/{cluster.prefixlen} and /{cluster.max_prefixlen}")
        if node_mask - cluster.prefixlen > MAX_NODE_MASK_BITS:
            raise CidrError(f"node CIDR mask /{node_mask} is more than {MAX_NODE_MASK_BITS} bits "
                            f"longer than the cluster CIDR's /{cluster.prefixlen}")
        self.cluster = cluster
        self.node_mask = node_mask
        #: How many node CIDRs the cluster CIDR holds.
        self.size = 1 << (node_mask - cluster.prefixlen)
        self._shift = cluster.max_prefixlen - node_mask
        self._base = int(cluster.network_address)
        self._used = 0  # bit i set: subnet i is used
        self._count = 0

    def __len__(self) -> int:
        """Node CIDRs in use."""
        return self._count

    @property
    def free(self) -> int:
        return self.size - self._count

    def cidr(self, index: int) -> str:
        """The ``index``-th node CIDR, as text."""
        address = ipaddress.IPv4Address(self._base + (index << self._shift))
        return f"{address}/{self.node_mask}"

    def parse(self, cidr: str) -> Network:
        """``cidr`` as a network (host bits must be zero); ``CidrError`` if it is not an IPv4
        CIDR inside the cluster CIDR."""
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError) as exc:
            raise CidrError(f"{cidr!r} is not a valid CIDR: {exc}") from None
        if not isinstance(network, Network) or not network.subnet_of(self.cluster) \
                and not self.cluster.subnet_of(network):
            raise CidrError(f"{cidr} is outside the cluster CIDR {self.cluster}")
        return network

    def _span(self, cidr: str) -> tuple[int, int]:
        """The first and last index of the node CIDRs ``cidr`` overlaps."""
        network = self.parse(cidr)
        first = max(int(network.network_address), self._base)
        last = min(int(network.broadcast_address), int(self.cluster.broadcast_address))
        return (first - self._base) >> self._shift, (last - self._base) >> self._shift

    def _mask(self, cidr: str) -> int:
        first, last = self._span(cidr)
        return ((1 << (last - first + 1)) - 1) << first

    def allocate_next(self) -> str:
        """Take the lowest free node CIDR; ``CidrExhausted`` when none is left."""
        index = (~self._used & (self._used + 1)).bit_length() - 1  # the lowest clear bit
        if index >= self.size:
            raise CidrExhausted()
        self._used |= 1 << index
        self._count += 1
        return self.cidr(index)

    def in_use(self, cidr: str) -> bool:
        """Whether any node CIDR that ``cidr`` overlaps is used."""
        return bool(self._used & self._mask(cidr))

    def occupy(self, cidr: str) -> None:
        """Mark every node CIDR that ``cidr`` overlaps as used (again, harmlessly)."""
        mask = self._mask(cidr)
        self._count += bin(mask & ~self._used).count("1")
        self._used |= mask

    def release(self, cidr: str) -> None:
        """Mark every node CIDR that ``cidr`` overlaps as free (again, harmlessly)."""
        mask = self._mask(cidr)
        self._count -= bin(mask & self._used).count("1")
        self._used &= ~mask


def _pod_cidr(node: Obj) -> str:
    """The node's IPv4 pod CIDR as written (``podCIDRs`` first, as the API keeps them), or ""."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return next((c for c in cidrs if isinstance(c, str) and ":" not in c), "")


def _age(node: Obj) -> tuple[str, str]:
    meta = node.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


class NodeIpamController:
    def __init__(self, client: ApiClient, *, cluster_cidr: str = CLUSTER_CIDR,
                 node_mask: int = NODE_MASK, informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._cidrs = CidrSet(cluster_cidr, node_mask)
        self._events = EventRecorder(client, COMPONENT)
        self._queue = WorkQueue()
        self._nodes = informers.informer(NODES)
        self._nodes.add_handler(FuncHandler(self._enqueue, lambda old, new: self._enqueue(new),
                                            self._enqueue))
        #: node -> the CIDR held for it (its podCIDR, or one allocated and being written).
        self._held: dict[str, str] = {}
        #: CIDR (normalised) -> the node holding it.
        self._holder: dict[str, str] = {}
        #: Nodes with no CIDR for lack of space, or with one they may not have: another look
        #: when a CIDR is released.
        self._waiting: set[str] = set()
        #: node -> the problem last told in an event, so each is told once.
        self._told: dict[str, str] = {}

    @property
    def cidrs(self) -> CidrSet:
        return self._cidrs

    async def run(self) -> None:
        """Allocate until cancelled."""
        informer = spawn(self._nodes.run(), name="nodeipam: nodes informer")
        try:
            await self._nodes.synced.wait()
            self.occupy_existing()
            await run_workers("nodeipam", self._queue, self.reconcile)
        finally:
            self._queue.shut_down()
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    def _enqueue(self, node: Obj) -> None:
        self._queue.add((node.get("metadata") or {}).get("name", ""))

    def occupy_existing(self) -> None:
        """Take the CIDR of every cached node that has one, oldest first (the first claimant of
        a CIDR keeps it), before anything is allocated."""
        for node in sorted(self._nodes.list(), key=_age):
            cidr = _pod_cidr(node)
            if cidr:
                self._adopt(node["metadata"]["name"], cidr)

    # -- one node -----------------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None:
            self._release(name)
            self._told.pop(name, None)
            self._waiting.discard(name)
            return
        cidr = _pod_cidr(node)
        if cidr:
            problem = self._adopt(name, cidr)
            if problem is None:
                self._waiting.discard(name)
                self._told.pop(name, None)
                return
            self._waiting.add(name)
            await self._tell(node, WARNING, problem)
            return
        if node["metadata"].get("deletionTimestamp"):
            return
        cidr = self._held.get(name, "")
        if not cidr:
            try:
                cidr = self._cidrs.allocate_next()
            except CidrExhausted as exc:
                self._waiting.add(name)
                await self._tell(node, NORMAL, f"failed to allocate cidr from cluster cidr at "
                                 f"idx:0: {exc}")
                return
            self._hold(name, cidr)
        patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                 "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
        try:
            await self._client.patch(NODES, "", name, patch, patch_type="merge")
        except (Conflict, Invalid) as exc:
            # Changed meanwhile (or given a CIDR by someone else): the informer brings it back;
            # the reservation waits for it.
            log.info("node %s: podCIDR %s not written (%s); looking again", name, cidr,
                     exc.reason)
            return
        except NotFound:
            self._release(name)
            return
        self._waiting.discard(name)
        self._told.pop(name, None)
        log.info("node %s: podCIDR %s", name, cidr)

    def _adopt(self, name: str, cidr: str) -> str | None:
        """Hold ``cidr``, the node's podCIDR, for it; else the reason it cannot."""
        try:
            key = str(self._cidrs.parse(cidr))
        except CidrError as exc:
            self._release(name)  # what was reserved for it is not what it has
            return f"Node {name} has podCIDR {cidr} that cannot be used: {exc}"
        if self._held.get(name) == key:
            return None
        self._release(name)  # one allocated for it before the node got another: back it goes
        holder = self._holder.get(key)
        if holder is not None and holder != name or holder is None and self._cidrs.in_use(key):
            whose = f"node {holder}" if holder else "another node"
            return f"Node {name} has podCIDR {cidr}, which {whose} holds already"
        self._hold(name, key)
        return None

    def _hold(self, name: str, cidr: str) -> None:
        self._cidrs.occupy(cidr)
        self._held[name] = cidr
        self._holder[cidr] = name

    def _release(self, name: str) -> None:
        cidr = self._held.pop(name, None)
        if cidr is None:
            return
        del self._holder[cidr]
        self._cidrs.release(cidr)
        log.info("node %s: podCIDR %s released", name, cidr)
        for waiting in self._waiting:  # space for one, or a collision resolved
            self._queue.add(waiting)

    async def _tell(self, node: Obj, type_: str, problem: str) -> None:
        """Log ``problem`` and record its event, once per node and problem."""
        name = node["metadata"]["name"]
        if self._told.get(name) == problem:
            return
        self._told[name] = problem
        log.warning("node %s: %s", name, problem)
        message = (f"Node {name} status is now: {CIDR_NOT_AVAILABLE}" if type_ == NORMAL
                   else problem)
        await self._events.record(node, type_, CIDR_NOT_AVAILABLE, message)  # never raises
