"""The raw engine on the wire, from the lab's client namespace: every state through the CLI and
the library; SYN out, SYN-ACK in, RST out (the kernel's, by default) and never an ACK; forged
replies counted as invalid; `--rst self` when the kernel's RSTs are dropped; the clear error
without CAP_NET_RAW. Each test checks synprobe's report against a capture of the client's veth
(opened before the first SYN) and against what the kernels kept (accepts, SYN_RECV, TIME_WAIT).
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from lab_states import lab_states

import synprobe
from synprobe.model import ProbeResult, Target
from synprobe_lab import (
    FILTERED_PORT,
    OPEN_PORT,
    V4,
    V6,
    Capture,
    Lab,
    LabFamily,
    Packet,
)

pytestmark = pytest.mark.netns

FAMILIES = [pytest.param(V4, id="v4"), pytest.param(V6, id="v6")]
TIMEOUT, RETRIES = 0.2, 1
# The raw engine's own half-open check: the kernel answers an unexpected SYN-ACK with a bare
# RST (seq = the SYN-ACK's ack, no ACK flag), RFC 9293 3.10.7.1.
HALF_OPEN = [("out", "S"), ("in", "SA"), ("out", "R")]


def cases(fam: LabFamily) -> dict[Target, tuple[str, str]]:
    return lab_states(fam, unreachable_route=False)  # 7 SYNs: the counters below


def attempts(state: str) -> int:
    return RETRIES + 1 if state == "filtered" else 1


def wire(state: str, reason: str) -> list[tuple[str, str]]:
    """One flow's packets on the client veth. A filtered target is re-sent, blind, once: each
    attempt from its own (port, sequence) pair, so as a flow of its own."""
    return {"open": HALF_OPEN, "closed": [("out", "S"), ("in", "RA")],
            "filtered": [("out", "S")],
            "unreachable": [("out", "S"), ("in", reason)]}[state]


def check_rows(rows: list[dict[str, Any]], want: dict[Target, tuple[str, str]],
               source: str) -> None:
    by_target = {Target(r["host"], r["port"]): r for r in rows}
    assert len(by_target) == len(rows) and set(by_target) == set(want)
    for target, (state, reason) in want.items():
        row = by_target[target]
        assert (row["state"], row["reason"], row["engine"]) == (state, reason, "raw"), row
        assert row["attempts"] == attempts(state) and row["source"] == source, row
        assert (row["rtt_ms"] is None) == (state == "filtered"), row


def check_wire(cap: Capture, want: dict[Target, tuple[str, str]]) -> None:
    """One flow per attempt (one per target, a filtered one's retry aside), with exactly the
    packets its verdict stands for; the RST of an open port continues our SYN (seq = SYN-ACK's
    ack); no ACK ever leaves."""
    assert cap.dropped == 0
    flows = cap.flows()
    per_target = Counter((k.server, k.server_port) for k in flows)
    assert per_target == {(t.host, t.port): attempts(state) for t, (state, _) in want.items()}
    for key, seq in flows.items():
        state, reason = want[Target(key.server, key.server_port)]
        assert seq == wire(state, reason), (key, seq)
    out = [p for p in cap.tcp() if p.direction == "out"]
    assert not [p for p in out if "A" in p.flags]
    assert all(61000 <= (p.sport or 0) <= 65535 for p in out)
    for p in cap.tcp():
        if p.label == "SA":
            [rst] = [q for q in out if q.label == "R" and q.dport == p.sport and q.dst == p.src]
            assert rst.seq == p.ack and rst.time - p.time < 0.01


def settle(lab: Lab) -> None:
    """The server forgets its half-open entries at once (a bounded poll: without a RST they
    would stay ~1 s and more), nothing was accepted and the client keeps no TIME_WAIT."""
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=0.5,
                 what="server SYN_RECV back to 0")
    assert lab.accept_count() == 0 and lab.listen_queue() == 0
    assert lab.count_states("client", "time-wait") == 0


def run_cli(lab: Lab, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "synprobe", "--engine", "raw", *args]
    return lab.exec("client", argv, check=False, timeout=timeout)


def json_run(lab: Lab, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    proc = run_cli(lab, "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    [summary] = [json.loads(line)["summary"] for line in proc.stderr.splitlines()
                 if line.startswith('{"summary"')]
    return proc.returncode, rows, summary


# -- every state ------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_every_state_via_the_cli(lab: Lab, fam: LabFamily) -> None:
    want = cases(fam)
    with lab.capture("client") as cap:
        code, rows, summary = json_run(lab, "--timeout", str(TIMEOUT), "--retries",
                                       str(RETRIES), *map(str, want))
    assert code == 1
    check_rows(rows, want, fam.client)
    assert summary["states"] == {"open": 2, "closed": 1, "filtered": 1, "unreachable": 2,
                                 "error": 0}
    assert summary["stats"] == {"sent": 7, "send_errors": 0, "replies": 5, "invalid": 0,
                                "duplicates": 0, "kernel_drops": 0, "self_rsts": 0,
                                "rsts_suppressed": 0, "retries": 1}
    check_wire(cap, want)
    settle(lab)


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_state_via_the_library(lab: Lab, fam: LabFamily) -> None:
    want = cases(fam)

    def probe_all() -> tuple[list[ProbeResult], dict[str, int], ProbeResult]:
        with synprobe.probe_many(list(want), engine="raw", timeout=TIMEOUT,
                                 retries=RETRIES) as stream:
            results = list(stream)
        one = synprobe.probe(Target(fam.anyip(7), OPEN_PORT), engine="raw", timeout=TIMEOUT)
        return results, stream.stats(), one

    with lab.capture("client") as cap:
        results, stats, one = lab.run_in("client", probe_all)
    check_rows([r.to_dict() for r in results], want, fam.client)
    assert (one.state.value, one.attempts, one.source) == ("open", 1, fam.client)
    assert stats["sent"] == 7 and stats["replies"] == 5 and stats["invalid"] == 0
    check_wire(cap, {**want, Target(fam.anyip(7), OPEN_PORT): ("open", "syn-ack")})
    settle(lab)


# -- forged replies ---------------------------------------------------------------------------

def forgeries(fam: LabFamily, syn: Packet) -> list[bytes]:
    """A SYN-ACK and a RST whose acknowledgement numbers are off by one, and an ICMP error that
    quotes our SYN with a sequence number off by one, all from the target to the probe's port."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

    seq, sport = syn.seq or 0, syn.sport or 0
    ip = (IPv6 if fam is V6 else IP)(src=syn.dst, dst=syn.src)
    quoted = (IPv6 if fam is V6 else IP)(src=syn.src, dst=syn.dst) / TCP(
        sport=sport, dport=FILTERED_PORT, flags="S", seq=(seq + 1) % 2**32)
    error = ICMPv6DestUnreach(code=3) if fam is V6 else ICMP(type=3, code=1)
    return [
        bytes(ip / TCP(sport=FILTERED_PORT, dport=sport, flags="SA", seq=1, ack=(seq + 2) % 2**32)),
        bytes(ip / TCP(sport=FILTERED_PORT, dport=sport, flags="RA", seq=0, ack=seq)),
        bytes(ip / error / quoted),
    ]


@pytest.mark.parametrize("fam", FAMILIES)
def test_forged_replies_are_counted_invalid_and_ignored(lab: Lab, fam: LabFamily) -> None:
    target = Target(fam.server, FILTERED_PORT)
    raw = lab.socket_in("server", fam.family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw, lab.capture("client") as cap:
        stream = lab.run_in("client", synprobe.probe_many, [target], engine="raw",
                            timeout=1.0, retries=0)
        with stream:
            pkts = cap.wait_until(lambda ps: any(p.label == "S" for p in ps))
            [syn] = [p for p in pkts if p.label == "S"]
            for packet in forgeries(fam, syn):
                raw.sendto(packet, (syn.src, 0))
            # All three reached the client while the probe was in flight...
            cap.wait_until(lambda ps: sum(p.direction == "in" for p in ps) == 3)
            [result] = list(stream)
        stats = stream.stats()
    # ...and changed nothing: the target stays filtered, each forgery counted invalid.
    assert (result.state.value, result.reason, result.attempts) == ("filtered", "timeout", 1)
    assert (stats["invalid"], stats["replies"], stats["duplicates"]) == (3, 0, 0)
    # The client kernel reset the forged SYN-ACK (no socket owns the port): no ACK, no state.
    assert [p.label for p in cap.tcp() if p.direction == "out"] == ["S", "R"]
    assert lab.count_states("client", "syn-sent") == lab.count_states("client", "established") == 0


# -- --rst self -------------------------------------------------------------------------------

MARK = 0x5E
# Drop the kernel's RSTs from our source ports. The engine's own RSTs pass OUTPUT too, and look
# the same (a bare RST with seq = the SYN-ACK's ack: the engine copies the kernel's form), so
# they are told apart by the mark the engine's raw sockets carry (--mark, SO_MARK); the kernel
# resets from its control socket with mark 0.
DROP_KERNEL_RSTS = """\
table inet raw_test {
    chain output {
        type filter hook output priority filter; policy accept;
        tcp sport 61000-65535 tcp flags & rst == rst meta mark 0 counter drop
    }
}
"""


def dropped_rsts(lab: Lab) -> int:
    out = lab.exec("client", ["nft", "-j", "list", "table", "inet", "raw_test"]).stdout
    rules = [item["rule"] for item in json.loads(out)["nftables"] if "rule" in item]
    return sum(e["counter"]["packets"] for rule in rules for e in rule["expr"] if "counter" in e)


@pytest.mark.parametrize("fam", FAMILIES)
def test_rst_self_clears_the_server_when_kernel_rsts_are_dropped(lab: Lab,
                                                                 fam: LabFamily) -> None:
    lab.exec("client", ["nft", "-f", "-"], input=DROP_KERNEL_RSTS)
    mine, control = fam.anyip(11), fam.anyip(12)
    with lab.capture("client") as cap:
        code, rows, summary = json_run(lab, "--rst", "self", "--mark", str(MARK),
                                       f"{Target(mine, OPEN_PORT)}")
        assert code == 0 and rows[0]["state"] == "open"
        assert summary["stats"]["self_rsts"] == 1 and dropped_rsts(lab) == 1
        # The engine's RST arrived: the server's half-open entry is gone at once.
        lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=0.5)
        # Control: the same run with the kernel left to reset. Its RST is dropped, so the
        # server keeps the entry (and retransmits its SYN-ACK, ~1 s later, to no avail).
        code, rows, summary = json_run(lab, "--mark", str(MARK), f"{Target(control, OPEN_PORT)}")
        assert code == 0 and summary["stats"]["self_rsts"] == 0 and dropped_rsts(lab) == 2
        assert lab.count_states("server", "syn-recv") == 1
    flows = {k.server: seq for k, seq in cap.flows().items()}
    assert flows[mine] == HALF_OPEN  # the engine's RST, the kernel's never reached the wire
    assert flows[control][:2] == [("out", "S"), ("in", "SA")]
    assert ("out", "R") not in flows[control]
    assert lab.accept_count() == 0


# -- privileges -------------------------------------------------------------------------------

def without_cap_net_raw(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = shlex.join([sys.executable, "-m", "synprobe", "--engine", "raw", *args])
    return lab.exec("client", ["capsh", "--drop=cap_net_raw", "--", "-c", cmd], check=False)


def test_without_cap_net_raw_one_clear_line_and_exit_3(lab: Lab) -> None:
    proc = without_cap_net_raw(lab, "--json", f"{V4.server}:{OPEN_PORT}")
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("synprobe: error: the raw engine needs CAP_NET_RAW"), line
    # Where to read how (not a setcap of realpath(sys.executable): in a venv that is the
    # system python), in the library's words.
    assert "docs/engines.md#privileges" in line and "the shaker engine" in line
    assert "setcap" not in line
    assert proc.stdout == ""
    # --dry-run sends nothing and needs no privilege.
    proc = without_cap_net_raw(lab, "--dry-run", f"{V4.server}:{OPEN_PORT}",
                               f"[{V6.server}]:{OPEN_PORT}")
    assert proc.returncode == 0 and proc.stderr == ""
    v6, v4 = sorted(proc.stdout.splitlines(), key=lambda line: line.split()[0], reverse=True)
    assert v4.startswith(f"IP {V4.client}.") and f"> {V4.server}.80: Flags [S]" in v4
    assert v6.startswith(f"IP6 {V6.client}.") and f"> {V6.server}.80: Flags [S]" in v6


# -- a short sweep ----------------------------------------------------------------------------

def test_sweep_of_4096_anyip_targets_all_open_nothing_left(lab: Lab) -> None:
    code, rows, summary = json_run(lab, "--rate", "0", "-p", str(OPEN_PORT), "198.19.64.0/20")
    assert code == 0 and summary["states"]["open"] == len(rows) == 4096
    stats = summary["stats"]
    assert stats["sent"] == stats["replies"] == 4096
    assert stats["kernel_drops"] == stats["send_errors"] == stats["retries"] == 0
    settle(lab)
