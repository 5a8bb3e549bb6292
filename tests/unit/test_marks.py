"""SO_MARK values: the whole u32 range, in decimal or hex, and nothing else (issue 8, §4)."""

from __future__ import annotations

import socket
import struct

import pytest

from synprobe.errors import UsageError
from synprobe.kernel.marks import MARK_MAX, check_mark, parse_mark, set_mark


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("16", 16), ("0x10", 16), ("0X10", 16), ("2147483648", 2**31),
    ("4294967295", MARK_MAX), ("0xffffffff", MARK_MAX), (" 7 ", 7),
])
def test_marks_parse_in_decimal_and_hex(text: str, value: int) -> None:
    assert parse_mark(text) == value


@pytest.mark.parametrize("text", [
    "-1", "4294967296", "0x100000000", "1_000", "010", "0o17", "0b1", "1e3", "", "0x", "ten",
    "+5", "0x-1",
])
def test_other_marks_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="mark"):
        parse_mark(text)


@pytest.mark.parametrize("value", [-1, MARK_MAX + 1, True, 1.0, "16", None])
def test_the_library_takes_an_int_in_the_u32_range(value: object) -> None:
    with pytest.raises(UsageError, match="mark must be"):
        check_mark(value)


class _RecordingSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, object]] = []

    def setsockopt(self, level: int, option: int, value: object) -> None:
        self.calls.append((level, option, value))


@pytest.mark.parametrize("mark", [0, 1, 2**31, MARK_MAX])
def test_the_mark_reaches_the_kernel_as_a_u32(mark: int) -> None:
    # setsockopt(level, opt, int) is a signed C int: 2**31 and above raised TypeError.
    sock = _RecordingSocket()
    set_mark(sock, mark)  # type: ignore[arg-type]
    ((level, option, value),) = sock.calls
    assert (level, option) == (socket.SOL_SOCKET, socket.SO_MARK)
    assert isinstance(value, bytes) and struct.unpack("=I", value) == (mark,)
