"""The raw engine checking a VIP through named real servers, without root: a fake link where
each real server answers by the MAC (or tunnel) a SYN reached it through, as the DSR lab does."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_packet_io import FakePacketIO
from scapy.layers.inet import IP, TCP

from synprobe.cli import main
from synprobe.engines.base import ProbeOptions
from synprobe.engines.raw.engine import STATS, RawEngine
from synprobe.engines.raw.options import RawOptions
from synprobe.errors import UsageError
from synprobe.kernel.neighbours import L2Path, NeighbourUnresolved
from synprobe.model import ProbeResult, State, Target
from synprobe.sources import IterSource
from synprobe.wire.ether import format_mac, parse_mac, split_frame
from synprobe.wire.tunnel import decapsulate

VIP, OURS = "127.0.0.2", "127.0.0.1"  # the source comes from the path (l2) or a route (ipip)
RS1, RS2, SILENT, ROUTED = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"
MACS = {RS1: "02:d5:00:00:00:11", RS2: "02:d5:00:00:00:12"}
OUR_MAC = "02:d5:00:00:00:01"
OPEN = {RS1}  # real servers whose port 80 is open


def pton(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


class FakeResolver:
    """L2Resolver's answers for the fake link."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    def path(self, via: bytes, ask: bool = True) -> L2Path:
        text = socket.inet_ntop(socket.AF_INET, via)
        self.asked.append((text, ask))
        if text == ROUTED:  # the route is looked at first, as L2Resolver does
            raise UsageError(f"real server {text} is not on a directly connected network")
        if text == SILENT or (text not in MACS and not ask):
            raise NeighbourUnresolved(text, "dsr0", "ARP", asked=ask)
        return L2Path(via, 2, "dsr0", pton(OURS), parse_mac(OUR_MAC), parse_mac(MACS[text]))


class FakeLink(FakePacketIO):
    """PacketIO and the packet sockets at once: real servers answer SYNs to the VIP from the
    VIP, choosing by destination MAC (frames) or by tunnel endpoint (IP-in-IP)."""

    def __init__(self, answer_mac: Callable[[str], str] = lambda rs: MACS[rs]) -> None:
        super().__init__()
        self.answer_mac = answer_mac
        self.frames: list[tuple[str, bytes]] = []  # (interface, frame)
        self.ip: list[tuple[bytes, bytes]] = []  # (packet, destination) via the raw sockets
        self.resets: list[tuple[str, int, int]] = []  # (real server, sport, seq) of RSTs
        self.plain_receives = self.mac_receives = 0

    # -- PacketIO ---------------------------------------------------------------------------
    def send(self, v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        for packet, dst in batch:
            self.ip.append((packet, dst))
            inner = decapsulate(packet)
            if inner is not None:
                assert inner.dst == dst  # sent to the tunnel's far end
                self.arrive(socket.inet_ntop(socket.AF_INET, inner.dst), inner.inner)
        return []

    def receive(self, limit: int) -> list[bytes]:
        self.plain_receives += 1
        return super().receive(limit)

    def receive_from(self, limit: int) -> list[tuple[bytes, bytes]]:
        self.mac_receives += 1
        return super().receive_from(limit)

    def close(self) -> None:
        pass  # one link serves several engines' runs in a test; the fixture shuts it

    # -- packet sockets -----------------------------------------------------------------------
    def socket(self, family: int, *args: Any) -> Any:
        if family != socket.AF_PACKET:
            return socket.socket(family, *args)  # route lookups stay real (loopback)
        link = self

        class PacketSocket:
            def bind(self, addr: tuple[str, int]) -> None:
                self.ifname = addr[0]

            def send(self, data: bytes) -> int:
                link.frames.append((self.ifname, data))
                f = split_frame(data)
                assert f is not None and format_mac(f.src) == OUR_MAC
                rs = next(ip for ip, mac in MACS.items() if parse_mac(mac) == f.dst)
                link.arrive(rs, f.payload)
                return len(data)

            def close(self) -> None:
                pass

        return PacketSocket()

    # -- the real servers ---------------------------------------------------------------------
    def arrive(self, rs: str, packet: bytes) -> None:
        ip = IP(packet)
        assert ip.dst == VIP  # whatever the way, the packet inside is to the VIP
        tcp = ip[TCP]
        if tcp.flags == "R":
            self.resets.append((rs, tcp.sport, tcp.seq))
            return
        flags = "SA" if rs in OPEN else "RA"
        answer = IP(src=VIP, dst=ip.src) / TCP(sport=80, dport=tcp.sport, flags=flags, seq=7,
                                               ack=tcp.seq + 1)
        self.deliver([bytes(answer)], parse_mac(self.answer_mac(rs)))


@pytest.fixture
def link() -> Iterator[FakeLink]:
    fake = FakeLink()
    yield fake
    fake.shut()


def engine(link: FakeLink, **extra: object) -> RawEngine:
    return RawEngine(ProbeOptions(timeout=0.05, retries=0,
                                  engine_options=RawOptions.from_keywords(dict(extra))),
                     io_factory=link,
                     socket_factory=link.socket, ephemeral_ports=lambda: (32768, 60999),
                     resolver=FakeResolver())  # type: ignore[arg-type]


def run(eng: RawEngine, targets: list[Target]) -> list[ProbeResult]:
    return [r for batch in eng.run(IterSource(targets)) for r in batch]


def states(results: list[ProbeResult]) -> dict[tuple[str, str | None], tuple[str, str]]:
    return {(r.host, r.via): (r.state.value, r.reason) for r in results}


def test_l2_one_result_per_real_server(link: FakeLink) -> None:
    eng = engine(link)
    results = run(eng, [Target(VIP, 80, RS1), Target(VIP, 80, RS2)])
    assert states(results) == {(VIP, RS1): ("open", "syn-ack"), (VIP, RS2): ("closed", "rst")}
    assert {r.source for r in results} == {OURS}
    # Two SYN frames (one per MAC) and one RST frame, to rs1 only; nothing on the IP sockets.
    assert [(i, format_mac(split_frame(f).dst)) for i, f in link.frames] == [  # type: ignore[union-attr]
        ("dsr0", MACS[RS1]), ("dsr0", MACS[RS2]), ("dsr0", MACS[RS1])]
    assert link.ip == []
    syn1 = IP(split_frame(link.frames[0][1]).payload)[TCP]  # type: ignore[union-attr]
    assert link.resets == [(RS1, syn1.sport, syn1.seq + 1)]  # seq = the SYN-ACK's ack
    # The two checks of one VIP leave from different ports, with different sequence numbers.
    syn2 = IP(split_frame(link.frames[1][1]).payload)[TCP]  # type: ignore[union-attr]
    assert (syn1.sport, syn1.seq) != (syn2.sport, syn2.seq)
    stats = eng.stats()
    assert (stats["sent"], stats["replies"], stats["self_rsts"], stats["invalid"]) == (2, 2, 1, 0)
    assert stats["via_mac_mismatch"] == 0


def test_ipip_tunnels_syn_and_rst(link: FakeLink) -> None:
    eng = engine(link, via_mode="ipip")
    results = run(eng, [Target(VIP, 80, RS1), Target(VIP, 80, RS2)])
    assert states(results) == {(VIP, RS1): ("open", "syn-ack"), (VIP, RS2): ("closed", "rst")}
    assert link.frames == []
    assert [socket.inet_ntop(socket.AF_INET, d) for _, d in link.ip] == [RS1, RS2, RS1]
    assert all(p[9] == 4 for p, _ in link.ip)  # IP-in-IP
    assert [rs for rs, _, _ in link.resets] == [RS1]


def test_silent_and_refused_real_servers(link: FakeLink) -> None:
    eng = engine(link)
    results = run(eng, [Target(VIP, 80, SILENT), Target(VIP, 80, RS1)])
    assert states(results) == {(VIP, SILENT): ("unreachable", "arp-timeout"),
                               (VIP, RS1): ("open", "syn-ack")}
    # A real server that cannot work is that check's error, not the end of the run (a
    # long-lived Prober must survive it); preflight() says why, before a CLI run starts.
    results = run(engine(link), [Target(VIP, 80, ROUTED), Target("::1", 80, RS1),
                                 Target(VIP, 80, RS1)])
    assert states(results) == {(VIP, ROUTED): ("error", "via-unusable"),
                               ("::1", RS1): ("error", "via-unusable"),
                               (VIP, RS1): ("open", "syn-ack")}
    with pytest.raises(UsageError, match="not on a directly connected network"):
        engine(link).preflight([ROUTED], [False])
    with pytest.raises(UsageError, match="cannot serve an IPv6 VIP"):
        engine(link).preflight([RS1], [False, True])


def test_answer_from_another_mac_is_counted_not_refused() -> None:
    link = FakeLink(answer_mac=lambda rs: "02:d5:00:00:00:fe")  # a router's, say
    try:
        eng = engine(link)
        assert states(run(eng, [Target(VIP, 80, RS1)])) == {(VIP, RS1): ("open", "syn-ack")}
        assert eng.stats()["via_mac_mismatch"] == 1
    finally:
        link.shut()


def test_same_target_plain_and_through_real_servers(link: FakeLink) -> None:
    """A plain check of the VIP (routed by the kernel; here the fake answers it as rs1 would
    if it were plain) and one through rs2 are separate probes with separate answers."""
    original = link.send

    def send(v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        for packet, dst in batch:
            if decapsulate(packet) is None and packet[9] == 6:
                link.arrive(RS1, packet)  # a plain SYN: the route picks rs1
                link.ip.append((packet, dst))
            else:
                original(v6, [(packet, dst)])
        return []

    link.send = send  # type: ignore[method-assign]
    eng = engine(link)
    results = run(eng, [Target(VIP, 80), Target(VIP, 80, RS2), Target(VIP, 80, RS1)])
    assert states(results) == {(VIP, None): ("open", "syn-ack"), (VIP, RS2): ("closed", "rst"),
                               (VIP, RS1): ("open", "syn-ack")}


def test_twins_through_one_real_server_share_a_probe(link: FakeLink) -> None:
    results = run(engine(link), [Target(VIP, 80, RS1), Target(VIP, 80, RS1)])
    assert [(r.via, r.state.value) for r in results] == [(RS1, "open"), (RS1, "open")]
    assert len(link.frames) == 2  # one SYN, one RST


def test_stats_keep_their_shape_without_via(link: FakeLink) -> None:
    eng = engine(link)
    assert set(eng.stats()) == set(STATS)
    run(eng, [Target(VIP, 80, RS1)])
    assert set(eng.stats()) == {*STATS, "via_mac_mismatch"}


def test_dry_run_describes_the_frame_or_tunnel_and_asks_nobody(link: FakeLink) -> None:
    eng = engine(link)
    line = eng.describe(Target(VIP, 80, RS1))
    assert line.startswith(f"IP {OURS}.") and f"> {VIP}.80: Flags [S]" in line
    assert line.endswith(f", in a frame to {RS1} ({MACS[RS1]}) on dsr0")
    assert eng.describe(Target(VIP, 80, "127.0.0.99")) == (
        f"{VIP}:80 via 127.0.0.99: real server 127.0.0.99 has no neighbour entry on dsr0; "
        "a run would ask by ARP")
    assert eng._via._resolver.asked == [(RS1, False), ("127.0.0.99", False)]  # type: ignore[attr-defined]
    tunnel = engine(link, via_mode="ipip").describe(Target(VIP, 80, RS2))
    assert tunnel.endswith(f", in IP-in-IP from 127.0.0.1 to {RS2}")
    assert link.frames == link.ip == []


def test_via_mode_option_and_flag() -> None:
    with pytest.raises(UsageError, match="via_mode must be 'l2' or 'ipip'"):
        RawOptions(via_mode="gre")
    for argv, words in ((["--engine", "raw", "--via-mode", "ipip"], "give --via"),
                        (["--via-mode", "l2", "--via", RS1], "raw engine only")):
        err = io.StringIO()
        assert main([*argv, f"{VIP}:80"], stdout=io.StringIO(), stderr=err) == 2
        assert words in err.getvalue(), err.getvalue()


def test_via_mode_flag_choices() -> None:
    argv = ["--engine", "raw", "--via-mode", "gre", "--via", RS1, f"{VIP}:80"]
    err = io.StringIO()
    assert main(argv, stdout=io.StringIO(), stderr=err) == 2
    assert "invalid choice: 'gre'" in err.getvalue()  # argparse's own message


def test_plain_runs_never_ask_for_link_addresses(link: FakeLink) -> None:
    """Without vias the receive path is the old one: no recvfrom, no salts."""

    def send(v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        for packet, _ in batch:
            link.arrive(RS2, packet)  # the kernel's route picks rs2
        return []

    link.send = send  # type: ignore[method-assign]
    results = run(engine(link), [Target(VIP, 80)])
    assert [(r.via, r.state) for r in results] == [(None, State.CLOSED)]
    assert link.plain_receives >= 1 and link.mac_receives == 0


def test_dry_run_json_names_the_path_and_asks_nobody(link: FakeLink) -> None:
    eng = engine(link)
    row = json.loads(eng.describe(Target(VIP, 80, RS1), as_json=True))
    assert (row["host"], row["port"], row["via"], row["source"]) == (VIP, 80, RS1, OURS)
    assert row["packet"]["dst"] == VIP and row["packet"]["flags"] == "S"
    assert row["path"] == f"in a frame to {RS1} ({MACS[RS1]}) on dsr0" and row["error"] is None
    unknown = json.loads(eng.describe(Target(VIP, 80, "127.0.0.99"), as_json=True))
    assert unknown["packet"] is None and unknown["path"].endswith("a run would ask by ARP")
    assert link.frames == link.ip == []
