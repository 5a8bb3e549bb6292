"""The library API over a fake engine: streaming, backpressure, errors, threads, asyncio."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
from collections.abc import Callable, Iterator

import pytest

import synprobe
import synprobe.registry as registry
from synprobe.engines.base import TargetSource
from synprobe.model import ProbeResult, State, Target
from synprobe.targets.space import Prepared
from synprobe.testing import FakeEngine

Made = Callable[[], list[FakeEngine]]


def test_engines_lists_the_builtins() -> None:
    assert {"shaker", "raw"} <= set(synprobe.engines())


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(synprobe.UsageError, match="unknown engine 'nope'; choose one of: "):
        synprobe.Prober(engine="nope")
    with pytest.raises(synprobe.UsageError, match="unknown engine"):
        synprobe.probe_many(["198.18.0.2:80"], engine="nope")


def test_probe_returns_one_result(fake_engine: Made) -> None:
    r = synprobe.probe("198.18.0.2:80", engine="fake")
    assert (r.host, r.port, r.state, r.engine) == ("198.18.0.2", 80, State.OPEN, "fake")
    assert fake_engine()[0].closed


@pytest.mark.parametrize(
    ("target", "expected"),
    [("[fd00:5e::2]:81", Target("fd00:5e::2", 81)), (("198.18.0.2", 83), Target("198.18.0.2", 83))],
)
def test_probe_accepts_every_target_form(fake_engine: Made, target: object,
                                         expected: Target) -> None:
    r = synprobe.probe(target, engine="fake")  # type: ignore[arg-type]
    assert Target(r.host, r.port) == expected


def test_probe_many_streams_all_results(fake_engine: Made) -> None:
    targets = [f"198.18.0.{i}:{80 + i % 4}" for i in range(1, 201)]
    with synprobe.probe_many(targets, engine="fake", concurrency=16) as results:
        got = list(results)
        assert results.stats() == {"sent": 200}
    assert sorted((r.host, r.port) for r in got) == sorted(
        (f"198.18.0.{i}", 80 + i % 4) for i in range(1, 201))
    assert {r.state for r in got} == {State.OPEN, State.CLOSED, State.FILTERED,
                                      State.UNREACHABLE}


def test_batches_yield_the_same_results_a_turn_at_a_time(fake_engine: Made) -> None:
    """What the CLI's writers read: lists as the engine completed them, nothing lost when
    next() took some first, nothing after the end."""
    targets = [f"198.18.0.{i}:{80 + i % 4}" for i in range(1, 201)]
    with synprobe.probe_many(targets, engine="fake", concurrency=16) as results:
        first = [next(results) for _ in range(3)]
        batches = list(results.batches())
        assert list(results.batches()) == [] and next(results, None) is None
    assert all(isinstance(b, list) and 0 < len(b) <= 16 for b in batches)
    assert len(batches) >= 200 // 16  # a list per turn, not one for the run
    got = first + [r for b in batches for r in b]
    assert sorted((r.host, r.port) for r in got) == sorted(
        (f"198.18.0.{i}", 80 + i % 4) for i in range(1, 201))


def test_probe_many_is_lazy_and_bounded(fake_engine: Made) -> None:
    pulled = itertools.count()

    def endless() -> Iterator[Target]:
        for i in itertools.count():
            next(pulled)
            yield Target("198.18.0.2", 1 + i % 65535)

    stream = synprobe.probe_many(endless(), engine="fake", concurrency=10)
    first = [next(stream) for _ in range(5)]
    assert len(first) == 5
    stream.close()
    # The consumer took 5; the engine may run ahead by the high-water mark (4096 here) plus what
    # it had in flight, never more: an endless target list is never materialised.
    assert next(pulled) <= 4096 + 10 + 1


def test_engine_failure_reaches_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(target: Target) -> tuple[State, str]:
        raise OSError(99, "boom")

    import synprobe.registry as registry

    monkeypatch.setitem(registry._registered, "broken",
                        lambda options: FakeEngine(broken, options))
    with pytest.raises(OSError, match="boom"):
        list(synprobe.probe_many(["198.18.0.2:80"], engine="broken"))


def test_bad_arguments_are_usage_errors(fake_engine: Made) -> None:
    for kwargs in ({"timeout": 0}, {"retries": -1}, {"concurrency": 0}, {"rate": -5}):
        with pytest.raises(synprobe.UsageError):
            synprobe.probe_many(["198.18.0.2:80"], engine="fake", **kwargs)
    with pytest.raises(synprobe.UsageError, match="iterable of targets"):
        synprobe.probe_many("198.18.0.2:80", engine="fake")  # type: ignore[arg-type]


def test_prober_serves_many_threads_and_coalesces(fake_engine: Made) -> None:
    results: dict[int, State] = {}
    with synprobe.Prober(engine="fake") as prober:
        def worker(i: int) -> None:
            results[i] = prober.probe(("198.18.0.2", 80 + i % 4)).state

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        streamed = list(prober.probe_many([f"198.18.1.{i}:80" for i in range(50)], window=8))
    assert len(results) == 40
    assert all(results[i] == synprobe.probe(("198.18.0.2", 80 + i % 4), engine="fake").state
               for i in range(40))
    assert len(streamed) == 50 and {r.state for r in streamed} == {State.OPEN}
    # Only one engine loop served all of it.
    assert len(fake_engine()[0].seen) <= 40 + 50
    with pytest.raises(RuntimeError, match="closed"):
        prober.submit("198.18.0.2:80")


def test_asyncio_forms(fake_engine: Made) -> None:
    async def main() -> tuple[State, list[State], State]:
        one = await synprobe.aprobe("198.18.0.2:81", engine="fake")
        many = [r.state async for r in synprobe.aprobe_many(
            ["198.18.0.2:80", "198.18.0.3:82"], engine="fake")]
        with synprobe.Prober(engine="fake") as p:
            via_prober = await p.aprobe("198.18.0.2:83")
        return one.state, sorted(many), via_prober.state

    one, many, via_prober = asyncio.run(main())
    assert one is State.CLOSED
    assert many == sorted([State.OPEN, State.FILTERED])
    assert via_prober is State.UNREACHABLE


def test_via_expands_targets_and_keys_results(fake_engine: Made,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeEngine, "supports_via", True, raising=False)
    got = sorted((r.port, r.via) for r in synprobe.probe_many(
        ["198.18.0.100:80"], engine="fake", via=["198.18.0.11", "198.18.0.12"]))
    assert got == [(80, "198.18.0.11"), (80, "198.18.0.12")]
    with synprobe.Prober(engine="fake") as prober:
        a = prober.submit("198.18.0.100:80", via="198.18.0.11")
        b = prober.submit("198.18.0.100:80", via="198.18.0.12")
        assert (a.result().via, b.result().via) == ("198.18.0.11", "198.18.0.12")
    assert synprobe.probe("198.18.0.100:80", engine="fake", via="198.18.0.12").via == "198.18.0.12"


def test_shaker_refuses_via() -> None:
    with pytest.raises(synprobe.UsageError, match="cannot choose the real server"):
        synprobe.probe_many(["198.18.0.100:80"], via="198.18.0.11")


def _engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "synprobe-engine"}


def test_a_bad_target_in_the_iterable_reaches_the_consumer(fake_engine: Made) -> None:
    with pytest.raises(synprobe.UsageError, match="bad target 'nope'"):
        list(synprobe.probe_many(["198.18.0.2:80", "nope"], engine="fake"))
    assert fake_engine()[0].closed


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "generator"])
def test_an_abandoned_stream_ends_its_engine_thread(fake_engine: Made, prepared: bool) -> None:
    def endless() -> Iterator[Target]:
        for i in itertools.count():
            yield Target("198.18.0.2", 1 + i % 65535)

    before = _engine_threads()
    stream = synprobe.probe_many(Prepared(endless()) if prepared else endless(), engine="fake",
                                 concurrency=10)
    next(stream)
    (engine_thread,) = _engine_threads() - before
    del stream  # never closed: the engine fills its backlog, then waits for a consumer
    gc.collect()
    engine_thread.join(5)
    assert not engine_thread.is_alive(), "an abandoned stream kept its engine running"
    assert fake_engine()[0].closed


def test_an_abandoned_async_stream_ends_its_engine_thread(fake_engine: Made) -> None:
    def endless() -> Iterator[Target]:
        for i in itertools.count():
            yield Target("198.18.0.2", 1 + i % 65535)

    before = _engine_threads()
    loop = asyncio.new_event_loop()
    stream = synprobe.aprobe_many(Prepared(endless()), engine="fake", concurrency=10)
    loop.run_until_complete(anext(stream))
    (engine_thread,) = _engine_threads() - before
    loop.close()  # without shutdown_asyncgens(): no event loop will close the generator
    del stream
    gc.collect()
    engine_thread.join(5)
    assert not engine_thread.is_alive()
    assert fake_engine()[0].closed


def test_probe_closes_the_engine_run_before_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    kept: list[Iterator[list[ProbeResult]]] = []

    class Recording(FakeEngine):
        """Keeps its run generators (as a reference cycle or another Python might): only an
        explicit close() runs their finally, where an engine closes its sockets."""

        def run(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
            kept.append(run := self._recorded(source))
            return run

        def _recorded(self, source: TargetSource) -> Iterator[list[ProbeResult]]:
            try:
                yield from FakeEngine.run(self, source)
            finally:
                events.append("run closed")

        def close(self) -> None:
            events.append("engine closed")

    monkeypatch.setitem(registry._registered, "recording",
                        lambda o: Recording(lambda t: (State.OPEN, "syn-ack"), o))
    assert synprobe.probe("198.18.0.2:80", engine="recording").state is State.OPEN
    assert events == ["run closed", "engine closed"]


def test_aprobe_many_closes_the_engine_when_via_is_refused(fake_engine: Made) -> None:
    async def main() -> None:
        async for _ in synprobe.aprobe_many(["198.18.0.100:80"], engine="fake",
                                            via="198.18.0.11"):
            pass

    with pytest.raises(synprobe.UsageError, match="cannot choose the real server"):
        asyncio.run(main())
    assert fake_engine()[0].closed


def test_probe_many_refuses_a_lone_target_before_making_an_engine(fake_engine: Made) -> None:
    with pytest.raises(synprobe.UsageError, match="iterable of targets"):
        synprobe.probe_many("198.18.0.2:80", engine="fake")  # type: ignore[arg-type]
    assert all(engine.closed for engine in fake_engine())


def test_each_engine_has_its_own_default_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from synprobe.api import make_options
    from synprobe.kernel import fdlimit

    # raw: its in-flight memory budget, not the 1,000 that suited the shaker's sockets.
    budget = fdlimit.RAW_INFLIGHT_BUDGET // fdlimit.RAW_RECORD_BYTES
    assert make_options("raw").concurrency == budget > 70_000
    assert make_options("raw", concurrency=5).concurrency == 5
    # shaker: what the soft file limit still leaves room for, without ever raising it.
    monkeypatch.setattr(resource, "getrlimit", lambda which: (200, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda *a: pytest.fail("changed a limit"))
    monkeypatch.setattr(fdlimit, "open_fds", lambda: 50)
    assert make_options("shaker").concurrency == 200 - 50 - fdlimit.ENGINE_FDS
    monkeypatch.setattr(resource, "getrlimit", lambda which: (100_000, 100_000))
    assert make_options("shaker").concurrency == fdlimit.LIBRARY_SHAKER_MAX == 1000


def test_async_forms_have_real_signatures() -> None:
    import inspect

    for fn in (synprobe.aprobe, synprobe.aprobe_many):
        params = inspect.signature(fn).parameters
        assert {"engine", "timeout", "retries", "source", "via", "mark"} <= set(params), fn
        assert not any(p.kind is p.VAR_KEYWORD and p.name == "kwargs" for p in params.values())
