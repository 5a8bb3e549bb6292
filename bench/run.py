"""End-to-end benchmark of synprobe against baselines, in a fresh network-namespace lab per run.

    sudo python3 bench/run.py [--quick] [--runs 3] [--targets 65536] [--scale] [--json-out F]

Each row is one whole process run inside the lab's client namespace against the server's AnyIP
block (every address answers SYN-ACK on port 80): synprobe's CLI and library with each engine, a
plain connect()+close() checker, zmap and nmap -sS. See bench/README.md for what each column
means and how the runs are made fair. Needs root; touches only the namespaces it creates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "netns"))

import report  # noqa: E402
import rows  # noqa: E402
from measure import host_busy_s, process_cpu_s, run_measured  # noqa: E402
from synprobe_lab import Lab  # noqa: E402
from synprobe_lab.topology import SERVER_MAC  # noqa: E402

SETTLE_S = 2.0  # how long SYN_RECV on the server may take to drain after a run


def row_timeout(targets: int, override: float | None) -> float:
    """Generous for a correct run (>= 4,000 targets/s), short enough to bound the whole bench."""
    return override if override else 20.0 + targets / 4000.0


def gateway_mac(lab: Lab) -> str:
    """The server veth's MAC, read from the lab (zmap's -G); the lab's constant as a fallback."""
    out = lab.exec("server", ["ip", "-j", "link", "show", lab.server_if], check=False).stdout
    try:
        return str(json.loads(out)[0]["address"])
    except (ValueError, LookupError):
        return SERVER_MAC


def settle_syn_recv(lab: Lab) -> tuple[int, float]:
    """Poll the server's SYN_RECV count until 0 or SETTLE_S; return (last count, seconds)."""
    start = time.monotonic()
    while True:
        n = lab.count_states("server", "syn-recv")
        elapsed = time.monotonic() - start
        if n == 0 or elapsed >= SETTLE_S:
            return n, elapsed
        time.sleep(0.05)


# A CPU hog for --busy-cpu: says when it spins on its CPU, then spins until it is ended (by
# PID) or its time is up.
HOG = """import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic() + float(sys.argv[2])
print("spinning", flush=True)
while time.monotonic() < end:
    pass
"""
HOG_MAX_S = 3600.0  # a bench run that outlives this measures the rest unhogged (and says so)


@contextlib.contextmanager
def busy(cpu: int | None) -> Iterator[None]:
    """While the block runs, keep `cpu` busy with a spinning process (None: do nothing)."""
    if cpu is None:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(cpu), str(HOG_MAX_S)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None
        if hog.stdout.readline().strip() != "spinning":
            raise RuntimeError("the --busy-cpu hog did not start")
        yield
        if hog.poll() is not None:
            print(f"bench/run.py: warning: the hog's {HOG_MAX_S:.0f} s ran out before the end",
                  file=sys.stderr)
    finally:
        hog.kill()  # ours, by PID
        hog.wait()


def run_row(spec: rows.RowSpec, net: str, ports: tuple[int, ...], tmp: Path, env: dict[str, str],
            timeout: float, prepare: Callable[[Lab], None] | None = None) -> dict[str, Any]:
    """One run of one row in a lab of its own; the lab (and its TIME_WAITs) goes afterwards.
    `prepare` shapes the fresh lab before the run (bench/silent.py adds its drop rule there)."""
    result: dict[str, Any] = {"ok": False, "error": None}
    try:
        with Lab(open_ports=ports) as lab:
            if prepare is not None:
                prepare(lab)
            ctx = rows.Ctx(python=sys.executable, net=net, ports=ports, out=tmp / "out",
                           extra=tmp / "extra", blocklist=tmp / "blocklist",
                           iface=lab.client_if, source=lab.v4.client,
                           gateway_mac=gateway_mac(lab))
            ctx.blocklist.write_text("")
            ctx.extra.unlink(missing_ok=True)
            before = lab.accept_count()
            listener_cpu = process_cpu_s(lab.listener_pid)
            m = run_measured(lab, "client", spec.argv(ctx), stdout_path=ctx.out,
                             timeout=timeout, env=env)
            listener_cpu = process_cpu_s(lab.listener_pid) - listener_cpu
            result.update(returncode=m.returncode, wall_s=m.wall_s, maxrss_mb=m.maxrss_mb,
                          maxrss_single_mb=m.maxrss_single_mb, tree_peak_mb=m.tree_peak_mb,
                          procs=m.max_procs, rss_source=m.rss_source, cpu_s=m.cpu_s,
                          user_s=m.user_s, sys_s=m.sys_s, listener_cpu_s=listener_cpu,
                          other_cpu_s=max(0.0, m.other_cpu_s - listener_cpu),
                          expected=ctx.targets, rate=ctx.targets / m.wall_s)
            result["time_wait"] = lab.count_states("client", "time-wait")
            result["syn_recv_now"] = lab.count_states("server", "syn-recv")
            result["syn_recv_settled"], result["settle_s"] = settle_syn_recv(lab)
            result["accepts"] = lab.accept_count() - before  # after settling: late accepts too
            last = m.stderr_tail.splitlines()[-1] if m.stderr_tail else "no stderr"
            if m.timed_out:
                result["error"] = f"timed out after {timeout:g} s (killed by PID)"
            elif m.returncode not in spec.ok_codes:
                result["error"] = f"exit {m.returncode}: {last}"
            else:
                try:
                    result["results"], result["opens"], result["other"] = spec.count(ctx)
                except (OSError, ValueError, KeyError) as exc:
                    result["error"] = f"unreadable output: {exc}"
                else:
                    # No result at all is an engine that did not run, whatever its exit code.
                    result["ok"] = result["results"] > 0
                    if not result["ok"]:
                        result["error"] = f"exit {m.returncode}, no results: {last}"
    except Exception as exc:  # a lab or measurement failure: this run failed, the bench goes on
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for name in ("out", "extra", "blocklist"):
            (tmp / name).unlink(missing_ok=True)
    return result


def run_family(specs: list[rows.RowSpec], net: str, ports: tuple[int, ...], runs: int,
               tmp: Path, env: dict[str, str], timeout: float | None, label: str, *,
               fixed_timeout: float | None = None,
               prepare: Callable[[Lab], None] | None = None) -> list[dict[str, Any]]:
    """`runs` rounds over every row (interleaved, so drift hits all rows alike); medians.
    `fixed_timeout` replaces the per-row timeout derived from the target count; `prepare`
    shapes each fresh lab (bench/silent.py's drop rule)."""
    targets = rows.target_count(net, ports)
    per_row: dict[str, list[dict[str, Any]]] = {s.key: [] for s in specs}
    skipped = {s.key: s.missing() for s in specs}
    limit = fixed_timeout if fixed_timeout is not None else row_timeout(targets, timeout)
    for n in range(runs):
        for spec in specs:
            if skipped[spec.key]:
                continue
            r = run_row(spec, net, ports, tmp, env, limit, prepare)
            per_row[spec.key].append(r)
            status = (f"{r['wall_s']:.2f} s, {r['rate']:,.0f}/s, {r.get('opens', '-')} open, "
                      f"{r['maxrss_mb']:.0f} MB" if r["ok"] else f"FAILED: {r['error']}")
            print(f"[{label} {n + 1}/{runs}] {spec.name}: {status}", file=sys.stderr, flush=True)
    return [report.summarize(s.key, s.name, s.family, targets, per_row[s.key], skipped[s.key])
            for s in specs]


def run_startup(reps: int, tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Start-up rows: `reps` runs each, in one lab (they leave no kernel state behind)."""
    out = []
    with Lab() as lab:
        target = f"{lab.v4.anyip_sample}:{lab.OPEN_PORT}"
        for spec in rows.STARTUP:
            runs = []
            for _ in range(reps):
                m = run_measured(lab, "client", spec.argv(sys.executable, target),
                                 stdout_path=tmp / "startup", timeout=10.0, env=env)
                ok = not m.timed_out and m.returncode in spec.ok_codes
                error = None if ok else f"exit {m.returncode}: {m.stderr_tail[-200:]}"
                runs.append({"ok": ok, "wall_s": m.wall_s, "maxrss_mb": m.maxrss_mb,
                             "cpu_s": m.cpu_s, "returncode": m.returncode, "error": error})
            out.append(report.summarize(spec.key, spec.name, "startup", 1, runs))
        (tmp / "startup").unlink(missing_ok=True)
    return out


def background_load(seconds: float = 1.0) -> float:
    """Cores' worth of CPU the machine spends on others while we do nothing (0.0 = quiet)."""
    before = host_busy_s()
    time.sleep(seconds)
    return (host_busy_s() - before) / seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="one run per row, 3 start-up repeats (under 2 minutes)")
    p.add_argument("--runs", type=int, default=None, help="runs per row, medians (default 3)")
    p.add_argument("--targets", type=int, default=65536,
                   help="addresses of the AnyIP /16 to probe: a power of 2, 256..65536")
    p.add_argument("--scale", action="store_true",
                   help="also each engine's CLI on targets x 16 ports (1,048,576 by default)")
    p.add_argument("--scale-runs", type=int, default=None, help="runs per scale row "
                   "(default: --runs)")
    p.add_argument("--startup-reps", type=int, default=None,
                   help="repeats of each start-up row (default 10, 3 with --quick)")
    p.add_argument("--rows", default=",".join(rows.ROW_KEYS),
                   help=f"comma-separated subset of: {','.join(rows.ROW_KEYS)}")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up rows")
    p.add_argument("--row-timeout", type=float, default=None,
                   help="seconds before a run is killed (default 20 + targets/4000)")
    p.add_argument("--json-out", metavar="FILE", help="also write everything as JSON")
    p.add_argument("--busy-cpu", type=int, default=None, metavar="N",
                   help="keep CPU N busy with a spinning process (started and ended by this "
                   "script) for the whole benchmark: a host whose core other work has taken")
    args = p.parse_args(argv)
    if args.busy_cpu is not None and args.busy_cpu not in os.sched_getaffinity(0):
        p.error(f"--busy-cpu {args.busy_cpu}: not a CPU this process may use")
    if args.targets < 256 or args.targets > 65536 or args.targets & (args.targets - 1):
        p.error("--targets must be a power of 2 between 256 and 65536")
    unknown = set(args.rows.split(",")) - set(rows.ROW_KEYS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {','.join(rows.ROW_KEYS)}")
    args.runs = args.runs or (1 if args.quick else 3)
    args.scale_runs = args.scale_runs or args.runs
    args.startup_reps = args.startup_reps or (3 if args.quick else 10)
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `with Lab()`: namespaces are removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    prefix = 32 - (args.targets.bit_length() - 1)
    net = f"{Lab.v4.anyip_net.split('/')[0]}/{prefix}"
    wanted = args.rows.split(",")
    specs = [s for s in rows.ROWS if s.key in wanted]
    # Benchmark this working tree's synprobe, whatever is installed.
    env = rows.cli_env()
    load = background_load()
    if load > 0.1:
        print(f"bench/run.py: warning: the machine is busy before we start ({load:.2f} cores in "
              f"use by other processes); numbers will be low and noisy", file=sys.stderr)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="synprobe-bench-"))
    data: dict[str, Any] = {"meta": {
        "kernel": platform.release(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "net": net, "runs": args.runs,
        "command": " ".join(sys.argv),
        "tools": {t: shutil.which(t) for t in ("zmap", "nmap")},
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "background_cores_busy": round(load, 3),
        "busy_cpu": args.busy_cpu,
    }}
    try:
        with busy(args.busy_cpu):  # every row, scale and start-up ones too
            table = run_family(specs, net, (80,), args.runs, tmp, env, args.row_timeout, "main")
            data["rows"] = table
            data["ratios"] = report.ratios(table)
            scale = None
            if args.scale:
                scale_specs = [s for s in specs
                               if s.family == "synprobe" and s.key.endswith("-cli")]
                data["scale_rows"] = run_family(scale_specs, net, rows.SCALE_PORTS,
                                                args.scale_runs, tmp, env, args.row_timeout,
                                                "scale")
                scale = data["scale"] = report.scale_comparison(table, data["scale_rows"])
            startup = None
            if not args.no_startup:
                startup = data["startup"] = run_startup(args.startup_reps, tmp, env)
    except KeyboardInterrupt:
        print("bench/run.py: interrupted (labs torn down)", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data["goals"] = report.goals(table, scale, startup)
    data["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    data["meta"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

    print()
    if load > 0.1:
        print(f"WARNING: {load:.2f} cores were busy with other work before the run started")
    busy_note = "" if args.busy_cpu is None else f"; CPU {args.busy_cpu} kept busy by a hog"
    print(report.format_table(table, f"== {net} port 80: {args.runs} run(s) per row, medians; "
                                     f"fresh lab per run{busy_note} =="))
    print()
    print(report.format_ratios(table, data["ratios"]))
    if args.scale:
        ports = ",".join(map(str, rows.SCALE_PORTS))
        print()
        print(report.format_table(data["scale_rows"],
                                  f"== scale: {net} x ports {ports}{busy_note} =="))
        print(report.format_scale(scale or []))
    if startup:
        print()
        print(report.format_startup(startup))
    print()
    print(f"issue 4 goals{f' ({busy_note[2:]})' if busy_note else ''}:")
    print("\n".join(f"  {line}" for line in data["goals"]))
    print(f"\n(bench took {data['meta']['elapsed_s']} s)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
