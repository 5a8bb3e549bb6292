"""The one contract every engine implements, and the options they all take.

An engine is a small object with one required loop, `run(source)`: it pulls targets from the
source as it has room for them and yields the results each turn of its loop completed, as a list
(one list per turn, not one generator step per result: this is the hot path). Around it, what
its callers use: `preflight()` (fail before anything is sent, opening what the run then uses),
`describe()` (a dry run), `supports_via`, `stats()` and `close()`. Engines convert their
backend's objects and errors into the shared model at this boundary (`os_errors`): no socket
error or scapy packet leaves an engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from synprobe.errors import EngineError, EngineUnavailable, UsageError
from synprobe.kernel.marks import check_mark
from synprobe.model import ProbeResult, Target

LIBRARY_CONCURRENCY = 1000  # an engine without a budget of its own (a plug-in, a test double)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Settings every engine takes, checked once, here; `engine_options` is the engine's own
    typed, frozen options object (`RawOptions` for raw; None: its defaults)."""

    timeout: float = 0.5  # seconds one attempt waits for an answer
    retries: int = 1  # extra attempts after the first, each a fresh SYN
    concurrency: int = LIBRARY_CONCURRENCY  # attempts in flight at once
    rate: float | None = None  # SYNs per second; None = as fast as the engine goes
    source: str | None = None  # local address to send from
    mark: int | None = None  # SO_MARK on the probe sockets (policy routing)
    freebind: bool = False  # the source may be an address this host does not hold (yet)
    engine_options: object | None = None

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise UsageError(f"timeout must be positive, got {self.timeout!r}")
        if self.retries < 0:
            raise UsageError(f"retries must be 0 or more, got {self.retries!r}")
        if self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {self.concurrency!r}")
        if self.rate is not None and not self.rate > 0:
            raise UsageError(f"rate must be positive (or None for no limit), got {self.rate!r}")
        if self.mark is not None:
            check_mark(self.mark)


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
    options: ProbeOptions  # what it was made with (the API sizes its backlog by concurrency)
    supports_via: bool  # can check a target through a named real server (Target.via)

    def preflight(self, vias: Sequence[str] = (), families: Iterable[bool] = ()) -> None:
        """Raise now what would fail the run (a privilege, a real server that cannot serve
        VIPs of these families: v6 True/False), before anything is sent or printed. What it
        opens to find out (sockets) is kept for run()."""
        ...

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        """What a check of `target` would send (a dry run), as one line or one JSON object."""
        ...

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        """Probe every target the source gives; each result is yielded once, as it completes.

        The caller must keep iterating promptly: a half-open check is only safe while the engine
        gets to close its sockets (the API runs engines on a thread of their own for this)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for the run summary (sent, send errors, invalid or dropped replies...)."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def os_errors(engine: str) -> Iterator[None]:
    """The engine boundary: a system call that failed outside any one check becomes the shared
    model's error (a missing privilege: EngineUnavailable; anything else: EngineError)."""
    try:
        yield
    except PermissionError as exc:
        raise EngineUnavailable(f"the {engine} engine was refused by the kernel: "
                                f"{exc.strerror or exc}") from exc
    except OSError as exc:
        raise EngineError(f"the {engine} engine failed: {exc.strerror or exc}") from exc


def require_capability(engine: str, caps: str, exc: OSError,
                       instead: str = "") -> EngineUnavailable:
    """The one-line error for a missing capability, pointing at the documentation (not at a
    setcap of realpath(sys.executable): in a virtual environment that is the system python)."""
    return EngineUnavailable(
        f"the {engine} engine needs {caps} ({exc.strerror or exc}); run it as root or grant "
        f"the capability (see docs/engines.md#privileges){instead}")
