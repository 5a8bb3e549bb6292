"""The raw engine's sockets: an IPPROTO_RAW sender per family (batched with sendmmsg) and the
AF_PACKET receiver, filtered in the kernel, with its drop counter. Bytes in and out only; the
engine decides what they mean."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
from collections.abc import Sequence

from synprobe.kernel.marks import set_mark
from synprobe.kernel.mmsg import (
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    PACKET_STATISTICS,
    RCVBUF_BYTES,
    RECV_BYTES,
    SNDBUF_BYTES,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
    SOL_PACKET,
    MmsgReceiver,
    MmsgSender,
    _bind,
)
from synprobe.kernel.sockets import IP_RECVERR, IPV6_RECVERR, SocketFactory
from synprobe.wire.bpf import attach_filter, reply_filter


class PacketIO:
    """The raw engine's sockets: a sender per family and the filtered packet receiver."""

    def __init__(self, port_lo: int, port_hi: int, mark: int | None = None,
                 socket_factory: SocketFactory = socket.socket, sender: type = MmsgSender) -> None:
        self._socks: list[socket.socket] = []
        self._dropped = 0
        try:
            self.senders = {v6: sender(self._raw_sender(v6, mark, socket_factory), v6)
                            for v6 in (False, True)}
            self.recv = self._receiver(port_lo, port_hi, socket_factory)
        except BaseException:
            self.close()
            raise
        self.recv_fd = self.recv.fileno()
        self._batch: MmsgReceiver | None = None
        self.stamps: list[float] = []  # receive times of the last `receive`'s packets

    def _open(self, factory: SocketFactory, *args: int) -> socket.socket:
        sock = factory(*args)
        self._socks.append(sock)
        return sock

    def _raw_sender(self, v6: bool, mark: int | None, factory: SocketFactory) -> socket.socket:
        # IPPROTO_RAW implies IP_HDRINCL (IPv6 too, since Linux 4.5): we write the IP header.
        # Blocking with a send timeout: a full send buffer (a slow NIC's qdisc) paces us
        # instead of dropping. RECVERR makes local drops (ENOBUFS) visible; without it the
        # kernel reports success for a packet its queue discarded.
        family = socket.AF_INET6 if v6 else socket.AF_INET
        sock = self._open(factory, family, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                          socket.IPPROTO_RAW)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 100_000))
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if mark is not None:
            set_mark(sock, mark)
        return sock

    def _receiver(self, port_lo: int, port_hi: int, factory: SocketFactory) -> socket.socket:
        # Protocol 0 receives nothing; the filter goes on before bind() starts delivery, so no
        # unfiltered packet is ever queued. SOCK_DGRAM strips the link header (offset 0 is IP).
        sock = self._open(factory, socket.AF_PACKET,
                          socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
        attach_filter(sock, reply_filter(port_lo, port_hi))
        # An ETH_P_ALL socket is also handed every packet this host sends: each of our SYNs
        # and the kernel's RSTs would be cloned for it before the filter drops them (it still
        # does, where the kernel lacks this option). Measured with the watch service at 2,000
        # checks a second: see docs/watch.md.
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        # Receive times per packet, for RTTs per SYN rather than per batch read. The kernel
        # stamps packets at netif_receive_skb once any socket asks (net_enable_timestamp).
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # SO_RCVBUFFORCE (CAP_NET_ADMIN) passes net.core.rmem_max; SO_RCVBUF is capped
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        # Bind to ETH_P_ALL on every interface (ifindex 0). Python's AF_PACKET addresses need
        # an interface name, so struct sockaddr_ll is passed to bind(2) directly.
        sll = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), 0, 0, 0, 0,
                          b"")
        if _bind(sock.fileno(), sll, len(sll)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bind(AF_PACKET): {errno.errorcode.get(err, err)}")
        return sock

    def send(self, v6: bool, batch: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        return self.senders[v6].send(batch)

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` queued packets, without blocking (one recvmmsg(2) call); their
        receive times (time.monotonic(), 0.0 if unknown) are left in `stamps`."""
        batch = self._batch
        if batch is None or batch.capacity < limit:
            batch = self._batch = MmsgReceiver(limit)
        packets, self.stamps = batch.receive(self.recv_fd, limit)
        return packets

    def receive_from(self, limit: int) -> list[tuple[bytes, bytes]]:
        """Like `receive`, with each packet's link-layer source address (the MAC of the host
        that put it on our link; empty on links without addresses)."""
        out: list[tuple[bytes, bytes]] = []
        recvfrom, append = self.recv.recvfrom, out.append
        try:
            for _ in range(limit):
                packet, addr = recvfrom(RECV_BYTES)
                append((packet, addr[4]))  # sockaddr_ll: ifname, proto, pkttype, hatype, addr
        except BlockingIOError:
            pass
        return out

    def kernel_drops(self) -> int:
        """Replies the kernel dropped since the last call (receive buffer full)."""
        _, drops = struct.unpack("II", self.recv.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return drops

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()
