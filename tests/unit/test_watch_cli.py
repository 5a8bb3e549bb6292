"""`synprobe watch` as a process: dispatch, one-line errors, SIGHUP reloads, SIGTERM stops.

Checks go to loopback only (shaker engine, no privileges): a listening socket that is never
accepted from is an open port, a port nobody listens on is closed."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from synprobe.cli import main as oneshot_main
from synprobe.watch.cli import main

WAIT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(argv, out, err), out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "words"), [
    ([], "nothing to watch"),
    (["--config", "/nonexistent/watch.toml"], "cannot read config"),
    (["--interval", "0", "127.0.0.1:1"], "must be above 0"),
    (["--metrics", "nonsense", "127.0.0.1:1"], "bad --metrics"),
    (["127.0.0.1"], "no port"),
])
def test_usage_errors_are_one_line_exit_2(argv: list[str], words: str) -> None:
    code, _out, err = run_main(argv)
    assert code == 2
    assert words in err and err.count("\n") == 1 and err.startswith("synprobe watch: error:")


def test_check_config(tmp_path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[groups.a]\ntargets = ["198.18.0.2:80", "198.18.0.3:80"]\n')
    assert run_main(["--config", str(cfg), "--check-config"])[:2] == (0, "config ok: 2 targets\n")


def test_dispatch_from_the_main_command_and_a_host_named_watch() -> None:
    err = io.StringIO()
    assert oneshot_main(["watch"], io.StringIO(), err) == 2
    assert "nothing to watch" in err.getvalue()
    # After "--" (or after any option), "watch" is a target of the one-shot command.
    err = io.StringIO()
    assert oneshot_main(["-p", "80", "--", "watch"], io.StringIO(), err) == 2
    assert "cannot resolve 'watch'" in err.getvalue()


class Service:
    """A `synprobe watch` subprocess; its stdout/stderr lines are read on threads."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "synprobe", "watch", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.err: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.readers = [threading.Thread(target=lambda s=stream, q=q: [q.put(x) for x in s],
                                         daemon=True)
                        for stream, q in ((self.proc.stdout, self.out),
                                          (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    def line(self, q: queue.SimpleQueue[str], contains: str) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            text = q.get(timeout=max(0.01, deadline - time.monotonic()))
            if contains in text:
                return text

    def event(self, **match: object) -> dict:
        deadline = time.monotonic() + WAIT
        while True:
            record = json.loads(self.out.get(timeout=max(0.01, deadline - time.monotonic())))
            if all(record.get(k) == v for k, v in match.items()):
                return record

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self.readers:
            t.join(WAIT)  # at EOF once the process is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def service() -> Iterator[type[Service]]:
    made: list[Service] = []

    class Tracked(Service):
        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            made.append(self)

    yield Tracked
    for s in made:
        s.stop()


def status(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r)


def test_sighup_reload_added_removed_and_broken_config(tmp_path, service, listener) -> None:
    cfg = tmp_path / "w.toml"
    closed = free_port()
    cfg.write_text('[groups.a]\nengine = "shaker"\ninterval = 0.1\n'
                   f'targets = ["127.0.0.1:{listener}", "127.0.0.1:{closed}"]\n')
    mport = free_port()
    svc = service(["--config", str(cfg), "--metrics", f"127.0.0.1:{mport}"])
    svc.event(port=listener, to="up")
    svc.event(port=closed, to="down")
    svc.line(svc.err, "watching 2 targets")
    before = {s["port"]: s for s in status(mport)}

    added = free_port()
    cfg.write_text('[groups.a]\nengine = "shaker"\ninterval = 0.1\n'
                   f'targets = ["127.0.0.1:{listener}", "127.0.0.1:{added}"]\n')
    svc.proc.send_signal(signal.SIGHUP)
    svc.line(svc.err, "reloaded: 2 targets")
    svc.event(port=added, **{"from": "unknown", "to": "down"})
    after = {s["port"]: s for s in status(mport)}
    assert set(after) == {listener, added}
    assert after[listener]["since"] == before[listener]["since"]  # its state was kept

    cfg.write_text("[groups.a\n")
    svc.proc.send_signal(signal.SIGHUP)
    line = svc.line(svc.err, "reload failed")
    assert "keeping the running config" in line and line.count("\n") == 1
    assert {s["port"] for s in status(mport)} == {listener, added}

    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(WAIT) == 0
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_0_within_a_second(service, sig: int) -> None:
    targets = [f"127.0.0.1:{free_port()}" for _ in range(50)]
    svc = service(["--engine", "shaker", "--interval", "0.2", *targets])
    svc.event(to="down")
    t0 = time.monotonic()
    os.kill(svc.proc.pid, sig)
    assert svc.proc.wait(WAIT) == 0
    assert time.monotonic() - t0 < 1.0


def test_on_change_gets_the_event_in_its_environment(tmp_path, service, listener) -> None:
    out = tmp_path / "changes"
    cmd = f'env | grep ^SYNPROBE_ | sort >> {out}; echo --- >> {out}'
    svc = service(["--engine", "shaker", "--interval", "0.1", "--on-change", cmd,
                   "--events", str(tmp_path / "events.jsonl"), f"127.0.0.1:{listener}"])
    deadline = time.monotonic() + WAIT
    while not (out.exists() and "---" in out.read_text()):
        assert time.monotonic() < deadline and svc.proc.poll() is None
        time.sleep(0.02)
    env = dict(line.split("=", 1) for line in out.read_text().split("---")[0].split())
    assert env["SYNPROBE_HOST"] == "127.0.0.1" and env["SYNPROBE_PORT"] == str(listener)
    assert (env["SYNPROBE_FROM"], env["SYNPROBE_TO"], env["SYNPROBE_STATE"]) == (
        "unknown", "up", "open")
    assert env["SYNPROBE_REASON"] == "syn-ack" and float(env["SYNPROBE_RTT_MS"]) > 0
    assert env["SYNPROBE_TIME"].endswith("Z")
    record = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])
    assert record["to"] == "up"
    assert svc.out.empty()  # events went to the file
