"""SYN and RST packets: built once with scapy as templates, patched per packet without it.

Following zmap's probe-module contract, everything constant is written when the template is
made; `build` writes only the destination address, the ports and the sequence number, and fixes
the checksums from sums precomputed over the constant part (see `checksum`). Each packet is one
`struct.pack` of the template's constant slices and the changed fields (~0.4 µs; building the
same packet with scapy costs ~225 µs, measured by bench/wire_micro.py).

Packets start at the IP header, for an IPPROTO_RAW socket. On IPv4 the kernel rewrites the
header checksum (always) and an IP ID of zero (with DF set it stays zero, `ip_select_ident_segs`);
on IPv6 it writes nothing. The TCP checksum covers the source address, so the source must be
the real one: the kernel's "fill in a zero source" would leave the checksum wrong.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from synprobe.wire.checksum import MOD, ones_sum, pseudo_header_sum

# Realistic Linux SYN defaults (see packets.py, the scapy-free encoder of the same bytes); the
# options are in the order tcp_options_write() emits them.
from synprobe.wire.packets import (  # re-exported: syn.py is where callers look
    DEFAULT_TS_VAL,
    DEFAULT_TTL,
    DEFAULT_WINDOW,
    DEFAULT_WSCALE,
    default_mss,
)

_V4_HEADER = 20
_V6_HEADER = 40


class PacketTemplate:
    """A TCP packet for one source address, with the destination, ports and seq left to fill.

    Make one with `syn_template` or `rst_template` (or `PacketTemplate.from_packet` for any IP
    packet without IP options or IPv6 extension headers) and call `build` per packet.
    """

    __slots__ = ("_ip_sum", "_mid", "_pack", "_tail", "_tcp_sum", "source", "template", "v6")

    v6: bool
    source: bytes  # our packed address, the template's source
    template: bytes  # the packet with destination, ports, seq and checksums zeroed

    @staticmethod
    def from_packet(packet: bytes) -> PacketTemplate:
        """A template from a full IPv4 or IPv6 + TCP packet; its dst, ports and seq are ignored."""
        version = packet[0] >> 4 if len(packet) >= _V6_HEADER else 0
        if version == 4:
            return _Template4(packet)
        if version == 6:
            return _Template6(packet)
        raise ValueError(f"not an IP packet ({len(packet)} bytes, version {version})")

    def build(self, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
        """The packet to `dst` (packed, 4 or 16 bytes), from `sport` to `dport`, with `seq`."""
        raise NotImplementedError

    def _split(self, packet: bytes, ip_len: int) -> bytes:
        """Keep the TCP header's constant slices and sum; return it with the variable fields 0."""
        tcp = bytearray(packet[ip_len:])
        if len(tcp) < 20 or (tcp[12] >> 4) * 4 > len(tcp):
            raise ValueError("template has no complete TCP header")
        tcp[0:8] = bytes(8)  # ports, seq
        tcp[16:18] = b"\0\0"  # checksum
        self._mid = bytes(tcp[8:16])  # ack, data offset, flags, window
        self._tail = bytes(tcp[18:])  # urgent pointer, options, payload
        self._tcp_sum = (pseudo_header_sum(self.source, b"", len(tcp)) + ones_sum(tcp)) % MOD
        return bytes(tcp)

    def __repr__(self) -> str:
        family = socket.AF_INET6 if self.v6 else socket.AF_INET
        src = socket.inet_ntop(family, self.source)
        return f"{type(self).__name__}(source={src!r}, length={len(self.template)})"


class _Template4(PacketTemplate):
    __slots__ = ("_head",)

    def __init__(self, packet: bytes) -> None:
        if packet[0] != 0x45 or packet[9] != socket.IPPROTO_TCP:
            raise ValueError("IPv4 template must be TCP with a 20-byte header, no IP options")
        self.v6 = False
        self.source = bytes(packet[12:16])
        ip = bytearray(packet[:_V4_HEADER])
        ip[10:12] = b"\0\0"  # checksum
        ip[16:20] = bytes(4)  # destination
        self._head = bytes(ip[:10])
        self._ip_sum = ones_sum(ip)
        tcp = self._split(packet, _V4_HEADER)
        self.template = bytes(ip) + tcp
        self._pack = struct.Struct(f"!10sH4s4sHHI8sH{len(self._tail)}s").pack

    def build(self, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
        if len(dst) != 4:
            raise ValueError("IPv4 template needs a 4-byte destination")
        d = int.from_bytes(dst, "big")
        return self._pack(
            self._head,
            -(self._ip_sum + d) % MOD,
            self.source,
            dst,
            sport,
            dport,
            seq,
            self._mid,
            -(self._tcp_sum + d + sport + dport + seq) % MOD,
            self._tail,
        )


class _Template6(PacketTemplate):
    __slots__ = ("_head",)

    def __init__(self, packet: bytes) -> None:
        if packet[6] != socket.IPPROTO_TCP:
            raise ValueError("IPv6 template must carry TCP directly, no extension headers")
        self.v6 = True
        self.source = bytes(packet[8:24])
        self._head = bytes(packet[:24])  # version/class/flow, payload length, hop limit, source
        self._ip_sum = 0  # IPv6 has no header checksum
        tcp = self._split(packet, _V6_HEADER)
        self.template = self._head + bytes(16) + tcp
        self._pack = struct.Struct(f"!24s16sHHI8sH{len(self._tail)}s").pack

    def build(self, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
        if len(dst) != 16:
            raise ValueError("IPv6 template needs a 16-byte destination")
        return self._pack(
            self._head,
            dst,
            sport,
            dport,
            seq,
            self._mid,
            -(self._tcp_sum + int.from_bytes(dst, "big") + sport + dport + seq) % MOD,
            self._tail,
        )


def syn_options(
    mss: int, ts_val: int = DEFAULT_TS_VAL, wscale: int = DEFAULT_WSCALE
) -> list[tuple[str, Any]]:
    """Linux's SYN options, in scapy's notation: mss, sackOK, TS, nop, wscale (20 bytes)."""
    return [
        ("MSS", mss),
        ("SAckOK", b""),
        ("Timestamp", (ts_val, 0)),
        ("NOP", None),
        ("WScale", wscale),
    ]


def syn_template(source: str, *, mss: int | None = None, window: int = DEFAULT_WINDOW,
                 ttl: int = DEFAULT_TTL, ts_val: int = DEFAULT_TS_VAL,
                 wscale: int = DEFAULT_WSCALE) -> PacketTemplate:
    """A SYN template from the numeric address `source` (IPv4 or IPv6). Imports scapy."""
    mss = default_mss(source, mss)
    tcp: dict[str, Any] = {
        "flags": "S",
        "window": window,
        "options": syn_options(mss, ts_val, wscale),
    }
    return PacketTemplate.from_packet(_scapy_packet(source, ttl, tcp))


def rst_template(source: str, *, ttl: int = DEFAULT_TTL) -> PacketTemplate:
    """A bare RST template (window 0, no ACK flag), as Linux resets an unwanted SYN-ACK.

    For `--rst self`: build it with seq = the SYN-ACK's ack (`Reply.ack`), ports swapped back
    to ours (sport = `Reply.sport`, dport = `Reply.port`). RFC 9293 3.10.7.1: a RST answering
    a segment that carries ACK takes its sequence number from that ACK and sets no ACK itself.
    """
    return PacketTemplate.from_packet(_scapy_packet(source, ttl, {"flags": "R", "window": 0}))


def _scapy_packet(source: str, ttl: int, tcp_fields: dict[str, Any]) -> bytes:
    """Encode the template with scapy; the only place this package imports it."""
    # Numeric only (scapy would resolve a name), and never unspecified: the TCP checksum covers
    # the source, so the kernel filling in a zero source would make every probe's checksum wrong.
    import ipaddress  # here, with scapy: templates are made once, then read from their cache

    if ipaddress.ip_address(source).is_unspecified:
        raise ValueError("a template needs a concrete source address, not 0.0.0.0 or ::")
    IP, TCP, IPv6 = _scapy_layers()

    tcp = TCP(sport=0, dport=0, seq=0, ack=0, **tcp_fields)
    if ipaddress.ip_address(source).version == 6:
        # Flow label 0: Linux would pick a per-connection hash, but no label is also valid.
        return bytes(IPv6(src=source, dst="::", hlim=ttl, tc=0, fl=0) / tcp)
    # ID 0 with DF is what Linux sends for DF packets without a connected socket.
    return bytes(IP(src=source, dst="0.0.0.0", ttl=ttl, id=0, flags="DF", tos=0) / tcp)


_XDG_DIRS = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


def _scapy_layers() -> tuple[Any, Any, Any]:
    """scapy's IP, TCP and IPv6 classes. scapy's first import makes its cache and config
    folders from $XDG_*_HOME even when they are relative paths, which the XDG base directory
    spec says to ignore (it would write into the current directory): such values are hidden
    from that import and put back right after it."""
    relative = {name: value for name in _XDG_DIRS
                if (value := os.environ.get(name)) and not os.path.isabs(value)}
    for name in relative:
        del os.environ[name]
    try:
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
    finally:
        os.environ.update(relative)
    return IP, TCP, IPv6
