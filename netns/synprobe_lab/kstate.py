"""Kernel state inside a namespace: socket states (ss), listen queues, SNMP counters (nstat)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from .nsutil import exec_argv, run

T = TypeVar("T")

# ss(8) state names accepted by count_states (the ones worth asserting on in synprobe's tests).
STATES = frozenset({
    "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2", "time-wait", "closed",
    "close-wait", "last-ack", "listening", "closing",
})


def _port_filter(port: int | None) -> list[str]:
    return [] if port is None else [f"( sport = :{port} or dport = :{port} )"]


def count_states(ns: str, state: str | Sequence[str], port: int | None = None) -> int:
    """Number of TCP sockets (v4 + v6) in `state` in `ns`, optionally touching `port`.

    `state` is an ss(8) name: "time-wait", "syn-recv", "syn-sent", "established", ...; or
    several, counted in one walk of the socket table (two calls could count a socket that
    moves between them twice, or not at all). SYN-RECV counts the server's request sockets
    (half-open connections it is answering).
    """
    states = (state,) if isinstance(state, str) else tuple(state)
    for one in states:
        if one not in STATES:
            raise ValueError(f"unknown TCP state {one!r}; one of {sorted(STATES)}")
    filters = [word for one in states for word in ("state", one)]
    out = run(exec_argv(ns, ["ss", "-Htn", *filters, *_port_filter(port)])).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def listen_queue(ns: str, port: int) -> int:
    """Connections waiting in the accept queue of the listeners on `port` (v4 + v6 summed).

    For a LISTEN socket ss reports the accept-queue length as Recv-Q; with the lab's listener
    it is normally 0 because the listener accepts as soon as a connection is ready.
    """
    out = run(exec_argv(ns, ["ss", "-Hltn", f"( sport = :{port} )"])).stdout
    total = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN":
            total += int(fields[1])
    return total


def nstat(ns: str) -> dict[str, int]:
    """Absolute SNMP/netstat counters of `ns` (`nstat -asz`), e.g. "TcpExtListenDrops".

    -s keeps nstat's history file untouched, so calls never interfere with each other.
    """
    out = run(exec_argv(ns, ["nstat", "-asz", "--json"])).stdout
    data = json.loads(out)
    counters = data.get("kernel", data)
    return {name: int(value) for name, value in counters.items()}


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.005,
             what: str | None = None) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` expires.

    This is the lab's only way to wait for the kernel: a deadline on an observable condition,
    never a fixed sleep. Raises TimeoutError naming `what` (or the predicate) and its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            label = what or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(f"timed out after {timeout}s waiting for {label} (last: {value!r})")
        time.sleep(interval)
