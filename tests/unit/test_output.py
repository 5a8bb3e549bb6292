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


def test_a_batch_is_written_in_whole_line_chunks_under_pipe_buf(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write_all joins a batch into one buffer (~300 KB here); it still leaves in writes of
    whole lines, none over PIPE_BUF."""
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(output.os, "write", recording_write)
    path = tmp_path / "out.jsonl"
    with open(path, "w") as out:
        writer = JsonWriter(LineSink(out))
        writer.write_all([result(i) for i in range(2000)])
        writer.finish()
    assert len(writes) > 50 and all(len(w) <= 4096 and w.endswith(b"\n") for w in writes)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["host"] for line in lines] == [result(i).host for i in range(2000)]


def test_a_line_longer_than_pipe_buf_is_written_whole() -> None:
    r, w = os.pipe()
    long = "x" * 5000 + "\n"
    with open(r, "rb") as reader, open(w, "w") as writer:
        sink = LineSink(writer)
        sink.write_lines(["a\n", long, "b\n"])
        sink.flush()
        writer.close()
        assert reader.read().decode() == "a\n" + long + "b\n"


def test_a_batch_of_mixed_rows_equals_json_dumps_row_by_row() -> None:
    """Each row's repeating part is cached by everything it holds: two results alike but for
    one field (the state, the source, the attempts) never share one."""
    batch = [
        ProbeResult("198.18.0.2", 80, State.OPEN, "syn-ack", 0.0001234, 1, "raw", "198.18.0.1"),
        ProbeResult("198.18.0.3", 80, State.OPEN, "syn-ack", 0.0004, 2, "raw", "198.18.0.1"),
        ProbeResult("198.18.0.4", 80, State.OPEN, "syn-ack", 1.5, 1, "raw", "198.18.0.9"),
        ProbeResult("198.18.0.5", 80, State.ERROR, "syn-ack", None, 1, "plug\tin", None, "x"),
        ProbeResult("198.18.0.2", 80, State.OPEN, "syn-ack", 0.0009996, 1, "raw", "198.18.0.1"),
    ]
    out = io.StringIO()
    JsonWriter(LineSink(out)).write_all(batch)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        json.loads(json.dumps(r.to_dict())) for r in batch]


def test_tally_counts_a_batch_as_it_counts_one_by_one() -> None:
    batch = [result(i) for i in range(5)] + [
        ProbeResult("198.18.0.2", 82, State.FILTERED, "timeout", None, 2, "shaker")] * 3
    one, bulk = Tally(8), Tally(8)
    for r in batch:
        one.add(r)
    bulk.add_all(batch)
    assert (bulk.done, bulk.states) == (one.done, one.states) == (8, {State.OPEN: 5,
                                                                        State.FILTERED: 3})
