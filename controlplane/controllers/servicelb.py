"""The service load-balancer controller: every LoadBalancer Service gets an external IP from a
configured pool (MetalLB's controller, or k3s' service load balancer, in small). The nodes'
agents then announce each IP on the network (``nodeagent.proxy.announce``) and proxy it
(``nodeagent.proxy.rules``).

Flow, in code order: ``IPPool``, the pure core (the pool flag parsed into address intervals;
``next_free`` gives the lowest address not in use). Then the pure reading of a Service:
``owned`` (type LoadBalancer without ``spec.loadBalancerClass``: Services with a class belong
to another implementation and are never touched) and ``ingress_ips``.

Then ``ServiceLBController``. Its handlers only enqueue Service keys. ``run`` starts the
Services informer and, once it has synced and before any worker runs, takes the ingress IP of
every owned Service that has one in the pool (oldest Service first: the first claimant keeps an
IP written twice), so a new leader never hands out an IP that is taken. ``reconcile(key)``:

* Service gone: its IP is freed (and the Services waiting for one get another look).
* not owned (the type moved away from LoadBalancer, or a class was set): its IP is freed and
  the pool's IPs are removed from its ``status.loadBalancer.ingress``.
* owned: the IP it holds is kept, unless it asked for another (the deprecated
  ``spec.loadBalancerIP``, honoured when in the pool and free; else a Warning Event
  ``AllocationFailed`` and no IP); without one it takes the pool IP its status names (when
  free), else the lowest free IP; a full pool is a Warning Event ``AllocationFailed`` (MetalLB's
  reason) and the Service waits for a release. The IP is held in memory *before* the status is
  written (``status.loadBalancer.ingress = [{"ip": ..., "ipMode": "VIP"}]``, through the status
  subresource, carrying the Service's resourceVersion: a compare-and-swap), so two reconciles
  of one term never hand out one IP twice; a failed write gives back what it had just taken.

Limits, as MetalLB's: one allocator runs at a time (the leader); IPv4 only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from ..client import (
    SERVICES,
    ApiClient,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    WorkQueue,
    key_of,
    run_workers,
)
from ..client.events import NORMAL, WARNING, EventRecorder
from ..client.tasks import spawn

log = logging.getLogger(__name__)

Obj = dict[str, Any]

COMPONENT = "service-lb-controller"
#: MetalLB's event reasons.
ALLOCATION_FAILED = "AllocationFailed"
IP_ALLOCATED = "IPAllocated"
#: ``status.loadBalancer.ingress[].ipMode``: traffic reaches the nodes with the IP as its
#: destination (kube-proxy then handles it), as opposed to "Proxy".
IP_MODE = "VIP"


class IPPool:
    """The addresses of ``--load-balancer-ip-pool``: comma-separated CIDRs (their host
    addresses: network and broadcast left out, as MetalLB's ``avoidBuggyIPs``, since a pool
    carved from a larger on-link subnet is common) and ``FIRST-LAST`` ranges (every address).
    Overlapping entries merge. ``ValueError`` with a readable reason on bad input."""

    def __init__(self, text: str) -> None:
        spans = sorted(_span(entry.strip()) for entry in text.split(",") if entry.strip())
        if not spans:
            raise ValueError("the pool is empty")
        merged: list[tuple[int, int]] = []
        for first, last in spans:
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        self._spans = merged
        self.size = sum(last - first + 1 for first, last in merged)

    def __contains__(self, ip: object) -> bool:
        value = _int(ip)
        return value is not None and any(first <= value <= last for first, last in self._spans)

    def next_free(self, used: Iterable[str]) -> str | None:
        """The lowest address of the pool not in ``used``; None when all are."""
        taken = {v for v in (_int(ip) for ip in used) if v is not None}
        for first, last in self._spans:
            value = first
            while value <= last and value in taken:
                value += 1
            if value <= last:
                return str(ipaddress.IPv4Address(value))
        return None


def _int(ip: object) -> int | None:
    try:
        return int(ipaddress.IPv4Address(ip)) if isinstance(ip, str) else None
    except ValueError:
        return None


def _span(entry: str) -> tuple[int, int]:
    """``CIDR`` or ``FIRST-LAST`` as the first and last address (integers)."""
    if "-" in entry:
        first_text, _, last_text = entry.partition("-")
        first, last = _int(first_text.strip()), _int(last_text.strip())
        if first is None or last is None:
            raise ValueError(f"{entry!r} is not a range of two IPv4 addresses")
        if first > last:
            raise ValueError(f"{entry!r}: the first address is after the last")
        return first, last
    try:
        network = ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a CIDR or FIRST-LAST range: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"{entry!r}: only IPv4 is supported")
    first, last = int(network.network_address), int(network.broadcast_address)
    return (first + 1, last - 1) if network.prefixlen < 31 else (first, last)


# -- reading a Service --------------------------------------------------------------------------

def owned(service: Obj) -> bool:
    """Whether this controller gives the Service its IP: LoadBalancer without a class (a class
    names another implementation, which Kubernetes leaves such Services to)."""
    spec = service.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def ingress_ips(service: Obj) -> list[str]:
    """The IPs in ``status.loadBalancer.ingress``, in order (hostnames skipped)."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress if isinstance(i, dict) and isinstance(i.get("ip"), str)]


def _age(service: Obj) -> tuple[str, str]:
    meta = service.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), key_of(service)


# -- the shell ----------------------------------------------------------------------------------

class ServiceLBController:
    def __init__(self, client: ApiClient, *, pool: IPPool,
                 informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self.pool = pool
        self._events = EventRecorder(client, COMPONENT)
        self._queue = WorkQueue()
        self._services = informers.informer(SERVICES)
        self._services.add_handler(FuncHandler(self._enqueue, lambda old, new:
                                               self._enqueue(new), self._enqueue))
        #: Service key -> the IP held for it; IP -> the key holding it.
        self._held: dict[str, str] = {}
        self._holder: dict[str, str] = {}
        #: Services without an IP for lack of one: another look when one is released.
        self._waiting: set[str] = set()
        #: key -> the problem last told in an event, so each is told once.
        self._told: dict[str, str] = {}

    async def run(self) -> None:
        """Allocate until cancelled."""
        informer = spawn(self._services.run(), name="servicelb: services informer")
        try:
            await self._services.synced.wait()
            self.occupy_existing()
            await run_workers("servicelb", self._queue, self.reconcile)
        finally:
            self._queue.shut_down()
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    def _enqueue(self, service: Obj) -> None:
        self._queue.add(key_of(service))

    def occupy_existing(self) -> None:
        """Hold the pool IP in the status of every cached owned Service, oldest first."""
        for service in sorted(self._services.list(), key=_age):
            ip = self._free_in_status(service) if owned(service) else None
            if ip is not None and key_of(service) not in self._held:
                self._hold(key_of(service), ip)
        log.info("servicelb: %d of %d pool IPs in use", len(self._holder), self.pool.size)

    @property
    def allocated(self) -> dict[str, str]:
        """Service key -> its IP (a copy)."""
        return dict(self._held)

    # -- one Service --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        service = self._services.get(key)
        if service is None:
            self._release(key)
            self._told.pop(key, None)
            self._waiting.discard(key)
            return
        if not owned(service):
            held = self._release(key)
            self._waiting.discard(key)
            theirs = bool((service.get("spec") or {}).get("loadBalancerClass"))
            ours = {ip for ip in ingress_ips(service) if ip == held or
                    (not theirs and ip in self.pool)}
            if ours:
                await self._write(service, [i for i in _ingress(service)
                                            if i.get("ip") not in ours])
            return
        fresh = False
        ip = self._held.get(key)
        requested = (service.get("spec") or {}).get("loadBalancerIP") or ""
        if ip is None or (requested and ip != requested):
            self._release(key)
            ip = await self._allocate(key, service, requested)
            fresh = ip is not None
        desired = [{"ip": ip, "ipMode": IP_MODE}] if ip else []
        if _ingress(service) == desired:
            return
        try:
            written = await self._write(service, desired)
        except BaseException:
            if fresh:
                self._release(key)
            raise
        if not written and fresh:
            self._release(key)  # changed meanwhile: the informer brings it back
        elif written and fresh:
            log.info("servicelb: %s gets %s", key, ip)
            await self._events.record(service, NORMAL, IP_ALLOCATED, f"Assigned IP [\"{ip}\"]")

    async def _allocate(self, key: str, service: Obj, requested: str) -> str | None:
        """Hold an IP for the Service (see the module docstring); None, told, when none fits."""
        if requested:
            holder = self._holder.get(requested)
            if requested not in self.pool:
                problem = f"requested IP {requested} is not in the pool"
            elif holder is not None:
                problem = f"requested IP {requested} is already in use by {holder}"
            else:
                self._hold(key, requested)
                return requested
        else:
            ip = self._free_in_status(service) or self.pool.next_free(self._holder)
            if ip is not None:
                self._hold(key, ip)
                return ip
            problem = "no available IPs"
        self._waiting.add(key)
        if self._told.get(key) != problem:
            self._told[key] = problem
            log.warning("servicelb: %s: %s", key, problem)
            await self._events.record(service, WARNING, ALLOCATION_FAILED,
                                      f"Failed to allocate IP for \"{key}\": {problem}")
        return None

    async def _write(self, service: Obj, ingress: list[Obj]) -> bool:
        """Write the Service's ingress through the status subresource, compare-and-swap on its
        resourceVersion; False when it changed or went meanwhile (its event brings it back)."""
        status = {**(service.get("status") or {}),
                  "loadBalancer": {"ingress": ingress} if ingress else {}}
        try:
            await self._client.update(SERVICES, {**service, "status": status},
                                      subresource="status")
        except (Conflict, NotFound):
            return False
        return True

    def _free_in_status(self, service: Obj) -> str | None:
        """The first pool IP of the Service's status that no Service holds."""
        return next((ip for ip in ingress_ips(service)
                     if ip in self.pool and ip not in self._holder), None)

    def _hold(self, key: str, ip: str) -> None:
        self._held[key] = ip
        self._holder[ip] = key
        self._waiting.discard(key)
        self._told.pop(key, None)

    def _release(self, key: str) -> str | None:
        """Free the Service's IP, if it holds one; the waiting Services get another look."""
        ip = self._held.pop(key, None)
        if ip is None:
            return None
        del self._holder[ip]
        log.info("servicelb: %s released %s", key, ip)
        for waiting in self._waiting:
            self._queue.add(waiting)
        return ip


def _ingress(service: Obj) -> list[Obj]:
    return list(((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
