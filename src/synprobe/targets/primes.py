"""The primes the permutation's cyclic groups live in, with p - 1 already factored.

One prime per power of two: `PRIMES[k]` is `(p, q)` with p the smallest prime above 2**k and q the
distinct prime factors of p - 1. Finding a generator at run time needs those factors (g generates
the group iff g**((p-1)/q) != 1 mod p for every q), and factoring a 64-bit p - 1 at run time would
cost far more than the scan it orders, so they were computed once, at dev time, with
`sympy.nextprime(2**k)` and `sympy.primefactors(p - 1)`. tests/unit/test_permutation.py re-checks
every row without sympy: p is prime, no prime lies between 2**k and p, and the factors are prime
and divide p - 1 down to 1.
"""

from __future__ import annotations

# (p - 2**k, distinct prime factors of p - 1) for k = 1..64.
_ROWS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (1, (2,)),  # 2**1
    (1, (2,)),  # 2**2
    (3, (2, 5)),  # 2**3
    (1, (2,)),  # 2**4
    (5, (2, 3)),  # 2**5
    (3, (2, 3, 11)),  # 2**6
    (3, (2, 5, 13)),  # 2**7
    (1, (2,)),  # 2**8
    (9, (2, 5, 13)),  # 2**9
    (7, (2, 5, 103)),  # 2**10
    (5, (2, 3, 19)),  # 2**11
    (3, (2, 3, 683)),  # 2**12
    (17, (2, 3, 19)),  # 2**13
    (27, (2, 3, 5, 547)),  # 2**14
    (3, (2, 5, 29, 113)),  # 2**15
    (1, (2,)),  # 2**16
    (29, (2, 3, 5, 19, 23)),  # 2**17
    (3, (2, 3, 43691)),  # 2**18
    (21, (2, 23, 41, 139)),  # 2**19
    (7, (2, 29, 101, 179)),  # 2**20
    (17, (2, 3, 43691)),  # 2**21
    (15, (2, 3, 699053)),  # 2**22
    (9, (2, 17, 61681)),  # 2**23
    (43, (2, 23, 103, 3541)),  # 2**24
    (35, (2, 3, 11, 56489)),  # 2**25
    (15, (2, 3, 1242757)),  # 2**26
    (29, (2, 3, 1242757)),  # 2**27
    (3, (2, 3, 19, 87211)),  # 2**28
    (11, (2, 3, 7, 23, 555767)),  # 2**29
    (3, (2, 3, 59, 3033169)),  # 2**30
    (11, (2, 3, 149, 2402107)),  # 2**31
    (15, (2, 3, 5, 131, 364289)),  # 2**32 (zmap's IPv4 group)
    (17, (2, 3, 59, 3033169)),  # 2**33
    (25, (2, 83, 1277, 20261)),  # 2**34
    (53, (2, 3, 5, 7, 81808901)),  # 2**35
    (31, (2, 163, 883, 238727)),  # 2**36
    (9, (2, 5, 137, 953, 26317)),  # 2**37
    (7, (2, 5, 35573, 154543)),  # 2**38
    (23, (2, 3, 5, 383, 47846459)),  # 2**39
    (15, (2, 3, 5, 36650387593)),  # 2**40
    (27, (2, 277, 3969356057)),  # 2**41
    (15, (2, 3, 13, 71, 227, 3498493)),  # 2**42
    (29, (2, 3, 13, 71, 227, 3498493)),  # 2**43
    (7, (2, 11, 53, 97, 155542661)),  # 2**44
    (59, (2, 3, 5, 19, 120739, 511243)),  # 2**45
    (15, (2, 3, 1947973, 6020681)),  # 2**46
    (5, (2, 3, 11, 19, 331, 18837001)),  # 2**47
    (21, (2, 3, 7, 1361, 2462081249)),  # 2**48
    (69, (2, 5, 7, 574438727981)),  # 2**49
    (55, (2, 11, 51177268492849)),  # 2**50
    (21, (2, 7, 11, 179, 3517, 11613247)),  # 2**51
    (21, (2, 3, 23, 612229, 987127)),  # 2**52
    (5, (2, 3, 307, 2857, 6529, 43691)),  # 2**53
    (159, (2, 3, 7724869, 388666753)),  # 2**54
    (3, (2, 5, 13, 37, 109, 246241, 279073)),  # 2**55
    (81, (2, 3, 7, 61, 34501, 14557303)),  # 2**56
    (9, (2, 5, 13, 37, 109, 246241, 279073)),  # 2**57
    (69, (2, 3, 7, 13, 26813, 33829, 290993)),  # 2**58
    (131, (2, 3, 1361, 2614547910049)),  # 2**59
    (33, (2, 3, 11, 683, 2971, 48912491)),  # 2**60
    (15, (2, 1723, 2447, 273451615243)),  # 2**61
    (135, (2, 3, 953, 7691, 15467, 6779953)),  # 2**62
    (29, (2, 3, 359, 7005787, 33955849)),  # 2**63
    (13, (2, 7, 658812288346769701)),  # 2**64
)

PRIMES: dict[int, tuple[int, tuple[int, ...]]] = {
    k: (2**k + offset, factors) for k, (offset, factors) in enumerate(_ROWS, start=1)
}


def group_for(n: int) -> tuple[int, tuple[int, ...]]:
    """The smallest table prime p with p - 1 >= n (so the group 1..p-1 can index 0..n-1).

    Walking a group at most twice the size of the space costs at most two steps per index.
    """
    if n < 1:
        raise ValueError("a permutation group needs n >= 1")
    k = max(1, (n - 1).bit_length())  # the smallest k with 2**k >= n; PRIMES[k][0] - 1 >= 2**k
    if k > 64:
        raise ValueError(f"{n} is beyond the largest permutation group (2**64)")
    if k > 1 and PRIMES[k - 1][0] - 1 >= n:  # n just above a power of two may fit the prime below
        return PRIMES[k - 1]
    return PRIMES[k]
