"""Answer SYNs with a chosen ICMP error, quoting the SYN: the lab's ICMP injector.

nftables' `reject` sends only some ICMP errors (not fragmentation needed, time exceeded or
parameter problem), and the kernel sends others only from real routing situations. This
script, run in the server namespace, answers every SYN to port BASE + 256 * type + code with
ICMP (IPv4 SYN) or ICMPv6 (IPv6 SYN) error `type`/`code`, from the server's address, quoting
the whole SYN (IP header and TCP header, as Linux quotes). So one port per (type, code):
v4 3/3 is port BASE + 771, v6 1/4 is BASE + 260. The ports must be dropped by the server's
firewall (`IcmpInjector` adds the rule), or the kernel would answer with a RST as well: the
packet socket sees each SYN before netfilter does.

Errors are sent from raw sockets, which the kernel's ICMP rate limits do not cover. The
next-hop MTU of v4 3/4 and the MTU of v6 2 (packet too big) are 1280: a real value the
kernel accepts (it ignores absurd ones), far above the size of a SYN.

Standalone on purpose (run with `python -I -S`): it imports nothing from the lab or synprobe.
It prints `ready` once its sockets are open, and runs until terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import subprocess
import sys
from typing import Any

BASE = 20000  # ports BASE .. BASE + 256 * 13 - 1 map to ICMP (type, code)
SPAN = 256 * 13
ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
MTU = 1280


def error_for(dport: int, base: int = BASE) -> tuple[int, int] | None:
    """The (type, code) port `dport` asks for, or None if it is not an injector port."""
    if not base <= dport < base + SPAN:
        return None
    return divmod(dport - base, 256)


def syn_of(packet: bytes) -> tuple[bool, bytes, int] | None:
    """(is IPv6, source address, destination port) of a bare SYN, else None."""
    if len(packet) >= 40 and packet[0] >> 4 == 4 and packet[9] == socket.IPPROTO_TCP:
        off, v6, src = (packet[0] & 0x0F) * 4, False, packet[12:16]
    elif len(packet) >= 60 and packet[0] >> 4 == 6 and packet[6] == socket.IPPROTO_TCP:
        off, v6, src = 40, True, packet[8:24]
    else:
        return None
    if len(packet) < off + 14 or packet[off + 13] & 0x17 != 0x02:  # SYN, no ACK/RST/FIN
        return None
    return v6, src, int.from_bytes(packet[off + 2 : off + 4], "big")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_error(v6: bool, icmp_type: int, code: int, quoted: bytes) -> bytes:
    """The ICMP(v6) message: header, the type's 4-byte field, the quote. The ICMPv6 checksum
    is left 0: the kernel fills it in on an IPPROTO_ICMPV6 raw socket (RFC 3542 3.1)."""
    rest = 0  # unused; a parameter problem's pointer 0 blames the quoted header's first byte
    if (not v6 and icmp_type == 3 and code == 4) or (v6 and icmp_type == 2):
        rest = MTU  # v4: unused 16 bits, then the next-hop MTU; v6: the 32-bit MTU
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + quoted
    if v6:
        return message
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def serve(base: int) -> None:
    listen = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    send4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    send6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    print("ready", flush=True)
    while True:
        packet, addr = listen.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        syn = syn_of(packet)
        if syn is None:
            continue
        v6, src, dport = syn
        wanted = error_for(dport, base)
        if wanted is None:
            continue
        size = 40 + int.from_bytes(packet[4:6], "big") if v6 else \
            int.from_bytes(packet[2:4], "big")
        message = icmp_error(v6, *wanted, packet[:size])
        if v6:
            send6.sendto(message, (socket.inet_ntop(socket.AF_INET6, src), 0))
        else:
            send4.sendto(message, (socket.inet_ntop(socket.AF_INET, src), 0))


class IcmpInjector:
    """This script running in a lab's server namespace, and the firewall rule that keeps the
    kernel from answering its ports; a context manager. `port(v6, type, code)` is the port
    that gets that error. Stopped by PID at exit (and by the lab's teardown in any case)."""

    def __init__(self, lab: Any, table: str, base: int = BASE) -> None:
        self.lab, self.base = lab, base
        lab.exec("server", ["nft", "add", "rule", "inet", table, "input", "tcp", "dport",
                            f"{base}-{base + SPAN - 1}", "drop"])
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), f"--base={base}"]
        self.proc: subprocess.Popen[str] = lab.popen(
            "server", argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the sockets are open once it says so
        if line != "ready":
            self.close()
            raise RuntimeError(f"ICMP injector did not start (said {line!r})")

    def port(self, icmp_type: int, code: int) -> int:
        return self.base + 256 * icmp_type + code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> IcmpInjector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=BASE, help="port of ICMP type 0 code 0")
    args = parser.parse_args(argv)
    try:
        serve(args.base)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
