"""What compare and ablation reports share: loading a study, number formats, multi-seed summaries,
differences against a reference variant, and the provenance section.

Every number in a report goes through one of the formatters here, so tests can format a summary.json
value the same way and look for it in the report.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import stats
from ..config import Config, from_dict
from ..errors import UserError
from ..rundir import Run, find_runs
from .document import Document

# No absolute path here: a copied or moved study folder re-renders to the identical report.
GENERATED = ("Generated from the run folders beside this report (`<variant>/seed-<seed>/`); "
             "every number below is computed from them.")
CONFIDENCE = 0.95
ALPHA = 0.05


# ------------------------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Fmt:
    """How one kind of number is written: scale, decimals, unit; means of several seeds get extra decimals."""

    scale: float = 1.0
    digits: int = 4
    unit: str = ""
    signed: bool = False
    mean_digits: int | None = None

    def __call__(self, x, mean: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return "n/a"
        digits = self.mean_digits if mean and self.mean_digits is not None else self.digits
        return f"{x * self.scale:{'+' if self.signed else ''}.{digits}f}{self.unit}"

    def half(self, h) -> str:
        """A ± half-width: unsigned, in the same unit."""
        return Fmt(self.scale, self.mean_digits or self.digits, self.unit)(h)


PCT = Fmt(100.0, 2, "%")  # accuracies
PP = Fmt(100.0, 2, " pp", signed=True)  # differences and gaps of accuracies, in percentage points
LOSS = Fmt(1.0, 4)
COUNT = Fmt(1.0, 0, "", mean_digits=1)  # epochs
SECONDS = Fmt(1.0, 1, " s")
DIFF_COUNT = Fmt(1.0, 1, "", signed=True)


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


def fmt_duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def slug(text: str) -> str:
    """A file-name-safe form of a variant name (used for figure names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "variant"


# ------------------------------------------------------------------------------------------- a study


@dataclass
class Study:
    path: Path
    meta: dict  # study.json, or {} when absent
    groups: dict[str, list[Run]] = field(default_factory=dict)  # variant -> runs sorted by seed

    @property
    def runs(self) -> list[Run]:
        return [r for runs in self.groups.values() for r in runs]

    @property
    def multi_seed(self) -> bool:
        """True when every variant has at least two seeds, so intervals exist for all of them."""
        return all(len(runs) >= 2 for runs in self.groups.values())

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the study folder to reference)."""
        return self.path / "figures" / name, f"figures/{name}"


def load_study(study_dir) -> Study:
    path = Path(study_dir)
    runs = find_runs(path)
    if not runs:
        raise UserError(f"no finished runs under {path} (expected {path}/<variant>/seed-<seed>/summary.json); "
                        "run compare or ablate first")
    meta = {}
    if (path / "study.json").exists():
        try:
            meta = json.loads((path / "study.json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path / 'study.json'} is damaged ({e}); delete it to render from the runs alone") from None
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
    # the study's own order (e.g. basic before regularized), then anything else alphabetically
    order = [v for v in meta.get("variants", []) if v in by_variant] + sorted(set(by_variant) - set(meta.get("variants", [])))
    return Study(path, meta, {v: sorted(by_variant[v], key=lambda r: r.seed) for v in order})


# ----------------------------------------------------------------------------------- run quantities


def value(run: Run, key: str) -> float:
    v = run.summary.get(key)
    return float("nan") if v is None else float(v)


def gap(run: Run) -> float:
    """Overfitting gap: final-epoch train accuracy minus final-epoch val accuracy."""
    return value(run, "train_accuracy") - value(run, "val_accuracy")


def values(runs: list[Run], key: str) -> list[float]:
    return [gap(r) if key == "gap" else value(r, key) for r in runs]


def config_of(run: Run) -> Config:
    return from_dict(run.config)


def class_names(run: Run, num_classes: int) -> list[str]:
    ds = run.summary.get("dataset") or {}
    for key in ("class_names", "classes"):
        names = ds.get(key) or []
        if len(names) == num_classes:
            return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def confusion(pred: dict) -> np.ndarray:
    probs, labels = pred["probs"], pred["labels"].astype(np.int64)
    c = probs.shape[1]
    guess = probs.argmax(axis=1)
    return np.bincount(labels * c + guess, minlength=c * c).reshape(c, c)


def series(runs: list[Run]) -> dict:
    """{seed: metric rows}, the input of the curve plots."""
    return {r.seed: r.metrics for r in runs}


# ------------------------------------------------------------------------------ multi-seed summaries


def summary_cell(vals: list[float], fmt: Fmt) -> str:
    """One value as is; several as mean ± 95% CI half-width (Student t)."""
    ci = stats.mean_ci(vals, CONFIDENCE)
    if ci["n"] == 0:
        return "n/a"
    if ci["n"] == 1:
        return fmt(ci["mean"])
    return f"{fmt(ci['mean'], mean=True)} ± {fmt.half(ci['hi'] - ci['mean'])}"


def interval_cell(vals: list[float], fmt: Fmt) -> str:
    ci = stats.mean_ci(vals, CONFIDENCE)
    if ci["n"] < 2:
        return "n/a (1 seed)" if ci["n"] == 1 else "n/a"
    return f"[{fmt(ci['lo'], mean=True)}, {fmt(ci['hi'], mean=True)}]"


def per_seed_cell(runs: list[Run], vals: list[float], fmt: Fmt) -> str:
    return "; ".join(f"seed {r.seed}: {fmt(v)}" for r, v in zip(runs, vals))


def metric_table(doc: Document, runs: list[Run], metrics: list[tuple[str, str, Fmt]], id: str = "") -> None:
    """Rows of metric | mean ± CI | 95% CI | per-seed values (just metric | value with one seed)."""
    if len(runs) >= 2:
        rows = []
        for key, label, fmt in metrics:
            vals = values(runs, key)
            rows.append([label, summary_cell(vals, fmt), interval_cell(vals, fmt), per_seed_cell(runs, vals, fmt)])
        df = len(runs) - 1
        doc.table(["Metric", f"Mean ± {CONFIDENCE:.0%} CI", f"{CONFIDENCE:.0%} CI", "Per seed"], rows, id=id,
                  note=f"{len(runs)} seeds; intervals use Student's t with {df} degree{'s' if df > 1 else ''} of freedom.")
    else:
        doc.table(["Metric", f"Value (seed {runs[0].seed})"],
                  [[label, fmt(values(runs, key)[0])] for key, label, fmt in metrics], id=id)


# ---------------------------------------------------------------------------------------- differences


@dataclass
class Difference:
    variant: str
    reference: str
    diff: float
    lo: float
    hi: float
    p: float
    df: float
    p_holm: float = float("nan")
    n: int = 0  # fewest seeds of the two

    @property
    def tested(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi) and math.isfinite(self.p)

    @property
    def distinguishable(self) -> bool:
        """Holm-adjusted p below ALPHA and an interval that excludes zero; never with one seed."""
        return self.tested and self.p_holm < ALPHA and (self.lo > 0 or self.hi < 0)


def differences(groups: dict[str, list[Run]], reference: str, key: str) -> list[Difference]:
    """Each other variant minus the reference (Welch), with Holm's correction over the family."""
    ref = values(groups[reference], key)
    out = []
    for variant, runs in groups.items():
        if variant == reference:
            continue
        w = stats.welch(values(runs, key), ref, CONFIDENCE)
        out.append(Difference(variant, reference, w["diff"], w["lo"], w["hi"], w["p"], w["df"],
                              n=min(len(runs), len(groups[reference]))))
    for d, adj in zip(out, stats.holm([d.p for d in out])):
        d.p_holm = adj
    return out


def interval_text(d: Difference, fmt: Fmt) -> str:
    if not d.tested:
        return "n/a"
    return f"[{fmt(d.lo)}, {fmt(d.hi)}]"


def difference_table(doc: Document, diffs: list[Difference], fmt: Fmt, what: str, id: str = "") -> None:
    rows = [[f"`{d.variant}` − `{d.reference}`", fmt(d.diff), interval_text(d, fmt), fmt_p(d.p), fmt_p(d.p_holm),
             "yes" if d.distinguishable else "no"] for d in diffs]
    doc.table(["Difference", what, f"{CONFIDENCE:.0%} CI (Welch)", "Welch p", "Holm p", "Distinguishable from noise"],
              rows, id=id,
              note=f"Distinguishable means Holm-adjusted p < {ALPHA:g} and a {CONFIDENCE:.0%} interval that excludes 0; "
                   f"Holm's correction runs over the {len(diffs)} comparison(s) in this table.")


def print_table(rows: list[dict], title: str = "Summary of key differences", console=None) -> None:
    """Print report rows (same-keyed dicts, e.g. compare.comparison_rows) as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=True)
    for key in rows[0] if rows else []:
        table.add_column(str(key), overflow="fold")
    for row in rows:
        table.add_row(*(str(v).replace("`", "") for v in row.values()))
    (console or Console()).print(table)


# ----------------------------------------------------------------------------------------- provenance


def _distinct(items) -> list:
    """Unique items in first-seen order; dicts and lists compare by content."""
    seen = {}
    for i in items:
        seen.setdefault(json.dumps(i, sort_keys=True, default=str), i)
    return list(seen.values())


def _device(summary: dict) -> str:
    kind, name = str(summary.get("device", "?")), str(summary.get("device_name", "?"))
    return name if name.lower().startswith(kind.lower()) else f"{kind} ({name})"


def provenance(doc: Document, study: Study) -> None:
    """Dataset, device, software, seeds and time: everything read from the runs (and study.json)."""
    runs = study.runs
    first = runs[0].summary.get("dataset") or {}
    doc.h(1, "Setup")
    items = []
    datasets = _distinct((r.summary.get("dataset") or {}).get("name") for r in runs)
    names = first.get("class_names") or first.get("classes") or []
    wnids = first.get("classes") or []
    classes = ", ".join(f"{n} ({w})" if w and w != n else str(n) for n, w in zip(names, wnids)) if len(wnids) == len(names) \
        else ", ".join(map(str, names))
    items.append(f"**Dataset:** {first.get('name', 'unknown')} ({first.get('path', 'path unknown')})")
    if len(datasets) > 1:
        items.append(f"**Warning:** the runs used different datasets: {', '.join(map(str, datasets))}")
    items.append(f"**Split sizes:** {fmt_int(first.get('train_size'))} training images, "
                 f"{fmt_int(first.get('val_size'))} validation images")
    items.append(f"**Classes ({len(names)}):** {classes or 'unknown'}")
    skipped = len(first.get("skipped") or [])
    if skipped:
        items.append(f"**Skipped images:** {skipped} undecodable file(s) left out (`--on-bad-image skip`)")
    devices = Counter(_device(r.summary) for r in runs)
    items.append("**Device:** " + "; ".join(f"{d} × {n} runs" if len(devices) > 1 else d for d, n in devices.items()))
    software = _distinct(r.summary.get("software") or {} for r in runs)
    for sw in software:
        items.append("**Software:** " + (", ".join(f"{k} {v}" for k, v in sw.items()) or "unknown"))
    seeds = sorted({r.seed for r in runs})
    items.append(f"**Seeds:** {', '.join(map(str, seeds))} ({len(runs)} runs in all)")
    image_sizes = _distinct(r.config.get("image_size") for r in runs)
    items.append(f"**Image size:** {', '.join(f'{s}×{s}' for s in image_sizes)}")
    run_total = float(np.nansum(values(runs, "wall_seconds")))
    if isinstance(study.meta.get("wall_seconds"), (int, float)):
        items.append(f"**Total wall time:** {fmt_duration(study.meta['wall_seconds'])} "
                     f"(sum of the runs' own wall times: {fmt_duration(run_total)})")
    else:
        items.append(f"**Total wall time:** {fmt_duration(run_total)} (sum of the runs' wall times; no study.json)")
    if study.meta.get("command"):
        items.append(f"**Command:** `{study.meta['command']}`")
    doc.bullets(items)


# -------------------------------------------------------------------------------------- shared figures


def seed_curves_figure(doc: Document, study: Study, variant: str) -> None:
    from .plots import plot_seed_curves

    runs = study.groups[variant]
    path, rel = study.figure(f"curves-{slug(variant)}.png")
    plot_seed_curves(series(runs), path, title=f"{variant}: {len(runs)} seed{'s' if len(runs) > 1 else ''}")
    what = "every seed as a thin line, the mean over the epochs all seeds reached in bold" if len(runs) > 1 else "one seed"
    doc.figure(rel, f"Loss and accuracy of `{variant}`, training dashed and validation solid: {what}.")


def overlay_figure(doc: Document, study: Study) -> None:
    from .plots import plot_overlay

    path, rel = study.figure("overlay.png")
    plot_overlay({v: series(rs) for v, rs in study.groups.items()}, path)
    doc.figure(rel, "All variants on the same axes: one colour per variant, validation solid, training dashed"
                    + (", mean over seeds in bold." if study.multi_seed else "."))


def gap_figure(doc: Document, study: Study, side_by_side: bool) -> None:
    from .plots import plot_gap

    path, rel = study.figure("gap.png")
    plot_gap({v: series(rs) for v, rs in study.groups.items()}, path, side_by_side=side_by_side)
    doc.figure(rel, "Generalization gap per epoch: training accuracy minus validation accuracy "
                    "(above 0: the model fits its training images better than unseen ones).")


def forest_figure(doc: Document, study: Study, diffs: list[Difference], name: str, xlabel: str) -> None:
    from .plots import plot_forest

    path, rel = study.figure(name)
    plot_forest([f"{d.variant} − {d.reference}" for d in diffs], [d.diff * 100 for d in diffs],
                [d.lo * 100 for d in diffs], [d.hi * 100 for d in diffs], path, xlabel)
    doc.figure(rel, f"Differences with {CONFIDENCE:.0%} Welch intervals; the dashed line is no difference. "
                    "Hollow markers have no interval (one seed or zero variance).")
