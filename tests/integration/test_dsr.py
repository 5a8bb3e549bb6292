"""DSR: checking a VIP through each real server, on a bridge with two real servers that both hold
the VIP on lo (see synprobe_lab.dsr for the layout and its choices).

First the lab itself: a SYN to the VIP answers according to the MAC (or tunnel) it was sent to.
Then the pieces the engines use (L2 path resolution), and the shaker's way: SO_MARK plus policy
routing. Every test checks the wire (which MAC each frame went to) and the real servers (no
accept, no half-open connection left) as well as the verdict.
"""

from __future__ import annotations

import io
import json
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import synprobe
from synprobe.cli import main
from synprobe.errors import UsageError
from synprobe.kernel.neighbours import L2Resolver, NeighbourUnresolved
from synprobe.wire.cookie import CookieKey
from synprobe.wire.ether import arp_request, frame, parse_mac
from synprobe.wire.replies import Reply, match_reply
from synprobe.wire.syn import rst_template, syn_template
from synprobe.wire.tunnel import encapsulate
from synprobe_lab.dsr import DsrLab, dsr_down_all
from synprobe_lab.frames import Frame

pytestmark = pytest.mark.netns

RS = ("rs1", "rs2")
KEY = CookieKey()
KEY.issue(bytes(4), bytes(4), 0)  # serial 0 is issued: the SYNs below are derive()d as it


def pton(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def tcp_frames(frames: list[Frame], direction: str, flags: str | None = None) -> list[Frame]:
    return [f for f in frames if f.direction == direction and f.tcp is not None
            and (flags is None or f.tcp.flags == flags)]


def assert_no_ack(frames: list[Frame]) -> None:
    """The handshake's third segment never left: what makes a server's accept() return."""
    bad = [str(f) for f in tcp_frames(frames, "out") if f.tcp and f.tcp.flags == "A"]
    assert not bad, bad


def handcrafted_syns(lab: DsrLab, v6: bool = False) -> dict[str, tuple[bytes, int, int]]:
    """Per real server: (SYN to the VIP, its source port, its seq), salted with the RS."""
    local, vip = (lab.prober_ip6, lab.vip6) if v6 else (lab.prober_ip, lab.vip)
    tmpl = syn_template(local)
    out = {}
    for rs in RS:
        seq, sport = KEY.derive(pton(local), pton(vip), 80, pton(lab.rs_ip(rs, v6)))
        out[rs] = (tmpl.build(pton(vip), sport, 80, seq), sport, seq)
    return out


def send_frames(lab: DsrLab, frames: list[bytes]) -> None:
    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
            sock.bind((lab.prober_if, 0))
            for data in frames:
                sock.send(data)

    lab.run_in("prober", send)


def send_raw(lab: DsrLab, packets: list[tuple[bytes, str]]) -> None:
    def send() -> None:
        family = socket.AF_INET6 if ":" in packets[0][1] else socket.AF_INET
        with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
            for data, dst in packets:
                sock.sendto(data, (dst, 0))

    lab.run_in("prober", send)


def salts_of(lab: DsrLab, v6: bool = False) -> Callable[[bytes, int, int], list[bytes]]:
    return lambda remote, rport, lport: [pton(lab.rs_ip(rs, v6)) for rs in RS]


# -- the lab -------------------------------------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_lab_answers_by_mac(dsr_lab: DsrLab, v6: bool) -> None:
    """The same SYN to the VIP: SYN-ACK in a frame to rs1's MAC, RST to rs2's. The reply says
    which real server sent it only through the cookie it acknowledges."""
    lab = dsr_lab
    syns = handcrafted_syns(lab, v6)
    ours = parse_mac(lab.prober_mac)
    with lab.frames() as cap, lab.frames("rs1") as cap1, lab.frames("rs2") as cap2:
        send_frames(lab, [frame(parse_mac(lab.rs_mac(rs)), ours, syns[rs][0]) for rs in RS])
        seen = cap.wait_until(lambda fs: len(tcp_frames(fs, "in")) >= 2)
    answers = {f.tcp.dport: f for f in tcp_frames(seen, "in") if f.tcp}
    vip = lab.vip6 if v6 else lab.vip
    for rs, flags in (("rs1", "SA"), ("rs2", "RA")):
        f = answers[syns[rs][1]]
        assert f.tcp is not None and (f.tcp.src, f.tcp.sport, f.tcp.flags) == (vip, 80, flags)
        assert f.src_mac == lab.rs_mac(rs)  # the cross-check the engine may make
        reply = match_reply(f.tcp.raw, KEY, salts_of(lab, v6))
        assert isinstance(reply, Reply) and reply.salt == pton(lab.rs_ip(rs, v6))
    # Each real server got exactly its own SYN (a flooded frame to the other MAC does not count).
    for rs, c in (("rs1", cap1), ("rs2", cap2)):
        mine = [f for f in tcp_frames(c.frames(), "in", "S") if f.dst_mac == lab.rs_mac(rs)]
        assert [f.tcp.sport for f in mine if f.tcp] == [syns[rs][1]]
    assert cap.dropped == cap1.dropped == cap2.dropped == 0
    assert_no_ack(seen)
    # Strict rp_filter and no route to the VIP: the prober's kernel drops the answers (no RST
    # from it), so rs1 keeps the half-open connection until someone resets it.
    assert not tcp_frames(seen, "out", "R") and not tcp_frames(seen, "out", "RA")
    if not v6:
        assert lab.count_states("rs1", "syn-recv", 80) == 1
    assert lab.accept_count("rs1") == 0


def test_lab_nobody_answers_arp_for_the_vip(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    ask = arp_request(parse_mac(lab.prober_mac), pton(lab.prober_ip), pton(lab.vip))
    ask_rs = arp_request(parse_mac(lab.prober_mac), pton(lab.prober_ip), pton(lab.rs_ip("rs2")))
    with lab.frames() as cap:
        send_frames(lab, [ask, ask_rs])
        # rs2 answers for its own address (this bounds the wait for the VIP's answer too: both
        # requests left together, and a real server answers in microseconds on veth).
        seen = cap.wait_until(lambda fs: any(f.direction == "in" and f.ethertype == 0x0806
                                             for f in fs))
        time.sleep(0.05)  # a margin for a (wrong) late VIP answer to show up
        seen = cap.frames()
    replies = [f for f in seen if f.direction == "in" and f.ethertype == 0x0806]
    assert [f.src_mac for f in replies] == [lab.rs_mac("rs2")]


def test_lab_tunnel_mode(dsr_lab: DsrLab) -> None:
    """IP-in-IP to each real server: answered from the VIP, directly, not through the tunnel."""
    lab = dsr_lab
    syns = handcrafted_syns(lab)
    ours = pton(lab.prober_ip)
    with lab.frames() as cap:
        send_raw(lab, [(encapsulate(syns[rs][0], ours, pton(lab.rs_ip(rs))), lab.rs_ip(rs))
                       for rs in RS])
        seen = cap.wait_until(lambda fs: len(tcp_frames(fs, "in")) >= 2)
    out = [f for f in seen if f.direction == "out" and f.tunnelled]
    assert {(f.packet.dst, f.dst_mac) for f in out if f.packet} == {
        (lab.rs_ip(rs), lab.rs_mac(rs)) for rs in RS}
    answers = {f.tcp.dport: f for f in tcp_frames(seen, "in") if f.tcp}
    assert answers[syns["rs1"][1]].tcp.flags == "SA"  # type: ignore[union-attr]
    assert answers[syns["rs2"][1]].tcp.flags == "RA"  # type: ignore[union-attr]
    assert not any(f.tunnelled for f in answers.values())
    assert lab.tunnel_count("rs1") == lab.tunnel_count("rs2") == 1
    # An RST through the same tunnel clears rs1's half-open connection.
    reply = match_reply(answers[syns["rs1"][1]].tcp.raw, KEY, salts_of(lab))  # type: ignore[union-attr]
    assert isinstance(reply, Reply) and reply.ack is not None
    rst = rst_template(lab.prober_ip).build(pton(lab.vip), reply.sport, 80, reply.ack)
    assert lab.count_states("rs1", "syn-recv", 80) == 1
    send_raw(lab, [(encapsulate(rst, ours, pton(lab.rs_ip("rs1"))), lab.rs_ip("rs1"))])
    lab.wait_for(lambda: lab.count_states("rs1", "syn-recv", 80) == 0, what="rs1 reset")
    assert lab.accept_count("rs1") == 0


def test_lab_listener_stops_and_teardown_leaves_nothing() -> None:
    from synprobe_lab import list_netns

    with DsrLab() as lab:
        names = set(lab.names.values())
        assert names <= set(list_netns())
        assert not names & set(dsr_down_all())  # a live creator's lab is left alone
        lab.stop_listener("rs1")
        syns = handcrafted_syns(lab)
        with lab.frames() as cap:
            send_frames(lab, [frame(parse_mac(lab.rs_mac("rs1")), parse_mac(lab.prober_mac),
                                    syns["rs1"][0])])
            seen = cap.wait_until(lambda fs: bool(tcp_frames(fs, "in")))
        assert [f.tcp.flags for f in tcp_frames(seen, "in") if f.tcp] == ["RA"]
    assert not names & set(list_netns())


# -- L2 paths ------------------------------------------------------------------------------------

def test_l2_paths_from_the_neighbour_table_and_by_asking(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    lab.forget_neigh(lab.rs_ip("rs2"))
    lab.forget_neigh(lab.rs_ip("rs2", True))
    lab.ip("prober", "route add 198.18.7.0/24 via 198.18.1.11")

    def resolve() -> dict[str, object]:
        res = L2Resolver(interval=0.2, attempts=2)
        out: dict[str, object] = {}
        for addr in (lab.rs_ip("rs1"), lab.rs_ip("rs2"), lab.rs_ip("rs2", True), "198.18.1.13",
                     "198.18.7.5", lab.prober_ip, lab.vip):
            started = time.monotonic()
            try:
                out[addr] = res.path(pton(addr))
            except (UsageError, NeighbourUnresolved) as exc:
                out[addr] = exc
            out[addr + " s"] = time.monotonic() - started
        return out

    with lab.frames() as cap:
        got = lab.run_in("prober", resolve)
    for rs, v6 in (("rs1", False), ("rs2", False), ("rs2", True)):
        path = got[lab.rs_ip(rs, v6)]
        assert str(path) == f"{lab.rs_ip(rs, v6)} at {lab.rs_mac(rs)} on {lab.prober_if}"
    assert got[lab.rs_ip("rs1") + " s"] < 0.05  # static entry: nothing asked
    assert isinstance(got["198.18.1.13"], NeighbourUnresolved)
    assert 0.35 < got["198.18.1.13 s"] < 1.0  # type: ignore[operator]  # 2 x 0.2 s, bounded
    assert "not on a directly connected network" in str(got["198.18.7.5"])
    assert "an address of this host" in str(got[lab.prober_ip])
    assert "no route to it" in str(got[lab.vip])
    # On the wire: our own ARP (one for rs2, two for the silent .13) and one NS; nothing to
    # anyone else, and the kernel's neighbour table was left alone.
    arps = [f for f in cap.frames() if f.direction == "out" and f.ethertype == 0x0806]
    assert len(arps) == 3 and all(f.dst_mac == "ff:ff:ff:ff:ff:ff" for f in arps)
    assert lab.neigh_state(lab.rs_ip("rs2")) == ""


# -- the shaker engine: SO_MARK and policy routing ------------------------------------------------

MARKS = {"rs1": 1, "rs2": 2}


def policy_routes(lab: DsrLab) -> None:
    """The README recipe: one routing table per real server, chosen by the socket's mark."""
    lab.ip("prober", "\n".join(
        f"rule add fwmark {mark} table {100 + mark}\n"
        f"route add {lab.vip}/32 via {lab.rs_ip(rs)} dev {lab.prober_if} table {100 + mark}"
        for rs, mark in MARKS.items()))


RP_FILTER = {
    # strict, no main-table route to the VIP: the reverse-path check drops the answer.
    "strict": ({}, ""),
    # loose: any route to the VIP passes, a default route included.
    "loose": ({"net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.dsr0.rp_filter": "2"},
              "route add default via 198.18.1.254"),
    "off": ({"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.dsr0.rp_filter": "0"}, ""),
}


@pytest.mark.parametrize("rp", ["loose", "off", "strict"])
def test_shaker_marks_steer_checks_to_each_real_server(dsr_lab: DsrLab, rp: str) -> None:
    lab = dsr_lab
    policy_routes(lab)
    sysctls, route = RP_FILTER[rp]
    if sysctls:
        lab.sysctls("prober", sysctls)
    if route:
        lab.ip("prober", route)

    def check() -> dict[str, synprobe.ProbeResult]:
        return {rs: synprobe.probe(f"{lab.vip}:80", engine="shaker", mark=mark, timeout=0.3,
                                   retries=0) for rs, mark in MARKS.items()}

    before = lab.nstat("prober")["TcpExtIPReversePathFilter"]
    with lab.frames() as cap:
        results = lab.run_in("prober", check)
    frames = cap.frames()
    syns = tcp_frames(frames, "out", "S")
    assert [f.dst_mac for f in syns] == [lab.rs_mac("rs1"), lab.rs_mac("rs2")]
    assert_no_ack(frames)
    assert lab.accept_count("rs1") == 0
    if rp == "strict":
        # Both answers arrived and were dropped in IP input: the pitfall the README warns of.
        # The socket closed in SYN_SENT, which sends nothing, so rs1 stays half-open.
        assert [r.state.value for r in results.values()] == ["filtered", "filtered"]
        assert lab.nstat("prober")["TcpExtIPReversePathFilter"] - before == 2
        assert lab.count_states("rs1", "syn-recv", 80) == 1
        return
    lab.wait_for(lambda: lab.count_states("rs1", "syn-recv", 80) == 0, what="rs1 reset")
    assert (results["rs1"].state.value, results["rs1"].reason) == ("open", "syn-ack")
    assert (results["rs2"].state.value, results["rs2"].reason) == ("closed", "rst")
    # The kernel's reset on close follows the socket's route, i.e. its mark: to rs1's MAC.
    resets = [f for f in tcp_frames(frames, "out") if f.tcp and "R" in f.tcp.flags]
    assert [f.dst_mac for f in resets] == [lab.rs_mac("rs1")]


def test_shaker_cli_with_marks_and_without_via(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    policy_routes(lab)
    lab.sysctls("prober", RP_FILTER["off"][0])

    def cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    one = lab.run_in("prober", cli, "--mark", "1", "--json", "-q", f"{lab.vip}:80")
    two = lab.run_in("prober", cli, "--mark", "2", "--json", "-q", f"{lab.vip}:80")
    assert one[0] == 0 and json.loads(one[1])["state"] == "open"
    assert two[0] == 1 and json.loads(two[1])["state"] == "closed"
    # --via is the raw engine's: the shaker cannot pick the real server by itself (the route is
    # the kernel's choice), and says what to use instead.
    code, _, err = lab.run_in("prober", cli, "--via", lab.rs_ip("rs1"), f"{lab.vip}:80")
    assert code == 2 and "socket mark with policy routing" in err and "--" not in err
    assert lab.accept_count("rs1") == 0


# -- the raw engine through each real server ----------------------------------------------------

def raw_cli(lab: DsrLab, *args: str, timeout: float = 30.0) -> tuple[int, list[dict[str, object]],
                                                                       dict[str, object], str]:
    """Run `synprobe --engine raw --json ARGS` in the prober namespace (a real process)."""
    argv = [sys.executable, "-m", "synprobe", "--engine", "raw", "--json", *args]
    proc: subprocess.CompletedProcess[str] = lab.exec("prober", argv, check=False,
                                                      timeout=timeout)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    summaries = [json.loads(line)["summary"] for line in proc.stderr.splitlines()
                 if line.startswith('{"summary"')]
    return proc.returncode, rows, summaries[0] if summaries else {}, proc.stderr


def by_via(rows: list[dict[str, object]]) -> dict[object, tuple[object, object]]:
    return {r["via"]: (r["state"], r["reason"]) for r in rows}


def vias(lab: DsrLab, v6: bool = False) -> list[str]:
    return [arg for rs in RS for arg in ("--via", lab.rs_ip(rs, v6))]


def assert_wire(lab: DsrLab, frames: list[Frame], mode: str, v6: bool = False) -> None:
    """Each SYN went to its real server (by MAC, or by tunnel), the one RST to rs1 the same
    way, no ACK left, and nothing went to the VIP any other way."""
    vip = lab.vip6 if v6 else lab.vip
    out = tcp_frames(frames, "out")
    for f in out:
        assert f.tcp is not None and f.tcp.dst == vip
        rs = next(r for r in RS if f.dst_mac == lab.rs_mac(r))
        assert f.tunnelled == (mode == "ipip")
        if mode == "ipip":
            assert f.packet is not None and f.packet.dst == lab.rs_ip(rs, v6)
    syns = {next(r for r in RS if f.dst_mac == lab.rs_mac(r)) for f in out
            if f.tcp and f.tcp.flags == "S"}
    assert syns == set(RS)
    resets = [f for f in out if f.tcp and f.tcp.flags == "R"]
    assert [f.dst_mac for f in resets] == [lab.rs_mac("rs1")]
    assert_no_ack(frames)


@pytest.mark.parametrize("mode", ["l2", "ipip"])
def test_raw_via_cli(dsr_lab: DsrLab, mode: str) -> None:
    lab = dsr_lab
    with lab.frames() as cap:
        code, rows, summary, err = raw_cli(lab, "--via-mode", mode, *vias(lab), f"{lab.vip}:80")
        frames = cap.wait_until(lambda fs: bool(tcp_frames(fs, "out", "R")))
    assert code == 1, err  # not every check is open
    assert by_via(rows) == {lab.rs_ip("rs1"): ("open", "syn-ack"),
                            lab.rs_ip("rs2"): ("closed", "rst")}
    assert {(r["host"], r["port"], r["source"]) for r in rows} == {(lab.vip, 80, lab.prober_ip)}
    stats = summary["stats"]
    assert isinstance(stats, dict)
    assert (stats["sent"], stats["replies"], stats["self_rsts"], stats["invalid"]) == (2, 2, 1, 0)
    assert stats["via_mac_mismatch"] == 0
    assert_wire(lab, frames, mode)
    if mode == "ipip":
        assert lab.tunnel_count("rs1") == 2 and lab.tunnel_count("rs2") == 1  # SYN + RST; SYN
    lab.wait_for(lambda: lab.count_states("rs1", "syn-recv", 80) == 0, what="rs1 reset")
    assert lab.accept_count("rs1") == 0


@pytest.mark.parametrize("mode", ["l2", "ipip"])
def test_raw_via_library_follows_the_listener(dsr_lab: DsrLab, mode: str) -> None:
    """Stopping rs1's listener flips the check through rs1 to closed; rs2's is unaffected."""
    lab = dsr_lab
    rs_ips = [lab.rs_ip(rs) for rs in RS]

    def check() -> dict[str | None, str]:
        with synprobe.probe_many([f"{lab.vip}:80"], engine="raw", via=rs_ips, via_mode=mode,
                                 timeout=0.5) as results:
            return {r.via: r.state.value for r in results}

    assert lab.run_in("prober", check) == {rs_ips[0]: "open", rs_ips[1]: "closed"}
    lab.stop_listener("rs1")
    assert lab.run_in("prober", check) == {rs_ips[0]: "closed", rs_ips[1]: "closed"}
    lab.start_listener("rs1")

    def one() -> list[synprobe.ProbeResult]:
        with synprobe.Prober(engine="raw", via_mode=mode, timeout=0.5) as prober:
            daemon = [prober.probe(f"{lab.vip}:80", via=rs_ips[0]),
                      prober.probe(f"{lab.vip}:80", via=rs_ips[1])]
        return [*daemon, synprobe.probe(f"{lab.vip}:80", engine="raw", via=rs_ips[1],
                                        via_mode=mode, timeout=0.5)]

    results = lab.run_in("prober", one)
    assert [(r.via, r.state.value) for r in results] == [
        (rs_ips[0], "open"), (rs_ips[1], "closed"), (rs_ips[1], "closed")]
    lab.wait_for(lambda: lab.count_states("rs1", "syn-recv", 80) == 0, what="rs1 reset")
    assert lab.accept_count("rs1") == 0


def test_raw_via_ipv6_resolves_by_neighbour_discovery(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    for rs in RS:
        lab.forget_neigh(lab.rs_ip(rs, True))
    with lab.frames() as cap:
        code, rows, _, err = raw_cli(lab, *vias(lab, True), f"[{lab.vip6}]:80")
        frames = cap.wait_until(lambda fs: bool(tcp_frames(fs, "out", "R")))
    assert code == 1, err
    assert by_via(rows) == {lab.rs_ip("rs1", True): ("open", "syn-ack"),
                            lab.rs_ip("rs2", True): ("closed", "rst")}
    assert_wire(lab, frames, "l2", v6=True)
    assert lab.accept_count("rs1") == 0


def test_raw_via_own_reset_goes_to_the_answering_server(dsr_lab: DsrLab) -> None:
    """The prober routes the VIP to rs1 and lets answers in (rp_filter 0): its kernel then
    resets rs2's SYN-ACK *towards rs1* (a stray, harmless: no connection matches there). Only
    the engine's own RST, in a frame to rs2's MAC, clears rs2's half-open connection."""
    lab = dsr_lab
    lab.start_listener("rs2")
    lab.sysctls("prober", RP_FILTER["off"][0])
    lab.ip("prober", f"route add {lab.vip}/32 via {lab.rs_ip('rs1')}")
    with lab.frames() as cap:
        code, rows, _, err = raw_cli(lab, "--via", lab.rs_ip("rs2"), f"{lab.vip}:80")
        frames = cap.wait_until(lambda fs: len([f for f in tcp_frames(fs, "out")
                                                if f.tcp and "R" in f.tcp.flags]) >= 2)
    assert code == 0, err
    assert by_via(rows) == {lab.rs_ip("rs2"): ("open", "syn-ack")}
    resets = sorted((f.tcp.flags, f.dst_mac) for f in tcp_frames(frames, "out")
                    if f.tcp and "R" in f.tcp.flags)
    assert resets == [("R", lab.rs_mac("rs1")), ("R", lab.rs_mac("rs2"))]
    lab.wait_for(lambda: lab.count_states("rs2", "syn-recv", 80) == 0, what="rs2 reset")
    assert lab.accept_count("rs1") == lab.accept_count("rs2") == 0


# -- clear errors ------------------------------------------------------------------------------

def test_raw_via_not_on_link_is_a_usage_error(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    lab.ip("prober", "route add 198.18.7.0/24 via 198.18.1.11")
    with lab.frames() as cap:
        code, rows, _, err = raw_cli(lab, "--via", "198.18.7.5", f"{lab.vip}:80")
    assert code == 2 and rows == []
    assert err.startswith("synprobe: error: real server 198.18.7.5 is not on a directly "
                          "connected network (the route goes via 198.18.1.11 on dsr0)"), err
    assert "via mode ipip" in err
    assert not tcp_frames(cap.frames(), "out")  # refused before anything was sent
    for argv, words in ((["--via", lab.vip], "no route to it"),
                        (["--via", lab.prober_ip], "an address of this host"),
                        (["--via", "fd00:d5::11"], "cannot serve an IPv4 VIP"),
                        (["--via-mode", "ipip"], "give --via")):
        code, _, _, err = raw_cli(lab, *argv, f"{lab.vip}:80")
        assert code == 2 and words in err, (argv, err)


def test_raw_via_silent_real_server_is_unreachable_in_bounded_time(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    started = time.monotonic()
    code, rows, _, err = raw_cli(lab, "--via", "198.18.1.13", "--via", lab.rs_ip("rs1"),
                                       f"{lab.vip}:80")
    elapsed = time.monotonic() - started
    assert code == 1, err
    assert by_via(rows) == {"198.18.1.13": ("unreachable", "arp-timeout"),
                            lab.rs_ip("rs1"): ("open", "syn-ack")}
    assert elapsed < 5.0  # three ARP requests 0.3 s apart, plus the interpreter's start


def test_raw_via_without_cap_net_raw_exit_3(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    cmd = shlex.join([sys.executable, "-m", "synprobe", "--engine", "raw", "--via",
                      lab.rs_ip("rs1"), f"{lab.vip}:80"])
    proc = lab.exec("prober", ["capsh", "--drop=cap_net_raw", "--", "-c", cmd], check=False)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("synprobe: error: the raw engine needs CAP_NET_RAW"), line
    # --dry-run sends nothing (no ARP either) and needs no privilege.
    cmd = shlex.join([sys.executable, "-m", "synprobe", "--engine", "raw", "--dry-run",
                      "--via", lab.rs_ip("rs1"), "--via-mode", "l2", f"{lab.vip}:80"])
    proc = lab.exec("prober", ["capsh", "--drop=cap_net_raw", "--", "-c", cmd], check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(
        f"in a frame to {lab.rs_ip('rs1')} ({lab.rs_mac('rs1')}) on {lab.prober_if}")


def test_raw_via_from_a_director_holding_the_vip(dsr_lab: DsrLab) -> None:
    """An LVS director has the VIP itself: answers from the VIP are martians to its kernel
    (dropped in IP input, no RST), but the engine's packet socket sees them first."""
    lab = dsr_lab
    lab.ip("prober", f"addr add {lab.vip}/32 dev lo")
    with lab.frames() as cap:
        code, rows, _, err = raw_cli(lab, *vias(lab), f"{lab.vip}:80")
        frames = cap.wait_until(lambda fs: bool(tcp_frames(fs, "out", "R")))
    assert code == 1, err
    assert by_via(rows) == {lab.rs_ip("rs1"): ("open", "syn-ack"),
                            lab.rs_ip("rs2"): ("closed", "rst")}
    assert_wire(lab, frames, "l2")
    lab.wait_for(lambda: lab.count_states("rs1", "syn-recv", 80) == 0, what="rs1 reset")
