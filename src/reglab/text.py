"""Text from the user's world (paths, class folders, file names) made safe for one terminal line."""

from __future__ import annotations

import os
import sys
import unicodedata


def visible(text) -> str:
    """One printable line: control characters (newlines, tabs, ESC, DEL, C1, line separators) become visible
    escapes such as \\n or \\x1b, so a name can neither break a line nor drive a terminal."""
    out = []
    for ch in str(text):
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def say(line) -> None:
    """One line on stderr (an error, a warning, a skipped file), made visible: whatever a path or name holds, it
    stays one line and never drives the terminal."""
    print(visible(line), file=sys.stderr, flush=True)


def show(path: str | os.PathLike) -> str:
    """A path printable on any terminal: undecodable bytes in file names become \\x escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
