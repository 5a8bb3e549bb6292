"""The one contract every engine implements, and the options they all take.

An engine is a small object with one required method, `run(source)`: it pulls targets from the
source as it has room for them and yields the results each turn of its loop completed, as a list
(one list per turn, not one generator step per result: this is the hot path). Engines
convert their backend's objects and errors into the shared model at this boundary; no socket error
or scapy packet leaves an engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from synprobe.model import ProbeResult, Target


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Settings shared by every engine; `extra` carries engine-specific ones (e.g. rst mode)."""

    timeout: float = 0.5  # seconds one attempt waits for an answer
    retries: int = 1  # extra attempts after the first, each a fresh SYN
    concurrency: int = 1000  # attempts in flight at once
    rate: float | None = None  # SYNs per second; None = as fast as the engine goes
    source: str | None = None  # local address to send from
    extra: dict[str, object] = field(default_factory=dict)


class TargetSource(Protocol):
    """Where an engine takes its work from.

    `pull(n)` returns up to n targets ready now, `[]` when none are ready yet (wait for
    `wakeup_fd` to become readable, if it is not None), or None once no more will ever come.
    `admission()`, asked once per loop turn, says whether checks may start (see
    synprobe.sources: GO, NO_NEW, ABORT); an engine drops targets it pulled but has not
    started once it says NO_NEW, and ends at once on ABORT.
    """

    wakeup_fd: int | None

    def pull(self, limit: int) -> list[Target] | None: ...

    def admission(self) -> int: ...


@runtime_checkable
class Engine(Protocol):
    name: str

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        """Probe every target the source gives; each result is yielded once, as it completes.

        The caller must keep iterating promptly: a half-open check is only safe while the engine
        gets to close its sockets (the API runs engines on a thread of their own for this)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for the run summary (sent, send errors, invalid or dropped replies...)."""
        ...

    def close(self) -> None: ...
