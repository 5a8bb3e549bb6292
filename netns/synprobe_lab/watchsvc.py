"""`synprobe watch` and a real Prometheus inside a lab namespace, for the watch service's tests
and benchmark. Both are started with `Lab.popen` (stopped by PID at teardown at the latest);
their HTTP endpoints live on the namespace's loopback, so they are queried from a thread
inside it."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .lab import Lab


def free_port(lab: Lab, ns: str = "client") -> int:
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    return lab.run_in(ns, pick)


def http_get(lab: Lab, url: str, ns: str = "client", timeout: float = 5.0) -> bytes:
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read())
    return lab.run_in(ns, get)


class WatchProcess:
    """`python -m synprobe watch ARGS --metrics 127.0.0.1:PORT` in the lab's client namespace.
    Event lines (stdout) and log lines (stderr) are collected on reader threads, stamped with
    the monotonic time they arrived."""

    def __init__(self, lab: Lab, args: Sequence[str], ns: str = "client") -> None:
        self.lab = lab
        self.ns = ns
        self.port = free_port(lab, ns)
        argv = [sys.executable, "-m", "synprobe", "watch", *args,
                "--metrics", f"127.0.0.1:{self.port}"]
        self.proc = lab.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
        self.events: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self.all_events: list[tuple[float, dict[str, Any]]] = []
        self.log: list[str] = []
        self._threads = [threading.Thread(target=self._read_events, daemon=True),
                         threading.Thread(target=self._read_log, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = (time.monotonic(), json.loads(line))
            self.all_events.append(item)
            self.events.put(item)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_event(self, where: Callable[[dict[str, Any]], bool],
                   timeout: float = 10.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no such event in {timeout} s; log: {self.log[-5:]}")
            try:
                stamp, record = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if where(record):
                return stamp, record

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"synprobe watch exited {self.proc.returncode}: {self.log}")
            if any("watching" in line for line in self.log):
                return
            time.sleep(0.05)
        raise TimeoutError(f"synprobe watch not ready in {timeout} s: {self.log}")

    def status(self) -> list[dict[str, Any]]:
        return list(json.loads(http_get(self.lab, f"http://127.0.0.1:{self.port}/status",
                                        self.ns)))

    def metrics(self) -> str:
        return http_get(self.lab, f"http://127.0.0.1:{self.port}/metrics", self.ns).decode()

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def start_prometheus(lab: Lab, ns: str, workdir: Path, port: int,
                     scrape_configs: str) -> subprocess.Popen[Any]:
    """The Debian `prometheus` server in `ns` on 127.0.0.1:`port`, scraping every second."""
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                      f"scrape_configs:\n{scrape_configs}")
    (workdir / "tsdb").mkdir(exist_ok=True)
    return lab.popen(ns, [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


class PrometheusProcess:
    """The Debian `prometheus` server scraping `targets` every second, in namespace `ns`."""

    def __init__(self, lab: Lab, workdir: Path, jobs: dict[str, list[str]],
                 ns: str = "client") -> None:
        self.lab = lab
        self.ns = ns
        self.port = free_port(lab, ns)
        scrape = "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: {json.dumps(targets)}\n"
            for name, targets in jobs.items())
        self.proc = start_prometheus(lab, ns, workdir, self.port, scrape)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        try:
            body = json.loads(http_get(self.lab, url, self.ns))
        except OSError:  # not listening yet
            return []
        return list(body.get("data", {}).get("result", []))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout)


def count_lab_states(lab: Lab, ns: str, state: str) -> int:
    """Like `Lab.count_states`, without loopback sockets (the HTTP scrapes and queries of the
    tests themselves, which do leave TIME_WAIT on loopback)."""
    out = lab.exec(ns, ["ss", "-Htn", "state", state]).stdout
    count = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not fields[-1].startswith(("127.", "[::1]", "[::ffff:127.")):
            count += 1
    return count
