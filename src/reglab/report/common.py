"""What compare, ablation and single-run reports share: loading a study (every run, whatever its status), the
facts of one run, the statistics behind every verdict, number formats, escaping, and the shared sections.

The statistics (issue 15), in one place so that every report says the same thing the same way:

* The headline outcome is the restored-best accuracy on val/ (`restored_val_accuracy`, with its integer count
  `restored_val_correct`). Whether it is an honest test accuracy depends on the design (`chosen_on`): a held-out
  selection split chose the epoch (val/ evaluated once) or val/ itself chose (the notebook's way: optimistic).
* The generalization gap is measured: clean training accuracy (restored-best weights, eval mode, un-augmented
  training images) minus the headline accuracy. Keras's running training accuracy is shown, labelled, never used.
* No run vanishes: per variant "k of n seeds finished" with an exact binomial interval; failed, interrupted,
  damaged and at-chance runs are named with their seeds and reasons (and on stderr).
* Seed level: Student t intervals clipped to the quantity's range, none at 2 seeds (df = 1).
* Comparisons against one reference variant form the family (accuracy and gap differences); each gets ONE
  Bonferroni-simultaneous interval and the verdict (differs / equivalent within ±margin / inconclusive) is read
  off that same interval. Welch at the seed level when both groups have >= 2 seeds with some spread, otherwise a
  bootstrap over images (two-level when there are several seeds), with McNemar's exact p at one seed each.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import stats
from ..errors import UserError
from ..rundir import Run, scan_study
from .document import Document, code, esc, plain, visible

# No absolute path here: a copied or moved study folder re-renders to the identical report.
GENERATED = ("Generated from the run folders beside this report (`<variant>/seed-<seed>/`); "
             "every number below is computed from them.")
CONFIDENCE = 0.95
POWER = 0.8
N_BOOT = 2000
BOOT_SEED = 0
RECOMMENDED_SEEDS = 5
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
    print(f"reglab: warning: {visible(line)}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ one run


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return NAN
    return f if math.isfinite(f) else NAN


@dataclass
class RunFacts:
    """What the reports need from one finished run, with the fallbacks for older run folders."""

    run: Run
    acc: float  # restored-best accuracy on val/ (the headline)
    n: int  # val/ images (0 when unknown)
    correct: int  # images right, as an integer count
    classes: int
    clean: float  # clean training accuracy (nan in older runs)
    clean_n: int
    gap: float  # clean - acc (measured), or final running train - final val accuracy in older runs
    gap_measured: bool
    correctness: np.ndarray | None  # bool per val image, from predictions.npz
    predictions: dict | None
    chance_p: float
    at_chance: bool
    chance_reason: str
    epochs_run: int
    epochs_max: int | None
    stopped_early: bool
    best_epoch: float
    chosen_on: str

    @property
    def variant(self) -> str:
        return self.run.variant

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def summary(self) -> dict:
        return self.run.summary

    @property
    def censored(self) -> bool:
        """Ran into the epoch cap without stopping early: its epoch count is a lower bound."""
        return self.epochs_max is not None and self.epochs_run >= self.epochs_max and not self.stopped_early

    @property
    def wilson(self) -> tuple[float, float]:
        return stats.wilson(self.correct, self.n, CONFIDENCE) if self.n else (NAN, NAN)

    def value(self, key: str) -> float:
        if key in ("acc", "gap", "clean", "epochs_run", "best_epoch"):
            return float(getattr(self, key))
        return _num(self.summary.get(key))

    def epochs_text(self) -> str:
        if self.stopped_early:
            return f"stopped early at epoch {self.epochs_run}"
        if self.censored:
            return f"ran all {self.epochs_run} epochs (the cap)"
        cap = f" of at most {self.epochs_max}" if self.epochs_max else ""
        return f"ran {self.epochs_run} epochs{cap}"

    def epochs_cell(self) -> str:
        return f"{self.epochs_run} (cap)" if self.censored else str(self.epochs_run)


def run_facts(run: Run) -> RunFacts:
    s = run.summary
    ds = s.get("dataset") or {}
    try:
        pred = run.predictions()
    except UserError:
        pred = None
    acc = _num(s.get("restored_val_accuracy"))
    n = ds.get("val_size")
    if not isinstance(n, int) or n < 1:
        n = int(len(pred["labels"])) if pred is not None else 0
    correct = s.get("restored_val_correct")
    if not isinstance(correct, int):
        correct = int(round(acc * n)) if n and math.isfinite(acc) else 0
    classes = len(ds.get("classes") or []) or (int(pred["probs"].shape[1]) if pred is not None else 0)
    clean = _num(s.get("clean_train_accuracy"))
    clean_n = s.get("clean_train_images") if isinstance(s.get("clean_train_images"), int) else 0
    if math.isfinite(clean):
        gap, measured = clean - acc, True
    else:  # an older run: the only gap it has is final running train accuracy minus final val accuracy
        gap, measured = _num(s.get("train_accuracy")) - _num(s.get("val_accuracy")), False
    correctness = None
    reasons = []
    # nothing to test against without the image count or the classes (a very old run folder): not flagged
    chance = stats.chance_level(correct, n, classes) if n and classes >= 2 else {"p": NAN, "at_chance": False}
    if chance["at_chance"]:
        base = f"1/{classes} = {PCT(1 / classes)}" if classes else "unknown"
        reasons.append(f"accuracy {PCT(acc)} ({correct} of {n}) is not shown to be above chance ({base}; "
                       f"one-sided exact binomial {p_text(chance['p'])})")
    if pred is not None:
        guess = pred["probs"].argmax(axis=1)
        correctness = guess == pred["labels"]
        if guess.size:
            counts = np.bincount(guess, minlength=pred["probs"].shape[1])
            top = int(counts.argmax())
            share = counts[top] / guess.size
            true_share = float(np.mean(pred["labels"] == top))
            if share > 0.5 and share > 2 * true_share:
                names = class_names(run, pred["probs"].shape[1])
                reasons.append(f"predicts one class ({esc(names[top])}) for {RATE(share)} of the images "
                               f"(it is {RATE(true_share)} of them)")
    epochs_max = s.get("epochs_max", run.config.get("epochs"))
    return RunFacts(
        run=run, acc=acc, n=n, correct=correct, classes=classes, clean=clean, clean_n=clean_n, gap=gap,
        gap_measured=measured, correctness=correctness, predictions=pred, chance_p=chance["p"],
        at_chance=bool(reasons), chance_reason="; ".join(reasons),
        epochs_run=int(_num(s.get("epochs_run")) if math.isfinite(_num(s.get("epochs_run"))) else 0),
        epochs_max=int(epochs_max) if isinstance(epochs_max, (int, float)) else None,
        stopped_early=bool(s.get("stopped_early")), best_epoch=_num(s.get("best_epoch")),
        chosen_on=str(s.get("chosen_on") or "val"))


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


PROBLEM_WORDS = {"damaged": ("damaged", "is damaged"), "failed": ("failed", "failed"),
                 "interrupted": ("interrupted", "was interrupted"), "running": ("not finished", "has not finished")}


def problem_detail(run: Run) -> str:
    """Why a run is not among the finished ones, in a few words (markup, without the status)."""
    s = run.summary
    if run.status == "damaged":
        return esc(run.problem)
    if run.status == "failed":
        return esc(s.get("failure") or "no reason recorded")
    if run.status == "interrupted":
        done = s.get("epochs_run")
        return (f"stopped{f' after epoch {done}' if isinstance(done, int) else ''}; rerun the study's command "
                "to finish it")
    if run.status == "running":
        return "still training, or killed before it wrote its results"
    return "unknown status"


def problem_reason(run: Run) -> str:
    word = PROBLEM_WORDS.get(run.status, (f"status {run.status}",))[0]
    return f"**{esc(word)}**: {problem_detail(run)}"


def run_label(run: Run) -> str:
    return f"{code(run.variant)} seed {run.seed}"


# ------------------------------------------------------------------------------------------- a study


@dataclass
class Variant:
    name: str
    color: str
    runs: list[RunFacts]  # finished, by seed
    others: list[Run]  # failed, interrupted, running, damaged

    @property
    def total(self) -> int:
        return len(self.runs) + len(self.others)

    @property
    def at_chance(self) -> bool:
        """Every finished seed is at chance: the variant as a whole shows no learning."""
        return bool(self.runs) and all(f.at_chance for f in self.runs)

    def values(self, key: str) -> list[float]:
        return [f.value(key) for f in self.runs]

    def mean(self, key: str) -> float:
        return stats.mean_ci(self.values(key))["mean"]


@dataclass
class Study:
    path: Path
    meta: dict  # study.json, or {} when absent
    variants: dict[str, Variant]  # those with at least one finished run, in the study's order
    unfinished: dict[str, Variant]  # variants none of whose runs finished
    alerts: list[str] = field(default_factory=list)  # markup warnings at the top of the report
    design: str = "val"  # "val", "selection split" or "mixed"

    @property
    def runs(self) -> list[RunFacts]:
        return [f for v in self.variants.values() for f in v.runs]

    @property
    def all_variants(self) -> dict[str, Variant]:
        order = [v for v in self.meta.get("variants", []) if v in self.variants or v in self.unfinished]
        rest = sorted((set(self.variants) | set(self.unfinished)) - set(order))
        merged = {**self.variants, **self.unfinished}
        return {v: merged[v] for v in order + rest}

    @property
    def problems(self) -> list[Run]:
        return [r for v in self.all_variants.values() for r in v.others]

    @property
    def colors(self) -> dict[str, str]:
        return {name: v.color for name, v in self.all_variants.items()}

    @property
    def multi_seed(self) -> bool:
        return all(len(v.runs) >= 2 for v in self.variants.values())

    @property
    def fewest_seeds(self) -> int:
        return min(len(v.runs) for v in self.variants.values())

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the study folder to reference)."""
        return self.path / "figures" / name, f"figures/{name}"


def _status_counts(runs: list[Run]) -> str:
    c = Counter(r.status for r in runs)
    return ", ".join(f"{n} {s}" for s, n in sorted(c.items()))


def load_study(study_dir, warn_stderr: bool = True) -> Study:
    """Every run under DIR, checked. A study without one finished run is a UserError (one line); damaged and
    unfinished runs are kept, named in the report and (with warn_stderr) on stderr, one line each."""
    from .plots import color

    path = Path(study_dir)
    scanned = scan_study(path)
    if not any(r.status == "finished" for r in scanned):
        found = f" (found {_status_counts(scanned)})" if scanned else \
            f" (expected {path}/<variant>/seed-<seed>/summary.json)"
        raise UserError(f"no finished runs under {path}{found}; run compare or ablate first")
    meta = {}
    if (path / "study.json").exists():
        try:
            meta = json.loads((path / "study.json").read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path / 'study.json'} is damaged ({e}); delete it to render from the runs alone") from None
    by_variant: dict[str, list[Run]] = {}
    for run in scanned:
        by_variant.setdefault(run.variant, []).append(run)
    listed = [v for v in meta.get("variants", []) if v in by_variant]
    order = listed + sorted(set(by_variant) - set(listed))
    variants, unfinished = {}, {}
    for i, name in enumerate(order):
        runs = sorted(by_variant[name], key=lambda r: r.seed)
        v = Variant(name, color(i), [run_facts(r) for r in runs if r.status == "finished"],
                    [r for r in runs if r.status != "finished"])
        (variants if v.runs else unfinished)[name] = v
    study = Study(path, meta, variants, unfinished)
    _check(study, warn_stderr)
    return study


def _check(study: Study, warn_stderr: bool) -> None:
    """Fill study.alerts (for the report) and say the same on stderr, one line each."""
    lines = []
    for run in study.problems:
        study.alerts.append(f"Run {run_label(run)} ({esc(run.path.parent.name + '/' + run.path.name)}) is not in "
                            f"the results: {problem_reason(run)}.")
        verb = PROBLEM_WORDS.get(run.status, ("", f"has status {run.status}"))[1]
        lines.append(f"run {run.path} {verb}: {plain(problem_detail(run))}")
    for f in study.runs:
        if f.at_chance:
            lines.append(f"run {f.run.path} is at chance: {plain(f.chance_reason)}")
    prints = {}
    for f in study.runs:
        fp = ((f.summary.get("dataset") or {}).get("identity") or {}).get("fingerprint")
        prints.setdefault(fp, []).append(f)
    known = {fp: fs for fp, fs in prints.items() if fp is not None}
    if len(known) > 1:
        parts = "; ".join(f"data `{visible(fp)}`: " + ", ".join(run_label(f.run) for f in fs) for fp, fs in known.items())
        study.alerts.append(f"**These runs were trained on different data** (the fingerprints of their file lists "
                            f"differ): {parts}. Comparisons between them mix datasets.")
        lines.append(f"runs under {study.path} were trained on different data: " + plain(parts))
    sizes = {f.n for f in study.runs}
    if len(known) <= 1 and len(sizes) > 1:
        study.alerts.append(f"**The runs were evaluated on val/ sets of different sizes** "
                            f"({', '.join(fmt_int(s) for s in sorted(sizes))} images): they used different data.")
        lines.append(f"runs under {study.path} were evaluated on val/ sets of different sizes")
    designs = {f.chosen_on for f in study.runs}
    study.design = designs.pop() if len(designs) == 1 else "mixed"
    if study.design == "mixed":
        by = {}
        for f in study.runs:
            by.setdefault(f.chosen_on, []).append(run_label(f.run))
        study.alerts.append("**Mixed designs**: " + "; ".join(
            f"{', '.join(rs)} chose on {'val/ (optimistic)' if d == 'val' else 'a selection split (test accuracy)'}"
            for d, rs in by.items()) + ". Their headline accuracies do not mean the same thing and are not comparable.")
        lines.append(f"runs under {study.path} mix designs (some chose their epoch on val/, some on a selection split)")
    if warn_stderr:
        for line in lines:
            warn(line)


def design_text(runs: list[RunFacts], design: str) -> str:
    """Which design produced the headline accuracy, said plainly."""
    if design == "mixed":
        return ("**How the headline accuracy was obtained: mixed designs.** Some runs chose their best epoch on "
                "val/ (selected on the same images that judge it: optimistic), others on a selection split (a test "
                "accuracy). Read each run's numbers with its own design; comparisons across designs are not fair.")
    if design == "selection split":
        sizes = sorted({(f.summary.get("dataset") or {}).get("selection_size") for f in runs} - {None})
        n = " or ".join(fmt_int(s) for s in sizes) or "the held-out"
        return (f"**How the headline accuracy was obtained:** test accuracy: val/ evaluated once, selection on {n} "
                "held-out training images (`--selection-split`): early stopping, the learning-rate schedule and the "
                "best checkpoint never saw val/.")
    return ("**How the headline accuracy was obtained:** restored-best accuracy on val/, where val/ also chose the "
            "best epoch (the notebook's design): selected on the same images that judge it: optimistic. "
            "Train with `--selection-split 0.1` for an honest test accuracy.")


# ------------------------------------------------------------------------------ seed-level summaries


def seed_summary(vals: list[float], fmt: Fmt, bounds=ACC_BOUNDS) -> str:
    """One value as is; two as the two values (no interval at df = 1); three or more as mean [95% t interval],
    clipped to the quantity's range (marked)."""
    ci = stats.mean_ci(vals, CONFIDENCE, bounds)
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if ci["n"] == 0:
        return "n/a"
    if ci["n"] == 1:
        return fmt(finite[0])
    if min(finite) == max(finite):
        return f"{fmt(finite[0])} ({'both' if ci['n'] == 2 else 'all ' + str(ci['n'])} seeds)"
    if ci["n"] == 2:
        return f"{fmt(finite[0])}, {fmt(finite[1])} (mean {fmt(ci['mean'], mean=True)})"
    clipped = " (clipped)" if ci["clipped"] else ""
    return f"{fmt(ci['mean'], mean=True)} [{fmt(ci['lo'], mean=True)}, {fmt(ci['hi'], mean=True)}]{clipped}"


def accuracy_cell(v: Variant, chance_flag: bool = True) -> str:
    """The headline accuracy of a variant: one seed with its Wilson interval (images), several as seed_summary."""
    if len(v.runs) == 1:
        f = v.runs[0]
        lo, hi = f.wilson
        text = f"{PCT(f.acc)} ({f.correct:,} of {f.n:,}; Wilson 95% [{PCT(lo)}, {PCT(hi)}])"
    else:
        text = seed_summary(v.values("acc"), PCT)
    k = sum(f.at_chance for f in v.runs)
    if chance_flag and k:
        text += " **at chance**" if k == len(v.runs) else f" (**{k} of {len(v.runs)} at chance**)"
    return text


def epochs_cell(v: Variant) -> str:
    """Epochs run, censored at the cap: '50 (cap)' for one run, '≥ 31.5 (1 of 2 at the 50-epoch cap)' for a mean
    that includes runs stopped by the cap."""
    runs = v.runs
    censored = [f for f in runs if f.censored]
    if len(runs) == 1:
        return runs[0].epochs_cell() + (" (stopped early)" if runs[0].stopped_early else "")
    vals = [float(f.epochs_run) for f in runs]
    if censored:
        cap = f"{censored[0].epochs_max}-epoch " if len({f.epochs_max for f in censored}) == 1 else ""
        return (f"≥ {COUNT(float(np.mean(vals)), mean=True)} ({len(censored)} of {len(runs)} at the {cap}cap; "
                + ", ".join(f.epochs_cell() for f in runs) + ")")
    return seed_summary(vals, COUNT, NONNEG)


def wall_cell(v: Variant) -> str:
    """Wall time: a measurement of the machine (mean and range), never tested."""
    vals = [x for x in v.values("wall_seconds") if math.isfinite(x)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return SECONDS(vals[0])
    return f"{SECONDS(float(np.mean(vals)))} (range {SECONDS(min(vals))} to {SECONDS(max(vals))})"


def epochs_sentence(v: Variant) -> str:
    """'`basic` seed 0 stopped early at epoch 12.' or '`basic`: seed 0 ran all 50 epochs (the cap); seed 1 ...'"""
    if len(v.runs) == 1:
        return f"{code(v.name)} seed {v.runs[0].seed} {v.runs[0].epochs_text()}."
    return f"{code(v.name)}: " + "; ".join(f"seed {f.seed} {f.epochs_text()}" for f in v.runs) + "."


def per_seed_cell(v: Variant, key: str, fmt: Fmt) -> str:
    out = []
    for f in v.runs:
        x = f.value(key)
        text = f.epochs_cell() if key == "epochs_run" else fmt(x)
        if key == "acc" and f.at_chance:
            text += " (at chance)"
        if key == "gap" and not f.gap_measured:
            text += " (old run: running train − final val)"
        out.append(f"seed {f.seed}: {text}")
    return "; ".join(out)


RUN_METRICS = [  # key, label, format, bounds
    ("acc", "Restored-best accuracy on val/ (headline)", PCT, ACC_BOUNDS),
    ("clean", "Clean training accuracy (restored-best weights, eval mode, un-augmented)", PCT, ACC_BOUNDS),
    ("gap", "Generalization gap (clean training − headline accuracy)", PP, GAP_BOUNDS),
    ("train_accuracy", "Final-epoch training accuracy (Keras-style running value, augmentation and dropout on)",
     PCT, ACC_BOUNDS),
    ("restored_val_loss", "Restored-best loss on val/", LOSS, NONNEG),
    ("epochs_run", "Epochs run", COUNT, NONNEG),
    ("best_epoch", "Best epoch", COUNT, NONNEG),
    ("wall_seconds", "Wall time (this machine)", SECONDS, NONNEG),
]


def metric_table(doc: Document, v: Variant, id: str = "") -> None:
    """A variant's metrics: one seed as values; several as summary (see seed_summary) and every seed's value."""
    rows = []
    for key, label, fmt, bounds in RUN_METRICS:
        if key == "acc":
            cell = accuracy_cell(v)
        elif key == "epochs_run":
            cell = epochs_cell(v)
        elif key == "wall_seconds":
            cell = wall_cell(v)
        else:
            cell = seed_summary(v.values(key), fmt, bounds)
        rows.append([label, cell] + ([per_seed_cell(v, key, fmt)] if len(v.runs) > 1 else []))
    n = len(v.runs)
    if n > 1:
        header = ["Metric", "Mean [95% t interval]" if n > 2 else "Seeds (mean)", "Per seed"]
        note = (f"{n} seeds: Student t intervals with {n - 1} degrees of freedom, clipped to the quantity's range "
                "(accuracies 0–100%, epochs and times at least 0; a clipped interval is marked)." if n > 2 else
                "2 seeds: no interval is shown, since one with 1 degree of freedom is too wide to mean anything; "
                "the two values are.")
    else:
        header, note = ["Metric", f"Value (seed {v.runs[0].seed})"], \
            "One seed: the Wilson interval covers the sampling of validation images only, not seed-to-seed variation."
    if any(not f.gap_measured for f in v.runs):
        note += (" Older run folders have no clean training accuracy: their gap is final running training accuracy "
                 "minus final validation accuracy, which understates overfitting under augmentation and dropout.")
    doc.table(header, rows, id=id, note=note)


# ---------------------------------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    metric: str  # "accuracy" or "gap"
    variant: str
    reference: str
    diff: float
    lo: float = NAN
    hi: float = NAN
    level: float = CONFIDENCE
    clipped: bool = False
    method: str = "none"
    seed_level: bool = False
    df: float = NAN
    p: float = NAN
    mcnemar: dict | None = None
    mdd: float = NAN
    sup: dict | None = None
    verdict: str = "inconclusive"
    not_ranked: bool = False
    note: str = ""
    seeds: list[float] = field(default_factory=list)  # each seed of `variant` minus the reference's mean

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)


@dataclass
class Analysis:
    reference: str
    margin: float
    m: int
    level: float
    accuracy: list[Comparison]
    gap: list[Comparison]

    @property
    def family(self) -> str:
        return (f"{self.m} comparison{'s' if self.m != 1 else ''}, Bonferroni-simultaneous 95% intervals "
                f"(each at {fmt_level(self.level)})")

    def get(self, metric: str, variant: str) -> Comparison:
        return next(c for c in (self.accuracy if metric == "accuracy" else self.gap) if c.variant == variant)


def analyze(study: Study, reference: str, margin: float = 0.01) -> Analysis:
    """Every other variant against `reference`, on the headline accuracy and on the measured gap: the family
    the conclusions draw their verdicts from, with Bonferroni-simultaneous intervals."""
    others = [v for v in study.variants if v != reference]
    m = 2 * len(others)
    level = stats.simultaneous_confidence(CONFIDENCE, m)
    acc = [_compare(study.variants[v], study.variants[reference], "accuracy", level, margin) for v in others]
    gap = [_compare(study.variants[v], study.variants[reference], "gap", level, margin) for v in others]
    return Analysis(reference, margin, m, level, acc, gap)


def min_detectable(sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float, power: float = POWER) -> float:
    """stats.min_detectable_difference; where scipy's noncentral t returns nan in its far lower tail (small df,
    small alpha: brentq then raises), the same computation with that negligible tail taken as 0."""
    try:
        return stats.min_detectable_difference(sd_a, n_a, sd_b, n_b, alpha=alpha, power=power)
    except ValueError:
        pass
    from scipy import optimize
    from scipy import stats as sps

    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))

    def pw(nc: float) -> float:
        lower = float(sps.nct.cdf(-crit, df, nc))
        return float(sps.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)

    hi = 1.0
    while pw(hi) < power and hi < 1e6:
        hi *= 2.0
    try:
        nc = optimize.brentq(lambda c: pw(c) - power, 0.0, hi, xtol=1e-10)
    except ValueError:
        return NAN
    return float(nc * math.sqrt(va + vb))


def _common_images(fs: list[RunFacts]) -> int | None:
    sizes = {f.n for f in fs}
    n = sizes.pop() if len(sizes) == 1 else None
    return n if n else None


def _correctness(fs: list[RunFacts]) -> np.ndarray | None:
    if any(f.correctness is None for f in fs) or len({f.correctness.size for f in fs}) != 1:
        return None
    return np.stack([f.correctness for f in fs])


def _compare(V: Variant, R: Variant, metric: str, level: float, margin: float) -> Comparison:
    key = "acc" if metric == "accuracy" else "gap"
    a, b = V.values(key), R.values(key)
    n_images = _common_images(V.runs + R.runs) if metric == "accuracy" else None
    w = stats.welch(a, b, level, n_images)
    c = Comparison(metric, V.name, R.name, w["diff"], level=level)
    ref_mean = stats.mean_ci(b)["mean"]
    c.seeds = [x - ref_mean for x in a]
    if len(a) >= 2 and len(b) >= 2 and not w["zero_variance"] and math.isfinite(w["lo"]):
        c.lo, c.hi, c.df, c.p, c.seed_level = w["lo"], w["hi"], w["df"], w["p"], True
        c.method = f"Welch t, seed level (df {w['df']:.1f})"
        sd_a, sd_b = stats.mean_ci(a)["sd"], stats.mean_ci(b)["sd"]
        c.mdd = min_detectable(sd_a, len(a), sd_b, len(b), alpha=1 - level)
        c.sup = stats.prob_superiority(a, b)
    else:
        if w["zero_variance"]:
            c.note = "no seed-to-seed spread (every seed of both variants at the same value)"
        elif len(a) < 2 or len(b) < 2:
            c.note = "fewer than 2 seeds on a side"
        else:
            c.note = "no seed-level interval"
        missing = _image_level(c, V, R, metric, level)
        c.note += f", and {missing}" if missing else ": decided at the image level"
    bound = 1.0 if metric == "accuracy" else 2.0  # the difference's possible range
    if c.has_interval and (c.lo < -bound or c.hi > bound):
        c.clipped = True
        c.lo, c.hi = max(c.lo, -bound), min(c.hi, bound)
    c.verdict = stats.verdict(c.lo, c.hi, margin)
    c.not_ranked = V.at_chance and R.at_chance
    return c


def _image_level(c: Comparison, V: Variant, R: Variant, metric: str, level: float) -> str:
    """Fill c with the image-level interval; returns why there is none ("" when there is one)."""
    cv, cr = _correctness(V.runs), _correctness(R.runs)
    if cv is None or cr is None or cv.shape[1] != cr.shape[1]:
        return "no image-level interval: predictions.npz missing or scored on different images"
    one_each = len(V.runs) == 1 and len(R.runs) == 1
    if metric == "accuracy":
        boot = stats.two_level_bootstrap({"v": cv, "r": cr}, "r", level, N_BOOT, BOOT_SEED)["v"]
        c.lo, c.hi = boot["lo"], boot["hi"]
        if one_each:
            c.mcnemar = stats.mcnemar_exact(cv[0], cr[0])
    else:
        if not all(f.gap_measured and f.clean_n > 0 for f in V.runs + R.runs):
            return "no image-level interval for a gap without a measured clean training accuracy (older runs)"
        c.lo, c.hi = gap_bootstrap(V.runs, R.runs, level)
    c.method = ("bootstrap over images (one seed each)" if one_each else
                "two-level bootstrap (seeds, then images)") + f", {N_BOOT} replicates, seed {BOOT_SEED}"
    return ""


def gap_bootstrap(A: list[RunFacts], R: list[RunFacts], confidence: float, n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile interval of mean gap(A) - mean gap(R), resampling as stats.two_level_bootstrap does: one shared
    resample of the val/ images per replicate, each variant's seeds resampled, and each run's clean training
    accuracy redrawn from its binomial (its clean sample's images are not stored one by one)."""
    rng = np.random.default_rng(seed)
    groups = [A, R]
    correct = [np.stack([f.correctness for f in g]).T.astype(float) for g in groups]  # (images, seeds)
    clean_p = [np.array([min(max(f.clean, 0.0), 1.0) for f in g]) for g in groups]
    clean_n = [np.array([f.clean_n for f in g]) for g in groups]
    n_img = correct[0].shape[0]
    boot = [np.empty(n_boot), np.empty(n_boot)]
    chunk = 250
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n_img, size=(b, n_img))
        weights = np.bincount((idx + n_img * np.arange(b)[:, None]).ravel(), minlength=b * n_img)
        weights = weights.reshape(b, n_img).astype(float)
        for j in range(2):
            s = correct[j].shape[1]
            val = weights @ correct[j] / n_img
            clean = rng.binomial(clean_n[j], clean_p[j], size=(b, s)) / clean_n[j]
            pick = rng.integers(0, s, size=(b, s))
            boot[j][start:start + b] = np.take_along_axis(clean - val, pick, axis=1).mean(axis=1)
    lo, hi = np.quantile(boot[0] - boot[1], [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def interval_text(c: Comparison) -> str:
    if not c.has_interval:
        return "none"
    return f"[{PP(c.lo)}, {PP(c.hi)}]" + (" (clipped to the possible range)" if c.clipped else "")


def _inside(c: Comparison, margin: float) -> bool:
    return c.has_interval and -margin < c.lo and c.hi < margin


def verdict_text(c: Comparison, margin: float) -> str:
    """The verdict, read off the interval shown beside it (markup)."""
    V, R = code(c.variant), code(c.reference)
    if c.not_ranked:
        return f"**not ranked**: {V} and {R} are both at chance"
    if c.verdict == "differs":
        up = c.lo > 0
        size = pp_abs(c.diff)
        if c.metric == "accuracy":
            what = f"{V} is {'higher' if up else 'lower'} than {R} by {size}"
        else:
            what = (f"{V}'s gap is {'larger (it overfits more)' if up else 'smaller (it overfits less)'} than "
                    f"{R}'s by {size}")
        label = f"differs, but by less than the {fmt_margin(margin)} margin" if _inside(c, margin) else "differs"
        return f"**{label}**: {what}"
    if c.verdict == "equivalent":
        return f"**equivalent within {fmt_margin(margin)}**: the whole interval lies inside the margin"
    if not c.has_interval:
        return f"**inconclusive**: no interval ({c.note or 'too little data'})"
    return f"**inconclusive**: the data allow differences from {PP(c.lo)} to {PP(c.hi)}"


def verdict_word(c: Comparison, margin: float) -> str:
    """The verdict in a few words, for the terminal and table cells."""
    if c.not_ranked:
        return "not ranked (both at chance)"
    if c.verdict == "differs":
        up = c.lo > 0
        word = ("higher" if up else "lower") if c.metric == "accuracy" else ("larger" if up else "smaller")
        small = f", < {fmt_margin(margin)}" if _inside(c, margin) else ""
        return f"differs: {word} by {pp_abs(c.diff)}{small}"
    if c.verdict == "equivalent":
        return f"equivalent within {fmt_margin(margin)}"
    return "inconclusive" + (f" ({PP(c.lo)} to {PP(c.hi)})" if c.has_interval else " (no interval)")


def mdd_text(c: Comparison) -> str:
    if not c.seed_level:
        return "n/a (image level)"
    bound = 1.0 if c.metric == "accuracy" else 2.0
    if math.isfinite(c.mdd) and c.mdd > bound:
        return f"none: beyond the possible range (> {pp_abs(bound)})"
    return f"≈ {pp_abs(c.mdd)}" if math.isfinite(c.mdd) else "n/a"


def superiority_text(c: Comparison) -> str:
    if not c.sup or not c.sup["pairs"]:
        return "n/a"
    wins = c.sup["p"] * c.sup["pairs"]
    return f"{c.sup['p']:.2f} (in {wins:g} of {c.sup['pairs']} seed pairs; resolution 1/{c.sup['pairs']})"


def comparison_table(doc: Document, an: Analysis, comps: list[Comparison], what: str, id: str = "") -> None:
    rows = []
    for c in comps:
        rows.append([f"{code(c.variant)} − {code(c.reference)}", PP(c.diff), interval_text(c), c.method,
                     verdict_text(c, an.margin), mdd_text(c), superiority_text(c),
                     fmt_p(c.mcnemar["p"]) if c.mcnemar else "n/a"])
    doc.table(["Comparison", f"Difference in {what}", "Simultaneous 95% interval", "Method", "Verdict",
               "Min. detectable difference (80% power)", "P(a seed of the first beats a seed of the second)",
               "McNemar exact p"], rows, id=id,
              note=f"{an.family}; the verdict is read off the interval beside it: differs (the interval excludes 0), "
                   f"equivalent within {fmt_margin(an.margin)} (the interval lies inside the margin: two one-sided "
                   "tests at the same level), otherwise inconclusive. The minimum detectable difference is approximate "
                   "(noncentral t with the Welch degrees of freedom taken as known: optimistic at few seeds).")


def forest_figure(doc: Document, study: Study, an: Analysis, comps: list[Comparison], name: str, what: str) -> None:
    from .plots import plot_forest

    items = [dict(label=f"{c.variant} − {c.reference}", diff=c.diff * 100, lo=c.lo * 100, hi=c.hi * 100,
                  seeds=[s * 100 for s in c.seeds], color=study.colors[c.variant],
                  clipped_lo=c.clipped and c.lo <= -(1.0 if c.metric == "accuracy" else 2.0),
                  clipped_hi=c.clipped and c.hi >= (1.0 if c.metric == "accuracy" else 2.0)) for c in comps]
    path, rel = study.figure(name)
    limit = 100.0 if comps and comps[0].metric == "accuracy" else 200.0
    plot_forest(items, path, f"Difference in {what} (pp)", limit=limit, margin=an.margin * 100)
    doc.figure(rel, f"Differences in {what}, sorted by effect: the simultaneous interval of each comparison (line; "
                    "an arrow where it runs past the edge of the possible range), its estimate (large dot), and "
                    "every seed of the variant minus the reference's mean (small dots). Dashed: no difference; "
                    f"shaded: the {fmt_margin(an.margin)} margin. A hollow dot has no interval.")


def method_notes(an: Analysis | None, study_runs: list[RunFacts]) -> list[str]:
    """How to read the statistics (bullets)."""
    out = []
    if an is not None and an.m:
        out.append(f"**Family:** every comparison the conclusions draw a verdict from (accuracy and gap, each variant "
                   f"against {code(an.reference)}): {an.family}. Bonferroni rather than Holm because Holm's step-down "
                   "has no matching intervals, and a verdict must agree with the interval printed beside it.")
        out.append(f"**Verdicts:** differs / equivalent within {fmt_margin(an.margin)} / inconclusive, read off the "
                   "interval. Inconclusive means these data cannot decide either way; it comes with the range of differences "
                   "the data allow.")
        out.append("**Seed level:** Welch's t on the seeds' values (accuracies as integer correct counts, so seeds at "
                   "the same accuracy have exactly zero spread), when both variants have at least 2 seeds with some "
                   "spread. Next to it: the approximate minimum detectable difference at 80% power, and the "
                   "probability that a seed of one variant beats a seed of the other, over all seed pairs (ties half), "
                   "a description whose resolution is one over the number of pairs.")
        out.append(f"**Image level:** otherwise, a percentile bootstrap ({N_BOOT} replicates, numpy seed {BOOT_SEED}) "
                   "that resamples the validation images (the same resample for both variants: the comparison is "
                   "paired) and, with several seeds, the seeds within each variant (two-level bootstrap); the gap's "
                   "clean training accuracy is redrawn from its binomial. At one seed each, McNemar's exact test on "
                   "the images where the two runs disagree is shown beside it.")
    out.append("**Per variant:** one seed: a Wilson interval for its accuracy (the validation images are a sample); "
               "three or more seeds: Student t intervals clipped to the quantity's range; two seeds: the two "
               "values, no interval (1 degree of freedom).")
    out.append("**At chance:** a run whose accuracy is not shown to be above 1/classes (one-sided exact binomial "
               "test, 5%), or that predicts one class for more than half of the images (and more than twice as often "
               "as that class occurs), is flagged; it stays in the means, flagged, and two variants that are both at "
               "chance are never ranked.")
    out.append("**Epochs:** a run that reached the epoch cap without stopping early is censored: its count is shown "
               "as \"N (cap)\" and a mean over such runs as a lower bound (≥).")
    out.append("**Wall time** is a measurement of the machine the runs used, reported and never tested.")
    if study_runs and min(Counter(f.variant for f in study_runs).values()) < RECOMMENDED_SEEDS:
        out.append(f"**Seeds:** fewer than {RECOMMENDED_SEEDS} seeds per variant: run at least {RECOMMENDED_SEEDS} "
                   f"(`--seeds {RECOMMENDED_SEEDS}`) for seed-level intervals narrow enough to decide anything but "
                   "large effects.")
    return out


# ------------------------------------------------------------------------------------- runs and chance


def runs_section(doc: Document, study: Study) -> None:
    """No run vanishes: per variant k of n finished (exact interval), what did not finish, what is at chance."""
    doc.h(1, "Runs")
    rows = []
    for name, v in study.all_variants.items():
        k, n = len(v.runs), v.total
        lo, hi = stats.binomial_ci(k, n, CONFIDENCE)
        chance = [f for f in v.runs if f.at_chance]
        rows.append([code(name), f"{k} of {n}", f"[{RATE(lo)}, {RATE(hi)}]",
                     "; ".join(f"seed {r.seed}: {problem_reason(r)}" for r in v.others) or "none",
                     "; ".join(f"seed {f.seed}" for f in chance) or "none"])
    doc.table(["Variant", "Seeds finished", "95% exact binomial interval (finishing rate)", "Not finished",
               "At chance"], rows, id="runs",
              note="Every run folder under the study is counted here; only finished runs enter the results below.")
    flagged = [f for f in study.runs if f.at_chance]
    if flagged:
        doc.bullets([f"{run_label(f.run)} is **at chance**: {f.chance_reason}. It stays in the means, flagged."
                     for f in flagged])


def alerts(doc: Document, study: Study) -> None:
    for text in study.alerts:
        doc.warning("**Warning:** " + text)


# ------------------------------------------------------------------------------------------ architecture


def config_of(run: Run):
    from ..config import from_dict

    return from_dict(run.config)


def architecture(doc: Document, f: RunFacts, ident: str, level: int = 3, title: str = "") -> None:
    """The layer table (rebuilt from the run's own config.yaml, so it shows what was trained) and the diagram:
    Mermaid in the Markdown, an inline SVG in the HTML."""
    from ..models import build_model, count_params, layer_table, mermaid
    from .plots import model_svg

    try:
        cfg = config_of(f.run)
        model = build_model(cfg, f.classes or 10)
        table = layer_table(model, cfg.image_size)
    except (UserError, TypeError, ValueError, KeyError, RuntimeError) as e:
        doc.p(f"The architecture cannot be rebuilt from this run's config.yaml ({esc(type(e).__name__)}: {esc(e)}).")
        return
    doc.h(level, title or f"Architecture of {code(f.variant)}")
    doc.table(["Layer (type)", "Output shape", "Param #"],
              [[f"{esc(r['name'])} ({esc(r['type'])})", esc(r["output_shape"]), fmt_int(r["params"])] for r in table])
    t, nt = count_params(model)
    doc.p(f"Total params: {fmt_int(t + nt)}; trainable: {fmt_int(t)}; non-trainable (batch-norm statistics): "
          f"{fmt_int(nt)}.")
    doc.diagram(mermaid(model, cfg.image_size), model_svg(table, cfg.image_size, ident=slug(ident)),
                f"The layers of {code(f.variant)} in data order, grouped by block.")


# ----------------------------------------------------------------------------------------- figures


def series(runs: list[RunFacts]) -> dict:
    """{seed: metric rows}, the input of the curve plots."""
    return {f.seed: f.run.metrics for f in runs}


def seed_curves_figure(doc: Document, study: Study, v: Variant) -> None:
    from .plots import plot_seed_curves

    path, rel = study.figure(f"curves-{slug(v.name)}.png")
    n = len(v.runs)
    plot_seed_curves(series(v.runs), path, title=f"{v.name}: {n} seed{'s' if n > 1 else ''}", c=v.color)
    what = "every seed as a thin line, the mean over the epochs all seeds reached in bold" if n > 1 else "one seed"
    doc.figure(rel, f"Loss and accuracy of {code(v.name)} per epoch, training dashed (Keras-style running values, "
                    f"augmentation and dropout on) and evaluation solid: {what}.")


def overlay_figure(doc: Document, study: Study) -> None:
    from .plots import plot_overlay

    path, rel = study.figure("overlay.png")
    plot_overlay({name: series(v.runs) for name, v in study.variants.items()}, path, colors=study.colors)
    doc.figure(rel, "All variants on the same axes, one colour per variant (the same in every figure): evaluation "
                    "solid, training dashed" + (", mean over seeds in bold." if study.multi_seed else "."))


def gap_figure(doc: Document, study: Study) -> None:
    from .plots import plot_gap_grid

    panels = {name: {"series": series(v.runs),
                     "measured": [(f.best_epoch if math.isfinite(f.best_epoch) else f.epochs_run, f.clean, f.acc)
                                  for f in v.runs if f.gap_measured]}
              for name, v in study.variants.items()}
    path, rel = study.figure("gap.png")
    plot_gap_grid(panels, path, colors=study.colors)
    doc.figure(rel, "One panel per variant (shared axes): accuracy per epoch, training dashed (running, augmentation "
                    "on) and evaluation solid; the vertical bar at each seed's best epoch is its measured "
                    "generalization gap, from clean training accuracy (hollow) to restored-best accuracy (dot).")


# ----------------------------------------------------------------------------------------- provenance


def _distinct(items) -> list:
    """Unique items in first-seen order; dicts and lists compare by content; None dropped."""
    seen = {}
    for i in items:
        if i is None:
            continue
        seen.setdefault(json.dumps(i, sort_keys=True, default=str), i)
    return list(seen.values())


def _prov(f: RunFacts) -> dict:
    p = f.summary.get("provenance")
    return p if isinstance(p, dict) else {}


def _software(f: RunFacts) -> dict:
    sw = _prov(f).get("software") or f.summary.get("software") or {}
    return sw if isinstance(sw, dict) else {}


def _device(f: RunFacts) -> str:
    p, s = _prov(f), f.summary
    kind = str(p.get("device") or s.get("device") or "?")
    name = str(p.get("device_name") or s.get("device_name") or "?")
    return name if name.lower().startswith(kind.lower()) else f"{kind}: {name}"


def _git(f: RunFacts) -> str:
    g = _prov(f).get("git")
    if not isinstance(g, dict) or not g.get("commit"):
        return "not a git checkout (or not recorded)"
    return f"{str(g['commit'])[:12]}{' (dirty: uncommitted changes)' if g.get('dirty') else ' (clean)'}"


def _listing(values: list, fmt=lambda x: esc(x)) -> str:
    return "; ".join(fmt(v) for v in values) if values else "not recorded"


def setup_section(doc: Document, runs: list[RunFacts], meta: dict | None = None, heading: str = "Setup and provenance",
                  level: int = 1) -> None:
    """Dataset and its identity, design, machine, software, code version, times and commands: everything a
    reader needs to trust or repeat the runs, read from their summary.json (and study.json)."""
    meta = meta or {}
    doc.h(level, heading)
    first = runs[0].summary.get("dataset") or {}
    names = first.get("class_names") or first.get("classes") or []
    wnids = first.get("classes") or []
    if len(wnids) == len(names):
        classes = ", ".join(f"{esc(n)} ({esc(w)})" if w and w != n else esc(n) for n, w in zip(names, wnids))
    else:
        classes = ", ".join(esc(n) for n in names)
    items = [f"**Dataset:** {esc(first.get('name', 'unknown'))} ({esc(first.get('path', 'path unknown'))})"]
    datasets = _distinct((f.summary.get("dataset") or {}).get("name") for f in runs)
    if len(datasets) > 1:
        items.append(f"**Datasets differ between runs:** {_listing(datasets)}")
    sel = _distinct((f.summary.get("dataset") or {}).get("selection_size") for f in runs)
    items.append(f"**Split sizes:** {fmt_int(first.get('train_size'))} training images"
                 + (f" (of which {' or '.join(fmt_int(s) for s in sel)} held out as the selection split)"
                    if any(sel) else "") + f", {fmt_int(first.get('val_size'))} validation images")
    items.append(f"**Classes ({len(names)}):** {classes or 'unknown'}")
    fps = _distinct(((f.summary.get("dataset") or {}).get("identity") or {}).get("fingerprint") for f in runs)
    items.append(f"**Data identity (fingerprint of the file list: relative path, size, modification time):** "
                 + (_listing(fps, lambda x: f"`{visible(x)}`" if re.fullmatch(r"[0-9a-f]+", str(x)) else esc(x))
                    if fps else "not recorded (an older run)"))
    skipped = len(first.get("skipped") or [])
    if skipped:
        items.append(f"**Skipped images:** {skipped} undecodable file(s) left out (`--on-bad-image skip`)")
    designs = Counter(f.chosen_on for f in runs)
    items.append("**Chosen on:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})" for d, n in designs.items()))
    items.append("**Device:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})"
                                            for d, n in Counter(_device(f) for f in runs).items()))
    precision = Counter(str(f.summary.get("precision") or _prov(f).get("precision") or "not recorded") for f in runs)
    items.append("**Precision:** " + "; ".join(f"{esc(p)} ({n} run{'s' if n > 1 else ''})" for p, n in precision.items()))
    cpus = _distinct((_prov(f).get("cpu"), _prov(f).get("cpu_count"), _prov(f).get("cpu_native_bf16")) for f in runs
                     if _prov(f).get("cpu"))
    items.append("**CPU:** " + (_listing(cpus, lambda c: f"{esc(c[0])}, {c[1]} logical cores, native bf16: "
                                                         f"{'yes' if c[2] else 'no'}") if cpus else "not recorded"))
    gpus = _distinct(_prov(f).get("gpu") for f in runs)
    items.append(f"**GPU:** {_listing(gpus) if gpus else 'none used'}")
    cuda = _distinct(_prov(f).get("cuda") for f in runs)
    items.append(f"**CUDA:** {_listing(cuda) if cuda else 'none (a CPU build of torch, or not recorded)'}")
    for sw in _distinct(_software(f) for f in runs) or [{}]:
        items.append("**Software:** " + (", ".join(f"{esc(k)} {esc(v)}" for k, v in sw.items()) or "not recorded"))
    items.append(f"**reglab source:** {_listing(_distinct(_git(f) for f in runs))}")
    hosts = _distinct(_prov(f).get("host") for f in runs)
    platforms = _distinct(_prov(f).get("platform") for f in runs)
    items.append(f"**Host:** {_listing(hosts)}" + (f" ({_listing(platforms)})" if platforms else ""))
    started = sorted(str(_prov(f)["started"]) for f in runs if _prov(f).get("started"))
    ended = sorted(str(_prov(f)["ended"]) for f in runs if _prov(f).get("ended"))
    items.append(f"**Time (UTC):** started {esc(started[0]) if started else 'not recorded'}, ended "
                 f"{esc(ended[-1]) if ended else 'not recorded'}")
    commands = _distinct([meta.get("command")] + [_prov(f).get("command") for f in runs])
    items.append("**Command:** " + ("; ".join(f"`{c}`" if "`" not in str(c) and visible(c) == str(c) else esc(c)
                                              for c in commands[:3])
                                    + (f" and {len(commands) - 3} more" if len(commands) > 3 else "")
                                    if commands else "not recorded"))
    items.append(f"**Seeds:** {', '.join(str(s) for s in sorted({f.seed for f in runs}))} ({len(runs)} finished "
                 f"run{'s' if len(runs) > 1 else ''})")
    sizes = _distinct(f.run.config.get("image_size") for f in runs)
    items.append(f"**Image size:** {', '.join(f'{s}×{s}' for s in sizes) or 'not recorded'}")
    run_total = float(np.nansum([f.value("wall_seconds") for f in runs]))
    if isinstance(meta.get("wall_seconds"), (int, float)):
        items.append(f"**Total wall time:** {fmt_duration(meta['wall_seconds'])} "
                     f"(sum of the runs' own wall times: {fmt_duration(run_total)})")
    else:
        items.append(f"**Total wall time:** {fmt_duration(run_total)} (sum of the runs' wall times"
                     + ("; no study.json)" if len(runs) > 1 else ")"))
    doc.bullets(items)
    counts = (first.get("identity") or {}).get("counts") or {}
    if counts and isinstance(counts, dict):
        splits = [s for s in counts if isinstance(counts[s], dict)]
        cls = list(dict.fromkeys(c for s in splits for c in counts[s]))
        doc.table(["Class folder"] + [esc(s) for s in splits],
                  [[esc(c)] + [fmt_int(counts[s].get(c)) for s in splits] for c in cls]
                  + [["**all**"] + [fmt_int(sum(v for v in counts[s].values() if isinstance(v, int))) for s in splits]],
                  id="data-identity", note="Images per class folder and split, as recorded in the data identity.")
