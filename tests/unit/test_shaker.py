"""The shaker engine, without root: real sockets on loopback, and a recording socket factory."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from synprobe.engines.base import ProbeOptions
from synprobe.engines.shaker import IP_RECVERR, IPV6_RECVERR, ShakerEngine, icmp_from_errqueue
from synprobe.errors import UsageError
from synprobe.model import ProbeResult, State, Target
from synprobe.sources import IterSource


def run_all(engine: ShakerEngine, targets: list[Target]) -> list[ProbeResult]:
    return [r for batch in engine.run(IterSource(targets)) for r in batch]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.listen(1024)
    yield sock
    sock.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_open_and_closed_on_loopback_without_accept(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    dead = closed_port()
    engine = ShakerEngine(ProbeOptions(timeout=0.5))
    results = run_all(engine, [Target("127.0.0.1", port), Target("::1", port),
                               Target("127.0.0.1", dead)])
    by_target = {(r.host, r.port): r for r in results}
    assert by_target["127.0.0.1", port].state is State.OPEN
    assert by_target["127.0.0.1", port].reason == "syn-ack"
    assert by_target["::1", port].state is State.OPEN
    assert by_target["127.0.0.1", dead].state is State.CLOSED
    assert by_target["127.0.0.1", dead].reason == "rst"
    assert all(r.rtt is not None and 0 < r.rtt < 0.5 for r in results)
    # The handshake was never completed: past the kernel's ~200 ms delayed-ACK window the
    # listener still has nothing to accept.
    readable, _, _ = select.select([listener], [], [], 0.4)
    assert readable == []


def test_timeout_must_stay_below_the_kernel_syn_rto() -> None:
    with pytest.raises(UsageError, match="below the kernel"):
        ShakerEngine(ProbeOptions(timeout=1.0))


def test_unknown_engine_option_is_an_error() -> None:
    from synprobe.api import make_options

    with pytest.raises(UsageError, match="the shaker engine has no option rst"):
        make_options("shaker", rst="self")
    with pytest.raises(UsageError, match="takes no engine_options"):
        ShakerEngine(ProbeOptions(engine_options=object()))


def test_unbindable_source_is_a_local_error() -> None:
    # 198.18.0.1 is not configured in this namespace: bind() fails before anything is sent.
    engine = ShakerEngine(ProbeOptions(source="198.18.0.1"))
    [result] = run_all(engine, [Target("127.0.0.1", 9)])
    assert (result.state, result.reason) == (State.ERROR, "EADDRNOTAVAIL")
    assert result.source == "198.18.0.1"


class RecordingSocket:
    """Looks like a non-blocking socket whose connect never completes (a silent target).

    Its fd is a pipe's read end, which never signals EPOLLOUT, so only the deadline ends it.
    """

    log: list[tuple[str, object]]
    open_count = 0
    max_open = 0

    def __init__(self, family: int, type_: int, log: list[tuple[str, object]],
                 connect_errno: int) -> None:
        self.log = log
        self.connect_errno = connect_errno
        self._r, self._w = os.pipe()
        RecordingSocket.open_count += 1
        RecordingSocket.max_open = max(RecordingSocket.max_open, RecordingSocket.open_count)
        log.append(("socket", type_ & socket.SOCK_NONBLOCK))

    def setsockopt(self, level: int, name: int, value: object) -> None:
        self.log.append(("setsockopt", (level, name, value)))

    def getsockopt(self, level: int, name: int) -> int:
        return 0

    def bind(self, addr: tuple[str, int]) -> None:
        self.log.append(("bind", addr))

    def connect_ex(self, addr: tuple[str, int]) -> int:
        self.log.append(("connect", addr))
        return errno.EACCES if addr[1] == 1 else self.connect_errno  # port 1: refused locally

    def fileno(self) -> int:
        return self._r

    def close(self) -> None:
        if self._r >= 0:
            os.close(self._r)
            os.close(self._w)
            self._r = -1
            RecordingSocket.open_count -= 1
            self.log.append(("close", None))


def recording_factory(log: list[tuple[str, object]], connect_errno: int = errno.EINPROGRESS):
    RecordingSocket.open_count = RecordingSocket.max_open = 0
    return lambda family, type_: RecordingSocket(family, type_, log, connect_errno)


def test_options_are_set_before_bind_and_connect() -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.02, retries=0, source="127.0.0.1"),
                          socket_factory=recording_factory(log))
    [result] = run_all(engine, [Target("127.0.0.1", 80)])
    assert result.state is State.FILTERED and result.reason == "timeout"
    names = [entry[0] for entry in log]
    assert names == ["socket", "setsockopt", "setsockopt", "setsockopt", "setsockopt", "bind",
                     "connect", "close"]
    opts = [entry[1] for entry in log if entry[0] == "setsockopt"]
    assert (socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00") in opts
    assert (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0) in opts
    assert (socket.IPPROTO_IP, IP_RECVERR, 1) in opts
    assert opts[-1] == (socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
    assert log[0][1] == socket.SOCK_NONBLOCK


def test_retries_use_a_fresh_socket_and_then_report_filtered() -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.02, retries=2),
                          socket_factory=recording_factory(log))
    [result] = run_all(engine, [Target("198.18.0.2", 82)])
    assert (result.state, result.reason, result.attempts, result.rtt) == (
        State.FILTERED, "timeout", 3, None)
    assert [e[0] for e in log].count("socket") == 3
    assert [e[0] for e in log].count("close") == 3
    assert engine.stats() == {"sent": 3, "send_errors": 0, "retries": 2, "late_handshakes": 0}


def test_concurrency_bounds_sockets_in_flight_and_all_are_closed() -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.02, retries=0, concurrency=7),
                          socket_factory=recording_factory(log))
    results = run_all(engine, [Target("198.18.0.2", p) for p in range(1, 51)])
    assert len(results) == 50
    assert RecordingSocket.max_open == 7
    assert RecordingSocket.open_count == 0


def test_abandoned_run_closes_every_socket() -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.02, retries=0, concurrency=5),
                          socket_factory=recording_factory(log))
    run = engine.run(IterSource(Target("198.18.0.2", p) for p in range(1, 100)))
    assert next(run)[0].port == 1  # yielded at once, while ports 2-5 are in flight
    assert RecordingSocket.open_count == 4
    run.close()
    assert RecordingSocket.open_count == 0


@pytest.mark.parametrize(
    ("code", "state"),
    [(errno.EACCES, State.UNREACHABLE), (errno.ENETUNREACH, State.UNREACHABLE),
     (errno.EINVAL, State.UNREACHABLE), (errno.EADDRNOTAVAIL, State.ERROR)],
)
def test_immediate_connect_errors(code: int, state: State) -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(), socket_factory=recording_factory(log, code))
    [result] = run_all(engine, [Target("198.18.0.2", 80)])
    assert result.state is state
    assert result.reason == errno.errorcode[code]
    assert RecordingSocket.open_count == 0


def test_rate_limit_paces_starts() -> None:
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.01, retries=0, rate=200.0),
                          socket_factory=recording_factory(log))
    started = time.monotonic()
    results = run_all(engine, [Target("198.18.0.2", p) for p in range(1, 21)])
    elapsed = time.monotonic() - started
    assert len(results) == 20
    assert elapsed >= 19 / 200.0 * 0.9  # 20 starts at 200/s take ~95 ms


def extended_err(origin: int, icmp_type: int, icmp_code: int) -> bytes:
    return struct.pack("=IBBBBII", errno.EHOSTUNREACH, origin, icmp_type, icmp_code, 0, 0, 0)


@pytest.mark.parametrize(
    ("anc", "expected"),
    [
        ([(socket.IPPROTO_IP, IP_RECVERR, extended_err(2, 3, 1) + b"\0" * 16)], (False, 3, 1)),
        ([(socket.IPPROTO_IPV6, IPV6_RECVERR, extended_err(3, 1, 3))], (True, 1, 3)),
        ([(socket.IPPROTO_IP, IP_RECVERR, extended_err(1, 0, 0))], None),  # local origin
        ([(socket.IPPROTO_IP, IP_RECVERR, b"short")], None),
        ([(socket.SOL_SOCKET, 29, extended_err(2, 3, 1))], None),  # another cmsg
        ([], None),
    ],
)
def test_icmp_from_errqueue(anc: list[tuple[int, int, bytes]],
                            expected: tuple[bool, int, int] | None) -> None:
    assert icmp_from_errqueue(anc) == expected


def test_an_overdue_deadline_never_blocks_the_loop() -> None:
    # A clock that leaps a second per reading: every deadline is overdue by the time the loop
    # computes its wait. The loop must poll without blocking and expire the attempt; blocking
    # for an event that never comes would keep the socket past the kernel's SYN retransmit.
    ticks = iter(range(0, 10_000_000))
    log: list[tuple[str, object]] = []
    engine = ShakerEngine(ProbeOptions(timeout=0.5, retries=1),
                          socket_factory=recording_factory(log), clock=lambda: float(next(ticks)))
    box: list[list[ProbeResult]] = []
    worker = threading.Thread(target=lambda: box.append(run_all(engine, [Target("198.18.0.2",
                                                                                82)])),
                              daemon=True)
    worker.start()
    worker.join(timeout=5.0)
    assert not worker.is_alive(), "the engine loop blocked past an overdue deadline"
    [[result]] = box
    assert (result.state, result.attempts) == (State.FILTERED, 2)


def test_concurrency_beyond_the_file_limit_is_a_clear_error() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard != resource.RLIM_INFINITY  # CI's machine has a finite hard limit
    # The library only checks (issue 8 §4): it names its parameter, never a CLI flag, and
    # leaves the process's limit as it was.
    with pytest.raises(UsageError, match=r"concurrency=.* soft RLIMIT_NOFILE") as caught:
        ShakerEngine(ProbeOptions(concurrency=soft))
    assert "--" not in str(caught.value)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    ShakerEngine(ProbeOptions(concurrency=soft - 64))  # fits: no error


def test_source_of_the_other_family_is_eafnosupport() -> None:
    engine = ShakerEngine(ProbeOptions(source="127.0.0.1"))
    [result] = run_all(engine, [Target("::1", 9)])
    assert (result.state, result.reason) == (State.ERROR, "EAFNOSUPPORT")
