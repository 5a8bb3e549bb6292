"""The rtnetlink socket: one request, its answer, in the calling thread's namespace. The messages
are built and parsed by pure functions in `synprobe.wire.netlink`."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable

from synprobe.wire.netlink import (
    NETLINK_ROUTE,
    NLMSG_ERROR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    Link,
    Neighbour,
    Route,
    error_code,
    link_request,
    neigh_request,
    parse_link,
    parse_neigh,
    parse_route,
    route_request,
    split_messages,
)


class NetlinkSocket:
    """One NETLINK_ROUTE socket, in the namespace of the thread that opens it."""

    def __init__(self, timeout: float = 1.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._timeout = timeout
        self._seq = int.from_bytes(os.urandom(2), "big")

    def ask(self, build: Callable[[int], bytes], answer_type: int) -> tuple[int, bytes]:
        """Send one request (`build(seq) -> bytes`); return (0, payload of the answer) or
        (errno, b"") for a refusal. Replies to other sequence numbers are skipped."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(build(seq))
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return errno.ETIMEDOUT, b""
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                return errno.ETIMEDOUT, b""
            for kind, got_seq, payload in split_messages(data):
                if got_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    return error_code(payload) or errno.ENODATA, b""
                if kind == answer_type:
                    return 0, payload

    def route(self, dst: bytes, mark: int | None = None) -> Route | int:
        """The route to `dst` (packed), or the errno the kernel refused the lookup with."""
        err, payload = self.ask(lambda seq: route_request(dst, seq, mark), RTM_NEWROUTE)
        return err or parse_route(payload)

    def neighbour(self, dst: bytes, ifindex: int) -> Neighbour | None:
        """The neighbour entry for `dst` on `ifindex`, or None when there is none."""
        err, payload = self.ask(lambda seq: neigh_request(dst, ifindex, seq), RTM_NEWNEIGH)
        return None if err else parse_neigh(payload)

    def link(self, ifindex: int) -> Link | None:
        err, payload = self.ask(lambda seq: link_request(ifindex, seq), RTM_NEWLINK)
        return None if err else parse_link(payload)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
