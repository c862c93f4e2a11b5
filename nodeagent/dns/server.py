"""The cluster DNS server: UDP and TCP on one address, on the agent's event loop.

dnslib only parses and packs messages (its ``DNSServer`` runs threads of its own); the sockets
are asyncio's. Flow of one query (``handle``):

1. Parse (garbage is dropped; a message with a header but nothing sensible gets FORMERR;
   opcodes other than QUERY get NOTIMP; classes other than IN get REFUSED).
2. Ask the ``Resolver``. Names of the zone are answered at once (authoritative, from the
   cache); the rest (``forward``) is sent as it came to the upstream servers in turn, over the
   transport the client used, each given ``forward_timeout`` seconds; no answer from any of
   them gives SERVFAIL. Upstream replies are passed back unchanged (their id is the client's).
3. Over UDP, an answer larger than the client's limit (512 bytes, or its EDNS0 payload size up
   to ``MAX_UDP_PAYLOAD``) goes out truncated: header with TC and the question only; the
   client asks again over TCP, which carries up to 65535 bytes (2-byte length prefix,
   RFC 1035 4.2.2; several queries may follow on one connection).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence

from dnslib import (
    AAAA as AAAA_RDATA,
)
from dnslib import (
    CLASS,
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    DNSError,
    DNSHeader,
    DNSRecord,
)
from dnslib import (
    CNAME as CNAME_RDATA,
)
from dnslib import (
    NS as NS_RDATA,
)
from dnslib import (
    PTR as PTR_RDATA,
)
from dnslib import (
    SOA as SOA_RDATA,
)
from dnslib import (
    SRV as SRV_RDATA,
)
from dnslib import (
    A as A_RDATA,
)

from .resolver import FORMERR, NOTIMP, REFUSED, SERVFAIL, Answer, Record, Resolver

log = logging.getLogger(__name__)

DNS_PORT = 53
#: Without EDNS0 a UDP answer is at most 512 bytes (RFC 1035 4.2.1).
CLASSIC_UDP_PAYLOAD = 512
#: The EDNS0 payload we advertise and honour at most (DNS flag day 2020: 1232 bytes).
MAX_UDP_PAYLOAD = 1232
#: Seconds one upstream server is given for one question.
FORWARD_TIMEOUT_SECONDS = 2.0
#: Seconds an idle TCP client connection is kept.
TCP_IDLE_SECONDS = 10.0
HEADER_BYTES = 12


def _rdata(record: Record) -> object:
    data = record.data
    return {
        "A": lambda: A_RDATA(data),
        "AAAA": lambda: AAAA_RDATA(data),
        "CNAME": lambda: CNAME_RDATA(data + "."),
        "NS": lambda: NS_RDATA(data + "."),
        "PTR": lambda: PTR_RDATA(data + "."),
        "SRV": lambda: SRV_RDATA(data[0], data[1], data[2], data[3] + "."),
        "SOA": lambda: SOA_RDATA(data[0] + ".", data[1] + ".", data[2:]),
    }[record.rtype]()


def to_rr(record: Record) -> RR:
    return RR(record.name + ".", getattr(QTYPE, record.rtype), CLASS.IN, record.ttl,
              _rdata(record))


def _udp_limit(query: DNSRecord) -> int:
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(CLASSIC_UDP_PAYLOAD, min(int(rr.rclass), MAX_UDP_PAYLOAD))
    return CLASSIC_UDP_PAYLOAD


def _has_edns(query: DNSRecord) -> bool:
    return any(rr.rtype == QTYPE.OPT for rr in query.ar)


def _reply(query: DNSRecord, rcode: str, *, aa: bool = False) -> DNSRecord:
    header = DNSHeader(id=query.header.id, qr=1, aa=int(aa), rd=query.header.rd, ra=1,
                       opcode=query.header.opcode, rcode=getattr(RCODE, rcode))
    reply = DNSRecord(header, q=query.q if query.questions else None)
    if _has_edns(query):
        reply.add_ar(EDNS0(udp_len=MAX_UDP_PAYLOAD))
    return reply


def build_reply(query: DNSRecord, answer: Answer) -> DNSRecord:
    """The message for a resolver ``answer`` (not a forwarded one)."""
    reply = _reply(query, answer.rcode, aa=True)
    for record in answer.answers:
        reply.add_answer(to_rr(record))
    for record in answer.authority:
        reply.add_auth(to_rr(record))
    for record in answer.additional:
        reply.add_ar(to_rr(record))
    return reply


def fit_udp(query: DNSRecord, reply: DNSRecord) -> bytes:
    """``reply`` packed, or its truncated form (TC, question only) when too large."""
    packed = reply.pack()
    if len(packed) <= _udp_limit(query):
        return packed
    truncated = _reply(query, RCODE.get(reply.header.rcode), aa=bool(reply.header.aa))
    truncated.header.tc = 1
    return truncated.pack()


def _error_from_header(data: bytes, rcode: str) -> bytes | None:
    """A bare reply (``rcode``) to a message we could not parse, when it has a header."""
    if len(data) < HEADER_BYTES or data[2] & 0x80:  # too short, or itself a response
        return None
    (qid,) = struct.unpack("!H", data[:2])
    return DNSRecord(DNSHeader(id=qid, qr=1, rd=data[2] & 1, ra=1,
                               rcode=getattr(RCODE, rcode))).pack()


class DnsServer:
    """Cluster DNS on ``host:port`` (port 0: any free one, see ``port`` after ``start``)."""

    def __init__(self, resolver: Resolver, host: str, port: int = DNS_PORT, *,
                 upstreams: Sequence[str | tuple[str, int]] = (),
                 forward_timeout: float = FORWARD_TIMEOUT_SECONDS) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.upstreams = [u if isinstance(u, tuple) else (u, DNS_PORT) for u in upstreams]
        self.forward_timeout = forward_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port))
        self._udp = transport
        if self.port == 0:
            self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        except BaseException:
            transport.close()
            self._udp = None
            raise
        log.info("cluster DNS for %s on %s:%d (upstreams %s)", self.resolver.zone, self.host,
                 self.port, ", ".join(f"{h}:{p}" for h, p in self.upstreams) or "none")

    async def stop(self) -> None:
        """Close both sockets and drop the queries in flight. Idempotent."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()

    # ------------------------------------------------------------ one query

    async def handle(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one message (None: send nothing)."""
        try:
            query = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error):
            return _error_from_header(data, FORMERR)
        if query.header.qr:
            return None
        if query.header.opcode != OPCODE.QUERY:
            return _reply(query, NOTIMP).pack()
        if len(query.questions) != 1:
            return _reply(query, FORMERR).pack()
        question = query.q
        if question.qclass != CLASS.IN:
            return _reply(query, REFUSED).pack()
        answer = self.resolver.resolve(str(question.qname), str(QTYPE.get(question.qtype)))
        if answer.forward:
            forwarded = await self.forward(data, tcp=tcp)
            if forwarded is not None:
                return forwarded
            return _reply(query, SERVFAIL).pack()
        reply = build_reply(query, answer)
        return reply.pack() if tcp else fit_udp(query, reply)

    async def forward(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream's reply to ``data`` (same id), or None when none answered."""
        (qid,) = struct.unpack("!H", data[:2])
        for host, port in self.upstreams:
            try:
                ask = _ask_tcp if tcp else _ask_udp
                reply = await asyncio.wait_for(ask(host, port, data), self.forward_timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d: %r", host, port, exc)
                continue
            if len(reply) >= HEADER_BYTES and struct.unpack("!H", reply[:2])[0] == qid:
                return reply
        return None

    # ------------------------------------------------------------ transports

    def _spawn_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer_udp(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.handle(data, tcp=False)
        except Exception:
            log.exception("DNS query from %s failed", addr)
            reply = _error_from_header(data, SERVFAIL)
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                    (length,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_SECONDS)
                except (TimeoutError, asyncio.IncompleteReadError, OSError):
                    return
                try:
                    reply = await self.handle(data, tcp=True)
                except Exception:
                    log.exception("DNS query over TCP failed")
                    reply = _error_from_header(data, SERVFAIL)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._spawn_udp(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP socket: %r", exc)


class _UpstreamUdp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _ask_udp(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _UpstreamUdp, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _ask_tcp(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
