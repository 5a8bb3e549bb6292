"""A long-lived prober whose engine runs on the caller's asyncio loop: no thread, no process.

`Prober` runs its engine on a thread of its own (the shaker's in a helper process), so any
thread may submit checks. A service that already runs an asyncio loop and checks a few thousand
targets a second pays for that thread: each batch of checks wakes it, and every handoff between
it and the loop is a GIL handoff and a context switch. Measured in the watch service (2,000
targets at 1 s, docs/watch.md), the thread's wakeups were most of the CPU per check.
`LoopProber` drives the raw engine's turns (`RawRun`) from the loop itself: a submit sends at
once, a readable receiver or a due deadline runs the next turn as a loop callback.

Only the raw engine: it is stateless on the wire, so a loop delayed by the caller's other work
delays results, never the safety of a check. The shaker's guarantee needs a loop no caller can
delay (docs/shaker-window.md), which is why `Prober` runs it in a helper process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from synprobe.api import check_via_support, make_options, open_engine
from synprobe.engines.base import os_errors
from synprobe.engines.raw.engine import RawEngine, RawRun
from synprobe.errors import UsageError
from synprobe.model import ProbeResult, Target
from synprobe.prober import OnResults, _answer, result_target, wait_on
from synprobe.sources import GO

CLOSE_SLICE = 0.1  # seconds: how often close() from another thread looks at the loop


class _Backlog:
    """The targets submitted and not yet pulled by the engine: one thread, no lock, no fd."""

    wakeup_fd = None
    puts_turn = True  # submit_many() runs a turn after each put: RawRun need not ask again

    def __init__(self) -> None:
        self.targets: deque[Target] = deque()
        self.closed = False

    @staticmethod
    def admission() -> int:
        return GO

    def pull(self, limit: int) -> list[Target] | None:
        targets = self.targets
        if not targets:
            return None if self.closed else []
        if len(targets) <= limit:
            batch = list(targets)
            targets.clear()
            return batch
        return [targets.popleft() for _ in range(limit)]


class LoopProber:
    """`LoopProber(timeout=0.3)`, made or `attach()`ed on the loop's thread, then
    `submit_many(targets, on_results=callback)` from that thread; `await aclose()`.

    The same checks as `Prober(engine="raw")` (one probe answers overlapping checks of a
    target; an engine failure answers every pending check with the exception and ends the
    prober), and the same `submit_many(..., on_results=...)` contract, except that everything
    happens on the loop's thread: `on_results` is called from the loop callbacks that read the
    replies (or from `submit_many` itself) and must not block. `close()` may be called from
    another thread while the loop runs: it waits for the checks in flight, as `Prober.close`.

    `attach(polled=True)` is for an owner that wakes up regularly anyway (the watch service's
    tick): the prober then never wakes the loop itself, neither for replies nor for timeouts;
    the owner calls `poll()` at least every few milliseconds while checks are in flight, and
    each poll handles what came and what timed out since. On a real network, where replies
    arrive after the send, each burst of them would otherwise wake the loop (~0.1 ms of CPU a
    wakeup), and so would each timeout. Closing hands the prober back to its own reader and
    timer, so `close()` and `aclose()` finish without the owner's polls.
    """

    engine_name = "raw"

    def __init__(self, engine: str = "raw", *, timeout: float = 0.5, retries: int = 1,
                 concurrency: int | None = None, rate: float | None = None,
                 source: str | None = None, mark: int | None = None, freebind: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 **engine_options: object) -> None:
        if engine != "raw":
            raise UsageError(f"LoopProber runs the raw engine only, not {engine!r}: the "
                             "shaker needs a loop nothing else can delay (use Prober)")
        options = make_options(engine, timeout=timeout, retries=retries,
                               concurrency=concurrency, rate=rate, source=source, mark=mark,
                               freebind=freebind, **engine_options)
        self._engine: RawEngine = open_engine(engine, options)  # type: ignore[assignment]
        try:
            self._engine.preflight()  # the capability: fails here, not at the first check
            self._engine.remember_targets()
        except BaseException:
            self._engine.close()
            raise
        self._backlog = _Backlog()
        self._pending: dict[Target, list[OnResults]] = {}
        self._run: RawRun | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # a turn is already called soon
        self._polled = False  # the owner's poll() does the reading and the timeouts
        self._busy = False  # inside a turn: a submit from a callback only queues
        self._again = False
        self._failure: BaseException | None = None
        self._closing = False
        self._ended = threading.Event()
        self._on_end: list[asyncio.Future[None]] = []  # aclose() callers
        if loop is not None:
            self.attach(loop)

    def attach(self, loop: asyncio.AbstractEventLoop | None = None, *,
               polled: bool = False) -> None:
        """Start the engine on `loop` (the running one by default); on the loop's thread.
        `polled`: the owner calls `poll()` (see the class)."""
        if self._loop is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._run = self._engine.open_run(self._backlog)
        self._polled = polled
        if not polled:
            self._loop.add_reader(self._run.fd, self._turn, True)

    def poll(self) -> None:
        """Read the replies that came and time out what is due (`attach(polled=True)`); on
        the loop's thread. Results go to the callbacks, as from any turn."""
        run = self._run
        # Nothing in flight, nothing to wait for: every send's own turn has already read the
        # socket (on veth, every reply), so most ticks need no turn at all.
        if run is not None and (run.table or run.queue):
            self._turn(True)

    def _unpoll(self) -> None:
        """Back to waking up on its own: its reader, and a turn that arms its timer."""
        if self._polled and self._run is not None:
            assert self._loop is not None
            self._polled = False
            self._loop.add_reader(self._run.fd, self._turn, True)

    def submit_many(self, targets: Sequence[Target], *,
                    on_results: OnResults | None = None) -> list[Any]:
        """Start checks of canonical targets (as parse_target() makes them): they leave in
        this call, as far as the engine's concurrency and rate allow. `on_results` gets their
        outcomes, in batches. Returns an empty list (Prober's Futures have no equivalent)."""
        if on_results is None:
            raise UsageError("LoopProber.submit_many needs on_results")
        if self._failure is not None:
            raise RuntimeError("the prober's engine failed") from self._failure
        if self._closing or self._run is None:
            raise RuntimeError("the prober is closed" if self._closing
                               else "the prober is not attached to a loop")
        if any(t.via is not None for t in targets):
            check_via_support(self._engine, [t.via for t in targets if t.via is not None])
        pending, fresh = self._pending, self._backlog.targets
        for tgt in targets:
            wait_on(pending, tgt, on_results, fresh)
        self._turn(False)
        return []

    def _turn(self, readable: bool = False) -> None:
        if self._busy:  # a callback submitted: the running turn goes round again
            self._again = True
            return
        run = self._run
        if run is None:
            return
        self._busy = True
        try:
            while True:
                self._again = False
                with os_errors(self.engine_name):  # the engine's boundary, as in run()
                    done, wait = run.turn(readable)
                readable = False
                if done:
                    self._deliver(done)
                    if self._run is not run:  # a callback closed the prober: the run is over
                        return
                if wait is None:
                    self._end(None)
                    return
                if not self._again:
                    break
            self._arm(wait)
        except Exception as exc:  # the engine failed: every pending check learns why
            self._end(exc)
        finally:
            self._busy = False

    def _soon_turn(self) -> None:
        self._soon = False
        self._turn(False)

    def _timer_turn(self) -> None:
        self._timer = None
        self._turn(False)

    def _arm(self, wait: float) -> None:
        """The next turn without an event: `wait` seconds from now (-1: none is needed)."""
        loop = self._loop
        assert loop is not None
        if wait == 0.0:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._soon_turn)
            return
        if wait < 0 or self._polled:  # polled: the owner's next poll() is the timer
            return  # a stale timer only costs one turn: cheaper than cancelling it each time
        when = loop.time() + wait
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return  # it comes first; that turn arms the next one
            timer.cancel()
        self._timer = loop.call_at(when, self._timer_turn)

    def _deliver(self, results: list[ProbeResult]) -> None:
        pending = self._pending
        answered = []
        for r in results:
            tgt = result_target(r)
            answered.append((tgt, r, pending.pop(tgt, ())))
        _answer(answered)

    def _end(self, failure: BaseException | None) -> None:
        """The run is over (closed and drained, or failed): close it and answer the rest."""
        run, self._run = self._run, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if run is not None:
            assert self._loop is not None
            if not self._loop.is_closed():
                self._loop.remove_reader(run.fd)
            run.close()
        self._engine.close()
        if failure is not None:
            self._failure = failure
        error = failure or RuntimeError("the prober closed before this check finished")
        orphans, self._pending = self._pending, {}
        _answer([(tgt, error, waiters) for tgt, waiters in orphans.items()])
        self._ended.set()
        for ended in self._on_end:
            if not ended.done():
                ended.set_result(None)

    def stats(self) -> dict[str, int]:
        return self._engine.stats()

    def _close_on_loop(self) -> None:
        """No more checks; the run ends once those in flight are answered or time out."""
        self._closing = True
        self._backlog.closed = True
        if self._run is None:
            self._end(None)
        else:
            self._unpoll()  # the owner may poll no more: finish on our own
            self._turn(True)

    def close(self, timeout: float | None = None) -> None:
        """Finish the checks in flight, then close the sockets. From another thread while the
        loop runs: waits (up to `timeout`). On the loop's thread, or with no loop running:
        closes now, and what is in flight is answered with RuntimeError (a SYN-ACK still to
        come is the kernel's to reset)."""
        if self._ended.is_set():
            return
        loop = self._loop
        on_loop = loop is not None and _running_loop() is loop
        # A loop that is not running (stopped, or closed) would never run the close request.
        if loop is None or on_loop or not loop.is_running():
            self._closing = self._backlog.closed = True
            self._end(None)
            return
        try:
            loop.call_soon_threadsafe(self._close_on_loop)
        except RuntimeError:  # the loop has closed meanwhile
            self._end(None)
            return
        # In slices: a loop that stops before it runs the request (loop.stop() skips what was
        # queued meanwhile) would leave this waiting for ever and the sockets open.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended.wait(CLOSE_SLICE):
            if not loop.is_running():
                self._end(None)
                return
            if deadline is not None and time.monotonic() >= deadline:
                return

    @property
    def ended(self) -> bool:
        """Closed for good: the sockets are closed and every check was answered."""
        return self._ended.is_set()

    async def aclose(self) -> None:
        """On the loop: finish the checks in flight, then close."""
        if self._ended.is_set():
            return
        ended = asyncio.get_running_loop().create_future()
        self._on_end.append(ended)
        self._close_on_loop()
        await ended


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
