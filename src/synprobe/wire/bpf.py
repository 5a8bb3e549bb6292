"""The classic BPF filter for the raw engine's AF_PACKET SOCK_DGRAM receive socket.

It keeps in the kernel only what may answer a probe, so Python wakes up for candidates only:
IPv4/IPv6 TCP with SYN+ACK or RST to a port in our source range, and ICMP/ICMPv6 destination
unreachable, time exceeded or parameter problem. `replies.match_reply` still validates every
packet it passes.

On a SOCK_DGRAM packet socket offset 0 is the network header, so the ethertype is not in the
packet; the `SKF_AD_PROTOCOL` ancillary load reads it from the skb (in host order), and
`SKF_AD_PKTTYPE` drops our own outgoing packets, which a packet socket also sees.

A load beyond the packet's end makes a classic BPF program return 0, so truncated packets are
dropped without explicit length checks.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

# struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
Insn = tuple[int, int, int, int]

SO_ATTACH_FILTER = 26  # asm-generic/socket.h; Python's socket module does not export it
ACCEPT_BYTES = 0x40000  # snap length: whole packets (ICMPv6 errors quote up to 1280 bytes)

# linux/filter.h opcode parts.
_LD, _LDX, _ALU, _JMP, _RET = 0x00, 0x01, 0x04, 0x05, 0x06
_W, _H, _B = 0x00, 0x08, 0x10
_IMM, _ABS, _IND, _MSH = 0x00, 0x20, 0x40, 0xA0
_AND = 0x50
_JEQ, _JGT, _JGE, _JSET = 0x10, 0x20, 0x30, 0x40
_SKF_AD_OFF = -0x1000 & 0xFFFFFFFF
_SKF_AD_PROTOCOL = 0
_SKF_AD_PKTTYPE = 4

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_TCP, _ICMP, _ICMPV6 = 6, 1, 58
_RST, _SYN_ACK = 0x04, 0x12

# One program line: a label (str) or (code, k, jump-if-true, jump-if-false) where a jump is a
# label or None for "next instruction". Labels keep the 8-bit relative offsets out of sight.
_Line = str | tuple[int, int, str | None, str | None]


def _accept_types(load: _Line, types: tuple[int, ...]) -> list[_Line]:
    """`load` the ICMP type, then accept the packet if it is one of `types`, else drop it."""
    *first, last = types
    return [load, *((_JMP | _JEQ, k, "accept", None) for k in first),
            (_JMP | _JEQ, last, "accept", "drop")]


def reply_filter(port_lo: int, port_hi: int) -> list[Insn]:
    """The filter program for replies to probes sent from ports `port_lo`..`port_hi`."""
    j = _JMP
    lines: list[_Line] = [
        (_LD | _W | _ABS, _SKF_AD_OFF + _SKF_AD_PKTTYPE, None, None),
        (j | _JEQ, socket.PACKET_OUTGOING, "drop", None),
        (_LD | _W | _ABS, _SKF_AD_OFF + _SKF_AD_PROTOCOL, None, None),
        (j | _JEQ, _ETH_P_IP, "ipv4", None),
        (j | _JEQ, _ETH_P_IPV6, "ipv6", "drop"),
        "ipv4",
        (_LD | _H | _ABS, 6, None, None),  # flags + fragment offset
        (j | _JSET, 0x3FFF, "drop", None),  # MF or an offset: a fragment
        (_LDX | _B | _MSH, 0, None, None),  # X = IP header length, 4 * IHL
        (_LD | _B | _ABS, 9, None, None),  # protocol
        (j | _JEQ, _TCP, "tcp", None),
        (j | _JEQ, _ICMP, None, "drop"),
        # ICMP type (at X): destination unreachable, time exceeded, parameter problem
        *_accept_types((_LD | _B | _IND, 0, None, None), (3, 11, 12)),
        "ipv6",
        (_LDX | _W | _IMM, 40, None, None),  # fixed header; extension headers are not ours
        (_LD | _B | _ABS, 6, None, None),  # next header
        (j | _JEQ, _TCP, "tcp", None),
        (j | _JEQ, _ICMPV6, None, "drop"),
        # ICMPv6 type: destination unreachable, time exceeded, parameter problem
        *_accept_types((_LD | _B | _ABS, 40, None, None), (1, 3, 4)),
        "tcp",  # X = offset of the TCP header
        (_LD | _B | _IND, 13, None, None),  # flags
        (j | _JSET, _RST, "ports", None),
        (_ALU | _AND, _SYN_ACK, None, None),
        (j | _JEQ, _SYN_ACK, "ports", "drop"),
        "ports",
        (_LD | _H | _IND, 2, None, None),  # destination port: ours
        (j | _JGE, port_lo, None, "drop"),
        (j | _JGT, port_hi, "drop", "accept"),
        "accept",
        (_RET, ACCEPT_BYTES, None, None),
        "drop",
        (_RET, 0, None, None),
    ]
    return assemble(lines)


def assemble(lines: Sequence[_Line]) -> list[Insn]:
    """Resolve labels into the forward jump offsets classic BPF uses."""
    where: dict[str, int] = {}
    count = 0
    for line in lines:
        if not isinstance(line, str):
            count += 1
        elif line in where:
            raise ValueError(f"label {line!r} defined twice")
        else:
            where[line] = count
    program: list[Insn] = []
    for line in lines:
        if isinstance(line, str):
            continue
        code, k, jt, jf = line
        here = len(program)
        program.append((code, _offset(where, jt, here), _offset(where, jf, here), k))
    return program


def _offset(where: dict[str, int], label: str | None, here: int) -> int:
    if label is None:
        return 0
    delta = where[label] - here - 1
    if not 0 <= delta <= 0xFF:
        raise ValueError(f"jump to {label!r} out of range ({delta})")
    return delta


def pack_program(program: Sequence[Insn]) -> bytes:
    """The `struct sock_filter` array, 8 bytes per instruction."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def attach_filter(sock: socket.socket, program: Sequence[Insn]) -> None:
    """setsockopt(SO_ATTACH_FILTER) with a `struct sock_fprog` pointing at `program`.

    The kernel copies the instructions during the call, so the buffer only has to outlive it.
    To miss no packet and let none through unfiltered, open the packet socket with protocol 0
    (it receives nothing), attach, then bind it to (interface, ETH_P_ALL or ETH_P_IP...).
    """
    if not 0 < len(program) <= 4096:  # BPF_MAXINSNS
        raise ValueError("a classic BPF program has 1 to 4096 instructions")
    instructions = ctypes.create_string_buffer(pack_program(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, native layout.
    fprog = struct.pack("@HP", len(program), ctypes.addressof(instructions))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
