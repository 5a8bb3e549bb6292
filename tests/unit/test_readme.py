"""The README as a new user reads it: two set-up commands first, the sections they need, links
that resolve, and the facts it states that the code and CI must keep true. (Its examples are run
against the lab by tests/integration/test_docs_examples.py.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from docs_blocks import REPO, blocks

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "bench/README.md",
         REPO / "netns/README.md"]


def test_readme_opens_with_the_two_set_up_commands() -> None:
    first = blocks(README)[0]
    assert first.lang == "sh"
    assert first.commands() == ["bash netns/demo.sh", "bash tests/run.sh"]
    before = README.read_text().split("```", 1)[0]
    assert before.count("\n\n") <= 3  # a title and a short paragraph come first, nothing else


def test_ci_runs_the_readme_test_command_after_installing_the_debian_packages() -> None:
    ci = (REPO / ".ci/run").read_text()
    test_command = blocks(README)[0].commands()[1]
    assert ci.rstrip().splitlines()[-1] == f"exec {test_command}"
    assert "apt-get update && apt-get install -y" in ci
    for package in ("iproute2", "nftables", "tcpdump", "libcap2-bin", "python3-venv",
                    "prometheus", "prometheus-blackbox-exporter", "haproxy", "socat", "tmux"):
        assert re.search(rf"\s{re.escape(package)}\s", ci), package


def test_readme_has_what_a_new_user_needs() -> None:
    text = README.read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    for needed in ("Why half-open", "Install", "First commands", "Command line", "Exit status",
                   "Library", "The result model", "Engines", "Limits", "Documentation"):
        assert needed in headings
    assert len(text) < 17_500  # depth lives in docs/ and bench/README.md
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_documentation_list_links_the_docs_pages() -> None:
    section = README.read_text().split("## Documentation")[1]
    listed = set(re.findall(r"\]\((docs/[^)#]+)\)", section))
    assert {"docs/engines.md", "docs/dsr.md", "docs/architecture.md"} <= listed


def test_a_plain_install_brings_the_raw_engine() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("scapy") for dep in project["dependencies"])
    assert "raw" in project["optional-dependencies"]  # `synprobe[raw]` still installs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_state_the_worker_cap_the_code_has(page: Path) -> None:
    text = " ".join(page.read_text().split())
    assert text.count("per core") == text.count("per core, at most 4")


def test_readme_states_when_workers_start() -> None:
    text = " ".join(README.read_text().split())
    assert "from 20,000 checks, one per core, at most 4" in text


def test_readme_synopsis_names_every_option_of_the_cli() -> None:
    from synprobe.cli.command import build_parser

    synopsis = next(b.code for b in blocks(README) if b.code.startswith("synprobe [--engine"))
    shown = set(re.findall(r"(?<![\w-])(-{1,2}[a-zA-Z][\w-]*)", synopsis))
    for action in build_parser()._actions:
        if action.help == "==SUPPRESS==" or not action.option_strings:
            continue
        assert shown & set(action.option_strings), (
            f"README's synopsis lacks {'/'.join(action.option_strings)} (add it beside the "
            "others in the '## Command line' block)")
