"""The command line: argv -> one frozen run configuration -> engine -> report -> exit code."""

from synprobe.cli.command import main

__all__ = ["main"]
