"""The lab's fixed plan: addresses, ports, and the commands that build it.

Everything here is data or a pure function returning command text, so the plan can be read (and
unit-tested) without root. `lab.py` runs it.

Wire layout (one veth pair, both ends created directly inside their namespaces)::

    client ns                                   server ns
    veth-c 198.18.0.1/24  fd00:5e::1/64  <-->   veth-s 198.18.0.2/24  fd00:5e::2/64
    routes via the server:                      lo: local 198.19.0.0/16, local fd00:5f::/64 (AnyIP)
      198.19.0.0/16   fd00:5f::/64   (AnyIP)    nft prerouting reject 198.18.8.0/24, fd00:5e:8::/64
      198.18.8.0/24   fd00:5e:8::/64 (reject)   route unreachable 198.18.9.0/24, fd00:5e:9::/64
      198.18.9.0/24   fd00:5e:9::/64 (route)    nft input: dport 82 drop, dport 83 reject
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

OPEN_PORT = 80  # the listener (IPv4 and IPv6 wildcard) accepts here
CLOSED_PORT = 81  # nothing listens: the kernel answers RST
FILTERED_PORT = 82  # nft drops the SYN: no answer at all
REJECT_PORT = 83  # nft answers ICMP host-unreachable (v4) / address-unreachable (v6)

CLIENT_IF = "veth-c"
SERVER_IF = "veth-s"
# Fixed, locally administered MACs so the neighbour entries can be static: no ARP/ND on the wire
# (cleaner captures) and no unresolved-neighbour queue dropping the first burst of a fast scan.
CLIENT_MAC = "02:5e:00:00:00:01"
SERVER_MAC = "02:5e:00:00:00:02"

NFT_TABLE = "synprobe_lab"
LOSS_TABLE = "synprobe_loss"


@dataclass(frozen=True, slots=True)
class LabFamily:
    """The addresses of one IP family. Every address is a plain string, ready for `connect()`.

    - `client`, `server`: the two veth ends (`prefixlen` bits of on-link prefix).
    - `anyip_net`: a block routed to the server, where it is local (route type `local` on lo),
      so the single wildcard listener answers on every address of it; `anyip_sample` is one of
      them and `anyip(i)` returns the i-th.
    - `unreachable`: the server answers ICMP unreachable for it (nft reject in prerouting, so no
      per-host kernel rate limit applies). v4: type 3 code 1 (host unreachable); v6: type 1
      code 0 (no route), the same codes a router without a route sends.
    - `unreachable_route`: the server really has an `unreachable` route for it and forwarding
      on. v6 answers every probe; v4 goes through ip_error(), whose per-source token bucket
      (host-global net.ipv4.route.error_cost/error_burst, not settable in a namespace) allows
      a burst of 5 and then 1 ICMP per second per client address.
    """

    name: str
    family: socket.AddressFamily
    client: str
    server: str
    prefixlen: int
    anyip_net: str
    anyip_sample: str
    unreachable_net: str
    unreachable: str
    unreachable_route_net: str
    unreachable_route: str

    def anyip(self, index: int) -> str:
        """The `index`-th address of the AnyIP block (0 <= index < block size)."""
        net = ipaddress.ip_network(self.anyip_net)
        if not 0 <= index < net.num_addresses:
            raise IndexError(f"{index} outside {self.anyip_net}")
        return str(net.network_address + index)

    @property
    def anyip_size(self) -> int:
        return ipaddress.ip_network(self.anyip_net).num_addresses


V4 = LabFamily(
    name="v4",
    family=socket.AF_INET,
    client="198.18.0.1",
    server="198.18.0.2",
    prefixlen=24,
    anyip_net="198.19.0.0/16",
    anyip_sample="198.19.12.34",
    unreachable_net="198.18.8.0/24",
    unreachable="198.18.8.1",
    unreachable_route_net="198.18.9.0/24",
    unreachable_route="198.18.9.1",
)

V6 = LabFamily(
    name="v6",
    family=socket.AF_INET6,
    client="fd00:5e::1",
    server="fd00:5e::2",
    prefixlen=64,
    anyip_net="fd00:5f::/64",
    anyip_sample="fd00:5f::1234",
    unreachable_net="fd00:5e:8::/64",
    unreachable="fd00:5e:8::1",
    unreachable_route_net="fd00:5e:9::/64",
    unreachable_route="fd00:5e:9::1",
)

FAMILIES = (V4, V6)


def host_batch(client_ns: str, server_ns: str) -> str:
    """`ip -b -` input run in the host namespace: both namespaces and the veth pair.

    `link add ... netns X` creates each end directly inside its namespace, so no interface ever
    exists in the host namespace, and parallel labs can reuse the same interface names.
    """
    return (
        f"netns add {client_ns}\n"
        f"netns add {server_ns}\n"
        f"link add {CLIENT_IF} netns {client_ns} address {CLIENT_MAC} type veth"
        f" peer name {SERVER_IF} netns {server_ns} address {SERVER_MAC}\n"
    )


def _static_neigh(addr: str, mac: str, dev: str) -> str:
    return f"neigh replace {addr} lladdr {mac} dev {dev} nud permanent"


def client_batch() -> str:
    """`ip -n CLIENT -b -` input: addresses, static neighbour, routes towards the server."""
    lines = ["link set lo up"]
    for fam in FAMILIES:
        nodad = " nodad" if fam.family == socket.AF_INET6 else ""
        lines.append(f"addr add {fam.client}/{fam.prefixlen} dev {CLIENT_IF}{nodad}")
    lines.append(f"link set {CLIENT_IF} up")
    for fam in FAMILIES:
        lines.append(_static_neigh(fam.server, SERVER_MAC, CLIENT_IF))
        for net in (fam.anyip_net, fam.unreachable_net, fam.unreachable_route_net):
            lines.append(f"route add {net} via {fam.server} dev {CLIENT_IF}")
    return "\n".join(lines) + "\n"


def server_batch() -> str:
    """`ip -n SERVER -b -` input: addresses, AnyIP local routes, unreachable routes."""
    lines = ["link set lo up"]
    for fam in FAMILIES:
        nodad = " nodad" if fam.family == socket.AF_INET6 else ""
        lines.append(f"addr add {fam.server}/{fam.prefixlen} dev {SERVER_IF}{nodad}")
    lines.append(f"link set {SERVER_IF} up")
    for fam in FAMILIES:
        lines.append(_static_neigh(fam.client, CLIENT_MAC, SERVER_IF))
        # AnyIP: a `local` route makes every address of the block local to this host, so a
        # wildcard listener accepts on all of them without configuring 65,536 addresses.
        lines.append(f"route add local {fam.anyip_net} dev lo")
        lines.append(f"route add unreachable {fam.unreachable_route_net}")
    return "\n".join(lines) + "\n"


def client_sysctls() -> dict[str, str]:
    """Quiet IPv6 autoconfiguration noise on the wire; widen the ephemeral port range, but keep
    it below 61000 so the raw engine's default source ports stay owned by no socket."""
    return {
        f"net.ipv6.conf.{CLIENT_IF}.accept_ra": "0",
        f"net.ipv6.conf.{CLIENT_IF}.router_solicitations": "0",
        "net.ipv4.ip_local_port_range": "1024 60999",
    }


def server_sysctls() -> dict[str, str]:
    """Big accept/SYN queues, forwarding for the unreachable routes, no ICMP rate limits."""
    return {
        f"net.ipv6.conf.{SERVER_IF}.accept_ra": "0",
        f"net.ipv6.conf.{SERVER_IF}.router_solicitations": "0",
        # listen(65535) is silently capped at somaxconn; both are per namespace.
        "net.core.somaxconn": "65535",
        "net.ipv4.tcp_max_syn_backlog": "65535",
        # ip_error()/ip6_pkt_discard() only answer for unreachable routes when forwarding.
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        # ratelimit=0 disables the per-peer limit; an empty ratemask also exempts every type
        # from the per-namespace global limit (icmp_msgs_per_sec), so each probe gets its ICMP.
        "net.ipv4.icmp_ratelimit": "0",
        "net.ipv4.icmp_ratemask": "0",
        "net.ipv6.icmp.ratelimit": "0",
        "net.ipv6.icmp.ratemask": "",
    }


def server_ruleset() -> str:
    """`nft -f -` input for the server: the filtered and rejecting ports, the reject block."""
    return f"""\
table inet {NFT_TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority filter; policy accept;
        ip daddr {V4.unreachable_net} reject with icmp type host-unreachable
        ip6 daddr {V6.unreachable_net} reject with icmpv6 type no-route
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {FILTERED_PORT} drop
        meta nfproto ipv4 tcp dport {REJECT_PORT} reject with icmp type host-unreachable
        meta nfproto ipv6 tcp dport {REJECT_PORT} reject with icmpv6 type addr-unreachable
    }}
}}
"""


def loss_ruleset(per_mille: int) -> str:
    """`nft -f -` input replacing the loss table atomically (per_mille 0 removes the drops).

    Loss sits on the server's veth, for TCP only, with independent draws each way: a SYN is
    dropped inbound with p, its answer outbound with p. The `add`/`delete`/re-add preamble
    makes the replacement one transaction whether or not the table existed.
    """
    head = f"table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n"
    if per_mille <= 0:
        return head
    rule = f"meta l4proto tcp numgen random mod 1000 < {per_mille} counter drop"
    return head + f"""\
table inet {LOSS_TABLE} {{
    chain rx {{
        type filter hook prerouting priority raw; policy accept;
        iifname "{SERVER_IF}" {rule}
    }}
    chain tx {{
        type filter hook postrouting priority srcnat + 100; policy accept;
        oifname "{SERVER_IF}" {rule}
    }}
}}
"""
