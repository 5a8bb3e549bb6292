"""The library API: one check, a stream of checks, their asyncio forms, and a long-lived Prober."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

from synprobe.engines.base import Engine, ProbeOptions
from synprobe.errors import UsageError
from synprobe.model import ProbeResult, Target
from synprobe.registry import create_engine
from synprobe.runner import EngineThread, ThrottledSource
from synprobe.sources import IterSource
from synprobe.targets import Prepared, TargetSpace, parse_target, parse_via, with_vias

TargetLike = str | tuple[str, int] | Target


def make_options(
    *,
    timeout: float = 0.5,
    retries: int = 1,
    concurrency: int = 1000,
    rate: float | None = None,
    source: str | None = None,
    **engine_options: object,
) -> ProbeOptions:
    if not timeout > 0:
        raise UsageError(f"timeout must be positive, got {timeout!r}")
    if retries < 0:
        raise UsageError(f"retries must be 0 or more, got {retries!r}")
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, got {concurrency!r}")
    if rate is not None and not rate > 0:
        raise UsageError(f"rate must be positive (or None for no limit), got {rate!r}")
    return ProbeOptions(timeout, retries, concurrency, rate, source, dict(engine_options))


def iter_targets(
    targets: Iterable[TargetLike] | TargetSpace | Prepared, vias: Sequence[str] = ()
) -> Iterator[Target]:
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
    if vias and not getattr(eng, "supports_via", False):
        raise UsageError(
            f"the {eng.name} engine cannot choose the real server a check goes through (via); "
            "use engine 'raw', or SO_MARK with policy routing (--mark; see the README)"
        )


def probe(
    target: TargetLike,
    *,
    engine: str = "shaker",
    timeout: float = 0.5,
    source: str | None = None,
    retries: int = 1,
    via: str | None = None,
    **engine_options: object,
) -> ProbeResult:
    """Check one target, blocking until it is classified (at most timeout * (retries + 1)).

    `via` names a real server to check the target (a DSR VIP) through."""
    options = make_options(timeout=timeout, retries=retries, source=source, **engine_options)
    vias = parse_vias(via)
    eng = create_engine(engine, options)
    # One check runs inline: no consumer can stall the engine loop between yields here.
    try:
        check_via_support(eng, vias)
        for batch in eng.run(IterSource(iter_targets([target], vias))):
            if batch:
                return batch[0]
    finally:
        eng.close()
    raise RuntimeError(f"engine {engine!r} finished without a result")  # an engine bug


class ResultStream(Iterator[ProbeResult]):
    """Results of `probe_many()` as they complete. Closing it early stops starting new checks."""

    def __init__(self, eng: Engine, targets: Iterator[Target], high_water: int) -> None:
        self._queue: queue.SimpleQueue[list[ProbeResult] | BaseException | None] = (
            queue.SimpleQueue()
        )
        self._source = ThrottledSource(targets, high_water)
        self._thread = EngineThread(eng, self._source, self._queue.put)
        self._batch: Iterator[ProbeResult] = iter(())
        self._finished = False
        self._thread.start()

    def __next__(self) -> ProbeResult:
        while True:
            for result in self._batch:
                return result
            if self._finished:
                raise StopIteration
            item = self._queue.get()
            if item is None:
                self._finish()
                raise StopIteration
            if isinstance(item, BaseException):
                self._finish()
                raise item
            self._source.consumed(len(item))
            self._batch = iter(item)

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._thread.join()

    def stats(self) -> dict[str, int]:
        """The engine's counters so far (sent, send errors, invalid or dropped replies, ...)."""
        return self._thread.engine.stats()

    def close(self) -> None:
        """Stop starting checks, let those in flight finish, and wait for the engine to end."""
        if self._finished:
            return
        self._thread.stop()
        while True:
            item = self._queue.get()
            if item is None or isinstance(item, BaseException):
                break
        self._finish()

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_many(
    targets: Iterable[TargetLike] | TargetSpace | Prepared,
    *,
    engine: str = "shaker",
    timeout: float = 0.5,
    retries: int = 1,
    concurrency: int = 1000,
    rate: float | None = None,
    source: str | None = None,
    via: str | Sequence[str] | None = None,
    **engine_options: object,
) -> ResultStream:
    """Check many targets; results stream back in completion order, never materialising the
    target list. Use it as an iterator (or `with` block, to stop early cleanly).

    With `via` (one real server or several), each target is checked through each of them."""
    options = make_options(
        timeout=timeout, retries=retries, concurrency=concurrency, rate=rate, source=source,
        **engine_options,
    )
    vias = parse_vias(via)
    eng = create_engine(engine, options)
    try:
        check_via_support(eng, vias)
    except UsageError:
        eng.close()
        raise
    return ResultStream(eng, iter_targets(targets, vias), high_water=max(4096, 4 * concurrency))


async def aprobe(target: TargetLike, **kwargs: Any) -> ProbeResult:
    """`probe()` for asyncio: the check runs on a worker thread, the event loop stays free."""
    return await asyncio.to_thread(probe, target, **kwargs)


async def aprobe_many(
    targets: Iterable[TargetLike] | TargetSpace | Prepared, **kwargs: Any
) -> AsyncIterator[ProbeResult]:
    """`probe_many()` for asyncio: `async for result in aprobe_many(targets, ...)`."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[list[ProbeResult] | BaseException | None] = asyncio.Queue()
    options = make_options(**{k: v for k, v in kwargs.items() if k not in ("engine", "via")})
    vias = parse_vias(kwargs.get("via"))
    eng = create_engine(kwargs.get("engine", "shaker"), options)
    check_via_support(eng, vias)
    source = ThrottledSource(iter_targets(targets, vias), max(4096, 4 * options.concurrency))
    thread = EngineThread(
        eng, source, lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item)
    )
    thread.start()
    finished = False
    try:
        while True:
            item = await inbox.get()
            if item is None:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            source.consumed(len(item))
            for result in item:
                yield result
    finally:
        if not finished:
            thread.stop()
            while True:
                item = await inbox.get()
                if item is None or isinstance(item, BaseException):
                    break
        await asyncio.to_thread(thread.join)
