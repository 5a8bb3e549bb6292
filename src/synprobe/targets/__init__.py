"""What to probe: tokens the user typed -> a target space, permuted, sharded, never materialised.

`tokens` (ports, target tokens, exclusions, files -> `build_space`), `addresses` (one token taken
apart), `intervals` (address intervals), `space` (`TargetSpace`: intervals x ports, indexed),
`permutation` and `primes` (the seeded cyclic-group order).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Re-exported on first use (PEP 562): a program that needs only `addresses` (the HAProxy check,
# one process per check) does not pay for the space and its permutation.
_LAZY = {"TargetSpace": "synprobe.targets.space", "build_space": "synprobe.targets.tokens",
         "parse_target": "synprobe.targets.tokens"}
__all__ = ["TargetSpace", "build_space", "parse_target"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synprobe.targets' has no attribute {name!r}")
    return getattr(import_module(module), name)
