"""The patched templates against scapy as the reference encoder, byte for byte."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

import synprobe.wire
from synprobe.wire.syn import PacketTemplate, rst_template, syn_options, syn_template

SOURCES = {
    False: ["192.0.2.1", "10.255.0.7", "255.255.255.254", "0.0.0.1"],
    True: ["2001:db8::1", "fe80::1234:5678:9abc:def0", "::1", "ffff:" * 7 + "fffe"],
}


def reference(src: str, dst: bytes, sport: int, dport: int, seq: int, **tcp: Any) -> bytes:
    """The same packet encoded by scapy from scratch."""
    segment = TCP(sport=sport, dport=dport, seq=seq, **tcp)
    if ":" in src:
        ip: Any = IPv6(src=src, dst=socket.inet_ntop(socket.AF_INET6, dst), hlim=64)
    else:
        ip = IP(src=src, dst=socket.inet_ntop(socket.AF_INET, dst), ttl=64, id=0, flags="DF")
    return bytes(ip / segment)


def linux_syn(mss: int) -> dict[str, Any]:
    return {"flags": "S", "window": 64240, "options": syn_options(mss)}


def random_tuples(rng: random.Random, v6: bool, count: int) -> list[tuple[bytes, int, int, int]]:
    size = 16 if v6 else 4
    return [
        (rng.randbytes(size), rng.randrange(65536), rng.randrange(65536), rng.randrange(2**32))
        for _ in range(count)
    ]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_syn_matches_scapy_on_random_tuples(v6: bool) -> None:
    rng = random.Random(1000 + v6)
    mss = 1440 if v6 else 1460
    templates = [syn_template(src) for src in SOURCES[v6]]
    for i, (dst, sport, dport, seq) in enumerate(random_tuples(rng, v6, 1200)):
        t = templates[i % len(templates)]
        src = SOURCES[v6][i % len(templates)]
        ours = t.build(dst, sport, dport, seq)
        assert ours == reference(src, dst, sport, dport, seq, **linux_syn(mss)), (i, ours.hex())


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_rst_matches_scapy_on_random_tuples(v6: bool) -> None:
    rng = random.Random(2000 + v6)
    src = SOURCES[v6][0]
    t = rst_template(src)
    for dst, sport, dport, seq in random_tuples(rng, v6, 300):
        ours = t.build(dst, sport, dport, seq)
        assert ours == reference(src, dst, sport, dport, seq, flags="R", window=0)


def test_ipv4_syn_layout() -> None:
    """The fields the brief fixes, read back from the bytes."""
    pkt = syn_template("192.0.2.1").build(bytes([198, 51, 100, 7]), 61000, 443, 0x01020304)
    assert len(pkt) == 60
    assert pkt[0] == 0x45 and pkt[6] & 0x40 and pkt[8] == 64 and pkt[9] == 6  # DF, TTL, TCP
    tcp = pkt[20:]
    assert tcp[13] == 0x02 and int.from_bytes(tcp[14:16], "big") == 64240
    assert tcp[20:].hex() == "020405b40402080a000000010000000001030307"


def test_ipv6_syn_layout() -> None:
    pkt = syn_template("2001:db8::1").build(bytes(15) + b"\x07", 61000, 443, 7)
    assert len(pkt) == 80 and pkt[0] >> 4 == 6 and pkt[6] == 6 and pkt[7] == 64
    assert int.from_bytes(pkt[4:6], "big") == 40
    assert pkt[40 + 20 : 40 + 24].hex() == "020405a0"  # MSS 1440 on IPv6


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_options_are_configurable(v6: bool) -> None:
    src = SOURCES[v6][0]
    t = syn_template(src, mss=1400, window=29200, ts_val=123456, wscale=9)
    dst = bytes(range(16 if v6 else 4))
    tcp = {"flags": "S", "window": 29200, "options": syn_options(1400, 123456, 9)}
    assert t.build(dst, 1, 2, 3) == reference(src, dst, 1, 2, 3, **tcp)


def test_ttl_is_configurable() -> None:
    assert syn_template("192.0.2.1", ttl=255).build(bytes(4), 1, 2, 3)[8] == 255
    assert syn_template("2001:db8::1", ttl=1).build(bytes(16), 1, 2, 3)[7] == 1


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_checksum_zero_edge(v6: bool) -> None:
    """A sum folding to negative zero is written 0, as scapy (and Linux) write it."""
    src, size = SOURCES[v6][0], (16 if v6 else 4)
    t = syn_template(src)
    tcp_at = 40 if v6 else 20
    dst = bytes(size)
    # The TCP checksum is -(constant + seq) mod 0xFFFF, so seq = its value at seq 0 zeroes it.
    seq = int.from_bytes(t.build(dst, 1, 2, 0)[tcp_at + 16 : tcp_at + 18], "big")
    pkt = t.build(dst, 1, 2, seq)
    assert pkt[tcp_at + 16 : tcp_at + 18] == b"\0\0"
    assert pkt == reference(src, dst, 1, 2, seq, **linux_syn(1440 if v6 else 1460))
    if not v6:
        # Same for the IPv4 header checksum, which only the destination changes.
        ip_sum = int.from_bytes(t.build(bytes(4), 1, 2, 0)[10:12], "big")
        dst = ip_sum.to_bytes(4, "big")
        pkt = t.build(dst, 1, 2, 5)
        assert pkt[10:12] == b"\0\0"
        assert pkt == reference(src, dst, 1, 2, 5, **linux_syn(1460))


@pytest.mark.parametrize("source", ["0.0.0.0", "::", "example.com", "192.0.2.300"])
def test_source_must_be_a_concrete_numeric_address(source: str) -> None:
    with pytest.raises(ValueError):
        syn_template(source)
    with pytest.raises(ValueError):
        rst_template(source)


def test_wrong_address_size_is_refused() -> None:
    with pytest.raises(ValueError):
        syn_template("192.0.2.1").build(bytes(16), 1, 2, 3)
    with pytest.raises(ValueError):
        syn_template("2001:db8::1").build(bytes(4), 1, 2, 3)


def test_out_of_range_fields_are_refused() -> None:
    t = syn_template("192.0.2.1")
    for args in [(65536, 2, 3), (1, -1, 3), (1, 2, 2**32)]:
        with pytest.raises(struct.error):
            t.build(bytes(4), *args)


def test_template_attributes() -> None:
    t = syn_template("2001:db8::1")
    assert t.v6 and t.source == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert len(t.template) == 80 and t.template[24:40] == bytes(16)
    assert "2001:db8::1" in repr(t)
    t4 = rst_template("192.0.2.1")
    assert not t4.v6 and len(t4.template) == 40 and "192.0.2.1" in repr(t4)


def test_from_packet_refuses_what_it_cannot_patch() -> None:
    with_options = bytes(IP(src="192.0.2.1", dst="0.0.0.0", options=b"\x01" * 4) / TCP())
    hop_by_hop = bytes(IPv6(src="::1", dst="::", nh=0)) + b"\x06\0" + bytes(6) + bytes(TCP())
    for packet in (with_options, hop_by_hop, b"\x20" + bytes(59), bytes(IP() / TCP())[:30]):
        with pytest.raises(ValueError):
            PacketTemplate.from_packet(packet)


def test_hot_path_modules_do_not_import_scapy() -> None:
    code = (
        "import sys\n"
        "import synprobe.wire, synprobe.wire.checksum, synprobe.wire.cookie, synprobe.wire.syn\n"
        "import synprobe.wire.replies, synprobe.wire.bpf, synprobe.wire.describe\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] == 'scapy'))\n"
    )
    # The package may not be installed: point the child at the tree this test imported.
    src = str(Path(synprobe.wire.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == ""
