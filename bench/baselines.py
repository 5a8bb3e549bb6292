"""Baselines for the benchmark: a plain connect() checker, and how zmap and nmap are driven.

Run the plain checker as a script (standard library only, so it costs what any small Python
checker costs; the benchmark runs it inside the lab's client namespace):

    python3 bench/baselines.py 198.19.0.0/16 -p 80 --concurrency 1000 --timeout 0.5

It completes every handshake (non-blocking connect(), epoll, the same concurrency as synprobe's
default) and then close()s normally. That is what a "TCP check" usually is, and its costs are
the point of the comparison: the server's accept() returns for every open port, and the client is
left with a TIME_WAIT for each. It prints one JSON object: {"targets", "opens", "closed", ...}.

`zmap_argv`/`nmap_argv` build the command lines of the two scanners for the lab, and
`count_zmap`/`count_nmap` count the open ports in their output files.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY)


def iter_targets(net: str, ports: list[int]) -> Iterator[tuple[str, int]]:
    """Every address of `net` on each port, host varying fastest (a plain nested loop)."""
    network = ipaddress.ip_network(net)
    first = int(network.network_address)
    ntoa = socket.inet_ntoa
    for port in ports:
        for value in range(first, first + network.num_addresses):
            yield ntoa(value.to_bytes(4, "big")), port


def plain_connect(net: str, ports: list[int], concurrency: int, timeout: float) -> dict[str, int]:
    """Connect to every target, close normally; count how each connect() ended."""
    poller = select.epoll()
    inflight: dict[int, socket.socket] = {}
    deadlines: deque[tuple[float, int, socket.socket]] = deque()
    counts = {"targets": 0, "opens": 0, "closed": 0, "timeouts": 0, "errors": 0}
    targets = iter_targets(net, ports)
    exhausted = False
    clock = time.monotonic
    flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    try:
        while True:
            while not exhausted and len(inflight) < concurrency:
                target = next(targets, None)
                if target is None:
                    exhausted = True
                    break
                counts["targets"] += 1
                sock = socket.socket(socket.AF_INET, flags)
                err = sock.connect_ex(target)
                if err == 0 or err in _IN_PROGRESS:
                    fd = sock.fileno()
                    poller.register(fd, select.EPOLLOUT)
                    inflight[fd] = sock
                    deadlines.append((clock() + timeout, fd, sock))
                else:
                    sock.close()
                    counts["errors"] += 1
            if exhausted and not inflight:
                return counts
            wait = max(0.0, deadlines[0][0] - clock()) if deadlines else -1
            for fd, _ev in poller.poll(wait, 4096):
                sock = inflight.pop(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                counts["opens" if err == 0 else "closed" if err == errno.ECONNREFUSED
                       else "errors"] += 1
                sock.close()  # a normal close: FIN, the server's accept() has returned
            now = clock()
            while deadlines and deadlines[0][0] <= now:
                _, fd, sock = deadlines.popleft()
                if inflight.get(fd) is sock:
                    del inflight[fd]
                    sock.close()
                    counts["timeouts"] += 1
    finally:
        for sock in inflight.values():
            sock.close()
        poller.close()


# -- external scanners ----------------------------------------------------------------------------

def zmap_argv(*, net: str, port: int, iface: str, source: str, gateway_mac: str, blocklist: Path,
              output: Path, rate: int = 0, cooldown: int = 1) -> list[str]:
    """zmap SYN scan of `net` on one port, from the lab's client veth.

    - `-b` an empty blocklist: zmap's default one excludes 198.18.0.0/15 (the lab's addresses).
    - `-G` the server veth's MAC: the client namespace has no default route to learn it from.
    - `-r 0`: no rate limit (zmap 2.1: send as fast as the sender thread goes).
    - `-c`: seconds to keep listening after the last SYN (default 8; the lab answers in µs, and
      whole seconds are the finest zmap allows, so 1 s is a fixed part of zmap's wall time).
    The client kernel answers each SYN-ACK with a RST (no socket owns zmap's source port).
    """
    return ["zmap", "-q", "-i", iface, "-S", source, "-G", gateway_mac, "-p", str(port),
            "-r", str(rate), "-c", str(cooldown), "-b", str(blocklist), "-o", str(output), net]


def count_zmap(output: Path) -> int:
    """zmap's default output: one line per responding address (successes, no repeats)."""
    with output.open("rb") as f:
        return sum(1 for line in f if line.strip())


def nmap_argv(*, net: str, port: int, output: Path, min_rate: int = 100_000,
              retries: int = 1) -> list[str]:
    """nmap SYN scan (-sS) of `net` on one port: no DNS, no host discovery, grepable output.

    --max-retries matches synprobe's default of one retry; --min-rate lifts nmap's congestion
    control out of the way (the lab has no loss), so nmap runs as fast as its own loop goes.
    """
    return ["nmap", "-sS", "-p", str(port), "-n", "-Pn", "--min-rate", str(min_rate),
            "--max-retries", str(retries), "-oG", str(output), net]


def count_nmap(output: Path, port: int) -> int:
    """Open ports in nmap's -oG file ("Ports: 80/open/tcp//http///")."""
    needle = f" {port}/open/".encode()
    with output.open("rb") as f:
        return sum(line.count(needle) for line in f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="plain connect()+close() checker (baseline)")
    parser.add_argument("net", help="IPv4 network, e.g. 198.19.0.0/16")
    parser.add_argument("-p", "--ports", default="80", help="comma-separated ports")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",")]
    counts = plain_connect(args.net, ports, args.concurrency, args.timeout)
    json.dump(counts, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
