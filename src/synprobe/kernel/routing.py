"""The source address the kernel picks for a destination (a UDP connect(), nothing sent)."""

from __future__ import annotations

import contextlib
import errno
import socket

from synprobe.kernel.localaddr import set_freebind
from synprobe.kernel.marks import set_mark
from synprobe.kernel.sockets import SocketFactory


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

    def routes(self, now: float) -> dict[bytes, tuple[bytes, str] | int]:
        """The cache as of `now`: answers keyed by prefix (`dst[:8]` IPv6, `dst[:3]` IPv4),
        for a caller that reads many at once; a missing prefix is lookup()'s to resolve."""
        if now >= self._expires:
            self._cache.clear()
            self._expires = now + self.ttl
        return self._cache

    def lookup(self, v6: bool, dst: bytes, now: float) -> tuple[bytes, str] | int:
        """(packed source, its text) for `dst`, or the errno the route lookup failed with."""
        prefix = dst[:8] if v6 else dst[:3]
        found = self.routes(now).get(prefix)
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
