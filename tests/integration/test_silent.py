"""Issue 11 on the wire: a sweep where most targets never answer, through the CLI with its
defaults (but --rate 0), finishes within a bound set by timeout x attempts, not by the number
of targets over a fixed in-flight cap; every open port is found, half-open as always."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from synprobe_lab import OPEN_PORT, Lab

pytestmark = pytest.mark.netns

NET_BITS = 14  # 198.19.0.0/18: 16,384 targets
MASK = 15  # the server drops SYNs to addresses whose low 4 bits are not 0: 15 of every 16
TIMEOUT, ATTEMPTS = 0.5, 2  # the CLI's defaults (--timeout 0.5, --retries 1)
# Interpreter start, target generation and the output, on a shared 2-core machine. Far below
# what the old fixed cap cost: 15,360 silent targets / 1,000 in flight x 1 s = 15.4 s.
SLACK_S = 4.0
SRC = str(Path(__file__).resolve().parents[2] / "src")


def drop_most(lab: Lab) -> None:
    lab.exec("server", ["nft", "-f", "-"], input=f"""\
table inet synprobe_silent {{
    chain rx {{
        type filter hook prerouting priority raw; policy accept;
        ip daddr {lab.v4.anyip_net} ip daddr & 0.0.0.{MASK} != 0.0.0.0 tcp dport {OPEN_PORT} drop
    }}
}}
""")


@pytest.mark.parametrize("engine", ["raw", "shaker"])
def test_a_mostly_silent_sweep_with_defaults_is_bounded_by_the_timeout(
        engine: str, lab: Lab) -> None:
    drop_most(lab)
    net = f"{lab.v4.anyip_net.split('/')[0]}/{32 - NET_BITS}"
    targets = 1 << NET_BITS
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    proc = lab.popen("client", [sys.executable, "-m", "synprobe", "--engine", engine,
                                "--rate", "0", "--json", "-q", "-p", str(OPEN_PORT), net],
                     stdout=-1, stderr=-1, text=True, env=env)
    out, err = proc.communicate(timeout=60)
    wall = time.monotonic() - started
    assert proc.returncode == 1, err  # 1: not every target open
    rows = [json.loads(line) for line in out.splitlines()]
    states = {s: sum(r["state"] == s for r in rows) for s in ("open", "filtered")}
    assert len(rows) == targets
    assert states == {"open": targets // (MASK + 1), "filtered": targets - targets // (MASK + 1)}
    # The default puts the whole sweep in flight at once (raw: its memory budget; shaker:
    # 16,384 sockets): one round of timeout x attempts, then the verdicts.
    rounds = 1
    bound = rounds * TIMEOUT * ATTEMPTS + SLACK_S
    assert wall <= bound, f"{engine}: {wall:.2f} s for {targets:,} targets (bound {bound} s)"
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=5.0,
                 what="the server's half-open entries to drain")
    assert lab.accept_count() == 0
    assert lab.count_states("client", "time-wait") == 0
