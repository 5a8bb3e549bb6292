"""The `target` of a `/probe` request: parsed strictly, resolved once, its address chosen.

Malformed input is a UsageError (HTTP 400). A name that does not resolve is not an error of the
request: it is a failed probe (HTTP 200, probe_success 0), as blackbox_exporter answers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from synprobe.errors import UsageError
from synprobe.targets.addresses import (
    Address,
    addresses_of,
    format_ip,
    is_hostname,
    parse_address_set,
    parse_ip,
    split_port,
)

MAX_TARGET_LENGTH = 300  # a 253-byte name, brackets, colon and port fit with room to spare


class Unresolvable(Exception):
    """The name has no usable address (or the lookup ran out of time)."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    host: str  # as given: an address or a host name
    port: int
    literal: Address | None  # the address when `host` is one


def parse_probe_target(text: str) -> ProbeTarget:
    """`HOST:PORT` or `[IPV6]:PORT`; HOST an address or a host name. The port is required, as
    in blackbox_exporter's tcp prober."""
    if not text:
        raise UsageError("no target: use /probe?target=HOST:PORT[&module=NAME]")
    if len(text) > MAX_TARGET_LENGTH or not text.isprintable() or not text.isascii():
        raise UsageError(f"bad target: expected HOST:PORT (at most {MAX_TARGET_LENGTH} "
                         "printable ASCII characters)")
    host, port_text = split_port(text)
    if port_text is None or not (port_text.isascii() and port_text.isdigit()):
        raise UsageError(f"bad target {text!r}: expected HOST:PORT or [IPV6]:PORT")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise UsageError(f"bad target {text!r}: the port must be 1-65535")
    literal = parse_ip(host)
    if literal is None:
        if parse_address_set(host, text) is not None:
            raise UsageError(f"bad target {text!r}: one address, not a block or range")
        if not is_hostname(host):
            raise UsageError(f"bad target {text!r}: not an IP address or host name")
    return ProbeTarget(host, port, literal)


class Resolver:
    """Name lookups for /probe: getaddrinfo on a small pool of threads of its own, with a bound
    on lookups queued or running. A lookup that outlives its request keeps running (a thread
    cannot be interrupted), so without the bound a slow DNS server and a steady stream of
    scrapes would grow the queue without end; past it, a lookup fails at once (probe_success
    0, reason `unresolved`) until the backlog drains."""

    def __init__(self, workers: int = 8, max_pending: int = 256,
                 getaddrinfo: Callable[..., Any] = socket.getaddrinfo) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="synprobe-resolve")
        self._getaddrinfo = getaddrinfo
        self.max_pending = max_pending
        self.pending = 0  # touched on the event loop's thread only

    async def resolve_all(self, host: str, timeout: float) -> list[Address]:
        """Every A and AAAA address of `host`, deduplicated: one lookup per request."""
        if self.pending >= self.max_pending:
            raise Unresolvable(f"not resolving {host!r}: {self.pending} name lookups are "
                               "already waiting for the DNS")
        loop = asyncio.get_running_loop()
        self.pending += 1
        job = loop.run_in_executor(self._pool, self._getaddrinfo, host, None, 0,
                                   socket.SOCK_STREAM)
        job.add_done_callback(self._done)
        try:
            infos = await asyncio.wait_for(asyncio.shield(job), max(timeout, 0.001))
        except TimeoutError:
            raise Unresolvable(f"resolving {host!r} took longer than {timeout:.3g} s") from None
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"cannot resolve {host!r}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        found = addresses_of(infos)
        if not found:
            raise Unresolvable(f"cannot resolve {host!r}: no IPv4 or IPv6 address")
        return found

    def _done(self, job: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if not job.cancelled():
            job.exception()  # retrieved, so an abandoned lookup's failure is not logged

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def choose_address(addresses: Sequence[Address], preferred: str, fallback: bool) -> Address:
    """blackbox_exporter's choice: the first address of the preferred family ("ip4"/"ip6"),
    else (with fallback) the first of the other; without one, Unresolvable."""
    want = 4 if preferred == "ip4" else 6
    for address in addresses:
        if address[0] == want:
            return address
    if fallback and addresses:
        return addresses[0]
    raise Unresolvable(f"no {preferred} address (and ip_protocol_fallback is off)")


def address_text(address: Address) -> str:
    return format_ip(address[1], address[0] == 6)


def address_hash(address: Address) -> int:
    """blackbox_exporter's probe_ip_addr_hash: FNV-1a (32 bit) of the address bytes (4 for
    IPv4, 16 for IPv6), so dashboards that watch it for address changes keep working."""
    version, value = address
    h = 0x811C9DC5
    for byte in value.to_bytes(4 if version == 4 else 16):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h
