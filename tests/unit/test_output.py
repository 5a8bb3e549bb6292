import io
import json
import os

import pytest

from synprobe.cli import output
from synprobe.cli.output import JsonWriter, LineSink, Tally
from synprobe.model import ProbeResult, State


def result(i: int) -> ProbeResult:
    return ProbeResult(f"198.19.{i // 256}.{i % 256}", 80, State.OPEN, "syn-ack", 0.001, 1,
                       "shaker")


def test_line_sink_writes_whole_lines_in_atomic_chunks(tmp_path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        written = real_write(fd, data)
        writes.append(written)
        assert bytes(data[:written]).endswith(b"\n")
        return written

    monkeypatch.setattr(output.os, "write", recording_write)
    path = tmp_path / "out.jsonl"
    with open(path, "w") as out:
        writer = JsonWriter(LineSink(out))
        for i in range(2000):
            writer.write(result(i))
        writer.finish()
    # Every write ended at a line boundary and stayed under PIPE_BUF, so lines from several
    # processes sharing one stdout can never be cut into each other.
    assert len(writes) > 10 and max(writes) <= 4096
    assert len(path.read_text().splitlines()) == 2000


def test_line_sink_passes_through_streams_without_fd() -> None:
    out = io.StringIO()
    sink = LineSink(out)
    sink.write("a\n")
    sink.flush()
    assert out.getvalue() == "a\n"


def test_tally_merges_worker_summaries() -> None:
    mine, theirs = Tally(4), Tally(4)
    mine.add(result(1))
    theirs.add(result(2))
    theirs.add(ProbeResult("198.18.0.2", 82, State.FILTERED, "timeout", None, 2, "shaker"))
    mine.merge(theirs.summary("shaker", {}))
    assert mine.done == 3 and mine.states[State.OPEN] == 2 and not mine.all_open()


@pytest.mark.parametrize(
    "r",
    [
        ProbeResult("198.18.0.2", 80, State.OPEN, "syn-ack", 0.0012345, 1, "shaker"),
        ProbeResult("fd00:5e::2", 81, State.CLOSED, "rst", 2e-05, 2, "raw", "fd00:5e::1",
                    "fd00:5e::11"),
        ProbeResult("198.18.0.2", 82, State.FILTERED, "timeout", None, 3, "shaker"),
        ProbeResult("198.18.0.2", 83, State.ERROR, 'weird "quoted"\\', 1.0, 1, "eng\u00e9"),
    ],
)
def test_json_lines_equal_json_dumps(r: ProbeResult) -> None:
    out = io.StringIO()
    JsonWriter(LineSink(out)).write(r)
    line = out.getvalue()
    assert line.endswith("\n")
    assert json.loads(line) == json.loads(json.dumps(r.to_dict()))
    assert list(json.loads(line)) == list(r.to_dict())
