"""Fixtures for tests that run in network namespaces (marker `netns`; root required, as in CI)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from synprobe_lab import DEFAULT_PREFIX, Lab, LabError, list_netns


def require_root() -> None:
    # A clear failure, never a skip: CI runs these as root, so a skip would hide a broken setup.
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); CI runs them as root")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh default lab (listener on 80, no loss), torn down after the test, pass or fail."""
    require_root()
    with Lab() as built:
        yield built


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory for labs with options, e.g. `make_lab(close_mode="rst", loss_percent=5)`.

    Every lab it made is torn down at the end of the test, even one whose `up()` failed.
    """
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        require_root()
        new = Lab(**kwargs)
        labs.append(new)  # registered before up(), so teardown covers a half-built lab
        new.up()
        return new

    yield make
    errors: list[LabError] = []
    for built in reversed(labs):
        try:
            built.down()
        except LabError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session", autouse=True)
def no_leaked_namespaces() -> Iterator[None]:
    """After the session, no namespace created by this process may remain."""
    yield
    mine = [n for n in list_netns() if n.startswith(DEFAULT_PREFIX) and f"-{os.getpid()}-" in n]
    assert not mine, f"leaked namespaces: {mine}"


# -- DSR (appended; imported here so the fixtures above stay untouched) -----------------------
from synprobe_lab.dsr import DsrLab  # noqa: E402


@pytest.fixture
def dsr_lab() -> Iterator[DsrLab]:
    """A fresh DSR lab (prober, rs1 listening on VIP:80, rs2 not; see synprobe_lab.dsr), torn
    down after the test, pass or fail."""
    require_root()
    with DsrLab() as built:
        yield built
