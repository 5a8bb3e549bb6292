"""Stop means stop (issue 8 §2): a deadline no check starts after, signals that stop a run
without losing what completed, workers that never outlive their parent. Proved on the wire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from synprobe_lab import FILTERED_PORT, OPEN_PORT, Lab
from synprobe_lab.capture import Capture, Packet

pytestmark = pytest.mark.netns

SLACK = 0.05  # s: one engine turn (a batch of sends) may straddle the deadline
ENGINES = ["shaker", "raw"]


def synprobe(*args: str) -> list[str]:
    return [sys.executable, "-m", "synprobe", *args]


def first_syns(cap: Capture, port: int) -> dict[str, float]:
    """The time of the first SYN the client sent to each address on `port`."""
    first: dict[str, float] = {}
    for p in cap.tcp():
        if p.direction == "out" and p.flags == "S" and p.dport == port:
            first.setdefault(p.dst, p.time)
    return first


def syns_after(packets: list[Packet], when: float) -> int:
    return sum(1 for p in packets if p.proto == "tcp" and p.direction == "out"
               and p.flags == "S" and p.time > when)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("engine", ENGINES)
def test_max_time_is_a_deadline_on_the_wire(lab: Lab, engine: str, workers: int) -> None:
    # 1,024 silent targets at 200 SYNs/s: the engines pull far more than the pacer lets go
    # (the raw engine used to send every one of them, 10 s past a 0.5 s deadline).
    rate, max_time = 200, 0.6
    cmd = synprobe("--engine", engine, "--json", "--workers", str(workers), "--rate", str(rate),
                   "--max-time", str(max_time), "--timeout", "0.3", "--retries", "1",
                   "-p", str(FILTERED_PORT), "198.19.0.0/22")
    with lab.capture("client") as cap:
        started = time.time()
        done = lab.exec("client", cmd, check=False, timeout=30)
        ended = time.time()
        first = first_syns(cap, FILTERED_PORT)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1, done.stderr
    assert first, "nothing was sent"
    t0 = min(first.values())
    # The deadline runs from the start of the run, before the first SYN: none starts later.
    late = sorted(t - t0 for t in first.values() if t > t0 + max_time + SLACK)
    assert not late, f"{len(late)} checks started after the deadline, up to {late[-1]:.3f} s"
    assert len(first) <= rate * max_time + 2 * workers + 2  # the pacer's burst per process
    # Every check that started finished (its retry went out, after the deadline too), and
    # nothing else is reported; the rest is counted as not started.
    assert {r["host"] for r in rows} == set(first)
    assert all(r["state"] == "filtered" and r["attempts"] == 2 for r in rows)
    assert f"{1024 - len(rows):,} of 1,024 checks were not started" in done.stderr
    assert ended - started < max_time + 0.3 * 2 + 3.0  # not the 5 s the whole sweep takes


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed, by PID."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _start(lab: Lab, runs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    # A session of its own: a signal to its process group reaches the run and nothing else.
    proc = lab.popen("client", synprobe(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, start_new_session=True)
    runs.append(proc)
    return proc


def _wait_for_lines(proc: subprocess.Popen[str], count: int, timeout: float = 10.0) -> list[str]:
    """Read `count` whole lines of the run's stdout (so results are flowing)."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert len(lines) == count, f"only {len(lines)} lines before the run ended or stalled"
    return lines


def _rest(proc: subprocess.Popen[str], timeout: float = 15.0) -> tuple[str, str]:
    """The rest of stdout (through the reader that already buffered part of it), and stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    killer = threading.Timer(timeout, proc.kill)  # bounded: a hung run is killed, and fails
    killer.start()
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        killer.cancel()
    return out, err


def _workers_of(pid: int, count: int) -> list[int]:
    found = Lab.wait_for(lambda: len(_children(pid)) >= count and _children(pid), timeout=10.0,
                         what=f"{count} workers of {pid}")
    return list(found)


@pytest.mark.parametrize(("signum", "fmt", "group"), [
    (signal.SIGTERM, "--json", False),  # `kill PID`: the parent alone
    (signal.SIGINT, "--csv", True),  # Ctrl-C: the terminal signals every process of the group
    (signal.SIGTERM, "--csv", False),
])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_stop_signal_stops_every_process_and_keeps_every_result(
        lab: Lab, runs: list[subprocess.Popen[str]], engine: str, signum: int, fmt: str,
        group: bool) -> None:
    # 16,384 open targets at 4,000/s over 2 workers: ~4 s of work, stopped after ~0.3 s.
    with lab.capture("client") as cap:
        proc = _start(lab, runs, "--engine", engine, fmt, "--workers", "2", "--rate", "4000",
                      "-p", str(OPEN_PORT), "198.19.0.0/18")
        workers = _workers_of(proc.pid, 1)
        head = _wait_for_lines(proc, 300)
        if group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, err = _rest(proc)
        stopped = time.time()
        lab.wait_for(lambda: not any(_alive(w) for w in workers), timeout=3.0,
                     what="the workers to end with their parent")
        time.sleep(0.3)  # the capture window after the stop: a SYN sent then would show
        packets = cap.packets()
    assert proc.returncode == 128 + signum, err
    lines = "".join(head) + out
    if fmt == "--json":
        rows = [json.loads(line) for line in lines.splitlines()]
    else:
        rows = [line.split(",") for line in lines.splitlines()[1:]]
        assert lines.startswith("host,port,state") and all(len(r) == 9 for r in rows)
    summary = err.splitlines()[-2]
    assert err.count("interrupted") == 1, err  # once, though every process was stopped
    assert f"interrupted ({signal.Signals(signum).name})" in err.splitlines()[-1]
    # Every result the run completed reached stdout: the summary counts what the parent and
    # its workers tallied, and each of those is a whole row.
    assert f"synprobe: {len(rows):,} targets" in summary or f'"targets": {len(rows)}' in summary
    assert 300 <= len(rows) < 16_384
    assert len({(r["host"] if fmt == "--json" else r[0]) for r in rows}) == len(rows)
    assert syns_after(packets, stopped) == 0
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=3.0)
    assert lab.accept_count() == 0
    assert lab.count_states("client", "time-wait") == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_workers_die_with_a_killed_parent(lab: Lab, runs: list[subprocess.Popen[str]],
                                          engine: str) -> None:
    with lab.capture("client") as cap:
        proc = _start(lab, runs, "--engine", engine, "--json", "--workers", "2", "--rate",
                      "2000", "-p", str(OPEN_PORT), "198.19.0.0/18")
        workers = _workers_of(proc.pid, 1)
        _wait_for_lines(proc, 100)
        proc.kill()  # SIGKILL: no handler runs; the kernel tells the workers
        proc.wait(5)
        killed = time.time()
        lab.wait_for(lambda: not any(_alive(w) for w in workers), timeout=3.0,
                     what="the workers to end with their parent")
        ended = time.time()
        time.sleep(0.3)
        packets = cap.packets()
    # A worker may finish the turn it was in when the signal came; nothing after it ended.
    assert syns_after(packets, ended) == 0
    assert ended - killed < 3.0


def test_a_worker_killed_alone_is_reported_not_hidden(lab: Lab,
                                                      runs: list[subprocess.Popen[str]]) -> None:
    # Was: a worker's -9 from waitpid was max()ed with the parent's 0: exit 0, all open.
    proc = _start(lab, runs, "--engine", "shaker", "--json", "--workers", "2", "--rate", "4000",
                  "-p", str(OPEN_PORT), "198.19.0.0/18")
    [worker] = _workers_of(proc.pid, 1)
    head = _wait_for_lines(proc, 100)
    os.kill(worker, signal.SIGKILL)
    out, err = _rest(proc, timeout=30)
    rows = len(head) + len(out.splitlines())
    assert proc.returncode == 128 + signal.SIGKILL, err
    assert err.count("interrupted") == 1 and "interrupted (SIGKILL)" in err
    # The summary counts what it was told: a SIGKILLed worker hands back no summary, though
    # the rows it wrote before are on stdout.
    tallied = json.loads(err.splitlines()[-2])["summary"]["targets"]
    assert f"{16_384 - tallied:,} of 16,384 checks were not completed" in err
    assert tallied <= rows < 16_384
