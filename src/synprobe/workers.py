"""Spread one CLI run over several processes, one per core: each probes a disjoint shard.

One Python thread tops out near 26,000 half-open checks per second here (the GIL, not the
kernel, is the limit), so a large shaker run re-executes the same command line once per extra
core with `--shard` set to its own slice of the same seeded permutation, and probes the first
slice itself. Workers write result lines straight to the shared stdout in whole-line chunks
(see output.LineSink) and hand their summary back on a pipe.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence

AUTO_MIN_TARGETS = 20_000  # below this a second process costs more (its start-up) than it saves


def auto_workers(engine: str, targets: int) -> int:
    if engine not in ("shaker", "raw") or targets < AUTO_MIN_TARGETS:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


class Workers:
    """Starts workers 1..n-1 of a run; the caller runs worker 0's shard itself."""

    def __init__(self, argv: Sequence[str], count: int, seed: int | None,
                 shard: tuple[int, int], rate: float | None, concurrency: int,
                 port_ranges: list[str] | None = None) -> None:
        self.seed = seed if seed is not None else secrets.randbits(62)
        first, of = shard
        # Worker j takes every count-th position of the caller's shard: shard first + of*j of
        # of*count in the same permutation, so the workers partition exactly the caller's part.
        self.shards = [(first + of * j, of * count) for j in range(count)]
        self.rate = rate / count if rate else None
        self.concurrency = max(1, concurrency // count)
        self._argv = list(argv)
        self._port_ranges = port_ranges
        self._children: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(self) -> None:
        """Launch workers 1..n-1 (after the caller's own engine was made: if that fails, no
        worker is left to fail the same way)."""
        argv = self._argv
        for worker, (index, part) in enumerate(self.shards[1:], start=1):
            read_end, write_end = os.pipe()
            cmd = [sys.executable, "-m", "synprobe", *argv, "--workers", "1",
                   "--seed", str(self.seed), "--shard", f"{index}/{part}",
                   "--rate", str(self.rate or 0), "--concurrency", str(self.concurrency),
                   "--worker-fd", str(write_end)]
            if self._port_ranges:
                cmd += ["--sport-range", self._port_ranges[worker]]
            child = subprocess.Popen(cmd, pass_fds=(write_end,), stdin=subprocess.DEVNULL)
            os.close(write_end)
            self._children.append((child, read_end))

    @property
    def own_shard(self) -> tuple[int, int]:
        return self.shards[0]

    def join(self) -> tuple[list[int], list[dict[str, object]]]:
        """Exit codes and summaries of the workers, once they have all ended."""
        codes, summaries = [], []
        for child, read_end in self._children:
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            codes.append(child.wait())
            if data:
                summaries.append(json.loads(data))
        return codes, summaries

    def terminate(self) -> None:
        for child, _ in self._children:
            if child.poll() is None:
                child.terminate()
