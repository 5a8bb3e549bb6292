"""Prober under concurrency: cancelled waits, slow callbacks, close races, engine failures.

`HeldEngine` keeps the targets it pulls in flight until the test says `answer()`, so a test
decides exactly when results arrive; no sleeps stand in for synchronisation.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import threading
from collections.abc import Iterator

import pytest

import synprobe
import synprobe.registry as registry
from synprobe.engines.base import ProbeOptions, TargetSource
from synprobe.errors import EngineUnavailable, UsageError
from synprobe.model import ProbeResult, State, Target
from synprobe.testing import FakeEngine

WAIT = 5.0  # a safety net for waits that should end at once


class HeldEngine:
    """Answers the targets in flight (all OPEN) when `answer()` is called.

    `bad_port`: pulling a target on it raises UsageError, as the raw engine does for a real
    server it cannot reach. `forget`: when the source ends, return without answering (an
    engine bug: the prober must not leave those futures pending)."""

    name = "held"
    supports_via = False
    bad_port = 666

    def __init__(self, options: ProbeOptions, *, forget: bool = False) -> None:
        self.options = options
        self.forget = forget
        self.pulled: queue.SimpleQueue[Target] = queue.SimpleQueue()
        self.closed = threading.Event()
        self._ctl_r, self._ctl_w = os.pipe()

    def answer(self) -> None:
        os.write(self._ctl_w, b"!")

    def preflight(self, vias: object = (), families: object = ()) -> None:
        """Nothing to check ahead."""

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        return f"held {target}"

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        held: list[Target] = []
        while True:
            batch = source.pull(self.options.concurrency)
            if batch is None:
                if held and not self.forget:
                    yield [self._open(t) for t in held]
                return
            for t in batch:
                if t.port == self.bad_port:
                    raise UsageError(f"cannot check {t}")
                held.append(t)
                self.pulled.put(t)
            ready, _, _ = select.select([source.wakeup_fd, self._ctl_r], [], [], WAIT)
            if self._ctl_r in ready:
                os.read(self._ctl_r, 64)
                if held:
                    yield [self._open(t) for t in held]
                    held = []

    def _open(self, t: Target) -> ProbeResult:
        return ProbeResult(t.host, t.port, State.OPEN, "syn-ack", 0.001, 1, self.name, None,
                           t.via)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed.set()
        for fd in (self._ctl_r, self._ctl_w):
            os.close(fd)


class Held:
    """The engines "held" made, and how the next one is made."""

    def __init__(self) -> None:
        self.made: list[HeldEngine] = []
        self.forget = False

    @property
    def engine(self) -> HeldEngine:
        return self.made[-1]


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Held:
    """Registers engine "held" (see HeldEngine)."""
    made = Held()

    def factory(options: ProbeOptions) -> HeldEngine:
        made.made.append(HeldEngine(options, forget=made.forget))
        return made.engine

    monkeypatch.setitem(registry._registered, "held", factory)
    return made


def test_a_cancelled_wait_does_not_kill_the_prober(held: Held) -> None:
    with synprobe.Prober(engine="held") as prober:
        eng = held.engine

        async def impatient() -> None:
            # wait_for cancels the concurrent future when it times out; the check is still
            # in flight (HeldEngine answers only when told), so the timeout always fires.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(prober.aprobe("198.18.0.2:80"), 0.01)

        asyncio.run(impatient())
        assert eng.pulled.get(timeout=WAIT) == Target("198.18.0.2", 80)
        eng.answer()  # the result of the cancelled check arrives: it must be skipped
        later = prober.submit("198.18.0.3:80")
        assert eng.pulled.get(timeout=WAIT) == Target("198.18.0.3", 80)
        eng.answer()
        assert later.result(timeout=WAIT).state is State.OPEN


def test_done_callbacks_never_run_on_the_engine_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    callback_added = threading.Event()
    second_answered = threading.Event()

    def handler(target: Target) -> tuple[State, str]:
        if target.port == 80:
            callback_added.wait(WAIT)  # else the callback might run at once, on this thread
        if target.port == 81:
            second_answered.set()
        return State.OPEN, "syn-ack"

    monkeypatch.setitem(registry._registered, "fake", lambda o: FakeEngine(handler, o))
    gate = threading.Event()
    entered = threading.Event()
    callback_threads: list[str] = []

    def slow_callback(_: object) -> None:
        callback_threads.append(threading.current_thread().name)
        entered.set()
        gate.wait(WAIT * 2)  # user code that takes its time

    with synprobe.Prober(engine="fake") as prober:
        first = prober.submit("198.18.0.2:80")
        first.add_done_callback(slow_callback)
        callback_added.set()
        assert entered.wait(WAIT)
        # The slow callback is running, yet the engine loop goes on pulling and answering.
        second = prober.submit("198.18.0.2:81")
        assert second_answered.wait(WAIT), "a done-callback stalled the engine loop"
        gate.set()
        assert second.result(timeout=WAIT).state is State.OPEN
    assert callback_threads and "synprobe-engine" not in callback_threads


def test_submit_queues_its_target_under_the_prober_lock(fake_engine: object) -> None:
    """close() takes the same lock, so it cannot run between registering a waiter and queueing
    its target: put() never fails after a waiter is registered, and a second caller waiting
    on the same target is never left hanging."""
    with synprobe.Prober(engine="fake") as prober:
        put = prober._source.put
        locked: list[bool] = []

        def watched_put(target: Target) -> None:
            locked.append(prober._lock.locked())
            put(target)

        prober._source.put = watched_put  # type: ignore[method-assign]
        assert prober.probe("198.18.0.2:80").state is State.OPEN
    assert locked == [True]


def test_pending_futures_fail_when_the_engine_loop_ends(held: Held) -> None:
    held.forget = True
    prober = synprobe.Prober(engine="held")
    eng = held.engine
    fut = prober.submit("198.18.0.2:80")
    assert eng.pulled.get(timeout=WAIT) == Target("198.18.0.2", 80)
    prober.close()  # the engine returns without answering
    with pytest.raises(RuntimeError, match="ended before this check finished"):
        fut.result(timeout=WAIT)


def test_an_engine_error_fails_every_pending_future(held: Held) -> None:
    with synprobe.Prober(engine="held") as prober:
        eng = held.engine
        cancelled = prober.submit("198.18.0.2:80")
        waiting = prober.submit("198.18.0.3:80")
        for _ in range(2):
            eng.pulled.get(timeout=WAIT)
        assert cancelled.cancel()
        bad = prober.submit(f"198.18.0.4:{HeldEngine.bad_port}")  # the engine raises on it
        for fut in (waiting, bad):
            with pytest.raises(UsageError, match="cannot check"):
                fut.result(timeout=WAIT)
        assert eng.closed.wait(WAIT)
        with pytest.raises(RuntimeError, match="engine failed") as info:
            prober.submit("198.18.0.5:80")
        assert isinstance(info.value.__cause__, UsageError)


def test_prober_preflight_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeEngine] = []

    class Unprivileged(FakeEngine):
        def preflight(self) -> None:
            raise EngineUnavailable("needs CAP_NET_RAW")

    def factory(options: ProbeOptions) -> FakeEngine:
        made.append(Unprivileged(lambda t: (State.OPEN, "syn-ack"), options))
        return made[-1]

    monkeypatch.setitem(registry._registered, "unprivileged", factory)
    with pytest.raises(EngineUnavailable, match="CAP_NET_RAW"):
        synprobe.Prober(engine="unprivileged")
    assert made[0].closed
