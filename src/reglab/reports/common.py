"""What every report module needs: the shared constants, number formats, and safe text for the terminal and stderr
(the escaping for Markdown and HTML lives in document.py, the one for matplotlib in plots.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..text import say, visible
from .document import plain

CONFIDENCE = 0.95
NAN = float("nan")
ACC_BOUNDS = (0.0, 1.0)
GAP_BOUNDS = (-1.0, 1.0)
NONNEG = (0.0, math.inf)


# ------------------------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Fmt:
    """How one kind of number is written: scale, decimals, unit; means of several seeds get extra decimals;
    `whole` quantities (epochs, images) print without decimals whenever the value is a whole number."""

    scale: float = 1.0
    digits: int = 4
    unit: str = ""
    signed: bool = False
    mean_digits: int | None = None
    whole: bool = False

    def __call__(self, x, mean: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return "n/a"
        digits = self.mean_digits if mean and self.mean_digits is not None else self.digits
        v = x * self.scale
        if self.whole and float(v).is_integer():
            digits = 0
        return f"{v:{'+' if self.signed else ''}.{digits}f}{self.unit}"


PCT = Fmt(100.0, 2, "%")  # accuracies
PP = Fmt(100.0, 2, " pp", signed=True)  # differences and gaps of accuracies, in percentage points
LOSS = Fmt(1.0, 4)
COUNT = Fmt(1.0, 0, "", mean_digits=1, whole=True)  # epochs, images
SECONDS = Fmt(1.0, 1, " s")
RATE = Fmt(100.0, 0, "%")


def pp_abs(x) -> str:
    return PP(abs(x)).lstrip("+") if x is not None and math.isfinite(x) else "n/a"


def fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p, name: str = "p") -> str:
    """'p = 0.012' or 'p < 0.001', for prose."""
    s = fmt_p(p)
    return f"{name} {s[0]} {s[1:]}" if s.startswith("<") else f"{name} = {s}"


def fmt_int(n) -> str:
    return "n/a" if n is None else f"{int(n):,}"


def fmt_level(level: float) -> str:
    return f"{level * 100:.4g}%"


def fmt_duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def fmt_margin(margin: float) -> str:
    return f"±{margin * 100:g} pp"


def slug(text: str) -> str:
    """A file-name-safe form of a variant name (used for figure names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "variant"


def terminal(markup: str) -> str:
    """Inline markup as one safe terminal line (no markup, no control characters)."""
    return visible(plain(markup))


def warn(line: str) -> None:
    """One line on stderr: `reglab: warning: ...` (the text made visible: one line, no escape sequences)."""
    say(f"reglab: warning: {line}")


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return NAN
    return f if math.isfinite(f) else NAN


# what a study table's headline and gap cells are, in the words of every report that shows them
INTERVAL_NOTE = ("Headline and gap: over the seeds that learned, the variant's 95% interval (seeds and val images "
                 "sampled), or with one seed an interval for that one network")
