import threading

import pytest

from synprobe.cli.workers import Workers, auto_workers


def test_shards_partition_the_callers_part() -> None:
    w = Workers(["198.19.0.0/16"], 3, 7, (1, 2), 9000.0, 1000)
    assert w.shards == [(1, 6), (3, 6), (5, 6)]  # shard 1 of 2, split three ways
    assert (w.seed, w.rate, w.concurrency) == (7, 3000.0, 333)


def test_never_forks_once_a_thread_runs() -> None:
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        with pytest.raises(RuntimeError, match="before any thread"):
            Workers([], 2, 1, (0, 1), None, 10).start(lambda argv: 0)
    finally:
        stop.set()
        helper.join()


def test_auto_workers_only_for_large_runs() -> None:
    assert auto_workers("shaker", 1000) == 1
    assert auto_workers("fake", 10**6) == 1
    assert auto_workers("raw", 10**6) >= 1
