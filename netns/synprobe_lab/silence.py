"""Make lab hosts go silent (every packet to them dropped in the server, no answer at all), as a
backend that dies or is cut off does; and stoppable extra listeners for one target's port."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .listener_ctl import ListenerProcess
from .nsutil import exec_argv, run

SILENCE_TABLE = "synprobe_silence"


def silence_ruleset(addresses: list[str]) -> str:
    """`nft -f -` input replacing the silence table in one transaction: packets to
    `addresses` are dropped on arrival at the server (before any socket sees them)."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    head = f"table inet {SILENCE_TABLE}\ndelete table inet {SILENCE_TABLE}\n"
    if not v4 and not v6:
        return head
    sets, rules = "", ""
    for name, kind, items, match in (("v4", "ipv4_addr", v4, "ip daddr"),
                                     ("v6", "ipv6_addr", v6, "ip6 daddr")):
        if items:
            sets += f"    set {name} {{ type {kind}; elements = {{ {', '.join(items)} }} }}\n"
            rules += f"        {match} @{name} counter drop\n"
    return head + f"""\
table inet {SILENCE_TABLE} {{
{sets}    chain pre {{
        type filter hook prerouting priority raw - 10; policy accept;
{rules}    }}
}}
"""


def silence(server_ns: str, addresses: Iterable[str]) -> None:
    """Drop everything sent to `addresses` from now on (replacing any earlier silence)."""
    run(exec_argv(server_ns, ["nft", "-f", "-"]), input=silence_ruleset(list(addresses)))


def unsilence(server_ns: str) -> None:
    run(exec_argv(server_ns, ["nft", "-f", "-"]), input=silence_ruleset([]))


def extra_listener(server_ns: str, port: int) -> ListenerProcess:
    """An accept-counting listener on `port` (v4 and v6 wildcard) that a test can stop
    (`.stop()`: the port then answers RST) and start again with another call."""
    return ListenerProcess(server_ns, (port,))
