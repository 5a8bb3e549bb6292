"""What an ICMP error quoting our SYN says about the target: one table for both engines.

The shaker reads an error's type and code from its socket's error queue (IP_RECVERR), the raw
engine from the packet; both classify it here, so they report the same (state, reason), and
the reason keeps the evidence: `icmp-<type>-<code>` or `icmp6-<type>-<code>`.

The reading follows nmap's SYN scan, with one state nmap lacks:
- `filtered`: a policy said no. Administratively prohibited (v4 3/9, 3/10, 3/13, precedence
  3/14, 3/15; v6 1/1, 1/5, 1/6), and port or protocol unreachable (v4 3/3, 3/2; v6 1/4): a TCP
  stack answers a closed port with a RST, never with an ICMP error, so these come from a
  firewall's REJECT (iptables' default `reject-with icmp-port-unreachable`). nmap reads v4
  codes 1, 2, 3, 9, 10 and 13 as filtered.
- `unreachable`: a router says the host cannot be reached (no route, host or address
  unreachable, unknown, isolated), the SYN's hop limit ran out (time exceeded: v4 11, v6 3),
  or a device refused its header (parameter problem: v4 12, v6 4). nmap folds host and
  network unreachable (3/0, 3/1) into filtered too; synprobe keeps them apart, as the shaker's
  errno already does (EHOSTUNREACH, ENETUNREACH).
- no verdict (None): fragmentation needed (v4 3/4) and packet too big (v6 2) are about a
  packet's size, not the port. The kernel consumes them for path MTU discovery before a socket
  sees them (tcp_v4_err, tcp_v6_err), so the shaker's attempt times out; the raw engine
  ignores them too, and both report `filtered`, `timeout`. The kernel also ignores v4
  unreachable codes above 15 (NR_ICMP_UNREACH) and v4 fragment reassembly time exceeded
  (11/1); so does this table.

docs/engines-icmp.md has the whole table; tests/integration/test_icmp.py asserts it on the wire
against both engines.
"""

from __future__ import annotations

from synprobe.model import State

_F, _U = State.FILTERED, State.UNREACHABLE

# v4 destination unreachable (type 3), by code; 4 (fragmentation needed) is not a verdict.
_V4_UNREACH: dict[int, State] = {
    0: _U,  # net unreachable
    1: _U,  # host unreachable
    2: _F,  # protocol unreachable: a REJECT, TCP itself never says it
    3: _F,  # port unreachable: a REJECT, a closed TCP port answers with RST
    5: _U,  # source route failed
    6: _U,  # destination network unknown
    7: _U,  # destination host unknown
    8: _U,  # source host isolated
    9: _F,  # network administratively prohibited
    10: _F,  # host administratively prohibited
    11: _U,  # network unreachable for TOS
    12: _U,  # host unreachable for TOS
    13: _F,  # communication administratively prohibited
    14: _F,  # host precedence violation
    15: _F,  # precedence cutoff in effect
}
# v6 destination unreachable (type 1), by code; codes past 6 are unreachable (EPROTO).
_V6_UNREACH: dict[int, State] = {
    0: _U,  # no route to destination
    1: _F,  # communication administratively prohibited
    2: _U,  # beyond the scope of the source address
    3: _U,  # address unreachable
    4: _F,  # port unreachable: a REJECT
    5: _F,  # source address failed ingress/egress policy
    6: _F,  # reject route to destination
}
V4_TIME_EXCEEDED, V4_PARAMETER_PROBLEM = 11, 12
V6_PACKET_TOO_BIG, V6_TIME_EXCEEDED, V6_PARAMETER_PROBLEM = 2, 3, 4

ICMP4_ERRORS = frozenset({3, V4_TIME_EXCEEDED, V4_PARAMETER_PROBLEM})
"""v4 types that may quote our SYN and carry a verdict (the BPF filter passes these)."""
ICMP6_ERRORS = frozenset({1, V6_TIME_EXCEEDED, V6_PARAMETER_PROBLEM})


def classify_icmp(v6: bool, icmp_type: int, icmp_code: int) -> tuple[State, str] | None:
    """(state, reason) for an ICMP(v6) error quoting our SYN, or None if it is no verdict."""
    if v6:
        if icmp_type == 1:
            state: State | None = _V6_UNREACH.get(icmp_code, _U)
        else:
            state = _U if icmp_type in ICMP6_ERRORS else None
    elif icmp_type == 3:
        state = _V4_UNREACH.get(icmp_code)
    elif icmp_type == V4_TIME_EXCEEDED and icmp_code == 1:
        # Fragment reassembly time exceeded: icmp_unreach() drops it before TCP sees it (a
        # SYN is never fragmented, so it cannot be about ours).
        state = None
    else:
        state = _U if icmp_type in ICMP4_ERRORS else None
    if state is None:
        return None
    return state, f"icmp{'6' if v6 else ''}-{icmp_type}-{icmp_code}"
