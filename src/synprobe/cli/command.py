"""The command line: parse -> options -> engine -> report -> exit code."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from synprobe.api import ResultStream, check_via_support
from synprobe.cli.args import Formatter, Parser, VersionAction
from synprobe.cli.config import RunConfig, build_config
from synprobe.cli.output import (
    CsvWriter,
    JsonWriter,
    LineSink,
    TableWriter,
    Tally,
    format_summary,
    lost_replies,
    merge_stats,
)
from synprobe.cli.stops import StopSignals
from synprobe.cli.workers import Workers, auto_workers, worth_pinning
from synprobe.engines.base import Engine
from synprobe.engines.raw.options import RST_MODES, VIA_MODES
from synprobe.errors import SynprobeError, UsageError
from synprobe.kernel.fdlimit import (
    RAW_INFLIGHT_BUDGET,
    RAW_RECORD_BYTES,
    SHAKER_AUTO_MAX,
)
from synprobe.model import Target
from synprobe.registry import create_engine, engines
from synprobe.textsafe import visible

Writer = TableWriter | JsonWriter | CsvWriter

EXIT_ALL_OPEN = 0
EXIT_NOT_ALL_OPEN = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3

DEFAULT_RATE = 10_000.0

EPILOG = """\
examples:
  synprobe 198.18.0.2:80                        one check (exit 0 when open)
  synprobe -p 80,443 --json 198.19.0.0/24       sweep a /24, one JSON object per line
  synprobe --source 198.18.0.1 -p 80 198.18.0.2  check from a bound source address
  synprobe --engine raw --rate 50000 -p 80 -iL hosts.txt
  synprobe --engine raw --dry-run -p 80 198.18.0.2   print the SYNs, send nothing
  synprobe --engine raw --via 198.18.1.11 --via 198.18.1.12 198.18.2.100:80
                                                DSR: the VIP through each real server

engines:
  shaker  kernel sockets, no privileges. SO_LINGER 0 + TCP_QUICKACK 0 before connect(); the
          SYN-ACK is answered with a RST by close(). --timeout is per attempt, below 1 s.
  raw     crafted SYNs on raw sockets, stateless cookie matching; needs CAP_NET_RAW.

exit status:
  0    every target is open
  1    at least one target is not open, or left unprobed by --max-time
  2    usage error (bad target, port, option)
  3    runtime or permission error
  130  interrupted (Ctrl-C)     143  stopped by SIGTERM (completed rows are written first)
"""


def build_parser(stdout: TextIO | None = None) -> argparse.ArgumentParser:
    p = Parser(
        prog="synprobe",
        stdout=stdout,
        description="Half-open TCP health checks: SYN -> SYN-ACK -> RST. A port is open when it\n"
        "answers the SYN; the handshake is never completed, so servers never accept() and no\n"
        "TIME_WAIT is left behind.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument("--version", action=VersionAction)
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="address, HOST:PORT, [V6]:PORT, CIDR, range A-B, or hostname")
    p.add_argument("--engine", default="shaker", choices=engines(),
                   help="how to probe (default: shaker)")
    p.add_argument("-p", "--ports", help="ports for targets without one: 80,443,8000-8100")
    p.add_argument("-iL", dest="input_list", metavar="FILE", action="append", default=[],
                   help="read targets from FILE ('-' for stdin), whitespace-separated, # comments")
    p.add_argument("--exclude", action="append", default=[], metavar="LIST",
                   help="addresses, CIDRs or ranges never to probe (comma-separated, repeatable)")
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help="file of addresses/CIDRs/ranges never to probe")
    p.add_argument("--allow-large", action="store_true",
                   help="allow more than 65,536 targets")
    p.add_argument("--source", metavar="IP", help="local address to send from: an address of "
                   "this host (checked before anything is sent)")
    p.add_argument("--freebind", action="store_true",
                   help="with --source: allow an address this host does not hold yet, e.g. a "
                   "VRRP backup's floating address (IP_FREEBIND)")
    p.add_argument("--timeout", type=float, default=0.5, metavar="S",
                   help="seconds each attempt waits for an answer (default 0.5)")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="extra attempts for unanswered targets (default 1)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="checks in flight at once, shared by the workers. Default: what the "
                   "rate can keep busy (rate x timeout x attempts: a silent target holds its "
                   "slot that long), at most the number of checks, and, shaker: "
                   f"{SHAKER_AUTO_MAX:,} per process and what the open-file limit allows (the "
                   "soft limit is raised up to the hard one as needed); raw: what "
                   f"{RAW_INFLIGHT_BUDGET >> 20} MiB of in-flight records hold "
                   f"(~{RAW_INFLIGHT_BUDGET // RAW_RECORD_BYTES:,}). With --rate 0 only those "
                   "caps apply")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="PPS",
                   help=f"SYNs per second at most (default {DEFAULT_RATE:,.0f}; 0 = no limit)")
    p.add_argument("--max-time", type=float, metavar="S",
                   help="global deadline: start no new checks after S seconds (those in flight "
                   "finish); targets left unprobed are counted on stderr and exit 1")
    p.add_argument("--seed", type=int, help="seed of the target order (default: random)")
    p.add_argument("--shard", metavar="I/N", help="probe only part I of N (0-based) of the "
                   "targets; N runs with the same --seed cover them exactly once")
    p.add_argument("--rst", choices=RST_MODES, default=None,
                   help="raw engine: who resets an open port: the kernel (default; the SYN left "
                   "from a port no socket owns) or the engine itself")
    p.add_argument("--via", action="append", default=[], metavar="IP",
                   help="check each target through this real server (DSR; repeatable: one "
                   "result per target and real server; raw engine)")
    p.add_argument("--via-mode", choices=VIA_MODES, default=None,
                   help="raw engine, with --via: send the SYN in a frame to the real server's "
                   "MAC (l2, default: direct routing, the real server on a local link) or in "
                   "IP-in-IP to it (ipip: LVS tunnelling); the engine then resets open ports "
                   "itself, the same way")
    p.add_argument("--sport-range", metavar="LO-HI",
                   help="raw engine: source ports SYNs leave from (default 61000-65535; must "
                   "lie outside net.ipv4.ip_local_port_range)")
    p.add_argument("--mark", metavar="N", help="SO_MARK for the probe sockets, 0..4294967295 "
                   "in decimal or hex (0x10) (policy routing; needs CAP_NET_ADMIN)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes to spread the run over, which take the targets from one "
                   "pool as they go (raw workers also split --sport-range), each kept on a "
                   "CPU of its own when there is one per CPU; default: one per core this "
                   "process may use, at most 4, for runs of 20,000+ targets with either "
                   "engine, else 1")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be sent, send nothing (tcpdump-style lines; with "
                   "--json one JSON object per check)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument("--no-color", action="store_true", help="never colour the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary or progress on stderr")
    return p


def run(config: RunConfig, stdout: TextIO, stderr: TextIO, stops: StopSignals, *,
        own_process: bool = False) -> int:
    """The parent's run: its engine is made once, checked (preflight), then used for its share;
    workers are forked after the checks and before any thread starts. `own_process`: the run
    is the program (not main() called by other code), so it may tune the process's GC."""
    shares = config.shares()
    try:
        return _run_shares(config, shares, stdout, stderr, stops, own_process)
    finally:
        if shares[0].spans is not None:  # the pool the workers took their targets from
            shares[0].spans.close()


def _run_shares(config: RunConfig, shares: list[RunConfig], stdout: TextIO, stderr: TextIO,
                stops: StopSignals, own_process: bool) -> int:
    engine = create_engine(config.engine, shares[0].options)
    try:
        check_via_support(engine, config.vias)
        if config.dry_run:
            describe = _dry_run_describer(engine, config.engine, config.output.format == "json")
            for target in config.targets():
                stdout.write(describe(target) + "\n")
            engine.close()
            return EXIT_ALL_OPEN
        # What would fail the run (privileges, unusable real servers) fails now, before any
        # output or worker. The sockets it opens are the ones the run uses.
        engine.preflight(config.vias, config.space.families)
        if own_process:
            _settle_gc()
        writer = _writer(config, stdout)
        workers = None
        if len(shares) > 1:
            writer.out.flush()  # the header, before any worker's row
            workers = Workers(len(shares), pin=own_process and worth_pinning(len(shares)))
            workers.start(functools.partial(_worker, shares, engine, stdout, stderr))
    except BaseException:
        engine.close()
        raise
    try:
        return _stream(shares[0], engine, writer, workers, stops, stdout, stderr)
    finally:
        if workers is not None:
            workers.terminate()  # only if we are leaving early; a no-op otherwise


GC_THRESHOLD = 10_000  # allocations between young-generation collections (Python's: 700)


def _settle_gc() -> None:
    """The CLI owns its process (when it is the program), so it sets the collector for a run: what
    start-up made (the modules, the config) is frozen, out of every later collection's walk and
    untouched by the workers' (the fork's pages stay shared), and the young generation is collected
    every 10,000 allocations. A run allocates a few containers per check (its Target, the in-flight
    record and key, the result) and keeps them briefly; at Python's default threshold the collector
    ran every ~150 checks and took ~0.6 µs a check, ~10 % of the raw engine's CPU (measured on a
    fake network; a CLI run at 65,536 targets: user CPU -7 %)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def _worker(shares: list[RunConfig], inherited: Engine, stdout: TextIO, stderr: TextIO,
            worker: int, summary_fd: int) -> int:
    """In a forked worker: its own engine for its share (the parent's copy is closed: its
    sockets belong to the parent's share), then the run, as the CLI's main would."""
    inherited.close()
    config = dataclasses.replace(shares[worker], summary_fd=summary_fd)
    # A worker ignores a second stop signal: a Ctrl-C reaches it from the terminal and again
    # from its parent, and it must still hand back what it completed.
    stops = StopSignals(insist_to_quit=False)
    stops.install()

    def body() -> int:
        engine = create_engine(config.engine, config.options)
        try:
            engine.preflight(config.vias, config.space.families)
        except BaseException:
            engine.close()
            raise
        return _stream(config, engine, _writer(config, stdout), None, stops, stdout, stderr)

    try:
        return _guarded(body, stderr, is_worker=True)
    finally:
        stops.restore()


def _stream(config: RunConfig, engine: Engine, writer: Writer, workers: Workers | None,
            stops: StopSignals, stdout: TextIO, stderr: TextIO) -> int:
    results = ResultStream(engine, config.targets())
    with results:
        if config.deadline is not None:
            results.stop_at(config.deadline)

        def stop(signum: int) -> None:  # in the signal handler: flags and kill() only
            results.abort()
            if workers is not None:
                workers.signal(signum)

        stops.on_stop(stop)
        return _report(config, results, writer, workers, stops, stdout, stderr)


def _dry_run_describer(engine: Engine, name: str, as_json: bool) -> Callable[[Target], str]:
    """The engine's describe(), in JSON with --json. An engine written before JSON dry runs
    (a plug-in without `as_json`) still has its text form."""
    describe = engine.describe
    if not as_json:
        return describe
    import inspect  # here: only a dry run needs it (~5 ms of every start)

    if "as_json" not in inspect.signature(describe).parameters:
        raise UsageError(f"--dry-run --json: the {name} engine describes its packets only as "
                         "text; drop --json")
    return functools.partial(describe, as_json=True)


def _writer(config: RunConfig, stdout: TextIO) -> Writer:
    """The rows' writer; the parent's writes the header (a worker's rows follow it)."""
    out, header = config.output, not config.is_worker
    sink = LineSink(stdout, line_buffered=stdout.isatty())
    if out.format == "json":
        return JsonWriter(sink)
    if out.format == "csv":
        return CsvWriter(sink, header=header)
    return TableWriter(sink, colour=not out.no_color and stdout.isatty(), header=header,
                       host_width=39 if config.space.has_ipv6 else 15, via=out.via)


def _report(config: RunConfig, results: ResultStream, writer: Writer, workers: Workers | None,
            stops: StopSignals, stdout: TextIO, stderr: TextIO) -> int:
    is_worker, out, total = config.is_worker, config.output, config.total
    tally = Tally(total)
    progress = not out.quiet and not is_worker and stderr.isatty()
    next_progress = time.monotonic() + 1.0
    try:
        with results:
            # A stop signal ends this loop (results.abort()), never interrupts it: every
            # result that completed is written.
            for batch in results.batches():
                writer.write_all(batch)
                tally.add_all(batch)
                if progress and time.monotonic() >= next_progress:
                    stderr.write(tally.progress_line())
                    stderr.flush()
                    next_progress = time.monotonic() + 0.5
            stats = results.stats()
    except BaseException:
        with contextlib.suppress(OSError):  # what was written before a hard stop still counts
            writer.finish()
        raise
    writer.finish()
    codes = [EXIT_ALL_OPEN if tally.all_open() else EXIT_NOT_ALL_OPEN]
    if workers is not None:
        worker_codes, summaries = workers.join()
        codes += [128 - c if c < 0 else c for c in worker_codes]  # -N: ended by signal N
        for summary in summaries:
            tally.merge(summary)
            merge_stats(stats, summary["stats"])  # type: ignore[arg-type]
    summary = tally.summary(config.engine, stats)
    # A stop signal to this process, or to a worker alone (its rows are written, and it
    # says nothing: the parent speaks for the run).
    interrupted = stops.signum or next((c - 128 for c in codes[1:] if c > 128), None)
    # Only a deadline or a signal leaves checks unstarted; the parent's tally includes its
    # workers'.
    unprobed = 0
    if (config.max_time or interrupted) and not is_worker:
        unprobed = max(0, total - tally.done)
    if is_worker:
        with contextlib.suppress(BrokenPipeError), os.fdopen(config.summary_fd, "w") as pipe:
            json.dump(summary, pipe)
        return codes[0] if interrupted is None else 128 + interrupted
    if not out.quiet:
        if progress:
            stderr.write("\r\033[K")
        stderr.write((json.dumps({"summary": summary}) if out.format == "json"
                      else format_summary(summary))
                     + "\n")
    if interrupted is not None:  # the one "interrupted" line of a run, workers' included
        stderr.write(f"synprobe: interrupted ({signal.Signals(interrupted).name}): "
                     f"{unprobed:,} of {total:,} checks were not completed\n")
        return 128 + interrupted
    if unprobed:
        stderr.write(f"synprobe: --max-time reached: {unprobed:,} of {total:,} checks were not "
                     "started\n")
    if lost_replies(stats):
        stderr.write(f"synprobe: warning: {lost_replies(stats):,} probes or replies were lost "
                     "locally (failed sends, kernel drops); results for them may read filtered\n")
    if stats.get("late_handshakes"):
        stderr.write(f"synprobe: warning: {stats['late_handshakes']:,} open targets saw a full "
                     "connection: this process was stalled past the kernel's ~200 ms delayed-ACK "
                     "window (stopped, starved of CPU); see docs/shaker-window.md\n")
    if any(c not in (EXIT_ALL_OPEN, EXIT_NOT_ALL_OPEN) for c in codes):
        return max(codes)  # a worker failed: its own error line is already on stderr
    return EXIT_ALL_OPEN if tally.all_open() and not unprobed else EXIT_NOT_ALL_OPEN


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """The command line. Called without `argv` it is the program (the console script, `python
    -m synprobe`) and owns its process: a run freezes the garbage collector's start-up objects,
    widens its young generation, and may pin its processes to CPUs, none of it undone on
    return. Code embedding the CLI passes `argv` and keeps its process as it was."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    own_process = argv is None  # the program itself, not a caller's main([...])
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["watch"]:  # the service; a host named watch: synprobe -p 80 -- watch
        from synprobe.watch.cli import main as watch_main  # here: aiohttp only for the service

        return watch_main(argv[1:], stdout, stderr)
    parser = build_parser(stdout)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version (usage errors raise ArgumentError)
        return int(exc.code or 0) and EXIT_USAGE
    except UsageError as exc:  # one line naming the token, and a pointer to --help
        stderr.write(f"synprobe: error: {visible(str(exc))}\n")
        return EXIT_USAGE
    stops = StopSignals()
    stops.install()
    try:
        return _guarded(lambda: run(build_config(args, auto_workers), stdout, stderr, stops,
                                    own_process=own_process),
                        stderr, is_worker=False)
    finally:
        stops.restore()


def _guarded(body: Callable[[], int], stderr: TextIO, *, is_worker: bool) -> int:
    """`body()`'s exit code, or the documented one for what it raised, said in one line."""
    try:
        return body()
    except UsageError as exc:
        stderr.write(f"synprobe: error: {visible(str(exc))}\n")
        return EXIT_USAGE
    except (SynprobeError, PermissionError) as exc:  # EngineUnavailable, EngineError
        stderr.write(f"synprobe: error: {visible(str(exc))}\n")
        return EXIT_RUNTIME
    except BrokenPipeError:  # the reader went away (| head): not worth a message
        return EXIT_RUNTIME
    except OSError as exc:  # PermissionError included: reading a target file, a pipe
        stderr.write(f"synprobe: error: {visible(str(exc.strerror or exc))}\n")
        return EXIT_RUNTIME
    except KeyboardInterrupt as exc:  # a stop signal before the run could stop gracefully
        signum = getattr(exc, "signum", signal.SIGINT)
        if not is_worker:  # the parent speaks for the whole run: one line
            stderr.write("synprobe: interrupted\n")
        return 128 + signum
    except Exception:  # a bug: say so, with the traceback, and never exit 0/1 ("not open")
        import traceback  # here: ~1.3 ms of every start-up otherwise

        stderr.write("synprobe: internal error (please report it):\n"
                     + traceback.format_exc())
        return EXIT_RUNTIME
