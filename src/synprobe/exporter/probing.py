"""Running one `/probe` check through a Prober: one check with its attempts, or `count` SYNs
spread over the probe's budget; and the cap on checks in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from synprobe.exporter.config import Module
from synprobe.model import ProbeResult, State
from synprobe.prober import Prober


@dataclass(slots=True)
class Outcome:
    """What one probe found, for the metrics."""

    state: State | None = None  # None: no check ran (the name did not resolve)
    reason: str = "unresolved"
    rtt: float | None = None
    attempts: int = 0
    engine: str = ""
    rtts: list[float] = field(default_factory=list)  # count mode: every answered SYN
    sent: int = 0
    received: int = 0

    @property
    def success(self) -> bool:
        return self.state is State.OPEN


class Slots:
    """Checks in flight, counted until the Prober has answered each one (not until the request
    gave up waiting), so the cap bounds the Prober's queue too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release_when_done(self, fut: Future[ProbeResult], loop: asyncio.AbstractEventLoop) -> None:
        def done(_: Future[ProbeResult]) -> None:
            # RuntimeError: the loop is closed, nobody counts any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.release)

        fut.add_done_callback(done)

    def release(self) -> None:
        self.used -= 1


def _submit(prober: Prober, module: Module, host: str, port: int,
            slots: Slots) -> Future[ProbeResult]:
    """Start the check in the slot already taken; the slot comes back at once if it cannot."""
    try:
        return prober.submit((host, port), via=module.via)
    except BaseException:
        slots.release()
        raise


async def _await_result(fut: Future[ProbeResult], timeout: float, slots: Slots,
                        loop: asyncio.AbstractEventLoop) -> ProbeResult | None:
    """The check's result, or None when the request's time is up first. Either way its slot
    is released once the Prober has answered it: here, or (a request that gave up, or was
    cancelled) from the Prober's dispatcher thread later. The check itself is not cancelled:
    it ends, and resets, on the engine's own deadline."""
    waiter = asyncio.wrap_future(fut)
    try:
        done, _ = await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
    except asyncio.CancelledError:  # the server shutting down, or a client gone
        slots.release_when_done(fut, loop)
        raise
    if not done:
        slots.release_when_done(fut, loop)
        return None
    slots.release()
    return waiter.result()


async def run_check(prober: Prober, module: Module, host: str, port: int, deadline: float,
                    slots: Slots) -> Outcome:
    """One check (all its attempts) of host:port, answered by `deadline` (monotonic). Uses
    the slot the caller took."""
    loop = asyncio.get_running_loop()
    fut = _submit(prober, module, host, port, slots)
    result = await _await_result(fut, deadline - time.monotonic(), slots, loop)
    if result is None:
        return Outcome(State.FILTERED, "deadline", None, module.attempts, prober.engine_name)
    return Outcome(result.state, result.reason, result.rtt, result.attempts, result.engine)


async def run_count(prober: Prober, module: Module, host: str, port: int, deadline: float,
                    slots: Slots) -> Outcome:
    """`count` SYNs spread evenly over the probe's budget, one at a time: sent, received
    (SYN-ACK or RST: the target answered), RTTs. Stops early when the deadline comes first.
    The first SYN uses the slot the caller took; each later one takes its own."""
    assert module.count
    loop = asyncio.get_running_loop()
    begin = time.monotonic()
    # Spread over what is left of the probe's budget (the module's timeout, or less when the
    # scrape ends sooner): SYN i leaves at begin + i * spacing.
    spacing = max(deadline - begin, 0.0) / module.count
    out = Outcome(engine=prober.engine_name)
    last: ProbeResult | None = None
    for i in range(module.count):
        if i > 0:
            await asyncio.sleep(max(begin + i * spacing - time.monotonic(), 0.0))
            if time.monotonic() >= deadline or not slots.take():
                break  # out of time, or the exporter is at its cap: report what was sent
        fut = _submit(prober, module, host, port, slots)
        out.sent += 1
        result = await _await_result(fut, deadline - time.monotonic(), slots, loop)
        if result is None:
            break
        last = result
        if result.state in (State.OPEN, State.CLOSED):
            out.received += 1
            if result.rtt is not None:
                out.rtts.append(result.rtt)
        if result.state is State.OPEN and out.state is not State.OPEN:
            out.state, out.reason, out.rtt = result.state, result.reason, result.rtt
    out.attempts = out.sent
    if out.state is None:
        if last is None:
            out.state, out.reason = State.FILTERED, "deadline"
        else:
            out.state, out.reason, out.rtt = last.state, last.reason, last.rtt
    return out
