"""Target sources: how engines are fed, from a lazy iterable or from callers on other threads."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterable
from itertools import islice

from synprobe.model import Target

# What a source allows, asked by the engine once per turn of its loop (`source.admission()`):
GO = 0  # start checks as usual
NO_NEW = 1  # start no new check: targets pulled but not yet started are dropped (a deadline, a
# stop); attempts of checks already started go on, and their results still come
ABORT = 2  # end now (SIGINT/SIGTERM): close what is in flight (an open port's socket resets it)


def always_go() -> int:
    """`admission()` for a source without one."""
    return GO


class IterSource:
    """Feeds an engine from an iterable, lazily: never more than the engine asks for. An
    iterable with a `take_targets(n)` method (up to n targets; fewer means it has none left
    for this source) is asked through it: the CLI's workers take targets from a pool they
    share (cli.workers.SpanTargets)."""

    wakeup_fd = None

    @staticmethod
    def admission() -> int:
        return GO

    def __init__(self, targets: Iterable[Target]) -> None:
        self._take = getattr(targets, "take_targets", None)
        self._it = iter(targets) if self._take is None else iter(())
        self._done = False

    def pull(self, limit: int) -> list[Target] | None:
        if self._done:
            return None
        batch = self._take(limit) if self._take is not None else list(islice(self._it, limit))
        if len(batch) < limit:
            self._done = True
            if not batch:
                return None
        return batch


class QueueSource:
    """Fed by `put()` from any thread; wakes the engine's poll loop through an eventfd."""

    def __init__(self) -> None:
        self._queue: deque[Target] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self.wakeup_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def put(self, target: Target) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("prober is closed")
            self._queue.append(target)
        os.eventfd_write(self.wakeup_fd, 1)

    def put_many(self, targets: list[Target]) -> None:
        """Queue several targets with one wakeup of the engine."""
        if not targets:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("prober is closed")
            self._queue.extend(targets)
        os.eventfd_write(self.wakeup_fd, 1)

    def close(self) -> None:
        """No more targets: the engine finishes what is in flight, then its run() ends."""
        with self._lock:
            self._closed = True
        if self.wakeup_fd is not None:
            os.eventfd_write(self.wakeup_fd, 1)

    @staticmethod
    def admission() -> int:
        return GO  # close() still probes what was queued before it

    def produced(self, count: int) -> None:
        """Results handed on (no backlog is kept here: a Prober's callers hold futures)."""

    def pull(self, limit: int) -> list[Target] | None:
        with contextlib.suppress(BlockingIOError):  # no wakeup pending
            os.eventfd_read(self.wakeup_fd)
        with self._lock:
            if not self._queue:
                return None if self._closed else []
            return [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]

    def release(self) -> None:
        if self.wakeup_fd is not None:
            os.close(self.wakeup_fd)
            self.wakeup_fd = None
