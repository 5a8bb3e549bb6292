"""Length-prefixed frames between a Prober and its shaker helper process.

Each frame is a 4-byte big-endian length and a pickle of plain data (tuples, lists, dicts,
str, int, float, bool, None). The peer is our own child (or parent) at the other end of a
socketpair nobody else holds; even so the unpickler refuses every class and global, so a frame
can only ever decode to plain data, and a length beyond MAX_FRAME ends the channel.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


class FrameError(Exception):
    """The byte stream is not a sequence of valid frames."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise FrameError(f"frame refers to {module}.{name}; only plain data is accepted")


def encode(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def decode(data: bytes) -> Any:
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except FrameError:
        raise
    except Exception as exc:  # any malformed pickle: one error type for the caller
        raise FrameError(f"undecodable frame: {exc}") from exc


class FrameReader:
    """Feed it bytes as they arrive; it returns the messages completed so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        self._buf += chunk
        messages = []
        start = 0
        buf = self._buf
        while len(buf) - start >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buf, start)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length:,} bytes exceeds {MAX_FRAME:,}")
            end = start + _HEADER.size + length
            if len(buf) < end:
                break
            messages.append(decode(bytes(buf[start + _HEADER.size:end])))
            start = end
        del buf[:start]
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
