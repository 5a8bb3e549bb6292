"""RFC 1071 sums against scapy's word-by-word reference implementation."""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import IP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.utils import checksum as scapy_checksum

from synprobe.wire.checksum import checksum, finish, ones_sum, pseudo_header_sum


@pytest.mark.parametrize("length", [1, 2, 3, 19, 20, 21, 40, 59, 60, 1499])
def test_checksum_matches_scapy(length: int) -> None:
    rng = random.Random(length)
    for _ in range(200):
        data = rng.randbytes(length)
        if not any(data):  # all-zero: the one documented difference (0 vs 0xFFFF)
            continue
        assert checksum(data) == scapy_checksum(data), data.hex()


@pytest.mark.parametrize(
    ("total", "field"),
    [
        (1, 0xFFFE),
        (0xFFFE, 0x0001),
        (0xFFFF, 0x0000),  # negative zero folds to a field of 0, as on the wire
        (0x1FFFE, 0x0000),
        (0x10000, 0xFFFE),  # the carry wraps around: 0x10000 is 1
    ],
)
def test_finish_folds_end_around_carry(total: int, field: int) -> None:
    assert finish(total) == field


def test_parts_add_up() -> None:
    """What the templates rely on: sums of even-aligned parts add modulo 0xFFFF."""
    rng = random.Random(1)
    for _ in range(200):
        a, b = rng.randbytes(2 * rng.randrange(30)), rng.randbytes(rng.randrange(60))
        assert (ones_sum(a) + ones_sum(b)) % 0xFFFF == ones_sum(a + b)


def test_odd_trailing_byte_is_a_high_byte() -> None:
    assert ones_sum(b"\x12") == 0x1200
    assert ones_sum(b"\x12\x34\x56") == 0x1234 + 0x5600


@pytest.mark.parametrize("v6", [False, True])
def test_pseudo_header_matches_scapy(v6: bool) -> None:
    rng = random.Random(6 if v6 else 4)
    family, size = (socket.AF_INET6, 16) if v6 else (socket.AF_INET, 4)
    for _ in range(300):
        src, dst = rng.randbytes(size), rng.randbytes(size)
        segment = rng.randbytes(rng.randrange(20, 80))
        ours = finish(pseudo_header_sum(src, dst, len(segment)) + ones_sum(segment))
        a, b = socket.inet_ntop(family, src), socket.inet_ntop(family, dst)
        if v6:
            theirs = in6_chksum(6, IPv6(src=a, dst=b), segment)
        else:
            theirs = in4_chksum(6, IP(src=a, dst=b), segment)
        assert ours == theirs
