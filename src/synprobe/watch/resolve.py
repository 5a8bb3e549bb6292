"""Host names of watched targets: one lookup, its first usable address in canonical form."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from synprobe.targets.addresses import addresses_of, format_ip
from synprobe.targets.intervals import Interval, contains


def resolve_first(resolver: Callable[..., Any], name: str,
                  excluded: Sequence[Interval]) -> tuple[str | None, str]:
    """The name's first address (the system's preferred one, as parse_target picks) in
    canonical form, or None and a reason word (`dns-...`, `excluded-address`)."""
    try:
        infos = resolver(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, "dns-" + one_word(getattr(exc, "strerror", None) or str(exc))
    for version, value in addresses_of(infos)[:1]:
        if contains(excluded, version, value):
            # Refused by us: the target stays unresolved, its checks fail as such.
            return None, "excluded-address"
        return format_ip(value, version == 6), ""  # canonical, as the Prober wants
    return None, "dns-no-address"


def one_word(text: str) -> str:
    return "-".join(text.lower().replace(":", " ").split()[:6]) or "error"
