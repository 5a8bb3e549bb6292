"""The live view in a real terminal (tmux): rows per target, a change shown and highlighted,
groups when the targets do not fit. Targets are on loopback (shaker engine)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pane:
    def __init__(self, command: list[str], width: int, height: int) -> None:
        self.name = f"sp-watch-{uuid.uuid4().hex[:8]}"
        # The pane outlives the command (for a minute), so a failure can still be read in it.
        shell = f"{shlex.join(command)}; echo; echo EXITED $?; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y",
                        str(height), shell], check=True)

    def text(self, escapes: bool = False) -> str:
        argv = ["tmux", "capture-pane", "-p", "-t", self.name] + (["-e"] if escapes else [])
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def wait_for(self, predicate, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if predicate(text):
                return text
            assert "EXITED" not in text, f"synprobe watch exited:\n{text}"
            assert time.monotonic() < deadline, f"pane never matched:\n{text}"
            time.sleep(0.1)

    def watch_pid(self) -> int:
        """The synprobe process: the only child of the pane's shell."""
        shell = subprocess.run(["tmux", "display-message", "-p", "-t", self.name,
                                "#{pane_pid}"], capture_output=True, text=True,
                               check=True).stdout.strip()
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def pane() -> Iterator[type[Pane]]:
    made: list[Pane] = []

    class Tracked(Pane):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    yield Tracked
    for p in made:
        p.close()


def hang_up(p: Pane) -> None:
    """Close the terminal under `synprobe watch`: it must end by itself (a live view without
    its terminal would otherwise live on as an orphan, SIGHUP being its reload signal)."""
    pid = p.watch_pid()
    p.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)  # ours, by PID; and the test fails
        raise AssertionError("synprobe watch outlived its terminal")


def attributes_at(escaped: str, marker: str) -> set[str]:
    """SGR parameters in force at `marker` in a `capture-pane -e` text."""
    before = escaped[:escaped.index(marker)]
    params: set[str] = set()
    for code in re.findall(r"\x1b\[([0-9;]*)m", before):
        if code in ("", "0"):
            params.clear()
        else:
            params.update(code.split(";"))
    return params


def row(text: str, target: str) -> list[str]:
    return [line.split() for line in text.splitlines() if f" {target} " in f" {line} "]


def test_live_view_rows_and_a_change(pane) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    open_t = f"127.0.0.1:{listener.getsockname()[1]}"
    closed_t = f"127.0.0.1:{free_port()}"
    p = pane([sys.executable, "-m", "synprobe", "watch", "--engine", "shaker", "--interval",
              "0.2", "--rise", "1", "--fall", "2", open_t, closed_t], 120, 30)
    text = p.wait_for(lambda t: row(t, open_t) and row(t, open_t)[0][0] == "up"
                      and row(t, closed_t) and row(t, closed_t)[0][0] == "down")
    assert text.splitlines()[0].startswith("synprobe watch  2 targets  1 up  1 down")
    assert "{" not in text  # no JSON lines on a terminal
    listener.close()
    text = p.wait_for(lambda t: row(t, open_t)[0][0] == "down")
    assert any(f"{open_t}  up -> down" in line for line in text.splitlines())
    # The changed row is highlighted (reverse video) and red: the SGR attributes in force
    # where the row starts (tmux emits a code only where attributes change, so they may have
    # been set on an earlier line, e.g. another red, reversed row).
    assert {"7", "31"} <= attributes_at(p.text(escapes=True), f"down     {open_t}")
    # The sparkline shows the answered checks, then the unanswered ones.
    spark = row(text, open_t)[0][-1]
    assert spark.endswith("·") and any(c in spark for c in "▁▂▃▄▅▆▇█")
    hang_up(p)


def test_live_view_groups_when_targets_do_not_fit(pane, tmp_path) -> None:
    cfg = tmp_path / "w.toml"
    ports = sorted({free_port() for _ in range(40)})[:30]
    assert len(ports) == 30
    cfg.write_text('[defaults]\nengine = "shaker"\ninterval = 0.5\n'
                   f'[groups.alpha]\ntargets = {[f"127.0.0.1:{p}" for p in ports[:20]]}\n'
                   f'[groups.beta]\ntargets = {[f"127.0.0.1:{p}" for p in ports[20:]]}\n'
                   .replace("'", '"'))
    p = pane([sys.executable, "-m", "synprobe", "watch", "--config", str(cfg)], 100, 16)
    # Both groups decided: the first checks are spread over the interval, beta's after alpha's.
    text = p.wait_for(lambda t: row(t, "alpha") and row(t, "alpha")[0][2] == "20"
                      and row(t, "beta") and row(t, "beta")[0][2] == "10")
    assert row(text, "alpha")[0][1:4] == ["0", "20", "0"]  # up, down, unknown
    assert row(text, "beta")[0][1:4] == ["0", "10", "0"]
    assert len(text.rstrip("\n").splitlines()) <= 16
    hang_up(p)
