"""Stopping, without root (issue 8 §2): sources that close admission, engines that drop what
they pulled but never started, and stop signals that end a run without raising mid-write."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from test_raw_engine import FakeNet, engine  # the raw engine's fake network

from synprobe.cli.stops import Interrupted, StopSignals
from synprobe.engines.base import ProbeOptions
from synprobe.engines.shaker import ShakerEngine
from synprobe.model import Target
from synprobe.runner import ThrottledSource
from synprobe.sources import ABORT, GO, NO_NEW


class HaltAfterFirstPull:
    """Hands every target over at once, then says NO_NEW (a deadline that has just passed)."""

    wakeup_fd = None

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.pulls = 0

    def pull(self, limit: int) -> list[Target] | None:
        self.pulls += 1
        return self.targets[:limit] if self.pulls == 1 else None

    def admission(self) -> int:
        return NO_NEW if self.pulls else GO


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_the_shaker_never_starts_what_it_pulled_after_the_deadline() -> None:
    # The pacer lets one connect() go; the other 19 wait in line, and must never start.
    port = closed_port()
    targets = [Target("127.0.0.1", port)] + [Target(f"127.0.0.{i}", port) for i in range(2, 21)]
    eng = ShakerEngine(ProbeOptions(timeout=0.2, rate=100.0))
    results = [r for batch in eng.run(HaltAfterFirstPull(targets)) for r in batch]
    assert [(r.host, r.state.value) for r in results] == [("127.0.0.1", "closed")]
    assert eng.stats()["sent"] == 1


def test_the_raw_engine_never_sends_what_it_pulled_after_the_deadline() -> None:
    net = FakeNet()
    try:
        eng = engine(timeout=0.05, retries=1, rate=100.0, source="127.0.0.1", io_factory=net)
        targets = [Target(f"127.0.0.{i}", 82) for i in range(2, 22)]  # 82: never answered
        results = [r for batch in eng.run(HaltAfterFirstPull(targets)) for r in batch]
    finally:
        net.close()
    # The one SYN that left before the deadline is retried (the check had started), and
    # nothing else is sent or reported.
    assert [(r.host, r.state.value, r.attempts) for r in results] == [
        ("127.0.0.2", "filtered", 2)]
    assert len(net.sent) == 2
    first, retry = net.sent
    assert first[16:20] == retry[16:20] == bytes([127, 0, 0, 2])  # the same target ...
    assert first[22:24] == retry[22:24] == (82).to_bytes(2, "big")
    assert (first[20:22], first[24:28]) != (retry[20:22], retry[24:28])  # ... a fresh attempt


def test_a_source_past_its_deadline_admits_nothing() -> None:
    source = ThrottledSource(iter([Target("198.18.0.2", 80)] * 10), high_water=100)
    try:
        assert source.admission() == GO
        source.stop_at(time.monotonic() + 60)
        assert source.admission() == GO and source.pull(2) is not None
        source.stop_at(time.monotonic() - 0.001)
        assert source.admission() == NO_NEW and source.pull(2) is None
        source.abort()
        assert source.admission() == ABORT and source.pull(2) is None
    finally:
        source.release()


@pytest.fixture
def stops() -> Iterator[StopSignals]:
    installed = StopSignals()
    installed.install()
    yield installed
    installed.restore()


def test_a_stop_signal_before_the_run_can_stop_raises(stops: StopSignals) -> None:
    with pytest.raises(Interrupted) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM


def test_the_first_stop_signal_stops_the_run_without_raising(stops: StopSignals) -> None:
    seen: list[int] = []
    stops.on_stop(seen.append)
    os.kill(os.getpid(), signal.SIGTERM)
    assert (seen, stops.signum) == ([signal.SIGTERM], signal.SIGTERM)
    with pytest.raises(Interrupted):  # the user insists: leave now
        os.kill(os.getpid(), signal.SIGINT)


def test_a_worker_ignores_a_second_stop_signal() -> None:
    worker = StopSignals(insist_to_quit=False)
    worker.install()
    try:
        seen: list[int] = []
        worker.on_stop(seen.append)
        os.kill(os.getpid(), signal.SIGINT)  # from the terminal
        os.kill(os.getpid(), signal.SIGINT)  # and passed on by the parent
        assert seen == [signal.SIGINT]
    finally:
        worker.restore()


def test_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    installed = StopSignals()
    installed.install()
    installed.restore()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
