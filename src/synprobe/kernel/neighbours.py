"""Direct-routing (L2 DSR) paths to real servers: route, interface and neighbour (MAC).

For a check of VIP:port through real server RS, the SYN to the VIP must leave in a frame
addressed to RS's MAC, on the interface that reaches RS. `L2Resolver.path(rs)` finds that out
the way `ip route get RS` and `ip neigh get RS dev IF` would (rtnetlink, see `netlink`), and
refuses what direct routing cannot do:

- RS behind a gateway (not on a directly connected network): the frame would go to the router,
  which forwards by IP, to whatever owns the VIP. `UsageError`; tunnel mode works across routers.
- RS being one of our own addresses, a broadcast, an unreachable/blackhole/prohibit route, a
  non-Ethernet or down interface: `UsageError` naming it.
- No usable neighbour entry: we ask ourselves, with the frames `arping` / `ndisc6` send (ARP
  who-has from our address on that link, or a Neighbor Solicitation to the solicited-node
  group), `attempts` times `interval` apart, and read the answer on the same packet socket.
  Nothing is written to the kernel's neighbour table (that would need CAP_NET_ADMIN and change
  the host). No answer: `NeighbourUnresolved`, which an engine reports per check (the real
  server is down or not on that link), like connect() to a silent on-link host
  (EHOSTUNREACH).

Answers are cached for `ttl` seconds, failures for `negative_ttl`, so a long-lived prober sees a
replaced real server's new MAC without asking per check. Asking is synchronous: a silent real
server holds the caller up to `attempts * interval` (0.9 s by default) once per `negative_ttl`;
permanent neighbour entries for the real servers (`ip neigh replace RS lladdr MAC nud
permanent`, as many directors have) avoid it.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable
from typing import NamedTuple

from synprobe.errors import SynprobeError, UsageError
from synprobe.kernel.netlink import NetlinkSocket
from synprobe.kernel.sockets import SocketFactory, ntop
from synprobe.wire.ether import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    arp_request,
    ether_header,
    format_mac,
    is_unicast_mac,
    neighbor_solicitation,
    parse_arp_reply,
    parse_neighbor_advert,
)
from synprobe.wire.netlink import ARPHRD_ETHER, RTN_LOCAL, RTN_UNICAST


class NeighbourUnresolved(SynprobeError):
    """The real server did not answer ARP / neighbour discovery on the link that reaches it
    (or, when we were told not to ask, the neighbour table has no usable entry for it)."""

    def __init__(self, via: str, ifname: str, how: str, asked: bool = True) -> None:
        if asked:
            text = f"real server {via} did not answer {how} on {ifname}"
        else:
            text = f"real server {via} has no neighbour entry on {ifname}"
        super().__init__(text)
        self.via, self.ifname, self.how, self.asked = via, ifname, how, asked


class L2Path(NamedTuple):
    """How to put a frame on the wire to one real server."""

    via: bytes  # the real server's address, packed
    ifindex: int
    ifname: str
    source: bytes  # our address on that link, packed: the SYN's source
    src_mac: bytes  # our interface's MAC
    dst_mac: bytes  # the real server's MAC

    def header(self) -> bytes:
        """The Ethernet header every frame to this real server starts with."""
        return ether_header(self.dst_mac, self.src_mac,
                            ETH_P_IPV6 if len(self.via) == 16 else ETH_P_IP)

    def __str__(self) -> str:
        return f"{ntop(self.via)} at {format_mac(self.dst_mac)} on {self.ifname}"


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


class L2Resolver:
    """Paths to real servers, from the calling thread's network namespace."""

    def __init__(
        self,
        *,
        source: str | None = None,
        mark: int | None = None,
        attempts: int = 3,
        interval: float = 0.3,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        netlink_factory: Callable[[], NetlinkSocket] = NetlinkSocket,
        socket_factory: SocketFactory = socket.socket,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.mark = mark
        self.attempts = attempts
        self.interval = interval
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._netlink = netlink_factory
        self._socket = socket_factory
        self._clock = clock
        self._cache: dict[bytes, tuple[float, L2Path | NeighbourUnresolved]] = {}

    def path(self, via: bytes, ask: bool = True) -> L2Path:
        """The path to real server `via` (packed); UsageError or NeighbourUnresolved.

        With `ask=False` nothing is sent (for --dry-run): no entry in the neighbour table is
        then NeighbourUnresolved(asked=False), not cached.
        """
        now = self._clock()
        cached = self._cache.get(via)
        if cached is not None and cached[0] > now:
            if isinstance(cached[1], NeighbourUnresolved):
                raise cached[1]
            return cached[1]
        try:
            found = self._find(via, ask)
        except NeighbourUnresolved as exc:
            if exc.asked:
                self._cache[via] = (now + self.negative_ttl, exc)
            raise
        self._cache[via] = (now + self.ttl, found)
        return found

    def forget(self) -> None:
        self._cache.clear()

    def _find(self, via: bytes, ask: bool) -> L2Path:
        text = ntop(via)
        with self._netlink() as nl:
            route = nl.route(via, self.mark)
            if isinstance(route, int):
                raise UsageError(f"real server {text}: the kernel has no route to it "
                                 f"({_errno_name(route)}); direct routing needs the real server "
                                 f"on a directly connected network")
            if route.kind == RTN_LOCAL:
                raise UsageError(f"real server {text} is an address of this host, not a real "
                                 "server")
            if route.kind != RTN_UNICAST:
                raise UsageError(f"real server {text}: its route is of type {route.kind_name}, "
                                 "not a host on a directly connected network")
            link = nl.link(route.oif) if route.oif is not None else None
            if link is None:
                raise UsageError(f"real server {text}: the kernel names no interface for it")
            if route.gateway is not None:
                raise UsageError(
                    f"real server {text} is not on a directly connected network (the route goes "
                    f"via {ntop(route.gateway)} on {link.name}); direct routing (L2) needs the "
                    f"real server on one of this host's links: use via mode ipip to reach it "
                    f"through a tunnel, or check from a host on its segment")
            if link.hatype != ARPHRD_ETHER or link.address is None or len(link.address) != 6:
                raise UsageError(f"real server {text}: {link.name} is not an Ethernet interface "
                                 f"(type {link.hatype}); direct routing needs MAC addresses")
            if not link.up:
                raise UsageError(f"real server {text}: interface {link.name} is down")
            source = self._source(via, route.prefsrc, text)
            neigh = nl.neighbour(via, link.index)
        if neigh is not None and neigh.usable and neigh.lladdr is not None:
            mac = neigh.lladdr
        elif ask:
            mac = self._ask(via, link.name, link.address, source, text)
        else:
            how = "neighbour solicitation" if len(via) == 16 else "ARP"
            raise NeighbourUnresolved(text, link.name, how, asked=False)
        return L2Path(via, link.index, link.name, source, link.address, mac)

    def _source(self, via: bytes, prefsrc: bytes | None, text: str) -> bytes:
        if self.source is not None:
            family = socket.AF_INET6 if ":" in self.source else socket.AF_INET
            packed = socket.inet_pton(family, self.source)
            if len(packed) != len(via):
                raise UsageError(f"source {self.source} and real server {text} are of different "
                                 f"IP versions")
            return packed
        if prefsrc is None or len(prefsrc) != len(via):
            raise UsageError(f"real server {text}: no local address to send from on its link "
                             f"(give a source address)")
        return prefsrc

    def _ask(self, via: bytes, ifname: str, our_mac: bytes, source: bytes, text: str) -> bytes:
        """ARP / NDP for `via` on `ifname`: bounded attempts, each waiting `interval` s."""
        v6 = len(via) == 16
        proto = ETH_P_IPV6 if v6 else ETH_P_ARP
        request = (neighbor_solicitation if v6 else arp_request)(our_mac, source, via)
        parse = parse_neighbor_advert if v6 else parse_arp_reply
        how = "neighbour solicitation" if v6 else "ARP"
        # Bound to the interface and protocol before the first request: no answer is missed.
        sock = self._socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC
                            | socket.SOCK_NONBLOCK, 0)
        try:
            sock.bind((ifname, proto))
            for _ in range(self.attempts):
                try:
                    sock.send(request)
                except OSError as exc:  # the link went down, a full queue: this try is lost,
                    if isinstance(exc, PermissionError):  # its interval is waited out anyway
                        raise
                deadline = self._clock() + self.interval
                while (left := deadline - self._clock()) > 0:
                    if not select.select([sock], [], [], left)[0]:
                        break
                    for _ in range(64):  # what is queued now; then look at the clock again
                        try:
                            data = sock.recv(2048)
                        except BlockingIOError:
                            break
                        answer = parse(data)
                        if answer is not None and answer[0] == via and is_unicast_mac(answer[1]):
                            return answer[1]
        finally:
            sock.close()
        raise NeighbourUnresolved(text, ifname, how)
