"""Just enough rtnetlink to ask the kernel three questions, in the calling thread's namespace:
how does it route to an address (RTM_GETROUTE, `ip route get`), what MAC does it know for a
neighbour (RTM_GETNEIGH, `ip neigh get`), and what is an interface (RTM_GETLINK).

Netlink rather than running `ip -j`: no subprocess per lookup, no dependency on iproute2's JSON,
and a netlink socket lives in the namespace of the thread that created it, like every other
socket of the engine. (/proc/net/arp would read the main thread's namespace, and /sys/class/net
the namespace sysfs was mounted in.) Messages are built and parsed by pure functions, unit-tested
on bytes; `synprobe.kernel.netlink.NetlinkSocket` only sends and receives. No privilege is needed
for these requests.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST = 0x01
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_MARK = 1, 4, 5, 7, 16
NDA_DST, NDA_LLADDR = 1, 2
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
RTN_UNICAST, RTN_LOCAL = 1, 2
ARPHRD_ETHER = 1
IFF_UP = 0x1
# Neighbour states (linux/neighbour.h) whose link-layer address can be used to send.
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10
NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x20, 0x40, 0x80
NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT
RTN_NAMES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast",
             5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw",
             10: "nat", 11: "xresolve"}

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTA = struct.Struct("=HH")  # len, type
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type (ARPHRD_*), index, flags, change


class Route(NamedTuple):
    """The kernel's answer to `ip route get ADDR`."""

    kind: int  # RTN_*: unicast, local, ...
    oif: int | None  # output interface index
    gateway: bytes | None  # next hop, packed; None when the destination is on-link
    prefsrc: bytes | None  # the source address the kernel would use, packed

    @property
    def kind_name(self) -> str:
        return RTN_NAMES.get(self.kind, str(self.kind))


class Neighbour(NamedTuple):
    ifindex: int
    state: int  # NUD_* bits
    lladdr: bytes | None  # the MAC, when known

    @property
    def usable(self) -> bool:
        return bool(self.state & NUD_USABLE) and self.lladdr is not None and len(self.lladdr) == 6


class Link(NamedTuple):
    index: int
    name: str
    hatype: int  # ARPHRD_*: 1 is Ethernet
    flags: int  # IFF_*
    address: bytes | None  # the hardware address

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    size = _RTA.size + len(value)
    return (_RTA.pack(size, kind) + value).ljust(_align(size), b"\0")


def attrs(data: bytes, off: int) -> dict[int, bytes]:
    """The rtattrs from `off` to the end (the last of each type wins; nesting is not opened)."""
    found: dict[int, bytes] = {}
    end = len(data)
    while off + _RTA.size <= end:
        size, kind = _RTA.unpack_from(data, off)
        if size < _RTA.size or off + size > end:
            break
        found[kind & 0x3FFF] = data[off + _RTA.size : off + size]  # drop NLA_F_NESTED & co.
        off += _align(size)
    return found


def message(kind: int, seq: int, body: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def route_request(dst: bytes, seq: int, mark: int | None = None) -> bytes:
    family = socket.AF_INET6 if len(dst) == 16 else socket.AF_INET
    body = _RTMSG.pack(family, len(dst) * 8, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, dst)
    if mark is not None:
        body += attr(RTA_MARK, struct.pack("=I", mark))
    return message(RTM_GETROUTE, seq, body)


def neigh_request(dst: bytes, ifindex: int, seq: int) -> bytes:
    family = socket.AF_INET6 if len(dst) == 16 else socket.AF_INET
    return message(RTM_GETNEIGH, seq, _NDMSG.pack(family, ifindex, 0, 0, 0) + attr(NDA_DST, dst))


def link_request(ifindex: int, seq: int) -> bytes:
    return message(RTM_GETLINK, seq, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0))


def split_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in a datagram."""
    off = 0
    while off + _NLMSG.size <= len(data):
        size, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
        if size < _NLMSG.size or off + size > len(data):
            return
        yield kind, seq, data[off + _NLMSG.size : off + size]
        off += _align(size)


def error_code(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR payload (0 is an acknowledgement)."""
    return -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else errno.EIO


def parse_route(payload: bytes) -> Route:
    if len(payload) < _RTMSG.size:
        raise ValueError("short rtmsg")
    kind = _RTMSG.unpack_from(payload)[7]
    a = attrs(payload, _RTMSG.size)
    oif = struct.unpack("=I", a[RTA_OIF])[0] if len(a.get(RTA_OIF, b"")) == 4 else None
    return Route(kind, oif, a.get(RTA_GATEWAY), a.get(RTA_PREFSRC))


def parse_neigh(payload: bytes) -> Neighbour:
    if len(payload) < _NDMSG.size:
        raise ValueError("short ndmsg")
    _family, ifindex, state, _flags, _type = _NDMSG.unpack_from(payload)
    return Neighbour(ifindex, state, attrs(payload, _NDMSG.size).get(NDA_LLADDR))


def parse_link(payload: bytes) -> Link:
    if len(payload) < _IFINFOMSG.size:
        raise ValueError("short ifinfomsg")
    _family, hatype, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    a = attrs(payload, _IFINFOMSG.size)
    name = a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
    return Link(index, name, hatype, flags, a.get(IFLA_ADDRESS))
