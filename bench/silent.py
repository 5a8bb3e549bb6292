"""Benchmark of sweeps where targets do not answer (issue 11), zmap in the same run.

    sudo python3 bench/silent.py [--runs 3] [--silent 0,50,94,99] [--rows raw,raw-r0,...]

Each workload is the lab's AnyIP /16 on port 80 with the server dropping the SYNs to a share of
the addresses (an nftables rule on the address's low bits, so which ones answer is known):

    silent %   rule (drop when ...)          open of 65,536
    0          nothing dropped               65,536
    50         daddr & 0.0.0.1 != 0          32,768
    94         daddr & 0.0.0.15 != 0          4,096   (93.75 %)
    99         daddr & 0.0.0.127 != 0           512   (99.2 %)

Every row is one whole process in the lab's client namespace, in a fresh lab per run, rows
interleaved, through bench/run.py's `run_row` (same columns: wall, targets/s, opens, accepts,
TIME_WAIT, SYN_RECV, peak RSS, CPU). synprobe runs through its CLI with defaults except
`--rate 0`, and tuned; zmap with `-r 0 -c 1` (its cooldown is 1 s; see bench/README.md).
Needs root; touches only the namespaces it creates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "netns"))

import report  # noqa: E402
import rows  # noqa: E402
from run import _terminate, background_load, run_family  # noqa: E402
from synprobe_lab import Lab  # noqa: E402

NET = "198.19.0.0/16"
TARGETS = 65_536
# silent % -> the low-bit mask of the addresses dropped (0: none)
MASKS = {0: 0, 50: 1, 94: 15, 99: 127}
# Each check of a silent target waits timeout x attempts before it is reported filtered.
TUNED = ["--timeout", "0.25", "--retries", "0"]  # the lab answers in well under 1 ms


def drop_rule(mask: int) -> str:
    """`nft -f -` input: the server drops SYNs to the lab addresses whose low bits & mask != 0.
    In prerouting at raw priority: before the listener, the AnyIP route and conntrack."""
    return f"""\
table inet synprobe_silent {{
    chain rx {{
        type filter hook prerouting priority raw; policy accept;
        ip daddr {NET} ip daddr & 0.0.0.{mask} != 0.0.0.0 meta l4proto tcp counter drop
    }}
}}
"""


def preparer(mask: int) -> Callable[[Lab], None] | None:
    if not mask:
        return None

    def prepare(lab: Lab) -> None:
        lab.exec("server", ["nft", "-f", "-"], input=drop_rule(mask))

    return prepare


def cli(key: str, name: str, engine: str, extra: list[str]) -> rows.RowSpec:
    def argv(ctx: rows.Ctx) -> list[str]:
        return [ctx.python, "-m", "synprobe", "--engine", engine, "--json", "-p",
                ctx.port_spec, "--allow-large", "--rate", "0", *extra, "-q", ctx.net]

    # Exit 1: not every target open, the point of this benchmark.
    return rows.RowSpec(key, name, "synprobe", argv, rows.count_json_lines, ok_codes=(0, 1))


ROWS: tuple[rows.RowSpec, ...] = (
    cli("raw", "raw", "raw", []),
    cli("raw-r0", "raw --retries 0", "raw", ["--retries", "0"]),
    cli("raw-tuned", "raw tuned", "raw", TUNED),
    cli("raw-c1000", "raw --concurrency 1000", "raw", ["--concurrency", "1000"]),
    cli("shaker", "shaker", "shaker", []),
    cli("shaker-r0", "shaker --retries 0", "shaker", ["--retries", "0"]),
    cli("shaker-tuned", "shaker tuned", "shaker", TUNED),
    next(r for r in rows.ROWS if r.key == "zmap"),
)
ROW_KEYS = tuple(r.key for r in ROWS)
# The old default (1,000 in flight) takes ~33 s at 50 % silent and over a minute beyond: opt-in.
DEFAULT_ROWS = tuple(k for k in ROW_KEYS if k != "raw-c1000")


def expected_opens(mask: int, targets: int = TARGETS) -> int:
    return targets // (mask + 1)


def run_workload(silent: int, specs: list[rows.RowSpec], runs: int, tmp: Path,
                 env: dict[str, str], ports: tuple[int, ...] = (80,)) -> list[dict[str, Any]]:
    mask = MASKS[silent]
    out = run_family(specs, NET, ports, runs, tmp, env, None, f"{silent}% silent",
                     fixed_timeout=60.0 * len(ports), prepare=preparer(mask))
    for row in out:
        row["expected_opens"] = expected_opens(mask, rows.target_count(NET, ports))
    return out


HEADER = ("row", "wall s", "targets/s", "÷ zmap wall", "opens/expected", "accepts",
          "TIME_WAIT", "SYN_RECV 0s→2s", "RSS MB", "procs", "user+sys s", "other s", "ok")


def format_workload(silent: int, table: list[dict[str, Any]]) -> str:
    zmap = next((r["median"]["wall_s"] for r in table
                 if r["key"] == "zmap" and r.get("median")), None)
    mask = MASKS[silent]
    share = 100.0 * mask / (mask + 1)
    lines: list[list[str]] = [list(HEADER)]
    notes = []
    for row in table:
        med = row.get("median")
        runs = f"{row['runs_ok']}/{len(row['runs'])}"
        if not med:
            lines.append([row["name"], *["-"] * 11, row.get("skipped") or f"FAILED {runs}"])
        else:
            ratio = "-" if zmap is None else f"{med['wall_s'] / zmap:.2f}x"
            lines.append([
                row["name"], f"{med['wall_s']:.3f}", report.fmt_int(med["rate"]), ratio,
                f"{report.fmt_int(med['opens'])}/{report.fmt_int(row['expected_opens'])}",
                report.fmt_int(med["accepts"]), report.fmt_int(med["time_wait"]),
                f"{report.fmt_int(med['syn_recv_now'])}→"
                f"{report.fmt_int(med['syn_recv_settled'])}",
                f"{med['maxrss_mb']:.1f}", report.fmt_int(med["procs"]),
                f"{med['user_s']:.2f}+{med['sys_s']:.2f}", f"{med['other_cpu_s']:.2f}", runs])
            walls = ", ".join(f"{r['wall_s']:.2f}" for r in row["runs"] if r["ok"])
            notes.append(f"  {row['name']}: walls {walls}")
        notes.extend(f"  {row['name']}: failed run: {e}" for e in row["errors"])
    targets = table[0]["targets"] if table else TARGETS
    ports = "port 80" if targets == TARGETS else f"ports {rows.SCALE_PORTS[0]}-..."
    title = (f"== {silent}% silent ({share:.2f} % of {targets:,} dropped), {ports}; "
             f"medians; fresh lab per run ==")
    return "\n".join([title, *report._align(lines, rule=True), *notes])


def goals(results: dict[int, list[dict[str, Any]]]) -> list[str]:
    """Issue 11's goals, as same-run wall ratios to zmap."""
    def med(silent: int, key: str) -> dict[str, Any] | None:
        row = next((r for r in results.get(silent, []) if r["key"] == key), None)
        return row.get("median") if row else None

    out = []
    checks = [(94, "raw", 2.0), (99, "raw", 2.0), (94, "raw-r0", 1.2), (99, "raw-r0", 1.2),
              (94, "shaker", 4.0)]
    for silent, key, bound in checks:
        mine, zmap = med(silent, key), med(silent, "zmap")
        if mine is None or zmap is None:
            out.append(f"{key} at {silent}% silent: not measured")
            continue
        ratio = mine["wall_s"] / zmap["wall_s"]
        found = mine["opens"] >= expected_opens(MASKS[silent])
        verdict = "PASS" if ratio <= bound and found else "FAIL"
        out.append(f"{verdict} {key} at {silent}% silent: wall {ratio:.2f}x zmap's "
                   f"(goal <= {bound}x), {mine['opens']:,.0f} opens of "
                   f"{expected_opens(MASKS[silent]):,}")
    mine, zmap = med(0, "raw"), med(0, "zmap")
    if mine and zmap:
        ratio = mine["rate"] / zmap["rate"]
        out.append(f"{'PASS' if ratio >= 2.5 else 'FAIL'} raw all open: {ratio:.2f}x zmap's "
                   f"targets/s (goal >= 2.5x)")
    proofs = all(m["accepts"] == 0 and m["time_wait"] == 0 and m["syn_recv_settled"] == 0
                 for table in results.values() for r in table
                 if r["family"] == "synprobe" and (m := r.get("median")))
    out.append(f"{'PASS' if proofs else 'FAIL'} wire proofs: 0 accepts, 0 TIME_WAIT, "
               "0 lingering SYN_RECV in every synprobe row")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs per row, medians (default 3)")
    p.add_argument("--silent", default="0,50,94,99",
                   help=f"comma-separated workloads, %% silent, of {sorted(MASKS)}")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                   help=f"comma-separated subset of: {','.join(ROW_KEYS)}")
    p.add_argument("--scale", action="store_true",
                   help="also the raw CLI with defaults (--rate 0) on 1,048,576 targets (the /16 "
                   "x 16 ports) at 0 %% and 94 %% silent: peak RSS")
    p.add_argument("--json-out", metavar="FILE", help="also write everything as JSON")
    args = p.parse_args(argv)
    try:
        args.silent = [int(s) for s in args.silent.split(",")]
    except ValueError:
        p.error("--silent takes integers")
    if set(args.silent) - set(MASKS):
        p.error(f"--silent: choose from {sorted(MASKS)}")
    if set(args.rows.split(",")) - set(ROW_KEYS):
        p.error(f"--rows: choose from {','.join(ROW_KEYS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/silent.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    wanted = args.rows.split(",")
    specs = [s for s in ROWS if s.key in wanted]
    env = rows.cli_env()
    load = background_load()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="synprobe-silent-"))
    results: dict[int, list[dict[str, Any]]] = {}
    loads: list[float] = []
    scale: dict[int, list[dict[str, Any]]] = {}
    try:
        for silent in args.silent:
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            results[silent] = run_workload(silent, specs, args.runs, tmp, env)
        if args.scale:
            raw = [s for s in ROWS if s.key == "raw"]
            for silent in (0, 94):
                scale[silent] = run_workload(silent, raw, 1, tmp, env, rows.SCALE_PORTS)
    except KeyboardInterrupt:
        print("bench/silent.py: interrupted (labs torn down)", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbackground before the run: {load:.2f} cores busy; 1-min loadavg at each "
          f"workload's start: {', '.join(f'{x:.2f}' for x in loads)} "
          f"(median {statistics.median(loads):.2f})")
    for silent, table in results.items():
        print()
        print(format_workload(silent, table))
    for silent, table in scale.items():
        print()
        print(format_workload(silent, table))
    verdicts = goals(results)
    if scale:
        peak = max(r["median"]["maxrss_mb"] for t in scale.values() for r in t if r.get("median"))
        verdicts.append(f"{'PASS' if peak <= 120 else 'FAIL'} raw peak RSS at 1,048,576 "
                        f"targets: {peak:.1f} MB (goal <= 120 MB)")
    print("\nissue 11 goals:")
    print("\n".join(f"  {line}" for line in verdicts))
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"background_cores_busy": load, "loadavg": loads, "workloads": results, "scale": scale,
             "goals": verdicts}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
