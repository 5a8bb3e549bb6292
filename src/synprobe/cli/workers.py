"""Spread one CLI run over several processes, one per core, that share its targets out as
they go (`SharedSpans`).

One Python thread tops out near 26,000 half-open checks per second here (the GIL, not the
kernel, is the limit), so a large run forks once per extra core; each child runs its share of
the run config (inherited through the fork, never re-parsed), and the parent probes too. Every
process takes the targets it is about to start from one pool, so a worker slowed down (its
core shared with other work) takes fewer.

Forked, not spawned: a child starts probing at once instead of ~0.1 s later (a fresh interpreter
and its imports), which on a 65,536-target run left the parent idle at the end. The fork happens
before the parent starts any thread. Workers write result lines straight to the shared stdout in
whole-line chunks (see output.LineSink) and hand their summary back on a pipe.

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
import fcntl
import json
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synprobe.model import Target
    from synprobe.targets.space import Walker

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


class SharedSpans:
    """The positions of a run's shard, as (begin, end) spans in a pool the run's processes
    share: each takes what it is about to start and hands back the rest of a span at once
    (`SpanTargets`), so a worker that runs faster takes more, and none holds targets it cannot
    start yet.

    With a fixed share each, a worker whose core other work is using finished long after the
    other, whose core then sat idle (a CPU hog on one of 2 cores, 65,536 all-open targets: 1.24
    s; sharing spans: 0.87 s). Handing a span's rest back matters where every slot is held by a
    silent target for a whole timeout: a worker holding 255 targets it could not start until
    the retry wave made a 94 %-silent shaker sweep take another timeout (3.1 s against 2.6 s).

    The pool is a pipe of 16-byte records, filled before the fork; every process keeps both
    ends. A pipe is read and written under its lock, so each record read is a span no other
    process gets, and a record of up to PIPE_BUF bytes is written whole. A take removes a record
    and a hand-back adds at most one, so the pool never holds more than it was filled with; but
    a pipe is a ring of pages, and a page partly read still takes its slot: filled to one page
    short of its size, the pipe always has a slot for a hand-back (a full one refused the first
    hand-back with EAGAIN). The pipe is made as large as the user may (POOL_BYTES, 65,280
    records), so spans are SPAN positions up to ~16 million, and longer beyond. Reading an
    empty pool gives nothing (non-blocking): a process that finds it empty is done; what
    another hands back later, that one takes itself on its next pull (it asked for a full
    batch, so it asks again). A process that dies loses only what it had taken. Without a pipe
    to share (out of files, over the pipe quota) the constructor raises OSError.
    """

    SPAN = 256
    POOL_BYTES = 1 << 20  # /proc/sys/fs/pipe-max-size by default: what a user may ask for
    _RECORD = struct.Struct("=QQ")

    def __init__(self, positions: int) -> None:
        self.positions = positions
        self._read, self._write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            with contextlib.suppress(OSError):  # over the user's pipe quota: as it came
                fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, self.POOL_BYTES)
            size = fcntl.fcntl(self._write, fcntl.F_GETPIPE_SZ)
            room = (size - os.sysconf("SC_PAGESIZE")) // self._RECORD.size  # see above
            if room < 1:
                raise OSError(f"a {size}-byte pipe has no room for a span pool")
            self.length = max(self.SPAN, -(-positions // room))
            pack = self._RECORD.pack
            records = b"".join(pack(b, min(b + self.length, positions))
                               for b in range(0, positions, self.length))
            # It fits the empty pipe, so it is written whole.
            if records and os.write(self._write, records) != len(records):
                raise OSError("the span pool took less than it holds")
        except BaseException:
            self.close()
            raise

    def take(self) -> tuple[int, int] | None:
        """A span no other process has, or None if the pool is empty."""
        try:
            record = os.read(self._read, self._RECORD.size)
        except BlockingIOError:
            return None
        return self._RECORD.unpack(record) if record else None

    def give_back(self, begin: int, end: int) -> None:
        """Return positions begin..end-1 of a span taken, unwalked, to the pool."""
        if begin < end:
            os.write(self._write, self._RECORD.pack(begin, end))

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1


class SpanTargets:
    """One process's targets of a run that shares its shard out (`SharedSpans`):
    `take_targets(n)` (what the engine's source asks for, see sources.IterSource) takes spans
    until it has n targets, and hands the rest of the last one back."""

    def __init__(self, walker: Walker, spans: SharedSpans) -> None:
        if walker.positions != spans.positions:  # a span past the walk's end: never walked
            raise ValueError(f"spans of {spans.positions} positions for a walk of "
                             f"{walker.positions}")
        self._walker = walker
        self._spans = spans

    def take_targets(self, n: int) -> list[Target]:
        """Up to n targets; fewer only if the pool was empty when asked."""
        out: list[Target] = []
        while len(out) < n:
            span = self._spans.take()
            if span is None:
                break
            begin, end = span
            got, stopped = self._walker.take(begin, end, n - len(out))
            out += got
            self._spans.give_back(stopped, end)
        return out

    def __iter__(self) -> Iterator[Target]:
        while batch := self.take_targets(512):
            yield from batch


def die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    """In a just-forked worker: SIGTERM when the parent dies, and leave now if it already has
    (then the worker was re-parented, and getppid() is no longer `parent`)."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)
