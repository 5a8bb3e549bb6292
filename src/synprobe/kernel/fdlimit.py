"""Open files for the shaker's sockets: what a run needs, and what this process may open.

Every shaker attempt in flight is an open socket, so RLIMIT_NOFILE bounds its concurrency
(many systems default to a soft limit of 1,024). The library only checks: it never changes a
process-wide limit behind its caller's back. The CLI owns its process: it raises its own soft
limit as far as the hard limit allows (see cli_concurrency).
"""

from __future__ import annotations

import os
import resource

from synprobe.errors import UsageError

ENGINE_FDS = 8  # beside its sockets an engine holds an epoll fd and the runner's eventfd
CLI_RESERVE = 64  # the CLI's stdio, worker pipes, imports: what else a CLI process opens
SHAKER_AUTO_MAX = 16_384  # the CLI's default in-flight cap per process (see cli_concurrency)
LIBRARY_SHAKER_MAX = 1000  # the library's: a library shares its process's files with its caller
# The raw engine's in-flight table holds no file, only memory: a check in flight costs its
# Target (~145 bytes), its record and table entry (~200; no packet: each SYN is built as it is
# sent), ~345 bytes measured with tracemalloc (tests/unit/test_raw_inflight.py keeps it under
# RAW_RECORD_BYTES, which leaves room for the allocator's own overhead). The CLI's default lets
# a run hold RAW_INFLIGHT_BUDGET of them, shared by its worker processes: 32 MiB, ~74,500
# checks, so a /16 that does not answer is in flight at once, and a silent 1,048,576-target
# sweep stays within ~110 MB of peak RSS for the whole process tree (bench/silent.py --scale).
RAW_RECORD_BYTES = 450
RAW_INFLIGHT_BUDGET = 32 << 20


def open_fds() -> int:
    """File descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself opened
    except OSError:
        return 16  # no /proc: a guess that errs on the safe side


def check_descriptors(concurrency: int) -> None:
    """For the library: UsageError unless `concurrency` more sockets fit under this process's
    soft RLIMIT_NOFILE now. The error names the parameter and the fix, not a CLI flag."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    in_use = open_fds()
    need = in_use + concurrency + ENGINE_FDS
    if need > soft:
        hard_text = "unlimited" if hard == resource.RLIM_INFINITY else f"{hard:,}"
        raise UsageError(
            f"concurrency={concurrency:,} needs {need:,} open files ({in_use:,} are open) but "
            f"this process's soft RLIMIT_NOFILE is {soft:,}: lower concurrency, or raise the "
            f"soft limit first (resource.setrlimit; the hard limit is {hard_text}); synprobe "
            "does not change process-wide limits")


def raise_soft_limit(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `need`, or as far as the hard limit lets
    it; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return need if soft == resource.RLIM_INFINITY else soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def cli_concurrency(requested: int | None, *, engine: str, workers: int, checks: int,
                    rate: float | None, timeout: float, attempts: int) -> int:
    """In-flight checks per process for a CLI run where a process makes at most `checks`
    checks (the run's, when its workers share the targets out as they go; each of `workers`
    processes gets rate/workers), raising the soft file limit to fit them.

    The default (requested None) is what the rate can keep busy: a check holds a slot for at
    most timeout x attempts, so rate x timeout x attempts slots never leave the pacer waiting;
    never more than there are checks, nor than the engine's own bound: for the shaker
    SHAKER_AUTO_MAX and what the hard file limit allows (a default that does not fit is
    lowered, never refused), for raw the memory budget (raw_memory_cap). An explicit
    --concurrency that does not fit under the hard limit is a UsageError naming the flag."""
    per_process = None if requested is None else max(1, requested // workers)
    by_rate = None if rate is None else max(1, int(rate / workers * timeout * attempts))
    if engine != "shaker":
        if per_process is not None:
            return min(per_process, max(1, checks))
        return min(by_rate or checks, raw_memory_cap(workers), max(1, checks))
    if per_process is not None:
        wanted = min(per_process, max(1, checks))
        need = wanted + CLI_RESERVE
        if raise_soft_limit(need) < need:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            each = " per process" if workers > 1 else ""
            raise UsageError(
                f"--concurrency {requested:,} needs {need:,} open files{each} but the hard "
                f"limit is {hard:,} (ulimit -Hn): lower --concurrency or raise the limit")
        return wanted
    wanted = min(SHAKER_AUTO_MAX, by_rate or SHAKER_AUTO_MAX, max(1, checks))
    allowed = raise_soft_limit(wanted + CLI_RESERVE) - CLI_RESERVE
    return max(1, min(wanted, allowed))


def library_concurrency(engine: str) -> int:
    """The library's default in-flight bound (the CLI sizes its own, cli_concurrency): the raw
    engine's whole memory budget; for the shaker LIBRARY_SHAKER_MAX, or what the soft file
    limit leaves room for now if that is less (the library never raises a limit)."""
    if engine == "raw":
        return raw_memory_cap(1)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return LIBRARY_SHAKER_MAX
    return max(1, min(LIBRARY_SHAKER_MAX, soft - open_fds() - ENGINE_FDS))


def raw_memory_cap(workers: int) -> int:
    """The raw engine's default in-flight bound per process: its share of RAW_INFLIGHT_BUDGET."""
    return max(1, RAW_INFLIGHT_BUDGET // RAW_RECORD_BYTES // max(1, workers))
