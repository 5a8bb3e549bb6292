"""`synprobe watch` scraped by a real Prometheus in the lab: up/down for open, closed and
filtered targets (IPv4, IPv6); a listener stopped and started again; --on-change; no accepts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synprobe_lab import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, Lab
from synprobe_lab.silence import extra_listener
from synprobe_lab.topology import V4, V6
from synprobe_lab.watchsvc import PrometheusProcess, WatchProcess, count_lab_states

pytestmark = pytest.mark.netns

FLAP_PORT = 8080
INTERVAL, RISE, FALL = 0.5, 2, 2


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def up_by_target(prom: PrometheusProcess) -> dict[tuple[str, str], float]:
    return {(r["metric"]["host"], r["metric"]["port"]): float(r["value"][1])
            for r in prom.query("synprobe_target_up")}


def on_change_records(directory: Path) -> list[dict[str, str]]:
    out = []
    for f in sorted(directory.iterdir()):
        text = f.read_text()
        if text.endswith("END\n"):  # written completely
            out.append(dict(line.split("=", 1) for line in text.splitlines()[:-1]))
    return out


@pytest.mark.parametrize("engine", ["raw", "shaker"])
def test_prometheus_sees_up_down_and_a_flap(lab: Lab, tmp_path: Path, engine: str) -> None:
    flapper = extra_listener(lab.server, FLAP_PORT)
    changes = tmp_path / "changes"
    changes.mkdir()
    on_change = (f'f={changes}/$(date +%s%N)-$$; env | grep ^SYNPROBE_ | sort > "$f.tmp"; '
                 f'echo END >> "$f.tmp"; mv "$f.tmp" "$f"')
    targets = [f"{V4.server}:{p}" for p in (OPEN_PORT, CLOSED_PORT, FILTERED_PORT, FLAP_PORT)]
    targets += [f"[{V6.server}]:{p}" for p in (OPEN_PORT, CLOSED_PORT, FILTERED_PORT)]
    watch = WatchProcess(lab, ["--engine", engine, "--interval", str(INTERVAL), "--timeout",
                               "0.2", "--retries", "1", "--rise", str(RISE), "--fall",
                               str(FALL), "--on-change", on_change, *targets])
    try:
        watch.wait_ready()
        prom = PrometheusProcess(lab, tmp_path, {"synprobe": [f"127.0.0.1:{watch.port}"]})
        expected = {(V4.server, "80"): 1.0, (V4.server, "81"): 0.0, (V4.server, "82"): 0.0,
                    (V4.server, "8080"): 1.0, (V6.server, "80"): 1.0, (V6.server, "81"): 0.0,
                    (V6.server, "82"): 0.0}
        wait_until(lambda: up_by_target(prom) == expected, 30, "Prometheus to see every target")

        stopped = time.monotonic()
        flapper.stop()
        stamp, down = watch.wait_event(lambda e: e.get("port") == FLAP_PORT
                                       and e.get("to") == "down")
        assert stamp - stopped <= FALL * INTERVAL + INTERVAL, stamp - stopped
        assert (down["from"], down["state"], down["reason"], down["count"]) == (
            "up", "closed", "rst", FALL)
        env = wait_until(lambda: [r for r in on_change_records(changes)
                                  if r["SYNPROBE_PORT"] == str(FLAP_PORT)
                                  and r["SYNPROBE_TO"] == "down"], 5, "the on-change command")[0]
        assert (env["SYNPROBE_HOST"], env["SYNPROBE_FROM"], env["SYNPROBE_STATE"],
                env["SYNPROBE_REASON"], env["SYNPROBE_VIA"]) == (
            V4.server, "up", "closed", "rst", "")
        assert env["SYNPROBE_TIME"] == down["time"]
        wait_until(lambda: up_by_target(prom).get((V4.server, "8080")) == 0.0, 10,
                   "Prometheus to see the target down")

        restarted = time.monotonic()
        flapper = extra_listener(lab.server, FLAP_PORT)
        stamp, up = watch.wait_event(lambda e: e.get("port") == FLAP_PORT and e.get("to") == "up")
        assert (up["from"], up["count"]) == ("down", RISE)
        assert stamp - restarted <= RISE * INTERVAL + INTERVAL, stamp - restarted
        wait_until(lambda: up_by_target(prom).get((V4.server, "8080")) == 1.0, 10,
                   "Prometheus to see the target up again")
        transitions = {(r["metric"]["host"], r["metric"]["port"], r["metric"]["to"]):
                       float(r["value"][1]) for r in prom.query("synprobe_transitions_total")}
        assert transitions[V4.server, "8080", "down"] == 1.0
        prom.stop()
        flap_accepts = flapper.accept_count()
    finally:
        code = watch.stop()
        flapper.stop()
    assert code == 0
    # Nobody else flapped: one event each, their first decision.
    others = [e for _, e in watch.all_events
              if e.get("event") == "state" and e["port"] != FLAP_PORT]
    assert sorted((e["host"], e["port"], e["from"]) for e in others) == sorted(
        (h, int(p), "unknown") for h, p in expected if p != "8080")
    assert lab.accept_count() == 0 and flap_accepts == 0
    assert count_lab_states(lab, "client", "time-wait") == 0
