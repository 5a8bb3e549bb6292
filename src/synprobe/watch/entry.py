"""One watched target as the service holds it: config, health, address, check in flight."""

from __future__ import annotations

from collections import deque
from typing import Any

from synprobe.model import Target
from synprobe.watch.config import WatchTarget
from synprobe.watch.events import rfc3339
from synprobe.watch.labels import target_labels
from synprobe.watch.state import TargetState

HISTORY = 24  # RTTs kept per target for the live view's sparkline


class Entry:
    """One watched target: its config, health, resolved address and check in flight."""

    __slots__ = ("address", "due", "fall", "history", "in_flight", "interval", "key",
                 "labels", "probe", "prober_key", "resolve_error", "retired", "rise", "state",
                 "target", "waiting")

    def __init__(self, target: WatchTarget) -> None:
        self.state = TargetState()
        self.key = target.key
        self.retarget(target)
        self.set_address(None if target.is_name else target.host)
        self.resolve_error = ""
        self.in_flight = False
        self.waiting: float | None = None  # a due slot that came while a check was running
        self.due = 0.0
        self.retired = False
        self.history: deque[float | None] = deque(maxlen=HISTORY)  # RTTs (None: no answer)
        self.labels = target_labels(target.host, target.port, target.via)  # for /metrics

    def retarget(self, target: WatchTarget) -> None:
        """New settings for the same (host, port, via); what the check path reads, cached."""
        self.target = target
        s = target.settings
        self.prober_key = s.check_key()
        self.interval, self.rise, self.fall = s.interval, s.rise, s.fall

    def set_address(self, address: str | None) -> None:
        self.address = address
        self.probe = None if address is None else Target(address, self.target.port,
                                                          self.target.via)

    def status(self) -> dict[str, Any]:
        last = self.state.last
        return {
            "host": self.target.host,
            "port": self.target.port,
            "via": self.target.via,
            "group": self.target.group,
            "address": self.address,
            "status": self.state.status,
            "since": None if self.state.since is None else rfc3339(self.state.since),
            "state": None if last is None else last.state.value,
            "reason": None if last is None else last.reason,
            "rtt_ms": None if last is None or last.rtt is None else round(last.rtt * 1000, 3),
            "checked": None if self.state.last_time is None else rfc3339(self.state.last_time),
        }
