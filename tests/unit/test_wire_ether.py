"""Ethernet, ARP and neighbour-discovery frames against scapy, byte for byte."""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from synprobe.wire.ether import (
    BROADCAST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    arp_request,
    ether_header,
    ethertype_of,
    format_mac,
    frame,
    is_unicast_mac,
    neighbor_solicitation,
    parse_arp_reply,
    parse_mac,
    parse_neighbor_advert,
    solicited_node,
    split_frame,
)
from synprobe.wire.syn import syn_template

OUR_MAC = "02:d5:00:00:00:01"
RS_MAC = "02:d5:00:00:00:11"
V4, V6 = socket.AF_INET, socket.AF_INET6


def pton(text: str) -> bytes:
    return socket.inet_pton(V6 if ":" in text else V4, text)


def test_mac_text_round_trip() -> None:
    assert parse_mac("02:D5:0:0:0:1") == bytes([2, 0xD5, 0, 0, 0, 1])
    assert parse_mac("02-d5-00-00-00-01") == parse_mac(OUR_MAC)
    assert format_mac(parse_mac(OUR_MAC)) == OUR_MAC
    for bad in ("", "02:d5:00:00:00", "02:d5:00:00:00:01:02", "02:d5:00:00:00:zz", "123:0:0:0:0:0"):
        with pytest.raises(ValueError):
            parse_mac(bad)
    with pytest.raises(ValueError):
        format_mac(b"\0" * 5)


def test_unicast_mac() -> None:
    assert is_unicast_mac(parse_mac(RS_MAC))
    assert not is_unicast_mac(BROADCAST)
    assert not is_unicast_mac(bytes(6))
    assert not is_unicast_mac(parse_mac("33:33:ff:00:00:01"))  # multicast
    assert not is_unicast_mac(b"\x02" * 5)


@pytest.mark.parametrize(("source", "target"), [("198.18.1.1", "198.18.2.100"),
                                                ("fd00:d5::1", "fd00:d5:2::100")])
def test_frame_of_a_syn_matches_scapy(source: str, target: str) -> None:
    rng = random.Random(5)
    tmpl = syn_template(source)
    for _ in range(50):
        sport, seq = rng.randrange(61000, 65536), rng.getrandbits(32)
        syn = tmpl.build(pton(target), sport, 80, seq)
        got = frame(parse_mac(RS_MAC), parse_mac(OUR_MAC), syn)
        ip = IPv6 if ":" in source else IP
        want = bytes(Ether(dst=RS_MAC, src=OUR_MAC) / ip(syn))
        assert got == want
        assert len(got) == 14 + len(syn)
        # The destination MAC picks the real server; the IP packet is the plain SYN to the VIP.
        assert got[14:] == syn
        assert Ether(got)[TCP].dport == 80


def test_ether_header_and_ethertype() -> None:
    head = ether_header(parse_mac(RS_MAC), parse_mac(OUR_MAC), ETH_P_IP)
    assert head == bytes(Ether(dst=RS_MAC, src=OUR_MAC, type=ETH_P_IP))[:14]
    assert ethertype_of(b"\x45" + bytes(19)) == ETH_P_IP
    assert ethertype_of(b"\x60" + bytes(39)) == ETH_P_IPV6
    for bad in (b"", b"\x00" * 20):
        with pytest.raises(ValueError):
            ethertype_of(bad)
    with pytest.raises(ValueError):
        ether_header(b"\0" * 5, parse_mac(OUR_MAC), ETH_P_IP)


def test_split_frame_skips_vlan_tags() -> None:
    payload = bytes(IP(src="198.18.2.100", dst="198.18.1.1") / TCP(flags="SA"))
    plain = bytes(Ether(dst=OUR_MAC, src=RS_MAC) / IP(payload))
    tagged = bytes(Ether(dst=OUR_MAC, src=RS_MAC) / Dot1Q(vlan=7) / IP(payload))
    for data in (plain, tagged):
        f = split_frame(data)
        assert f is not None
        assert (f.dst, f.src, f.ethertype, f.payload) == (
            parse_mac(OUR_MAC), parse_mac(RS_MAC), ETH_P_IP, payload)
    assert split_frame(plain[:13]) is None


def test_arp_request_matches_scapy() -> None:
    got = arp_request(parse_mac(OUR_MAC), pton("198.18.1.1"), pton("198.18.1.11"))
    want = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=OUR_MAC)
                 / ARP(op="who-has", hwsrc=OUR_MAC, psrc="198.18.1.1", hwdst="00:00:00:00:00:00",
                       pdst="198.18.1.11"))
    assert got == want
    assert len(got) == 42
    with pytest.raises(ValueError):
        arp_request(parse_mac(OUR_MAC), pton("fd00::1"), pton("198.18.1.11"))


def arp_frame(op: str, hwsrc: str = RS_MAC, psrc: str = "198.18.1.11", **kw: object) -> bytes:
    return bytes(Ether(dst=OUR_MAC, src=hwsrc, type=ETH_P_ARP)
                 / ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=OUR_MAC, pdst="198.18.1.1", **kw))


def test_parse_arp_reply() -> None:
    assert parse_arp_reply(arp_frame("is-at")) == (pton("198.18.1.11"), parse_mac(RS_MAC))
    # Padded to the 60-byte minimum, as it arrives from a NIC.
    assert parse_arp_reply(arp_frame("is-at") + bytes(18)) == (pton("198.18.1.11"),
                                                                parse_mac(RS_MAC))
    tagged = bytes(Ether(dst=OUR_MAC, src=RS_MAC) / Dot1Q(vlan=3)
                   / ARP(op="is-at", hwsrc=RS_MAC, psrc="198.18.1.11"))
    assert parse_arp_reply(tagged) == (pton("198.18.1.11"), parse_mac(RS_MAC))


@pytest.mark.parametrize("data", [
    arp_frame("who-has"),  # a request is not an answer
    arp_frame("is-at", hwsrc="ff:ff:ff:ff:ff:ff"),
    arp_frame("is-at", hwsrc="00:00:00:00:00:00"),
    arp_frame("is-at")[:41],
    bytes(Ether(dst=OUR_MAC, src=RS_MAC) / IP() / TCP()),
    arp_frame("is-at", ptype=0x86DD),
    b"",
])
def test_parse_arp_reply_rejects(data: bytes) -> None:
    assert parse_arp_reply(data) is None


def test_solicited_node_group() -> None:
    group, mac = solicited_node(pton("fd00:d5::12:3456"))
    assert socket.inet_ntop(V6, group) == "ff02::1:ff12:3456"
    assert format_mac(mac) == "33:33:ff:12:34:56"


def test_neighbor_solicitation_matches_scapy() -> None:
    src, target = "fd00:d5::1", "fd00:d5::11"
    got = neighbor_solicitation(parse_mac(OUR_MAC), pton(src), pton(target))
    want = bytes(Ether(dst="33:33:ff:00:00:11", src=OUR_MAC)
                 / IPv6(src=src, dst="ff02::1:ff00:11", hlim=255)
                 / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=OUR_MAC))
    assert got == want
    with pytest.raises(ValueError):
        neighbor_solicitation(parse_mac(OUR_MAC), pton("198.18.1.1"), pton(target))


def na_frame(hlim: int = 255, option: bool = True, mac: str = RS_MAC, tgt: str = "fd00:d5::11",
             pad: bytes = b"") -> bytes:
    pkt = (Ether(dst=OUR_MAC, src=RS_MAC) / IPv6(src=tgt, dst="fd00:d5::1", hlim=hlim)
           / ICMPv6ND_NA(tgt=tgt, R=0, S=1, O=1))
    if option:
        pkt = pkt / ICMPv6NDOptDstLLAddr(lladdr=mac)
    return bytes(pkt) + pad


def test_parse_neighbor_advert() -> None:
    assert parse_neighbor_advert(na_frame()) == (pton("fd00:d5::11"), parse_mac(RS_MAC))
    assert parse_neighbor_advert(na_frame(pad=bytes(8))) == (pton("fd00:d5::11"),
                                                             parse_mac(RS_MAC))


@pytest.mark.parametrize("data", [
    na_frame(hlim=64),  # forwarded: not from the link
    na_frame(option=False),
    na_frame(mac="33:33:00:00:00:01"),
    na_frame()[:70],
    bytes(Ether(dst=OUR_MAC, src=RS_MAC) / IPv6(src="fd00:d5::11", dst="fd00:d5::1", hlim=255)
          / ICMPv6ND_NS(tgt="fd00:d5::1") / ICMPv6NDOptSrcLLAddr(lladdr=RS_MAC)),
    arp_frame("is-at"),
    b"",
])
def test_parse_neighbor_advert_rejects(data: bytes) -> None:
    assert parse_neighbor_advert(data) is None


def test_garbage_never_raises() -> None:
    rng = random.Random(9)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 100))
        if rng.random() < 0.5 and len(data) > 14:  # make it look like ARP / IPv6 more often
            data = data[:12] + rng.choice([b"\x08\x06", b"\x86\xdd"]) + data[14:]
        parse_arp_reply(data)
        parse_neighbor_advert(data)
        split_frame(data)
