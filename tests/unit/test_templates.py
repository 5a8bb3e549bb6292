"""The on-disk template cache: scapy's bytes, reused, and rebuilt when they do not check out."""

from __future__ import annotations

import io
import ipaddress
import os
import pwd
import random
import resource
import subprocess
import sys
import threading

import pytest

from synprobe.cli import main
from synprobe.engines.raw import engine as raw
from synprobe.engines.raw import templates
from synprobe.wire.packets import rst_packet, syn_packet
from synprobe.wire.syn import (
    PacketTemplate,
    _scapy_packet,
    rst_template,
    syn_options,
    syn_template,
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "synprobe"


@pytest.mark.parametrize(("source", "rst"), [("198.18.0.1", False), ("fd00:5e::1", False),
                                             ("198.18.0.1", True)])
def test_cached_template_is_scapys(cache, source: str, rst: bool) -> None:
    reference = (rst_template if rst else syn_template)(source).template
    assert templates.load_template(source, rst).template == reference  # cold: built
    [entry] = cache.iterdir()
    assert entry.read_bytes() == reference
    assert templates.load_template(source, rst).template == reference  # warm: loaded


def test_a_bad_cache_entry_is_rebuilt(cache) -> None:
    good = templates.load_template("198.18.0.1", False).template
    [entry] = cache.iterdir()
    for junk in (b"garbage", rst_template("198.18.0.1").template,  # wrong kind
                 syn_template("198.18.0.9").template):  # wrong source
        entry.write_bytes(junk)
        assert templates.load_template("198.18.0.1", False).template == good
        assert entry.read_bytes() == good


def test_an_unwritable_cache_still_works(cache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.parent.chmod(0o500)
    monkeypatch.setattr(templates.os, "makedirs", lambda *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "read-only")))
    assert templates.load_template("198.18.0.1", False).template == syn_template(
        "198.18.0.1").template


# -- what comes back from disk is untrusted -------------------------------------------------


def ours(source: str, rst: bool = False) -> bytes:
    """What synprobe's own encoder (no scapy) says the template is."""
    return PacketTemplate.from_packet((rst_packet if rst else syn_packet)(source)).template


def with_mf(template: bytes) -> bytes:
    bad = bytearray(template)
    bad[6] |= 0x20  # IPv4 "more fragments": every SYN would be a first fragment, never answered
    return bytes(bad)


def with_payload(template: bytes) -> bytes:
    bad = bytearray(template + b"GET / HTTP/1.0\r\n\r\n")  # TCP Fast Open data in the SYN
    bad[2:4] = len(bad).to_bytes(2, "big")
    return bytes(bad)


PLANTED = {
    "204 bytes": lambda t: t + bytes(204 - len(t)),
    "IPv4 MF": with_mf,
    "payload": with_payload,
    "another TTL": lambda t: t[:8] + b"\x01" + t[9:],
    "empty": lambda t: b"",
}


@pytest.mark.parametrize("plant", list(PLANTED.values()), ids=list(PLANTED))
def test_only_our_own_bytes_are_taken_from_the_cache(cache, plant) -> None:
    good = templates.load_template("198.18.0.1", False)
    assert good.template == ours("198.18.0.1")
    [entry] = cache.iterdir()
    entry.write_bytes(plant(entry.read_bytes()))
    again = templates.load_template("198.18.0.1", False)
    assert again.template == ours("198.18.0.1")
    assert entry.read_bytes() == ours("198.18.0.1")  # rebuilt


def test_our_encoder_is_scapys_byte_for_byte() -> None:
    """The scapy-free encoder the cache is judged by, against scapy on random parameters."""
    rng = random.Random(5)
    for i in range(200):
        source = str(ipaddress.IPv4Address(rng.getrandbits(32) | 1) if i % 2
                     else ipaddress.IPv6Address(rng.getrandbits(128) | 1))
        kw = {"mss": rng.randrange(536, 9000), "window": rng.randrange(65536),
              "ttl": rng.randrange(1, 256), "ts_val": rng.getrandbits(32),
              "wscale": rng.randrange(15)}
        assert syn_packet(source, **kw) == _scapy_packet(source, kw["ttl"], {
            "flags": "S", "window": kw["window"],
            "options": syn_options(kw["mss"], kw["ts_val"], kw["wscale"])})
        assert rst_packet(source, ttl=kw["ttl"]) == _scapy_packet(source, kw["ttl"], {
            "flags": "R", "window": 0})
        assert PacketTemplate.from_packet(syn_packet(source)).template == syn_template(
            source).template


def test_a_fifo_in_the_cache_does_not_stall(cache) -> None:
    templates.load_template("198.18.0.1", False)
    [entry] = cache.iterdir()
    entry.unlink()
    os.mkfifo(entry)
    got: list[bytes] = []
    worker = threading.Thread(target=lambda: got.append(
        templates.load_template("198.18.0.1", False).template), daemon=True)
    worker.start()
    worker.join(5.0)  # a blocking open or read of the FIFO would hang here
    if worker.is_alive():  # unblock it (a writer opens and closes), then fail
        os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO in the cache blocked")
    assert got == [ours("198.18.0.1")]


def test_no_home_and_no_passwd_entry_runs_without_a_cache(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's arbitrary UID: no HOME, no passwd entry. No cache, no traceback."""
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME", raising=False)

    def no_entry(uid: int) -> object:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    assert templates.cache_dir() is None
    assert templates.load_template("198.18.0.1", False).template == ours("198.18.0.1")
    monkeypatch.setattr(raw, "local_port_range", lambda: (32768, 60999))
    out, err = io.StringIO(), io.StringIO()
    assert main(["--engine", "raw", "--dry-run", "-p", "80", "127.0.0.2"], out, err) == 0
    assert err.getvalue() == "" and "Flags [S]" in out.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The XDG spec: a relative path in $XDG_CACHE_HOME is invalid and ignored."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert templates.cache_dir() == str(tmp_path / "home" / ".cache" / "synprobe")
    templates.load_template("198.18.0.1", False)
    assert list((tmp_path / "cwd").iterdir()) == []
    assert len(list((tmp_path / "home" / ".cache" / "synprobe").iterdir())) == 1


def test_a_full_disk_leaves_no_temporary_file(cache) -> None:
    """RLIMIT_FSIZE 0 makes every write fail (EFBIG; Python ignores SIGXFSZ) like a full disk."""
    cache.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        got = templates.load_template("198.18.0.1", False)
        again = templates.load_template("198.18.0.1", False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert got.template == again.template == ours("198.18.0.1")
    assert list(cache.iterdir()) == []


def test_a_relative_xdg_cache_home_is_ignored_by_scapys_import_too(tmp_path) -> None:
    """A cold cache imports scapy, whose first import makes its folders from $XDG_*_HOME:
    a relative value must not make it write into the current directory either."""
    (tmp_path / "cwd").mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": "rel/cache", "XDG_CONFIG_HOME": "rel/config",
           "HOME": str(tmp_path / "home")}
    code = ("import os, sys; from synprobe.engines.raw import templates;"
            "templates.load_template('198.18.0.1', False);"
            "assert 'scapy' in sys.modules and os.environ['XDG_CACHE_HOME'] == 'rel/cache'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "cwd", env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "cwd").iterdir()) == []
    assert len(list((tmp_path / "home" / ".cache" / "synprobe").iterdir())) == 1
