"""The DSR lab's fixed plan: names, addresses, MACs, and the commands that build it.

Data and pure functions returning command text (like `topology.py` for `Lab`), so the plan can
be read without root; `dsr.py` runs it. See `dsr.py` for the layout and the choices made.
"""

from __future__ import annotations

import os
import secrets

from .nsutil import DEFAULT_PREFIX

VIP, VIP6 = "198.18.2.100", "fd00:d5:2::100"
PROBER_IP, PROBER_IP6 = "198.18.1.1", "fd00:d5::1"
PREFIX, PREFIX6 = 24, 64
RS_IPS = {"rs1": ("198.18.1.11", "fd00:d5::11"), "rs2": ("198.18.1.12", "fd00:d5::12")}
PROBER_MAC = "02:d5:00:00:00:01"
RS_MACS = {"rs1": "02:d5:00:00:00:11", "rs2": "02:d5:00:00:00:12"}
TUNNEL_PEER_MAC = "02:d5:00:00:01:00"  # the tunnel device's MAC (same in each RS namespace)
PROBER_IF, RS_IF, BRIDGE = "dsr0", "eth0", "br0"
USER_TUNNEL_IF, USER_TUNNEL_TX = "ipip0", "ipip0-tx"
OPEN_PORT = 80
NFT_TABLE = "synprobe_dsr"
ROLES = ("switch", "prober", "rs1", "rs2")


def dsr_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Unique namespace names per role, e.g. `sp-dpr-<pid>-<hex>`: the creator's PID is in the
    name as for `Lab`, so the session's leak check finds them."""
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    short = {"switch": "dsw", "prober": "dpr", "rs1": "dr1", "rs2": "dr2"}
    return {role: f"{prefix}{short[role]}-{tag}" for role in ROLES}


def _neigh(addr: str, mac: str, dev: str) -> str:
    return f"neigh replace {addr} lladdr {mac} dev {dev} nud permanent"


def host_batch(n: dict[str, str]) -> str:
    """Namespaces, and veth pairs created directly inside them (no interface on the host)."""
    lines = [f"netns add {n[role]}" for role in ROLES]
    lines.append(f"link add {PROBER_IF} netns {n['prober']} address {PROBER_MAC} type veth "
                 f"peer name sw-p netns {n['switch']}")
    for rs in ("rs1", "rs2"):
        lines.append(f"link add {RS_IF} netns {n[rs]} address {RS_MACS[rs]} type veth "
                     f"peer name sw-{rs[-1]} netns {n['switch']}")
    return "\n".join(lines) + "\n"


def switch_batch() -> str:
    ports = ("sw-p", "sw-1", "sw-2")
    return "".join([
        # No STP (ports forward at once) and no multicast snooping (ND multicast floods).
        f"link add {BRIDGE} type bridge stp_state 0 mcast_snooping 0\n",
        *(f"link set {p} master {BRIDGE}\nlink set {p} up\n" for p in ports),
        f"link set {BRIDGE} up\n",
    ])


def prober_batch(static_neigh: bool) -> str:
    lines = ["link set lo up", f"addr add {PROBER_IP}/{PREFIX} dev {PROBER_IF}",
             f"addr add {PROBER_IP6}/{PREFIX6} dev {PROBER_IF} nodad", f"link set {PROBER_IF} up"]
    if static_neigh:
        lines += [_neigh(ip, RS_MACS[rs], PROBER_IF) for rs, ips in RS_IPS.items() for ip in ips]
    return "\n".join(lines) + "\n"


def rs_batch(rs: str, tunnel: str, static_neigh: bool) -> str:
    ip4, ip6 = RS_IPS[rs]
    lines = ["link set lo up", f"addr add {VIP}/32 dev lo", f"addr add {VIP6}/128 dev lo",
             f"addr add {ip4}/{PREFIX} dev {RS_IF}", f"addr add {ip6}/{PREFIX6} dev {RS_IF} nodad",
             f"link set {RS_IF} up"]
    if static_neigh:
        lines += [_neigh(PROBER_IP, PROBER_MAC, RS_IF), _neigh(PROBER_IP6, PROBER_MAC, RS_IF)]
    if tunnel == "user":
        lines += [f"link add {USER_TUNNEL_IF} address {TUNNEL_PEER_MAC} type veth "
                  f"peer name {USER_TUNNEL_TX}",
                  f"link set {USER_TUNNEL_IF} up", f"link set {USER_TUNNEL_TX} up"]
    return "\n".join(lines) + "\n"


def tunnel_if(tunnel: str) -> str:
    return USER_TUNNEL_IF if tunnel == "user" else "tunl0"


def rs_sysctls(tunnel: str) -> dict[str, str]:
    tun = tunnel_if(tunnel)
    return {
        # The LVS-DR recipe: answer ARP only for addresses of the asking interface, and never
        # use the VIP as the source of our own ARP requests.
        "net.ipv4.conf.all.arp_ignore": "1", f"net.ipv4.conf.{RS_IF}.arp_ignore": "1",
        "net.ipv4.conf.all.arp_announce": "2", f"net.ipv4.conf.{RS_IF}.arp_announce": "2",
        "net.ipv4.conf.all.rp_filter": "0", f"net.ipv4.conf.{RS_IF}.rp_filter": "1",
        f"net.ipv4.conf.{tun}.rp_filter": "0",
        f"net.ipv6.conf.{RS_IF}.accept_ra": "0", f"net.ipv6.conf.{RS_IF}.router_solicitations": "0",
    }


def prober_sysctls() -> dict[str, str]:
    return {
        "net.ipv4.conf.all.rp_filter": "1", f"net.ipv4.conf.{PROBER_IF}.rp_filter": "1",
        f"net.ipv6.conf.{PROBER_IF}.accept_ra": "0",
        f"net.ipv6.conf.{PROBER_IF}.router_solicitations": "0",
        # Below the raw engine's default source ports (61000+), as in `Lab`.
        "net.ipv4.ip_local_port_range": "1024 60999",
    }


def switch_sysctls() -> dict[str, str]:
    # No IPv6 on the switch's ports: a switch sends nothing of its own.
    return {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


def rs_ruleset(tunnel: str) -> str:
    """Count what reaches the VIP; with the userspace tunnel, keep the kernel off IP-in-IP."""
    drop = "meta l4proto { 4, 41 } counter drop" if tunnel == "user" else ""
    return f"""\
table inet {NFT_TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        {drop}
    }}
}}
"""
