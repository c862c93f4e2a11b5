"""The Service proxy's rules, kube-proxy's iptables mode: pure, from Services and Endpoints to
``iptables-restore`` input. No I/O; the same input always gives the same text.

The flow, in the order of the code:

``service_ports`` reads the Services (core v1 dicts) into one ``ServicePort`` per port with a
ClusterIP (headless Services and ones with invalid fields are skipped, never a crash), with the
LoadBalancer ingress IPs of its Service (``ingress_ips``), and
``ready_endpoints`` finds each port's ready backends in its Endpoints (``subsets[].addresses``,
the port of the same name and protocol; ``notReadyAddresses`` never get traffic).

``build`` lays out the chains as kube-proxy does, for the ``nat`` table::

    PREROUTING, OUTPUT -> CORRAL-SERVICES
        -d <clusterIP>/32 -p tcp -m tcp --dport <port>  -> CORRAL-SVC-<hash>   (one per port)
        -d <ingress IP>/32 -p tcp -m tcp --dport <port> -> CORRAL-EXT-<hash>   (LoadBalancer)
        (last) -m addrtype --dst-type LOCAL              -> CORRAL-NODEPORTS
    CORRAL-EXT-<hash>: -> CORRAL-MARK-MASQ, then -> CORRAL-SVC-<hash> (kube-proxy's KUBE-EXT
        chain with externalTrafficPolicy Cluster: traffic from outside leaves for any node's
        endpoint with the node's address, so the reply comes back through it)
    CORRAL-NODEPORTS: -p tcp -m tcp --dport <nodePort> [! -s <cluster CIDR>] -> CORRAL-MARK-MASQ,
                      then -> CORRAL-SVC-<hash>
    CORRAL-SVC-<hash>: off-cluster sources to the ClusterIP -> CORRAL-MARK-MASQ; with
        sessionAffinity ClientIP first one ``-m recent --rcheck`` jump per endpoint; then the
        endpoints in order, endpoint i of N with ``-m statistic --probability 1/(N-i)`` (the
        last without), which picks each with probability 1/N.
    CORRAL-SEP-<hash>: a hairpin (the endpoint itself as source) -> CORRAL-MARK-MASQ, then
        DNAT to ip:port (with ``-m recent --set`` under affinity).
    CORRAL-MARK-MASQ: sets mark 0x4000; POSTROUTING -> CORRAL-PROXY-POSTROUTING masquerades
        marked packets (and clears the mark).

and for the ``filter`` table, what kube-proxy does for Services without ready endpoints:
``CORRAL-SERVICES-FILTER`` (from OUTPUT and FORWARD, new connections) REJECTs their ClusterIP
ports and ``CORRAL-EXTERNAL-FILTER`` (from INPUT and FORWARD) their NodePorts and ingress IP
ports, with icmp-port-unreachable, so clients fail at once ("connection refused") instead of
timing out.

Chain names hash ``namespace/name:portname`` and the protocol (and the endpoint for SEP chains)
with sha256, base32, 16 characters: 27 characters in all, within iptables' 28. Every chain
named with a prefix of ``OWNED_PREFIXES`` is ours: one the rules no longer name is stale.

``restore_input`` renders one table for ``iptables-restore --noflush``: every chain we own is
declared (which creates or flushes it), refilled, and stale chains are declared and deleted
(``-X``) in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

# -- names and constants, as kube-proxy's with CORRAL for KUBE -------------------------------

SERVICES_CHAIN = "CORRAL-SERVICES"
NODEPORTS_CHAIN = "CORRAL-NODEPORTS"
MARK_MASQ_CHAIN = "CORRAL-MARK-MASQ"
#: Not CORRAL-POSTROUTING: that one is BridgeNetwork's.
POSTROUTING_CHAIN = "CORRAL-PROXY-POSTROUTING"
SVC_PREFIX = "CORRAL-SVC-"
SEP_PREFIX = "CORRAL-SEP-"
EXT_PREFIX = "CORRAL-EXT-"
#: The per-Service chains' prefixes (the applier deletes such chains the rules no longer name).
OWNED_PREFIXES = (SVC_PREFIX, SEP_PREFIX, EXT_PREFIX)
FILTER_SERVICES_CHAIN = "CORRAL-SERVICES-FILTER"
FILTER_EXTERNAL_CHAIN = "CORRAL-EXTERNAL-FILTER"
#: The fwmark bit of packets that must leave with the node's address (kube-proxy's default).
MASQ_MARK = "0x4000"
#: iptables' XT_EXTENSION_MAXNAMELEN less the NUL.
MAX_CHAIN_LEN = 28
#: Characters of base32(sha256) in a chain name (kube-proxy's).
HASH_LEN = 16
#: sessionAffinityConfig.clientIP.timeoutSeconds: default and maximum (Kubernetes').
DEFAULT_AFFINITY_TIMEOUT_S = 10800
MAX_AFFINITY_TIMEOUT_S = 86400
PROTOCOLS = ("TCP", "UDP", "SCTP")

NAT = "nat"
FILTER = "filter"

#: The chains this module owns in each table (besides the CORRAL-SVC-/CORRAL-SEP- ones).
BASE_CHAINS = {
    NAT: (SERVICES_CHAIN, NODEPORTS_CHAIN, MARK_MASQ_CHAIN, POSTROUTING_CHAIN),
    FILTER: (FILTER_SERVICES_CHAIN, FILTER_EXTERNAL_CHAIN),
}
#: The jumps from the built-in chains into ours: (table, built-in chain, rule arguments).
#: The applier inserts them first in their chain, after checking (``-C``) they are missing.
JUMPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (NAT, "PREROUTING", ("-j", SERVICES_CHAIN)),
    (NAT, "OUTPUT", ("-j", SERVICES_CHAIN)),
    (NAT, "POSTROUTING", ("-j", POSTROUTING_CHAIN)),
    (FILTER, "OUTPUT", ("-m", "conntrack", "--ctstate", "NEW", "-j", FILTER_SERVICES_CHAIN)),
    (FILTER, "FORWARD", ("-m", "conntrack", "--ctstate", "NEW", "-j", FILTER_SERVICES_CHAIN)),
    (FILTER, "INPUT", ("-m", "conntrack", "--ctstate", "NEW", "-j", FILTER_EXTERNAL_CHAIN)),
    (FILTER, "FORWARD", ("-m", "conntrack", "--ctstate", "NEW", "-j", FILTER_EXTERNAL_CHAIN)),
)


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:HASH_LEN]


def svc_chain(port_name: str, protocol: str) -> str:
    """CORRAL-SVC-<hash> of a Service port (``namespace/name:portname``, as kube-proxy's)."""
    return SVC_PREFIX + _hash(port_name + protocol.lower())


def sep_chain(port_name: str, protocol: str, endpoint: str) -> str:
    """CORRAL-SEP-<hash> of one endpoint (``ip:port``) of a Service port."""
    return SEP_PREFIX + _hash(port_name + protocol.lower() + endpoint)


def ext_chain(port_name: str, protocol: str) -> str:
    """CORRAL-EXT-<hash> of a Service port: its traffic to the LoadBalancer ingress IPs."""
    return EXT_PREFIX + _hash(port_name + protocol.lower())


def is_owned_chain(chain: str) -> bool:
    """Whether ``chain`` is one this module writes (in either table)."""
    return (chain.startswith(OWNED_PREFIXES)
            or chain in BASE_CHAINS[NAT] or chain in BASE_CHAINS[FILTER])


# -- reading Services and Endpoints ----------------------------------------------------------

@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service: what the rules need of it."""
    namespace: str
    name: str
    port_name: str  # the Service port's ``name`` ("" for a single unnamed port)
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str
    port: int
    node_port: int | None = None
    affinity_timeout: int | None = None  # seconds, with sessionAffinity ClientIP
    ingress_ips: tuple[str, ...] = ()  # the LoadBalancer's, from the Service's status

    @property
    def key(self) -> str:
        """kube-proxy's ServicePortName: ``namespace/name:portname`` (no ``:`` when unnamed)."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")


def _ipv4(value: Any) -> str | None:
    try:
        return str(ipaddress.IPv4Address(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _port(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 1 <= value <= 65535 else None


def _affinity(spec: Obj) -> int | None:
    if spec.get("sessionAffinity") != "ClientIP":
        return None
    config = spec.get("sessionAffinityConfig")
    client_ip = config.get("clientIP") if isinstance(config, dict) else None
    timeout = client_ip.get("timeoutSeconds") if isinstance(client_ip, dict) else None
    if isinstance(timeout, int) and not isinstance(timeout, bool) \
            and 1 <= timeout <= MAX_AFFINITY_TIMEOUT_S:
        return timeout
    return DEFAULT_AFFINITY_TIMEOUT_S


def ingress_ips(service: Obj) -> tuple[str, ...]:
    """A LoadBalancer Service's ingress IPs (IPv4, sorted, without duplicates) that traffic
    reaches the nodes with: kube-proxy skips those with ``ipMode: Proxy``, which the load
    balancer rewrites to a node's address itself."""
    if (service.get("spec") or {}).get("type") != "LoadBalancer":
        return ()
    status = service.get("status")
    balancer = status.get("loadBalancer") if isinstance(status, dict) else None
    ingress = balancer.get("ingress") if isinstance(balancer, dict) else None
    found = {ip for entry in ingress or () if isinstance(entry, dict)
             and entry.get("ipMode") != "Proxy" and (ip := _ipv4(entry.get("ip")))}
    return tuple(sorted(found, key=ipaddress.IPv4Address))


def service_ports(service: Obj) -> list[ServicePort]:
    """The proxied ports of one Service; none for headless or malformed ones."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if not isinstance(name, str) or not isinstance(namespace, str) or cluster_ip is None:
        return []
    with_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    affinity = _affinity(spec)
    external = ingress_ips(service)
    ports = []
    for entry in spec.get("ports") or []:
        if not isinstance(entry, dict):
            continue
        port = _port(entry.get("port"))
        protocol = entry.get("protocol") or "TCP"
        port_name = entry.get("name") or ""
        if port is None or protocol not in PROTOCOLS or not isinstance(port_name, str):
            continue
        node_port = _port(entry.get("nodePort")) if with_node_ports else None
        ports.append(ServicePort(namespace, name, port_name, protocol, cluster_ip, port,
                                 node_port, affinity, external))
    return ports


def ready_endpoints(endpoints: Obj | None, port: ServicePort) -> list[Endpoint]:
    """The ready backends of ``port``, sorted and without duplicates."""
    found: set[Endpoint] = set()
    for subset in (endpoints or {}).get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        numbers = [n for p in subset.get("ports") or [] if isinstance(p, dict)
                   and (p.get("name") or "") == port.port_name
                   and (p.get("protocol") or "TCP") == port.protocol
                   and (n := _port(p.get("port"))) is not None]
        for address in subset.get("addresses") or []:
            ip = _ipv4(address.get("ip")) if isinstance(address, dict) else None
            if ip is not None:
                found.update(Endpoint(ip, number) for number in numbers)
    return sorted(found, key=lambda e: (ipaddress.IPv4Address(e.ip), e.port))


# -- the rules -------------------------------------------------------------------------------

@dataclass
class TableRules:
    """One table's part: the chains we own in it (declared, so created or flushed) and the
    rules that refill them, in order."""
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


@dataclass
class ProxyRules:
    nat: TableRules
    filter: TableRules

    def tables(self) -> dict[str, TableRules]:
        return {NAT: self.nat, FILTER: self.filter}


def _comment(text: str) -> str:
    # Names are DNS labels; the quotes keep the colon and spaces one argument.
    return f'-m comment --comment "{text}"'


def _proto(protocol: str, dport: int) -> str:
    p = protocol.lower()
    return f"-p {p} -m {p} --dport {dport}"


def _probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def build(services: Iterable[Obj], endpoints: Iterable[Obj], *,
          cluster_cidr: str | None = None,
          node_ips: Sequence[str] | None = None) -> ProxyRules:
    """The rules for these Services and Endpoints (see the module docstring).

    ``cluster_cidr``: sources outside it are masqueraded (to ClusterIPs and NodePorts); without
    it every NodePort connection is masqueraded and ClusterIP ones are not. ``node_ips``:
    NodePorts answer on these addresses only; None is every local address (addrtype LOCAL).
    """
    by_key: dict[tuple[str, str], Obj] = {}
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        by_key[(meta.get("namespace") or "default", meta.get("name") or "")] = ep
    ports = sorted((p for s in services for p in service_ports(s)),
                   key=lambda p: (p.namespace, p.name, p.port_name, p.protocol))
    cidr = None
    if cluster_cidr:
        cidr = str(ipaddress.IPv4Network(cluster_cidr, strict=False))
    nat, filt = TableRules(list(BASE_CHAINS[NAT])), TableRules(list(BASE_CHAINS[FILTER]))
    services_rules: list[str] = []
    nodeport_rules: list[str] = []
    chain_rules: list[str] = []

    nat.rules += [
        f"-A {POSTROUTING_CHAIN} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A {POSTROUTING_CHAIN} -j MARK --xor-mark {MASQ_MARK}",
        (f"-A {POSTROUTING_CHAIN} {_comment('corral service traffic requiring SNAT')}"
        " -j MASQUERADE"),
        f"-A {MARK_MASQ_CHAIN} -j MARK --or-mark {MASQ_MARK}",
    ]
    for sp in ports:
        backends = ready_endpoints(by_key.get((sp.namespace, sp.name)), sp)
        dst = f"-d {sp.cluster_ip}/32 {_proto(sp.protocol, sp.port)}"
        external = [f"-d {ip}/32 {_proto(sp.protocol, sp.port)}" for ip in sp.ingress_ips]
        if not backends:
            filt.rules.append(f"-A {FILTER_SERVICES_CHAIN} "
                              f"{_comment(sp.key + ' has no endpoints')} {dst} "
                              "-j REJECT --reject-with icmp-port-unreachable")
            filt.rules += [f"-A {FILTER_EXTERNAL_CHAIN} {_comment(sp.key + ' has no endpoints')} "
                           f"{ext_dst} -j REJECT --reject-with icmp-port-unreachable"
                           for ext_dst in external]
            if sp.node_port is not None:
                filt.rules.append(
                    f"-A {FILTER_EXTERNAL_CHAIN} {_comment(sp.key + ' has no endpoints')} "
                    f"-m addrtype --dst-type LOCAL {_proto(sp.protocol, sp.node_port)} "
                    "-j REJECT --reject-with icmp-port-unreachable")
            continue
        svc = svc_chain(sp.key, sp.protocol)
        nat.chains.append(svc)
        services_rules.append(f"-A {SERVICES_CHAIN} {_comment(sp.key + ' cluster IP')} "
                              f"{dst} -j {svc}")
        if external:
            ext = ext_chain(sp.key, sp.protocol)
            nat.chains.append(ext)
            services_rules += [f"-A {SERVICES_CHAIN} {_comment(sp.key + ' loadbalancer IP')} "
                               f"{ext_dst} -j {ext}" for ext_dst in external]
            chain_rules += [
                (f"-A {ext} {_comment(f'masquerade traffic for {sp.key} external destinations')}"
                 f" -j {MARK_MASQ_CHAIN}"),
                f"-A {ext} -j {svc}",
            ]
        if sp.node_port is not None:
            nodeport = _proto(sp.protocol, sp.node_port)
            source = f" ! -s {cidr}" if cidr else ""
            nodeport_rules += [
                (f"-A {NODEPORTS_CHAIN} {_comment(sp.key)} {nodeport}{source}"
                f" -j {MARK_MASQ_CHAIN}"),
                f"-A {NODEPORTS_CHAIN} {_comment(sp.key)} {nodeport} -j {svc}",
            ]
        if cidr:
            chain_rules.append(f"-A {svc} {_comment(sp.key + ' cluster IP')} {dst} "
                               f"! -s {cidr} -j {MARK_MASQ_CHAIN}")
        seps = [sep_chain(sp.key, sp.protocol, str(b)) for b in backends]
        if sp.affinity_timeout is not None:
            for backend, sep in zip(backends, seps, strict=True):
                chain_rules.append(
                    f"-A {svc} {_comment(f'{sp.key} -> {backend}')} -m recent --name {sep} "
                    f"--rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
        n = len(backends)
        for i, (backend, sep) in enumerate(zip(backends, seps, strict=True)):
            chance = f" -m statistic --mode random --probability {_probability(n - i)}" \
                if i < n - 1 else ""
            chain_rules.append(f"-A {svc} {_comment(f'{sp.key} -> {backend}')}{chance} -j {sep}")
        for backend, sep in zip(backends, seps, strict=True):
            nat.chains.append(sep)
            recent = f" -m recent --name {sep} --set" if sp.affinity_timeout is not None else ""
            chain_rules += [
                f"-A {sep} {_comment(sp.key)} -s {backend.ip}/32 -j {MARK_MASQ_CHAIN}",
                (f"-A {sep} {_comment(sp.key)}{recent} -p {sp.protocol.lower()} "
                f"-m {sp.protocol.lower()} -j DNAT --to-destination {backend}"),
            ]
    if node_ips is None:
        services_rules.append(f"-A {SERVICES_CHAIN} {_comment('corral service nodeports')}"
                              f" -m addrtype --dst-type LOCAL -j {NODEPORTS_CHAIN}")
    else:
        for ip in sorted({i for i in (_ipv4(v) for v in node_ips) if i},
                         key=ipaddress.IPv4Address):
            services_rules.append(f"-A {SERVICES_CHAIN} {_comment('corral service nodeports')}"
                                  f" -d {ip}/32 -j {NODEPORTS_CHAIN}")
    nat.rules += services_rules + nodeport_rules + chain_rules
    return ProxyRules(nat, filt)


def restore_input(table: str, rules: TableRules, stale: Iterable[str] = ()) -> str:
    """``iptables-restore --noflush`` input for one table: our chains declared (created or
    flushed) and refilled; ``stale`` chains flushed and deleted in the same commit."""
    stale = sorted(set(stale) - set(rules.chains))
    lines = [f"*{table}"]
    lines += [f":{chain} - [0:0]" for chain in [*rules.chains, *stale]]
    lines += rules.rules
    lines += [f"-X {chain}" for chain in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
