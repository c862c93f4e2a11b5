"""overlay.udp on the loopback of the test's namespace (no root needed): datagrams sent in runs
with UDP GSO arrive whole and in order, whether or not the receiver coalesces them with GRO."""

from __future__ import annotations

import errno
import socket

import pytest

from overlay.udp import GsoSender, enable_gro, receive


@pytest.fixture
def sockets():
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receivers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in receivers:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    yield sender, receivers
    for sock in (sender, *receivers):
        sock.close()


def drain(sock: socket.socket) -> tuple[list[bytes], int]:
    """Every datagram waiting, and how many reads it took."""
    datagrams, reads = [], 0
    while True:
        try:
            batch, _ = receive(sock)
        except BlockingIOError:
            return datagrams, reads
        reads += 1
        datagrams += [bytes(d) for d in batch]


def test_runs_arrive_whole_and_in_order_with_and_without_gro(sockets) -> None:
    sender, (plain, coalescing) = sockets
    gro = enable_gro(coalescing)
    gso = GsoSender()
    datagrams = ([bytes([i]) * 1456 for i in range(100)] + [b"short" * 10]
                 + [bytes([i]) * 200 for i in range(3)] + [b"x" * 3000])
    for sock in (plain, coalescing):
        assert gso.send(sender, datagrams, sock.getsockname()) == sum(map(len, datagrams))
    got_plain, reads_plain = drain(plain)
    got_gro, reads_gro = drain(coalescing)
    assert got_plain == datagrams
    assert got_gro == datagrams
    assert reads_plain == len(datagrams)
    if gro and gso.enabled:
        assert reads_gro < len(datagrams) / 10


class RefusingSocket:
    """Refuses segmented sends with ``errno_value``; records what goes out one by one."""

    def __init__(self, errno_value: int) -> None:
        self.errno_value = errno_value
        self.sent: list[bytes] = []
        self.segmented_tries = 0

    def sendmsg(self, buffers, ancillary, flags, addr) -> int:
        self.segmented_tries += 1
        raise OSError(self.errno_value, "refused")

    def sendto(self, data: bytes, addr) -> int:
        self.sent.append(data)
        return len(data)


@pytest.mark.parametrize("errno_value, still_enabled", [(errno.EINVAL, True), (errno.EIO, False)])
def test_a_refused_segmented_send_falls_back_to_one_datagram_per_call(errno_value: int,
                                                                      still_enabled: bool) -> None:
    sock = RefusingSocket(errno_value)
    gso = GsoSender()
    datagrams = [bytes([i]) * 8960 for i in range(4)]
    for _ in range(2):
        assert gso.send(sock, datagrams, ("127.0.0.1", 9)) == 4 * 8960  # type: ignore[arg-type]
    assert sock.sent == datagrams * 2
    assert sock.segmented_tries == 1  # the refusal is remembered
    assert gso.enabled is still_enabled
    # EINVAL (segment larger than the route allows) only rules out that size and larger.
    if still_enabled:
        assert gso.send(sock, [b"s" * 100] * 3, ("127.0.0.1", 9)) == 300  # type: ignore[arg-type]
        assert sock.segmented_tries == 2
