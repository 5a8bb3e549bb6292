"""The raw engine's loop as turns (`RawRun`): settled deadlines are forgotten, replies that came
during a send are read in the same turn, and `run()` ends over a source without a wakeup fd
whose targets were all answered inside the send. On the fake network of test_raw_engine."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from test_raw_engine import FakeNet, engine

from synprobe.engines.raw import engine as raw
from synprobe.loop_prober import _Backlog
from synprobe.model import ProbeResult, State, Target
from synprobe.runner import ThrottledSource
from synprobe.sources import IterSource

WAIT = 5.0  # a hang guard, never a synchronisation


@pytest.fixture
def net() -> Iterator[FakeNet]:
    fake = FakeNet()
    yield fake
    fake.shut()


def probe(sent: float, *, done: bool = False) -> list[Any]:
    """An in-flight record with only what _drop_settled reads: answered, and when the latest
    attempt left."""
    record: list[Any] = [None] * 13
    record[raw._DONE] = done
    record[raw._SENT] = sent
    return record


def deadline(sent: float, probes: list[list[Any]]) -> list[Any]:
    return [sent + 1.0, sent, probes, 0]


def test_drop_settled_forgets_leading_batches_with_nothing_left_to_time_out() -> None:
    answered = deadline(1.0, [probe(1.0, done=True), probe(1.0, done=True)])
    resent = deadline(2.0, [probe(5.0)])  # sent again since: the retry has its own deadline
    waiting = deadline(3.0, [probe(3.0, done=True), probe(3.0), probe(3.0, done=True)])
    behind = deadline(4.0, [probe(4.0, done=True)])  # settled, but after a pending one
    deadlines = deque([answered, resent, waiting, behind])
    raw._drop_settled(deadlines)
    assert list(deadlines) == [waiting, behind]
    assert waiting[3] == 1  # the settled probes before the pending one are not looked at again


def test_drop_settled_resumes_from_the_stored_index() -> None:
    pending = probe(3.0)
    entry = deadline(3.0, [probe(3.0, done=True), pending, probe(3.0)])
    deadlines = deque([entry])
    raw._drop_settled(deadlines)
    assert list(deadlines) == [entry] and entry[3] == 1
    pending[raw._DONE] = True
    raw._drop_settled(deadlines)
    assert list(deadlines) == [entry] and entry[3] == 2
    entry[2][2][raw._SENT] = 9.0  # the last one was sent again
    raw._drop_settled(deadlines)
    assert not deadlines
    raw._drop_settled(deadlines)  # empty: nothing to do
    assert not deadlines


def test_replies_that_came_during_the_send_are_read_in_the_same_turn(net: FakeNet) -> None:
    eng = engine(io_factory=net, timeout=0.5, retries=0)
    run = eng.open_run(IterSource([Target("127.0.0.2", 80), Target("127.0.0.2", 81)]))
    try:
        done, wait = run.turn(False)  # not told the receiver is readable
        assert {(r.port, r.state) for r in done} == {(80, State.OPEN), (81, State.CLOSED)}
        # Nothing in flight: only the source can say whether it is done, so ask it at once.
        assert wait == 0.0
        assert run.turn(False) == ([], None)  # the source is exhausted: the run is over
    finally:
        run.close()
    assert net.closed


def test_settled_deadlines_leave_nothing_to_wait_for(net: FakeNet) -> None:
    """A source whose puts run turns themselves (LoopProber's) is not asked again: with every
    deadline settled the turn waits for the next event (-1), with no timer."""
    backlog = _Backlog()
    backlog.targets.extend([Target("127.0.0.2", 80), Target("127.0.0.2", 81)])
    run = engine(io_factory=net, timeout=0.5, retries=0).open_run(backlog)
    try:
        done, wait = run.turn(False)
        assert len(done) == 2 and wait == -1.0 and not run.deadlines
    finally:
        run.close()


def test_a_turn_without_answers_waits_for_the_deadline(net: FakeNet) -> None:
    eng = engine(io_factory=net, timeout=0.5, retries=0)
    run = eng.open_run(IterSource([Target("127.0.0.2", 82)]))
    try:
        done, wait = run.turn(False)
        assert done == [] and wait is not None and 0.0 < wait <= 0.5
    finally:
        run.close()


@pytest.mark.parametrize("throttled", [False, True], ids=["iter-source", "throttled-source"])
def test_run_ends_when_every_target_was_answered_inside_the_send(net: FakeNet,
                                                                  throttled: bool) -> None:
    """With nothing in flight and nothing readable, only the source knows whether it is done
    (an iterable ends with a short batch, then None): run() must ask it again, not wait forever
    for an event that cannot come. IterSource has no wakeup fd; probe_many()'s ThrottledSource
    has one that nobody writes (the README's probe_many example hung on it)."""
    eng = engine(io_factory=net, timeout=0.5, retries=0)
    results: list[ProbeResult] = []
    failed: list[BaseException] = []
    targets = [Target("127.0.0.2", 80), Target("::1", 81)]
    source = ThrottledSource(targets, 1000) if throttled else IterSource(targets)

    def drive() -> None:
        try:
            for batch in eng.run(source):
                results.extend(batch)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=drive, name="test-raw-run", daemon=True)
    thread.start()
    thread.join(WAIT)
    hung = thread.is_alive()
    if hung:  # wake the poller so the thread can end, then fail
        os.write(net._w, b"!")
        thread.join(WAIT)
    assert not hung, "run() waited forever after its targets were answered"
    assert not failed
    assert {(r.host, r.port, r.state) for r in results} == {
        ("127.0.0.2", 80, State.OPEN), ("::1", 81, State.CLOSED)}
    assert net.closed
    if isinstance(source, ThrottledSource):
        source.release()


class LateSource:
    """No wakeup fd; nothing ready for its first `empty` pulls, then its targets, then done."""

    wakeup_fd = None

    def __init__(self, targets: list[Target], empty: int) -> None:
        self.targets, self.empty, self.pulls = targets, empty, 0

    def pull(self, limit: int) -> list[Target] | None:
        self.pulls += 1
        if self.pulls <= self.empty:
            return []
        batch, self.targets = self.targets, []
        return batch or None


def test_a_source_without_a_wakeup_fd_is_looked_at_not_spun_on(net: FakeNet) -> None:
    """Nothing can wake the loop for such a source: run() looks again every NO_FD_POLL
    seconds (it waited for ever before this round; asking at once would spin)."""
    eng = engine(io_factory=net, timeout=0.5, retries=0)
    source = LateSource([Target("127.0.0.2", 80)], empty=3)
    t0 = time.monotonic()
    results = [r for batch in eng.run(source) for r in batch]  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    assert [(r.port, r.state) for r in results] == [(80, State.OPEN)]
    assert source.pulls == 5  # three empty looks, the target, then the end
    assert elapsed >= 3 * raw.NO_FD_POLL * 0.9  # it waited between the empty looks
