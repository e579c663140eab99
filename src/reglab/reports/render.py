"""Render a study's report, or one run's, from the run folders alone: what `reglab report DIR` and the end of
every study call. The folder says what it is (a run folder; a study: study.json's kind, else its variants); either
way it is loaded once, analysed once (report.render) and written through the same sections."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import lock, rundir, signals, stats
from ..errors import UserError
from ..progress import echo
from . import facts
from .ablation import ablation
from .compare import COMPARE
from .report import render
from .single import SINGLE

COMPARE_VARIANTS = {"basic", "regularized"}


def render_report(out: str | Path, kind: str | None = None, quiet: bool = False, locked: bool = False,
                  margin: float | None = None) -> tuple:
    """Re-render a study's (or a single run's) report from its run folders alone. Returns (md, html)."""
    out = Path(out)
    what = rundir.classify(out)
    if what not in ("run", "study"):
        raise UserError(f"{out} is not a study or run folder; give the --out folder of a compare, ablate or train")
    held = contextlib.nullcontext() if locked else lock.hold(out, f"{what} folder")
    with held, signals.phase(f"writing the report in {out}", "report"):
        if what == "run":
            study = facts.load_run_study(out, warn_stderr=not quiet)
            report = SINGLE
        else:
            study = facts.load_study(out, warn_stderr=not quiet)
            kind = kind or study.meta.get("kind")
            if kind is None:
                kind = "compare" if set(study.variants) <= COMPARE_VARIANTS else "ablate"
            report = COMPARE if kind in ("compare", "train") else ablation()  # train --seeds: a compare of one
        if margin is None:
            given = study.meta.get("margin")
            margin = given if isinstance(given, (int, float)) else stats.DEFAULT_MARGIN
        md, html = render(report, study, margin, quiet)
    echo(f"report: {md} and {html}", quiet)
    return md, html
