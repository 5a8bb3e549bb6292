"""The Probers the service checks through: one per distinct check setting (engine, timeout,
retries, source, mark), made when a config needs them and closed when none does."""

from __future__ import annotations

import threading
import time

from synprobe.api import check_via_support
from synprobe.loop_prober import LoopProber
from synprobe.prober import Prober
from synprobe.watch.config import Settings

AnyProber = Prober | LoopProber


def make_prober(settings: Settings, concurrency: int) -> AnyProber:
    """The raw engine runs on the service's own loop (a LoopProber, attached by the Watcher):
    a thread of its own cost more CPU than the checks (docs/watch.md). The shaker runs in a
    Prober's helper process, out of reach of anything that could delay the loop."""
    # No rate limit in the engine: the schedule itself paces the checks (targets / interval).
    kind = LoopProber if settings.engine == "raw" else Prober
    return kind(settings.engine, timeout=settings.timeout, retries=settings.retries,
                concurrency=concurrency, rate=None, source=settings.source, mark=settings.mark)


def check_prober_via(prober: AnyProber, vias: tuple[str, ...]) -> None:
    """An engine that cannot check through a real server fails the config at load time, not
    every check later (Prober.submit would refuse each one)."""
    if vias:
        check_via_support(prober._engine, vias)


def close_probers(probers: list[AnyProber], budget: float,
                  totals: dict[str, dict[str, int]]) -> None:
    """Close Probers, waiting at most `budget` seconds in all, after adding their counters to
    `totals` (by engine). A check still in flight then is left to the kernel: our sockets close
    when the process exits (SO_LINGER 0: a RST for any answered one) and a SYN-ACK to a port
    nobody owns is reset."""
    threads = []
    for p in probers:
        mine = totals.setdefault(p.engine_name, {})
        for k, v in p.stats().items():
            mine[k] = mine.get(k, 0) + v
        t = threading.Thread(target=p.close, daemon=True, name="synprobe-close")
        t.start()
        threads.append(t)
    deadline = time.monotonic() + budget
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
