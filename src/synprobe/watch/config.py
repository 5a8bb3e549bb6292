"""The watch service's configuration: a TOML file (standard library `tomllib`) and CLI flags,
turned into one frozen `WatchConfig` with one `WatchTarget` per (host, port, via).

    metrics = "127.0.0.1:9650"        # service keys (CLI flags override them)
    events = "/var/log/synprobe/events.jsonl"
    on_change = "/usr/local/bin/backend-changed"
    exclude = ["198.18.0.99"]
    resolve_interval = 30             # seconds between re-resolving host names

    [defaults]                        # for every group (CLI flags given explicitly win)
    engine = "raw"
    interval = 1.0

    [groups.web]                      # settings: interval timeout retries rise fall engine
    rise = 2                          #   source via mark ports
    fall = 3
    ports = [80]                      # for targets without their own port
    targets = ["198.18.0.2", "web1.example:443", { target = "198.18.0.3:80", fall = 5 }]

`probe_allow` and `[modules.NAME]` belong to the `/probe` endpoint: kept, unparsed, in
`WatchConfig.passthrough`. Any other unknown key is a `ConfigError` with one line naming it.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from synprobe.errors import UsageError
from synprobe.registry import engines
from synprobe.targets.addresses import parse_ip
from synprobe.targets.build import space_of
from synprobe.targets.exclusions import exclusion_set
from synprobe.targets.intervals import Interval
from synprobe.targets.tokens import NoPort, parse_ports, parse_token, parse_via

SERVICE_KEYS = ("metrics", "events", "on_change", "exclude", "resolve_interval", "concurrency")
PASSTHROUGH_KEYS = ("probe_allow", "modules")
SETTING_KEYS = ("interval", "timeout", "retries", "rise", "fall", "engine", "source", "via",
                "mark")
GROUP_KEYS = (*SETTING_KEYS, "ports", "targets")
TARGET_KEYS = ("target", *SETTING_KEYS)
MAX_TARGETS = 65_536  # like the one-shot CLI's limit; --allow-large lifts it


class ConfigError(UsageError):
    """A configuration that cannot be used; str() is one line naming where and why."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How one target is checked. Group and per-target values replace these field by field."""

    interval: float = 1.0
    timeout: float = 0.5
    retries: int = 1
    rise: int = 2
    fall: int = 3
    engine: str = "raw"
    source: str | None = None
    via: tuple[str, ...] = ()
    mark: int | None = None

    def check_key(self) -> tuple[str, float, int, str | None, int | None]:
        """What a Prober is made for: targets with equal keys share one."""
        return (self.engine, self.timeout, self.retries, self.source, self.mark)


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One thing to watch. `host` is what the config said: an address, or a name re-resolved
    while the service runs; metric labels and events use it."""

    host: str
    port: int
    via: str | None
    group: str
    settings: Settings
    is_name: bool = False

    @property
    def key(self) -> tuple[str, int, str | None]:
        return (self.host, self.port, self.via)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    targets: tuple[WatchTarget, ...] = ()
    metrics: str | None = None
    events: str | None = None
    on_change: str | None = None
    exclude: tuple[str, ...] = ()
    resolve_interval: float = 30.0
    concurrency: int = 16_384
    # Raw `probe_allow` / `modules` values, for the /probe endpoint to parse itself.
    passthrough: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _where(path: Sequence[str]) -> str:
    return ".".join(path) if path else "top level"


def _number(value: object, path: Sequence[str], *, integer: bool, minimum: float,
            exclusive: bool = False) -> float:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{_where(path)}: expected {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if v < minimum or (exclusive and v == minimum):
        bound = f"above {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise ConfigError(f"{_where(path)}: must be {bound}, got {value!r}")
    return v


def apply_settings(base: Settings, table: Mapping[str, Any], path: Sequence[str]) -> Settings:
    """`base` with the setting keys of `table` applied (other keys are the caller's)."""
    changes: dict[str, Any] = {}
    for key in SETTING_KEYS:
        if key not in table:
            continue
        value, where = table[key], [*path, key]
        if key in ("interval", "timeout"):
            changes[key] = _number(value, where, integer=False, minimum=0, exclusive=True)
        elif key in ("rise", "fall"):
            changes[key] = int(_number(value, where, integer=True, minimum=1))
        elif key == "retries" or key == "mark":
            changes[key] = int(_number(value, where, integer=True, minimum=0))
        elif key == "engine":
            if value not in engines():
                raise ConfigError(f"{_where(where)}: unknown engine {value!r}; choose one of: "
                                  f"{', '.join(engines())}")
            changes[key] = value
        elif key == "source":
            if not isinstance(value, str) or parse_ip(value) is None:
                raise ConfigError(f"{_where(where)}: expected an IP address, got {value!r}")
            changes[key] = value
        elif key == "via":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise ConfigError(f"{_where(where)}: expected an address or a list of them")
            try:
                changes[key] = tuple(parse_via(v) for v in items)
            except UsageError as exc:
                raise ConfigError(f"{_where(where)}: {exc}") from None
    return replace(base, **changes)


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], path: Sequence[str]) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{_where([*path, key])}: unknown key; expected one of: "
                              f"{', '.join(allowed)}")


def expand_token(token: str, ports: Sequence[int] | None, settings: Settings, group: str,
                 blocked: list[Interval], where: str) -> list[WatchTarget]:
    """One target token (address, name, CIDR, range; with or without a port) as targets,
    parsed once; `blocked` is the exclusion set (from `exclusion_set()`, parsed once)."""
    vias: Sequence[str | None] = settings.via or (None,)
    try:
        parsed = parse_token(token, tuple(ports) if ports else None)
        if parsed.name is not None:
            # A name: kept as written, resolved (and re-resolved) by the service. A name that
            # does not resolve is that target's failure, not a configuration error.
            return [WatchTarget(parsed.name, p, v, group, settings, is_name=True)
                    for p in parsed.ports for v in vias]
        assert parsed.hosts is not None
        space = space_of({parsed.ports: [parsed.hosts]}, blocked)
    except NoPort:
        raise ConfigError(f"{where}: no port for {token!r}: give HOST:PORT or ports") from None
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return [WatchTarget(t.host, t.port, v, group, settings) for t in space for v in vias]


def targets_from_group(name: str, table: Mapping[str, Any], base: Settings,
                       blocked: list[Interval]) -> list[WatchTarget]:
    path = ["groups", name]
    if not isinstance(table, dict):
        raise ConfigError(f"{_where(path)}: expected a table")
    _check_keys(table, GROUP_KEYS, path)
    settings = apply_settings(base, table, path)
    ports = _ports(table.get("ports"), [*path, "ports"])
    items = table.get("targets", [])
    if not isinstance(items, list):
        raise ConfigError(f"{_where([*path, 'targets'])}: expected a list")
    out: list[WatchTarget] = []
    for i, item in enumerate(items):
        where = f"{_where(path)}.targets[{i}]"
        if isinstance(item, str):
            out += expand_token(item, ports, settings, name, blocked, where)
        elif isinstance(item, dict):
            _check_keys(item, TARGET_KEYS, [f"{_where(path)}.targets[{i}]"])
            token = item.get("target")
            if not isinstance(token, str):
                raise ConfigError(f"{where}: an inline table needs target = \"HOST:PORT\"")
            own = apply_settings(settings, item, [where])
            out += expand_token(token, ports, own, name, blocked, where)
        else:
            raise ConfigError(f"{where}: expected \"HOST:PORT\" or {{ target = ... }}")
    return out


def _ports(value: object, path: Sequence[str]) -> list[int] | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return parse_ports(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return parse_ports(str(value))
        if isinstance(value, list) and all(isinstance(p, int) and not isinstance(p, bool)
                                           for p in value):
            return parse_ports(",".join(str(p) for p in value))
    except UsageError as exc:
        raise ConfigError(f"{_where(path)}: {exc}") from None
    raise ConfigError(f"{_where(path)}: expected a port, a list of ports or \"80,443\"")


def parse_config(doc: Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                 cli_tokens: Sequence[str] = (), cli_ports: Sequence[int] | None = None,
                 allow_large: bool = False) -> WatchConfig:
    """A parsed TOML document (plus CLI overrides and CLI targets) as a WatchConfig.

    `overrides` holds service keys and settings given on the command line: they win over the
    file's top level and `[defaults]`, and lose to a group's or a target's own values.
    `cli_tokens` are targets from the command line, in a group named "cli"."""
    overrides = dict(overrides or {})
    _check_keys(doc, (*SERVICE_KEYS, *PASSTHROUGH_KEYS, "defaults", "groups"), [])
    service = {k: doc[k] for k in SERVICE_KEYS if k in doc}
    service.update({k: v for k, v in overrides.items() if k in SERVICE_KEYS})
    if isinstance(service.get("exclude"), str | list) and "exclude" in overrides:
        # Exclusions add up: the file's and the command line's both apply.
        service["exclude"] = [*_string_list(doc.get("exclude", []), "exclude"),
                              *_string_list(overrides["exclude"], "exclude")]
    for key in ("metrics", "events", "on_change"):
        if service.get(key) is not None and not isinstance(service[key], str):
            raise ConfigError(f"{key}: expected a string, got {service[key]!r}")
    excludes = _string_list(service.get("exclude", []), "exclude")
    resolve_interval = _number(service.get("resolve_interval", 30.0), ["resolve_interval"],
                               integer=False, minimum=0, exclusive=True)
    concurrency = int(_number(service.get("concurrency", 16_384), ["concurrency"], integer=True,
                              minimum=1))
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError("defaults: expected a table")
    _check_keys(defaults, SETTING_KEYS, ["defaults"])
    base = apply_settings(Settings(), defaults, ["defaults"])
    base = apply_settings(base, {k: v for k, v in overrides.items() if k in SETTING_KEYS},
                          ["command line"])
    groups = doc.get("groups", {})
    if not isinstance(groups, dict):
        raise ConfigError("groups: expected tables [groups.NAME]")
    targets: dict[tuple[str, int, str | None], WatchTarget] = {}
    blocked = _blocked(excludes)  # parsed once, for every token
    for token in cli_tokens:
        for t in expand_token(token, cli_ports, base, "cli", blocked, "command line"):
            targets.setdefault(t.key, t)
    for name, table in groups.items():
        for t in targets_from_group(name, table, base, blocked):
            if targets.get(t.key) == t:
                continue  # listed twice alike (a CIDR and an address in it): one target
            if t.key in targets:
                raise ConfigError(f"groups.{name}: target {t.host}:{t.port} is already in group "
                                  f"{targets[t.key].group!r} (one target, one schedule)")
            targets[t.key] = t
    if len(targets) > MAX_TARGETS and not allow_large:
        raise ConfigError(f"{len(targets):,} targets is more than {MAX_TARGETS:,}; pass "
                          "--allow-large if you mean it")
    for t in targets.values():
        _check_combination(t)
    passthrough = {k: doc[k] for k in PASSTHROUGH_KEYS if k in doc}
    return WatchConfig(
        targets=tuple(targets.values()), metrics=service.get("metrics"),
        events=service.get("events"), on_change=service.get("on_change"),
        exclude=tuple(excludes), resolve_interval=resolve_interval, concurrency=concurrency,
        passthrough=MappingProxyType(passthrough),
    )


def _blocked(excludes: Sequence[str]) -> list[Interval]:
    try:
        return exclusion_set(excludes)
    except UsageError as exc:
        raise ConfigError(str(exc)) from None


def _check_combination(t: WatchTarget) -> None:
    s = t.settings
    if s.engine == "shaker" and s.timeout > 0.9:
        raise ConfigError(f"group {t.group}: the shaker engine's timeout is per attempt and at "
                          f"most 0.9 s (got {s.timeout:g}); use retries, or engine raw")


def _string_list(value: object, key: str) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key}: expected a list of strings")


def load_config(path: str | None, **kwargs: Any) -> WatchConfig:
    """Read and parse `path` (None: CLI only). Every failure is a one-line ConfigError."""
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config {path}: not UTF-8 text") from None
    try:
        return parse_config(doc, **kwargs)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"config {path}: {exc}") from None
