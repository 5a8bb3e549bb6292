"""The /probe answer's text: valid exposition format, blackbox_exporter's names first, escaping."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from synprobe.exporter.metrics import ProbeReport, render
from synprobe.exporter.probing import Outcome
from synprobe.exporter.target import address_hash
from synprobe.model import State

BLACKBOX_TCP = {"probe_dns_lookup_time_seconds", "probe_duration_seconds",
                "probe_failed_due_to_regex", "probe_ip_addr_hash", "probe_ip_protocol",
                "probe_success"}


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.mark.parametrize("state", [*State, None])
def test_every_verdict_renders_a_valid_answer(state: State | None):
    outcome = Outcome(state, "unresolved" if state is None else "x", None, 1, "shaker")
    m = parse(render(ProbeReport(outcome, 0.5, 0.001)))
    assert m.keys() >= BLACKBOX_TCP
    assert m["probe_success"] == [({}, 1.0 if state is State.OPEN else 0.0)]
    verdicts = [labels["state"] for labels, value in m["probe_synprobe_state"] if value == 1]
    assert verdicts == ([] if state is None else [state.value])
    assert "probe_synprobe_rtt_seconds" not in m  # no answer, no RTT (not a made-up 0)
    assert "probe_synprobe_sent" not in m  # only for count modules


def test_labels_are_escaped():
    outcome = Outcome(State.ERROR, 'we"ird\\reason\n', None, 1, "fake")
    m = parse(render(ProbeReport(outcome, 0.1, 0.0)))
    assert m["probe_synprobe_info"][0][0]["reason"] == 'we"ird\\reason\n'


def test_count_figures():
    outcome = Outcome(State.OPEN, "syn-ack", 0.002, 4, "raw", [0.001, 0.002, 0.006], 4, 3)
    m = parse(render(ProbeReport(outcome, 1.0, 0.0, 6, 7, counted=True)))
    assert m["probe_synprobe_sent"][0][1] == 4 and m["probe_synprobe_received"][0][1] == 3
    assert m["probe_synprobe_loss_ratio"][0][1] == 0.25
    figures = [m[f"probe_synprobe_rtt_{k}_seconds"][0][1] for k in ("min", "avg", "max")]
    assert figures == pytest.approx([0.001, 0.003, 0.006])


def test_address_hash_is_blackbox_exporters_fnv1a():
    # Values read from prometheus-blackbox-exporter 0.23's answers for these targets.
    assert address_hash((4, 0x7F000001)) == 3668918509  # 127.0.0.1
    assert address_hash((6, 1)) == 1751717746  # ::1
