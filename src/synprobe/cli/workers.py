"""Spread one CLI run over several processes, one per core: each probes a disjoint shard.

One Python thread tops out near 26,000 half-open checks per second here (the GIL, not the
kernel, is the limit), so a large run forks once per extra core; each child runs its share of
the run config (its slice of the same seeded permutation, inherited through the fork, never
re-parsed), and the parent probes the first slice itself. Forked, not spawned: a child starts
probing at once instead of ~0.1 s later (a fresh interpreter and its imports), which on a
65,536-target run left the parent idle at the end. The fork happens before the parent starts
any thread. Workers write result lines straight to the shared stdout in whole-line chunks (see
output.LineSink) and hand their summary back on a pipe.

When a run has a worker for every CPU this process may use, each process keeps to a CPU of its
own (worker i on the i-th), as zmap and masscan pin theirs: a worker's engine thread and its
writer thread then hand the GIL over on one core, and the scheduler never moves a busy worker
onto the other's core. Measured on 2 cores, 65,536 all-open targets, three times in alternating
runs: median wall 0.718 -> 0.685 s, 0.694 -> 0.685 s and 0.714 -> 0.700 s, 15-24 ms less user
CPU. Only the program pins itself (not a caller's main([...])), and only the CPUs its affinity
allows are used (a container or a taskset may allow fewer than the host has). With fewer workers
than CPUs nothing is pinned: pinned from the lowest CPU up, concurrent runs would pile onto the
same cores and leave others idle.

A worker never outlives its parent: it asks the kernel for SIGTERM when the parent dies
(PR_SET_PDEATHSIG) right after the fork, and then checks that the parent is still the one that
forked it, since the parent may have died before the request was made. SIGTERM stops a worker
the way it stops the CLI: no new check, what completed is written, the summary is handed back.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

AUTO_MIN_TARGETS = 20_000  # below this a second process costs more (its start-up) than it saves


def usable_cpus() -> list[int]:
    """The CPUs this process may run on: its affinity, which a container or `taskset` may
    make smaller than the host's count."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def auto_workers(engine: str, targets: int) -> int:
    if engine not in ("shaker", "raw") or targets < AUTO_MIN_TARGETS:
        return 1
    return max(1, min(len(usable_cpus()), 4))


def worth_pinning(count: int) -> bool:
    """Whether a run of `count` processes is pinned: only with one for every CPU it may use
    (fewer, pinned from the lowest CPU up, would pile concurrent runs onto the same cores)."""
    return count >= len(usable_cpus())


def pin(worker: int, cpus: list[int]) -> None:
    """Keep this process (its threads to come included) on worker's CPU of `cpus`."""
    with contextlib.suppress(OSError):  # a CPU taken away meanwhile: run unpinned
        os.sched_setaffinity(0, {cpus[worker % len(cpus)]})


class Workers:
    """Starts workers 1..count-1 of a run; the caller runs worker 0's share itself. With
    `pin`, each process of the run keeps to a CPU of its own (the caller included)."""

    def __init__(self, count: int, *, pin: bool = False) -> None:
        self.count = count
        self.pin = pin
        self._children: list[tuple[int, int]] = []  # (pid, read end of its summary pipe)

    def start(self, run: Callable[[int, int], int]) -> None:
        """Fork workers 1..count-1, each running `run(worker, summary_fd)`: the worker's share
        of the run config comes with the fork, nothing is parsed again.

        Call it before this process starts any thread (a fork copies only the calling thread,
        so a lock held by another would stay locked in the child forever)."""
        if threading.active_count() != 1:
            raise RuntimeError("workers must be forked before any thread starts")
        # The parent-death signal fires when the *thread* that forked exits, not the process:
        # fork from the main thread, which lives as long as the process.
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("workers must be forked from the main thread")
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: nothing to do after
        parent = os.getpid()
        cpus = usable_cpus() if self.pin else []
        for worker in range(1, self.count):
            read_end, write_end = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the worker: run, then leave without the parent's exit handlers
                code = 3
                try:
                    die_with_parent(libc, parent)
                    if cpus:
                        pin(worker, cpus)
                    os.close(read_end)
                    for _, other in self._children:
                        os.close(other)
                    code = run(worker, write_end)
                except KeyboardInterrupt as exc:  # a signal before the worker's own handlers
                    code = 128 + getattr(exc, "signum", signal.SIGINT)
                finally:
                    os._exit(code)
            os.close(write_end)
            self._children.append((pid, read_end))
        if cpus:
            pin(0, cpus)

    def join(self) -> tuple[list[int], list[dict[str, object]]]:
        """Exit codes and summaries of the workers, once they have all ended."""
        codes, summaries = [], []
        for pid, read_end in self._children:
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            if data:
                summaries.append(json.loads(data))
        self._children.clear()
        return codes, summaries

    def signal(self, signum: int) -> None:
        """Pass a stop signal on to the workers (each then stops as the parent does)."""
        for pid, _ in self._children:
            # ProcessLookupError: it ended already (not reaped yet, so the PID is still ours)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def terminate(self) -> None:
        """End workers still running (we are leaving early) and reap them."""
        for pid, read_end in self._children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(read_end)
        self._children.clear()


def die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    """In a just-forked worker: SIGTERM when the parent dies, and leave now if it already has
    (then the worker was re-parented, and getppid() is no longer `parent`)."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)
