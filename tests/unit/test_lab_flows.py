"""The lab capture's grouping of packets into connections (`synprobe_lab.capture.flows`): a
source port used again at once (a reset socket leaves no TIME_WAIT) is a second connection,
told apart by its SYN's sequence number; a retransmitted SYN stays in its connection."""

from __future__ import annotations

from synprobe_lab.capture import FlowKey, Packet, flows


def tcp(direction: str, flags: str, seq: int, sport: int = 40000) -> Packet:
    out = direction == "out"
    return Packet(0.0, direction, 4, "tcp", "198.18.0.1" if out else "198.18.0.2",
                  "198.18.0.2" if out else "198.18.0.1", 40, sport if out else 82,
                  82 if out else sport, flags, seq)


def test_a_port_used_again_is_a_new_connection_and_a_retransmission_is_not() -> None:
    packets = [tcp("out", "S", 1000), tcp("out", "S", 1000),  # an attempt, retransmitted
               tcp("out", "S", 5000),  # the next attempt from the same port: new ISN
               tcp("out", "S", 9000), tcp("in", "RA", 0)]  # and a third, answered
    got = flows(packets)
    four = ("198.18.0.1", 40000, "198.18.0.2", 82)
    assert got == {FlowKey(*four, 0): [("out", "S"), ("out", "S")],
                   FlowKey(*four, 1): [("out", "S")],
                   FlowKey(*four, 2): [("out", "S"), ("in", "RA")]}


def test_other_ports_keep_connection_zero() -> None:
    got = flows([tcp("out", "S", 1, sport=40001), tcp("out", "S", 2, sport=40002)])
    assert {k.conn for k in got} == {0} and len(got) == 2
