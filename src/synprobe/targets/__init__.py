"""What to probe: tokens the user typed -> a target space, permuted, sharded, never materialised.

`tokens` (ports, target tokens, exclusions, files -> `build_space`), `addresses` (one token taken
apart), `intervals` (address intervals), `space` (`TargetSpace`: intervals x ports, indexed),
`permutation` and `primes` (the seeded cyclic-group order).
"""

from synprobe.targets.space import TargetSpace
from synprobe.targets.tokens import build_space, parse_target

__all__ = ["TargetSpace", "build_space", "parse_target"]
