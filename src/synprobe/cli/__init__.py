"""The command lines: `synprobe` (argv -> one frozen run configuration -> engine -> report ->
exit code: `command`, `config`, `args`, `output`, `workers`, `stops`) and
`synprobe-haproxy-check` (`haproxy_check`, one process per check: it imports only what it
needs, so `main` here is imported on first use)."""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name != "main":
        raise AttributeError(f"module 'synprobe.cli' has no attribute {name!r}")
    from synprobe.cli.command import main

    return main
