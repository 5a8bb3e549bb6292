"""synprobe: half-open TCP health checks (SYN -> SYN-ACK -> RST).

A port is open when it answers the SYN with a SYN-ACK; synprobe then resets the connection
instead of completing it, so the server's accept() never returns and no TIME_WAIT is left here.

    import synprobe
    synprobe.probe("198.18.0.2:80")                      # one check -> ProbeResult
    for r in synprobe.probe_many(["198.18.0.2:80", ("fd00:5e::2", 443)], engine="raw"):
        print(r.host, r.port, r.state)
"""

from synprobe.api import aprobe, aprobe_many, probe, probe_many
from synprobe.engines.base import Engine, ProbeOptions
from synprobe.errors import EngineUnavailable, SynprobeError, UsageError
from synprobe.model import ProbeResult, State, Target
from synprobe.prober import Prober
from synprobe.registry import engines, register_engine
from synprobe.watch.watcher import Watcher

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "EngineUnavailable",
    "ProbeOptions",
    "ProbeResult",
    "Prober",
    "State",
    "SynprobeError",
    "Target",
    "UsageError",
    "Watcher",
    "aprobe",
    "aprobe_many",
    "engines",
    "probe",
    "probe_many",
    "register_engine",
]
