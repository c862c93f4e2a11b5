"""The cluster DNS resolver core: one question in, one ``Answer`` out. Pure.

What CoreDNS's ``kubernetes`` plugin answers (the DNS-based service discovery spec of
Kubernetes), read from a ``ClusterView`` (``DnsCache`` is the one fed by informers). No sockets,
no clock, no dnslib: records are plain ``Record`` values that the server packs.

In the order the code appears:

1. Constants (TTL, SOA timers, record types and rcodes, named as DNS spells them).
2. ``Record``, ``Answer`` and the ``ClusterView`` the resolver reads.
3. ``Resolver.resolve(qname, qtype)``: names outside the zone (and reverse names that are not
   ours) come back with ``forward=True`` for the server to ask upstream; names in the zone:

   - ``<svc>.<ns>.svc.<zone>`` A/AAAA: the ClusterIP(s); headless (clusterIP None): the ready
     endpoint addresses; ExternalName: a CNAME to ``spec.externalName``;
   - ``<endpoint>.<svc>.<ns>.svc.<zone>``: one endpoint address, named by its ``hostname``
     (StatefulSet pods with ``subdomain``) or its dashed IP (``10-244-1-5``);
   - ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV for named ports (and SRV at the service
     name for all its named ports): target the service name, or one target per endpoint
     for headless services, with the target addresses in the additional section;
   - ``<a-b-c-d>.<ns>.pod.<zone>`` A/AAAA (``pods`` mode insecure, verified or disabled);
   - PTR for ClusterIPs and ready endpoint addresses (``in-addr.arpa``/``ip6.arpa``);
   - NXDOMAIN for names of the zone that do not exist and NODATA (NOERROR, no answer) for
     names that exist without that type, both with the zone's SOA in the authority section
     (RFC 2308 negative caching; SOA minimum = TTL).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]

# 1. Constants

DEFAULT_ZONE = "cluster.local"
#: TTL of every answer, seconds. CoreDNS's kubernetes plugin defaults to 5 (kubeadm's Corefile
#: says ``ttl 30``); 5 keeps answers close to the endpoints' readiness.
TTL_SECONDS = 5
#: SOA timers (seconds) as CoreDNS's kubernetes plugin sets them; minimum (the negative-cache
#: TTL, RFC 2308) is the TTL.
SOA_REFRESH_SECONDS = 7200
SOA_RETRY_SECONDS = 1800
SOA_EXPIRE_SECONDS = 86400

A, AAAA, CNAME, NS, PTR, SOA, SRV = "A", "AAAA", "CNAME", "NS", "PTR", "SOA", "SRV"
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")

#: ``pods`` modes of CoreDNS: answer any well-formed name (kubeadm's default), only names of
#: pods that exist in that namespace with that IP (needs a pod informer), or none.
PODS_INSECURE, PODS_VERIFIED, PODS_DISABLED = "insecure", "verified", "disabled"

PROTOCOLS = ("tcp", "udp", "sctp")
REVERSE_V4 = "in-addr.arpa"
REVERSE_V6 = "ip6.arpa"


# 2. Values

@dataclass(frozen=True)
class Record:
    """One resource record. ``data``: an address (A, AAAA), a name (CNAME, NS, PTR),
    ``(priority, weight, port, target)`` (SRV) or ``(mname, rname, serial, refresh, retry,
    expire, minimum)`` (SOA). Names carry no trailing dot."""
    name: str
    rtype: str
    data: Any
    ttl: int = TTL_SECONDS


@dataclass(frozen=True)
class Answer:
    rcode: str = NOERROR
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    #: Not a name of ours: the server asks its upstream servers instead.
    forward: bool = False


FORWARD = Answer(forward=True)


class ClusterView(Protocol):
    """What the resolver reads; ``DnsCache`` implements it. Objects are never mutated."""

    #: The SOA serial: changes whenever the view does.
    serial: int

    def service(self, namespace: str, name: str) -> Obj | None: ...

    def endpoints(self, namespace: str, name: str) -> Obj | None: ...

    def has_namespace(self, namespace: str) -> bool:
        """Whether some Service lives in ``namespace`` (``<ns>.svc.<zone>`` then exists)."""

    def services_by_ip(self, ip: str) -> list[Obj]:
        """Services having ``ip`` as a ClusterIP."""

    def endpoints_by_ip(self, ip: str) -> list[tuple[Obj, Obj]]:
        """(Endpoints, address) pairs of ready addresses equal to ``ip``."""

    def has_pod_ip(self, namespace: str, ip: str) -> bool: ...


# Helpers on the API objects

def service_ips(svc: Obj) -> list[str]:
    """The ClusterIPs of a Service (``spec.clusterIPs``, else ``spec.clusterIP``); none when
    headless or not allocated."""
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None"]


def is_headless(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def is_external_name(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") == "ExternalName"


def endpoint_name(address: Obj) -> str:
    """The DNS label of an endpoint address: its hostname, else its IP with dashes."""
    return (address.get("hostname") or address.get("ip", "").replace(".", "-").replace(":", "-")
            ).lower()


def ready_addresses(endpoints: Obj | None) -> list[tuple[Obj, Obj]]:
    """(subset, address) of every ready address (``addresses``, not ``notReadyAddresses``)."""
    if not endpoints:
        return []
    return [(subset, address) for subset in endpoints.get("subsets") or []
            for address in subset.get("addresses") or [] if address.get("ip")]


def _family(ip: str) -> str:
    try:
        return AAAA if ipaddress.ip_address(ip).version == 6 else A
    except ValueError:
        return ""


def _address_records(name: str, ips: Sequence[str], qtype: str, ttl: int) -> list[Record]:
    seen: list[str] = []
    for ip in ips:
        if _family(ip) == qtype and ip not in seen:
            seen.append(ip)
    return [Record(name, qtype, ip, ttl) for ip in seen]


def reverse_ip(name: str) -> str | None:
    """The address a reverse name (``d.c.b.a.in-addr.arpa``, nibbles ``.ip6.arpa``) stands
    for, or None when it is not a whole address."""
    if name.endswith("." + REVERSE_V4):
        labels = name[:-len(REVERSE_V4) - 1].split(".")
        if len(labels) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(labels))))
        except ValueError:
            return None
    if name.endswith("." + REVERSE_V6):
        nibbles = name[:-len(REVERSE_V6) - 1].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        digits = "".join(reversed(nibbles))
        try:
            return str(ipaddress.IPv6Address(int(digits, 16)))
        except ValueError:
            return None
    return None


def _dashed_ip(label: str) -> str | None:
    """``10-244-1-5`` -> 10.244.1.5; ``fd00--5`` -> fd00::5."""
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


# 3. The resolver

class Resolver:
    """Answers questions about ``zone`` from ``view``. ``resolve`` is pure given the view."""

    def __init__(self, view: ClusterView, *, zone: str = DEFAULT_ZONE,
                 pods: str = PODS_INSECURE, ttl: int = TTL_SECONDS) -> None:
        if pods not in (PODS_INSECURE, PODS_VERIFIED, PODS_DISABLED):
            raise ValueError(f"pods mode must be insecure, verified or disabled, not {pods!r}")
        self.view = view
        self.zone = zone.strip(".").lower()
        self.pods = pods
        self.ttl = ttl

    def in_zone(self, qname: str) -> bool:
        name = qname.rstrip(".").lower()
        return name == self.zone or name.endswith("." + self.zone)

    def resolve(self, qname: str, qtype: str) -> Answer:
        """The answer to ``qname`` (as asked: answers keep its case) of type ``qtype``."""
        owner = qname.rstrip(".")
        name = owner.lower()
        qtype = qtype.upper()
        if name.endswith(("." + REVERSE_V4, "." + REVERSE_V6)):
            return self._reverse(owner, name, qtype)
        if not self.in_zone(name):
            return FORWARD
        labels = name[:-len(self.zone)].rstrip(".").split(".") if name != self.zone else []
        return self._zone(owner, labels, qtype)

    # -------------------------------------------------------------- answers

    def soa(self) -> Record:
        return Record(self.zone, SOA, (f"ns.dns.{self.zone}", f"hostmaster.{self.zone}",
                                       self.view.serial, SOA_REFRESH_SECONDS, SOA_RETRY_SECONDS,
                                       SOA_EXPIRE_SECONDS, self.ttl), self.ttl)

    def nxdomain(self) -> Answer:
        return Answer(NXDOMAIN, authority=(self.soa(),))

    def nodata(self) -> Answer:
        return Answer(NOERROR, authority=(self.soa(),))

    def _answer(self, records: Sequence[Record], additional: Sequence[Record] = ()) -> Answer:
        return Answer(NOERROR, tuple(records), additional=tuple(additional)) if records \
            else self.nodata()

    # -------------------------------------------------------------- the zone

    def _zone(self, owner: str, labels: list[str], qtype: str) -> Answer:
        if not labels:
            return self._answer([self.soa()] if qtype == SOA else [])
        kind, rest = labels[-1], labels[:-1]
        if kind == "svc":
            if not rest:
                return self.nodata()
            namespace, rest = rest[-1], rest[:-1]
            if not rest:
                return self.nodata() if self.view.has_namespace(namespace) else self.nxdomain()
            service_name, rest = rest[-1], rest[:-1]
            svc = self.view.service(namespace, service_name)
            if svc is None:
                return self.nxdomain()
            return self._service(owner, svc, rest, qtype)
        if kind == "pod":
            if not rest:
                return self.nodata()
            if len(rest) == 2:
                return self._pod(owner, rest[0], rest[1], qtype)
        return self.nxdomain()

    def _service_name(self, svc: Obj) -> str:
        meta = svc["metadata"]
        return f"{meta['name']}.{meta.get('namespace', 'default')}.svc.{self.zone}"

    def _service(self, owner: str, svc: Obj, rest: list[str], qtype: str) -> Answer:
        meta = svc["metadata"]
        endpoints = self.view.endpoints(meta.get("namespace", "default"), meta["name"])
        if is_external_name(svc):
            if rest:
                return self.nxdomain()
            target = str((svc.get("spec") or {}).get("externalName", "")).rstrip(".")
            return self._answer([Record(owner, CNAME, target, self.ttl)] if target else [])
        if not rest:
            if qtype in (A, AAAA):
                ips = ([a["ip"] for _, a in ready_addresses(endpoints)] if is_headless(svc)
                       else service_ips(svc))
                return self._answer(_address_records(owner, ips, qtype, self.ttl))
            if qtype == SRV:
                return self._srv(owner, svc, endpoints, None, None)
            return self.nodata()
        if len(rest) == 1:
            label = rest[0]
            if label.startswith("_"):  # _<proto>.<svc>: an empty non-terminal of SRV names
                ports = [p for p in (svc.get("spec") or {}).get("ports") or []
                         if p.get("name") and label == "_" + p.get("protocol", "TCP").lower()]
                return self.nodata() if ports else self.nxdomain()
            ips = [a["ip"] for _, a in ready_addresses(endpoints) if endpoint_name(a) == label]
            if not ips:
                return self.nxdomain()
            return self._answer(_address_records(owner, ips, qtype, self.ttl)
                                if qtype in (A, AAAA) else [])
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            port, proto = rest[0][1:], rest[1][1:]
            if proto not in PROTOCOLS:
                return self.nxdomain()
            answer = self._srv(owner, svc, endpoints, port, proto)
            if qtype != SRV and answer.answers:
                return self.nodata()
            return answer
        return self.nxdomain()

    def _srv(self, owner: str, svc: Obj, endpoints: Obj | None, port: str | None,
             proto: str | None) -> Answer:
        """SRV records of ``svc``'s named ports (only ``_<port>._<proto>`` when given)."""

        def wanted(p: Obj) -> bool:
            name = str(p.get("name") or "").lower()
            return bool(name) and (port is None or (
                name == port and str(p.get("protocol", "TCP")).lower() == proto))

        svc_name = self._service_name(svc)
        targets: list[tuple[int, str, list[str]]] = []  # (port, target, addresses)
        if is_headless(svc):
            for subset, address in ready_addresses(endpoints):
                for p in subset.get("ports") or []:
                    if wanted(p):
                        targets.append((int(p["port"]), f"{endpoint_name(address)}.{svc_name}",
                                        [address["ip"]]))
        else:
            for p in (svc.get("spec") or {}).get("ports") or []:
                if wanted(p):
                    targets.append((int(p["port"]), svc_name, service_ips(svc)))
        if not targets:
            return self.nxdomain() if port is not None else self.nodata()
        weight = max(1, 100 // len(targets))  # CoreDNS: equal shares of 100
        answers = [Record(owner, SRV, (0, weight, p, target), self.ttl)
                   for p, target, _ in targets]
        additional: list[Record] = []
        for _, target, ips in targets:
            for family in (A, AAAA):
                for record in _address_records(target, ips, family, self.ttl):
                    if record not in additional:
                        additional.append(record)
        return self._answer(answers, additional)

    def _pod(self, owner: str, dashed: str, namespace: str, qtype: str) -> Answer:
        ip = _dashed_ip(dashed)
        if self.pods == PODS_DISABLED or ip is None:
            return self.nxdomain()
        if self.pods == PODS_VERIFIED and not self.view.has_pod_ip(namespace, ip):
            return self.nxdomain()
        return self._answer(_address_records(owner, [ip], qtype, self.ttl)
                            if qtype in (A, AAAA) else [])

    # -------------------------------------------------------------- reverse names

    def _reverse(self, owner: str, name: str, qtype: str) -> Answer:
        """PTR for ClusterIPs and ready endpoint addresses; any other reverse name is not ours
        (CoreDNS's default Corefile: ``fallthrough in-addr.arpa ip6.arpa``)."""
        ip = reverse_ip(name)
        if ip is None:
            return FORWARD
        targets: list[str] = [self._service_name(svc) for svc in self.view.services_by_ip(ip)]
        for endpoints, address in self.view.endpoints_by_ip(ip):
            meta = endpoints["metadata"]
            targets.append(f"{endpoint_name(address)}.{meta['name']}."
                           f"{meta.get('namespace', 'default')}.svc.{self.zone}")
        targets = list(dict.fromkeys(targets))
        if not targets:
            return FORWARD
        if qtype != PTR:
            return Answer(NOERROR)  # the name is ours, without that type (no SOA: not our zone)
        return Answer(NOERROR, tuple(Record(owner, PTR, t, self.ttl) for t in targets))
