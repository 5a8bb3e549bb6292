"""A userspace IP-in-IP tunnel end for the DSR lab's real servers (what `tunl0` does in the kernel).

Standard library only; started as `python -I -S decap.py` inside a real server's namespace.
Used when the kernel has no ipip module (CONFIG_NET_IPIP off, as on the machine this lab was
written on), and by default everywhere so the lab behaves the same on every kernel.

It reads every frame arriving on `--in` (the real server's NIC) with an AF_PACKET socket, keeps
IPv4/IPv6 packets to one of our `--addr` addresses carrying protocol 4 (IPv4 inside) or 41 (IPv6
inside), strips the outer header and sends the inner packet into `--out`, one end of a veth
pair. It arrives on the other end (the tunnel device, rp_filter 0) as if a tunnel device had
decapsulated it, is delivered to the VIP on lo, and the real server answers directly, from the
VIP. The lab drops protocols 4 and 41 in nftables prerouting (after AF_PACKET taps, which run
first), so the kernel never answers them with ICMP protocol-unreachable.

Control: newline commands on stdin, answers on stdout. It says `ready` once its sockets are
bound; `count` answers the number of packets decapsulated; EOF or `quit` ends it.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


def inner_of(packet: bytes, ours: set[bytes]) -> bytes | None:
    """The inner packet of a tunnel packet addressed to one of `ours`, else None."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        off = (packet[0] & 0x0F) * 4
        if off < 20 or packet[6] & 0x3F or packet[7]:  # fragments are not decapsulated here
            return None
        proto, dst = packet[9], packet[16:20]
        end = min(len(packet), int.from_bytes(packet[2:4], "big"))
    elif version == 6 and len(packet) >= 40:
        off, proto, dst = 40, packet[6], packet[24:40]
        end = min(len(packet), 40 + int.from_bytes(packet[4:6], "big"))
    else:
        return None
    inner = packet[off:end]  # without Ethernet padding
    if dst not in ours or not inner:
        return None
    if (proto, inner[0] >> 4) not in ((4, 4), (41, 6)):
        return None
    return inner


def serve(rx: socket.socket, tx: socket.socket, out_if: str, peer_mac: bytes,
          ours: set[bytes]) -> None:
    count = 0
    print("ready", flush=True)
    stdin = sys.stdin.buffer.raw  # unbuffered: select() sees exactly what is pending
    buf = b""
    while True:
        readable, _, _ = select.select([rx, stdin], [], [])
        if rx in readable:
            for _ in range(256):  # bounded: the control channel is served between bursts
                try:
                    packet, addr = rx.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                inner = inner_of(packet, ours)
                if inner is None:
                    continue
                proto = ETH_P_IP if inner[0] >> 4 == 4 else ETH_P_IPV6
                tx.sendto(inner, (out_if, proto, 0, 0, peer_mac))
                count += 1
        if stdin in readable:
            chunk = stdin.read(4096)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                command = line.decode().strip()
                if command == "quit":
                    return
                print(count if command == "count" else f"error {command!r}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="in_if", required=True)
    parser.add_argument("--out", dest="out_if", required=True)
    parser.add_argument("--peer-mac", required=True, help="MAC of the veth end packets arrive on")
    parser.add_argument("--addr", action="append", required=True, help="tunnel endpoint address")
    args = parser.parse_args(argv)
    ours = {socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
            for a in args.addr}
    peer_mac = bytes.fromhex(args.peer_mac.replace(":", ""))
    # SOCK_DGRAM: offset 0 is the IP header; the kernel writes the link header on send.
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, 0)
    rx.bind((args.in_if, ETH_P_ALL))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    tx.bind((args.out_if, 0))
    try:
        serve(rx, tx, args.out_if, peer_mac, ours)
    finally:
        rx.close()
        tx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
