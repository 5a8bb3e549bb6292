"""Socket plumbing for the raw engine: IPPROTO_RAW senders batched with sendmmsg(2), the filtered
AF_PACKET receiver with its drop counter, the kernel's choice of source address, and the
ephemeral port range. Bytes in and out only; the engine (raw.py) decides what they mean.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
import time
from collections.abc import Callable, Sequence

from synprobe.kernel.localaddr import set_freebind
from synprobe.kernel.marks import set_mark
from synprobe.wire.bpf import attach_filter, reply_filter

SocketFactory = Callable[..., socket.socket]

SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats { unsigned tp_packets, tp_drops; }, reset on read
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_RECVERR = 11
IPV6_RECVERR = 25
RCVBUF_BYTES = 64 << 20  # queued replies are bounded by --concurrency; room for tens of thousands
SNDBUF_BYTES = 4 << 20
RECV_BYTES = 512  # every header a reply is validated on: at most 60 + 8 + 60 + 8 (ICMP quotes)
# SO_TIMESTAMPNS (asm-generic/socket.h; not in Python's socket module): each packet comes with
# the kernel's receive time, a struct timespec (CLOCK_REALTIME) in one control message.
SO_TIMESTAMPNS = 35
_CMSG_SPACE = 32  # CMSG_SPACE(sizeof(struct timespec)) on LP64: 16-byte header, 16 of data
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"  # read in the caller's netns

_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int
_bind = _libc.bind
_bind.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_bind.restype = ctypes.c_int

_PTR = ctypes.sizeof(ctypes.c_void_p)


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    """struct mmsghdr, for its size (the array stride): struct msghdr, unsigned msg_len."""

    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


# Errors a later attempt may not see again: local congestion, not a verdict on the target.
TRANSIENT_ERRNOS = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.ENOMEM, errno.EINTR})


def local_port_range(path: str = PORT_RANGE_FILE) -> tuple[int, int] | None:
    """net.ipv4.ip_local_port_range of the calling thread's namespace (it covers IPv6 too)."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return lo, hi


class MmsgSender:
    """One IPPROTO_RAW socket and a preallocated sendmmsg(2) batch.

    It measured a little faster than one sendto(2) per packet; the figures
    are in raw.py's docstring. Everything sendmmsg reads (the mmsghdr array, iovecs,
    sockaddrs and packet slots) lives in one bytearray whose pointers are written once; per
    packet only the packet bytes, the destination address and iov_len are copied in.
    """

    SLOT = 128  # bytes per packet slot; a SYN is 60 (IPv4) or 80 (IPv6) bytes
    _MMSG = ctypes.sizeof(_Mmsghdr)  # 64 on LP64
    _IOV = struct.calcsize("@PN")  # struct iovec { void *iov_base; size_t iov_len; }

    def __init__(self, sock: socket.socket, v6: bool, capacity: int = 256) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.capacity = capacity
        self.v6 = v6
        self._addr_size, self._addr_at = (28, 8) if v6 else (16, 4)
        n = capacity
        self._pkt_off = 0
        self._sa_off = n * self.SLOT
        self._iov_off = self._sa_off + n * self._addr_size
        self._mmsg_off = self._iov_off + n * self._IOV
        self._buf = bytearray(self._mmsg_off + n * self._MMSG)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._buf))
        self._base = base
        family = socket.AF_INET6 if v6 else socket.AF_INET
        for i in range(n):
            sa = self._sa_off + i * self._addr_size
            struct.pack_into("=H", self._buf, sa, family)  # port 0, addresses written per send
            struct.pack_into("@PN", self._buf, self._iov_off + i * self._IOV,
                             base + i * self.SLOT, 0)
            # struct msghdr: name, namelen, iov, iovlen, control, controllen, flags
            struct.pack_into("@PIPNPNi", self._buf, self._mmsg_off + i * self._MMSG,
                             base + sa, self._addr_size, base + self._iov_off + i * self._IOV,
                             1, 0, 0, 0)
        self._lens = [0] * n  # the iov_len of each slot, as last written

    def send(self, batch: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """Send (packet, packed destination) pairs; return (index, errno) of those that failed."""
        failures: list[tuple[int, int]] = []
        buf, slot, lens, iov, iov_len = self._buf, self.SLOT, self._lens, self._IOV, \
            self._iov_off + _PTR
        size, width = self._addr_size, 16 if self.v6 else 4
        for start in range(0, len(batch), self.capacity):
            chunk = batch[start : start + self.capacity]
            sa = self._sa_off + self._addr_at
            at = 0
            for i, (packet, dst) in enumerate(chunk):
                n = len(packet)
                if n != lens[i]:  # iov_len is rewritten only when it changes (SYNs: never)
                    if n > slot:
                        raise ValueError(f"packet of {n} bytes does not fit a {slot}-byte slot")
                    struct.pack_into("@N", buf, iov_len + i * iov, n)
                    lens[i] = n
                buf[at : at + n] = packet
                buf[sa : sa + width] = dst
                at += slot
                sa += size
            failures.extend((start + i, e) for i, e in self._flush(len(chunk)))
        return failures

    def _flush(self, count: int) -> list[tuple[int, int]]:
        failures = []
        i = 0
        while i < count:
            sent = _sendmmsg(self.fd, self._base + self._mmsg_off + i * self._MMSG, count - i, 0)
            if sent > 0:
                i += sent
                continue
            # sendmmsg reports an error only for the first message of a call: that one failed.
            err = ctypes.get_errno() if sent < 0 else errno.EIO
            if err != errno.EINTR:
                failures.append((i, err))
                i += 1
        return failures

    def close(self) -> None:
        self.sock.close()


class MmsgReceiver:
    """A preallocated recvmmsg(2) batch: up to `capacity` packets of RECV_BYTES per call, each
    with its kernel receive time (SO_TIMESTAMPNS) when the socket asked for it.

    One call instead of one recv(2) per packet: measured in the lab (65,536 SYN-ACKs, batches
    of up to 1,024), receiving cost 0.3 µs per packet against 1.0 µs. Packets longer than a
    slot are cut, as recv(RECV_BYTES) cuts them.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = n = capacity
        iov_size, mmsg_size = MmsgSender._IOV, MmsgSender._MMSG
        self._iov_off = n * RECV_BYTES
        self._ctl_off = self._iov_off + n * iov_size
        self._mmsg_off = self._ctl_off + n * _CMSG_SPACE
        self._buf = bytearray(self._mmsg_off + n * mmsg_size)
        self._base = base = ctypes.addressof(ctypes.c_char.from_buffer(self._buf))
        for i in range(n):
            iov = self._iov_off + i * iov_size
            struct.pack_into("@PN", self._buf, iov, base + i * RECV_BYTES, RECV_BYTES)
            struct.pack_into("@PIPNPNi", self._buf, self._mmsg_off + i * mmsg_size,
                             0, 0, base + iov, 1, base + self._ctl_off + i * _CMSG_SPACE,
                             _CMSG_SPACE, 0)
        view = memoryview(self._buf)
        self._packets = view[: self._iov_off]
        # msg_len of every mmsghdr: the last member, at a stride of the struct's size.
        msg_len = _Mmsghdr.msg_len.offset
        self._lens = view[self._mmsg_off :].cast("I")[msg_len // 4 :: mmsg_size // 4]
        # msg_controllen: the kernel writes the length it used; it is reset before each call.
        ctl_len = _Msghdr.msg_controllen.offset
        self._ctl_lens = view[self._mmsg_off :].cast("Q")[ctl_len // 8 :: mmsg_size // 8]
        self._full = memoryview(struct.pack(f"{n}Q", *[_CMSG_SPACE] * n)).cast("Q")
        # Each control slot: cmsg_len, level and type (16 bytes), then tv_sec and tv_nsec.
        words = view[self._ctl_off : self._mmsg_off].cast("q")
        self._secs, self._nsecs = words[2::4], words[3::4]

    def receive(self, fd: int, limit: int) -> tuple[list[bytes], list[float]]:
        """The packets, and their receive times on time.monotonic()'s clock (0.0 where the
        kernel gave none)."""
        count = min(limit, self.capacity)
        self._ctl_lens[:count] = self._full[:count]
        while True:
            count = _recvmmsg(fd, self._base + self._mmsg_off, count, socket.MSG_DONTWAIT, None)
            if count >= 0:
                break
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return [], []
            if err != errno.EINTR:
                raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
            count = min(limit, self.capacity)
        packets = self._packets
        got = [packets[at : at + n].tobytes()
               for at, n in zip(range(0, count * RECV_BYTES, RECV_BYTES),
                                self._lens[:count].tolist(), strict=True)]
        # The stamps are CLOCK_REALTIME; moved onto the monotonic clock with one offset read
        # now (a wall-clock step between a packet's arrival and this line would skew it).
        offset = time.monotonic() - time.time()
        stamps = [sec + nsec * 1e-9 + offset if used >= _CMSG_SPACE else 0.0
                  for sec, nsec, used in zip(self._secs[:count].tolist(),
                                             self._nsecs[:count].tolist(),
                                             self._ctl_lens[:count].tolist(), strict=True)]
        return got, stamps


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


class SourceRouter:
    """The source address the kernel would pick for a destination, cached per prefix.

    A UDP socket's connect() does the route lookup (policy rules, SO_MARK, the route's `src`)
    and getsockname() tells the address chosen; nothing is sent, and no privilege is needed.
    That costs a few µs, too much per packet, so answers are cached per /24 (IPv4) or /64
    (IPv6) of the destination: /24 is the longest prefix routed between networks, /64 the
    IPv6 subnet size. The limit: a more specific local route (a host route, a /28 over a
    tunnel) with a different source inside a cached prefix is not honoured, and route
    changes are seen only when the cache is cleared, every `ttl` seconds.
    """

    def __init__(self, source: str | None, mark: int | None = None,
                 socket_factory: SocketFactory = socket.socket, ttl: float = 10.0,
                 freebind: bool = False) -> None:
        self.source = source
        self.freebind = freebind
        self.mark = mark
        self.ttl = ttl
        self._factory = socket_factory
        self._cache: dict[bytes, tuple[bytes, str] | int] = {}
        self._expires = 0.0

    def lookup(self, v6: bool, dst: bytes, now: float) -> tuple[bytes, str] | int:
        """(packed source, its text) for `dst`, or the errno the route lookup failed with."""
        if now >= self._expires:
            self._cache.clear()
            self._expires = now + self.ttl
        prefix = dst[:8] if v6 else dst[:3]
        found = self._cache.get(prefix)
        if found is None:
            found = self._resolve(v6, dst)
            # A freebind source fails until it arrives (a VRRP failover): then retry each time.
            if not (self.freebind and isinstance(found, int)):
                self._cache[prefix] = found
        return found

    def _resolve(self, v6: bool, dst: bytes) -> tuple[bytes, str] | int:
        family = socket.AF_INET6 if v6 else socket.AF_INET
        if self.source is not None and (":" in self.source) != v6:
            return errno.EAFNOSUPPORT  # an IPv4 --source cannot send to IPv6, or back
        try:
            # A socket per lookup (one per cached prefix): nothing stays open between runs.
            with self._factory(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                if self.mark is not None:
                    with contextlib.suppress(PermissionError):  # the raw sockets insist on it
                        set_mark(sock, self.mark)
                if self.source is not None:
                    if self.freebind:
                        set_freebind(sock)
                    sock.bind((self.source, 0))  # EADDRNOTAVAIL unless ours (or freebind)
                sock.connect((socket.inet_ntop(family, dst), 9))
                text = sock.getsockname()[0]
        except OSError as exc:
            return exc.errno or errno.EIO
        return socket.inet_pton(family, text), text

    def close(self) -> None:
        self._cache.clear()
        self._expires = 0.0
