"""The source address checks must leave from: an IP address of this host, checked up front.

A --source that is not ours would otherwise surface as a verdict about every *target*
("unreachable EINVAL" for `localhost`, EADDRNOTAVAIL for a typo), and free text given as a
source would be echoed into every result row (a CSV cell starting with `=`). So a source must
be an IP literal, and it must be assigned here, unless the caller opts into IP_FREEBIND: a
service that checks from a floating address (a VRRP backup's VIP) before it holds it.
"""

from __future__ import annotations

import errno
import socket

from synprobe.errors import UsageError

# <linux/in.h>: IP_FREEBIND lets bind() take an address not (yet) assigned to an interface.
# Set at the IP level it applies to IPv6 sockets too (inet6_bind checks inet->freebind).
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def check_source(text: object, *, freebind: bool = False, name: str = "source",
                 opt_in: str = "freebind=True") -> str:
    """The source as the kernel will see it (normalised text), or UsageError saying why not.

    `name` and `opt_in` word the error for the caller (the CLI says --source / --freebind)."""
    if not isinstance(text, str):
        raise UsageError(f"{name} must be an IP address as a string, got {type(text).__name__}")
    import ipaddress  # here: only a run given a source address needs it (~1 ms of start-up)

    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise UsageError(f"{name} {text!r} is not an IP address (give an address of this "
                         "host, not a name)") from None
    if addr.is_unspecified or addr.is_multicast:
        raise UsageError(f"{name} {addr} cannot be a source: give an address of this host")
    normalised = str(addr)
    if not freebind and not is_local(normalised):
        raise UsageError(f"{name} {normalised} is not an address of this host (use "
                         f"{opt_in} for one it will hold later, e.g. a VRRP address)")
    return normalised


def is_local(address: str) -> bool:
    """Whether bind() takes `address` here: assigned to an interface of this network namespace
    (and past IPv6 duplicate address detection), or covered by a local route (AnyIP)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def set_freebind(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
