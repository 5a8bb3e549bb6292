"""Loss measurement over TCP (`count = N`), on the wire: with random loss in the lab, /probe's
sent/received/loss ratio match what the lab dropped, and no SYN ever became a connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from synprobe_lab import OPEN_PORT, Lab
from synprobe_lab.exporters import SynprobeExporter, metric_values
from synprobe_lab.watchsvc import count_lab_states

pytestmark = pytest.mark.netns

COUNT = 60
MODULES = f'[modules.loss]\ntimeout = "1.2s"\ncount = {COUNT}\n'


def test_count_mode_measures_loss(lab: Lab, tmp_path: Path) -> None:
    exporter = SynprobeExporter(lab, tmp_path, allow=["198.18.0.0/15", "fd00::/8"],
                                modules=MODULES)
    try:
        target = f"{lab.v4.server}:{OPEN_PORT}"
        status, text = exporter.probe(target, "loss")
        clean = metric_values(text)
        assert status == 200
        assert (clean["probe_synprobe_sent"], clean["probe_synprobe_received"]) == (COUNT, COUNT)
        assert clean["probe_synprobe_loss_ratio"] == 0 and clean["probe_success"] == 1

        # 20 % each way: a SYN is answered with probability 0.8 * 0.8 = 0.64.
        lab.set_loss(20)
        drops_before = lab.loss_drops()
        status, text = exporter.probe(target, "loss")
        lossy = metric_values(text)
        drops = {k: v - drops_before[k] for k, v in lab.loss_drops().items()}
        lab.set_loss(0)
        sent, received = lossy["probe_synprobe_sent"], lossy["probe_synprobe_received"]
        print(f"{COUNT} SYNs at 20 % loss each way: received {received:.0f}, loss ratio "
              f"{lossy['probe_synprobe_loss_ratio']:.2f}; the lab dropped {drops}")
        assert sent == COUNT
        # Each SYN not answered cost at least one drop the lab counted (the SYN, or its
        # SYN-ACK; no retries in count mode). The lab also drops some of our RSTs and the
        # server's retransmitted SYN-ACKs, hence at least, not exactly.
        assert 0 < COUNT - received <= drops["rx"] + drops["tx"]
        assert 0.1 < lossy["probe_synprobe_loss_ratio"] < 0.65
        assert (lossy["probe_synprobe_rtt_min_seconds"] <= lossy["probe_synprobe_rtt_avg_seconds"]
                <= lossy["probe_synprobe_rtt_max_seconds"])
    finally:
        assert exporter.stop() == 0
    assert lab.accept_count() == 0
    assert count_lab_states(lab, "client", "time-wait") == 0
