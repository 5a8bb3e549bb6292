"""Test doubles: a `FakeEngine` that answers from a function, so the API, scheduling and output
code can be exercised without sockets or root (like httpx's MockTransport)."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterable, Iterator, Sequence

from synprobe.engines.base import ProbeOptions, TargetSource
from synprobe.model import ProbeResult, State, Target
from synprobe.wire.describe import dry_run_json

Handler = Callable[[Target], tuple[State, str] | ProbeResult]


class FakeEngine:
    """Answers each target with `handler(target)`: a (state, reason) pair or a full result."""

    name = "fake"
    supports_via = False

    def __init__(self, handler: Handler, options: ProbeOptions | None = None) -> None:
        self.handler = handler
        self.options = options or ProbeOptions()
        self.seen: list[Target] = []
        self.closed = False

    def preflight(self, vias: Sequence[str] = (), families: Iterable[bool] = ()) -> None:
        """Nothing to open: a fake can always run."""

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        while (batch := source.pull(self.options.concurrency)) is not None:
            if not batch:
                # An engine would wait on the source's wakeup fd here; a fake has nothing else
                # to do, so it waits on the fd directly.
                _wait_readable(source.wakeup_fd)
                continue
            self.seen.extend(batch)
            yield [self._answer(t) for t in batch]

    def _answer(self, target: Target) -> ProbeResult:
        answer = self.handler(target)
        if isinstance(answer, ProbeResult):
            return answer
        state, reason = answer
        rtt = 0.001 if state in (State.OPEN, State.CLOSED) else None
        return ProbeResult(target.host, target.port, state, reason, rtt, 1, self.name,
                           self.options.source, target.via)

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        if as_json:
            return dry_run_json(self.name, target, timeout=self.options.timeout,
                                attempts=self.options.retries + 1, source=self.options.source)
        return f"fake {target}"

    def stats(self) -> dict[str, int]:
        return {"sent": len(self.seen)}

    def close(self) -> None:
        self.closed = True


def _wait_readable(fd: int | None) -> None:
    if fd is not None:
        select.select([fd], [], [], 1.0)
