"""Medians, the printed tables, synprobe-to-baseline ratios and the issue-4 goal checks."""

from __future__ import annotations

import statistics
from typing import Any

# Issue 4's targets.
GOAL_RAW_CLI = 100_000.0  # targets/s end to end through the CLI
GOAL_SHAKER_CLI = 36_000.0  # checks/s through the CLI at default concurrency
GOAL_SCALE_RSS_MB = 120.0  # peak RSS at 1,048,576 targets
GOAL_SCALE_KEEP = 0.90  # throughput at 1,048,576 within 10 % of the 65,536 run
GOAL_STARTUP_S = 0.25  # `synprobe --help` and a one-target shaker check, wall

# A run during which other work took more than this share of one core is flagged under the table.
CONTENDED = 0.25

NUMERIC = ("wall_s", "rate", "opens", "results", "accepts", "time_wait", "syn_recv_now",
           "syn_recv_settled", "maxrss_mb", "maxrss_single_mb", "procs", "cpu_s", "user_s",
           "sys_s", "other_cpu_s")


def summarize(key: str, name: str, family: str, targets: int, runs: list[dict[str, Any]],
              skipped: str | None = None) -> dict[str, Any]:
    """A table row: the medians of the runs that finished, plus every run as measured."""
    good = [r for r in runs if r["ok"]]
    row: dict[str, Any] = {"key": key, "name": name, "family": family, "targets": targets,
                           "runs_ok": len(good), "runs": runs, "skipped": skipped}
    if good:
        row["median"] = {k: statistics.median(r[k] for r in good) for k in NUMERIC
                         if all(r.get(k) is not None for r in good)}
    errors = sorted({r["error"] for r in runs if not r["ok"]})
    row["errors"] = errors
    return row


def _align(lines: list[list[str]], rule: bool = False) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the rest right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths, strict=True))))
        if rule and n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def fmt_int(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


HEADER = ("row", "targets", "wall s", "targets/s", "opens/expected", "accepts", "TIME_WAIT",
          "SYN_RECV 0s→2s", "RSS MB", "procs", "user+sys s", "other s", "ok")


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    lines: list[list[str]] = [list(HEADER)]
    notes: list[str] = []
    for row in rows:
        runs = f"{row['runs_ok']}/{len(row['runs'])}"
        med = row.get("median")
        if row.get("skipped"):
            lines.append([row["name"], fmt_int(row["targets"]), *["-"] * 10, "skipped"])
            notes.append(f"  {row['name']}: skipped: {row['skipped']}")
            continue
        if not med:
            lines.append([row["name"], fmt_int(row["targets"]), *["-"] * 10, f"FAILED {runs}"])
        else:
            lines.append([
                row["name"], fmt_int(row["targets"]), f"{med['wall_s']:.3f}",
                fmt_int(med["rate"]), f"{fmt_int(med['opens'])}/{fmt_int(row['targets'])}",
                fmt_int(med["accepts"]), fmt_int(med["time_wait"]),
                f"{fmt_int(med['syn_recv_now'])}→{fmt_int(med['syn_recv_settled'])}",
                f"{med['maxrss_mb']:.1f}", fmt_int(med["procs"]),
                f"{med['user_s']:.2f}+{med['sys_s']:.2f}", f"{med['other_cpu_s']:.2f}", runs,
            ])
        for err in row["errors"]:
            notes.append(f"  {row['name']}: failed run: {err}")
        for n, run in enumerate(row["runs"], 1):
            if run["ok"] and run["other_cpu_s"] > CONTENDED * run["wall_s"]:
                notes.append(f"  {row['name']} run {n}: contended: {run['other_cpu_s']:.2f} CPU s "
                             f"of other work during its {run['wall_s']:.2f} s "
                             f"({fmt_int(run['rate'])}/s)")
            if run.get("other") or (run["ok"] and run.get("results") != row["targets"]):
                other = ", ".join(f"{k} {v:,}" for k, v in run.get("other", {}).items())
                notes.append(f"  {row['name']} run {n}: {fmt_int(run.get('results'))} results, "
                             f"{fmt_int(run.get('opens'))} open{'; ' + other if other else ''}")
    return "\n".join([title, *_align(lines, rule=True), *notes])


def rate_of(rows: list[dict[str, Any]], key: str) -> float | None:
    for row in rows:
        if row["key"] == key and row.get("median"):
            return float(row["median"]["rate"])
    return None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """targets/s of each synprobe row divided by each baseline's (None where either failed)."""
    out = []
    for mine in (r for r in rows if r["family"] == "synprobe"):
        for base in (r for r in rows if r["family"] == "baseline"):
            a, b = rate_of(rows, mine["key"]), rate_of(rows, base["key"])
            out.append({"synprobe": mine["key"], "baseline": base["key"],
                        "ratio": None if a is None or b is None else a / b})
    return out


def format_ratios(rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> str:
    if not table:
        return "(no ratios: the run had no synprobe row or no baseline row)"
    names = {r["key"]: r["name"] for r in rows}
    bases = list(dict.fromkeys(r["baseline"] for r in table))
    mine = list(dict.fromkeys(r["synprobe"] for r in table))
    cell = {(r["synprobe"], r["baseline"]): r["ratio"] for r in table}
    head = ["synprobe ÷ baseline (targets/s)", *(names[b] for b in bases)]
    lines = [head]
    for m in mine:
        lines.append([names[m], *("-" if cell[m, b] is None else f"{cell[m, b]:.2f}x"
                                  for b in bases)])
    return "\n".join(_align(lines))


def scale_comparison(base: list[dict[str, Any]], scale: list[dict[str, Any]]) -> list[dict]:
    out = []
    for row in scale:
        small = next((r for r in base if r["key"] == row["key"]), None)
        big_rate = row.get("median", {}).get("rate")
        small_rate = (small or {}).get("median", {}).get("rate")
        out.append({
            "key": row["key"], "name": row["name"],
            "rate_small": small_rate, "rate_large": big_rate,
            "keep": None if not big_rate or not small_rate else big_rate / small_rate,
            "rss_small_mb": (small or {}).get("median", {}).get("maxrss_mb"),
            "rss_large_mb": row.get("median", {}).get("maxrss_mb"),
        })
    return out


def format_scale(scale: list[dict]) -> str:
    lines = []
    for c in scale:
        keep = "-" if c["keep"] is None else f"{c['keep']:.0%}"
        lines.append(f"  {c['name']}: {fmt_int(c['rate_large'])}/s vs "
                     f"{fmt_int(c['rate_small'])}/s on the small run ({keep}); peak RSS "
                     f"{c['rss_large_mb'] or 0:.1f} MB vs {c['rss_small_mb'] or 0:.1f} MB")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def goals(rows: list[dict[str, Any]], scale: list[dict] | None,
          startup: list[dict[str, Any]] | None) -> list[str]:
    """One line per issue-4 target: PASS / FAIL / n/a (not measured or the row failed)."""
    lines = []
    for key, goal in (("raw-cli", GOAL_RAW_CLI), ("shaker-cli", GOAL_SHAKER_CLI)):
        rate = rate_of(rows, key)
        lines.append(f"{_verdict(None if rate is None else rate >= goal)}  {key} >= "
                     f"{goal:,.0f} targets/s: {fmt_int(rate)}")
    for cmp in scale or []:
        rss, keep = cmp["rss_large_mb"], cmp["keep"]
        lines.append(f"{_verdict(None if rss is None else rss <= GOAL_SCALE_RSS_MB)}  "
                     f"{cmp['key']} peak RSS at scale <= {GOAL_SCALE_RSS_MB:.0f} MB: "
                     f"{'-' if rss is None else f'{rss:.1f}'}")
        lines.append(f"{_verdict(None if keep is None else keep >= GOAL_SCALE_KEEP)}  "
                     f"{cmp['key']} throughput at scale within 10 % of the small run: "
                     f"{'-' if keep is None else f'{keep:.0%}'}")
    for row in startup or []:
        if row["key"] in ("help", "one-target"):
            wall = row.get("median", {}).get("wall_s")
            lines.append(f"{_verdict(None if wall is None else wall <= GOAL_STARTUP_S)}  "
                         f"{row['name']} <= {GOAL_STARTUP_S} s: "
                         f"{'-' if wall is None else f'{wall:.3f} s'} (incl. ip netns exec)")
    return lines


def format_startup(rows: list[dict[str, Any]]) -> str:
    head = ["start-up (median of n)", "n ok", "wall s", "min", "max", "RSS MB"]
    lines = [head]
    for row in rows:
        walls = [r["wall_s"] for r in row["runs"] if r["ok"]]
        med = row.get("median")
        if not med:
            lines.append([row["name"], f"0/{len(row['runs'])}", "-", "-", "-", "-"])
            continue
        lines.append([row["name"], f"{len(walls)}/{len(row['runs'])}", f"{med['wall_s']:.3f}",
                      f"{min(walls):.3f}", f"{max(walls):.3f}", f"{med['maxrss_mb']:.1f}"])
    errs = [f"  {row['name']}: {e}" for row in rows for e in row["errors"]]
    return "\n".join(_align(lines) + errs)
