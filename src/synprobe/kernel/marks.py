"""SO_MARK values: parsed from the command line, checked for the library, set on sockets.

A mark is the kernel's `__u32 sk_mark`: 0..2**32-1. `ip rule ... fwmark 0x10` users write it in
hex, so the CLI takes decimal or 0x-hex. Python's `setsockopt(level, opt, int)` passes a signed
C int and refuses values of 2**31 and above (a TypeError, "a bytes-like object is required"), so
the mark is always handed to the kernel as 4 native-order bytes, which it reads as a u32.
"""

from __future__ import annotations

import re
import socket
import struct

from synprobe.errors import UsageError

MARK_MAX = 0xFFFF_FFFF
_MARK_TEXT = re.compile(r"0[xX][0-9a-fA-F]{1,8}|0|[1-9][0-9]{0,9}")  # "010": octal to ip(8)


def parse_mark(text: str) -> int:
    """A mark as a user writes it: decimal (16) or hex (0x10); anything else is a UsageError."""
    value = int(text.strip(), 0) if _MARK_TEXT.fullmatch(text.strip()) else -1
    if not 0 <= value <= MARK_MAX:
        raise UsageError(f"bad mark {text!r}: expected 0..{MARK_MAX} in decimal or hex (0x10)")
    return value


def check_mark(value: object) -> int:
    """A mark given to the library: an int in 0..2**32-1 (bool is not a mark)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"mark must be an integer 0..{MARK_MAX}, got {value!r}")
    if not 0 <= value <= MARK_MAX:
        raise UsageError(f"mark must be 0..{MARK_MAX} (the kernel's u32 SO_MARK), got {value}")
    return value


def set_mark(sock: socket.socket, mark: int) -> None:
    """SO_MARK as a u32: see the module docstring for why not setsockopt(..., int)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("=I", mark))
