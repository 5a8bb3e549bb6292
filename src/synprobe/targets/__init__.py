"""What to probe: tokens the user typed -> a target space, permuted, sharded, never materialised.

One direction, each module calling only the ones below it:
`build` (`build_space`, `parse_target`: parse, resolve, exclude, build)
  -> `space` (`TargetSpace`: intervals x ports, indexed) -> `permutation` -> `primes`
  -> `exclusions` (default and user excludes, parsed once)
  -> `tokens` (what the user typed, parsed once into a `TargetToken`; ports; target files)
  -> `addresses` (the address grammar, host names, resolution) -> `intervals` (interval sets).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Re-exported on first use (PEP 562): a program that needs only `addresses` (the HAProxy check,
# one process per check) does not pay for the space and its permutation.
_LAZY = {"TargetSpace": "synprobe.targets.space", "build_space": "synprobe.targets.build",
         "parse_target": "synprobe.targets.build"}
__all__ = ["TargetSpace", "build_space", "parse_target"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synprobe.targets' has no attribute {name!r}")
    return getattr(import_module(module), name)
