import pytest

from synprobe.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unlimited_grants_everything() -> None:
    pacer = Pacer(None)
    assert pacer.allowance(10_000) == 10_000
    assert pacer.delay() == 0.0


def test_rate_is_respected_over_time() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, clock=clock)
    sent = pacer.allowance(10_000)
    for _ in range(1000):  # one simulated second in 1 ms steps
        clock.now += 0.001
        sent += pacer.allowance(10_000)
    assert 995 <= sent <= 1006


def test_burst_is_bounded_after_idle() -> None:
    clock = FakeClock()
    pacer = Pacer(10_000.0, clock=clock)
    clock.now += 60.0  # a long idle period must not bank a minute of sends
    assert pacer.allowance(1_000_000) == pacer.burst == 50


def test_delay_says_when_the_next_send_is_allowed() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock)
    pacer.allowance(1)
    assert pacer.allowance(1) == 0
    assert pacer.delay() == pytest.approx(0.01, rel=0.01)


def test_rejects_nonpositive_rate() -> None:
    with pytest.raises(ValueError):
        Pacer(0)


def test_a_full_bucket_grants_its_burst_at_once_then_the_rate() -> None:
    # The raw engine's RST budget: every check in flight may be answered at once.
    clock = FakeClock()
    budget = Pacer(100.0, burst=64, clock=clock, full=True)
    assert sum(budget.take() for _ in range(100)) == 64
    clock.now += 0.055  # five more at 100 per second (5.5 tokens: no float edge)
    assert sum(budget.take() for _ in range(100)) == 5

