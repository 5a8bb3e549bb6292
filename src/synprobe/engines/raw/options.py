"""The raw engine's own options: typed, frozen, checked once when they are made. No sockets."""

from __future__ import annotations

from dataclasses import dataclass

from synprobe.errors import UsageError
from synprobe.wire.cookie import DEFAULT_PORT_HI, DEFAULT_PORT_LO

RST_MODES = ("kernel", "self")
VIA_MODES = ("l2", "ipip")
KEYWORDS = frozenset({"rst", "sport_range", "port_lo", "port_hi", "via_mode"})


@dataclass(frozen=True, slots=True)
class RawOptions:
    rst: str = "kernel"  # "kernel": the local kernel resets open ports; "self": the engine does
    port_lo: int = DEFAULT_PORT_LO  # the source ports SYNs leave from (the cookie picks one)
    port_hi: int = DEFAULT_PORT_HI
    via_mode: str = "l2"  # how checks through a real server (via) go: see via.py

    def __post_init__(self) -> None:
        if self.rst not in RST_MODES:
            raise UsageError(f"rst must be 'kernel' or 'self', got {self.rst!r}")
        if self.via_mode not in VIA_MODES:
            raise UsageError(f"via_mode must be 'l2' or 'ipip', got {self.via_mode!r}")
        lo, hi = self.port_lo, self.port_hi
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 0xFFFF):
            raise UsageError(f"bad source port range {lo}-{hi}: need 1 <= lo <= hi <= 65535")

    @classmethod
    def from_keywords(cls, keywords: dict[str, object]) -> RawOptions:
        """The library's keyword arguments (rst=, sport_range="LO-HI" or (lo, hi), port_lo=,
        port_hi=, via_mode=), each checked."""
        unknown = set(keywords) - KEYWORDS
        if unknown:
            raise UsageError(f"the raw engine has no option {', '.join(sorted(unknown))}")
        kw = {k: v for k, v in keywords.items() if v is not None}
        try:
            if "sport_range" in kw:
                if "port_lo" in kw or "port_hi" in kw:
                    raise UsageError("give sport_range or port_lo/port_hi, not both")
                lo, hi = parse_port_range(kw.pop("sport_range"))
                kw.update(port_lo=lo, port_hi=hi)
            for k in ("port_lo", "port_hi"):
                if k in kw:
                    kw[k] = int(kw[k])  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise UsageError(f"bad raw engine option: {exc}") from None
        return cls(**kw)  # type: ignore[arg-type]

    def check_ephemeral(self, ephemeral: tuple[int, int] | None) -> None:
        """A port the kernel may hand to a connect() could belong to a socket: the kernel would
        then not reset our SYN-ACK (or a real connection would see our probe). Refuse, saying
        how. `ephemeral` is net.ipv4.ip_local_port_range."""
        lo, hi = self.port_lo, self.port_hi
        if ephemeral is not None and ephemeral[0] <= hi and lo <= ephemeral[1]:
            raise UsageError(
                f"source ports {lo}-{hi} overlap this host's ephemeral ports {ephemeral[0]}-"
                f"{ephemeral[1]} (net.ipv4.ip_local_port_range): a kernel socket could own a "
                f"probe's port; choose a range outside it (sport_range) or narrow it, e.g. "
                f"sysctl -w net.ipv4.ip_local_port_range=\"{ephemeral[0]} {lo - 1}\"")

    def split(self, count: int) -> list[RawOptions]:
        """`count` workers' shares of the source ports: every worker's packet socket sees every
        reply, and its BPF filter drops those for the other workers' ports."""
        step = (self.port_hi - self.port_lo + 1) // count
        if step < 1:
            raise UsageError(f"source port range {self.port_lo}-{self.port_hi} is too small "
                             f"for {count} workers")
        return [RawOptions(self.rst, self.port_lo + i * step,
                           self.port_hi if i == count - 1 else self.port_lo + (i + 1) * step - 1,
                           self.via_mode) for i in range(count)]


def parse_port_range(spec: object) -> tuple[int, int]:
    """ "LO-HI" or a (lo, hi) pair."""
    lo, hi = (int(x) for x in (spec.split("-") if isinstance(spec, str) else spec))  # type: ignore[attr-defined]
    return lo, hi
