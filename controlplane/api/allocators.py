"""Service ClusterIP and NodePort allocation, as kube-apiserver's ipallocator/portallocator.

Flow, in the order the code appears:

- ``Bitmap``: the pure core. One bit per value of a range (offset 0 = the first value),
  ``allocate`` a given offset, ``allocate_next`` a free one (random start in the upper band
  first, then the lower "static" band, as Kubernetes' ServiceIPStaticSubrange and
  ServiceNodePortStaticSubrange do, so clients that pick values by hand pick from a band
  automatic allocation leaves alone as long as it can), ``release``, ``has``; ``to_bytes`` /
  ``from_bytes`` (a zlib-compressed bitmap: a /12 is 128 KiB raw, a few hundred bytes sparse).
- ``IPRange`` and ``PortRange``: values <-> offsets, the Kubernetes wording of their errors.
- ``RangeSnapshot``: one range as stored (``/registry/ranges/serviceips``,
  ``/registry/ranges/servicenodeports``: the range it covers and its bitmap, Kubernetes'
  RangeAllocation) plus the ``Compare`` that guards a write of it.
- ``ServiceAllocations``: what a Service write does to the ranges. The registry calls
  ``plan(old, new)`` (create: old None; delete: new None) under ``lock``; it fills the cluster
  IP and node ports of ``new`` and answers the compares and puts to add to the Service's own
  store transaction. The Service and its allocations commit together or not at all (the Store
  has multi-key transactions), so a failed create never leaks an allocation and no Service
  exists without one; when the transaction fails only because a range moved (another API
  server allocated), the registry plans again. A range key that does not exist yet is built
  from the Services already stored (Kubernetes' repair controller, run once), so a cluster
  whose Services predate allocation starts consistent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raftstore.store import Compare, KeyValue, Op, Put, Store, Unavailable

from . import errors

Obj = dict[str, Any]

#: kube-apiserver's defaults (``--service-cluster-ip-range``, ``--service-node-port-range``).
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
#: Where the allocation bitmaps live (kube-apiserver's keys).
SERVICE_IPS_KEY = "/registry/ranges/serviceips"
NODE_PORTS_KEY = "/registry/ranges/servicenodeports"
#: The largest IPv4 service CIDR Kubernetes accepts is a /12.
MIN_SERVICE_PREFIX = 12
HEADLESS = "None"


class RangeFull(Exception):
    """No free value is left in the range."""


class Bitmap:
    """A set of offsets in ``[0, size)``; pure, no I/O. ``reserved`` is the lower static band
    that ``allocate_next`` uses only when the upper band is full."""

    def __init__(self, size: int, reserved: int = 0, bits: int = 0) -> None:
        if size <= 0:
            raise ValueError("a range needs at least one value")
        self.size = size
        self.reserved = min(max(reserved, 0), size)
        self._bits = bits & ((1 << size) - 1)

    def has(self, offset: int) -> bool:
        return 0 <= offset < self.size and bool((self._bits >> offset) & 1)

    def allocate(self, offset: int) -> bool:
        """Take ``offset``; False when it was taken already."""
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset} outside [0, {self.size})")
        if self.has(offset):
            return False
        self._bits |= 1 << offset
        return True

    def allocate_next(self, rng: random.Random | None = None) -> int:
        """Take a free offset: from a random start in the upper band, wrapping, then the lower
        band; ``RangeFull`` when none is left."""
        rng = rng or random
        for lo, hi in ((self.reserved, self.size), (0, self.reserved)):
            if lo >= hi:
                continue
            start = rng.randrange(lo, hi)
            found = self._first_free(start, hi)
            if found is None:
                found = self._first_free(lo, start)
            if found is not None:
                self._bits |= 1 << found
                return found
        raise RangeFull()

    def release(self, offset: int) -> None:
        if 0 <= offset < self.size:
            self._bits &= ~(1 << offset)

    def used(self) -> int:
        return self._bits.bit_count()

    def offsets(self) -> Iterable[int]:
        bits, base = self._bits, 0
        while bits:
            low = bits & -bits
            yield base + low.bit_length() - 1
            bits ^= low

    def _first_free(self, lo: int, hi: int) -> int | None:
        if lo >= hi:
            return None
        free = (~self._bits >> lo) & ((1 << (hi - lo)) - 1)
        return None if not free else lo + (free & -free).bit_length() - 1

    def to_bytes(self) -> bytes:
        return zlib.compress(self._bits.to_bytes((self.size + 7) // 8, "little"), 1)

    @classmethod
    def from_bytes(cls, data: bytes, size: int, reserved: int = 0) -> Bitmap:
        raw = zlib.decompress(data) if data else b""
        return cls(size, reserved, int.from_bytes(raw, "little"))


def _static_band(size: int, lo: int, hi: int, divisor: int) -> int:
    """Kubernetes' lower band: min(max(lo, size/divisor), hi)."""
    return min(max(lo, size // divisor), hi)


@dataclass(frozen=True)
class IPRange:
    """The usable addresses of an IPv4 service CIDR: network and broadcast excluded."""

    cidr: str

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.cidr, strict=True)
        if net.version != 4:
            raise ValueError("only IPv4 service CIDRs are supported")
        if net.prefixlen < MIN_SERVICE_PREFIX:
            raise ValueError(f"the service CIDR {self.cidr} is too large: the mask must be "
                             f">= {MIN_SERVICE_PREFIX}")
        if net.num_addresses < 4:
            raise ValueError(f"the service CIDR {self.cidr} is too small")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def size(self) -> int:
        return self.network.num_addresses - 2

    @property
    def reserved(self) -> int:
        return _static_band(self.size, 16, 256, 16)

    def first(self) -> str:
        """The first usable address (10.96.0.1: the ``kubernetes`` Service's)."""
        return str(self.network.network_address + 1)

    def offset(self, value: str) -> int | None:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return None
        offset = int(ip) - int(self.network.network_address) - 1
        return offset if ip.version == 4 and 0 <= offset < self.size else None

    def value(self, offset: int) -> str:
        return str(self.network.network_address + 1 + offset)

    def not_in_range(self, value: str) -> str:
        return (f"the provided IP ({value}) is not in the valid range. The range of valid IPs "
                f"is {self.cidr}")


@dataclass(frozen=True)
class PortRange:
    """``base-max`` inclusive (``--service-node-port-range``)."""

    spec: str

    def __post_init__(self) -> None:
        lo, _, hi = self.spec.partition("-")
        try:
            base, top = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"invalid port range {self.spec!r}: want BASE-MAX") from None
        if not 1 <= base <= top <= 65535:
            raise ValueError(f"invalid port range {self.spec!r}: want 1 <= BASE <= MAX <= 65535")

    @property
    def base(self) -> int:
        return int(self.spec.partition("-")[0])

    @property
    def size(self) -> int:
        lo, _, hi = self.spec.partition("-")
        return int(hi or lo) - int(lo) + 1

    @property
    def reserved(self) -> int:
        return _static_band(self.size, 16, 128, 32)

    def offset(self, value: int) -> int | None:
        offset = value - self.base if isinstance(value, int) else -1
        return offset if 0 <= offset < self.size else None

    def value(self, offset: int) -> int:
        return self.base + offset

    def not_in_range(self, value: int) -> str:
        return (f"provided port is not in the valid range. The range of valid ports is "
                f"{self.spec}")


# ---------------------------------------------------------------- stored ranges

@dataclass
class RangeSnapshot:
    """A range as read from the store, changed in memory, written back under ``compare``."""

    key: str
    span: IPRange | PortRange
    bitmap: Bitmap
    compare: Compare
    changed: bool = False

    @classmethod
    def load(cls, key: str, span: IPRange | PortRange, kv: KeyValue | None,
             existing: Iterable[Any]) -> RangeSnapshot:
        """The stored bitmap; a missing key is built from ``existing`` values (repair); a
        stored bitmap of another range (the flag changed) keeps the values both cover."""
        bitmap = Bitmap(span.size, span.reserved)
        if kv is None:
            for value in existing:
                offset = span.offset(value)
                if offset is not None:
                    bitmap.allocate(offset)
            return cls(key, span, bitmap, Compare.absent(key), changed=True)
        stored = msgpack.unpackb(kv.value, raw=False)
        compare = Compare.mod_revision(key, kv.mod_revision)
        their = _span_like(span, stored.get("range", ""))
        if their is None:
            return cls(key, span, bitmap, compare, changed=True)
        old = Bitmap.from_bytes(stored.get("data", b""), their.size, their.reserved)
        if their == span:
            old.reserved = span.reserved
            return cls(key, span, old, compare)
        for offset in old.offsets():
            mine = span.offset(their.value(offset))  # type: ignore[arg-type]
            if mine is not None:
                bitmap.allocate(mine)
        return cls(key, span, bitmap, compare, changed=True)

    def put(self) -> Put:
        cidr = self.span.cidr if isinstance(self.span, IPRange) else self.span.spec
        return Put(self.key, msgpack.packb({"range": cidr, "data": self.bitmap.to_bytes()},
                                           use_bin_type=True))


def _span_like(span: IPRange | PortRange, text: str) -> IPRange | PortRange | None:
    try:
        return IPRange(text) if isinstance(span, IPRange) else PortRange(text)
    except ValueError:
        return None


@dataclass
class Plan:
    """What a Service write adds to its store transaction."""

    compares: list[Compare] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)


def _cluster_ip(spec: dict[str, Any]) -> str | None:
    """The allocated-or-wanted cluster IP of a Service spec, None when it has none."""
    if spec.get("type") == "ExternalName":
        return None
    ip = spec.get("clusterIP") or ""
    return None if ip == HEADLESS else ip


def _wants_node_ports(spec: dict[str, Any]) -> bool:
    kind = spec.get("type")
    return kind == "NodePort" or (
        kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False)


def _wants_health_port(spec: dict[str, Any]) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _node_ports(spec: dict[str, Any] | None) -> set[int]:
    if not spec:
        return set()
    ports = {p["nodePort"] for p in spec.get("ports") or () if p.get("nodePort")}
    if spec.get("healthCheckNodePort"):
        ports.add(spec["healthCheckNodePort"])
    return ports


def _invalid(svc: Obj, causes: list[errors.Cause]) -> errors.ApiError:
    return errors.invalid("", "Service", (svc.get("metadata") or {}).get("name", ""), causes)


def _full(what: str) -> errors.ApiError:
    return errors.ApiError(500, "InternalError",
                           f"Internal error occurred: failed to allocate a {what}: range is full")


class ServiceAllocations:
    """Cluster IPs and node ports of Services, kept in two range keys of ``store``."""

    def __init__(self, store: Store, services_prefix: str, *,
                 cluster_ip_range: str = DEFAULT_SERVICE_CIDR,
                 node_port_range: str = DEFAULT_NODE_PORT_RANGE,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.services_prefix = services_prefix
        self.ips = IPRange(cluster_ip_range)
        self.ports = PortRange(node_port_range)
        self.rng = rng or random.Random()
        #: Plans and their transactions take turns in one process (fewer lost races).
        self.lock = asyncio.Lock()

    async def plan(self, old: Obj | None, new: Obj | None) -> Plan:
        """Allocate into ``new`` (in place) what it needs and ``old`` did not hold; release
        what ``old`` held and ``new`` does not. 422 Invalid for a taken or out-of-range value."""
        old_spec = (old or {}).get("spec") or {}
        new_spec = (new or {}).get("spec") if new is not None else None
        touched: list[RangeSnapshot] = []
        await self._ip_changes(old_spec, new_spec, new, touched)
        await self._port_changes(old_spec, new_spec, new, touched)
        plan = Plan()
        for snap in touched:
            if snap.changed:
                plan.compares.append(snap.compare)
                plan.ops.append(snap.put())
        return plan

    async def _ip_changes(self, old_spec: dict[str, Any], new_spec: dict[str, Any] | None,
                          new: Obj | None, touched: list[RangeSnapshot]) -> None:
        had = _cluster_ip(old_spec) or None
        want = _cluster_ip(new_spec) if new_spec is not None else None
        if new_spec is not None and want is not None and len(new_spec.get("clusterIPs") or ()) > 1:
            raise _invalid(new or {}, [errors.invalid_value(
                "spec.clusterIPs[1]", new_spec["clusterIPs"][1],
                "this cluster is single-stack (IPv4): only one cluster IP may be given")])
        if want == had and want:
            return
        if had is None and want is None:
            return
        snap = await self._snapshot(SERVICE_IPS_KEY, self.ips, touched)
        if had and had != want:
            offset = self.ips.offset(had)
            if offset is not None:
                snap.bitmap.release(offset)
                snap.changed = True
        if want is None or new_spec is None:
            return
        if want == "":
            try:
                offset = snap.bitmap.allocate_next(self.rng)
            except RangeFull:
                raise _full("serviceIP") from None
            ip = self.ips.value(offset)
            new_spec["clusterIP"], new_spec["clusterIPs"] = ip, [ip]
        else:
            offset = self.ips.offset(want)
            if offset is None:
                message = self.ips.not_in_range(want)
            elif not snap.bitmap.allocate(offset):
                message = "provided IP is already allocated"
            else:
                message = ""
            if message:
                raise _invalid(new or {}, [errors.invalid_value(
                    "spec.clusterIPs[0]", want, f"failed to allocate IP {want}: {message}")])
            new_spec["clusterIPs"] = [want]
        new_spec.setdefault("ipFamilies", ["IPv4"])
        new_spec.setdefault("ipFamilyPolicy", "SingleStack")
        snap.changed = True

    async def _port_changes(self, old_spec: dict[str, Any], new_spec: dict[str, Any] | None,
                            new: Obj | None, touched: list[RangeSnapshot]) -> None:
        had = _node_ports(old_spec)
        wanted_ports = new_spec is not None and _wants_node_ports(new_spec)
        wanted_health = new_spec is not None and _wants_health_port(new_spec)
        if not had and not wanted_ports and not wanted_health:
            return
        requested: list[tuple[str, int]] = []
        missing: list[dict[str, Any]] = []
        if new_spec is not None:
            for i, port in enumerate(new_spec.get("ports") or ()):
                if port.get("nodePort"):
                    requested.append((f"spec.ports[{i}].nodePort", port["nodePort"]))
                elif wanted_ports:
                    missing.append(port)
            if new_spec.get("healthCheckNodePort"):
                requested.append(("spec.healthCheckNodePort", new_spec["healthCheckNodePort"]))
        keep = {value for _, value in requested}
        fresh = [(at, v) for at, v in requested if v not in had]
        released = had - keep
        needs_health = wanted_health and not (new_spec or {}).get("healthCheckNodePort")
        if not fresh and not released and not missing and not needs_health:
            return
        snap = await self._snapshot(NODE_PORTS_KEY, self.ports, touched)
        for value in released:
            offset = self.ports.offset(value)
            if offset is not None:
                snap.bitmap.release(offset)
        causes: list[errors.Cause] = []
        taken: set[int] = set()
        for at, value in fresh:
            if value in taken:
                continue  # the same node port for TCP and UDP of one port number
            offset = self.ports.offset(value)
            if offset is None:
                causes.append(errors.invalid_value(at, value, self.ports.not_in_range(value)))
            elif not snap.bitmap.allocate(offset):
                causes.append(errors.invalid_value(at, value, "provided port is already "
                                                   "allocated"))
            taken.add(value)
        if causes:
            raise _invalid(new or {}, causes)
        by_port = {p.get("port"): p["nodePort"] for p in (new_spec or {}).get("ports") or ()
                   if p.get("nodePort")}
        for port in missing:
            if port.get("port") in by_port:
                port["nodePort"] = by_port[port["port"]]
                continue
            port["nodePort"] = by_port[port.get("port")] = self._next_port(snap)
        if needs_health and new_spec is not None:
            new_spec["healthCheckNodePort"] = self._next_port(snap)
        snap.changed = True

    def _next_port(self, snap: RangeSnapshot) -> int:
        try:
            return self.ports.value(snap.bitmap.allocate_next(self.rng))
        except RangeFull:
            raise _full("nodePort") from None

    async def _snapshot(self, key: str, span: IPRange | PortRange,
                        touched: list[RangeSnapshot]) -> RangeSnapshot:
        for snap in touched:
            if snap.key == key:
                return snap
        kv = await self._store(self.store.get(key))
        existing: list[Any] = []
        if kv[0] is None:
            existing = await self._existing(span)
        snap = RangeSnapshot.load(key, span, kv[0], existing)
        touched.append(snap)
        return snap

    async def _existing(self, span: IPRange | PortRange) -> list[Any]:
        """The values stored Services hold (the repair pass of a range that is not stored)."""
        page = await self._store(self.store.range(self.services_prefix))
        values: list[Any] = []
        for kv in page.kvs:
            spec = (msgpack.unpackb(kv.value, raw=False).get("spec") or {})
            if isinstance(span, IPRange):
                values.extend(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]
                              if ip and ip != HEADLESS)
            else:
                values.extend(_node_ports(spec))
        return values

    @staticmethod
    async def _store(awaitable: Any) -> Any:
        try:
            return await awaitable
        except Unavailable as exc:
            raise errors.unavailable(f"the cluster state store is unavailable: {exc}") from None
