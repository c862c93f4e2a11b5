"""What the overlay's device tests share: a TUN stand-in the test can read and write."""

from __future__ import annotations

import asyncio
import socket


class PacketPipe:
    """A ``Tun`` made of a SOCK_SEQPACKET pair: the device uses one end, the test ``outer``."""

    def __init__(self, name: str = "pipe") -> None:
        self.name = name
        self._inner, self.outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._inner.setblocking(False)
        self.outer.setblocking(False)

    def fileno(self) -> int:
        return self._inner.fileno()

    def read(self) -> bytes:
        return self._inner.recv(65535)

    def write(self, packet: bytes) -> None:
        self._inner.send(packet)

    def close(self) -> None:
        self._inner.close()
        self.outer.close()

    def drain(self) -> list[bytes]:
        """Every packet the device wrote to the TUN so far (without waiting)."""
        packets = []
        while True:
            try:
                packets.append(self.outer.recv(65535))
            except BlockingIOError:
                return packets

    async def receive(self, timeout: float = 2.0) -> bytes | None:
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.outer, 65535), timeout)
        except TimeoutError:
            return None
