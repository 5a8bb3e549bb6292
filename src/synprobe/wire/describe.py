"""One line per packet for `--dry-run`, in tcpdump's words so it reads like a capture (or the
same facts as a dict, for `--dry-run --json`), e.g.
`IP 192.0.2.1.61234 > 198.51.100.7.443: Flags [S], seq 123, win 64240, options [mss 1460,`
`sackOK,TS val 1 ecr 0,nop,wscale 7], length 0` (one line).
"""

from __future__ import annotations

import json
import struct
from socket import AF_INET, AF_INET6, inet_ntop

from synprobe.model import Target

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
    fields = packet_fields(packet)
    if isinstance(fields, str):
        return fields
    head = "IP" if fields["ip"] == 4 else "IP6"
    src, dst = fields["src"], fields["dst"]
    if fields["flags"] is None:
        return f"{head} {src} > {dst}: truncated TCP header"
    text = (f"{head} {src}.{fields['sport']} > {dst}.{fields['dport']}: Flags "
            f"[{fields['flags']}], seq {fields['seq']}")
    if fields["ack"] is not None:
        text += f", ack {fields['ack']}"
    text += f", win {fields['win']}"
    if fields["options"]:
        text += f", options [{','.join(fields['options'])}]"  # type: ignore[arg-type]
    return f"{text}, length {fields['length']}"


def dry_run_json(engine: str, target: Target, *, timeout: float, attempts: int,
                 source: str | None = None, packet: bytes | None = None, path: str | None = None,
                 error: str | None = None) -> str:
    """One `--dry-run --json` line: what a check of `target` would send. Every engine gives the
    same keys (null where it does not apply): engine, host, port, via, source (the packet's;
    null when the kernel will choose), timeout_s, attempts, packet (packet_fields() of the SYN
    the engine builds itself; null when the kernel builds it), path (how it would leave, for
    checks through a real server), error (why it would not be sent)."""
    fields = None if packet is None else packet_fields(packet)
    if source is None and isinstance(fields, dict):
        source = str(fields["src"])
    return json.dumps({
        "engine": engine, "host": target.host, "port": target.port, "via": target.via,
        "source": source, "timeout_s": timeout, "attempts": attempts, "packet": fields,
        "path": path, "error": error,
    })


def packet_fields(packet: bytes) -> dict[str, object] | str:
    """The same facts as describe(), as a dict for `--dry-run --json`: ip (4 or 6), src, dst,
    sport, dport, flags (tcpdump's letters), seq, ack (None without the ACK flag), win,
    options (tcpdump's words, one string each) and length (payload bytes). Every key is always
    present; the TCP ones are None when the header is truncated. A packet that is not IPv4/IPv6
    TCP gives a one-line reason instead."""
    if not packet:
        return "empty packet"
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20 and packet[9] == 6:
        off = (packet[0] & 0x0F) * 4
        src, dst = inet_ntop(AF_INET, packet[12:16]), inet_ntop(AF_INET, packet[16:20])
        end = min(len(packet), int.from_bytes(packet[2:4], "big"))
    elif version == 6 and len(packet) >= 40 and packet[6] == 6:
        off = 40
        src, dst = inet_ntop(AF_INET6, packet[8:24]), inet_ntop(AF_INET6, packet[24:40])
        end = min(len(packet), 40 + int.from_bytes(packet[4:6], "big"))
    else:
        return f"not an IPv4/IPv6 TCP packet ({len(packet)} bytes)"
    fields: dict[str, object] = dict.fromkeys(
        ("ip", "src", "dst", "sport", "dport", "flags", "seq", "ack", "win", "options", "length"))
    fields.update(ip=version, src=src, dst=dst)
    if end < off + 20:
        return fields
    sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(packet, off)
    data = off + (doff >> 4) * 4
    options = _options(packet[off + 20 : min(data, end)]) if data > off + 20 else []
    fields.update(
        sport=sport, dport=dport, seq=seq, win=win, options=options,
        flags="".join(c for bit, c in _FLAGS if flags & bit) or "none",
        ack=ack if flags & 0x10 else None, length=max(end - data, 0),
    )
    return fields


def _options(opts: bytes) -> list[str]:
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
    return out


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
