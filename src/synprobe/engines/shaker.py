"""The `shaker` engine: half-open checks with ordinary kernel sockets, many in flight on one epoll.

Each attempt is a fresh non-blocking socket that is told, before connect(), to (1) hold back the
final ACK of the handshake and (2) reset rather than linger when closed. When the SYN-ACK arrives
the socket becomes writable, we record "open" and close it at once: the kernel sends a RST instead
of the held-back ACK, so the server's accept() never returns and nothing enters TIME_WAIT here.
No privileges are needed.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from synprobe.engines.base import ProbeOptions, TargetSource, os_errors, require_capability
from synprobe.engines.tcpinfo import handshake
from synprobe.errors import UsageError
from synprobe.kernel.fdlimit import check_descriptors
from synprobe.kernel.localaddr import set_freebind
from synprobe.kernel.marks import set_mark
from synprobe.kernel.sockets import IP_RECVERR, IPV6_RECVERR, SocketFactory
from synprobe.model import ProbeResult, State, Target, classify_errno, new_result
from synprobe.pacing import Pacer
from synprobe.sources import ABORT, NO_NEW, always_go
from synprobe.wire.describe import dry_run_json
from synprobe.wire.icmp import classify_icmp

# SO_LINGER {on, 0 s}: close() aborts the connection with a RST and frees it at once, so no
# TIME_WAIT is left behind and the server drops its half-open (SYN_RECV) entry.
_LINGER_ABORT = struct.pack("ii", 1, 0)

# Linux's initial SYN retransmission timeout (TCP_TIMEOUT_INIT). An attempt must be closed before
# the kernel retransmits its SYN: measured, when the first SYN-ACK is lost, the retransmitted SYN
# and the server's own SYN-ACK retransmit cross, the second SYN-ACK hits an established socket,
# the kernel ACKs it at once and the server's accept() returns. So the engine retries with a fresh
# socket instead, and one attempt never lives as long as this.
KERNEL_SYN_RTO = 1.0
MAX_ATTEMPT_TIMEOUT = 0.95

START_BATCH = 256  # attempts started per loop turn; see run()
# No delayed-ACK timer is shorter than the kernel's TCP_TIMEOUT_MIN (2 jiffies, >= 2 ms; the
# default is 200 ms): an attempt answered sooner than this after its SYN cannot have sent its
# ACK yet, so the loop skips the TCP_INFO read (~1 us) on the fast path. See tcpinfo.py.
LATE_ACK_FLOOR = 0.002
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY)
# struct sock_extended_err (linux/errqueue.h): errno, origin, type, code, pad, info, data.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3
_RECVERR = {
    socket.AF_INET: (socket.IPPROTO_IP, IP_RECVERR),
    socket.AF_INET6: (socket.IPPROTO_IPV6, IPV6_RECVERR),
}


def icmp_from_errqueue(ancdata: list[tuple[int, int, bytes]]) -> tuple[bool, int, int] | None:
    """(is ICMPv6, type, code) of the ICMP error in a MSG_ERRQUEUE message, if it holds one."""
    for level, kind, data in ancdata:
        if (level, kind) in _RECVERR.values() and len(data) >= _EXTENDED_ERR.size:
            _, origin, icmp_type, icmp_code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
            if origin in (_ORIGIN_ICMP, _ORIGIN_ICMP6):
                return origin == _ORIGIN_ICMP6, icmp_type, icmp_code
    return None
_POLL_EVENTS = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP


class _Attempt:
    __slots__ = ("attempt", "sock", "started", "target")

    def __init__(self, target: Target, attempt: int, sock: socket.socket, started: float) -> None:
        self.target = target
        self.attempt = attempt
        self.sock = sock
        self.started = started


def _icmp_verdict(sock: socket.socket) -> tuple[State, str] | None:
    """Classify by the ICMP error queued on the socket (a soft or hard error), if any."""
    try:
        _, ancdata, _, _ = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:
        return None
    icmp = icmp_from_errqueue(ancdata)
    return None if icmp is None else classify_icmp(*icmp)


def describe_connect(options: ProbeOptions, target: Target, *, as_json: bool = False) -> str:
    """What a shaker check of `target` would do, for a dry run (a JSON object with as_json: the
    kernel builds the SYN, so it has no packet)."""
    if as_json:
        return dry_run_json("shaker", target, timeout=options.timeout,
                            attempts=options.retries + 1, source=options.source)
    return (f"connect {options.source or '*'} -> {target} SO_LINGER=0 TCP_QUICKACK=0 "
            f"timeout={options.timeout:g}s attempts={options.retries + 1}")


class ShakerEngine:
    name = "shaker"
    supports_via = False

    def __init__(
        self,
        options: ProbeOptions,
        *,
        socket_factory: SocketFactory = socket.socket,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < options.timeout <= MAX_ATTEMPT_TIMEOUT:
            raise UsageError(
                f"the shaker engine's timeout is per attempt and must be in (0, "
                f"{MAX_ATTEMPT_TIMEOUT}] s, below the kernel's {KERNEL_SYN_RTO:g} s SYN "
                f"retransmission (got {options.timeout:g}); use --retries for more attempts, "
                f"or --engine raw for paths slower than that"
            )
        self.options = options
        self._socket = socket_factory
        self._clock = clock
        check_descriptors(options.concurrency)  # each attempt in flight is an open socket
        if options.engine_options is not None:
            raise UsageError("the shaker engine takes no engine_options")
        self._mark = options.mark
        if self._mark is not None:
            self._check_mark(self._mark)
        # late_handshakes: open targets whose final ACK the kernel sent because this loop was
        # late (stopped or starved past the delayed-ACK window): those servers saw a connection.
        self._counters = {"sent": 0, "send_errors": 0, "retries": 0, "late_handshakes": 0}

    def stats(self) -> dict[str, int]:
        return dict(self._counters)

    def close(self) -> None:
        """Nothing outlives run(): every socket is closed in its finally."""

    def _check_mark(self, mark: int) -> None:
        """SO_MARK needs CAP_NET_ADMIN (or, since Linux 5.17, CAP_NET_RAW): find out once,
        here, rather than failing every check."""
        with self._socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            try:
                set_mark(sock, mark)
            except PermissionError as exc:
                raise require_capability(self.name, "CAP_NET_ADMIN or CAP_NET_RAW to set a "
                                         "mark (SO_MARK)", exc) from None

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        return describe_connect(self.options, target, as_json=as_json)

    def _open(self, target: Target) -> socket.socket:
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        sock = self._socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            # TCP_QUICKACK=0 puts the socket in delayed-ACK ("pingpong") mode, so the kernel
            # does not ACK the SYN-ACK at once but waits up to ~200 ms for data to piggyback on.
            # It must be set before connect(): on a fast link the SYN-ACK is processed inside
            # connect()'s softirq and the ACK would already be out. The flag is not permanent
            # (tcp(7)) but nothing resets it before we close.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            # IP(V6)_RECVERR queues ICMP errors on the socket's error queue, with their type and
            # code. Without it an ICMPv6 error that arrives while connect() still holds the
            # socket lock (always, on a fast link) is kept only as a "soft" error and connect()
            # ends ~1 s later on the answer to the retransmitted SYN; measured on 6.18.
            sock.setsockopt(*_RECVERR[family], 1)
            if self._mark is not None:
                set_mark(sock, self._mark)
            if self.options.source is not None:
                # IP_BIND_ADDRESS_NO_PORT: bind() takes only the address and leaves the port to
                # connect(), which picks one unique for the whole 4-tuple. A plain bind((ip, 0))
                # reserves a port per socket from ip_local_port_range, and a health checker
                # bound to one IP runs out of them ("address already in use").
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
                if self.options.freebind:
                    set_freebind(sock)  # the caller's opt-in: a source not (yet) ours
                sock.bind((self.options.source, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def preflight(self, vias: Sequence[str] = (), families: Iterable[bool] = ()) -> None:
        """Nothing to open ahead: each attempt's socket lives only while it is in flight (and
        the options, the mark's privilege and the file limit were checked when it was made).
        The shaker cannot choose a real server: `supports_via` is False."""

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        with os_errors(self.name):  # e.g. epoll_create with no descriptor left
            yield from self._run(source)

    def _run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        opts = self.options
        clock = self._clock
        pacer = Pacer(opts.rate, clock=clock)
        poller = select.epoll()
        inflight: dict[int, _Attempt] = {}
        # Every attempt gets the same timeout, so deadlines come due in the order attempts
        # started: a FIFO is a timer queue here. Entries of finished attempts are skipped.
        deadlines: deque[tuple[float, int, _Attempt]] = deque()
        retry: deque[tuple[Target, int]] = deque()
        wakeup = source.wakeup_fd
        if wakeup is not None:
            # Edge-triggered: the eventfd is only read by pull(), which is skipped while every
            # slot is busy; level-triggered, it would wake the loop again and again meanwhile.
            poller.register(wakeup, select.EPOLLIN | select.EPOLLET)
        exhausted = False
        counters = self._counters
        admission = getattr(source, "admission", always_go)
        try:
            while True:
                done: list[ProbeResult] = []
                halt = admission()
                if halt == ABORT:
                    return  # the finally closes every socket: an answered one resets its peer
                if halt == NO_NEW and retry:  # a deadline: first attempts not started never are
                    retry = deque(r for r in retry if r[1] > 1)
                # Start attempts: retries first (they are older), then new targets. At most
                # START_BATCH per turn: answers to the first ones arrive while later ones start,
                # and each needs its close() well inside the delayed-ACK window. Measured: one
                # 10,000-socket batch took long enough for 18,192 of 30,000 checks to become
                # full connections.
                room = min(opts.concurrency - len(inflight), START_BATCH)
                more_ready = False
                if room > 0:
                    batch: list[tuple[Target, int]] = []
                    while retry and len(batch) < room:
                        batch.append(retry.popleft())
                    if len(batch) < room and not exhausted:
                        wanted = room - len(batch)
                        pulled = source.pull(wanted)
                        if pulled is None:
                            exhausted = True
                        else:
                            batch.extend((t, 1) for t in pulled)
                            more_ready = len(pulled) == wanted
                    granted = pacer.allowance(len(batch))
                    if granted < len(batch):
                        retry.extendleft(reversed(batch[granted:]))  # keep them first in line
                        batch = batch[:granted]
                        more_ready = False  # the pacer says when: no busy turns until then
                    for target, attempt in batch:
                        self._start(target, attempt, poller, inflight, deadlines, done)
                if not inflight and not retry and exhausted:
                    if done:
                        yield done
                    return
                # Wait for answers, the next deadline, the pacer, or new work.
                now = clock()
                # -1 (block until an event) only when no attempt has a deadline; an overdue
                # deadline must poll with 0, never block: a late close lets the kernel
                # retransmit the SYN, which can complete a full connection under loss.
                wait = pacer.poll_wait(deadlines[0][0] if deadlines else None, now, bool(retry))
                room_left = len(inflight) < opts.concurrency
                if done or (room_left and more_ready):
                    wait = 0.0
                events = poller.poll(wait, 4096)
                now = clock()
                for fd, ev in events:
                    att = inflight.pop(fd, None)
                    if att is None:
                        continue  # the wakeup fd: new targets to pull on the next turn
                    sock = att.sock
                    # Writable with no error flag means connected: skip the SO_ERROR syscall.
                    err = (0 if ev == select.EPOLLOUT
                           else sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                    if err == 0 and ev & select.EPOLLOUT:
                        # Connected: close at once. This is the RST, and it must leave well
                        # inside the kernel's ~200 ms delayed-ACK window. A late loop closes
                        # after the kernel sent the ACK: still open, but counted.
                        if now - att.started >= LATE_ACK_FLOOR and handshake(sock).ack_sent:
                            counters["late_handshakes"] += 1
                        sock.close()
                        state, reason = State.OPEN, "syn-ack"
                    elif err == errno.ECONNREFUSED:
                        # A RST, or an ICMP port unreachable (a REJECT): the kernel gives both
                        # this errno; the error queue tells them apart (see wire.icmp).
                        verdict = _icmp_verdict(sock)
                        sock.close()
                        state, reason = verdict or (State.CLOSED, "rst")
                    elif err and (shake := handshake(sock)).syn_acked:
                        # A SYN-ACK came, the kernel completed the handshake while this loop
                        # was late, and the server has since reset or closed the connection
                        # (ECONNRESET, EPIPE): the port answered, so it is open.
                        counters["late_handshakes"] += shake.ack_sent
                        sock.close()
                        state, reason = State.OPEN, "syn-ack"
                    else:
                        verdict = _icmp_verdict(sock)
                        if verdict is None and err == 0:
                            inflight[fd] = att  # woken by nothing we understand: keep waiting
                            continue
                        sock.close()
                        state, reason = verdict or classify_errno(err)
                    done.append(self._result(att, state, reason, now - att.started))
                while deadlines and deadlines[0][0] <= now:
                    _, fd, att = deadlines.popleft()
                    if inflight.get(fd) is not att:
                        continue
                    del inflight[fd]
                    att.sock.close()  # still in SYN_SENT: no RST (nothing was answered)
                    if att.attempt <= opts.retries:
                        counters["retries"] += 1
                        retry.append((att.target, att.attempt + 1))
                    else:
                        done.append(self._result(att, State.FILTERED, "timeout", None))
                if done:
                    yield done
        finally:
            for att in inflight.values():
                att.sock.close()
            inflight.clear()
            poller.close()

    def _start(
        self,
        target: Target,
        attempt: int,
        poller: select.epoll,
        inflight: dict[int, _Attempt],
        deadlines: deque[tuple[float, int, _Attempt]],
        done: list[ProbeResult],
    ) -> None:
        started = self._clock()
        try:
            sock = self._open(target)
        except OSError as exc:
            self._counters["send_errors"] += 1
            # bind() to a --source of the other family fails in getaddrinfo (a gaierror with
            # a negative EAI_ code): say what it is, as the raw engine does.
            code = errno.EAFNOSUPPORT if isinstance(exc, socket.gaierror) else exc.errno or 0
            done.append(self._local_failure(target, attempt, code))
            return
        err = sock.connect_ex((target.host, target.port))
        self._counters["sent"] += 1
        if err not in _IN_PROGRESS and err != 0:
            # Refused before anything left: a prohibit/unreachable/blackhole route, no address.
            sock.close()
            done.append(self._local_failure(target, attempt, err))
            return
        fd = sock.fileno()
        att = _Attempt(target, attempt, sock, started)
        poller.register(fd, _POLL_EVENTS)
        inflight[fd] = att
        deadlines.append((started + self.options.timeout, fd, att))

    def _local_failure(self, target: Target, attempt: int, code: int) -> ProbeResult:
        state, reason = classify_errno(code)
        return ProbeResult(
            target.host, target.port, state, reason, None, attempt, self.name, self.options.source
        )

    def _result(self, att: _Attempt, state: State, reason: str, rtt: float | None) -> ProbeResult:
        t = att.target
        return new_result(t.host, t.port, state, reason, rtt, att.attempt, self.name,
                          self.options.source)
