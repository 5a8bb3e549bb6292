"""argparse, made to speak like the rest of the CLI: a usage error is one line naming the bad
token, with a pointer to --help (never argparse's usage block), and --help / --version write to
the stream the CLI was given, so `main(argv, stdout=...)` can be tested in-process."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, NoReturn, TextIO

from synprobe import __version__
from synprobe.errors import UsageError


class ArgumentError(UsageError):
    """An option or value argparse refused, in argparse's own words (which name the token)."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, as wide as the terminal the way shutil.get_terminal_size() finds it, without
    importing shutil: add_argument() makes a formatter for every option it checks, and argparse's
    own imports shutil (and zlib, bz2, lzma with it) for the width, ~2.5 ms of every start-up."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


def terminal_columns(fallback: int = 80) -> int:
    """$COLUMNS, else the width of the terminal on stdout, else `fallback`."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else fallback


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, stdout: TextIO | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stdout = stdout

    def error(self, message: str) -> NoReturn:
        # argparse's messages already name the token: "argument --engine: invalid choice:
        # 'nope' (choose from 'raw', 'shaker')", "unrecognized arguments: --frob".
        raise ArgumentError(f"{message} (see {self.prog} --help)")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if self.stdout is not None and file in (None, sys.stdout):
            file = self.stdout
        super()._print_message(message, file)


class VersionAction(argparse.Action):
    """--version, with the line computed only when asked for: importlib.metadata costs ~9 ms,
    a tenth of a one-target run's start-up (measured)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 help: str = "print synprobe's, Python's and scapy's versions and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser._print_message(version_line() + "\n", sys.stdout)
        parser.exit()


def version_line() -> str:
    """`synprobe 0.1.0 (Python 3.11.2, scapy 2.6.1)`: what a bug report needs. scapy's version
    comes from its installed metadata; scapy itself is not imported."""
    import platform
    from importlib import metadata

    try:
        scapy = f"scapy {metadata.version('scapy')}"
    except metadata.PackageNotFoundError:
        scapy = "scapy not installed: the raw engine is unavailable"
    return f"synprobe {__version__} (Python {platform.python_version()}, {scapy})"
