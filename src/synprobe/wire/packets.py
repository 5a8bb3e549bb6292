"""synprobe's own encoder for the two packets it sends: pure `struct`, no scapy.

scapy builds the templates (`syn.syn_template`, `syn.rst_template`) and is the reference
encoder; these functions produce the same bytes for the same parameters (tests cross-check
them on random addresses). The engine needs them to judge what it reads back from its
template cache without importing scapy: a cache entry is used only if it is byte for byte
what these functions give (see engines/templates.py).

Both packets are for a template: destination, ports, sequence and acknowledgement numbers 0,
checksums computed over those zeros, as scapy computes them.
"""

from __future__ import annotations

import socket
import struct

from synprobe.wire.checksum import finish, ones_sum, pseudo_header_sum

# Realistic Linux SYN defaults: window 64240 (44 * 1460) and wscale 7 are what a 6.x kernel
# offers with default tcp_rmem; MSS is the link MTU (1500) minus the IP and TCP headers.
DEFAULT_WINDOW = 64240
DEFAULT_TTL = 64
DEFAULT_WSCALE = 7
DEFAULT_TS_VAL = 1
DEFAULT_MSS_V4 = 1460
DEFAULT_MSS_V6 = 1440

_SYN, _RST = 0x02, 0x04
_IP_DF = 0x4000
_TCP = 6


def syn_option_bytes(mss: int, ts_val: int = DEFAULT_TS_VAL, wscale: int = DEFAULT_WSCALE) -> bytes:
    """Linux's SYN options in its order: MSS, SACK permitted, timestamps, NOP, window scale."""
    return struct.pack("!BBH BB BBII B BBB", 2, 4, mss, 4, 2, 8, 10, ts_val, 0, 1, 3, 3, wscale)


def ip_version(packet: bytes) -> int:
    """4 or 6, from an IP packet's version nibble; ValueError for anything else."""
    version = packet[0] >> 4 if packet else 0
    if version not in (4, 6):
        raise ValueError(f"not an IP packet (version {version})")
    return version


def default_mss(source: str, mss: int | None = None) -> int:
    """`mss`, or the one Linux announces on a 1500-byte link for the family of `source`."""
    if mss is not None:
        return mss
    return DEFAULT_MSS_V6 if len(pack_address(source)) == 16 else DEFAULT_MSS_V4


def pack_address(source: str) -> bytes:
    """Numeric IPv4 or IPv6 address `source`, packed (ValueError for anything else). Every raw
    run checks its templates against these bytes: socket's parser, not ipaddress (~1.4 ms of
    start-up to import)."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in source else socket.AF_INET, source)
    except (OSError, TypeError):
        raise ValueError(f"{source!r} is not a numeric IPv4 or IPv6 address") from None


def syn_packet(source: str, *, mss: int | None = None, window: int = DEFAULT_WINDOW,
               ttl: int = DEFAULT_TTL, ts_val: int = DEFAULT_TS_VAL,
               wscale: int = DEFAULT_WSCALE) -> bytes:
    """The SYN template `syn.syn_template(source, ...)` is made from, byte for byte."""
    options = syn_option_bytes(default_mss(source, mss), ts_val, wscale)
    return tcp_packet(source, _SYN, window, options, ttl)


def rst_packet(source: str, *, ttl: int = DEFAULT_TTL) -> bytes:
    """The bare RST template (window 0, no options) `syn.rst_template(source)` is made from."""
    return tcp_packet(source, _RST, 0, b"", ttl)


def tcp_packet(source: str, flags: int, window: int, options: bytes, ttl: int) -> bytes:
    """IPv4 (no IP options, DF, ID 0) or IPv6 (class and flow label 0) + TCP, from numeric
    address `source` to the unspecified address, all variable fields zero."""
    src = pack_address(source)
    if not any(src):
        raise ValueError("a template needs a concrete source address, not 0.0.0.0 or ::")
    if len(options) % 4:
        raise ValueError("TCP options must fill whole 32-bit words")
    tcp_len = 20 + len(options)
    # ports, seq, ack 0; data offset; flags; window; checksum 0 for now; urgent pointer 0
    tcp = bytearray(struct.pack("!HHIIBBHHH", 0, 0, 0, 0, (tcp_len // 4) << 4, flags, window,
                                0, 0) + options)
    dst = bytes(len(src))
    struct.pack_into("!H", tcp, 16, finish(pseudo_header_sum(src, dst, tcp_len) + ones_sum(tcp)))
    if len(src) == 16:
        return struct.pack("!IHBB16s16s", 6 << 28, tcp_len, _TCP, ttl, src, dst) + tcp
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 0, _IP_DF, ttl, _TCP, 0,
                               src, dst))
    struct.pack_into("!H", ip, 10, finish(ones_sum(ip)))
    return bytes(ip) + bytes(tcp)
