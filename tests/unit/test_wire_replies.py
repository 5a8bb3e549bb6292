"""Reply validation and classification, on replies crafted with scapy."""

from __future__ import annotations

import random
import socket
from typing import Any, NamedTuple

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.packet import Raw

from synprobe.model import State
from synprobe.wire.cookie import CookieKey
from synprobe.wire.replies import (
    INVALID_ICMP,
    INVALID_RST,
    INVALID_SYN_ACK,
    SNAP,
    Heard,
    Invalid,
    Reply,
    match_reply,
    read_reply,
)
from synprobe.wire.syn import syn_template

KEY = CookieKey(b"test-key-0123456", 61000, 65535)


class Probe(NamedTuple):
    """One SYN we sent, and what its replies must carry."""

    local: str
    remote: str
    port: int
    sport: int
    seq: int
    syn: bytes  # the SYN's bytes, IP header first
    serial: int = 0  # the cookie serial it was issued

    @property
    def v6(self) -> bool:
        return ":" in self.local


def probe(local: str, remote: str, port: int, key: CookieKey = KEY) -> Probe:
    family = socket.AF_INET6 if ":" in local else socket.AF_INET
    lo, re = socket.inet_pton(family, local), socket.inet_pton(family, remote)
    seq, sport, serial = key.issue(lo, re, port)
    return Probe(local, remote, port, sport, seq, syn_template(local).build(re, sport, port, seq),
                 serial)


P4 = probe("192.0.2.1", "198.51.100.7", 443)
P6 = probe("2001:db8::1", "2001:db8:ffff::7", 22)


def ip_to_us(p: Probe, src: str | None = None, dst: str | None = None, **fields: Any) -> Any:
    """The IP header of a packet to us, from the target unless `src` says otherwise."""
    layer = IPv6 if p.v6 else IP
    return layer(src=src or p.remote, dst=dst or p.local, **fields)


def tcp_reply(
    p: Probe, tcp_flags: str, ack: int, *, seq: int = 12345, dport: int = 0, **ip: Any
) -> bytes:
    segment = TCP(sport=p.port, dport=dport or p.sport, flags=tcp_flags, seq=seq, ack=ack)
    return bytes(ip_to_us(p, **ip) / segment)


def syn_ack(p: Probe, **kw: Any) -> bytes:
    return tcp_reply(p, "SA", (p.seq + 1) % 2**32, **kw)


def rst(p: Probe, **kw: Any) -> bytes:
    return tcp_reply(p, "RA", (p.seq + 1) % 2**32, seq=0, **kw)


def icmp_error(p: Probe, icmp_type: int, code: int, quote: bytes | None = None, **ip: Any) -> bytes:
    """An ICMP(v6) error from a router, quoting our SYN (all of it unless `quote` is given)."""
    quoted = Raw(p.syn if quote is None else quote)
    router = "2001:db8:aaaa::1" if p.v6 else "203.0.113.1"
    if not p.v6:
        return bytes(ip_to_us(p, src=router, **ip) / ICMP(type=icmp_type, code=code) / quoted)
    layer = {1: ICMPv6DestUnreach, 3: ICMPv6TimeExceeded,
             4: ICMPv6ParamProblem}[icmp_type](code=code)
    return bytes(ip_to_us(p, src=router, **ip) / layer / quoted)


def verdict(p: Probe, state: State, reason: str, ack: int | None = None) -> Reply:
    family = socket.AF_INET6 if p.v6 else socket.AF_INET
    local, remote = socket.inet_pton(family, p.local), socket.inet_pton(family, p.remote)
    return Reply(state, reason, remote, p.port, p.sport, ack, local, b"", p.serial)


def other_port(p: Probe) -> int:
    """A port in our range that is not the one the cookie picked for `p`."""
    return 61000 if p.sport != 61000 else 61001


def forged(p: Probe, *, seq: int | None = None, sport: int | None = None) -> Probe:
    """`p` as someone else sent it: another sequence number or source port in our range."""
    syn = bytearray(p.syn)
    at = 40 if p.v6 else 20
    if sport is not None:
        syn[at : at + 2] = sport.to_bytes(2, "big")
    if seq is not None:
        syn[at + 4 : at + 8] = seq.to_bytes(4, "big")
    return p._replace(syn=bytes(syn))


def opened(p: Probe) -> Reply:
    return verdict(p, State.OPEN, "syn-ack", p.seq + 1)


def unreachable(p: Probe, reason: str) -> Reply:
    return verdict(p, State.UNREACHABLE, reason)


def filtered(p: Probe, reason: str) -> Reply:
    return verdict(p, State.FILTERED, reason)


def closed(p: Probe, reason: str = "rst") -> Reply:
    return verdict(p, State.CLOSED, reason)


UDP_OF_OURS = bytes(IP(src=P4.local, dst=P4.remote) / UDP(sport=P4.sport, dport=53))
HOP_BY_HOP = bytes(ip_to_us(P6, nh=0)) + b"\x06\0" + bytes(6)  # then TCP, 8 bytes further on

CASES: list[tuple[str, bytes, Reply | Invalid | None]] = []
for P in (P4, P6):
    v = "v6" if P.v6 else "v4"
    unreach_type = 1 if P.v6 else 3
    CASES += [
        (f"{v} syn-ack", syn_ack(P), opened(P)),
        (f"{v} rst", rst(P), closed(P)),
        (f"{v} rst without ack flag", tcp_reply(P, "R", P.seq + 1), closed(P)),
        (f"{v} forged syn-ack, wrong ack", tcp_reply(P, "SA", P.seq + 2), INVALID_SYN_ACK),
        (f"{v} forged syn-ack, ack = seq", tcp_reply(P, "SA", P.seq), INVALID_SYN_ACK),
        (f"{v} syn-ack to another port", syn_ack(P, dport=other_port(P)), INVALID_SYN_ACK),
        (f"{v} forged rst, wrong ack", tcp_reply(P, "RA", P.seq ^ 0x8000), INVALID_RST),
        (f"{v} rst with seq = cookie + 1", tcp_reply(P, "R", 0, seq=P.seq + 1), INVALID_RST),
        (f"{v} rst from another address", rst(P, src=P.local), INVALID_RST),
        (f"{v} syn-ack below our ports", syn_ack(P, dport=60999), None),
        (f"{v} syn-ack to port 80", syn_ack(P, dport=80), None),
        (f"{v} bare syn", tcp_reply(P, "S", 0), None),
        (f"{v} bare ack", tcp_reply(P, "A", P.seq + 1), None),
        (f"{v} fin-ack", tcp_reply(P, "FA", P.seq + 1), None),
        (
            f"{v} icmp quoting a foreign syn",
            icmp_error(forged(P, seq=P.seq ^ 1), unreach_type, 1),
            INVALID_ICMP,
        ),
        (
            f"{v} icmp quoting another of our ports",
            icmp_error(forged(P, sport=other_port(P)), unreach_type, 1),
            INVALID_ICMP,
        ),
    ]
CASES += [
    ("v4 syn-ack with IP options", syn_ack(P4, options=b"\x01" * 4), opened(P4)),
    ("v4 rst with ethernet padding", rst(P4) + bytes(6), closed(P4)),
    ("v4 icmp host unreachable", icmp_error(P4, 3, 1), unreachable(P4, "icmp-3-1")),
    ("v4 icmp port unreachable", icmp_error(P4, 3, 3), filtered(P4, "icmp-3-3")),
    ("v4 icmp admin prohibited", icmp_error(P4, 3, 13), filtered(P4, "icmp-3-13")),
    ("v4 icmp fragmentation needed: path MTU, no verdict", icmp_error(P4, 3, 4), None),
    ("v4 icmp parameter problem", icmp_error(P4, 12, 0), unreachable(P4, "icmp-12-0")),
    ("v4 icmp time exceeded", icmp_error(P4, 11, 0), unreachable(P4, "icmp-11-0")),
    (
        "v4 icmp quoting 8 bytes of tcp",
        icmp_error(P4, 3, 1, P4.syn[:28]),
        unreachable(P4, "icmp-3-1"),
    ),
    ("v4 icmp quoting 7 bytes of tcp", icmp_error(P4, 3, 1, P4.syn[:27]), None),
    ("v4 icmp echo reply", bytes(ip_to_us(P4) / ICMP(type=0) / Raw(P4.syn)), None),
    ("v4 icmp redirect", icmp_error(P4, 5, 1), None),
    ("v4 icmp quoting udp", icmp_error(P4, 3, 3, UDP_OF_OURS), None),
    ("v4 icmp for another host", icmp_error(P4, 3, 1, dst="192.0.2.99"), INVALID_ICMP),
    ("v6 icmp address unreachable", icmp_error(P6, 1, 3), unreachable(P6, "icmp6-1-3")),
    ("v6 icmp port unreachable", icmp_error(P6, 1, 4), filtered(P6, "icmp6-1-4")),
    ("v6 icmp admin prohibited", icmp_error(P6, 1, 1), filtered(P6, "icmp6-1-1")),
    ("v6 icmp parameter problem", icmp_error(P6, 4, 0), unreachable(P6, "icmp6-4-0")),
    ("v6 icmp hop limit exceeded", icmp_error(P6, 3, 0), unreachable(P6, "icmp6-3-0")),
    (
        "v6 icmp quoting 8 bytes of tcp",
        icmp_error(P6, 1, 3, P6.syn[:48]),
        unreachable(P6, "icmp6-1-3"),
    ),
    ("v6 icmp quoting 7 bytes of tcp", icmp_error(P6, 1, 3, P6.syn[:47]), None),
    ("v6 icmp echo reply", bytes(ip_to_us(P6) / ICMPv6EchoReply() / Raw(P6.syn)), None),
    ("v6 icmp for another host", icmp_error(P6, 1, 3, dst="2001:db8::99"), INVALID_ICMP),
    ("v4 udp", bytes(ip_to_us(P4) / UDP(sport=P4.port, dport=P4.sport)), None),
    ("v4 first fragment", syn_ack(P4, flags="MF"), None),
    ("v4 later fragment", syn_ack(P4, frag=1), None),
    ("v6 syn-ack behind hop-by-hop", HOP_BY_HOP + syn_ack(P6)[40:], None),
    ("not ip", b"\x11" * 60, None),
    ("empty", b"", None),
]


@pytest.mark.parametrize(("packet", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_match_reply(packet: bytes, expected: Reply | Invalid | None) -> None:
    assert match_reply(packet, KEY) == expected


@pytest.mark.parametrize(
    ("packet", "host"),
    [
        (syn_ack(P4), "198.51.100.7"),
        (rst(P6), "2001:db8:ffff::7"),
        (icmp_error(P6, 1, 3), "2001:db8:ffff::7"),
        (syn_ack(probe("2001:db8::1", "2001:DB8:0:0::0:7", 80)), "2001:db8::7"),
        (rst(probe("::ffff:192.0.2.1", "::ffff:198.51.100.7", 80)), "::ffff:198.51.100.7"),
    ],
)
def test_host_is_canonical_text(packet: bytes, host: str) -> None:
    reply = match_reply(packet, KEY)
    assert isinstance(reply, Reply) and reply.host == host


def test_ack_wraps_around() -> None:
    """A cookie of 2**32 - 1 is acknowledged with 0."""

    class MaxCookie(CookieKey):
        def _hash(self, local: bytes, remote: bytes, rport: int, salt: bytes,
                  keep: bool = True) -> tuple[int, int]:
            return 0xFFFFFFFF, 0

    key = MaxCookie()
    key.issued = 1  # serial 0 was given out
    assert key.derive(b"", b"", 0) == (0xFFFFFFFF, 61000)
    p = P4._replace(sport=61000, seq=0xFFFFFFFF, serial=0)
    assert match_reply(tcp_reply(p, "SA", 0), key) == verdict(p, State.OPEN, "syn-ack", 0)
    assert match_reply(tcp_reply(p, "SA", 2**32 - 1), key) == INVALID_SYN_ACK


def heard(p: Probe, state: State | None, reason: str, seq: int, ack: int | None = None,
          sport: int | None = None) -> Heard:
    family = socket.AF_INET6 if p.v6 else socket.AF_INET
    local, remote = socket.inet_pton(family, p.local), socket.inet_pton(family, p.remote)
    return Heard(state, reason, remote, p.port, p.sport if sport is None else sport, seq, ack,
                 local, None)


@pytest.mark.parametrize(("packet", "expected"), [
    (syn_ack(P4), heard(P4, State.OPEN, "syn-ack", P4.seq, P4.seq + 1)),
    (rst(P6), heard(P6, State.CLOSED, "rst", P6.seq)),
    # What a forgery says is read as it is; only the cookie check refuses it.
    (tcp_reply(P4, "SA", P4.seq + 2), heard(P4, State.OPEN, "syn-ack", P4.seq + 1, P4.seq + 2)),
    (syn_ack(P4, dport=61000), heard(P4, State.OPEN, "syn-ack", P4.seq, P4.seq + 1, 61000)),
    (icmp_error(P4, 3, 1), heard(P4, State.UNREACHABLE, "icmp-3-1", P4.seq)),
    (icmp_error(P6, 1, 4), heard(P6, State.FILTERED, "icmp6-1-4", P6.seq)),
    (icmp_error(P4, 3, 4), heard(P4, None, "icmp", P4.seq)),  # path MTU: valid, no verdict
    (icmp_error(P4, 3, 1, dst="192.0.2.99"), INVALID_ICMP),  # quoting a SYN not from there
    (syn_ack(P4, dport=60999), None),
    (tcp_reply(P4, "A", P4.seq + 1), None),
], ids=["syn-ack", "rst", "forged ack", "another port of ours", "icmp", "icmp6", "path mtu",
        "icmp for another host", "below our ports", "bare ack"])
def test_read_reply_says_what_a_packet_claims_without_the_key(
        packet: bytes, expected: Heard | Invalid | None) -> None:
    """The first half of match_reply, for an engine that checks a reply against its own
    record of what it sent: the fields, the SYN's sequence number it answers, no verdict."""
    assert read_reply(packet, 61000, 65535) == expected


def test_ack_zero_answers_the_last_sequence_number() -> None:
    got = read_reply(tcp_reply(P4, "SA", 0), 61000, 65535)
    assert isinstance(got, Heard) and (got.seq, got.ack) == (0xFFFFFFFF, 0)


def test_another_key_sees_only_invalid_replies() -> None:
    stranger = CookieKey(b"another-key-0123", 61000, 65535)
    for packet, expected in [(syn_ack(P4), INVALID_SYN_ACK), (rst(P6), INVALID_RST)]:
        assert match_reply(packet, stranger) == expected
    assert match_reply(icmp_error(P4, 3, 1), stranger) == INVALID_ICMP


def test_a_narrower_range_ignores_the_rest() -> None:
    narrow = CookieKey(KEY.key, 1000, 2000)
    assert match_reply(syn_ack(P4), narrow) is None
    assert match_reply(icmp_error(P6, 1, 3), narrow) is None


def test_buffers_other_than_bytes() -> None:
    packet = syn_ack(P6)
    expected = verdict(P6, State.OPEN, "syn-ack", P6.seq + 1)
    assert match_reply(bytearray(packet), KEY) == expected
    assert match_reply(memoryview(packet), KEY) == expected  # type: ignore[arg-type]


# The shortest prefix of each reply that still carries what validation reads: the whole TCP
# header of a SYN-ACK (a SYN-ACK without options here), 8 quoted TCP bytes of an ICMP error.
NEEDED = [
    ("v4 syn-ack", syn_ack(P4), 20 + 20),
    ("v6 syn-ack", syn_ack(P6), 40 + 20),
    ("v4 icmp", icmp_error(P4, 3, 1), 20 + 8 + 20 + 8),
    ("v6 icmp", icmp_error(P6, 1, 3), 40 + 8 + 40 + 8),
]


def cut(packet: bytes, n: int, claim: int | None = None) -> bytes:
    """The first `n` bytes, with the IP length field saying `claim` bytes (default: n)."""
    out = bytearray(packet[:n])
    claim = n if claim is None else claim
    if len(out) >= 6 and out[0] >> 4 == 6:
        out[4:6] = max(claim - 40, 0).to_bytes(2, "big")
    elif len(out) >= 4:
        out[2:4] = claim.to_bytes(2, "big")
    return bytes(out)


@pytest.mark.parametrize(("packet", "needed"), [c[1:] for c in NEEDED], ids=[c[0] for c in NEEDED])
def test_truncated_packets_are_not_replies(packet: bytes, needed: int) -> None:
    for n in range(needed):
        assert match_reply(cut(packet, n), KEY) is None, n
        # Cut by the network, its header still claiming the rest: the kernel drops it too.
        assert match_reply(packet[:n], KEY) is None, n
    assert isinstance(match_reply(cut(packet, needed), KEY), Reply)


@pytest.mark.parametrize(("packet", "needed"), [c[1:] for c in NEEDED], ids=[c[0] for c in NEEDED])
def test_the_length_fields_must_cover_the_headers(packet: bytes, needed: int) -> None:
    """IPv4 total length / IPv6 payload length that leave out (part of) the TCP header or the
    quote: whatever the cookie says, no reply (ip_rcv and tcp_v4_rcv would drop it)."""
    assert isinstance(match_reply(packet, KEY), Reply)
    for claim in (needed - 1, needed - 8, 20, 0):
        assert match_reply(cut(packet, len(packet), claim), KEY) is None, claim
    # Longer than it claims is fine: Ethernet pads short frames (to 46 bytes of payload).
    assert isinstance(match_reply(packet + bytes(12), KEY), Reply)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("doff", [0, 4, 6, 15])
def test_the_data_offset_must_be_sane(v6: bool, doff: int) -> None:
    """A data offset under 5 words, or past the segment's end (no options here): dropped."""
    p = P6 if v6 else P4
    packet = bytearray(syn_ack(p))
    packet[(40 if v6 else 20) + 12] = doff << 4
    assert match_reply(bytes(packet), KEY) is None


def test_a_packet_cut_at_the_snap_length_is_taken() -> None:
    """The receiver keeps SNAP bytes of each packet: an ICMPv6 error quoting a long packet
    arrives cut there, its header claiming more, and is still read."""
    long = icmp_error(P6, 1, 3, quote=P6.syn + bytes(900))
    assert len(long) > SNAP
    assert match_reply(long[:SNAP], KEY) == unreachable(P6, "icmp6-1-3")
    assert match_reply(long[: SNAP - 1], KEY) is None


def test_tcp_checksums_are_not_verified() -> None:
    """The decision (docs/engines-icmp.md): a reply with a wrong TCP checksum whose cookie
    holds still counts. Over veth and loopback AF_PACKET sees only partial checksums."""
    for p in (P4, P6):
        packet = bytearray(syn_ack(p))
        at = (40 if p.v6 else 20) + 16
        packet[at : at + 2] = bytes([packet[at] ^ 0xFF, packet[at + 1]])
        assert match_reply(bytes(packet), KEY) == opened(p)


def test_garbage_never_raises() -> None:
    rng = random.Random(7)
    seeds = [syn_ack(P4), rst(P6), icmp_error(P4, 3, 1), icmp_error(P6, 1, 3)]
    for _ in range(20000):
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):  # flip a few bytes, the header ones most
            packet[min(int(rng.expovariate(1 / 24)), len(packet) - 1)] = rng.randrange(256)
        packet = packet[: rng.randrange(len(packet) + 1)]
        result = match_reply(bytes(packet), KEY)
        assert result is None or isinstance(result, Reply | Invalid)
    for _ in range(5000):
        assert match_reply(rng.randbytes(rng.randrange(120)), KEY) in (None, *_INVALIDS)


_INVALIDS = (INVALID_SYN_ACK, INVALID_RST, INVALID_ICMP)
