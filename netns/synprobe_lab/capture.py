"""Race-free capture of one interface with an AF_PACKET socket, parsed with `struct`.

The socket is created with protocol 0, which delivers nothing, and only then bound to the
interface with ETH_P_ALL: from that bind on, every frame in either direction is queued in the
socket's receive buffer, so a capture opened before the code under test runs cannot miss its first
packet, and nothing from other interfaces sneaks in before the bind. Nothing reads the socket while
the test runs; `packets()` drains it afterwards without blocking. Kernel receive timestamps
(SO_TIMESTAMPNS) give each frame its wire time, and PACKET_STATISTICS reports frames the kernel
dropped because the buffer was full (`Capture.dropped`, which a test should assert is 0).

Parsing covers what the lab produces: Ethernet + IPv4/IPv6 + TCP/ICMP/ICMPv6. Errors (ICMP
unreachable and friends) carry the quoted TCP 4-tuple and sequence number as `Packet.inner`.
Neighbour discovery and MLD (ICMPv6 >= 130) and non-IP frames are skipped as link noise.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
TCP_FLAG_ORDER = "FSRPAUEC"  # scapy's order, so SYN-ACK prints "SA" and RST-ACK "RA"
ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})


class Inner(NamedTuple):
    """The TCP segment quoted inside an ICMP error: the probe that provoked it."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int | None  # the quote holds at least 8 TCP bytes, so this is normally present


class FlowKey(NamedTuple):
    client: str
    client_port: int
    server: str
    server_port: int
    # Which connection on this 4-tuple, in capture order: a port is legitimately used again
    # (a reset socket leaves no TIME_WAIT), and a SYN with a new sequence number is a new one.
    conn: int = 0


@dataclass(frozen=True, slots=True)
class Packet:
    """One captured IP packet, summarized. Fields not applicable to `proto` are None/''."""

    time: float  # kernel receive/transmit timestamp, seconds since the epoch
    direction: str  # "out": sent by the capturing namespace; "in": received by it
    version: int  # 4 or 6
    proto: str  # "tcp", "icmp", "icmp6", or "ip<number>" for anything else
    src: str
    dst: str
    length: int  # IP total length in bytes
    sport: int | None = None
    dport: int | None = None
    flags: str = ""  # TCP flags in scapy order: "S", "SA", "A", "R", "RA", "FA", "PA"
    seq: int | None = None
    ack: int | None = None
    window: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    inner: Inner | None = None  # ICMP errors quoting TCP only
    raw: bytes = field(default=b"", repr=False, compare=False)  # the IP packet, for scapy

    @property
    def label(self) -> str:
        """TCP flags, or `icmp-<type>-<code>` / `icmp6-<type>-<code>` (synprobe's reason form)."""
        if self.proto == "tcp":
            return self.flags
        return f"{self.proto}-{self.icmp_type}-{self.icmp_code}"

    def __str__(self) -> str:
        if self.sport is None:
            ends = f"{self.src} > {self.dst}"
        else:
            ends = f"{self.src}:{self.sport} > {self.dst}:{self.dport}"
        extra = f" seq={self.seq} ack={self.ack}" if self.proto == "tcp" else ""
        if self.inner is not None:
            i = self.inner
            extra = f" quoting {i.src}:{i.sport} > {i.dst}:{i.dport} seq={i.seq}"
        return f"{self.direction} {ends} {self.label}{extra}"


def tcp_flags(bits: int) -> str:
    return "".join(ch for i, ch in enumerate(TCP_FLAG_ORDER) if bits & (1 << i))


def _inner_v4(buf: bytes, off: int) -> Inner | None:
    if len(buf) < off + 20 or buf[off + 9] != socket.IPPROTO_TCP:
        return None
    tcp = off + (buf[off] & 0x0F) * 4
    if len(buf) < tcp + 4:
        return None
    sport, dport = struct.unpack_from("!HH", buf, tcp)
    seq = struct.unpack_from("!I", buf, tcp + 4)[0] if len(buf) >= tcp + 8 else None
    return Inner(socket.inet_ntop(socket.AF_INET, buf[off + 12:off + 16]),
                 socket.inet_ntop(socket.AF_INET, buf[off + 16:off + 20]), sport, dport, seq)


def _inner_v6(buf: bytes, off: int) -> Inner | None:
    if len(buf) < off + 44 or buf[off + 6] != socket.IPPROTO_TCP:
        return None
    sport, dport = struct.unpack_from("!HH", buf, off + 40)
    seq = struct.unpack_from("!I", buf, off + 44)[0] if len(buf) >= off + 48 else None
    return Inner(socket.inet_ntop(socket.AF_INET6, buf[off + 8:off + 24]),
                 socket.inet_ntop(socket.AF_INET6, buf[off + 24:off + 40]), sport, dport, seq)


def parse_ip(ip: bytes, direction: str, ts: float) -> Packet | None:
    """Summarize one IP packet (starting at the IP header); None for link noise or garbage."""
    if len(ip) < 20:
        return None
    version = ip[0] >> 4
    if version == 4:
        hlen, proto = (ip[0] & 0x0F) * 4, ip[9]
        src = socket.inet_ntop(socket.AF_INET, ip[12:16])
        dst = socket.inet_ntop(socket.AF_INET, ip[16:20])
        length = struct.unpack_from("!H", ip, 2)[0]
    elif version == 6 and len(ip) >= 40:
        hlen, proto = 40, ip[6]
        src = socket.inet_ntop(socket.AF_INET6, ip[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, ip[24:40])
        length = 40 + struct.unpack_from("!H", ip, 4)[0]
    else:
        return None
    raw = bytes(ip)
    if proto == socket.IPPROTO_TCP and len(ip) >= hlen + 20:
        sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", ip, hlen)
        return Packet(time=ts, direction=direction, version=version, proto="tcp", src=src,
                      dst=dst, length=length, sport=sport, dport=dport,
                      flags=tcp_flags(off_flags & 0xFF), seq=seq, ack=ack, window=window, raw=raw)
    icmp_name = {(4, socket.IPPROTO_ICMP): "icmp", (6, socket.IPPROTO_ICMPV6): "icmp6"}
    name = icmp_name.get((version, proto))
    if name is not None and len(ip) >= hlen + 8:
        itype, code = ip[hlen], ip[hlen + 1]
        if name == "icmp":
            inner = _inner_v4(ip, hlen + 8) if itype in ICMP4_ERRORS else None
        elif itype >= 130:  # MLD and neighbour discovery: link housekeeping, not probe traffic
            return None
        else:
            inner = _inner_v6(ip, hlen + 8) if itype < 128 else None
        return Packet(time=ts, direction=direction, version=version, proto=name, src=src,
                      dst=dst, length=length, icmp_type=itype, icmp_code=code, inner=inner,
                      raw=raw)
    if version == 6 and proto == 0:  # hop-by-hop header: only MLD uses it here
        return None
    return Packet(time=ts, direction=direction, version=version, proto=f"ip{proto}", src=src,
                  dst=dst, length=length, raw=raw)


def parse_frame(frame: bytes, direction: str, ts: float) -> Packet | None:
    """Summarize one Ethernet frame; None for non-IP frames and link noise."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype not in (ETH_P_IP, ETH_P_IPV6):
        return None
    return parse_ip(frame[14:], direction, ts)


def flows(packets: list[Packet]) -> dict[FlowKey, list[tuple[str, str]]]:
    """Group TCP packets and TCP-quoting ICMP errors by connection, in capture order.

    Key: (client, client port, server, server port, conn). The client is the side that sent a
    SYN without ACK in the capture; failing that, the side with the higher port (the ephemeral
    one). `conn` counts connections on one 4-tuple: a SYN with a new sequence number starts the
    next (the kernel may give a port again at once: a reset socket leaves no TIME_WAIT).
    Value: (direction, label) pairs, e.g. [("out", "S"), ("in", "SA"), ("out", "R")] for a
    half-open probe seen from the client, or [("out", "S"), ("in", "icmp-3-1")].
    """
    initiators = {(p.src, p.sport) for p in packets if p.proto == "tcp" and "S" in p.flags
                  and "A" not in p.flags}
    result: dict[FlowKey, list[tuple[str, str]]] = {}
    current: dict[tuple[str, int, str, int], tuple[int, int | None]] = {}  # -> (conn, SYN seq)
    for p in packets:
        if p.proto == "tcp":
            a, b = (p.src, p.sport), (p.dst, p.dport)
        elif p.inner is not None:
            a, b = (p.inner.src, p.inner.sport), (p.inner.dst, p.inner.dport)
        else:
            continue
        if a in initiators:
            client_is_a = True
        elif b in initiators:
            client_is_a = False
        else:
            client_is_a = (a[1] or 0) >= (b[1] or 0)
        if not client_is_a:
            a, b = b, a
        four = (a[0], a[1] or 0, b[0], b[1] or 0)
        conn, isn = current.get(four, (-1, None))
        if p.proto == "tcp" and client_is_a and "S" in p.flags and "A" not in p.flags \
                and (conn < 0 or p.seq != isn):  # a new connection (a retransmission keeps it)
            conn, isn = conn + 1, p.seq
            current[four] = (conn, isn)
        key = FlowKey(*four, max(conn, 0))
        result.setdefault(key, []).append((p.direction, p.label))
    return result


class Capture:
    """Frames captured on one interface of one namespace. Use via `Lab.capture()`.

    `packets()` returns everything captured so far (draining the socket first), `flows()`
    groups it per connection, `wait_until()` polls for a condition, `dropped` counts frames the
    kernel could not queue.
    """

    def __init__(self, sock: socket.socket, ns: str, ifname: str) -> None:
        self.ns = ns
        self.ifname = ifname
        self.dropped = 0
        self.skipped = 0  # non-IP frames and link noise
        self._sock = sock
        self._packets: list[Packet] = []

    @classmethod
    def open_socket(cls, ifname: str, bufsize: int) -> socket.socket:
        """Create and bind the capture socket; call it inside the target namespace."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def drain(self) -> list[Packet]:
        """Read every queued frame without blocking; return the newly parsed packets."""
        new: list[Packet] = []
        if self._sock.fileno() < 0:
            return new
        while True:
            try:
                frame, anc, _flags, addr = self._sock.recvmsg(65536, 64)
            except BlockingIOError:
                break
            ts = time.time()
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("qq", data)
                    ts = sec + nsec / 1e9
            pkt = parse_frame(frame, "out" if addr[2] == PACKET_OUTGOING else "in", ts)
            if pkt is None:
                self.skipped += 1
            else:
                new.append(pkt)
        # Reading PACKET_STATISTICS resets the kernel's counters, hence the accumulation.
        _total, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.dropped += drops
        self._packets.extend(new)
        return new

    def packets(self) -> list[Packet]:
        """All packets captured so far, oldest first."""
        self.drain()
        return list(self._packets)

    def tcp(self) -> list[Packet]:
        return [p for p in self.packets() if p.proto == "tcp"]

    def flows(self) -> dict[FlowKey, list[tuple[str, str]]]:
        return flows(self.packets())

    def wait_until(self, predicate: Callable[[list[Packet]], bool], timeout: float = 2.0,
                   interval: float = 0.002) -> list[Packet]:
        """Drain until `predicate(all packets)` holds; TimeoutError (listing them) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            pkts = self.packets()
            if predicate(pkts):
                return pkts
            if time.monotonic() >= deadline:
                listing = "".join(f"\n  {p}" for p in pkts[-40:])
                raise TimeoutError(f"capture condition not met within {timeout}s; seen:{listing}")
            time.sleep(interval)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self.drain()
            self._sock.close()
