"""Errors synprobe raises. Engines turn their backend's failures into these at the boundary."""


class SynprobeError(Exception):
    """Base class for every error synprobe raises on purpose."""


class UsageError(SynprobeError, ValueError):
    """Bad input from the caller: a bad target token, port, option or engine name (CLI exit 2)."""


class EngineUnavailable(SynprobeError):
    """An engine cannot run here: a missing optional package or privilege (CLI exit 3)."""


class EngineError(SynprobeError):
    """An engine's system call failed while it ran (no verdict on a target: the run itself could
    not go on, e.g. no file descriptor left for its poller). CLI exit 3."""
