"""The one table of what the lab answers and how synprobe must classify it, shared by the
engines' integration tests (shaker, raw, and their agreement)."""

from __future__ import annotations

from synprobe.model import Target
from synprobe_lab import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, REJECT_PORT, V4, LabFamily


def icmp_reason(fam: LabFamily, v6_code: int) -> str:
    """The reason for an ICMP host unreachable (v4 3/1) or its v6 counterpart (1/<v6_code>)."""
    return "icmp-3-1" if fam is V4 else f"icmp6-1-{v6_code}"


def lab_states(fam: LabFamily, *, unreachable_route: bool = True
               ) -> dict[Target, tuple[str, str]]:
    """Every answer the lab can give, and how synprobe must classify it: (state, reason).
    `unreachable_route` False leaves out the server's real `unreachable` route: v4's answer to
    it is rate-limited to a burst of 5 per lab, which a test may need for its own probes."""
    states = {
        Target(fam.server, OPEN_PORT): ("open", "syn-ack"),
        Target(fam.anyip_sample, OPEN_PORT): ("open", "syn-ack"),
        Target(fam.server, CLOSED_PORT): ("closed", "rst"),
        Target(fam.server, FILTERED_PORT): ("filtered", "timeout"),
        # nft reject: ICMP 3/1 (v4) / ICMPv6 1/3 address unreachable (v6)
        Target(fam.server, REJECT_PORT): ("unreachable", icmp_reason(fam, 3)),
        # nft reject in prerouting: ICMP 3/1, ICMPv6 1/0 no route.
        Target(fam.unreachable, OPEN_PORT): ("unreachable", icmp_reason(fam, 0)),
    }
    if unreachable_route:  # a real `unreachable` route on the server: the same answer
        states[Target(fam.unreachable_route, OPEN_PORT)] = ("unreachable", icmp_reason(fam, 0))
    return states
