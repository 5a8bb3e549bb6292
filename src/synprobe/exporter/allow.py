"""Which addresses `/probe` may send SYNs to: the allow-list minus the default exclusions.

An exporter reachable on a network must not become a relay for SYNs to arbitrary hosts, so it
checks nothing until the operator names the blocks it may check (`--probe-allow`), and never
the addresses no TCP check can mean (multicast, broadcast, unspecified, IPv4-mapped: the same
default exclusions as the CLI and library).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from synprobe.errors import UsageError
from synprobe.targets.addresses import Address, parse_address_set
from synprobe.targets.exclusions import default_exclusions
from synprobe.targets.intervals import Interval, contains, merge, subtract

HOW_TO_ALLOW = (
    "start synprobe with --probe-allow CIDR[,CIDR...] (or probe_allow = [\"CIDR\", ...] in the "
    "config file) naming the blocks /probe may check"
)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Sorted, disjoint intervals of allowed addresses (see synprobe.targets.intervals)."""

    allowed: tuple[Interval, ...] = ()
    tokens: tuple[str, ...] = ()  # as the operator wrote them, for messages
    excluded: tuple[Interval, ...] = ()  # the default exclusions, to say why an address is out

    @classmethod
    def parse(cls, tokens: Iterable[str]) -> AllowList:
        items: list[Interval] = []
        words: list[str] = []
        for raw in tokens:
            for token in raw.replace(",", " ").split():
                try:
                    block = parse_address_set(token, token)
                except UsageError as exc:
                    raise UsageError(f"--probe-allow {token!r}: {exc}") from None
                if block is None:
                    raise UsageError(f"--probe-allow {token!r}: expected an address, CIDR block "
                                     "or range, not a name")
                items.append(block)
                words.append(token)
        excluded = default_exclusions()
        return cls(tuple(subtract(merge(items), list(excluded))), tuple(words), excluded)

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def permits(self, address: Address) -> bool:
        return contains(self.allowed, *address)

    def refusal(self, address: Address) -> str | None:
        """None when `address` may be checked, else why not (one phrase)."""
        if contains(self.allowed, *address):
            return None
        if contains(self.excluded, *address):
            return ("is in the default exclusions (multicast, broadcast, unspecified, reserved "
                    "or IPv4-mapped), which no allow-list overrides")
        return f"is outside the allow-list ({', '.join(self.tokens) or 'empty'})"

