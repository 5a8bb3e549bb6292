"""A real HAProxy (Debian `haproxy`) in a lab namespace, checking servers by external check.

HAProxy runs in the foreground (`-db`) inside the given namespace, so the check processes it
forks run there too. Its state is read through its admin stats socket with `socat`, as an
operator would: `echo 'show stat' | socat - UNIX-CONNECT:PATH`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lab import Lab
from .nsutil import LabError


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    addr: str
    port: int

    def address(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


def wrapper_script(check_argv: Sequence[str], log_path: str) -> str:
    """A /bin/sh wrapper around the check: HAProxy passes no options of its own, so options go
    here (the documented way), and each run appends `<server name> <exit status>` to a log, so a
    test can count the checks that led to a transition. `echo` is a shell builtin: HAProxy
    clears PATH."""
    quoted = " ".join(f"'{a}'" for a in check_argv)
    return (
        "#!/bin/sh\n"
        f'{quoted} "$@"\n'
        "rc=$?\n"
        f'echo "$HAPROXY_SERVER_NAME $rc" >> \'{log_path}\'\n'
        "exit $rc\n"
    )


def haproxy_config(servers: Sequence[Server], command: str, stats_socket: str, *,
                   inter_ms: int, rise: int, fall: int) -> str:
    lines = [
        "global",
        "    external-check",
        "    insecure-fork-wanted",
        # maxconn sets the descriptors HAProxy asks for: an explicit small one never meets the
        # hard RLIMIT_NOFILE ("Cannot raise FD limit" at start otherwise).
        "    maxconn 256",
        f"    stats socket {stats_socket} mode 600 level admin",
        "defaults",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout client 5s",
        "    timeout server 5s",
        "backend pool",
        "    option external-check",
        f"    external-check command {command}",
    ]
    lines += [f"    server {s.name} {s.address()} check inter {inter_ms} rise {rise} fall {fall}"
              for s in servers]
    return "\n".join(lines) + "\n"


class HAProxyProcess:
    """`haproxy -f CFG -db` in `ns` of `lab`; stopped by PID at `stop()` (and lab teardown)."""

    def __init__(self, lab: Lab, ns: str, servers: Sequence[Server], check_argv: Sequence[str],
                 *, inter_ms: int = 1000, rise: int = 2, fall: int = 3) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise LabError("haproxy is not installed (Debian package `haproxy`)")
        self.dir = Path(tempfile.mkdtemp(prefix="synprobe-haproxy-"))
        self.stats_socket = str(self.dir / "stats.sock")
        self.check_log = self.dir / "checks.log"
        self.check_log.touch()
        command = self.dir / "check.sh"
        command.write_text(wrapper_script(check_argv, str(self.check_log)))
        command.chmod(0o755)
        config = self.dir / "haproxy.cfg"
        config.write_text(haproxy_config(servers, str(command), self.stats_socket,
                                         inter_ms=inter_ms, rise=rise, fall=fall))
        self.rise, self.fall = rise, fall
        self.proc = lab.popen(ns, [haproxy, "-f", str(config), "-db"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
        try:
            lab.wait_for(lambda: os.path.exists(self.stats_socket) or self.proc.poll() is not None,
                         timeout=10.0, what="haproxy's stats socket")
            if self.proc.poll() is not None:
                raise LabError(f"haproxy exited at start: {self.output()}")
        except BaseException:
            self.stop()
            raise

    def command(self, text: str) -> str:
        """One command on the admin socket, through socat."""
        done = subprocess.run(["socat", "-", f"UNIX-CONNECT:{self.stats_socket}"],
                              input=text + "\n", capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise LabError(f"socat: {done.stderr.strip()}")
        return done.stdout

    def show_stat(self) -> dict[str, dict[str, Any]]:
        """The backend's servers from `show stat`: {server name: CSV row as a dict}."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == "pool"
                and r["svname"] not in ("BACKEND", "FRONTEND")}

    def status(self) -> dict[str, str]:
        """{server name: status}: UP, DOWN, or a transitional form such as "UP 1/3"."""
        return {name: row["status"] for name, row in self.show_stat().items()}

    def check_runs(self) -> list[tuple[str, int]]:
        """Every external check run so far, in order: (server name, exit status)."""
        runs = []
        for line in self.check_log.read_text().splitlines():
            name, _, rc = line.partition(" ")
            if rc.strip().isdigit():
                runs.append((name, int(rc)))
        return runs

    def output(self) -> str:
        if self.proc.stdout is None:
            return ""
        if self.proc.poll() is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace").strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_status(proxy: HAProxyProcess, name: str, want: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = proxy.status().get(name, "")
        if last == want:
            return last
        time.sleep(0.02)
    raise LabError(f"server {name} is {last!r}, not {want!r}, after {timeout} s")
