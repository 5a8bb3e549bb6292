"""The /probe target: strict parsing, blackbox_exporter's address choice, bounded lookups."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from synprobe.errors import UsageError
from synprobe.exporter.target import (
    Resolver,
    Unresolvable,
    choose_address,
    parse_probe_target,
)
from synprobe.targets.addresses import parse_ip

V4 = parse_ip("198.18.0.2")
V6 = parse_ip("fd00:5e::2")


@pytest.mark.parametrize(("text", "host", "port", "literal"), [
    ("198.18.0.2:80", "198.18.0.2", 80, V4),
    ("[fd00:5e::2]:443", "fd00:5e::2", 443, V6),
    ("db1.example:5432", "db1.example", 5432, None),
    ("under_score.internal.:1", "under_score.internal.", 1, None),
])
def test_good_targets(text: str, host: str, port: int, literal: object):
    t = parse_probe_target(text)
    assert (t.host, t.port, t.literal) == (host, port, literal)


@pytest.mark.parametrize("text", [
    "", "198.18.0.2", "fd00::2:80", "[fd00::2]", "[fd00::2]x:80", "host:", "host:65536",
    "host:-1", "198.18.0.0/24:80", "198.18.0.1-5:80", "-bad.example:80", "a..b:80",
    "h\u00e9.example:80", "a\tb:80", "x" * 301,
])
def test_bad_targets(text: str):
    with pytest.raises(UsageError):
        parse_probe_target(text)


def test_address_choice_follows_blackbox_exporter():
    both = [V4, V6]
    assert choose_address(both, "ip6", True) == V6
    assert choose_address(both, "ip4", True) == V4
    assert choose_address([V4], "ip6", True) == V4  # fallback to the other family
    with pytest.raises(Unresolvable, match="no ip6 address"):
        choose_address([V4], "ip6", False)


def test_lookups_are_bounded_even_when_requests_give_up():
    gate = threading.Event()
    calls: list[str] = []

    def slow_getaddrinfo(host: str, *_: object) -> list[tuple[object, ...]]:
        calls.append(host)
        gate.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("198.18.0.2", 0))]

    resolver = Resolver(workers=1, max_pending=2, getaddrinfo=slow_getaddrinfo)

    async def main() -> None:
        for name in ("a.example", "b.example"):  # both give up; their lookups stay pending
            with pytest.raises(Unresolvable, match="took longer than"):
                await resolver.resolve_all(name, 0.05)
        assert resolver.pending == 2
        t0 = time.monotonic()
        with pytest.raises(Unresolvable, match="2 name lookups are already waiting"):
            await resolver.resolve_all("c.example", 5.0)
        assert time.monotonic() - t0 < 0.5  # refused at once, not queued
        gate.set()
        deadline = time.monotonic() + 5
        while resolver.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert resolver.pending == 0
        assert await resolver.resolve_all("d.example", 5.0) == [V4]

    try:
        asyncio.run(main())
    finally:
        gate.set()
        resolver.close()
    assert "c.example" not in calls
