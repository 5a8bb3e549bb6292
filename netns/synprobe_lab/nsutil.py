"""Named network namespaces: create names, run commands and Python code inside them, clean up.

Python 3.11 has no `os.setns`, so `enter_netns` calls libc's setns(2) through ctypes. setns with
CLONE_NEWNET switches only the calling *thread*, which is exactly what we want: the test process
stays in the host namespace and a dedicated thread works inside the lab. Threads started by that
thread inherit its namespace (clone(2) copies the creating thread's nsproxy), and a socket stays in
the namespace it was created in for its whole life, wherever it is later used.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
DEFAULT_PREFIX = "sp-"

_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    """The lab could not be built, driven or torn down cleanly."""


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def enter_netns(name: str) -> None:
    """Move the *calling thread* into the named namespace (irreversible for that thread)."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_ino(name: str) -> int:
    """Inode identifying the named namespace; compare with `current_netns_ino()`."""
    return os.stat(netns_path(name)).st_ino


def current_netns_ino() -> int:
    """Inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def run_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` in a fresh thread inside namespace `name`; return or re-raise.

    The thread is discarded afterwards, so the caller's own thread never changes namespace.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(name)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, so nothing is lost
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def netns_executor(name: str, max_workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose worker threads all live in namespace `name`."""
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=f"netns:{name}",
        initializer=enter_netns,
        initargs=(name,),
    )


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside namespace `name` (`ip netns exec` execs, no extra fork)."""
    return ["ip", "netns", "exec", name, *argv]


def end_processes(procs: Sequence[subprocess.Popen[Any]], timeout: float = 5.0) -> None:
    """End processes we started, by PID: SIGTERM, then SIGKILL after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command, capture text output, and on failure raise LabError carrying stderr."""
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc


def ip_batch(commands: str, ns: str | None = None) -> None:
    """Run `ip [-n ns] -b -` with one command per line; the first failing line aborts."""
    run(["ip", *(["-n", ns] if ns else []), "-b", "-"], input=commands)


def set_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write sysctls inside `ns` in one process (/proc/sys/net is per namespace)."""
    run(exec_argv(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]))


def list_netns() -> list[str]:
    """Names of all named namespaces (the entries of /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def delete_netns(name: str) -> None:
    """Delete a named namespace if it exists. Its veth end goes with it."""
    if name in list_netns():
        run(["ip", "netns", "del", name])


def netns_pids(name: str) -> list[int]:
    """PIDs of processes whose network namespace is `name`."""
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(tok) for tok in out.split()]


def lab_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """Unique (client, server) names: `<prefix>c-<pid>-<hex>` and `<prefix>s-<pid>-<hex>`.

    The creator's PID is part of the name so `lab_down_all` can tell leftovers of dead runs from
    the namespaces of labs that are still alive (for example in parallel pytest workers).
    """
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    return f"{prefix}c-{tag}", f"{prefix}s-{tag}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_down_all(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete leftover lab namespaces whose creating PID is dead; return the names removed.

    Only names of exactly our shape (`<prefix>[cs]-<pid>-<hex>`) are considered, and a namespace
    whose creator is still running is left alone.
    """
    return down_all(prefix, "[cs]")


def down_all(prefix: str, roles: str) -> list[str]:
    """Delete namespaces named `<prefix><role>-<pid>-<hex>` (role matching the regular
    expression `roles`) whose creating PID is dead; return the names removed."""
    pattern = re.compile(rf"^{re.escape(prefix)}(?:{roles})-(\d+)-[0-9a-f]+$")
    removed = []
    for name in list_netns():
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            delete_netns(name)
            removed.append(name)
    return removed
