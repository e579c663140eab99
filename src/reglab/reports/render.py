"""Render a study's report, or one run's, from the run folders alone: what `reglab report DIR` and the end of
every study call. The folder says what it is (study.json's kind, else its variants)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from .. import lock, rundir, signals, stats
from ..errors import UserError
from ..progress import echo

COMPARE_VARIANTS = {"basic", "regularized"}


def render_report(out: str | Path, kind: str | None = None, quiet: bool = False, locked: bool = False,
                  margin: float | None = None) -> tuple:
    """Re-render a study's (or a single run's) report from its run folders alone. Returns (md, html)."""
    out = Path(out)
    what = rundir.classify(out)
    if what == "run":
        from .single import render_single

        with (contextlib.nullcontext() if locked else lock.hold(out, "run folder")):
            md, html = render_single(out, quiet=quiet)
        echo(f"report: {md} and {html}", quiet)
        return md, html
    if what != "study":
        raise UserError(f"{out} is not a study or run folder; give the --out folder of a compare, ablate or train")
    meta = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((out / "study.json").read_text())
    meta = meta if isinstance(meta, dict) else {}
    kind = kind or meta.get("kind")
    if margin is None:
        margin = meta.get("margin") if isinstance(meta.get("margin"), (int, float)) else stats.DEFAULT_MARGIN
    runs = rundir.find_runs(out)
    if not runs:
        raise UserError(f"no finished runs under {out}; run reglab compare or ablate with --out {out} first")
    if kind is None:
        kind = "compare" if {r.variant for r in runs} <= COMPARE_VARIANTS else "ablate"
    with (contextlib.nullcontext() if locked else lock.hold(out, "study folder")), \
            signals.phase(f"writing the report in {out}", "report"):
        if kind in ("compare", "train"):  # train --seeds: one variant, reported as a compare of one
            from .compare import render_compare as render, terminal_table
        else:
            from .ablation import render_ablation as render, terminal_table
        md, html = render(out, margin=margin, quiet=quiet)
        if not quiet:
            terminal_table(out, margin=margin)
    echo(f"report: {md} and {html}", quiet)
    return md, html
