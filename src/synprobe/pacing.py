"""The one token bucket: paces the engines' SYNs, and bounds the RSTs the raw engine sends."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Allows `rate` sends per second on average, in bursts of at most `burst`.

    A small burst keeps the wire smooth while letting an engine batch its sends; the engine asks
    `allowance()` how many it may send now and `delay()` how long to wait when the answer is 0.
    With rate None every request is allowed at once. `full` starts the bucket with a whole
    burst (a budget for answers: every check in flight may be answered at once) instead of one
    token (a pacer: the first burst is spread like the rest). `clock` is the seam tests replace.
    """

    def __init__(self, rate: float | None, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic, *, full: bool = False) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.rate = rate
        self._clock = clock
        # About 5 ms worth of sends: enough to batch syscalls, small enough to stay smooth.
        self.burst = burst or (max(1, int(rate / 200)) if rate else 1 << 30)
        self._tokens = float(self.burst) if rate is None or full else 1.0
        self._last = clock()

    def allowance(self, wanted: int) -> int:
        """How many of `wanted` sends may go now; the caller must send (or drop) exactly that."""
        if self.rate is None:
            return wanted
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def take(self) -> bool:
        """One send, if allowed now (the caller sends it only then). Per reply on the raw
        engine's receive path, so written out rather than through allowance()."""
        if self.rate is None:
            return True
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def delay(self) -> float:
        """Seconds until at least one more send is allowed (0 when one is allowed now)."""
        if self.rate is None or self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def poll_wait(self, deadline: float | None, now: float, sends_waiting: bool) -> float:
        """How long an engine loop may block in its poller: until the earliest `deadline`
        (0 when it is overdue: a late close is never a blocking one; -1, until an event, when
        no attempt has a deadline), or sooner if sends wait on this pacer."""
        wait = -1.0 if deadline is None else max(deadline - now, 0.0)
        if sends_waiting:
            pace = self.delay()
            wait = pace if wait < 0 else min(wait, pace)
        return wait
