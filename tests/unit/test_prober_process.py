"""A shaker Prober's helper process: started, owned, stopped and outlived by nobody (no root).

Loopback only. The helper's own pid comes from `prober._engine.pid`; its exit is watched with
a pidfd (it is our child only while its owner, sometimes a script started here, is alive).
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

import synprobe
from synprobe.errors import UsageError
from synprobe.helper.framing import MAX_FRAME, FrameError, FrameReader, encode
from synprobe.helper.process import HelperEngine
from synprobe.model import State, Target

EXIT_WAIT = 10.0  # a safety net: a helper ends within ~1 s of losing its owner


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("0.0.0.0", 0), backlog=1024) as sock:
        yield sock


def helper_of(prober: synprobe.Prober) -> HelperEngine:
    engine = prober._engine
    assert isinstance(engine, HelperEngine)
    return engine


def exited(pid: int, timeout: float = EXIT_WAIT) -> bool:
    """True once process `pid` has exited (whoever its parent is)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def test_the_shaker_loop_runs_in_a_helper_process(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with synprobe.Prober(engine="shaker", timeout=0.5, retries=0) as prober:
        helper = helper_of(prober)
        assert helper.pid != os.getpid()
        assert os.readlink(f"/proc/{helper.pid}/ns/net") == os.readlink("/proc/self/ns/net")
        result = prober.probe(("127.0.0.1", port))
        closed = prober.probe(("127.0.0.1", 1))
        many = list(prober.probe_many([Target(f"127.0.0.{i}", port) for i in range(1, 201)]))
        assert prober.stats()["sent"] == 202
        assert prober.stats()["late_handshakes"] == 0
    assert (result.state, result.reason, result.engine) == (State.OPEN, "syn-ack", "shaker")
    assert (closed.state, closed.reason) == (State.CLOSED, "rst")
    assert {(r.state, r.reason) for r in many} == {(State.OPEN, "syn-ack")}
    assert len({r.host for r in many}) == 200
    assert helper.returncode == 0  # close() ended and reaped it
    assert select.select([listener], [], [], 0.3)[0] == []  # nothing to accept


def test_the_engines_usage_errors_are_raised_at_construction() -> None:
    with pytest.raises(UsageError, match="below the kernel"):
        synprobe.Prober(engine="shaker", timeout=2.0)
    with pytest.raises(UsageError, match="no option rst"):
        synprobe.Prober(engine="shaker", rst="self")


def test_job_control_is_the_owners_not_the_helpers(listener: socket.socket) -> None:
    with synprobe.Prober(engine="shaker", timeout=0.5) as prober:
        pid = helper_of(prober).pid
        # Out of the owner's process group: a terminal's Ctrl-C / Ctrl-Z never reaches it.
        assert os.getpgid(pid) == pid != os.getpgid(0)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTSTP)
        assert prober.submit(("127.0.0.1", listener.getsockname()[1])).result(EXIT_WAIT).is_open
        with open(f"/proc/{pid}/stat") as stat:
            assert stat.read().rsplit(")", 1)[1].split()[0] != "T"  # not stopped


def test_a_dead_helper_fails_checks_instead_of_hanging(listener: socket.socket) -> None:
    prober = synprobe.Prober(engine="shaker", timeout=0.5)
    try:
        os.kill(helper_of(prober).pid, signal.SIGKILL)
        # Queued before the prober noticed, the check's future fails; after, submit() raises.
        with pytest.raises(RuntimeError, match=r"exited unexpectedly|engine failed"):
            prober.submit(("127.0.0.1", listener.getsockname()[1])).result(EXIT_WAIT)
        with pytest.raises(RuntimeError, match=r"engine failed"):
            prober.submit(("127.0.0.1", listener.getsockname()[1]))
    finally:
        prober.close()
    assert helper_of(prober).returncode == -signal.SIGKILL


OWNER = textwrap.dedent("""
    import os, sys, synprobe
    prober = synprobe.Prober(engine="shaker", timeout=0.5)
    if sys.argv[1] == "fork":
        # A child of the owner inherits the channel: the helper cannot rely on EOF.
        if os.fork() == 0:
            os.read(int(sys.argv[2]), 1)  # until the test closes the pipe
            os._exit(0)
    print(prober._engine.pid, flush=True)
    os.read(int(sys.argv[2]), 1)  # killed here
""")


@pytest.mark.parametrize("mode", ["alone", "fork"])
def test_the_helper_dies_with_its_owner(mode: str) -> None:
    """SIGKILL the owner (no close(), no atexit): its helper ends on its own, even while a
    child of the owner still holds the owner's end of the channel (mode fork)."""
    hold_r, hold_w = os.pipe()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, mode, str(hold_r)],
                             pass_fds=(hold_r,), stdout=subprocess.PIPE, text=True)
    os.close(hold_r)
    try:
        assert owner.stdout is not None
        helper_pid = int(owner.stdout.readline())
        assert not exited(helper_pid, 0)
        owner.kill()
        owner.wait()
        assert exited(helper_pid), f"helper {helper_pid} outlived its owner"
    finally:
        os.close(hold_w)  # ends the forked child, if any
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


# -- framing -----------------------------------------------------------------------------------

def test_frames_round_trip_across_arbitrary_chunking() -> None:
    messages = [("targets", [("127.0.0.1", 80), ("::1", 443)]), ("end", {"sent": 2}),
                ("results", [("h", 1, "open", "syn-ack", 0.001, 1, "shaker", None, None)], {})]
    stream = b"".join(encode(m) for m in messages)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 7):
        got += reader.feed(stream[i:i + 7])
    assert got == messages
    assert reader.pending == 0


def test_a_frame_naming_a_class_is_refused() -> None:
    data = pickle.dumps(Target("127.0.0.1", 80))  # a namedtuple: pickled by class reference
    with pytest.raises(FrameError, match="only plain data"):
        FrameReader().feed(struct.pack("!I", len(data)) + data)


@pytest.mark.parametrize("frame", [
    struct.pack("!I", MAX_FRAME + 1),
    struct.pack("!I", 3) + b"\x80\x05X",
])
def test_malformed_frames_are_one_error(frame: bytes) -> None:
    with pytest.raises(FrameError):
        FrameReader().feed(frame)


def test_the_cli_never_imports_the_helper() -> None:
    """The one-shot CLI runs its loop in its own process: its start-up does not pay for the
    helper's modules."""
    code = ("import sys, synprobe, synprobe.cli; "
            "print(sorted(m for m in ('synprobe.helper.process', 'synprobe.helper.framing', "
            "'synprobe.helper.main') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stats_have_every_counter_before_the_first_result() -> None:
    with synprobe.Prober(engine="shaker") as prober:
        assert prober.stats() == {"sent": 0, "send_errors": 0, "retries": 0,
                                  "late_handshakes": 0}


def test_the_helper_outlives_the_thread_that_made_the_prober(listener: socket.socket) -> None:
    """Linux's PR_SET_PDEATHSIG fires when the *thread* that forked exits; the helper must not
    depend on it: a Prober made on a short-lived thread keeps working."""
    made: list[synprobe.Prober] = []
    maker = threading.Thread(target=lambda: made.append(synprobe.Prober(engine="shaker")))
    maker.start()
    maker.join()
    [prober] = made
    with prober:
        assert prober.probe(("127.0.0.1", listener.getsockname()[1])).is_open
        assert not exited(helper_of(prober).pid, 0)


def test_the_helper_decodes_a_backlog_in_slices() -> None:
    """A burst of submits reaches the helper's loop a slice at a time, in order, complete."""
    from synprobe.helper.main import ChannelSource

    ours, theirs = socket.socketpair()
    with ours, theirs:
        sent = [(f"127.0.{i >> 8}.{i & 255}", 80) for i in range(20_000)]
        writer = threading.Thread(target=lambda: (
            [ours.sendall(encode(("targets", sent[i:i + 1024]))) for i in range(0, 20_000, 1024)],
            ours.shutdown(socket.SHUT_WR)))
        writer.start()
        source = ChannelSource(theirs)
        got: list[Target] = []
        buffered = 0
        while (batch := source.pull(256)) is not None:
            if not batch:
                select.select([theirs], [], [], EXIT_WAIT)
                continue
            assert len(batch) <= 256
            got += batch
            buffered = max(buffered, len(source._ready))
        writer.join()
    assert got == [Target(h, p) for h, p in sent]
    assert buffered < 256 + 4000  # one 64 KiB read at most beyond what was asked


def test_a_backlog_larger_than_a_turn_is_all_checked(listener: socket.socket) -> None:
    """More submits at once than the owner ships per turn (4,096): all are checked, in
    slices, with results flowing back meanwhile."""
    port = listener.getsockname()[1]
    with synprobe.Prober(engine="shaker", timeout=0.5, retries=0) as prober:
        futures = [prober.submit(Target(f"127.2.{i >> 8}.{i & 255}", port))
                   for i in range(10_000)]
        done, not_done = concurrent.futures.wait(futures, timeout=3 * EXIT_WAIT)
        assert not not_done, f"{len(not_done)} checks never answered"
        results = [f.result() for f in done]
    assert {(r.state, r.reason) for r in results} == {(State.OPEN, "syn-ack")}
    assert select.select([listener], [], [], 0.0)[0] == []  # every socket closed: final
