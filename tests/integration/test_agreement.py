"""The two engines agree: the same targets, probed from the lab's client namespace by the shaker
engine (kernel sockets) and by the raw engine (crafted SYNs), end in the same states.

Open, closed, filtered and unreachable (nft reject, an ICMP-answering prefix, a real
`unreachable` route), IPv4 and IPv6, plus a small AnyIP sweep per port.
"""

from __future__ import annotations

import ipaddress

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
    Lab,
    LabFamily,
)

pytestmark = pytest.mark.netns

FAMILIES = [pytest.param(V4, id="v4"), pytest.param(V6, id="v6")]


def expected(fam: LabFamily) -> dict[Target, str]:
    block = ipaddress.ip_network(fam.anyip_net)
    sweep = [str(block.network_address + 4096 + i) for i in range(32)]
    # The server's real `unreachable` route too: v4's ICMP is rate-limited to a burst of 5
    # per client address, and these are its first two probes (one per engine).
    want = {target: state for target, (state, _) in lab_states(fam).items()}
    for port, state in ((OPEN_PORT, "open"), (CLOSED_PORT, "closed"),
                        (FILTERED_PORT, "filtered")):
        want.update((Target(host, port), state) for host in sweep)
    return want


def probe_all(engine: str, targets: list[Target]) -> dict[Target, ProbeResult]:
    with synprobe.probe_many(targets, engine=engine, timeout=0.25, retries=1) as results:
        return {Target(r.host, r.port): r for r in results}


@pytest.mark.parametrize("fam", FAMILIES)
def test_shaker_and_raw_give_the_same_states(lab: Lab, fam: LabFamily) -> None:
    want = expected(fam)
    got = {engine: lab.run_in("client", probe_all, engine, list(want))
           for engine in ("shaker", "raw")}
    states = {engine: {t: r.state.value for t, r in results.items()}
              for engine, results in got.items()}
    disagree = {t: (states["shaker"].get(t), states["raw"].get(t)) for t in want
                if states["shaker"].get(t) != states["raw"].get(t)}
    assert not disagree, f"shaker vs raw: {disagree}"
    assert states["raw"] == want
    # Beyond the states, the evidence agrees too: shaker reads the ICMP error from its socket's
    # error queue, raw from the packet itself; a filtered target took every attempt in both.
    verdicts = {engine: {t: (r.reason, r.attempts, r.engine) for t, r in results.items()}
                for engine, results in got.items()}
    assert {t: v[:2] for t, v in verdicts["shaker"].items()} == {
        t: v[:2] for t, v in verdicts["raw"].items()}
    assert {v[2] for v in verdicts["shaker"].values()} == {"shaker"}
    assert {v[2] for v in verdicts["raw"].values()} == {"raw"}
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=0.5)
    assert lab.accept_count() == 0 and lab.count_states("client", "time-wait") == 0
