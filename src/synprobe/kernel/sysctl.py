"""sysctl values the engines read, from the calling thread's network namespace."""

from __future__ import annotations

PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"  # read in the caller's netns


def local_port_range(path: str = PORT_RANGE_FILE) -> tuple[int, int] | None:
    """net.ipv4.ip_local_port_range of the calling thread's namespace (it covers IPv6 too)."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return lo, hi
