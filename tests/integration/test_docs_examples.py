"""Every Python and shell example in the README and docs/ runs as written, against the lab.

The README's install block is run first, as written, by a user with a fresh home directory
(the system python3, the checkout as the current directory); every other example then runs
with that home and PATH, so `synprobe` is the console script the install made. README and
engines examples run in a `Lab`'s client namespace, DSR examples in a `DsrLab`'s prober
namespace: shell recipes that change a host (ip rule, sysctl -w, setcap on a copy of the
interpreter) change only the lab's namespaces and a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from docs_blocks import REPO, Block, blocks
from synprobe_lab import Lab
from synprobe_lab.dsr import DsrLab

# Which lab each page's examples run in, and the namespace inside it.
PAGES = {
    "README.md": ("lab", "client"),
    "docs/engines.md": ("lab", "client"),
    "docs/architecture.md": ("lab", "client"),
    "docs/dsr.md": ("dsr", "prober"),
}
# Exit codes the examples must give (open: 0; anything not open: 1). Other synprobe commands
# must give 0 or 1, never a usage or runtime error.
EXPECTED_EXIT = {
    "synprobe 198.18.0.2:80": 0,
    "synprobe -p 80-83 198.18.0.2": 1,
    "synprobe --source 198.18.0.1 -p 80 198.18.0.2": 0,
    "synprobe --engine raw --via 198.18.1.11 --via 198.18.1.12 198.18.2.100:80": 1,
    "synprobe --engine raw --via-mode ipip --via 198.18.1.11 198.18.2.100:80": 0,
    "synprobe --mark 11 198.18.2.100:80": 0,
    "synprobe --mark 12 198.18.2.100:80": 1,
}
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Each synprobe call is logged with its exit code; 0 and 1 (not all open) let the block go on.
SHELL_PRELUDE = """set -euo pipefail
synprobe() {
  local rc=0
  command synprobe "$@" || rc=$?
  echo "$rc synprobe $*" >> "$SYNPROBE_EXAMPLE_LOG"
  [ "$rc" -le 1 ]
}
"""


def runnable(page: str) -> list[Block]:
    return [b for b in blocks(REPO / page) if b.lang in ("python", "sh") and b.mark != "skip"
            and b.mark != "install"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the documentation examples run in network namespaces: root, as in CI")


@pytest.fixture(scope="module")
def user_home() -> Iterator[Path]:
    """A home directory in which the README's install block has run, as written. World-readable
    (unlike pytest's temporary directories), so an unprivileged user can run what is in it."""
    require_root()
    [install] = [b for b in blocks(REPO / "README.md") if b.mark == "install"]
    home = Path(tempfile.mkdtemp(prefix="synprobe-docs-home-"))
    home.chmod(0o755)
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", install.code], cwd=REPO,
                              env={"HOME": str(home), "PATH": SYSTEM_PATH}, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{install}:\n{done.stdout}\n{done.stderr}"
        # The block ends with --version: the installed console script runs.
        assert done.stdout.splitlines()[-1].startswith("synprobe 0."), done.stdout
        yield home
    finally:
        shutil.rmtree(home)


def user_env(home: Path, log: Path) -> list[str]:
    return ["env", "-i", f"HOME={home}", f"PATH={home}/synprobe-venv/bin:{SYSTEM_PATH}",
            f"SYNPROBE_EXAMPLE_LOG={log}"]


def run_block(lab: Lab | DsrLab, ns: str, block: Block, home: Path,
              workdir: Path) -> list[tuple[int, str]]:
    """Run one block in the lab; returns the (exit code, command) of each synprobe call."""
    log = workdir / "synprobe-calls.log"
    log.write_text("")
    if block.lang == "python":
        script = workdir / f"example_{block.line}.py"
        script.write_text(block.code)
        argv = [*user_env(home, log), f"{home}/synprobe-venv/bin/python", str(script)]
    else:
        argv = [*user_env(home, log), "bash", "-c", f"cd {workdir}\n{SHELL_PRELUDE}{block.code}"]
    done = lab.exec(ns, argv, check=False, timeout=120)
    assert done.returncode == 0, f"{block} failed:\n{block.code}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "synprobe: error" not in done.stderr, done.stderr
    calls = []
    for line in log.read_text().splitlines():
        code, command = line.split(" ", 1)
        calls.append((int(code), command))
    return calls


def check_calls(block: Block, calls: list[tuple[int, str]]) -> None:
    expected = [c for c in block.commands() if c.startswith("synprobe ")]
    assert [c for _, c in calls] == expected, f"{block}: not every synprobe line ran"
    for code, command in calls:
        if command in EXPECTED_EXIT:
            assert code == EXPECTED_EXIT[command], f"{block}: {command} exited {code}"


@pytest.mark.parametrize("page", [p for p, (kind, _) in PAGES.items() if kind == "lab"])
def test_examples_run_in_the_lab(page: str, user_home: Path, tmp_path: Path) -> None:
    examples = runnable(page)
    assert examples, f"no runnable examples found in {page}"
    with Lab() as lab:
        for block in examples:
            check_calls(block, run_block(lab, PAGES[page][1], block, user_home, tmp_path))


def test_dsr_examples_run_in_the_dsr_lab(user_home: Path, tmp_path: Path) -> None:
    examples = runnable("docs/dsr.md")
    assert len(examples) == 3
    with DsrLab() as lab:
        for block in examples:
            check_calls(block, run_block(lab, "prober", block, user_home, tmp_path))
        # The recipe changed the prober's namespace, not the host: its rules are there.
        rules = lab.exec("prober", ["ip", "rule", "show"]).stdout
        assert "fwmark 0xb lookup 11" in rules and "fwmark 0xc lookup 12" in rules
    host_rules = subprocess.run(["ip", "rule", "show"], capture_output=True, text=True,
                                check=True).stdout
    assert "lookup 11" not in host_rules


def test_every_page_is_covered() -> None:
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")} | {"README.md"}
    mine = {"README.md", "docs/engines.md", "docs/architecture.md", "docs/dsr.md"}
    assert mine <= pages and set(PAGES) == mine


def test_the_capability_recipe_works_for_an_unprivileged_user(user_home: Path,
                                                              tmp_path: Path) -> None:
    [recipe] = [b for b in blocks(REPO / "docs/engines.md") if "setcap" in b.code]
    netraw = user_home / "synprobe-venv/bin/python3-netraw"
    with Lab() as lab:
        run_block(lab, "client", recipe, user_home, tmp_path)
        caps = subprocess.run(["getcap", str(netraw)], capture_output=True, text=True,
                              check=True).stdout
        assert "cap_net_raw=ep" in caps
        # As nobody, with no capability of its own and a home it cannot write to.
        done = lab.exec("client", ["env", "-i", "HOME=/nonexistent", f"PATH={SYSTEM_PATH}",
                                   "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   str(netraw), "-m", "synprobe", "--engine", "raw", "--json",
                                   "-q", "198.18.0.2:80"], check=False)
        assert done.returncode == 0, done.stderr
        assert '"state": "open"' in done.stdout.replace('":"', '": "')
        # Without the copy, the same user's raw engine is refused: the recipe is what made it.
        python = str(user_home / "synprobe-venv/bin/python3")
        done = lab.exec("client", ["env", "-i", "HOME=/nonexistent", f"PATH={SYSTEM_PATH}",
                                   "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   python, "-m", "synprobe", "--engine", "raw", "198.18.0.2:80"],
                        check=False)
        assert done.returncode == 3 and "CAP_NET_RAW" in done.stderr


def test_the_lab_readme_example_runs(tmp_path: Path) -> None:
    """netns/README.md's example builds a lab of its own (as root, on the host), with the
    interpreter the lab is used with, from the repository root."""
    require_root()
    [example] = [b for b in blocks(REPO / "netns/README.md") if b.lang == "python"]
    script = tmp_path / "lab_example.py"
    script.write_text(example.code)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO / "netns")})
    assert done.returncode == 0, done.stderr
    assert "('out', 'S'), ('in', 'SA')" in done.stdout
