"""What a report knows about runs and a study: the facts of one run (with the fallbacks for older run folders),
why a run is not among the finished ones, and the study loaded whole (every run, whatever its status) and checked.
Every report is a study: `load_study(DIR)` for a study folder, `load_run_study(RUN_DIR)` for one run folder (a
study of one variant and one seed, rendered through the same sections).

No run vanishes: failed, interrupted, damaged and at-chance runs are kept, named with their seeds and reasons in
the report's alerts and on stderr. Failures are apart from performance: a variant's failed and at-chance runs are
counted with an exact interval (`Variant.failures`), and everything about its performance is over the runs that
learned (`Variant.learned`, `Variant.correctness()`), never over a sample with a peak at chance.

Runs are grouped by what they are, not by their label alone: runs recorded under one variant name (a study's,
`train(variant=...)`'s, or by default the model preset's) whose configurations differ in a setting that changes the
result (Config.differences: every setting but the seed and NON_RESULT_FIELDS) or whose data differ are shown as the
different variants they are, each named by the settings that tell them apart (`regularized [dropout=0.1]`), with
an alert. A study plans runs that never differ (it refuses a folder trained otherwise), so its names stay.

Stale BatchNorm statistics are named from recorded facts only (`bn_staleness`): too few optimizer steps for the
momentum to forget the initial running statistics, and a network that does well in train mode and badly in eval
mode. Its eval-mode numbers measure those statistics, not the regularizers: an alert says so and what to rerun,
and analysis.py flags every verdict that involves it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import rundir, stats
from ..config import FIELD_NAMES, NON_RESULT_FIELDS
from ..data.folder import scan
from ..data.identity import describe_change, identity
from ..errors import UserError
from ..rundir import Run, Summary, load_run, scan_study
from .common import CONFIDENCE, COUNT, NAN, PCT, RATE, _num, fmt_int, p_text, slug, warn
from ..text import visible
from .document import code, esc, plain


# ------------------------------------------------------------------------------------------- one run


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
    bn_stale: dict | None = None  # bn_staleness(run)

    @property
    def variant(self) -> str:
        return self.run.variant

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def summary(self) -> Summary:
        return self.run.summary

    @property
    def censored(self) -> bool:
        """Ran into the epoch cap without stopping early: its epoch count is a lower bound."""
        return self.epochs_max is not None and self.epochs_run >= self.epochs_max and not self.stopped_early

    @property
    def best_censored(self) -> bool:
        """Its best epoch is the last epoch of a run the cap stopped: the best might have come later."""
        return self.censored and math.isfinite(self.best_epoch) and self.best_epoch >= self.epochs_max

    @property
    def wilson(self) -> tuple[float, float]:
        return stats.wilson(self.correct, self.n, CONFIDENCE) if self.n else (NAN, NAN)

    def value(self, key: str) -> float:
        if key in ("acc", "gap", "clean", "epochs_run", "best_epoch"):
            return float(getattr(self, key))
        return _num(getattr(self.summary, key, None))

    def epochs_text(self) -> str:
        if self.stopped_early:
            return f"stopped early at epoch {self.epochs_run}"
        if self.censored:
            return f"ran all {self.epochs_run} epochs (the cap)"
        cap = f" of at most {self.epochs_max}" if self.epochs_max else ""
        return f"ran {self.epochs_run} epochs{cap}"

    def epochs_cell(self) -> str:
        return f"{self.epochs_run} (cap)" if self.censored else str(self.epochs_run)

    def best_epoch_cell(self) -> str:
        return COUNT(self.best_epoch) + (" (cap)" if self.best_censored else "")


def run_facts(run: Run) -> RunFacts:
    s = run.summary
    ds = s.dataset
    try:
        pred = run.predictions()
    except UserError as e:  # named once, here; the report then shows the run without its per-image results
        warn(str(e))
        pred = None
    acc = _num(s.restored_val_accuracy)
    n = ds.val_size
    if not n:
        n = int(len(pred["labels"])) if pred is not None else 0
    correct = s.restored_val_correct
    if correct is None:
        correct = int(round(acc * n)) if n and math.isfinite(acc) else 0
    classes = len(ds.classes) or (int(pred["probs"].shape[1]) if pred is not None else 0)
    clean = _num(s.clean_train_accuracy)
    clean_n = s.clean_train_images
    if math.isfinite(clean):
        gap, measured = clean - acc, True
    else:  # an older run: the only gap it has is final running train accuracy minus final val accuracy
        gap, measured = _num(s.train_accuracy) - _num(s.val_accuracy), False
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
    return RunFacts(
        run=run, acc=acc, n=n, correct=correct, classes=classes, clean=clean, clean_n=clean_n, gap=gap,
        gap_measured=measured, correctness=correctness, predictions=pred, chance_p=chance["p"],
        at_chance=bool(reasons), chance_reason="; ".join(reasons),
        epochs_run=s.epochs_run or 0, epochs_max=run.epochs_max, stopped_early=s.stopped_early,
        best_epoch=_num(s.best_epoch), chosen_on=s.chosen_on, bn_stale=bn_staleness(run))


# A run's BatchNorm statistics are stale when more than this fraction of their initial values is left at the restored
# epoch ((1 - momentum) ** steps: Keras's 0.99 over ~300 steps) and its running training accuracy (train mode, batch
# statistics) is at least STALE_DROP above its clean training accuracy (eval mode, running statistics), although
# augmentation and dropout hold the former down.
STALE_LEFT = 0.05
STALE_DROP = 0.05
STALE_ADVICE = ("rerun with `--precise-bn` (re-estimates the statistics before the evaluation) or `--bn-momentum 0.1`")


def bn_staleness(run: Run) -> dict | None:
    """{momentum, steps, left, train, clean} when the run's BatchNorm statistics look stale (see STALE_LEFT), else
    None; also None without BatchNorm, with --precise-bn, or without the facts (an older run)."""
    cfg, s = run.config if isinstance(run.config, dict) else {}, run.summary
    if cfg.get("batchnorm") is not True or cfg.get("precise_bn") is True:
        return None
    m, batch, used = cfg.get("bn_momentum"), cfg.get("batch_size"), s.dataset.train_used
    train, clean, best = _num(s.train_accuracy), _num(s.clean_train_accuracy), _num(s.best_epoch)
    if not (isinstance(m, (int, float)) and 0 < m <= 1 and isinstance(batch, int) and batch > 0 and used
            and math.isfinite(train) and math.isfinite(clean) and math.isfinite(best)):
        return None
    steps = (used // batch + (used % batch > 1)) * int(best)  # a last batch of one joins the one before (loader.py)
    left = (1 - m) ** steps
    if left < STALE_LEFT or train - clean < STALE_DROP:
        return None
    return dict(momentum=float(m), steps=steps, left=left, train=train, clean=clean)


def stale_text(f: RunFacts) -> str:
    """Why a run's BatchNorm statistics look stale, in numbers (markup)."""
    b = f.bn_stale
    return (f"seed {f.seed}: momentum {b['momentum']:g} (Keras's {1 - b['momentum']:g}) over {b['steps']:,} optimizer "
            f"steps leaves {RATE(b['left'])} of the initial statistics; running training accuracy {PCT(b['train'])} "
            f"in train mode against {PCT(b['clean'])} clean in eval mode")


def class_names(run: Run, num_classes: int) -> list[str]:
    ds = run.summary.dataset
    for names in (ds.class_names, ds.classes):
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
        return esc(s.failure or "no reason recorded")
    if run.status == "interrupted":
        done = s.epochs_run
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

    @property
    def learned(self) -> list[RunFacts]:
        """The finished runs that learned (not at chance): the variant's performance is theirs."""
        return [f for f in self.runs if not f.at_chance]

    @property
    def summarized(self) -> list[RunFacts]:
        """The runs a summary of the variant is over: those that learned, or every one when none did (then they
        are all at chance: one peak, flagged)."""
        return self.learned or self.runs

    @property
    def failures(self) -> dict:
        """Failed runs and finished runs at chance, of the runs that ended (finished or failed), with the exact
        interval (stats.failure_rate). Interrupted, unfinished and damaged runs are no outcome of the recipe."""
        failed = [r for r in self.others if r.status == "failed"]
        return stats.failure_rate(len(self.runs) - len(self.learned) + len(failed), len(self.runs) + len(failed),
                                  CONFIDENCE)

    @property
    def bn_stale(self) -> list[RunFacts]:
        """Its finished runs whose BatchNorm statistics look stale (bn_staleness)."""
        return [f for f in self.runs if f.bn_stale]

    def correctness(self) -> np.ndarray | None:
        """Bool (learned seeds, images) from predictions.npz, the input of the variant-level statistics; None when
        no run learned, a run has no predictions, or the runs were scored on different numbers of images."""
        fs = self.learned
        if not fs or any(f.correctness is None for f in fs) or len({f.correctness.size for f in fs}) != 1:
            return None
        return np.stack([f.correctness for f in fs])

    @property
    def regularizers(self) -> list[str] | None:
        """What the variant regularizes with, in words, as its first finished run recorded them (None: a run
        older than that record; today's code is not asked, since it may describe something else)."""
        return self.runs[0].summary.regularizers if self.runs else None

    @property
    def described(self) -> list[Run]:
        """The runs the figures and the setup describe: the finished ones, or without any, what there is."""
        return [f.run for f in self.runs] or self.others

    @property
    def series(self) -> dict[int, list[dict]]:
        """{seed: metrics.csv rows} of the described runs: the input of the curve plots."""
        return {r.seed: r.metrics for r in self.described}

    def values(self, key: str) -> list[float]:
        """One value per summarized run (see `summarized`)."""
        return [f.value(key) for f in self.summarized]

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
    single: bool = False  # one run folder, reported as a study of itself (its words say "this run")

    @property
    def runs(self) -> list[RunFacts]:
        return [f for v in self.variants.values() for f in v.runs]

    @property
    def shown(self) -> dict[str, Variant]:
        """The variants the figures and the setup describe: those with a finished run; without any (a run folder
        that has not finished), the unfinished ones, with what they hold so far."""
        return self.variants or self.unfinished

    @property
    def all_variants(self) -> dict[str, Variant]:
        order = [v for v in self.meta.get("variants", []) if v in self.variants or v in self.unfinished]
        rest = sorted((set(self.variants) | set(self.unfinished)) - set(order))
        merged = {**self.variants, **self.unfinished}
        return {v: merged[v] for v in order + rest}

    @property
    def problems(self) -> list[Run]:
        """Every run that did not finish (a run folder's own run may have been evaluated and still have failed)."""
        return [r for v in self.all_variants.values() for r in [f.run for f in v.runs] + v.others
                if r.status != "finished"]

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

    def figure_of(self, kind: str, what: str) -> tuple[Path, str]:
        """The figure of `kind` for one variant (or augmentation): figures/<kind>-<what>.png in a study,
        figures/<kind>.png in a run folder, which holds only one of each."""
        return self.figure(f"{kind}.png" if self.single else f"{kind}-{slug(what)}.png")


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
    meta = rundir.read_study_file(path, "delete it to render from the runs alone") or {}
    by_variant, split = group_runs(scanned)
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
    _alert_split(study, split, warn_stderr)
    return study


# ------------------------------------------------------------------------------------------- grouping

# What a run is, beyond its label: its resolved configuration without these, and its data (by fingerprint).
NOT_WHAT_IT_IS = NON_RESULT_FIELDS | {"seed", "data"}


def what_it_is(run: Run) -> dict:
    """The settings that make a run what it is (config.yaml as recorded, plugin settings one by one), with its
    data's fingerprint (else its path) as `data`."""
    cfg = run.config if isinstance(run.config, dict) else {}
    settings = {k: v for k, v in cfg.items() if k not in NOT_WHAT_IT_IS and k != "plugin_settings"}
    plugins = cfg.get("plugin_settings")
    settings.update(plugins if isinstance(plugins, dict) else {})
    settings["data"] = run.summary.dataset.fingerprint or cfg.get("data")
    return settings


def differing(a: dict, b: dict) -> list[str]:
    """The settings in which two runs' what_it_is differ: those both record, with different values, and a plugin
    setting only one has (absent: neutral). A config field only one records is no difference: the other run is
    older than the field."""
    return sorted(k for k in set(a) | set(b) if (k in a and k in b and a[k] != b[k])
                  or ((k in a) != (k in b) and k not in FIELD_NAMES))


def group_runs(runs: list[Run]) -> tuple[dict[str, list[Run]], dict[str, list[tuple[str, list[str]]]]]:
    """Runs by variant, a label whose runs are several things split into one variant each: ({variant: runs},
    {label: [(new name, the settings that tell it apart)]}). A run that cannot be read (damaged) stays with its
    label's first group."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.variant, []).append(run)
    out, split = {}, {}
    for label, members in by_label.items():
        groups: list[tuple[dict, list[Run]]] = []
        for run in members:
            key = what_it_is(run)
            home = next((g for g in groups if run.problem or not differing(g[0], key)), None)
            if home is None:
                groups.append((key, [run]))
            else:
                home[1].append(run)
        if len(groups) == 1:
            out[label] = members
            continue
        differ = sorted({k for g in groups for h in groups for k in differing(g[0], h[0])})
        split[label] = []
        for key, group in groups:
            name = f"{label} [{', '.join(f'{k}={_shown(key.get(k))}' for k in differ)}]"
            out[name] = [replace(r, summary=replace(r.summary, variant=name)) for r in group]
            split[label].append((name, differ))
    return out, split


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and len(value) > 12:  # a fingerprint or a path: its start tells them apart
        return value[:12]
    return str(value)


def _alert_split(study: Study, split: dict, warn_stderr: bool) -> None:
    """Say that a label held several configurations and how each is shown."""
    for label, parts in split.items():
        names = ", ".join(code(name) for name, _ in parts)
        study.alerts.append(f"**Runs recorded as one variant are different things**: {code(label)} holds "
                            f"{len(parts)} configurations (they differ in {', '.join(parts[0][1])}); they are shown "
                            f"as the variants they are: {names}. Name each with `reglab.train(..., variant=...)` "
                            "(`reglab train --variant`).")
        if warn_stderr:
            warn(f"runs recorded as variant {visible(label)} differ in {', '.join(parts[0][1])}: shown as "
                 f"{len(parts)} variants")


def load_run_study(run_dir, warn_stderr: bool = True) -> Study:
    """One run folder as a study of one variant and one seed, whatever its status: a run that has not been
    evaluated is kept among the unfinished, and the report shows what its folder holds so far."""
    from .plots import color

    run = load_run(run_dir, check_predictions=False)  # a damaged predictions.npz is named in the report instead
    evaluated = run.summary.restored_val_accuracy is not None
    v = Variant(run.variant, color(0), [run_facts(run)] if evaluated else [], [] if evaluated else [run])
    study = Study(Path(run_dir), {}, {v.name: v} if evaluated else {}, {} if evaluated else {v.name: v}, single=True)
    _check(study, warn_stderr)
    return study


def _check(study: Study, warn_stderr: bool) -> None:
    """Fill study.alerts (for the report) and say the same on stderr, one line each."""
    lines = []
    for run in study.problems:
        study.alerts.append(
            f"this run is not finished (status {esc(run.status)}): {problem_detail(run)}. The report shows what "
            "the folder holds so far." if study.single else
            f"Run {run_label(run)} ({esc(run.path.parent.name + '/' + run.path.name)}) is not in the results: "
            f"{problem_reason(run)}.")
        verb = PROBLEM_WORDS.get(run.status, ("", f"has status {run.status}"))[1]
        lines.append(f"run {run.path} {verb}: {plain(problem_detail(run))}")
    for f in study.runs:
        if f.at_chance:
            if study.single:  # a study lists them in its runs section
                study.alerts.append(f"this run is **at chance**: {f.chance_reason}.")
            lines.append(f"run {f.run.path} is at chance: {plain(f.chance_reason)}")
    for v in study.variants.values():
        if v.bn_stale:
            study.alerts.append(f"**BatchNorm statistics stale** in {code(v.name)}: "
                                f"{'; '.join(stale_text(f) for f in v.bn_stale)}. Its eval-mode numbers (the "
                                "headline accuracy, the gap) measure those statistics, not the regularizers, and no "
                                f"verdict involving it is one on the regularizers: {STALE_ADVICE}.")
            lines.append(f"BatchNorm statistics of {v.name} look stale (few steps for the momentum, train mode well "
                         "above eval mode): rerun with --precise-bn or --bn-momentum 0.1")
    prints = {}
    for f in study.runs:
        fp = f.summary.dataset.fingerprint
        prints.setdefault(fp, []).append(f)
    known = {fp: fs for fp, fs in prints.items() if fp is not None}
    if len(known) > 1:
        parts = "; ".join(f"data `{visible(fp)}`: " + ", ".join(run_label(f.run) for f in fs)
                          for fp, fs in known.items())
        study.alerts.append(f"**These runs were trained on different data** (the fingerprints of their file lists "
                            f"differ): {parts}. Comparisons between them mix datasets.")
        lines.append(f"runs under {study.path} were trained on different data: " + plain(parts))
    for path, change in data_changes([r.summary for v in study.shown.values() for r in v.described]):
        if study.single:
            study.alerts.append(f"**the data has changed since this run was trained**: {esc(path)}: {esc(change)}. "
                                "The numbers below are those of the data as it was; `--resume` would refuse to "
                                "continue on it.")
            lines.append(f"the data at {path} has changed since {study.path} was trained: {change}")
        else:
            study.alerts.append(f"**The data has changed since these runs were trained**: {esc(path)}: "
                                f"{esc(change)}. The numbers below are those of the data as it was; a rerun would "
                                "refuse to mix the two.")
            lines.append(f"the data at {path} has changed since the runs under {study.path} were trained: {change}")
    sizes = {f.n for f in study.runs}
    if len(known) <= 1 and len(sizes) > 1:
        study.alerts.append(f"**The runs were evaluated on val/ sets of different sizes** "
                            f"({', '.join(fmt_int(s) for s in sorted(sizes))} images): they used different data.")
        lines.append(f"runs under {study.path} were evaluated on val/ sets of different sizes")
    designs = {f.chosen_on for f in study.runs}  # none in a run folder that has not been evaluated
    study.design = "mixed" if len(designs) > 1 else designs.pop() if designs else study.design
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


def data_changes(summaries: list[Summary]) -> list[tuple[str, str]]:
    """(data path, what changed) for every dataset these runs recorded that is still on this machine but is no
    longer the same files (a report is re-rendered from run folders alone, so a copied study whose data is
    elsewhere is simply not checked)."""
    recorded = {}
    for s in summaries:
        if s.dataset.fingerprint and s.dataset.path:
            recorded.setdefault((s.dataset.path, s.dataset.fingerprint), s.dataset.identity)
    out = []
    for (path, _), then in recorded.items():
        root = Path(path)
        if not root.is_dir():
            continue
        try:
            train, val, _ = scan(root)
        except (UserError, OSError):  # no longer an ImageFolder tree at all
            out.append((path, "it can no longer be read as train/ and val/ class folders"))
            continue
        change = describe_change(then, identity(root, [train, val]))
        if change:
            out.append((path, change))
    return out


def design_text(runs: list[RunFacts], design: str) -> str:
    """Which design produced the headline accuracy, said plainly."""
    if design == "mixed":
        return ("**How the headline accuracy was obtained: mixed designs.** Some runs chose their best epoch on "
                "val/ (selected on the same images that judge it: optimistic), others on a selection split (a test "
                "accuracy). Read each run's numbers with its own design; comparisons across designs are not fair.")
    if design == "selection split":
        sizes = sorted({f.summary.dataset.selection_size for f in runs} - {None})
        n = " or ".join(fmt_int(s) for s in sizes) or "the held-out"
        return (f"**How the headline accuracy was obtained:** test accuracy: val/ evaluated once, selection on {n} "
                "held-out training images (`--selection-split`): early stopping, the learning-rate schedule and the "
                "best checkpoint never saw val/.")
    return ("**How the headline accuracy was obtained:** restored-best accuracy on val/, where val/ also chose the "
            "best epoch (the notebook's design): selected on the same images that judge it: optimistic. "
            "Train with `--selection-split 0.1` for an honest test accuracy.")
