"""Running one `/probe` check through the shared Prober, and the Probers the modules need.

Every request shares a long-lived `synprobe.Prober` (one engine loop on a thread of its own), so
1,000 requests a second cost 1,000 checks, not processes or threads. A Prober fixes what its
engine fixes at start (engine, per-attempt timeout, retries, source address, mark); modules that
agree on those share one, so a config whose modules differ only in name, address family or
count of SYNs has exactly one Prober. The pool is built from the config, never from requests:
its size is bounded by the config, whatever targets requests name.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from synprobe.exporter.config import Module
from synprobe.model import ProbeResult, State
from synprobe.prober import Prober

ProberFactory = Callable[[Module, int], Prober]


def make_prober(module: Module, concurrency: int) -> Prober:
    extra: dict[str, object] = {} if module.mark is None else {"mark": module.mark}
    return Prober(
        engine=module.engine,
        timeout=module.attempt_timeout,
        retries=0 if module.count else module.retries,
        concurrency=concurrency,
        source=module.source,
        **extra,
    )


class ProberPool:
    """One Prober per distinct engine key of the configured modules.

    A reload is two steps: `prepare()` makes the Probers the new config lacks (slow for the
    raw engine, so callers on an event loop run it on a thread; it touches no shared state),
    `commit()` swaps them in (on the loop's thread, instantly). A Prober no module needs any
    more is closed once no request holds it (`acquire`/`release`): a request that started
    before a reload finishes with the Prober it started with.
    """

    def __init__(self, factory: ProberFactory = make_prober) -> None:
        self._factory = factory
        self._probers: dict[tuple[object, ...], Prober] = {}
        self._users: dict[int, int] = {}  # id(prober) -> requests holding it
        self._retired: dict[int, Prober] = {}  # replaced, closed when its last user leaves

    def __len__(self) -> int:
        return len(self._probers)

    def get(self, module: Module) -> Prober:
        return self._probers[module.engine_key()]

    def acquire(self, module: Module) -> Prober:
        prober = self._probers[module.engine_key()]
        self._users[id(prober)] = self._users.get(id(prober), 0) + 1
        return prober

    def release(self, prober: Prober) -> None:
        left = self._users[id(prober)] - 1
        if left:
            self._users[id(prober)] = left
            return
        del self._users[id(prober)]
        retired = self._retired.pop(id(prober), None)
        if retired is not None:
            _close_later([retired])

    def prepare(self, modules: Mapping[str, Module], concurrency: int,
                ) -> dict[tuple[object, ...], Prober]:
        """Probers for the modules' engine keys the pool lacks. One that cannot start (the raw
        engine without CAP_NET_RAW) raises, after closing those made so far."""
        have = set(self._probers)
        fresh: dict[tuple[object, ...], Prober] = {}
        try:
            for module in modules.values():
                key = module.engine_key()
                if key not in have and key not in fresh:
                    fresh[key] = self._factory(module, concurrency)
        except BaseException:
            _close_later(list(fresh.values()))
            raise
        return fresh

    def commit(self, modules: Mapping[str, Module],
               fresh: Mapping[tuple[object, ...], Prober]) -> None:
        wanted = {m.engine_key() for m in modules.values()}
        current = dict(fresh)
        current.update({k: p for k, p in self._probers.items() if k in wanted})
        unused = [p for k, p in fresh.items() if current[k] is not p]  # a racing prepare's
        stale = [p for k, p in self._probers.items() if k not in wanted]
        self._probers = {k: current[k] for k in wanted}
        for prober in stale:
            if id(prober) in self._users:
                self._retired[id(prober)] = prober
            else:
                unused.append(prober)
        _close_later(unused)

    def replace(self, modules: Mapping[str, Module], concurrency: int) -> None:
        """prepare() and commit() in one go (for callers without an event loop)."""
        self.commit(modules, self.prepare(modules, concurrency))

    def close(self) -> None:
        probers = [*self._probers.values(), *self._retired.values()]
        self._probers, self._retired = {}, {}
        for prober in probers:
            prober.close()


def _close_later(probers: list[Prober]) -> None:
    """Prober.close() waits for the checks in flight; off the event loop, so a reload never
    stalls other requests."""
    if probers:
        threading.Thread(target=lambda: [p.close() for p in probers],
                         name="synprobe-exporter-close", daemon=True).start()


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
    is released once the Prober has answered it: here, or (a request that gave up) from the
    Prober's dispatcher thread later. The check itself is not cancelled: it ends, and
    resets, on the engine's own deadline."""
    waiter = asyncio.wrap_future(fut)
    done, _ = await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
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
