"""Ethernet frames for direct-routing (L2) DSR checks, and the ARP / NDP frames that find a real
server's MAC address. Bytes in, bytes out; no sockets.

In LVS direct routing every real server holds the VIP on its loopback with ARP for it
suppressed, so the only thing that picks the real server is the frame's destination MAC: the
IP packet is the ordinary SYN to the VIP (`syn.PacketTemplate.build`), and `frame` puts the real
server's MAC in front of it. A header is 14 bytes, built once per real server (`ether_header`),
so a frame costs one concatenation.

`arp_request` / `parse_arp_reply` (IPv4, RFC 826) and `neighbor_solicitation` /
`parse_neighbor_advert` (IPv6, RFC 4861) resolve a real server's MAC when the kernel's
neighbour table has no entry for it. They are the frames `arping` and `ndisc6` send.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from synprobe.wire.checksum import finish, ones_sum, pseudo_header_sum
from synprobe.wire.packets import ip_version

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_HLEN = 14
BROADCAST = b"\xff" * 6

_ETH = struct.Struct("!6s6sH")
# ARP for IPv4 over Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4, op, sha, spa, tha, tpa.
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ARP_REQUEST, _ARP_REPLY = 1, 2
_ICMP6 = 58
_NS, _NA = 135, 136
_OPT_SLLA, _OPT_TLLA = 1, 2


def parse_mac(text: str) -> bytes:
    """`"02:5e:00:00:00:01"` (or with `-`) -> 6 bytes; ValueError otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}") from None


def format_mac(mac: bytes) -> str:
    """6 bytes -> `"02:5e:00:00:00:01"` (lower case, as `ip link` writes it)."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
    return ":".join(f"{b:02x}" for b in mac)


def is_unicast_mac(mac: bytes) -> bool:
    """True for a 6-byte address that names one station (group bit clear, not all zero)."""
    return len(mac) == 6 and not mac[0] & 1 and mac != bytes(6)


def ethertype_of(packet: bytes) -> int:
    """The ethertype that carries an IP packet, from its version nibble."""
    return ETH_P_IPV6 if ip_version(packet) == 6 else ETH_P_IP


def ether_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-byte Ethernet II header: destination MAC, source MAC, ethertype."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses are 6 bytes")
    return _ETH.pack(dst, src, ethertype)


def frame(dst: bytes, src: bytes, packet: bytes) -> bytes:
    """`packet` (an IPv4 or IPv6 packet) in an Ethernet frame from `src` to `dst`.

    No padding to the 60-byte minimum and no FCS: the driver adds both (a 60-byte IPv4 SYN
    makes a 74-byte frame anyway).
    """
    return _ETH.pack(dst, src, ethertype_of(packet)) + packet


class Frame(NamedTuple):
    """A received frame, split: VLAN tags (if the driver left any in) are skipped."""

    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes


def split_frame(data: bytes) -> Frame | None:
    """Split an Ethernet II frame; None if it is too short to hold the header."""
    if len(data) < ETH_HLEN:
        return None
    dst, src, ethertype = _ETH.unpack_from(data)
    off = ETH_HLEN
    # At most two tags (802.1ad outer + 802.1Q inner); a loop bound, not a parser of stacks.
    for _ in range(2):
        if ethertype not in (ETH_P_8021Q, ETH_P_8021AD) or len(data) < off + 4:
            break
        ethertype = int.from_bytes(data[off + 2 : off + 4], "big")
        off += 4
    return Frame(dst, src, ethertype, bytes(data[off:]))


# -- IPv4: ARP -----------------------------------------------------------------------------------

def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast who-has `target_ip` from (`src_mac`, `src_ip`): the frame `arping` sends.

    `src_ip` must be our address on the link: a host with arp_ignore=1 (every DSR real server)
    answers only requests whose target is configured on the receiving interface, and arp_filter
    hosts check the sender too. 42 bytes; the driver pads it to 60.
    """
    if len(src_ip) != 4 or len(target_ip) != 4:
        raise ValueError("ARP resolves IPv4 addresses (4 bytes)")
    arp = _ARP.pack(1, ETH_P_IP, 6, 4, _ARP_REQUEST, src_mac, src_ip, bytes(6), target_ip)
    return ether_header(BROADCAST, src_mac, ETH_P_ARP) + arp


def parse_arp_reply(data: bytes) -> tuple[bytes, bytes] | None:
    """(sender IPv4 address, sender MAC) of an Ethernet ARP reply frame; None for anything else.

    Only replies count: a request from the host also names its MAC, but answering our own
    question is the only proof that the host holding the address is the one that speaks.
    """
    f = split_frame(data)
    if f is None or f.ethertype != ETH_P_ARP or len(f.payload) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, _tpa = _ARP.unpack_from(f.payload)
    if (htype, ptype, hlen, plen, op) != (1, ETH_P_IP, 6, 4, _ARP_REPLY):
        return None
    if not is_unicast_mac(sha):
        return None
    return spa, sha


# -- IPv6: neighbour discovery ---------------------------------------------------------------------

def solicited_node(target_ip: bytes) -> tuple[bytes, bytes]:
    """(IPv6 address, MAC) of `target_ip`'s solicited-node multicast group (RFC 4291 2.7.1)."""
    group = bytes.fromhex("ff02" + "00" * 9 + "01ff") + target_ip[13:16]
    return group, b"\x33\x33" + group[12:16]


def neighbor_solicitation(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A multicast Neighbor Solicitation for `target_ip` from (`src_mac`, `src_ip`), with the
    source link-layer address option, hop limit 255 (RFC 4861 7.2.2): 86 bytes."""
    if len(src_ip) != 16 or len(target_ip) != 16:
        raise ValueError("neighbour discovery resolves IPv6 addresses (16 bytes)")
    group, group_mac = solicited_node(target_ip)
    body = bytearray(struct.pack("!BBHI16sBB6s", _NS, 0, 0, 0, target_ip, _OPT_SLLA, 1, src_mac))
    total = pseudo_header_sum(src_ip, group, len(body), _ICMP6) + ones_sum(body)
    body[2:4] = finish(total).to_bytes(2, "big")
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), _ICMP6, 255, src_ip, group)
    return ether_header(group_mac, src_mac, ETH_P_IPV6) + ip6 + bytes(body)


def parse_neighbor_advert(data: bytes) -> tuple[bytes, bytes] | None:
    """(target IPv6 address, its MAC) of an Ethernet Neighbor Advertisement; None otherwise.

    The MAC is the target link-layer address option; a solicited advertisement to a multicast
    solicitation must carry it (RFC 4861 7.2.4), so one without it is not an answer to us.
    Hop limit 255 proves it was not forwarded (RFC 4861 7.1.2).
    """
    f = split_frame(data)
    if f is None or f.ethertype != ETH_P_IPV6:
        return None
    p = f.payload
    if len(p) < 64 or p[0] >> 4 != 6 or p[6] != _ICMP6 or p[7] != 255:
        return None
    end = min(len(p), 40 + int.from_bytes(p[4:6], "big"))
    if p[40] != _NA or p[41] != 0:
        return None
    target = p[48:64]
    off = 64
    for _ in range(16):  # options are at least 8 bytes each; a bounded walk
        if off + 2 > end or p[off + 1] == 0:
            break
        kind, length = p[off], p[off + 1] * 8
        if kind == _OPT_TLLA and length >= 8 and off + 8 <= end:
            mac = p[off + 2 : off + 8]
            return (target, mac) if is_unicast_mac(mac) else None
        off += length
    return None
