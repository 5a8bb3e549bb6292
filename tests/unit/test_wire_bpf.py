"""The reply filter, run by a small classic-BPF interpreter on crafted packets, then by the kernel
on loopback."""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrHopByHop,
)

from synprobe.wire.bpf import (
    ACCEPT_BYTES,
    Insn,
    assemble,
    attach_filter,
    pack_program,
    reply_filter,
)

LO, HI = 61000, 65535
IPV4, IPV6, ARP = 0x0800, 0x86DD, 0x0806
HOST, OUTGOING = socket.PACKET_HOST, socket.PACKET_OUTGOING
ANCILLARY = 0xFFFFF000  # SKF_AD_OFF as an unsigned k


class Drop(Exception):
    """A load past the packet's end: the kernel returns 0 from the program."""


def run_bpf(program: Sequence[Insn], packet: bytes, protocol: int, pkttype: int) -> int:
    """Interpret the classic BPF subset the filter uses; refuse anything else."""
    a = x = pc = 0

    def load(offset: int, size: int) -> int:
        if offset < 0 or offset + size > len(packet):
            raise Drop
        return int.from_bytes(packet[offset : offset + size], "big")

    try:
        while True:
            code, jt, jf, k = program[pc]
            pc += 1
            cls, size, mode = code & 0x07, code & 0x18, code & 0xE0
            width = {0x00: 4, 0x08: 2, 0x10: 1}[size]
            if code == 0x00 | 0x00 | 0x20 and k >= ANCILLARY:  # ld [SKF_AD_OFF + n]
                a = {0: protocol, 4: pkttype}[k - ANCILLARY]
            elif cls == 0x00 and mode == 0x20:  # ld{,h,b} [k]
                a = load(k, width)
            elif cls == 0x00 and mode == 0x40:  # ld{,h,b} [x + k]
                a = load(x + k, width)
            elif code == 0x01 | 0x10 | 0xA0:  # ldxb 4 * ([k] & 0xf)
                x = 4 * (load(k, 1) & 0x0F)
            elif code == 0x01 | 0x00 | 0x00:  # ldx #k
                x = k
            elif code == 0x04 | 0x50:  # and #k
                a &= k
            elif cls == 0x05:
                test = {0x10: a == k, 0x20: a > k, 0x30: a >= k, 0x40: bool(a & k)}[code & 0xF0]
                pc += jt if test else jf
            elif code == 0x06:  # ret #k
                return k
            else:
                raise AssertionError(f"opcode {code:#x} is not modelled")
    except Drop:
        return 0


def tcp4(tcp_flags: str, dport: int = 62000, **ip: Any) -> bytes:
    segment = TCP(sport=443, dport=dport, flags=tcp_flags)
    return bytes(IP(src="198.51.100.7", dst="192.0.2.1", **ip) / segment)


def tcp6(tcp_flags: str, dport: int = 62000) -> bytes:
    segment = TCP(sport=22, dport=dport, flags=tcp_flags)
    return bytes(IPv6(src="2001:db8::7", dst="2001:db8::1") / segment)


QUOTE4 = bytes(IP(src="192.0.2.1", dst="198.51.100.7") / TCP(sport=62000, dport=443))
QUOTE6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::7") / TCP(sport=62000, dport=22))


def icmp4(icmp_type: int, code: int = 0) -> bytes:
    error = ICMP(type=icmp_type, code=code)
    return bytes(IP(src="203.0.113.1", dst="192.0.2.1") / error / QUOTE4)


def icmp6(layer: Any) -> bytes:
    return bytes(IPv6(src="2001:db8:aaaa::1", dst="2001:db8::1") / layer / QUOTE6)


HOP_BY_HOP = IPv6(src="2001:db8::7", dst="2001:db8::1") / IPv6ExtHdrHopByHop()
BEHIND_HOP_BY_HOP = bytes(HOP_BY_HOP / TCP(dport=62000, flags="SA"))

# (name, packet, ethertype, packet type, accepted)
CASES: list[tuple[str, bytes, int, int, bool]] = [
    ("v4 syn-ack", tcp4("SA"), IPV4, HOST, True),
    ("v4 rst", tcp4("R"), IPV4, HOST, True),
    ("v4 rst-ack", tcp4("RA"), IPV4, HOST, True),
    ("v4 syn-ack+ece", tcp4("SAE"), IPV4, HOST, True),
    ("v4 syn-ack at range start", tcp4("SA", LO), IPV4, HOST, True),
    ("v4 syn-ack at range end", tcp4("SA", HI), IPV4, HOST, True),
    ("v4 syn-ack below range", tcp4("SA", LO - 1), IPV4, HOST, False),
    ("v4 syn-ack to port 80", tcp4("SA", 80), IPV4, HOST, False),
    ("v4 syn-ack with IP options", tcp4("SA", options=b"\x01" * 8), IPV4, HOST, True),
    ("v4 rst with IP options, port out", tcp4("R", 80, options=b"\x01" * 8), IPV4, HOST, False),
    ("v4 syn", tcp4("S"), IPV4, HOST, False),
    ("v4 ack", tcp4("A"), IPV4, HOST, False),
    ("v4 fin-ack", tcp4("FA"), IPV4, HOST, False),
    ("v4 psh-ack", tcp4("PA"), IPV4, HOST, False),
    ("v4 first fragment", tcp4("SA", flags="MF"), IPV4, HOST, False),
    ("v4 later fragment", tcp4("SA", frag=3), IPV4, HOST, False),
    ("v4 syn-ack, DF", tcp4("SA", flags="DF"), IPV4, HOST, True),
    ("v4 our own outgoing rst", tcp4("R"), IPV4, OUTGOING, False),
    ("v4 truncated tcp", tcp4("SA")[:30], IPV4, HOST, False),
    ("v4 udp", bytes(IP() / UDP(dport=62000)), IPV4, HOST, False),
    ("v4 icmp unreachable", icmp4(3, 1), IPV4, HOST, True),
    ("v4 icmp port unreachable", icmp4(3, 3), IPV4, HOST, True),
    ("v4 icmp time exceeded", icmp4(11), IPV4, HOST, True),
    ("v4 icmp echo reply", icmp4(0), IPV4, HOST, False),
    ("v4 icmp echo request", icmp4(8), IPV4, HOST, False),
    ("v4 icmp redirect", icmp4(5), IPV4, HOST, False),
    ("v4 icmp fragment", bytes(IP(frag=1, proto=1)) + icmp4(3)[20:], IPV4, HOST, False),
    ("v6 syn-ack", tcp6("SA"), IPV6, HOST, True),
    ("v6 rst", tcp6("R"), IPV6, HOST, True),
    ("v6 rst at range end", tcp6("R", HI), IPV6, HOST, True),
    ("v6 syn-ack below range", tcp6("SA", LO - 1), IPV6, HOST, False),
    ("v6 ack", tcp6("A"), IPV6, HOST, False),
    ("v6 our own outgoing syn-ack", tcp6("SA"), IPV6, OUTGOING, False),
    ("v6 syn-ack behind hop-by-hop", BEHIND_HOP_BY_HOP, IPV6, HOST, False),
    ("v6 truncated tcp", tcp6("SA")[:50], IPV6, HOST, False),
    ("v6 icmp address unreachable", icmp6(ICMPv6DestUnreach(code=3)), IPV6, HOST, True),
    ("v6 icmp time exceeded", icmp6(ICMPv6TimeExceeded()), IPV6, HOST, True),
    ("v6 icmp packet too big", icmp6(ICMPv6PacketTooBig()), IPV6, HOST, False),
    ("v6 icmp echo reply", icmp6(ICMPv6EchoReply()), IPV6, HOST, False),
    ("v6 udp", bytes(IPv6() / UDP(dport=62000)), IPV6, HOST, False),
    ("v4 packet under the v6 ethertype", tcp4("SA"), IPV6, HOST, False),
    ("arp", bytes(28), ARP, HOST, False),
    ("empty", b"", IPV4, HOST, False),
]


@pytest.mark.parametrize(
    ("packet", "protocol", "pkttype", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_filter(packet: bytes, protocol: int, pkttype: int, accepted: bool) -> None:
    verdict = run_bpf(reply_filter(LO, HI), packet, protocol, pkttype)
    assert verdict == (ACCEPT_BYTES if accepted else 0)


def test_filter_follows_the_port_range() -> None:
    program = reply_filter(1000, 1000)
    assert run_bpf(program, tcp4("SA", 1000), IPV4, HOST)
    assert not run_bpf(program, tcp4("SA", 999), IPV4, HOST)
    assert not run_bpf(program, tcp6("R", 1001), IPV6, HOST)


def test_random_bytes_never_escape_the_model() -> None:
    """Whatever the input, the program ends in a `ret` (no fall-through, no unmodelled op)."""
    rng = random.Random(3)
    program = reply_filter(LO, HI)
    for _ in range(5000):
        packet = rng.randbytes(rng.randrange(80))
        assert run_bpf(program, packet, rng.choice([IPV4, IPV6]), HOST) in (0, ACCEPT_BYTES)


def test_assemble_resolves_labels_and_refuses_mistakes() -> None:
    lines = [(0x15, 1, "b", None), "a", (0x06, 1, None, None), "b", (0x06, 0, None, None)]
    assert assemble(lines) == [(0x15, 1, 0, 1), (0x06, 0, 0, 1), (0x06, 0, 0, 0)]
    with pytest.raises(ValueError):
        assemble(["a", "a", (0x06, 0, None, None)])
    with pytest.raises(ValueError):  # jumps only go forward
        assemble(["a", (0x05, 0, "a", None)])


def test_pack_program_is_struct_sock_filter() -> None:
    assert pack_program([(0x06, 1, 2, 0x40000)]) == (
        (0x06).to_bytes(2, "little") + b"\x01\x02" + (0x40000).to_bytes(4, "little")
    )


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="packet and raw sockets need root")
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_kernel_runs_the_filter_on_loopback(v6: bool) -> None:
    """The kernel takes the program, and on `lo` passes one copy of a reply-shaped packet (the
    incoming one, not its outgoing twin) and none of the lookalikes."""
    if v6 and not _has_ipv6_loopback():
        pytest.skip("no ::1 here")
    rng = random.Random()
    marker = rng.randrange(1, 2**32)  # our packets' seq, to tell them from other loopback traffic
    port = rng.randrange(LO, HI + 1)
    if v6:
        family, src, dst, layer = socket.AF_INET6, "::1", "::1", IPv6
    else:
        family, src, dst, layer = socket.AF_INET, "127.0.0.2", "127.0.0.1", IP
    # A RST into our range (kept), then lookalikes the filter must drop: an ACK into the range,
    # a RST outside it. None of them makes the kernel answer into our range.
    sent = [
        (True, TCP(sport=443, dport=port, flags="R", seq=marker)),
        (False, TCP(sport=443, dport=port, flags="A", seq=marker)),
        (False, TCP(sport=443, dport=LO - 1, flags="R", seq=marker)),
    ]
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0) as rx:
        attach_filter(rx, reply_filter(LO, HI))  # before bind: nothing slips in unfiltered
        rx.bind(("lo", 0x0003))  # ETH_P_ALL
        with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as tx:
            for _, segment in sent:
                tx.sendto(bytes(layer(src=src, dst=dst) / segment), (dst, 0))
        seen = _drain(rx, marker, v6)
    assert seen == [(443, port, 0x04)]


def _drain(rx: socket.socket, marker: int, v6: bool) -> list[tuple[int, int, int]]:
    """(sport, dport, flags) of every received packet carrying `marker`, for half a second."""
    seen: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        rx.settimeout(left)
        try:
            packet = rx.recv(65535)
        except TimeoutError:
            break
        at = 40 if v6 else (packet[0] & 0x0F) * 4
        if int.from_bytes(packet[at + 4 : at + 8], "big") == marker:
            sport, dport = struct.unpack_from("!HH", packet, at)
            seen.append((sport, dport, packet[at + 13]))
    return seen
