"""A long-lived prober for health-check daemons: one engine loop, many checks, any thread."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from synprobe.api import (
    TargetLike,
    check_via_support,
    iter_targets,
    make_options,
    open_engine,
    parse_vias,
)
from synprobe.engines.base import Engine
from synprobe.model import ProbeResult, Target
from synprobe.runner import EngineThread
from synprobe.sources import QueueSource
from synprobe.targets.space import TargetSpace

# What the engine thread hands over: a batch of results, or the end of the engine loop (None
# when it ended normally, else the exception that ended it).
_Handoff = list[ProbeResult] | BaseException | None


# What a batch callback of submit_many() gets: (the target as submitted, its result or the
# exception that ended the engine before it was answered), many at a time.
Outcomes = list[tuple[Target, ProbeResult | BaseException]]
OnResults = Callable[[Outcomes], None]
_log = logging.getLogger(__name__)


def _call_back(on_results: OnResults, outcomes: Outcomes) -> None:
    # A failing callback must not end the dispatcher: every other check would then hang.
    try:
        on_results(outcomes)
    except Exception:
        _log.exception("synprobe: a submit_many() callback raised")


_Waiters = tuple[Target, ProbeResult | BaseException, Iterable[Future[ProbeResult] | OnResults]]


def _answer(waiters: Iterable[_Waiters]) -> None:
    """Resolve each Future; hand each batch callback all of its outcomes in one call."""
    batched: dict[OnResults, Outcomes] = {}
    for tgt, outcome, ws in waiters:
        for w in ws:
            if w.__class__ is Future:
                _settle(w, outcome)  # type: ignore[arg-type]
                continue
            outcomes = batched.get(w)  # type: ignore[call-overload]
            if outcomes is None:  # (setdefault would build a list per result)
                batched[w] = [(tgt, outcome)]  # type: ignore[index]
            else:
                outcomes.append((tgt, outcome))
    for on_results, outcomes in batched.items():
        _call_back(on_results, outcomes)


_new_tuple = tuple.__new__


def result_target(r: ProbeResult) -> Target:
    """The target a result answers, as it was submitted (canonical): the key of its waiters.
    tuple.__new__: Target's own __new__ is a Python frame (0.3 µs a result)."""
    return _new_tuple(Target, (r.host, r.port, r.via))


def wait_on(pending: dict[Target, list[Any]], tgt: Target, waiter: Any,
            fresh: list[Target]) -> None:
    """Register `waiter` for `tgt`; a target nobody waits on yet joins `fresh`, the targets
    to probe: checks of one target that overlap in time share one probe."""
    waiters = pending.get(tgt)
    if waiters is None:
        pending[tgt] = [waiter]
        fresh.append(tgt)
    else:
        waiters.append(waiter)


def _settle(fut: Future[ProbeResult], outcome: ProbeResult | BaseException) -> None:
    try:
        # False when the caller cancelled it (asyncio.wait_for does, on a timeout): skip it.
        # Once running it can no longer be cancelled, so setting the outcome cannot race.
        if not fut.set_running_or_notify_cancel():
            return
    except RuntimeError:  # already resolved by someone other than us: nothing to do
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


class Prober:
    """`with Prober(engine="shaker", timeout=0.5) as p: p.probe("198.18.0.2:80")`.

    Checks submitted from any thread share one engine loop on a background thread. Checks of
    the same target that overlap in time are answered by one probe (a health checker asking
    twice at once wants one answer, not two SYNs).

    Futures are resolved, and their done-callbacks run, on a dispatcher thread of its own, so
    a slow callback delays other results but never the engine. A cancelled future is
    skipped; its check still runs. Only `submit_many(on_results=...)` callbacks, which must
    not block, run on the engine's thread.

    `submit()` validates what it can before queueing a check (the target, the real server's
    address, whether the engine can check through one). An exception the engine raises while
    running (e.g. a real server it cannot reach) ends the prober: every pending future fails
    with that exception and later `submit()`s raise RuntimeError from it. A future is never
    left pending: if the engine loop ends with checks unanswered, they fail with RuntimeError.

    With the shaker engine the loop runs in a helper process the Prober starts (in the calling
    thread's network namespace) and stops in close(); it also ends if this process dies.
    Whatever this process does (a thread holding the GIL, a long GC pause), the helper still
    resets every answered socket in time. `stats()` is the helper's counters as of its last
    results.
    """

    def __init__(self, engine: str = "shaker", *, timeout: float = 0.5, retries: int = 1,
                 concurrency: int | None = None, rate: float | None = None,
                 source: str | None = None, mark: int | None = None, freebind: bool = False,
                 **engine_options: object) -> None:
        """`concurrency` None: the engine's own default (see `registry.default_concurrency`);
        `engine_options`: the engine's own keywords (raw: rst, sport_range, via_mode)."""
        options = make_options(engine, timeout=timeout, retries=retries,
                               concurrency=concurrency, rate=rate, source=source, mark=mark,
                               freebind=freebind, **engine_options)
        self.engine_name = engine
        # The shaker's loop runs in a helper process of its own: in ours, any thread holding
        # the GIL past the kernel's ~200 ms delayed-ACK window would let the kernel complete
        # handshakes (docs/shaker-window.md). The raw engine has no such window.
        if engine == "shaker":
            # Imported here: the CLI, which never runs a Prober, does not pay for it (~5 ms).
            from synprobe.helper.process import HelperEngine

            self._engine: Engine = HelperEngine(options)
        else:
            self._engine = open_engine(engine, options)
        # What would fail every check (the raw engine's capability) fails here, not later as
        # the end of the engine loop.
        try:
            self._engine.preflight()
        except BaseException:
            self._engine.close()
            raise
        remember = getattr(self._engine, "remember_targets", None)
        if remember is not None:  # long-lived: per-target work worth keeping (raw: cookies)
            remember()
        self._source = QueueSource()
        self._lock = threading.Lock()
        # Each check's waiters: a Future (submit) or a batch callback (submit_many(on_results=)).
        self._pending: dict[Target, list[Future[ProbeResult] | OnResults]] = {}
        self._failure: BaseException | None = None
        self._closed = False
        self._ended = False
        self._release_at_end = False  # close() came from the engine thread (a batch callback)
        # To the dispatcher: the waiters of answered checks that have a Future, then the end.
        self._handoff: queue.SimpleQueue[list[_Waiters] | BaseException | None] = \
            queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch, name="synprobe-dispatch",
                                            daemon=True)
        self._dispatcher.start()
        # The engine thread only hands batches over (SimpleQueue.put never blocks). It
        # inherits the calling thread's network namespace, like its sockets. The source is
        # released in close(), after the dispatcher: a submit() may still put() until then.
        self._thread = EngineThread(self._engine, self._source, self._hand_over,
                                    release=False)
        self._thread.start()

    def _hand_over(self, item: _Handoff) -> None:
        """On the engine thread, per batch: batch callbacks are called here, at once (no
        thread hop: handing each batch to the dispatcher, and that thread's wakeup and GIL
        handoffs, was a tenth of the watch service's CPU per check); Futures go to the
        dispatcher, so their done-callbacks never run on the engine thread."""
        if not isinstance(item, list):
            self._handoff.put(item)  # the end: the dispatcher answers what is left
            return
        futures: list[_Waiters] = []
        inline: list[_Waiters] = []
        with self._lock:
            pending = self._pending
            for r in item:
                tgt = result_target(r)
                waiters = pending.pop(tgt, ())
                for w in waiters:  # (a loop, not any(): no generator per result)
                    if w.__class__ is Future:
                        futures.append((tgt, r, waiters))
                        break
                else:
                    inline.append((tgt, r, waiters))
        if futures:
            self._handoff.put(futures)
        _answer(inline)

    def _dispatch(self) -> None:
        """The dispatcher thread: resolves futures (so their callbacks run here), with the
        batch callbacks of targets that also have a Future waiting."""
        while True:
            item = self._handoff.get()
            if not isinstance(item, list):
                break
            _answer(item)
        # The engine loop has ended and every result it gave is delivered. Anything still
        # pending would never be answered; under the lock, no submit() can add more after.
        with self._lock:
            self._ended = True
            self._failure = item
            orphans = list(self._pending.items())
            self._pending.clear()
        error = item if item is not None else RuntimeError(
            "the prober's engine loop ended before this check finished")
        _answer([(tgt, error, ws) for tgt, ws in orphans])
        if self._release_at_end:  # close() ran on the engine thread, which has ended now
            self._source.release()

    def _check_open(self) -> None:
        """Under the lock: refuse new checks once the engine failed, ended or was closed."""
        if self._failure is not None:
            raise RuntimeError("the prober's engine failed") from self._failure
        if self._closed:
            raise RuntimeError("the prober is closed")
        if self._ended:
            raise RuntimeError("the prober's engine loop ended")

    def submit(self, target: TargetLike, via: str | None = None) -> Future[ProbeResult]:
        """Start a check (through real server `via`, if named); the future resolves to its
        ProbeResult."""
        vias = parse_vias(via)
        check_via_support(self._engine, vias)
        tgt = next(iter_targets([target], vias))
        fut: Future[ProbeResult] = Future()
        with self._lock:
            self._check_open()
            waiters = self._pending.get(tgt)
            if waiters is None:
                # Queued under the lock: were close() to run between registering the waiter
                # and queueing its target, put() would fail here and a second caller waiting
                # on the same target would wait forever.
                self._source.put(tgt)
                self._pending[tgt] = [fut]
            else:
                waiters.append(fut)
        return fut

    def submit_many(self, targets: Sequence[Target], *,
                    on_results: OnResults | None = None) -> list[Future[ProbeResult]]:
        """Start several checks with one wakeup of the engine (a scheduler's due checks of one
        tick): submit() wakes the engine per check, and at 10,000 checks a second that wakeup,
        not the check, was most of the cost. Targets must already be canonical, as
        parse_target() or a TargetSpace makes them: they are not parsed again here.

        With `on_results`, no Futures: it is called with lists of (target, ProbeResult or
        the exception that ended the engine), one call per batch the engine hands over, once
        per target submitted (a target submitted twice is answered twice); an empty list is
        returned. A Future per check (a Condition and its lock each) was a sixth of the watch
        service's CPU per check. The callback runs on the engine's thread (on the dispatcher
        when a Future also waits on the target, or for the checks the end of the engine left
        unanswered: so two calls may overlap, on two threads): it must hand the outcomes on
        and return, never block, since the engine waits for it (the watch service appends
        them to a deque). What it raises is logged."""
        if any(t.via is not None for t in targets):
            check_via_support(self._engine, [t.via for t in targets if t.via is not None])
        futures: list[Future[ProbeResult]] = []
        fresh: list[Target] = []
        with self._lock:
            self._check_open()
            pending = self._pending
            for tgt in targets:
                waiter: Future[ProbeResult] | OnResults
                if on_results is None:
                    waiter = Future()
                    futures.append(waiter)
                else:
                    waiter = on_results
                wait_on(pending, tgt, waiter, fresh)
            self._source.put_many(fresh)  # under the lock, as in submit()
        return futures

    def probe(self, target: TargetLike, via: str | None = None) -> ProbeResult:
        return self.submit(target, via).result()

    async def aprobe(self, target: TargetLike, via: str | None = None) -> ProbeResult:
        return await asyncio.wrap_future(self.submit(target, via))

    def probe_many(
        self, targets: Iterable[TargetLike] | TargetSpace, *, window: int = 1000
    ) -> Iterator[ProbeResult]:
        """Check many targets through the shared loop, at most `window` outstanding at once;
        results come back in completion order."""
        done: queue.SimpleQueue[Future[ProbeResult]] = queue.SimpleQueue()
        outstanding = 0
        for tgt in iter_targets(targets):
            if outstanding >= window:
                yield done.get().result()
                outstanding -= 1
            self.submit(tgt).add_done_callback(done.put)
            outstanding += 1
        for _ in range(outstanding):
            yield done.get().result()

    def stats(self) -> dict[str, int]:
        return self._engine.stats()

    def close(self) -> None:
        """Finish the checks in flight, then stop the loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._source.close()
        if self._thread.is_current():
            # From a batch callback, on the engine thread: the loop ends once it returns, and
            # the dispatcher, which ends after it, releases the source.
            self._release_at_end = True
            return
        self._thread.join()
        # Every future is resolved once the dispatcher ends. Not when close() runs in a done
        # callback, on the dispatcher itself: it ends when that callback returns.
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join()
        self._source.release()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
