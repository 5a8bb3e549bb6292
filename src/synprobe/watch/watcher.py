"""The watch service's core: targets checked on schedule through long-lived Probers, their
health kept with rise/fall, changes turned into events.

Everything that reads or changes state runs on one asyncio loop (results cross from the
Probers' dispatcher threads through one inbox), so the schedule, the states, `/metrics` and
`/status` need no locks. `Watcher.run()` is that loop's main task; `start()`/`stop()` run it on a
thread of its own for library callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from synprobe.errors import UsageError
from synprobe.loop_prober import LoopProber
from synprobe.model import ProbeResult, State, Target
from synprobe.prober import Outcomes
from synprobe.targets.exclusions import exclusion_set
from synprobe.watch.config import Settings, WatchConfig
from synprobe.watch.entry import Entry
from synprobe.watch.events import event_record, rfc3339
from synprobe.watch.probers import AnyProber, check_prober_via, close_probers, make_prober
from synprobe.watch.resolve import one_word, resolve_first
from synprobe.watch.schedule import (
    LATENESS_BUCKETS,
    RTT_BUCKETS,
    FixedHistogram,
    Schedule,
    next_due,
    spread,
)

Key = tuple[str, int, str | None]
_OPEN, _ERROR = State.OPEN, State.ERROR
EventSink = Callable[[dict[str, Any]], None]
ProberFactory = Callable[[Settings, int], AnyProber]
# Checks leave in ticks: each tick's due checks go out together, and a tick starts the checks
# due within half a tick from now, so a check leaves within half a tick of its slot, before or
# after (never later on an idle machine). Every wakeup costs the service CPU whatever it does
# (~70 µs here for an empty one; Python code and data gone cold while the process slept), so a
# tick is as long as a batch of BATCH_GOAL checks takes to come due, within TICK_MIN..TICK_MAX,
# and at most TICK_SHARE of the shortest interval (but never under TICK_FLOOR). Measured at
# 2,000 checks a second: 5 ms ticks cost ~20 % more CPU a check than 10 ms ones, 10 ms ~18 %
# more than 20 ms ones (docs/watch.md, Performance).
BATCH_GOAL = 40
TICK_MIN = 0.010
TICK_MAX = 0.020
TICK_SHARE = 0.05
TICK_FLOOR = 0.005


def auto_tick(intervals: Iterable[float]) -> float:
    """The tick for targets checked at these intervals (one per target)."""
    rate, shortest = 0.0, math.inf
    for interval in intervals:
        rate += 1.0 / interval
        shortest = min(shortest, interval)
    if rate == 0.0:
        return TICK_MAX
    tick = max(TICK_MIN, min(TICK_MAX, BATCH_GOAL / rate))
    return min(tick, max(TICK_FLOOR, shortest * TICK_SHARE))
# Checks started per tick at most; more due start in the next one, results and HTTP between.
# (Only a backlog reaches it: due checks that came due while this tick ran wait for the next,
# at most a tick: an immediate tick for them was a third of all ticks, with a check or two.)
BATCH_LIMIT = 2048
STOP_BUDGET = 0.6  # seconds stop() waits for in-flight checks before leaving them to the kernel


class Watcher:
    """`Watcher(config).start()`; `status()`, `stop()`. Or `await watcher.run(stop_event)`."""

    def __init__(
        self,
        config: WatchConfig | None = None,
        *,
        event_sinks: list[EventSink] | None = None,
        prober_factory: ProberFactory = make_prober,
        resolver: Callable[..., Any] = socket.getaddrinfo,
        log: Callable[[str], None] | None = None,
        wall: Callable[[], float] = time.time,
        tick: float | None = None,
    ) -> None:
        self.config = config or WatchConfig()
        self.event_sinks: list[EventSink] = list(event_sinks or [])
        # Called with each config about to be applied (the first one, then every reload),
        # before the targets change: the place for /probe and other extensions to validate
        # and take their own settings. One that raises rejects that config.
        self.reload_hooks: list[Callable[[WatchConfig], None]] = []
        self._prober_factory = prober_factory
        self._resolver = resolver
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._wall = wall
        # None: sized from the config's check rate (auto_tick) at each apply().
        self.fixed_tick = tick
        self.tick = TICK_MAX if tick is None else tick
        self.entries: dict[Key, Entry] = {}
        self._excluded = exclusion_set(self.config.exclude)
        self._probers: dict[tuple[Any, ...], AnyProber] = {}
        self._retiring: list[LoopProber] = []  # retired by a reload, maybe still finishing
        self._retired_stats: dict[str, dict[str, int]] = {}
        self._schedule = Schedule()
        # Batches of outcomes left by the Probers' dispatchers, and which entries wait on each
        # submitted target (a list: two names may resolve to one address).
        self._inbox: deque[Outcomes] = deque()
        self._flying: dict[Target, list[Entry]] = {}
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticking = False  # the scheduler runs (between run()'s start and its end)
        self._tick_handle: asyncio.Handle | None = None  # its next tick
        self._sleep_until = math.inf  # when the sleeping scheduler wakes up next
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._opened = False
        self._start_error: BaseException | None = None
        self.lateness = FixedHistogram(LATENESS_BUCKETS)
        self.rtt = FixedHistogram(RTT_BUCKETS)
        self.checks_started = 0
        self.checks_skipped = 0
        self.local_errors = 0
        self.resolve_failures = 0
        self.reloads = {"ok": 0, "failed": 0}

    # -- library use: a thread of its own -----------------------------------------------------

    def start(self) -> Watcher:
        """Run on a background thread; returns once the first config is applied (raising
        what made that fail, e.g. a missing CAP_NET_RAW for the raw engine)."""
        self._thread = threading.Thread(target=self._thread_main, name="synprobe-watch",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.run())
        except BaseException as exc:
            if not self._started.is_set():
                self._start_error = exc
        finally:
            self._started.set()

    def stop(self, timeout: float = 2.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reload(self, config: WatchConfig, timeout: float = 30.0) -> None:
        """Apply `config` to a Watcher running on its own thread (see `apply()`); raises what
        made it fail, the running config then unchanged."""
        if self._loop is None:
            raise RuntimeError("the watcher is not running")
        asyncio.run_coroutine_threadsafe(self.apply(config), self._loop).result(timeout)

    def status(self) -> list[dict[str, Any]]:
        """Every target's state (the `/status` document)."""
        return [e.status() for e in list(self.entries.values())]

    def engine_stats(self) -> dict[str, dict[str, int]]:
        """Engine counters by engine name, including Probers retired by reloads."""
        out = {name: dict(c) for name, c in self._retired_stats.items()}
        for prober in list(self._probers.values()):
            mine = out.setdefault(prober.engine_name, {})
            for k, v in prober.stats().items():
                mine[k] = mine.get(k, 0) + v
        return out

    # -- the loop -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Apply the first config (making its Probers: raises what stops them, such as a
        missing CAP_NET_RAW). `run()` calls it when the caller has not."""
        if self._opened:
            return
        self._loop = asyncio.get_running_loop()
        try:
            await self.apply(self.config, first=True)
        except BaseException:
            await self._shut(list(self._probers.values()), 2.0)
            raise
        self._opened = True

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Check on schedule until `stopping` is set (or `request_stop()`)."""
        self._stopping = stopping or asyncio.Event()
        await self.open()
        self._started.set()
        resolver = asyncio.ensure_future(self._resolve_forever())
        assert self._loop is not None
        self._ticking = True
        self._tick_handle = self._loop.call_soon(self._tick)
        try:
            await self._stopping.wait()
        finally:
            self._ticking = False
            if self._tick_handle is not None:
                self._tick_handle.cancel()
                self._tick_handle = None
            resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resolver
            await self.aclose()

    async def aclose(self) -> None:
        """Close the Probers (run() does, when it ends; for a Watcher opened but never run)."""
        probers = list(self._probers.values())
        self._probers.clear()
        if probers:
            await self._shut(probers, STOP_BUDGET)
        retiring, self._retiring = self._retiring, []
        for prober in retiring:  # retired by a reload, still finishing: its loop ends now
            prober.close()

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def apply(self, config: WatchConfig, first: bool = False) -> None:
        """Make `config` the running one: Probers first (what cannot be made fails the whole
        change, the old config stays), then the targets: unchanged ones keep their state and
        schedule, added ones start, removed ones stop (and leave /metrics)."""
        wanted = {t.settings.check_key() for t in config.targets}
        made: dict[tuple[Any, ...], AnyProber] = {}
        try:
            for key in wanted - self._probers.keys():
                settings = next(t.settings for t in config.targets
                                if t.settings.check_key() == key)
                made[key] = await asyncio.to_thread(self._prober_factory, settings,
                                                    config.concurrency)
                attach = getattr(made[key], "attach", None)
                if attach is not None:  # a LoopProber: its engine runs on this loop, polled
                    attach(self._loop, polled=True)  # by the ticks (see _tick)
            for t in config.targets:
                if t.via is not None:
                    prober = made.get(t.settings.check_key()) or self._probers[
                        t.settings.check_key()]
                    check_prober_via(prober, (t.via,))
        except BaseException:
            await asyncio.to_thread(self._close_probers, list(made.values()), 2.0)
            raise
        try:
            # Extensions validate and take their part of the config first: one that raises
            # (a bad probe_allow, say) rejects the whole config, the running one stays.
            for hook in self.reload_hooks:
                hook(config)
        except BaseException:
            await asyncio.to_thread(self._close_probers, list(made.values()), 2.0)
            raise
        self._probers.update(made)
        retired = [p for k, p in self._probers.items() if k not in wanted]
        self._probers = {k: p for k, p in self._probers.items() if k in wanted}
        if retired:
            # Their checks in flight finish first (on this loop, for a LoopProber: aclose()
            # ends any still open when the service stops).
            self._retiring = [p for p in self._retiring if not p.ended]
            self._retiring += [p for p in retired if isinstance(p, LoopProber)]
            threading.Thread(target=self._close_probers, args=(retired, 10.0), daemon=True,
                             name="synprobe-retire").start()
        new = {t.key: t for t in config.targets}
        for key in self.entries.keys() - new.keys():
            entry = self.entries.pop(key)
            entry.retired = True
            self._schedule.remove(key)
        added: dict[float, list[Key]] = {}
        for key, target in new.items():
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = Entry(target)
                added.setdefault(target.settings.interval, []).append(key)
                continue
            old_interval = entry.interval
            entry.retarget(target)
            if target.settings.interval != old_interval and not entry.in_flight:
                added.setdefault(target.settings.interval, []).append(key)
        await self._resolve_all([self.entries[k] for keys in added.values() for k in keys
                                 if self.entries[k].target.is_name])
        assert self._loop is not None
        now = self._loop.time()
        for interval, keys in added.items():
            for key, due in spread(keys, interval, now):
                self._schedule.set(key, due)
        self.config = config
        if self.fixed_tick is None:
            self.tick = auto_tick(e.interval for e in self.entries.values())
        self._excluded = exclusion_set(config.exclude)
        if not first:
            self.reloads["ok"] += 1
        self._poke()

    def _close_probers(self, probers: list[AnyProber], budget: float) -> None:
        close_probers(probers, budget, self._retired_stats)

    async def _shut(self, probers: list[AnyProber], budget: float) -> None:
        """Close for good (the loop is about to end): in-flight checks get `budget` seconds;
        a LoopProber still waiting for answers then closes at once, while its loop still runs
        (a SYN-ACK to come is then the kernel's to reset)."""
        try:
            await asyncio.to_thread(self._close_probers, probers, budget)
        finally:
            for prober in probers:
                if isinstance(prober, LoopProber):
                    prober.close()

    # -- scheduling -----------------------------------------------------------------------------

    def _poke(self) -> None:
        """Run the scheduler now: it may sleep past a check that has just become due."""
        if self._sleep_until == -math.inf:
            return  # awake (or already poked): nobody need poke it again until it sleeps
        self._sleep_until = -math.inf
        if self._ticking:
            assert self._loop is not None
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            self._tick_handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        """The scheduler: results in, due checks out, then the next tick armed. A loop
        callback: a coroutine woken through a future took one more loop iteration and a task
        step per tick, a fifth of the CPU per check at 2,000 checks a second (docs/watch.md)."""
        loop = self._loop
        assert loop is not None
        self._tick_handle = None
        self._sleep_until = -math.inf
        try:
            if self._in_flight:
                # The raw engine's replies and timeouts, read here rather than each waking the
                # loop: one wakeup a tick, whatever the network's timing (docs/watch.md).
                for prober in self._probers.values():
                    if prober.__class__ is LoopProber:
                        prober.poll()  # type: ignore[union-attr]
            self._drain()
            now = loop.time()
            batches: dict[tuple[Any, ...], list[Entry]] = {}
            ahead = self.tick * 0.5  # checks due before now + ahead leave now
            due_now = self._schedule.pop_due(now + ahead, BATCH_LIMIT)
            for key, due in due_now:
                entry = self.entries.get(key)  # type: ignore[arg-type]
                if entry is None:
                    continue
                if entry.in_flight:
                    entry.waiting = due  # started once it finishes; its lateness shows it
                else:
                    self._start(entry, due, now, batches)
            self._submit(batches)
        except Exception as exc:  # never silently stop checking: end the service, say why
            self._log(f"synprobe watch: the scheduler failed: {exc!r}")
            self.request_stop()
            return
        if len(due_now) == BATCH_LIMIT:  # more are due: the next batch, after results and HTTP
            self._tick_handle = loop.call_soon(self._tick)
            return
        nxt = self._schedule.next_due()
        # Checks go out in ticks: each batch costs the engine one turn and the process one
        # wakeup, and per-wakeup costs dominate at thousands of checks a second (docs/watch.md).
        # A check leaves within half a tick of its slot; a result waits at most a tick to be
        # seen.
        later = math.inf if nxt is None else nxt - self.tick * 0.5
        nxt = now + self.tick if self._in_flight else max(later, now + self.tick)
        self._sleep_until = nxt
        if nxt != math.inf:
            self._tick_handle = loop.call_at(nxt, self._tick)

    def _start(self, entry: Entry, due: float, now: float,
               batches: dict[tuple[Any, ...], list[Entry]]) -> None:
        """Account for the check due at `due`, schedule the next one, and add the check to
        its Prober's batch (or finish it here when it cannot be sent). The hot path: what it
        reads is cached on the Entry."""
        late = now - due  # below 0 when a tick starts it early (by half a tick at most)
        self.lateness.observe(late if late > 0.0 else 0.0)
        self.checks_started += 1
        nxt = due + entry.interval
        if nxt <= now:
            nxt, skipped = next_due(due, entry.interval, now)
            self.checks_skipped += skipped
        self._schedule.set(entry.key, nxt)  # (only ticks start checks: the next tick sees it)
        entry.due = due
        if entry.probe is None:
            self._finish(entry, self._local_result(entry, State.UNREACHABLE,
                                                   entry.resolve_error or "unresolved"))
            return
        entry.in_flight = True
        self._in_flight += 1
        batch = batches.get(entry.prober_key)
        if batch is None:
            batch = batches[entry.prober_key] = []
        batch.append(entry)

    def _submit(self, batches: dict[tuple[Any, ...], list[Entry]]) -> None:
        """One submit_many() per Prober: one engine wakeup for the tick's checks."""
        flying = self._flying
        for key, items in batches.items():
            prober = self._probers.get(key)
            probes = [e.probe for e in items]
            try:
                if prober is None:
                    raise RuntimeError("no Prober for these settings")
                prober.submit_many(probes, on_results=self._inbox.append)  # type: ignore[arg-type]
            except (UsageError, RuntimeError) as exc:  # the engine ended: ours, not the target's
                reason = "engine-failed" if isinstance(exc, RuntimeError) else one_word(str(exc))
                for entry in items:
                    entry.in_flight = False
                    self._in_flight -= 1
                    self._finish(entry, self._local_result(entry, State.ERROR, reason))
                continue
            # Registered after submitting, safely: outcomes are only read by _drain(), on this
            # loop, after this returns. A result left in the inbox wakes nobody: while checks
            # are in flight the scheduler looks every tick anyway (a wakeup per result was a
            # third of the CPU per check at 2,000 checks a second).
            for probe, entry in zip(probes, items, strict=True):
                waiting = flying.get(probe)  # type: ignore[arg-type]
                if waiting is None:
                    flying[probe] = [entry]  # type: ignore[index]
                else:
                    waiting.append(entry)

    def _drain(self) -> None:
        inbox, flying, finish = self._inbox, self._flying, self._finish
        if not inbox:
            return
        batches: dict[tuple[Any, ...], list[Entry]] = {}
        wall = self._wall()  # one reading for the tick's results: all were in by now
        while inbox:
            for target, outcome in inbox.popleft():
                waiting = flying[target]
                if len(waiting) == 1:  # nearly always: one entry per address
                    del flying[target]
                    entry = waiting[0]
                else:
                    entry = waiting.pop(0)
                entry.in_flight = False
                self._in_flight -= 1
                if entry.retired:
                    continue
                if isinstance(outcome, BaseException):  # the engine failed: local, not evidence
                    outcome = self._local_result(entry, State.ERROR, type(outcome).__name__)
                finish(entry, outcome, wall)
                if entry.waiting is not None and not entry.retired:
                    due, entry.waiting = entry.waiting, None
                    assert self._loop is not None
                    self._start(entry, due, self._loop.time(), batches)
        self._submit(batches)

    def _local_result(self, entry: Entry, state: State, reason: str) -> ProbeResult:
        s = entry.target.settings
        return ProbeResult(entry.address or entry.target.host, entry.target.port, state, reason,
                           None, 0, s.engine, s.source, entry.target.via)

    def _finish(self, entry: Entry, result: ProbeResult, wall: float | None = None) -> None:
        rtt, state = result.rtt, result.state
        if rtt is not None:
            self.rtt.observe(rtt)
        if state is _ERROR:
            self.local_errors += 1
        else:
            entry.history.append(rtt if state is _OPEN else None)
        change = entry.state.apply(result, entry.rise, entry.fall,
                                   self._wall() if wall is None else wall)
        if change is not None:
            t = entry.target
            self._emit(event_record(t.host, t.port, t.via, change))

    def _emit(self, record: dict[str, Any]) -> None:
        for sink in self.event_sinks:
            try:
                sink(record)
            except Exception as exc:  # a sink's failure is logged, never the service's end
                self._log(f"synprobe watch: event output failed: {exc}")

    # -- names ----------------------------------------------------------------------------------

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.resolve_interval)
            await self._resolve_all([e for e in self.entries.values() if e.target.is_name])

    async def _resolve_all(self, entries: list[Entry]) -> None:
        names = {e.target.host for e in entries}
        if not names:
            return
        limit = asyncio.Semaphore(32)

        async def one(name: str) -> tuple[str, str | None, str]:
            async with limit:
                found = await asyncio.to_thread(resolve_first, self._resolver, name,
                                                self._excluded)
                return (name, *found)

        answers = {name: (addr, err) for name, addr, err in
                   await asyncio.gather(*(one(n) for n in names))}
        for entry in entries:
            if entry.retired:
                continue
            addr, err = answers[entry.target.host]
            if addr is None:
                self.resolve_failures += 1
            if addr != entry.address and (addr is not None or entry.address is not None):
                t = entry.target
                self._emit({"time": rfc3339(self._wall()), "event": "address", "host": t.host,
                            "port": t.port, "via": t.via, "from": entry.address, "to": addr,
                            "reason": err or None})
            entry.set_address(addr)
            entry.resolve_error = err
