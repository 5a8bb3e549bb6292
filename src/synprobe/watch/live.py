"""The live view on a terminal: one row per target (or per group when they do not fit), with
status, since, last RTT and an RTT sparkline, recent changes highlighted, the latest events
below. Redrawn in place (cursor home, each line rewritten and cleared to its end, never a
full-screen clear), so it does not flicker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from synprobe.watch.entry import Entry
from synprobe.watch.state import DOWN, UNKNOWN, UP
from synprobe.watch.watcher import Watcher

BARS = "▁▂▃▄▅▆▇█"
HIGHLIGHT_FOR = 10.0  # seconds a changed row stays highlighted
EVENT_LINES = 5
RESET, BOLD, REVERSE = "\033[0m", "\033[1m", "\033[7m"
COLOURS = {UP: "\033[32m", DOWN: "\033[31m", UNKNOWN: "\033[33m"}


def sparkline(values: Iterable[float | None]) -> str:
    """RTTs as bars scaled to their own range; a check without an answer is `·`."""
    vals = list(values)
    answered = [v for v in vals if v is not None]
    if not answered:
        return "·" * len(vals)
    lo, hi = min(answered), max(answered)
    span = hi - lo
    out = []
    for v in vals:
        if v is None:
            out.append("·")
        else:
            out.append(BARS[0 if span <= 0 else min(7, int((v - lo) / span * 8))])
    return "".join(out)


def ago(seconds: float) -> str:
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _rtt(entry: Entry) -> str:
    last = entry.state.last
    if last is None:
        return "-"
    if last.rtt is None:
        return last.reason[:10]
    return f"{last.rtt * 1000:.2f}ms"


def target_rows(entries: list[Entry], now: float, colour: bool) -> list[str]:
    rows = [f"{'STATUS':<8} {'TARGET':<30} {'SINCE':>7} {'LAST':>10}  RTT HISTORY"]
    for e in sorted(entries, key=lambda e: (e.state.status != DOWN, e.target.key)):
        t, st = e.target, e.state
        name = f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}"
        if t.via:
            name += f" via {t.via}"
        since = "-" if st.since is None else ago(now - st.since)
        line = (f"{st.status:<8} {name[:30]:<30} {since:>7} {_rtt(e):>10}  "
                f"{sparkline(e.history)}")
        if colour:
            fresh = st.since is not None and now - st.since < HIGHLIGHT_FOR
            line = (REVERSE if fresh else "") + COLOURS[st.status] + line + RESET
        rows.append(line)
    return rows


def group_rows(entries: list[Entry], now: float, colour: bool) -> list[str]:
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.target.group, []).append(e)
    rows = [f"{'GROUP':<20} {'UP':>7} {'DOWN':>7} {'UNKNOWN':>7} {'CHANGED':>8}  RTT p50"]
    for name in sorted(groups):
        members = groups[name]
        counts = {UP: 0, DOWN: 0, UNKNOWN: 0}
        last_change = None
        rtts = []
        for e in members:
            counts[e.state.status] += 1
            if e.state.since is not None:
                last_change = max(last_change or 0.0, e.state.since)
            if e.state.last is not None and e.state.last.rtt is not None:
                rtts.append(e.state.last.rtt)
        rtts.sort()
        p50 = f"{rtts[len(rtts) // 2] * 1000:.2f}ms" if rtts else "-"
        changed = "-" if last_change is None else ago(now - last_change)
        line = (f"{name[:20]:<20} {counts[UP]:>7} {counts[DOWN]:>7} {counts[UNKNOWN]:>7} "
                f"{changed:>8}  {p50}")
        if colour:
            worst = DOWN if counts[DOWN] else (UNKNOWN if counts[UNKNOWN] else UP)
            fresh = last_change is not None and now - last_change < HIGHLIGHT_FOR
            line = (REVERSE if fresh else "") + COLOURS[worst] + line + RESET
        rows.append(line)
    return rows


def format_event(record: dict[str, Any]) -> str:
    where = f"{record['host']}:{record['port']}" + (f" via {record['via']}"
                                                    if record.get("via") else "")
    if record.get("event") == "address":
        return f"{record['time']}  {where}  address {record['from']} -> {record['to']}"
    rtt = "" if record.get("rtt_ms") is None else f" {record['rtt_ms']}ms"
    return (f"{record['time']}  {where}  {record['from']} -> {record['to']}  "
            f"({record['state']} {record['reason']}{rtt}, {record['count']} in a row)")


def render(watcher: Watcher, events: Iterable[dict[str, Any]], width: int, height: int,
           now: float, colour: bool = True) -> list[str]:
    """The screen, as lines no wider than `width`, at most `height` of them."""
    entries = list(watcher.entries.values())
    counts = {UP: 0, DOWN: 0, UNKNOWN: 0}
    for e in entries:
        counts[e.state.status] += 1
    head = (f"synprobe watch  {len(entries)} targets  {counts[UP]} up  {counts[DOWN]} down  "
            f"{counts[UNKNOWN]} unknown  checks {watcher.checks_started}  "
            f"late p99 {watcher.lateness.quantile(0.99) * 1000:.0f}ms")
    tail = [format_event(r) for r in events][-EVENT_LINES:]
    room = height - 3 - len(tail)
    body = target_rows(entries, now, colour)
    if len(body) > room:
        body = group_rows(entries, now, colour)
    body = body[:max(1, room)]
    lines = [head, *body, "", "recent changes:" if tail else "no changes yet", *tail]
    return [_clip(line, width) for line in lines[:height]]


def _clip(line: str, width: int) -> str:
    """Cut to `width` visible characters (escape sequences do not count)."""
    out, visible, i = [], 0, 0
    while i < len(line):
        if line[i] == "\033":
            j = line.find("m", i)
            out.append(line[i:j + 1])
            i = j + 1
            continue
        if visible < width:
            out.append(line[i])
        visible += 1
        i += 1
    text = "".join(out)
    return text + RESET if "\033" in text and not text.endswith(RESET) else text


class LiveView:
    """Redraws `render()` on `stream` every `period` seconds; `add_event` is an event sink."""

    def __init__(self, watcher: Watcher, stream: TextIO, period: float = 0.5,
                 size: Callable[[], os.terminal_size] | None = None,
                 wall: Callable[[], float] = time.time,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.watcher = watcher
        # Called when the terminal is gone (a write fails: EIO after a hangup): an interactive
        # view without its terminal should not live on as an orphan.
        self.on_lost = on_lost
        self.stream = stream
        self.period = period
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_LINES)
        self._size = size or (lambda: os.get_terminal_size(stream.fileno()))
        self._wall = wall
        self._drawn = 0

    def add_event(self, record: dict[str, Any]) -> None:
        self.events.append(record)

    def draw(self) -> None:
        try:
            size = self._size()
        except OSError:
            size = os.terminal_size((100, 30))
        lines = render(self.watcher, self.events, size.columns, size.lines, self._wall())
        # Home, each line rewritten and cleared to its end, then whatever the last frame had
        # below cleared: no blank frame in between, so no flicker.
        out = ["\033[H"] + [line + "\033[K\n" for line in lines[:-1]] + [lines[-1] + "\033[K"]
        out.append("\033[J")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    async def run(self) -> None:
        try:
            self.stream.write("\033[?25l\033[2J")  # hide the cursor, clear once
            while True:
                self.draw()
                await asyncio.sleep(self.period)
        except (OSError, ValueError):  # the terminal hung up (EIO), or the stream was closed
            if self.on_lost is not None:
                self.on_lost()
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.draw()
                self.stream.write("\033[?25h\n")  # the cursor back, below the last frame
                self.stream.flush()
