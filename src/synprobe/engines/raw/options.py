"""The raw engine's own options, checked once when it is made. No sockets here."""

from __future__ import annotations

from typing import NamedTuple

from synprobe.errors import UsageError
from synprobe.kernel.marks import check_mark
from synprobe.wire.cookie import DEFAULT_PORT_HI, DEFAULT_PORT_LO

OPTIONS = frozenset({"rst", "port_lo", "port_hi", "sport_range", "mark", "via_mode", "freebind"})
VIA_MODES = ("l2", "ipip")


class RawSettings(NamedTuple):
    rst: str  # "kernel": the local kernel resets open ports; "self": the engine does too
    port_lo: int  # the source ports SYNs leave from (the cookie picks one per target)
    port_hi: int
    mark: int | None  # SO_MARK on the raw sockets (and the route lookups)
    via_mode: str = "l2"  # how checks through a real server (via) go: see rawvia
    freebind: bool = False  # the source may be an address this host does not hold (yet)


def parse_settings(extra: dict[str, object],
                   ephemeral: tuple[int, int] | None) -> RawSettings:
    """Check `ProbeOptions.extra` for the raw engine; `ephemeral` is ip_local_port_range."""
    unknown = set(extra) - OPTIONS
    if unknown:
        raise UsageError(f"the raw engine has no option {', '.join(sorted(unknown))}")
    rst = extra.get("rst") or "kernel"
    if rst not in ("kernel", "self"):
        raise UsageError(f"rst must be 'kernel' or 'self', got {rst!r}")
    via_mode = extra.get("via_mode") or "l2"
    if via_mode not in VIA_MODES:
        raise UsageError(f"via_mode must be 'l2' or 'ipip', got {via_mode!r}")
    try:
        mark = None if extra.get("mark") is None else check_mark(extra["mark"])
        if "sport_range" in extra:
            if "port_lo" in extra or "port_hi" in extra:
                raise UsageError("give sport_range or port_lo/port_hi, not both")
            spec = extra["sport_range"]
            lo, hi = (int(x) for x in (spec.split("-") if isinstance(spec, str) else spec))
        else:
            lo = int(extra.get("port_lo", DEFAULT_PORT_LO))  # type: ignore[call-overload]
            hi = int(extra.get("port_hi", DEFAULT_PORT_HI))  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad raw engine option: {exc}") from None
    if not 1 <= lo <= hi <= 0xFFFF:
        raise UsageError(f"bad source port range {lo}-{hi}: need 1 <= lo <= hi <= 65535")
    # A port the kernel may hand to a connect() could belong to a socket: the kernel would then
    # not reset our SYN-ACK (or a real connection would see our probe). Refuse, saying how.
    if ephemeral is not None and ephemeral[0] <= hi and lo <= ephemeral[1]:
        raise UsageError(
            f"source ports {lo}-{hi} overlap this host's ephemeral ports {ephemeral[0]}-"
            f"{ephemeral[1]} (net.ipv4.ip_local_port_range): a kernel socket could own a "
            f"probe's port; choose a range outside it (sport_range) or narrow it, e.g. "
            f"sysctl -w net.ipv4.ip_local_port_range=\"{ephemeral[0]} {lo - 1}\"")
    return RawSettings(str(rst), lo, hi, mark, str(via_mode), bool(extra.get("freebind")))

