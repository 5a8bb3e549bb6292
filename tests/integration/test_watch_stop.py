"""SIGTERM/SIGINT stop `synprobe watch` within a second, exit 0, and leave nothing behind on the
wire: no accept, no TIME_WAIT, no SYN_RECV on the server once its retransmissions are reset."""

from __future__ import annotations

import signal
import time

import pytest

from synprobe_lab import OPEN_PORT, Lab
from synprobe_lab.topology import V4, V6
from synprobe_lab.watchsvc import WatchProcess, count_lab_states

pytestmark = pytest.mark.netns


@pytest.mark.parametrize(("engine", "sig"), [("raw", signal.SIGTERM), ("shaker", signal.SIGINT)])
def test_stop_mid_run(lab: Lab, tmp_path, engine: str, sig: int) -> None:
    targets = tmp_path / "targets"
    hosts = [V4.anyip(i) for i in range(500)] + [f"[{V6.anyip(i)}]" for i in range(500)]
    targets.write_text("\n".join(f"{h}:{OPEN_PORT}" for h in hosts))
    lab.set_loss(5)  # some SYN-ACKs and RSTs lost: the server retransmits while we stop
    watch = WatchProcess(lab, ["--engine", engine, "--interval", "0.5", "--timeout", "0.2",
                               "-iL", str(targets)])
    watch.wait_ready()
    watch.wait_event(lambda e: e.get("to") == "up")
    time.sleep(1.0)  # a few rounds of checks, so that the stop lands among checks in flight
    t0 = time.monotonic()
    watch.proc.send_signal(sig)
    code = watch.proc.wait(5)
    took = time.monotonic() - t0
    watch.stop()
    lab.set_loss(0)
    assert code == 0 and took < 1.0, (code, took)
    deadline = time.monotonic() + 10
    while count_lab_states(lab, "server", "syn-recv") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count_lab_states(lab, "server", "syn-recv") == 0
    assert lab.accept_count() == 0
    assert count_lab_states(lab, "client", "time-wait") == 0
