"""Accept-counting TCP listener, run as a script inside the lab's server namespace.

Standard library only, because it is started as `python -I -S listener.py` (fast start, no site
packages). It listens on 0.0.0.0 and [::] (IPV6_V6ONLY) for each --port, so together with the
server's `local` routes it answers for every AnyIP address, and counts every accept().

Control channel: a stream socket inherited as --ctl-fd, newline-delimited. The parent sends
`count`, `stats` or `quit`; before answering, the listener drains both accept queues, so a
connection that was in the accept queue when the request arrived is always counted. The listener
says `ready` once listening, and exits when the channel reaches EOF (the parent died), so it never
outlives the test process.

--close decides what happens to an accepted connection:
  wait (default): keep it until the peer closes or resets, then close. The client is the active
  closer, so TIME_WAIT (if any) lands in the client namespace, as with a real server that waits
  for its client. Beyond the descriptor limit the oldest held connection is reset.
  rst: close at once with SO_LINGER 0 (RST, no TIME_WAIT anywhere).
  fin: close at once normally (the server is the active closer).
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import signal
import socket
import struct
import sys
from collections import Counter

LINGER_RST = struct.pack("ii", 1, 0)
FD_HEADROOM = 64  # descriptors kept free for listeners, the control channel and Python itself


def _raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one; return how many connections we may hold."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return max(hard - FD_HEADROOM, 16)


def _listen(family: socket.AddressFamily, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # Separate v4 and v6 sockets keep v4 peers as plain IPv4 (no ::ffff: mapped addresses).
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    sock.listen(backlog)  # capped by net.core.somaxconn, which the lab raises to 65535
    sock.setblocking(False)
    return sock


class Listener:
    def __init__(self, ports: list[int], backlog: int, close: str, max_held: int) -> None:
        self.close_mode = close
        self.max_held = max_held
        self.accepted = 0
        self.by_addr: Counter[str] = Counter()
        self.listeners = {
            s.fileno(): s
            for port in ports
            for s in (_listen(fam, port, backlog) for fam in (socket.AF_INET, socket.AF_INET6))
        }
        self.held: dict[int, socket.socket] = {}  # insertion order = age, for eviction
        self.ep = select.epoll()
        for fd in self.listeners:
            self.ep.register(fd, select.EPOLLIN)

    def drain(self, lsock: socket.socket) -> None:
        """Accept everything queued on one listening socket."""
        while True:
            if len(self.held) >= self.max_held:
                self._close(next(iter(self.held)), rst=True)
            try:
                conn, _peer = lsock.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            self.by_addr[conn.getsockname()[0]] += 1
            if self.close_mode == "wait":
                conn.setblocking(False)
                self.held[conn.fileno()] = conn
                self.ep.register(conn.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            else:
                if self.close_mode == "rst":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                conn.close()

    def drain_all(self) -> None:
        for lsock in self.listeners.values():
            self.drain(lsock)

    def _close(self, fd: int, rst: bool = False) -> None:
        conn = self.held.pop(fd)
        self.ep.unregister(fd)
        if rst:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        conn.close()

    def on_conn_event(self, fd: int) -> None:
        """Discard data; close once the peer has closed or reset."""
        try:
            data = self.held[fd].recv(65536)
        except BlockingIOError:
            return
        except OSError:  # ECONNRESET and friends: the peer is gone
            data = b""
        if not data:
            self._close(fd)

    def answer(self, command: str) -> str | None:
        self.drain_all()
        if command == "count":
            return str(self.accepted)
        if command == "stats":
            return json.dumps(
                {"accepted": self.accepted, "held": len(self.held), "by_addr": self.by_addr}
            )
        return f"error unknown command {command!r}"


def serve(listener: Listener, ctl: socket.socket) -> None:
    listener.ep.register(ctl.fileno(), select.EPOLLIN)
    ctl.sendall(b"ready\n")
    buf = b""
    while True:
        for fd, _events in listener.ep.poll():
            if fd in listener.listeners:
                listener.drain(listener.listeners[fd])
            elif fd in listener.held:
                listener.on_conn_event(fd)
            elif fd == ctl.fileno():
                chunk = ctl.recv(4096)
                if not chunk:
                    return  # the parent is gone: do not outlive it
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    command = line.decode().strip()
                    if command == "quit":
                        return
                    ctl.sendall(f"{listener.answer(command)}\n".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctl-fd", type=int, required=True)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--backlog", type=int, default=65535)
    parser.add_argument("--close", choices=("wait", "rst", "fin"), default="wait")
    args = parser.parse_args(argv)
    # The parent tears us down (quit, then SIGTERM by PID); a terminal Ctrl-C is its business.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=args.ctl_fd)
    try:
        listener = Listener(args.port, args.backlog, args.close, _raise_nofile())
    except (OSError, OverflowError, ValueError) as exc:  # bad/busy port: tell the parent why
        print(f"listener setup failed: {exc}", file=sys.stderr)
        return 1
    serve(listener, ctl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
