"""SIGINT and SIGTERM stop a CLI run the same way, without losing what completed.

The first signal does not raise: it asks the run to stop (no new check starts, checks in flight
are dropped and their sockets closed) and lets the main thread finish its loop, so every result
that completed is written, the summary printed, and the exit status is 128 + the signal. A
KeyboardInterrupt raised in the middle of a write would lose the lines buffered for stdout. A
signal that comes before there is a run to stop (start-up), or a second one in the parent (the
user insists), raises `Interrupted` at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal that could not be handled gracefully; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Installed for the duration of one CLI run (main thread only; a no-op elsewhere)."""

    def __init__(self, *, insist_to_quit: bool = True) -> None:
        self.signum: int | None = None  # the signal that stopped the run, once one did
        self._insist = insist_to_quit  # a second signal raises (the parent; not a worker)
        self._actions: list[Callable[[int], None]] = []
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal() would raise; the caller's own handling stays in force
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def on_stop(self, action: Callable[[int], None]) -> None:
        """Run `action(signum)` on the first stop signal (from the handler: keep it short and
        non-blocking). From now on a stop signal no longer raises."""
        self._actions.append(action)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._actions:
            raise Interrupted(signum)
        if self.signum is not None:
            if self._insist:
                raise Interrupted(self.signum)
            return
        self.signum = signum
        for action in self._actions:
            action(signum)
