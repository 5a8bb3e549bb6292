"""`/probe` on `synprobe watch --metrics`: an exporter-only service, its config from the TOML file
and --probe-allow, SIGHUP reloading modules and allow-list, a broken reload keeping the old one.

Loopback only (shaker engine, no privileges)."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from synprobe.watch.cli import main

WAIT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


class Service:
    def __init__(self, args: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synprobe", "watch", "--metrics", f"127.0.0.1:{self.port}",
             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_log("watching")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_log(self, words: str, after: int = 0) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in self.log[after:]:
                if words in line:
                    return line
            assert self.proc.poll() is None, f"service exited: {self.log}"
            time.sleep(0.02)
        raise AssertionError(f"no log line with {words!r}: {self.log}")

    def probe(self, query: str) -> tuple[int, str]:
        return get(f"{self.base}/probe?{query}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(WAIT)
        self._reader.join(WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def test_exporter_only_service_with_reloads(tmp_path: Path, listener: int) -> None:
    config = tmp_path / "watch.toml"
    config.write_text('[modules.tcp_connect]\ntimeout = "1s"\n')
    svc = Service(["--config", str(config), "--probe-allow", "127.0.0.0/8"])
    try:
        code, text = svc.probe(f"target=127.0.0.1:{listener}")
        assert code == 200 and "\nprobe_success 1\n" in text
        code, text = svc.probe(f"target=127.0.0.1:{listener}&module=loss")
        assert code == 400 and "unknown module 'loss'" in text

        # SIGHUP: a new module and a wider allow-list from the file (added to --probe-allow).
        config.write_text('probe_allow = ["::1"]\n[modules.tcp_connect]\n'
                          '[modules.loss]\ntimeout = 0.2\ncount = 2\n')
        mark = len(svc.log)
        svc.proc.send_signal(signal.SIGHUP)
        svc.wait_log("/probe reloaded: 2 modules", after=mark)
        code, text = svc.probe(f"target=127.0.0.1:{listener}&module=loss")
        assert code == 200 and "\nprobe_synprobe_sent 2\n" in text
        code, text = svc.probe(f"target=[::1]:{listener}")
        assert code == 200  # allowed now (closed: the listener is IPv4 only)

        # A broken module: the reload fails with one line, the running config stays.
        config.write_text('[modules.loss]\ntimeout = "soon"\n')
        mark = len(svc.log)
        svc.proc.send_signal(signal.SIGHUP)
        line = svc.wait_log("reload failed", after=mark)
        assert "modules.loss.timeout" in line
        code, text = svc.probe(f"target=127.0.0.1:{listener}&module=loss")
        assert code == 200 and "\nprobe_synprobe_sent 2\n" in text
        # /metrics and /status still serve beside /probe; /metrics counts /probe's answers.
        code, text = get(f"{svc.base}/metrics")
        assert code == 200
        assert 'synprobe_probe_requests_total{code="200"} 4.0' in text
        assert 'synprobe_probe_requests_total{code="400"} 1.0' in text
        assert "synprobe_probe_inflight_limit 1000.0" in text
        assert "synprobe_probe_modules 2.0" in text
        assert get(f"{svc.base}/status") == (200, "[]")
    finally:
        assert svc.stop() == 0


@pytest.mark.parametrize(("argv", "words"), [
    (["--probe-allow", "127.0.0.0/8", "127.0.0.1:1"], "--probe-allow needs --metrics"),
    (["--metrics", "127.0.0.1:1", "--probe-allow", "nonsense"], "--probe-allow 'nonsense'"),
])
def test_probe_config_errors_exit_2_with_one_line(argv: list[str], words: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, out, err) == 2
    assert words in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_bad_module_in_the_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "watch.toml"
    config.write_text('[modules.web]\nprober = "http"\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["--metrics", "127.0.0.1:1", "--config", str(config)], out, err) == 2
    assert f"config {config}: modules.web.prober" in err.getvalue()
