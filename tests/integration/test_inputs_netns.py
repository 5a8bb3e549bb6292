"""Marks of the whole u32 range and IP_FREEBIND sources, proved on the wire (issue 8 §4)."""

from __future__ import annotations

import json
import sys

import pytest

from synprobe import Prober, probe
from synprobe_lab import OPEN_PORT, Lab

pytestmark = pytest.mark.netns

NFT = "synprobe_marks"


def count_marked(lab: Lab, mark: int) -> int:
    """SYNs to OPEN_PORT that left the client carrying `mark` (an nft counter on output)."""
    out = lab.exec("client", ["nft", "-j", "list", "table", "inet", NFT]).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment") == f"m{mark}":
            return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    raise AssertionError(f"no counter for mark {mark}")


@pytest.fixture
def marks(lab: Lab) -> Lab:
    rules = [f"add table inet {NFT}",
             f"add chain inet {NFT} out {{ type filter hook output priority 0; }}"]
    for mark in (2**31, 2**32 - 1, 16):
        rules.append(f"add rule inet {NFT} out meta mark {mark:#x} tcp dport {OPEN_PORT} "
                     f"tcp flags syn counter comment \"m{mark}\"")
    lab.exec("client", ["nft", "-f", "-"], input="\n".join(rules) + "\n")
    return lab  # the table goes with the namespace


@pytest.mark.parametrize("mark", ["2147483648", "4294967295", "0x10"])
@pytest.mark.parametrize("engine", ["shaker", "raw"])
def test_every_u32_mark_works_end_to_end(marks: Lab, engine: str, mark: str) -> None:
    # Was: TypeError (exit 3) for 2**31 and above; 0x10 refused.
    done = marks.exec("client", [sys.executable, "-m", "synprobe", "--engine", engine, "--json",
                                 "-q", "--mark", mark, f"{marks.v4.server}:{OPEN_PORT}"],
                      check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "open"
    assert count_marked(marks, int(mark, 0)) == 1


@pytest.mark.parametrize("engine", ["shaker", "raw"])
def test_the_library_takes_a_mark_above_2_31(marks: Lab, engine: str) -> None:
    result = marks.run_in("client", probe, f"{marks.v4.server}:{OPEN_PORT}", engine=engine,
                          mark=2**32 - 1)
    assert result.state.value == "open"
    assert count_marked(marks, 2**32 - 1) == 1


FLOATING = "198.18.0.77"  # on the client's link, not assigned (yet): a VRRP address to be


@pytest.mark.parametrize("engine", ["shaker", "raw"])
def test_freebind_starts_before_the_address_arrives(lab: Lab, engine: str) -> None:
    target = f"{lab.v4.server}:{OPEN_PORT}"
    refused = lab.exec("client", [sys.executable, "-m", "synprobe", "--engine", engine,
                                  "--source", FLOATING, target], check=False)
    assert refused.returncode == 2 and "not an address of this host" in refused.stderr
    opted_in = lab.exec("client", [sys.executable, "-m", "synprobe", "--engine", engine,
                                   "--json", "-q", "--timeout", "0.2", "--source", FLOATING,
                                   "--freebind", target], check=False)
    row = json.loads(opted_in.stdout)
    assert opted_in.returncode == 1 and row["source"] == FLOATING and row["state"] != "open"
    # A long-lived prober made while the address is elsewhere (the VRRP backup), checking
    # before and after it moves here.
    prober = lab.run_in("client", Prober, engine, source=FLOATING, freebind=True, timeout=0.2)
    with prober, lab.capture("client") as cap:
        before = prober.probe(target)
        lab.exec("client", ["ip", "addr", "add", f"{FLOATING}/24", "dev", lab.client_if])
        after = prober.probe(target)
        syns = [p for p in cap.tcp() if p.direction == "out" and p.flags == "S"]
    assert before.state.value != "open" and before.source == FLOATING
    assert (after.state.value, after.source) == ("open", FLOATING)
    assert [(p.src, p.dst, p.dport) for p in syns] == [(FLOATING, lab.v4.server, OPEN_PORT)]
    lab.wait_for(lambda: lab.count_states("server", "syn-recv") == 0, timeout=3.0)
    assert lab.accept_count() == 0
