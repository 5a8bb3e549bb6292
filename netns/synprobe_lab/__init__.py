"""Network-namespace lab for synprobe's integration tests, demo and benchmark.

`Lab` builds a client and a server namespace joined by a veth pair, with an accept-counting
listener, closed/filtered/rejecting ports, AnyIP blocks, unreachable addresses and optional loss.
See `synprobe_lab.lab` for the table of expected answers and `netns/README.md` for an overview.
"""

from .capture import Capture, FlowKey, Inner, Packet, flows, parse_frame, parse_ip
from .kstate import count_states, listen_queue, nstat, wait_for
from .lab import Lab
from .nsutil import (
    DEFAULT_PREFIX,
    LabError,
    current_netns_ino,
    enter_netns,
    lab_down_all,
    list_netns,
    netns_ino,
    run_in_netns,
)
from .topology import (
    CLIENT_IF,
    CLOSED_PORT,
    FAMILIES,
    FILTERED_PORT,
    OPEN_PORT,
    REJECT_PORT,
    SERVER_IF,
    V4,
    V6,
    LabFamily,
)

__all__ = [
    "CLIENT_IF",
    "CLOSED_PORT",
    "DEFAULT_PREFIX",
    "FAMILIES",
    "FILTERED_PORT",
    "OPEN_PORT",
    "REJECT_PORT",
    "SERVER_IF",
    "V4",
    "V6",
    "Capture",
    "FlowKey",
    "Inner",
    "Lab",
    "LabError",
    "LabFamily",
    "Packet",
    "count_states",
    "current_netns_ino",
    "enter_netns",
    "flows",
    "lab_down_all",
    "list_netns",
    "listen_queue",
    "netns_ino",
    "nstat",
    "parse_frame",
    "parse_ip",
    "run_in_netns",
    "wait_for",
]
