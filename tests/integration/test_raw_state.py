"""The raw engine's state on the wire: a long-lived Prober never takes an earlier check's
SYN-ACK for a later check, each check leaves with a fresh (port, sequence) pair, and RTTs are
measured per SYN (checked against the capture's kernel timestamps)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

import synprobe
from synprobe.model import Target
from synprobe_lab import OPEN_PORT, V4, V6, Lab, LabFamily
from synprobe_lab.topology import NFT_TABLE

pytestmark = pytest.mark.netns

FAMILIES = [pytest.param(V4, id="v4"), pytest.param(V6, id="v6")]


@pytest.mark.parametrize("fam", FAMILIES)
def test_a_replayed_syn_ack_does_not_open_a_port_that_drops_syns(lab: Lab,
                                                                  fam: LabFamily) -> None:
    target = fam.anyip(21)
    prober = lab.run_in("client", synprobe.Prober, engine="raw", timeout=0.3, retries=1)
    raw = lab.socket_in("server", fam.family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with prober, raw, lab.capture("client") as cap, ThreadPoolExecutor(1) as pool:
        first = prober.probe(Target(target, OPEN_PORT))
        assert (first.state.value, first.attempts) == ("open", 1)
        [syn_ack] = [p for p in cap.wait_until(
            lambda ps: any(p.flags == "SA" for p in ps)) if p.flags == "SA"]
        # From now on the port drops SYNs; the old SYN-ACK is replayed to every later SYN.
        lab.exec("server", ["nft", "insert", "rule", "inet", NFT_TABLE, "input", "tcp",
                            "dport", str(OPEN_PORT), "tcp", "flags", "syn", "drop"])
        second = pool.submit(prober.probe, Target(target, OPEN_PORT))
        for n in (2, 3):  # the check's SYN, then its retry
            cap.wait_until(lambda ps, n=n: sum(p.flags == "S" for p in ps) == n)
            raw.sendto(syn_ack.raw, (fam.client, 0))
        result = second.result(timeout=5)
        stats = prober.stats()
    assert (result.state.value, result.reason, result.attempts) == ("filtered", "timeout", 2)
    assert stats["duplicates"] == 2 and stats["invalid"] == 0
    syns = [(p.sport, p.seq) for p in cap.tcp() if p.flags == "S"]
    assert len(syns) == 3 and len(set(syns)) == 3  # a fresh pair per attempt
    assert lab.accept_count() == 0


@pytest.mark.parametrize("fam", FAMILIES)
def test_rtts_are_measured_per_syn(lab: Lab, fam: LabFamily) -> None:
    """Unlimited rate, so SYNs leave in one sendmmsg batch and the answers are read in one
    batch: each RTT still is its own, from the SYN's send to its SYN-ACK's kernel stamp."""
    targets = [Target(fam.anyip(100 + i), OPEN_PORT) for i in range(48)]
    with lab.capture("client") as cap:
        results = list(lab.run_in("client", synprobe.probe_many, targets, engine="raw",
                                  rate=None, timeout=1.0))
        packets = cap.wait_until(lambda ps: sum(p.flags == "SA" for p in ps) == len(targets))
    sent = {p.dst: p.time for p in packets if p.flags == "S"}
    answered = {p.src: p.time for p in packets if p.flags == "SA"}
    rtts = {r.host: r.rtt for r in results}
    assert all(r.state.value == "open" for r in results) and None not in rtts.values()
    assert len(set(rtts.values())) == len(targets)  # not one value per batch
    for host, rtt in rtts.items():
        wire = answered[host] - sent[host]
        # The engine's send time is read before the sendmmsg call, so it may only read longer
        # than the wire, by at most the batch's time (generous on a loaded 2-vCPU machine).
        assert -50e-6 <= rtt - wire <= 0.02, (host, rtt, wire)
