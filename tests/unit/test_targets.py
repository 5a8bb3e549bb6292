"""Ports specs, target tokens, exclusions, target files and the never-materialised space."""

from __future__ import annotations

import io
import ipaddress
import socket
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPRange, IPSet

from synprobe.errors import UsageError
from synprobe.model import Target
from synprobe.targets.build import build_space, parse_target
from synprobe.targets.exclusions import DEFAULT_EXCLUDES
from synprobe.targets.intervals import merge, size, subtract
from synprobe.targets.space import TargetSpace
from synprobe.targets.tokens import iter_target_file, parse_ports

T = Target

# A fake DNS: names to addresses, with a call log to prove each name is resolved once.
ZONE = {
    "web.test": ["198.51.100.7", "2001:db8::7", "198.51.100.7"],  # the duplicate is deliberate
    "db.test": ["198.51.100.8"],
    "v6only.test": ["fe80::1%eth0"],
    "my-host.test": ["203.0.113.9"],
}


def fake_resolver(calls: list[str] | None = None) -> Callable[..., list[tuple]]:
    def resolve(host: str, port: object, family: int = 0, type: int = 0) -> list[tuple]:
        if calls is not None:
            calls.append(host)
        if host not in ZONE:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr in ZONE[host]:
            if ":" in addr:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, 0, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, 0)))
        return out

    return resolve


def space(*tokens: str, ports: list[int] | None = None, **kwargs: object) -> TargetSpace:
    kwargs.setdefault("resolver", fake_resolver())
    return build_space(tokens, ports, **kwargs)  # type: ignore[arg-type]


def targets(*tokens: str, ports: list[int] | None = None, **kwargs: object) -> list[Target]:
    return list(space(*tokens, ports=ports, **kwargs))


# --- ports --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [80]),
        ("80,443", [80, 443]),
        ("443,80", [443, 80]),
        ("8000-8003", [8000, 8001, 8002, 8003]),
        ("1-1", [1]),
        ("65535", [65535]),
        ("80,80,443,79-81", [80, 443, 79, 81]),
        (" 80 , 443 ", [80, 443]),
    ],
)
def test_parse_ports(spec: str, expected: list[int]) -> None:
    assert parse_ports(spec) == expected


def test_parse_ports_all() -> None:
    assert parse_ports("1-65535") == list(range(1, 65536))


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("", "empty port in ''"),
        ("0", "'0'"),
        ("65536", "'65536'"),
        ("80,", "empty port in '80,'"),
        (",80", "empty port in ',80'"),
        ("http", "'http'"),
        ("80-", "'80-'"),
        ("80,90-80", "bad port '90-80' in '80,90-80': the range runs backwards"),
        ("65536", "bad port '65536': ports are 1-65535"),
        ("-80", "'-80'"),
        ("90-80", "'90-80'"),
        ("80-70000", "'80-70000'"),
        ("1.5", "'1.5'"),
        ("+80", "'+80'"),
        ("\uff18\uff10", "'\uff18\uff10'"),  # fullwidth digits: str.isdigit() says yes
        ("80 443", "'80 443'"),
        ("1-2-3", "'1-2-3'"),
    ],
)
def test_parse_ports_names_the_bad_token(spec: str, bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_ports(spec)
    assert bad in str(err.value)


# --- token kinds -----------------------------------------------------------------------------


def test_single_addresses_take_the_ports() -> None:
    assert targets("198.51.100.1", ports=[80, 443]) == [
        T("198.51.100.1", 80),
        T("198.51.100.1", 443),
    ]
    assert targets("2001:DB8:0:0::1", ports=[22]) == [T("2001:db8::1", 22)]
    # IPv4-mapped addresses go out as IPv4, past IPv4 excludes: only without the defaults.
    assert build_space(["::ffff:192.0.2.1"], [22], default_excludes=False)[0] == T(
        "::ffff:192.0.2.1", 22)
    with pytest.raises(UsageError, match="excluded"):
        build_space(["::ffff:192.0.2.1"], [22])


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("198.51.100.1:8080", T("198.51.100.1", 8080)),
        ("[2001:db8::1]:443", T("2001:db8::1", 443)),
        ("[198.51.100.1]:25", T("198.51.100.1", 25)),
        ("db.test:5432", T("198.51.100.8", 5432)),
    ],
)
def test_a_token_port_overrides_the_ports(token: str, expected: Target) -> None:
    assert targets(token, ports=[1, 2]) == [expected]
    assert targets(token) == [expected]


def test_a_bare_v6_address_never_has_a_port() -> None:
    assert targets("2001:db8::1:80", ports=[7]) == [T("2001:db8::1:80", 7)]


def test_a_token_may_carry_a_ports_spec() -> None:
    assert targets("198.51.100.1:80,443-444") == [
        T("198.51.100.1", 80),
        T("198.51.100.1", 443),
        T("198.51.100.1", 444),
    ]


@pytest.mark.parametrize(
    ("token", "hosts"),
    [
        ("198.51.100.0/24", 256),
        ("198.51.100.77/24", 256),  # host bits set: the whole block, as zmap and nmap read it
        ("198.51.100.1/32", 1),
        ("198.51.100.0/31", 2),
        ("10.0.0.0/8", 2**24),
        ("2001:db8::/120", 256),
        ("2001:db8::/80", 2**48),
        ("2001:db8::1/128", 1),
        ("[2001:db8::/126]:443", 4),
        ("198.51.100.0/30:443", 4),
    ],
)
def test_cidr_sizes(token: str, hosts: int) -> None:
    assert len(space(token, ports=[443])) == hosts


def test_the_whole_v4_internet_without_default_excludes() -> None:
    assert len(space("0.0.0.0/0", ports=[80], default_excludes=False)) == 2**32


@pytest.mark.parametrize(
    ("token", "first", "last", "count"),
    [
        ("198.51.100.1-198.51.100.50", "198.51.100.1", "198.51.100.50", 50),
        ("198.51.100.1-50", "198.51.100.1", "198.51.100.50", 50),
        ("198.51.100.250-198.51.101.5", "198.51.100.250", "198.51.101.5", 12),
        ("198.51.100.7-7", "198.51.100.7", "198.51.100.7", 1),
        ("2001:db8::fe-2001:db8::101", "2001:db8::fe", "2001:db8::101", 4),
        ("198.51.100.1-198.51.100.3:22", "198.51.100.1", "198.51.100.3", 3),
    ],
)
def test_ranges(token: str, first: str, last: str, count: int) -> None:
    got = targets(token, ports=[22])
    assert len(got) == count
    assert got[0] == T(first, 22) and got[-1] == T(last, 22)


def test_hostnames_resolve_once_to_every_address() -> None:
    calls: list[str] = []
    got = targets("web.test", "web.test:80", "db.test", ports=[80], resolver=fake_resolver(calls))
    assert sorted(calls) == ["db.test", "web.test"]
    assert sorted(got) == [T("198.51.100.7", 80), T("198.51.100.8", 80), T("2001:db8::7", 80)]


def test_hostnames_with_hyphens_and_zones() -> None:
    assert targets("my-host.test:1") == [T("203.0.113.9", 1)]
    assert targets("v6only.test:1") == [T("fe80::1", 1)]  # the zone is dropped


def test_overlapping_tokens_give_each_pair_once() -> None:
    got = targets("198.51.100.0/30", "198.51.100.1:80", "198.51.100.2:22", ports=[80, 443])
    assert len(got) == len(set(got)) == 9
    assert set(got) == {
        *(T(f"198.51.100.{i}", p) for i in range(4) for p in (80, 443)),
        T("198.51.100.2", 22),
    }


def test_the_host_varies_fastest() -> None:
    assert [str(t) for t in space("198.51.100.0/31", "2001:db8::1", ports=[80, 443])] == [
        "198.51.100.0:80",
        "198.51.100.1:80",
        "[2001:db8::1]:80",
        "198.51.100.0:443",
        "198.51.100.1:443",
        "[2001:db8::1]:443",
    ]


def test_tokens_are_split_on_whitespace() -> None:
    assert len(space(" 198.51.100.1\t198.51.100.2 ", "", ports=[1])) == 2


@pytest.mark.parametrize(
    "token",
    [
        "198.51.100.300",
        "198.51.100.300:80",
        "1.2.3.4.5",
        "123",
        "010.0.0.1",
        "198.51.100.0/33",
        "198.51.100.0/",
        "198.51.100.0/x",
        "198.51.100.0/255.255.255.0",
        "2001:db8::/129",
        "2001:db8::g",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "198.51.100.1:0",
        "198.51.100.1:65536",
        "198.51.100.1:http",
        "198.51.100.1-",
        "198.51.100.9-198.51.100.1",
        "198.51.100.9-3",
        "198.51.100.1-256",
        "198.51.100.1-2001:db8::1",
        "198.51.100.1-foo",
        "bad!name",
        "-leading.test",
        "nowhere.test",
    ],
)
def test_one_bad_token_is_one_error_naming_it(token: str) -> None:
    with pytest.raises(UsageError) as err:
        space("198.51.100.1", token, ports=[80])
    message = str(err.value)
    assert token in message or repr(token) in message
    assert "\n" not in message


def test_a_token_without_a_port() -> None:
    with pytest.raises(UsageError) as err:
        space("198.51.100.1:80", "198.51.100.2")
    assert str(err.value) == "no port for 198.51.100.2: give -p PORTS or HOST:PORT"


def test_a_resolver_failure_names_the_host() -> None:
    with pytest.raises(UsageError, match=r"cannot resolve 'nowhere\.test'.*not known"):
        space("nowhere.test:80")


@pytest.mark.parametrize("ports", [[0], [65536], [True], ["80"]])
def test_bad_ports_argument(ports: list) -> None:
    with pytest.raises(UsageError, match="bad port"):
        space("198.51.100.1", ports=ports)


def test_no_targets() -> None:
    with pytest.raises(UsageError, match="no targets given"):
        space("", "  ", ports=[80])


# --- exclusions ------------------------------------------------------------------------------


def test_excludes_subtract_addresses_blocks_and_ranges() -> None:
    s = space(
        "198.51.100.0/24",
        ports=[80],
        excludes=["198.51.100.0", "198.51.100.128/25", "198.51.100.10-198.51.100.19,198.51.100.5"],
    )
    hosts = {t.host for t in s}
    assert len(s) == 256 - 1 - 128 - 10 - 1 == len(hosts)
    assert {"198.51.100.0", "198.51.100.5", "198.51.100.15", "198.51.100.200"}.isdisjoint(hosts)
    assert s.excluded == 140


def test_exclude_files(tmp_path: Path) -> None:
    path = tmp_path / "excl"
    path.write_text("# maintenance\n\n198.51.100.0/25   # first half\n 2001:db8::/127\n")
    s = space("198.51.100.0/24", "2001:db8::/126", ports=[80], exclude_files=[path])
    assert len(s) == 128 + 2
    assert s.excluded == 130


def test_a_bad_exclude_names_file_line_and_token(tmp_path: Path) -> None:
    path = tmp_path / "excl"
    path.write_text("198.51.100.1\n# ok\n198.51.100.999\n")
    with pytest.raises(UsageError, match=f"{path}:3: exclude '198.51.100.999'"):
        space("198.51.100.0/24", ports=[80], exclude_files=[str(path)])


@pytest.mark.parametrize("token", ["web.test", "198.51.100.1:80", "198.51.100.0/40"])
def test_bad_excludes(token: str) -> None:
    with pytest.raises(UsageError, match=f"exclude {token!r}"):
        space("198.51.100.0/24", ports=[80], excludes=[token])


def test_a_missing_exclude_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read exclude file .*nope"):
        space("198.51.100.1", ports=[80], exclude_files=[tmp_path / "nope"])


def test_everything_excluded() -> None:
    with pytest.raises(UsageError, match="no targets left: all 4 addresses are excluded"):
        space("198.51.100.0/30", ports=[80], excludes=["198.51.100.0/24"])


@pytest.mark.parametrize(
    "address",
    [
        *("0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255"),
        *("::", "ff02::1", "ff05::1:3"),
    ],
)
def test_default_exclusions(address: str) -> None:
    assert targets(address, "198.51.100.1", ports=[80]) == [T("198.51.100.1", 80)]
    assert T(address, 80) in targets(address, ports=[80], default_excludes=False)


def test_default_exclusions_on_the_whole_internet() -> None:
    s = space("0.0.0.0/0", ports=[80])
    assert s.excluded == 2**24 + 2**28 + 2**28  # 0/8, 224/4, 240/4
    assert len(s) == 2**32 - s.excluded
    s6 = space("::/120", "ff00::/120", ports=[80])
    assert (s6.excluded, len(s6)) == (1 + 256, 255)


def test_default_exclusions_are_named() -> None:
    assert "224.0.0.0/4" in DEFAULT_EXCLUDES and "ff00::/8" in DEFAULT_EXCLUDES


# --- size ------------------------------------------------------------------------------------


def test_check_size() -> None:
    space("198.51.100.0/24", ports=list(range(1, 257))).check_size(allow_large=False)  # 65,536
    big = space("198.51.100.0/24", ports=list(range(1, 258)))
    with pytest.raises(UsageError) as err:
        big.check_size(allow_large=False)
    assert str(err.value) == "65,792 targets is more than 65,536; pass --allow-large if you mean it"
    big.check_size(allow_large=True)
    with pytest.raises(UsageError, match="more than 100"):
        space("198.51.100.0/24", ports=[1]).check_size(False, limit=100)


def test_absurd_spaces_are_always_refused() -> None:
    assert len(space("2001:db8::/66", ports=[80])) == 2**62  # the largest allowed
    for token in ("2001:db8::/65", "::/0"):
        with pytest.raises(UsageError, match="2\\*\\*62"):
            space(token, ports=[80])
    with pytest.raises(UsageError, match="2\\*\\*62"):
        space("2001:db8::/66", ports=[80, 81])


# --- len and indexing against brute force ---------------------------------------------------


def brute_force(tokens: list[str], ports: list[int], excludes: list[str]) -> set[Target]:
    """The same space, materialised with the standard library instead of netaddr."""

    def expand(token: str) -> set[str]:
        if "-" in token:
            lo, hi = (ipaddress.ip_address(x) for x in token.split("-"))
            return {str(ipaddress.ip_address(v)) for v in range(int(lo), int(hi) + 1)}
        return {str(a) for a in ipaddress.ip_network(token, strict=False)}

    out: set[Target] = set()
    blocked = set().union(*(expand(e) for e in excludes))
    for token in tokens:
        if token.startswith("["):
            host, port = token[1:].split("]:")
            pairs = {(h, int(port)) for h in expand(host)}
        elif token.count(":") == 1:
            host, port = token.split(":")
            pairs = {(h, int(port)) for h in expand(host)}
        else:
            pairs = {(h, p) for h in expand(token) for p in ports}
        out |= {T(h, p) for h, p in pairs if h not in blocked}
    return out


v4_hosts = st.integers(0, 300).map(lambda i: f"198.51.{100 + i // 256}.{i % 256}")
v6_hosts = st.integers(0, 300).map(lambda i: f"2001:db8::{i:x}")


@st.composite
def token(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["v4", "v6", "cidr4", "cidr6", "range4", "range6"]))
    if kind in ("v4", "v6"):
        text = draw(v4_hosts if kind == "v4" else v6_hosts)
    elif kind == "cidr4":
        text = f"{draw(v4_hosts)}/{draw(st.integers(26, 32))}"
    elif kind == "cidr6":
        text = f"{draw(v6_hosts)}/{draw(st.integers(122, 128))}"
    else:
        hosts = v4_hosts if kind == "range4" else v6_hosts
        a, b = sorted([draw(hosts), draw(hosts)], key=ipaddress.ip_address)
        text = f"{a}-{b}"
    if draw(st.booleans()) and "-" not in text:
        port = draw(st.integers(1, 6))
        text = f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
    return text


@given(
    tokens=st.lists(token(), min_size=1, max_size=5),
    ports=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True),
    excludes=st.lists(token().filter(lambda t: "]" not in t and t.count(":") != 1), max_size=2),
)
@settings(max_examples=200, deadline=None)
def test_len_and_indexing_match_brute_force(
    tokens: list[str], ports: list[int], excludes: list[str]
) -> None:
    expected = brute_force(tokens, ports, excludes)
    try:
        s = space(*tokens, ports=ports, excludes=excludes, default_excludes=False)
    except UsageError as exc:
        assert not expected and "no targets left" in str(exc)
        return
    in_order = list(s)
    assert len(s) == len(in_order) == len(expected)
    assert set(in_order) == expected
    assert [s[i] for i in range(len(s))] == in_order
    assert s[-1] == in_order[-1] and s[-len(s)] == in_order[0]
    for bad in (len(s), -len(s) - 1):
        with pytest.raises(IndexError):
            s[bad]
    shuffled = list(s.iter(seed=5))
    assert sorted(shuffled) == sorted(in_order)
    shards = [t for i in range(3) for t in s.iter(seed=5, shard=i, shards=3)]
    assert sorted(shards) == sorted(in_order)


def test_permuted_order_is_seeded() -> None:
    s = space("198.51.100.0/24", ports=[80, 443])
    assert list(s.iter(seed=1)) == list(s.iter(seed=1))
    assert list(s.iter(seed=1)) != list(s.iter(seed=2))
    assert list(s.iter(seed=1)) != list(s)
    assert sorted(s.iter()) == sorted(s)


def test_a_2_to_the_32_space_streams_without_materialising() -> None:
    s = space("0.0.0.0/0", ports=[80], default_excludes=False)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        deque(islice(s.iter(seed=1), 10_000), maxlen=0)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50_000


# --- interval arithmetic, against netaddr's IPSet --------------------------------------------


@st.composite
def interval(draw: st.DrawFn) -> tuple[int, int, int]:
    version = draw(st.sampled_from([4, 6]))
    base = 0 if version == 4 else 2**128 - 2**10  # v6 near the top, to catch overflow slips
    first = base + draw(st.integers(0, 600))
    return version, first, first + draw(st.integers(0, 40))


def as_ipset(intervals: list[tuple[int, int, int]]) -> IPSet:
    return IPSet(IPRange(IPAddress(f, v), IPAddress(last, v)) for v, f, last in intervals)


def as_intervals(ipset: IPSet) -> list[tuple[int, int, int]]:
    return [(r.version, r.first, r.last) for r in ipset.iter_ipranges()]


@given(st.lists(interval(), max_size=12), st.lists(interval(), max_size=12))
@settings(max_examples=300, deadline=None)
def test_intervals_agree_with_netaddr(a: list, b: list) -> None:
    ma, mb = merge(a), merge(b)
    assert ma == as_intervals(as_ipset(a))
    assert size(ma) == as_ipset(a).size
    assert subtract(ma, mb) == as_intervals(as_ipset(a) - as_ipset(b))


def test_a_space_from_netaddr_or_unmerged_intervals() -> None:
    from_ipset = TargetSpace([(IPSet(["198.51.100.0/30", "2001:db8::/127"]), [80])])
    from_tuples = TargetSpace(
        [([(6, 2**125, 2**125 + 1), (4, 10, 12), (4, 11, 13), (4, 14, 14)], [80, 81])]
    )
    assert len(from_ipset) == 6 and from_ipset.has_ipv6
    assert len(from_tuples) == 14
    assert from_tuples[0] == T("0.0.0.10", 80) and from_tuples[5] == T("2000::", 80)
    assert not space("198.51.100.0/24", ports=[80]).has_ipv6


# --- target files ----------------------------------------------------------------------------


def test_iter_target_file(tmp_path: Path) -> None:
    path = tmp_path / "targets"
    path.write_text("# fleet\n198.51.100.1:80  198.51.100.2:81 # two\n\n  [2001:db8::1]:443\n")
    tokens = iter_target_file(path)
    assert iter(tokens) is tokens
    assert list(tokens) == ["198.51.100.1:80", "198.51.100.2:81", "[2001:db8::1]:443"]
    assert len(space(*iter_target_file(str(path)))) == 3


def test_iter_target_file_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("198.51.100.1:80\n# x\n198.51.100.2:80\n"))
    assert list(iter_target_file("-")) == ["198.51.100.1:80", "198.51.100.2:80"]


def test_iter_target_file_errors(tmp_path: Path) -> None:
    tokens = iter_target_file(tmp_path / "missing")  # lazy: nothing is opened yet
    with pytest.raises(UsageError, match=r"cannot read targets file .*missing"):
        next(tokens)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(UsageError, match="not UTF-8"):
        list(iter_target_file(binary))


# --- parse_target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ("198.51.100.1:80", T("198.51.100.1", 80)),
        (" 198.51.100.1:80 ", T("198.51.100.1", 80)),
        ("[2001:DB8::1]:443", T("2001:db8::1", 443)),
        (("2001:db8:0::1", 443), T("2001:db8::1", 443)),
        (("[2001:db8::1]", 443), T("2001:db8::1", 443)),
        (T("198.51.100.1", 65535), T("198.51.100.1", 65535)),
        ("web.test:80", T("198.51.100.7", 80)),  # a name: its first address
        (("db.test", 22), T("198.51.100.8", 22)),
    ],
)
def test_parse_target(obj: object, expected: Target) -> None:
    got = parse_target(obj, resolver=fake_resolver())
    assert got == expected and type(got) is Target


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ("198.51.100.1", "HOST:PORT"),
        ("2001:db8::1", "HOST:PORT"),
        ("198.51.100.1:0", "1-65535"),
        ("198.51.100.1:80-81", "HOST:PORT"),
        ("[2001:db8::1]:x", "HOST:PORT"),
        (("198.51.100.1", "80"), "1-65535"),
        (("198.51.100.1", True), "1-65535"),
        (("198.51.100.1", 80, 1), "expected"),
        (("198.51.100.1",), "expected"),
        (42, "expected"),
        ("198.51.100.0/24:80", "one address"),
        ("198.51.100.1-9:80", "one address"),
        ("198.51.100.300:80", "not a valid IPv4"),
        ("nowhere.test:80", "cannot resolve"),
    ],
)
def test_parse_target_refuses(obj: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_target(obj, resolver=fake_resolver())


@pytest.mark.parametrize("obj", ["224.0.0.1:80", "0.0.0.0:80", "[ff02::1]:80",
                                 "[::ffff:198.18.0.2]:80", "255.255.255.255:80"])
def test_library_targets_get_the_default_exclusions(obj: str) -> None:
    with pytest.raises(UsageError, match="refusing to probe"):
        parse_target(obj)


@pytest.mark.parametrize("token", ["198.51.100.0/26", "2001:db8::ff00/122", "198.51.100.7"])
def test_a_one_range_one_port_block_maps_indices_as_target_does(token: str) -> None:
    """The sweep's hot path (`_Block.mapper`) agrees with the general `target` everywhere."""
    block = space(token, ports=[443])._blocks[0]
    fast = block.mapper()
    assert fast != block.target  # the specialised one
    assert [fast(i) for i in range(block.size)] == [block.target(i) for i in range(block.size)]
    two_ports = space(token, ports=[80, 443])._blocks[0]
    assert two_ports.mapper() == two_ports.target
