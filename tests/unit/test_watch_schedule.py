"""The schedule: even spread, no drift, skipped slots counted; the histogram."""

from __future__ import annotations

import itertools
import math
import random

from synprobe.watch.schedule import FixedHistogram, Schedule, next_due, spread


def test_spread_is_even_over_one_interval() -> None:
    keys = list(range(10_000))
    dues = [d for _, d in spread(keys, 1.0, 50.0)]
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(dues)}
    assert gaps == {0.0001}
    assert dues[0] == 50.0 and dues[-1] < 51.0
    # In any millisecond, 10 checks: never a burst.
    per_ms = [sum(1 for d in dues if 50 + i / 1000 <= d < 50 + (i + 1) / 1000)
              for i in range(0, 1000, 97)]
    assert set(per_ms) == {10}


def test_next_due_counts_from_the_slot_not_the_start() -> None:
    # Started 30 ms late: the next slot is still due + interval (no drift).
    assert next_due(10.0, 1.0, 10.03) == (11.0, 0)
    # 2.5 intervals late: two slots were skipped, the next one keeps the phase.
    assert next_due(10.0, 1.0, 12.5) == (13.0, 2)
    # Exactly on a slot boundary: that slot is taken as passed.
    assert next_due(10.0, 1.0, 11.0) == (12.0, 1)


def test_no_drift_over_a_day_of_slots() -> None:
    due, started = 0.25, 0.25
    for _ in range(86_400):
        due, _ = next_due(due, 1.0, started + 0.004)  # every start 4 ms late
        started = due
    assert math.isclose(due, 86_400.25)


def test_schedule_pops_due_once_and_holds_until_set() -> None:
    s = Schedule()
    s.set("a", 1.0)
    s.set("b", 2.0)
    s.set("a", 3.0)  # rescheduled: the 1.0 entry is stale
    assert s.pop_due(2.5) == [("b", 2.0)]
    assert s.pop_due(2.5) == []
    assert s.next_due() == 3.0
    s.remove("a")
    assert s.next_due() is None
    assert "b" in s and "a" not in s


def test_pop_due_limit_keeps_the_rest() -> None:
    s = Schedule()
    for i in range(10):
        s.set(i, float(i))
    assert [k for k, _ in s.pop_due(100.0, limit=4)] == [0, 1, 2, 3]
    assert s.next_due() == 4.0


def test_schedule_matches_a_sorted_model_whatever_the_order_of_sets() -> None:
    """In-order sets (the FIFO), out-of-order ones (the heap), replacements, removals and
    holds, popped against a plain sorted model."""
    rng = random.Random(7)
    s, model = Schedule(), {}  # model: key -> (due, order set) of its live entry
    now, order = 0.0, 0
    for _ in range(20_000):
        op = rng.random()
        key = rng.randrange(300)
        if op < 0.55:  # mostly in order (a slot one interval on), sometimes out of order
            due = now + (rng.choice((1.0, 2.0)) if rng.random() < 0.8 else rng.random())
            s.set(key, due)
            order += 1
            model[key] = (due, order)  # equal due times pop in the order they were set
        elif op < 0.6:
            s.remove(key)
            model.pop(key, None)
        elif op < 0.62:
            if key in s:
                s.hold(key)
                model.pop(key, None)
        else:
            now += rng.random() * 0.05
            limit = rng.choice((3, 1 << 30))
            want = sorted((entry, k) for k, entry in model.items() if entry[0] <= now)[:limit]
            assert s.pop_due(now, limit) == [(k, due) for (due, _), k in want]
            for _, k in want:
                del model[k]
        assert s.next_due() == (min(model.values())[0] if model else None)


def test_histogram_buckets_and_quantile() -> None:
    h = FixedHistogram((0.001, 0.01, 0.1))
    for v in [0.0005] * 98 + [0.05, 5.0]:
        h.observe(v)
    assert h.cumulative() == [("0.001", 98), ("0.01", 98), ("0.1", 99), ("+Inf", 100)]
    assert h.quantile(0.98) == 0.001
    assert h.quantile(0.99) == 0.1
    assert math.isinf(h.quantile(1.0))
