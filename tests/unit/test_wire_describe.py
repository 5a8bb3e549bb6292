"""`--dry-run` lines, in tcpdump's words."""

from __future__ import annotations

import json
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from synprobe.model import Target
from synprobe.wire.describe import describe, dry_run_json, packet_fields
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


@pytest.mark.parametrize(("packet", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_packet_fields_say_what_the_line_says(packet: bytes, line: str) -> None:
    fields = packet_fields(packet)
    if isinstance(fields, str):  # not TCP: the same reason as the line
        assert fields == line
        return
    assert list(fields) == ["ip", "src", "dst", "sport", "dport", "flags", "seq", "ack", "win",
                            "options", "length"]
    if fields["flags"] is None:
        assert line.endswith("truncated TCP header") and fields["sport"] is None
        return
    assert f"{fields['src']}.{fields['sport']} > {fields['dst']}.{fields['dport']}:" in line
    assert f"Flags [{fields['flags']}], seq {fields['seq']}" in line
    assert (fields["ack"] is None) == (", ack " not in line)
    assert line.endswith(f"length {fields['length']}")


def test_packet_fields_match_scapy_on_random_syns() -> None:
    import random

    rng = random.Random(9)
    for _ in range(50):
        v6 = rng.random() < 0.5
        src, dst = ("2001:db8::1", V6) if v6 else ("192.0.2.1", V4)
        sport, dport, seq = rng.randrange(1, 65536), rng.randrange(1, 65536), rng.getrandbits(32)
        packet = syn_template(src).build(dst, sport, dport, seq)
        fields = packet_fields(packet)
        parsed = (IPv6 if v6 else IP)(packet)[TCP]
        assert isinstance(fields, dict)
        assert (fields["ip"], fields["sport"], fields["dport"], fields["seq"], fields["win"]) == (
            6 if v6 else 4, parsed.sport, parsed.dport, parsed.seq, parsed.window)
        assert fields["flags"] == "S" and fields["ack"] is None and fields["length"] == 0
        assert dict(parsed.options)["MSS"] == int(str(fields["options"][0]).split()[1])


def test_dry_run_json_has_the_same_keys_for_every_engine() -> None:
    target = Target("198.51.100.7", 443, "192.0.2.11")
    with_packet = json.loads(dry_run_json("raw", target, timeout=0.5, attempts=2,
                                          packet=syn_template("192.0.2.1").build(V4, 61234, 443,
                                                                                 123),
                                          path="in a frame to 192.0.2.11"))
    without = json.loads(dry_run_json("shaker", target, timeout=0.3, attempts=1))
    assert list(with_packet) == list(without)
    assert with_packet["source"] == "192.0.2.1" and with_packet["packet"]["sport"] == 61234
    assert (with_packet["host"], with_packet["port"], with_packet["via"]) == (
        "198.51.100.7", 443, "192.0.2.11")
    assert without["source"] is None and without["packet"] is None
