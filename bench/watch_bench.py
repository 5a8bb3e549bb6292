"""Benchmark of `synprobe watch` in the namespace lab, against HAProxy 2.6's own checker.

    sudo python3 bench/watch_bench.py                     # every scenario (~6 min)
    sudo python3 bench/watch_bench.py --only sustained --targets 10000 --seconds 60
    sudo python3 bench/watch_bench.py --only haproxy,loss --seconds 30
    sudo python3 bench/watch_bench.py --only haproxy --engines raw --rounds 5   # median ratio
    sudo python3 bench/watch_bench.py --only max          # largest count holding p99 <= 20 ms
    sudo python3 bench/watch_bench.py --only starve       # a starved process: shaker vs raw

Scenarios (each in a fresh lab: client and server namespaces, AnyIP targets 198.19.0.0/16:80):
- sustained: N targets at a 1 s interval for S seconds: % of scheduled checks run (started /
  (started + skipped slots); rate_vs_plan is started / (N x seconds), ±0.5 % from when the
  scrapes land), lateness
  (share within 5 / 20 ms, p99 as a bucket bound), RSS at start and end, accepts, TIME_WAIT,
  CPU per check.
- haproxy: HAProxy (`haproxy -db`, 2,000 servers `check inter 1000`) and then synprobe watch
  (each engine) on the same 2,000 targets for S seconds each: CPU per check and the ratios.
- loss: the same, with 2 % random loss each way (nftables numgen): the listener's accepts
  caused by each (HAProxy with `timeout connect 500ms` and `2s`; synprobe must be 0).
- starve: SIGSTOP/SIGCONT pulses of 300 ms every second on the synprobe process (a busy host
  that starves it), each engine: accepts. This is what chose the service's default engine.
- max: the largest of a few target counts at 1 s that holds p99 lateness <= 20 ms.
Absolute figures do not travel between machines; the ratios measured in one run do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "netns"), str(HERE.parent / "src")]

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from synprobe_lab import OPEN_PORT, Lab  # noqa: E402
from synprobe_lab.topology import V4  # noqa: E402
from synprobe_lab.watchsvc import WatchProcess, count_lab_states  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every descendant still running."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / TICK
        todo += children.get(p, [])
    return total


def tree_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.name.startswith("synprobe_target") and "host" not in s.labels:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(watch: WatchProcess) -> tuple[dict[Any, float], float]:
    """The service's metrics, and the moment they stand for (the middle of the request)."""
    before = time.monotonic()
    text = watch.metrics()
    return samples(text), (before + time.monotonic()) / 2


def target_file(directory: Path, n: int) -> Path:
    path = directory / f"targets-{n}.txt"
    path.write_text("\n".join(f"{V4.anyip(i)}:{OPEN_PORT}" for i in range(n)) + "\n")
    return path


def run_watch(lab: Lab, tmp: Path, n: int, seconds: float, engine: str,
              extra: list[str] | None = None, during: Any = None) -> dict[str, Any]:
    """synprobe watch on n targets at 1 s; figures over `seconds` after a 3 s warm-up."""
    watch = WatchProcess(lab, ["--engine", engine, "--interval", "1", "--timeout", "0.3",
                               "--retries", "1", "--allow-large", "-iL",
                               str(target_file(tmp, n)), *(extra or [])])
    try:
        watch.wait_ready(120)
        time.sleep(3.0)  # every target's first check is in
        accepts0 = lab.accept_count()
        cpu0, rss0 = tree_cpu(watch.proc.pid), tree_rss_mb(watch.proc.pid)
        m0, t0 = scrape(watch)
        if during is not None:
            during(watch, seconds)
        else:
            time.sleep(seconds)
        m1, t1 = scrape(watch)
        cpu1, rss1 = tree_cpu(watch.proc.pid), tree_rss_mb(watch.proc.pid)
        accepts = lab.accept_count() - accepts0
        tw = count_lab_states(lab, "client", "time-wait")
    finally:
        watch.stop(10)

    def d(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    started = d("synprobe_checks_started_total")
    late_total = d("synprobe_check_lateness_seconds_count") or 1.0
    buckets = sorted((float(dict(k[1])["le"]), m1[k] - m0.get(k, 0.0)) for k in m1
                     if k[0] == "synprobe_check_lateness_seconds_bucket")
    p99 = next((le for le, c in buckets if c >= 0.99 * late_total), float("inf"))
    elapsed = t1 - t0
    return {
        "engine": engine, "targets": n, "seconds": round(elapsed, 1),
        # Of the checks scheduled, those that ran: a slot is skipped only when the target's
        # previous check (or the service) was still busy when it came.
        "run_pct": round(100 * started / max(1.0, started + d("synprobe_checks_skipped_total")),
                         3),
        "rate_vs_plan_pct": round(100 * started / (n * elapsed), 1),
        "within_5ms_pct": round(100 * d("synprobe_check_lateness_seconds_bucket", le="0.005")
                                / late_total, 2),
        "within_20ms_pct": round(100 * d("synprobe_check_lateness_seconds_bucket", le="0.02")
                                 / late_total, 2),
        "p99_lateness_le_s": p99, "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1),
        "accepts": accepts, "time_wait": tw, "checks": int(started),
        "cpu_us_per_check": round(1e6 * (cpu1 - cpu0) / max(1.0, started), 1),
    }


HAPROXY_CFG = """\
global
    maxconn 8000
    stats socket {sock} mode 600 level admin
defaults
    mode tcp
    timeout connect {connect}
    timeout client 5s
    timeout server 5s
backend lab
    default-server check inter 1000 rise 2 fall 3
{servers}
"""


def run_haproxy(lab: Lab, tmp: Path, n: int, seconds: float, connect: str = "500ms"
                ) -> dict[str, Any]:
    cfg = tmp / "haproxy.cfg"
    servers = "\n".join(f"    server s{i} {V4.anyip(i)}:{OPEN_PORT}" for i in range(n))
    cfg.write_text(HAPROXY_CFG.format(sock=tmp / "haproxy.sock", connect=connect,
                                      servers=servers))
    proc = lab.popen("client", ["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # HAProxy spreads the first checks over the interval
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {proc.stderr.read() if proc.stderr else ''}")
        accepts0, cpu0, t0 = lab.accept_count(), tree_cpu(proc.pid), time.monotonic()
        time.sleep(seconds)
        t1, cpu1 = time.monotonic(), tree_cpu(proc.pid)
        accepts = lab.accept_count() - accepts0
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    checks = n * (t1 - t0)  # inter 1000: one check per server per second
    return {"engine": f"haproxy (connect {connect})", "targets": n, "seconds": round(t1 - t0, 1),
            "checks": int(checks), "accepts": accepts,
            "cpu_us_per_check": round(1e6 * (cpu1 - cpu0) / checks, 1)}


def starve(watch: WatchProcess, seconds: float) -> None:
    """Stop the synprobe process for 300 ms every second (a host that starves it)."""
    end = time.monotonic() + seconds
    pid = watch.proc.pid
    while time.monotonic() < end:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.7)


def show(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("  " + "  ".join(keys))
    for r in rows:
        print("  " + "  ".join(str(r.get(k, "")) for k in keys))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="sustained,haproxy,loss,starve,max",
                    help="comma-separated scenarios")
    ap.add_argument("--targets", type=int, default=10_000, help="sustained: target count")
    ap.add_argument("--seconds", type=float, default=60.0, help="sustained: seconds measured")
    ap.add_argument("--compare-seconds", type=float, default=30.0,
                    help="haproxy/loss/starve: seconds measured per row")
    ap.add_argument("--engines", default="raw,shaker")
    ap.add_argument("--rounds", type=int, default=1,
                    help="haproxy: rounds of (HAProxy, each engine); a ratio per round and "
                         "their median (run to run noise is about ±8 µs a check)")
    ap.add_argument("--max-counts", default="2000,5000,10000,15000,20000")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("watch_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    engines = args.engines.split(",")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as d:
        tmp = Path(d)
        if "sustained" in only:
            rows = []
            for engine in engines[:1]:
                with Lab() as lab:
                    rows.append(run_watch(lab, tmp, args.targets, args.seconds, engine))
            print(f"\nsustained: {args.targets:,} targets at 1 s for {args.seconds:g} s")
            show(rows)
            report["sustained"] = rows
        if "haproxy" in only:
            rows = []
            ratios: dict[str, list[float]] = {engine: [] for engine in engines}
            for _ in range(args.rounds):  # HAProxy, then each engine: a ratio per round
                with Lab() as lab:
                    base = run_haproxy(lab, tmp, 2000, args.compare_seconds)
                rows.append(base)
                for engine in engines:
                    with Lab() as lab:
                        rows.append(run_watch(lab, tmp, 2000, args.compare_seconds, engine))
                    ratios[engine].append(rows[-1]["cpu_us_per_check"]
                                          / base["cpu_us_per_check"])
            print("\nCPU per check, 2,000 targets at 1 s (same targets, same run)")
            show(rows)
            for engine, got in ratios.items():
                each = ", ".join(f"{r:.2f}" for r in got)
                print(f"  synprobe {engine} / haproxy CPU per check: {each}"
                      + (f" (median {statistics.median(got):.2f})" if len(got) > 1 else ""))
            report["haproxy"] = rows
            report["haproxy_ratios"] = ratios
        if "loss" in only:
            rows = []
            for connect in ("500ms", "2s"):
                with Lab(loss_percent=2.0) as lab:
                    rows.append(run_haproxy(lab, tmp, 2000, args.compare_seconds, connect))
            for engine in engines:
                with Lab(loss_percent=2.0) as lab:
                    rows.append(run_watch(lab, tmp, 2000, args.compare_seconds, engine,
                                          ["--retries", "2", "--timeout", "0.2"]))
            print(f"\n2 % loss each way, 2,000 targets at 1 s, {args.compare_seconds:g} s each: "
                  "the listener's accepts")
            show(rows)
            report["loss"] = rows
        if "starve" in only:
            rows = []
            for engine in engines:
                with Lab() as lab:
                    rows.append(run_watch(lab, tmp, 2000, args.compare_seconds, engine,
                                          during=starve))
            print("\nstarved process (SIGSTOP 300 ms every second), 2,000 targets at 1 s: "
                  "accepts")
            show(rows)
            report["starve"] = rows
        if "max" in only:
            rows, best = [], 0
            for n in (int(x) for x in args.max_counts.split(",")):
                with Lab() as lab:
                    row = run_watch(lab, tmp, n, 20.0, engines[0])
                rows.append(row)
                if row["p99_lateness_le_s"] <= 0.02 and row["run_pct"] >= 99.9:
                    best = n
                else:
                    break
            print(f"\nlargest count at 1 s with p99 lateness <= 20 ms ({engines[0]}): {best:,}")
            show(rows)
            report["max"] = {"rows": rows, "largest": best}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
