"""The report of one run folder: `reglab report RUN_DIR` writes RUN_DIR/report.md, report.html and figures/.

A run folder is a study of one variant and one seed (facts.load_run_study), rendered through the sections every
report shares: its summary (the headline accuracy with its Wilson interval, the measured gap, epochs, time), the
curves, per-class accuracy, the most confident mistakes, the augmentation it recorded, the architecture it
recorded and the provenance, all read from the run folder alone. A run that did not finish is rendered with what
it has, and says so first.
"""

from __future__ import annotations

from pathlib import Path

from . import facts, provenance, sections
from .analysis import Analysis
from .document import esc
from .facts import Study
from .report import Report, render


def _title(study: Study, an: Analysis) -> str:
    run = next(iter(study.shown.values())).described[0]
    return f"reglab run: {esc(run.variant)}, seed {run.seed}"


SINGLE = Report(
    title=_title,
    reference=lambda study: next(iter(study.shown)),
    sections=(sections.estimand, sections.generated, sections.alerts, sections.design, sections.run_summary,
              sections.training_curves, sections.per_class, sections.mistakes, sections.augmentation,
              sections.architectures, sections.how_to_read, provenance.setup_section),
)


def render_single(run_dir, quiet: bool = False) -> tuple[Path, Path]:
    """Render RUN_DIR/report.md and RUN_DIR/report.html for one run folder. Returns both paths."""
    return render(SINGLE, facts.load_run_study(run_dir, warn_stderr=not quiet), quiet=quiet)
