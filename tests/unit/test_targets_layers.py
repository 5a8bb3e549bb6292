"""The targets layer runs one way: tokens parsed once, names resolved once, exclusions applied
once, then the space built. These tests fail if a module calls back up, a caller reaches for a
private helper, or a path parses one target token twice."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType

import pytest

import synprobe
from synprobe.cli.command import build_parser
from synprobe.cli.config import build_config
from synprobe.targets.addresses import split_port
from synprobe.targets.build import build_space
from synprobe.watch.config import parse_config

PACKAGE = Path(synprobe.__file__).parent
# Bottom first: a module may import only the ones before it.
LAYERS = ["intervals", "primes", "permutation", "addresses", "tokens", "exclusions", "space",
          "build"]


def _imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) of every `from synprobe... import` and `import synprobe...` in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synprobe"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.startswith("synprobe"))


def test_every_targets_module_has_a_layer() -> None:
    modules = {p.stem for p in (PACKAGE / "targets").glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS)


@pytest.mark.parametrize("name", LAYERS)
def test_targets_modules_import_only_downwards(name: str) -> None:
    below = LAYERS[: LAYERS.index(name)]
    for module, _names in _imports(PACKAGE / "targets" / f"{name}.py"):
        if module.startswith("synprobe.targets"):
            assert module.rpartition(".")[2] in below, f"targets/{name}.py imports {module}"
        else:  # the targets layer stands on the model and the errors, nothing above them
            assert module in ("synprobe.errors", "synprobe.model"), f"{name}.py imports {module}"


def test_no_caller_reaches_for_a_private_targets_helper() -> None:
    for path in PACKAGE.rglob("*.py"):
        for module, names in _imports(path):
            if module.startswith("synprobe.targets") and path.parent.name != "targets":
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{path.relative_to(PACKAGE)} imports {private} from {module}"


@contextmanager
def calls_of(function: Callable[..., object]) -> Iterator[list[CodeType]]:
    """Every call of `function` in this thread, however it was imported or bound."""
    code, seen = function.__code__, []  # type: ignore[attr-defined]

    def profile(frame, event, _arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code is code:
            seen.append(code)

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def test_the_watch_configuration_splits_each_token_once() -> None:
    # Before: an address token was split, checked, then handed as text to build_space(),
    # which split and parsed it again (5 splits for these 3 tokens).
    doc = {"groups": {"a": {"ports": [80], "targets": ["198.18.0.2", "198.18.0.4/30:443",
                                                       "web.example:8080"]}}}
    with calls_of(split_port) as splits:
        config = parse_config(doc)
    assert len(splits) == 3
    assert len(config.targets) == 1 + 4 + 1


def test_the_cli_splits_each_token_once_and_resolves_each_name_once() -> None:
    args = build_parser().parse_args(["-p", "80", "198.18.0.2", "198.18.0.8/30:443",
                                      "198.18.0.2:80", "--dry-run"])
    with calls_of(split_port) as splits:
        config = build_config(args, lambda engine, checks: 1)
    assert len(splits) == 3
    assert len(config.space) == 1 + 4

    lookups: list[str] = []

    def resolver(host: str, *rest: object) -> list[tuple[object, ...]]:
        lookups.append(host)
        return [(2, 1, 6, "", ("198.18.0.9", 0))]

    with calls_of(split_port) as splits:
        space = build_space(["web.example", "web.example:443", "198.18.0.9"], [80],
                            resolver=resolver)
    assert (len(splits), lookups) == (3, ["web.example"])
    assert len(space) == 2
