"""Event records and the --on-change runner: environment, timeout, failures, backlog."""

from __future__ import annotations

import asyncio
import os

from synprobe.model import ProbeResult, State
from synprobe.watch.events import ChangeRunner, event_env, event_record, rfc3339
from synprobe.watch.state import Transition


def record(port: int = 80) -> dict:
    result = ProbeResult("198.18.0.2", port, State.CLOSED, "rst", 0.000123, 1, "raw")
    return event_record("backend.example", port, None,
                        Transition("up", "down", result, 3, 1_700_000_000.25))


def test_record_and_environment() -> None:
    r = record()
    assert r == {"time": "2023-11-14T22:13:20.250Z", "event": "state",
                 "host": "backend.example", "port": 80, "via": None, "from": "up", "to": "down",
                 "state": "closed", "reason": "rst", "rtt_ms": 0.123, "count": 3,
                 "address": "198.18.0.2"}
    env = event_env(r)
    assert (env["SYNPROBE_HOST"], env["SYNPROBE_PORT"], env["SYNPROBE_VIA"],
            env["SYNPROBE_FROM"], env["SYNPROBE_TO"], env["SYNPROBE_RTT_MS"],
            env["SYNPROBE_TIME"]) == ("backend.example", "80", "", "up", "down", "0.123",
                                      "2023-11-14T22:13:20.250Z")
    assert env["PATH"] == os.environ["PATH"]
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_runner_timeout_failure_and_backlog(tmp_path) -> None:
    logged: list[str] = []

    async def scenario() -> ChangeRunner:
        marker = tmp_path / "ran"
        runner = ChangeRunner(f'[ "$SYNPROBE_PORT" = 81 ] && exit 7; '
                              f'[ "$SYNPROBE_PORT" = 82 ] && sleep 30; touch {marker}',
                              concurrency=2, timeout=0.3, backlog=4, log=logged.append)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for port in (80, 81, 82, 83, 84, 85):  # queued before any runs: 4 fit, 2 are dropped
            runner.submit(record(port))
        assert loop.time() - t0 < 0.05  # submit never waits for a command
        await runner.drain(10)
        runner.close()
        assert marker.exists()
        return runner

    runner = asyncio.run(scenario())
    assert runner.dropped == 2
    assert runner.ran == 3  # 80, 81 and 83; 82 was killed
    assert runner.failed == 2  # exit 7, and the timeout
    assert any("exited 7" in line and ":81 up->down" in line for line in logged)
    assert any("killed after 0.3 s" in line and ":82 " in line for line in logged)
    assert any("backlog full" in line for line in logged)
