"""What the sockets of both engines share: the socket-factory seam tests replace, the error-queue
options Python's socket module does not export, and packed addresses as text."""

from __future__ import annotations

import socket
from collections.abc import Callable

SocketFactory = Callable[..., socket.socket]

# linux/in.h and linux/in6.h: queue ICMP errors and local drops (ENOBUFS) on the socket's error
# queue; without IP_RECVERR the kernel reports success for a packet its queue discarded.
IP_RECVERR, IPV6_RECVERR = 11, 25


def ntop(addr: bytes) -> str:
    """A packed IPv4 (4 bytes) or IPv6 (16 bytes) address as text."""
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)
