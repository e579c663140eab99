"""Reports rendered from synthetic but well-formed run folders: files, numbers, offline HTML, honest text."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from reglab import stats
from reglab.config import dump_yaml, resolve
from reglab.errors import UserError
from reglab.models import build_model, count_params
from reglab.report import common
from reglab.report.ablation import render_ablation
from reglab.report.common import PCT, PP, fmt_int, summary_cell
from reglab.report.compare import comparison_rows, print_table, render_compare
from reglab.report.plots import plot_curves
from reglab.rundir import METRIC_COLUMNS, find_runs

CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684"]
CLASS_NAMES = ["tench", "English springer", "cassette player", "chain saw"]
SIZE = 32


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


def make_run(study: Path, variant: str, model: str, seed: int, acc: float, gap: float, epochs: int = 6,
             overrides: dict | None = None, n_val: int = 40) -> Path:
    """One finished run folder whose final restored val accuracy is `acc` and final train-val gap `gap`."""
    out = study / variant / f"seed-{seed}"
    out.mkdir(parents=True)
    cfg = resolve(flag_values={"model": model, "image_size": SIZE, "seed": seed, **(overrides or {})})
    (out / "config.yaml").write_text(dump_yaml(cfg))
    rng = np.random.default_rng(seed * 1000 + int(acc * 1e4))

    rows = []
    for e in range(1, epochs + 1):
        t = e / epochs
        val = acc * (0.6 + 0.4 * t)
        rows.append(dict(epoch=e, train_loss=1.5 - t, train_accuracy=min(val + gap * t, 1.0), val_loss=1.4 - 0.8 * t,
                         val_accuracy=val, lr=1e-3, seconds=2.0))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    (out / "metrics.csv").write_text(buf.getvalue())

    c = len(CLASSES)
    labels = rng.integers(0, c, n_val)
    right = rng.random(n_val) < acc
    pred = np.where(right, labels, (labels + rng.integers(1, c, n_val)) % c)
    probs = rng.dirichlet(np.ones(c), n_val).astype(np.float32) * 0.3
    probs[np.arange(n_val), pred] += 0.7
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:8]
    np.savez(out / "predictions.npz", labels=labels, probs=probs, worst_index=worst,
             worst_images=pictures(rng, len(worst)))
    np.savez(out / "samples.npz", images=pictures(rng, 4))

    trainable, frozen = count_params(build_model(cfg, c))
    last = rows[-1]
    summary = {
        "status": "finished", "model": model, "variant": variant, "seed": seed,
        "dataset": {"name": "imagenette2-160", "path": "/data/imagenette2-160", "train_size": 9469, "val_size": 3925,
                    "classes": CLASSES, "class_names": CLASS_NAMES},
        "device": "cpu", "device_name": "synthetic CPU",
        "software": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "reglab": "0.1.0"},
        "epochs_run": epochs, "best_epoch": epochs - 1, "stopped_early": False,
        "train_loss": last["train_loss"], "train_accuracy": last["train_accuracy"],
        "val_loss": last["val_loss"], "val_accuracy": last["val_accuracy"],
        "restored_val_loss": last["val_loss"] - 0.01, "restored_val_accuracy": acc,
        "params_trainable": trainable, "params_non_trainable": frozen,
        "wall_seconds": 12.5 + seed, "train_images_per_second": 1000.0, "regularizers": cfg.regularizers(),
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def make_study(root: Path, spec: dict, kind: str = "compare", study_json: bool = True) -> Path:
    """spec: {variant: (model, overrides, [(seed, acc, gap), ...])}."""
    root.mkdir(parents=True, exist_ok=True)
    for variant, (model, overrides, seeds) in spec.items():
        for seed, acc, gap in seeds:
            make_run(root, variant, model, seed, acc, gap, overrides=overrides)
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


def conclusion_of(md: str) -> str:
    return md.split("## Conclusion", 1)[1]


def image_refs(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


@pytest.fixture(scope="module")
def compare_study(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("cmp") / "study", compare_spec([0.60, 0.62], [0.75, 0.78]))
    md_path, html_path = render_compare(root)
    return root, md_path, html_path


def test_compare_writes_both_files_and_every_referenced_image(compare_study):
    root, md_path, html_path = compare_study
    assert md_path == root / "report.md" and html_path == root / "report.html"
    md = md_path.read_text()
    refs = image_refs(md)
    assert len(refs) >= 9  # 2 curves, overlay, gap, forest, 2 confusion, 2 misclassified, augmentation
    for ref in refs:
        assert (root / ref).is_file() and (root / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", ref
    assert "```mermaid\nflowchart TD" in md
    assert "a single seed is an anecdote" not in md.lower()


def test_compare_numbers_come_from_summary_json(compare_study):
    root, md_path, html_path = compare_study
    md, html = md_path.read_text(), html_path.read_text()
    runs = find_runs(root)
    for run in runs:
        s = run.summary
        for text in (md, html):
            assert f"seed {run.seed}: {PCT(s['restored_val_accuracy'])}" in text
            assert f"seed {run.seed}: {PCT(s['train_accuracy'])}" in text
            assert fmt_int(s["params_trainable"]) in text
    for variant in ("basic", "regularized"):
        accs = [r.summary["restored_val_accuracy"] for r in runs if r.variant == variant]
        cell = summary_cell(accs, PCT)
        assert "±" in cell and cell in md
        ci = stats.mean_ci(accs)
        assert f"[{PCT(ci['lo'], mean=True)}, {PCT(ci['hi'], mean=True)}]" in md
    reg = [r.summary["restored_val_accuracy"] for r in runs if r.variant == "regularized"]
    basic = [r.summary["restored_val_accuracy"] for r in runs if r.variant == "basic"]
    w = stats.welch(reg, basic)
    assert f"{PP(w['diff'])} (95% CI [{PP(w['lo'])}, {PP(w['hi'])}], {common.p_text(w['p'], 'Welch p')})" in md
    # the dataset, device and software are read from the runs
    assert "9,469 training images" in md and "3,925 validation images" in md and "English springer" in md
    assert "synthetic CPU" in md and "torch 2.13.0" in md and "5m 21s" in md  # study.json wall_seconds 321


def test_compare_html_is_self_contained(compare_study):
    _, md_path, html_path = compare_study
    html = html_path.read_text()
    assert not re.search(r"https?://", html)
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == len(image_refs(md_path.read_text()))
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(script|link)\b", html)
    assert 'id="key-differences"' in html and '<pre class="mermaid-source">flowchart TD' in html


def test_conclusion_direction_follows_the_numbers(tmp_path):
    better = conclusion_of(render_compare(make_study(tmp_path / "a", compare_spec([0.60, 0.62], [0.75, 0.78])))[0].read_text())
    worse = conclusion_of(render_compare(make_study(tmp_path / "b", compare_spec([0.75, 0.78], [0.60, 0.62])))[0].read_text())
    assert "`regularized` generalises better than `basic`:" in better and "distinguishable from noise" in better
    assert "does not generalise" not in better
    assert "`regularized` does not generalise better than `basic`:" in worse
    assert "`regularized` generalises better than" not in worse
    assert "+15.50 pp" in better and "-15.50 pp" in worse  # (0.75 + 0.78) / 2 - (0.60 + 0.62) / 2


def test_overlapping_results_are_called_noise(tmp_path):
    md = render_compare(make_study(tmp_path / "s", compare_spec([0.70, 0.76], [0.72, 0.75])))[0].read_text()
    text = conclusion_of(md)
    assert "not distinguishable from noise" in text
    assert "`regularized` generalises better than" not in text


def test_single_seed_is_called_an_anecdote(tmp_path):
    root = make_study(tmp_path / "s", compare_spec([0.60], [0.75]), study_json=False)
    md = render_compare(root)[0].read_text()
    assert "a single seed is an anecdote" in md.lower()
    assert "anecdote" in conclusion_of(md)
    assert "On this one seed, `regularized` generalises better than `basic`:" in md
    assert "sum of the runs' wall times; no study.json" in md
    run = find_runs(root)[0]
    assert PCT(run.summary["restored_val_accuracy"]) in md


def test_comparison_rows_and_terminal_table(compare_study):
    from rich.console import Console

    root, md_path, _ = compare_study
    rows = comparison_rows(find_runs(root))
    assert [r["Aspect"] for r in rows][0] == "Architecture"
    assert set(rows[0]) == {"Aspect", "basic", "regularized"}
    regs = next(r for r in rows if r["Aspect"] == "Regularization techniques")
    assert regs["basic"] == "none" and "batch normalization" in regs["regularized"]
    md = md_path.read_text()
    for row in rows:
        for cell in row.values():
            assert cell.replace("|", "\\|") in md  # the terminal table and the report show the same cells
    console = Console(record=True, width=200)
    print_table(rows, console=console)
    out = console.export_text()
    assert "basic" in out and "Regularization techniques" in out


@pytest.fixture(scope="module")
def ablation_study(tmp_path_factory):
    full = ("regularized", None, [(0, 0.80, 0.05), (1, 0.81, 0.06), (2, 0.82, 0.05)])
    spec = {
        "full": full,
        "no-dropout": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0},
                       [(0, 0.70, 0.20), (1, 0.71, 0.22), (2, 0.705, 0.21)]),
        "no-augment": ("regularized", {"augment": "none"}, [(0, 0.79, 0.07), (1, 0.83, 0.06), (2, 0.80, 0.08)]),
    }
    root = make_study(tmp_path_factory.mktemp("abl") / "study", spec, kind="ablate")
    return root, *render_ablation(root, baseline="full")


def test_ablation_report(ablation_study):
    root, md_path, html_path = ablation_study
    md, html = md_path.read_text(), html_path.read_text()
    for ref in image_refs(md):
        assert (root / ref).is_file()
    assert {"figures/forest.png", "figures/gap.png", "figures/curves-no-dropout.png"} <= set(image_refs(md))
    assert not re.search(r"https?://", html)
    runs = find_runs(root)
    for run in runs:
        assert f"seed {run.seed}: {PCT(run.summary['restored_val_accuracy'])}" in md
    groups = {v: [r.summary["restored_val_accuracy"] for r in runs if r.variant == v]
              for v in ("full", "no-dropout", "no-augment")}
    tests = {v: stats.welch(groups[v], groups["full"]) for v in ("no-dropout", "no-augment")}
    holm = dict(zip(tests, stats.holm([t["p"] for t in tests.values()])))
    for v, t in tests.items():
        row = f"| `{v}` − `full` | {PP(t['diff'])} | [{PP(t['lo'])}, {PP(t['hi'])}] | {common.fmt_p(t['p'])} | "
        assert row + f"{common.fmt_p(holm[v])} |" in md
    concl = md.split("## Conclusions", 1)[1]
    assert "`no-dropout` is lower than `full` by 10.50 pp" in concl
    assert "Not distinguishable from noise in restored-best validation accuracy: `no-augment`" in concl
    assert "includes 0" in concl
    assert "1 of 2 variants differ distinguishably from `full` in restored-best validation accuracy" in concl
    assert "Highest mean restored-best validation accuracy: the baseline `full`" in concl


def test_ablation_without_the_baseline_compares_with_the_first_variant_and_says_so(tmp_path):
    spec = {"no-dropout": ("regularized", {"dropout": 0.0, "dense_dropout": 0.0}, [(0, 0.70, 0.20)]),
            "none": ("none", None, [(0, 0.65, 0.30)])}
    md = render_ablation(make_study(tmp_path / "s", spec, kind="ablate"), baseline="full")[0].read_text()
    assert "the requested baseline `full` is not in this study" in md
    assert "| `none` − `no-dropout` | -5.00 pp | n/a |" in md  # one seed: no interval
    assert "anecdote" in md


def test_ablation_terminal_table(ablation_study):
    from rich.console import Console

    from reglab.report.ablation import print_ablation_table

    console = Console(record=True, width=200)
    print_ablation_table(ablation_study[0], console=console)
    out = console.export_text()
    assert "full (baseline)" in out and "no-dropout" in out and "`" not in out


def test_empty_study_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no finished runs"):
        render_compare(tmp_path)


def test_a_copied_study_renders_the_identical_report(compare_study, tmp_path):
    import shutil

    root, md_path, _ = compare_study
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    (copy / "report.md").unlink()
    shutil.rmtree(copy / "figures")
    assert render_compare(copy)[0].read_text() == md_path.read_text()  # no path or time baked in


def test_plot_curves_is_the_notebook_figure(tmp_path):
    from PIL import Image

    rows = [dict(epoch=e, train_loss=1 / e, train_accuracy=0.5 + e / 20, val_loss=1.2 / e, val_accuracy=0.45 + e / 25,
                 lr=1e-3, seconds=1.0) for e in range(1, 6)]
    plot_curves(rows, tmp_path / "curves.png", title="basic (seed 0)")
    assert Image.open(tmp_path / "curves.png").size == (1200, 400)  # 12 x 4 inches at 100 dpi
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left behind
