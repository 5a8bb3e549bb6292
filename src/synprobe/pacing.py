"""A smooth send pacer (token bucket) shared by the engines."""

from __future__ import annotations

import time


class Pacer:
    """Allows `rate` sends per second on average, in bursts of at most `burst`.

    A small burst keeps the wire smooth while letting an engine batch its sends; the engine asks
    `allowance()` how many it may send now and `delay()` how long to wait when the answer is 0.
    With rate None every request is allowed at once.
    """

    def __init__(self, rate: float | None, burst: int | None = None, clock=time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.rate = rate
        self._clock = clock
        # About 5 ms worth of sends: enough to batch syscalls, small enough to stay smooth.
        self.burst = burst or (max(1, int(rate / 200)) if rate else 1 << 30)
        self._tokens = float(self.burst) if rate is None else 1.0
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

    def delay(self) -> float:
        """Seconds until at least one more send is allowed (0 when one is allowed now)."""
        if self.rate is None or self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate
