"""/probe through each real server of a DSR VIP (modules with `engine = "raw"` and `via`): the
module names the real server, the VIP is the target; rs1 listens, rs2 does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from synprobe_lab.dsr import DsrLab
from synprobe_lab.exporters import SynprobeExporter, metric_values

pytestmark = pytest.mark.netns


def test_probe_a_vip_through_each_real_server(dsr_lab: DsrLab, tmp_path: Path) -> None:
    lab = dsr_lab
    modules = "".join(
        f'[modules.{rs}]\nengine = "raw"\nvia = "{lab.rs_ip(rs)}"\n'
        f'[modules.{rs}_v6]\nengine = "raw"\nvia = "{lab.rs_ip(rs, v6=True)}"\n'
        for rs in ("rs1", "rs2"))
    exporter = SynprobeExporter(lab, tmp_path, allow=["198.18.2.100", "fd00:d5:2::100"],
                                modules=modules, ns="prober")  # type: ignore[arg-type]
    try:
        seen = {}
        for module in ("rs1", "rs2", "rs1_v6", "rs2_v6"):
            vip = lab.vip if not module.endswith("_v6") else f"[{lab.vip6}]"
            status, text = exporter.probe(f"{vip}:80", module)
            m = metric_values(text)
            assert status == 200
            seen[module] = (m["probe_success"], [k for k, v in m.items()
                                                 if k.startswith("probe_synprobe_state{") and v])
        assert seen == {
            "rs1": (1, ['probe_synprobe_state{state="open"}']),
            "rs2": (0, ['probe_synprobe_state{state="closed"}']),
            "rs1_v6": (1, ['probe_synprobe_state{state="open"}']),
            "rs2_v6": (0, ['probe_synprobe_state{state="closed"}']),
        }
    finally:
        code = exporter.stop()
    assert code == 0
    assert lab.accept_count("rs1") == 0
