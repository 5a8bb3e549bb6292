"""`--dry-run` lines, in tcpdump's words."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP

from synprobe.wire.describe import describe
from synprobe.wire.syn import rst_template, syn_template

V4 = socket.inet_pton(socket.AF_INET, "198.51.100.7")
V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
LINUX = "options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7]"


def tcp(**fields: object) -> bytes:
    return bytes(IP(src="192.0.2.1", dst="198.51.100.7") / TCP(sport=1, dport=2, **fields))


def overlong_option() -> bytes:
    """One 4-byte option whose length byte claims 9 bytes."""
    packet = bytearray(tcp(options=[(99, b"\x01\x02")]))
    packet[20 + 20 + 1] = 9
    return bytes(packet)


CASES = [
    (
        "v4 syn",
        syn_template("192.0.2.1").build(V4, 61234, 443, 123),
        f"IP 192.0.2.1.61234 > 198.51.100.7.443: Flags [S], seq 123, win 64240, {LINUX}, length 0",
    ),
    (
        "v6 syn",
        syn_template("2001:db8::1").build(V6, 65535, 22, 2**32 - 1),
        "IP6 2001:db8::1.65535 > 2001:db8::7.22: Flags [S], seq 4294967295, win 64240, "
        + LINUX.replace("1460", "1440")
        + ", length 0",
    ),
    (
        "rst",
        rst_template("192.0.2.1").build(V4, 61234, 443, 99),
        "IP 192.0.2.1.61234 > 198.51.100.7.443: Flags [R], seq 99, win 0, length 0",
    ),
    (
        "syn-ack",
        tcp(flags="SA", seq=5, ack=6, window=100),
        "IP 192.0.2.1.1 > 198.51.100.7.2: Flags [S.], seq 5, ack 6, win 100, length 0",
    ),
    (
        "data and odd options",
        bytes(
            IP(src="192.0.2.1", dst="198.51.100.7")
            / TCP(
                sport=1, dport=2, flags="PA", options=[("NOP", None), (99, b"\xab"), ("EOL", None)]
            )
            / b"hello"
        ),
        "IP 192.0.2.1.1 > 198.51.100.7.2: Flags [P.], seq 0, ack 0, win 8192, "
        "options [nop,unknown-99 0xab,eol], length 5",
    ),
    (
        "malformed option",
        overlong_option(),
        "IP 192.0.2.1.1 > 198.51.100.7.2: Flags [S], seq 0, win 8192, options [bad opts], length 0",
    ),
    (
        "no flags",
        tcp(flags=0),
        "IP 192.0.2.1.1 > 198.51.100.7.2: Flags [none], seq 0, win 8192, length 0",
    ),
    ("truncated", tcp()[:30], "IP 192.0.2.1 > 198.51.100.7: truncated TCP header"),
    ("udp", bytes(IP() / UDP()), "not an IPv4/IPv6 TCP packet (28 bytes)"),
    ("empty", b"", "empty packet"),
]


@pytest.mark.parametrize(("packet", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_describe(packet: bytes, line: str) -> None:
    assert describe(packet) == line
