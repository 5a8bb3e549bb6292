"""Run one command inside a lab namespace and measure the whole process: wall time, peak RSS, CPU.

The command runs as `ip netns exec NS /usr/bin/time -f ... argv` (`lab.popen`). `ip netns exec`
execs in place, so the Popen PID is GNU time's, and `os.wait4()` on it gives the CPU time of the
whole tree. Peak RSS comes from GNU time (`%M`, the rusage of the one child it forked), not from
our own wait4: the kernel folds the pre-exec address space into ru_maxrss, and a child spawned
from this Python process (vfork) would inherit the benchmark's own ~40 MB as its "peak". GNU
time is a small C program, so its fork carries ~2 MB at most. Without /usr/bin/time (Debian
package `time`) we fall back to wait4's ru_maxrss and say so.

ru_maxrss is the largest *single* process, and synprobe's CLI may spread a run over one process
per core. So a sampler thread also sums the RSS of the whole process tree every SAMPLE_S (from
/proc; this kernel has no /proc/PID/task/TID/children), and `maxrss_mb` is the larger of the
two. A sampled peak can miss a spike shorter than SAMPLE_S.

The end of the process is seen through a pidfd (exact, no polling granularity). A run that
outlives its deadline is killed by PID (pidfd), every process of its tree (leaves first, SIGTERM
then SIGKILL), and reported as failed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

KILL_GRACE_S = 2.0
SAMPLE_S = 0.025
GNU_TIME = "/usr/bin/time"
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class LabLike(Protocol):
    def popen(self, ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]: ...


@dataclass
class Measured:
    """One finished (or killed) process."""

    argv: list[str]
    wall_s: float
    returncode: int | None  # None when it was killed for running past its deadline
    timed_out: bool
    maxrss_mb: float  # max(largest single process, sampled peak of the tree's summed RSS)
    maxrss_single_mb: float  # GNU time's %M (or wait4's ru_maxrss without it)
    rss_source: str  # "gnu-time" or "wait4" (the latter includes the spawner's pre-exec RSS)
    tree_peak_mb: float  # sampled peak of the summed RSS of the process and its descendants
    max_procs: int  # most processes of the command seen at once (GNU time itself not counted)
    user_s: float
    sys_s: float
    host_busy_s: float  # CPU time the whole machine was busy meanwhile (/proc/stat), all cores
    stdout_path: Path
    stderr_tail: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def other_cpu_s(self) -> float:
        """Busy CPU not charged to the measured tree: other processes on the machine, the
        lab's listener, this script, and softirq time the kernel books to no task."""
        return max(0.0, self.host_busy_s - self.cpu_s)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float:
    """user + system CPU seconds of one running process (0.0 if it is gone or None)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def host_busy_s() -> float:
    """Seconds of CPU time the machine has been busy since boot, summed over cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait; guest time is already in user
    return (sum(fields[:8]) - idle) / _TICK


def _descendants(root: int) -> list[int]:
    """`root` and every process below it, parents before children.

    Read from each process's own `/proc/PID/task/TID/children` lists, so a sample costs a few
    reads of the measured tree, not a walk of every process on the machine: that walk took
    ~1 ms of CPU per sample (67 processes), every 25 ms, on the cores the measured command
    needs (it slowed rows that keep both cores busy more than one-core rows such as zmap).
    Kernels without those files (CONFIG_PROC_CHILDREN unset) get the full walk.
    """
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        return _descendants_by_walk(root)
    return _breadth_first(root, _children_listed)


def _descendants_by_walk(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # comm is in parentheses and may hold spaces: ppid is the 2nd field after it.
            ppid = int(stat[stat.rindex(b")") + 2:].split(None, 2)[1])
            children.setdefault(ppid, []).append(int(name))
    return _breadth_first(root, lambda pid: children.get(pid, ()))


def _children_listed(pid: int) -> list[int]:
    """The children of every thread of `pid`, from /proc (none once it has ended)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(map(int, f.read().split()))
        except OSError:
            continue
    return kids


def _breadth_first(root: int, children: Callable[[int], Iterable[int]]) -> list[int]:
    order, seen = [root], {root}
    for pid in order:  # grows while iterating
        for kid in children(pid):
            if kid not in seen:
                seen.add(kid)
                order.append(kid)
    return order


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


class _TreeSampler(threading.Thread):
    def __init__(self, root: int, skip_root: bool) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.skip_root = skip_root  # GNU time: not part of what we measure
        self.peak_mb = 0.0
        self.max_procs = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = _descendants(self.root)[1 if self.skip_root else 0:]
            self.peak_mb = max(self.peak_mb, sum(_rss_mb(p) for p in pids))
            self.max_procs = max(self.max_procs, len(pids))
            self.done.wait(SAMPLE_S)


def _wait_pidfd(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (not yet reaped), False if `timeout` passed first."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller.poll(remaining * 1000):
                return True
    finally:
        os.close(fd)


def _kill_tree(root: int) -> None:
    """SIGTERM, then SIGKILL, each process of our command's tree, leaves first.

    Signals go through pidfds taken while the processes are still our descendants, so a PID
    reused after one of them exited can never be hit.
    """
    pidfds: list[int] = []
    for pid in reversed(_descendants(root)):
        with contextlib.suppress(ProcessLookupError):
            pidfds.append(os.pidfd_open(pid))
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for fd in pidfds:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
            if sig == signal.SIGTERM:
                _wait_pidfd(root, KILL_GRACE_S)
    finally:
        for fd in pidfds:
            os.close(fd)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _gnu_time_kb(path: Path) -> float | None:
    """%M from GNU time's -o file (its last line; earlier lines may say a signal ended it)."""
    try:
        lines = path.read_text().split()
        return float(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def run_measured(lab: LabLike, ns: str, argv: list[str], *, stdout_path: Path, timeout: float,
                 env: dict[str, str] | None = None) -> Measured:
    """Run argv in `ns` with stdout to `stdout_path`; measure it; never wait past `timeout`."""
    stderr_path = stdout_path.with_suffix(stdout_path.suffix + ".err")
    time_path = stdout_path.with_suffix(stdout_path.suffix + ".time")
    time_path.unlink(missing_ok=True)
    use_time = os.access(GNU_TIME, os.X_OK)
    full = [GNU_TIME, "-q", "-f", "%M", "-o", str(time_path), *argv] if use_time else argv
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        busy0 = host_busy_s()
        started = time.perf_counter()
        proc = lab.popen(ns, full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        sampler = _TreeSampler(proc.pid, skip_root=use_time)
        sampler.start()
        finished = False
        try:
            finished = _wait_pidfd(proc.pid, timeout)
        finally:
            sampler.done.set()
            if not finished:
                _kill_tree(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        busy = host_busy_s() - busy0
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # we reaped it: keep Popen (and the lab's teardown) in step
    tail = _tail(stderr_path)
    stderr_path.unlink(missing_ok=True)
    single_kb = _gnu_time_kb(time_path) if use_time else None
    time_path.unlink(missing_ok=True)
    single = (single_kb if single_kb is not None else usage.ru_maxrss) / 1024.0  # KiB
    return Measured(
        argv=list(argv),
        wall_s=wall,
        returncode=code if finished else None,
        timed_out=not finished,
        maxrss_mb=max(single, sampler.peak_mb),
        maxrss_single_mb=single,
        rss_source="gnu-time" if single_kb is not None else "wait4",
        tree_peak_mb=sampler.peak_mb,
        max_procs=sampler.max_procs,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        host_busy_s=busy,
        stdout_path=stdout_path,
        stderr_tail=tail,
    )
