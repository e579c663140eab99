"""Render a study's report, or one run's, from the run folders alone: what `reglab report DIR` and the end of
every study call. The folder says what it is (a run folder; a study: study.json's kind, else its variants); either
way it is loaded once, analysed once (report.render) and written through the same sections. `load` and
`study_margin` are shared with `reglab plan` (planning.py), which analyses a study as its report does."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import lock, rundir, signals, stats
from ..errors import UserError
from ..progress import echo
from . import facts
from .ablation import ablation
from .compare import COMPARE
from .facts import Study
from .report import Report, render
from .single import SINGLE
from .sweep import SWEEP

COMPARE_VARIANTS = {"basic", "regularized"}


def render_report(out: str | Path, kind: str | None = None, quiet: bool = False, locked: bool = False,
                  margin: float | None = None) -> tuple:
    """Re-render a study's (or a single run's) report from its run folders alone. Returns (md, html)."""
    out = Path(out)
    what = rundir.classify(out)
    if what not in ("run", "study"):
        raise UserError(f"{out} is not a study or run folder; give the --out folder of a compare, ablate, sweep or "
                        "train")
    held = contextlib.nullcontext() if locked else lock.hold(out, f"{what} folder")
    with held, signals.phase(f"writing the report in {out}", "report"):
        report, study = load(out, what, kind, quiet)
        md, html = render(report, study, study_margin(study, margin), quiet)
    echo(f"report: {md} and {html}", quiet)
    return md, html


def load(out: Path, what: str, kind: str | None = None, quiet: bool = False) -> tuple[Report, Study]:
    """The report a folder gets (`what`: rundir.classify's "run" or "study") and its study, loaded once."""
    if what == "run":
        return SINGLE, facts.load_run_study(out, warn_stderr=not quiet)
    study = facts.load_study(out, warn_stderr=not quiet)
    kind = kind or study.meta.get("kind")
    if kind is None:
        kind = "compare" if set(study.variants) <= COMPARE_VARIANTS else "ablate"
    if kind == "sweep":
        return SWEEP, study
    return (COMPARE if kind in ("compare", "train") else ablation()), study  # train --seeds: a compare of one


def study_margin(study: Study, margin: float | None) -> float:
    """The verdicts' margin: the one given, else the study's (study.json), else the default."""
    if margin is not None:
        return margin
    given = study.meta.get("margin")
    return given if isinstance(given, (int, float)) else stats.DEFAULT_MARGIN
