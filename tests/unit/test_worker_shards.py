import argparse
import fcntl
import functools
import json
import os
import threading

import pytest

from synprobe.cli import workers
from synprobe.cli.command import build_parser
from synprobe.cli.config import build_config
from synprobe.cli.workers import SharedSpans, Workers, auto_workers
from synprobe.errors import UsageError
from synprobe.sources import IterSource
from synprobe.targets.space import with_vias


def _config(*argv: str) -> object:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return build_config(args, lambda engine, checks: 3)


def test_shares_partition_the_callers_part() -> None:
    config = _config("--engine", "raw", "--seed", "7", "--shard", "1/2", "--rate", "9000",
                     "--sport-range", "61000-61008", "--allow-large", "198.19.0.0/16:80")
    shares = config.shares()  # type: ignore[attr-defined]
    try:
        assert {s.shard for s in shares} == {(1, 2)}  # the caller's part, shared out
        assert len({id(s.spans) for s in shares}) == 1 and shares[0].spans is not None
        assert {s.seed for s in shares} == {7} and [s.worker for s in shares] == [0, 1, 2]
        assert {s.options.rate for s in shares} == {3000.0}
        assert [(s.options.engine_options.port_lo, s.options.engine_options.port_hi)
                for s in shares] == [(61000, 61002), (61003, 61005), (61006, 61008)]
        # Together the shares probe the caller's part exactly once, however they interleave:
        # here each asks for a different number of targets a turn, as engines of uneven
        # speed do, and sources take them (sources.IterSource).
        whole = [(t.host, t.port) for t in with_vias(
            config.space.iter(7, 1, 2), ())]  # type: ignore[attr-defined]
        sources = {j: IterSource(s.targets()) for j, s in enumerate(shares)}
        parts: dict[int, list[tuple[str, int]]] = {j: [] for j in sources}
        turn = 0
        while sources:
            j = sorted(sources)[turn % len(sources)]
            batch = sources[j].pull(100 + 300 * j)
            if batch is None:
                del sources[j]
            else:
                assert len(batch) <= 100 + 300 * j
                parts[j].extend((t.host, t.port) for t in batch)
            turn += 1
        probed = [t for part in parts.values() for t in part]
        assert len(probed) == len(set(probed)) == len(whole) == 32768
        assert set(probed) == set(whole)
        assert 0 < len(parts[0]) < len(parts[1]) < len(parts[2])  # asked for more, took more
    finally:
        shares[0].spans.close()


def test_a_worker_holds_no_target_it_did_not_ask_for() -> None:
    """The rest of a span goes back to the pool at once: a worker whose slots are full (silent
    targets held for a whole timeout) must not sit on targets another could start now."""
    config = _config("--engine", "raw", "--seed", "3", "--allow-large", "198.19.0.0/20:80")
    shares = config.shares()  # type: ignore[attr-defined]
    try:
        first, second = (s.targets() for s in shares[:2])
        got = first.take_targets(1000)  # three spans and part of a fourth
        assert len(got) == 1000
        rest = second.take_targets(10**6)  # everything else, the fourth span's rest included
        assert len(rest) == 4096 - 1000
        assert {t.host for t in got}.isdisjoint(t.host for t in rest)
        assert first.take_targets(5) == [] and list(shares[2].targets()) == []
    finally:
        shares[0].spans.close()


def test_checks_through_real_servers_keep_fixed_parts() -> None:
    config = _config("--engine", "raw", "--seed", "5", "--workers", "2", "--via", "198.18.0.2",
                     "198.19.0.0/24:80")
    shares = config.shares()  # type: ignore[attr-defined]
    assert [s.shard for s in shares] == [(0, 2), (1, 2)] and {s.spans for s in shares} == {None}
    parts = [{t.host for t in s.targets()} for s in shares]
    assert len(parts[0]) + len(parts[1]) == 256 and parts[0].isdisjoint(parts[1])


def _take_positions(spans: SharedSpans, worker: int, fd: int) -> int:
    """A worker that takes spans and hands back part of each, as SpanTargets does."""
    taken: list[list[int]] = []
    while (span := spans.take()) is not None:
        begin, end = span
        middle = begin + max(1, (end - begin) // (worker + 2))
        taken.append([begin, middle])
        spans.give_back(middle, end)
    with os.fdopen(fd, "w") as pipe:
        json.dump({"worker": worker, "taken": taken}, pipe)
    return 0


def test_forked_workers_take_each_position_once() -> None:
    spans = SharedSpans(200_000)
    try:
        assert spans.length == SharedSpans.SPAN
        run = Workers(3)
        run.start(functools.partial(_take_positions, spans))
        mine = []
        while (span := spans.take()) is not None:
            mine.append([span[0], span[0] + 1])
            spans.give_back(span[0] + 1, span[1])
        codes, summaries = run.join()
    finally:
        spans.close()
    assert codes == [0, 0]
    every = sorted(mine + [r for summary in summaries for r in summary["taken"]])
    covered = [p for begin, end in every for p in range(begin, end)]
    assert covered == list(range(200_000))  # each position once, none lost


@pytest.mark.parametrize("positions", [1_048_582, 2**24, 2**40])
def test_the_pool_always_has_room_for_a_hand_back(positions: int) -> None:
    """Filled to its limit, a pipe refused the first hand-back (a page partly read keeps its
    slot). Here every span is taken, half of it handed back, until the pool is empty."""
    spans = SharedSpans(positions)
    try:
        size = fcntl.fcntl(spans._write, fcntl.F_GETPIPE_SZ)
        count = -(-positions // spans.length)
        assert count * 16 <= size - os.sysconf("SC_PAGESIZE")
        assert spans.length == max(SharedSpans.SPAN, -(-positions // ((size - 4096) // 16)))
        walked = 0
        while (span := spans.take()) is not None:
            begin, end = span
            # Half of each whole span, all of a handed-back rest: a hand-back per span.
            step = (end - begin) // 2 if end - begin == spans.length else end - begin
            walked += step
            spans.give_back(begin + step, end)
        assert walked == positions
    finally:
        spans.close()


def test_without_a_pipe_each_worker_takes_a_fixed_part(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(workers.os, "pipe2", no_pipe)
    config = _config("--engine", "raw", "--seed", "5", "--workers", "2", "198.19.0.0/24:80")
    shares = config.shares()  # type: ignore[attr-defined]
    assert [s.shard for s in shares] == [(0, 2), (1, 2)] and {s.spans for s in shares} == {None}


def test_a_shard_needs_a_seed() -> None:
    with pytest.raises(UsageError, match="--shard needs --seed"):
        _config("--shard", "0/2", "--workers", "2", "198.19.0.0/24:80")


def test_never_forks_once_a_thread_runs() -> None:
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        with pytest.raises(RuntimeError, match="before any thread"):
            Workers(2).start(lambda worker, fd: 0)
    finally:
        stop.set()
        helper.join()


def test_auto_workers_only_for_large_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert auto_workers("shaker", 1000) == 1
    assert auto_workers("fake", 10**6) == 1
    assert auto_workers("raw", 10**6) == 3  # one per core it may use
    monkeypatch.delattr(workers.os, "sched_getaffinity")
    monkeypatch.setattr(workers.os, "cpu_count", lambda: None)  # unknown: one process
    assert auto_workers("raw", 10**6) == 1


def _affinity_report(worker: int, fd: int) -> int:
    with os.fdopen(fd, "w") as pipe:
        json.dump({"worker": worker, "cpus": sorted(os.sched_getaffinity(0))}, pipe)
    return 0


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_each_process_of_a_pinned_run_keeps_to_a_cpu_of_its_own(pinned: bool) -> None:
    allowed = workers.usable_cpus()
    try:
        run = Workers(2, pin=pinned)
        run.start(_affinity_report)
        parent = sorted(os.sched_getaffinity(0))
        codes, summaries = run.join()
    finally:
        os.sched_setaffinity(0, allowed)
    assert codes == [0]
    if pinned:
        assert summaries == [{"worker": 1, "cpus": [allowed[1 % len(allowed)]]}]
        assert parent == [allowed[0]]
    else:
        assert summaries == [{"worker": 1, "cpus": allowed}] and parent == allowed


def test_a_run_is_pinned_only_with_a_worker_for_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "usable_cpus", lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    assert not workers.worth_pinning(4)  # the default cap on 8 CPUs: left to the scheduler
    assert workers.worth_pinning(8)
    monkeypatch.setattr(workers, "usable_cpus", lambda: [2, 3])
    assert workers.worth_pinning(2) and not workers.worth_pinning(1)
