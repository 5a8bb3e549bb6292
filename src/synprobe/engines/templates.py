"""Packet templates, built with scapy once per machine and cached on disk.

scapy builds every template (its encoding is the reference the fast path is tested against),
but importing it costs each process ~150 ms and ~30 MB, measured: on a 65,536-target run that
is a fifth of the wall time, and every worker process pays it. So the bytes scapy produced are
kept in the user's cache directory and later runs load them without importing scapy. A cache
entry is trusted only if it parses as a template of the expected kind for the expected source
address; anything else is rebuilt.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from synprobe import __version__
from synprobe.wire.syn import PacketTemplate, rst_template, syn_template

_TCP_FLAGS = {False: 0x02, True: 0x04}  # SYN template, RST template


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "synprobe"


def load_template(source: str, rst: bool) -> PacketTemplate:
    """The SYN (or RST) template from numeric address `source`, from the cache or scapy."""
    v6 = ":" in source
    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, source)
    path = cache_dir() / f"{__version__}-{'rst' if rst else 'syn'}-{packed.hex()}.pkt"
    try:
        cached = _valid(PacketTemplate.from_packet(path.read_bytes()), packed, v6, rst)
    except (OSError, ValueError, IndexError):
        cached = None
    if cached is not None:
        return cached
    template = rst_template(source) if rst else syn_template(source)
    _store(path, template.template)
    return template


def _valid(template: PacketTemplate, packed: bytes, v6: bool,
           rst: bool) -> PacketTemplate | None:
    data = template.template
    tcp = 40 if v6 else (data[0] & 0x0F) * 4
    proto = data[6] if v6 else data[9]
    ok = (template.v6 == v6 and template.source == packed and proto == socket.IPPROTO_TCP
          and len(data) >= tcp + 20 and data[tcp + 13] == _TCP_FLAGS[rst])
    return template if ok else None


def _store(path: Path, packet: bytes) -> None:
    """Write atomically; a cache that cannot be written only costs later runs the import."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(packet)
        os.replace(tmp.name, path)
    except OSError:
        pass
