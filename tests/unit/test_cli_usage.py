"""What a new user meets first on the CLI: usage errors, --version, --help, the summary line,
and `--dry-run --json`. In-process through `main(argv)`, over the fake engine where it can."""

from __future__ import annotations

import io
import json

import pytest

import synprobe
from synprobe.cli import workers
from synprobe.cli.args import terminal_columns, version_line
from synprobe.cli.command import build_parser, main
from synprobe.cli.output import format_duration, format_summary


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("argv", "token"),
    [
        (["--engine", "nope", "198.18.0.2:80"], "'nope'"),
        (["--json", "--csv", "198.18.0.2:80"], "--csv"),
        (["--seed", "abc", "198.18.0.2:80"], "'abc'"),
        (["--frob", "198.18.0.2:80"], "--frob"),
        (["--timeout", "soon", "198.18.0.2:80"], "'soon'"),
        (["--rst", "maybe", "198.18.0.2:80"], "'maybe'"),
        (["198.18.0.2:80", "-p"], "-p"),
    ],
)
def test_argparse_usage_errors_are_one_line_with_a_help_pointer(argv: list[str],
                                                                 token: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == 2
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("synprobe: error: ") and token in line
    assert line.endswith("(see synprobe --help)")
    assert "usage:" not in err


def test_version() -> None:
    code, out, err = run_cli("--version")
    assert (code, err) == (0, "")
    assert out == version_line() + "\n"
    assert out.startswith(f"synprobe {synprobe.__version__} (Python 3.")
    assert "scapy 2." in out  # a plain install brings scapy: the raw engine works


def test_help_goes_to_the_given_stdout() -> None:
    code, out, err = run_cli("--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: synprobe") and "examples:" in out and "130  interrupted" in out


@pytest.mark.parametrize("columns", [60, 100])
def test_help_wraps_options_to_the_terminal_width(columns: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The width is found without shutil (see args.Formatter), the way it finds it: $COLUMNS
    first. Only the options are wrapped; the description and examples are laid out by hand."""
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = run_cli("--help")
    assert code == 0
    options = out.split("options:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(options) > 40
    assert max(map(len, options)) <= columns - 2
    assert max(map(len, options)) > columns - 15  # filled, not wrapped to some narrower width


def test_terminal_columns_falls_back_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "junk")
    monkeypatch.setattr("os.get_terminal_size", lambda fd: (_ for _ in ()).throw(OSError()))
    assert terminal_columns() == 80
    monkeypatch.setenv("COLUMNS", "132")
    assert terminal_columns() == 132


def test_workers_help_matches_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    action = next(a for a in build_parser()._actions if a.dest == "workers")
    assert action.help is not None
    assert "at most 4" in action.help and "either engine" in action.help
    assert "20,000" in action.help
    monkeypatch.setattr(workers, "usable_cpus", lambda: list(range(16)))
    for engine in ("shaker", "raw"):
        assert workers.auto_workers(engine, workers.AUTO_MIN_TARGETS) == 4
        assert workers.auto_workers(engine, workers.AUTO_MIN_TARGETS - 1) == 1
    assert workers.AUTO_MIN_TARGETS == 20_000


def summary(targets: int, elapsed: float, **states: int) -> dict[str, object]:
    return {"engine": "raw", "targets": targets, "elapsed_s": elapsed,
            "rate_per_s": round(targets / elapsed, 1), "states": states, "stats": {}}


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (summary(1, 0.000848, open=1),
         "synprobe: 1 target in 0.848 ms with the raw engine: open 1"),
        (summary(10, 0.8481, open=8, filtered=2),
         "synprobe: 10 targets in 0.848 s with the raw engine: open 8, filtered 2"),
        (summary(1024, 0.116017, open=1024),
         "synprobe: 1,024 targets in 0.116 s (8,826/s) with the raw engine: open 1,024"),
        (summary(65536, 12.3456, open=65536),
         "synprobe: 65,536 targets in 12.3 s (5,308/s) with the raw engine: open 65,536"),
    ],
)
def test_summary_wording(record: dict[str, object], line: str) -> None:
    assert format_summary(record) == line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0000123, "0.0123 ms"), (0.012, "12.0 ms"), (0.09996, "100 ms"), (0.1, "0.100 s"),
     (1.0036, "1.00 s"), (99.94, "99.9 s"), (99.96, "100 s"), (754.4, "754 s"),
     (3600.2, "3,600 s")],
)
def test_durations_keep_three_significant_figures(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_one_target_summary_through_the_cli(fake_engine: object) -> None:
    code, _, err = run_cli("--engine", "fake", "198.18.0.2:80")
    assert code == 0
    [line] = err.splitlines()
    assert line.startswith("synprobe: 1 target in ") and "targets" not in line
    assert "/s)" not in line  # no rate for a handful of checks: it would measure the timeouts


def test_json_summary_elapsed_matches_its_rate(fake_engine: object) -> None:
    code, _, err = run_cli("--engine", "fake", "--json", "-p", "80", "198.19.0.0/24")
    record = json.loads(err.splitlines()[-1])["summary"]
    assert code == 0 and record["targets"] == 256
    assert record["elapsed_s"] > 0
    assert record["rate_per_s"] == pytest.approx(256 / record["elapsed_s"], rel=1e-3)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["224.0.0.1:80"], "the address is excluded by default, never probed"),
        (["-p", "80", "240.0.0.0/30"], "all 4 addresses are excluded by default"),
        (["[::ffff:198.18.0.2]:80"], "IPv4-mapped IPv6 (give the IPv4 form)"),
        (["--exclude", "198.18.0.2", "198.18.0.2:80"], "the address is excluded (by the "),
    ],
)
def test_all_excluded_says_by_what(fake_engine: object, argv: list[str], words: str) -> None:
    code, out, err = run_cli("--engine", "fake", *argv)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("synprobe: error: no targets left: ") and words in line


KEYS = ["engine", "host", "port", "via", "source", "timeout_s", "attempts", "packet", "path",
        "error"]


def test_dry_run_json_is_one_object_per_check(fake_engine: object) -> None:
    code, out, _ = run_cli("--engine", "fake", "--dry-run", "--json", "--retries", "2",
                           "-p", "80,81", "198.18.0.2", "[fd00:5e::2]:443")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert all(list(r) == KEYS for r in rows)
    assert sorted((r["host"], r["port"]) for r in rows) == [
        ("198.18.0.2", 80), ("198.18.0.2", 81), ("fd00:5e::2", 443)]
    assert {(r["engine"], r["attempts"], r["timeout_s"]) for r in rows} == {("fake", 3, 0.5)}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_raw_dry_run_json_describes_the_syn(host: str) -> None:
    code, out, err = run_cli("--engine", "raw", "--dry-run", "--json", "-p", "80,443", host)
    assert (code, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and all(list(r) == KEYS for r in rows)
    for r in rows:
        packet = r["packet"]
        assert (r["engine"], r["host"], r["source"], r["error"]) == ("raw", host, host, None)
        assert (packet["ip"], packet["src"], packet["dst"]) == (6 if ":" in host else 4, host,
                                                                host)
        assert packet["dport"] == r["port"] and packet["flags"] == "S" and packet["ack"] is None
        assert 61000 <= packet["sport"] <= 65535 and packet["length"] == 0
        assert packet["options"][0].startswith("mss ") and "sackOK" in packet["options"]


def test_shaker_dry_run_json_has_no_packet() -> None:
    code, out, _ = run_cli("--dry-run", "--json", "--source", "127.0.0.1", "127.0.0.2:80")
    [row] = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert row == {"engine": "shaker", "host": "127.0.0.2", "port": 80, "via": None,
                   "source": "127.0.0.1", "timeout_s": 0.5, "attempts": 2, "packet": None,
                   "path": None, "error": None}


def test_dry_run_of_an_engine_without_json_descriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    import synprobe.registry as registry
    from synprobe.model import State, Target
    from synprobe.testing import FakeEngine

    class TextOnly(FakeEngine):
        def describe(self, target: Target) -> str:  # type: ignore[override]
            return f"text {target}"

    monkeypatch.setitem(registry._registered, "textonly",
                        lambda options: TextOnly(lambda t: (State.OPEN, "syn-ack"), options))
    code, out, _ = run_cli("--engine", "textonly", "--dry-run", "198.18.0.2:80")
    assert (code, out) == (0, "text 198.18.0.2:80\n")
    code, out, err = run_cli("--engine", "textonly", "--dry-run", "--json", "198.18.0.2:80")
    assert (code, out) == (2, "")
    assert err == ("synprobe: error: --dry-run --json: the textonly engine describes its packets "
                   "only as text; drop --json\n")


def test_the_version_costs_nothing_until_asked_for() -> None:
    import subprocess
    import sys

    code = "import sys, synprobe.cli; print(sorted({'importlib.metadata', 'platform'} & " \
           "set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
