"""From parsed tokens to what is probed, in one direction: tokens parsed (tokens.py), each name
resolved once (addresses.resolve), exclusions parsed once and subtracted (exclusions.py), then
the space built (space.py). `build_space()` makes a TargetSpace; `parse_target()` one Target.

This is the top of the targets layer: it calls down into every other module, and none of them
calls back up into it (tests/unit/test_targets_layers.py holds that).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

from synprobe.errors import UsageError
from synprobe.model import Target
from synprobe.targets.addresses import (
    Resolver,
    format_ip,
    parse_address_set,
    parse_ip,
    resolve,
    split_port,
)
from synprobe.targets.exclusions import default_exclusions, exclusion_set
from synprobe.targets.intervals import Interval, contains, merge, size, subtract
from synprobe.targets.space import TargetSpace
from synprobe.targets.tokens import TargetToken, parse_token

__all__ = ["build_space", "parse_target", "space_of"]

_MERGE_AT_LEAST = 65_536  # pending intervals worth a merge pass (see _HostSet)


class _HostSet:
    """Intervals gathered from many tokens, merged whenever the unmerged part doubles: memory
    stays near the merged size (a file of one /24, address by address, stays one interval), and
    the total work stays O(n log n)."""

    def __init__(self) -> None:
        self._merged: list[Interval] = []
        self._pending: list[Interval] = []

    def add(self, items: Iterable[Interval]) -> None:
        self._pending.extend(items)
        if len(self._pending) >= max(_MERGE_AT_LEAST, len(self._merged)):
            self.intervals()

    def intervals(self) -> list[Interval]:
        if self._pending:
            self._merged = merge(chain(self._merged, self._pending))
            self._pending = []
        return self._merged


def build_space(
    tokens: Iterable[str],
    ports: Sequence[int] | None = None,
    excludes: Iterable[str] = (),
    exclude_files: Iterable[str | os.PathLike[str]] = (),
    *,
    resolver: Resolver = socket.getaddrinfo,
    default_excludes: bool = True,
) -> TargetSpace:
    """The targets `tokens` name on `ports`, minus the exclusions, each (address, port) once.

    A token is an IPv4/IPv6 address, CIDR block, range (FIRST-LAST, or v4 FIRST-N) or host name
    (every A/AAAA address, resolved once, here), optionally with its own ports: `host:80`,
    `[2001:db8::1]:443`, `10.0.0.0/24:8000-8100`. A token without ports uses `ports`.
    Excludes are addresses, CIDR blocks and ranges, or comma-separated lists of them; an exclude
    file holds them one per line, with `#` comments. The space is not size-checked beyond
    ABSURD_SIZE: call `check_size()`.
    """
    default_ports = None if ports is None else tuple(dict.fromkeys(_checked_ports(ports)))
    groups: dict[tuple[int, ...], _HostSet] = {}
    names: dict[str, list[Interval]] = {}  # each name resolved once
    for raw in tokens:
        for text in raw.split():
            token = parse_token(text, default_ports)
            groups.setdefault(token.ports, _HostSet()).add(_hosts(token, names, resolver))
    if not groups:
        raise UsageError("no targets given")
    blocked = exclusion_set(excludes, exclude_files, default_excludes)
    return space_of({ports_: hosts.intervals() for ports_, hosts in groups.items()}, blocked,
                    default_excludes)


def _hosts(token: TargetToken, names: dict[str, list[Interval]],
           resolver: Resolver) -> list[Interval]:
    if token.hosts is not None:
        return [token.hosts]
    assert token.name is not None
    if token.name not in names:
        found = resolve(token.name, token.text, resolver)
        names[token.name] = [(v, ip, ip) for v, ip in found]
    return names[token.name]


def space_of(sets: dict[tuple[int, ...], list[Interval]], blocked: list[Interval],
             default_excludes: bool = True) -> TargetSpace:
    """The space of merged address sets, keyed by their ports, minus `blocked` (merged, from
    `exclusion_set()`); nothing left is a UsageError saying which exclusions took it all."""
    everyone = next(iter(sets.values())) if len(sets) == 1 else merge(chain(*sets.values()))
    left = size(everyone)
    excluded = left - size(subtract(everyone, blocked))
    if excluded == left:
        raise UsageError(_all_excluded(everyone, default_excludes))
    blocks = ((subtract(hosts, blocked), p) for hosts, p in _by_port(sets))
    return TargetSpace(blocks, excluded=excluded)


def _all_excluded(everyone: list[Interval], default_excludes: bool) -> str:
    """Why nothing is left: the built-in exclusions alone, or with the caller's own excludes."""
    count = size(everyone)
    what = "the address is" if count == 1 else f"all {count:,} addresses are"
    if default_excludes and not size(subtract(everyone, list(default_exclusions()))):
        return (f"no targets left: {what} excluded by default, never probed: multicast, "
                "broadcast, unspecified, reserved, or IPv4-mapped IPv6 (give the IPv4 form)")
    return f"no targets left: {what} excluded (by the excludes given, or the defaults)"


def _checked_ports(ports: Iterable[int]) -> list[int]:
    out = list(ports)
    for port in out:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"bad port {port!r}: ports are 1-65535")
    return out


def _by_port(
    sets: dict[tuple[int, ...], list[Interval]],
) -> Iterator[tuple[list[Interval], list[int]]]:
    """(hosts, ports) blocks in which every (address, port) pair occurs once.

    Tokens with different ports may name the same address ("10.0.0.1:80" and "10.0.0.0/24" with
    -p 80). Ports are grouped by which token groups list them, and each group of ports gets the
    union of those token groups' addresses: few blocks, and no pair twice.
    """
    if len(sets) == 1:
        yield from ((hosts, list(ports)) for ports, hosts in sets.items())
        return
    owners: dict[int, list[int]] = {}  # port -> indices of the groups that list it
    for index, ports in enumerate(sets):
        for port in ports:
            owners.setdefault(port, []).append(index)
    by_owners: dict[tuple[int, ...], list[int]] = {}
    for port, indices in owners.items():
        by_owners.setdefault(tuple(indices), []).append(port)
    hosts_of = list(sets.values())
    for indices, ports_ in by_owners.items():
        yield merge(chain.from_iterable(hosts_of[i] for i in indices)), ports_


def parse_target(obj: object, resolver: Resolver = socket.getaddrinfo) -> Target:
    """One target for the library: `"host:port"`, `"[v6]:port"`, `(host, port)` or a Target.

    The host is an address or a name; a name becomes its first resolved address (the system's
    preferred one). Ranges and CIDR blocks are `build_space()`'s job.
    """
    if isinstance(obj, Target):
        return parse_target((obj.host, obj.port), resolver)._replace(via=obj.via)
    if isinstance(obj, str):
        host, port_text = split_port(obj.strip())
        if port_text is None or not (port_text.isascii() and port_text.isdigit()):
            raise UsageError(f"bad target {obj!r}: expected HOST:PORT or [IPV6]:PORT")
        port: object = int(port_text)
    elif isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str):
        host, port = obj
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    else:
        raise UsageError(f"bad target {obj!r}: expected 'host:port', '[v6]:port' or (host, port)")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"bad target {obj!r}: the port must be 1-65535")
    ip = parse_ip(host)
    if ip is None:
        if parse_address_set(host, str(obj)) is not None:
            raise UsageError(f"bad target {obj!r}: one address per target; use build_space()")
        ip = resolve(host, str(obj), resolver)[0]
    version, value = ip
    if contains(default_exclusions(), version, value):
        raise UsageError(f"refusing to probe {obj!r}: {format_ip(value, version == 6)} is in "
                         "the default exclusions: multicast, broadcast, unspecified, reserved "
                         "or IPv4-mapped (give the IPv4 form)")
    return Target(format_ip(value, version == 6), port)
