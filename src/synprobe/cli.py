"""The command line: parse -> options -> engine -> report -> exit code."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from synprobe.api import ResultStream, check_via_support, make_options, probe_many
from synprobe.errors import EngineUnavailable, SynprobeError, UsageError
from synprobe.output import (
    CsvWriter,
    JsonWriter,
    LineSink,
    TableWriter,
    Tally,
    format_summary,
    lost_replies,
    merge_stats,
)
from synprobe.registry import create_engine, engines
from synprobe.space import DEFAULT_LIMIT
from synprobe.targets import (
    Prepared,
    build_space,
    iter_target_file,
    parse_ports,
    parse_shard,
    parse_via,
    with_vias,
)
from synprobe.wire.cookie import DEFAULT_PORT_HI, DEFAULT_PORT_LO
from synprobe.workers import Workers, auto_workers

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
  0  every target is open      1  at least one target is not open
  2  usage error (bad target, port, option)     3  runtime or permission error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="synprobe",
        description="Half-open TCP health checks: SYN -> SYN-ACK -> RST. A port is open when it "
        "answers the SYN; the handshake is never completed, so servers never accept() and no "
        "TIME_WAIT is left behind.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--source", metavar="IP", help="local address to send from")
    p.add_argument("--timeout", type=float, default=0.5, metavar="S",
                   help="seconds each attempt waits for an answer (default 0.5)")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="extra attempts for unanswered targets (default 1)")
    p.add_argument("--concurrency", type=int, default=1000, metavar="N",
                   help="attempts in flight at once (default 1000)")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="PPS",
                   help=f"SYNs per second at most (default {DEFAULT_RATE:,.0f}; 0 = no limit)")
    p.add_argument("--max-time", type=float, metavar="S",
                   help="global deadline: start no new checks after S seconds (those in flight "
                   "finish); targets left unprobed are counted on stderr and exit 1")
    p.add_argument("--seed", type=int, help="seed of the target order (default: random)")
    p.add_argument("--shard", metavar="I/N", help="probe only part I of N (0-based) of the "
                   "targets; N runs with the same --seed cover them exactly once")
    p.add_argument("--rst", choices=["kernel", "self"], default=None,
                   help="raw engine: who resets an open port: the kernel (default; the SYN left "
                   "from a port no socket owns) or the engine itself")
    p.add_argument("--via", action="append", default=[], metavar="IP",
                   help="check each target through this real server (DSR; repeatable: one "
                   "result per target and real server; raw engine)")
    p.add_argument("--via-mode", choices=["l2", "ipip"], default=None,
                   help="raw engine, with --via: send the SYN in a frame to the real server's "
                   "MAC (l2, default: direct routing, the real server on a local link) or in "
                   "IP-in-IP to it (ipip: LVS tunnelling); the engine then resets open ports "
                   "itself, the same way")
    p.add_argument("--sport-range", metavar="LO-HI",
                   help="raw engine: source ports SYNs leave from (default 61000-65535; must "
                   "lie outside net.ipv4.ip_local_port_range)")
    p.add_argument("--mark", type=int, metavar="N", help="SO_MARK for the probe sockets "
                   "(policy routing; needs CAP_NET_ADMIN)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes to spread the run over (default: one per core, up to 4, for "
                   "shaker runs of 20,000+ targets; else 1)")
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # set for worker processes
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be sent, send nothing")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument("--no-color", action="store_true", help="never colour the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary or progress on stderr")
    return p


def _tokens(args: argparse.Namespace) -> Iterator[str]:
    yield from args.targets
    for path in args.input_list:
        yield from iter_target_file(path)


def _engine_options(args: argparse.Namespace) -> dict[str, object]:
    extra: dict[str, object] = {}
    if args.rst is not None:
        if args.engine != "raw":
            raise UsageError("--rst applies to the raw engine only")
        extra["rst"] = args.rst
    if args.mark is not None:
        extra["mark"] = args.mark
    if args.via_mode is not None:
        if args.engine != "raw":
            raise UsageError("--via-mode applies to the raw engine only")
        if not args.via:
            raise UsageError("--via-mode applies to checks through a real server: give --via")
        extra["via_mode"] = args.via_mode
    if args.sport_range is not None:
        if args.engine != "raw":
            raise UsageError("--sport-range applies to the raw engine only")
        extra["sport_range"] = args.sport_range
    return extra


def run(args: argparse.Namespace, argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    ports = parse_ports(args.ports) if args.ports else None
    excludes = [e for arg in args.exclude for e in arg.split(",") if e.strip()]
    names: list[str] = []

    def resolver(host: str, *rest: Any, **kw: Any) -> Any:
        names.append(host)  # workers would resolve again, and might get other answers
        return socket.getaddrinfo(host, *rest, **kw)

    space = build_space(_tokens(args), ports, excludes=excludes, exclude_files=args.exclude_file,
                        resolver=resolver)
    if len(space) == 0:
        raise UsageError("no targets to probe (all excluded, or none given; see --help)")
    vias = [parse_via(v) for v in args.via]
    planned = len(space) * max(1, len(vias))
    if planned > DEFAULT_LIMIT and not args.allow_large:
        raise UsageError(f"{planned:,} checks is more than {DEFAULT_LIMIT:,}; pass --allow-large "
                         "if you mean it")
    if args.workers < 0:
        raise UsageError("--workers must be 0 (auto) or more")
    if args.max_time is not None and not args.max_time > 0:
        raise UsageError("--max-time must be a positive number of seconds")
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    total = planned // shard[1]
    options = dict(timeout=args.timeout, retries=args.retries, concurrency=args.concurrency,
                   rate=args.rate or None, source=args.source, **_engine_options(args))

    engine = create_engine(args.engine, make_options(**options))
    try:
        check_via_support(engine, vias)
        if args.dry_run:
            for target in with_vias(space.iter(args.seed, shard[0], shard[1]), vias):
                stdout.write(engine.describe(target) + "\n")
            return EXIT_ALL_OPEN
        # What would fail the run (privileges, unusable real servers) fails now, before any
        # output or worker.
        preflight = getattr(engine, "preflight", None)
        if preflight is not None:
            preflight(vias, space.families)
    finally:
        engine.close()

    workers = None
    seed = args.seed
    count = args.workers or auto_workers(args.engine, total)
    rereadable = "-" not in args.input_list and not names
    if count > 1 and args.workers and not rereadable:
        raise UsageError("--workers: each worker reads the targets again, which cannot work "
                         "with -iL - (stdin) or host names (resolved per process); give "
                         "addresses or a file")
    if count > 1 and args.worker_fd is None and rereadable:
        port_ranges = _split_ports(args, count) if args.engine == "raw" else None
        workers = Workers(argv, count, seed, shard, options["rate"], args.concurrency,
                          port_ranges)
        seed, shard = workers.seed, workers.own_shard
        options.update(rate=workers.rate, concurrency=workers.concurrency)
        if port_ranges:
            options["sport_range"] = port_ranges[0]
    try:
        if workers is not None:
            workers.start(main)  # before this process starts its engine thread: see start()
        results = probe_many(Prepared(space.iter(seed, shard[0], shard[1])),
                             engine=args.engine, via=vias, **options)
        with results:
            return _report(args, results, total, space.has_ipv6, workers, stdout, stderr)
    finally:
        if workers is not None:
            workers.terminate()  # only if we are leaving early; a no-op otherwise


def _split_ports(args: argparse.Namespace, count: int) -> list[str]:
    """Raw workers each get a slice of the source-port range: every worker's packet socket
    sees every reply, and its BPF filter drops those for the other workers' ports."""
    lo, hi = DEFAULT_PORT_LO, DEFAULT_PORT_HI
    if args.sport_range:
        try:
            lo, hi = (int(x) for x in args.sport_range.split("-"))
        except ValueError:
            raise UsageError(f"bad --sport-range {args.sport_range!r}: expected LO-HI") from None
    step = (hi - lo + 1) // count
    if step < 1:
        raise UsageError(f"--sport-range {lo}-{hi} is too small for {count} workers")
    return [f"{lo + i * step}-{hi if i == count - 1 else lo + (i + 1) * step - 1}"
            for i in range(count)]


def _report(args: argparse.Namespace, results: ResultStream, total: int, has_ipv6: bool,
            workers: Workers | None, stdout: TextIO, stderr: TextIO) -> int:
    is_worker = args.worker_fd is not None
    sink = LineSink(stdout, line_buffered=stdout.isatty())
    if args.json:
        writer: TableWriter | JsonWriter | CsvWriter = JsonWriter(sink)
    elif args.csv:
        writer = CsvWriter(sink, header=not is_worker)
    else:
        colour = not args.no_color and stdout.isatty()
        writer = TableWriter(sink, colour=colour, host_width=39 if has_ipv6 else 15,
                             header=not is_worker, via=bool(args.via))
    tally = Tally(total)
    progress = not args.quiet and not is_worker and stderr.isatty()
    next_progress = time.monotonic() + 1.0
    deadline = None
    if args.max_time is not None:
        deadline = threading.Timer(args.max_time, results.stop)
        deadline.daemon = True
        deadline.start()
    with results:
        for result in results:
            writer.write(result)
            tally.add(result)
            if progress and tally.done & 255 == 0 and time.monotonic() >= next_progress:
                stderr.write(tally.progress_line())
                stderr.flush()
                next_progress = time.monotonic() + 0.5
        stats = results.stats()
    if deadline is not None:
        deadline.cancel()
    writer.finish()
    codes = [EXIT_ALL_OPEN if tally.all_open() else EXIT_NOT_ALL_OPEN]
    if workers is not None:
        worker_codes, summaries = workers.join()
        codes += worker_codes
        for summary in summaries:
            tally.merge(summary)
            merge_stats(stats, summary["stats"])  # type: ignore[arg-type]
    summary = tally.summary(args.engine, stats)
    # Only a deadline leaves checks unstarted; the parent's tally includes its workers'.
    unprobed = max(0, total - tally.done) if args.max_time and not is_worker else 0
    if is_worker:
        with os.fdopen(args.worker_fd, "w") as pipe:
            json.dump(summary, pipe)
        return codes[0]
    if not args.quiet:
        if progress:
            stderr.write("\r\033[K")
        stderr.write((json.dumps({"summary": summary}) if args.json else format_summary(summary))
                     + "\n")
    if unprobed:
        stderr.write(f"synprobe: --max-time reached: {unprobed:,} of {total:,} checks were not "
                     "started\n")
    if lost_replies(stats):
        stderr.write(f"synprobe: warning: {lost_replies(stats):,} probes or replies were lost "
                     "locally (failed sends, kernel drops); results for them may read filtered\n")
    if any(c not in (EXIT_ALL_OPEN, EXIT_NOT_ALL_OPEN) for c in codes):
        return max(codes)  # a worker failed: its own error line is already on stderr
    return EXIT_ALL_OPEN if tally.all_open() and not unprobed else EXIT_NOT_ALL_OPEN


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["watch"]:  # the service (synprobe.watch.cli); a host named watch: -- watch
        return __import__("synprobe.watch.cli").watch.cli.main(argv[1:], stdout, stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help
        return int(exc.code or 0) and EXIT_USAGE
    try:
        if not args.targets and not args.input_list:
            raise UsageError("no targets given (see --help for examples)")
        return run(args, argv, stdout, stderr)
    except UsageError as exc:
        stderr.write(f"synprobe: error: {exc}\n")
        return EXIT_USAGE
    except (EngineUnavailable, PermissionError) as exc:
        stderr.write(f"synprobe: error: {exc}\n")
        return EXIT_RUNTIME
    except SynprobeError as exc:
        stderr.write(f"synprobe: error: {exc}\n")
        return EXIT_RUNTIME
    except BrokenPipeError:  # the reader went away (| head): not worth a message
        return EXIT_RUNTIME
    except OSError as exc:
        stderr.write(f"synprobe: error: {exc.strerror or exc}\n")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        stderr.write("synprobe: interrupted\n")
        return 130
    except Exception:  # a bug: say so, with the traceback, and never exit 0/1 ("not open")
        stderr.write("synprobe: internal error (please report it):\n"
                     + traceback.format_exc())
        return EXIT_RUNTIME

