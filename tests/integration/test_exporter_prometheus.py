"""synprobe's /probe as a drop-in for blackbox_exporter, with the real Debian packages in the lab.

- A real Prometheus scrapes /probe with the blackbox relabelling: probe_success is 1/0/0 for
  open/closed/filtered targets, IPv4 and IPv6, and not one connection is accepted.
- Side by side with the real blackbox_exporter's tcp module, same targets, same number of
  probes: accepts on the listener and TIME_WAIT on the prober for each.
- Compatibility: the metric names synprobe answers include every name the real exporter
  answers for the same targets (read from it, not typed in), with equal values where the
  meaning is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from synprobe_lab import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, Lab
from synprobe_lab.exporters import (
    BlackboxExporter,
    BlackboxStylePrometheus,
    SynprobeExporter,
    metric_names,
    metric_values,
)
from synprobe_lab.watchsvc import count_lab_states

pytestmark = pytest.mark.netns

ALLOW = ("198.18.0.0/15", "fd00::/8")


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _targets(lab: Lab) -> dict[str, int]:
    """target -> expected probe_success."""
    out = {}
    for fam in lab.families:
        out[_addr(fam.server, OPEN_PORT)] = 1
        out[_addr(fam.server, CLOSED_PORT)] = 0
        out[_addr(fam.server, FILTERED_PORT)] = 0
    return out


@pytest.fixture
def synprobe_exporter(lab: Lab, tmp_path: Path) -> Iterator[SynprobeExporter]:
    # 5 s, far past Prometheus' 900 ms scrape timeout: the X-Prometheus-Scrape-Timeout-Seconds
    # header must cut each probe to 400 ms, or the filtered targets' scrapes would time out.
    exporter = SynprobeExporter(lab, tmp_path, allow=ALLOW,
                                modules='[modules.tcp_connect]\ntimeout = "5s"\n')
    yield exporter
    assert exporter.stop() == 0


def test_prometheus_scrapes_probe_success_1_0_0_ipv4_and_ipv6(
        lab: Lab, tmp_path: Path, synprobe_exporter: SynprobeExporter) -> None:
    targets = _targets(lab)
    prom = BlackboxStylePrometheus(lab, tmp_path, {"synprobe": synprobe_exporter.port},
                                   list(targets))
    try:
        seen = lab.wait_for(
            lambda: (v := prom.values('probe_success{job="synprobe"}')).keys() == targets.keys()
            and v, timeout=30.0, interval=0.25, what="a probe_success sample per target")
        assert seen == targets
        filtered = prom.values('probe_synprobe_state{job="synprobe",state="filtered"}')
        assert {t for t, v in filtered.items() if v == 1} == {
            t for t in targets if t.endswith(f":{FILTERED_PORT}")}
        assert set(prom.values('probe_ip_protocol{job="synprobe"}').values()) == {4.0, 6.0}
        # Every scrape succeeded (none ran past Prometheus' timeout), the slowest in ~0.4 s.
        assert set(prom.values('up{job="synprobe"}').values()) == {1.0}
        durations = prom.values('probe_duration_seconds{job="synprobe"}')
        assert max(durations.values()) < 0.6, durations
    finally:
        prom.stop()
    # Every scrape above was a half-open check: nothing accepted, nothing in TIME_WAIT.
    assert lab.accept_count() == 0
    assert count_lab_states(lab, "client", "time-wait") == 0


PROBES = 40  # of each target, by each exporter


def test_side_by_side_with_blackbox_exporter(lab: Lab, tmp_path: Path) -> None:
    open_targets = [_addr(f.server, OPEN_PORT) for f in lab.families]
    ours = SynprobeExporter(lab, tmp_path, allow=ALLOW, modules=(
        '[modules.tcp_connect]\ntimeout = "1s"\n'
        '[modules.tcp_raw]\ntimeout = "1s"\nengine = "raw"\n'))
    theirs = BlackboxExporter(lab, tmp_path, timeout="1s")
    try:
        figures = {}
        for name, exporter, module in (("synprobe (shaker)", ours, "tcp_connect"),
                                       ("synprobe (raw)", ours, "tcp_raw"),
                                       ("blackbox_exporter", theirs, "tcp_connect")):
            accepts = lab.accept_count()
            for target in open_targets:
                for _ in range(PROBES):
                    status, text = exporter.probe(target, module)
                    assert status == 200 and metric_values(text)["probe_success"] == 1
            # A full connection's last ACK reaches the listener just after connect() returns.
            lab.wait_for(lambda: lab.listen_queue() == 0, what="accept queue drained")
            figures[name] = (lab.accept_count() - accepts,
                             count_lab_states(lab, "client", "time-wait"))
        probes = PROBES * len(open_targets)
        for name, (accepted, time_wait) in figures.items():
            print(f"{name}: {probes} probes -> {accepted} accepted on the listener, "
                  f"{time_wait} TIME_WAIT on the prober")
        assert figures["synprobe (shaker)"] == (0, 0)
        assert figures["synprobe (raw)"] == (0, 0)
        # The measurement can see connections: blackbox_exporter's probes are counted by it.
        assert figures["blackbox_exporter"][0] > 0

        # Compatibility, target by target, against the real exporter's own answers.
        for target, success in _targets(lab).items():
            code_b, text_b = theirs.probe(target)
            code_s, text_s = ours.probe(target)
            assert code_b == code_s == 200
            missing = metric_names(text_b) - metric_names(text_s)
            assert not missing, f"{target}: blackbox_exporter answers {missing}, synprobe not"
            b, s = metric_values(text_b), metric_values(text_s)
            for name in ("probe_success", "probe_ip_protocol", "probe_ip_addr_hash",
                         "probe_failed_due_to_regex"):
                assert b[name] == s[name], (target, name, b[name], s[name])
            assert s["probe_success"] == success
    finally:
        theirs.stop()
        assert ours.stop() == 0
