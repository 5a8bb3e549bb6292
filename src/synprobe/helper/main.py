"""The shaker helper process: a Prober's engine loop, away from its owner's GIL.

The shaker's guarantee (never the final ACK) needs its loop to close each answered socket within
the kernel's ~200 ms delayed-ACK window. In the owner's process, any thread that holds the GIL
that long (a backtracking regex, a compression call, a long GC pause) makes the kernel complete
handshakes; here only the engine and two short-lived steps of its own (encoding results,
waiting for the owner's death) run Python. Started by `helper.process.HelperEngine`
as `python -c ... <fd> <owner pid>` in the owner thread's network namespace.

Protocol (frames, see framing.py). In: ("options", dict), then ("targets", [(host, port),
...]) any number of times, then EOF (the owner closed, or died). Out: once the engine is built,
("ready", pid, stats) or ("failed", kind, message); then ("results", [row, ...], stats) per
loop turn; at the end ("end", stats) or ("failed", kind, message).

Threads: the engine loop (main thread) reads targets itself (the socket is its source's wakeup
fd) and never blocks on output: a writer thread encodes and sends results. A watcher thread
waits for the owner's death (pidfd) and shuts the channel, so a helper whose owner was killed
finishes its attempts in flight (each ends in a RST or a timeout) and exits.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from synprobe.engines.base import Engine, ProbeOptions
from synprobe.helper.framing import FrameError, FrameReader, encode
from synprobe.model import ProbeResult, Target
from synprobe.registry import create_engine

ResultRow = tuple[str, int, str, str, float | None, int, str, str | None, str | None]


def result_row(r: ProbeResult) -> ResultRow:
    return (r.host, r.port, r.state.value, r.reason, r.rtt, r.attempts, r.engine, r.source,
            r.via)


class ChannelSource:
    """The engine's TargetSource, read straight from the channel: its fd is the wakeup fd.

    The engine registers it edge-triggered, so pull() drains everything readable into a deque
    before answering (MSG_DONTWAIT: the socket itself stays blocking for the writer)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.wakeup_fd: int | None = sock.fileno()
        self._reader = FrameReader()
        self._ready: deque[Target] = deque()
        self._eof = False

    def _drain(self, want: int) -> None:
        """Read until `want` targets are ready or nothing more is readable. Decoding runs on
        the engine's thread, so it is done in slices (a 64 KiB read is ~3,000 targets, a few
        ms): a backlog of a million submits must not hold the loop up for a second. Stopping
        early is safe with an edge-triggered wakeup: pull() then returns all it was asked for,
        and the engine pulls again on its next turn with room, wakeup or not."""
        while not self._eof and len(self._ready) < want:
            try:
                chunk = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""  # the channel is broken: no more targets can come
            if not chunk:
                self._eof = True
                return
            try:
                messages = self._reader.feed(chunk)
            except FrameError:
                self._eof = True  # an owner that speaks garbage gets no more checks
                return
            for message in messages:
                if message[0] == "targets":
                    self._ready.extend(Target(host, port) for host, port in message[1])

    def pull(self, limit: int) -> list[Target] | None:
        self._drain(limit)
        if not self._ready:
            return None if self._eof else []
        return [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]


def _send(sock: socket.socket, message: object) -> bool:
    try:
        sock.sendall(encode(message))
    except OSError:  # the owner is gone: results have nowhere to go
        return False
    return True


def _write(sock: socket.socket, out: queue.SimpleQueue[object], engine: Engine) -> None:
    """The writer thread: results to the owner, until the engine loop's end marker."""
    alive = True
    while True:
        item = out.get()
        if isinstance(item, list):
            if alive:
                alive = _send(sock, ("results", [result_row(r) for r in item], engine.stats()))
        elif isinstance(item, BaseException):
            if alive:
                _send(sock, ("failed", type(item).__name__, str(item)))
            return
        else:
            if alive:
                _send(sock, ("end", engine.stats()))
            return


def _watch_owner(owner: int, sock: socket.socket) -> None:
    """Shut the channel when the owner process exits, whoever else holds a copy of its end
    (a child the owner forked would keep EOF from ever coming)."""
    try:
        pidfd = os.pidfd_open(owner)
    except OSError:
        pidfd = None
    # Checked after opening: an owner that died before pidfd_open is caught here.
    while os.getppid() == owner:
        if pidfd is not None:
            if select.select([pidfd], [], [])[0]:
                break
        else:
            threading.Event().wait(1.0)  # no pidfd (Linux < 5.3): poll the parent
    with contextlib.suppress(OSError):  # already closed: the helper is ending anyway
        sock.shutdown(socket.SHUT_RDWR)


def _recv_options(sock: socket.socket) -> dict[str, Any]:
    reader = FrameReader()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the owner closed the channel before sending options")
        messages = reader.feed(chunk)
        if messages:
            kind, options = messages[0]
            if kind != "options" or not isinstance(options, dict):
                raise FrameError(f"expected options, got {kind!r}")
            return options


def serve(sock: socket.socket, owner: int) -> int:
    threading.Thread(target=_watch_owner, args=(owner, sock), name="synprobe-owner-watch",
                     daemon=True).start()
    try:
        opts = _recv_options(sock)
    except (EOFError, OSError, FrameError):
        return 1
    try:
        engine = create_engine("shaker", ProbeOptions(**opts))
    except Exception as exc:  # UsageError, EngineUnavailable...: the owner raises it
        _send(sock, ("failed", type(exc).__name__, str(exc)))
        return 1
    out: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = threading.Thread(target=_write, args=(sock, out, engine), name="synprobe-writer",
                              daemon=True)
    _send(sock, ("ready", os.getpid(), engine.stats()))
    writer.start()
    try:
        for batch in engine.run(ChannelSource(sock)):
            out.put(batch)  # never blocks: the loop's closes do not wait for the owner
    except BaseException as exc:
        out.put(exc)
    else:
        out.put(None)
    finally:
        engine.close()
    writer.join()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    fd, owner = int(args[0]), int(args[1])
    # The owner stops us (EOF on the channel). We run in a session of our own, so a terminal's
    # Ctrl-C or Ctrl-Z never reaches us; should one be sent to us anyway, it is the owner's to
    # handle, and being stopped with answered sockets open is what this process exists to avoid.
    for sig in (signal.SIGINT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    with socket.socket(fileno=fd) as sock:
        return serve(sock, owner)


if __name__ == "__main__":
    sys.exit(main())
