"""Large runs spread over processes: every target exactly once, nothing accepted."""

from __future__ import annotations

import json
import sys

import pytest

from synprobe_lab import OPEN_PORT, Lab

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("engine", ["shaker", "raw"])
def test_two_workers_cover_every_target_once(lab: Lab, engine: str) -> None:
    cmd = [sys.executable, "-m", "synprobe", "--engine", engine, "--workers", "2", "--json",
           "--rate", "0", "-p", str(OPEN_PORT), "198.19.0.0/20"]
    done = lab.exec("client", cmd, check=False, timeout=60)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    summary = json.loads(done.stderr.splitlines()[-1])["summary"]
    assert done.returncode == 0, done.stderr
    assert len(rows) == 4096 and len({r["host"] for r in rows}) == 4096
    assert {r["state"] for r in rows} == {"open"}
    assert summary["targets"] == 4096 and summary["states"]["open"] == 4096
    assert summary["stats"]["sent"] >= 4096  # both workers' counters are in the summary
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=3.0)
    assert lab.accept_count() == 0
    assert lab.count_states("client", "time-wait") == 0
