"""A long-lived prober for health-check daemons: one engine loop, many checks, any thread."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

from synprobe.api import TargetLike, check_via_support, iter_targets, make_options, parse_vias
from synprobe.model import ProbeResult, Target
from synprobe.registry import create_engine
from synprobe.sources import QueueSource
from synprobe.targets import TargetSpace


class Prober:
    """`with Prober(engine="shaker", timeout=0.5) as p: p.probe("198.18.0.2:80")`.

    Checks submitted from any thread share one engine loop on a background thread. Checks of
    the same target that overlap in time are answered by one probe (a health checker asking
    twice at once wants one answer, not two SYNs).
    """

    def __init__(
        self,
        engine: str = "shaker",
        *,
        timeout: float = 0.5,
        retries: int = 1,
        concurrency: int = 1000,
        rate: float | None = None,
        source: str | None = None,
        **engine_options: object,
    ) -> None:
        options = make_options(
            timeout=timeout, retries=retries, concurrency=concurrency, rate=rate, source=source,
            **engine_options,
        )
        self.engine_name = engine
        self._engine = create_engine(engine, options)
        self._source = QueueSource()
        self._lock = threading.Lock()
        self._pending: dict[Target, list[Future[ProbeResult]]] = {}
        self._failure: BaseException | None = None
        self._closed = False
        # The loop thread inherits the calling thread's network namespace, like its sockets.
        self._thread = threading.Thread(target=self._loop, name="synprobe-prober", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            for batch in self._engine.run(self._source):
                with self._lock:
                    pending = self._pending
                    waiters = [(r, pending.pop(Target(r.host, r.port, r.via), [])) for r in batch]
                for result, futures in waiters:
                    for fut in futures:
                        fut.set_result(result)
        except BaseException as exc:
            with self._lock:
                self._failure = exc
                orphans = [f for fs in self._pending.values() for f in fs]
                self._pending.clear()
            for fut in orphans:
                fut.set_exception(exc)
        finally:
            self._engine.close()

    def submit(self, target: TargetLike, via: str | None = None) -> Future[ProbeResult]:
        """Start a check (through real server `via`, if named); the future resolves to its
        ProbeResult."""
        vias = parse_vias(via)
        check_via_support(self._engine, vias)
        tgt = next(iter_targets([target], vias))
        fut: Future[ProbeResult] = Future()
        with self._lock:
            if self._failure is not None:
                raise RuntimeError("the prober's engine failed") from self._failure
            if self._closed:
                raise RuntimeError("the prober is closed")
            waiters = self._pending.setdefault(tgt, [])
            waiters.append(fut)
            first = len(waiters) == 1
        if first:
            self._source.put(tgt)
        return fut

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
        self._thread.join()
        self._source.release()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
