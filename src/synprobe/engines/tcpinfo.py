"""What TCP_INFO says about a shaker attempt's handshake: did a SYN-ACK come, did our ACK leave.

The shaker's guarantee (no final ACK) holds only while its loop closes each socket within the
kernel's delayed-ACK window (~200 ms). A loop that runs late (a stopped or starved process)
finds the socket already ESTABLISHED, or already reset by a server that accepted and closed it,
so its SO_ERROR may read ECONNRESET even though the target answered. These counters tell the
truth after the fact. Measured on Linux 6.18 against the lab listener (wait/rst/fin modes):

  answered in time:      bytes_acked 1, segs_out 1 (only the SYN), state ESTABLISHED
  answered, ACK left:    bytes_acked 1, segs_out 2 (3 if the server's FIN was ACKed too)
  RST to the SYN:        bytes_acked 0, segs_out 1, state CLOSE

`tcpi_bytes_acked` counts the sequence space the peer acknowledged: the SYN takes one, so it
becomes 1 only when a SYN-ACK acknowledged our SYN (a RST in SYN_SENT never reaches tcp_ack()).
It survives the connection being reset. `tcpi_segs_out` counts every segment sent, SYN
retransmissions included (those are also in `tcpi_total_retrans`), so more segments than the
SYN and its retransmissions means an ACK left: the server saw the handshake complete.
(`tcpi_state` cannot tell: the socket is ESTABLISHED as soon as the SYN-ACK is processed, with
the ACK still held. `tcpi_data_segs_out` stays 0, the ACK carrying no data, and
`tcpi_last_ack_sent` is never filled in: 0 in every case measured.)
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

# struct tcp_info (linux/tcp.h): tcpi_total_retrans at 100, tcpi_bytes_acked at 120,
# tcpi_segs_out at 136. Every kernel since 4.2 fills at least these 144 bytes.
_FIELDS = struct.Struct("=100xI16xQ8xI")
TCP_INFO_LEN = 144


class Handshake(NamedTuple):
    syn_acked: bool  # a SYN-ACK acknowledged our SYN: the port is open
    ack_sent: bool  # and the kernel's ACK (the handshake's third segment) left


def parse_tcp_info(raw: bytes) -> Handshake:
    """Handshake evidence from a TCP_INFO buffer (as getsockopt returned it)."""
    if len(raw) < TCP_INFO_LEN:
        return Handshake(False, False)  # a kernel too old to say: claim nothing
    total_retrans, bytes_acked, segs_out = _FIELDS.unpack_from(raw)
    syn_acked = bytes_acked >= 1
    return Handshake(syn_acked, syn_acked and segs_out > 1 + total_retrans)


def handshake(sock: socket.socket) -> Handshake:
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    except OSError:
        return Handshake(False, False)
    return parse_tcp_info(raw)
