"""The expected (state, reason) per ICMP error, read from docs/engines-icmp.md.

The document's table is the one source: the unit test checks the classifier against it and
the integration test checks both engines on the wire against it, so the three cannot drift.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "engines-icmp.md"

Row = tuple[bool, int, int]  # (IPv6, type, code)


def expected_icmp_verdicts(path: Path = DOC) -> dict[Row, tuple[str, str]]:
    """{(v6, type, code): (state, reason)} from the rows `| v4 | 3 | 3 | ... | filtered | ...`."""
    table: dict[Row, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("v4", "v6"):
            family, icmp_type, code, _, state, reason = cells
            table[family == "v6", int(icmp_type), int(code)] = (state, reason)
    if not table:
        raise ValueError(f"no ICMP table in {path}")
    return table
