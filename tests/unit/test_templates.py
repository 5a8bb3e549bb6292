"""The on-disk template cache: scapy's bytes, reused, and rebuilt when they do not check out."""

from __future__ import annotations

import pytest

from synprobe.engines import templates
from synprobe.wire.syn import rst_template, syn_template


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
    monkeypatch.setattr(templates.Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "read-only")))
    assert templates.load_template("198.18.0.1", False).template == syn_template(
        "198.18.0.1").template
