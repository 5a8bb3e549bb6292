"""Prober.submit_many (added for the watch service's ticks): one queueing for many checks,
overlapping checks of one target still answered by one probe, the same failures as submit()."""

from __future__ import annotations

import pytest

import synprobe
import synprobe.registry as registry
from synprobe.model import State, Target
from synprobe.sources import QueueSource
from synprobe.testing import FakeEngine


def test_submit_many_answers_each_and_shares_overlaps(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeEngine] = []

    def factory(options):
        made.append(FakeEngine(lambda t: (State.OPEN if t.port == 80 else State.CLOSED, "x"),
                               options))
        return made[-1]

    monkeypatch.setitem(registry._registered, "fake", factory)
    targets = [Target(f"198.18.0.{i}", 80 + i % 2) for i in range(1, 101)]
    with synprobe.Prober("fake") as prober:
        futures = prober.submit_many([*targets, targets[0]])
        results = [f.result(5) for f in futures]
    assert [(r.host, r.port) for r in results] == [(t.host, t.port) for t in
                                                   [*targets, targets[0]]]
    assert [r.state for r in results[:4]] == [State.CLOSED, State.OPEN, State.CLOSED, State.OPEN]
    assert len(made[0].seen) <= 101  # the repeated target may share the first one's probe
    assert sorted(set(made[0].seen)) == sorted(targets)


def test_submit_many_after_close_raises(fake_engine) -> None:
    prober = synprobe.Prober("fake")
    prober.close()
    with pytest.raises(RuntimeError, match="closed"):
        prober.submit_many([Target("198.18.0.2", 80)])


def test_submit_many_refuses_via_for_an_engine_without_it(fake_engine) -> None:
    with synprobe.Prober("fake") as prober, pytest.raises(synprobe.UsageError,
                                                          match="real server"):
        prober.submit_many([Target("198.18.0.2", 80, "198.18.1.11")])


def test_put_many_wakes_once_and_keeps_order() -> None:
    source = QueueSource()
    try:
        source.put_many([Target("198.18.0.2", p) for p in (1, 2, 3)])
        source.put_many([])
        assert [t.port for t in source.pull(10) or []] == [1, 2, 3]
        source.close()
        with pytest.raises(RuntimeError):
            source.put_many([Target("198.18.0.2", 4)])
    finally:
        source.release()
