"""synprobe-haproxy-check: arguments, environment fallback, exit codes, silence, light imports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from synprobe.cli.haproxy_check import (
    EXIT_DOWN,
    EXIT_LOCAL,
    EXIT_UP,
    EXIT_USAGE,
    main,
    parse_args,
    server_target,
)
from synprobe.errors import UsageError
from synprobe.model import Target
from synprobe.targets.build import parse_target


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port with a listener that never accepts (a half-open check never needs it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # bound, never listening, then released: RST


def test_open_port_exits_0_silently(listening_port: int, capsys: pytest.CaptureFixture[str]):
    assert main(["NOT_USED", "NOT_USED", "127.0.0.1", str(listening_port)], env={}) == EXIT_UP
    assert capsys.readouterr() == ("", "")


def test_closed_port_exits_1_silently(closed_port: int, capsys: pytest.CaptureFixture[str]):
    assert main(["", "", "127.0.0.1", str(closed_port)], env={}) == EXIT_DOWN
    assert capsys.readouterr() == ("", "")


def test_environment_fills_empty_arguments(listening_port: int):
    env = {"HAPROXY_SERVER_ADDR": "127.0.0.1", "HAPROXY_SERVER_PORT": str(listening_port)}
    assert main([], env=env) == EXIT_UP
    assert main(["x", "y", "", ""], env=env) == EXIT_UP


def test_arguments_win_over_environment(listening_port: int, closed_port: int):
    env = {"HAPROXY_SERVER_ADDR": "127.0.0.1", "HAPROXY_SERVER_PORT": str(closed_port)}
    assert main(["x", "y", "127.0.0.1", str(listening_port)], env=env) == EXIT_UP


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a", "b", "c"], "got 3 arguments"),
        (["a", "b", "localhost", "80"], "not an IP address"),
        (["a", "b", "127.0.0.1", "0"], "not a port number"),
        (["a", "b", "127.0.0.1", "99999"], "not a port number"),
        (["a", "b", "127.0.0.1", ""], "no port for server 127.0.0.1"),
        (["a", "b", "", ""], "no server address"),
        (["--timeout", "x", "a", "b", "127.0.0.1", "80"], "--timeout expects a number"),
        (["--timeout"], "--timeout expects a value"),
        (["--bogus", "a", "b", "127.0.0.1", "80"], "unknown option --bogus"),
        (["a", "b", "224.0.0.1", "80"], "refusing to check 224.0.0.1"),
        (["a", "b", "::ffff:127.0.0.1", "80"], "IPv4-mapped"),
        (["--timeout", "2", "a", "b", "127.0.0.1", "80"], "per attempt"),
        (["--retries", "-1", "a", "b", "127.0.0.1", "80"], "--retries must be 0 or more"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]):
    assert main(argv, env={}) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and message in err, err


def test_unusable_source_is_a_local_failure(listening_port: int,
                                            capsys: pytest.CaptureFixture[str]):
    # 198.18.255.254 is a lab address this host does not own: bind() fails with EADDRNOTAVAIL.
    argv = ["--source", "198.18.255.254", "a", "b", "127.0.0.1", str(listening_port)]
    assert main(argv, env={}) == EXIT_LOCAL
    assert "EADDRNOTAVAIL" in capsys.readouterr().err


def test_options_parse_in_both_forms():
    args = parse_args(["--timeout=0.2", "--retries", "3", "--source", "127.0.0.1", "--mark=7",
                       "p", "q", "127.0.0.1", "80"])
    assert (args.timeout, args.retries, args.source, args.mark) == (0.2, 3, "127.0.0.1", 7)
    assert args.positional == ["p", "q", "127.0.0.1", "80"]


def test_ipv6_and_bracketed_addresses_are_canonical():
    assert server_target(["", "", "[FD00:5E::0002]", "80"], {}) == Target("fd00:5e::2", 80)
    assert server_target(["", "", "fd00:5e::2", "80"], {}) == Target("fd00:5e::2", 80)


@pytest.mark.parametrize(
    "addr",
    ["0.0.0.0", "0.255.255.255", "224.0.0.1", "239.255.255.255", "240.0.0.1",
     "255.255.255.255", "::", "ff02::1", "::ffff:198.18.0.2",
     "1.0.0.0", "223.255.255.255", "198.18.0.2", "::1", "fe80::1", "fd00:5e::2"],
)
def test_refusals_match_the_library_default_exclusions(addr: str):
    """The check repeats the library's default exclusions without importing them (they live
    beside netaddr): the two must agree at every boundary."""
    try:
        parse_target((addr, 80))
        library_refuses = False
    except UsageError:
        library_refuses = True
    try:
        server_target(["", "", addr, "80"], {})
        check_refuses = False
    except UsageError:
        check_refuses = True
    assert check_refuses == library_refuses


def test_help_teaches_the_wrapper_script(capsys: pytest.CaptureFixture[str]):
    assert main(["--help"], env={}) == 0
    out = capsys.readouterr().out
    assert "external-check command" in out and 'exec ' in out


def test_start_up_imports_nothing_heavy(listening_port: int):
    """One process per check: the check must not load asyncio, aiohttp, prometheus_client,
    netaddr, argparse or scapy (measured: ~45 ms a check in all, vs ~105 ms for the CLI)."""
    code = (
        "import json, sys\n"
        "from synprobe.cli.haproxy_check import main\n"
        f"rc = main(['a', 'b', '127.0.0.1', '{listening_port}'], env={{}})\n"
        "heavy = ['asyncio', 'aiohttp', 'prometheus_client', 'netaddr', 'argparse', 'scapy']\n"
        "print(json.dumps([rc, [m for m in heavy if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == [EXIT_UP, []]


def _close_stdio() -> None:
    for fd in (0, 1, 2):
        os.close(fd)


def test_runs_as_haproxy_runs_it_in_quiet_mode(listening_port: int, closed_port: int):
    """HAProxy's child: an environment of HAProxy's own (PATH empty), descriptors 0-2 closed."""
    check = Path(sys.executable).with_name("synprobe-haproxy-check")
    env = {"PATH": "", "HAPROXY_SERVER_ADDR": "127.0.0.1"}
    codes = []
    for port in (listening_port, closed_port):
        done = subprocess.run([str(check), "NOT_USED", "NOT_USED", "127.0.0.1", str(port)],
                              env=env, preexec_fn=_close_stdio, check=False)
        codes.append(done.returncode)
    done = subprocess.run([str(check), "", "", "", ""], env=env, preexec_fn=_close_stdio,
                          check=False)  # no port anywhere: usage, with no stderr to say so
    assert [*codes, done.returncode] == [EXIT_UP, EXIT_DOWN, EXIT_USAGE]
