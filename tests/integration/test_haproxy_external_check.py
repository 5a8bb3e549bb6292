"""A real HAProxy uses synprobe-haproxy-check as its external check, in the namespace lab.

Two servers (IPv4 on the lab listener, IPv6 on a listener of our own); stop the second one's
listener: HAProxy marks it DOWN after exactly `fall` failed checks; start it again: UP after
`rise` passed checks. The first server never flaps, and no listener ever accepts a connection.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from synprobe_lab import OPEN_PORT, Lab
from synprobe_lab.haproxy import HAProxyProcess, Server
from synprobe_lab.listener_ctl import ListenerProcess

pytestmark = pytest.mark.netns

CHECK = Path(sys.executable).with_name("synprobe-haproxy-check")
SECOND_PORT = 9002
# HAProxy kills a check still running after `inter` and counts it failed: 1 s leaves a loaded
# CI machine room to start a Python process per check (~50 ms idle, several times that busy).
INTER_MS, RISE, FALL = 1000, 2, 3


def _runs_of(proxy: HAProxyProcess, name: str, since: int) -> list[int]:
    return [rc for n, rc in proxy.check_runs()[since:] if n == name]


def _watch_until(proxy: HAProxyProcess, name: str, want: str, bad_rc: int, limit: int,
                 timeout: float, since: int) -> tuple[int, list[str]]:
    """Poll until `name` is `want`. Each poll reads the check log before and after `show stat`:
    the state may only be `want` once at least `limit` runs exited `bad_rc` (each run logs
    before it exits), and never still be short of `want` after more than `limit` did.
    Runs are counted from index `since` of the check log (taken before the change).
    Returns the number of such runs when `want` was first seen, and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _runs_of(proxy, name, since).count(bad_rc)
        stat = proxy.status()
        after = _runs_of(proxy, name, since).count(bad_rc)
        assert stat["s1"] == "UP", f"s1 flapped: {stat}"
        seen.append(stat[name])
        if stat[name] == want:
            assert after >= limit, f"{name} became {want} after {after} runs: {seen}"
            return after, seen
        assert before <= limit, f"{name} still {stat[name]} after {before} runs: {seen}"
        time.sleep(INTER_MS / 1000 / 6)  # several looks per check interval
    raise AssertionError(f"{name} never became {want} in {timeout} s: {seen[-5:]}")


def test_haproxy_marks_servers_by_synprobe_external_check(lab: Lab) -> None:
    assert CHECK.exists(), f"{CHECK} missing: pip install -e . puts it beside the interpreter"
    second = ListenerProcess(lab.server, (SECOND_PORT,))
    restarted: ListenerProcess | None = None
    servers = [Server("s1", lab.v4.server, OPEN_PORT), Server("s2", lab.v6.server, SECOND_PORT)]
    proxy = HAProxyProcess(lab, "client", servers,
                           [str(CHECK), "--timeout", "0.2", "--retries", "0"],
                           inter_ms=INTER_MS, rise=RISE, fall=FALL)
    try:
        # HAProxy starts servers UP at the lowest UP health; wait for full health on both so
        # that the fall count below starts from a settled server.
        full = str(RISE + FALL - 1)
        lab.wait_for(lambda: all(r["status"] == "UP" and r["check_health"] == full
                                 for r in proxy.show_stat().values()),
                     timeout=10.0 + 3 * INTER_MS / 1000, what="both servers UP at full health")
        assert {n for n, rc in proxy.check_runs() if rc == 0} == {"s1", "s2"}

        second_accepts = second.accept_count()
        since = len(proxy.check_runs())
        second.stop()
        failed, seen = _watch_until(proxy, "s2", "DOWN", bad_rc=1, limit=FALL,
                                    timeout=FALL * INTER_MS / 1000 * 4 + 3, since=since)
        print(f"s2 after its listener stopped: {seen[0]} ... DOWN after {failed} failed checks")
        assert any(s.startswith("UP ") for s in seen), seen  # the transitional "UP n/m" forms

        since = len(proxy.check_runs())
        restarted = ListenerProcess(lab.server, (SECOND_PORT,))
        passed, seen = _watch_until(proxy, "s2", "UP", bad_rc=0, limit=RISE,
                                    timeout=RISE * INTER_MS / 1000 * 4 + 3, since=since)
        print(f"s2 after its listener restarted: UP after {passed} passed checks")

        # Not one of the checks above opened a connection on any listener.
        assert lab.accept_count() == 0
        assert second_accepts == 0
        assert restarted.accept_count() == 0
        assert lab.count_states("client", "time-wait") == 0
    finally:
        proxy.stop()
        if restarted is not None:
            restarted.stop()
        second.stop()
