"""`/probe` throughput: synprobe's exporter vs the real blackbox_exporter, same lab, same run.

    sudo python3 bench/probe_bench.py                  # ~40 s
    sudo python3 bench/probe_bench.py --quick          # ~15 s
    sudo python3 bench/probe_bench.py --levels 8,64 --seconds 5

Both exporters run in the lab's client namespace (`synprobe watch --metrics` with no targets,
and `prometheus-blackbox-exporter` with a `tcp` module), each probing open targets on the
server's AnyIP block (198.19.0.0/16, port 80; a different address per request, so synprobe's
Prober never merges two requests into one check). A load generator (aiohttp, one event loop,
keep-alive connections to the exporter) runs in the same namespace at several concurrency
levels, each bounded in time and in requests. For each exporter it reports, per level, requests
per second, the share that answered probe_success 1, p50/p99 latency and the exporter's CPU per
request; then the best rate that kept >= 99 % success, and the ratio between the two.

Absolute rates depend on the machine (and on the load generator, which shares it); the ratio,
measured in the same invocation, is the figure to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "netns"))

from synprobe_lab import OPEN_PORT, Lab
from synprobe_lab.exporters import BlackboxExporter, SynprobeExporter
from synprobe_lab.watchsvc import count_lab_states

TARGETS = 4096  # distinct AnyIP addresses the requests cycle through
MAX_REQUESTS = 30_000  # per level: a hard bound whatever the rate


@dataclass
class Level:
    concurrency: int
    requests: int
    succeeded: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def success(self) -> float:
        return self.succeeded / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(base: str, targets: list[str], concurrency: int, seconds: float,
                ) -> tuple[int, int, float, list[float]]:
    counter = 0
    succeeded = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal counter, succeeded
            while time.monotonic() < deadline and counter < MAX_REQUESTS:
                target = targets[counter % len(targets)]
                counter += 1
                started = time.monotonic()
                try:
                    async with session.get(f"{base}/probe", params={
                            "target": target, "module": "tcp_connect"}) as r:
                        body = await r.read()
                        ok = r.status == 200 and b"\nprobe_success 1\n" in body
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append(time.monotonic() - started)
                succeeded += ok

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return counter, succeeded, time.monotonic() - began, latencies


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(lab: Lab, base: str, pid: int, levels: list[int], seconds: float) -> list[Level]:
    targets = [f"{lab.v4.anyip(i)}:{OPEN_PORT}" for i in range(TARGETS)]
    out = []
    for concurrency in levels:
        cpu = _cpu(pid)
        n, ok, took, lat = lab.run_in("client", asyncio.run,
                                      _load(base, targets, concurrency, seconds))
        out.append(Level(concurrency, n, ok, took, lat, _cpu(pid) - cpu))
    return out


def best(levels: list[Level]) -> Level | None:
    good = [lv for lv in levels if lv.success >= 0.99]
    return max(good, key=lambda lv: lv.rate) if good else None


def print_levels(name: str, levels: list[Level]) -> None:
    print(f"\n{name}")
    print(f"  {'conc':>5} {'requests':>9} {'req/s':>8} {'success':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'CPU µs/req':>10}")
    for lv in levels:
        cpu_per = lv.cpu_seconds / lv.requests * 1e6 if lv.requests else float("nan")
        print(f"  {lv.concurrency:>5} {lv.requests:>9,} {lv.rate:>8,.0f} {lv.success:>8.2%} "
              f"{lv.quantile(0.5) * 1000:>8.2f} {lv.quantile(0.99) * 1000:>8.2f} "
              f"{cpu_per:>10,.0f}")


def startup(lab: Lab, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU milliseconds of one process checking one open lab target: the
    HAProxy external check vs the one-target CLI (both from this interpreter's tree)."""
    check = Path(sys.executable).with_name("synprobe-haproxy-check")
    target = lab.v4.server
    commands = {
        "synprobe-haproxy-check": [str(check), "NOT_USED", "NOT_USED", target, str(OPEN_PORT)],
        "synprobe (one-target CLI)": [sys.executable, "-m", "synprobe", f"{target}:{OPEN_PORT}"],
    }
    out = {}
    for name, argv in commands.items():
        walls, cpus = [], []
        for _ in range(repeats):
            before = os.times()
            began = time.monotonic()
            done = lab.exec("client", argv, check=False)
            walls.append(time.monotonic() - began)
            after = os.times()
            cpus.append(after.children_user + after.children_system
                        - before.children_user - before.children_system)
            if done.returncode != 0:
                raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr.strip()}")
        out[name] = (statistics.median(walls) * 1000, statistics.median(cpus) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="4,16,64,256",
                        help="concurrent requests to try (comma-separated)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per level")
    parser.add_argument("--quick", action="store_true", help="levels 16,128 for 2 s each")
    parser.add_argument("--startup-repeats", type=int, default=20,
                        help="runs of each process for the start-up figures")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("probe_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    levels = [16, 128] if args.quick else [int(x) for x in args.levels.split(",")]
    seconds = 2.0 if args.quick else min(args.seconds, 30.0)
    results: dict[str, list[Level]] = {}
    extra: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp, Lab() as lab:
        work = Path(tmp)
        starts = startup(lab, max(1, min(args.startup_repeats, 200)))
        for name in ("synprobe", "blackbox_exporter"):
            accepts = lab.accept_count()
            if name == "synprobe":
                ours = SynprobeExporter(lab, work, allow=["198.18.0.0/15"])
                try:
                    results[name] = measure(lab, ours.base, ours.service.proc.pid, levels,
                                            seconds)
                finally:
                    ours.stop()
            else:
                theirs = BlackboxExporter(lab, work, timeout="1s")
                try:
                    results[name] = measure(lab, theirs.base, theirs.proc.pid, levels, seconds)
                finally:
                    theirs.stop()
            extra[name] = (lab.accept_count() - accepts,
                           count_lab_states(lab, "client", "time-wait"))
    for name, levels_done in results.items():
        print_levels(name, levels_done)
        accepted, time_wait = extra[name]
        print(f"  listener accepted {accepted:,} connections; {time_wait:,} TIME_WAIT on the "
              "prober after the run (cumulative)")
    print("\none process per check (HAProxy external check), median of "
          f"{args.startup_repeats} runs, `ip netns exec` included:")
    for name, (wall, cpu) in starts.items():
        print(f"  {name:<26} {wall:>6.1f} ms wall {cpu:>6.1f} ms CPU")
    print("\nbest rate with >= 99 % probe_success 1:")
    top = {name: best(lv) for name, lv in results.items()}
    for name, lv in top.items():
        if lv is None:
            print(f"  {name:<18} no level reached 99 %")
        else:
            print(f"  {name:<18} {lv.rate:>8,.0f} req/s at concurrency {lv.concurrency} "
                  f"(p50 {lv.quantile(0.5) * 1000:.2f} ms, p99 {lv.quantile(0.99) * 1000:.2f} ms)")
    ours_best, theirs_best = top["synprobe"], top["blackbox_exporter"]
    if ours_best and theirs_best:
        print(f"  ratio synprobe / blackbox_exporter: {ours_best.rate / theirs_best.rate:.2f}x "
              "req/s")
    print("latency ratio synprobe / blackbox_exporter at the same concurrency:")
    for ours_lv, theirs_lv in zip(results["synprobe"], results["blackbox_exporter"],
                                  strict=True):
        p50 = ours_lv.quantile(0.5) / theirs_lv.quantile(0.5)
        p99 = ours_lv.quantile(0.99) / theirs_lv.quantile(0.99)
        print(f"  {ours_lv.concurrency:>5}: p50 {p50:.2f}x, p99 {p99:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
