"""L2 DSR paths without root: rtnetlink messages on bytes, the resolver against a fake kernel."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from synprobe.errors import UsageError
from synprobe.kernel.frames import FrameSender
from synprobe.kernel.neighbours import L2Path, L2Resolver, NeighbourUnresolved
from synprobe.wire.ether import neighbor_solicitation, parse_mac
from synprobe.wire.netlink import (
    ARPHRD_ETHER,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    NDA_DST,
    NDA_LLADDR,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MARK,
    RTA_OIF,
    RTA_PREFSRC,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTN_LOCAL,
    RTN_UNICAST,
    Link,
    Neighbour,
    Route,
    attr,
    attrs,
    error_code,
    message,
    parse_link,
    parse_neigh,
    parse_route,
    route_request,
    split_messages,
)

OUR_MAC, RS_MAC = parse_mac("02:d5:00:00:00:01"), parse_mac("02:d5:00:00:00:11")


def pton(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


# -- netlink codec ------------------------------------------------------------------------------

def test_attr_padding_and_parsing() -> None:
    a = attr(RTA_DST, b"\x01\x02\x03")  # 4 + 3 bytes, padded to 8
    assert a == struct.pack("=HH", 7, RTA_DST) + b"\x01\x02\x03\0"
    data = b"HEAD" + a + attr(RTA_OIF, struct.pack("=I", 7)) + attr(0x8000 | 9, b"")
    assert attrs(data, 4) == {RTA_DST: b"\x01\x02\x03", RTA_OIF: struct.pack("=I", 7), 9: b""}
    # A length running past the end stops the walk instead of reading garbage.
    assert attrs(b"HEAD" + struct.pack("=HH", 200, 1) + b"xx", 4) == {}
    assert attrs(b"HEAD" + struct.pack("=HH", 2, 1), 4) == {}


def test_route_request_bytes() -> None:
    req = route_request(pton("198.18.1.11"), seq=77, mark=5)
    size, kind, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (size, kind, flags, seq, pid) == (len(req), RTM_GETROUTE, NLM_F_REQUEST, 77, 0)
    family, dst_len = req[16], req[17]
    assert (family, dst_len) == (socket.AF_INET, 32)
    assert attrs(req, 16 + 12) == {RTA_DST: pton("198.18.1.11"), RTA_MARK: struct.pack("=I", 5)}
    six = route_request(pton("fd00:d5::11"), seq=1)
    assert (six[16], six[17]) == (socket.AF_INET6, 128)
    assert attrs(six, 28) == {RTA_DST: pton("fd00:d5::11")}


def rtmsg(kind: int, *extra: bytes) -> bytes:
    return struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 0, 0, kind, 0) + b"".join(extra)


def test_parse_route() -> None:
    on_link = rtmsg(RTN_UNICAST, attr(RTA_OIF, struct.pack("=I", 2)),
                    attr(RTA_PREFSRC, pton("198.18.1.1")))
    assert parse_route(on_link) == Route(RTN_UNICAST, 2, None, pton("198.18.1.1"))
    routed = rtmsg(RTN_UNICAST, attr(RTA_OIF, struct.pack("=I", 2)),
                   attr(RTA_GATEWAY, pton("198.18.1.254")))
    assert parse_route(routed).gateway == pton("198.18.1.254")
    assert parse_route(rtmsg(RTN_LOCAL)).kind_name == "local"
    with pytest.raises(ValueError):
        parse_route(b"short")


def test_parse_neigh_and_link() -> None:
    nd = struct.pack("=BxxxiHBB", socket.AF_INET, 3, NUD_REACHABLE, 0, 1)
    nd += attr(NDA_DST, pton("198.18.1.11")) + attr(NDA_LLADDR, RS_MAC)
    assert parse_neigh(nd) == Neighbour(3, NUD_REACHABLE, RS_MAC)
    ifi = struct.pack("=BxHiII", 0, ARPHRD_ETHER, 3, 0x1043, 0)
    ifi += attr(IFLA_IFNAME, b"dsr0\0") + attr(IFLA_ADDRESS, OUR_MAC)
    assert parse_link(ifi) == Link(3, "dsr0", ARPHRD_ETHER, 0x1043, OUR_MAC)
    assert parse_link(ifi).up


@pytest.mark.parametrize(("state", "mac", "usable"), [
    (NUD_REACHABLE, RS_MAC, True), (NUD_STALE, RS_MAC, True), (NUD_PERMANENT, RS_MAC, True),
    (NUD_INCOMPLETE, None, False), (NUD_FAILED, RS_MAC, False), (NUD_REACHABLE, None, False),
])
def test_neighbour_usable(state: int, mac: bytes | None, usable: bool) -> None:
    assert Neighbour(3, state, mac).usable is usable


def test_split_messages_and_errors() -> None:
    err = message(NLMSG_ERROR, 9, struct.pack("=i", -errno.ENETUNREACH) + bytes(16))
    ok = message(RTM_NEWROUTE, 10, rtmsg(RTN_UNICAST))
    got = list(split_messages(err + ok + b"\x05"))  # a truncated tail is ignored
    assert [(k, s) for k, s, _ in got] == [(NLMSG_ERROR, 9), (RTM_NEWROUTE, 10)]
    assert error_code(got[0][2]) == errno.ENETUNREACH
    assert error_code(b"") == errno.EIO


# -- the resolver against a fake kernel ---------------------------------------------------------

class FakeNetlink:
    def __init__(self, routes: dict[bytes, Route | int], neigh: dict[bytes, Neighbour],
                 links: dict[int, Link]) -> None:
        self.routes, self.neigh, self.links = routes, neigh, links
        self.marks: list[int | None] = []

    def __enter__(self) -> FakeNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def route(self, dst: bytes, mark: int | None = None) -> Route | int:
        self.marks.append(mark)
        return self.routes.get(dst, errno.ENETUNREACH)

    def neighbour(self, dst: bytes, ifindex: int) -> Neighbour | None:
        return self.neigh.get(dst)

    def link(self, ifindex: int) -> Link | None:
        return self.links.get(ifindex)


class FakePacketSocket:
    """A packet socket on a socketpair: `answers(request)` decides what the link says back."""

    def __init__(self, answers: Any) -> None:
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._ours.setblocking(False)
        self.answers = answers
        self.sent: list[bytes] = []
        self.bound: tuple[str, int] | None = None
        self.closed = False

    def fileno(self) -> int:
        return self._ours.fileno()

    def bind(self, addr: tuple[str, int]) -> None:
        self.bound = addr

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        for reply in self.answers(data):
            self._theirs.send(reply)
        return len(data)

    def recv(self, n: int) -> bytes:
        return self._ours.recv(n)

    def close(self) -> None:
        self.closed = True
        self._ours.close()
        self._theirs.close()


LINK = Link(2, "dsr0", ARPHRD_ETHER, 0x1043, OUR_MAC)
ON_LINK = Route(RTN_UNICAST, 2, None, pton("198.18.1.1"))
RS1, RS2 = pton("198.18.1.11"), pton("198.18.1.12")


def arp_reply(ip: str, mac: str) -> bytes:
    return bytes(Ether(dst="02:d5:00:00:00:01", src=mac)
                 / ARP(op="is-at", hwsrc=mac, psrc=ip, hwdst="02:d5:00:00:00:01",
                       pdst="198.18.1.1"))


def resolver(routes: dict[bytes, Route | int], neigh: dict[bytes, Neighbour] | None = None,
             answers: Any = lambda data: [], **kw: Any) -> tuple[L2Resolver, list[Any]]:
    nl = FakeNetlink(routes, neigh or {}, {2: LINK})
    made: list[Any] = [nl]

    def factory(*args: Any) -> FakePacketSocket:
        made.append(FakePacketSocket(answers))
        return made[-1]

    kw.setdefault("interval", 0.05)
    return L2Resolver(netlink_factory=lambda: nl, socket_factory=factory, **kw), made


def test_path_from_the_neighbour_table() -> None:
    res, made = resolver({RS1: ON_LINK}, {RS1: Neighbour(2, NUD_STALE, RS_MAC)}, mark=7)
    path = res.path(RS1)
    assert path == L2Path(RS1, 2, "dsr0", pton("198.18.1.1"), OUR_MAC, RS_MAC)
    assert path.header() == RS_MAC + OUR_MAC + b"\x08\x00"
    assert str(path) == "198.18.1.11 at 02:d5:00:00:00:11 on dsr0"
    assert made[0].marks == [7]  # policy routing by mark is honoured
    assert len(made) == 1  # no packet socket: nothing was sent
    assert res.path(RS1) is path  # cached


def test_path_resolved_by_arp_ignores_other_answers() -> None:
    def link(data: bytes) -> list[bytes]:
        return [arp_reply("198.18.1.99", "02:d5:00:00:00:99"),  # someone else
                b"\x00" * 10,  # garbage
                arp_reply("198.18.1.12", "02:d5:00:00:00:12")]

    res, made = resolver({RS2: ON_LINK}, {RS2: Neighbour(2, NUD_FAILED, None)}, answers=link)
    assert res.path(RS2).dst_mac == parse_mac("02:d5:00:00:00:12")
    sock = made[1]
    assert sock.bound == ("dsr0", 0x0806) and sock.closed
    assert len(sock.sent) == 1
    assert ARP(sock.sent[0][14:]).pdst == "198.18.1.12"
    assert ARP(sock.sent[0][14:]).psrc == "198.18.1.1"  # our address on that link


def test_path_resolved_by_neighbour_discovery() -> None:
    rs = pton("fd00:d5::12")
    route = Route(RTN_UNICAST, 2, None, pton("fd00:d5::1"))
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6

    na = bytes(Ether(dst="02:d5:00:00:00:01", src="02:d5:00:00:00:12")
               / IPv6(src="fd00:d5::12", dst="fd00:d5::1", hlim=255)
               / ICMPv6ND_NA(tgt="fd00:d5::12", S=1)
               / ICMPv6NDOptDstLLAddr(lladdr="02:d5:00:00:00:12"))
    res, made = resolver({rs: route}, answers=lambda data: [na])
    assert res.path(rs).dst_mac == parse_mac("02:d5:00:00:00:12")
    assert made[1].bound == ("dsr0", 0x86DD)
    assert made[1].sent == [neighbor_solicitation(OUR_MAC, pton("fd00:d5::1"), rs)]


def test_unresolved_is_bounded_and_cached_briefly() -> None:
    now = [100.0]
    res, made = resolver({RS2: ON_LINK}, attempts=3, negative_ttl=1.0)
    with pytest.raises(NeighbourUnresolved) as info:
        res.path(RS2)
    assert "198.18.1.12 did not answer ARP on dsr0" in str(info.value)
    assert len(made[1].sent) == 3  # three requests, then it gives up
    assert made[1].closed
    # Within the negative TTL the failure is answered from the cache, without asking again.
    res._clock = lambda: now[0]
    res.forget()
    with pytest.raises(NeighbourUnresolved):
        res.path(RS2)
    count = len(made)
    with pytest.raises(NeighbourUnresolved):
        res.path(RS2)
    assert len(made) == count
    now[0] += 1.5
    with pytest.raises(NeighbourUnresolved):
        res.path(RS2)
    assert len(made) == count + 1


@pytest.mark.parametrize(("route", "words"), [
    (errno.ENETUNREACH, "no route to it (ENETUNREACH)"),
    (Route(RTN_LOCAL, 1, None, RS1), "is an address of this host"),
    (Route(3, 2, None, RS1), "of type broadcast"),
    (Route(7, None, None, None), "of type unreachable"),
    (Route(RTN_UNICAST, 2, pton("198.18.1.254"), pton("198.18.1.1")),
     "is not on a directly connected network (the route goes via 198.18.1.254 on dsr0)"),
    (Route(RTN_UNICAST, 5, None, pton("198.18.1.1")), "names no interface"),
])
def test_refused_paths(route: Route | int, words: str) -> None:
    res, _ = resolver({RS1: route})
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        res.path(RS1)


def test_refused_links() -> None:
    for link, words in ((LINK._replace(hatype=65534), "not an Ethernet interface"),
                        (LINK._replace(flags=0), "is down")):
        nl = FakeNetlink({RS1: ON_LINK}, {}, {2: link})
        with pytest.raises(UsageError, match=words):
            L2Resolver(netlink_factory=lambda nl=nl: nl).path(RS1)


def test_source_option() -> None:
    res, _ = resolver({RS1: ON_LINK}, {RS1: Neighbour(2, NUD_REACHABLE, RS_MAC)},
                      source="198.18.1.5")
    assert res.path(RS1).source == pton("198.18.1.5")
    res, _ = resolver({RS1: ON_LINK}, source="fd00::1")
    with pytest.raises(UsageError, match="different IP versions"):
        res.path(RS1)


def test_frame_sender_binds_once_and_reports_errors() -> None:
    class Sock:
        def __init__(self, *args: Any) -> None:
            self.args, self.sent, self.bound, self.closed = args, [], None, False

        def bind(self, addr: Any) -> None:
            self.bound = addr

        def send(self, data: bytes) -> int:
            if data == b"bad":
                raise OSError(errno.EMSGSIZE, "too long")
            self.sent.append(data)
            return len(data)

        def close(self) -> None:
            self.closed = True

    made: list[Sock] = []
    sender = FrameSender(lambda *a: made.append(Sock(*a)) or made[-1])
    assert sender.send("dsr0", [b"a", b"bad", b"c"]) == [(1, errno.EMSGSIZE)]
    assert sender.send("dsr0", [b"d"]) == []
    assert len(made) == 1 and made[0].bound == ("dsr0", 0) and made[0].sent == [b"a", b"c", b"d"]
    assert made[0].args[0] == socket.AF_PACKET and made[0].args[2] == 0  # receives nothing
    sender.close()
    assert made[0].closed
