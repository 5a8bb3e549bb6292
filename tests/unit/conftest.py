from __future__ import annotations

from collections.abc import Callable

import pytest

import synprobe.registry as registry
from synprobe.engines.base import ProbeOptions
from synprobe.model import State, Target
from synprobe.testing import FakeEngine


def by_port(target: Target) -> tuple[State, str]:
    """A fake network: port 80 open, 81 closed, 83 unreachable, anything else filtered."""
    return {
        80: (State.OPEN, "syn-ack"),
        81: (State.CLOSED, "rst"),
        83: (State.UNREACHABLE, "icmp-3-1"),
    }.get(target.port, (State.FILTERED, "timeout"))


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[FakeEngine]]:
    """Registers engine "fake" (answers by port, see by_port); returns the engines it made."""
    made: list[FakeEngine] = []

    def factory(options: ProbeOptions) -> FakeEngine:
        made.append(FakeEngine(by_port, options))
        return made[-1]

    monkeypatch.setitem(registry._registered, "fake", factory)
    return lambda: made
