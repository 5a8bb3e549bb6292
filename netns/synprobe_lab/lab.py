"""`Lab`: a client and a server network namespace joined by a veth pair, with known answers.

What the client namespace sees (`lab.v4` / `lab.v6` hold the addresses, see `LabFamily`):

==============================  ==========================================================
target                          answer
==============================  ==========================================================
server / any AnyIP addr, 80     SYN-ACK; the listener counts each accept()
same, 81 (CLOSED_PORT)          RST (nothing listens)
same, 82 (FILTERED_PORT)        nothing (nft drop)
same, 83 (REJECT_PORT)          ICMP host-unreachable (v4 3/1), address-unreachable (v6 1/3)
`unreachable`, any port         ICMP host-unreachable (v4 3/1), no-route (v6 1/0), unlimited
`unreachable_route`, any port   same codes from a real `unreachable` route; v4 rate-limited
==============================  ==========================================================

The server has no ICMP rate limits, 65535-deep queues, and optional random TCP loss
(`set_loss`). Everything the lab creates is removed by `down()`, which also runs when `up()`
fails halfway, and which raises LabError if anything survived.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from . import kstate, topology
from .capture import Capture
from .listener_ctl import ListenerProcess
from .loss import apply_loss, loss_drops
from .nsutil import (
    DEFAULT_PREFIX,
    LabError,
    delete_netns,
    end_processes,
    exec_argv,
    ip_batch,
    lab_names,
    list_netns,
    netns_executor,
    netns_ino,
    netns_pids,
    run,
    run_in_netns,
    set_sysctls,
)
from .topology import CLOSED_PORT, FILTERED_PORT, OPEN_PORT, REJECT_PORT, V4, V6, LabFamily

T = TypeVar("T")


class Lab:
    """Two namespaces (`client`, `server`), the listener, and helpers to act inside them.

    Use as a context manager (`with Lab() as lab:`) or call `up()`/`down()`. Every method that
    takes `ns` accepts the namespace name or the aliases "client"/"server", and refuses any other
    namespace, so lab helpers can never act on the host.
    """

    OPEN_PORT = OPEN_PORT
    CLOSED_PORT = CLOSED_PORT
    FILTERED_PORT = FILTERED_PORT
    REJECT_PORT = REJECT_PORT
    v4: LabFamily = V4
    v6: LabFamily = V6
    families: tuple[LabFamily, ...] = (V4, V6)
    client_if = topology.CLIENT_IF
    server_if = topology.SERVER_IF

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        listener: bool = True,
        close_mode: str = "wait",
        open_ports: tuple[int, ...] = (OPEN_PORT,),
        backlog: int = 65535,
        loss_percent: float = 0.0,
    ) -> None:
        """Name the lab; nothing is created before `up()`.

        listener: start the accept-counting listener in the server (on `open_ports`).
        close_mode: what the listener does with an accepted connection: "wait" for the peer to
          close (client ends in TIME_WAIT after a normal close), "rst" (SO_LINGER 0), "fin".
        loss_percent: initial random TCP loss each way, see `set_loss`.
        """
        self.client, self.server = lab_names(prefix)
        self.listener: ListenerProcess | None = None
        self.loss_percent = 0.0
        self._want_listener = listener
        self._close_mode = close_mode
        self._open_ports = open_ports
        self._backlog = backlog
        self._initial_loss = loss_percent
        self._popens: list[subprocess.Popen[Any]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._captures: list[Capture] = []

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build everything; on any failure tear down what exists and re-raise."""
        try:
            ip_batch(topology.host_batch(self.client, self.server))
            set_sysctls(self.client, topology.client_sysctls())
            set_sysctls(self.server, topology.server_sysctls())
            ip_batch(topology.client_batch(), ns=self.client)
            ip_batch(topology.server_batch(), ns=self.server)
            run(exec_argv(self.server, ["nft", "-f", "-"]), input=topology.server_ruleset())
            if self._initial_loss:
                self.set_loss(self._initial_loss)
            if self._want_listener:
                self.listener = ListenerProcess(
                    self.server, self._open_ports, backlog=self._backlog, close=self._close_mode
                )
        except BaseException as exc:
            try:
                self.down()
            except LabError as cleanup:  # keep the setup error primary, but say what leaked
                exc.add_note(str(cleanup))
            raise

    def down(self) -> None:
        """Remove everything the lab made; raise LabError if anything is left behind.

        Order matters: our sockets, threads and processes keep a namespace alive, so they go
        first (processes by PID), then the namespaces, whose deletion also removes the veth.
        """
        problems: list[str] = []
        for cap in self._captures:
            cap.close()
        for sock in list(self._sockets):
            sock.close()
        for pool in self._executors:
            pool.shutdown(wait=False, cancel_futures=True)
        end_processes(self._popens)
        if self.listener is not None:
            self.listener.stop()
            if self.listener.proc.returncode is None:
                problems.append(f"listener pid {self.listener.pid} did not exit")
        existing = set(list_netns())
        for ns in (self.client, self.server):
            if ns not in existing:
                continue
            if pids := netns_pids(ns):
                problems.append(f"processes {pids} still in {ns}")
            try:
                delete_netns(ns)
            except LabError as exc:
                problems.append(str(exc))
        if leaked := {self.client, self.server} & set(list_netns()):
            problems.append(f"namespaces not deleted: {sorted(leaked)}")
        if problems:
            raise LabError("lab teardown: " + "; ".join(problems))

    # -- namespaces --------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        """Resolve "client"/"server" or one of our namespace names; refuse anything else."""
        resolved = {"client": self.client, "server": self.server}.get(name, name)
        if resolved not in (self.client, self.server):
            raise ValueError(f"{name!r} is not a namespace of this lab")
        return resolved

    def ifname(self, ns: str) -> str:
        """The veth end inside `ns`."""
        return self.client_if if self.ns(ns) == self.client else self.server_if

    def netns_ino(self, ns: str) -> int:
        """Inode of the namespace; equals `nsutil.current_netns_ino()` in a thread inside it."""
        return netns_ino(self.ns(ns))

    def run_in(self, ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` in a fresh thread inside `ns`; return its result or raise
        its exception. Threads that `fn` starts are inside `ns` too."""
        return run_in_netns(self.ns(ns), fn, *args, **kwargs)

    def executor(self, ns: str, max_workers: int = 1) -> ThreadPoolExecutor:
        """A thread pool whose workers live in `ns` (for work concurrent with the test thread).
        Shut down (without waiting) at teardown."""
        pool = netns_executor(self.ns(ns), max_workers)
        self._executors.append(pool)
        return pool

    def socket_in(self, ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                  proto: int = 0) -> socket.socket:
        """A socket created inside `ns`, usable from any thread. Closed at teardown if open."""
        sock = self.run_in(ns, socket.socket, family, type, proto)
        self._sockets.add(sock)
        return sock

    def exec(self, ns: str, argv: Sequence[str], *, check: bool = True, input: str | None = None,
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run argv inside `ns` via `ip netns exec`, text output captured. With check, a
        non-zero exit raises LabError carrying stderr."""
        return run(exec_argv(self.ns(ns), argv), input=input, check=check, timeout=timeout)

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside `ns` (kwargs go to Popen). Terminated by PID at teardown."""
        proc = subprocess.Popen(exec_argv(self.ns(ns), argv), **kwargs)
        self._popens.append(proc)
        return proc

    # -- listener ----------------------------------------------------------------------------

    def _listener(self) -> ListenerProcess:
        if self.listener is None:
            raise LabError("this lab was built without a listener")
        return self.listener

    def accept_count(self) -> int:
        """Connections the listener has accepted since it started (all ports, v4 + v6).

        Exact for every connection that reached the accept queue before the call. A client's
        connect() can return just before the server has the final ACK, so after connecting,
        use `wait_for(lambda: lab.accept_count() == n)`.
        """
        return self._listener().accept_count()

    def accept_stats(self) -> dict[str, Any]:
        """{"accepted": int, "held": open accepted connections, "by_addr": {local addr: n}}."""
        return self._listener().stats()

    @property
    def listener_pid(self) -> int | None:
        return None if self.listener is None else self.listener.pid

    # -- loss --------------------------------------------------------------------------------

    def set_loss(self, percent: float) -> None:
        """Drop TCP at random on the server's veth: each packet in, and each packet out, is
        dropped independently with probability percent/100 (0.1 % resolution; 0 disables).

        So a SYN is answered with probability (1 - p)**2. The drop happens in nftables after
        the AF_PACKET taps on receive, so a server-side capture still sees dropped inbound
        packets; a client-side capture sees exactly what survived in each direction.
        """
        apply_loss(self.server, percent)
        self.loss_percent = percent

    def loss_drops(self) -> dict[str, int]:
        """Packets dropped by `set_loss` so far: {"rx": into the server, "tx": out of it}."""
        return loss_drops(self.server)

    # -- kernel state and waiting -------------------------------------------------------------

    def count_states(self, ns: str, state: str | Sequence[str], port: int | None = None) -> int:
        """TCP sockets in ss state `state` ("time-wait", "syn-recv", ...; or any of several,
        counted in one walk) in `ns`."""
        return kstate.count_states(self.ns(ns), state, port)

    def listen_queue(self, ns: str = "server", port: int = OPEN_PORT) -> int:
        """Accept-queue length (Recv-Q of the LISTEN sockets on `port`, v4 + v6)."""
        return kstate.listen_queue(self.ns(ns), port)

    def nstat(self, ns: str) -> dict[str, int]:
        """Absolute kernel SNMP counters of `ns`, e.g. ["TcpExtListenOverflows"]."""
        return kstate.nstat(self.ns(ns))

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.005,
                 what: str | None = None) -> T:
        """Poll `predicate` until truthy (returned) or TimeoutError. See `kstate.wait_for`."""
        return kstate.wait_for(predicate, timeout, interval, what)

    # -- capture and probing -------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self, ns: str = "client", ifname: str | None = None,
                bufsize: int = 64 << 20) -> Iterator[Capture]:
        """Capture every frame of `ifname` (default: the veth end of `ns`) from entry on.

        The AF_PACKET socket is bound before the body runs, so nothing the body sends can be
        missed. Read results with `cap.packets()` / `cap.flows()`, inside or after the block.
        """
        name = self.ns(ns)
        sock = run_in_netns(name, Capture.open_socket, ifname or self.ifname(name), bufsize)
        cap = Capture(sock, name, ifname or self.ifname(name))
        self._captures.append(cap)
        try:
            yield cap
        finally:
            cap.close()

    def connect_result(self, host: str, port: int, timeout: float = 1.0,
                       ns: str = "client") -> str:
        """Plain blocking connect() from `ns`: "ok", "timeout", or the errno name.

        On success the socket is closed normally (so the client keeps a TIME_WAIT), after the
        connection was established, i.e. it is counted by the listener.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def attempt() -> str:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect((host, port))
                except TimeoutError:
                    return "timeout"
                except OSError as exc:
                    return errno.errorcode.get(exc.errno or 0, str(exc))
                return "ok"

        return self.run_in(ns, attempt)
