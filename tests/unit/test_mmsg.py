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


def test_ipv6_batches_arrive_intact() -> None:
    """sockaddr_in6 (family, port and flow info 0, the address, scope id 0) for every packet."""
    syn = syn_template("::1")
    loop = socket.inet_pton(socket.AF_INET6, "::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP) as tap, \
            socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        tap.settimeout(5)
        sender = MmsgSender(raw, True, capacity=4)
        batch = [(syn.build(loop, 61000 + i, PORT, i), loop) for i in range(6)]
        assert sender.send(batch) == []
        got: list[bytes] = []
        while len(got) < len(batch):  # an IPv6 raw socket hands over the TCP segment only
            segment = tap.recv(512)
            if int.from_bytes(segment[2:4], "big") == PORT:
                got.append(segment)
        assert [g[:16] + g[18:] for g in got] == [p[40:56] + p[58:] for p, _ in batch]


def test_a_destination_of_the_wrong_length_is_refused_before_anything_is_written() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        sender = MmsgSender(udp, False, capacity=4)
        size = len(sender._buf)
        with pytest.raises(ValueError, match="not 4 bytes"):
            sender.send([(bytes(60), bytes([127, 0, 0, 1, 0]))])
        assert len(sender._buf) == size
        with pytest.raises(BufferError):  # the buffer cannot be resized under its pointers
            sender._buf[0:1] = b"ab"
