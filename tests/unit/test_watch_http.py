"""The HTTP listener: /metrics (names, labels, no series for removed targets), /status, and the
extension point /probe plugs into."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

import synprobe
import synprobe.registry as registry
from synprobe.model import State, Target
from synprobe.testing import FakeEngine
from synprobe.watch.config import parse_config
from synprobe.watch.http import WATCHER, build_app, parse_listen, serve


def answer(target: Target) -> tuple[State, str]:
    return {80: (State.OPEN, "syn-ack"), 81: (State.CLOSED, "rst")}.get(
        target.port, (State.FILTERED, "timeout"))


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(options):
        engine = FakeEngine(answer, options)
        engine.supports_via = True  # type: ignore[attr-defined]
        return engine
    monkeypatch.setitem(registry._registered, "fake", make)


def cfg(targets: list[str], via: list[str] | None = None):
    group = {"engine": "fake", "interval": 0.05, "targets": targets}
    if via:
        group["via"] = via
    return parse_config({"groups": {"g": group}})


async def scenario(watcher, body, extra_routes=()):
    stopping = asyncio.Event()
    await watcher.open()
    runner = await serve(build_app(watcher, extra_routes=extra_routes), "127.0.0.1:0")
    port = runner.addresses[0][1]
    task = asyncio.ensure_future(watcher.run(stopping))
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            return await body(http)
    finally:
        stopping.set()
        await task
        await runner.cleanup()


async def until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_and_status() -> None:
    w = synprobe.Watcher(cfg(["198.18.0.2:80", "198.18.0.2:81", "[fd00::2]:82"]))

    async def body(http):
        await until(lambda: all(s["status"] != "unknown" for s in w.status()))
        async with http.get("/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            fams = families(await r.text())
        async with http.get("/status") as r:
            status = await r.json()
        return fams, status

    fams, status = asyncio.run(scenario(w, body))
    up = {(s.labels["host"], s.labels["port"], s.labels["via"]): s.value
          for s in fams["synprobe_target_up"]}
    assert up == {("198.18.0.2", "80", ""): 1, ("198.18.0.2", "81", ""): 0,
                  ("fd00::2", "82", ""): 0}
    checks = {(s.labels["port"], s.labels["state"]): s.value
              for s in fams["synprobe_checks"] if s.name == "synprobe_checks_total"}
    assert checks["80", "open"] >= 1 and checks["81", "closed"] >= 1
    assert checks["82", "filtered"] >= 1 and checks["80", "closed"] == 0
    rtt = {s.labels["port"] for s in fams["synprobe_target_rtt_seconds"]}
    assert rtt == {"80", "81"}  # a filtered target has no RTT
    assert {s.labels["to"] for s in fams["synprobe_transitions"]} == {"up", "down"}
    for hist in ("synprobe_check_rtt_seconds", "synprobe_check_lateness_seconds"):
        assert {tuple(sorted(s.labels)) for s in fams[hist]} <= {(), ("le",)}  # no per-target
    assert any(s.value > 0 for s in fams["synprobe_engine_sent"])
    assert "process_resident_memory_bytes" in {s.name for f in fams.values() for s in f}
    assert "python_info" in fams
    assert sorted((s["host"], s["port"], s["status"]) for s in status) == [
        ("198.18.0.2", 80, "up"), ("198.18.0.2", 81, "down"), ("fd00::2", 82, "down")]
    assert {"via", "since", "state", "reason", "rtt_ms"} <= status[0].keys()


def test_removed_targets_leave_metrics_and_via_is_a_label() -> None:
    w = synprobe.Watcher(cfg(["198.18.0.2:80", "198.18.0.3:80"]))

    async def body(http):
        await until(lambda: all(s["status"] != "unknown" for s in w.status()))
        await w.apply(cfg(["198.18.0.2:80"], via=["198.18.1.11"]))
        await until(lambda: all(s["status"] != "unknown" for s in w.status()))
        async with http.get("/metrics") as r:
            return families(await r.text())

    fams = asyncio.run(scenario(w, body))
    hosts = {(s.labels["host"], s.labels["via"]) for s in fams["synprobe_target_up"]}
    assert hosts == {("198.18.0.2", "198.18.1.11")}
    assert all(s.labels["host"] != "198.18.0.3" for s in fams["synprobe_checks"])


def test_no_targets_is_an_exporter_with_extra_routes() -> None:
    w = synprobe.Watcher(parse_config({"probe_allow": ["198.18.0.0/15"]}))
    seen: list = []
    w.reload_hooks.append(seen.append)

    async def probe(request: web.Request) -> web.Response:
        watcher = request.app[WATCHER]
        return web.Response(text=json.dumps(watcher.config.passthrough["probe_allow"]))

    async def body(http):
        async with http.get("/probe") as r:
            text = await r.text()
        async with http.get("/status") as r:
            status = await r.json()
        async with http.get("/metrics") as r:
            metrics = await r.text()
        return text, status, metrics

    text, status, metrics = asyncio.run(
        scenario(w, body, extra_routes=[web.get("/probe", probe)]))
    assert json.loads(text) == ["198.18.0.0/15"]
    assert status == []
    assert "synprobe_targets" in metrics
    assert seen and seen[0].passthrough["probe_allow"] == ["198.18.0.0/15"]


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9650", ("127.0.0.1", 9650)),
    ("[::1]:9650", ("::1", 9650)),
    (":9650", ("0.0.0.0", 9650)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9650", "host:port", "127.0.0.1:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(synprobe.UsageError, match="--metrics"):
        parse_listen(text)
