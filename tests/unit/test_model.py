import dataclasses
import errno
import json

import pytest

from synprobe.model import ProbeResult, State, Target, classify_errno, new_result


def test_state_values_are_the_documented_strings() -> None:
    assert [s.value for s in State] == ["open", "closed", "filtered", "unreachable", "error"]
    assert str(State.OPEN) == "open"
    assert State("filtered") is State.FILTERED


def test_result_is_frozen_and_slotted() -> None:
    r = ProbeResult("198.18.0.2", 80, State.OPEN, "syn-ack", 0.0012345, 1, "shaker", None)
    with pytest.raises(AttributeError):
        r.state = State.CLOSED  # type: ignore[misc]
    assert not hasattr(r, "__dict__")


@pytest.mark.parametrize("args", [
    ("198.18.0.2", 80, State.OPEN, "syn-ack", 0.0012, 1, "raw", "198.18.0.1", None),
    ("fd00::2", 443, State.FILTERED, "timeout", None, 2, "raw", None, "198.18.0.9"),
    ("198.18.0.3", 81, State.CLOSED, "rst", 0.5, 1, "shaker"),  # source and via defaulted
])
def test_new_result_is_the_same_frozen_result(args: tuple) -> None:
    fast, slow = new_result(*args), ProbeResult(*args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    # Every field set, in the dataclass's order (a field added to one and not the other fails)
    assert [getattr(fast, f.name) for f in dataclasses.fields(ProbeResult)] == [
        getattr(slow, f.name) for f in dataclasses.fields(ProbeResult)]
    with pytest.raises(AttributeError):
        fast.state = State.ERROR  # type: ignore[misc]


def test_to_dict_is_the_json_form() -> None:
    r = ProbeResult("fd00:5e::2", 443, State.CLOSED, "rst", 0.0012345, 2, "raw", "fd00:5e::1")
    d = r.to_dict()
    assert list(d) == ["host", "port", "state", "reason", "rtt_ms", "attempts", "engine", "source",
                       "via"]
    assert d["state"] == "closed" and d["rtt_ms"] == 1.234 and d["attempts"] == 2
    assert json.loads(json.dumps(d)) == d
    timeout = ProbeResult("198.18.0.2", 82, State.FILTERED, "timeout", None, 2, "shaker")
    assert timeout.to_dict()["rtt_ms"] is None


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [
        (errno.ECONNREFUSED, State.CLOSED, "rst"),
        (errno.EHOSTUNREACH, State.UNREACHABLE, "EHOSTUNREACH"),
        (errno.ENETUNREACH, State.UNREACHABLE, "ENETUNREACH"),
        (errno.EACCES, State.UNREACHABLE, "EACCES"),
        (errno.EINVAL, State.UNREACHABLE, "EINVAL"),
        (errno.ETIMEDOUT, State.FILTERED, "timeout"),
        (errno.EADDRNOTAVAIL, State.ERROR, "EADDRNOTAVAIL"),
        (errno.EMFILE, State.ERROR, "EMFILE"),
    ],
)
def test_classify_errno(code: int, state: State, reason: str) -> None:
    assert classify_errno(code) == (state, reason)


def test_target_str_brackets_v6() -> None:
    assert str(Target("fd00:5e::2", 80)) == "[fd00:5e::2]:80"
    assert str(Target("198.18.0.2", 80)) == "198.18.0.2:80"
