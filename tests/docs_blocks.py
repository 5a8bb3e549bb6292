"""Fenced code blocks of the Markdown documentation, for the tests that run them.

A block's language is the fence's first word. An HTML comment on the line just above the fence,
`<!-- example: KIND (why) -->`, says how a test treats it: `skip` (never run; the reason is
required), `install` (the user's install commands), or anything else as a note for the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_MARK = re.compile(r"<!--\s*example:\s*(\w[\w-]*)\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    mark: str  # "" when no example comment precedes the fence
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} ({self.lang})"

    def commands(self) -> list[str]:
        """The shell lines, without comments and blank lines."""
        return [c for c in (ln.split("#", 1)[0].strip() for ln in self.code.splitlines()) if c]


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        lang = fence[3:].split()[0] if fence[3:].strip() else ""
        mark = _MARK.fullmatch(lines[i - 1].strip()) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if mark and mark.group(1) == "skip" and not mark.group(2):
            raise ValueError(f"{path}:{i + 1}: a skipped example must say why")
        found.append(Block(path, i + 1, lang, mark.group(1) if mark else "",
                           "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return found
