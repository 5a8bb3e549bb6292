"""A shaker loop that runs late: the verdict stays right and the completed handshake is counted.

Real sockets on loopback (no root). The stall is made by a socket whose connect_ex() returns
only once the kernel has completed the handshake: the listener's accept queue holds it, which
is exactly what a stopped or GIL-starved loop lets happen after ~200 ms.
"""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from synprobe.engines.base import ProbeOptions
from synprobe.engines.shaker import ShakerEngine
from synprobe.engines.tcpinfo import TCP_INFO_LEN, Handshake, handshake, parse_tcp_info
from synprobe.model import ProbeResult, State, Target
from synprobe.sources import IterSource

LINGER_RST = struct.pack("ii", 1, 0)


def tcp_info(*, total_retrans: int = 0, bytes_acked: int = 0, segs_out: int = 0) -> bytes:
    raw = bytearray(TCP_INFO_LEN)
    struct.pack_into("=I", raw, 100, total_retrans)
    struct.pack_into("=Q", raw, 120, bytes_acked)
    struct.pack_into("=I", raw, 136, segs_out)
    return bytes(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    (tcp_info(bytes_acked=1, segs_out=1), Handshake(True, False)),  # answered in time
    (tcp_info(bytes_acked=1, segs_out=2), Handshake(True, True)),  # the kernel's ACK left
    (tcp_info(bytes_acked=1, segs_out=3), Handshake(True, True)),  # and the server's FIN ACKed
    (tcp_info(bytes_acked=1, segs_out=2, total_retrans=1), Handshake(True, False)),  # SYN x2
    (tcp_info(bytes_acked=1, segs_out=3, total_retrans=1), Handshake(True, True)),
    (tcp_info(bytes_acked=0, segs_out=1), Handshake(False, False)),  # RST: nothing acked
    (tcp_info(bytes_acked=0, segs_out=3, total_retrans=2), Handshake(False, False)),
    (tcp_info(bytes_acked=1, segs_out=2)[:120], Handshake(False, False)),  # too short to say
])
def test_parse_tcp_info(raw: bytes, expected: Handshake) -> None:
    assert parse_tcp_info(raw) == expected


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield sock


def accept_queue_holds_one(listener: socket.socket) -> bool:
    return bool(select.select([listener], [], [], 2.0)[0])


def stalling_factory(
    after_connect: Callable[[socket.socket], None],
) -> Callable[..., socket.socket]:
    """Real sockets whose connect_ex() runs `after_connect` before returning to the loop."""

    class Stalled(socket.socket):
        def connect_ex(self, address: object) -> int:
            err = super().connect_ex(address)  # type: ignore[arg-type]
            after_connect(self)
            return err

    return Stalled


def run_one(engine: ShakerEngine, port: int) -> ProbeResult:
    [result] = [r for batch in engine.run(IterSource([Target("127.0.0.1", port)])) for r in batch]
    return result


def test_the_kernel_holds_the_ack_when_the_loop_is_in_time(listener: socket.socket) -> None:
    engine = ShakerEngine(ProbeOptions(timeout=0.5, retries=0))
    result = run_one(engine, listener.getsockname()[1])
    assert (result.state, result.reason) == (State.OPEN, "syn-ack")
    assert engine.stats()["late_handshakes"] == 0
    assert select.select([listener], [], [], 0.4)[0] == []  # nothing to accept: no ACK left


def test_a_late_loop_still_reads_open_and_counts_the_handshake(listener: socket.socket) -> None:
    def stall(sock: socket.socket) -> None:
        # The loop is held up until the kernel's delayed ACK has completed the handshake.
        assert accept_queue_holds_one(listener)

    engine = ShakerEngine(ProbeOptions(timeout=0.9, retries=0),
                          socket_factory=stalling_factory(stall))
    result = run_one(engine, listener.getsockname()[1])
    assert (result.state, result.reason) == (State.OPEN, "syn-ack")
    assert engine.stats()["late_handshakes"] == 1


def test_a_late_loop_reads_open_even_after_the_server_reset(listener: socket.socket) -> None:
    """The server accepted (our ACK left) and reset the connection before the loop looked:
    SO_ERROR says ECONNRESET, yet the port answered the SYN. Today's main said error."""

    def stall(sock: socket.socket) -> None:
        assert accept_queue_holds_one(listener)
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        conn.close()
        assert select.select([sock], [], [], 2.0)[0]  # the RST arrived: readable, ECONNRESET

    engine = ShakerEngine(ProbeOptions(timeout=0.9, retries=0),
                          socket_factory=stalling_factory(stall))
    result = run_one(engine, listener.getsockname()[1])
    assert (result.state, result.reason) == (State.OPEN, "syn-ack")
    assert engine.stats()["late_handshakes"] == 1


def test_a_refused_port_is_not_mistaken_for_a_late_handshake() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # nothing listens once it is closed
    engine = ShakerEngine(ProbeOptions(timeout=0.5, retries=0))
    result = run_one(engine, port)
    assert (result.state, result.reason) == (State.CLOSED, "rst")
    assert engine.stats()["late_handshakes"] == 0


def test_handshake_of_a_non_tcp_socket_claims_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert handshake(udp) == Handshake(False, False)
