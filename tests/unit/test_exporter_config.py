"""Exporter config: modules with blackbox.yml's field names, the allow-list, one-line errors."""

from __future__ import annotations

import tomllib

import pytest

from synprobe.errors import UsageError
from synprobe.exporter.allow import AllowList
from synprobe.exporter.config import (
    DEFAULT_MODULE,
    Module,
    build_config,
    parse_duration,
    parse_module,
)
from synprobe.exporter.service import probe_budget
from synprobe.targets.addresses import parse_ip

CONFIG = """
probe_allow = ["198.18.0.0/15", "fd00::/8"]
probe_max_inflight = 50

[modules.tcp_connect]
prober = "tcp"
timeout = "2s"
[modules.tcp_connect.tcp]
preferred_ip_protocol = "ip4"

[modules.fast]
timeout = 0.3
retries = 0
source_ip_address = "198.18.0.1"

[modules.loss]
timeout = "1s"
count = 10
"""


def test_a_blackbox_style_config_parses():
    cfg = build_config(tomllib.loads(CONFIG))
    assert cfg.max_probes == 50
    assert cfg.modules["tcp_connect"] == Module("tcp_connect", timeout=2.0,
                                                preferred_ip_protocol="ip4")
    assert cfg.modules["fast"].source == "198.18.0.1"
    assert cfg.modules["loss"].count == 10
    assert cfg.default_module() is cfg.modules["tcp_connect"]
    assert cfg.allow.permits(parse_ip("198.19.255.255"))  # type: ignore[arg-type]
    assert not cfg.allow.permits(parse_ip("198.20.0.0"))  # type: ignore[arg-type]


def test_timeout_bounds_every_attempt():
    m = Module("m", timeout=0.6, retries=2)
    assert m.attempts == 3 and m.attempt_timeout == pytest.approx(0.2)
    # The shaker's attempt stays below the kernel's 1 s SYN retransmission...
    assert Module("m", timeout=5.0, retries=1).attempt_timeout == 0.95
    # ...the raw engine's need not.
    assert Module("m", timeout=5.0, retries=1, engine="raw").attempt_timeout == 2.5
    # count mode: one attempt per SYN, the SYNs spread over the timeout.
    loss = Module("m", timeout=1.0, count=10)
    assert (loss.attempts, loss.attempt_timeout) == (1, pytest.approx(0.1))


def test_modules_share_a_prober_when_the_engine_settings_agree():
    a = Module("a", timeout=1.0, preferred_ip_protocol="ip4")
    b = Module("b", timeout=1.0, preferred_ip_protocol="ip6", ip_protocol_fallback=False)
    assert a.engine_key() == b.engine_key()
    assert a.engine_key() != Module("c", timeout=0.5).engine_key()


def test_no_modules_means_one_default_module():
    cfg = build_config({})
    assert list(cfg.modules) == [DEFAULT_MODULE]
    assert not cfg.allow  # nothing is allowed until the operator says so


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), (3, 3.0), ("1.5", 1.5)]
)
def test_durations(text: object, seconds: float):
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"timeout": "fast"}, "modules.m.timeout: expected seconds"),
        ({"timeout": 0}, "modules.m.timeout: expected seconds"),
        ({"timeout": "2h"}, "modules.m.timeout: expected seconds"),
        ({"retries": -1}, "modules.m.retries: expected a whole number from 0 to 10"),
        ({"retries": True}, "modules.m.retries"),
        ({"prober": "http"}, "modules.m.prober: synprobe only has the tcp prober"),
        ({"bogus": 1}, "modules.m.bogus: unknown key"),
        ({"tcp": {"query_response": []}}, "modules.m.tcp.query_response: not supported"),
        ({"tcp": {"preferred_ip_protocol": "ip4"}, "preferred_ip_protocol": "ip4"},
         "given both inside and outside tcp"),
        ({"preferred_ip_protocol": "ipv4"}, "expected one of ip4, ip6"),
        ({"ip_protocol_fallback": "yes"}, "expected true or false"),
        ({"source_ip_address": "eth0"}, "modules.m.source_ip_address: expected an IP address"),
        ({"engine": "turbo"}, "modules.m.engine: expected one of shaker, raw"),
        ({"via": "198.18.1.11"}, "only the raw engine can check through a real server"),
        ({"count": 0}, "modules.m.count"),
        ({"count": 5, "retries": 1}, "count and retries exclude each other"),
        ({"mark": "x"}, "modules.m.mark"),
    ],
)
def test_module_errors_are_one_line_naming_the_key(body: dict[str, object], message: str):
    with pytest.raises(UsageError, match=message) as info:
        parse_module("m", body)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "allow", "message"),
    [
        ({"probe_allow": "not-a-cidr"}, (), "--probe-allow 'not-a-cidr'"),
        ({}, ("198.18.0.0/33",), "--probe-allow '198.18.0.0/33'"),
        ({"probe_allow": [1]}, (), "probe_allow: expected a list of CIDR blocks"),
        ({"probe_max_inflight": 0}, (), "probe_max_inflight"),
        ({"modules": {"bad name!": {}}}, (), "a module name is"),
        ({"modules": {"m": "x"}}, (), "modules.m: expected a table"),
    ],
)
def test_config_errors(raw: dict[str, object], allow: tuple[str, ...], message: str):
    with pytest.raises(UsageError, match=message):
        build_config(raw, probe_allow=allow)


def test_allow_list_adds_command_line_to_file_and_subtracts_default_exclusions():
    cfg = build_config({"probe_allow": ["198.18.0.0/24"]},
                       probe_allow=["127.0.0.0/8,::1", "0.0.0.0/0"])
    allow = cfg.allow
    for ok in ("198.18.0.1", "127.0.0.1", "::1", "8.8.8.8"):
        assert allow.refusal(parse_ip(ok)) is None, ok  # type: ignore[arg-type]
    for excluded in ("224.0.0.1", "255.255.255.255", "0.0.0.0"):
        why = allow.refusal(parse_ip(excluded))  # type: ignore[arg-type]
        assert why is not None and "default exclusions" in why
    why = allow.refusal(parse_ip("::2"))  # type: ignore[arg-type]
    assert why is not None and "outside the allow-list" in why


def test_allow_list_boundaries():
    allow = AllowList.parse(["198.18.0.8/29"])
    inside = [parse_ip(f"198.18.0.{i}") for i in range(8, 16)]
    outside = [parse_ip(a) for a in ("198.18.0.7", "198.18.0.16", "::ffff:198.18.0.8")]
    assert all(allow.permits(a) for a in inside)  # type: ignore[arg-type]
    assert not any(allow.permits(a) for a in outside)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timeout", "header", "budget"),
    [
        (5.0, None, 5.0),  # no header: the module's timeout
        (5.0, "10", 5.0),  # the scrape waits longer than the module needs
        (5.0, "3", 2.5),  # Prometheus gives up at 3 s: answer by 2.5 s
        (1.0, "0.4", 1.0),  # header below the offset: blackbox uses the module's timeout
    ],
)
def test_probe_budget_follows_blackbox_exporter(timeout: float, header: str | None,
                                                budget: float):
    assert probe_budget(Module("m", timeout=timeout), header) == pytest.approx(budget)


@pytest.mark.parametrize("header", ["abc", "-1", "nan", "inf", "0"])
def test_bad_scrape_timeout_header(header: str):
    with pytest.raises(UsageError, match="X-Prometheus-Scrape-Timeout-Seconds"):
        probe_budget(Module("m"), header)
