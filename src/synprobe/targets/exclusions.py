"""Addresses never probed: the default exclusions and the user's excludes, as merged intervals.

Parsed once per run (`exclusion_set`), then only looked up (`intervals.contains`) or subtracted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

from synprobe.errors import UsageError
from synprobe.targets.addresses import parse_address_set
from synprobe.targets.intervals import Interval, merge
from synprobe.targets.tokens import read_lines

__all__ = ["DEFAULT_EXCLUDES", "default_exclusions", "exclusion_set"]

DEFAULT_EXCLUDES: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 is no host, and connect() to it reaches localhost
    "224.0.0.0/4",  # multicast: TCP cannot talk to a group, a SYN to it only makes noise
    "240.0.0.0/4",  # reserved, and 255.255.255.255 (limited broadcast) is its last address
    "ff00::/8",  # IPv6 multicast
    "::/128",  # the IPv6 unspecified address
    "::ffff:0:0/96",  # IPv4-mapped: IPv4 on the wire, past every IPv4 exclude (use a.b.c.d)
)
"""Addresses no TCP health check can mean, subtracted from every space unless turned off.

A CIDR typo ("0.0.0.0/0") or a generated list must not send SYNs to addresses where a TCP answer
is impossible or the probe is misdirected (0.0.0.0 and :: connect to this host). Pass
`default_excludes=False` to `build_space()` to probe them anyway.
"""


def exclusion_set(
    excludes: Iterable[str],
    exclude_files: Iterable[str | os.PathLike[str]] = (),
    default_excludes: bool = True,
) -> list[Interval]:
    """Excludes (addresses, CIDR blocks, ranges; comma- or space-separated), exclude files (one
    per line, `#` comments) and, unless turned off, DEFAULT_EXCLUDES, as merged intervals."""
    items = list(default_exclusions()) if default_excludes else []
    for raw in excludes:
        items.extend(_exclude(t, f"exclude {t!r}") for t in raw.replace(",", " ").split())
    for path in exclude_files:
        for lineno, line in enumerate(read_lines(path, "exclude file"), start=1):
            for token in line.partition("#")[0].split():
                items.append(_exclude(token, f"{os.fspath(path)}:{lineno}: exclude {token!r}"))
    return merge(items)


@functools.cache
def default_exclusions() -> tuple[Interval, ...]:
    """DEFAULT_EXCLUDES as merged intervals (parsed once per process)."""
    return tuple(merge(_exclude(c, f"default exclusion {c!r}") for c in DEFAULT_EXCLUDES))


def _exclude(token: str, where: str) -> Interval:
    try:
        addrs = parse_address_set(token, token)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if addrs is None:
        raise UsageError(
            f"{where}: excludes are addresses, CIDR blocks or ranges (no names, ports)"
        )
    return addrs
