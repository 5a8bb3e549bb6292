"""How `synprobe watch --metrics HOST:PORT` serves `/probe`: its flag, its config, its reload.

The watch service keeps the config file's `probe_allow` and `[modules.NAME]` unparsed
(`WatchConfig.passthrough`); this module parses them, together with `--probe-allow`, when the
config is loaded (so a bad module is one line and exit 2 at start, or a failed reload that keeps
the running config on SIGHUP), and re-applies them through the Watcher's reload hooks.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from synprobe.errors import SynprobeError, UsageError
from synprobe.exporter.config import ExporterConfig, build_config
from synprobe.exporter.service import Exporter, probe_routes

if TYPE_CHECKING:
    from aiohttp import web

    from synprobe.watch.config import WatchConfig
    from synprobe.watch.watcher import Watcher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe-allow", action="append", default=[], metavar="CIDR[,CIDR...]",
        help="blocks /probe?target=HOST:PORT may check (repeatable; adds to the config's "
        "probe_allow); without any, /probe answers 403")


def exporter_config(config: WatchConfig, args: argparse.Namespace) -> ExporterConfig:
    """The /probe config of a loaded watch config; a UsageError (one line) when it is bad."""
    allow = list(getattr(args, "probe_allow", []) or [])
    if allow and not config.metrics:
        raise UsageError("--probe-allow needs --metrics HOST:PORT (the listener that serves "
                         "/probe)")
    try:
        return build_config(config.passthrough, probe_allow=allow)
    except UsageError as exc:
        path = getattr(args, "config", None)
        if path is None or str(exc).startswith("--probe-allow"):
            raise
        raise UsageError(f"config {path}: {exc}") from None


def add_collector(app: web.Application, exporter: Exporter) -> None:
    """The exporter's own metrics on the service's /metrics."""
    from synprobe.exporter.selfmetrics import ExporterCollector
    from synprobe.watch.http import REGISTRY

    app[REGISTRY].register(ExporterCollector(exporter))


def attach(watcher: Watcher, args: argparse.Namespace,
           log: Callable[[str], None]) -> tuple[Exporter, list[web.RouteDef]]:
    """An Exporter for the running config, re-configured on every applied reload."""
    exporter = Exporter(exporter_config(watcher.config, args))

    async def swap(probe_config: ExporterConfig) -> None:
        try:
            await exporter.areload(probe_config)
        except (SynprobeError, RuntimeError, OSError) as exc:
            # What is left to fail is a Prober that cannot start (the raw engine without
            # CAP_NET_RAW): /probe keeps its running config, the watched targets move on.
            log(f"synprobe watch: /probe keeps its running config: {exc}")
            return
        log(f"synprobe watch: /probe reloaded: {len(probe_config.modules)} modules, "
            f"{exporter.prober_count()} Probers")

    pending: set[asyncio.Task[None]] = set()

    def on_reload(config: WatchConfig) -> None:
        # Runs on the service's loop before the watch applies `config`: a /probe config that
        # does not parse raises here, and the whole reload is refused. New Probers then start
        # on a thread (the raw engine's can take a while), so the scheduler keeps its slots.
        probe_config = exporter_config(config, args)
        task = asyncio.get_running_loop().create_task(swap(probe_config))
        pending.add(task)
        task.add_done_callback(pending.discard)

    watcher.reload_hooks.append(on_reload)
    return exporter, probe_routes(exporter)
