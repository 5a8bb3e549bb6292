"""Start, query and stop the accept-counting listener (`listener.py`) in a namespace."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .nsutil import LabError, exec_argv

LISTENER_SCRIPT = Path(__file__).with_name("listener.py")


class ListenerProcess:
    """The listener subprocess plus the parent's end of its control channel.

    Queries are serialized by a lock, so `accept_count()` may be called from any thread.
    """

    def __init__(
        self,
        ns: str,
        ports: tuple[int, ...],
        *,
        backlog: int = 65535,
        close: str = "wait",
        ready_timeout: float = 10.0,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctl = ours
        self._buf = b""
        self._lock = threading.Lock()
        argv = [sys.executable, "-I", "-S", str(LISTENER_SCRIPT), "--ctl-fd", str(theirs.fileno())]
        argv += [f"--port={p}" for p in ports] + [f"--backlog={backlog}", f"--close={close}"]
        try:
            # `ip netns exec` execs in place, so Popen's PID is the listener's PID, and it keeps
            # inherited descriptors, so the control socket reaches the script. A new session
            # keeps a terminal's Ctrl-C away from it.
            self.proc = subprocess.Popen(
                exec_argv(ns, argv),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.stderr_text = ""
        try:
            line = self._readline(ready_timeout)
        except (LabError, OSError) as exc:
            self.stop()
            raise LabError(f"listener did not start: {exc}: {self.stderr_text}") from exc
        if line != "ready":
            self.stop()
            raise LabError(f"listener said {line!r} instead of ready: {self.stderr_text}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"no answer from listener pid {self.pid} within {timeout}s")
            self._ctl.settimeout(remaining)
            try:
                chunk = self._ctl.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise LabError(f"listener pid {self.pid} closed its control channel")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def request(self, command: str, timeout: float = 10.0) -> str:
        with self._lock:
            self._ctl.sendall(f"{command}\n".encode())
            answer = self._readline(timeout)
        if answer.startswith("error"):
            raise LabError(f"listener: {answer}")
        return answer

    def accept_count(self) -> int:
        return int(self.request("count"))

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self.request("stats"))
        return stats

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the listener to quit; escalate to SIGTERM then SIGKILL (by PID) if it lingers."""
        if self.proc.poll() is None:
            # A broken channel means the listener is already gone; the signals below still apply.
            with contextlib.suppress(OSError):
                self._ctl.sendall(b"quit\n")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
        self._ctl.close()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            # Only fatal errors are written there, so reading after exit cannot block long.
            self.stderr_text = self.proc.stderr.read().decode(errors="replace").strip()
            self.proc.stderr.close()
