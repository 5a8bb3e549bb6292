"""The ICMP table both engines classify by (wire.icmp): the decisions, one row each.

The expected rows are docs/engines-icmp.md's table; tests/integration/test_icmp.py injects each
of them on the wire against both engines."""

from __future__ import annotations

import pytest

from synprobe.model import State
from synprobe.wire.icmp import classify_icmp
from synprobe_lab.icmp_table import expected_icmp_verdicts

F, U = State.FILTERED, State.UNREACHABLE

# (v6, type, code) -> state, or None: no verdict (the attempt times out, as in the kernel).
TABLE: dict[tuple[bool, int, int], State | None] = {
    # nmap's filtered codes: protocol/port unreachable come from a REJECT, not a TCP stack.
    (False, 3, 2): F, (False, 3, 3): F, (False, 3, 9): F, (False, 3, 10): F, (False, 3, 13): F,
    (False, 3, 14): F, (False, 3, 15): F,
    # A router says the host is not there: synprobe's own state (nmap says filtered for 1).
    (False, 3, 0): U, (False, 3, 1): U, (False, 3, 5): U, (False, 3, 6): U, (False, 3, 7): U,
    (False, 3, 8): U, (False, 3, 11): U, (False, 3, 12): U,
    (False, 11, 0): U, (False, 12, 0): U, (False, 12, 1): U, (False, 12, 2): U,
    # Path MTU (consumed by the kernel), codes the kernel ignores, types that are not errors.
    (False, 3, 4): None, (False, 11, 1): None, (False, 3, 16): None,
    (False, 4, 0): None, (False, 0, 0): None,
    (True, 1, 0): U, (True, 1, 1): F, (True, 1, 2): U, (True, 1, 3): U, (True, 1, 4): F,
    (True, 1, 5): F, (True, 1, 6): F, (True, 1, 7): U,
    (True, 3, 0): U, (True, 3, 1): U, (True, 4, 0): U, (True, 4, 1): U,
    (True, 2, 0): None, (True, 129, 0): None,
}


@pytest.mark.parametrize(("row", "verdict"), list(expected_icmp_verdicts().items()),
                         ids=lambda v: str(v))
def test_the_documented_table(row: tuple[bool, int, int], verdict: tuple[str, str]) -> None:
    """An ICMP error without a verdict is a timeout, as for the kernel (the attempt runs on)."""
    got = classify_icmp(*row)
    assert (("filtered", "timeout") if got is None else (got[0].value, got[1])) == verdict


def test_the_documented_table_is_this_one() -> None:
    documented = expected_icmp_verdicts()
    assert set(documented) <= set(TABLE)
    assert {row: (("filtered", "timeout") if TABLE[row] is None
                  else (TABLE[row].value, f"icmp{'6' if row[0] else ''}-{row[1]}-{row[2]}"))
            for row in documented} == documented


@pytest.mark.parametrize(("v6", "t", "c"), list(TABLE))
def test_the_table(v6: bool, t: int, c: int) -> None:
    want = TABLE[v6, t, c]
    got = classify_icmp(v6, t, c)
    if want is None:
        assert got is None
    else:
        assert got == (want, f"icmp{'6' if v6 else ''}-{t}-{c}")


def test_port_unreachable_is_filtered_not_closed() -> None:
    """The decision that changed: a closed TCP port answers with RST; port unreachable is a
    firewall's REJECT, so it reads filtered (as in nmap), with the ICMP as evidence."""
    assert classify_icmp(False, 3, 3) == (F, "icmp-3-3")
    assert classify_icmp(True, 1, 4) == (F, "icmp6-1-4")
    assert all(classify_icmp(v6, t, c) is None or classify_icmp(v6, t, c)[0] is not
               State.CLOSED for v6 in (False, True) for t in range(256) for c in range(256))
