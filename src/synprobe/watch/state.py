"""Per-target health state: up / down with rise and fall counters (pure; no I/O, no clock).

Semantics (docs/watch.md compares them with HAProxy's and keepalived's):
- A target starts `unknown`; its first conclusive check decides (unknown -> up on an open
  port, unknown -> down otherwise), so a service that starts knows within one interval.
- While `up`, `fall` failed checks in a row turn it `down`; while `down`, `rise` successful
  checks in a row turn it `up`. A result of the other kind resets the streak.
- A local failure (state `error`: EMFILE, EADDRNOTAVAIL, an excluded address...) is no
  evidence about the target: it is counted and shown as the last result, and moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from synprobe.model import ProbeResult, State

UNKNOWN, UP, DOWN = "unknown", "up", "down"
# The counters are keyed by the State members themselves: a StrEnum member hashes and compares
# as its value ("open"), and `result.state.value` (an enum property) cost 0.15 µs a check.
CHECK_STATES = tuple(State)
_OPEN, _ERROR = State.OPEN, State.ERROR


@dataclass(frozen=True, slots=True)
class Transition:
    before: str
    after: str
    result: ProbeResult
    count: int  # consecutive results of this kind that made the change
    time: float  # wall-clock seconds (time.time()) of the result


class TargetState:
    """The health of one target. `apply()` returns a Transition when the status changed."""

    __slots__ = ("checks", "fail_streak", "last", "last_time", "ok_streak", "since",
                 "status", "transitions")

    def __init__(self) -> None:
        self.status = UNKNOWN
        self.since: float | None = None  # wall time of the last change (None: never decided)
        self.ok_streak = 0
        self.fail_streak = 0
        self.last: ProbeResult | None = None
        self.last_time: float | None = None
        self.checks = dict.fromkeys(CHECK_STATES, 0)
        self.transitions = {UP: 0, DOWN: 0}

    def apply(self, result: ProbeResult, rise: int, fall: int, now: float) -> Transition | None:
        self.last = result
        self.last_time = now
        state = result.state
        self.checks[state] += 1
        if state is _ERROR:
            return None
        if state is _OPEN:
            self.ok_streak += 1
            self.fail_streak = 0
            streak, wanted, target = self.ok_streak, rise, UP
        else:
            self.fail_streak += 1
            self.ok_streak = 0
            streak, wanted, target = self.fail_streak, fall, DOWN
        if self.status == target or (self.status != UNKNOWN and streak < wanted):
            return None
        before, self.status, self.since = self.status, target, now
        self.transitions[target] += 1
        return Transition(before, target, result, streak, now)
