"""The library API: one check, a stream of checks, their asyncio forms, and a long-lived Prober."""

from __future__ import annotations

import queue
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from synprobe.engines.base import Engine, ProbeOptions
from synprobe.errors import UsageError
from synprobe.kernel.localaddr import check_source
from synprobe.model import ProbeResult, Target
from synprobe.registry import create_engine, default_concurrency, engine_options
from synprobe.runner import EngineThread, ThrottledSource, close_run
from synprobe.sources import IterSource
from synprobe.targets.build import parse_target
from synprobe.targets.space import Prepared, TargetSpace, with_vias
from synprobe.targets.tokens import parse_via

TargetLike = str | tuple[str, int] | Target
Targets = Iterable[TargetLike] | TargetSpace | Prepared
Vias = str | Sequence[str] | None


def make_options(engine: str = "shaker", *, timeout: float = 0.5, retries: int = 1,
                 concurrency: int | None = None, rate: float | None = None,
                 source: str | None = None, mark: int | None = None, freebind: bool = False,
                 **keywords: object) -> ProbeOptions:
    """The library's keyword arguments as one checked ProbeOptions for `engine`: common
    settings, the engine's own typed options, its own default concurrency when none is given,
    and the source checked to be an address of this host (or freebind) before anything is
    sent."""
    own = engine_options(engine, keywords)
    if concurrency is None:
        concurrency = default_concurrency(engine)
    if source is not None:
        source = check_source(source, freebind=freebind)
    return ProbeOptions(timeout, retries, concurrency, rate, source, mark, freebind, own)


def iter_targets(targets: Targets, vias: Sequence[str] = ()) -> Iterator[Target]:
    """Targets as the engines take them, converted lazily (a huge list is never copied)."""
    if isinstance(targets, TargetSpace):
        return with_vias(targets.iter(), vias)
    if isinstance(targets, Prepared):
        return with_vias(targets.targets, vias)
    if isinstance(targets, str | Target):
        raise UsageError("probe_many() takes an iterable of targets; use probe() for one")
    return with_vias((parse_target(t) for t in targets), vias)


def parse_vias(via: str | Sequence[str] | None) -> list[str]:
    if via is None:
        return []
    return [parse_via(v) for v in ([via] if isinstance(via, str) else via)]


def check_via_support(eng: Engine, vias: Sequence[str]) -> None:
    if vias and not eng.supports_via:
        raise UsageError(
            f"the {eng.name} engine cannot choose the real server a check goes through (via); "
            "use engine 'raw', or a socket mark with policy routing (see docs/dsr.md)"
        )


def open_engine(name: str, options: ProbeOptions, vias: Sequence[str] = ()) -> Engine:
    """Make the engine and check it can do what was asked; closed again if it cannot."""
    eng = create_engine(name, options)
    try:
        check_via_support(eng, vias)
    except BaseException:
        eng.close()
        raise
    return eng


def high_water(concurrency: int) -> int:
    """Results a slow consumer may leave unread before the engine stops starting checks:
    four turns' worth, within 4,096..65,536 (the raw engine's default concurrency is ~74,500;
    its checks in flight still finish past the mark)."""
    return min(max(4096, 4 * concurrency), 65536)


def probe(target: TargetLike, *, engine: str = "shaker", timeout: float = 0.5,
          retries: int = 1, source: str | None = None, via: str | None = None,
          mark: int | None = None, freebind: bool = False,
          **engine_options: object) -> ProbeResult:
    """Check one target, blocking until it is classified (at most timeout * (retries + 1)).

    `via` names a real server to check the target (a DSR VIP) through; `engine_options` are
    the engine's own keywords (raw: rst, sport_range, via_mode)."""
    # One check needs one socket, not the default concurrency's worth of file descriptors.
    options = make_options(engine, timeout=timeout, retries=retries, concurrency=1,
                           source=source, mark=mark, freebind=freebind, **engine_options)
    vias = parse_vias(via)
    # Parsed (and resolved) before the engine starts: nothing slow runs inside its loop.
    targets = list(iter_targets([target], vias))
    eng = open_engine(engine, options, vias)
    # One check runs inline: no consumer can stall the engine loop between yields here.
    try:
        run = eng.run(IterSource(targets))
        try:
            for batch in run:
                if batch:
                    return batch[0]
        finally:
            close_run(run)
    finally:
        eng.close()
    raise RuntimeError(f"engine {engine!r} finished without a result")  # an engine bug


class ResultStream(Iterator[ProbeResult]):
    """Results of `probe_many()` as they complete. Closing it early stops starting new checks;
    so does dropping it unclosed (when it is garbage collected)."""

    def __init__(self, eng: Engine, targets: Iterable[Target]) -> None:
        self._queue: queue.SimpleQueue[list[ProbeResult] | BaseException | None] = (
            queue.SimpleQueue()
        )
        self._thread = start_run(eng, targets, self._queue.put)
        self._source = self._thread.source
        self._batch: Iterator[ProbeResult] = iter(())
        self._finished = False
        # An abandoned stream (`next(s); del s`) would leave the engine waiting for a consumer
        # forever, its sockets open. The finaliser holds only the engine thread, which holds
        # no reference back to the stream, so the stream can be collected and stop the run.
        self._abandoned = weakref.finalize(self, self._thread.stop)

    def __next__(self) -> ProbeResult:
        while True:
            for result in self._batch:
                return result
            batch = self._next_batch()
            if batch is None:
                raise StopIteration
            self._batch = iter(batch)

    def batches(self) -> Iterator[list[ProbeResult]]:
        """The same results a list at a time, as the engine completed them (one list per turn
        of its loop): for a consumer that handles them in bulk, as the CLI's writers do."""
        rest = list(self._batch)
        self._batch = iter(())
        if rest:
            yield rest
        while (batch := self._next_batch()) is not None:
            yield batch

    def _next_batch(self) -> list[ProbeResult] | None:
        if self._finished:
            return None
        item = self._queue.get()
        if item is None:
            self._finish()
            return None
        if isinstance(item, BaseException):
            self._finish()
            raise item
        self._source.consumed(len(item))
        return item

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._abandoned.detach()
            self._thread.join()

    def stats(self) -> dict[str, int]:
        """The engine's counters so far (sent, send errors, invalid or dropped replies, ...)."""
        return self._thread.engine.stats()

    def stop(self) -> None:
        """Start no more checks; those in flight still finish and are yielded, then the
        stream ends. Safe from any thread (e.g. a timer enforcing a deadline)."""
        self._thread.stop()

    def stop_at(self, deadline: float) -> None:
        """Start no check after `deadline` (a time.monotonic() value); like stop() then."""
        self._source.stop_at(deadline)

    def abort(self) -> None:
        """End now: checks in flight are dropped unanswered (their sockets closed); results
        already completed are still yielded, then the stream ends. Safe from a signal handler."""
        self._source.abort()

    def close(self) -> None:
        """Stop starting checks, let those in flight finish, and wait for the engine to end."""
        if self._finished:
            return
        # Stopped, the engine ends after its checks in flight whatever the backlog: nothing
        # need be drained, the unread results are dropped with the queue.
        self._thread.stop()
        self._finish()

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_many(targets: Targets, *, engine: str = "shaker", timeout: float = 0.5,
               retries: int = 1, concurrency: int | None = None, rate: float | None = None,
               source: str | None = None, via: Vias = None, mark: int | None = None,
               freebind: bool = False, **engine_options: object) -> ResultStream:
    """Check many targets; results stream back in completion order, never materialising the
    target list. Use it as an iterator (or `with` block, to stop early cleanly).

    With `via` (one real server or several), each target is checked through each of them.
    `concurrency` None is the engine's own default (the shaker's from the open files left, the
    raw engine's from its memory budget). `targets` is consumed lazily on the engine's thread,
    between its loop turns: keep it cheap (addresses, not host names to resolve; no blocking
    generator), or pass a TargetSpace from `synprobe.build_space()`, which resolves names
    once, up front. (A feeder thread was tried and measured worse: its GIL contention delayed
    closes past the delayed-ACK window with 10,000 checks in flight.)"""
    options = make_options(engine, timeout=timeout, retries=retries, concurrency=concurrency,
                           rate=rate, source=source, mark=mark, freebind=freebind,
                           **engine_options)
    vias = parse_vias(via)
    target_iter = iter_targets(targets, vias)
    return ResultStream(open_engine(engine, options, vias), target_iter)


async def aprobe(target: TargetLike, *, engine: str = "shaker", timeout: float = 0.5,
                 retries: int = 1, source: str | None = None, via: str | None = None,
                 mark: int | None = None, freebind: bool = False,
                 **engine_options: object) -> ProbeResult:
    """`probe()` for asyncio: the check runs on a worker thread, the event loop stays free."""
    import asyncio  # here: a synchronous caller (the CLI) starts without it (~20 ms)

    return await asyncio.to_thread(
        lambda: probe(target, engine=engine, timeout=timeout, retries=retries, source=source,
                      via=via, mark=mark, freebind=freebind, **engine_options))


async def aprobe_many(targets: Targets, *, engine: str = "shaker", timeout: float = 0.5,
                      retries: int = 1, concurrency: int | None = None,
                      rate: float | None = None, source: str | None = None, via: Vias = None,
                      mark: int | None = None, freebind: bool = False,
                      **engine_options: object) -> AsyncIterator[ProbeResult]:
    """`probe_many()` for asyncio: `async for result in aprobe_many(targets, ...)`."""
    import asyncio

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[list[ProbeResult] | BaseException | None] = asyncio.Queue()

    def deliver(item: list[ProbeResult] | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody will read these results
            thread.source.stop()

    options = make_options(engine, timeout=timeout, retries=retries, concurrency=concurrency,
                           rate=rate, source=source, mark=mark, freebind=freebind,
                           **engine_options)
    vias = parse_vias(via)
    target_iter = iter_targets(targets, vias)
    thread = start_run(open_engine(engine, options, vias), target_iter, deliver)
    try:
        while True:
            item = await inbox.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            thread.source.consumed(len(item))
            for result in item:
                yield result
    finally:
        # Stopped, the engine ends after its checks in flight whatever the backlog; the
        # unread inbox is dropped. A no-op when the run has already ended.
        thread.stop()
        # A generator dropped unclosed after its event loop closed is finalised here with no
        # loop to wait in; the engine thread then ends, and cleans up, on its own.
        if _loop_running():
            await asyncio.to_thread(thread.join)


def start_run(eng: Engine, targets: Iterable[Target],
              deliver: Callable[[list[ProbeResult] | BaseException | None], None]
              ) -> EngineThread:
    """`eng` running over `targets` on its own thread, throttled by the consumer's backlog
    (what `deliver` was handed and the consumer has not yet said it `consumed`)."""
    source = ThrottledSource(targets, high_water(eng.options.concurrency))  # type: ignore[attr-defined]
    thread = EngineThread(eng, source, deliver)
    thread.start()
    return thread


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
