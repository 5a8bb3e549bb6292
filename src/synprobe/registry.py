"""The engine registry that the library and the CLI's --engine flag share.

Engines are imported lazily by name, so `import synprobe` stays light and the shaker engine
never loads scapy. Each engine's own options are typed (`RawOptions`); `engine_options()` makes
them from the library's keyword arguments, and `default_concurrency()` is each engine's own
default in-flight bound.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from synprobe.engines.base import LIBRARY_CONCURRENCY, Engine, ProbeOptions
from synprobe.errors import EngineUnavailable, UsageError

EngineFactory = Callable[[ProbeOptions], Engine]

# name -> "module:attribute" of a factory taking ProbeOptions.
_BUILTIN = {
    "shaker": "synprobe.engines.shaker:ShakerEngine",
    "raw": "synprobe.engines.raw.engine:RawEngine",
}
_registered: dict[str, EngineFactory] = {}


def engines() -> list[str]:
    """The names `engine=` and `--engine` accept."""
    return sorted({*_BUILTIN, *_registered})


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make a custom engine (a test double, a plug-in) available by name."""
    _registered[name] = factory


def check_name(name: str) -> None:
    if name not in _registered and name not in _BUILTIN:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(engines())}")


def engine_options(name: str, keywords: dict[str, object]) -> object | None:
    """The engine's typed options from keyword arguments (None when none are given)."""
    check_name(name)
    if name == "raw" and name not in _registered:
        from synprobe.engines.raw.options import RawOptions  # pure: no scapy, no sockets

        return RawOptions.from_keywords(keywords)
    if keywords:
        raise UsageError(f"the {name} engine has no option {', '.join(sorted(keywords))}")
    return None


def default_concurrency(name: str) -> int:
    """Checks in flight at once when the caller does not say: each engine's own budget (the
    shaker's from the open files this process may still open, the raw engine's from memory),
    without changing any process-wide limit."""
    from synprobe.kernel.fdlimit import library_concurrency

    return library_concurrency(name) if name in _BUILTIN else LIBRARY_CONCURRENCY


def create_engine(name: str, options: ProbeOptions) -> Engine:
    if name in _registered:
        return _registered[name](options)
    check_name(name)
    module_name, attr = _BUILTIN[name].split(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").startswith("synprobe"):
            raise  # our own bug, not a missing package
        # scapy (raw) is a base dependency: missing, the installation is broken.
        raise EngineUnavailable(
            f"the {name} engine needs a package that is not installed ({exc.name}); "
            "reinstall synprobe (pip install --force-reinstall synprobe)"
        ) from exc
    factory: EngineFactory = getattr(module, attr)
    return factory(options)
