"""Checks through a named real server (DSR `via`): salted cookies, and replies that name the real
server they came from only through the cookie they carry."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Raw

from synprobe.model import State
from synprobe.wire.cookie import CookieKey
from synprobe.wire.replies import INVALID_ICMP, INVALID_RST, INVALID_SYN_ACK, Reply, match_reply
from synprobe.wire.syn import syn_template
from synprobe.wire.tunnel import encapsulate

KEY = CookieKey(b"via-test-key-012", 61000, 65535)
KEY.issue(bytes(4), bytes(4), 0)  # serial 0 is issued: the SYNs below are derive()d as it
V4, V6 = socket.AF_INET, socket.AF_INET6


def pton(text: str) -> bytes:
    return socket.inet_pton(V6 if ":" in text else V4, text)


LOCAL, VIP, RS1, RS2, RS3 = (pton(a) for a in ("198.18.1.1", "198.18.2.100", "198.18.1.11",
                                               "198.18.1.12", "198.18.1.13"))
LOCAL6, VIP6, RS1_6, RS2_6 = (pton(a) for a in ("fd00:d5::1", "fd00:d5:2::100", "fd00:d5::11",
                                                "fd00:d5::12"))


def test_unsalted_derive_is_unchanged() -> None:
    assert KEY.derive(LOCAL, VIP, 80) == KEY.derive(LOCAL, VIP, 80, b"")


def test_salt_separates_real_servers() -> None:
    plain = KEY.derive(LOCAL, VIP, 80)
    one, two = KEY.derive(LOCAL, VIP, 80, RS1), KEY.derive(LOCAL, VIP, 80, RS2)
    assert len({plain, one, two}) == 3
    assert len({plain[0], one[0], two[0]}) == 3  # the sequence numbers differ
    # Per VIP, the real servers' source ports spread like any other targets' (collisions ~1/4536).
    rng = random.Random(1)
    vias = [rng.randbytes(4) for _ in range(2000)]
    ports = [KEY.derive(LOCAL, VIP, 80, via)[1] for via in vias]
    assert len(set(ports)) > 1500
    assert all(KEY.owns_port(p) for p in ports)


def test_salt_never_aliases_an_unsalted_input() -> None:
    # The hashed bytes are local + remote + port (+ salt): a salted v4 input is 14 or 26 bytes,
    # an unsalted v6 one 34, a salted v6 one 38 or 50. Shifting bytes between fields of equal
    # total length would alias; lengths rule that out.
    lengths = {len(lo + re + b"pp" + salt)
               for lo, re in ((LOCAL, VIP), (LOCAL6, VIP6))
               for salt in (b"", RS1, RS1_6)}
    assert lengths == {10, 14, 26, 34, 38, 50}


def syn_via(via: bytes, local: bytes = LOCAL, vip: bytes = VIP, port: int = 80) -> tuple[int, int]:
    return KEY.derive(local, vip, port, via)


def answer(via: bytes, flags: str, *, local: bytes = LOCAL, vip: bytes = VIP,
           ack_delta: int = 1) -> bytes:
    """The real server's answer to our SYN through `via`: from the VIP, like every answer."""
    seq, sport = syn_via(via, local, vip)
    family = V6 if len(local) == 16 else V4
    layer = IPv6 if family == V6 else IP
    head = layer(src=socket.inet_ntop(family, vip), dst=socket.inet_ntop(family, local))
    return bytes(head / TCP(sport=80, dport=sport, flags=flags, seq=999,
                            ack=(seq + ack_delta) % 2**32))


class Candidates:
    """The engine's side: the vias in flight per (VIP, port), and a record of the questions."""

    def __init__(self, vias: Iterable[bytes]) -> None:
        self.vias = list(vias)
        self.asked: list[tuple[bytes, int, int]] = []

    def __call__(self, remote: bytes, rport: int, lport: int) -> list[bytes]:
        self.asked.append((remote, rport, lport))
        return self.vias


@pytest.mark.parametrize(("local", "vip", "rs1", "rs2"), [(LOCAL, VIP, RS1, RS2),
                                                          (LOCAL6, VIP6, RS1_6, RS2_6)])
def test_reply_names_its_real_server(local: bytes, vip: bytes, rs1: bytes, rs2: bytes) -> None:
    salts = Candidates([rs1, rs2])
    open1 = match_reply(answer(rs1, "SA", local=local, vip=vip), KEY, salts)
    closed2 = match_reply(answer(rs2, "RA", local=local, vip=vip), KEY, salts)
    assert isinstance(open1, Reply) and isinstance(closed2, Reply)
    assert (open1.state, open1.salt, open1.remote, open1.local) == (State.OPEN, rs1, vip, local)
    assert open1.ack == (syn_via(rs1, local, vip)[0] + 1) % 2**32
    assert (closed2.state, closed2.salt) == (State.CLOSED, rs2)
    assert salts.asked == [(vip, 80, syn_via(rs1, local, vip)[1]),
                           (vip, 80, syn_via(rs2, local, vip)[1])]


def test_reply_validated_only_against_the_candidates() -> None:
    # RS3's cookie is genuine, but no check through RS3 is in flight: not ours to believe.
    assert match_reply(answer(RS3, "SA"), KEY, Candidates([RS1, RS2])) is INVALID_SYN_ACK
    assert match_reply(answer(RS3, "RA"), KEY, Candidates([RS1, RS2])) is INVALID_RST
    assert match_reply(answer(RS1, "SA", ack_delta=2), KEY, Candidates([RS1])) is INVALID_SYN_ACK
    # A salted reply is not an unsalted one, and the other way round.
    assert match_reply(answer(RS1, "SA"), KEY) is INVALID_SYN_ACK
    assert match_reply(answer(b"", "SA"), KEY, Candidates([RS1, RS2])) is INVALID_SYN_ACK
    plain = match_reply(answer(b"", "SA"), KEY, Candidates([RS1, b""]))
    assert isinstance(plain, Reply) and plain.salt == b""
    assert match_reply(answer(RS1, "SA"), KEY, Candidates([])) is INVALID_SYN_ACK


def test_unsalted_reply_keeps_its_old_shape() -> None:
    reply = match_reply(answer(b"", "SA"), KEY)
    assert isinstance(reply, Reply)
    assert reply.salt == b""
    assert len(reply) == 9  # two fields more, at the end, defaulted: old constructions work
    assert reply[:4] + reply[6:7] == (State.OPEN, "syn-ack", VIP, 80, LOCAL)


def test_non_candidates_are_not_asked_about() -> None:
    salts = Candidates([RS1])
    wrong_port = bytes(IP(src="198.18.2.100", dst="198.18.1.1") / TCP(sport=80, dport=60000,
                                                                      flags="SA"))
    assert match_reply(wrong_port, KEY, salts) is None
    assert match_reply(b"\x45" + bytes(10), KEY, salts) is None
    assert salts.asked == []


def syn_packet(via: bytes, local: str = "198.18.1.1", vip: str = "198.18.2.100") -> bytes:
    seq, sport = KEY.derive(pton(local), pton(vip), 80, via)
    return syn_template(local).build(pton(vip), sport, 80, seq)


def test_icmp_quoting_a_direct_routed_syn_uses_the_candidates() -> None:
    quoted = syn_packet(RS2)
    pkt = bytes(IP(src="198.18.1.12", dst="198.18.1.1") / ICMP(type=3, code=1) / Raw(quoted))
    reply = match_reply(pkt, KEY, Candidates([RS1, RS2]))
    assert isinstance(reply, Reply)
    assert (reply.state, reply.reason, reply.salt, reply.remote) == (
        State.UNREACHABLE, "icmp-3-1", RS2, VIP)
    assert match_reply(pkt, KEY, Candidates([RS1])) is INVALID_ICMP
    assert match_reply(pkt, KEY) is INVALID_ICMP


def test_icmp_quoting_a_tunnelled_syn_names_the_real_server() -> None:
    """A router on the way to RS2 answers about the IPIP packet: outer header first."""
    tunnelled = encapsulate(syn_packet(RS2), LOCAL, RS2)
    router = IP(src="198.18.5.254", dst="198.18.1.1")
    for quote in (tunnelled, tunnelled[:20 + 20 + 8]):  # all of it, or the minimum that holds
        pkt = bytes(router / ICMP(type=3, code=1) / Raw(quote))
        reply = match_reply(pkt, KEY)  # no candidates needed: the quote names RS2
        assert isinstance(reply, Reply), quote
        assert (reply.state, reply.reason, reply.salt, reply.remote, reply.port) == (
            State.UNREACHABLE, "icmp-3-1", RS2, VIP, 80)
    # 7 bytes of inner TCP: the sequence number is cut, so no verdict.
    short = bytes(router / ICMP(type=3, code=1) / Raw(tunnelled[:47]))
    assert match_reply(short, KEY) is None
    # The outer destination must be the real server the cookie was salted with.
    lying = bytearray(tunnelled)
    lying[16:20] = RS1
    pkt = bytes(router / ICMP(type=3, code=1) / Raw(bytes(lying)))
    assert match_reply(pkt, KEY) is INVALID_ICMP
    # To someone else: refused, as for a plain quote.
    pkt = bytes(IP(src="198.18.5.254", dst="198.18.1.99") / ICMP(type=3, code=1) / Raw(tunnelled))
    assert match_reply(pkt, KEY) is INVALID_ICMP


def test_icmp6_quoting_a_tunnelled_syn() -> None:
    seq, sport = KEY.derive(LOCAL6, VIP6, 80, RS2_6)
    inner = syn_template("fd00:d5::1").build(VIP6, sport, 80, seq)
    tunnelled = encapsulate(inner, LOCAL6, RS2_6)
    pkt = bytes(IPv6(src="fd00:d5:5::1", dst="fd00:d5::1") / ICMPv6DestUnreach(code=3)
                / Raw(tunnelled))
    reply = match_reply(pkt, KEY)
    assert isinstance(reply, Reply)
    assert (reply.state, reply.reason, reply.salt) == (State.UNREACHABLE, "icmp6-1-3", RS2_6)
    # ICMPv6 never quotes an IPv4 packet (nor ICMP an IPv6 one).
    v4_quote = encapsulate(syn_packet(RS2), LOCAL, RS2)
    pkt = bytes(IPv6(src="fd00:d5:5::1", dst="fd00:d5::1") / ICMPv6DestUnreach(code=3)
                / Raw(v4_quote))
    assert match_reply(pkt, KEY) is None


def test_random_packets_never_raise_with_salts() -> None:
    rng = random.Random(4)
    salts = Candidates([RS1, RS2, b""])
    for _ in range(5000):
        data = bytearray(rng.randbytes(rng.randrange(0, 120)))
        if data and rng.random() < 0.7:
            data[0] = rng.choice([0x45, 0x60])
            if len(data) > 9:
                data[9] = rng.choice([1, 6, 4])
        match_reply(bytes(data), KEY, salts)
