"""What the user typed, parsed once into a typed form: port specs, target tokens, target files.

A target token becomes a `TargetToken` (its address interval or its host name, and its ports);
nothing after this module splits, re-parses or re-formats the text. Callers above it
(`build.py`, the watch configuration) resolve names and apply exclusions to the typed form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from synprobe.errors import UsageError
from synprobe.targets.addresses import (
    format_ip,
    is_hostname,
    parse_address_set,
    parse_ip,
    split_port,
)
from synprobe.targets.intervals import Interval

__all__ = ["NoPort", "TargetToken", "iter_target_file", "parse_ports", "parse_token", "parse_via"]


class NoPort(UsageError):
    """A token without a port of its own, where no default ports were given."""


@dataclass(frozen=True, slots=True)
class TargetToken:
    """One target token, parsed: exactly one of `hosts` (an address, block or range) and `name`
    (a host name, not yet resolved) is set; `ports` are the token's own or the defaults."""

    text: str  # as typed, for messages
    ports: tuple[int, ...]
    hosts: Interval | None = None
    name: str | None = None


def parse_token(text: str, default_ports: tuple[int, ...] | None) -> TargetToken:
    """`10.0.0.0/24`, `host:80`, `[2001:db8::1]:443`, `10.0.0.1-9:8000-8100` as a TargetToken.

    A token without ports takes `default_ports`; with none, it is a `NoPort` error.
    """
    host, port_spec = split_port(text)
    if port_spec is not None:
        ports = _token_ports(port_spec, text)
    elif default_ports is not None:
        ports = default_ports
    else:
        raise NoPort(f"no port for {text}: give -p PORTS or HOST:PORT")
    hosts = parse_address_set(host, text)
    if hosts is not None:
        return TargetToken(text, ports, hosts=hosts)
    if not is_hostname(host):
        raise UsageError(f"bad target {text!r}: not an address, CIDR block, range or host name")
    return TargetToken(text, ports, name=host)


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


def _token_ports(spec: str, token: str) -> tuple[int, ...]:
    try:
        return tuple(parse_ports(spec))
    except UsageError as exc:
        raise UsageError(f"bad target {token!r}: {exc}") from None


def parse_via(text: str) -> str:
    """A real server to check through: a numeric address, in canonical form."""
    ip = parse_ip(text.strip())
    if ip is None:
        raise UsageError(f"bad --via {text!r}: give the real server's IP address")
    version, value = ip
    return format_ip(value, version == 6)


def iter_target_file(path: str | os.PathLike[str]) -> Iterator[str]:
    """Target tokens from a file, or from stdin for "-", read lazily: whitespace-separated,
    `#` to end of line is a comment. A missing file is a UsageError at the first next()."""
    for line in read_lines(path, "targets file"):
        yield from line.partition("#")[0].split()


def read_lines(path: str | os.PathLike[str], what: str) -> Iterator[str]:
    """The lines of a text file (stdin for "-"), lazily; a failure is one UsageError line."""
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
