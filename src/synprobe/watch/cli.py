"""`synprobe watch`: the long-running service's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from aiohttp import web

from synprobe.errors import EngineUnavailable, SynprobeError, UsageError
from synprobe.exporter import hookup as probe_hookup
from synprobe.registry import engines
from synprobe.targets.tokens import iter_target_file, parse_ports
from synprobe.watch.config import ConfigError, WatchConfig, load_config
from synprobe.watch.events import ChangeRunner, EventWriter
from synprobe.watch.http import build_app, serve
from synprobe.watch.live import LiveView
from synprobe.watch.watcher import Watcher

EXIT_OK, EXIT_USAGE, EXIT_RUNTIME = 0, 2, 3

# HTTP extensions of the service (the /probe exporter plugs in here): each is called once with
# the Watcher and the parsed command line, before the first config is applied, and returns its
# routes; it may append to `watcher.reload_hooks` to validate and take its part of each config
# (the first one included). Its flags go into build_parser().
Extension = Callable[[Watcher, argparse.Namespace], Sequence[web.RouteDef]]
EXTENSIONS: tuple[Extension, ...] = ()

EPILOG = """\
examples:
  synprobe watch --metrics 127.0.0.1:9650 198.18.0.2:80 198.18.0.3:80
  synprobe watch --interval 2 --rise 2 --fall 3 --on-change /usr/local/bin/notify -iL backends
  synprobe watch --config /etc/synprobe/watch.toml      (SIGHUP re-reads it)
  synprobe watch --metrics 127.0.0.1:9650               an exporter only (no watched targets)
  synprobe watch --metrics 127.0.0.1:9650 --probe-allow 198.18.0.0/15
                  also /probe?target=HOST:PORT, blackbox_exporter style (docs/exporter.md)

health: a target starts "unknown"; its first check decides up or down. Then `fall` failed checks
  in a row take an up target down and `rise` answered ones bring a down target up. Local failures
  (EMFILE, EADDRNOTAVAIL) are counted and shown, and move neither counter.
output: one JSON line per change on stdout (or --events FILE); on a terminal without --events,
  a live view. /metrics (Prometheus) and /status (JSON) on --metrics HOST:PORT.
signals: SIGHUP reloads --config (a broken file keeps the running config); SIGTERM/SIGINT stop.
  A host literally named "watch" in one-shot mode: synprobe -p 80 -- watch
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="synprobe watch",
        description="Check targets continuously (SYN -> SYN-ACK -> RST, never a connection), "
        "keep each one's up/down state with rise/fall, report changes as events and serve "
        "Prometheus metrics.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="address, HOST:PORT, [V6]:PORT, CIDR, range, or host name "
                   "(re-resolved while running)")
    p.add_argument("--config", metavar="FILE", help="TOML config (see docs/watch.md)")
    p.add_argument("-p", "--ports", help="ports for targets without one: 80,443")
    p.add_argument("-iL", dest="input_list", metavar="FILE", action="append", default=[],
                   help="read targets from FILE, whitespace-separated, # comments")
    p.add_argument("--engine", choices=engines(), default=None,
                   help="how to check (default raw: no delayed-ACK window; needs CAP_NET_RAW)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between checks of a "
                   "target (default 1)")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds per attempt (default 0.5)")
    p.add_argument("--retries", type=int, metavar="N", help="extra attempts per check (default 1)")
    p.add_argument("--rise", type=int, metavar="N", help="answered checks in a row to go up "
                   "(default 2)")
    p.add_argument("--fall", type=int, metavar="N", help="failed checks in a row to go down "
                   "(default 3)")
    p.add_argument("--source", metavar="IP", help="local address to send from")
    p.add_argument("--via", action="append", metavar="IP", help="check through this real "
                   "server (DSR; repeatable; raw engine)")
    p.add_argument("--mark", type=int, metavar="N", help="SO_MARK for the probes")
    p.add_argument("--exclude", action="append", default=[], metavar="LIST",
                   help="addresses, CIDRs or ranges never to check (comma-separated)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics and /status here")
    probe_hookup.add_arguments(p)
    p.add_argument("--events", metavar="FILE", help="append event lines to FILE, not stdout")
    p.add_argument("--on-change", metavar="CMD", help="run CMD (via /bin/sh) per change, with "
                   "SYNPROBE_HOST, _PORT, _VIA, _FROM, _TO, _STATE, _REASON, _RTT_MS, _TIME")
    p.add_argument("--on-change-timeout", type=float, default=10.0, metavar="S",
                   help="kill a --on-change command after S seconds (default 10)")
    p.add_argument("--resolve-interval", type=float, metavar="S",
                   help="seconds between re-resolving host names (default 30)")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="checks in flight at once per engine (default 16384)")
    p.add_argument("--allow-large", action="store_true", help="allow more than 65,536 targets")
    p.add_argument("--json", action="store_true", help="JSON event lines even on a terminal")
    p.add_argument("--check-config", action="store_true",
                   help="load the config and targets, print how many, and exit")
    return p


def tune_gc() -> None:
    """Keep the cyclic GC from stalling the schedule. With 10,000 targets at 1 s, every check's
    Future and result survive a young collection or two while in flight, get promoted, and
    trigger a full collection every ~0.6 s that scans every object the service holds: each
    took 20-80 ms with the GIL held, and 8 % of checks started more than 20 ms late. A larger
    young generation lets in-flight objects die young, and the long-lived state (targets,
    schedule) is frozen out of the scans after each config load (gc.freeze()): measured, one
    full collection in 20 s instead of 35, and 99.97 % of checks within 20 ms. The service
    makes no reference cycles on its check path, so nothing waits on the GC to be freed."""
    gc.set_threshold(20_000, 10, 10)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("interval", "timeout", "retries", "rise", "fall", "engine", "source", "mark",
                "metrics", "events", "on_change", "resolve_interval", "concurrency"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    if args.via:
        out["via"] = list(args.via)
    if args.exclude:
        out["exclude"] = [e for arg in args.exclude for e in arg.split(",") if e.strip()]
    return out


def config_loader(args: argparse.Namespace) -> Callable[[], WatchConfig]:
    """Reads the config (and -iL files) again each call: what SIGHUP runs."""
    ports = parse_ports(args.ports) if args.ports else None
    overrides = _overrides(args)

    def load() -> WatchConfig:
        tokens = list(args.targets)
        for path in args.input_list:
            try:
                tokens += list(iter_target_file(path))
            except UsageError as exc:
                raise ConfigError(str(exc)) from None
        config = load_config(args.config, overrides=overrides, cli_tokens=tokens,
                             cli_ports=ports, allow_large=args.allow_large)
        probe_hookup.exporter_config(config, args)  # a bad /probe config fails the load
        return config
    return load


async def serve_watch(args: argparse.Namespace, load: Callable[[], WatchConfig],
                      stdout: TextIO, stderr: TextIO) -> int:
    config = load()
    if not config.targets and not config.metrics:
        raise UsageError("nothing to watch: give targets, a --config with groups, or "
                         "--metrics HOST:PORT for an exporter only (see --help)")
    loop = asyncio.get_running_loop()

    def log(line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a terminal that hung up
            stderr.write(line + "\n")
            stderr.flush()

    writer = EventWriter.open(config.events) if config.events else EventWriter(stdout)
    # On a terminal (and events not sent elsewhere): the live view, which shows them too.
    live_wanted = not config.events and not args.json and stdout.isatty()
    sinks = [] if live_wanted else [writer.write]
    runner_cmd = ChangeRunner(config.on_change, timeout=args.on_change_timeout, log=log) \
        if config.on_change else None
    if runner_cmd is not None:
        sinks.append(runner_cmd.submit)
    watcher = Watcher(config, event_sinks=sinks, log=log)
    stopping = asyncio.Event()
    live = LiveView(watcher, stdout, on_lost=stopping.set) if live_wanted else None
    if live is not None:
        watcher.event_sinks.append(live.add_event)
    live_task = None
    reloading: list[asyncio.Future[None]] = []

    async def reload() -> None:
        try:
            new = await asyncio.to_thread(load)
            gc.unfreeze()  # removed targets' objects become collectable again
            try:
                await watcher.apply(new)
            finally:
                gc.collect()
                gc.freeze()
        except Exception as exc:  # whatever it was, the running config stays
            watcher.reloads["failed"] += 1
            log(f"synprobe watch: reload failed, keeping the running config: {exc}")
            return
        log(f"synprobe watch: reloaded: {len(new.targets)} targets")
        for key in ("metrics", "events", "on_change"):
            if getattr(new, key) != getattr(config, key):
                log(f"synprobe watch: {key} changed in the config: it takes a restart")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP,
                            lambda: reloading.append(asyncio.ensure_future(reload())))
    http = None
    routes = [route for extension in EXTENSIONS for route in extension(watcher, args)]
    exporter = None
    try:
        await watcher.open()
        gc.freeze()  # see tune_gc()
        if config.metrics:
            # /probe (synprobe.exporter): its routes, its own metrics on /metrics, closed below.
            exporter, probe_routes = probe_hookup.attach(watcher, args, log)
            app = build_app(watcher, extra_routes=[*routes, *probe_routes])
            probe_hookup.add_collector(app, exporter)
            http = await serve(app, config.metrics)
        log(f"synprobe watch: watching {len(config.targets)} targets"
            + (f", metrics on http://{config.metrics}/metrics" if config.metrics else ""))
        if live is not None:
            live_task = asyncio.ensure_future(live.run())
        await watcher.run(stopping)
    finally:
        if live_task is not None:
            live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live_task
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for fut in reloading:
            fut.cancel()
        if http is not None:
            await http.cleanup()
        await watcher.aclose()  # done by run(); not when start-up failed before it
        if exporter is not None:
            await asyncio.to_thread(exporter.close)
        if runner_cmd is not None:
            await runner_cmd.drain(0.1)
            runner_cmd.close()
        writer.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = build_parser().parse_args(list(sys.argv[2:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        load = config_loader(args)
        if args.check_config:
            config = load()
            stdout.write(f"config ok: {len(config.targets)} targets\n")
            return EXIT_OK
        before = gc.get_threshold()
        tune_gc()
        try:
            return asyncio.run(serve_watch(args, load, stdout, stderr))
        finally:  # main() may run inside another program (tests do): leave its GC as it was
            gc.unfreeze()
            gc.set_threshold(*before)
    except UsageError as exc:
        stderr.write(f"synprobe watch: error: {exc}\n")
        return EXIT_USAGE
    except (EngineUnavailable, PermissionError, SynprobeError) as exc:
        stderr.write(f"synprobe watch: error: {exc}\n")
        return EXIT_RUNTIME
    except OSError as exc:
        stderr.write(f"synprobe watch: error: {exc.strerror or exc}\n")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_OK
