"""Issue 11: silent targets must not queue behind a fixed in-flight cap. The raw engine's
default bound comes from memory (fdlimit.raw_memory_cap), so a sweep that does not answer is
all in flight at once; each check in flight costs a bounded amount of memory."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from test_raw_engine import NO_OVERLAP, FakeNet, engine, syn_fields

import synprobe.registry as registry
from synprobe.cli import main
from synprobe.engines.base import ProbeOptions
from synprobe.engines.raw.engine import SEND_BURST, RawEngine
from synprobe.kernel.fdlimit import RAW_INFLIGHT_BUDGET, RAW_RECORD_BYTES, cli_concurrency
from synprobe.model import State, Target
from synprobe.sources import IterSource


class SilentNet(FakeNet):
    """A network where nobody answers, with the engine's clock: time stands still until the
    first attempt of every one of `expected` checks has left, then jumps past every deadline.
    So an engine that held targets back for a free slot would see a deadline (and send a
    retry) before all first SYNs were out; `firsts_before_retry` says how many were."""

    def __init__(self, expected: int, *, keep: bool = True) -> None:
        super().__init__(lambda syn: [])
        self.expected = expected
        self.keep = keep  # remember destinations (off when measuring memory)
        self.offset = 0.0
        self.sends = 0
        self.seen: set[tuple[bytes, int]] = set()
        self.firsts_before_retry: int | None = None
        self.on_wave: Any = None  # called once, when the first wave is out

    def clock(self) -> float:
        return time.monotonic() + self.offset

    def send(self, v6: bool, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        assert len(batch) <= SEND_BURST
        for packet, _ in batch:
            if self.keep:
                dst, _, dport, _ = syn_fields(packet)
                if (dst, dport) in self.seen and self.firsts_before_retry is None:
                    self.firsts_before_retry = len(self.seen)
                self.seen.add((dst, dport))
        self.sends += len(batch)
        if self.sends == self.expected:
            if self.on_wave is not None:
                self.on_wave()
            self.offset += 3600.0  # every deadline passes: the retries go, then the verdicts
        return []


def lab_targets(n: int) -> Iterator[Target]:
    """`n` loopback targets, made as they are pulled (as the CLI's target space makes them)."""
    return (Target(f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 82) for i in range(n))


def test_the_cli_default_puts_a_silent_sweep_in_flight_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """16,384 targets that never answer, the CLI's defaults but --rate 0: every first SYN
    leaves before any deadline comes due (at the old default of 1,000 in flight only 1,000
    did, and the sweep took 16 x timeout x attempts)."""
    n = 16_384
    nets: list[SilentNet] = []

    def make(options: ProbeOptions) -> RawEngine:  # one network per engine (the CLI's
        nets.append(SilentNet(n))  # preflight engine closes its own)
        return RawEngine(options, io_factory=nets[-1], clock=nets[-1].clock,
                         ephemeral_ports=lambda: NO_OVERLAP)

    monkeypatch.setitem(registry._registered, "raw", make)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(["--engine", "raw", "--workers", "1", "--rate", "0", "--json", "-p", "82",
                     "127.0.0.0/18"], out, err)
    finally:
        for net in nets:
            net.close()
    net = nets[-1]
    assert code == 1, err.getvalue()  # 1: not every target open
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == n
    assert {(r["state"], r["attempts"]) for r in rows} == {("filtered", 2)}
    assert net.firsts_before_retry == n
    assert net.sends == 2 * n


@pytest.mark.parametrize(("workers", "checks", "rate", "expected"), [
    (1, 65_536, None, 65_536),  # all of a /16 in flight
    (2, 32_768, None, 32_768),
    (1, 1_048_576, None, RAW_INFLIGHT_BUDGET // RAW_RECORD_BYTES),  # the memory budget
    (4, 262_144, None, RAW_INFLIGHT_BUDGET // RAW_RECORD_BYTES // 4),  # shared by workers
    (1, 65_536, 10_000.0, 10_000),  # what the default rate keeps busy: 10,000/s x 0.5 s x 2
    (2, 32_768, 10_000.0, 5_000),
    (1, 1, None, 1),
])
def test_raw_default_concurrency(workers: int, checks: int, rate: float | None,
                                 expected: int) -> None:
    assert cli_concurrency(None, engine="raw", workers=workers, checks=checks, rate=rate,
                           timeout=0.5, attempts=2) == expected


def test_an_explicit_raw_concurrency_is_taken() -> None:
    assert cli_concurrency(1000, engine="raw", workers=2, checks=32_768, rate=None,
                           timeout=0.5, attempts=2) == 500


def test_memory_per_check_in_flight_is_bounded() -> None:
    """tracemalloc, with every check in flight: the target, its record, its table entry and
    its share of the queues cost at most RAW_RECORD_BYTES (what fdlimit budgets with). A
    one-shot engine keeps no cookie hashes (only long-lived ones do: remember_targets)."""
    n = 20_000
    net = SilentNet(n, keep=False)
    eng = RawEngine(ProbeOptions(timeout=0.5, retries=0, concurrency=n),
                    io_factory=net, clock=net.clock, ephemeral_ports=lambda: NO_OVERLAP)
    peak: list[int] = []
    net.on_wave = lambda: peak.append(tracemalloc.get_traced_memory()[0])
    # Warm the caches a run builds once (templates, the route), outside the measurement.
    warm = SilentNet(1, keep=False)
    warm_eng = RawEngine(ProbeOptions(timeout=0.5, retries=0, concurrency=1),
                         io_factory=warm, clock=warm.clock, ephemeral_ports=lambda: NO_OVERLAP)
    assert len([r for b in warm_eng.run(IterSource([Target("127.0.0.1", 82)])) for r in b]) == 1
    warm.close()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        results = [r for b in eng.run(IterSource(lab_targets(n))) for r in b]
    finally:
        tracemalloc.stop()
        net.close()
    assert len(results) == n and {r.state for r in results} == {State.FILTERED}
    assert len(peak) == 1
    per_check = (peak[0] - base) / n
    print(f"{per_check:.0f} bytes per check in flight")
    assert 100 < per_check <= RAW_RECORD_BYTES, per_check


def test_a_retry_wave_goes_out_in_bursts() -> None:
    """Retries of a whole silent table do not leave in one burst either (SilentNet asserts
    every batch is at most SEND_BURST)."""
    n = 3 * SEND_BURST + 7
    net = SilentNet(n)
    eng = engine(io_factory=net, clock=net.clock, timeout=0.5, retries=1, concurrency=n)
    try:
        results = [r for b in eng.run(IterSource(lab_targets(n))) for r in b]
    finally:
        net.close()
    assert len(results) == n and net.sends == 2 * n and net.firsts_before_retry == n


def test_answered_batches_are_forgotten_as_the_run_goes() -> None:
    """Every target answers within the turn that sent it, so each turn goes straight on to the
    next burst. What the run keeps for deadlines must still drop the answered batches turn by
    turn: it once kept every batch sent (and the records of a whole sweep) to the run's end."""
    n = 6 * SEND_BURST
    net = FakeNet()
    eng = engine(io_factory=net, concurrency=n)
    run = eng.open_run(IterSource(Target(f"127.0.{i >> 8}.{i & 255}", 80) for i in range(n)))
    kept, results, turns = [], [], 0
    try:
        wait: float | None = 0.0
        while wait is not None and turns < 10 * n:  # bounded: a hang fails, not loops
            done, wait = run.turn(True)
            results += done
            turns += 1
            kept.append(sum(len(entry[2]) for entry in run.deadlines))
    finally:
        run.close()
        eng.close()
        net.close()
    assert len(results) == n and wait is None
    assert {r.state for r in results} == {State.OPEN}
    assert len(kept) >= 6 and max(kept) == 0  # each batch answered, and forgotten, in its turn



def test_a_worker_may_hold_more_than_an_even_share_in_flight() -> None:
    """Workers take targets from a pool as they go (cli.workers.SharedSpans), so one may
    make more than total/workers checks: sized by an even share, a silent sweep's extra targets
    would wait a whole timeout for a slot. Each is bounded by the run's checks and its share of
    the memory budget instead."""
    from synprobe.cli.command import build_parser
    from synprobe.cli.config import build_config
    from synprobe.cli.workers import auto_workers
    from synprobe.kernel.fdlimit import raw_memory_cap

    args = build_parser().parse_args(["--engine", "raw", "--workers", "4", "--rate", "0",
                                      "-p", "80", "198.18.0.0/18"])
    config = build_config(args, auto_workers)
    assert config.processes == 4 and config.total == 16_384
    assert config.options.concurrency == min(16_384, raw_memory_cap(4)) > 16_384 // 4
