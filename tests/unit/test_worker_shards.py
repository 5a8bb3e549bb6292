import argparse
import json
import os
import threading

import pytest

from synprobe.cli import workers
from synprobe.cli.command import build_parser
from synprobe.cli.config import build_config
from synprobe.cli.workers import Workers, auto_workers


def _config(*argv: str) -> object:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return build_config(args, lambda engine, checks: 3)


def test_shares_partition_the_callers_part() -> None:
    config = _config("--engine", "raw", "--seed", "7", "--shard", "1/2", "--rate", "9000",
                     "--sport-range", "61000-61008", "--allow-large", "198.19.0.0/16:80")
    shares = config.shares()  # type: ignore[attr-defined]
    assert [s.shard for s in shares] == [(1, 6), (3, 6), (5, 6)]  # shard 1 of 2, split 3 ways
    assert {s.seed for s in shares} == {7} and [s.worker for s in shares] == [0, 1, 2]
    assert {s.options.rate for s in shares} == {3000.0}
    assert [(s.options.engine_options.port_lo, s.options.engine_options.port_hi)
            for s in shares] == [(61000, 61002), (61003, 61005), (61006, 61008)]
    # Together the shares probe the caller's part exactly once.
    whole = {(t.host, t.port) for t in config.targets()}  # type: ignore[attr-defined]
    parts = [{(t.host, t.port) for t in s.targets()} for s in shares]
    assert sum(len(p) for p in parts) == len(whole) == 32768 and set().union(*parts) == whole


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
