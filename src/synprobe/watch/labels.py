"""Prometheus label text for a target, escaped once (per the text exposition format)."""

from __future__ import annotations


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def target_labels(host: str, port: int, via: str | None) -> str:
    """`host="..",port="..",via=".."`; `via` is "" without a real server."""
    return f'host="{_escape(host)}",port="{port}",via="{_escape(via or "")}"'
