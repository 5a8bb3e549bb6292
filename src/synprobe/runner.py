"""Drives one engine run on a thread of its own and streams its results to a consumer.

Why a thread: a half-open check is only safe while the engine gets to close its sockets within
the kernel's ~200 ms delayed-ACK window. If results were yielded straight from the engine loop, a
slow consumer (a full stdout pipe, a busy asyncio task) would stall that loop and turn checks into
full connections. So the engine never waits on the consumer: it hands results over, and when the
consumer falls behind it stops *starting* checks (the source reports "nothing ready") while still
finishing the ones in flight. Memory stays bounded by the high-water mark plus the concurrency.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from synprobe.engines.base import Engine
from synprobe.model import ProbeResult, Target
from synprobe.sources import ABORT, GO, NO_NEW, IterSource, QueueSource

Deliver = Callable[[list[ProbeResult] | BaseException | None], None]


class ThrottledSource:
    """An IterSource that reports "nothing ready" while the consumer's backlog is high."""

    def __init__(self, targets: Iterable[Target], high_water: int) -> None:
        self._inner = IterSource(targets)
        self._high = high_water
        self._low = high_water // 2
        # Guards the counters and the eventfd: the consumer and a finaliser may
        # wake the engine while the engine thread releases the fd, and a write to a closed
        # (perhaps reused) descriptor number would land in someone else's file. Reentrant:
        # the finaliser of an abandoned stream runs stop() from a garbage collection, which may
        # happen on a thread that holds this lock.
        self._lock = threading.RLock()
        self._backlog = 0
        self._starved = False
        self._stopped = False
        self._aborted = False
        # An absolute time.monotonic() (CLOCK_MONOTONIC is one clock for every process of the
        # host, so forked workers share their parent's deadline): no check starts after it.
        self._deadline: float | None = None
        self.wakeup_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def admission(self) -> int:
        """GO, NO_NEW (stopped, or past the deadline) or ABORT: read by the engine each turn.
        Plain attribute reads: a flag set by another thread is seen on the next turn."""
        if self._aborted:
            return ABORT
        if self._stopped:
            return NO_NEW
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._stopped = True
            return NO_NEW
        return GO

    def stop_at(self, deadline: float) -> None:
        """Start no check after `deadline` (time.monotonic()); targets the engine pulled but
        has not started by then are dropped."""
        self._deadline = deadline

    def pull(self, limit: int) -> list[Target] | None:
        with contextlib.suppress(BlockingIOError):  # no wakeup pending
            os.eventfd_read(self.wakeup_fd)
        if self.admission() != GO:
            return None
        with self._lock:
            if self._stopped:
                return None
            room = self._high - self._backlog
            if room <= 0:
                self._starved = True
                return []
        return self._inner.pull(min(limit, room))

    def produced(self, count: int) -> None:
        with self._lock:
            self._backlog += count

    def consumed(self, count: int) -> None:
        with self._lock:
            self._backlog -= count
            wake = self._starved and self._backlog <= self._low
            if wake:
                self._starved = False
        if wake:
            self._wake()

    def stop(self) -> None:
        """Start no more checks; the engine finishes those in flight and ends."""
        with self._lock:
            self._stopped = True
        self._wake()

    def abort(self) -> None:
        """End the run now: the engine closes what is in flight without waiting for answers.
        Safe from a signal handler (the lock is reentrant)."""
        with self._lock:
            self._stopped = self._aborted = True
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self.wakeup_fd is not None:
                os.eventfd_write(self.wakeup_fd, 1)

    def release(self) -> None:
        """Once the engine has ended: close the eventfd."""
        with self._lock:
            fd, self.wakeup_fd = self.wakeup_fd, None
        if fd is not None:
            os.close(fd)


def close_run(run: Iterator[list[ProbeResult]]) -> None:
    """Close an engine's run generator now, so its finally closes every socket it holds,
    rather than whenever the garbage collector gets to it."""
    close = getattr(run, "close", None)
    if close is not None:
        close()


class EngineThread:
    """Runs `engine.run(source)` on a daemon thread, handing each batch to `deliver`: the one
    engine thread of `probe_many()`, `aprobe_many()` and `Prober`.

    `deliver` gets lists of results, then None when the run ended, or the exception that ended
    it. It must not block. When the run ends the thread closes the engine and (unless its owner
    keeps it, `release=False`) releases the source itself, so a run whose consumer went away
    leaks nothing once stopped.
    """

    def __init__(self, engine: Engine, source: ThrottledSource | QueueSource, deliver: Deliver,
                 *, release: bool = True) -> None:
        self.engine = engine
        self.source = source
        self._deliver = deliver
        self._release = release
        self._thread = threading.Thread(target=self._main, name="synprobe-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            for batch in self.engine.run(self.source):
                self.source.produced(len(batch))
                self._deliver(batch)
        except BaseException as exc:  # handed to the consumer, who re-raises it
            self._deliver(exc)
        else:
            self._deliver(None)
        finally:
            try:
                self.engine.close()
            finally:
                if self._release:
                    self.source.release()

    def stop(self) -> None:
        self.source.stop()

    def abort(self) -> None:
        self.source.abort()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def is_current(self) -> bool:
        """Whether the caller runs on this engine thread (e.g. inside a batch callback)."""
        return threading.current_thread() is self._thread
