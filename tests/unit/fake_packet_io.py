"""The one fake of the raw engine's packet I/O (`synprobe.kernel.packetio.PacketIO`) the unit
tests share: no socket, no root. What the engine sends goes to `send` (a subclass answers it:
a lab-like server, real servers behind a VIP, nobody); answers wait in `inbox` with the MAC they
came from and are signalled on a pipe the engine polls, as the packet socket's fd would be."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Any


class FakePacketIO:
    def __init__(self) -> None:
        self.inbox: deque[tuple[bytes, bytes]] = deque()  # (packet, source MAC)
        self.closed = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)  # as the packet socket: receive() never waits
        self.recv_fd = self._r

    def __call__(self, *args: Any, **kw: Any) -> FakePacketIO:
        return self  # the engine's io_factory

    def deliver(self, packets: list[bytes], mac: bytes = b"") -> None:
        """Answers arriving: queued, and the engine's poller woken."""
        self.inbox.extend((packet, mac) for packet in packets)
        if self.inbox:
            os.write(self._w, b"!")

    def send(self, v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        return []  # nobody answers; subclasses do

    def receive(self, limit: int) -> list[bytes]:
        return [packet for packet, _ in self._take(limit)]

    def receive_from(self, limit: int) -> list[tuple[bytes, bytes]]:
        return self._take(limit)

    def _take(self, limit: int) -> list[tuple[bytes, bytes]]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        out = [self.inbox.popleft() for _ in range(min(limit, len(self.inbox)))]
        if self.inbox:
            os.write(self._w, b"!")
        return out

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        """The engine's run() closing its sockets."""
        self.shut()

    def shut(self) -> None:
        if not self.closed:
            os.close(self._r)
            os.close(self._w)
            self.closed = True
