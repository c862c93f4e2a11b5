"""Cluster DNS: the resolver as tables of question -> answer, dnsPolicy as a table, and the
server on loopback (UDP, TCP, truncation, forwarding to a stub upstream, upstream timeout)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from nodeagent.dns import (
    DnsCache,
    DnsServer,
    Resolver,
    parse_resolv_conf,
    pod_dns_config,
    upstream_servers,
)
from nodeagent.dns.resolver import PODS_DISABLED, PODS_VERIFIED, TTL_SECONDS
from nodeagent.runtime.base import DNSConfig

Z = "cluster.local"


def service(name: str, ns: str = "default", cluster_ip: str | None = "10.96.0.10",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports or [], **spec}
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoints(name: str, ns: str = "default", addresses: list[dict[str, Any]] | None = None,
              not_ready: list[dict[str, Any]] | None = None,
              ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": addresses or [], "ports": ports or []}
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [subset]}


def pod(name: str, ip: str, ns: str = "default") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def cluster() -> DnsCache:
    cache = DnsCache()
    cache.update_service(service("web", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"port": 8080}]))
    cache.update_endpoints(endpoints("web", addresses=[{"ip": "10.244.1.9"}],
                                     ports=[{"name": "http", "port": 8080}]))
    cache.update_service(service("dual", cluster_ip="10.96.0.11",
                                 clusterIPs=["10.96.0.11", "fd00::11"]))
    cache.update_service(service("db", ns="data", cluster_ip="None",
                                 ports=[{"name": "mysql", "port": 3306}]))
    cache.update_endpoints(endpoints(
        "db", ns="data",
        addresses=[{"ip": "10.244.1.5", "hostname": "db-0"},
                   {"ip": "10.244.2.6", "hostname": "db-1"}],
        not_ready=[{"ip": "10.244.1.7", "hostname": "db-2"}],
        ports=[{"name": "mysql", "port": 3306, "protocol": "TCP"}]))
    cache.update_service(service("empty", ns="data", cluster_ip="None"))
    cache.update_service(service("ext", cluster_ip=None, type="ExternalName",
                                 externalName="example.com"))
    cache.update_pod(pod("db-0", "10.244.1.5", ns="data"))
    return cache


def brief(answer: Any) -> tuple[str, list[tuple[str, str, Any]], list[tuple[str, Any]], bool]:
    return (answer.rcode, [(r.name, r.rtype, r.data) for r in answer.answers],
            [(r.rtype, r.data) for r in answer.additional], bool(answer.authority))


SVC = f"svc.{Z}"
RESOLVE_TABLE = [
    # ClusterIP services
    (f"web.default.{SVC}", "A", "NOERROR", [("A", "10.96.0.10")]),
    (f"WEB.Default.{SVC}.", "A", "NOERROR", [("A", "10.96.0.10")]),
    (f"web.default.{SVC}", "AAAA", "NOERROR", []),
    (f"web.default.{SVC}", "TXT", "NOERROR", []),
    (f"dual.default.{SVC}", "A", "NOERROR", [("A", "10.96.0.11")]),
    (f"dual.default.{SVC}", "AAAA", "NOERROR", [("AAAA", "fd00::11")]),
    (f"nope.default.{SVC}", "A", "NXDOMAIN", []),
    (f"web.other.{SVC}", "A", "NXDOMAIN", []),
    # headless: ready addresses only
    (f"db.data.{SVC}", "A", "NOERROR", [("A", "10.244.1.5"), ("A", "10.244.2.6")]),
    (f"empty.data.{SVC}", "A", "NOERROR", []),
    # endpoint names: hostname, or dashed IP
    (f"db-0.db.data.{SVC}", "A", "NOERROR", [("A", "10.244.1.5")]),
    (f"db-2.db.data.{SVC}", "A", "NXDOMAIN", []),
    (f"10-244-1-9.web.default.{SVC}", "A", "NOERROR", [("A", "10.244.1.9")]),
    (f"db-9.db.data.{SVC}", "A", "NXDOMAIN", []),
    # ExternalName
    (f"ext.default.{SVC}", "A", "NOERROR", [("CNAME", "example.com")]),
    # SRV: ClusterIP target the service, headless one target per endpoint
    (f"_http._tcp.web.default.{SVC}", "SRV", "NOERROR",
     [("SRV", (0, 100, 80, f"web.default.{SVC}"))]),
    (f"_dns._udp.web.default.{SVC}", "SRV", "NOERROR",
     [("SRV", (0, 100, 53, f"web.default.{SVC}"))]),
    (f"_http._udp.web.default.{SVC}", "SRV", "NXDOMAIN", []),
    (f"_nope._tcp.web.default.{SVC}", "SRV", "NXDOMAIN", []),
    (f"_http._tcp.web.default.{SVC}", "A", "NOERROR", []),
    (f"_tcp.web.default.{SVC}", "SRV", "NOERROR", []),
    (f"web.default.{SVC}", "SRV", "NOERROR",
     [("SRV", (0, 50, 80, f"web.default.{SVC}")), ("SRV", (0, 50, 53, f"web.default.{SVC}"))]),
    (f"_mysql._tcp.db.data.{SVC}", "SRV", "NOERROR",
     [("SRV", (0, 50, 3306, f"db-0.db.data.{SVC}")),
      ("SRV", (0, 50, 3306, f"db-1.db.data.{SVC}"))]),
    # pods
    (f"10-244-1-5.data.pod.{Z}", "A", "NOERROR", [("A", "10.244.1.5")]),
    (f"10-244-3-3.data.pod.{Z}", "A", "NOERROR", [("A", "10.244.3.3")]),  # insecure
    (f"fd00--5.data.pod.{Z}", "AAAA", "NOERROR", [("AAAA", "fd00::5")]),
    (f"not-an-ip.data.pod.{Z}", "A", "NXDOMAIN", []),
    # PTR: ClusterIPs and endpoint addresses
    ("10.0.96.10.in-addr.arpa", "PTR", "NOERROR", [("PTR", f"web.default.{SVC}")]),
    ("5.1.244.10.in-addr.arpa", "PTR", "NOERROR", [("PTR", f"db-0.db.data.{SVC}")]),
    ("9.1.244.10.in-addr.arpa", "PTR", "NOERROR", [("PTR", f"10-244-1-9.web.default.{SVC}")]),
    ("1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "PTR",
     "NOERROR", [("PTR", f"dual.default.{SVC}")]),
    # names of the zone that exist without records, and that do not exist
    (Z, "SOA", "NOERROR", [("SOA", None)]),
    (Z, "A", "NOERROR", []),
    (SVC, "A", "NOERROR", []),
    (f"default.{SVC}", "A", "NOERROR", []),
    (f"nosuchns.{SVC}", "A", "NXDOMAIN", []),
    (f"a.b.c.d.e.default.{SVC}", "A", "NXDOMAIN", []),
    (f"whatever.{Z}", "A", "NXDOMAIN", []),
]


@pytest.mark.parametrize("qname,qtype,rcode,records", RESOLVE_TABLE,
                         ids=[f"{q}/{t}" for q, t, _, _ in RESOLVE_TABLE])
def test_resolver_answers(qname: str, qtype: str, rcode: str,
                          records: list[tuple[str, Any]]) -> None:
    answer = Resolver(cluster()).resolve(qname, qtype)
    assert not answer.forward
    assert answer.rcode == rcode
    got = [(r.rtype, None if r.rtype == "SOA" else r.data) for r in answer.answers]
    assert got == records
    owner = qname.rstrip(".")
    assert all(r.name == owner and r.ttl == TTL_SECONDS for r in answer.answers)
    negative = rcode == "NXDOMAIN" or not records
    is_reverse = qname.endswith(".arpa")
    assert bool(answer.authority) == (negative and not is_reverse)
    for soa in answer.authority:
        assert soa.rtype == "SOA" and soa.name == Z
        assert soa.data[0] == f"ns.dns.{Z}" and soa.data[-1] == TTL_SECONDS


def test_srv_additional_section_carries_target_addresses() -> None:
    resolver = Resolver(cluster())
    headless = resolver.resolve(f"_mysql._tcp.db.data.{SVC}", "SRV")
    assert [(r.name, r.data) for r in headless.additional] == [
        (f"db-0.db.data.{SVC}", "10.244.1.5"), (f"db-1.db.data.{SVC}", "10.244.2.6")]
    ip = resolver.resolve(f"_http._tcp.web.default.{SVC}", "SRV")
    assert [(r.name, r.data) for r in ip.additional] == [(f"web.default.{SVC}", "10.96.0.10")]


@pytest.mark.parametrize("qname,qtype", [
    ("example.org", "A"), ("localhost", "A"), ("cluster.local.example.org", "A"),
    ("8.8.8.8.in-addr.arpa", "PTR"), ("99.0.96.10.in-addr.arpa", "PTR"),
    ("0.96.10.in-addr.arpa", "PTR"),
])
def test_names_not_ours_are_forwarded(qname: str, qtype: str) -> None:
    assert Resolver(cluster()).resolve(qname, qtype).forward


def test_pod_modes_and_cache_changes() -> None:
    cache = cluster()
    verified = Resolver(cache, pods=PODS_VERIFIED)
    assert verified.resolve(f"10-244-1-5.data.pod.{Z}", "A").rcode == "NOERROR"
    assert verified.resolve(f"10-244-1-5.default.pod.{Z}", "A").rcode == "NXDOMAIN"
    assert verified.resolve(f"10-244-3-3.data.pod.{Z}", "A").rcode == "NXDOMAIN"
    assert Resolver(cache, pods=PODS_DISABLED).resolve(
        f"10-244-1-5.data.pod.{Z}", "A").rcode == "NXDOMAIN"
    cache.delete_pod(pod("db-0", "10.244.1.5", ns="data"))
    assert verified.resolve(f"10-244-1-5.data.pod.{Z}", "A").rcode == "NXDOMAIN"

    resolver = Resolver(cache)
    serial = cache.serial
    cache.update_service(service("web", cluster_ip="10.96.0.20"))
    assert cache.serial > serial
    assert brief(resolver.resolve(f"web.default.{SVC}", "A"))[1] == [
        (f"web.default.{SVC}", "A", "10.96.0.20")]
    assert resolver.resolve("10.0.96.10.in-addr.arpa", "PTR").forward
    cache.delete_service(service("web"))
    cache.delete_service(service("dual"))
    cache.delete_service(service("ext"))
    assert resolver.resolve(f"web.default.{SVC}", "A").rcode == "NXDOMAIN"
    assert resolver.resolve(f"default.{SVC}", "A").rcode == "NXDOMAIN"
    cache.delete_endpoints(endpoints("db", ns="data"))
    assert resolver.resolve(f"db.data.{SVC}", "A").answers == ()
    assert resolver.resolve("5.1.244.10.in-addr.arpa", "PTR").forward


def test_other_zone() -> None:
    resolver = Resolver(cluster(), zone="corral.test.")
    assert resolver.resolve("web.default.svc.corral.test", "A").answers[0].data == "10.96.0.10"
    assert resolver.resolve(f"web.default.{SVC}", "A").forward


# dnsPolicy

HOST = DNSConfig(("192.0.2.53", "192.0.2.54"), ("corp.example",), ("timeout:2",))
CLUSTER_SEARCH = ("team.svc.cluster.local", "svc.cluster.local", "cluster.local")


def a_pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "team"}, "spec": {"containers": [], **spec}}


POLICY_TABLE = [
    ("default policy is ClusterFirst", {},
     DNSConfig(("10.244.0.1",), CLUSTER_SEARCH + ("corp.example",), ("ndots:5",))),
    ("ClusterFirst", {"dnsPolicy": "ClusterFirst"},
     DNSConfig(("10.244.0.1",), CLUSTER_SEARCH + ("corp.example",), ("ndots:5",))),
    ("Default", {"dnsPolicy": "Default"}, HOST),
    ("hostNetwork ClusterFirst is Default", {"hostNetwork": True}, HOST),
    ("ClusterFirstWithHostNet", {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
     DNSConfig(("10.244.0.1",), CLUSTER_SEARCH + ("corp.example",), ("ndots:5",))),
    ("None", {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["1.2.3.4"], "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     DNSConfig(("1.2.3.4",), ("a.example",), ("ndots:2", "edns0"))),
    ("None without dnsConfig", {"dnsPolicy": "None"}, DNSConfig()),
    ("ClusterFirst merged with dnsConfig", {"dnsConfig": {
        "nameservers": ["10.244.0.1", "1.2.3.4"], "searches": ["cluster.local", "b.example"],
        "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}},
     DNSConfig(("10.244.0.1", "1.2.3.4"), CLUSTER_SEARCH + ("corp.example", "b.example"),
               ("ndots:1", "single-request-reopen"))),
    ("Default merged, three nameservers at most", {"dnsPolicy": "Default", "dnsConfig": {
        "nameservers": ["1.1.1.1", "9.9.9.9"], "options": [{"name": "timeout", "value": "5"}]}},
     DNSConfig(("192.0.2.53", "192.0.2.54", "1.1.1.1"), ("corp.example",), ("timeout:5",))),
]


@pytest.mark.parametrize("spec,expected", [(s, e) for _, s, e in POLICY_TABLE],
                         ids=[n for n, _, _ in POLICY_TABLE])
def test_pod_dns_config(spec: dict[str, Any], expected: DNSConfig) -> None:
    assert pod_dns_config(a_pod(**spec), nameserver="10.244.0.1", host=HOST) == expected


def test_search_list_limits() -> None:
    many = [f"d{i}.example" for i in range(40)]
    config = pod_dns_config(a_pod(dnsPolicy="None", dnsConfig={"searches": many}),
                            nameserver="10.244.0.1", host=HOST)
    assert config.searches == tuple(many[:32])
    long = ["x" * 300 + f".{i}" for i in range(10)]
    config = pod_dns_config(a_pod(dnsPolicy="None", dnsConfig={"searches": long}),
                            nameserver="10.244.0.1", host=HOST)
    assert len(" ".join(config.searches)) <= 2048 and config.searches == tuple(long[:6])


def test_resolv_conf_and_upstreams(tmp_path: Any) -> None:
    text = ("# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1 ; x\nnameserver ::1\n"
            "domain old.example\nsearch a.example b.example\noptions edns0 trust-ad\n")
    config = parse_resolv_conf(text)
    assert config == DNSConfig(("127.0.0.53", "192.0.2.1", "::1"), ("a.example", "b.example"),
                               ("edns0", "trust-ad"))
    assert parse_resolv_conf("search a.example\ndomain d.example\n").searches == ("d.example",)
    assert upstream_servers(config) == ("192.0.2.1",)
    assert upstream_servers(config, exclude=["192.0.2.1"]) == ()

    from nodeagent.dns.policy import host_dns_config
    stub, real = tmp_path / "resolv.conf", tmp_path / "systemd.conf"
    stub.write_text("nameserver 127.0.0.53\nsearch lan\n")
    assert host_dns_config(stub, real).servers == ("127.0.0.53",)
    real.write_text("nameserver 192.0.2.7\n")
    assert host_dns_config(stub, real).servers == ("192.0.2.7",)
    assert host_dns_config(tmp_path / "missing", real) == DNSConfig()


# The server, on loopback

LOOPBACK = "127.0.0.1"


class StubUpstream(asyncio.DatagramProtocol):
    """An upstream server on loopback: example.org A 192.0.2.1 over UDP and TCP; or, with
    ``silent``, one that never answers."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.asked: list[str] = []
        self.transport: Any = None

    def answer(self, data: bytes) -> bytes:
        query = DNSRecord.parse(data)
        self.asked.append(str(query.q.qname))
        reply = query.reply()
        reply.header.aa = 0
        if str(query.q.qname).rstrip(".") == "example.org":
            reply.add_answer(RR("example.org.", QTYPE.A, rdata=A("192.0.2.1"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.silent:
            self.transport.sendto(self.answer(data), addr)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOOPBACK, 0))
        port = self.transport.get_extra_info("sockname")[1]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            if self.silent:
                await reader.read()  # until the client gives up
                writer.close()
                return
            reply = self.answer(await reader.readexactly(length))
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
            writer.close()

        self.tcp = await asyncio.start_server(serve, LOOPBACK, port)
        return port

    async def stop(self) -> None:
        self.transport.close()
        self.tcp.close()
        await self.tcp.wait_closed()


async def ask(port: int, qname: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    query = DNSRecord.question(qname, qtype)
    raw = await asyncio.to_thread(query.send, LOOPBACK, port, tcp=tcp, timeout=5)
    reply = DNSRecord.parse(raw)
    assert reply.header.id == query.header.id
    return reply


def big_cluster(n: int) -> DnsCache:
    cache = cluster()
    cache.update_service(service("big", cluster_ip="None"))
    cache.update_endpoints(endpoints("big", addresses=[
        {"ip": f"10.244.{i // 250}.{i % 250 + 1}"} for i in range(n)]))
    return cache


async def test_server_udp_tcp_truncation_and_forwarding() -> None:
    upstream = StubUpstream()
    upstream_port = await upstream.start()
    server = DnsServer(Resolver(big_cluster(100)), LOOPBACK, 0,
                       upstreams=[(LOOPBACK, upstream_port)])
    await server.start()
    try:
        for tcp in (False, True):
            reply = await ask(server.port, f"web.default.{SVC}", tcp=tcp)
            assert RCODE.get(reply.header.rcode) == "NOERROR" and reply.header.aa
            assert [str(r.rdata) for r in reply.rr] == ["10.96.0.10"]
            assert reply.rr[0].ttl == TTL_SECONDS

            reply = await ask(server.port, f"nope.default.{SVC}", tcp=tcp)
            assert RCODE.get(reply.header.rcode) == "NXDOMAIN"
            assert [QTYPE.get(r.rtype) for r in reply.auth] == ["SOA"]

            reply = await ask(server.port, f"_mysql._tcp.db.data.{SVC}", "SRV", tcp=tcp)
            assert sorted(str(r.rdata) for r in reply.rr) == [
                f"0 50 3306 db-0.db.data.{SVC}.", f"0 50 3306 db-1.db.data.{SVC}."]
            assert len(reply.ar) == 2

            reply = await ask(server.port, "10.0.96.10.in-addr.arpa", "PTR", tcp=tcp)
            assert [str(r.rdata) for r in reply.rr] == [f"web.default.{SVC}."]

            reply = await ask(server.port, "example.org", tcp=tcp)
            assert RCODE.get(reply.header.rcode) == "NOERROR" and not reply.header.aa
            assert [(str(r.rdata), r.ttl) for r in reply.rr] == [("192.0.2.1", 60)]
        assert upstream.asked == ["example.org.", "example.org."]

        # 100 addresses do not fit 512 bytes: TC over UDP, everything over TCP.
        truncated = await ask(server.port, f"big.default.{SVC}")
        assert truncated.header.tc and not truncated.rr
        assert str(truncated.q.qname) == f"big.default.{SVC}."
        full = await ask(server.port, f"big.default.{SVC}", tcp=True)
        assert not full.header.tc and len(full.rr) == 100
        # A few fit.
        small = await ask(server.port, f"db.data.{SVC}")
        assert not small.header.tc and len(small.rr) == 2
    finally:
        await server.stop()
        await upstream.stop()


async def test_server_upstream_timeout_is_servfail_and_bad_input_is_survived() -> None:
    silent = StubUpstream(silent=True)
    silent_port = await silent.start()
    server = DnsServer(Resolver(cluster()), LOOPBACK, 0, upstreams=[(LOOPBACK, silent_port)],
                       forward_timeout=0.2)
    await server.start()
    try:
        for tcp in (False, True):
            reply = await ask(server.port, "example.org", tcp=tcp)
            assert RCODE.get(reply.header.rcode) == "SERVFAIL"
        # No upstreams at all: SERVFAIL too.
        server.upstreams = []
        reply = await ask(server.port, "example.org")
        assert RCODE.get(reply.header.rcode) == "SERVFAIL"

        # Garbage with a header: FORMERR; shorter than a header: no answer; still serving.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2)
        try:
            sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff",
                        (LOOPBACK, server.port))
            raw, _ = await asyncio.to_thread(sock.recvfrom, 512)
            assert raw[:2] == b"\x12\x34"
            assert RCODE.get(DNSRecord.parse(raw).header.rcode) == "FORMERR"
            sock.sendto(b"\x00", (LOOPBACK, server.port))
        finally:
            sock.close()
        reply = await ask(server.port, f"web.default.{SVC}")
        assert [str(r.rdata) for r in reply.rr] == ["10.96.0.10"]
    finally:
        await server.stop()
        await silent.stop()
