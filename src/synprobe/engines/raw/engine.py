"""The `raw` engine: SYNs crafted from templates and sent on raw sockets, replies matched by a
keyed cookie, and every SYN-ACK answered with a RST.

The packet work is pure and lives in `synprobe.wire` (templates, cookies, reply validation);
the sockets in `synprobe.kernel`. This module is the loop between them. The only per-target state
is the in-flight table, at most `concurrency` entries keyed by (packed address, port), which
carries what a result reports: attempts, the send time of each, retries, the deadline.
A reply is trusted only if its cookie checks out; a valid reply for a target no longer in
flight is a duplicate (or late) and counted, an invalid one is counted and dropped.

Every attempt, retries included, takes a fresh cookie serial (`CookieKey.issue`): a new
(source port, sequence number) pair that no earlier attempt to that target used in this
engine's lifetime. A reply counts only if the pair it answers is one of the attempts of the
check in flight; an answer to an earlier check of the same target (a late or replayed SYN-ACK,
in a long-lived Prober) is a duplicate, never a verdict. The record keeps each attempt's pair,
so a reply to a check in flight is validated by comparing it with what was sent (a compare
instead of a second keyed hash: ~0.8 µs a reply); any other reply-shaped packet is validated
against the key, statelessly, to tell a late or duplicate answer from a forgery.

RTT: from the attempt's send (the clock read just before the sendmmsg(2) call that carried
it) to the kernel's receive time of its answer (SO_TIMESTAMPNS, per packet). Its resolution:
a SYN's send time can be early by the time sendmmsg took for the SYNs before it in the same
batch (up to 256 of them, ~4.5 µs each on veth, so up to ~1 ms at unlimited rate; one SYN
per batch at low rates). Without a kernel stamp (checks through a real server, fakes) the
receive time is when the batch of replies was read.

RST: with `rst="kernel"` (the default) the SYN leaves from a port no local socket owns (the
cookie's range, 61000-65535 by default, above ip_local_port_range), so the kernel itself
answers the SYN-ACK with a RST (~10 µs later). With `rst="self"` the engine also sends a
bare RST (seq = the SYN-ACK's ack) for every valid SYN-ACK, for hosts where the kernel's RSTs
are suppressed (e.g. a firewall dropping them), through a token bucket against reply floods.

DSR checks through a named real server (`Target.via`; `via_mode` "l2" or "ipip") are the same
loop with three differences, explained in `via`: the SYN leaves in a frame to the real
server's MAC or in an IP-in-IP packet to it; its cookie is salted with the real server's
address (the reply comes from the VIP and names the real server only through the cookie); and
the engine always resets an open port itself, the way the SYN went.

Sending, measured in the lab (veth, 2 vCPUs; best of 5 runs of 10,000 SYNs to AnyIP
addresses): sendmmsg(2) through ctypes, batches of 256, 4.46 µs per packet, one sendto(2)
per packet 4.66 µs, when the SYN is answered (on veth the peer's SYN-ACK and the kernel's
RST are processed inside the sending call); 1.68 against 1.74 µs when the peer drops it.
Filling the sendmmsg batch costs 0.47 µs per packet in Python; the kernel dominates either
way. sendmmsg measured best, so `kernel.mmsg.MmsgSender` is used.
"""

from __future__ import annotations

import functools
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from synprobe.engines.base import ProbeOptions, TargetSource, os_errors, require_capability
from synprobe.engines.raw.options import RawOptions
from synprobe.engines.raw.templates import load_template
from synprobe.errors import EngineUnavailable, UsageError
from synprobe.kernel.mmsg import TRANSIENT_ERRNOS
from synprobe.kernel.packetio import PacketIO
from synprobe.kernel.routing import SourceRouter
from synprobe.kernel.sockets import SocketFactory
from synprobe.kernel.sysctl import local_port_range
from synprobe.model import ProbeResult, State, Target, classify_errno, new_result
from synprobe.pacing import Pacer
from synprobe.sources import ABORT, NO_NEW, always_go
from synprobe.wire.cookie import CookieKey
from synprobe.wire.replies import Invalid, check_cookie, read_reply
from synprobe.wire.syn import PacketTemplate

if TYPE_CHECKING:  # checks through real servers and dry runs import their modules when used
    from synprobe.engines.raw.via import Lane, ViaPaths, ViaRoute
    from synprobe.kernel.frames import FrameSender
    from synprobe.kernel.neighbours import L2Resolver, NeighbourUnresolved


@functools.cache
def _via_api() -> tuple[Callable[..., tuple[Lane, bytes]], Callable[..., str],
                        type[NeighbourUnresolved]]:
    """lane_of, unresolved_reason and NeighbourUnresolved: checks through real servers import
    their modules (neighbour discovery, tunnels) here, once, on first use."""
    from synprobe.engines.raw.via import lane_of, unresolved_reason
    from synprobe.kernel.neighbours import NeighbourUnresolved

    return lane_of, unresolved_reason, NeighbourUnresolved

STATS = ("sent", "send_errors", "replies", "invalid", "duplicates", "kernel_drops",
         "self_rsts", "rsts_suppressed", "retries")
VIA_STATS = ("via_mac_mismatch",)  # reported once a check went through a real server
RECV_BATCH = 1024  # replies handled per turn, so sends and deadlines interleave with a flood
# SYNs sent per turn, at most (and targets admitted per turn: only as many as will be sent).
# The in-flight table may be far larger (its bound is memory, see fdlimit); the burst is what
# the path can take at once. On veth each SYN and its answer go through the receiving CPU's
# backlog queue (net.core.netdev_max_backlog, 1,000 by default): a burst of 32,768 SYNs lost
# 92 % of the answers in the lab, where turns of SEND_BURST lose none. Between two bursts the
# loop reads up to RECV_BATCH replies, so the replies queued meanwhile stay few.
SEND_BURST = 512
NO_FD_POLL = 0.01  # seconds between looks at a source without a wakeup fd that had nothing
UNLIMITED_RST_RATE = 200_000.0  # self-RST budget per second when --rate is unlimited


# One in-flight target is a list, not an object: a list display costs ~0.1 µs, a slotted
# class with an __init__ ~1 µs, and a run makes one per target. Its fields, by index:
_TARGET = 0  # the Target
_KEY = 1  # (packed address, port, packed real server or b""): the table's key
_OUT = 2  # where the SYN is sent: the target's packed address, or the real server's (via)
_LANE = 3  # how `packet` leaves: a raw IP socket's family, or an interface (`lane_of`)
_SOURCE = 4  # our address as text, for the result
_ATTEMPT = 5  # SYNs sent so far (0 while waiting for the first)
_SENT = 6  # the clock when the attempt `_PAIR` names was sent; None until it is
_DONE = 7  # answered, failed or timed out: no longer in the table
_TWINS = 8  # None, or the same target given again while this one is in flight
# The latest attempt's cookie, seq << 16 | source port (`CookieKey.issue`); None until built:
# a reply to it acknowledges exactly that pair.
_PAIR = 9
_TRIES = 10  # None, or (pair, send time) of the earlier attempts: their answers count too
_LOCAL = 11  # our packed address: the template, and the cookie of each attempt
_ROUTE = 12  # the ViaRoute of a check through a real server, else None
Probe = list[Any]
"""A record holds no packet: each attempt's SYN is built when it is sent, with a cookie pair
issued then (so a retry is a new SYN, an answer says which attempt it answers, and its RTT runs
from that attempt's send). Built at admission, the SYN and its tuple cost 129 bytes for every
check in flight, a quarter of the record; built at the send, it costs nothing more, since each
attempt's SYN is built once either way."""

_PLAIN_LANES = {False: ("ip", False), True: ("ip", True)}

Deadline = list[Any]
"""One sent batch's timeout: [deadline, the batch's send time, its probes, how many of them
(from the front) are known settled]."""


Key = tuple[bytes, int, bytes]  # (packed address, port, packed real server or b"")
if TYPE_CHECKING:
    # A RST to send for a SYN-ACK: (local, remote, our port, its port, the SYN-ACK's ack, the
    # ViaRoute it came through or None)
    Rst = tuple[bytes, bytes, int, int, int | None, ViaRoute | None]


def _drop_unsent(queue: deque[Probe], table: dict[Key, Probe]) -> None:
    """Past a deadline: forget the probes whose first SYN has not left (retries stay)."""
    kept = [p for p in queue if p[_ATTEMPT] > 0 or p[_DONE]]
    for probe in queue:
        if probe[_ATTEMPT] == 0 and not probe[_DONE]:
            probe[_DONE] = True
            del table[probe[_KEY]]
    queue.clear()
    queue.extend(kept)


def _drop_settled(deadlines: deque[Deadline]) -> None:
    """Forget the leading deadlines with nothing left to time out: every probe of the batch
    answered, or sent again (a retry has a deadline of its own). The loop sleeps until the
    first deadline; when targets answer, nearly every batch's deadline is settled long before
    it comes, and waking for each was a third of the engine's wakeups in the watch service.
    Each probe is looked at once: the count of settled ones is kept in the entry."""
    while deadlines:
        entry = deadlines[0]
        sent, probes, i = entry[1], entry[2], entry[3]
        n = len(probes)
        while i < n and (probes[i][_DONE] or probes[i][_SENT] != sent):
            i += 1
        if i < n:
            entry[3] = i
            return
        deadlines.popleft()


class RawEngine:
    name = "raw"
    supports_via = True

    def __init__(
        self,
        options: ProbeOptions,
        *,
        socket_factory: SocketFactory = socket.socket,
        io_factory: Callable[..., PacketIO] = PacketIO,
        clock: Callable[[], float] = time.monotonic,
        key: bytes | None = None,
        ephemeral_ports: Callable[[], tuple[int, int] | None] | None = None,
        resolver: L2Resolver | None = None,
    ) -> None:
        settings = options.engine_options or RawOptions()
        if not isinstance(settings, RawOptions):
            raise UsageError(f"the raw engine takes RawOptions, not {type(settings).__name__}")
        settings.check_ephemeral((ephemeral_ports or local_port_range)())
        self.settings = settings
        self.rst, self._mark = settings.rst, options.mark
        self.options = options
        self._key = CookieKey(key, settings.port_lo, settings.port_hi)
        self._socket = socket_factory
        self._io_factory = io_factory
        self._clock = clock
        self._router = SourceRouter(options.source, self._mark, socket_factory,
                                    freebind=options.freebind)
        self._templates: dict[tuple[bytes, bool], PacketTemplate] = {}
        self._builders: dict[bytes, Callable[[bytes, int, int, int], bytes]] = {}  # SYNs
        self._counters = dict.fromkeys(STATS + VIA_STATS, 0)
        rate = 2 * options.rate if options.rate else UNLIMITED_RST_RATE
        # Each SYN earns one SYN-ACK; twice the SYN rate leaves room for retransmitted ones,
        # and the burst lets every probe in flight be answered at once.
        self._rst_bucket = Pacer(rate, max(64, options.concurrency), clock, full=True)
        self._resolver = resolver
        # The real servers each (VIP, port) was checked through, then b"": the salts a reply
        # may carry (kept after the checks end, so late answers are still recognised and
        # reset). Empty while no check names a real server: replies then match unsalted only.
        self._salts: dict[tuple[bytes, int], list[bytes]] = {}
        self._frames: FrameSender | None = None
        self._io: PacketIO | None = None  # opened early by preflight(), else by run()

    @functools.cached_property
    def _via(self) -> ViaPaths:
        """The ways to real servers, made on the first check through one: their modules
        (neighbour discovery, tunnels, frames) are ~2 ms of start-up a run without one skips."""
        from synprobe.engines.raw.via import ViaPaths

        return ViaPaths(self.settings.via_mode, self.options.source, self._mark,
                        lambda v6, dst: self._router.lookup(v6, dst, self._clock()),
                        self._resolver)

    def stats(self) -> dict[str, int]:
        return {k: v for k, v in self._counters.items() if k in STATS or self._salts}

    def close(self) -> None:
        self._router.close()
        if self._frames is not None:
            self._frames.close()
        if self._io is not None:  # preflight() opened it and no run() took it
            self._io.close()
            self._io = None

    def describe(self, target: Target, *, as_json: bool = False) -> str:
        """The SYN a check of `target` would send, tcpdump-style (for --dry-run) or as a JSON
        object (--dry-run --json). Opens no raw socket: the source comes from --source or a
        route lookup, which sends nothing."""
        from synprobe.wire.describe import describe, dry_run_json  # here: dry runs only

        o = self.options
        plan = functools.partial(dry_run_json, self.name, target, timeout=o.timeout,
                                 attempts=o.retries + 1)
        v6 = ":" in target.host
        dst = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, target.host)
        if target.via is not None:
            unresolved = _via_api()[2]
            try:
                route = self._via.route(target.via, v6, ask=False)
            except unresolved as exc:
                if as_json:
                    return plan(path=f"{exc}; a run would ask by {exc.how}")
                return f"{target}: {exc}; a run would ask by {exc.how}"
            seq, sport = self._key.derive(route.source, dst, target.port, route.via)
            syn = self._template(route.source, v6, False).build(dst, sport, target.port, seq)
            if as_json:
                return plan(packet=syn, path=route.describe())
            return f"{describe(syn)}, {route.describe()}"
        found = self._router.lookup(v6, dst, self._clock())
        if isinstance(found, int):
            if as_json:
                return plan(source=o.source, error=classify_errno(found)[1])
            return f"{target}: not sent, {classify_errno(found)[1]}"
        seq, sport = self._key.derive(found[0], dst, target.port)
        syn = self._template(found[0], v6, False).build(dst, sport, target.port, seq)
        return plan(packet=syn) if as_json else describe(syn)

    def _template(self, source: bytes, v6: bool, rst: bool) -> PacketTemplate:
        """Templates are built (with scapy, ~ms; then cached on disk, see templates) once per
        source address and kind."""
        tmpl = self._templates.get((source, rst))
        if tmpl is None:
            text = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, source)
            tmpl = load_template(text, rst)
            self._templates[source, rst] = tmpl
        return tmpl

    def _open_io(self) -> PacketIO:
        try:
            return self._io_factory(self._key.port_lo, self._key.port_hi, self._mark,
                                    socket_factory=self._socket)
        except PermissionError as exc:
            raise self._unavailable(exc) from None
        except OSError as exc:
            raise EngineUnavailable(f"the raw engine cannot open its sockets: "
                                    f"{exc.strerror or exc}") from None

    def _unavailable(self, exc: OSError) -> EngineUnavailable:
        caps = "CAP_NET_RAW" if self._mark is None else "CAP_NET_RAW and CAP_NET_ADMIN"
        return require_capability(self.name, f"{caps} to open raw and packet sockets", exc,
                                  ", or use the shaker engine")

    def remember_targets(self) -> None:
        """For a long-lived engine that checks the same targets again and again (a Prober, a
        LoopProber): keep each target's cookie hash instead of computing it per SYN and per
        reply (bounded: see cookie.MEMO_LIMIT)."""
        self._key.remember()

    def preflight(self, vias: Sequence[str] = (), families: Iterable[bool] = ()) -> None:
        """Fail now, before anything is sent or printed, with what would fail the run: the
        capability (the sockets are opened here and kept for run()), and real servers that
        cannot serve VIPs of the given families (v6 True/False)."""
        with os_errors(self.name):
            if self._io is None:
                self._io = self._open_io()
            if vias:
                unresolved = _via_api()[2]
            for via in vias:
                for v6 in families:
                    try:
                        self._via.route(via, v6, ask=False)
                    except unresolved:
                        pass  # asked for during the run; a silent real server is a result
                    except PermissionError as exc:
                        raise self._unavailable(exc) from None

    def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
        """The engine's loop on the calling thread: turns of `open_run()`, blocking in between
        until the receiver or the source's wakeup fd is readable, or the next deadline."""
        with os_errors(self.name):
            run = self.open_run(source)
            try:
                poller = select.epoll()
                try:
                    poller.register(run.fd, select.EPOLLIN)
                    if source.wakeup_fd is not None:
                        # Edge-triggered: while the table is full the loop does not pull, and a
                        # level-triggered eventfd would then wake it again and again for nothing.
                        poller.register(source.wakeup_fd, select.EPOLLIN | select.EPOLLET)
                    readable = False
                    while True:
                        done, wait = run.turn(readable)
                        if done:
                            yield done
                        if wait is None:
                            return
                        if wait < 0 and source.wakeup_fd is None:
                            wait = NO_FD_POLL  # a source that cannot wake us is looked at
                        readable = False
                        for fd, _ in poller.poll(wait, 4):
                            readable = readable or fd == run.fd
                finally:
                    poller.close()
            finally:
                run.close()

    def open_run(self, source: TargetSource) -> RawRun:
        """A run of the engine to drive one turn at a time (`RawRun`); `run()` is one
        driver, `synprobe.loop_prober.LoopProber` (an asyncio loop) the other."""
        with os_errors(self.name):
            io, self._io = self._io or self._open_io(), None
        return RawRun(self, source, io)

    def _admit(self, targets: list[Target], table: dict[Key, Probe],
               queue: deque[Probe], done: list[ProbeResult]) -> None:
        pton, lookup = socket.inet_pton, self._router.lookup
        inet, inet6 = socket.AF_INET, socket.AF_INET6
        now = self._clock()  # one clock for the router's cache
        # The router's answers per prefix, read here without a call per target (~0.15 µs);
        # a prefix not in it yet goes through lookup().
        routes = self._router.routes(now)
        for target in targets:
            host, port, via = target
            v6 = ":" in host
            try:
                dst = pton(inet6 if v6 else inet, host)
            except OSError:
                done.append(ProbeResult(host, port, State.ERROR, "bad-address", None, 0,
                                        self.name, self.options.source, via))
                continue
            if via is not None:
                self._admit_via(target, dst, v6, table, queue, done)
                continue
            key = (dst, port, b"")
            twin = table.get(key)
            if twin is not None:  # one SYN answers both: replies cannot tell them apart
                if twin[_TWINS] is None:
                    twin[_TWINS] = [target]
                else:
                    twin[_TWINS].append(target)
                continue
            found = routes.get(dst[:8] if v6 else dst[:3]) or lookup(v6, dst, now)
            if found.__class__ is int:  # refused before anything left, as shaker's connect() is
                state, reason = classify_errno(found)
                done.append(ProbeResult(host, port, state, reason, None, 1, self.name,
                                        self.options.source))
                continue
            local, text = found
            probe = [target, key, dst, _PLAIN_LANES[v6], text, 0, None, False, None, None, None,
                     local, None]
            table[key] = probe
            queue.append(probe)

    def _admit_via(self, target: Target, dst: bytes, v6: bool, table: dict[Key, Probe],
                   queue: deque[Probe], done: list[ProbeResult]) -> None:
        """A check of `target` through real server `target.via` (see via.py). A via that
        cannot work (not on-link in l2 mode, wrong family) is an error result for the check."""
        lane_of, unresolved_reason, unresolved = _via_api()
        assert target.via is not None
        try:
            route = self._via.route(target.via, v6)
        except unresolved as exc:  # the real server is down or not on that link
            done.append(ProbeResult(target.host, target.port, State.UNREACHABLE,
                                    unresolved_reason(exc), None, 1, self.name,
                                    self.options.source, target.via))
            return
        except UsageError:  # e.g. not on-link: this check's error, not the run's (preflight()
            # reports it, with the reason, before a CLI run starts)
            self._counters["send_errors"] += 1
            done.append(ProbeResult(target.host, target.port, State.ERROR, "via-unusable", None,
                                    0, self.name, self.options.source, target.via))
            return
        except PermissionError as exc:  # the ARP/ND packet socket
            raise self._unavailable(exc) from None
        except OSError as exc:  # netlink or the link itself failing: not a verdict on the RS
            raise EngineUnavailable(f"cannot find the way to real server {target.via}: "
                                    f"{exc.strerror or exc}") from None
        key = (dst, target.port, route.via)
        twin = table.get(key)
        if twin is not None:
            if twin[_TWINS] is None:
                twin[_TWINS] = []
            twin[_TWINS].append(target)
            return
        lane, out = lane_of(route, v6, dst)
        probe = [target, key, out, lane, route.source_text, 0, None, False, None, None, None,
                 route.source, route]
        table[key] = probe
        salts = self._salts.setdefault((dst, target.port), [b""])
        if route.via not in salts:
            salts.insert(-1, route.via)
        queue.append(probe)

    def _reissue(self, probe: Probe) -> None:
        """Before the next attempt: the last one's pair and send time join the earlier
        attempts' (their late answers still count); the retry gets its own when it is sent."""
        if probe[_TRIES] is None:
            probe[_TRIES] = []
        probe[_TRIES].append((probe[_PAIR], probe[_SENT]))
        probe[_SENT] = probe[_PAIR] = None  # until the new attempt leaves

    def _syns(self, probes: list[Probe]) -> list[tuple[bytes, bytes]]:
        """Each probe's next SYN, with a cookie serial issued now (a port/seq pair no earlier
        attempt to its target used), as (packet, where it is sent) batch entries."""
        issue, builders, batch = self._key.issue, self._builders, []
        for probe in probes:
            dst, port, salt = probe[_KEY]
            local = probe[_LOCAL]
            build = builders.get(local)
            if build is None:
                build = builders[local] = self._template(local, len(dst) == 16, False).build
            seq, sport, _ = issue(local, dst, port, salt)
            probe[_PAIR] = seq << 16 | sport
            syn = build(dst, sport, port, seq)
            route = probe[_ROUTE]
            batch.append((syn if route is None else route.wrap(syn), probe[_OUT]))
        return batch

    def _salts_for(self, remote: bytes, rport: int, lport: int) -> Iterable[bytes]:
        return self._salts.get((remote, rport), (b"",))

    def _send(self, io: PacketIO, granted: int, queue: deque[Probe], table: dict[Key, Probe],
              deadlines: deque[Deadline],
              done: list[ProbeResult]) -> None:
        lanes: dict[Lane, list[Probe]] = {}
        popleft = queue.popleft
        while granted > 0 and queue:
            probe = popleft()
            if not probe[_DONE]:  # answered (late) while it waited for its retry
                group = lanes.get(probe[_LANE])
                if group is None:
                    group = lanes[probe[_LANE]] = []
                group.append(probe)
                granted -= 1
        counters, timeout = self._counters, self.options.timeout
        for lane, probes in lanes.items():
            batch = self._syns(probes)
            # The RTT runs from before the call: on veth the answer is processed inside it.
            now = self._clock()
            failed = self._emit(io, lane, batch)
            counters["sent"] += len(probes) - len(failed)
            counters["send_errors"] += len(failed)
            for probe in probes:
                probe[_ATTEMPT] += 1
                probe[_SENT] = now
            # A local drop (TRANSIENT_ERRNOS) is a lost attempt: its deadline stays.
            deadlines.append([now + timeout, now, probes, 0])
            for i, err in failed:
                if err not in TRANSIENT_ERRNOS:  # refused locally: no route, a firewall's EPERM
                    probe = probes[i]
                    del table[probe[_KEY]]
                    probe[_DONE] = True
                    state, reason = classify_errno(err)
                    self._finish(probe, state, reason, None, done)

    def _emit(self, io: PacketIO, lane: Lane,
              batch: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """Send (packet, destination) pairs on one lane; (index, errno) of the failures."""
        kind, where = lane
        if kind == "ip":
            return io.send(bool(where), batch)
        if self._frames is None:
            from synprobe.kernel.frames import FrameSender

            self._frames = FrameSender(self._socket)
        try:  # the packet socket of an interface is opened on its first frame
            return self._frames.send(str(where), [packet for packet, _ in batch])
        except PermissionError as exc:
            raise self._unavailable(exc) from None

    def _receive(self, io: PacketIO, table: dict[Key, Probe],
                 done: list[ProbeResult]) -> None:
        if self._salts:  # checks through real servers: salted cookies, and the sender's MAC
            self._receive_via(io, table, done)
            return
        key, self_rst, take = self._key, self.rst == "self", self._rst_bucket.take
        lo, hi = key.port_lo, key.port_hi
        name, results = self.name, done.append
        packets = io.receive(RECV_BATCH)
        now = self._clock()  # for the batch: it was queued by now
        stamps = getattr(io, "stamps", None) if self._clock is time.monotonic else None
        if not stamps or len(stamps) != len(packets):
            stamps = [now] * len(packets)
        rsts: list[Rst] = []
        replies = invalid = duplicates = suppressed = 0
        for packet, received in zip(packets, stamps, strict=True):
            heard = read_reply(packet, lo, hi)
            if heard is None:
                continue  # not reply-shaped (the BPF filter lets little else through)
            if heard.__class__ is Invalid:
                invalid += 1
                continue
            state, reason, remote, rport, lport, seq, ack, local, tunnel = heard
            pair = seq << 16 | lport
            probe = table.get((remote, rport, b""))
            if probe is not None and probe[_PAIR] == pair and probe[_LOCAL] == local \
                    and tunnel is None:
                sent = probe[_SENT]  # the latest attempt's own pair: nearly always
            else:  # anything else proves itself against the key
                verdict = check_cookie(heard, key)
                if verdict.__class__ is Invalid:
                    invalid += 1
                    continue
                sent = _sent_by(probe, pair, local)
            if state is None:
                continue  # valid, but about packet size: no verdict (wire.icmp)
            replies += 1
            if self_rst and state is State.OPEN:
                if take():
                    rsts.append((local, remote, lport, rport, ack, None))
                else:
                    suppressed += 1
            if sent is None:
                duplicates += 1  # answered already, an earlier check's reply, or a replay
                continue
            del table[probe[_KEY]]
            probe[_DONE] = True
            # A stamp of 0.0 (none), or one older than the send read (the answer came inside
            # the sendmmsg call, on veth), falls back to the batch's time.
            rtt = (received if received > sent else now) - sent
            if probe[_TWINS] is None:
                t = probe[_TARGET]
                results(new_result(t.host, t.port, state, reason, rtt,
                                   probe[_ATTEMPT], name, probe[_SOURCE], t.via))
            else:
                self._finish(probe, state, reason, rtt, done)
        counters = self._counters
        counters["replies"] += replies
        counters["invalid"] += invalid
        counters["duplicates"] += duplicates
        counters["rsts_suppressed"] += suppressed
        if rsts:
            self._send_rsts(io, rsts)

    def _receive_via(self, io: PacketIO, table: dict[Key, Probe],
                     done: list[ProbeResult]) -> None:
        counters, key, clock = self._counters, self._key, self._clock
        rsts: list[Rst] = []
        for packet, mac in io.receive_from(RECV_BATCH):
            heard = read_reply(packet, key.port_lo, key.port_hi)
            if heard is None:
                continue
            reply = heard if heard.__class__ is Invalid else \
                check_cookie(heard, key, self._salts_for)
            if reply is None:
                continue
            if isinstance(reply, Invalid):
                counters["invalid"] += 1
                continue
            counters["replies"] += 1
            route = self._via.known(reply.salt) if reply.salt else None
            if route is not None and route.mac is not None and mac is not None \
                    and mac != route.mac:
                counters["via_mac_mismatch"] += 1  # answered through a router? (cookie holds)
            # Through a real server the engine always resets: see via.py.
            if reply.state is State.OPEN and (self.rst == "self" or route is not None):
                if self._rst_bucket.take():
                    rsts.append((reply.local, reply.remote, reply.sport, reply.port, reply.ack,
                                 route))
                else:
                    counters["rsts_suppressed"] += 1
            pair = heard.seq << 16 | reply.sport
            probe = table.get((reply.remote, reply.port, reply.salt))
            sent = _sent_by(probe, pair, reply.local)
            if sent is None:
                counters["duplicates"] += 1  # answered already, or an earlier check's reply
                continue
            del table[probe[_KEY]]
            probe[_DONE] = True
            self._finish(probe, reply.state, reply.reason, clock() - sent, done)
        if rsts:
            self._send_rsts(io, rsts)

    def _send_rsts(self, io: PacketIO, rsts: list[Rst]) -> None:
        """RSTs the way each SYN went: plainly, in a frame to the real server, or tunnelled."""
        lanes: dict[Lane, list[tuple[bytes, bytes]]] = {}
        for local, remote, sport, port, ack, route in rsts:
            v6 = len(remote) == 16
            rst = self._template(local, v6, True).build(remote, sport, port, ack or 0)
            if route is None:
                lane, out = _PLAIN_LANES[v6], remote
            else:  # a check through a real server
                lane, out = _via_api()[0](route, v6, remote)
            lanes.setdefault(lane, []).append((rst if route is None else route.wrap(rst), out))
        for lane, batch in lanes.items():
            failed = len(self._emit(io, lane, batch))
            self._counters["self_rsts"] += len(batch) - failed
            self._counters["send_errors"] += failed

    def _finish(self, probe: Probe, state: State, reason: str, rtt: float | None,
                done: list[ProbeResult]) -> None:
        for t in (probe[_TARGET], *(probe[_TWINS] or ())):
            done.append(new_result(t.host, t.port, state, reason, rtt, probe[_ATTEMPT],
                                   self.name, probe[_SOURCE], t.via))


class RawRun:
    """One run of the raw engine as turns: the engine's loop without its waiting, so a thread
    (`RawEngine.run`) or an event loop (`LoopProber`) can drive it.

    `turn(readable)` reads the replies queued on `fd` (when the driver saw it readable),
    retries or fails what timed out, then starts and sends what the source and the pacer
    allow. It returns that turn's results and how long the driver may wait before the next
    turn: until `fd` is readable, the source has more (its wakeup fd, or a new submit), or
    `wait` seconds pass (-1: no timeout; None: the run is over, `close()` it).
    """

    def __init__(self, engine: RawEngine, source: TargetSource, io: PacketIO) -> None:
        self.engine = engine
        self.source = source
        self.io = io
        self.fd = io.recv_fd
        self.pacer = Pacer(engine.options.rate, clock=engine._clock)
        self.table: dict[Key, Probe] = {}
        self.queue: deque[Probe] = deque()  # first attempts and retries waiting for the pacer
        # One timeout for every attempt: deadlines come due in send order, so a FIFO is a
        # timer queue. An entry is one sent batch (see `Deadline`); probes answered since, or
        # sent again (a later `_SENT`), are skipped.
        self.deadlines: deque[Deadline] = deque()
        self.exhausted = False
        self._admission = getattr(source, "admission", always_go)
        # A source whose every put runs a turn itself (LoopProber's) needs no second look.
        self._ask_again = not getattr(source, "puts_turn", False)
        self._closed = False

    def turn(self, readable: bool) -> tuple[list[ProbeResult], float | None]:
        engine, io, table, queue = self.engine, self.io, self.table, self.queue
        deadlines, clock = self.deadlines, engine._clock
        counters, opts = engine._counters, engine.options
        done: list[ProbeResult] = []
        if readable:
            engine._receive(io, table, done)
            counters["kernel_drops"] += io.kernel_drops()
        now = clock()
        retry: list[Probe] = []
        while deadlines and deadlines[0][0] <= now:
            _, sent, probes, _ = deadlines.popleft()
            for probe in probes:
                if probe[_DONE] or probe[_SENT] != sent:
                    continue
                if probe[_ATTEMPT] <= opts.retries:  # a blind retry, with a new cookie
                    counters["retries"] += 1
                    engine._reissue(probe)
                    retry.append(probe)
                else:
                    del table[probe[_KEY]]
                    probe[_DONE] = True
                    engine._finish(probe, State.FILTERED, "timeout", None, done)
        queue.extendleft(reversed(retry))  # older than any first attempt
        halt = self._admission()
        if halt == ABORT:
            return done, None  # stopped by a signal: replies to SYNs out are the kernel's
        if halt == NO_NEW and queue:  # a deadline: SYNs not yet sent never are
            _drop_unsent(queue, table)
        more = False  # the source gave all that was asked: it may have more right now
        took = False
        if not self.exhausted and len(table) < opts.concurrency and len(queue) < SEND_BURST:
            asked = min(opts.concurrency - len(table), SEND_BURST - len(queue))
            pulled = self.source.pull(asked)
            if pulled is None:
                self.exhausted = True
            elif pulled:
                took = True
                more = len(pulled) == asked
                engine._admit(pulled, table, queue, done)
        if queue:
            granted = self.pacer.allowance(min(len(queue), SEND_BURST))
            if granted:
                engine._send(io, granted, queue, table, deadlines, done)
                # Read what answered during the send (on veth, all of it) now, not after one
                # more wakeup: HAProxy too tries its I/O before polling for it. Nothing queued
                # costs one recvmmsg(2) returning EAGAIN.
                engine._receive(io, table, done)
        # Before any return below: a run whose targets all answer returns early every turn,
        # and kept every sent batch (its probes, their targets) until its deadline or the end.
        _drop_settled(deadlines)
        if self.exhausted and not table:
            return done, None
        if more and len(table) < opts.concurrency and len(queue) < SEND_BURST:
            return done, 0.0  # room, and targets for the next burst
        if took and not table and self._ask_again:
            # Everything taken was answered within the turn, so no reply or deadline will wake
            # the driver, and only the source knows whether it is done (an iterable ends with
            # a short batch, then None): ask it again rather than sleep on it.
            return done, 0.0
        return done, self.pacer.poll_wait(deadlines[0][0] if deadlines else None, clock(),
                                          bool(queue))

    def close(self) -> None:
        """Close the sockets (a SYN-ACK still to come is then the kernel's to reset)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.engine._counters["kernel_drops"] += self.io.kernel_drops()
        finally:
            self.io.close()
            self.engine._router.close()


def _sent_by(probe: Probe | None, pair: int, local: bytes) -> float | None:
    """When the attempt of the check in flight whose cookie was `pair`, sent from `local`,
    left; None if no attempt of it had them (answered already, an earlier check's answer, or
    a replay). The plain receive path compares the latest attempt inline before calling."""
    if probe is None or probe[_LOCAL] != local:
        return None
    if probe[_PAIR] == pair:
        return probe[_SENT]
    for tried, sent in probe[_TRIES] or ():
        if tried == pair:
            return sent
    return None
