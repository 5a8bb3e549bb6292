"""Packet templates, built with scapy once per machine and cached on disk.

scapy builds every template (its encoding is the reference), but importing it costs each
process ~150 ms and ~30 MB, measured: on a 65,536-target run that is a fifth of the wall time,
and every worker process pays it. So the bytes scapy produced are kept in the user's cache
directory and later runs load them without importing scapy.

What comes back from disk is untrusted input: a cache entry is used only if it is byte for
byte what synprobe's own encoder (`wire.packets`, pure `struct`, no scapy) gives for the same
source address and kind. Anything else (another length, IP flags, a payload, another source)
is rebuilt with scapy and never reaches the wire. scapy's bytes are stored only when they
agree with that encoder too, so the cache holds nothing the engine would not send anyway.

The cache directory follows the XDG base directory spec: $XDG_CACHE_HOME if it is an absolute
path (a relative one is ignored, as the spec says), else ~/.cache, with ~ from $HOME or, when
that is unset, the passwd entry. With no usable home (no HOME and no passwd entry, as for a
container's arbitrary UID), a directory that cannot be made, or a full disk, the engine runs
without a cache: templates are built each run, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd

from synprobe import __version__
from synprobe.wire.packets import pack_address, rst_packet, syn_packet
from synprobe.wire.syn import PacketTemplate, rst_template, syn_template

# Paths are plain strings here: pathlib (with urllib.parse) and tempfile cost every raw run
# ~5 ms of start-up, and the cache is one flat directory.


def cache_dir() -> str | None:
    """$XDG_CACHE_HOME/synprobe or ~/.cache/synprobe; None if there is no usable home."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "synprobe")
    home = os.environ.get("HOME", "")
    if not home:
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:  # a UID without a passwd entry
            return None
    if not os.path.isabs(home):
        return None
    return os.path.join(home, ".cache", "synprobe")


def load_template(source: str, rst: bool) -> PacketTemplate:
    """The SYN (or RST) template from numeric address `source`, from the cache or scapy."""
    expected = PacketTemplate.from_packet(rst_packet(source) if rst else syn_packet(source))
    packed = pack_address(source)
    folder = cache_dir()
    path = None if folder is None else \
        os.path.join(folder, f"{__version__}-{'rst' if rst else 'syn'}-{packed.hex()}.pkt")
    if path is not None and _read(path, len(expected.template) + 1) == expected.template:
        return expected  # scapy built these very bytes on an earlier run
    built = rst_template(source) if rst else syn_template(source)
    if path is not None and built.template == expected.template:
        _store(path, built.template)
    return built


def _read(path: str, limit: int) -> bytes | None:
    """At most `limit` bytes of `path` (a FIFO or /dev/zero planted there cannot stall us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _store(path: str, packet: bytes) -> None:
    """Write atomically; a cache that cannot be written only costs later runs the import, and
    a failed write (a full disk) leaves no temporary file behind."""
    import tempfile  # here: only the run that builds a template with scapy stores it

    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pkt")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(packet)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
