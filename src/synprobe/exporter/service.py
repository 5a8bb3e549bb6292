"""The `/probe` endpoint: blackbox_exporter's interface, answered by half-open checks.

`GET /probe?target=HOST:PORT[&module=NAME]` validates the request (400 malformed, 403 outside
the allow-list, 503 at the in-flight cap), resolves a name once, checks the chosen address
through the shared Prober and answers in the Prometheus text format (see metrics.py).

Why aiohttp: every request is a coroutine on one event loop, and the check itself runs on the
Prober's engine thread, so a thousand concurrent scrapes cost a thousand small objects, not a
thousand threads (prometheus-client's built-in server starts a thread per request).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping

from aiohttp import web

from synprobe.errors import SynprobeError, UsageError
from synprobe.exporter.allow import HOW_TO_ALLOW
from synprobe.exporter.config import ExporterConfig, Module
from synprobe.exporter.metrics import CONTENT_TYPE, ProbeReport, render
from synprobe.exporter.pool import ProberFactory, ProberPool, make_prober
from synprobe.exporter.probing import Outcome, Slots, run_check, run_count
from synprobe.exporter.target import (
    Resolver,
    Unresolvable,
    address_hash,
    address_text,
    choose_address,
    parse_probe_target,
)
from synprobe.prober import Prober

MAX_QUERY = 2048  # bytes of query string; a blackbox-style request needs well under 300
TIMEOUT_OFFSET = 0.5  # blackbox_exporter's default --timeout-offset: room for the answer
NO_HEADER_TIMEOUT = 120.0  # what blackbox_exporter assumes without Prometheus' header
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


def _error(status: int, line: str) -> web.Response:
    return web.Response(status=status, text=line + "\n", content_type="text/plain")


def probe_budget(module: Module, header: str | None) -> float:
    """Seconds this probe may take: blackbox_exporter's rule. The module's timeout, cut to the
    scrape timeout minus the offset when Prometheus' header says the scrape ends sooner."""
    scrape = NO_HEADER_TIMEOUT
    if header is not None:
        try:
            scrape = float(header)
        except ValueError:
            raise UsageError(f"bad {SCRAPE_TIMEOUT_HEADER} header {header!r}: expected "
                             "seconds") from None
        if not scrape > 0 or scrape != scrape or scrape == float("inf"):
            raise UsageError(f"bad {SCRAPE_TIMEOUT_HEADER} header {header!r}: expected "
                             "positive seconds")
    limit = scrape - TIMEOUT_OFFSET
    return module.timeout if limit <= 0 else min(module.timeout, limit)


class Exporter:
    """The state behind `/probe`: the config, the Prober pool, the in-flight cap.

    Build it (probers start here, so a module that cannot run fails at start), serve
    `probe_routes(exporter)`, call `reload(config)` on SIGHUP and `close()` at the end."""

    def __init__(self, config: ExporterConfig, *,
                 prober_factory: ProberFactory = make_prober,
                 resolver: Resolver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = ProberPool(prober_factory)
        self._pool.replace(config.modules, config.max_probes)
        self.config = config
        self.slots = Slots(config.max_probes)
        self.resolver = resolver or Resolver()
        self.requests: Counter[int] = Counter()  # answers by HTTP status, for /metrics
        self._clock = clock

    def reload(self, config: ExporterConfig) -> None:
        """Apply a new config; if one of its Probers cannot start, raise and keep the old one.
        Probes in flight finish with the settings they started with. Call it from the thread
        that serves requests (or before serving); on an event loop, `areload()` keeps the
        loop free while Probers start."""
        self._apply(config, self._pool.prepare(config.modules, config.max_probes))

    async def areload(self, config: ExporterConfig) -> None:
        """`reload()` for the serving event loop: new Probers start on a worker thread."""
        fresh = await asyncio.to_thread(self._pool.prepare, config.modules, config.max_probes)
        self._apply(config, fresh)

    def _apply(self, config: ExporterConfig, fresh: Mapping[tuple[object, ...], Prober]) -> None:
        self._pool.commit(config.modules, config.max_probes, fresh)
        self.config = config
        self.slots.limit = config.max_probes

    def close(self) -> None:
        self.resolver.close()
        self._pool.close()

    def prober_count(self) -> int:
        return len(self._pool)

    async def handle_probe(self, request: web.Request) -> web.Response:
        try:
            response = await self._probe(request)
        except UsageError as exc:
            response = _error(400, str(exc))
        self.requests[response.status] += 1
        return response

    async def _probe(self, request: web.Request) -> web.Response:
        start = self._clock()
        config = self.config
        if len(request.query_string) > MAX_QUERY:
            return _error(400, f"query string too long ({len(request.query_string)} bytes; "
                               f"at most {MAX_QUERY})")
        targets = request.query.getall("target", [])
        if len(targets) > 1:
            return _error(400, "one target per request: /probe?target=HOST:PORT[&module=NAME]")
        module = self._module(request.query.getall("module", []), config)
        target = parse_probe_target(targets[0] if targets else "")
        if not config.allow:
            return _error(403, f"/probe checks no targets until allowed: {HOW_TO_ALLOW}")
        if target.literal is not None and (why := config.allow.refusal(target.literal)):
            return _error(403, f"refusing {targets[0]}: {address_text(target.literal)} {why}; "
                               f"{HOW_TO_ALLOW}")
        deadline = start + probe_budget(module, request.headers.get(SCRAPE_TIMEOUT_HEADER))
        if not self.slots.take():
            return _error(503, f"{self.slots.limit} probes already in flight; retry later or "
                               "raise probe_max_inflight")
        consumed = False
        # Held from here to the answer, before any await: a reload meanwhile cannot close it.
        prober = self._pool.acquire(module)
        try:
            report = ProbeReport(Outcome(), 0.0, 0.0, counted=bool(module.count))
            try:
                if target.literal is not None:
                    addresses = [target.literal]
                else:
                    addresses = await self.resolver.resolve_all(target.host,
                                                                deadline - self._clock())
                report.dns_lookup_time = self._clock() - start
                for address in addresses:
                    if why := config.allow.refusal(address):
                        return _error(403, f"refusing {targets[0]}: it resolves to "
                                           f"{address_text(address)}, which {why}; "
                                           f"{HOW_TO_ALLOW}")
                address = choose_address(addresses, module.preferred_ip_protocol,
                                         module.ip_protocol_fallback)
            except Unresolvable as exc:
                report.dns_lookup_time = self._clock() - start
                report.outcome.reason = "unresolved"
                report.duration = self._clock() - start
                return self._answer(report, str(exc))
            report.ip_protocol, report.ip_addr_hash = address[0], address_hash(address)
            run = run_count if module.count else run_check
            consumed = True
            try:
                report.outcome = await run(prober, module, address_text(address), target.port,
                                           deadline, self.slots)
            except (RuntimeError, SynprobeError, OSError) as exc:
                # The Prober's engine has failed (it fails every check from then on): one line.
                return _error(500, f"probe engine failed: {exc.__cause__ or exc}")
            report.duration = self._clock() - start
            return self._answer(report)
        finally:
            self._pool.release(prober)
            if not consumed:
                self.slots.release()

    @staticmethod
    def _module(names: list[str], config: ExporterConfig) -> Module:
        if len(names) > 1:
            raise UsageError("one module per request")
        if not names or not names[0]:
            module = config.default_module()
            if module is None:
                raise UsageError(f"name a module: &module=NAME (configured: "
                                 f"{', '.join(sorted(config.modules))})")
            return module
        module = config.modules.get(names[0])
        if module is None:
            raise UsageError(f"unknown module {names[0][:64]!r} (configured: "
                             f"{', '.join(sorted(config.modules))})")
        return module

    @staticmethod
    def _answer(report: ProbeReport, note: str | None = None) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE}
        if note:
            headers["X-Synprobe-Note"] = note[:200]
        return web.Response(body=render(report).encode(), headers=headers)


def probe_routes(exporter: Exporter) -> list[web.RouteDef]:
    """The routes to add to an aiohttp application (the watch service's `--metrics` listener)."""
    return [web.get("/probe", exporter.handle_probe)]
