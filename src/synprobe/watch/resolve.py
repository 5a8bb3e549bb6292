"""Host names of watched targets: one lookup, its first usable address in canonical form."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from synprobe.targets.addresses import format_ip, parse_ip
from synprobe.targets.intervals import Interval


def resolve_first(resolver: Callable[..., Any], name: str,
                  excluded: Sequence[Interval]) -> tuple[str | None, str]:
    """The name's first address (the system's preferred one, as parse_target picks) in
    canonical form, or None and a reason word (`dns-...`, `excluded-address`)."""
    try:
        infos = resolver(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, "dns-" + one_word(getattr(exc, "strerror", None) or str(exc))
    for family, _t, _p, _c, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = parse_ip(str(sockaddr[0]).partition("%")[0])
            if ip is None:
                continue
            version, value = ip
            if any(v == version and lo <= value <= hi for v, lo, hi in excluded):
                # Refused by us: the target stays unresolved, its checks fail as such.
                return None, "excluded-address"
            return format_ip(value, version == 6), ""  # canonical, as the Prober wants
    return None, "dns-no-address"


def one_word(text: str) -> str:
    return "-".join(text.lower().replace(":", " ").split()[:6]) or "error"
