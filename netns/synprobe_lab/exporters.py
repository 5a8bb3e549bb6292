"""blackbox_exporter-style probing in the lab: the real Debian `prometheus-blackbox-exporter`,
synprobe's `/probe` (`synprobe watch --metrics` as an exporter only), and a real Prometheus
scraping either with the customary relabelling (`__address__` -> `__param_target` -> `instance`,
`__address__` = the exporter). Everything runs in the lab's client namespace, on its loopback,
and is stopped by PID (`Lab.popen`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .lab import Lab
from .nsutil import end_processes
from .watchsvc import WatchProcess, free_port, start_prometheus


def lab_get(lab: Lab, url: str, ns: str = "client", timeout: float = 10.0,
            headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """GET from inside `ns`: (status, body), HTTP errors included."""
    def get() -> tuple[int, str]:
        request = urllib.request.Request(url, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), exc.read().decode()
    return lab.run_in(ns, get)


def metric_values(text: str) -> dict[str, float]:
    """{sample as written before its value: value} from the Prometheus text format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_names(text: str) -> set[str]:
    return {name.partition("{")[0] for name in metric_values(text)}


class BlackboxExporter:
    """`prometheus-blackbox-exporter` with a `tcp_connect` TCP module, in `ns`."""

    def __init__(self, lab: Lab, workdir: Path, *, timeout: str = "1s",
                 ns: str = "client") -> None:
        self.lab, self.ns = lab, ns
        self.port = free_port(lab, ns)
        config = workdir / "blackbox.yml"
        config.write_text("modules:\n  tcp_connect:\n    prober: tcp\n"
                          f"    timeout: {timeout}\n")
        self.proc = lab.popen(ns, ["prometheus-blackbox-exporter", f"--config.file={config}",
                                   f"--web.listen-address=127.0.0.1:{self.port}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(lab, f"{self.base}/metrics", self.proc, ns)

    def probe(self, target: str, module: str = "tcp_connect") -> tuple[int, str]:
        query = urllib.parse.urlencode({"target": target, "module": module})
        return lab_get(self.lab, f"{self.base}/probe?{query}", self.ns)

    def stop(self) -> None:
        end_processes([self.proc], timeout=10.0)


class SynprobeExporter:
    """`synprobe watch --metrics 127.0.0.1:PORT --config F --probe-allow ...`, no targets."""

    def __init__(self, lab: Lab, workdir: Path, *, allow: Sequence[str],
                 modules: str = '[modules.tcp_connect]\ntimeout = "1s"\n',
                 ns: str = "client") -> None:
        self.lab, self.ns = lab, ns
        config = workdir / "synprobe.toml"
        config.write_text(modules)
        self.service = WatchProcess(lab, ["--config", str(config), "--engine", "shaker",
                                          "--probe-allow", ",".join(allow)], ns)
        self.service.wait_ready()
        self.port = self.service.port
        self.base = f"http://127.0.0.1:{self.port}"

    def probe(self, target: str, module: str = "tcp_connect",
              headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        query = urllib.parse.urlencode({"target": target, "module": module})
        return lab_get(self.lab, f"{self.base}/probe?{query}", self.ns, headers=headers)

    def stop(self) -> int:
        return self.service.stop()


class BlackboxStylePrometheus:
    """A real Prometheus scraping `/probe` of each exporter (job name -> port), blackbox style,
    every second, in the layout the blackbox_exporter README gives."""

    def __init__(self, lab: Lab, workdir: Path, exporters: Mapping[str, int],
                 targets: Sequence[str], ns: str = "client") -> None:
        self.lab, self.ns = lab, ns
        self.port = free_port(lab, ns)
        jobs = "".join(
            f"  - job_name: {job}\n"
            "    metrics_path: /probe\n"
            "    params:\n      module: [tcp_connect]\n"
            f"    static_configs:\n      - targets: {json.dumps(list(targets))}\n"
            "    relabel_configs:\n"
            "      - source_labels: [__address__]\n        target_label: __param_target\n"
            "      - source_labels: [__param_target]\n        target_label: instance\n"
            f"      - target_label: __address__\n        replacement: 127.0.0.1:{port}\n"
            for job, port in exporters.items())
        self.proc = start_prometheus(lab, ns, workdir, self.port, jobs)

    def values(self, expr: str) -> dict[str, float]:
        """{instance: value} of an instant PromQL query ({} until Prometheus answers)."""
        query = urllib.parse.urlencode({"query": expr})
        try:
            status, body = lab_get(self.lab, f"http://127.0.0.1:{self.port}/api/v1/query?{query}",
                                   self.ns)
        except OSError:  # not listening yet
            return {}
        if status != 200:
            return {}
        return {r["metric"].get("instance", ""): float(r["value"][1])
                for r in json.loads(body)["data"]["result"]}

    def stop(self) -> None:
        end_processes([self.proc], timeout=10.0)


def wait_http(lab: Lab, url: str, proc: subprocess.Popen[Any], ns: str,
              timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}")
        try:
            if lab_get(lab, url, ns, timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


