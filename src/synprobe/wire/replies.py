"""Validate and classify one received packet: is it an answer to one of our SYNs, and what does
it say?

Input starts at the IPv4 or IPv6 header (an AF_PACKET SOCK_DGRAM socket strips the link
header). Three outcomes, in zmap's order of filter -> validate -> classify:

- None: not a candidate (not TCP/ICMP, not to our port range, a fragment, truncated, garbage).
- an `Invalid`: a SYN-ACK, RST or ICMP error aimed at our port range whose cookie does not
  check out (a forgery, a reply to another scanner, a rewritten sequence number). Count it.
- a `Reply`: the verdict for one target.

Lengths are validated as the kernel's receive path would (ip_rcv, tcp_v4_rcv): the IPv4 total
length or IPv6 payload length must hold the whole TCP header, the data offset must be at least
5 words and fit, and the packet must hold what its header claims (Ethernet padding may add
bytes; a packet cut at the receiver's `snap` length is taken as it is). A reply the kernel
would drop is no answer.

TCP checksums are not verified, a decision measured in bench/wire_micro.py and written up in
docs/engines-icmp.md: verifying costs about as much as the whole match, AF_PACKET sees replies
before TCP checks them, and on veth and loopback (CHECKSUM_PARTIAL) their checksum field holds
only the pseudo-header sum, so a verifying engine would need PACKET_AUXDATA per packet to tell
"not computed" from "wrong". A corrupted header still has to carry the exact 32-bit cookie,
both ports and both addresses of an attempt in flight to count.

DSR checks through a real server (`via`) salt the cookie with its address (`CookieKey.derive`).
The reply comes from the VIP and does not say which real server sent it, so the caller passes
`salts(remote, rport, lport)`: the salts of the checks in flight to that target (b"" for a plain
one). The one whose cookie the reply carries is `Reply.salt`; none means an invalid reply. An
ICMP error quoting a tunnelled SYN (IP-in-IP, tunnel mode) names its real server itself: the
quoted outer destination is the salt.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from socket import AF_INET, AF_INET6, inet_ntop
from typing import NamedTuple

from synprobe.model import State
from synprobe.wire.cookie import CookieKey
from synprobe.wire.icmp import ICMP4_ERRORS, ICMP6_ERRORS, classify_icmp

_TCP = 6
_ICMP = 1
_ICMP6 = 58
_RST = 0x04
_SYN_ACK = 0x12
_IPIP, _IPV6_IN_IP = 4, 41  # tunnel-mode outer headers (wire.tunnel)

Salts = Callable[[bytes, int, int], Iterable[bytes]]
"""`salts(remote, rport, lport)`: candidate cookie salts for a reply from `remote`:`rport` to our
port `lport` (the packed `via` addresses of the checks in flight to that target; b"" for one
without a via). Tried in order; keep it short (one entry per real server of that VIP)."""

# TCP source port, destination port, (seq skipped), ack, data offset, flags: 14 bytes.
_TCP_HEAD = struct.Struct("!HH4xIBB")
# IPv4 (20-byte header) + TCP: total length, fragment field, protocol skipped, source,
# destination, then as _TCP_HEAD: 34 bytes.
_V4_TCP = struct.Struct("!2xH2xH4x4s4sHH4xIBB")
SNAP = 512  # what a receiver keeps of each packet (kernel.mmsg.RECV_BYTES): longer ones come cut
# A quoted TCP header: RFC 792 promises only the first 8 bytes, enough for ports and seq.
_QUOTED_TCP = struct.Struct("!HHI")


class Reply(NamedTuple):
    """A validated answer: the verdict for target (`host`, `port`)."""

    state: State
    reason: str  # "syn-ack", "rst" or "icmp-<type>-<code>" / "icmp6-<type>-<code>"
    remote: bytes  # the target's packed address (4 or 16 bytes)
    port: int  # the target's port
    sport: int  # our source port that the probe used
    ack: int | None  # a SYN-ACK's acknowledgement number: the seq of a self-sent RST
    local: bytes  # our packed address the probe came from
    salt: bytes = b""  # the cookie's salt: the real server checked through, packed (or b"")
    serial: int = 0  # the attempt answered (`CookieKey.issue`): earlier checks' never count

    @property
    def host(self) -> str:
        """The target as `inet_ntop` writes it: canonical, lower-case, compressed.

        Computed on demand: it costs ~0.2 µs, and an engine keying its table by packed address
        needs it only for the result it emits.
        """
        return inet_ntop(AF_INET6 if len(self.remote) == 16 else AF_INET, self.remote)


class Invalid(NamedTuple):
    """A reply-shaped packet to our port range that fails validation; `kind` names it."""

    kind: str


class Heard(NamedTuple):
    """What a reply-shaped packet says, read but not yet validated (`read_reply`)."""

    state: State | None  # None: an ICMP error about packet size, to be ignored once valid
    reason: str
    remote: bytes
    port: int
    sport: int  # our port the answered SYN came from
    seq: int  # the sequence number of the SYN it answers (its ack - 1, or quoted)
    ack: int | None  # a SYN-ACK's acknowledgement number, else None
    local: bytes
    tunnel: bytes | None  # an ICMP error quoting a tunnelled SYN: the real server (the salt)


_OPEN, _CLOSED = State.OPEN, State.CLOSED
_new_tuple = tuple.__new__

INVALID_SYN_ACK = Invalid("syn-ack")
INVALID_RST = Invalid("rst")
INVALID_ICMP = Invalid("icmp")
_INVALID = {"syn-ack": INVALID_SYN_ACK, "rst": INVALID_RST}  # any other reason: ICMP


def match_reply(
    packet: bytes, key: CookieKey, salts: Salts | None = None
) -> Reply | Invalid | None:
    """Classify one network-layer packet against the cookies of `key`. Never raises on input
    (unless `salts` does).

    Without `salts` only unsalted cookies (checks without a via) are recognised."""
    heard = read_reply(packet, key.port_lo, key.port_hi)
    if heard is None or heard.__class__ is Invalid:
        return heard
    return check_cookie(heard, key, salts)


def check_cookie(heard: Heard, key: CookieKey, salts: Salts | None = None
                 ) -> Reply | Invalid | None:
    """The verdict on what `read_reply` read: a Reply if `key` issued the pair (seq, sport) it
    answers, under one of the candidate salts; else the Invalid of its kind. None for a valid
    ICMP error that says nothing about the port (see wire.icmp)."""
    state, reason, remote, rport, lport, seq, ack, local, tunnel = heard
    if tunnel is not None:
        candidates: Iterable[bytes] = (tunnel,)
    elif salts is not None:
        candidates = salts(remote, rport, lport)
    else:
        candidates = (b"",)
    for salt in candidates:
        serial = key.serial_of(local, remote, rport, seq, lport, salt)
        if serial is not None:
            break
    else:
        return _INVALID.get(reason, INVALID_ICMP)
    if state is None:
        return None
    # tuple.__new__ skips NamedTuple's Python-level __new__ (0.2 µs against 0.3 µs).
    return _new_tuple(Reply, (state, reason, remote, rport, lport, ack, local, salt, serial))


def read_reply(packet: bytes, port_lo: int, port_hi: int) -> Heard | Invalid | None:
    """Filter and read one packet: None if it is no answer to a SYN from our port range
    (`port_lo`-`port_hi`), INVALID_ICMP for an ICMP error that cannot be about our SYN, else
    what it says (`Heard`), for `check_cookie` or an engine's own record of what it sent.
    Pure, and never raises on input."""
    if type(packet) is not bytes:
        packet = bytes(packet)  # slices and `+` below need bytes, not views
    n = len(packet)
    if n >= 34 and packet[0] == 0x45 and packet[9] == _TCP:
        # The common case, IPv4 without options carrying TCP, in one unpack.
        size, frag, remote, local, rport, lport, ack, doff, flags = _V4_TCP.unpack_from(packet)
        if frag & 0x3FFF:  # a fragment: see below
            return None
        tcp_len = (doff >> 4) * 4
        # ip_rcv drops a packet shorter than its total length; tcp_v4_rcv one whose data
        # offset is under 5 words or past the segment's end.
        if tcp_len < 20 or size < 20 + tcp_len or (size > n and n < SNAP):
            return None
    else:
        if n < 20:
            return None
        first = packet[0]
        if first >> 4 == 4:
            off = (first & 0x0F) * 4
            # Any fragment: a later one holds no header, a first one is not what a SYN is
            # answered with (BPF drops both already; this keeps the function safe on its own).
            if off < 20 or packet[6] & 0x3F or packet[7]:
                return None
            proto, src, size, end = packet[9], 12, 4, int.from_bytes(packet[2:4], "big")
        elif first >> 4 == 6 and n >= 40:
            off, proto, src, size = 40, packet[6], 8, 16
            end = 40 + int.from_bytes(packet[4:6], "big")  # payload length: no extensions
        else:
            return None
        if end > n and n < SNAP:
            return None  # claims more than it holds: the kernel drops it
        if proto == (_ICMP6 if size == 16 else _ICMP):
            if end < off + (56 if size == 16 else 36):  # ICMP header, quoted IP + 8 TCP bytes
                return None
            return _read_icmp(packet, off, packet[src + size : src + 2 * size], port_lo,
                              port_hi, size == 16)
        if proto != _TCP or n < off + 14:
            return None
        rport, lport, ack, doff, flags = _TCP_HEAD.unpack_from(packet, off)
        tcp_len = (doff >> 4) * 4
        if tcp_len < 20 or end < off + tcp_len:
            return None
        remote, local = packet[src : src + size], packet[src + size : src + 2 * size]
    if not port_lo <= lport <= port_hi:
        return None
    # A SYN-ACK or a RST answering our SYN acknowledges seq + 1 (RFC 9293 3.10.7.1 for RSTs to
    # segments without ACK). The RST's ACK flag is not required: the cookie alone proves the
    # sender saw our SYN. A RST with seq == cookie + 1 has no such origin, so it is refused.
    if flags & _RST:
        return _new_tuple(Heard, (_CLOSED, "rst", remote, rport, lport, (ack - 1) & 0xFFFFFFFF,
                                  None, local, None))
    if flags & _SYN_ACK == _SYN_ACK:
        return _new_tuple(Heard, (_OPEN, "syn-ack", remote, rport, lport,
                                  (ack - 1) & 0xFFFFFFFF, ack, local, None))
    return None


def _read_icmp(packet: bytes, off: int, outer_dst: bytes, port_lo: int, port_hi: int,
               v6: bool) -> Heard | Invalid | None:
    """An ICMP error is validated through the IP + TCP header of the SYN it quotes.

    A tunnelled SYN is quoted with its outer header (a router on the way to the real server
    answers about the packet it saw); the inner header follows it in the quote, and the outer
    destination is the real server, i.e. the salt.
    """
    n = len(packet)
    if n < off + 8:
        return None
    icmp_type, icmp_code = packet[off], packet[off + 1]
    if icmp_type not in (ICMP6_ERRORS if v6 else ICMP4_ERRORS):
        return None
    quoted = _quoted(packet, off + 8)
    if quoted is None or (packet[off + 8] >> 4 == 6) != v6:  # ICMPv6 quotes IPv6, ICMP IPv4
        return None
    proto, sender, remote, next_off = quoted
    tunnel_dst = None
    if proto in (_IPIP, _IPV6_IN_IP):
        tunnel_dst = remote
        inner = _quoted(packet, next_off)
        if inner is None or inner[1] != sender:  # our tunnelled SYNs share one source
            return None
        proto, _, remote, next_off = inner
    if proto != _TCP or n < next_off + 8:
        return None
    local = sender
    lport, rport, seq = _QUOTED_TCP.unpack_from(packet, next_off)
    if not port_lo <= lport <= port_hi:
        return None
    # The error goes to the quoted packet's source (RFC 792, RFC 4443 2.4), i.e. to us; NATs
    # rewrite the quoted header along with the outer one (RFC 5508), so the two must agree.
    if local != outer_dst:
        return INVALID_ICMP
    # None (about packet size, path MTU, not the port: see wire.icmp) is ignored once valid.
    state, reason = classify_icmp(v6, icmp_type, icmp_code) or (None, "icmp")
    return Heard(state, reason, remote, rport, lport, seq, None, local, tunnel_dst)


def _quoted(packet: bytes, at: int) -> tuple[int, bytes, bytes, int] | None:
    """(protocol, source, destination, payload offset) of the IP header quoted at `at`."""
    n = len(packet)
    if n < at + 20:
        return None
    version = packet[at] >> 4
    if version == 4:
        ihl = (packet[at] & 0x0F) * 4
        if ihl < 20:
            return None
        return packet[at + 9], packet[at + 12 : at + 16], packet[at + 16 : at + 20], at + ihl
    if version == 6 and n >= at + 40:
        return packet[at + 6], packet[at + 8 : at + 24], packet[at + 24 : at + 40], at + 40
    return None
