"""`synprobe-haproxy-check`: a half-open check as HAProxy's `external-check command`.

HAProxy forks and execs the command once per check, with argv
`<proxy_addr> <proxy_port> <server_addr> <server_port>` and an environment it builds from
scratch (PATH from `external-check path`, else empty, and HAPROXY_PROXY_* / HAPROXY_SERVER_*).
Exit status 0 marks the check passed; anything else failed. HAProxy sends SIGTERM to a check still
running after `inter` (or `timeout connect`, when `timeout check` is set too). In quiet mode
(`-q`) the child's stdin/stdout/stderr are closed, otherwise they are HAProxy's own: either way
this program prints nothing when it works.

One process per check makes start-up the cost that matters: this module imports only the shaker
engine, the address parser and the target source, never asyncio, argparse, netaddr or scapy.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

from synprobe.engines.base import ProbeOptions
from synprobe.errors import SynprobeError, UsageError
from synprobe.model import Target
from synprobe.targets.addresses import format_ip, parse_ip

EXIT_UP = 0
EXIT_DOWN = 1  # the port did not answer with a SYN-ACK: closed, filtered or unreachable
EXIT_USAGE = 2  # a configuration mistake; one line on stderr (when HAProxy left it open)
EXIT_LOCAL = 3  # a local failure (no such source address, no descriptor): not the server's fault

DEFAULT_TIMEOUT = 0.5
DEFAULT_RETRIES = 1

USAGE = """\
usage: synprobe-haproxy-check [--timeout S] [--retries N] [--source IP] [--mark N]
                              PROXY_ADDR PROXY_PORT SERVER_ADDR SERVER_PORT

HAProxy external check: one half-open TCP check (SYN -> SYN-ACK -> RST) of SERVER_ADDR:SERVER_PORT,
so the server's accept() never returns and no TIME_WAIT is left. Exit 0 when the port answers,
1 when it does not (closed, filtered, unreachable), 2 on a usage error, 3 on a local failure.
Prints nothing unless it is misused.

HAProxy passes the four arguments itself and takes no others: put options in a wrapper script,
  #!/bin/sh
  exec /usr/local/bin/synprobe-haproxy-check --timeout 0.3 --retries 2 "$@"
and name that script (absolute path) in `external-check command`. SERVER_ADDR and SERVER_PORT
fall back to HAPROXY_SERVER_ADDR and HAPROXY_SERVER_PORT when empty.

  --timeout S   seconds each attempt waits for an answer (default 0.5, at most 0.95: the kernel
                retransmits a SYN at 1 s)
  --retries N   extra attempts, each a fresh SYN, after one goes unanswered (default 1)
  --source IP   send from this local address
  --mark N      SO_MARK for policy routing (CAP_NET_ADMIN)
Keep (retries + 1) x timeout below the server's `inter` (HAProxy kills a check still running
then).
"""

_VALUE_OPTIONS = ("--timeout", "--retries", "--source", "--mark")


class _Args:
    __slots__ = ("mark", "positional", "retries", "source", "timeout")

    def __init__(self) -> None:
        self.timeout = DEFAULT_TIMEOUT
        self.retries = DEFAULT_RETRIES
        self.source: str | None = None
        self.mark: int | None = None
        self.positional: list[str] = []


def _number(option: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{option} expects a number, got {text!r}") from None


def parse_args(argv: Sequence[str]) -> _Args:
    """A hand-made parser: argparse alone costs more to import than the check takes."""
    args = _Args()
    items = list(argv)
    while items:
        item = items.pop(0)
        name, eq, inline = item.partition("=")
        if name in _VALUE_OPTIONS:
            if eq:
                value = inline
            elif items:
                value = items.pop(0)
            else:
                raise UsageError(f"{name} expects a value")
            if name == "--timeout":
                args.timeout = _number(name, value, float)
            elif name == "--retries":
                args.retries = int(_number(name, value, int))
            elif name == "--source":
                args.source = value
            else:
                args.mark = int(_number(name, value, int))
        elif item == "--":
            args.positional.extend(items)
            break
        elif item.startswith("--") or (item.startswith("-") and len(item) > 1 and
                                       not item[1:].isdigit()):
            raise UsageError(f"unknown option {item}")
        else:
            args.positional.append(item)
    if len(args.positional) not in (0, 4):
        raise UsageError(
            f"expected PROXY_ADDR PROXY_PORT SERVER_ADDR SERVER_PORT, got {len(args.positional)} "
            "arguments"
        )
    return args


def server_target(positional: Sequence[str], env: Mapping[str, str]) -> Target:
    """The server to check, from HAProxy's arguments or its HAPROXY_SERVER_* variables."""
    addr = positional[2] if positional else ""
    port = positional[3] if positional else ""
    addr = addr or env.get("HAPROXY_SERVER_ADDR", "")
    port = port or env.get("HAPROXY_SERVER_PORT", "")
    if not addr:
        raise UsageError("no server address (argument 3 or HAPROXY_SERVER_ADDR)")
    if not port:
        # HAProxy leaves it empty for a server without a port (it follows the client's).
        raise UsageError(f"no port for server {addr} (give the server line a port, or `port N`)")
    ip = parse_ip(addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr)
    if ip is None:
        raise UsageError(f"server address {addr!r} is not an IP address (a unix socket?)")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(f"server port {port!r} is not a port number")
    version, value = ip
    if version == 4 and (value >> 28 in (0xE, 0xF) or value >> 24 == 0):
        # The library's default exclusions, for IPv4 (multicast, reserved/broadcast, 0/8): a
        # SYN there can only make noise. IPv6 multicast and :: likewise below.
        raise UsageError(f"refusing to check {addr}: multicast, broadcast or unspecified")
    if version == 6 and (value >> 120 == 0xFF or value == 0 or value >> 32 == 0xFFFF):
        raise UsageError(f"refusing to check {addr}: multicast, unspecified or IPv4-mapped")
    return Target(format_ip(value, version == 6), int(port))


def check(target: Target, args: _Args) -> bool:
    """One check through the shaker engine, run inline: True when the port answered."""
    from synprobe.engines.shaker import ShakerEngine
    from synprobe.sources import IterSource

    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    options = ProbeOptions(args.timeout, args.retries, 1, None, args.source, mark=args.mark)
    engine = ShakerEngine(options)
    try:
        for batch in engine.run(IterSource([target])):
            for result in batch:
                if result.state.value == "error":
                    raise _LocalFailure(result.reason)
                return result.is_open
    finally:
        engine.close()
    raise RuntimeError("the engine finished without a result")


class _LocalFailure(Exception):
    pass


def _say(message: str) -> None:
    # HAProxy in quiet mode closes the child's descriptors 0-2: there is no stderr then.
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            print(f"synprobe-haproxy-check: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        if sys.stdout is not None:
            sys.stdout.write(USAGE)
        return 0
    try:
        args = parse_args(argv)
        target = server_target(args.positional, os.environ if env is None else env)
        return EXIT_UP if check(target, args) else EXIT_DOWN
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except (_LocalFailure, SynprobeError, OSError) as exc:
        _say(f"local failure: {exc}")
        return EXIT_LOCAL


if __name__ == "__main__":
    sys.exit(main())
