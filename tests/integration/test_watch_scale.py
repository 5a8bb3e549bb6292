"""`synprobe watch` with 1,000 lab targets: half of them go silent at once; a minute under 2 %
loss each way. Asserted on the wire's consequences: no accepts, no TIME_WAIT, no SYN_RECV
left, no spurious transitions, the schedule kept."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from synprobe_lab import OPEN_PORT, Lab
from synprobe_lab.silence import silence, unsilence
from synprobe_lab.topology import V4
from synprobe_lab.watchsvc import WatchProcess, count_lab_states

pytestmark = pytest.mark.netns

N = 1000
INTERVAL = 1.0


def scalar(metrics: str, name: str) -> dict[str, float]:
    """Samples of `name` by their `le`/`state`/... label (or "" without labels)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics):
        for s in fam.samples:
            if s.name == name:
                out[next(iter(s.labels.values()), "") if s.labels else ""] = s.value
    return out


def lateness_within(before: str, after: str, bound: str = "0.02") -> tuple[float, int]:
    """Share of checks started between two scrapes no later than `bound` seconds."""
    b = scalar(before, "synprobe_check_lateness_seconds_bucket")
    a = scalar(after, "synprobe_check_lateness_seconds_bucket")
    total = a["+Inf"] - b["+Inf"]
    return (a[bound] - b[bound]) / total, int(total)


def start_all_up(lab: Lab, args: list[str]) -> tuple[WatchProcess, list[str]]:
    hosts = [V4.anyip(i) for i in range(N)]
    watch = WatchProcess(lab, ["--interval", str(INTERVAL), *args,
                               *[f"{h}:{OPEN_PORT}" for h in hosts]])
    watch.wait_ready()
    ups = set()
    deadline = time.monotonic() + 15
    while len(ups) < N:
        _, e = watch.wait_event(lambda e: e.get("event") == "state",
                                timeout=deadline - time.monotonic())
        assert e["to"] == "up", e
        ups.add(e["host"])
    return watch, hosts


def test_half_of_1000_targets_go_silent_together(lab: Lab) -> None:
    fall = 2
    watch, hosts = start_all_up(lab, ["--timeout", "0.3", "--retries", "1", "--rise", "2",
                                      "--fall", str(fall)])
    try:
        silent = set(hosts[::2])
        before = watch.metrics()
        silence(lab.server, sorted(silent))
        t0 = time.monotonic()
        went_down: dict[str, float] = {}
        while len(went_down) < len(silent):
            stamp, e = watch.wait_event(lambda e: e.get("event") == "state", timeout=10)
            assert e["host"] in silent and e["to"] == "down", e
            went_down[e["host"]] = stamp - t0
        worst = max(went_down.values())
        assert worst <= fall * INTERVAL + INTERVAL, worst
        # A few more intervals: the healthy half keeps its schedule and never flaps.
        time.sleep(3 * INTERVAL)  # the span over which "nothing happens" is asserted
        after = watch.metrics()
        on_time, checks = lateness_within(before, after)
        assert checks >= 0.95 * N * (worst + 3 * INTERVAL)
        assert on_time >= 0.99, on_time
        status = {s["host"]: s["status"] for s in watch.status()}
        assert all(status[h] == ("down" if h in silent else "up") for h in hosts)
        changes = [e for _, e in watch.all_events if e.get("event") == "state"]
        unsilence(lab.server)
    finally:
        code = watch.stop()
    assert code == 0
    # Exactly: every first decision (up), then one "down" per silent target, nothing else.
    assert len(changes) == N + len(silent)
    assert {(e["host"], e["to"]) for e in changes[N:]} == {(h, "down") for h in silent}
    assert lab.accept_count() == 0
    assert count_lab_states(lab, "client", "time-wait") == 0


def test_a_minute_of_1000_targets_with_2_percent_loss(lab: Lab) -> None:
    watch, _hosts = start_all_up(lab, ["--timeout", "0.2", "--retries", "2", "--rise", "2",
                                       "--fall", "2"])
    try:
        t0 = time.monotonic()
        before = watch.metrics()
        phases = [(0.0, 15.0), (2.0, 35.0), (0.0, 12.0)]  # (loss %, seconds): 62 s in all
        drops = {"rx": 0, "tx": 0}
        for loss, seconds in phases:
            if lab.loss_percent:  # the table goes with the loss: read its counters first
                drops = lab.loss_drops()
            lab.set_loss(loss)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                assert watch.proc.poll() is None
                assert lab.accept_count() == 0
                time.sleep(1.0)  # sampling the accept count once a second
        elapsed = time.monotonic() - t0
        after = watch.metrics()
        on_time, checks = lateness_within(before, after)
    finally:
        code = watch.stop()
    assert code == 0
    # No SYN_RECV lingers: once the checks stop (a running service always has a few, for a
    # few µs each), every one is gone by the server's first SYN-ACK retransmission (1 s),
    # which the kernel resets when our RST was lost.
    deadline = time.monotonic() + 10
    while count_lab_states(lab, "server", "syn-recv") and time.monotonic() < deadline:
        time.sleep(0.2)
    syn_recv = count_lab_states(lab, "server", "syn-recv")
    assert elapsed >= 60
    assert drops["rx"] > 0 and drops["tx"] > 0  # the loss was real, both ways
    spurious = [e for _, e in watch.all_events[N:] if e.get("event") == "state"]
    assert spurious == []
    assert checks >= 0.999 * N * elapsed * 0.98, checks
    assert on_time >= 0.99, on_time
    assert lab.accept_count() == 0
    assert count_lab_states(lab, "client", "time-wait") == 0
    assert syn_recv == 0
    print(f"\n{checks} checks in {elapsed:.1f} s, {on_time:.2%} within 20 ms, loss drops {drops}")
