"""The watch service's scheduler as loop callbacks, and its raw Probers on its own loop
(LoopProber): a failing tick ends the service with one line, a Watcher opened but never run
closes its Probers, and checks go through a LoopProber on the fake network of test_raw_engine."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import test_loop_prober
from test_raw_engine import FakeNet

import synprobe
from synprobe.loop_prober import LoopProber
from synprobe.model import Target
from synprobe.watch.config import Settings, WatchConfig, parse_config

WAIT = 5.0  # a hang guard, never a synchronisation
net = test_loop_prober.net  # the fixture: engine "raw" on the fake network


def config(targets: list[str]) -> WatchConfig:
    return parse_config({"groups": {"g": {"interval": 0.05, "rise": 1, "fall": 1,
                                          "targets": targets}}})


class FakeProber:
    """What the Watcher uses of a Prober; `submit_many` raises `error` if one is given."""

    engine_name = "fake"

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.submitted: list[Target] = []
        self.closed = threading.Event()

    def submit_many(self, targets: list[Target], *, on_results: Any = None) -> list[Any]:
        if self.error is not None:
            raise self.error
        self.submitted += targets
        return []

    def stats(self) -> dict[str, int]:
        return {"sent": len(self.submitted)}

    def close(self, timeout: float | None = None) -> None:
        self.closed.set()


class Factory:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.made: list[FakeProber] = []

    def __call__(self, settings: Settings, concurrency: int) -> FakeProber:
        self.made.append(FakeProber(self.error))
        return self.made[-1]


def test_a_failing_tick_logs_one_line_and_stops_the_service() -> None:
    lines: list[str] = []
    factory = Factory(ValueError("a bug in the scheduler's path"))
    watcher = synprobe.Watcher(config(["198.18.0.2:80"]), prober_factory=factory,
                               log=lines.append)
    asyncio.run(asyncio.wait_for(watcher.run(), WAIT))  # returns: the service stopped itself
    [line] = lines
    assert "\n" not in line and "scheduler failed" in line and "ValueError" in line
    [prober] = factory.made
    assert prober.closed.is_set() and watcher._probers == {}


def test_aclose_after_open_without_run_closes_the_probers() -> None:
    factory = Factory()
    watcher = synprobe.Watcher(config(["198.18.0.2:80", "198.18.0.3:80"]),
                               prober_factory=factory)

    async def body() -> None:
        await watcher.open()
        [prober] = factory.made
        assert not prober.closed.is_set()
        await watcher.aclose()
        assert prober.closed.is_set() and watcher._probers == {}
        assert prober.submitted == []  # never run: nothing was checked

    asyncio.run(asyncio.wait_for(body(), WAIT))


def test_aclose_after_open_closes_a_loop_prober(net: FakeNet) -> None:
    watcher = synprobe.Watcher(config(["127.0.0.2:80"]))

    async def body() -> None:
        await watcher.open()
        [prober] = watcher._probers.values()
        assert isinstance(prober, LoopProber) and prober._loop is asyncio.get_running_loop()
        assert prober._polled  # the ticks read its replies: it never wakes the loop itself
        await watcher.aclose()
        assert net.closed and watcher._probers == {}

    asyncio.run(asyncio.wait_for(body(), WAIT))


def test_the_watcher_checks_through_a_loop_prober_on_its_own_loop(net: FakeNet) -> None:
    events: list[dict[str, Any]] = []
    threads: set[int] = set()
    watcher = synprobe.Watcher(config(["127.0.0.2:80", "127.0.0.2:81"]))

    def sink(record: dict[str, Any]) -> None:
        threads.add(threading.get_ident())
        events.append(record)
        if len(events) == 2:
            watcher.request_stop()

    watcher.event_sinks.append(sink)

    async def body() -> None:
        loop_thread = threading.get_ident()
        await watcher.run()
        assert threads == {loop_thread}

    asyncio.run(asyncio.wait_for(body(), WAIT))
    assert {(e["port"], e["to"], e["state"]) for e in events} == {
        (80, "up", "open"), (81, "down", "closed")}
    assert net.closed
    assert watcher.engine_stats()["raw"]["sent"] >= 2


def test_a_loop_prober_retired_by_a_reload_is_closed_when_the_service_stops(
        net: FakeNet) -> None:
    """Regression (review): a reload retires a LoopProber whose checks are still in flight;
    its close (on a thread) needs the loop, so a stop right after left its sockets open and
    that thread waiting for ever. aclose() now ends it, with the loop still running."""
    def slow(timeout: float) -> WatchConfig:  # 127.0.0.2:82: the fake network never answers
        return parse_config({"groups": {"g": {"interval": 0.05, "timeout": timeout,
                                              "retries": 3, "targets": ["127.0.0.2:82"]}}})

    watcher = synprobe.Watcher(slow(0.9))

    async def body() -> None:
        stopping = asyncio.Event()
        task = asyncio.ensure_future(watcher.run(stopping))
        for _ in range(int(WAIT / 0.01)):  # bounded: until the first SYN is out
            if watcher._probers and next(iter(watcher._probers.values())).stats()["sent"]:
                break
            await asyncio.sleep(0.01)
        [old] = watcher._probers.values()
        assert isinstance(old, LoopProber) and old.stats()["sent"] >= 1
        await watcher.apply(slow(0.8))  # another timeout: another Prober; the old one retires
        assert old not in watcher._probers.values() and not old.ended  # 3.6 s of checks left
        stopping.set()
        await asyncio.wait_for(task, WAIT)
        assert old.ended

    asyncio.run(asyncio.wait_for(body(), 2 * WAIT))
