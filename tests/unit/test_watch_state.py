"""Rise/fall: table-driven sequences of results -> the statuses and transitions they make."""

from __future__ import annotations

import pytest

from synprobe.model import ProbeResult, State
from synprobe.watch.state import DOWN, UNKNOWN, UP, TargetState

CODE = {"o": State.OPEN, "c": State.CLOSED, "f": State.FILTERED, "u": State.UNREACHABLE,
        "e": State.ERROR}


def result(code: str) -> ProbeResult:
    state = CODE[code]
    return ProbeResult("198.18.0.2", 80, state, "x", 0.001 if state is State.OPEN else None,
                       1, "fake")


def run(seq: str, rise: int = 2, fall: int = 3) -> tuple[list[str], list[tuple[str, str, int]]]:
    st = TargetState()
    statuses, changes = [], []
    for i, code in enumerate(seq):
        change = st.apply(result(code), rise, fall, float(i))
        statuses.append(st.status)
        if change:
            changes.append((change.before, change.after, change.count))
    return statuses, changes


@pytest.mark.parametrize(("seq", "final", "changes"), [
    ("", UNKNOWN, []),
    ("o", UP, [(UNKNOWN, UP, 1)]),  # the first conclusive check decides
    ("c", DOWN, [(UNKNOWN, DOWN, 1)]),
    ("ooff", UP, [(UNKNOWN, UP, 1)]),  # two failures < fall 3
    ("ooffo" "ff", UP, [(UNKNOWN, UP, 1)]),  # a success resets the failure streak
    ("ofuc", DOWN, [(UNKNOWN, UP, 1), (UP, DOWN, 3)]),  # any failure kind counts
    ("cco", DOWN, [(UNKNOWN, DOWN, 1)]),  # one success < rise 2
    ("ccoco", DOWN, [(UNKNOWN, DOWN, 1)]),
    ("ccoo", UP, [(UNKNOWN, DOWN, 1), (DOWN, UP, 2)]),
    ("eeee", UNKNOWN, []),  # local failures decide nothing
    ("oeeeeeee", UP, [(UNKNOWN, UP, 1)]),  # ...and never take a target down
    ("offeef", DOWN, [(UNKNOWN, UP, 1), (UP, DOWN, 3)]),  # nor break a streak
])
def test_rise_fall(seq: str, final: str, changes: list[tuple[str, str, int]]) -> None:
    statuses, got = run(seq)
    assert (statuses[-1] if statuses else UNKNOWN) == final
    assert got == changes


def test_counters_and_since() -> None:
    st = TargetState()
    for i, code in enumerate("ooccce"):
        st.apply(result(code), 2, 3, 100.0 + i)
    assert st.checks == {"open": 2, "closed": 3, "filtered": 0, "unreachable": 0, "error": 1}
    assert st.transitions == {UP: 1, DOWN: 1}
    assert st.since == 104.0  # the third closed result
    assert st.last is not None and st.last.state is State.ERROR  # shown, though it moved nothing
