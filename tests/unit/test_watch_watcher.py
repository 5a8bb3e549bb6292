"""The Watcher on a fake engine: schedule, rise/fall events, local failures, busy targets,
reloads, names. Conditions are awaited (with a safety timeout), never slept for."""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import synprobe
import synprobe.registry as registry
from synprobe.engines.base import ProbeOptions
from synprobe.model import State, Target
from synprobe.testing import FakeEngine
from synprobe.watch.config import parse_config
from synprobe.watch.watcher import BATCH_GOAL, TICK_FLOOR, TICK_MAX, TICK_MIN, TICK_SHARE, auto_tick

WAIT = 5.0


class Net:
    """A fake network whose answers a test changes while the Watcher runs."""

    def __init__(self) -> None:
        self.answers: dict[int, tuple[State, str]] = {}
        self.delay = 0.0
        self.seen: list[tuple[float, Target]] = []
        self.lock = threading.Lock()

    def __call__(self, target: Target) -> tuple[State, str]:
        with self.lock:
            self.seen.append((time.monotonic(), target))
        if self.delay:
            time.sleep(self.delay)
        return self.answers.get(target.port, (State.OPEN, "syn-ack"))

    def count(self, port: int) -> int:
        with self.lock:
            return sum(1 for _, t in self.seen if t.port == port)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    fake = Net()
    monkeypatch.setitem(registry._registered, "fake",
                        lambda options: FakeEngine(fake, options))
    return fake


class Events:
    def __init__(self) -> None:
        self.q: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.all: list[dict] = []

    def __call__(self, record: dict) -> None:
        self.q.put(record)

    def next(self, where: Callable[[dict], bool] = lambda r: True) -> dict:
        deadline = time.monotonic() + WAIT
        while True:
            record = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            self.all.append(record)
            if where(record):
                return record


def config(targets: list[str], **settings: object):
    return parse_config({"resolve_interval": settings.pop("resolve_interval", 30),
                         "groups": {"g": {"engine": "fake", "interval": 0.05, "rise": 2,
                                          "fall": 2, **settings, "targets": targets}}})


@pytest.fixture
def running(net: Net) -> Iterator[Callable[..., tuple[synprobe.Watcher, Events]]]:
    made: list[synprobe.Watcher] = []

    def start(cfg, **kw) -> tuple[synprobe.Watcher, Events]:
        events = Events()
        w = synprobe.Watcher(cfg, event_sinks=[events], **kw)
        made.append(w)
        w.start()
        return w, events

    yield start
    for w in made:
        w.stop()


def test_first_check_decides_then_fall_and_rise(running, net: Net) -> None:
    w, events = running(config(["198.18.0.2:80", "198.18.0.2:81"]))
    first = {(e["port"], e["to"]) for e in (events.next(), events.next())}
    assert first == {(80, "up"), (81, "up")}
    net.answers[81] = (State.CLOSED, "rst")
    down = events.next()
    assert (down["port"], down["from"], down["to"], down["state"], down["reason"],
            down["count"]) == (81, "up", "down", "closed", "rst", 2)
    assert {"time", "host", "port", "via", "rtt_ms"} <= down.keys()
    net.answers[81] = (State.OPEN, "syn-ack")
    up = events.next()
    assert (up["port"], up["from"], up["to"], up["count"]) == (81, "down", "up", 2)
    w.stop()
    assert not any(e["port"] == 80 for e in events.all[2:])  # the other target never flapped
    status = {s["port"]: s for s in w.status()}
    assert status[80]["status"] == "up" and status[81]["status"] == "up"


def test_local_failures_move_nothing(running, net: Net) -> None:
    w, events = running(config(["198.18.0.2:80"]))
    events.next()
    net.answers[80] = (State.ERROR, "EMFILE")
    start = w.local_errors
    deadline = time.monotonic() + WAIT
    while w.local_errors < start + 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.local_errors >= start + 5
    assert w.status()[0]["status"] == "up"
    assert w.status()[0]["reason"] == "EMFILE"  # shown as the last result
    assert events.q.empty()


def test_a_busy_target_is_not_checked_twice_and_its_lateness_shows(running, net: Net) -> None:
    net.delay = 0.12  # each check takes more than two 0.05 s intervals
    w, _events = running(config(["198.18.0.2:80"]))
    deadline = time.monotonic() + WAIT
    while net.count(80) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    starts = [t for t, _ in net.seen]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.1  # never overlapping
    assert w.checks_skipped >= 2
    assert w.lateness.quantile(0.99) >= 0.05


def test_checks_are_spread_and_on_time(running, net: Net) -> None:
    w, _ = running(config([f"198.18.0.{i}:80" for i in range(1, 51)], interval=0.5))
    deadline = time.monotonic() + WAIT
    while w.checks_started < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    w.stop()
    with net.lock:
        first = sorted(t for t, _ in net.seen)[:50]
    span = first[-1] - first[0]
    assert 0.4 < span < 0.6  # 50 targets over one 0.5 s interval, not at once
    assert w.lateness.quantile(0.5) <= 0.005


def test_a_tick_starts_what_is_due_within_half_a_tick_never_earlier(running, net: Net
                                                                     ) -> None:
    """Each tick also starts the checks due before the next half tick, so a check leaves
    within half a tick of its slot on either side (a check waited up to a whole tick)."""
    tick, interval = 0.2, 0.5
    starts: list[tuple[float, float]] = []  # (when the scheduler started it, its slot)
    w = synprobe.Watcher(config(["198.18.0.2:80"], interval=interval), tick=tick)
    original = w._start

    def recording(entry, due, now, batches) -> None:  # type: ignore[no-untyped-def]
        starts.append((now, due))
        original(entry, due, now, batches)

    w._start = recording  # type: ignore[method-assign]
    w.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(starts) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.stop()
    assert len(starts) >= 4
    slots = [due for _, due in starts]
    assert all(abs(b - a - interval) < 1e-9 for a, b in itertools.pairwise(slots))  # no drift
    for now, due in starts:
        assert now >= due - tick / 2 - 1e-6  # never more than half a tick early
    # The scheduler slept until half a tick before each later slot: those left early.
    assert all(now < due for now, due in starts[1:])
    # ... and counted as 0 late, not as negative lateness.
    assert w.lateness.count == len(starts)
    assert w.lateness.sum == pytest.approx(sum(max(0.0, now - due) for now, due in starts))


def test_the_tick_is_long_enough_for_a_batch_and_short_against_the_intervals() -> None:
    assert auto_tick([1.0] * 2000) == TICK_MAX  # 2,000 checks a second: 40 take 20 ms
    assert auto_tick([1.0] * 3000) == pytest.approx(BATCH_GOAL / 3000)
    assert auto_tick([1.0] * 100_000) == TICK_MIN  # busy: never under the minimum
    assert auto_tick([1.0] * 3) == TICK_MAX  # idle: never over the maximum
    assert auto_tick([0.3] + [30.0] * 10) == pytest.approx(0.3 * TICK_SHARE)  # the shortest
    assert auto_tick([0.01]) == TICK_FLOOR
    assert auto_tick([]) == TICK_MAX


def test_the_watcher_sizes_its_tick_from_the_config_unless_given_one(running) -> None:
    cfg = config([f"198.18.0.{i}:80" for i in range(1, 21)], interval=2.0)
    w, _ = running(cfg)
    assert w.tick == auto_tick([2.0] * 20)
    fixed, _ = running(cfg, tick=0.007)
    assert fixed.tick == 0.007


def test_reload_keeps_unchanged_state_adds_and_removes(running, net: Net) -> None:
    new = config(["198.18.0.2:80", "198.18.0.4:80"])
    w2, events2 = running(config(["198.18.0.2:80", "198.18.0.3:80"]))
    events2.next()
    events2.next()
    before = {s["host"]: s for s in w2.status()}
    hooks: list = []
    w2.reload_hooks.append(hooks.append)
    w2.reload(new)
    added = events2.next()
    assert added["host"] == "198.18.0.4" and added["from"] == "unknown"
    after = {s["host"]: s for s in w2.status()}
    assert set(after) == {"198.18.0.2", "198.18.0.4"}
    assert after["198.18.0.2"]["since"] == before["198.18.0.2"]["since"]  # state kept
    assert hooks == [new]
    assert w2.reloads["ok"] == 1


def test_unresolvable_name_is_the_targets_failure_and_address_changes_are_events(
        running, net: Net) -> None:
    answers = {"backend.example": "198.18.0.5"}

    def resolver(name, *rest):
        addr = answers.get(name)
        if addr is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, 0))]

    _w, events = running(config(["backend.example:80", "gone.example:80"],
                               resolve_interval=0.05), resolver=resolver)
    got = {}
    for _ in range(3):
        e = events.next()
        got[(e["event"], e["host"])] = e
    assert got["address", "backend.example"]["to"] == "198.18.0.5"
    assert got["state", "backend.example"]["to"] == "up"
    gone = got["state", "gone.example"]
    assert (gone["to"], gone["state"], gone["reason"]) == (
        "down", "unreachable", "dns-name-or-service-not-known")
    answers["backend.example"] = "198.18.0.6"
    moved = events.next(lambda e: e["event"] == "address")
    assert (moved["from"], moved["to"]) == ("198.18.0.5", "198.18.0.6")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with net.lock:
            if any(t.host == "198.18.0.6" for _, t in net.seen):
                break
        time.sleep(0.01)
    with net.lock:
        assert any(t.host == "198.18.0.6" for _, t in net.seen)
        assert not any(t.host.endswith(".example") for _, t in net.seen)


def test_stop_is_quick_and_closes_probers(running, net: Net) -> None:
    w, events = running(config([f"198.18.0.{i}:80" for i in range(1, 21)]))
    events.next()
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 1.0
    assert w._probers == {}


def test_engine_that_cannot_start_fails_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(options: ProbeOptions) -> FakeEngine:
        raise PermissionError("the raw engine needs CAP_NET_RAW")
    monkeypatch.setitem(registry._registered, "fake", refuse)
    with pytest.raises(PermissionError, match="CAP_NET_RAW"):
        synprobe.Watcher(config(["198.18.0.2:80"])).start()


def test_via_with_an_engine_that_cannot_is_refused_at_start(net: Net) -> None:
    cfg = parse_config({"groups": {"g": {"engine": "fake", "via": "198.18.1.11",
                                         "targets": ["198.18.0.2:80"]}}})
    with pytest.raises(synprobe.UsageError, match="real server"):
        synprobe.Watcher(cfg).start()


def test_a_hook_that_refuses_a_config_keeps_the_running_one(running, net: Net) -> None:
    w, events = running(config(["198.18.0.2:80"]))
    events.next()

    def refuse(cfg) -> None:
        if any(t.port == 81 for t in cfg.targets):
            raise synprobe.UsageError("probe_allow: bad CIDR")

    w.reload_hooks.append(refuse)
    with pytest.raises(synprobe.UsageError, match="probe_allow"):
        w.reload(config(["198.18.0.2:80", "198.18.0.2:81"]))
    assert [s["port"] for s in w.status()] == [80]
    assert w.reloads["ok"] == 0
