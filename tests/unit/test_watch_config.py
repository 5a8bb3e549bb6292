"""The watch config: TOML groups and per-target overrides, CLI precedence, one-line errors,
and /probe's keys kept untouched."""

from __future__ import annotations

import pytest

from synprobe.watch.config import ConfigError, Settings, load_config, parse_config


def write(tmp_path, text: str) -> str:
    path = tmp_path / "watch.toml"
    path.write_text(text)
    return str(path)


def by_key(config):
    return {t.key: t for t in config.targets}


def test_groups_defaults_and_per_target_overrides(tmp_path) -> None:
    config = load_config(write(tmp_path, """
        [defaults]
        interval = 2.0
        engine = "shaker"
        [groups.web]
        rise = 4
        ports = [80, 443]
        targets = ["198.18.0.2", { target = "198.18.0.3:8080", fall = 7, timeout = 0.2 }]
        [groups.db]
        targets = ["198.18.0.9:5432"]
        via = ["198.18.1.11", "198.18.1.12"]
        engine = "raw"
    """))
    t = by_key(config)
    assert set(t) == {("198.18.0.2", 80, None), ("198.18.0.2", 443, None),
                      ("198.18.0.3", 8080, None), ("198.18.0.9", 5432, "198.18.1.11"),
                      ("198.18.0.9", 5432, "198.18.1.12")}
    web = t["198.18.0.2", 80, None].settings
    assert (web.interval, web.rise, web.fall, web.engine) == (2.0, 4, 3, "shaker")
    own = t["198.18.0.3", 8080, None].settings
    assert (own.rise, own.fall, own.timeout) == (4, 7, 0.2)
    assert t["198.18.0.9", 5432, "198.18.1.11"].group == "db"


def test_probe_allow_and_modules_are_kept_raw(tmp_path) -> None:
    config = load_config(write(tmp_path, """
        probe_allow = ["198.18.0.0/15", "fd00::/8"]
        [modules.tcp_fast]
        timeout = 1
        anything = { the = "probe engineer parses it" }
    """))
    assert config.targets == ()
    assert config.passthrough["probe_allow"] == ["198.18.0.0/15", "fd00::/8"]
    assert config.passthrough["modules"]["tcp_fast"]["anything"] == {
        "the": "probe engineer parses it"}


@pytest.mark.parametrize(("text", "words"), [
    ("bogus = 1", "bogus: unknown key"),
    ("[groups.a]\nrise = 0\ntargets = []", "groups.a.rise: must be at least 1"),
    ("[groups.a]\ninterval = -1", "groups.a.interval: must be above 0"),
    ("[groups.a]\nengine = \"nope\"", "unknown engine 'nope'"),
    ("[groups.a]\ntargets = [\"198.18.0.2\"]", "no port for '198.18.0.2'"),
    ("[groups.a]\ntargets = [\"not a host:80\"]", "bad target"),
    ("[groups.a]\ntargets = [{ port = 80 }]", "targets[0].port: unknown key"),
    ("[groups.a]\ntargets = [\"198.18.0.2:80\"]\n[groups.b]\ntargets = [\"198.18.0.2:80\"]",
     "already in group 'a'"),
    ("[groups.a]\ntargets = [\"198.18.0.2:80\"]\nengine = \"shaker\"\ntimeout = 2",
     "shaker engine's timeout"),
    ("[groups.a\n", "config"),
    ("[defaults]\nvia = \"host.example\"", "defaults.via"),
])
def test_bad_config_is_one_line(tmp_path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    message = str(exc.value)
    assert words in message
    assert "\n" not in message


def test_missing_file_is_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "absent.toml"))


def test_command_line_beats_defaults_but_not_groups(tmp_path) -> None:
    config = load_config(write(tmp_path, """
        [defaults]
        interval = 5
        fall = 9
        [groups.a]
        fall = 4
        targets = ["198.18.0.2:80"]
    """), overrides={"interval": 0.5, "fall": 2}, cli_tokens=["198.18.0.7:81"])
    t = by_key(config)
    assert t["198.18.0.2", 80, None].settings.interval == 0.5  # CLI beat [defaults]
    assert t["198.18.0.2", 80, None].settings.fall == 4  # the group beat the CLI
    assert t["198.18.0.7", 81, None].group == "cli"
    assert t["198.18.0.7", 81, None].settings.fall == 2


def test_names_are_kept_for_re_resolution_and_cidrs_expand_minus_excludes() -> None:
    config = parse_config({"exclude": ["198.18.0.1"], "groups": {"a": {
        "targets": ["backend.example:80", "198.18.0.0/30:81"]}}})
    t = by_key(config)
    assert t["backend.example", 80, None].is_name
    assert sorted(k[0] for k in t if k[1] == 81) == ["198.18.0.0", "198.18.0.2", "198.18.0.3"]


def test_all_excluded_is_an_error() -> None:
    with pytest.raises(ConfigError, match="excluded"):
        parse_config({"exclude": "198.18.0.2", "groups": {"a": {"targets": ["198.18.0.2:80"]}}})


def test_too_many_targets_needs_allow_large() -> None:
    doc = {"groups": {"a": {"targets": ["198.18.0.0/15:80"]}}}
    with pytest.raises(ConfigError, match="--allow-large"):
        parse_config(doc)
    assert len(parse_config(doc, allow_large=True).targets) == 131_072


def test_prober_key_groups_equal_check_settings() -> None:
    a, b = Settings(interval=1, rise=2), Settings(interval=5, rise=9)
    assert a.check_key() == b.check_key()
    assert Settings(timeout=0.2).check_key() != a.check_key()


def test_a_target_listed_twice_alike_is_one_target() -> None:
    config = parse_config({"groups": {"a": {"targets": ["198.18.0.2:80", "198.18.0.0/30:80"]}}})
    assert sorted(t.host for t in config.targets) == ["198.18.0.0", "198.18.0.1", "198.18.0.2",
                                                       "198.18.0.3"]
    with pytest.raises(ConfigError, match="already in group"):
        parse_config({"groups": {"a": {"targets": ["198.18.0.2:80",
                                                   {"target": "198.18.0.2:80", "fall": 9}]}}})
