"""IP-in-IP encapsulation for tunnel-mode DSR checks (LVS-TUN). Bytes in, bytes out.

In LVS tunnelling the director wraps each packet to the VIP in an outer IP header addressed to
the chosen real server; the real server's tunnel device (`tunl0`, `ip6tnl0`) strips it, finds
the VIP on its loopback and answers the client directly, from the VIP, not through the tunnel.
A check does the same with its SYN (and with its RST): `encapsulate(syn, our_addr, rs_addr)`,
sent as one ordinary IP packet to the real server, which may be any number of hops away.

Outer header, as the kernel's ip_vs_tunnel_xmit writes it: protocol 4 (IPv4 inside, RFC 2003)
or 41 (IPv6 inside, RFC 2473), the inner DSCP/ECN byte copied out, DF set (the inner SYN is
tiny, and LVS copies DF), IP ID 0 (with DF the kernel leaves it zero, see syn.py), TTL / hop
limit 64.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from synprobe.wire.checksum import checksum
from synprobe.wire.packets import ip_version

IPPROTO_IPIP = 4  # IPv4 in IP
IPPROTO_IPV6 = 41  # IPv6 in IP
DEFAULT_TTL = 64
OUTER_V4 = 20
OUTER_V6 = 40

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_DF = 0x4000


def inner_proto(inner: bytes) -> int:
    """The outer header's protocol number for `inner`: 4 for IPv4, 41 for IPv6."""
    return IPPROTO_IPV6 if ip_version(inner) == 6 else IPPROTO_IPIP


def _dscp_ecn(inner: bytes) -> int:
    if inner[0] >> 4 == 4:
        return inner[1]
    return (int.from_bytes(inner[0:2], "big") >> 4) & 0xFF  # IPv6 traffic class


def encapsulate(inner: bytes, src: bytes, dst: bytes, ttl: int = DEFAULT_TTL) -> bytes:
    """`inner` wrapped in an outer IPv4 (4-byte `src`/`dst`) or IPv6 (16-byte) header.

    The result goes to an IPPROTO_RAW socket as is (destination `dst`); on IPv4 the kernel
    rewrites the header checksum anyway, but it is computed here so the bytes are complete.
    """
    proto, tos = inner_proto(inner), _dscp_ecn(inner)
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError("outer addresses are both 4 bytes (IPv4) or both 16 bytes (IPv6)")
    if len(src) == 4:
        total = OUTER_V4 + len(inner)
        if total > 0xFFFF:
            raise ValueError(f"inner packet of {len(inner)} bytes does not fit IPv4")
        head = bytearray(_V4.pack(0x45, tos, total, 0, _DF, ttl, proto, 0, src, dst))
        head[10:12] = checksum(head).to_bytes(2, "big")
        return bytes(head) + inner
    if len(inner) > 0xFFFF:
        raise ValueError(f"inner packet of {len(inner)} bytes needs a jumbogram")
    return _V6.pack(0x60000000 | tos << 20, len(inner), proto, ttl, src, dst) + inner


class Decapsulated(NamedTuple):
    src: bytes  # the outer header's source (the director, i.e. us)
    dst: bytes  # the outer header's destination (the real server)
    inner: bytes


def decapsulate(packet: bytes) -> Decapsulated | None:
    """Split an IPv4/IPv6-in-IPv4/IPv6 packet (no outer options or extension headers); None for
    anything else. Inverse of `encapsulate`, for tests and the lab's userspace tunnel end."""
    if len(packet) < OUTER_V4:
        return None
    version = packet[0] >> 4
    if version == 4:
        off = (packet[0] & 0x0F) * 4
        if off < OUTER_V4 or len(packet) < off or packet[6] & 0x3F or packet[7]:
            return None  # a fragment: a check's packets never are
        proto, src, dst = packet[9], packet[12:16], packet[16:20]
    elif version == 6 and len(packet) >= OUTER_V6:
        off, proto, src, dst = OUTER_V6, packet[6], packet[8:24], packet[24:40]
    else:
        return None
    inner = packet[off:]
    if proto not in (IPPROTO_IPIP, IPPROTO_IPV6) or _proto_of(inner) != proto:
        return None
    return Decapsulated(bytes(src), bytes(dst), bytes(inner))


def _proto_of(inner: bytes) -> int | None:
    try:
        return inner_proto(inner)
    except ValueError:
        return None
