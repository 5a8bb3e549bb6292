"""`DsrLab`: a direct-routing (DSR) load-balancer segment: a prober and two real servers on one
bridge, every real server holding the VIP on its loopback with ARP for it suppressed.

Layout (four namespaces; the bridge has a namespace of its own, so nothing is on the host)::

    prober ns                    switch ns                    rs1 ns / rs2 ns
    dsr0 198.18.1.1/24   <-->  sw-p ┐                ┌ sw-1 <--> eth0 198.18.1.11/24 (.12 on rs2)
         fd00:d5::1/64               br0 (no address)                fd00:d5::11/64 (::12)
                                            └ sw-2 <--> ...    lo  198.18.2.100/32 (the VIP)
                                                                   fd00:d5:2::100/128
                                                               ipip0 <-> ipip0-tx (tunnel end)

What answers (rs1 runs the accept-counting listener on port 80, rs2 runs nothing):

- A SYN to VIP:80 in a frame to rs1's MAC: SYN-ACK from the VIP. To rs2's MAC: RST from the VIP.
- The same SYN wrapped in IP-in-IP to rs1's / rs2's address (tunnel mode): the same answers,
  sent directly, not through the tunnel.
- ARP for the VIP: nobody answers (arp_ignore=1: only for addresses on the asking interface;
  arp_announce=2: the real servers' own ARP requests use their eth0 address, never the VIP).
  Neighbour discovery for the IPv6 VIP: nobody answers either (Linux answers a solicitation
  only for addresses of the receiving interface).

Choices, and why:

- The prober has no route to the VIP at all, and strict rp_filter (1), the common distribution
  default: an answer from the VIP then fails the reverse-path check and the prober's kernel drops
  it in IP input, without a RST. AF_PACKET taps run before IP input, so a packet socket still
  sees it. So the engine, not the kernel, must reset every SYN-ACK, and it must send that RST
  the way its SYN went (to the same real server), since the prober's routing table cannot know
  which real server answered. Tests change these settings with `lab.sysctls()` / `lab.ip()`.
- Real servers: rp_filter 1 on eth0 (the prober is on-link, the check passes), 0 on the tunnel
  device and in `all` (a decapsulated packet's source is reached through eth0, not the tunnel;
  the effective value is max(all, device)), no forwarding.
- Tunnel ends are a userspace decapsulator (`decap.py`) feeding a veth pair, by default, because
  the kernel the lab was written on has no ipip module; the real servers' nftables drop
  protocols 4 and 41 so no kernel answers them with ICMP. `tunnel="kernel"` uses `tunl0` instead
  (LVS's own recipe), where the kernel has it (`kernel_ipip_available()`).
- Neighbour entries are static both ways (clean captures, no ARP in them) unless
  `static_neigh=False`; `forget_neigh()` removes the prober's entry for one address.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import kstate
from .capture import Capture
from .dsr_topology import (
    OPEN_PORT,
    PROBER_IF,
    PROBER_IP,
    PROBER_IP6,
    PROBER_MAC,
    RS_IF,
    RS_IPS,
    RS_MACS,
    TUNNEL_PEER_MAC,
    USER_TUNNEL_TX,
    VIP,
    VIP6,
    dsr_names,
    host_batch,
    prober_batch,
    prober_sysctls,
    rs_batch,
    rs_ruleset,
    rs_sysctls,
    switch_batch,
    switch_sysctls,
)
from .frames import FrameCapture
from .listener_ctl import ListenerProcess
from .nsutil import (
    DEFAULT_PREFIX,
    LabError,
    delete_netns,
    down_all,
    end_processes,
    exec_argv,
    ip_batch,
    list_netns,
    netns_pids,
    run,
    run_in_netns,
    set_sysctls,
)

T = TypeVar("T")
C = TypeVar("C", bound=Capture)
DECAP_SCRIPT = Path(__file__).with_name("decap.py")


def dsr_down_all(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete DSR lab namespaces whose creating PID is dead (as `lab_down_all` does for `Lab`);
    return the names removed. A namespace whose creator still runs is left alone."""
    return down_all(prefix, "dsw|dpr|dr1|dr2")


def kernel_ipip_available(ns: str) -> bool:
    """Whether the kernel can make an ipip device (tried in `ns`, one of ours, then removed)."""
    probe = run(["ip", "-n", ns, "link", "add", "sp-ipip-probe", "type", "ipip"], check=False)
    if probe.returncode != 0:
        return False
    run(["ip", "-n", ns, "link", "del", "sp-ipip-probe"], check=False)
    return True


class DsrLab:
    """Four namespaces (`switch`, `prober`, `rs1`, `rs2`), rs1's listener, the tunnel ends.

    `with DsrLab() as lab:` or `up()`/`down()`. Methods taking `ns` accept a role name or one of
    our namespace names, and refuse anything else, so they never act on the host.
    """

    vip, vip6 = VIP, VIP6
    prober_ip, prober_ip6 = PROBER_IP, PROBER_IP6
    prober_if, rs_if = PROBER_IF, RS_IF
    prober_mac = PROBER_MAC
    open_port = OPEN_PORT

    def __init__(self, *, prefix: str = DEFAULT_PREFIX, tunnel: str = "user",
                 static_neigh: bool = True) -> None:
        if tunnel not in ("user", "kernel"):
            raise ValueError(f"tunnel must be 'user' or 'kernel', got {tunnel!r}")
        self.names = dsr_names(prefix)
        self.tunnel = tunnel
        self.static_neigh = static_neigh
        self.listeners: dict[str, ListenerProcess] = {}
        self.stopped_accepts: dict[str, int] = {}  # accepts of listeners already stopped
        self._decaps: dict[str, subprocess.Popen[bytes]] = {}
        self._popens: list[subprocess.Popen[Any]] = []
        self._captures: list[Capture | FrameCapture] = []
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- addresses -------------------------------------------------------------------------------

    @staticmethod
    def rs_ip(rs: str, v6: bool = False) -> str:
        return RS_IPS[rs][1 if v6 else 0]

    @staticmethod
    def rs_mac(rs: str) -> str:
        return RS_MACS[rs]

    def ns(self, name: str) -> str:
        resolved = self.names.get(name, name)
        if resolved not in self.names.values():
            raise ValueError(f"{name!r} is not a namespace of this lab")
        return resolved

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> DsrLab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build everything; on any failure tear down what exists and re-raise."""
        n = self.names
        try:
            ip_batch(host_batch(n))
            set_sysctls(n["switch"], switch_sysctls())
            ip_batch(switch_batch(), ns=n["switch"])
            ip_batch(prober_batch(self.static_neigh), ns=n["prober"])
            set_sysctls(n["prober"], prober_sysctls())
            for rs in ("rs1", "rs2"):
                if self.tunnel == "kernel":  # tunl0 exists once the module is loaded
                    run(["ip", "-n", n[rs], "link", "add", "tunl0", "type", "ipip"], check=False)
                    ip_batch("link set tunl0 up\n", ns=n[rs])
                ip_batch(rs_batch(rs, self.tunnel, self.static_neigh), ns=n[rs])
                set_sysctls(n[rs], rs_sysctls(self.tunnel))
                run(exec_argv(n[rs], ["nft", "-f", "-"]), input=rs_ruleset(self.tunnel))
                if self.tunnel == "user":
                    self._start_decap(rs)
            self.start_listener("rs1")
        except BaseException as exc:
            try:
                self.down()
            except LabError as cleanup:
                exc.add_note(str(cleanup))
            raise

    def down(self) -> None:
        """Remove everything (processes by PID first); raise LabError if anything survived."""
        problems: list[str] = []
        for cap in self._captures:
            cap.close()
        for sock in list(self._sockets):
            sock.close()
        end_processes(self._popens)
        for rs in list(self.listeners):
            self.stop_listener(rs)
        for rs, proc in list(self._decaps.items()):
            _stop(proc)
            if proc.returncode is None:
                problems.append(f"decapsulator pid {proc.pid} in {rs} did not exit")
        existing = set(list_netns())
        for ns in self.names.values():
            if ns not in existing:
                continue
            if pids := netns_pids(ns):
                problems.append(f"processes {pids} still in {ns}")
            try:
                delete_netns(ns)
            except LabError as exc:
                problems.append(str(exc))
        if leaked := set(self.names.values()) & set(list_netns()):
            problems.append(f"namespaces not deleted: {sorted(leaked)}")
        if problems:
            raise LabError("dsr lab teardown: " + "; ".join(problems))

    # -- real servers ----------------------------------------------------------------------------

    def start_listener(self, rs: str, ports: tuple[int, ...] = (OPEN_PORT,)) -> None:
        """Run the accept-counting listener (0.0.0.0 and [::], so on the VIP too) in `rs`."""
        if rs in self.listeners:
            raise LabError(f"{rs} already has a listener")
        self.listeners[rs] = ListenerProcess(self.ns(rs), ports, close="rst")

    def stop_listener(self, rs: str) -> None:
        """Stop `rs`'s listener (its port then answers RST); its last accept count is kept in
        `stopped_accepts`."""
        listener = self.listeners.pop(rs)
        with contextlib.suppress(LabError, OSError):
            self.stopped_accepts[rs] = self.stopped_accepts.get(rs, 0) + listener.accept_count()
        listener.stop()

    def accept_count(self, rs: str) -> int:
        """Connections `rs` accepted (its listeners so far, stopped ones included)."""
        current = self.listeners[rs].accept_count() if rs in self.listeners else 0
        return current + self.stopped_accepts.get(rs, 0)

    def _start_decap(self, rs: str) -> None:
        argv = [sys.executable, "-I", "-S", str(DECAP_SCRIPT), "--in", RS_IF,
                "--out", USER_TUNNEL_TX, "--peer-mac", TUNNEL_PEER_MAC,
                *(f"--addr={a}" for a in RS_IPS[rs])]
        proc = subprocess.Popen(exec_argv(self.ns(rs), argv), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        self._decaps[rs] = proc
        line = _readline(proc, 10.0)
        if line != "ready":
            _stop(proc)
            raise LabError(f"decapsulator in {rs} said {line!r} instead of ready")

    def tunnel_count(self, rs: str) -> int:
        """Packets the userspace tunnel end of `rs` has decapsulated so far."""
        proc = self._decaps[rs]
        assert proc.stdin is not None
        proc.stdin.write(b"count\n")
        proc.stdin.flush()
        return int(_readline(proc, 5.0))

    # -- acting inside ---------------------------------------------------------------------------

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside `ns` (kwargs go to Popen). Terminated by PID at teardown."""
        proc = subprocess.Popen(exec_argv(self.ns(ns), argv), **kwargs)
        self._popens.append(proc)
        return proc

    def run_in(self, ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on a fresh thread inside `ns` (its sockets stay there)."""
        return run_in_netns(self.ns(ns), fn, *args, **kwargs)

    def exec(self, ns: str, argv: Sequence[str], *, check: bool = True,
             input: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run(exec_argv(self.ns(ns), argv), input=input, check=check, timeout=timeout)

    def ip(self, ns: str, commands: str) -> None:
        """`ip -n NS -b -` with one command per line."""
        ip_batch(commands if commands.endswith("\n") else commands + "\n", ns=self.ns(ns))

    def sysctls(self, ns: str, values: dict[str, str]) -> None:
        set_sysctls(self.ns(ns), values)

    def forget_neigh(self, addr: str) -> None:
        """Delete the prober's neighbour entry for `addr` (so it has to be resolved)."""
        self.exec("prober", ["ip", "neigh", "del", addr, "dev", PROBER_IF], check=False)

    def neigh_state(self, addr: str) -> str:
        """The prober's neighbour entry for `addr` as `ip neigh` prints it ('' if none)."""
        return self.exec("prober", ["ip", "neigh", "show", addr, "dev", PROBER_IF]).stdout.strip()

    def count_states(self, ns: str, state: str, port: int | None = None) -> int:
        return kstate.count_states(self.ns(ns), state, port)

    def nstat(self, ns: str) -> dict[str, int]:
        return kstate.nstat(self.ns(ns))

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.005,
                 what: str | None = None) -> T:
        return kstate.wait_for(predicate, timeout, interval, what)

    def capture(self, ns: str = "prober", ifname: str | None = None,
                bufsize: int = 16 << 20) -> contextlib.AbstractContextManager[Capture]:
        """Capture every frame of `ifname` (default: the prober's dsr0 / a real server's eth0)
        from entry on; the socket is bound before the body runs."""
        return self._capturing(Capture, ns, ifname, bufsize)

    def frames(self, ns: str = "prober", ifname: str | None = None,
               bufsize: int = 16 << 20) -> contextlib.AbstractContextManager[FrameCapture]:
        """Like `capture`, keeping each frame's MACs (`FrameCapture.frames()`)."""
        return self._capturing(FrameCapture, ns, ifname, bufsize)

    @contextlib.contextmanager
    def _capturing(self, kind: type[C], ns: str, ifname: str | None,
                   bufsize: int) -> Iterator[C]:
        name = self.ns(ns)
        dev = ifname or (PROBER_IF if name == self.names["prober"] else RS_IF)
        sock = run_in_netns(name, Capture.open_socket, dev, bufsize)
        cap = kind(sock, name, dev)
        self._captures.append(cap)
        try:
            yield cap
        finally:
            cap.close()


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of `proc`'s stdout within `timeout` s (a deadline, not a sleep)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise LabError(f"no answer from pid {proc.pid} within {timeout}s")
        chunk = os.read(fd, 1)
        if not chunk:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise LabError(f"pid {proc.pid} exited (status {proc.wait(5)}): {err.strip()}")
        line += chunk
    return line.decode().strip()


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """End a helper we started: EOF on its stdin, then SIGTERM, then SIGKILL, by PID."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        end_processes([proc], timeout)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
