"""Issue 4's correctness at speed: with 10,000 checks in flight the shaker still closes every
socket well inside the kernel's ~200 ms delayed-ACK window, so the listener never accepts."""

from __future__ import annotations

import pytest

import synprobe
from synprobe.model import State
from synprobe_lab import OPEN_PORT, Lab

pytestmark = pytest.mark.netns

TARGETS = 30_000


def test_ten_thousand_in_flight_make_no_full_connection(lab: Lab) -> None:
    def sweep() -> tuple[int, int, dict[str, int]]:
        targets = ((lab.v4.anyip(i), OPEN_PORT) for i in range(TARGETS))
        with synprobe.probe_many(targets, concurrency=10_000, timeout=0.9, retries=1) as stream:
            states = [r.state for r in stream]
            return len(states), states.count(State.OPEN), stream.stats()

    done, opened, stats = lab.run_in("client", sweep)
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=5.0,
                 what="the server's half-open entries to drain")
    assert done == TARGETS
    assert opened == TARGETS, stats
    assert lab.accept_count() == 0
    assert lab.listen_queue("server", OPEN_PORT) == 0
    assert lab.count_states("client", "time-wait") == 0
