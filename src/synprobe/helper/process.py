"""The owner's side of the shaker helper process: an Engine whose loop runs in another process.

A long-lived `Prober(engine="shaker")` lives inside someone else's application, whose threads
may hold the GIL for a second at a time. The shaker loop must close every answered socket
within the kernel's ~200 ms delayed-ACK window or the kernel completes the handshake, so the
loop runs in a helper process (`helper.main`) that this object starts and owns:

- started with the interpreter running us (`sys.executable`), from the calling thread, so it is
  in that thread's network namespace (as the sockets of an in-process loop would be);
- no fork of the caller's process image: its threads, locks and memory stay out of it;
- it dies with its owner: EOF on the channel, or the owner's pidfd if someone else still holds
  the channel (a forked child of the owner); it never outlives its attempts in flight;
- in a session of its own, so job-control signals sent to the owner's group do not stop it;
- results come back over a socketpair; this object's `run()` (the Prober's loop thread) ships
  targets in and yields results out, so a stalled owner delays results, never a close.

Costs (bench/helper_cost.py, docs/shaker-window.md): one interpreter start when the Prober is
made; per check, a round trip through the socketpair.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from synprobe.engines.base import ProbeOptions, TargetSource
from synprobe.errors import EngineUnavailable, UsageError
from synprobe.helper.framing import FrameError, FrameReader, encode
from synprobe.model import ProbeResult, State, Target, new_result

READY_TIMEOUT = 30.0  # seconds for the helper to start and build its engine
EXIT_TIMEOUT = 5.0  # after its end message, or after our channel closed
FRAME_TARGETS = 1024  # per frame: the helper decodes them between its loop's turns
PULL_PER_TURN = 4 * FRAME_TARGETS
_ERRORS: dict[str, type[Exception]] = {"UsageError": UsageError,
                                       "EngineUnavailable": EngineUnavailable}
_BOOT = "import sys; from synprobe.helper.main import main; sys.exit(main())"


def _rebuild(kind: str, message: str) -> Exception:
    """The helper's exception as the owner would have seen it in-process."""
    known = _ERRORS.get(kind)
    if known is not None:
        return known(message)
    return RuntimeError(f"the shaker helper process failed: {kind}: {message}")


def _helper_env() -> dict[str, str]:
    """The owner's environment, with this synprobe first on the path: the helper must import
    the same code as its owner (a source tree on sys.path, not only an installed copy)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class HelperEngine:
    """The Engine protocol, implemented by a helper process running the shaker engine."""

    name = "shaker"
    supports_via = False

    def __init__(self, options: ProbeOptions) -> None:
        if not sys.executable:
            raise EngineUnavailable(
                "a shaker Prober runs its loop in a helper process, but sys.executable is "
                "not set, so no interpreter can be started")
        self.options = options
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = ours
        self._stats: dict[str, int] = {}
        self._reader = FrameReader()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_helper_env(),
                # A session of its own: job control aimed at the owner's process group (a
                # terminal's Ctrl-C or Ctrl-Z, `kill -STOP -PGID`) must not stop the loop with
                # answered sockets in flight; it ends with its owner anyway (see the helper).
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise EngineUnavailable(f"cannot start the shaker helper process: {exc}") from exc
        finally:
            theirs.close()
        try:
            self._sock.sendall(encode(("options", dataclasses.asdict(options))))
            self.pid = self._await_ready()
        except BaseException:
            self.close()
            raise

    def preflight(self, vias: Sequence[str] = (), families: Iterable[bool] = ()) -> None:
        """The helper said "ready" (its engine was made) before the constructor returned."""

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        from synprobe.engines.shaker import describe_connect  # no scapy: the shaker's module

        return describe_connect(self.options, target, as_json=as_json)

    def _await_ready(self) -> int:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
                raise EngineUnavailable(
                    f"the shaker helper process did not start within {READY_TIMEOUT:g} s")
            for message in self._receive():
                if message[0] == "ready":
                    self._stats = dict(message[2])
                    return int(message[1])
                if message[0] == "failed":
                    raise _rebuild(message[1], message[2])

    def _receive(self) -> list[Any]:
        """The messages that completed with what is readable now; EOF is an error (the helper
        always says "end" or "failed" before it closes)."""
        try:
            chunk = self._sock.recv(1 << 20)
        except OSError:  # ECONNRESET: it died with our targets unread
            chunk = b""
        if not chunk:
            raise self._died()
        try:
            return self._reader.feed(chunk)
        except FrameError as exc:
            raise RuntimeError(f"the shaker helper process sent garbage: {exc}") from exc

    def _died(self) -> RuntimeError:
        return RuntimeError(f"the shaker helper process (pid {self._proc.pid}) exited "
                            f"unexpectedly ({self._exit_status()})")

    def _exit_status(self) -> str:
        try:
            code = self._proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        """Ship targets to the helper as the source gives them; yield its results. Ends when
        the source is closed and the helper has finished every check it was given."""
        poller = select.epoll()
        wakeup = source.wakeup_fd
        sock_fd = self._sock.fileno()
        poller.register(sock_fd, select.EPOLLIN)
        if wakeup is not None:
            poller.register(wakeup, select.EPOLLIN)
        feeding = True
        more = False
        try:
            while True:
                if feeding:
                    feeding, more = self._feed(source)
                    if not feeding and wakeup is not None:
                        poller.unregister(wakeup)
                # A source without a wakeup fd never says "nothing yet", and one that had more
                # than a turn's worth gives no new wakeup for the rest: pull again at once.
                busy = feeding and (more or wakeup is None)
                for fd, _ in poller.poll(0 if busy else -1):
                    if fd != sock_fd:
                        continue  # the wakeup fd: the next turn pulls
                    for message in self._receive():
                        kind = message[0]
                        if kind == "results":
                            self._stats = dict(message[2])
                            yield [_result(row) for row in message[1]]
                        elif kind == "end":
                            self._stats = dict(message[1])
                            return
                        elif kind == "failed":
                            raise _rebuild(message[1], message[2])
        finally:
            poller.close()

    def _feed(self, source: TargetSource) -> tuple[bool, bool]:
        """Send up to a turn's worth of what the source has ready. Returns (still feeding,
        maybe more ready); not feeding once the source is closed (the helper then gets EOF and
        ends after its checks in flight). A turn's worth at a time, so results keep flowing
        back while a large backlog is shipped."""
        targets = source.pull(PULL_PER_TURN)
        if targets is None:
            with contextlib.suppress(OSError):  # a dead helper: run() reads its EOF
                self._sock.shutdown(socket.SHUT_WR)
            return False, False
        try:
            for i in range(0, len(targets), FRAME_TARGETS):
                batch = targets[i:i + FRAME_TARGETS]
                self._sock.sendall(encode(("targets", [(t.host, t.port) for t in batch])))
        except OSError:  # EPIPE, ECONNRESET
            raise self._died() from None
        return True, len(targets) == PULL_PER_TURN

    @property
    def returncode(self) -> int | None:
        """The helper's exit status once reaped (by close()), else None."""
        return self._proc.returncode

    def stats(self) -> dict[str, int]:
        """The helper's counters as of its last batch of results (final once run() ended)."""
        return dict(self._stats)

    def close(self) -> None:
        """Close the channel (the helper ends after its checks in flight) and reap it."""
        self._sock.close()
        try:
            self._proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Every attempt ends within a second; one still running is stuck: kill it (by
            # PID; exiting closes its sockets, and SO_LINGER 0 makes each close a RST).
            self._proc.kill()
            self._proc.wait()


def _result(row: Any) -> ProbeResult:
    host, port, state, reason, rtt, attempts, engine, source, via = row
    return new_result(host, port, State(state), reason, rtt, attempts, engine, source, via)
