"""The address grammar: `host:port` splitting, addresses, address sets, host names, resolution.

The bottom of the targets layer: it imports only `intervals`, and nothing here knows about
tokens, ports, exclusions or spaces (tokens.py and build.py call down into it, never back).

Every failure is a UsageError whose message names the token, so a bad line in a 100,000-line target
file is found by reading one message.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable
from typing import Any

from synprobe.errors import UsageError
from synprobe.targets.intervals import Interval

Address = tuple[int, int]  # (IP version, address as an integer)
Resolver = Callable[..., Any]  # socket.getaddrinfo's signature

# RFC 1123 labels, plus "_" (common in internal DNS). Anything else is neither address nor name.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
_DIGITS = re.compile(r"[0-9]+")


def split_port(token: str) -> tuple[str, str | None]:
    """`"[v6]:80"`, `"v4:80"`, `"name:80"` -> (host part, port part); no port -> (token, None).

    A bare IPv6 address has colons of its own, so its port must come after brackets:
    `"2001:db8::1:80"` is the address 2001:db8::1:80 with no port.
    """
    if token.startswith("["):
        end = token.find("]")
        rest = token[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise UsageError(f"bad target {token!r}: expected [ADDRESS] or [ADDRESS]:PORT")
        return token[1:end], (rest[1:] if rest else None)
    if token.count(":") == 1:
        host, port = token.split(":")
        return host, port
    return token, None


def parse_ip(text: str) -> Address | None:
    """A numeric IPv4/IPv6 address, or None. Strict, as inet_pton(3) is (and netaddr 1.x, which
    calls it): no "010.1.2.3", no "10.1", no zone ("%eth0")."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return version, int.from_bytes(socket.inet_pton(family, text))
        except (OSError, ValueError):  # ValueError: an embedded NUL
            continue
    return None


def parse_address_set(text: str, token: str) -> Interval | None:
    """An address, CIDR block or range as an interval; None when `text` is none of these (it may
    be a name). Text that is clearly meant as one but malformed (a bad prefix, a bad range end,
    "300.1.1.1") is a UsageError naming `token`."""
    if "/" in text:
        return _parse_cidr(text, token)
    if "-" in text:
        lo_text, _, hi_text = text.partition("-")
        lo = parse_ip(lo_text)
        if lo is not None:  # else it is a hostname with a hyphen in it
            return _parse_range(lo, hi_text, token)
    ip = parse_ip(text)
    if ip is not None:
        return ip[0], ip[1], ip[1]
    if ":" in text:
        raise UsageError(f"bad target {token!r}: {text!r} is not a valid IPv6 address")
    if _DIGITS.fullmatch(text.rstrip(".").rpartition(".")[2]):
        # A name's last label is never all digits (RFC 3696): this was meant as IPv4.
        raise UsageError(f"bad target {token!r}: {text!r} is not a valid IPv4 address")
    return None


def _parse_cidr(text: str, token: str) -> Interval:
    addr_text, _, prefix = text.partition("/")
    addr = parse_ip(addr_text)
    width = 32 if addr is None or addr[0] == 4 else 128
    # A prefix length is digits only: no netmask ("/255.255.0.0"), no sign, no spaces.
    if addr is None or not _DIGITS.fullmatch(prefix) or int(prefix) > width:
        raise UsageError(
            f"bad target {token!r}: a CIDR block is ADDRESS/PREFIX with PREFIX 0-{width}"
        )
    # Host bits set ("10.1.2.3/24") mean the whole block, as in zmap and nmap.
    host_bits = (1 << (width - int(prefix))) - 1
    first = addr[1] & ~host_bits
    return addr[0], first, first | host_bits


def _parse_range(lo: Address, hi_text: str, token: str) -> Interval:
    hi = parse_ip(hi_text)
    if hi is None and lo[0] == 4 and _DIGITS.fullmatch(hi_text) and int(hi_text) <= 255:
        hi = 4, (lo[1] & ~0xFF) | int(hi_text)  # short form: 198.19.0.1-50
    if hi is None or hi[0] != lo[0]:
        raise UsageError(
            f"bad target {token!r}: a range is FIRST-LAST (or v4 FIRST-N, a last octet)"
        )
    if hi[1] < lo[1]:
        raise UsageError(
            f"bad target {token!r}: the range runs backwards "
            f"({format_ip(lo[1], lo[0] == 6)} > {format_ip(hi[1], hi[0] == 6)})"
        )
    return lo[0], lo[1], hi[1]


def is_hostname(text: str) -> bool:
    """Whether `text` can be a DNS name (RFC 1123 labels plus "_", 253 characters at most)."""
    return len(text) <= 253 and _HOSTNAME.fullmatch(text) is not None


def resolve(name: str, token: str, resolver: Resolver) -> list[Address]:
    """Every A and AAAA address of `name`, deduplicated, in the resolver's order."""
    if not is_hostname(name):
        raise UsageError(f"bad target {token!r}: not an address, CIDR block, range or host name")
    where = repr(name) if name == token else f"{name!r} (from {token!r})"
    try:
        infos = resolver(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot resolve {where}: {reason}") from None
    found = addresses_of(infos)
    if not found:
        raise UsageError(f"cannot resolve {where}: no IPv4 or IPv6 address")
    return found


def addresses_of(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    """The IPv4 and IPv6 addresses of getaddrinfo() answers, deduplicated, in its order."""
    seen: dict[Address, None] = {}
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            # Drop a link-local zone ("fe80::1%eth0"): a Target holds a bare address.
            ip = parse_ip(str(sockaddr[0]).partition("%")[0])
            if ip is not None:
                seen.setdefault(ip, None)
    return list(seen)


def format_ip(value: int, v6: bool) -> str:
    """The canonical text of an address: dotted quad, or RFC 5952 compressed IPv6."""
    if v6:
        return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16))
    return socket.inet_ntoa(value.to_bytes(4))
