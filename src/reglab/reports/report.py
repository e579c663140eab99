"""A report: a title, the reference the other variants are compared with, the sections in order (sections.py) and
the rows it prints on the terminal. `render` analyses a loaded study once and writes that one analysis twice:
as the document (report.md and report.html) and, unless quiet, as the terminal table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import analysis, common
from .analysis import Analysis
from .document import Document, write_document
from .facts import Study

Section = Callable[[Document, Study, Analysis], None]


@dataclass(frozen=True)
class Report:
    title: Callable[[Study, Analysis], str]  # markup
    reference: Callable[[Study], str | None]  # the variant every other one is compared with
    sections: tuple[Section, ...]
    terminal: Callable[[Study, Analysis], tuple[list[dict], str]] | None = None  # (rows, title); None: prints nothing
    # (study, reference, margin, power) -> the family its verdicts come from; None: analysis.analyze
    analyze: Callable[..., Analysis] | None = None

    def analysed(self, study: Study, margin: float, power: float = analysis.POWER) -> Analysis:
        """The one analysis the report is written from."""
        return (self.analyze or analysis.analyze)(study, self.reference(study), margin, power)


def render(report: Report, study: Study, margin: float = 0.01, quiet: bool = False, console=None) -> tuple[Path, Path]:
    """Write STUDY/report.md and STUDY/report.html (figures in STUDY/figures/) and, unless quiet, print the terminal
    table, all from one analysis. Returns both paths."""
    an = report.analysed(study, margin)
    doc = Document(report.title(study, an))
    for section in report.sections:
        section(doc, study, an)
    paths = write_document(doc, study.path, "report")
    if report.terminal is not None and not quiet:
        print_rows(*report.terminal(study, an), console=console)
    return paths


def print_rows(rows: list[dict], title: str, console=None) -> None:
    """Report rows (same-keyed dicts of markup) as a rich table: plain text, no markup, one line per cell."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_lines=True)
    for key in rows[0] if rows else []:
        table.add_column(Text(common.terminal(str(key))), overflow="fold")
    for row in rows:
        table.add_row(*(Text(common.terminal(str(v))) for v in row.values()))
    (console or Console(stderr=False)).print(table)
