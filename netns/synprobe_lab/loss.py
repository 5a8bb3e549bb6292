"""Random TCP loss on the server's veth with nftables `numgen random` (no netem on this host)."""

from __future__ import annotations

import json

from . import topology
from .nsutil import exec_argv, run


def apply_loss(server_ns: str, percent: float) -> None:
    """Replace the loss table in one nft transaction; 0 removes it. 0.1 % resolution."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"loss percent {percent} outside 0..100")
    run(exec_argv(server_ns, ["nft", "-f", "-"]), input=topology.loss_ruleset(round(percent * 10)))


def loss_drops(server_ns: str) -> dict[str, int]:
    """Packets dropped so far: {"rx": into the server, "tx": out of it}; zeros without loss."""
    argv = ["nft", "-j", "list", "table", "inet", topology.LOSS_TABLE]
    proc = run(exec_argv(server_ns, argv), check=False)
    drops = {"rx": 0, "tx": 0}
    if proc.returncode != 0:  # no table: loss is off
        return drops
    for item in json.loads(proc.stdout)["nftables"]:
        rule = item.get("rule")
        for expr in rule["expr"] if rule else ():
            if "counter" in expr:
                drops[rule["chain"]] += int(expr["counter"]["packets"])
    return drops
