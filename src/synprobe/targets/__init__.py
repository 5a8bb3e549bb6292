"""What to probe: tokens the user typed -> a target space, permuted, sharded, never materialised.

`tokens` (ports, target tokens, exclusions, files -> `build_space`), `addresses` (one token taken
apart), `intervals` (address intervals), `space` (`TargetSpace`: intervals x ports, indexed),
`permutation` and `primes` (the seeded cyclic-group order).
"""
