"""Text from students made safe for a terminal, a CSV and a one-line status.

Everything a student controls (exception messages, printed output, folder and file names) can
carry control characters: ``ESC [`` sequences that move the cursor and redraw the instructor's
terminal, carriage returns that overwrite a line, bidirectional overrides that reorder it. The
score table shows them escaped (``\\x1b``), so a forged row reads as what it is.
"""

import re

# C0 and C1 controls (line breaks too: a status is one line), DEL, and the bidirectional
# embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(value) -> str:
    """``value`` as printable text on one line: tabs and line breaks become spaces, every other
    control character its escape (``\\x1b``, ``\\u202e``)."""
    def escape(match):
        char = match.group()
        if char in "\t\n\r":
            return " "
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    return UNSAFE.sub(escape, str(value))


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (IPython's tracebacks)."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def first_line(text, limit: int = None) -> str:
    """The first non-blank line of ``text``, without colour codes, at most ``limit`` characters (all of it by default)."""
    lines = (ln.strip() for ln in strip_ansi(str(text)).splitlines())
    return next((ln for ln in lines if ln), "")[:limit]
