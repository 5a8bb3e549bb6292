"""The live view's pure parts: sparkline, durations, clipping with colour escapes, layout."""

from __future__ import annotations

import pytest

import synprobe
from synprobe.model import ProbeResult, State
from synprobe.watch.config import parse_config
from synprobe.watch.entry import Entry
from synprobe.watch.live import _clip, ago, render, sparkline


def test_sparkline_scales_and_marks_unanswered() -> None:
    assert sparkline([0.001, 0.002, None, 0.009]) == "▁▂·█"
    assert sparkline([None, None]) == "··"
    assert sparkline([0.005, 0.005]) == "▁▁"
    assert sparkline([]) == ""


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3 * 3600 + 120, "3h02m"), (90000, "1d01h")])
def test_ago(seconds: float, text: str) -> None:
    assert ago(seconds) == text


def test_clip_counts_visible_characters_only() -> None:
    assert _clip("\033[31mabcdef\033[0m", 3) == "\033[31mabc\033[0m"
    assert _clip("abcdef", 10) == "abcdef"


def watcher_with(n: int) -> synprobe.Watcher:
    cfg = parse_config({"groups": {
        "a": {"targets": [f"198.18.0.{i}:80" for i in range(1, n + 1)]},
        "b": {"targets": ["198.18.1.1:80"]}}})
    w = synprobe.Watcher(cfg)
    for t in cfg.targets:
        e = w.entries[t.key] = Entry(t)
        state = State.OPEN if t.host.endswith(".1") else State.FILTERED
        e.state.apply(ProbeResult(t.host, t.port, state, "x", None, 1, "raw"), 2, 3, 100.0)
    return w


def test_rows_per_target_when_they_fit_down_first() -> None:
    lines = render(watcher_with(3), [], 100, 30, now=105.0, colour=False)
    assert lines[0].startswith("synprobe watch  4 targets  2 up  2 down  0 unknown")
    assert [line.split()[:2] for line in lines[2:6]] == [
        ["down", "198.18.0.2:80"], ["down", "198.18.0.3:80"], ["up", "198.18.0.1:80"],
        ["up", "198.18.1.1:80"]]
    assert lines[2].split()[2] == "5s"


def test_groups_when_targets_do_not_fit() -> None:
    lines = render(watcher_with(50), [], 100, 20, now=105.0, colour=False)
    assert len(lines) <= 20
    assert [line.split()[:4] for line in lines[2:4]] == [["a", "1", "49", "0"],
                                                       ["b", "1", "0", "0"]]
