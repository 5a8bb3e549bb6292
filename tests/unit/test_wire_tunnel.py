"""IP-in-IP encapsulation against scapy, byte for byte."""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from synprobe.wire.syn import rst_template, syn_template
from synprobe.wire.tunnel import (
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    decapsulate,
    encapsulate,
    inner_proto,
)

V4, V6 = socket.AF_INET, socket.AF_INET6


def pton(text: str) -> bytes:
    return socket.inet_pton(V6 if ":" in text else V4, text)


CASES = [
    # (our address = inner and outer source, VIP, real server)
    pytest.param("198.18.1.1", "198.18.2.100", "198.18.1.11", id="ipip"),
    pytest.param("fd00:d5::1", "fd00:d5:2::100", "fd00:d5::11", id="ip6ip6"),
]


def scapy_outer(src: str, dst: str, inner: bytes) -> bytes:
    if ":" in src:
        layer = IPv6 if inner[0] >> 4 == 6 else IP
        nh = IPPROTO_IPV6 if layer is IPv6 else IPPROTO_IPIP
        return bytes(IPv6(src=src, dst=dst, hlim=64, nh=nh) / layer(inner))
    layer = IPv6 if inner[0] >> 4 == 6 else IP
    return bytes(IP(src=src, dst=dst, ttl=64, id=0, flags="DF", proto=4 if layer is IP else 41)
                 / layer(inner))


@pytest.mark.parametrize(("ours", "vip", "rs"), CASES)
def test_encapsulated_syn_and_rst_match_scapy(ours: str, vip: str, rs: str) -> None:
    rng = random.Random(11)
    syn, rst = syn_template(ours), rst_template(ours)
    for _ in range(50):
        sport, seq = rng.randrange(61000, 65536), rng.getrandbits(32)
        for tmpl in (syn, rst):
            inner = tmpl.build(pton(vip), sport, 80, seq)
            got = encapsulate(inner, pton(ours), pton(rs))
            assert got == scapy_outer(ours, rs, inner)
            parsed = IPv6(got) if ":" in ours else IP(got)
            assert parsed[TCP].dport == 80 and parsed[TCP].sport == sport
            assert decapsulate(got) == (pton(ours), pton(rs), inner)


def test_outer_header_fields() -> None:
    inner = syn_template("198.18.1.1").build(pton("198.18.2.100"), 61234, 80, 7)
    out = IP(encapsulate(inner, pton("198.18.1.1"), pton("198.18.1.11"), ttl=9))
    assert (out.proto, out.ttl, out.flags, out.id, out.len) == (4, 9, 2, 0, 20 + len(inner))
    # The DSCP/ECN byte is copied out, as LVS does, so QoS on the path sees the inner marking.
    marked = bytearray(inner)
    marked[1] = 0xB8  # EF
    assert IP(encapsulate(bytes(marked), pton("198.18.1.1"), pton("198.18.1.11"))).tos == 0xB8
    six = syn_template("fd00:d5::1").build(pton("fd00:d5:2::100"), 61234, 80, 7)
    six_marked = bytearray(six)
    six_marked[0:2] = (0x6000 | 0xB8 << 4).to_bytes(2, "big")
    out6 = IPv6(encapsulate(bytes(six_marked), pton("fd00:d5::1"), pton("fd00:d5::11")))
    assert (out6.nh, out6.tc, out6.plen) == (41, 0xB8, len(six))


def test_mixed_families() -> None:
    """IPv6 checks through an IPv4 tunnel (and back) are valid RFC 2473/4213 tunnels."""
    six = syn_template("fd00:d5::1").build(pton("fd00:d5:2::100"), 61234, 80, 7)
    four = syn_template("198.18.1.1").build(pton("198.18.2.100"), 61234, 80, 7)
    got = encapsulate(six, pton("198.18.1.1"), pton("198.18.1.11"))
    assert got == scapy_outer("198.18.1.1", "198.18.1.11", six)
    assert got[9] == IPPROTO_IPV6
    got = encapsulate(four, pton("fd00:d5::1"), pton("fd00:d5::11"))
    assert got == scapy_outer("fd00:d5::1", "fd00:d5::11", four)
    assert got[6] == IPPROTO_IPIP


def test_bad_input() -> None:
    inner = syn_template("198.18.1.1").build(pton("198.18.2.100"), 61234, 80, 7)
    with pytest.raises(ValueError):
        encapsulate(inner, pton("198.18.1.1"), pton("fd00::1"))
    with pytest.raises(ValueError):
        encapsulate(b"\x00" * 20, pton("198.18.1.1"), pton("198.18.1.11"))
    with pytest.raises(ValueError):
        inner_proto(b"")


def test_decapsulate_rejects() -> None:
    inner = syn_template("198.18.1.1").build(pton("198.18.2.100"), 61234, 80, 7)
    good = encapsulate(inner, pton("198.18.1.1"), pton("198.18.1.11"))
    assert decapsulate(inner) is None  # plain TCP
    assert decapsulate(good[:20]) is None  # nothing inside
    frag = bytearray(good)
    frag[6:8] = b"\x20\x00"  # more fragments
    assert decapsulate(bytes(frag)) is None
    wrong = bytearray(good)
    wrong[9] = IPPROTO_IPV6  # says IPv6 inside, holds IPv4
    assert decapsulate(bytes(wrong)) is None
    rng = random.Random(3)
    for _ in range(2000):
        decapsulate(rng.randbytes(rng.randrange(0, 90)))
