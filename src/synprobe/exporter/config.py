"""The exporter's configuration: probe modules and the allow-list, from TOML and the command line.

Modules use blackbox_exporter's field names where they apply (`prober`, `timeout`,
`preferred_ip_protocol`, `ip_protocol_fallback`, `source_ip_address`; the last three also inside
a `tcp` table, as blackbox.yml nests them) plus synprobe's (`engine`, `retries`, `via`, `mark`,
`count`). Every mistake is one UsageError line naming the key, e.g.
`modules.web.timeout: expected seconds ("2s", "500ms" or a number), got 'fast'`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from synprobe.errors import UsageError
from synprobe.exporter.allow import AllowList

DEFAULT_MODULE = "tcp_connect"  # blackbox.yml's customary TCP module name
DEFAULT_TIMEOUT = 1.0  # seconds for the whole probe: the library's 0.5 s per attempt, 2 attempts
DEFAULT_RETRIES = 1
DEFAULT_MAX_PROBES = 1000  # probes in flight at once; one more gets 503
MAX_COUNT = 100  # SYNs per loss-measuring probe
SHAKER_MAX_ATTEMPT = 0.95  # the shaker's per-attempt ceiling: below the kernel's 1 s SYN RTO
ENGINES = ("shaker", "raw")

_TCP_KEYS = ("preferred_ip_protocol", "ip_protocol_fallback", "source_ip_address")
_MODULE_KEYS = frozenset(
    {"prober", "timeout", "tcp", *_TCP_KEYS, "engine", "retries", "via", "mark", "count"}
)
_DURATION = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m)?")
_UNIT = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}


@dataclass(frozen=True, slots=True)
class Module:
    """One probe module. `timeout` bounds the whole probe, every attempt inside it."""

    name: str
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    preferred_ip_protocol: str = "ip6"  # blackbox's default
    ip_protocol_fallback: bool = True
    source: str | None = None
    engine: str = "shaker"
    via: str | None = None
    mark: int | None = None
    count: int | None = None  # loss measurement: this many SYNs, spread over the timeout

    @property
    def attempts(self) -> int:
        return 1 if self.count else self.retries + 1

    @property
    def attempt_timeout(self) -> float:
        """Each attempt's share of the timeout (capped for the shaker, whose attempt must end
        before the kernel retransmits the SYN)."""
        share = self.timeout / (self.count or self.attempts)
        return min(share, SHAKER_MAX_ATTEMPT) if self.engine == "shaker" else share

    def engine_key(self) -> tuple[object, ...]:
        """What the engine needs fixed at start: modules with equal keys share one Prober."""
        return (self.engine, self.attempt_timeout, 0 if self.count else self.retries,
                self.source, self.mark)


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    modules: Mapping[str, Module] = field(default_factory=dict)
    allow: AllowList = field(default_factory=AllowList)
    max_probes: int = DEFAULT_MAX_PROBES

    def default_module(self) -> Module | None:
        """The module used when a request names none: `tcp_connect`, or the only one."""
        if DEFAULT_MODULE in self.modules:
            return self.modules[DEFAULT_MODULE]
        if len(self.modules) == 1:
            return next(iter(self.modules.values()))
        return None


def parse_duration(value: object, where: str) -> float:
    """`2`, `2.5`, `"2s"`, `"500ms"`, `"1m"` -> seconds (positive)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m["n"]) * _UNIT[m["unit"]]
    if seconds is None or not 0 < seconds <= 3600:
        raise UsageError(f'{where}: expected seconds ("2s", "500ms" or a number up to 3600), '
                         f"got {value!r}")
    return seconds


def _int(value: object, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{where}: expected a whole number from {lo} to {hi}, got {value!r}")
    return value


def _choice(value: object, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UsageError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _address(value: object, where: str) -> str:
    from synprobe.targets.addresses import format_ip, parse_ip

    ip = parse_ip(value) if isinstance(value, str) else None
    if ip is None:
        raise UsageError(f"{where}: expected an IP address, got {value!r}")
    return format_ip(ip[1], ip[0] == 6)


def _flatten(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Accept blackbox.yml's nesting (`tcp = {preferred_ip_protocol = "ip4"}`) and flat keys."""
    items = {k: v for k, v in raw.items() if k != "tcp"}
    tcp = raw.get("tcp", {})
    if not isinstance(tcp, Mapping):
        raise UsageError(f"modules.{name}.tcp: expected a table")
    for key, value in tcp.items():
        if key not in _TCP_KEYS:
            raise UsageError(f"modules.{name}.tcp.{key}: not supported (synprobe's tcp prober "
                             f"takes {', '.join(_TCP_KEYS)}; no query_response or TLS)")
        if key in items:
            raise UsageError(f"modules.{name}: {key} is given both inside and outside tcp")
        items[key] = value
    return items


def parse_module(name: str, raw: object) -> Module:
    where = f"modules.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UsageError(f"{where}: a module name is letters, digits, _ . - (at most 64)")
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: expected a table")
    items = _flatten(name, raw)
    unknown = sorted(set(items) - _MODULE_KEYS)
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: unknown key (known: "
                         f"{', '.join(sorted(_MODULE_KEYS))})")
    if "prober" in items and items["prober"] != "tcp":
        raise UsageError(f"{where}.prober: synprobe only has the tcp prober, got "
                         f"{items['prober']!r}")
    kw: dict[str, Any] = {"name": name}
    if "timeout" in items:
        kw["timeout"] = parse_duration(items["timeout"], f"{where}.timeout")
    if "retries" in items:
        kw["retries"] = _int(items["retries"], f"{where}.retries", 0, 10)
    if "preferred_ip_protocol" in items:
        kw["preferred_ip_protocol"] = _choice(items["preferred_ip_protocol"],
                                              f"{where}.preferred_ip_protocol", ("ip4", "ip6"))
    if "ip_protocol_fallback" in items:
        if not isinstance(items["ip_protocol_fallback"], bool):
            raise UsageError(f"{where}.ip_protocol_fallback: expected true or false")
        kw["ip_protocol_fallback"] = items["ip_protocol_fallback"]
    if "source_ip_address" in items:
        kw["source"] = _address(items["source_ip_address"], f"{where}.source_ip_address")
    if "engine" in items:
        kw["engine"] = _choice(items["engine"], f"{where}.engine", ENGINES)
    if "via" in items:
        kw["via"] = _address(items["via"], f"{where}.via")
    if "mark" in items:
        kw["mark"] = _int(items["mark"], f"{where}.mark", 0, 2**32 - 1)
    if "count" in items:
        kw["count"] = _int(items["count"], f"{where}.count", 1, MAX_COUNT)
        if "retries" in items:
            raise UsageError(f"{where}: count and retries exclude each other (with count, "
                             "each of the SYNs is one attempt)")
    module = Module(**kw)
    if module.via is not None and module.engine != "raw":
        raise UsageError(f"{where}.via: only the raw engine can check through a real server; "
                         'set engine = "raw" (or use mark with policy routing)')
    return module


def parse_modules(raw: object) -> dict[str, Module]:
    """The `[modules.NAME]` tables. With none, one default module `tcp_connect`."""
    if raw is None:
        return {DEFAULT_MODULE: Module(DEFAULT_MODULE)}
    if not isinstance(raw, Mapping):
        raise UsageError("modules: expected tables [modules.NAME]")
    modules = {str(name): parse_module(str(name), body) for name, body in raw.items()}
    return modules or {DEFAULT_MODULE: Module(DEFAULT_MODULE)}


def _allow_items(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f'{where}: expected a list of CIDR blocks, e.g. ["198.18.0.0/15"]')


def build_config(
    raw: Mapping[str, Any] | None = None,
    probe_allow: Iterable[str] = (),
    max_probes: int | None = None,
) -> ExporterConfig:
    """From the config file's raw mapping (`probe_allow`, `probe_max_inflight`, `[modules]`)
    and the command line's `--probe-allow` values (added to the file's)."""
    raw = raw or {}
    allow_tokens = _allow_items(raw.get("probe_allow", []), "probe_allow") + list(probe_allow)
    limit = max_probes
    if limit is None and "probe_max_inflight" in raw:
        limit = _int(raw["probe_max_inflight"], "probe_max_inflight", 1, 100_000)
    return ExporterConfig(
        modules=parse_modules(raw.get("modules")),
        allow=AllowList.parse(allow_tokens),
        max_probes=DEFAULT_MAX_PROBES if limit is None else limit,
    )
