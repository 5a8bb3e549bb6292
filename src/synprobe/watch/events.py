"""State-change events: one JSON line each, and the `--on-change` command run per change.

The command never blocks the checks: changes queue (bounded; overflow is counted and logged),
at most `concurrency` commands run at once, each is killed after `timeout` seconds, and its
failures are logged on stderr, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from synprobe.watch.state import Transition


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def event_record(host: str, port: int, via: str | None, change: Transition) -> dict[str, Any]:
    r = change.result
    return {
        "time": rfc3339(change.time),
        "event": "state",
        "host": host,
        "port": port,
        "via": via,
        "from": change.before,
        "to": change.after,
        "state": r.state.value,
        "reason": r.reason,
        "rtt_ms": None if r.rtt is None else round(r.rtt * 1000.0, 3),
        "count": change.count,
        "address": r.host,
    }


def event_env(record: dict[str, Any]) -> dict[str, str]:
    """The `--on-change` command's environment: the event as SYNPROBE_* variables."""
    env = dict(os.environ)
    for key in ("host", "port", "via", "from", "to", "state", "reason", "rtt_ms", "time",
                "count", "address"):
        value = record.get(key)
        env[f"SYNPROBE_{key.upper()}"] = "" if value is None else str(value)
    return env


class EventWriter:
    """JSON lines to a stream, flushed per line (a reader tailing the file sees each change)."""

    def __init__(self, stream: TextIO, close: bool = False) -> None:
        self._stream = stream
        self._close = close

    @classmethod
    def open(cls, path: str) -> EventWriter:
        return cls(open(path, "a", encoding="utf-8", buffering=1), close=True)

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, separators=(", ", ": ")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._close:
            self._stream.close()


class ChangeRunner:
    """Runs `command` (through /bin/sh) once per event, off the check path."""

    def __init__(self, command: str, *, concurrency: int = 4, timeout: float = 10.0,
                 backlog: int = 1000, log: Callable[[str], None] | None = None) -> None:
        self.command = command
        self.timeout = timeout
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(backlog)
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(concurrency)]
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.ran = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._log(f"synprobe watch: --on-change backlog full, event for {record['host']}:"
                      f"{record['port']} not passed to the command ({self.dropped} so far)")

    async def _work(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._run(record)
            finally:
                self._queue.task_done()

    async def _run(self, record: dict[str, Any]) -> None:
        where = f"{record['host']}:{record['port']} {record['from']}->{record['to']}"
        try:
            proc = await asyncio.create_subprocess_shell(
                self.command, env=event_env(record), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=None, start_new_session=True)
        except OSError as exc:
            self.failed += 1
            self._log(f"synprobe watch: --on-change could not start ({where}): {exc}")
            return
        try:
            code = await asyncio.wait_for(proc.wait(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # its own session: the shell and what it started
            await proc.wait()
            self.failed += 1
            self._log(f"synprobe watch: --on-change killed after {self.timeout:g} s ({where})")
            return
        self.ran += 1
        if code != 0:
            self.failed += 1
            self._log(f"synprobe watch: --on-change exited {code} ({where})")

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout`) for queued commands to finish."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    def close(self) -> None:
        for w in self._workers:
            w.cancel()
