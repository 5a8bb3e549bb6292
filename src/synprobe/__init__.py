"""synprobe: half-open TCP health checks (SYN -> SYN-ACK -> RST).

A port is open when it answers the SYN with a SYN-ACK; synprobe then resets the connection
instead of completing it, so the server's accept() never returns and no TIME_WAIT is left here.

    import synprobe
    synprobe.probe("198.18.0.2:80")                      # one check -> ProbeResult
    for r in synprobe.probe_many(["198.18.0.2:80", ("fd00:5e::2", 443)], engine="raw"):
        print(r.host, r.port, r.state)
    space = synprobe.build_space(["198.19.0.0/24"], [80, 443])   # parsed, excluded, permuted
    for r in synprobe.probe_many(space, engine="raw", rst="self"):   # raw: synprobe.RawOptions
        ...
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from synprobe.engines.base import Engine, ProbeOptions
from synprobe.errors import EngineError, EngineUnavailable, SynprobeError, UsageError
from synprobe.model import ProbeResult, State, Target
from synprobe.registry import engines, register_engine

if TYPE_CHECKING:
    from synprobe.api import ResultStream, aprobe, aprobe_many, probe, probe_many
    from synprobe.engines.raw.options import RawOptions
    from synprobe.loop_prober import LoopProber
    from synprobe.prober import Prober
    from synprobe.targets.build import build_space, parse_target
    from synprobe.targets.space import TargetSpace
    from synprobe.watch.watcher import Watcher

# The API, the Prober and the Watcher pull in asyncio, concurrent.futures and netaddr (~60 ms):
# they are imported on first use (PEP 562), so a program that needs one engine and no API,
# such as synprobe-haproxy-check (one process per check), starts without them.
_LAZY = {
    "aprobe": "synprobe.api",
    "aprobe_many": "synprobe.api",
    "probe": "synprobe.api",
    "probe_many": "synprobe.api",
    "ResultStream": "synprobe.api",
    "build_space": "synprobe.targets.build",
    "parse_target": "synprobe.targets.build",
    "TargetSpace": "synprobe.targets.space",
    "RawOptions": "synprobe.engines.raw.options",
    "Prober": "synprobe.prober",
    "LoopProber": "synprobe.loop_prober",
    "Watcher": "synprobe.watch.watcher",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synprobe' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Engine",
    "EngineError",
    "EngineUnavailable",
    "LoopProber",
    "ProbeOptions",
    "ProbeResult",
    "Prober",
    "RawOptions",
    "ResultStream",
    "State",
    "SynprobeError",
    "Target",
    "TargetSpace",
    "UsageError",
    "Watcher",
    "aprobe",
    "aprobe_many",
    "build_space",
    "engines",
    "parse_target",
    "probe",
    "probe_many",
    "register_engine",
]
