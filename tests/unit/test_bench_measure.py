"""The benchmark's process-tree sampler: it must see the whole tree, cheaply."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import measure  # bench/ is not a package


def test_descendants_from_children_files_match_a_walk_of_every_process() -> None:
    tree = subprocess.Popen(["bash", "-c", "sleep 5 & (sleep 5; true) & wait"])
    walked: list[int] = []
    try:
        deadline = time.monotonic() + 5
        while len(measure._descendants_by_walk(tree.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        walked = measure._descendants_by_walk(tree.pid)
        read = measure._descendants(tree.pid)
        assert len(walked) == 4  # bash, sleep, the subshell, its sleep
        assert read[0] == tree.pid and sorted(read) == sorted(walked)
    finally:
        for pid in reversed(walked or [tree.pid]):  # ours, by PID, leaves first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        tree.wait()
