"""Prometheus metrics, built from the Watcher's current state at scrape time.

A custom collector costs nothing on the check path (updating a labelled child per check
would); a removed target's series vanish with it. Histograms carry no per-target labels:
10,000 targets x 15 buckets would be 150,000 series.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from synprobe.watch.schedule import FixedHistogram
from synprobe.watch.state import CHECK_STATES, DOWN, UNKNOWN, UP
from synprobe.watch.watcher import Watcher

LABELS = ["host", "port", "via"]


def _histogram(name: str, doc: str, h: FixedHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


class WatchCollector(Collector):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[Metric]:
        w = self.watcher
        up = GaugeMetricFamily(
            "synprobe_target_up", "1 when the target is up, 0 when down (absent before its "
            "first decision)", labels=LABELS)
        rtt = GaugeMetricFamily(
            "synprobe_target_rtt_seconds", "Round-trip time of the target's last answered "
            "check", labels=LABELS)
        checks = CounterMetricFamily(
            "synprobe_checks", "Checks by result state", labels=[*LABELS, "state"])
        transitions = CounterMetricFamily(
            "synprobe_transitions", "Status changes by new status", labels=[*LABELS, "to"])
        counts = {UP: 0, DOWN: 0, UNKNOWN: 0}
        for e in list(w.entries.values()):
            t = e.target
            labels = [t.host, str(t.port), t.via or ""]
            st = e.state
            counts[st.status] += 1
            if st.status != UNKNOWN:
                up.add_metric(labels, 1.0 if st.status == UP else 0.0)
            if st.last is not None and st.last.rtt is not None:
                rtt.add_metric(labels, st.last.rtt)
            for state in CHECK_STATES:
                checks.add_metric([*labels, state], st.checks[state])
            for to in (UP, DOWN):
                transitions.add_metric([*labels, to], st.transitions[to])
        yield from (up, rtt, checks, transitions)
        targets = GaugeMetricFamily("synprobe_targets", "Targets watched, by status",
                                    labels=["status"])
        for status, n in counts.items():
            targets.add_metric([status], n)
        yield targets
        yield _histogram("synprobe_check_rtt_seconds", "Round-trip time of answered checks",
                         w.rtt)
        yield _histogram("synprobe_check_lateness_seconds",
                         "How late each check started versus its schedule", w.lateness)
        yield CounterMetricFamily("synprobe_checks_started", "Checks started",
                                  value=w.checks_started)
        yield CounterMetricFamily(
            "synprobe_checks_skipped", "Scheduled checks not run because the target's "
            "previous check (or the service) was still busy", value=w.checks_skipped)
        yield CounterMetricFamily(
            "synprobe_local_errors", "Checks that failed locally (no evidence about the "
            "target; they move no rise/fall counter)", value=w.local_errors)
        yield CounterMetricFamily("synprobe_resolve_failures",
                                  "Host name resolutions that failed", value=w.resolve_failures)
        reloads = CounterMetricFamily("synprobe_config_reloads", "Config reloads by outcome",
                                      labels=["result"])
        for result, n in w.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        per_counter: dict[str, CounterMetricFamily] = {}
        for engine, stats in sorted(w.engine_stats().items()):
            for name, value in sorted(stats.items()):
                fam = per_counter.get(name)
                if fam is None:
                    fam = per_counter[name] = CounterMetricFamily(
                        f"synprobe_engine_{name}", f"Engine counter {name!r}",
                        labels=["engine"])
                fam.add_metric([engine], value)
        yield from per_counter.values()
