"""The /probe handler through aiohttp's test server on loopback: answers, bad requests, the cap,
the scrape timeout, reload. Real shaker checks of loopback ports where a real answer exists;
a FakeEngine where the test needs an answer that loopback cannot give (silence, slowness)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from synprobe.engines.base import ProbeOptions
from synprobe.exporter import Exporter, build_config, probe_routes
from synprobe.exporter.config import Module
from synprobe.exporter.pool import make_prober
from synprobe.model import State, Target
from synprobe.prober import Prober
from synprobe.registry import register_engine
from synprobe.testing import FakeEngine

SILENT_PORT = 82  # the fake engine's "filtered" port
SLOW_PORT = 9  # the fake engine's port whose answer waits for `release`
release = threading.Event()


def _fake_answer(target: Target) -> tuple[State, str]:
    if target.port == SLOW_PORT:
        release.wait(10)
        return State.OPEN, "syn-ack"
    if target.port == SILENT_PORT:
        return State.FILTERED, "timeout"
    return State.OPEN, "syn-ack"


register_engine("exporter-fake",
                lambda options: FakeEngine(_fake_answer, options or ProbeOptions()))


def fake_prober(module: Module, concurrency: int) -> Prober:
    return Prober(engine="exporter-fake", timeout=module.attempt_timeout,
                  retries=module.retries, concurrency=concurrency)


@pytest.fixture
def open_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(exporter: Exporter, body: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        app.add_routes(probe_routes(exporter))
        async with TestClient(TestServer(app)) as client:
            await body(client)

    try:
        asyncio.run(main())
    finally:
        exporter.close()


def metrics(text: str) -> dict[str, Any]:
    """{name: value} for unlabelled samples, {name{k=v}: value} for labelled ones."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                            + "}" if s.labels else "")
            out[key] = s.value
    return out


LOOPBACK = ["127.0.0.0/8", "::1"]


def test_open_and_closed_loopback_ports(open_port: int, closed_port: int):
    exporter = Exporter(build_config({}, probe_allow=LOOPBACK))

    async def body(client: TestClient) -> None:
        r = await client.get("/probe", params={"target": f"127.0.0.1:{open_port}"})
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        m = metrics(await r.text())
        assert m["probe_success"] == 1
        assert m["probe_ip_protocol"] == 4
        assert m["probe_ip_addr_hash"] == 3668918509  # blackbox_exporter's value for 127.0.0.1
        assert m["probe_failed_due_to_regex"] == 0
        assert m["probe_synprobe_state{state=open}"] == 1
        assert m["probe_synprobe_state{state=closed}"] == 0
        assert m["probe_synprobe_info{engine=shaker,reason=syn-ack,state=open}"] == 1
        assert m["probe_synprobe_attempts"] == 1
        assert 0 < m["probe_synprobe_rtt_seconds"] < m["probe_duration_seconds"] < 1

        r = await client.get("/probe", params={"target": f"127.0.0.1:{closed_port}",
                                               "module": "tcp_connect"})
        m = metrics(await r.text())
        assert r.status == 200 and m["probe_success"] == 0
        assert m["probe_synprobe_state{state=closed}"] == 1
        assert m["probe_synprobe_info{engine=shaker,reason=rst,state=closed}"] == 1

        r = await client.get("/probe", params={"target": f"[::1]:{open_port + 0}"})
        m = metrics(await r.text())  # the listener is IPv4 only: ::1 answers RST
        assert m["probe_ip_protocol"] == 6 and m["probe_success"] == 0

    serve(exporter, body)


def test_names_resolve_once_and_every_address_must_be_allowed(open_port: int):
    names = {info[4][0] for info in socket.getaddrinfo("localhost", None)}
    exporter = Exporter(build_config({}, probe_allow=["127.0.0.0/8"]))

    async def body(client: TestClient) -> None:
        r = await client.get("/probe", params={"target": f"localhost:{open_port}"})
        if "::1" in names:  # localhost is 127.0.0.1 and ::1 here: ::1 is not allowed
            assert r.status == 403
            assert "resolves to ::1" in await r.text()
        exporter.reload(build_config(
            {"modules": {"v4": {"preferred_ip_protocol": "ip4"}}}, probe_allow=LOOPBACK))
        r = await client.get("/probe", params={"target": f"localhost:{open_port}"})
        m = metrics(await r.text())
        assert r.status == 200 and m["probe_success"] == 1 and m["probe_ip_protocol"] == 4
        assert m["probe_dns_lookup_time_seconds"] > 0

        r = await client.get("/probe", params={"target": "no-such-host.invalid:80"})
        m = metrics(await r.text())
        assert r.status == 200  # a failed probe, as blackbox_exporter answers, not an error
        assert m["probe_success"] == 0 and m["probe_ip_protocol"] == 0
        assert m["probe_synprobe_info{engine=,reason=unresolved,state=unresolved}"] == 1
        assert "no-such-host.invalid" in r.headers["X-Synprobe-Note"]

    serve(exporter, body)


def test_bad_requests_get_one_line_each_and_the_server_keeps_serving(open_port: int):
    exporter = Exporter(build_config({"modules": {"tcp_connect": {}, "other": {}}},
                                     probe_allow=["127.0.0.0/8"]))
    ok = {"target": f"127.0.0.1:{open_port}"}
    cases: list[tuple[dict[str, str] | str, int, str]] = [
        ({}, 400, "no target"),
        ({"target": ""}, 400, "no target"),
        ({"target": "127.0.0.1"}, 400, "expected HOST:PORT"),
        ({"target": "127.0.0.1:0"}, 400, "port must be 1-65535"),
        ({"target": "127.0.0.1:http"}, 400, "expected HOST:PORT"),
        ({"target": "[::1:80"}, 400, "bad target"),
        ({"target": "127.0.0.0/8:80"}, 400, "not a block or range"),
        ({"target": "bad host!:80"}, 400, "not an IP address or host name"),
        ({"target": "x" * 400 + ":80"}, 400, "at most 300"),
        ("target=127.0.0.1:80&target=127.0.0.2:80", 400, "one target per request"),
        ({**ok, "module": "nope"}, 400, "unknown module 'nope' (configured: other, tcp_connect)"),
        ("target=127.0.0.1:80&module=a&module=b", 400, "one module per request"),
        ("target=127.0.0.1:80&pad=" + "x" * 3000, 400, "query string too long"),
        ({"target": "198.18.0.1:80"}, 403, "outside the allow-list (127.0.0.0/8)"),
        ({"target": "224.0.0.1:80"}, 403, "default exclusions"),
        ({"target": "[::ffff:127.0.0.1]:80"}, 403, "default exclusions"),
    ]

    async def body(client: TestClient) -> None:
        for params, status, line in cases:
            r = await client.get("/probe", params=params)
            text = await r.text()
            assert (r.status, text.count("\n")) == (status, 1), (params, text)
            assert line in text, (params, text)
            if status == 403:
                assert "--probe-allow" in text
        # aiohttp itself refuses a request line past 8190 bytes: still a 400, still serving.
        r = await client.get("/probe?target=127.0.0.1:80&pad=" + "x" * 9000)
        assert r.status == 400
        r = await client.get("/probe", params=ok)
        assert r.status == 200 and metrics(await r.text())["probe_success"] == 1
        assert exporter.slots.used == 0  # no refused request kept a slot

    serve(exporter, body)


def test_without_an_allow_list_every_probe_is_refused_with_the_way_out(open_port: int):
    exporter = Exporter(build_config({}))

    async def body(client: TestClient) -> None:
        r = await client.get("/probe", params={"target": f"127.0.0.1:{open_port}"})
        text = await r.text()
        assert r.status == 403 and text.count("\n") == 1
        assert "--probe-allow CIDR" in text and "probe_allow" in text

    serve(exporter, body)


def test_scrape_timeout_header_bounds_the_probe():
    release.clear()
    exporter = Exporter(build_config({"modules": {"m": {"timeout": 5}}},
                                     probe_allow=["198.18.0.0/15"]),
                        prober_factory=fake_prober)

    async def body(client: TestClient) -> None:
        t0 = time.monotonic()
        r = await client.get("/probe", params={"target": f"198.18.0.2:{SLOW_PORT}"},
                             headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.8"})
        took = time.monotonic() - t0
        m = metrics(await r.text())
        assert r.status == 200 and m["probe_success"] == 0
        assert m["probe_synprobe_info{engine=exporter-fake,reason=deadline,state=filtered}"] == 1
        assert 0.25 <= took < 1.0  # 0.8 s minus blackbox's 0.5 s offset
        assert exporter.slots.used == 1  # the check still runs: its slot is still taken
        release.set()
        await _until(lambda: exporter.slots.used == 0)
        r = await client.get("/probe", params={"target": "198.18.0.2:80"},
                             headers={"X-Prometheus-Scrape-Timeout-Seconds": "nope"})
        assert r.status == 400

    serve(exporter, body)


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_probes_beyond_the_cap_get_503_and_the_server_recovers():
    release.clear()
    exporter = Exporter(build_config({"probe_max_inflight": 2}, probe_allow=["198.18.0.0/15"]),
                        prober_factory=fake_prober)

    async def body(client: TestClient) -> None:
        slow = [asyncio.create_task(client.get("/probe",
                                               params={"target": f"198.18.0.{i}:{SLOW_PORT}"}))
                for i in (2, 3)]
        await _until(lambda: exporter.slots.used == 2)
        r = await client.get("/probe", params={"target": "198.18.0.4:80"})
        text = await r.text()
        assert r.status == 503 and "2 probes already in flight" in text
        release.set()
        for task in slow:
            resp = await task
            assert resp.status == 200 and metrics(await resp.text())["probe_success"] == 1
        await _until(lambda: exporter.slots.used == 0)
        r = await client.get("/probe", params={"target": "198.18.0.4:80"})
        assert r.status == 200

    serve(exporter, body)


def test_count_mode_reports_loss_and_rtt_spread(open_port: int, closed_port: int):
    cfg = build_config({"modules": {"loss": {"timeout": 0.5, "count": 5}}}, probe_allow=LOOPBACK)
    exporter = Exporter(cfg)

    async def body(client: TestClient) -> None:
        t0 = time.monotonic()
        r = await client.get("/probe", params={"target": f"127.0.0.1:{open_port}"})
        m = metrics(await r.text())
        assert time.monotonic() - t0 >= 0.4  # five SYNs spread over 0.5 s, not a burst
        assert (m["probe_synprobe_sent"], m["probe_synprobe_received"]) == (5, 5)
        assert m["probe_synprobe_loss_ratio"] == 0 and m["probe_success"] == 1
        assert (0 < m["probe_synprobe_rtt_min_seconds"] <= m["probe_synprobe_rtt_avg_seconds"]
                <= m["probe_synprobe_rtt_max_seconds"])
        r = await client.get("/probe", params={"target": f"127.0.0.1:{closed_port}"})
        m = metrics(await r.text())  # a RST is an answer: no loss, but no success
        assert (m["probe_synprobe_received"], m["probe_success"]) == (5, 0)

    serve(exporter, body)


def test_count_mode_counts_silence_as_loss():
    cfg = build_config({"modules": {"loss": {"timeout": 0.3, "count": 3}}},
                       probe_allow=["198.18.0.0/15"])
    exporter = Exporter(cfg, prober_factory=fake_prober)

    async def body(client: TestClient) -> None:
        r = await client.get("/probe", params={"target": f"198.18.0.2:{SILENT_PORT}"})
        m = metrics(await r.text())
        assert (m["probe_synprobe_sent"], m["probe_synprobe_received"]) == (3, 0)
        assert m["probe_synprobe_loss_ratio"] == 1 and m["probe_success"] == 0
        assert "probe_synprobe_rtt_min_seconds" not in m

    serve(exporter, body)


def test_all_probes_share_one_prober_and_reload_keeps_or_replaces_it(open_port: int):
    made: list[Any] = []

    @dataclass
    class Made:
        module: Module
        concurrency: int

    def counting(module: Module, concurrency: int) -> Prober:
        made.append(Made(module, concurrency))
        return make_prober(module, concurrency)

    raw = {"modules": {"a": {"preferred_ip_protocol": "ip4"}, "b": {}}}
    exporter = Exporter(build_config(raw, probe_allow=LOOPBACK), prober_factory=counting)
    assert len(made) == 1  # two modules, one engine setting: one Prober

    async def body(client: TestClient) -> None:
        rs = await asyncio.gather(*(client.get("/probe", params={
            "target": f"127.0.0.1:{open_port}", "module": "ab"[i % 2]}) for i in range(40)))
        texts = [await r.text() for r in rs]
        assert [metrics(t)["probe_success"] for t in texts] == [1] * 40
        exporter.reload(build_config(raw, probe_allow=LOOPBACK))
        assert len(made) == 1  # unchanged engine settings: the same Prober carries on
        exporter.reload(build_config({"modules": {"c": {"timeout": 0.4}}},
                                     probe_allow=LOOPBACK))
        assert len(made) == 2
        r = await client.get("/probe", params={"target": f"127.0.0.1:{open_port}"})
        assert metrics(await r.text())["probe_success"] == 1  # "c" is now the only module
        # A new in-flight cap is the engine's concurrency too: a new Prober.
        exporter.reload(build_config({"modules": {"c": {"timeout": 0.4}},
                                      "probe_max_inflight": 2000}, probe_allow=LOOPBACK))
        assert len(made) == 3 and made[-1].concurrency == 2000

    serve(exporter, body)


def test_a_reload_whose_prober_cannot_start_keeps_the_old_config(open_port: int):
    def failing_for_raw(module: Module, concurrency: int) -> Prober:
        if module.engine == "raw":
            raise RuntimeError("the raw engine needs CAP_NET_RAW")
        return make_prober(module, concurrency)

    exporter = Exporter(build_config({}, probe_allow=LOOPBACK), prober_factory=failing_for_raw)
    with pytest.raises(RuntimeError, match="CAP_NET_RAW"):
        exporter.reload(build_config({"modules": {"r": {"engine": "raw"}}}, probe_allow=LOOPBACK))

    async def body(client: TestClient) -> None:
        r = await client.get("/probe", params={"target": f"127.0.0.1:{open_port}"})
        assert r.status == 200 and metrics(await r.text())["probe_success"] == 1

    serve(exporter, body)


def test_memory_stays_bounded_whatever_targets_requests_name():
    """Nothing is kept per target: after thousands of distinct targets the pool still holds the
    config's one Prober, no check is pending in it and no slot is taken."""
    exporter = Exporter(build_config({}, probe_allow=["198.18.0.0/15"]),
                        prober_factory=fake_prober)

    async def body(client: TestClient) -> None:
        for start in range(0, 3000, 100):
            rs = await asyncio.gather(*(client.get("/probe", params={
                "target": f"198.19.{i // 250}.{i % 250 + 1}:{1000 + i}"})
                for i in range(start, start + 100)))
            for r in rs:
                assert r.status == 200
                await r.read()
        await _until(lambda: exporter.slots.used == 0)
        assert len(exporter._pool) == 1
        prober = exporter._pool.get(exporter.config.modules["tcp_connect"])
        assert not prober._pending  # the Prober's map of checks in flight, keyed by target

    serve(exporter, body)


def test_a_failed_engine_is_a_500_with_one_line():
    def broken(target: Target) -> tuple[State, str]:
        raise OSError(100, "Network is down")

    register_engine("exporter-broken", lambda options: FakeEngine(broken, options))

    def factory(module: Module, concurrency: int) -> Prober:
        return Prober(engine="exporter-broken", timeout=0.1, retries=0)

    exporter = Exporter(build_config({}, probe_allow=["198.18.0.0/15"]), prober_factory=factory)

    async def body(client: TestClient) -> None:
        for _ in range(2):  # the first check meets the failure, the next finds the engine gone
            r = await client.get("/probe", params={"target": "198.18.0.2:80"})
            text = await r.text()
            assert r.status == 500 and text.count("\n") == 1 and "probe engine failed" in text
        assert exporter.slots.used == 0

    serve(exporter, body)


def test_a_request_keeps_its_prober_across_a_reload_which_then_closes_it():
    release.clear()
    made: list[Prober] = []

    def recording(module: Module, concurrency: int) -> Prober:
        made.append(fake_prober(module, concurrency))
        return made[-1]

    allow = ["198.18.0.0/15"]
    exporter = Exporter(build_config({"modules": {"m": {"timeout": 5}}}, probe_allow=allow),
                        prober_factory=recording)

    def closed(prober: Prober) -> bool:
        try:
            prober.submit(("198.18.0.2", 80))  # a closed Prober refuses at once
        except RuntimeError:
            return True
        return False

    async def body(client: TestClient) -> None:
        slow = asyncio.create_task(client.get("/probe", params={
            "target": f"198.18.0.2:{SLOW_PORT}"}))
        await _until(lambda: exporter.slots.used == 1)
        # New engine settings: a new Prober; the old one is still held by the slow request.
        try:
            await exporter.areload(build_config({"modules": {"m": {"timeout": 1}}},
                                                probe_allow=allow))
            assert len(made) == 2 and not closed(made[0])
            r = await client.get("/probe", params={"target": "198.18.0.3:80"})
            assert metrics(await r.text())["probe_success"] == 1  # served by the new Prober
        finally:
            release.set()
        r = await slow
        assert r.status == 200 and metrics(await r.text())["probe_success"] == 1
        await _until(lambda: closed(made[0]))  # its last user gone, the old Prober closes
        assert not closed(made[1])

    serve(exporter, body)


def test_a_cancelled_probe_gives_its_slot_back_once_the_check_ends():
    from synprobe.exporter.probing import Slots, run_check

    release.clear()
    module = Module("m", timeout=5.0)
    prober = fake_prober(module, 10)
    slots = Slots(1)

    async def main() -> None:
        assert slots.take()
        task = asyncio.create_task(run_check(prober, module, "198.18.0.2", SLOW_PORT,
                                             time.monotonic() + 5, slots))
        await asyncio.sleep(0.05)
        task.cancel()  # what server shutdown does to a handler
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slots.used == 1  # the check still runs in the Prober: still counted
        release.set()
        await _until(lambda: slots.used == 0)

    try:
        asyncio.run(main())
    finally:
        release.set()
        prober.close()
