"""Per-packet cost of the raw engine's pure core: µs per build, per derive, per match.

Run: PYTHONPATH=src python bench/wire_micro.py [--scapy]   (or after `pip install -e .`)

Each figure is the best of several timeit repeats (the least disturbed run), per call.
`--scapy` adds scapy building and dissecting the same packets, for scale.

It also prices verifying a reply's TCP checksum, the figure behind the decision not to
(docs/engines-icmp.md): the pseudo-header sum plus the segment's ones' complement sum, against
the whole match.
"""

from __future__ import annotations

import argparse
import socket
import timeit
from collections.abc import Callable

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Raw

from synprobe.wire.checksum import MOD, checksum, ones_sum, pseudo_header_sum
from synprobe.wire.cookie import CookieKey
from synprobe.wire.describe import describe
from synprobe.wire.replies import match_reply
from synprobe.wire.syn import rst_template, syn_template

LOCAL4, REMOTE4 = "192.0.2.1", "198.51.100.7"
LOCAL6, REMOTE6 = "2001:db8::1", "2001:db8::7"


def per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def replies(key: CookieKey) -> dict[str, bytes]:
    """One of each reply kind, crafted with scapy as the tests do."""
    out: dict[str, bytes] = {}
    for local, remote, family, ip, v in (
        (LOCAL4, REMOTE4, socket.AF_INET, IP, "v4"),
        (LOCAL6, REMOTE6, socket.AF_INET6, IPv6, "v6"),
    ):
        lo, re = socket.inet_pton(family, local), socket.inet_pton(family, remote)
        seq, sport, _ = key.issue(lo, re, 443)
        syn = syn_template(local).build(re, sport, 443, seq)
        out[f"syn-ack {v}"] = bytes(
            ip(src=remote, dst=local) / TCP(sport=443, dport=sport, flags="SA", ack=seq + 1)
        )
        out[f"rst {v}"] = bytes(
            ip(src=remote, dst=local) / TCP(sport=443, dport=sport, flags="RA", ack=seq + 1)
        )
        error = ICMPv6DestUnreach(code=3) if ip is IPv6 else ICMP(type=3, code=1)
        out[f"icmp {v}"] = bytes(ip(src=remote, dst=local) / error / Raw(syn))
    four = out["syn-ack v4"]
    out["invalid (bad ack) v4"] = four[:28] + bytes(4) + four[32:]
    out["not ours (dport 80) v4"] = four[:22] + (80).to_bytes(2, "big") + four[24:]
    return out


def tcp_checksum_ok(packet: bytes) -> bool:
    """Whether a reply's TCP checksum holds: what an engine verifying checksums would add."""
    if packet[0] >> 4 == 4:
        ihl, end = (packet[0] & 0x0F) * 4, int.from_bytes(packet[2:4], "big")
        src, dst = packet[12:16], packet[16:20]
    else:
        ihl, end = 40, 40 + int.from_bytes(packet[4:6], "big")
        src, dst = packet[8:24], packet[24:40]
    segment = packet[ihl:end]
    return (pseudo_header_sum(src, dst, len(segment)) + ones_sum(segment)) % MOD == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scapy", action="store_true", help="also time scapy, for scale")
    parser.add_argument("-n", type=int, default=200_000, help="calls per repeat")
    args = parser.parse_args()
    n = args.n
    key = CookieKey()
    t4, t6, rst4 = syn_template(LOCAL4), syn_template(LOCAL6), rst_template(LOCAL4)
    l4, r4 = socket.inet_pton(socket.AF_INET, LOCAL4), socket.inet_pton(socket.AF_INET, REMOTE4)
    l6, r6 = socket.inet_pton(socket.AF_INET6, LOCAL6), socket.inet_pton(socket.AF_INET6, REMOTE6)
    syn4 = t4.build(r4, 61000, 443, 1)

    def probe4() -> bytes:  # what the engine pays per SYN: cookie, then packet
        seq, sport, _ = key.issue(l4, r4, 443)
        return t4.build(r4, sport, 443, seq)

    rows: list[tuple[str, Callable[[], object]]] = [
        ("checksum, 60 bytes", lambda: checksum(syn4)),
        ("cookie derive v4", lambda: key.derive(l4, r4, 443)),
        ("cookie derive v6", lambda: key.derive(l6, r6, 443)),
        ("build SYN v4", lambda: t4.build(r4, 61000, 443, 123456789)),
        ("build SYN v6", lambda: t6.build(r6, 61000, 443, 123456789)),
        ("build RST v4", lambda: rst4.build(r4, 61000, 443, 123456789)),
        ("derive + build SYN v4", probe4),
    ]
    answers = replies(key)
    rows += [(f"match {name}", lambda p=p: match_reply(p, key)) for name, p in answers.items()]
    for v in ("v4", "v6"):
        packet = answers[f"syn-ack {v}"]
        assert tcp_checksum_ok(packet)
        rows.append((f"verify TCP checksum syn-ack {v}", lambda p=packet: tcp_checksum_ok(p)))
    rows.append(("describe SYN v4 (dry run)", lambda: describe(syn4)))
    if args.scapy:
        rows += [
            ("scapy: build SYN v4", lambda: bytes(IP(dst=REMOTE4) / TCP(flags="S", options=[]))),
            ("scapy: dissect SYN v4", lambda: IP(syn4)),
        ]
    figures: dict[str, float] = {}
    for name, fn in rows:
        calls = n if not name.startswith("scapy") else max(n // 200, 100)
        figures[name] = per_call_us(fn, calls)
        print(f"{name:32s} {figures[name]:8.3f} µs")
    for v in ("v4", "v6"):
        ratio = figures[f"verify TCP checksum syn-ack {v}"] / figures[f"match syn-ack {v}"]
        print(f"checksum verification / match, syn-ack {v}: {ratio:.2f}")


if __name__ == "__main__":
    main()
