"""One line per packet for `--dry-run`, in tcpdump's words so it reads like a capture, e.g.
`IP 192.0.2.1.61234 > 198.51.100.7.443: Flags [S], seq 123, win 64240, options [mss 1460,`
`sackOK,TS val 1 ecr 0,nop,wscale 7], length 0` (one line).
"""

from __future__ import annotations

import struct
from socket import AF_INET, AF_INET6, inet_ntop

_TCP = struct.Struct("!HHIIBBH")  # ports, seq, ack, data offset, flags, window
# tcpdump's flag letters, in its order; "." is ACK.
_FLAGS = (
    (0x01, "F"),
    (0x02, "S"),
    (0x04, "R"),
    (0x08, "P"),
    (0x10, "."),
    (0x20, "U"),
    (0x40, "E"),
    (0x80, "W"),
)


def describe(packet: bytes) -> str:
    """A tcpdump-style line for an IPv4 or IPv6 TCP packet (e.g. a built SYN or RST)."""
    if not packet:
        return "empty packet"
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20 and packet[9] == 6:
        head, off = "IP", (packet[0] & 0x0F) * 4
        src, dst = inet_ntop(AF_INET, packet[12:16]), inet_ntop(AF_INET, packet[16:20])
        end = min(len(packet), int.from_bytes(packet[2:4], "big"))
    elif version == 6 and len(packet) >= 40 and packet[6] == 6:
        head, off = "IP6", 40
        src, dst = inet_ntop(AF_INET6, packet[8:24]), inet_ntop(AF_INET6, packet[24:40])
        end = min(len(packet), 40 + int.from_bytes(packet[4:6], "big"))
    else:
        return f"not an IPv4/IPv6 TCP packet ({len(packet)} bytes)"
    if end < off + 20:
        return f"{head} {src} > {dst}: truncated TCP header"
    sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(packet, off)
    data = off + (doff >> 4) * 4
    letters = "".join(c for bit, c in _FLAGS if flags & bit) or "none"
    text = f"{head} {src}.{sport} > {dst}.{dport}: Flags [{letters}], seq {seq}"
    if flags & 0x10:
        text += f", ack {ack}"
    text += f", win {win}"
    if data > off + 20:
        text += f", options [{_options(packet[off + 20 : min(data, end)])}]"
    return f"{text}, length {max(end - data, 0)}"


def _options(opts: bytes) -> str:
    """TCP options as tcpdump prints them; malformed ones end the list with `bad opts`."""
    out: list[str] = []
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            out.append("eol")
            break
        if kind == 1:
            out.append("nop")
            i += 1
            continue
        size = opts[i + 1] if i + 1 < len(opts) else 0
        if size < 2 or i + size > len(opts):
            out.append("bad opts")
            break
        body = opts[i + 2 : i + size]
        out.append(_option(kind, body))
        i += size
    return ",".join(out)


def _option(kind: int, body: bytes) -> str:
    if kind == 2 and len(body) == 2:
        return f"mss {int.from_bytes(body, 'big')}"
    if kind == 3 and len(body) == 1:
        return f"wscale {body[0]}"
    if kind == 4 and not body:
        return "sackOK"
    if kind == 8 and len(body) == 8:
        val, ecr = struct.unpack("!II", body)
        return f"TS val {val} ecr {ecr}"
    return f"unknown-{kind} 0x{body.hex()}" if body else f"unknown-{kind}"
