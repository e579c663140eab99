"""Reports rendered from synthetic but well-formed run folders: files, numbers, verdicts, offline HTML, honest text.

Every number the statistics produce is checked against scipy (through reglab.stats, itself tested against scipy)
or computed by hand here; the README's own 2-seed ablation is a regression case.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from functools import lru_cache
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from reglab import stats
from reglab.cli import main
from reglab.config import dump_yaml, resolve
from reglab.errors import UserError
from reglab.models import build_model, count_params, layer_table
from reglab.reports import analysis, common, facts
from reglab.reports.ablation import render_ablation
from reglab.reports.analysis import analyze
from reglab.reports.common import COUNT, PCT, PP
from reglab.reports.compare import render_compare
from reglab.reports.document import Document, esc, inline_html, plain, to_html, to_markdown, visible
from reglab.reports.facts import load_study
from reglab.reports.plots import mpl_text, plot_curves, plot_forest, plot_gap_grid
from reglab.reports.single import render_single
from reglab.rundir import METRIC_COLUMNS, find_runs

CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684"]
CLASS_NAMES = ["tench", "English springer", "cassette player", "chain saw"]
SIZE = 32
NASTY = "a$b|c*_<i>\x1b[31m"  # a class folder name that is markup in every target at once
MATH = "x $\\frac{$ y"  # mathtext would fail to parse this: matplotlib must not treat it as math


def pictures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth colour gradients with a bright square off-centre, so flips and rotations are visible."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        a, b = rng.uniform(40, 200, 3), rng.uniform(-60, 60, 3)
        img = a + b * xx[..., None] + 0.5 * b[::-1] * yy[..., None]
        y, x = rng.integers(2, SIZE // 3, 2)
        img[y:y + 8, x:x + 8] = rng.uniform(180, 255, 3)
        out[i] = img.clip(0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=None)
def _trained_model(model: str, overrides: str) -> tuple[int, int, list[dict]]:
    """(trainable, non-trainable, layer table): what the trainer records in summary.json."""
    cfg = resolve(flag_values={"model": model, "image_size": SIZE, **json.loads(overrides)})
    net = build_model(cfg, len(CLASSES))
    return (*count_params(net), json.loads(json.dumps(layer_table(net, SIZE))))


def augmented_draws(images: np.ndarray) -> np.ndarray:
    """(n, 3, H, W, 3) uint8 draws of an augmentation, as the trainer records them in samples.npz."""
    return np.stack([images[:, :, ::-1], images[:, ::-1], np.rot90(images, axes=(1, 2))], axis=1)


def make_run(study: Path, variant: str, model: str, seed: int, acc: float, gap: float, epochs: int = 6,
             overrides: dict | None = None, n_val: int = 400, *, chosen_on: str = "val", legacy: bool = False,
             class_names: list[str] | None = None, fingerprint: str = "0123abcd4567ef89", one_class: bool = False,
             stopped_early: bool = True, epochs_max: int = 20, clean_n: int = 2000, status: str = "finished",
             failure: str | None = None) -> Path:
    """One run folder whose restored val accuracy is round(acc * n_val) / n_val (predictions.npz agrees with it
    image by image) and whose clean-train accuracy is that plus `gap`."""
    out = study / variant / f"seed-{seed}"
    out.mkdir(parents=True)
    cfg = resolve(flag_values={"model": model, "image_size": SIZE, "seed": seed, **(overrides or {})})
    (out / "config.yaml").write_text(dump_yaml(cfg))
    rng = np.random.default_rng(seed * 1000 + int(acc * 1e4))
    c = len(CLASSES)
    correct = int(round(acc * n_val))
    acc = correct / n_val
    select = chosen_on == "selection split"

    rows = []
    for e in range(1, epochs + 1):
        t = e / epochs
        ev = acc * (0.6 + 0.4 * t)
        row = dict(epoch=e, train_loss=1.5 - t, train_accuracy=min(ev + gap * t, 1.0), lr=1e-3, seconds=2.0)
        row.update({"select_loss" if select else "val_loss": 1.4 - 0.8 * t,
                    "select_accuracy" if select else "val_accuracy": ev})
        rows.append(row)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    (out / "metrics.csv").write_text(buf.getvalue())

    labels = np.arange(n_val) % c
    right = np.zeros(n_val, bool)
    right[rng.permutation(n_val)[:correct]] = True
    wrong_guess = np.zeros(n_val, np.int64) if one_class else (labels + rng.integers(1, c, n_val)) % c
    if one_class:  # every wrong answer is class 0 (or class 1 where 0 would be right)
        wrong_guess = np.where(labels == 0, 1, 0)
    pred = np.where(right, labels, wrong_guess)
    probs = rng.dirichlet(np.ones(c), n_val).astype(np.float32) * 0.3
    probs[np.arange(n_val), pred] += 0.7
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:8]
    np.savez(out / "predictions.npz", labels=labels, probs=probs, worst_index=worst,
             worst_images=pictures(rng, len(worst)))
    samples = pictures(rng, 4)
    np.savez(out / "samples.npz", images=samples,
             **({} if cfg.augment == "none" or legacy else {"augmented": augmented_draws(samples)}))

    trainable, frozen, layers = _trained_model(model, json.dumps(overrides or {}, sort_keys=True))
    last = rows[-1]
    epochs_run = epochs
    names = class_names or CLASS_NAMES
    summary = {
        "status": status, "failure": failure, "model": model, "variant": variant, "seed": seed,
        "chosen_on": chosen_on,
        "dataset": {"name": "imagenette2-160", "path": "/data/imagenette2-160",
                    "train_size": 9469 - (947 if select else 0),
                    "val_size": n_val, "selection_size": 947 if select else 0, "classes": CLASSES, "class_names": names,
                    "identity": {"classes": CLASSES, "counts": {"train": {k: 2367 for k in CLASSES},
                                                                "val": {k: n_val // c for k in CLASSES}},
                                 "digests": {}, "fingerprint": fingerprint}},
        "device": "cpu", "device_name": "synthetic CPU", "precision": "bf16",
        "epochs_max": epochs_max, "epochs_run": epochs_run, "best_epoch": epochs_run - 1,
        "stopped_early": stopped_early,
        "train_loss": last["train_loss"], "train_accuracy": last["train_accuracy"],
        "val_loss": None if select else last["val_loss"], "val_accuracy": None if select else last["val_accuracy"],
        "select_loss": last["select_loss"] if select else None,
        "select_accuracy": last["select_accuracy"] if select else None,
        "restored_val_loss": 0.6 - 0.01 * seed, "restored_val_accuracy": acc, "restored_val_correct": correct,
        "clean_train_accuracy": min(acc + gap, 1.0), "clean_train_images": clean_n,
        "params_trainable": trainable, "params_non_trainable": frozen, "layers": layers,
        "wall_seconds": 12.5 + seed, "train_images_per_second": 1000.0, "regularizers": cfg.regularizers(),
        "provenance": {"started": f"2025-01-0{seed % 9 + 1}T10:00:00+00:00",
                       "ended": f"2025-01-0{seed % 9 + 1}T11:30:00+00:00",
                       "command": "reglab compare --out study", "host": "labhost", "platform": "Linux-6.1-x86_64",
                       "cpu": "Synthetic CPU 9000", "cpu_count": 2, "cpu_native_bf16": True, "gpu": None,
                       "cuda": None, "device": "cpu", "device_name": "CPU (Synthetic CPU 9000, 2 threads)",
                       "precision": "bf16",
                       "software": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "reglab": "0.1.0"},
                       "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True}},
    }
    if legacy:  # a run folder written before clean accuracy, counts, designs, layers and provenance were recorded
        for key in ("chosen_on", "restored_val_correct", "clean_train_accuracy", "clean_train_images", "epochs_max",
                    "provenance", "precision", "select_loss", "select_accuracy", "layers"):
            summary.pop(key)
        summary["dataset"].pop("identity")
        summary["software"] = {"python": "3.11.7", "torch": "2.13.0"}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def make_study(root: Path, spec: dict, kind: str = "compare", study_json: bool = True, **kw) -> Path:
    """spec: {variant: (model, overrides, [(seed, acc, gap), ...])}; kw go to every make_run."""
    root.mkdir(parents=True, exist_ok=True)
    for variant, (model, overrides, seeds) in spec.items():
        for seed, acc, gap in seeds:
            make_run(root, variant, model, seed, acc, gap, overrides=overrides, **kw)
    if study_json:
        seeds = sorted({s for _, _, runs in spec.values() for s, _, _ in runs})
        (root / "study.json").write_text(json.dumps({"kind": kind, "command": f"reglab {kind} --out {root.name}",
                                                      "wall_seconds": 321.0, "variants": list(spec), "seeds": seeds}))
    return root


def compare_spec(basic_accs, reg_accs, basic_gap=0.30, reg_gap=0.05):
    return {
        "basic": ("basic", None, [(s, a, basic_gap + 0.01 * s) for s, a in enumerate(basic_accs)]),
        "regularized": ("regularized", None, [(s, a, reg_gap + 0.01 * s) for s, a in enumerate(reg_accs)]),
    }


def section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def image_refs(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def intervals(text: str, unit: str) -> list[tuple[float, float]]:
    """Every printed [lo, hi] interval in the given unit ('%' or ' pp')."""
    u = re.escape(unit)
    return [(float(a), float(b)) for a, b in re.findall(rf"\[([+-]?[\d.]+){u}, ([+-]?[\d.]+){u}\]", text)]


def family_level(m: int) -> float:
    return 1 - 0.05 / m  # Bonferroni, by hand


def learned_correctness(study, variant: str) -> np.ndarray:
    """Bool (learned seeds, images) from the runs' predictions.npz, at-chance seeds left out."""
    return np.stack([f.correctness for f in study.variants[variant].runs if not f.at_chance])


def _churn(c: np.ndarray) -> float:
    """The seed x image residual mean square, from the residuals of the two-way layout."""
    x = c.astype(float)
    r = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    return float((r ** 2).sum() / ((x.shape[0] - 1) * (x.shape[1] - 1)))


def _t(confidence: float, df) -> float:
    return float(sps.t.ppf(0.5 + confidence / 2, df))


def variant_by_hand(c: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of a variant's accuracy: a seed term and a val-image term, each Student t, in quadrature."""
    s, n = c.shape
    acc = c.mean(1)
    image = max(c.mean(0).var(ddof=1) - _churn(c) / s, 0.0) / n
    half = np.sqrt(_t(confidence, s - 1) ** 2 * acc.var(ddof=1) / s + _t(confidence, n - 1) ** 2 * image)
    return acc.mean(), max(acc.mean() - half, 0.0), min(acc.mean() + half, 1.0)


def difference_by_hand(ca: np.ndarray, cb: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(diff, lo, hi) of accuracy a - b, paired images: equal seed counts one seed term with Welch's df, unequal
    counts each its own t; the image term is the contrast's variance less the churn the seed terms count."""
    (sa, n), sb = ca.shape, cb.shape[0]
    va, vb = ca.mean(1).var(ddof=1) / sa, cb.mean(1).var(ddof=1) / sb
    if sa != sb:
        seed = _t(confidence, sa - 1) ** 2 * va + _t(confidence, sb - 1) ** 2 * vb
    elif va + vb > 0:
        seed = _t(confidence, (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (sa - 1))) ** 2 * (va + vb)
    else:
        seed = 0.0
    image = max((ca.mean(0) - cb.mean(0)).var(ddof=1) - _churn(ca) / sa - _churn(cb) / sb, 0.0) / n
    d = ca.mean() - cb.mean()
    half = np.sqrt(seed + _t(confidence, n - 1) ** 2 * image)
    return d, max(d - half, -1.0), min(d + half, 1.0)


# --------------------------------------------------------------------------------------- compare report


@pytest.fixture(scope="module")
def compare_study(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("cmp") / "study",
                      compare_spec([0.60, 0.62, 0.61], [0.75, 0.78, 0.76]))
    md_path, html_path = render_compare(root)
    return root, md_path, html_path


def test_compare_writes_both_files_and_every_referenced_image(compare_study):
    root, md_path, html_path = compare_study
    assert md_path == root / "report.md" and html_path == root / "report.html"
    md = md_path.read_text()
    refs = image_refs(md)
    assert len(refs) >= 10  # 2 curves, 2 forest, overlay, gap, 2 confusion, 2 misclassified, augmentation
    for ref in refs:
        assert (root / ref).is_file() and (root / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", ref
    html = html_path.read_text()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # the SVG namespace is a name, not a load
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == len(refs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(script|link)\b", html)


def test_model_diagram_is_mermaid_in_markdown_and_svg_in_html(compare_study):
    _, md_path, html_path = compare_study
    md, html = md_path.read_text(), html_path.read_text()
    assert md.count("```mermaid\nflowchart TD") == 2
    assert "flowchart TD" not in html and "mermaid-source" not in html  # drawn, not shown as source
    svgs = re.findall(r'<svg class="model-diagram".*?</svg>', html, flags=re.S)
    assert len(svgs) == 2
    for svg, model in zip(svgs, ("basic", "regularized")):
        tree = ET.fromstring(svg)  # well-formed XML
        ns = "{http://www.w3.org/2000/svg}"
        texts = [t.text for t in tree.iter(f"{ns}text")]
        cfg = resolve(flag_values={"model": model, "image_size": SIZE})
        layers = layer_table(build_model(cfg, len(CLASSES)), SIZE)
        assert sum(t.startswith("Conv2D 3×3") for t in texts) == sum(r["type"] == "Conv2D" for r in layers)
        assert len(tree.findall(f"{ns}path")) == len(layers)  # one arrow into every layer, from the input on
        assert f"Input {SIZE}×{SIZE}×3" in texts


def test_compare_numbers_come_from_the_runs_and_scipy(compare_study):
    root, md_path, html_path = compare_study
    md, html = md_path.read_text(), html_path.read_text()
    for run in find_runs(root):
        s = run.summary
        for text in (md, html):
            assert f"seed {run.seed}: {PCT(s.restored_val_accuracy)}" in text
            assert f"seed {run.seed}: {PCT(s.clean_train_accuracy)}" in text
    study = load_study(root, warn_stderr=False)
    ca, cb = learned_correctness(study, "regularized"), learned_correctness(study, "basic")
    assert ca.mean(1) == pytest.approx([0.75, 0.78, 0.76]) and cb.mean(1) == pytest.approx([0.60, 0.62, 0.61])
    # a quantity with no per-image record (clean training accuracy): a 3-seed Student t interval, by hand
    clean = [0.80, 0.84, 0.83]
    m, sd = np.mean(clean), np.std(clean, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert f"{PCT(m, mean=True)} [{PCT(m - half, mean=True)}, {PCT(m + half, mean=True)}]" in md
    # the variant's accuracy: seeds and val images, by hand from the per-image predictions
    m, lo, hi = variant_by_hand(ca)
    assert f"{PCT(m, mean=True)} [{PCT(lo, mean=True)}, {PCT(hi, mean=True)}]" in md
    # the accuracy difference at the Bonferroni level for 2 comparisons, by hand
    level = family_level(2)
    d, lo, hi = difference_by_hand(ca, cb, level)
    row = section(md, "Differences and verdicts")
    assert f"| `regularized` − `basic` | 3 vs 3 | {PP(d)} | [{PP(lo)}, {PP(hi)}] |" in row
    assert f"**differs**: `regularized` is at least {common.pp_abs(lo)} higher than `basic` (estimate {PP(d)})" in row
    assert "2 comparisons, Bonferroni-simultaneous 95% intervals (each at 97.5%)" in md
    # the probability of superiority over the 9 seed pairs, and the seeds a new study needs, beside it
    assert "1.00 (in 9 of 9 seed pairs; resolution 1/9)" in row
    plan = stats.seeds_needed(stats.compare_variants(ca, cb, level, 0.01), 0.8)
    for kind in ("detect", "equivalent"):
        e = plan[kind]
        assert f"≈ {e['seeds']} a side (range {e['range'][0]} to {e['range'][1]})" in row
    # the dataset, device, software and provenance are read from the runs
    assert "9,469 training images" in md and "400 validation images" in md and "English springer" in md
    assert "5m 21s" in md  # study.json wall_seconds 321
    setup = section(md, "Setup and provenance")
    for needle in ("2025-01-01T10:00:00+00:00", "2025-01-03T11:30:00+00:00", "`reglab compare --out study`",
                   "0.1.0", "0123456789ab (dirty: uncommitted changes)", "labhost", "Synthetic CPU 9000",
                   "native bf16: yes", "torch 2.13.0", "bf16 (6 runs)", "`0123abcd4567ef89`", "none used"):
        assert needle in setup, needle


def test_the_seeds_a_new_study_needs_are_said(compare_study):
    """Planning, not a fixed "run 5 seeds": the largest of the comparisons' seeds_needed, with its range."""
    root, md_path, _ = compare_study
    md = md_path.read_text()
    study = load_study(root, warn_stderr=False)
    level = family_level(2)
    (ca, fa), (cb, fb) = [(learned_correctness(study, v), study.variants[v].runs) for v in ("regularized", "basic")]
    gaps = stats.compare_gaps(ca, [f.clean for f in fa], [f.clean_n for f in fa],
                              cb, [f.clean for f in fb], [f.clean_n for f in fb], level)
    accuracy = stats.compare_variants(ca, cb, level, 0.01)
    plans = [stats.seeds_needed(accuracy)["detect"], stats.seeds_needed(gaps)["detect"]]
    seeds = max(p["seeds"] for p in plans)
    lo, hi = max(p["range"][0] for p in plans), max(p["range"][1] for p in plans)
    assert f"Recommended for a new study: `--seeds {seeds}` (range {lo} to {hi})" in section(md, "Conclusion")
    assert "run at least 5 seeds" not in md


def test_design_is_said_plainly(compare_study, tmp_path):
    md = compare_study[1].read_text()
    assert "selected on the same images that judge it: optimistic" in md
    root = make_study(tmp_path / "s", compare_spec([0.60, 0.62], [0.75, 0.78]), chosen_on="selection split")
    an = analyze(load_study(root), "basic")
    assert an.accuracy[0].verdict in ("differs", "inconclusive")
    text = facts.design_text(load_study(root).runs, "selection split")
    assert "test accuracy: val/ evaluated once, selection on 947 held-out training images" in text


def test_a_long_report_has_contents_then_opens_with_the_headline_table_and_verdicts(compare_study):
    _, md_path, html_path = compare_study
    md, html = md_path.read_text(), html_path.read_text()
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    opening = md.split("\n## ", 1)[0]  # the title, its opening paragraphs (a warning stays first), the contents
    assert opening.split("\n\n")[-2] == "**Contents:**"
    links = re.findall(r"^- \[(.+)\]\(#([^)]+)\)$", opening, flags=re.M)
    assert [text for text, _ in links] == headings  # every section, in order
    assert ("Summary of key differences", "summary-of-key-differences") in links
    assert headings.index("Summary of key differences") < headings.index("Differences and verdicts") < headings.index(
        "Runs") < headings.index("Models")
    ids = re.findall(r'<h2 id="([^"]+)">', html)
    nav = re.search(r'<nav class="contents">(.*?)</nav>', html, flags=re.S).group(1)
    assert re.findall(r'<a href="#([^"]+)">', nav) == ids and html.index("<nav") < html.index("<h2")


def test_a_short_document_has_no_contents_and_anchors_follow_github():
    doc = Document("t")
    for title in ("One", "Two (2)", "Model `a-b`"):
        doc.h(1, title)
    assert "Contents" not in to_markdown(doc) and "<nav" not in to_html(doc, Path("."))
    doc.h(1, "Per-class accuracy: val/")
    md = to_markdown(doc)
    assert "- [Two (2)](#two-2)\n" in md and "- [Model `a-b`](#model-a-b)\n" in md
    assert "- [Per-class accuracy: val/](#per-class-accuracy-val)\n" in md


def test_terminal_table_shows_the_report_cells_without_markup(compare_study):
    from rich.console import Console

    root, md_path, _ = compare_study
    console = Console(record=True, width=250)
    render_compare(root, console=console)  # the terminal table is printed from the report's own analysis
    out = console.export_text()
    assert "Regularization techniques" in out and "`" not in out and "**" not in out
    study = load_study(root, warn_stderr=False)
    _, lo, _ = difference_by_hand(learned_correctness(study, "regularized"), learned_correctness(study, "basic"),
                                  family_level(2))
    assert f"differs: at least {common.pp_abs(lo)} higher" in out
    assert "3 of 3 finished (0, 1, 2)" in out


def test_a_copied_study_renders_the_identical_report(compare_study, tmp_path):
    import shutil

    root, md_path, _ = compare_study
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    (copy / "report.md").unlink()
    shutil.rmtree(copy / "figures")
    assert render_compare(copy)[0].read_text() == md_path.read_text()  # no path or time baked in


# ------------------------------------------------------------------------------------ verdicts, by design


def _study(tmp_path, name, basic, reg, n_val=2000):
    return load_study(make_study(tmp_path / name, compare_spec(basic, reg), n_val=n_val), warn_stderr=False)


def test_the_three_verdicts(tmp_path):
    level = family_level(2)
    # clearly differs: 5 seeds each, 15 points apart
    s = _study(tmp_path, "differs", [0.600, 0.605, 0.610, 0.603, 0.608], [0.750, 0.752, 0.748, 0.755, 0.751])
    c = analyze(s, "basic", 0.01).accuracy[0]
    d, lo, hi = difference_by_hand(learned_correctness(s, "regularized"), learned_correctness(s, "basic"), level)
    assert c.verdict == "differs" and c.lo > 0.13 and c.at_least == pytest.approx(lo)
    assert (c.diff, c.lo, c.hi) == pytest.approx((d, lo, hi), abs=1e-12)
    assert analysis.superiority_text(c) == "1.00 (in 25 of 25 seed pairs; resolution 1/25)"
    assert analysis.verdict_text(c) == (f"**differs**: `regularized` is at least {common.pp_abs(lo)} higher than "
                                        "`basic` (estimate +14.60 pp)")
    # clearly equivalent: 10 seeds each within a few images of 80%
    eq_a = [0.8000, 0.8005, 0.7995, 0.8010, 0.7990, 0.8000, 0.8005, 0.7995, 0.8000, 0.8005]
    eq_b = [0.8005, 0.8000, 0.8010, 0.7995, 0.8000, 0.8005, 0.7990, 0.8000, 0.8005, 0.8000]
    s = _study(tmp_path, "equivalent", eq_a, eq_b)
    c = analyze(s, "basic", 0.01).accuracy[0]
    _, lo, hi = difference_by_hand(learned_correctness(s, "regularized"), learned_correctness(s, "basic"), level)
    assert c.verdict == "equivalent" and -0.01 < c.lo < c.hi < 0.01 and (c.lo, c.hi) == pytest.approx((lo, hi))
    # the interval inside the margin is the two one-sided tests at (1 - level) / 2 each, and the text says which
    assert c.tost_level == pytest.approx((1 - level) / 2)
    assert analysis.verdict_text(c) == ("**equivalent within ±1 pp** (a TOST at 1.25% on each side): the whole "
                                        "interval lies inside the margin")
    # inconclusive: 3 seeds with a wide spread; the verdict gives the range the data allow
    s = _study(tmp_path, "inconclusive", [0.60, 0.70, 0.65], [0.62, 0.72, 0.60])
    c = analyze(s, "basic", 0.01).accuracy[0]
    assert c.verdict == "inconclusive" and c.lo < 0 < c.hi
    expected = f"**inconclusive**: the data allow differences from {PP(c.lo)} to {PP(c.hi)}"
    assert analysis.verdict_text(c) == expected


def test_a_small_difference_that_is_certain_differs_but_inside_the_margin(tmp_path):
    s = _study(tmp_path, "s", [0.800, 0.8005, 0.800, 0.8005, 0.800], [0.805, 0.8055, 0.805, 0.8055, 0.805])
    c = analyze(s, "basic", 0.01).accuracy[0]
    assert c.verdict == "differs" and 0 < c.lo and c.hi < 0.01
    assert analysis.verdict_text(c).startswith("**differs, but by less than the ±1 pp margin**: `regularized` is at "
                                               f"least {common.pp_abs(c.lo)} higher than `basic` (estimate +0.50 pp)")


def test_seeds_at_the_same_accuracy_leave_the_val_image_term(tmp_path):
    """No seed-to-seed spread in accuracy (every seed 2,757 or 2,747 of 3,925 right): the seed term is exactly 0 and
    the interval is the val images' (the per-image contrast less the churn), not an exception or a zero width."""
    n = 3925
    s = _study(tmp_path, "s", [2757 / n] * 3, [2747 / n] * 3, n_val=n)
    an = analyze(s, "basic", 0.01)
    c = an.accuracy[0]
    ca, cb = learned_correctness(s, "regularized"), learned_correctness(s, "basic")
    assert np.ptp(ca.sum(1)) == 0 and np.ptp(cb.sum(1)) == 0
    d, lo, hi = difference_by_hand(ca, cb, an.level)
    assert c.diff == pytest.approx(-10 / n) == pytest.approx(d)
    assert (c.lo, c.hi) == pytest.approx((lo, hi))
    expected = "differs" if lo > 0 or hi < 0 else "equivalent" if -0.01 < lo and hi < 0.01 else "inconclusive"
    assert c.verdict == expected


def test_one_seed_each_the_networks_gap_interval_is_its_normal_approximation(tmp_path):
    """One seed each: no claim about the variants' gaps; what the two networks do has an interval from images (val/
    paired, clean samples binomial) with the half-width of the normal approximation, centred on the difference."""
    s = _study(tmp_path, "s", [0.60], [0.75], n_val=2000)
    an = analyze(s, "basic", 0.01)
    c = an.gap[0]
    assert c.verdict == "no claim" and c.one_seed and not c.has_interval and c.plan is None
    v, r = s.variants["regularized"].runs[0], s.variants["basic"].runs[0]
    var_clean = sum(f.clean * (1 - f.clean) / f.clean_n for f in (v, r))
    a_only, b_only = np.mean(v.correctness & ~r.correctness), np.mean(~v.correctness & r.correctness)
    var_val = (a_only + b_only - (a_only - b_only) ** 2) / 2000  # paired difference of two accuracies
    half = sps.norm.ppf(0.5 + an.level / 2) * np.sqrt(var_clean + var_val)
    net = c.networks
    assert c.diff == pytest.approx((v.clean - v.acc) - (r.clean - r.acc)) == pytest.approx(net["diff"])
    assert (net["hi"] - net["lo"]) / 2 == pytest.approx(half, rel=0.01)
    assert (net["lo"] + net["hi"]) / 2 == pytest.approx(c.diff)


# ----------------------------------------------------------------------------- one seed: images only


def test_one_seed_each_makes_no_claim_and_says_what_the_networks_did(tmp_path):
    root = make_study(tmp_path / "s", compare_spec([0.70], [0.72]), study_json=False)
    md = render_compare(root)[0].read_text()
    study = load_study(root, warn_stderr=False)
    an = analyze(study, "basic")
    c = an.accuracy[0]
    assert c.verdict == "no claim" and c.one_seed and not c.has_interval
    ca, cb = study.variants["regularized"].runs[0].correctness, study.variants["basic"].runs[0].correctness
    a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    p = sps.binomtest(a_only, a_only + b_only, 0.5).pvalue  # McNemar's exact test, by hand
    net = c.networks
    assert (net["a_only"], net["b_only"]) == (a_only, b_only) and net["p_unadjusted"] == pytest.approx(p)
    contrast = ca.astype(float) - cb
    half = _t(family_level(2), 399) * contrast.std(ddof=1) / np.sqrt(400)
    assert (net["lo"], net["hi"]) == pytest.approx((0.02 - half, 0.02 + half))
    concl = section(md, "Conclusion")
    assert (f"right only for `regularized`'s network on {a_only} images, only for `basic`'s on {b_only}, exact McNemar "
            f"p = {p:.3g} (unadjusted: outside the family)") in concl
    # the README's "On this one seed, regularized generalises better" for a 2-point difference on 400 images
    assert "generalises better" not in md and "On this one seed" not in md
    assert "**no claim about the variants**: one seed on a side" in concl
    assert "another seed could give another answer" in concl
    # one seed: a Wilson interval for the run's accuracy, on its integer count, for that network
    lo, hi = sps.binomtest(288, 400).proportion_ci(method="wilson")
    assert f"72.00% (288 of 400; Wilson 95% [{PCT(lo)}, {PCT(hi)}]) for this one network" in md
    assert "sum of the runs' wall times; no study.json" in md


NETWORKS = re.compile(r"(\*\*)?These (two )?networks[^:]*?, not the variants:(\*\*)?.*?"
                      r"(\(unadjusted: outside the family\)|\(image sampling only\))")


def test_the_default_one_seed_report_opens_with_a_warning_and_claims_nothing_about_the_variants(tmp_path):
    """`reglab compare` at its default (one seed): read without the small print, it claims nothing about the
    variants; the only comparisons are the labelled sentences about the two networks on these images."""
    from rich.console import Console

    root = make_study(tmp_path / "s", compare_spec([0.60], [0.75]))  # 15 points apart: networks that differ
    console = Console(record=True, width=250)
    md_path, html_path = render_compare(root, console=console)
    md = md_path.read_text()
    first = md.split("\n\n")[1]  # the paragraph right after the title
    assert first.startswith("> **No claim about the variants: one seed on a side.**")
    assert "these 400 val images" in first and "`--seeds 2`" in first and "`reglab plan DIR`" in first
    assert "**These two networks on these images, not the variants:**" in first
    for text in (md, unescape(re.sub(r"<[^>]+>", "", html_path.read_text()))):  # the HTML as read
        rest = NETWORKS.sub("", text)
        assert len(NETWORKS.findall(text)) >= 2
        for word in ("differs", "higher", "lower", "smaller", "larger", "better than", "worse"):
            assert word not in rest.lower(), (word, re.findall(rf".{{80}}{word}.{{40}}", rest, flags=re.I))
    out = console.export_text()
    assert "no claim: one seed on a side" in out and "differs" not in out
    an = analyze(load_study(root, warn_stderr=False), "basic")
    assert an.accuracy[0].networks["lo"] > 0  # the networks do differ on these images; the report says only that
    assert analysis.recommended_seeds(an)["seeds"] is None


def test_at_chance_seeds_are_counted_apart_and_in_no_interval(tmp_path):
    root = make_study(tmp_path / "s", compare_spec([0.60, 0.62, 0.10], [0.75, 0.78, 0.76]))  # basic seed 2 at chance
    md = render_compare(root)[0].read_text()
    study = load_study(root, warn_stderr=False)
    basic = study.variants["basic"]
    assert [f.at_chance for f in basic.runs] == [False, False, True]
    cb = learned_correctness(study, "basic")
    assert cb.shape == (2, 400)
    m, lo, hi = variant_by_hand(cb)
    assert f"{PCT(m, mean=True)} [{PCT(lo, mean=True)}, {PCT(hi, mean=True)}] (**1 of 3 at chance**: not in the " \
           "interval)" in md
    flo, fhi = sps.binomtest(1, 3).proportion_ci(method="exact")
    assert f"| 1 of 3 [{flo:.0%}, {fhi:.0%}] |" in md  # failed or at chance, with its exact interval
    an = analyze(study, "basic")
    c = an.accuracy[0]
    assert c.n_seeds == (3, 2)
    d, lo, hi = difference_by_hand(learned_correctness(study, "regularized"), cb, an.level)
    assert (c.diff, c.lo, c.hi) == pytest.approx((d, lo, hi))
    assert PCT(np.mean([0.60, 0.62, 0.10]), mean=True) not in md  # the two-peaked mean is nowhere


# ------------------------------------------------------------------------------ the README's own ablation


README = {  # the README's CPU ablation, 2 seeds each: (accuracy, old gap) per seed
    "full": ("regularized", None, [(0, 0.5269, 0.0101), (1, 0.4994, -0.0103)]),
    "no-augment": ("regularized", {"augment": "none"}, [(0, 0.6433, 0.0640), (1, 0.6092, 0.0554)]),
    "no-batchnorm": ("regularized", {"batchnorm": False}, [(0, 0.3804, 0.0133), (1, 0.0910, -0.0229)]),
    "no-dropout": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0}, [(0, 0.5778, 0.0924), (1, 0.5401, 0.0190)]),
    "none": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0, "batchnorm": False, "augment": "none"},
             [(0, 0.6339, 0.1027), (1, 0.6064, 0.0689)]),
    "basic": ("basic", None, [(0, 0.6510, 0.1707), (1, 0.6502, 0.1537)]),
}


@pytest.fixture(scope="module")
def readme_ablation(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("readme") / "study", README, kind="ablate", n_val=3925)
    md_path, html_path = render_ablation(root, baseline="full")
    return root, md_path.read_text(), html_path.read_text()


def test_readme_ablation_prints_no_interval_outside_the_possible_range(readme_ablation):
    root, md, _ = readme_ablation
    assert not re.search(r"-160\.\d|207\.\d", md)  # the old "[-160.31%, 207.45%]"
    assert not re.search(r"\d% ± \d", md)  # nor a mean ± half-width at df = 1 ("23.57% ± 183.88%")
    pct = intervals(md, "%")
    assert pct and all(0.0 <= lo <= hi <= 100.0 for lo, hi in pct), pct
    pp = intervals(md, " pp")
    acc_rows = section(md, "Differences from `full`").split("## Generalization gap")[0]
    assert all(-100.0 <= lo <= hi <= 100.0 for lo, hi in intervals(acc_rows, " pp"))
    assert all(-200.0 <= lo <= hi <= 200.0 for lo, hi in pp)
    # two seeds of a quantity with no per-image record: the seeds' values, not a df = 1 interval
    assert "53.70%, 48.91% (mean 51.30%)" in md
    # the accuracy: the variant's interval (seeds and val images), the at-chance seed in no mean or interval
    m, lo, hi = variant_by_hand(learned_correctness(load_study(root, warn_stderr=False), "full"))
    assert f"{PCT(m, mean=True)} [{PCT(lo, mean=True)}, {PCT(hi, mean=True)}]" in md
    assert "23.57%" not in md and "38.04% (1,493 of 3,925; Wilson 95%" in md


def test_readme_ablation_verdicts_agree_with_their_intervals(readme_ablation):
    root, md, _ = readme_ablation
    assert "not distinguishable" not in md.lower() and "no effect" not in md.lower()
    study = load_study(root, warn_stderr=False)
    an = analyze(study, "full")
    assert an.m == 10 and an.level == pytest.approx(0.995)
    full = study.variants["full"].learned
    for c in an.accuracy + an.gap:
        if c.variant == "no-batchnorm":  # one seed learned, the other at chance: no claim about the variant
            assert c.verdict == "no claim" and c.one_seed and c.n_seeds == (1, 2) and not c.has_interval
            continue
        excludes = c.lo > 0 or c.hi < 0
        assert (c.verdict == "differs") == excludes
        assert c.method.startswith("seed and val-image sampling, paired images")
        ca, cb = learned_correctness(study, c.variant), learned_correctness(study, "full")
        if c.metric == "accuracy":
            ref = stats.compare_variants(ca, cb, an.level, 0.01)
            assert (c.lo, c.hi) == pytest.approx(difference_by_hand(ca, cb, an.level)[1:])
        else:
            v = study.variants[c.variant].learned
            ref = stats.compare_gaps(ca, [f.clean for f in v], [f.clean_n for f in v],
                                     cb, [f.clean for f in full], [f.clean_n for f in full], an.level, 0.01)
        assert (c.lo, c.hi, c.verdict) == (pytest.approx(ref["lo"]), pytest.approx(ref["hi"]), ref["verdict"])
    assert "1 of 2 at chance" in md and "no-batchnorm` seed 1 is **at chance**" in md
    assert "10 comparisons, Bonferroni-simultaneous 95% intervals (each at 99.5%)" in md
    concl = section(md, "Conclusions")
    assert "no claim about the variants: `no-batchnorm` (one seed on a side)" in concl
    assert ", 1 with no claim" in concl


def test_readme_ablation_names_the_at_chance_seed(readme_ablation):
    _, md, _ = readme_ablation
    p = sps.binomtest(357, 3925, 0.25, alternative="greater").pvalue  # 4 classes in the synthetic runs
    assert p > 0.05
    assert f"accuracy 9.10% (357 of 3925) is not shown to be above chance (1/4 = 25.00%; one-sided exact " \
           f"binomial {common.p_text(p)})" in md
    runs = section(md, "Runs")
    assert "| `no-batchnorm` | 2 of 2 |" in runs and "| seed 1 |" in runs


# --------------------------------------------------------------------------------- no run vanishes


def test_failed_damaged_and_interrupted_runs_are_named_and_counted(tmp_path, capsys):
    root = make_study(tmp_path / "s", compare_spec([0.60, 0.62], [0.75, 0.78]))
    make_run(root, "basic", "basic", 2, 0.5, 0.2, status="failed", failure="the loss became NaN at epoch 3")
    make_run(root, "regularized", "regularized", 2, 0.5, 0.2, status="interrupted")
    damaged = make_run(root, "regularized", "regularized", 3, 0.5, 0.2)
    (damaged / "summary.json").write_text('{"status": "finished", "restored_val_acc')  # cut off mid-write
    md = render_compare(root)[0].read_text()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("reglab: warning: run ") for line in lines), err
    assert f"run {root / 'basic' / 'seed-2'} failed: the loss became NaN at epoch 3" in err
    assert f"run {root / 'regularized' / 'seed-2'} was interrupted:" in err
    assert f"run {root / 'regularized' / 'seed-3'} is damaged: {damaged / 'summary.json'} is damaged" in err
    assert "Traceback" not in err
    runs = section(md, "Runs")
    lo, hi = stats.binomial_ci(2, 3)
    assert f"| `basic` | 2 of 3 | [{lo:.0%}, {hi:.0%}] | seed 2: **failed**: the loss became NaN at epoch 3 |" in runs
    lo, hi = stats.binomial_ci(2, 4)
    assert f"| `regularized` | 2 of 4 | [{lo:.0%}, {hi:.0%}] |" in runs
    assert "seed 3: **damaged**:" in runs and "seed 2: **interrupted**:" in runs
    assert md.count("> **Warning:** Run ") == 3
    # the unfinished runs are not in any number
    assert "2 of 3 finished (0, 1); seed 2 failed" in md


def test_a_truncated_predictions_file_is_named_not_a_traceback(tmp_path, capsys):
    root = make_study(tmp_path / "s", compare_spec([0.60, 0.62, 0.61], [0.75, 0.78, 0.76]))
    npz = root / "basic" / "seed-1" / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # cut off mid-write: no longer a zip file
    md = render_compare(root)[0].read_text()
    err = capsys.readouterr().err
    assert f"run {root / 'basic' / 'seed-1'} is damaged: {npz} is damaged (BadZipFile" in err
    assert "seed 1: **damaged**:" in section(md, "Runs")


def test_a_report_says_when_the_data_changed_since_training(mini, tmp_path, capsys):
    """Run folders record their data's identity; a report re-rendered later compares it with the data now."""
    data = tmp_path / "data"
    shutil.copytree(mini, data)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--model", "basic", "--image-size", "32",
                 "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    assert main(["report", str(run)]) == 0
    assert "changed since" not in capsys.readouterr().err + (run / "report.md").read_text()
    extra = data / "val" / "n01440764" / "added.JPEG"
    shutil.copyfile(next((data / "val" / "n02102040").iterdir()), extra)
    assert main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"the data at {data} has changed since {run} was trained: files were added or removed " \
           f"(val/n01440764 had 6 images, now 7)" in err
    assert "the data has changed since this run was trained" in (run / "report.md").read_text()
    # a study of such runs says it too, once per dataset
    study = tmp_path / "study"
    (study / "basic").mkdir(parents=True)
    shutil.copytree(run, study / "basic" / "seed-42")
    (study / "basic" / "seed-42" / "report.md").unlink()
    render_compare(study)
    assert capsys.readouterr().err.count(f"the data at {data} has changed since the runs under") == 1


def test_a_study_with_no_finished_run_is_one_user_error(tmp_path):
    root = tmp_path / "s"
    make_run(root, "basic", "basic", 0, 0.5, 0.2, status="failed", failure="out of memory")
    with pytest.raises(UserError, match=r"no finished runs under .*\(found 1 failed\)") as e:
        render_compare(root)
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no finished runs under .*expected"):
        render_compare(tmp_path / "empty")


def test_an_at_chance_pair_is_not_ranked(tmp_path, capsys):
    from rich.console import Console

    root = make_study(tmp_path / "s", compare_spec([0.25, 0.26], [0.20, 0.21]))
    study = load_study(root)
    err = capsys.readouterr().err
    assert err.count("is at chance") == 4
    an = analyze(study, "basic")
    for c in an.accuracy + an.gap:
        assert c.not_ranked
        assert analysis.verdict_text(c) == "**not ranked**: `regularized` and `basic` are both at chance"
    console = Console(record=True, width=250)
    md = render_compare(root, console=console)[0].read_text()
    concl = section(md, "Conclusion")
    assert "higher than" not in concl and "lower than" not in concl and "**not ranked**" in concl
    out = console.export_text()
    assert "at chance" in out and "not ranked (both at chance)" in out


def test_predicting_one_class_for_most_images_is_flagged(tmp_path):
    root = make_study(tmp_path / "s", compare_spec([0.40], [0.75]), one_class=True)
    f = load_study(root, warn_stderr=False).variants["basic"].runs[0]
    guess = f.predictions["probs"].argmax(axis=1)
    share = np.mean(guess == 0)
    assert share > 0.5 and f.acc == 0.40  # 40% right: above chance (25%) on the binomial test alone
    assert sps.binomtest(160, 400, 0.25, alternative="greater").pvalue < 0.05
    assert f.at_chance and f"predicts one class (tench) for {share:.0%} of the images (it is 25% of them)" \
        in f.chance_reason


# ------------------------------------------------------------------------------------------- display


def test_names_from_the_data_are_escaped_everywhere(tmp_path, capsys):
    from rich.console import Console

    names = [NASTY, MATH, "cassette player", "chain saw"]
    spec = {"odd|name*": ("basic", None, [(0, 0.60, 0.3)]), "regularized": ("regularized", None, [(0, 0.75, 0.05)])}
    root = make_study(tmp_path / "s", spec, class_names=names)
    console = Console(record=True, width=300)
    md_path, html_path = render_compare(root, console=console)  # matplotlib would fail on MATH as mathtext
    md, html = md_path.read_text(), html_path.read_text()
    # Markdown: every special character escaped, the escape sequence visible, the table intact
    assert r"a\$b\|c\*\_\<i\>\\x1b\[31m" in md
    assert "odd\\|name\\*" in md and "`odd|name*`" not in md
    assert "\x1b" not in md and "\x1b" not in html
    per_class = next(line for line in md.splitlines() if line.startswith(r"| a\$b"))
    assert len(re.findall(r"(?<!\\)\|", per_class)) == 4  # class | basic | regularized: no cell split by the name
    # HTML: the name as text, nothing interpreted
    assert "a$b|c*_&lt;i&gt;\\x1b[31m" in html and "<i>" not in html
    assert "odd|name*" in html
    # the stderr and terminal lines are single lines without escape sequences
    out = console.export_text()
    assert "\x1b" not in out and "odd|name*" in out
    assert "\x1b" not in capsys.readouterr().err


def test_escaping_helpers():
    assert visible("a\nb\x1b[0m\u2028") == "a\\nb\\x1b[0m\\u2028"
    assert esc(NASTY) == r"a\$b\|c\*\_\<i\>\\x1b\[31m"
    assert plain(esc(NASTY)) == visible(NASTY)
    assert inline_html(esc("<b>&`x`")) == "&lt;b&gt;&amp;`x`"
    assert inline_html("**bold** and `code`") == "<strong>bold</strong> and <code>code</code>"
    assert mpl_text("cost $5 and $6\n") == r"cost \$5 and \$6\n"


def test_whole_numbers_print_as_whole_numbers():
    assert COUNT(6.0) == "6" and COUNT(6.0, mean=True) == "6" and COUNT(6.5, mean=True) == "6.5"
    assert analysis.seed_summary([6.0, 6.0], COUNT, common.NONNEG) == "6 (both seeds)"
    assert analysis.seed_summary([6.0, 7.0], COUNT, common.NONNEG) == "6, 7 (mean 6.5)"


def test_seed_intervals_are_clipped_to_the_range_and_say_so():
    vals = [0.99, 0.999, 0.90]
    m, sd = np.mean(vals), np.std(vals, ddof=1)
    lo = m - sps.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert m + sps.t.ppf(0.975, 2) * sd / np.sqrt(3) > 1  # unclipped, the interval leaves [0, 100%]
    assert analysis.seed_summary(vals, PCT) == f"{PCT(m, mean=True)} [{PCT(lo, mean=True)}, 100.00%] (clipped)"


def test_epochs_at_the_cap_are_censored(tmp_path):
    root = tmp_path / "s"
    make_run(root, "basic", "basic", 0, 0.6, 0.3, epochs=6, epochs_max=6, stopped_early=False)
    make_run(root, "basic", "basic", 1, 0.6, 0.3, epochs=4, epochs_max=6, stopped_early=True)
    make_run(root, "regularized", "regularized", 0, 0.7, 0.1, epochs=6, epochs_max=6, stopped_early=False)
    study = load_study(root, warn_stderr=False)
    basic, reg = study.variants["basic"], study.variants["regularized"]
    assert basic.runs[0].epochs_text() == "ran all 6 epochs (the cap)"
    assert basic.runs[1].epochs_text() == "stopped early at epoch 4"
    assert analysis.epochs_cell(basic) == "≥ 5 (1 of 2 at the 6-epoch cap; 6 (cap), 4)"
    assert analysis.epochs_cell(reg) == "6 (cap)"


def test_a_best_epoch_at_the_cap_is_censored(tmp_path):
    """The best epoch of a run the cap stopped, when it is the last epoch, might have come later: marked."""
    root = tmp_path / "s"
    for seed in (0, 1):
        run = make_run(root, "regularized", "regularized", seed, 0.7, 0.1, epochs=6, epochs_max=6, stopped_early=False)
        summary = json.loads((run / "summary.json").read_text())
        summary["best_epoch"] = 6 - seed  # seed 0 at the cap, seed 1 one before it
        (run / "summary.json").write_text(json.dumps(summary))
    make_run(root, "basic", "basic", 0, 0.6, 0.3, epochs=4, epochs_max=6, stopped_early=True)
    study = load_study(root, warn_stderr=False)
    reg, basic = study.variants["regularized"], study.variants["basic"]
    assert [f.best_censored for f in reg.runs] == [True, False] and not basic.runs[0].best_censored
    assert analysis.best_epoch_cell(reg) == "≥ 5.5 (1 of 2 at the 6-epoch cap; 6 (cap), 5)"
    assert analysis.best_epoch_cell(basic) == "3"
    md = render_compare(root)[0].read_text()
    assert "Best epochs: 6 (cap), 5." in md
    assert "| Best epoch | 3 | ≥ 5.5 (1 of 2 at the 6-epoch cap; 6 (cap), 5) |" in md


def test_different_data_and_mixed_designs_are_warned_about(tmp_path, capsys):
    root = tmp_path / "s"
    make_run(root, "basic", "basic", 0, 0.6, 0.3, fingerprint="aaaa1111aaaa1111")
    make_run(root, "regularized", "regularized", 0, 0.75, 0.05, fingerprint="bbbb2222bbbb2222",
             chosen_on="selection split")
    md = render_compare(root)[0].read_text()
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "were trained on different data" in err and "mix designs" in err
    assert "> **Warning:** **These runs were trained on different data**" in md
    assert "data `aaaa1111aaaa1111`: `basic` seed 0; data `bbbb2222bbbb2222`: `regularized` seed 0" in md
    assert "**Mixed designs**" in md and "mixed designs" in md


def test_an_old_run_folder_renders_with_its_fallbacks(tmp_path, capsys):
    root = make_study(tmp_path / "s", compare_spec([0.60], [0.75]), legacy=True)
    md = render_compare(root)[0].read_text()
    assert "Traceback" not in capsys.readouterr().err
    study = load_study(root, warn_stderr=False)
    f = study.variants["basic"].runs[0]
    assert f.correct == 240 and not f.gap_measured
    assert f.gap == pytest.approx(f.summary.train_accuracy - f.summary.val_accuracy)
    assert "Older run folders have no clean training accuracy" in md
    assert "not recorded (an older run)" in md


# ------------------------------------------------------------------------------------------- figures


def test_the_gap_grid_reads_at_page_width(tmp_path):
    from PIL import Image

    rows = [dict(epoch=e, train_loss=1 / e, train_accuracy=0.5 + e / 20, val_loss=1.2 / e, val_accuracy=0.45 + e / 25)
            for e in range(1, 6)]
    panels = {f"variant-{k}": {"series": {0: rows, 1: rows}, "measured": [(4, 0.8, 0.6)]} for k in range(8)}
    plot_gap_grid(panels, tmp_path / "gap.png")
    w, h = Image.open(tmp_path / "gap.png").size
    assert w <= 1400 and h >= 3 * 250  # 3 panels a row, 3 rows; the old figure was 3360 x 400


def test_forest_plot_is_sorted_and_clipped_to_the_possible_range(tmp_path):
    items = [dict(label="small", diff=1.0, lo=-2.0, hi=4.0, seeds=[0.5, 1.5]),
             dict(label="huge", diff=20.0, lo=-160.0, hi=207.0, seeds=[35.0, 5.0]),
             dict(label="none", diff=-3.0, lo=float("nan"), hi=float("nan"), seeds=[-3.0])]
    drawn = plot_forest(items, tmp_path / "forest.png", "Difference (pp)", limit=100.0, margin=1.0)
    assert drawn["order"] == ["huge", "small", "none"]  # sorted by effect, top to bottom
    assert drawn["xlim"][0] >= -100.0 and drawn["xlim"][1] <= 100.0
    assert drawn["arrows"] == ["huge<", "huge>"]  # both ends of the clipped interval are marked


def test_plot_curves_is_the_notebook_figure_with_either_design(tmp_path):
    from PIL import Image

    rows = [dict(epoch=e, train_loss=1 / e, train_accuracy=0.5 + e / 20, val_loss=1.2 / e, val_accuracy=0.45 + e / 25,
                 lr=1e-3, seconds=1.0) for e in range(1, 6)]
    plot_curves(rows, tmp_path / "curves.png", title="basic (seed 0)")
    assert Image.open(tmp_path / "curves.png").size == (1200, 400)  # 12 x 4 inches at 100 dpi
    select = [dict(r, val_loss=None, val_accuracy=None, select_loss=r["val_loss"], select_accuracy=r["val_accuracy"])
              for r in rows]
    plot_curves(select, tmp_path / "select.png", title="selection split")
    assert Image.open(tmp_path / "select.png").size == (1200, 400)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left behind


# ------------------------------------------------------------------------------------------- ablation


def test_ablation_report(tmp_path):
    full = ("regularized", None, [(0, 0.80, 0.05), (1, 0.81, 0.06), (2, 0.82, 0.05)])
    spec = {
        "full": full,
        "no-dropout": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0},
                       [(0, 0.70, 0.20), (1, 0.71, 0.22), (2, 0.705, 0.21)]),
        "no-augment": ("regularized", {"augment": "none"}, [(0, 0.79, 0.07), (1, 0.83, 0.06), (2, 0.80, 0.08)]),
    }
    root = make_study(tmp_path / "study", spec, kind="ablate", n_val=2000)
    md_path, html_path = render_ablation(root, baseline="full")
    md, html = md_path.read_text(), html_path.read_text()
    for ref in image_refs(md):
        assert (root / ref).is_file()
    assert {"figures/forest.png", "figures/forest-gap.png", "figures/gap.png",
            "figures/curves-no-dropout.png"} <= set(image_refs(md))
    assert 'id="ablation-differences"' in html
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings.index("Variants") < headings.index("Differences from `full`") < headings.index("Runs")
    assert "**Contents:**" in md and '<nav class="contents">' in html
    study = load_study(root, warn_stderr=False)
    an = analyze(study, "full")
    assert an.m == 4 and an.level == pytest.approx(0.9875)
    drop = an.get("accuracy", "no-dropout")
    assert drop.verdict == "differs" and drop.hi < 0
    _, _, hi = difference_by_hand(learned_correctness(study, "no-dropout"), learned_correctness(study, "full"),
                                  an.level)
    concl = section(md, "Conclusions")
    assert f"`no-dropout` is at least {common.pp_abs(hi)} lower than `full` (estimate -10.50 pp)" in concl
    assert "inconclusive: `no-augment`" in concl
    assert "1 of 2 variants differ from `full` in headline accuracy" in concl
    assert "Bonferroni" in md and "Holm" in md  # says why Bonferroni and not Holm


def test_ablation_without_the_baseline_compares_with_the_first_variant_and_says_so(tmp_path):
    from rich.console import Console

    spec = {"no-dropout": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0}, [(0, 0.70, 0.20)]),
            "none": ("none", None, [(0, 0.65, 0.30)])}
    root = make_study(tmp_path / "s", spec, kind="ablate")
    console = Console(record=True, width=250)
    md = render_ablation(root, baseline="full", console=console)[0].read_text()
    assert "the requested baseline `full` is not in this study" in md
    assert md.split("\n\n")[1].startswith("> **No claim about the variants: one seed on a side.**")
    assert "0 of 1 variants differ" in md and "1 with no claim" in md
    out = console.export_text()
    assert "no-dropout (baseline)" in out and "`" not in out


# ----------------------------------------------------------------------------------------- single run


def test_single_run_report(tmp_path, capsys):
    run = make_run(tmp_path, "regularized", "regularized", 7, 0.7525, 0.10, epochs=5, epochs_max=20,
                   stopped_early=True, n_val=400)
    md_path, html_path = render_single(run)
    assert md_path == run / "report.md" and html_path == run / "report.html"
    md, html = md_path.read_text(), html_path.read_text()
    refs = image_refs(md)
    assert refs == ["figures/curves.png", "figures/confusion.png", "figures/misclassified.png",
                    "figures/augmentation.png"]
    assert all((run / r).is_file() for r in refs)
    lo, hi = sps.binomtest(301, 400).proportion_ci(method="wilson")
    assert f"75.25% (301 of 400 images; Wilson 95% [{PCT(lo)}, {PCT(hi)}])" in md
    assert "| Generalization gap (clean training − headline accuracy) | +10.00 pp |" in md
    assert "stopped early at epoch 5" in md
    assert "selected on the same images that judge it: optimistic" in md
    assert "```mermaid\nflowchart TD" in md and '<svg class="model-diagram"' in html
    for needle in ("labhost", "0123456789ab (dirty: uncommitted changes)", "native bf16: yes",
                   "`reglab compare --out study`"):
        assert needle in md
    assert "Traceback" not in capsys.readouterr().err
    per_class = section(md, "Per-class accuracy")
    assert "| tench |" in per_class


def test_single_report_of_a_failed_run_says_so(tmp_path, capsys):
    run = make_run(tmp_path, "basic", "basic", 0, 0.5, 0.2, status="failed", failure="the loss became NaN")
    md = render_single(run)[0].read_text()
    assert "this run is not finished (status failed): the loss became NaN" in md
    err = capsys.readouterr().err
    assert err.startswith("reglab: warning: run ") and "failed: the loss became NaN" in err


def test_a_run_that_was_never_evaluated_shows_what_its_folder_holds(tmp_path, capsys):
    run = make_run(tmp_path, "basic", "basic", 0, 0.5, 0.2, status="interrupted")
    summary = json.loads((run / "summary.json").read_text())
    for key in ("restored_val_loss", "restored_val_accuracy", "restored_val_correct", "clean_train_accuracy"):
        summary.pop(key)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "predictions.npz").unlink()
    md = render_single(run)[0].read_text()
    assert "this run is not finished (status interrupted)" in md
    assert section(md, "Summary").strip() == "No results yet: the run has not been evaluated."
    assert image_refs(md) == ["figures/curves.png"]  # the epochs so far
    assert "| block1.conv1 (Conv2D) |" in section(md, "Architecture")
    assert "was interrupted" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ one report path


def test_every_report_is_one_load_and_one_analysis_written_twice(tmp_path, monkeypatch, capsys):
    """The document and the terminal table are words for the same analysis: one load_study, one analyze."""
    from reglab.reports.render import render_report

    calls = {"load_study": 0, "analyze": 0}

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(facts, "load_study")
    counted(analysis, "analyze")
    for kind, spec in (("compare", compare_spec([0.60, 0.62], [0.75, 0.78])),
                       ("ablate", {k: README[k] for k in ("full", "no-dropout")})):
        calls.update(load_study=0, analyze=0)
        root = make_study(tmp_path / kind, spec, kind=kind)
        render_report(root)
        out = capsys.readouterr().out
        assert calls == {"load_study": 1, "analyze": 1}, kind
        assert ("Summary of key differences" if kind == "compare" else "Ablation (report.md has every column)") in out


def test_a_run_folder_and_a_study_go_through_one_path_and_the_same_sections(tmp_path, monkeypatch, capsys):
    import reglab.reports.render as front
    from reglab.reports import report, sections
    from reglab.reports.compare import COMPARE
    from reglab.reports.single import SINGLE

    shared = {sections.per_class, sections.mistakes, sections.augmentation, sections.how_to_read}
    assert shared <= set(SINGLE.sections) & set(COMPARE.sections)
    rendered = []

    def render(rep, study, *args, **kwargs):
        rendered.append((rep, study.single))
        return report.render(rep, study, *args, **kwargs)

    monkeypatch.setattr(front, "render", render)
    run = make_run(tmp_path / "one", "regularized", "regularized", 0, 0.75, 0.1)
    root = make_study(tmp_path / "study", compare_spec([0.60], [0.75]))
    front.render_report(run)
    assert capsys.readouterr().out.splitlines() == [f"report: {run / 'report.md'} and {run / 'report.html'}"]
    front.render_report(root)
    assert rendered == [(SINGLE, True), (COMPARE, False)]
    assert "| Class | `regularized` |" in section((run / "report.md").read_text(), "Per-class accuracy")


def test_the_architecture_is_the_one_the_run_recorded_never_rebuilt(tmp_path, monkeypatch):
    import reglab.models

    run = make_run(tmp_path / "new", "regularized", "regularized", 0, 0.75, 0.1)
    old = make_run(tmp_path / "old", "regularized", "regularized", 0, 0.75, 0.1, legacy=True)
    summary = json.loads((run / "summary.json").read_text())
    summary["layers"] = summary["layers"][:2] + [dict(summary["layers"][-1], params=12345)]
    summary["params_trainable"], summary["params_non_trainable"] = 13000, 345
    (run / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(reglab.models, "build_model", lambda *a, **k: pytest.fail("the report rebuilt the model"))
    monkeypatch.setattr(reglab.models, "layer_table", lambda *a, **k: pytest.fail("the report rebuilt the table"))
    md, html = (p.read_text() for p in render_single(run))
    arch = section(md, "Architecture")
    assert arch.count("| block") == 2 and "| head.dense2 (Dense) | (None, 4) | 12,345 |" in arch
    assert "Total params: 13,345; trainable: 13,000; non-trainable (batch-norm statistics): 345." in arch
    assert arch.count(" --> ") == 3  # input and the three recorded layers
    svg = re.search(r'<svg class="model-diagram".*?</svg>', html, flags=re.S).group(0)
    assert len(ET.fromstring(svg).findall("{http://www.w3.org/2000/svg}path")) == 3
    md = render_single(old)[0].read_text()
    assert "Layer table: not recorded by this run (an older run folder)." in section(md, "Architecture")
    assert "```mermaid" not in md


def test_the_augmentation_figure_shows_the_draws_the_run_recorded(tmp_path, monkeypatch):
    import reglab.data.augment
    from reglab.reports import sections

    drawn = []
    real = sections.plot_augmentation
    monkeypatch.setattr(reglab.data.augment, "augment", lambda *a, **k: pytest.fail("the report re-ran augment()"))
    monkeypatch.setattr(sections, "plot_augmentation", lambda *a, **k: (drawn.append(a), real(*a, **k)))
    run = make_run(tmp_path / "new", "regularized", "regularized", 0, 0.75, 0.1)
    old = make_run(tmp_path / "old", "regularized", "regularized", 0, 0.75, 0.1, legacy=True)
    md = render_single(run)[0].read_text()
    with np.load(run / "samples.npz") as z:
        images, augmented = z["images"], z["augmented"]
    assert len(drawn) == 1 and np.array_equal(drawn[0][0], images) and np.array_equal(drawn[0][1], augmented)
    assert "figures/augmentation.png" in image_refs(section(md, "Data augmentation"))
    md = render_single(old)[0].read_text()
    assert "records no draws of it (a run older than that record)" in section(md, "Data augmentation")
    assert not (old / "figures" / "augmentation.png").exists() and len(drawn) == 1


def test_a_variant_has_one_list_of_regularizers_and_an_unrecorded_one_says_so(tmp_path):
    root = make_study(tmp_path / "s", compare_spec([0.60], [0.75]))
    for variant in ("basic", "regularized"):
        path = root / variant / "seed-0" / "summary.json"
        summary = json.loads(path.read_text())
        summary.pop("regularizers")  # the oldest run folders did not record them
        path.write_text(json.dumps(summary))
    study = load_study(root, warn_stderr=False)
    assert [v.regularizers for v in study.variants.values()] == [None, None]
    md = render_compare(root, quiet=True)[0].read_text()
    assert "| Regularization techniques | not recorded (an older run) | not recorded (an older run) |" in md
    assert "Each model against `basic`" in md  # none recorded: the first variant is the reference
