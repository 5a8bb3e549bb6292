"""How the CLI writes results (table, JSON lines, CSV), the run summary, and progress."""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from typing import TextIO

from synprobe.model import ProbeResult, State

_COLOURS = {
    State.OPEN: "\033[32m",
    State.CLOSED: "\033[31m",
    State.FILTERED: "\033[33m",
    State.UNREACHABLE: "\033[35m",
    State.ERROR: "\033[1;31m",
}
_RESET = "\033[0m"
FIELDS = ("host", "port", "state", "reason", "rtt_ms", "attempts", "engine", "source", "via")


class LineSink:
    """Writes whole lines straight to the output's fd in chunks under PIPE_BUF (4 KiB).

    Several worker processes share one stdout; a pipe write of at most 4 KiB is atomic and a
    regular file's offset is locked per write, so their lines never interleave mid-line. A
    stream without a file descriptor (a StringIO in tests) is written to as it is.
    """

    CHUNK = 3584
    PIPE_BUF = 4096  # the most one write(2) to a pipe keeps whole

    def __init__(self, out: TextIO, *, line_buffered: bool = False) -> None:
        self.out = out
        self.line_buffered = line_buffered
        self._parts: list[bytes] = []
        self._size = 0
        try:
            out.flush()
            self.fd: int | None = out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.fd = None

    def write(self, text: str) -> None:
        if self.fd is None:
            self.out.write(text)
            return
        data = text.encode()
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.CHUNK or self.line_buffered:
            self.flush()

    def write_lines(self, lines: list[str]) -> None:
        """Whole lines at once (a batch of results): joined and encoded in one go."""
        self.write("".join(lines))

    def flush(self) -> None:
        if self.fd is None:
            self.out.flush()
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        start, end = 0, len(data)
        while start < end:
            stop = end
            if end - start > self.PIPE_BUF:  # the last whole line that fits
                stop = data.rfind(b"\n", start, start + self.PIPE_BUF) + 1
                if stop <= start:  # one line longer than PIPE_BUF: no write keeps it whole
                    stop = data.find(b"\n", start) + 1 or end
            view = memoryview(data)[start:stop]
            while view:
                view = view[os.write(self.fd, view):]
            start = stop


class TableWriter:
    """Aligned columns, written as results arrive; the state is coloured on a terminal."""

    def __init__(self, out: LineSink, *, colour: bool, host_width: int, header: bool,
                 via: bool = False) -> None:
        self.out = out
        self.colour = colour
        self.host_width = host_width
        self.via = via  # a VIA column, when checks go through named real servers
        if header:
            out.write(f"{'HOST':<{host_width}}  {'PORT':>5}  {'STATE':<11}  {'REASON':<14}  "
                      f"{'RTT':>9}  TRIES" + ("  VIA\n" if via else "\n"))

    def write(self, r: ProbeResult) -> None:
        state = f"{r.state.value:<11}"
        if self.colour:
            state = f"{_COLOURS[r.state]}{state}{_RESET}"
        rtt = "-" if r.rtt is None else f"{r.rtt * 1000:.3f}ms"
        via = f"      {r.via}" if self.via else ""
        self.out.write(f"{r.host:<{self.host_width}}  {r.port:>5}  {state}  {r.reason:<14}  "
                       f"{rtt:>9}  {r.attempts}{via}\n")

    def write_all(self, results: list[ProbeResult]) -> None:
        for r in results:
            self.write(r)

    def finish(self) -> None:
        self.out.flush()


class JsonWriter:
    """One JSON object per line, keys as in ProbeResult.to_dict().

    Formatted by hand: json.dumps(to_dict()) cost 3.6 µs a result, 12-15 % of a CLI run
    (profiled); this costs ~0.5 µs. Addresses and ports need no escaping. The rest of a row
    repeats: its text from "state" on, but for the RTT, is made (by json) once per distinct
    (state, reason, attempts, engine, source, via). The RTT is written with 3 decimals, the
    same number as round(rtt_ms, 3), without round()'s cost (0.35 µs).
    """

    def __init__(self, out: LineSink) -> None:
        self.out = out
        self._parts: dict[tuple[object, ...], tuple[str, str]] = {}

    def _row_parts(self, r: ProbeResult, key: tuple[object, ...]) -> tuple[str, str]:
        """The row's text around the RTT (before it from "state" on, and after it), made
        once per `key`."""
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = (
                f',"state":"{r.state._value_}","reason":{json.dumps(r.reason)},"rtt_ms":',
                f',"attempts":{r.attempts},"engine":{json.dumps(r.engine)},'
                f'"source":{json.dumps(r.source)},"via":{json.dumps(r.via)}}}\n',
            )
        return parts

    def write(self, r: ProbeResult) -> None:
        self.write_all([r])

    def write_all(self, results: list[ProbeResult]) -> None:
        lines: list[str] = []
        append, known, row_parts = lines.append, self._parts, self._row_parts
        for r in results:
            key = (r.state._value_, r.reason, r.attempts, r.engine, r.source, r.via)
            parts = known.get(key) or row_parts(r, key)
            rtt = r.rtt
            append(f'{{"host":"{r.host}","port":{r.port}{parts[0]}'
                   f'{"null" if rtt is None else f"{rtt * 1000.0:.3f}"}{parts[1]}')
        self.out.write_lines(lines)

    def finish(self) -> None:
        self.out.flush()


class CsvWriter:
    def __init__(self, out: LineSink, *, header: bool) -> None:
        import csv  # here: only --csv needs it

        self.out = out
        self._csv = csv.writer(out, lineterminator="\n")  # one write() per row: whole lines
        if header:
            self._csv.writerow(FIELDS)

    def write(self, r: ProbeResult) -> None:
        d = r.to_dict()
        self._csv.writerow(["" if d[k] is None else d[k] for k in FIELDS])

    def write_all(self, results: list[ProbeResult]) -> None:
        for r in results:
            self.write(r)

    def finish(self) -> None:
        self.out.flush()


class Tally:
    """Counts per state, and the throughput figures for the summary and progress line."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.states: Counter[State] = Counter()
        self.started = time.monotonic()
        self.done = 0

    def add(self, r: ProbeResult) -> None:
        self.add_all([r])

    def add_all(self, results: list[ProbeResult]) -> None:
        # Counted by the members' values: a State's own hash is a Python-level call.
        counts: dict[str, int] = {}
        for r in results:
            value = r.state._value_
            counts[value] = counts.get(value, 0) + 1
        for value, count in counts.items():
            self.states[State(value)] += count
        self.done += len(results)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def merge(self, summary: dict[str, object]) -> None:
        """Add a worker's summary (as written by summary()) to this one's counts."""
        states = summary["states"]
        assert isinstance(states, dict)
        for name, count in states.items():
            self.states[State(name)] += count
            self.done += count

    def all_open(self) -> bool:
        return self.done > 0 and self.states[State.OPEN] == self.done

    def progress_line(self) -> str:
        total = f"/{self.total:,} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        return f"\r{self.done:,}{total}  {rate:,.0f}/s  open {self.states[State.OPEN]:,}  "

    def summary(self, engine: str, stats: dict[str, int]) -> dict[str, object]:
        # Microseconds, and the rate from that: a short run's rate must be recomputable from
        # what is printed (from the unrounded time, a 0.3 ms run disagreed by 0.2 %).
        elapsed = round(self.elapsed, 6)
        return {
            "engine": engine,
            "targets": self.done,
            "elapsed_s": elapsed,
            "rate_per_s": round(self.done / elapsed, 1) if elapsed > 0 else None,
            "states": {s.value: self.states[s] for s in State},
            "stats": stats,
        }


RATE_MIN_TARGETS = 100  # below this a rate says more about timeouts than about throughput


def format_summary(summary: dict[str, object]) -> str:
    """`synprobe: 1,024 targets in 0.116 s (8,844/s) with the raw engine: open 1,024 [sent ...]`"""
    states = summary["states"]
    assert isinstance(states, dict)
    counts = ", ".join(f"{k} {v:,}" for k, v in states.items() if v)
    stats = summary["stats"]
    assert isinstance(stats, dict)
    extra = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in stats.items() if v)
    done = summary["targets"]
    assert isinstance(done, int)
    line = f"synprobe: {done:,} target{'' if done == 1 else 's'}"
    elapsed, rate = summary["elapsed_s"], summary["rate_per_s"]
    if isinstance(elapsed, float | int) and elapsed > 0:
        line += f" in {format_duration(elapsed)}"
        if isinstance(rate, float | int) and done >= RATE_MIN_TARGETS:
            line += f" ({rate:,.0f}/s)"
    line += f" with the {summary['engine']} engine: {counts or 'nothing'}"
    return line + (f" [{extra}]" if extra else "")


def format_duration(seconds: float) -> str:
    """Three significant figures: 0.848 ms, 12.0 ms, 0.100 s, 1.00 s, 12.3 s (then whole
    seconds)."""
    if seconds < 0.1:
        return f"{seconds * 1e3:#.3g}".rstrip(".") + " ms"
    if seconds < 99.95:
        return f"{seconds:#.3g}".rstrip(".") + " s"
    return f"{seconds:,.0f} s"


def merge_stats(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def lost_replies(stats: dict[str, int]) -> int:
    """What the engine knows it lost: failed sends and replies the kernel dropped."""
    return stats.get("send_errors", 0) + stats.get("kernel_drops", 0)
