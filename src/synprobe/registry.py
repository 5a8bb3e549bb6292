"""The engine registry that the library and the CLI's --engine flag share.

Engines are imported lazily by name, so `import synprobe` stays light and the shaker engine
never loads scapy.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from synprobe.engines.base import Engine, ProbeOptions
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


def create_engine(name: str, options: ProbeOptions) -> Engine:
    if name in _registered:
        return _registered[name](options)
    if name not in _BUILTIN:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(engines())}")
    module_name, attr = _BUILTIN[name].split(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").startswith("synprobe"):
            raise  # our own bug, not a missing optional package
        raise EngineUnavailable(
            f"the {name} engine needs a package that is not installed ({exc.name}); "
            f"install it with: pip install 'synprobe[{name}]'"
        ) from exc
    factory: EngineFactory = getattr(module, attr)
    return factory(options)
