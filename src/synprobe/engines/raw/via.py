"""How the raw engine checks a VIP through one named real server (DSR, `--via`).

Every real server holds the VIP, so nothing in the SYN to the VIP can pick one; the way it is
sent does:

- `l2` (direct routing, LVS-DR; the default): the SYN to the VIP in an Ethernet frame addressed
  to the real server's MAC, on the interface that reaches it. The real server must be on a
  directly connected network (`l2.L2Resolver` refuses anything else, naming the route).
- `ipip` (tunnelling, LVS-TUN): the SYN wrapped in IP-in-IP to the real server's address, sent
  like any packet, so the real server may be any number of hops away; it needs a tunnel device
  (tunl0 / ip6tnl0) with the VIP on lo, as LVS-TUN does anyway.

Either way the answer comes straight from the VIP to our address. It does not say which real
server sent it; the cookie does: each check's sequence number and source port are salted with
the real server's address (`CookieKey.derive(..., salt=via)`), so the reply acknowledges only
one of the checks in flight. The source MAC of the frame it came in is compared with the real
server's (l2 only; a mismatch is counted as `via_mac_mismatch`, since a real server may route
its answers through a router; the cookie stays the proof).

Resetting: the engine always sends its own RST in via mode, the way the SYN went (frame to the
same MAC, or through the same tunnel). The prober's kernel cannot: it routes a reset to the VIP
by its own table, i.e. to whichever real server (if any) that route names, or, as measured in
the lab, drops the answer first (strict or loose rp_filter without a route back to the VIP:
TcpExtIPReversePathFilter; a local VIP: a martian source). A reset that strays to another real
server is harmless: the salted ports and sequence numbers match no connection there.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import NamedTuple

from synprobe.errors import UsageError
from synprobe.kernel.neighbours import L2Resolver, NeighbourUnresolved
from synprobe.kernel.sockets import ntop
from synprobe.wire.tunnel import encapsulate

Lane = tuple[str, object]  # ("ip", v6): the raw IP sockets; ("frame", ifname): a packet socket


class ViaRoute(NamedTuple):
    """How packets of checks through one real server go out."""

    mode: str  # "l2" or "ipip"
    via: bytes  # the real server, packed (the cookie's salt)
    source: bytes  # our address: the SYN's (and the tunnel's) source
    source_text: str
    ifname: str | None  # l2: the interface
    header: bytes  # l2: the Ethernet header to the real server's MAC; ipip: b""
    mac: bytes | None  # l2: the real server's MAC, to cross-check replies with

    def wrap(self, packet: bytes) -> bytes:
        """`packet` (to the VIP) as it leaves: a frame, or an IP-in-IP packet."""
        if self.mode == "l2":
            return self.header + packet
        return encapsulate(packet, self.source, self.via)

    def describe(self) -> str:
        via = ntop(self.via)
        if self.mode == "l2":
            mac = ":".join(f"{b:02x}" for b in self.mac or b"")
            return f"in a frame to {via} ({mac}) on {self.ifname}"
        return f"in IP-in-IP from {self.source_text} to {via}"


def lane_of(route: ViaRoute | None, v6: bool, dst: bytes) -> tuple[Lane, bytes]:
    """How a packet to `dst` (through `route`, if any) leaves, and the address it is sent to:
    the target itself, the tunnel's far end (with the outer header's family), or a frame on an
    interface."""
    if route is None:
        return ("ip", v6), dst
    if route.ifname is not None:
        return ("frame", route.ifname), route.via
    return ("ip", len(route.via) == 16), route.via


def unresolved_reason(exc: NeighbourUnresolved) -> str:
    """The result's reason when the real server's MAC could not be found (like connect() to a
    silent on-link host, EHOSTUNREACH: the real server is down or not on that link)."""
    return "nd-timeout" if exc.how.startswith("neighbour") else "arp-timeout"


class ViaPaths:
    """ViaRoutes per real server, from the L2 resolver (l2) or the kernel's source choice (ipip).

    `lookup_source(v6, dst)` is the engine's `SourceRouter.lookup` (packed source and text, or
    an errno): the tunnel leaves from the address the kernel would use towards the real server.
    """

    def __init__(self, mode: str, source: str | None, mark: int | None,
                 lookup_source: Callable[[bool, bytes], tuple[bytes, str] | int],
                 resolver: L2Resolver | None = None) -> None:
        self.mode = mode  # one of options.VIA_MODES, checked with the engine's options
        self._lookup_source = lookup_source
        self._resolver = resolver or L2Resolver(source=source, mark=mark)
        self._routes: dict[bytes, ViaRoute] = {}  # the last route per real server (for RSTs)

    def route(self, via: str, target_v6: bool, ask: bool = True) -> ViaRoute:
        """The route for checks of a `target_v6` VIP through `via`. UsageError for what cannot
        work (wrong family, not on-link in l2, no route); NeighbourUnresolved when the real
        server did not answer ARP/ND (with `ask=False`: when the neighbour table has no MAC)."""
        v6 = ":" in via
        if v6 != target_v6:
            raise UsageError(f"real server {via}: an IPv{6 if v6 else 4} real server cannot "
                             f"serve an IPv{6 if target_v6 else 4} VIP")
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, via)
        if self.mode == "l2":
            path = self._resolver.path(packed, ask=ask)
            found = ViaRoute("l2", packed, path.source, ntop(path.source), path.ifname,
                             path.header(), path.dst_mac)
        else:
            src = self._lookup_source(v6, packed)
            if isinstance(src, int):
                raise UsageError(f"real server {via}: no route to the real server "
                                 f"({errno.errorcode.get(src, src)})")
            found = ViaRoute("ipip", packed, src[0], src[1], None, b"", None)
        self._routes[packed] = found
        return found

    def known(self, via: bytes) -> ViaRoute | None:
        """The route last used for real server `via` (packed): where a late answer's RST goes."""
        return self._routes.get(via)
