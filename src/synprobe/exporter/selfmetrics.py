"""The exporter's own metrics, on the service's `/metrics` (not on `/probe`): requests by HTTP
status, probes in flight against the cap, name lookups waiting, Probers, reloads. Read from the
Exporter's counters at scrape time by a custom collector: nothing on the request path but a
dict increment."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from synprobe.exporter.service import Exporter


class ExporterCollector(Collector):
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        e = self.exporter
        requests = CounterMetricFamily(
            "synprobe_probe_requests", "/probe requests answered, by HTTP status",
            labels=["code"])
        for code, n in sorted(dict(e.requests).items()):
            requests.add_metric([str(code)], n)
        yield requests
        yield GaugeMetricFamily("synprobe_probe_inflight",
                                "/probe checks the Probers have not answered yet",
                                value=e.slots.used)
        yield GaugeMetricFamily("synprobe_probe_inflight_limit",
                                "probe_max_inflight: one more /probe gets 503",
                                value=e.slots.limit)
        yield GaugeMetricFamily("synprobe_probe_dns_pending",
                                "/probe name lookups queued or running", value=e.resolver.pending)
        yield GaugeMetricFamily("synprobe_probe_probers",
                                "Probers (engine loops) serving the configured modules",
                                value=e.prober_count())
        yield GaugeMetricFamily("synprobe_probe_modules", "Modules configured for /probe",
                                value=len(e.config.modules))
