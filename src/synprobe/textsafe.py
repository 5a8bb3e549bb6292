"""Text from outside (file names, arguments) made safe to print on a terminal.

An error line quotes what the user gave: a file name can hold terminal escapes (`\\x1b]2;...`
retitles the window, `\\x1b[2J` clears it) or bidi overrides that reorder what is shown. Each
such character is printed as a visible Python-style escape instead.
"""

from __future__ import annotations


def visible(text: str) -> str:
    """`text` with control and format characters (C0, DEL, C1, bidi overrides) escaped."""
    if text.isprintable():
        return text
    import unicodedata  # here: only text that needs escaping pays for it

    out = []
    for ch in text:
        if ch.isprintable() or ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Zl",
                                                                             "Zp", "Cs"):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
