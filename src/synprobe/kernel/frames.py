"""Whole Ethernet frames sent on packet sockets, one per interface (checks through a real server,
and the ARP / neighbour solicitations that find its MAC)."""

from __future__ import annotations

import errno
import socket

from synprobe.kernel.sockets import SocketFactory


class FrameSender:
    """Packet sockets (AF_PACKET, SOCK_RAW, protocol 0: they receive nothing), one per interface,
    sending whole Ethernet frames. Needs CAP_NET_RAW (PermissionError otherwise)."""

    def __init__(self, socket_factory: SocketFactory = socket.socket) -> None:
        self._socket = socket_factory
        self._socks: dict[str, socket.socket] = {}

    def send(self, ifname: str, frames: list[bytes]) -> list[tuple[int, int]]:
        """Send frames on `ifname`; return (index, errno) of those that failed."""
        sock = self._socks.get(ifname)
        if sock is None:
            sock = self._socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            try:
                sock.bind((ifname, 0))
            except BaseException:
                sock.close()
                raise
            self._socks[ifname] = sock
        failed = []
        for i, data in enumerate(frames):
            try:
                sock.send(data)
            except OSError as exc:
                failed.append((i, exc.errno or errno.EIO))
        return failed

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
