"""What the shaker Prober's helper process costs, and what it buys, against the in-process loop.

    python3 bench/helper_cost.py              # ~40 s; loopback only, no root needed
    python3 bench/helper_cost.py --quick      # fewer checks, no CPU-hog rows (~15 s)
    sudo python3 bench/helper_cost.py --json-out helper.json

Every figure is measured in the same run for both forms of a long-lived `Prober(engine="shaker")`:
`helper` (the loop in a helper process, what synprobe ships) and `in-process` (the loop on a
thread of the caller, as before issue 8; registered here as a custom engine). Ratios travel
between machines; absolute numbers do not.

Rows:
- start-up: Prober construction to the first result (interpreter start + import for the helper);
- latency: one check at a time, `probe()`, median and p99 (a round trip through the helper);
- throughput: `probe_many()` over N distinct loopback targets, window 1,000;
- GIL: 4 checker threads while a fifth holds the GIL for ~0.5 s at a time, 3 times: full
  connections (the listener's accept count) and late handshakes counted by the engine;
- CPU hogs (unless --quick): 4 busy processes per core running beside the checks, the helper at
  nice 0 and reniced to -10 (root only): p99 and max check time as the caller sees it, the
  largest rtt the engine measured (SYN to the loop handling its SYN-ACK: on loopback, how late
  the loop ran), late handshakes. This decides whether the helper should raise its own
  priority (docs/shaker-window.md);
- CLI engine cost of the late-handshake check: the shaker engine alone over N targets with the
  TCP_INFO read skipped on the fast path (as shipped) and forced on every open check.

Probe traffic goes only to a listener on this host's loopback (127.0.0.0/8). Every load loop
is bounded in count; hog processes are ended by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import synprobe
from synprobe.engines import shaker
from synprobe.engines.base import ProbeOptions
from synprobe.model import Target
from synprobe.registry import register_engine
from synprobe.sources import IterSource

IN_PROCESS = "shaker-inprocess"
register_engine(IN_PROCESS, shaker.ShakerEngine)
FORMS = {"helper": "shaker", "in-process": IN_PROCESS}
HOG = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n" \
      "while time.monotonic() < end: pass\n"


class Listener:
    """A loopback listener on every 127/8 address; counts the connections it could accept."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0), backlog=65535)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def targets(self, n: int) -> list[Target]:
        return [Target(f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}", self.port)
                for i in range(1, n + 1)]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def startup(engine: str, listener: Listener, repeats: int) -> float:
    """Median seconds from Prober() to its first result."""
    def once() -> None:
        with synprobe.Prober(engine=engine) as prober:
            prober.probe(("127.0.0.1", listener.port))
    return statistics.median(timed(once) for _ in range(repeats))


def latency(engine: str, listener: Listener, checks: int) -> tuple[float, float]:
    """(median, p99) seconds of one probe() at a time."""
    with synprobe.Prober(engine=engine) as prober:
        prober.probe(("127.0.0.1", listener.port))  # warm
        times = sorted(timed(lambda: prober.probe(("127.0.0.1", listener.port)))
                       for _ in range(checks))
    return statistics.median(times), times[int(len(times) * 0.99)]


def throughput(engine: str, listener: Listener, checks: int) -> float:
    targets = listener.targets(checks)
    with synprobe.Prober(engine=engine) as prober:
        took = timed(lambda: sum(1 for _ in prober.probe_many(targets, window=1000)))
    return checks / took


def calibrated_hold(seconds: float) -> int:
    n = 16
    while timed(lambda n=n: re.match(r"(a+)+$", "a" * n + "!")) < seconds / 8:
        n += 1
    return n + 3  # each +1 doubles


def checks_beside(engine: str, listener: Listener, busy: Callable[[], None],
                  max_checks: int, renice: int | None = None) -> dict[str, object]:
    """4 checker threads run while `busy()` runs on this thread; bounded by max_checks each."""
    stop = threading.Event()
    spans: list[float] = []
    rtts: list[float] = []  # measured by the engine: its own loop's lateness, on loopback
    targets = listener.targets(4096)
    listener.drain()
    with synprobe.Prober(engine=engine, timeout=0.9, retries=0) as prober:
        if renice is not None:
            os.setpriority(os.PRIO_PROCESS, prober._engine.pid, renice)  # type: ignore[attr-defined]

        def checker(index: int) -> None:
            for k in range(max_checks):
                if stop.is_set():
                    return
                target = targets[(index * 1024 + k) % 4096]
                start = time.perf_counter()
                result = prober.probe(target)
                spans.append(time.perf_counter() - start)
                if result.rtt is not None:
                    rtts.append(result.rtt)

        threads = [threading.Thread(target=checker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            busy()
        finally:
            stop.set()
            for t in threads:
                t.join()
        stats = prober.stats()
    spans.sort()
    return {"checks": len(spans), "accepts": listener.drain(),
            "late_handshakes": stats.get("late_handshakes", 0),
            "p99_ms": round(spans[int(len(spans) * 0.99)] * 1000, 2) if spans else None,
            "max_ms": round(spans[-1] * 1000, 2) if spans else None,
            "engine_max_rtt_ms": round(max(rtts) * 1000, 2) if rtts else None}


def gil_holds(n: int, holds: int) -> Callable[[], None]:
    def busy() -> None:
        for _ in range(holds):
            time.sleep(0.05)  # let the checkers put checks in flight
            re.match(r"(a+)+$", "a" * n + "!")
    return busy


def cpu_hogs(count: int, seconds: float) -> Callable[[], None]:
    def busy() -> None:
        hogs = [subprocess.Popen([sys.executable, "-c", HOG, str(seconds)]) for _ in range(count)]
        for hog in hogs:
            try:
                hog.wait(seconds + 10)
            except subprocess.TimeoutExpired:
                hog.kill()  # by PID, ours
                hog.wait()
    return busy


def engine_cost(listener: Listener, checks: int, floor: float) -> float:
    """Checks per second of the bare shaker engine (the CLI's path) with LATE_ACK_FLOOR."""
    saved = shaker.LATE_ACK_FLOOR
    shaker.LATE_ACK_FLOOR = floor
    try:
        engine = shaker.ShakerEngine(ProbeOptions(timeout=0.5, retries=0))
        targets = listener.targets(checks)
        took = timed(lambda: sum(len(b) for b in engine.run(IterSource(iter(targets)))))
    finally:
        shaker.LATE_ACK_FLOOR = saved
    return checks / took


def rows(quick: bool) -> Iterator[tuple[str, str, object]]:
    listener = Listener()
    checks = 4000 if quick else 20000
    for form, engine in FORMS.items():
        yield "start-up to first result (ms)", form, round(startup(engine, listener, 3) * 1000, 1)
    for form, engine in FORMS.items():
        med, p99 = latency(engine, listener, 500 if quick else 2000)
        yield "probe() latency median (us)", form, round(med * 1e6, 1)
        yield "probe() latency p99 (us)", form, round(p99 * 1e6, 1)
    for form, engine in FORMS.items():
        yield "probe_many() checks/s", form, round(throughput(engine, listener, checks))
    n = calibrated_hold(0.5)
    for form, engine in FORMS.items():
        yield "GIL held 3 x ~0.5 s", form, checks_beside(engine, listener, gil_holds(n, 3), 5000)
    if not quick:
        hogs = 4 * (os.cpu_count() or 1)
        yield f"{hogs} CPU hogs, 3 s", "helper nice 0", checks_beside(
            "shaker", listener, cpu_hogs(hogs, 3.0), 20000)
        if os.geteuid() == 0:
            yield f"{hogs} CPU hogs, 3 s", "helper nice -10", checks_beside(
                "shaker", listener, cpu_hogs(hogs, 3.0), 20000, renice=-10)
    # Interleaved rounds, median of each: the difference is small beside this host's drift.
    floors = {"skipped < 2 ms (shipped)": shaker.LATE_ACK_FLOOR, "on every open check": 0.0}
    rates: dict[str, list[float]] = {label: [] for label in floors}
    for round_ in range(6):  # each order three times: the later run of a pair ran slower
        order = list(floors.items())
        for label, floor in order[::-1] if round_ % 2 else order:
            rates[label].append(engine_cost(listener, checks, floor))
    for label, measured in rates.items():
        yield "shaker engine checks/s, TCP_INFO", label, round(statistics.median(measured))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    results = []
    for row, form, value in rows(args.quick):
        print(f"{row:38} {form:26} {value}", flush=True)
        results.append({"row": row, "form": form, "value": value})
    by = {(r["row"], r["form"]): r["value"] for r in results}
    ratios = {
        "start-up helper / in-process": by[("start-up to first result (ms)", "helper")]
        / by[("start-up to first result (ms)", "in-process")],
        "latency median helper / in-process": by[("probe() latency median (us)", "helper")]
        / by[("probe() latency median (us)", "in-process")],
        "throughput helper / in-process": by[("probe_many() checks/s", "helper")]
        / by[("probe_many() checks/s", "in-process")],
    }
    for name, ratio in ratios.items():
        print(f"{name:64} {ratio:.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": results, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
