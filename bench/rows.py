"""What the benchmark runs: one `RowSpec` per table row, each a command line plus an output parser.

Every row is one whole process started in the lab's client namespace, so its wall time and peak
RSS include interpreter start-up, imports, target generation and output, as a user would see
them. `count()` reads what the process wrote and returns (results, opens, {other state: n});
a row whose process
exits with a code outside `ok_codes`, or whose output cannot be read, is a failed run.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import baselines

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def cli_env() -> dict[str, str]:
    """The environment the measured CLI runs in: this checkout's src first on PYTHONPATH, and
    its bytecode compiled beforehand, as an installed package has it (PYTHONDONTWRITEBYTECODE,
    or a fresh checkout, would otherwise have every run compile the package: ~30 ms of start-up
    that users do not pay)."""
    src = REPO / "src"
    compileall.compile_dir(src / "synprobe", quiet=1)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(src), os.environ.get("PYTHONPATH")])))

# Ports for the scale run: 16 ports the lab's listener can open. 82 and 83 are skipped because the
# lab's nft rules drop (82) and ICMP-reject (83) them whatever listens; listening on 81 (the
# lab's closed port) is fine. So every one of the 1,048,576 targets is open, like the /16 run.
SCALE_PORTS = (80, 81, *range(84, 98))


@dataclass(frozen=True)
class Ctx:
    """What a row's command needs to know about this run."""

    python: str  # the real interpreter (not a pyenv shim: it would add ~50 ms per start)
    net: str  # e.g. 198.19.0.0/16
    ports: tuple[int, ...]
    out: Path  # the process's stdout goes here
    extra: Path  # a second output file, for tools that write results elsewhere (zmap, nmap)
    blocklist: Path  # an empty file (zmap)
    iface: str  # the client's veth
    source: str  # the client's address
    gateway_mac: str  # the server veth's MAC (zmap -G)
    concurrency: int = 1000

    @property
    def port_spec(self) -> str:
        return ",".join(str(p) for p in self.ports)

    @property
    def targets(self) -> int:
        return target_count(self.net, self.ports)


def target_count(net: str, ports: tuple[int, ...]) -> int:
    """Addresses of an IPv4 CIDR times ports."""
    return (1 << (32 - int(net.split("/")[1]))) * len(ports)


Counts = tuple[int, int, dict[str, int]]  # results, opens, {non-open state: count}
Counter = Callable[[Ctx], Counts]
STATES = ("open", "closed", "filtered", "unreachable", "error")


@dataclass(frozen=True)
class RowSpec:
    key: str  # for --rows and the JSON
    name: str  # for the table
    family: str  # "synprobe" or "baseline"
    argv: Callable[[Ctx], list[str]]
    count: Counter
    ok_codes: tuple[int, ...] = (0,)
    needs: str | None = None  # an executable that must be installed
    single_port: bool = False  # the tool takes one port only (skipped in the scale run)

    def missing(self) -> str | None:
        """Why this row cannot run here, or None."""
        if self.needs and shutil.which(self.needs) is None:
            return f"{self.needs} not installed (apt-get install -y {self.needs})"
        return None


def count_json_lines(ctx: Ctx) -> Counts:
    """synprobe --json: one object per line; count lines and states, streaming."""
    results = 0
    states = dict.fromkeys(STATES, 0)
    needles = {s: f'"state":"{s}"'.encode() for s in STATES}
    with ctx.out.open("rb") as f:
        # Chunks end at a line end, so no needle is ever split between two of them.
        rest = b""
        while chunk := f.read(1 << 22):
            buf = rest + chunk
            cut = buf.rfind(b"\n") + 1
            body, rest = buf[:cut], buf[cut:]
            results += body.count(b"\n")
            for state, needle in needles.items():
                states[state] += body.count(needle)
        if rest.strip():
            results += 1
            for state, needle in needles.items():
                states[state] += rest.count(needle)
    opens = states.pop("open")
    return results, opens, {k: v for k, v in states.items() if v}


def count_summary_json(ctx: Ctx) -> Counts:
    """lib_probe.py and baselines.py print one JSON object: "targets", "opens", and the other
    outcomes ("states" from lib_probe, closed/timeouts/errors from the baseline)."""
    data = json.loads(ctx.out.read_text())
    other = data.get("states") or {k: data[k] for k in ("closed", "timeouts", "errors")
                                   if k in data}
    return int(data["targets"]), int(data["opens"]), {
        k: int(v) for k, v in other.items() if k != "open" and v}


def cli_row(engine: str) -> RowSpec:
    def argv(ctx: Ctx) -> list[str]:
        return [ctx.python, "-m", "synprobe", "--engine", engine, "--json", "-p", ctx.port_spec,
                "--allow-large", "--rate", "0", "-q", ctx.net]

    # Exit 1 means "not every target was open": still a finished run; opens/expected tells.
    return RowSpec(f"{engine}-cli", f"{engine} CLI", "synprobe", argv, count_json_lines,
                   ok_codes=(0, 1))


def lib_row(engine: str) -> RowSpec:
    def argv(ctx: Ctx) -> list[str]:
        return [ctx.python, str(BENCH_DIR / "lib_probe.py"), "--engine", engine, "-p",
                ctx.port_spec, ctx.net]

    return RowSpec(f"{engine}-lib", f"{engine} probe_many", "synprobe", argv, count_summary_json)


def _connect_argv(ctx: Ctx) -> list[str]:
    return [ctx.python, str(BENCH_DIR / "baselines.py"), ctx.net, "-p", ctx.port_spec,
            "--concurrency", str(ctx.concurrency), "--timeout", "0.5"]


def _zmap_argv(ctx: Ctx) -> list[str]:
    return baselines.zmap_argv(net=ctx.net, port=ctx.ports[0], iface=ctx.iface, source=ctx.source,
                               gateway_mac=ctx.gateway_mac, blocklist=ctx.blocklist,
                               output=ctx.extra)


def _zmap_count(ctx: Ctx) -> Counts:
    opens = baselines.count_zmap(ctx.extra)
    return opens, opens, {}  # zmap lists responders only


def _nmap_argv(ctx: Ctx) -> list[str]:
    return [*baselines.nmap_argv(net=ctx.net, port=ctx.ports[0], output=ctx.extra),
            "-e", ctx.iface]


def _nmap_count(ctx: Ctx) -> Counts:
    text = ctx.extra.read_bytes()
    return text.count(b"Ports: "), baselines.count_nmap(ctx.extra, ctx.ports[0]), {}


ROWS: tuple[RowSpec, ...] = (
    cli_row("shaker"),
    cli_row("raw"),
    lib_row("shaker"),
    lib_row("raw"),
    RowSpec("connect", "connect()+close()", "baseline", _connect_argv, count_summary_json),
    RowSpec("zmap", "zmap", "baseline", _zmap_argv, _zmap_count, needs="zmap",
            single_port=True),
    RowSpec("nmap", "nmap -sS", "baseline", _nmap_argv, _nmap_count, needs="nmap",
            single_port=True),
)
ROW_KEYS = tuple(r.key for r in ROWS)


@dataclass(frozen=True)
class StartupSpec:
    key: str
    name: str
    argv: Callable[[str, str], list[str]]  # (python, synprobe script) -> argv
    ok_codes: tuple[int, ...] = (0,)


def synprobe_script(python: str) -> list[str]:
    """The console script next to the interpreter (what `synprobe` runs once installed), or
    `python -m synprobe` when it is not installed."""
    script = Path(python).parent / "synprobe"
    return [str(script)] if script.exists() else [python, "-m", "synprobe"]


STARTUP: tuple[StartupSpec, ...] = (
    StartupSpec("netns-true", "ip netns exec … true (floor)", lambda py, tgt: ["true"]),
    StartupSpec("python-pass", "python3 -c pass (floor)", lambda py, tgt: [py, "-c", "pass"]),
    StartupSpec("help", "synprobe --help", lambda py, tgt: [*synprobe_script(py), "--help"]),
    StartupSpec("one-target", "synprobe one target (shaker)",
                lambda py, tgt: [*synprobe_script(py), "-q", tgt]),
    StartupSpec("one-target-raw", "synprobe one target (raw)",
                lambda py, tgt: [*synprobe_script(py), "--engine", "raw", "-q", tgt]),
)
