"""Prober.submit_many(on_results=...): the watch service's form, with no Future per check.
Outcomes come in batches to one callback, once per target submitted; an engine that ends
answers what is left with its exception; a callback that raises does not stop the others."""

from __future__ import annotations

import threading

import pytest

import synprobe
import synprobe.registry as registry
from synprobe.model import ProbeResult, State, Target
from synprobe.prober import Outcomes
from synprobe.testing import FakeEngine


class Collect:
    def __init__(self, expected: int) -> None:
        self.batches: list[Outcomes] = []
        self.outcomes: Outcomes = []
        self._expected = expected
        self.complete = threading.Event()

    def __call__(self, outcomes: Outcomes) -> None:
        self.batches.append(outcomes)
        self.outcomes.extend(outcomes)
        if len(self.outcomes) >= self._expected:
            self.complete.set()


def _register(monkeypatch: pytest.MonkeyPatch, handler) -> None:
    monkeypatch.setitem(registry._registered, "fake",
                        lambda options: FakeEngine(handler, options))


def test_outcomes_come_in_batches_once_per_submitted_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, lambda t: (State.OPEN if t.port == 80 else State.CLOSED, "x"))
    targets = [Target(f"198.18.0.{i}", 80 + i % 2) for i in range(1, 101)]
    collect = Collect(101)
    with synprobe.Prober("fake") as prober:
        assert prober.submit_many([*targets, targets[0]], on_results=collect) == []
        assert collect.complete.wait(5)
    got = [(tgt, r.host, r.port, r.state) for tgt, r in collect.outcomes
           if isinstance(r, ProbeResult)]
    assert len(got) == 101
    assert sorted(tgt for tgt, *_ in got) == sorted([*targets, targets[0]])
    assert all((tgt.host, tgt.port) == (host, port) for tgt, host, port, _ in got)
    assert all(state is (State.OPEN if tgt.port == 80 else State.CLOSED)
               for tgt, _, _, state in got)
    assert len(collect.batches) < 101  # batched, not one call per check


def test_an_engine_that_ends_answers_the_rest_with_its_exception(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(t: Target):
        raise OSError("the link went away")

    _register(monkeypatch, handler)
    collect = Collect(3)
    prober = synprobe.Prober("fake")
    try:
        prober.submit_many([Target("198.18.0.2", p) for p in (1, 2, 3)], on_results=collect)
        assert collect.complete.wait(5)
    finally:
        prober.close()
    assert sorted(t.port for t, _ in collect.outcomes) == [1, 2, 3]
    assert all(isinstance(o, BaseException) for _, o in collect.outcomes)


def test_a_raising_callback_does_not_stop_the_dispatcher(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _register(monkeypatch, lambda t: (State.OPEN, "x"))

    def broken(outcomes: Outcomes) -> None:
        raise ValueError("a bug in the caller")

    with synprobe.Prober("fake") as prober:
        prober.submit_many([Target("198.18.0.2", 1)], on_results=broken)
        later = prober.submit_many([Target("198.18.0.2", 2)])
        assert later[0].result(5).state is State.OPEN
    assert "callback raised" in caplog.text


def test_close_from_a_batch_callback_ends_the_prober_and_releases_its_source(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (review): batch callbacks run on the engine thread, where close() used to
    join that very thread: it raised (logged), and the source's eventfd was never released."""
    _register(monkeypatch, lambda t: (State.OPEN, "x"))
    prober = synprobe.Prober("fake")
    closed = threading.Event()

    def close_on_first(outcomes: Outcomes) -> None:
        prober.close()
        closed.set()

    prober.submit_many([Target("198.18.0.2", 80)], on_results=close_on_first)
    assert closed.wait(5)
    prober._dispatcher.join(5)  # it ends after the engine thread, and releases the source
    assert not prober._dispatcher.is_alive()
    assert prober._source.wakeup_fd is None
    assert not [r for r in caplog.records if "callback raised" in r.getMessage()]
    with pytest.raises(RuntimeError, match="closed"):
        prober.submit_many([Target("198.18.0.3", 80)], on_results=close_on_first)
