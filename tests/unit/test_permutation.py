"""The seeded cyclic-group permutation: a permutation for every n, reproducible, shardable, O(1)."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from collections import deque
from itertools import islice, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synprobe.errors import UsageError
from synprobe.targets.permutation import (
    Cycle,
    iter_permutation,
    parse_shard,
    shard_positions,
)
from synprobe.targets.primes import PRIMES, group_for


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin: these 13 bases decide every n < 3.3 * 10**24 (> 2**64 + 13)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in bases:
        return True
    if any(n % b == 0 for b in bases):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for b in bases:
        x = pow(b, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def assert_permutation(indices: list[int], n: int) -> None:
    seen = bytearray(n)
    for i in indices:
        assert 0 <= i < n and not seen[i], i
        seen[i] = 1
    assert len(indices) == n


# --- the hard-coded table (computed with sympy at dev time; re-checked here without it) -------


@pytest.mark.parametrize("k", range(1, 65))
def test_table_prime_is_the_smallest_above_its_power_of_two(k: int) -> None:
    p, factors = PRIMES[k]
    assert is_prime(p) and p > 2**k
    assert not any(is_prime(m) for m in range(2**k + 1, p))
    rest = p - 1
    for q in factors:
        assert is_prime(q) and rest % q == 0
        while rest % q == 0:
            rest //= q
    assert rest == 1, "the factor list must be complete"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 16, 17, 65_536, 65_537, 2**20 + 6, 2**20 + 7, 2**62])
def test_group_for_picks_the_smallest_prime_that_fits(n: int) -> None:
    p, _ = group_for(n)
    assert p - 1 >= n
    assert all(q - 1 < n for q, _ in PRIMES.values() if q < p)


def test_group_for_refuses_what_no_table_prime_covers() -> None:
    with pytest.raises(ValueError, match="2\\*\\*64"):
        group_for(2**64 + 100)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**70 + 3])
def test_the_chosen_generator_generates_the_whole_group(seed: int) -> None:
    for n in (1, 2, 10, 100, 1000, 5000):
        c = Cycle.choose(n, seed)
        x, order = c.generator, 1
        while x != 1:
            x, order = x * c.generator % c.prime, order + 1
        assert order == c.prime - 1
        assert 1 <= c.start < c.prime


# --- permutations ---------------------------------------------------------------------------


def test_every_small_n_is_permuted() -> None:
    for n in range(301):
        for seed in (1, 2, 3):
            assert_permutation(list(iter_permutation(n, seed)), n)


@pytest.mark.parametrize("n", [65_536, 70_000, 1_048_576])
def test_big_n_is_permuted(n: int) -> None:
    assert_permutation(list(iter_permutation(n, 12345)), n)


def test_no_seed_draws_a_fresh_order() -> None:
    assert_permutation(list(iter_permutation(1000)), 1000)
    # Two draws from ~2**39 generators x 2**40 starts: they collide about never.
    assert Cycle.choose(2**40, None) != Cycle.choose(2**40, None)


def test_the_seed_decides_the_order() -> None:
    assert list(iter_permutation(5000, 9)) == list(iter_permutation(5000, 9))
    assert list(iter_permutation(5000, 9)) != list(iter_permutation(5000, 10))


def test_the_order_is_pinned_across_releases() -> None:
    # Shards on different machines (and Python versions) must walk the same cycle: this order is
    # part of the interface. Change it only on purpose.
    assert list(iter_permutation(10, 42)) == [4, 9, 8, 6, 2, 5, 0, 1, 3, 7]
    assert list(iter_permutation(10, 42, shard=1, shards=3)) == [9, 2, 1]


def test_the_permutation_is_not_the_identity() -> None:
    order = list(iter_permutation(10_000, 5))
    assert sum(a < b for a, b in pairwise(order)) < 7_000


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be"):
        iter_permutation(-1, 1)
    with pytest.raises(UsageError, match="seed"):
        iter_permutation(10, None, 0, 2)
    for shard, shards in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(UsageError, match="bad shard"):
            iter_permutation(10, 1, shard, shards)


# --- shards ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 97, 1000, 70_000])
@pytest.mark.parametrize("shards", [1, 2, 3, 7, 16, 101, 5000])
def test_shards_cover_the_space_exactly_once(n: int, shards: int) -> None:
    parts = [list(iter_permutation(n, 77, shard, shards)) for shard in range(shards)]
    assert_permutation([i for part in parts for i in part], n)


@given(
    n=st.integers(0, 3000),
    seed=st.integers(-(2**80), 2**80),
    shards=st.integers(1, 40),
)
@settings(max_examples=150, deadline=None)
def test_shards_cover_the_space_exactly_once_property(n: int, seed: int, shards: int) -> None:
    parts = [list(iter_permutation(n, seed, shard, shards)) for shard in range(shards)]
    assert_permutation([i for part in parts for i in part], n)


def test_shard_i_takes_the_positions_i_mod_shards_of_the_one_cycle() -> None:
    n, shards = 700, 4
    cycle = Cycle.choose(n, 3)
    # The unskipped walk: every element of the group, in cycle order.
    full = list(dataclasses.replace(cycle, n=cycle.prime - 1).walk())
    for shard in range(shards):
        expected = [i for pos, i in enumerate(full) if pos % shards == shard and i < n]
        assert list(cycle.walk(shard, shards)) == expected


@given(
    n=st.integers(1, 3000),
    shards=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 3100), max_size=8),
    want=st.integers(1, 400),
)
@settings(max_examples=150, deadline=None)
def test_taking_positions_walks_the_shard(n: int, shards: int, cuts: list[int],
                                          want: int) -> None:
    """Ranges of a shard's positions, each taken `want` indices at a time, are its walk (the
    CLI's workers take a shard this way: cli.workers.SpanTargets)."""
    cycle = Cycle.choose(n, 9)
    for shard in range(shards):
        positions = shard_positions(n, shard, shards)
        assert positions == -(-(cycle.prime - 1 - shard) // shards)
        bounds = sorted({0, positions, *(c for c in cuts if c < positions)})
        walked: list[int] = []
        for begin, end in pairwise(bounds):
            while begin < end:
                got, begin = cycle.take(shard, shards, begin, end, want)
                assert len(got) <= want
                walked += got
        assert walked == list(cycle.walk(shard, shards))


def test_positions_past_the_shard_are_empty() -> None:
    cycle = Cycle.choose(100, 4)
    end = shard_positions(100, 1, 3)
    assert cycle.take(1, 3, end, end + 50, 10) == ([], end)
    assert cycle.take(1, 3, 0, 10**9, 10**9)[0] == list(cycle.walk(1, 3))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", (0, 1)), ("0/4", (0, 4)), ("3/4", (3, 4)), (" 2 / 10 ", (2, 10))],
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "1/0", "0/0", "-1/4", "1", "1/", "/4", "a/b", "1/2/3", ""])
def test_parse_shard_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="bad shard") as err:
        parse_shard(text)
    assert repr(text) in str(err.value)


# --- cost ------------------------------------------------------------------------------------


def test_a_2_to_the_32_walk_starts_at_once_and_allocates_nothing() -> None:
    tracemalloc.start()
    try:
        start = time.perf_counter()
        deque(islice(iter_permutation(2**32, 1), 10_000), maxlen=0)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 20_000
