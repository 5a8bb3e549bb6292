"""The HTTP listener of `synprobe watch --metrics HOST:PORT`: `/metrics` and `/status`.

aiohttp runs on the service's own asyncio loop: one thread, no thread per request
(prometheus-client's own server starts one per request). Other endpoints (the `/probe`
exporter) plug in through `build_app(extra_routes=...)`, and read the running service from
`app[WATCHER]`; their config comes through `watcher.reload_hooks`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from synprobe.errors import UsageError
from synprobe.watch.metrics import WatchCollector, render_targets
from synprobe.watch.watcher import Watcher

WATCHER = web.AppKey("watcher", Watcher)
REGISTRY = web.AppKey("registry", CollectorRegistry)

__all__ = ["REGISTRY", "WATCHER", "build_app", "make_registry", "parse_listen", "serve"]


def make_registry(watcher: Watcher) -> CollectorRegistry:
    """A registry of this service's own (not the process-global default one, so a library
    caller's metrics and ours never mix), with the standard process/platform/gc metrics."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(WatchCollector(watcher))
    return registry


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    watcher = request.app[WATCHER]

    def render() -> bytes:
        return render_targets(watcher).encode() + generate_latest(registry)

    # Rendering 10,000 targets takes tens of ms: on a thread, so the scheduler keeps its slots
    # (the GIL is handed back every few ms). What it iterates, it copies first.
    body = await asyncio.to_thread(render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    # 10,000 targets take tens of ms to serialise: off the loop, like /metrics.
    body = await asyncio.to_thread(lambda: json.dumps(watcher.status()).encode())
    return web.Response(body=body, content_type="application/json")


async def _index(request: web.Request) -> web.Response:
    paths = sorted({str(r.resource.canonical) for r in request.app.router.routes()
                    if r.resource is not None})
    return web.Response(text="synprobe watch\n" + "".join(f"  {p}\n" for p in paths))


def build_app(watcher: Watcher, *, registry: CollectorRegistry | None = None,
              extra_routes: Sequence[web.RouteDef] = ()) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[WATCHER] = watcher
    app[REGISTRY] = registry if registry is not None else make_registry(watcher)
    app.add_routes([web.get("/", _index), web.get("/metrics", _metrics),
                    web.get("/status", _status), *extra_routes])
    return app


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` (`:PORT` for every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"bad --metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9650")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Start serving `app` on `listen`; the caller cleans up with `await runner.cleanup()`."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=0.2)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    return runner
