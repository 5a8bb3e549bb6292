"""The raw engine without root: option checks, --dry-run, the capability error, and its loop
run against a fake network (a stand-in for `PacketIO` that answers SYNs like the lab)."""

from __future__ import annotations

import errno
import io
import re
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_packet_io import FakePacketIO
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

import synprobe.registry as registry
from synprobe import __version__
from synprobe.cli import main
from synprobe.engines.base import ProbeOptions
from synprobe.engines.raw import engine as raw
from synprobe.engines.raw.engine import STATS, RawEngine
from synprobe.engines.raw.options import RawOptions
from synprobe.errors import EngineUnavailable, UsageError
from synprobe.model import ProbeResult, State, Target
from synprobe.prober import Prober
from synprobe.sources import IterSource
from synprobe.wire.cookie import CookieKey
from synprobe.wire.packets import syn_packet
from synprobe.wire.syn import PacketTemplate

NO_OVERLAP = (32768, 60999)
SYN_LINE = re.compile(
    r"IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.2\.80: Flags \[S\], seq \d+, win 64240, options "
    r"\[mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7\], length 0"
)


def engine(own: dict[str, object] | None = None, **kw: Any) -> RawEngine:
    """A raw engine with the library's keywords (`own`: its own and mark), as make_options
    checks them."""
    opts = {k: kw.pop(k) for k in ("timeout", "retries", "concurrency", "rate", "source")
            if k in kw}
    kw.setdefault("ephemeral_ports", lambda: NO_OVERLAP)
    own = dict(own or {})
    common = {k: own.pop(k) for k in ("mark",) if k in own}
    return RawEngine(ProbeOptions(**opts, **common, engine_options=RawOptions.from_keywords(own)),
                     **kw)


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"bogus": 1}, "no option bogus"),
        ({"rst": "sometimes"}, "rst must be 'kernel' or 'self'"),
        ({"sport_range": "62000"}, "bad raw engine option"),
        ({"mark": "x"}, "mark must be an integer"),
        ({"sport_range": "63000-62000"}, "bad source port range 63000-62000"),
        ({"port_lo": 0}, "bad source port range"),
        ({"sport_range": "61000-62000", "port_lo": 61000}, "not both"),
        ({"sport_range": "40000-40100"}, r"overlap this host's ephemeral ports 32768-60999"),
    ],
)
def test_bad_options_are_usage_errors(extra: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        engine(extra)


def test_overlapping_ephemeral_range_says_how_to_fix() -> None:
    with pytest.raises(UsageError) as info:
        engine(ephemeral_ports=lambda: (1024, 65535))
    text = str(info.value)
    assert "61000-65535" in text and "net.ipv4.ip_local_port_range" in text
    assert "sysctl -w" in text and "sport_range" in text and "\n" not in text


def test_good_options_are_taken() -> None:
    eng = engine({"rst": "self", "sport_range": (62000, 62100), "mark": 7})
    assert eng.rst == "self" and (eng._key.port_lo, eng._key.port_hi) == (62000, 62100)
    eng = engine({"port_lo": 61000, "port_hi": 61010}, ephemeral_ports=lambda: None)
    assert eng.rst == "kernel" and eng._key.port_hi == 61010


# -- dry run: no privileges needed -----------------------------------------------------------


def test_describe_with_a_source_prints_the_syn() -> None:
    eng = engine(source="127.0.0.1")
    line = eng.describe(Target("127.0.0.2", 80))
    match = SYN_LINE.fullmatch(line)
    assert match and 61000 <= int(match.group(1)) <= 65535, line
    assert eng.describe(Target("::1", 80)) == "[::1]:80: not sent, EAFNOSUPPORT"
    eng.close()


def test_describe_finds_the_source_from_the_routes() -> None:
    eng = engine()
    assert SYN_LINE.fullmatch(eng.describe(Target("127.0.0.2", 80)))
    assert eng.describe(Target("::1", 443)).startswith("IP6 ::1.")
    eng.close()


def test_cli_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw, "local_port_range", lambda: NO_OVERLAP)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--engine", "raw", "--dry-run", "-p", "80", "127.0.0.2"], out, err)
    assert code == 0 and err.getvalue() == ""
    assert SYN_LINE.fullmatch(out.getvalue().strip())


# -- missing CAP_NET_RAW ---------------------------------------------------------------------


class DenyRaw:
    """A socket factory that refuses raw and packet sockets, as the kernel does without
    CAP_NET_RAW, and remembers every socket it did open."""

    def __init__(self) -> None:
        self.opened: list[socket.socket] = []

    def __call__(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        if family == socket.AF_PACKET or type_ & 0xF == socket.SOCK_RAW:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        sock = socket.socket(family, type_, proto)
        self.opened.append(sock)
        return sock


def test_without_cap_net_raw_one_clear_line() -> None:
    factory = DenyRaw()
    eng = engine(socket_factory=factory)
    with pytest.raises(EngineUnavailable) as info:
        next(eng.run(IterSource([Target("127.0.0.2", 80)])))
    text = str(info.value)
    assert "\n" not in text and "CAP_NET_RAW" in text
    # Where to read how (a setcap on realpath(sys.executable) would be the system python in
    # a venv), and no CLI flag: the library says this too.
    assert "docs/engines.md#privileges" in text and "the shaker engine" in text
    assert "setcap" not in text and "--" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert all(s.fileno() == -1 for s in factory.opened)


# -- the loop, on a fake network -------------------------------------------------------------


def answer(syn: bytes) -> list[bytes]:
    """What the lab's server says to a SYN: 80 SYN-ACK, 81 RST, 83 ICMP, anything else nothing."""
    ip = IPv6(syn) if syn[0] >> 4 == 6 else IP(syn)
    tcp = ip[TCP]
    back = (IPv6 if ip.version == 6 else IP)(src=ip.dst, dst=ip.src)
    ack = (tcp.seq + 1) % 2**32
    if tcp.dport == 80:
        return [bytes(back / TCP(sport=80, dport=tcp.sport, flags="SA", seq=7, ack=ack))]
    if tcp.dport == 81:
        return [bytes(back / TCP(sport=81, dport=tcp.sport, flags="RA", seq=0, ack=ack))]
    if tcp.dport == 83:
        error = ICMPv6DestUnreach(code=3) if ip.version == 6 else ICMP(type=3, code=1)
        return [bytes(back / error / syn)]
    return []


class FakeNet(FakePacketIO):
    """A lab-like network: records what is sent and queues `responder`'s answers. `fail` maps
    a port to the errno its sends get."""

    def __init__(self, responder: Callable[[bytes], list[bytes]] = answer) -> None:
        super().__init__()
        self.responder = responder
        self.fail: dict[int, int] = {}
        self.sent: list[bytes] = []

    def send(self, v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        failures, answers = [], []
        for i, (packet, _dst) in enumerate(batch):
            dport = int.from_bytes(packet[(40 if v6 else 20) + 2:][:2], "big")
            if dport in self.fail:
                failures.append((i, self.fail[dport]))
                continue
            self.sent.append(packet)
            answers += self.responder(packet)
        self.deliver(answers)
        return failures

    def flags(self) -> list[tuple[int, int]]:
        """(dport, TCP flags) of every packet sent, in order."""
        out = []
        for p in self.sent:
            off = 40 if p[0] >> 4 == 6 else 20
            out.append((int.from_bytes(p[off + 2 : off + 4], "big"), p[off + 13]))
        return out


@pytest.fixture
def net() -> Iterator[FakeNet]:
    fake = FakeNet()
    yield fake
    fake.close()


def run_all(eng: RawEngine, targets: list[Target]) -> dict[Target, ProbeResult]:
    results = [r for batch in eng.run(IterSource(targets)) for r in batch]
    assert len(results) == len(targets)
    return {Target(r.host, r.port): r for r in results}


def test_every_state_and_the_stats(net: FakeNet) -> None:
    eng = engine(io_factory=net, timeout=0.05, retries=1)
    targets = [Target(h, p) for h in ("127.0.0.2", "::1") for p in (80, 81, 82, 83)]
    got = run_all(eng, targets)
    assert {(t.host, t.port): (r.state, r.reason) for t, r in got.items()} == {
        ("127.0.0.2", 80): (State.OPEN, "syn-ack"),
        ("127.0.0.2", 81): (State.CLOSED, "rst"),
        ("127.0.0.2", 82): (State.FILTERED, "timeout"),
        ("127.0.0.2", 83): (State.UNREACHABLE, "icmp-3-1"),
        ("::1", 80): (State.OPEN, "syn-ack"),
        ("::1", 81): (State.CLOSED, "rst"),
        ("::1", 82): (State.FILTERED, "timeout"),
        ("::1", 83): (State.UNREACHABLE, "icmp6-1-3"),
    }
    for t, r in got.items():
        assert r.engine == "raw" and r.source == ("::1" if ":" in t.host else "127.0.0.1")
        assert r.attempts == (2 if t.port == 82 else 1)
        assert (r.rtt is None) == (t.port == 82)
    stats = eng.stats()
    assert list(stats) == list(STATS)
    assert stats == {**dict.fromkeys(STATS, 0), "sent": 10, "replies": 6, "retries": 2}
    assert net.closed  # run() closes its sockets
    # The kernel resets open ports by default: the engine itself sent SYNs only.
    assert {flags for _, flags in net.flags()} == {0x02}


def syn_fields(packet: bytes) -> tuple[bytes, int, int, int]:
    """(destination, source port, destination port, sequence number) of a SYN we sent."""
    off = 40 if packet[0] >> 4 == 6 else 20
    dst = packet[24:40] if off == 40 else packet[16:20]
    sport, dport, seq = struct.unpack_from("!HHI", packet, off)
    return dst, sport, dport, seq


def test_each_retry_is_a_fresh_port_and_sequence_pair(net: FakeNet) -> None:
    eng = engine(io_factory=net, timeout=0.02, retries=3)
    [r] = run_all(eng, [Target("127.0.0.2", 82)]).values()
    assert (r.state, r.attempts) == (State.FILTERED, 4)
    fields = [syn_fields(p) for p in net.sent]
    assert len(fields) == 4 and {(d, dport) for d, _, dport, _ in fields} == {
        (bytes([127, 0, 0, 2]), 82)}
    assert len({(sport, seq) for _, sport, _, seq in fields}) == 4
    assert eng.stats()["retries"] == 3


class Replayer:
    """A peer that answers the first SYN to port 84 with a SYN-ACK, then drops SYNs to it,
    replaying that first SYN-ACK to each later one (a late duplicate, or an attacker's
    replay); other ports as `answer`."""

    def __init__(self) -> None:
        self.first: list[bytes] = []

    def __call__(self, syn: bytes) -> list[bytes]:
        if syn_fields(syn)[2] != 84:
            return answer(syn)
        if not self.first:
            self.first = answer(syn[:22] + (80).to_bytes(2, "big") + syn[24:])
            reply = bytearray(self.first[0])
            reply[20:22] = (84).to_bytes(2, "big")  # from port 84; checksums are not read
            self.first = [bytes(reply)]
        return list(self.first)


def run_prober(net: FakeNet, monkeypatch: pytest.MonkeyPatch, *targets: str,
               **kw: Any) -> list[ProbeResult]:
    monkeypatch.setitem(registry._registered, "rawfake",
                        lambda options: RawEngine(options, io_factory=net,
                                                  ephemeral_ports=lambda: NO_OVERLAP))
    with Prober(engine="rawfake", **kw) as prober:
        return [prober.probe(t) for t in targets]


def test_an_earlier_checks_answer_never_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived raw Prober: the port answered once, then drops SYNs. The replayed SYN-ACK
    to the first check must not make the second and third read open."""
    net = FakeNet(Replayer())
    try:
        first, second, third = run_prober(net, monkeypatch, *["127.0.0.2:84"] * 3,
                                          timeout=0.05, retries=1)
    finally:
        net.close()
    assert (first.state, first.attempts) == (State.OPEN, 1)
    for later in (second, third):
        assert (later.state, later.reason, later.attempts) == (State.FILTERED, "timeout", 2)
    pairs = [(sport, seq) for _, sport, _, seq in map(syn_fields, net.sent)]
    assert len(pairs) == 5 and len(set(pairs)) == 5  # no check reused an earlier pair


def test_a_late_answer_to_an_earlier_attempt_counts_with_its_rtt(net: FakeNet) -> None:
    """The first SYN's answer arrives only after the retry left: the check is open, after 2
    attempts, and its RTT runs from the first SYN (it is at least the timeout)."""
    held: list[bytes] = []

    def late(syn: bytes) -> list[bytes]:
        if not held:
            held.extend(answer(syn))
            return []
        return held  # the retry's own answer never comes; the first one does now

    net.responder = late
    eng = engine(io_factory=net, timeout=0.05, retries=2)
    [r] = run_all(eng, [Target("127.0.0.2", 80)]).values()
    assert (r.state, r.attempts) == (State.OPEN, 2)
    assert r.rtt is not None and r.rtt >= 0.05


def test_invalid_and_duplicate_replies_are_counted_not_trusted() -> None:
    def forge(syn: bytes) -> list[bytes]:
        good = answer(syn)
        if not good:  # the filtered port: forgeries only
            ip = IP(syn)
            back = IP(src=ip.dst, dst=ip.src)
            wrong = (ip[TCP].seq + 2) % 2**32
            return [bytes(back / TCP(sport=82, dport=ip[TCP].sport, flags=f, ack=wrong))
                    for f in ("SA", "RA")]
        return good * 3  # the same valid answer three times
    net = FakeNet(forge)
    try:
        eng = engine(io_factory=net, timeout=0.05, retries=0)
        got = run_all(eng, [Target("127.0.0.2", 80), Target("127.0.0.2", 82)])
    finally:
        net.close()
    assert got[Target("127.0.0.2", 80)].state is State.OPEN
    assert got[Target("127.0.0.2", 82)].state is State.FILTERED
    stats = eng.stats()
    assert (stats["invalid"], stats["duplicates"], stats["replies"]) == (2, 2, 3)


def test_a_check_in_flight_is_matched_against_what_it_sent_not_rehashed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply carrying the pair the check's latest SYN carried, to the address it came from,
    is that check's answer: compared with the record, no keyed hash (~0.8 µs a reply). The
    same pair sent to another address of ours, or any other pair, goes to the key and is
    refused: the check stays in flight and times out."""
    hashed: list[int] = []
    real = CookieKey.serial_of

    def counted(self: CookieKey, *args: Any) -> int | None:
        hashed.append(1)
        return real(self, *args)

    monkeypatch.setattr(CookieKey, "serial_of", counted)

    def elsewhere(syn: bytes) -> list[bytes]:
        if syn_fields(syn)[2] != 85:
            return answer(syn)
        good = bytearray(answer(syn[:22] + (80).to_bytes(2, "big") + syn[24:])[0])
        good[20:22] = (85).to_bytes(2, "big")
        good[16:20] = bytes([127, 0, 0, 3])  # to another of our addresses
        return [bytes(good)]

    net = FakeNet(elsewhere)
    try:
        eng = engine(io_factory=net, timeout=0.05, retries=1)
        got = run_all(eng, [Target(f"127.0.0.{i}", 80) for i in range(2, 12)]
                      + [Target("127.0.0.2", 81), Target("127.0.0.2", 85)])
    finally:
        net.close()
    assert [r.state for r in got.values()].count(State.OPEN) == 10
    assert got[Target("127.0.0.2", 81)].state is State.CLOSED
    assert len(hashed) == 2  # only the two misaddressed answers went to the key
    assert (got[Target("127.0.0.2", 85)].state, got[Target("127.0.0.2", 85)].attempts) == \
        (State.FILTERED, 2)
    assert eng.stats()["invalid"] == 2 and eng.stats()["replies"] == 11


def test_the_same_target_twice_shares_one_probe(net: FakeNet) -> None:
    eng = engine(io_factory=net)
    results = [r for b in eng.run(IterSource([Target("127.0.0.2", 80)] * 2)) for r in b]
    assert [r.state for r in results] == [State.OPEN, State.OPEN]
    assert len(net.sent) == 1


def test_local_send_errors(net: FakeNet) -> None:
    net.fail = {80: errno.EHOSTUNREACH, 82: errno.ENOBUFS}
    eng = engine(io_factory=net, timeout=0.02, retries=1)
    got = run_all(eng, [Target("127.0.0.2", 80), Target("127.0.0.2", 82)])
    assert (got[Target("127.0.0.2", 80)].state, got[Target("127.0.0.2", 80)].reason) == (
        State.UNREACHABLE, "EHOSTUNREACH")
    # A local drop is a lost attempt: retried, then filtered, and counted.
    assert (got[Target("127.0.0.2", 82)].state, got[Target("127.0.0.2", 82)].attempts) == (
        State.FILTERED, 2)
    assert eng.stats()["send_errors"] == 3 and eng.stats()["sent"] == 0


def test_self_rst_answers_each_syn_ack_with_seq_ack(net: FakeNet) -> None:
    eng = engine({"rst": "self"}, io_factory=net)
    run_all(eng, [Target("127.0.0.2", 80), Target("::1", 80), Target("127.0.0.2", 81)])
    rsts = [p for p in net.sent if p[(40 if p[0] >> 4 == 6 else 20) + 13] == 0x04]
    assert len(rsts) == 2 and eng.stats()["self_rsts"] == 2
    syns = {(p[0] >> 4, p[(40 if p[0] >> 4 == 6 else 20):][:2]): p for p in net.sent
            if p not in rsts}
    for rst in rsts:
        ip = IPv6(rst) if rst[0] >> 4 == 6 else IP(rst)
        syn = syns[ip.version, rst[(40 if ip.version == 6 else 20):][:2]]
        syn_seq = (IPv6(syn) if ip.version == 6 else IP(syn))[TCP].seq
        assert ip[TCP].seq == (syn_seq + 1) % 2**32  # the SYN-ACK's ack
        assert (ip[TCP].flags, ip[TCP].dport, ip[TCP].window) == ("R", 80, 0)


def test_self_rsts_are_rate_limited() -> None:
    net = FakeNet(lambda syn: answer(syn) * 100)  # a peer flooding valid SYN-ACKs
    try:
        # rate 10 -> RSTs refill at 20/s after a burst of 64 (the floor for concurrency 1)
        eng = engine({"rst": "self"}, io_factory=net, rate=10, concurrency=1)
        run_all(eng, [Target("127.0.0.2", 80)])
    finally:
        net.close()
    stats = eng.stats()
    assert stats["self_rsts"] + stats["rsts_suppressed"] == 100
    assert 64 <= stats["self_rsts"] <= 70 and stats["duplicates"] == 99


def test_prober_feeds_the_loop_through_the_wakeup_fd(net: FakeNet,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._registered, "rawfake",
                        lambda options: RawEngine(options, io_factory=net,
                                                  ephemeral_ports=lambda: NO_OVERLAP))
    with Prober(engine="rawfake", timeout=0.05, retries=0) as prober:
        assert prober.probe("127.0.0.2:80").state is State.OPEN
        assert prober.probe("[::1]:81").state is State.CLOSED  # after the loop went idle
        assert prober.stats()["sent"] == 2


@pytest.mark.parametrize("kind", ["204 bytes", "IPv4 MF", "payload"])
def test_a_planted_cache_entry_never_reaches_the_wire(
        kind: str, net: FakeNet, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever sits in the template cache, the SYNs sent are synprobe's own encoding."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    good = PacketTemplate.from_packet(syn_packet("127.0.0.1"))
    bad = bytearray(good.template)
    if kind == "204 bytes":
        bad += bytes(204 - len(bad))
    elif kind == "IPv4 MF":
        bad[6] |= 0x20
    else:
        bad += b"GET / HTTP/1.0\r\n\r\n"
        bad[2:4] = len(bad).to_bytes(2, "big")
    entry = tmp_path / "synprobe" / f"{__version__}-syn-7f000001.pkt"
    entry.parent.mkdir()
    entry.write_bytes(bytes(bad))
    got = run_all(engine(io_factory=net), [Target("127.0.0.2", 80), Target("127.0.0.2", 81)])
    assert [r.state for r in got.values()] == [State.OPEN, State.CLOSED]
    assert len(net.sent) == 2
    for packet in net.sent:
        _, sport, dport, seq = syn_fields(packet)
        assert packet == good.build(bytes([127, 0, 0, 2]), sport, dport, seq)
