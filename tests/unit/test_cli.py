"""The CLI in-process over a fake engine: output formats, summary, exit codes, errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from synprobe.cli import main
from synprobe.errors import UsageError
from synprobe.testing import FakeEngine


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_all_open_exits_0_with_a_table(fake_engine: object) -> None:
    code, out, err = run_cli("--engine", "fake", "198.18.0.2:80", "[fd00:5e::2]:80")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "PORT", "STATE", "REASON", "RTT", "TRIES"]
    rows = sorted(line.split()[:4] for line in lines[1:])
    assert rows == [["198.18.0.2", "80", "open", "syn-ack"], ["fd00:5e::2", "80", "open",
                                                               "syn-ack"]]
    assert "\033[" not in out  # no colour when stdout is not a terminal
    assert "2 targets" in err and "open 2" in err


def test_not_all_open_exits_1_and_json_lines(fake_engine: object) -> None:
    code, out, err = run_cli("--engine", "fake", "--json", "-p", "80-83", "198.18.0.2")
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["port"]: r["state"] for r in rows} == {
        80: "open", 81: "closed", 82: "filtered", 83: "unreachable"}
    assert all(list(r) == ["host", "port", "state", "reason", "rtt_ms", "attempts", "engine",
                           "source", "via"] for r in rows)
    summary = json.loads(err.splitlines()[-1])["summary"]
    assert summary["targets"] == 4 and summary["states"]["open"] == 1
    assert summary["stats"] == {"sent": 4}


def test_csv_has_a_header_and_rows(fake_engine: object) -> None:
    code, out, _ = run_cli("--engine", "fake", "--csv", "-q", "-p", "81", "198.18.0.2-198.18.0.4")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1
    assert sorted(r["host"] for r in rows) == ["198.18.0.2", "198.18.0.3", "198.18.0.4"]
    assert {r["state"] for r in rows} == {"closed"}


def test_cidr_sweep_with_excludes(fake_engine: object, tmp_path) -> None:
    exclude_file = tmp_path / "never"
    exclude_file.write_text("# keep off\n198.19.0.8/29\n")
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "-p", "80", "198.19.0.0/27",
                           "--exclude", "198.19.0.0,198.19.0.1", "--exclude-file",
                           str(exclude_file))
    hosts = {json.loads(line)["host"] for line in out.splitlines()}
    assert code == 0
    assert len(hosts) == 32 - 2 - 8
    assert "198.19.0.9" not in hosts and "198.19.0.0" not in hosts


def test_targets_from_a_file_and_stdin(fake_engine: object, tmp_path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "hosts"
    listing.write_text("198.18.0.2:80  # web\n198.18.0.3:81\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("198.18.0.4:80\n"))
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "-iL", str(listing), "-iL", "-")
    assert code == 1
    assert sorted(json.loads(line)["host"] for line in out.splitlines()) == [
        "198.18.0.2", "198.18.0.3", "198.18.0.4"]


@pytest.mark.parametrize(
    ("argv", "token"),
    [
        (["198.18.0.2:0"], "198.18.0.2:0"),
        (["-p", "70000", "198.18.0.2"], "70000"),
        (["-p", "90-80", "198.18.0.2"], "90-80"),
        (["198.18.0.300:80"], "198.18.0.300"),
        (["198.18.0.2"], "no port"),
        ([], "no targets"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(fake_engine: object, argv: list[str],
                                          token: str) -> None:
    code, out, err = run_cli("--engine", "fake", *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and token in err
    assert "Traceback" not in err


def test_large_ranges_need_allow_large(fake_engine: object) -> None:
    code, _, err = run_cli("--engine", "fake", "-p", "80,81", "198.19.0.0/16")
    assert code == 2 and "--allow-large" in err
    code, out, _ = run_cli("--engine", "fake", "-q", "--json", "--allow-large", "-p", "80,81",
                           "198.19.0.0/23")
    assert code == 1 and len(out.splitlines()) == 1024


def test_dry_run_sends_nothing(fake_engine: Callable[[], list[FakeEngine]]) -> None:
    code, out, _ = run_cli("--engine", "fake", "--dry-run", "-p", "80,81", "198.18.0.2")
    assert code == 0
    assert sorted(out.splitlines()) == ["fake 198.18.0.2:80", "fake 198.18.0.2:81"]
    # One engine, described from and closed, never run: no target reached it, nothing sent.
    [engine] = fake_engine()
    assert engine.seen == [] and engine.stats() == {"sent": 0} and engine.closed


def test_one_engine_object_per_run(fake_engine: Callable[[], list[FakeEngine]]) -> None:
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "-p", "80,81", "198.18.0.2")
    assert code == 1 and len(out.splitlines()) == 2
    [engine] = fake_engine()  # the one that was checked is the one that ran
    assert len(engine.seen) == 2 and engine.closed


def test_shards_cover_the_space_once(fake_engine: object) -> None:
    seen: list[str] = []
    for i in range(3):
        _, out, _ = run_cli("--engine", "fake", "--json", "-q", "--seed", "7", "--shard",
                            f"{i}/3", "-p", "80", "198.19.0.0/26")
        seen += [json.loads(line)["host"] for line in out.splitlines()]
    assert len(seen) == 64 and len(set(seen)) == 64


def test_shaker_timeout_limit_is_a_usage_error() -> None:
    code, _, err = run_cli("--timeout", "2", "127.0.0.1:9")
    assert code == 2 and "below the kernel" in err


def test_help_teaches() -> None:
    out = subprocess.run([sys.executable, "-m", "synprobe", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for needle in ("examples:", "--json", "--source", "exit status:", "shaker", "raw"):
        assert needle in out


def test_via_gives_one_result_per_real_server(fake_engine: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import synprobe.testing

    monkeypatch.setattr(synprobe.testing.FakeEngine, "supports_via", True, raising=False)
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "--via", "198.18.0.11",
                           "--via", "198.18.0.12", "198.18.0.100:80", "198.18.0.100:81")
    rows = sorted((r["host"], r["port"], r["via"]) for r in map(json.loads, out.splitlines()))
    assert code == 1
    assert rows == [("198.18.0.100", p, rs) for p in (80, 81)
                    for rs in ("198.18.0.11", "198.18.0.12")]
    code, out, _ = run_cli("--engine", "fake", "-q", "--via", "198.18.0.11", "198.18.0.100:80")
    header, row = out.splitlines()
    assert header.split()[-1] == "VIA" and row.split()[-1] == "198.18.0.11"


def test_via_needs_an_engine_that_can_choose_the_real_server(fake_engine: object) -> None:
    code, _, err = run_cli("--engine", "fake", "--via", "198.18.0.11", "198.18.0.100:80")
    assert code == 2 and "cannot choose the real server" in err
    code, _, err = run_cli("--engine", "fake", "--via", "rs1.example", "198.18.0.100:80")
    assert code == 2 and "bad --via 'rs1.example'" in err


def test_raw_workers_split_the_source_ports() -> None:
    from synprobe.engines.raw.options import RawOptions

    parts = RawOptions(port_lo=61000, port_hi=61008).split(3)
    assert [(p.port_lo, p.port_hi) for p in parts] == [(61000, 61002), (61003, 61005),
                                                       (61006, 61008)]
    with pytest.raises(UsageError, match="too small for 4 workers"):
        RawOptions(port_lo=61000, port_hi=61002).split(4)


def test_an_engine_bug_exits_3_not_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import synprobe.registry as registry
    from synprobe.model import Target
    from synprobe.testing import FakeEngine

    def broken(target: Target) -> tuple[str, str]:
        raise RuntimeError("engine bug")

    monkeypatch.setitem(registry._registered, "broken",
                        lambda options: FakeEngine(broken, options))  # type: ignore[arg-type]
    code, _, err = run_cli("--engine", "broken", "198.18.0.2:80")
    assert code == 3
    assert "internal error" in err and "engine bug" in err


def test_max_time_stops_starting_checks_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading as th

    import synprobe.registry as registry
    from synprobe.model import State, Target
    from synprobe.testing import FakeEngine

    gate = th.Event()

    def slow(target: Target) -> tuple[State, str]:
        gate.wait(0.05)  # each answer takes a while; the deadline comes first
        return State.OPEN, "syn-ack"

    monkeypatch.setitem(registry._registered, "slow",
                        lambda options: FakeEngine(slow, options))
    code, out, err = run_cli("--engine", "slow", "--json", "--concurrency", "1", "--max-time",
                             "0.2", "-p", "80", "198.19.0.0/24")
    done = len(out.splitlines())
    assert code == 1
    assert 0 < done < 256
    assert f"{256 - done:,} of 256 checks were not started" in err


def test_max_time_must_be_positive(fake_engine: object) -> None:
    code, _, err = run_cli("--engine", "fake", "--max-time", "0", "198.18.0.2:80")
    assert code == 2 and "--max-time" in err


def test_the_program_freezes_start_up_and_widens_the_young_generation(
        fake_engine: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as the program (argv from sys.argv) the CLI owns its process: start-up's objects
    leave the collector's walks (and stay shared with forked workers), and young collections
    run every GC_THRESHOLD allocations. Called as main([...]) by other code, it leaves the
    caller's collector alone."""
    import gc

    from synprobe.cli import command

    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        assert run_cli("--engine", "fake", "-q", "198.18.0.2:80")[0] == 0
        assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0
        monkeypatch.setattr(sys, "argv", ["synprobe", "--engine", "fake", "-q", "198.18.0.2:80"])
        assert main(stdout=io.StringIO(), stderr=io.StringIO()) == 0
        assert gc.get_threshold()[0] == command.GC_THRESHOLD
        assert gc.get_freeze_count() > 1000  # every module, class and function made so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
