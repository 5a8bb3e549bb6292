"""The CLI's limits and inputs (issue 8 §4, issue 9, issue 11): source, mark, file names, the
open-file limit. In-process over the fake engine, or in a subprocess where the process's own
limits are the subject."""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys

import pytest

from synprobe.cli import main
from synprobe.errors import UsageError
from synprobe.kernel.fdlimit import CLI_RESERVE, SHAKER_AUTO_MAX, cli_concurrency
from synprobe.kernel.localaddr import check_source


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("synprobe: error: "), err
    return lines[0]


# -- --source ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "words"), [
    ("localhost", "is not an IP address"),
    ('=HYPERLINK("http://x","y")', "is not an IP address"),
    ("198.51.100.7", "is not an address of this host"),
    ("0.0.0.0", "cannot be a source"),
    ("224.0.0.1", "cannot be a source"),
])
@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["--csv"]])
def test_a_source_that_is_not_ours_is_a_usage_error_before_anything_is_sent(
        fake_engine, source: str, words: str, extra: list[str]) -> None:
    code, out, err = run_cli("--engine", "fake", *extra, "--source", source, "198.18.0.2:80")
    assert code == 2 and out == ""
    assert words in one_error_line(err) and "--source" in err
    assert fake_engine() == []  # no engine was even made


def test_a_dry_run_with_a_non_local_source_fails_like_the_real_run() -> None:
    # Was: "not sent, EADDRNOTAVAIL" on stdout and exit 0 (issue 9).
    for engine in ("shaker", "raw"):
        code, out, err = run_cli("--engine", engine, "--dry-run", "--source", "198.51.100.7",
                                 "198.18.0.2:80")
        assert (code, out) == (2, "") and "not an address of this host" in one_error_line(err)


def test_freebind_takes_an_address_not_held_yet_and_the_row_shows_it(fake_engine) -> None:
    code, out, err = run_cli("--engine", "fake", "--csv", "-q", "--source", "198.51.100.7",
                             "--freebind", "198.18.0.2:80")
    assert code == 0, err
    assert out.splitlines()[1].split(",")[7] == "198.51.100.7"
    assert fake_engine()[0].options.freebind is True


def test_freebind_needs_a_source(fake_engine) -> None:
    code, _, err = run_cli("--engine", "fake", "--freebind", "198.18.0.2:80")
    assert code == 2 and "--freebind applies to a --source" in one_error_line(err)


def test_the_source_is_normalised_before_it_reaches_a_row(fake_engine) -> None:
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "--source", " 0:0::1 ", "[::1]:80")
    assert code == 0 and json.loads(out)["source"] == "::1"


@pytest.mark.parametrize(("source", "targets"), [
    ("::1", ["198.18.0.2:80", "198.18.0.3:80"]),
    ("127.0.0.1", ["[fd00:5e::2]:80"]),
])
def test_a_source_of_the_other_family_than_every_target_is_a_usage_error(
        fake_engine, source: str, targets: list[str]) -> None:
    code, _, err = run_cli("--engine", "fake", "--source", source, *targets)
    assert code == 2 and "but every target is IPv" in one_error_line(err)


def test_a_source_matching_some_targets_runs(fake_engine) -> None:
    code, out, _ = run_cli("--engine", "fake", "--json", "-q", "--source", "127.0.0.1",
                           "127.0.0.1:80", "[::1]:80")
    assert code == 0 and len(out.splitlines()) == 2


def test_the_library_checks_the_source_in_its_own_words() -> None:
    from synprobe.api import make_options

    with pytest.raises(UsageError, match="freebind=True") as caught:
        make_options(source="198.51.100.7")
    assert "--" not in str(caught.value)
    assert make_options(source="198.51.100.7", freebind=True).source == "198.51.100.7"
    with pytest.raises(UsageError, match="not an IP address"):
        check_source("localhost")


# -- --mark -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [("0x10", 16), ("2147483648", 2**31),
                                             ("4294967295", 2**32 - 1)])
def test_marks_in_decimal_and_hex_reach_the_engine(fake_engine, text: str, value: int) -> None:
    code, _, err = run_cli("--engine", "fake", "-q", "--mark", text, "198.18.0.2:80")
    assert code == 0, err
    assert fake_engine()[0].options.mark == value


@pytest.mark.parametrize("text", ["-1", "4294967296", "0x1_0", "mark"])
def test_a_bad_mark_is_a_usage_error(fake_engine, text: str) -> None:
    code, _, err = run_cli("--engine", "fake", f"--mark={text}", "198.18.0.2:80")
    assert code == 2 and "bad mark" in one_error_line(err)


# -- file names on stderr ---------------------------------------------------------------------

@pytest.mark.parametrize("option", ["-iL", "--exclude-file"])
def test_missing_file_names_are_printed_with_escapes_visible(fake_engine, tmp_path,
                                                             option: str) -> None:
    name = str(tmp_path / "\x1b]2;owned\x07\x1b[2Jhosts\u202etxt")
    code, _, err = run_cli("--engine", "fake", option, name, "198.18.0.2:80")
    line = one_error_line(err)
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "\\x1b]2;owned\\x07\\x1b[2Jhosts\\u202etxt" in line


# -- open files -------------------------------------------------------------------------------

def _limits(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> list[tuple[int, int]]:
    """Fake RLIMIT_NOFILE (soft, hard); returns the setrlimit calls made."""
    calls: list[tuple[int, int]] = []
    state = [soft, hard]

    def getrlimit(which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return state[0], state[1]

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        assert limits[0] <= state[1]
        calls.append(limits)
        state[0] = limits[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return calls


def test_a_one_target_run_fits_under_any_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: "--concurrency 1000 needs 1064 open files" under ulimit -n 1024 for one target.
    calls = _limits(monkeypatch, 1024, 1024)
    assert cli_concurrency(1000, engine="shaker", workers=1, checks=1, rate=10_000.0,
                           timeout=0.5, attempts=2) == 1
    assert calls == []


def test_an_explicit_concurrency_is_sized_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was refused: 20,000 over 2 workers needs ~10,064 each, under a hard limit of 20,000.
    calls = _limits(monkeypatch, 1024, 20_000)
    assert cli_concurrency(20_000, engine="shaker", workers=2, checks=32_768, rate=None,
                           timeout=0.5, attempts=2) == 10_000
    assert calls == [(10_000 + CLI_RESERVE, 20_000)]


def test_an_explicit_concurrency_that_cannot_fit_names_the_flag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _limits(monkeypatch, 1024, 4096)
    with pytest.raises(UsageError, match=r"^--concurrency 5,000 needs 5,064 open files but "
                                         r"the hard limit is 4,096"):
        cli_concurrency(5000, engine="shaker", workers=1, checks=65_536, rate=None,
                        timeout=0.5, attempts=2)


@pytest.mark.parametrize(("hard", "rate", "checks", "expected"), [
    (1024, None, 65_536, 1024 - CLI_RESERVE),  # lowered to fit, never refused
    (1_048_576, None, 65_536, SHAKER_AUTO_MAX),
    (1_048_576, 10_000.0, 65_536, 10_000),  # rate x timeout x attempts
    (1_048_576, 100.0, 65_536, 100),
    (1_048_576, 10_000.0, 300, 300),  # no more than there are checks
])
def test_the_default_concurrency(monkeypatch: pytest.MonkeyPatch, hard: int, rate: float | None,
                                 checks: int, expected: int) -> None:
    _limits(monkeypatch, 1024, hard)
    assert cli_concurrency(None, engine="shaker", workers=1, checks=checks, rate=rate,
                           timeout=0.5, attempts=2) == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= expected + CLI_RESERVE or \
        expected + CLI_RESERVE > hard


def test_the_default_is_split_over_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    _limits(monkeypatch, 1024, 1_048_576)
    assert cli_concurrency(None, engine="shaker", workers=2, checks=32_768, rate=10_000.0,
                           timeout=0.5, attempts=2) == 5_000  # each gets half the rate


def test_help_says_how_the_default_concurrency_is_chosen() -> None:
    code, out, _ = run_cli("--help")
    text = " ".join(out.split())
    assert code == 0 and "rate x timeout x attempts" in text and "open-file limit" in text


def _in_child(code: str, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter whose RLIMIT_NOFILE is (soft, hard)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=limit, timeout=60, check=False)


def test_the_cli_checks_one_target_under_ulimit_1024() -> None:
    # A closed loopback port nothing listens on: RST, so the run ends at once.
    done = _in_child("import sys; from synprobe.cli import main; "
                     "sys.exit(main(['--json', '-q', '127.0.0.1:9']))", 1024, 1024)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["state"] == "closed"


def test_the_library_leaves_the_process_limit_alone() -> None:
    # Was: Prober(concurrency=5000) raised the soft limit for good.
    done = _in_child(
        "import resource\n"
        "from synprobe import Prober\n"
        "from synprobe.errors import UsageError\n"
        "try:\n"
        "    Prober(concurrency=5000)\n"
        "except UsageError as exc:\n"
        "    print(exc)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "with Prober() as p:\n"  # the default fits a fresh process under 1,024
        "    print(p.probe('127.0.0.1:9').state.value)\n", 1024, 4096)
    error, limits, state = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert "concurrency=5,000 needs" in error and "--" not in error
    assert limits == "(1024, 4096)"
    assert state == "closed"
