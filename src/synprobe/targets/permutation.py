"""A seeded pseudo-random order over 0..n-1 in O(1) memory, shardable across machines (zmap's way).

The multiplicative group of integers modulo a prime p is cyclic: for a generator g, the sequence
start, start*g, start*g**2, ... (mod p) visits every element of 1..p-1 exactly once before it
repeats. Element x stands for index x - 1; with p the smallest table prime such that p - 1 >= n
(see `primes.py`), the elements above n are skipped ("cycle walking"), which costs at most about
one extra multiply per index. Each step is one multiply-mod and one compare, and the only state is
the current element, so a 2**32-address scan needs no bitmap and no shuffled list.

The seed picks g (uniformly among the group's generators) and the start element. Shard i of s walks
the positions i, i+s, i+2s, ... of that same cycle, stepping by g**s; s machines given the same seed
(and the same targets) therefore cover the space exactly once between them, disjointly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat

from synprobe.errors import UsageError
from synprobe.targets.primes import group_for


@dataclass(frozen=True, slots=True)
class Cycle:
    """One cyclic walk: indices 0..n-1 are the elements 1..n of the group modulo `prime`."""

    n: int
    prime: int
    generator: int
    start: int

    @classmethod
    def choose(cls, n: int, seed: int | None) -> Cycle:
        """The cycle a seed stands for; a fresh random one (os.urandom, through
        random.SystemRandom, as `secrets` uses) when seed is None."""
        if n < 1:
            raise ValueError("a cycle needs n >= 1")
        p, factors = group_for(n)
        rng: random.Random = random.SystemRandom() if seed is None else random.Random(seed)
        # Rejection sampling: uniform over candidates, so uniform over generators. About
        # (p-1)/phi(p-1) tries are needed, i.e. a handful; each try is a few pow()s.
        while True:
            g = 2 + _below(rng, p - 2) if p > 3 else 2
            if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
                break
        return cls(n=n, prime=p, generator=g, start=1 + _below(rng, p - 1))

    def walk(self, shard: int = 0, shards: int = 1) -> Iterator[int]:
        """The indices at cycle positions shard, shard+shards, ... in cycle order."""
        _check_shard(shard, shards)
        p = self.prime
        count = _positions(p, shard, shards)
        first = self.start * pow(self.generator, shard, p) % p
        return _walk(first, pow(self.generator, shards, p), p, self.n, count)

    def take(self, shard: int, shards: int, begin: int, end: int,
             want: int) -> tuple[list[int], int]:
        """Up to `want` indices from the shard's positions begin..end-1 (the k-th position of
        shard i of s is cycle position i + k*s), in order, and the first position not walked
        (`end` once every one was). Positions past the shard's last are empty."""
        p, n = self.prime, self.n
        end = min(end, _positions(p, shard, shards))
        if want < 1:
            return [], begin
        step = pow(self.generator, shards, p)
        x = self.start * pow(self.generator, shard + begin * shards, p) % p
        out: list[int] = []
        append = out.append
        for position in range(begin, end):  # the hot loop: a multiply-mod and a compare
            if x <= n:
                append(x - 1)
                if len(out) == want:
                    return out, position + 1
            x = x * step % p
        return out, max(begin, end)


def shard_positions(n: int, shard: int = 0, shards: int = 1) -> int:
    """How many cycle positions shard `shard` of `shards` walks for n indices (skipped ones
    included): what `Cycle.take` is asked for, a range of them at a time."""
    _check_shard(shard, shards)
    return _positions(group_for(n)[0], shard, shards) if n > 0 else 0


def iter_permutation(
    n: int, seed: int | None = None, shard: int = 0, shards: int = 1
) -> Iterator[int]:
    """Every index in 0..n-1 exactly once, in the order `seed` picks; this shard's share of it.

    With shards > 1 a seed is required: without one each machine would walk its own random cycle
    and the shards would overlap. Errors are raised here, not at the first `next()`.
    """
    _check_shard(shard, shards)
    if shards > 1 and seed is None:
        raise UsageError("sharding needs a seed: give every shard the same --seed")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if n == 0:
        return iter(())
    return Cycle.choose(n, seed).walk(shard, shards)


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` -> (I, N): this machine is shard I (counted from 0) of N."""
    m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
    if m is None:
        raise UsageError(f"bad shard {text!r}: expected I/N, e.g. 0/4 for the first of 4")
    shard, shards = int(m.group(1)), int(m.group(2))
    if shards < 1 or shard >= shards:
        raise UsageError(f"bad shard {text!r}: need 0 <= I < N (shards are counted from 0)")
    return shard, shards


def _positions(p: int, shard: int, shards: int) -> int:
    # The cycle has p - 1 positions (every element of the group once); a shard has every
    # shards-th of them from `shard`.
    return max(0, -(-(p - 1 - shard) // shards))


def _walk(x: int, step: int, p: int, n: int, count: int) -> Iterator[int]:
    # The hot loop, kept to one multiply-mod and one compare; locals only.
    for _ in repeat(None, count):
        if x <= n:
            yield x - 1
        x = x * step % p


def _below(rng: random.Random, n: int) -> int:
    """Uniform in [0, n) from getrandbits alone.

    `getrandbits` for an int seed has been stable across CPython releases, while `randrange`'s
    algorithm is an implementation detail; shards on different Python versions must agree.
    """
    bits = n.bit_length()
    r = rng.getrandbits(bits)
    while r >= n:
        r = rng.getrandbits(bits)
    return r


def _check_shard(shard: int, shards: int) -> None:
    if shards < 1 or not 0 <= shard < shards:
        raise UsageError(f"bad shard {shard}/{shards}: need 0 <= shard < shards")
