"""sendmmsg(2) batches on a raw socket, over loopback: every packet arrives as it was given,
whether the batch is one length (copied end to end) or mixed (copied into slots), across
chunks and after the length changes."""

from __future__ import annotations

import os
import socket

import pytest

from synprobe.kernel.mmsg import MmsgSender
from synprobe.wire.syn import rst_template, syn_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root (CI has it)")

LOCAL = "127.0.0.1"
PORT = 9  # discard: nothing listens, the kernel answers each SYN with a RST over lo


def received(sock: socket.socket, count: int) -> list[bytes]:
    """The IPv4 packets to PORT the raw TCP socket saw (it also sees the kernel's RSTs)."""
    got: list[bytes] = []
    while len(got) < count:
        packet = sock.recv(512)
        if int.from_bytes(packet[22:24], "big") == PORT:
            got.append(packet)
    return got


def test_batches_of_one_length_and_of_mixed_lengths_all_arrive_intact() -> None:
    syn, rst = syn_template(LOCAL), rst_template(LOCAL)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as tap, \
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        tap.settimeout(5)
        sender = MmsgSender(raw, False, capacity=8)
        batches = [
            [(syn.build(bytes([127, 0, 0, 2]), 61000 + i, PORT, i), bytes([127, 0, 0, 2]))
             for i in range(20)],  # one length, three chunks of up to 8
            [(rst.build(bytes([127, 0, 0, 3]), 62000 + i, PORT, i), bytes([127, 0, 0, 3]))
             for i in range(5)],  # another length: its own table
            [((syn if i % 2 else rst).build(bytes([127, 0, 0, 4]), 63000 + i, PORT, i),
              bytes([127, 0, 0, 4])) for i in range(11)],  # mixed: the slots
            [(syn.build(bytes([127, 0, 0, 5]), 64000 + i, PORT, i), bytes([127, 0, 0, 5]))
             for i in range(3)],  # the first length again, after the slots
        ]
        for batch in batches:
            assert sender.send(batch) == []
            got = received(tap, len(batch))
            # The kernel fills in the IPv4 checksum and may set the ID; the rest is ours.
            assert [g[12:] for g in got] == [p[12:] for p, _ in batch]
            assert [len(g) for g in got] == [len(p) for p, _ in batch]
