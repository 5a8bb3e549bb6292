"""One CLI run, decided once: argv -> a frozen, typed RunConfig, validated here and only here.

Everything after this module reads the config; nothing re-parses a flag. A worker process gets
its share (`RunConfig.shares()`: its part of the rate, its source ports, the pool it takes
targets from) through the fork itself, never as a command line of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from synprobe.api import make_options
from synprobe.cli.workers import SharedSpans, SpanTargets
from synprobe.engines.base import ProbeOptions
from synprobe.errors import UsageError
from synprobe.kernel.fdlimit import cli_concurrency
from synprobe.kernel.localaddr import check_source
from synprobe.kernel.marks import parse_mark
from synprobe.model import Target
from synprobe.targets.build import build_space
from synprobe.targets.permutation import parse_shard, shard_positions
from synprobe.targets.space import DEFAULT_LIMIT, TargetSpace, with_vias
from synprobe.targets.tokens import iter_target_file, parse_ports, parse_via

RAW_ONLY = ("rst", "via_mode", "sport_range")  # argparse dests of the raw engine's own flags


@dataclass(frozen=True, slots=True)
class Output:
    format: str  # "table", "json" or "csv"
    no_color: bool
    quiet: bool
    via: bool  # a column for the real server


@dataclass(frozen=True, slots=True)
class RunConfig:
    engine: str
    options: ProbeOptions  # this process's share: concurrency, rate, source ports
    space: TargetSpace
    vias: tuple[str, ...]
    seed: int | None
    shard: tuple[int, int]  # (index, count) of the permutation this process probes
    total: int  # checks of the whole run (every worker's), for the tally
    deadline: float | None  # time.monotonic() after which no check starts (--max-time)
    max_time: float | None
    dry_run: bool
    processes: int  # 1, or the workers this run forks (the parent is worker 0)
    output: Output
    worker: int = 0  # 0: the parent (it speaks for the run); >0: a forked worker
    summary_fd: int | None = None  # a worker's: where its summary goes back to the parent
    spans: SharedSpans | None = None  # with workers: the pool they take the shard's targets from

    @property
    def is_worker(self) -> bool:
        return self.worker > 0

    def targets(self) -> Iterable[Target]:
        """This process's targets: its shard of the seeded permutation, through each via; with
        workers (`spans`), what it takes from the pool they share as it goes."""
        if self.spans is not None:
            return SpanTargets(self.space.walker(self.seed, *self.shard), self.spans)
        return with_vias(self.space.iter(self.seed, *self.shard), self.vias)

    def shares(self) -> list[RunConfig]:
        """The run spread over `processes`, each with its part of the rate and, raw, its own
        source ports. The workers take this config's shard of one permutation from a pool they
        share, as they go (`SharedSpans`, made here, before the fork; the caller closes it once
        the run is over), so a worker slowed down takes less. Checks through real servers keep
        a fixed part each: worker j takes every count-th position of the shard (shard first +
        of*j of of*count)."""
        count = self.processes
        if count == 1:
            return [self]
        # One permutation for every worker: the user's --seed, else 62 random bits.
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8)) >> 2
        first, of = self.shard
        rate = self.options.rate / count if self.options.rate else None
        own = self.options.engine_options
        parts = own.split(count) if hasattr(own, "split") else [own] * count  # may refuse
        spans = None
        if not self.vias and len(self.space) > 0:
            # Without a pipe to share them through (out of files, over the pipe quota), each
            # worker takes a fixed part.
            with contextlib.suppress(OSError):
                spans = SharedSpans(shard_positions(len(self.space), first, of))
        return [dataclasses.replace(
            self, seed=seed, spans=spans, worker=j,
            shard=self.shard if spans else (first + of * j, of * count),
            options=dataclasses.replace(self.options, rate=rate, engine_options=parts[j]))
            for j in range(count)]


def build_config(args: argparse.Namespace, auto_workers: Any) -> RunConfig:
    """Every check of the command line, once; `auto_workers(engine, checks)` sizes the run."""
    started = time.monotonic()
    if not args.targets and not args.input_list:
        raise UsageError("no targets given (see --help for examples)")
    if args.max_time is not None and not args.max_time > 0:
        raise UsageError("--max-time must be a positive number of seconds")
    own = _raw_flags(args)
    if args.freebind and args.source is None:
        raise UsageError("--freebind applies to a --source address: give --source")
    # --source as the kernel will see it: an address of this host (or --freebind), checked
    # before anything is sent or printed, so that free text never reaches a result row.
    source = None if args.source is None else check_source(
        args.source, freebind=args.freebind, name="--source", opt_in="--freebind")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.workers < 0:
        raise UsageError("--workers must be 0 (auto) or more")
    ports = parse_ports(args.ports) if args.ports else None
    excludes = [e for arg in args.exclude for e in arg.split(",") if e.strip()]
    names: list[str] = []

    def resolver(host: str, *rest: Any, **kw: Any) -> Any:
        names.append(host)
        return socket.getaddrinfo(host, *rest, **kw)

    tokens = [*args.targets, *(t for path in args.input_list for t in iter_target_file(path))]
    space = build_space(tokens, ports, excludes=excludes, exclude_files=args.exclude_file,
                        resolver=resolver)
    if source is not None and (":" in source) not in space.families:
        v6 = ":" in source
        raise UsageError(f"--source {source} is an IPv{6 if v6 else 4} address but every "
                         f"target is IPv{4 if v6 else 6}")
    vias = tuple(parse_via(v) for v in args.via)
    planned = len(space) * max(1, len(vias))
    if planned > DEFAULT_LIMIT and not args.allow_large:
        raise UsageError(f"{planned:,} checks is more than {DEFAULT_LIMIT:,}; pass --allow-large "
                         "if you mean it")
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    if shard[1] > 1 and args.seed is None:  # machines with their own random orders overlap
        raise UsageError("--shard needs --seed: give every shard the same seed")
    total = planned // shard[1]
    count = args.workers or auto_workers(args.engine, total)
    # Workers inherit the target space through the fork, but the run's targets were given
    # once: an explicit --workers keeps refusing what the workers once had to read again.
    rereadable = "-" not in args.input_list and not names
    if count > 1 and args.workers and not rereadable:
        raise UsageError("--workers: each worker reads the targets again, which cannot work "
                         "with -iL - (stdin) or host names (resolved per process); give "
                         "addresses or a file")
    processes = count if count > 1 and rereadable and not args.dry_run else 1
    # Sized per process, by the checks each may make (a one-target run needs one socket):
    # workers sharing targets out as they go (no --via) may each make most of them.
    checks = total if processes > 1 and not vias else -(-total // processes)
    concurrency = cli_concurrency(
        args.concurrency, engine=args.engine, workers=processes, checks=checks,
        rate=args.rate or None, timeout=args.timeout, attempts=max(1, args.retries + 1))
    options = make_options(args.engine, timeout=args.timeout, retries=args.retries,
                           concurrency=concurrency, rate=args.rate or None, mark=own.pop("mark"),
                           freebind=args.freebind, **own)
    # Checked above with the flag's name; make_options checks only what a library caller gives.
    options = dataclasses.replace(options, source=source)
    fmt = "json" if args.json else "csv" if args.csv else "table"
    return RunConfig(
        engine=args.engine, options=options, space=space, vias=vias, seed=args.seed,
        shard=shard, total=total, max_time=args.max_time, dry_run=args.dry_run,
        deadline=None if args.max_time is None else started + args.max_time,
        processes=processes, output=Output(fmt, args.no_color, args.quiet, bool(vias)))


def _raw_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's own flags as the library's keywords (the raw engine's, checked there)."""
    for dest in RAW_ONLY:
        if getattr(args, dest) is not None and args.engine != "raw":
            raise UsageError(f"--{dest.replace('_', '-')} applies to the raw engine only")
    if args.via_mode is not None and not args.via:
        raise UsageError("--via-mode applies to checks through a real server: give --via")
    own: dict[str, Any] = {"mark": None if args.mark is None else parse_mark(args.mark)}
    for dest in RAW_ONLY:
        if getattr(args, dest) is not None:
            own[dest] = getattr(args, dest)
    if "sport_range" in own:
        try:
            lo, hi = (int(x) for x in own["sport_range"].split("-"))
        except ValueError:
            raise UsageError(f"bad --sport-range {own['sport_range']!r}: expected LO-HI") from None
        own["sport_range"] = (lo, hi)
    return own
