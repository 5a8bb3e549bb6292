"""The keyed cookie: deterministic per key, spread over the port range, unforgeable without it."""

from __future__ import annotations

import ipaddress
import random

import pytest

from synprobe.wire.cookie import DEFAULT_PORT_HI, DEFAULT_PORT_LO, KEY_BYTES, CookieKey

LOCAL4 = ipaddress.ip_address("192.0.2.1").packed
LOCAL6 = ipaddress.ip_address("2001:db8::1").packed


def test_default_range_is_above_linux_ephemeral_ports() -> None:
    # net.ipv4.ip_local_port_range defaults to 32768-60999.
    assert 60999 < DEFAULT_PORT_LO <= DEFAULT_PORT_HI == 65535


def test_key_is_random_per_instance_and_not_printed() -> None:
    a, b = CookieKey(), CookieKey()
    assert len(a.key) == KEY_BYTES and a.key != b.key
    assert a.key.hex() not in repr(a)
    target = (LOCAL4, bytes([198, 51, 100, 7]), 443)
    assert a.derive(*target) != b.derive(*target)


def test_same_key_same_answer() -> None:
    a, b = CookieKey(b"k" * 16), CookieKey(b"k" * 16)
    for port in (1, 80, 443, 65535):
        assert a.derive(LOCAL4, bytes(4), port) == b.derive(LOCAL4, bytes(4), port)
        assert a.derive(LOCAL6, bytes(16), port) == b.derive(LOCAL6, bytes(16), port)


@pytest.mark.parametrize("span", [(61000, 65535), (1024, 1024), (40000, 40001), (1, 65535)])
def test_ports_stay_in_range_and_spread(span: tuple[int, int]) -> None:
    key = CookieKey(b"x" * 16, *span)
    rng = random.Random(0)
    ports = [key.derive(LOCAL4, rng.randbytes(4), rng.randrange(1, 65536))[1] for _ in range(2000)]
    assert all(span[0] <= p <= span[1] for p in ports)
    assert all(key.owns_port(p) for p in ports)
    assert not key.owns_port(span[0] - 1) and not key.owns_port(span[1] + 1)
    width = span[1] - span[0] + 1
    # 2000 draws over `width` ports: expect width * (1 - e^(-2000/width)) distinct ones.
    assert len(set(ports)) >= min(width, 1500) * 0.9


def test_each_field_changes_the_cookie() -> None:
    key = CookieKey(b"y" * 16)
    base = key.derive(LOCAL4, bytes([198, 51, 100, 7]), 443)
    assert key.derive(bytes([192, 0, 2, 2]), bytes([198, 51, 100, 7]), 443) != base
    assert key.derive(LOCAL4, bytes([198, 51, 100, 8]), 443) != base
    assert key.derive(LOCAL4, bytes([198, 51, 100, 7]), 444) != base
    # Swapping local and remote is a different flow, hence a different cookie.
    assert key.derive(bytes([198, 51, 100, 7]), LOCAL4, 443) != base


def test_sequence_numbers_use_all_32_bits() -> None:
    key = CookieKey(b"z" * 16)
    seqs = [
        key.derive(LOCAL6, ipaddress.ip_address(f"2001:db8::{i:x}").packed, 80)[0]
        for i in range(1, 2001)
    ]
    assert all(0 <= s < 2**32 for s in seqs)
    assert len(set(seqs)) == len(seqs)
    assert max(seqs) > 2**31 and min(seqs) < 2**31


@pytest.mark.parametrize(("lo", "hi"), [(0, 10), (10, 9), (1, 65536)])
def test_bad_ranges_are_refused(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        CookieKey(port_lo=lo, port_hi=hi)


def test_bad_key_is_refused() -> None:
    with pytest.raises(ValueError):
        CookieKey(b"")
    with pytest.raises(ValueError):
        CookieKey(bytes(33))


@pytest.mark.parametrize("span", [(61000, 65535), (1024, 1024), (40000, 40002)])
def test_each_attempt_gets_a_pair_no_earlier_one_had(span: tuple[int, int]) -> None:
    """Ports repeat (a one-port range has only one); the (port, seq) pair never does, and the
    reply's pair names the attempt."""
    key = CookieKey(b"s" * 16, *span)
    target = (LOCAL4, bytes([198, 18, 0, 2]), 80)
    issued = [key.issue(*target) for _ in range(20000)]
    assert [serial for _, _, serial in issued] == list(range(20000))
    assert len({(seq, port) for seq, port, _ in issued}) == 20000
    if span[0] == span[1]:
        assert {port for _, port, _ in issued} == {span[0]}
    for seq, port, serial in issued[::997]:
        assert key.serial_of(*target, seq, port) == serial
        assert key.derive(*target, serial=serial) == (seq, port)


def test_pairs_never_issued_are_refused() -> None:
    key = CookieKey(b"t" * 16)
    target = (LOCAL6, bytes(15) + b"\x07", 443)
    assert key.serial_of(*target, *key.derive(*target)) is None  # serial 0, not issued yet
    seq, port, serial = key.issue(*target)
    assert key.serial_of(*target, seq, port) == serial == 0
    nxt = key.derive(*target, serial=1)
    assert key.serial_of(*target, *nxt) is None  # the next one is not issued yet
    assert key.serial_of(*target, seq, port, b"\x01" * 4) is None  # another salt
    assert key.serial_of(*target, seq, 60000) is None  # outside our range
    rng = random.Random(3)
    forged = [key.serial_of(*target, rng.getrandbits(32), rng.randrange(61000, 65536))
              for _ in range(20000)]
    assert forged.count(None) == 20000


def test_a_spent_serial_space_starts_a_new_key() -> None:
    key = CookieKey(b"u" * 16, 1024, 1024)
    key.remember()
    old = key.derive(LOCAL4, bytes(4), 80)  # remembered under the old key
    key.issued = key.limit  # 2**32 attempts with a one-port range
    assert key.issue(LOCAL4, bytes(4), 80)[2] == 0
    assert key.key != b"u" * 16 and key.issued == 1
    # The remembered hashes were the old key's: the new key's pairs are its own.
    fresh = CookieKey(key.key, 1024, 1024)
    assert key.derive(LOCAL4, bytes(4), 80) == fresh.derive(LOCAL4, bytes(4), 80) != old


def test_remembered_hashes_are_bounded_and_change_no_answer() -> None:
    key, twin = CookieKey(b"m" * 16), CookieKey(b"m" * 16)
    key.derive(LOCAL4, bytes(4), 80)
    assert key._memo == {}  # a key remembers nothing until asked (a one-shot run)
    key.remember(8)
    targets = [(LOCAL4, ipaddress.IPv4Address(f"198.18.0.{i}").packed, 80) for i in range(20)]
    for _ in range(3):  # each target hashed again after the memo was emptied under it
        for target in targets:
            assert key.derive(*target) == twin.derive(*target)
            twin._memo.clear()  # the twin always hashes afresh
            assert len(key._memo) <= 8
    seq, sport, serial = key.issue(*targets[0])
    assert key.serial_of(*targets[0], seq, sport) == serial
    # A reply (untrusted: anyone can send to our ports) is matched without being remembered.
    key._memo.clear()
    stranger = (LOCAL4, bytes([198, 18, 9, 9]), 443)
    assert key.serial_of(*stranger, 12345, 61000) is None
    assert key._memo == {}
