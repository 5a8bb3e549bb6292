import argparse
import fcntl
import functools
import json
import os
import threading
from itertools import islice

import pytest

from synprobe.cli import workers
from synprobe.cli.command import build_parser
from synprobe.cli.config import build_config
from synprobe.cli.workers import SharedSpans, Workers, auto_workers


def _config(*argv: str) -> object:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return build_config(args, lambda engine, checks: 3)


def test_shares_partition_the_callers_part() -> None:
    config = _config("--engine", "raw", "--seed", "7", "--shard", "1/2", "--rate", "9000",
                     "--sport-range", "61000-61008", "--allow-large", "198.19.0.0/16:80")
    shares = config.shares()  # type: ignore[attr-defined]
    try:
        assert {s.shard for s in shares} == {(1, 2)}  # the caller's part, walked by all three
        assert len({id(s.spans) for s in shares}) == 1 and shares[0].spans is not None
        assert {s.seed for s in shares} == {7} and [s.worker for s in shares] == [0, 1, 2]
        assert {s.options.rate for s in shares} == {3000.0}
        assert [(s.options.engine_options.port_lo, s.options.engine_options.port_hi)
                for s in shares] == [(61000, 61002), (61003, 61005), (61006, 61008)]
        # Together the shares probe the caller's part exactly once, however they interleave:
        # here they take targets in turns of different sizes, as workers of uneven speed do.
        whole = [(t.host, t.port) for t in config.targets()]  # type: ignore[attr-defined]
        iters = {j: s.targets() for j, s in enumerate(shares)}
        parts: dict[int, list[tuple[str, int]]] = {j: [] for j in iters}
        turn = 0
        while iters:
            j = sorted(iters)[turn % len(iters)]
            batch = [(t.host, t.port) for t in islice(iters[j], 100 + 300 * j)]
            if not batch:
                del iters[j]
            parts[j].extend(batch)
            turn += 1
        probed = [t for part in parts.values() for t in part]
        assert len(probed) == len(set(probed)) == len(whole) == 32768
        assert set(probed) == set(whole)
        assert min(map(len, parts.values())) > 0  # each took some
        assert len(parts[2]) > len(parts[0])  # the one taking more each turn ended with more
    finally:
        shares[0].spans.close()


def test_the_first_to_ask_takes_every_span() -> None:
    config = _config("--engine", "raw", "--seed", "3", "--allow-large", "198.19.0.0/20:80")
    shares = config.shares()  # type: ignore[attr-defined]
    try:
        first = [t.host for t in shares[1].targets()]  # runs alone: nothing is reserved
        assert len(first) == 4096
        assert [list(s.targets()) for s in (shares[0], shares[2])] == [[], []]
    finally:
        shares[0].spans.close()


def _take_spans(spans: SharedSpans, worker: int, fd: int) -> int:
    taken = [list(span) for span in spans]
    with os.fdopen(fd, "w") as pipe:
        json.dump({"worker": worker, "spans": taken}, pipe)
    return 0


def test_forked_workers_take_each_span_once() -> None:
    spans = SharedSpans(200_000, 3)
    try:
        assert (spans.length, spans.count) == (256, 782)
        run = Workers(3)
        run.start(functools.partial(_take_spans, spans))
        mine = [list(span) for span in spans]
        codes, summaries = run.join()
    finally:
        spans.close()
    assert codes == [0, 0]
    every = mine + [span for summary in summaries for span in summary["spans"]]
    assert sorted(every) == [[b, min(b + 256, 200_000)] for b in range(0, 200_000, 256)]


@pytest.mark.parametrize(("positions", "processes", "length"), [
    (512, 4, 16),  # a small run: spans short enough that each process gets several
    (100, 2, 7),
    (3, 4, 1),
    (65_537, 2, 256),  # a /16: the usual span
])
def test_small_runs_still_share_out_spans(positions: int, processes: int, length: int) -> None:
    spans = SharedSpans(positions, processes)
    try:
        assert spans.length == length
        taken = list(spans)
    finally:
        spans.close()
    assert taken == [(b, min(b + length, positions)) for b in range(0, positions, length)]
    if positions >= SharedSpans.SPANS_EACH * processes:
        assert len(taken) / processes >= SharedSpans.SPANS_EACH - 1  # several each
    else:
        assert len(taken) == positions  # a position a span


def test_spans_fit_the_pipe_on_huge_runs() -> None:
    spans = SharedSpans(2**32, 2)
    try:
        room = fcntl.fcntl(spans._fd, fcntl.F_GETPIPE_SZ) // 4
        assert spans.count <= room and spans.length * spans.count >= 2**32
        taken = sum(1 for _ in spans)  # every record readable, none lost to the pipe's size
        assert taken == spans.count
    finally:
        spans.close()


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
