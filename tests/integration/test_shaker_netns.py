"""The shaker engine on the wire: SYN out, SYN-ACK in, RST out; nothing accepted, nothing left.

Every test probes from the lab's client namespace and checks three things against each other:
what synprobe reported (CLI JSON or library results), what crossed the client's veth (a capture
opened before the first SYN), and what the kernels kept (listener accepts, TIME_WAIT in the
client, SYN_RECV in the server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shlex
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from lab_states import lab_states

import synprobe
from synprobe.model import ProbeResult, Target
from synprobe_lab import (
    CLOSED_PORT,
    FILTERED_PORT,
    OPEN_PORT,
    V4,
    V6,
    Capture,
    FlowKey,
    Lab,
    LabFamily,
    Packet,
)
from synprobe_lab.topology import CLIENT_MAC

pytestmark = pytest.mark.netns

FAMILIES = [pytest.param(V4, id="v4"), pytest.param(V6, id="v6")]

# A half-open check as the client's veth sees it. The kernel's reset on close() carries ACK
# ("RA": seq = the SYN-ACK's ack, ack = its seq + 1); what must never appear is a bare "A", the
# handshake's third segment, which is what makes a server's accept() return.
HALF_OPEN = [("out", "S"), ("in", "SA"), ("out", "RA")]
LINGER_ABORT = struct.pack("ii", 1, 0)

FILTERED_TIMEOUT = 0.2
FILTERED_RETRIES = 2


# -- expectations ------------------------------------------------------------------------------

def state_cases(fam: LabFamily) -> dict[Target, tuple[str, str]]:
    """Every answer the lab can give, and how synprobe must classify it: (state, reason)."""
    return lab_states(fam)


def expected_wire(state: str, reason: str) -> list[tuple[str, str]]:
    """The client-side packets of one attempt that ended in (state, reason)."""
    return {
        "open": HALF_OPEN,
        "closed": [("out", "S"), ("in", "RA")],
        # Closing a socket still in SYN_SENT sends nothing, and the attempt ends before the
        # kernel's 1 s SYN retransmission: one SYN per attempt, and silence.
        "filtered": [("out", "S")],
        "unreachable": [("out", "S"), ("in", reason)],
    }[state]


def expected_attempts(state: str, retries: int) -> int:
    return retries + 1 if state == "filtered" else 1


def check_results(results: Iterable[ProbeResult], cases: dict[Target, tuple[str, str]],
                  retries: int, source: str | None = None) -> None:
    by_target = {Target(r.host, r.port): r for r in results}
    assert set(by_target) == set(cases)
    for target, (state, reason) in cases.items():
        r = by_target[target]
        assert (r.state.value, r.reason) == (state, reason), target
        assert r.attempts == expected_attempts(state, retries), r
        assert (r.engine, r.source) == ("shaker", source), r
        assert (r.rtt is None) == (state == "filtered"), r


def check_rows(rows: list[dict[str, Any]], cases: dict[Target, tuple[str, str]],
               retries: int, source: str | None = None) -> None:
    """The CLI's JSON rows: same checks as check_results, on the documented keys."""
    by_target = {Target(row["host"], row["port"]): row for row in rows}
    assert len(rows) == len(by_target) and set(by_target) == set(cases)
    for target, (state, reason) in cases.items():
        row = by_target[target]
        assert (row["state"], row["reason"]) == (state, reason), row
        assert row["attempts"] == expected_attempts(state, retries), row
        assert (row["engine"], row["source"]) == ("shaker", source), row
        assert (row["rtt_ms"] is None) == (state == "filtered"), row


def check_wire(cap: Capture, cases: dict[Target, tuple[str, str]], runs: int,
               retries: int) -> None:
    """Each run checked every case once: the capture must hold exactly the attempts that implies,
    each with exactly the packets its classification stands for, and no bare ACK at all."""
    assert cap.dropped == 0
    flows = cap.flows()
    assert not [p for p in cap.packets() if p.direction == "out" and p.label == "A"]
    for target, (state, reason) in cases.items():
        mine = [seq for key, seq in flows.items()
                if (key.server, key.server_port) == (target.host, target.port)]
        assert len(mine) == runs * expected_attempts(state, retries), (target, mine)
        assert all(seq == expected_wire(state, reason) for seq in mine), (target, mine)
    wanted = {(t.host, t.port) for t in cases}
    assert {(k.server, k.server_port) for k in flows} == wanted


def settle_and_check_no_state(lab: Lab, accepts: int = 0) -> None:
    """The server forgets every half-open connection (bounded poll), then nothing was accepted,
    nothing waits in the accept queue and the client holds no TIME_WAIT."""
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=5,
                 what="server SYN_RECV back to 0")
    assert lab.accept_count() == accepts
    assert lab.listen_queue() == 0
    assert lab.count_states("client", "time-wait") == 0


# -- running synprobe in the client namespace --------------------------------------------------

def run_cli(lab: Lab, *args: str, timeout: float = 30.0) -> tuple[int, list[dict[str, Any]],
                                                                   dict[str, Any]]:
    """`synprobe --json ARGS` in the client namespace: (exit code, rows, summary)."""
    argv = [sys.executable, "-m", "synprobe", "--json", *args]
    try:
        proc = lab.exec("client", argv, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:  # run() has killed it (by PID: ip netns exec execs)
        pytest.fail(f"synprobe {' '.join(args)} did not finish within {timeout} s")
    assert proc.returncode in (0, 1), proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    summaries = [json.loads(line)["summary"] for line in proc.stderr.splitlines()
                 if line.startswith('{"summary"')]
    assert len(summaries) == 1, proc.stderr
    return proc.returncode, rows, summaries[0]


def via_probe(targets: list[Target], **kw: Any) -> list[ProbeResult]:
    return [synprobe.probe(t, **kw) for t in targets]


def via_probe_many(targets: list[Target], **kw: Any) -> list[ProbeResult]:
    with synprobe.probe_many(targets, **kw) as results:
        return list(results)


def via_prober(targets: list[Target], **kw: Any) -> list[ProbeResult]:
    with synprobe.Prober(**kw) as prober:
        first = prober.probe(targets[0])
        return [first, *prober.probe_many(targets[1:])]


def via_aprobe_many(targets: list[Target], **kw: Any) -> list[ProbeResult]:
    async def collect() -> list[ProbeResult]:
        return [r async for r in synprobe.aprobe_many(targets, **kw)]

    return asyncio.run(collect())


APIS = [pytest.param(fn, id=fn.__name__.removeprefix("via_"))
        for fn in (via_probe, via_probe_many, via_prober, via_aprobe_many)]


def half_open_flows(cap: Capture, targets: set[Target]) -> dict[FlowKey, list[Packet]]:
    """The TCP packets of every flow to `targets`, after checking each flow is exactly HALF_OPEN
    with the kernel's sequence numbers (the RST continues the SYN and acknowledges the SYN-ACK)."""
    per_flow: dict[FlowKey, list[Packet]] = {}
    flows = cap.flows()
    for pkt in cap.tcp():
        out = pkt.direction == "out"
        key = FlowKey(*((pkt.src, pkt.sport, pkt.dst, pkt.dport) if out
                        else (pkt.dst, pkt.dport, pkt.src, pkt.sport)))
        if Target(key.server, key.server_port) in targets:
            per_flow.setdefault(key, []).append(pkt)
    for key, pkts in per_flow.items():
        assert flows[key] == HALF_OPEN, (key, flows[key])
        syn, synack, rst = pkts
        assert synack.ack == (syn.seq or 0) + 1
        assert rst.seq == synack.ack and rst.ack == (synack.seq or 0) + 1, [str(p) for p in pkts]
    return per_flow


# -- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_open_port_is_syn_synack_rst_and_never_accepted(lab: Lab, fam: LabFamily) -> None:
    targets = {Target(host, OPEN_PORT) for host in
               (fam.server, fam.anyip_sample, fam.anyip(0), fam.anyip(fam.anyip_size - 1))}
    control = Target(fam.anyip(4242), OPEN_PORT)
    with lab.capture("client") as cap:
        results = lab.run_in("client", via_probe_many, sorted(targets), retries=0)
        # Positive control for "an ACK would have been visible": a socket prepared like the
        # shaker's (TCP_QUICKACK 0 before connect) but *not* closed. Its connect() returns on
        # the SYN-ACK, the kernel holds the ACK back for its delayed-ACK timer (~200 ms), and
        # only then does the server accept. It starts after every probe got its answer, so once
        # its ACK is on the wire, every probe's delayed-ACK window has expired too: a probe ACK
        # would be in this capture by now. Waiting for that ACK is the bounded wait on
        # something real that a negative check ("no ACK ever comes") needs.
        ctl = lab.socket_in("client", fam.family)
        ctl.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        ctl.settimeout(2.0)
        ctl.connect((control.host, control.port))
        assert lab.accept_count() == 0  # connected here, but the server has no ACK yet
        pkts = cap.wait_until(lambda ps: any(
            p.direction == "out" and p.label == "A" and p.dst == control.host for p in ps))
        lab.wait_for(lambda: lab.accept_count() == 1, timeout=2, what="the control accepted")
        ctl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        ctl.close()  # a reset: the control leaves no TIME_WAIT either

    check_results(results, dict.fromkeys(targets, ("open", "syn-ack")), retries=0)
    flows = half_open_flows(cap, targets)
    assert len(flows) == len(targets)  # one attempt each
    assert {Target(k.server, k.server_port) for k in flows} == targets
    ctl_synack = next(p for p in pkts if p.src == control.host and p.label == "SA")
    ctl_ack = next(p for p in pkts if p.dst == control.host and p.label == "A")
    window = ctl_ack.time - ctl_synack.time  # measured 0.202 s
    assert window > 0.1, "the control's ACK was not delayed: TCP_QUICKACK 0 had no effect"
    for syn, synack, rst in flows.values():
        assert syn.time <= synack.time <= rst.time
        assert rst.time - synack.time < window  # measured ~30 us: the RST beats the ACK
    assert not [p for p in pkts if p.direction == "out" and p.label == "A"
                and Target(p.dst, p.dport or 0) in targets]
    assert lab.accept_stats()["by_addr"] == {control.host: 1}  # the control, and only it
    settle_and_check_no_state(lab, accepts=1)


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_state_via_the_cli(lab: Lab, fam: LabFamily) -> None:
    cases = state_cases(fam)
    opts = ["--timeout", str(FILTERED_TIMEOUT), "--retries", str(FILTERED_RETRIES)]
    with lab.capture("client") as cap:
        for target, (state, reason) in cases.items():  # one run per answer: its exit code
            code, rows, summary = run_cli(lab, *opts, str(target))
            assert code == (0 if state == "open" else 1), (target, rows)
            check_rows(rows, {target: (state, reason)}, FILTERED_RETRIES)
            assert summary["states"][state] == summary["targets"] == 1
        code, rows, summary = run_cli(lab, *opts, *map(str, cases))  # all at once
        assert code == 1
        check_rows(rows, cases, FILTERED_RETRIES)
        assert summary["states"]["open"] == 2 and summary["targets"] == len(cases)
    check_wire(cap, cases, runs=2, retries=FILTERED_RETRIES)
    settle_and_check_no_state(lab)


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_every_state_via_the_library(
    lab: Lab, fam: LabFamily, api: Callable[..., list[ProbeResult]]
) -> None:
    cases = state_cases(fam)
    with lab.capture("client") as cap:
        results = lab.run_in("client", api, list(cases), timeout=FILTERED_TIMEOUT,
                             retries=FILTERED_RETRIES)
    check_results(results, cases, FILTERED_RETRIES)
    check_wire(cap, cases, runs=1, retries=FILTERED_RETRIES)
    settle_and_check_no_state(lab)


@pytest.mark.parametrize("fam", FAMILIES)
def test_source_address_is_used_and_reported(lab: Lab, fam: LabFamily) -> None:
    # A second client address, so that --source is seen to choose: without it the kernel would
    # pick the primary address for every SYN. Its neighbour entry on the server is static, like
    # the lab's own: a fresh server's link-local address is still tentative, and until DAD ends
    # the kernel sends no neighbour solicitation for replies from an AnyIP address (measured:
    # both attempts of a check then time out, now and then).
    alt = str(ipaddress.ip_address(fam.client) + 2)
    lab.exec("client", ["ip", "addr", "add", f"{alt}/{fam.prefixlen}", "dev", lab.client_if,
                        *(["nodad"] if fam is V6 else [])])
    lab.exec("server", ["ip", "neigh", "replace", alt, "lladdr", CLIENT_MAC,
                        "dev", lab.server_if, "nud", "permanent"])
    cases = {
        Target(fam.server, OPEN_PORT): ("open", "syn-ack"),
        Target(fam.anyip_sample, OPEN_PORT): ("open", "syn-ack"),
        Target(fam.server, CLOSED_PORT): ("closed", "rst"),
    }
    with lab.capture("client") as cap:
        for source in (fam.client, alt):
            code, rows, _ = run_cli(lab, "--source", source, *map(str, cases))
            assert code == 1  # one closed port
            check_rows(rows, cases, retries=1, source=source)
    check_wire(cap, cases, runs=2, retries=1)
    sources = [k.client for k, seq in cap.flows().items()]
    assert sorted(sources) == sorted([fam.client] * len(cases) + [alt] * len(cases))
    settle_and_check_no_state(lab)


def cidr_of(fam: LabFamily, size: int, offset: int) -> list[str]:
    """A CIDR block of `size` AnyIP addresses starting `offset` blocks in, and its hosts."""
    net = ipaddress.ip_network(fam.anyip_net)
    bits = size.bit_length() - 1
    block = ipaddress.ip_network((net.network_address + offset * size, net.max_prefixlen - bits))
    return [str(block), *(str(a) for a in block)]


BATCH = 2048  # a /21 of v4, a /117 of v6


@pytest.mark.parametrize("fam", FAMILIES)
def test_batch_of_anyip_targets_all_open_nothing_left(lab: Lab, fam: LabFamily) -> None:
    cidr, *hosts = cidr_of(fam, BATCH, offset=4)
    with lab.capture("client") as cap:
        code, rows, summary = run_cli(lab, "-p", str(OPEN_PORT), "--rate", "0", cidr)
    assert code == 0
    assert summary["states"]["open"] == summary["targets"] == BATCH
    check_rows(rows, {Target(h, OPEN_PORT): ("open", "syn-ack") for h in hosts}, retries=1)
    # The CLI has exited: no socket of it is left to send anything, so the capture is final.
    check_wire(cap, {Target(h, OPEN_PORT): ("open", "syn-ack") for h in hosts}, runs=1,
               retries=1)
    settle_and_check_no_state(lab)


@pytest.mark.parametrize("fam", FAMILIES)
def test_batch_of_filtered_targets_ends_on_time(lab: Lab, fam: LabFamily) -> None:
    # Every attempt must end at its own deadline even when no answer ever arrives to wake the
    # engine: 2,048 targets x 2 attempts of 0.2 s at concurrency 1,000 take ~1 s. An attempt
    # that outlives the kernel's 1 s SYN retransmission shows as a second SYN in its flow (and,
    # were the target alive, could complete the handshake): none may.
    cidr, *hosts = cidr_of(fam, BATCH, offset=5)
    cases = {Target(h, FILTERED_PORT): ("filtered", "timeout") for h in hosts}
    with lab.capture("client") as cap:
        code, rows, summary = run_cli(lab, "-p", str(FILTERED_PORT), "--rate", "0",
                                      "--timeout", "0.2", "--retries", "1", cidr, timeout=10)
    assert code == 1
    assert summary["states"]["filtered"] == BATCH
    check_rows(rows, cases, retries=1)
    check_wire(cap, cases, runs=1, retries=1)
    settle_and_check_no_state(lab)


def test_mark_without_the_capability_is_one_clear_line_and_exit_3(lab: Lab) -> None:
    cmd = shlex.join([sys.executable, "-m", "synprobe", "--mark", "7", f"{V4.server}:{OPEN_PORT}"])
    proc = lab.exec("client", ["capsh", "--drop=cap_net_admin,cap_net_raw", "--", "-c",
                                      cmd], check=False)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("synprobe: error: the shaker engine needs CAP_NET_ADMIN or "
                           "CAP_NET_RAW to set a mark"), line
    assert "docs/engines.md#privileges" in line and "--" not in line  # the library's words
    assert proc.stdout == ""
    # With the capability the same check runs, marked.
    ok = lab.exec("client", [sys.executable, "-m", "synprobe", "--mark", "7", "--json",
                             f"{V4.server}:{OPEN_PORT}"], check=False)
    assert ok.returncode == 0 and '"state":"open"' in ok.stdout
