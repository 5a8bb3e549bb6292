"""LoopProber: the raw engine's turns on the caller's asyncio loop, against the fake network of
test_raw_engine (no socket, no root). Every wait is on a callback or a future, bounded by WAIT
only so that a regression fails instead of hanging."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from test_raw_engine import NO_OVERLAP, FakeNet, answer

import synprobe.registry as registry
from synprobe.engines.raw.engine import RawEngine
from synprobe.errors import EngineError, UsageError
from synprobe.loop_prober import LoopProber
from synprobe.model import ProbeResult, State, Target

WAIT = 5.0  # a hang guard, never a synchronisation
OPEN_T = Target("127.0.0.2", 80)  # the fake network answers SYN-ACK
CLOSED_T = Target("127.0.0.2", 81)  # RST
SILENT_T = Target("127.0.0.2", 82)  # nothing


class LaterNet(FakeNet):
    """Answers only when the test says so: `release()` delivers what the SYNs so far earned
    (the reader callback then reads them). `broken` makes the next send or receive raise."""

    def __init__(self) -> None:
        super().__init__(self._hold)
        self.held: list[bytes] = []
        self.broken: dict[str, BaseException] = {}

    def _hold(self, syn: bytes) -> list[bytes]:
        self.held += answer(syn)
        return []

    def release(self) -> None:
        out, self.held = self.held, []
        self.deliver(out)

    def send(self, v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        if "send" in self.broken:
            raise self.broken["send"]
        return super().send(v6, batch)

    def receive(self, limit: int) -> list[bytes]:
        if "receive" in self.broken:
            raise self.broken["receive"]
        return super().receive(limit)


def raw_on(net: FakeNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine "raw" (what LoopProber and the watch service open) is a RawEngine on `net`."""
    monkeypatch.setitem(registry._registered, "raw",
                        lambda options: RawEngine(options, io_factory=net,
                                                  ephemeral_ports=lambda: NO_OVERLAP))


def installed(fake: FakeNet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fixture's body: `fake` is the network engine "raw" runs on, shut afterwards."""
    raw_on(fake, monkeypatch)
    yield fake
    fake.shut()


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNet]:
    yield from installed(FakeNet(), monkeypatch)


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Iterator[LaterNet]:
    yield from installed(LaterNet(), monkeypatch)


class Got:
    """An on_results callback that records each batch, and on which thread it came."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[Target, ProbeResult | BaseException]] = []
        self.calls = 0
        self.threads: set[int] = set()
        self._changed = asyncio.Event()

    def __call__(self, outcomes: list[tuple[Target, ProbeResult | BaseException]]) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.outcomes.extend(outcomes)
        self._changed.set()

    async def until(self, n: int) -> None:
        async def wait() -> None:
            while len(self.outcomes) < n:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), WAIT)

    def results(self) -> dict[Target, tuple[State, str]]:
        out = {}
        for t, r in self.outcomes:
            assert isinstance(r, ProbeResult), r
            out[t] = (r.state, r.reason)
        return out


def on_loop(body: Callable[[], Awaitable[None]]) -> None:
    """Run `body` on a fresh loop, on a thread of its own: a call that blocks the loop (a
    close() that waited on the loop's own thread) then fails the test instead of hanging it."""
    failed: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(asyncio.wait_for(body(), 2 * WAIT))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=main, name="test-loop", daemon=True)
    thread.start()
    thread.join(3 * WAIT)
    assert not thread.is_alive(), "the loop is blocked"
    if failed:
        raise failed[0]


async def silent_check_in_flight(got: Got, timeout: float) -> LoopProber:
    """A LoopProber attached to the running loop, with a check of SILENT_T in flight."""
    prober = LoopProber(timeout=timeout, retries=0, concurrency=64)
    prober.attach()
    prober.submit_many([SILENT_T], on_results=got)
    return prober


def counting_turns(prober: LoopProber) -> list[bool]:
    """Wrap the attached run's turn(): the list grows by one (its `readable`) per turn."""
    run = prober._run
    assert run is not None
    calls: list[bool] = []
    turn = run.turn

    def counted(readable: bool) -> Any:
        calls.append(readable)
        return turn(readable)

    run.turn = counted  # type: ignore[method-assign]
    return calls


# -- results on the loop, without a thread ----------------------------------------------------


def test_answers_during_the_send_come_back_inside_submit_many(net: FakeNet) -> None:
    async def body() -> None:
        threads = threading.active_count()
        prober = LoopProber(timeout=0.5, retries=0, concurrency=64)
        prober.attach()
        got = Got()
        assert prober.submit_many([OPEN_T, CLOSED_T], on_results=got) == []
        # The fake answers inside the send; the same turn reads it: no wakeup needed.
        assert got.results() == {OPEN_T: (State.OPEN, "syn-ack"),
                                 CLOSED_T: (State.CLOSED, "rst")}
        assert got.calls == 1 and got.threads == {threading.get_ident()}
        assert threading.active_count() == threads  # no engine thread, no dispatcher
        assert prober.stats()["sent"] == 2
        await prober.aclose()
        assert net.closed

    on_loop(body)


def test_later_answers_are_read_by_the_loops_reader_callback(later: LaterNet) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        threads = threading.active_count()
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64, loop=loop)
        got = Got()
        prober.submit_many([OPEN_T, CLOSED_T], on_results=got)
        assert got.outcomes == [] and len(later.sent) == 2
        turns = counting_turns(prober)
        loop.call_soon(later.release)  # the answers arrive while the loop waits
        await got.until(2)
        assert got.results() == {OPEN_T: (State.OPEN, "syn-ack"),
                                 CLOSED_T: (State.CLOSED, "rst")}
        assert turns[:1] == [True]  # the packet socket's fd woke the loop
        assert got.threads == {threading.get_ident()}
        assert threading.active_count() == threads
        await prober.aclose()
        assert later.closed

    on_loop(body)


# -- timeouts by the loop's timer ---------------------------------------------------------------


def test_a_silent_target_times_out_by_the_timer_without_spinning(net: FakeNet) -> None:
    timeout, retries = 0.05, 1

    async def body() -> None:
        prober = LoopProber(timeout=timeout, retries=retries, concurrency=64)
        prober.attach()
        turns = counting_turns(prober)
        got = Got()
        t0 = time.monotonic()
        prober.submit_many([SILENT_T], on_results=got)
        await got.until(1)
        took = time.monotonic() - t0
        [(target, result)] = got.outcomes
        assert isinstance(result, ProbeResult) and target == SILENT_T
        assert (result.state, result.reason, result.attempts) == (
            State.FILTERED, "timeout", retries + 1)
        assert timeout * (retries + 1) <= took < timeout * (retries + 1) + WAIT / 5
        # The submit, the retry, the verdict: a few turns, not a busy loop of them.
        assert 3 <= len(turns) <= 6, turns
        assert not any(turns)  # the receiver was never readable: the timer did it all
        # Nothing in flight: no timer armed, no turn called soon.
        assert prober._timer is None and not prober._soon
        assert len(net.sent) == retries + 1
        await prober.aclose()

    on_loop(body)


def test_a_loop_prober_keeps_its_targets_cookie_hashes(net: FakeNet) -> None:
    """Long-lived: each target's hash is kept for its next SYNs and replies (a one-shot
    engine keeps none: test_raw_inflight)."""
    async def body() -> None:
        prober = LoopProber(timeout=0.5, retries=0, concurrency=64)
        prober.attach()
        got = Got()
        prober.submit_many([OPEN_T], on_results=got)
        assert got.results() == {OPEN_T: (State.OPEN, "syn-ack")}
        assert len(prober._engine._key._memo) == 1
        await prober.aclose()

    on_loop(body)


# -- polled by its owner (the watch service's tick) ---------------------------------------------


def test_a_polled_prober_never_wakes_the_loop_its_owners_polls_do(later: LaterNet) -> None:
    timeout = 0.05

    async def body() -> None:
        loop = asyncio.get_running_loop()
        prober = LoopProber(timeout=timeout, retries=0, concurrency=64)
        prober.attach(polled=True)
        assert prober._run is not None
        assert not loop.remove_reader(prober._run.fd)  # nobody watches the packet socket
        got = Got()
        prober.submit_many([OPEN_T, SILENT_T], on_results=got)
        later.release()  # the SYN-ACK arrives after the send, as on a real network
        assert prober._timer is None and not prober._soon  # nothing armed for either
        # The subject is time passing without a poll: nothing may answer then.
        await asyncio.sleep(timeout * 2)
        assert got.outcomes == []
        prober.poll()  # one poll: the reply that came and the timeout that passed
        assert got.results() == {OPEN_T: (State.OPEN, "syn-ack"),
                                 SILENT_T: (State.FILTERED, "timeout")}
        assert prober._timer is None
        turns = counting_turns(prober)
        prober.poll()  # nothing in flight: not even a turn
        assert turns == []
        await prober.aclose()

    on_loop(body)


@pytest.mark.parametrize("how", ["aclose", "close-from-a-thread"])
def test_closing_a_polled_prober_finishes_without_its_owners_polls(how: str,
                                                                     net: FakeNet) -> None:
    """The owner stops polling when it stops: the checks in flight still end (their timeout,
    on the prober's own timer again) and the prober closes."""
    timeout = 0.05

    async def body() -> None:
        prober = LoopProber(timeout=timeout, retries=0, concurrency=64)
        prober.attach(polled=True)
        got = Got()
        prober.submit_many([SILENT_T], on_results=got)
        if how == "aclose":
            await prober.aclose()
        else:
            await asyncio.to_thread(prober.close, WAIT)
        assert prober.ended
        assert got.results() == {SILENT_T: (State.FILTERED, "timeout")}

    on_loop(body)


# -- overlapping checks, callbacks --------------------------------------------------------------


def test_overlapping_submits_of_a_target_share_one_syn(later: LaterNet) -> None:
    async def body() -> None:
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64)
        prober.attach()
        first, second = Got(), Got()
        prober.submit_many([OPEN_T], on_results=first)
        prober.submit_many([OPEN_T], on_results=second)
        later.release()
        await first.until(1)
        await second.until(1)
        assert first.results() == second.results() == {OPEN_T: (State.OPEN, "syn-ack")}
        assert len(later.sent) == 1 and prober.stats()["sent"] == 1
        await prober.aclose()

    on_loop(body)


def test_a_raising_callback_is_logged_and_the_others_still_get_results(
        later: LaterNet, caplog: pytest.LogCaptureFixture) -> None:
    def bad(outcomes: list[Any]) -> None:
        raise ValueError("a caller's bug")

    async def body() -> None:
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64)
        prober.attach()
        good = Got()
        prober.submit_many([OPEN_T], on_results=bad)
        prober.submit_many([OPEN_T, CLOSED_T], on_results=good)
        later.release()  # one turn answers both callbacks: the raising one first
        await good.until(2)
        assert good.results() == {OPEN_T: (State.OPEN, "syn-ack"),
                                  CLOSED_T: (State.CLOSED, "rst")}
        # The prober goes on: the next check is sent and answered.
        after = Got()
        prober.submit_many([Target("::1", 80)], on_results=after)
        later.release()
        await after.until(1)
        assert after.results() == {Target("::1", 80): (State.OPEN, "syn-ack")}
        await prober.aclose()

    with caplog.at_level(logging.ERROR, logger="synprobe.prober"):
        on_loop(body)
    [record] = [r for r in caplog.records if "callback raised" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


@pytest.mark.parametrize("when", ["during the send", "read later"])
def test_a_submit_from_inside_a_callback_is_sent(when: str, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    fake = FakeNet() if when == "during the send" else LaterNet()
    raw_on(fake, monkeypatch)

    async def body() -> None:
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64)
        prober.attach()
        inner = Got()
        called = asyncio.Event()

        def outer(outcomes: list[Any]) -> None:
            prober.submit_many([CLOSED_T], on_results=inner)  # inside the prober's turn
            called.set()

        prober.submit_many([OPEN_T], on_results=outer)
        if isinstance(fake, LaterNet):
            fake.release()  # the reader callback's turn calls outer
            await asyncio.wait_for(called.wait(), WAIT)
        # The turn that called outer went round again before it returned: the SYN has left.
        assert called.is_set() and len(fake.sent) == 2
        if isinstance(fake, LaterNet):
            fake.release()
        await inner.until(1)
        assert inner.results() == {CLOSED_T: (State.CLOSED, "rst")}
        await prober.aclose()

    try:
        on_loop(body)
    finally:
        fake.shut()


# -- closing --------------------------------------------------------------------------------------


def test_close_from_another_thread_waits_for_the_checks_in_flight(later: LaterNet) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        prober = LoopProber(timeout=0.2, retries=0, concurrency=64)
        prober.attach()
        got = Got()
        prober.submit_many([OPEN_T, SILENT_T], on_results=got)
        loop.call_later(0.05, later.release)  # the SYN-ACK comes after close() was called
        closed = loop.create_future()

        def close() -> None:
            prober.close(WAIT)
            seen = list(got.outcomes)  # what the callback had when close() returned
            loop.call_soon_threadsafe(closed.set_result, seen)

        threading.Thread(target=close, name="test-close").start()
        seen = await asyncio.wait_for(closed, WAIT)
        assert {t: (r.state, r.reason) for t, r in seen} == {  # real results, not errors
            OPEN_T: (State.OPEN, "syn-ack"), SILENT_T: (State.FILTERED, "timeout")}
        assert later.closed
        with pytest.raises(RuntimeError, match="closed"):
            prober.submit_many([OPEN_T], on_results=got)

    on_loop(body)


def test_close_on_the_loop_answers_what_is_pending_at_once(later: LaterNet) -> None:
    async def body() -> None:
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64)
        prober.attach()
        got = Got()
        prober.submit_many([OPEN_T, SILENT_T], on_results=got)
        prober.close()
        # Answered inside close(): nothing is awaited for it.
        assert {t for t, _ in got.outcomes} == {OPEN_T, SILENT_T}
        assert all(isinstance(r, RuntimeError) for _, r in got.outcomes)
        assert got.calls == 1
        assert later.closed
        with pytest.raises(RuntimeError, match="closed"):
            prober.submit_many([OPEN_T], on_results=got)
        prober.close()  # twice: nothing more
        await prober.aclose()
        assert got.calls == 1

    on_loop(body)


def test_a_callback_that_closes_the_prober_ends_it_as_closed(net: FakeNet) -> None:
    """Regression: the turn that called the callback went round again on the run close() had
    just closed, sent on its closed socket (EBADF), and recorded that as an engine failure."""
    async def body() -> None:
        prober = LoopProber(timeout=0.5, retries=0, concurrency=64)
        prober.attach()
        inner = Got()

        def outer(outcomes: list[Any]) -> None:
            prober.submit_many([CLOSED_T], on_results=inner)  # queued: the turn is running
            prober.close()  # on the loop's thread: at once

        prober.submit_many([OPEN_T], on_results=outer)
        [(target, error)] = inner.outcomes
        assert target == CLOSED_T and isinstance(error, RuntimeError)
        assert len(net.sent) == 1 and net.closed  # nothing was sent after the close
        with pytest.raises(RuntimeError, match="closed"):  # closed, not "engine failed"
            prober.submit_many([OPEN_T], on_results=inner)
        assert prober._timer is None and not prober._soon  # nothing armed on a closed prober

    on_loop(body)


def test_close_off_the_loop_when_it_is_not_running_closes_now(net: FakeNet) -> None:
    """Regression: an attached loop that is stopped (not closed) never runs the close request:
    close() waited for it forever (or `timeout`) and left the sockets open."""
    loop = asyncio.new_event_loop()
    try:
        got = Got()
        prober = loop.run_until_complete(silent_check_in_flight(got, timeout=0.5))
        t0 = time.monotonic()
        prober.close(WAIT)  # not on the loop's thread in the sense that matters: none runs it
        assert time.monotonic() - t0 < WAIT / 2
        assert net.closed
        [(target, error)] = got.outcomes
        assert target == SILENT_T and isinstance(error, RuntimeError)
    finally:
        loop.close()


def test_aclose_finishes_the_checks_in_flight(net: FakeNet) -> None:
    async def body() -> None:
        prober = LoopProber(timeout=0.05, retries=0, concurrency=64)
        prober.attach()
        got = Got()
        prober.submit_many([SILENT_T], on_results=got)
        await asyncio.wait_for(prober.aclose(), WAIT)
        assert got.results() == {SILENT_T: (State.FILTERED, "timeout")}
        assert net.closed

    on_loop(body)


def test_close_without_a_loop_closes_the_sockets(net: FakeNet) -> None:
    prober = LoopProber(timeout=0.05, retries=0, concurrency=64)
    prober.close()
    assert net.closed
    with pytest.raises(RuntimeError, match="closed"):
        prober.submit_many([OPEN_T], on_results=Got())


def test_submit_before_attach_or_without_a_callback_is_refused(net: FakeNet) -> None:
    prober = LoopProber(timeout=0.05, retries=0, concurrency=64)
    try:
        with pytest.raises(RuntimeError, match="not attached"):
            prober.submit_many([OPEN_T], on_results=lambda outcomes: None)
        with pytest.raises(UsageError, match="on_results"):
            prober.submit_many([OPEN_T])
        assert net.sent == []
    finally:
        prober.close()


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["send", "receive"])
def test_an_engine_failure_answers_every_pending_check_and_ends_the_prober(
        where: str, later: LaterNet) -> None:
    failure = OSError(errno.EIO, "Input/output error")

    async def body() -> None:
        prober = LoopProber(timeout=2.0, retries=0, concurrency=64)
        prober.attach()
        first, second = Got(), Got()
        prober.submit_many([OPEN_T], on_results=first)
        later.broken[where] = failure
        if where == "send":  # the turn inside this submit fails: not raised to the caller
            prober.submit_many([CLOSED_T], on_results=second)
        else:  # the reader callback's turn fails
            prober.submit_many([OPEN_T], on_results=second)
            later.release()
        await first.until(1)
        await second.until(1)
        # The engine's boundary, as Prober's engine thread has it: the model's EngineError.
        outcomes = [r for _, r in first.outcomes + second.outcomes]
        assert len(outcomes) == 2 and outcomes[0] is outcomes[1]
        assert isinstance(outcomes[0], EngineError) and outcomes[0].__cause__ is failure
        assert "Input/output error" in str(outcomes[0])
        assert later.closed
        with pytest.raises(RuntimeError, match="failed") as info:
            prober.submit_many([SILENT_T], on_results=first)
        assert info.value.__cause__ is outcomes[0]
        prober.close()  # already over: returns at once

    on_loop(body)


def test_the_shaker_is_refused() -> None:
    with pytest.raises(UsageError, match="raw engine only"):
        LoopProber("shaker")


def test_close_from_another_thread_ends_when_the_loop_stops_before_running_it(
        net: FakeNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review): a loop that stops after close() queued its request never runs it
    (loop.stop() ends the iteration); close() waited for ever and left the sockets open."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    runner.start()
    try:
        got = Got()
        prober = asyncio.run_coroutine_threadsafe(silent_check_in_flight(got, timeout=2.0),
                                                  loop).result(WAIT)
        inside, proceed, queued = threading.Event(), threading.Event(), threading.Event()

        def blocker() -> None:  # holds the loop until close() has queued its request
            inside.set()
            proceed.wait(WAIT)
            loop.stop()  # this iteration ends; the request queued meanwhile never runs

        post = loop.call_soon_threadsafe

        def posting(callback: Any, *args: Any) -> Any:
            handle = post(callback, *args)
            queued.set()
            return handle

        loop.call_soon_threadsafe(blocker)
        assert inside.wait(WAIT)
        monkeypatch.setattr(loop, "call_soon_threadsafe", posting)
        closer = threading.Thread(target=prober.close, name="test-close", daemon=True)
        closer.start()
        assert queued.wait(WAIT)
        proceed.set()
        closer.join(WAIT)
        assert not closer.is_alive(), "close() waited on a loop that had stopped"
        assert prober.ended and net.closed
        [(target, error)] = got.outcomes
        assert target == SILENT_T and isinstance(error, RuntimeError)
    finally:
        proceed.set()
        runner.join(WAIT)
        loop.close()
