"""`synprobe watch --via`: a DSR VIP watched through each real server (raw engine), rs1 up and
rs2 down as their listeners say, `via` in events, /status and /metrics; then rs1's listener
stops: only rs1's row goes down."""

from __future__ import annotations

import pytest

from synprobe_lab.dsr import DsrLab
from synprobe_lab.watchsvc import WatchProcess

pytestmark = pytest.mark.netns


def test_watch_through_each_real_server(dsr_lab: DsrLab) -> None:
    lab = dsr_lab
    rs1, rs2 = lab.rs_ip("rs1"), lab.rs_ip("rs2")
    watch = WatchProcess(lab, ["--engine", "raw", "--interval", "0.3", "--timeout", "0.2",  # type: ignore[arg-type]
                               "--rise", "2", "--fall", "2", "--via", rs1, "--via", rs2,
                               f"{lab.vip}:80"], ns="prober")
    try:
        watch.wait_ready()
        first = {}
        for _ in range(2):
            _, e = watch.wait_event(lambda e: e.get("event") == "state")
            first[e["via"]] = (e["to"], e["state"])
        assert first == {rs1: ("up", "open"), rs2: ("down", "closed")}
        status = {s["via"]: s["status"] for s in watch.status()}
        assert status == {rs1: "up", rs2: "down"}
        metrics = watch.metrics()
        assert f'synprobe_target_up{{host="{lab.vip}",port="80",via="{rs1}"}} 1' in metrics
        assert f'synprobe_target_up{{host="{lab.vip}",port="80",via="{rs2}"}} 0' in metrics
        lab.stop_listener("rs1")
        _, down = watch.wait_event(lambda e: e.get("to") == "down")
        assert (down["via"], down["from"], down["count"]) == (rs1, "up", 2)
    finally:
        code = watch.stop()
    assert code == 0
    assert lab.accept_count("rs1") == 0
