"""/probe through each real server of a DSR VIP (modules with `engine = "raw"` and `via`): the
module names the real server, the VIP is the target; rs1 listens, rs2 does not."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from synprobe_lab.dsr import DsrLab
from synprobe_lab.exporters import SynprobeExporter, metric_values
from synprobe_lab.nsutil import exec_argv

pytestmark = pytest.mark.netns


class DsrAdapter:
    """What the exporter helper needs of a lab (popen, run_in), in the DSR lab's prober."""

    def __init__(self, lab: DsrLab) -> None:
        self.lab = lab
        self.procs: list[subprocess.Popen[Any]] = []

    def popen(self, ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(exec_argv(self.lab.ns(ns), argv), **kwargs)
        self.procs.append(proc)
        return proc

    def run_in(self, ns: str, fn: Any, *args: Any) -> Any:
        return self.lab.run_in(ns, fn, *args)


def test_probe_a_vip_through_each_real_server(dsr_lab: DsrLab, tmp_path: Path) -> None:
    lab = dsr_lab
    modules = "".join(
        f'[modules.{rs}]\nengine = "raw"\nvia = "{lab.rs_ip(rs)}"\n'
        f'[modules.{rs}_v6]\nengine = "raw"\nvia = "{lab.rs_ip(rs, v6=True)}"\n'
        for rs in ("rs1", "rs2"))
    adapter = DsrAdapter(lab)
    exporter = SynprobeExporter(adapter, tmp_path, allow=["198.18.2.100", "fd00:d5:2::100"],
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
        for proc in adapter.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0
    assert lab.accept_count("rs1") == 0
