"""The engines agree on ICMP: every row of docs/engines-icmp.md's table, on the wire.

An injector in the lab's server namespace answers each SYN to port BASE + 256 * type + code with
that ICMP(v6) error quoting the SYN (nftables `reject` cannot send 3/4, 11 or 12); the lab's
server has no ICMP rate limit, and the injector sends from raw sockets, which have none. Both
engines probe every row from the client namespace and must report the table's (state, reason).
"""

from __future__ import annotations

import pytest

import synprobe
from synprobe.model import ProbeResult, Target
from synprobe_lab import V4, V6, Lab, LabFamily
from synprobe_lab.icmp_injector import IcmpInjector
from synprobe_lab.icmp_table import expected_icmp_verdicts
from synprobe_lab.topology import NFT_TABLE

pytestmark = pytest.mark.netns

TIMEOUT, RETRIES = 0.5, 1


def probe_all(engine: str, targets: list[Target]) -> dict[Target, ProbeResult]:
    with synprobe.probe_many(targets, engine=engine, timeout=TIMEOUT,
                             retries=RETRIES) as results:
        return {Target(r.host, r.port): r for r in results}


@pytest.mark.parametrize("fam", [pytest.param(V4, id="v4"), pytest.param(V6, id="v6")])
def test_both_engines_read_every_icmp_error_as_the_table_says(lab: Lab, fam: LabFamily) -> None:
    v6 = fam is V6
    table = {row: verdict for row, verdict in expected_icmp_verdicts().items() if row[0] == v6}
    with IcmpInjector(lab, NFT_TABLE) as injector:
        want = {Target(fam.server, injector.port(t, c)): verdict
                for (_, t, c), verdict in table.items()}
        got = {engine: lab.run_in("client", probe_all, engine, list(want))
               for engine in ("shaker", "raw")}
    for engine, results in got.items():
        verdicts = {t: (r.state.value, r.reason) for t, r in results.items()}
        wrong = {f"{t.port - injector.base >> 8}/{t.port - injector.base & 0xFF}":
                 (verdicts.get(t), w) for t, w in want.items() if verdicts.get(t) != w}
        assert not wrong, f"{engine}: (got, table) per ICMP type/code: {wrong}"
        # An ICMP verdict ends the check on its first attempt; a path-MTU message does not.
        assert {t: r.attempts for t, r in results.items()} == {
            t: 1 + RETRIES * (w[1] == "timeout") for t, w in want.items()}
    assert lab.accept_count() == 0
