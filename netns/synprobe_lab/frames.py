"""Captures that keep the Ethernet header: which MAC each frame went to (DSR picks the real server
by MAC alone), and tunnel packets opened up. The socket is `Capture`'s (bound before the body
runs, kernel timestamps, drop counter); only the parsing differs.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .capture import (
    PACKET_OUTGOING,
    PACKET_STATISTICS,
    SO_TIMESTAMPNS,
    SOL_PACKET,
    Packet,
    parse_ip,
)

ETH_P_ARP = 0x0806
IPPROTO_IPIP, IPPROTO_IPV6 = 4, 41


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame: its MACs and, for IP, the packet (the inner one of a tunnel packet
    in `inner`, with the outer addresses in `packet`)."""

    time: float
    direction: str  # "out" (sent by the capturing namespace) or "in"
    dst_mac: str
    src_mac: str
    ethertype: int
    packet: Packet | None  # None for non-IP frames (ARP) and link noise
    inner: Packet | None = None  # the tunnelled packet, for IP-in-IP

    @property
    def tcp(self) -> Packet | None:
        """The TCP packet this frame carries, directly or through a tunnel."""
        for p in (self.inner, self.packet):
            if p is not None and p.proto == "tcp":
                return p
        return None

    @property
    def tunnelled(self) -> bool:
        return self.inner is not None

    def __str__(self) -> str:
        what = self.packet if self.inner is None else f"{self.packet} [{self.inner}]"
        return f"{self.src_mac} > {self.dst_mac} {what or hex(self.ethertype)}"


def parse_frame_full(data: bytes, direction: str, ts: float) -> Frame | None:
    if len(data) < 14:
        return None
    dst, src, ethertype = struct.unpack_from("!6s6sH", data)
    packet = inner = None
    if ethertype in (0x0800, 0x86DD):
        packet = parse_ip(data[14:], direction, ts)
        if packet is not None and packet.proto in (f"ip{IPPROTO_IPIP}", f"ip{IPPROTO_IPV6}"):
            hlen = 40 if packet.version == 6 else (packet.raw[0] & 0x0F) * 4
            inner = parse_ip(packet.raw[hlen:], direction, ts)
    elif ethertype != ETH_P_ARP:
        return None
    return Frame(ts, direction, mac_text(dst), mac_text(src), ethertype, packet, inner)


class FrameCapture:
    """Like `Capture`, but `frames()` keeps MACs. Open with `DsrLab.frames()`."""

    def __init__(self, sock: socket.socket, ns: str, ifname: str) -> None:
        self.ns, self.ifname = ns, ifname
        self.dropped = 0  # frames the kernel could not queue (assert 0)
        self._sock = sock
        self._frames: list[Frame] = []

    def frames(self) -> list[Frame]:
        """Every frame so far (draining the socket without blocking), oldest first."""
        if self._sock.fileno() >= 0:
            for _ in range(1_000_000):  # bounded: a capture holds far fewer
                try:
                    data, anc, _flags, addr = self._sock.recvmsg(65536, 64)
                except BlockingIOError:
                    break
                ts = time.time()
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                        sec, nsec = struct.unpack_from("qq", value)
                        ts = sec + nsec / 1e9
                direction = "out" if addr[2] == PACKET_OUTGOING else "in"
                frame = parse_frame_full(data, direction, ts)
                if frame is not None:
                    self._frames.append(frame)
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.dropped += struct.unpack("II", raw)[1]  # reset by each read
        return list(self._frames)

    def tcp(self) -> list[Frame]:
        """Frames carrying TCP (directly or tunnelled)."""
        return [f for f in self.frames() if f.tcp is not None]

    def wait_until(self, predicate: Callable[[list[Frame]], bool], timeout: float = 2.0,
                   interval: float = 0.002) -> list[Frame]:
        """Poll until `predicate(frames)` holds (a deadline, not a sleep); TimeoutError listing
        the frames otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self.frames()
            if predicate(frames):
                return frames
            if time.monotonic() >= deadline:
                listing = "".join(f"\n  {f}" for f in frames[-40:])
                raise TimeoutError(f"frame condition not met within {timeout}s; seen:{listing}")
            time.sleep(interval)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self.frames()
            self._sock.close()
