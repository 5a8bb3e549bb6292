"""From what the user typed to targets: ports specs, target tokens, exclusions, target files.

`build_space()` turns tokens into a `TargetSpace` (see space.py) with every exclusion subtracted
up front; `parse_target()` turns one library-style target into a `Target`.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
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
from synprobe.targets.intervals import Interval, merge, size, subtract
from synprobe.targets.permutation import parse_shard
from synprobe.targets.space import ABSURD_SIZE, DEFAULT_LIMIT, TargetSpace

__all__ = [
    "ABSURD_SIZE",
    "DEFAULT_EXCLUDES",
    "DEFAULT_LIMIT",
    "TargetSpace",
    "build_space",
    "iter_target_file",
    "parse_ports",
    "parse_shard",
    "parse_target",
]

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

_MERGE_AT_LEAST = 65_536  # pending intervals worth a merge pass (see _HostSet)


def parse_ports(spec: str) -> list[int]:
    """`"80,443,8000-8100"` -> [80, 443, 8000, ..., 8100]: deduplicated, first-seen order."""
    ports: dict[int, None] = {}
    for item in spec.split(","):
        token = item.strip()
        where = f"port {token!r}" + ("" if token == spec.strip() else f" in {spec!r}")
        if not token:
            raise UsageError(f"empty port in {spec!r}: expected PORT[,PORT|FIRST-LAST...]")
        lo_text, dash, hi_text = token.partition("-")
        lo = _port(lo_text, where)
        hi = _port(hi_text, where) if dash else lo
        if hi < lo:
            raise UsageError(f"bad {where}: the range runs backwards")
        ports.update(dict.fromkeys(range(lo, hi + 1)))
    return list(ports)


def _port(text: str, where: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"bad {where}: expected a number or a range like 1-1024")
    if not 1 <= int(text) <= 65535:
        raise UsageError(f"bad {where}: ports are 1-65535")
    return int(text)


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
        for token in raw.split():
            host, port_spec = split_port(token)
            if port_spec is None and default_ports is None:
                raise UsageError(f"no port for {token}: give -p PORTS or HOST:PORT")
            token_ports = default_ports if port_spec is None else _token_ports(port_spec, token)
            addrs = parse_address_set(host, token)
            if addrs is None:
                if host not in names:
                    names[host] = [(v, ip, ip) for v, ip in resolve(host, token, resolver)]
                found = names[host]
            else:
                found = [addrs]
            groups.setdefault(token_ports, _HostSet()).add(found)
    if not groups:
        raise UsageError("no targets given")
    blocked = _exclusion_set(excludes, exclude_files, default_excludes)
    sets = {ports_: hosts.intervals() for ports_, hosts in groups.items()}
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
    if default_excludes and not size(subtract(everyone, list(_default_exclusions()))):
        return (f"no targets left: {what} excluded by default, never probed: multicast, "
                "broadcast, unspecified, reserved, or IPv4-mapped IPv6 (give the IPv4 form)")
    return f"no targets left: {what} excluded (by the excludes given, or the defaults)"


def _checked_ports(ports: Iterable[int]) -> list[int]:
    out = list(ports)
    for port in out:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"bad port {port!r}: ports are 1-65535")
    return out


def _token_ports(spec: str, token: str) -> tuple[int, ...]:
    try:
        return tuple(parse_ports(spec))
    except UsageError as exc:
        raise UsageError(f"bad target {token!r}: {exc}") from None


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


def _exclusion_set(
    excludes: Iterable[str],
    exclude_files: Iterable[str | os.PathLike[str]],
    default_excludes: bool,
) -> list[Interval]:
    defaults = DEFAULT_EXCLUDES if default_excludes else ()
    items = [_exclude(c, f"default exclusion {c!r}") for c in defaults]
    for raw in excludes:
        items.extend(_exclude(t, f"exclude {t!r}") for t in raw.replace(",", " ").split())
    for path in exclude_files:
        for lineno, line in enumerate(_read_lines(path, "exclude file"), start=1):
            for token in line.partition("#")[0].split():
                items.append(_exclude(token, f"{os.fspath(path)}:{lineno}: exclude {token!r}"))
    return merge(items)


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


def iter_target_file(path: str | os.PathLike[str]) -> Iterator[str]:
    """Target tokens from a file, or from stdin for "-", read lazily: whitespace-separated,
    `#` to end of line is a comment. A missing file is a UsageError at the first next()."""
    for line in _read_lines(path, "targets file"):
        yield from line.partition("#")[0].split()


def _read_lines(path: str | os.PathLike[str], what: str) -> Iterator[str]:
    name = os.fspath(path)
    try:
        if name == "-":
            yield from sys.stdin
            return
        with open(name, encoding="utf-8") as f:
            yield from f
    except OSError as exc:
        raise UsageError(f"cannot read {what} {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {what} {name}: it is not UTF-8 text") from None


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
    if any(v == version and lo <= value <= hi for v, lo, hi in _default_exclusions()):
        raise UsageError(f"refusing to probe {obj!r}: {format_ip(value, version == 6)} is in "
                         "the default exclusions: multicast, broadcast, unspecified, reserved "
                         "or IPv4-mapped (give the IPv4 form)")
    return Target(format_ip(value, version == 6), port)


@functools.cache
def _default_exclusions() -> tuple[Interval, ...]:
    return tuple(_exclusion_set((), (), default_excludes=True))


def parse_via(text: str) -> str:
    """A real server to check through: a numeric address, in canonical form."""
    ip = parse_ip(text.strip())
    if ip is None:
        raise UsageError(f"bad --via {text!r}: give the real server's IP address")
    version, value = ip
    return format_ip(value, version == 6)


def with_vias(targets: Iterable[Target], vias: Sequence[str]) -> Iterator[Target]:
    """Each target once per real server (or as it is, when no real server is named)."""
    if not vias:
        yield from targets
        return
    for target in targets:
        for via in vias:
            yield target._replace(via=via)


class Prepared:
    """Targets already in canonical form (made by a TargetSpace): the API passes them through
    without parsing each one again (1.7 µs a target, measured)."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self.targets = targets
