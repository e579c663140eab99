"""`reglab sweep` (issue 22 part 3): dose-response studies of one regularizer setting, or a grid of two.

The doses are parsed and checked before anything runs; a sweep runs as every study (the same seeds at each dose,
reruns reuse finished runs); its report says which doses are indistinguishable from the best over the every-pair
family, and the shape, which is unit-tested on synthetic run folders (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reglab
from reglab import plugins, regularizers
from reglab.cli import main
from reglab.errors import UserError
from reglab.reports import sweep
from reglab.reports.facts import load_study
from reglab.variants import sweep_axis, sweep_doses, sweep_variants
from conftest import make_tree, one_line_error
from test_report import make_run, make_study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cutout.py"
TINY = ["--image-size", "16", "--epochs", "1", "--device", "cpu", "--batch-size", "4", "-q"]


# ----------------------------------------------------------------------------------------- the doses


def test_doses_are_parsed_sorted_and_named_by_their_values():
    assert sweep_axis("dropout=0.5,0,0.25") == ("dropout", [0.0, 0.25, 0.5])
    assert sweep_axis("weight-decay=0,1e-4") == ("weight_decay", [0.0, 1e-4])  # a regularizer's name: its setting
    variants = sweep_variants([("dropout", [0.0, 0.25]), ("smoothing", [0.0, 0.1])])
    assert list(variants) == ["dropout=0,smoothing=0", "dropout=0,smoothing=0.1", "dropout=0.25,smoothing=0",
                              "dropout=0.25,smoothing=0.1"]
    assert variants["dropout=0.25,smoothing=0.1"] == {"dropout": 0.25, "smoothing": 0.1}
    assert sweep_doses("dropout=0.25,smoothing=0.1") == {"dropout": 0.25, "smoothing": 0.1}


@pytest.mark.parametrize("spec, words", [
    ("dropout=0,1.5", "invalid dose 1.5"),  # out of the setting's range [0, 1)
    ("dropout=0,x", "give a number"),
    ("dropout=0,0.10,0.1", "repeats"),
    ("dropout=0.25", "at least two doses"),
    ("augment=none,rrc", "not a dose"),
    ("batchnorm=0,1", "not a dose"),
    ("nonsense=0,1", "SETTING=V1,V2"),
    ("dropout", "SETTING=V1,V2"),
])
def test_bad_doses_are_one_line_before_anything_is_written(spec, words, tmp_path, capfd):
    out = tmp_path / "sweep"
    one_line_error(capfd, main(["sweep", spec, "--out", str(out)]), words)
    assert not out.exists()


def test_a_swept_setting_cannot_also_be_fixed_nor_swept_twice(tmp_path, capfd):
    out = tmp_path / "sweep"
    one_line_error(capfd, main(["sweep", "dropout=0,0.1", "--dropout", "0.2", "--out", str(out)]), "is swept")
    one_line_error(capfd, main(["sweep", "dropout=0,0.1", "--set", "dropout=0.2", "--out", str(out)]), "is swept")
    one_line_error(capfd, main(["sweep", "dropout=0,0.1", "--grid", "dropout=0,0.2", "--out", str(out)]),
                   "swept twice")
    with pytest.raises(UserError, match="invalid dose"):
        reglab.sweep("smoothing", [0, 1.0], out=tmp_path / "api")  # the API checks what the CLI checks
    assert not out.exists() and not (tmp_path / "api").exists()


# ----------------------------------------------------------------------------------------- end to end


@pytest.mark.usefixtures("no_curve_plots")
def test_cli_sweep_of_a_builtin_setting_end_to_end(tmp_path, capfd):
    """Folders named by the doses, the same seeds at each, study.json kind sweep with the doses, the report's
    sections; a rerun reuses every finished run."""
    data = make_tree(tmp_path / "data", shape=(16, 16))
    out = tmp_path / "sweep"
    argv = ["sweep", "smoothing=0,0.2", "--data", str(data), "--seeds", "2", "--out", str(out), *TINY]
    assert main(argv) == 0
    for dose in ("smoothing=0", "smoothing=0.2"):
        assert sorted(p.name for p in (out / dose).iterdir()) == ["seed-42", "seed-43"]
        for seed in (42, 43):
            config = (out / dose / f"seed-{seed}" / "config.yaml").read_text()
            assert f"smoothing: {0.2 if dose.endswith('0.2') else 0.0}" in config
    meta = json.loads((out / "study.json").read_text())
    assert meta["kind"] == "sweep" and meta["variants"] == ["smoothing=0", "smoothing=0.2"]
    assert meta["sweep"] == [{"setting": "smoothing", "values": [0.0, 0.2]}] and meta["seeds"] == [42, 43]
    md = (out / "report.md").read_text()
    order = [md.index(h) for h in ("# reglab sweep: smoothing", "## Dose-response", "### Verdicts", "## Doses",
                                   "## Runs", "## How to read the statistics")]
    assert order == sorted(order)  # the headline figure and the verdicts first
    assert "figures/dose-response.png" in md and (out / "figures" / "dose-response.png").stat().st_size > 1000
    assert "Choosing the best by the same data" in md
    summary = out / "smoothing=0" / "seed-42" / "summary.json"
    written = summary.stat().st_mtime_ns
    capfd.readouterr()
    assert main([a for a in argv if a != "-q"]) == 0
    assert "reusing 4 finished run(s)" in capfd.readouterr().out
    assert summary.stat().st_mtime_ns == written


@pytest.fixture
def registry(monkeypatch):
    """The plugin registered here is gone after the test."""
    monkeypatch.setattr(regularizers, "_REGISTRY", dict(regularizers._REGISTRY))
    monkeypatch.setattr(plugins, "_loaded", [])


@pytest.mark.usefixtures("registry", "no_curve_plots")
def test_api_sweep_of_a_plugin_setting_is_trained_and_reported(tmp_path):
    """A user's regularizer (examples/cutout.py) swept through the Python API, as a user would."""
    data = make_tree(tmp_path / "data", shape=(16, 16))
    out = reglab.sweep("cutout", [0, 8], plugins=[str(EXAMPLE)], seeds=2, out=tmp_path / "sweep", data=str(data),
                       image_size=16, epochs=1, device="cpu", batch_size=4, quiet=True)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "figures") == ["cutout=0", "cutout=8"]
    assert "cutout: 8" in (out / "cutout=8" / "seed-43" / "config.yaml").read_text()
    assert json.loads((out / "study.json").read_text())["sweep"] == [{"setting": "cutout", "values": [0, 8]}]
    md = (out / "report.md").read_text()
    assert "# reglab sweep: cutout" in md and "### Verdicts" in md
    reglab.report(out, quiet=True)  # re-rendered from the run folders alone
    with pytest.raises(UserError, match="invalid dose"):
        reglab.sweep("cutout=0,-3", plugins=[str(EXAMPLE)], out=tmp_path / "bad")


# ----------------------------------------------------------------------------------------- the verdicts


def dose_study(root: Path, accs: dict[float, float], seeds: int = 3, gaps: dict | None = None) -> sweep.Study:
    """Synthetic run folders of a dropout sweep: each dose's seeds at its accuracy (+ 1 pp a seed)."""
    spec = {f"dropout={d:g}": ("regularized", {"dropout": d},
                               [(s, acc + 0.01 * s, (gaps or {}).get(d, 0.05)) for s in range(seeds)])
            for d, acc in accs.items()}
    make_study(root, spec, kind="sweep", n_val=2000)
    meta = json.loads((root / "study.json").read_text())
    meta["sweep"] = [{"setting": "dropout", "values": sorted(accs)}]
    (root / "study.json").write_text(json.dumps(meta))
    return load_study(root, warn_stderr=False)


def analysed(study):
    return sweep.analyze(study, sweep.best(study))


def test_doses_indistinguishable_from_the_best_over_the_every_pair_family(tmp_path):
    study = dose_study(tmp_path / "s", {0.0: 0.50, 0.1: 0.70, 0.25: 0.705, 0.5: 0.40})
    an = analysed(study)
    assert an.reference == "dropout=0.25" and an.order == ["dropout=0", "dropout=0.1", "dropout=0.25", "dropout=0.5"]
    assert an.m == 4 * 3 and len(an.accuracy) == 3 and len(an.pairs) == 2 * 6  # every pair, accuracy and gap
    assert an.level == pytest.approx(1 - 0.05 / 12)
    assert sweep.indistinguishable(an) == ["dropout=0.1", "dropout=0.25"]
    planned = reglab.plan(tmp_path / "s", quiet=True)  # `reglab plan` analyses a sweep as its report does
    assert planned["level"] == pytest.approx(an.level) and len(planned["comparisons"]) == 2 * 3


@pytest.mark.parametrize("accs, label", [
    ({0.0: 0.50, 0.25: 0.80, 0.5: 0.50}, "interior optimum"),
    ({0.0: 0.40, 0.25: 0.60, 0.5: 0.80}, "increasing"),
    ({0.0: 0.80, 0.25: 0.60, 0.5: 0.40}, "decreasing"),
    ({0.0: 0.70, 0.25: 0.40, 0.5: 0.70}, "interior minimum"),
    ({0.0: 0.60, 0.25: 0.61, 0.5: 0.60}, "no evidence of an interior optimum"),  # flat: never "no effect"
    ({0.0: 0.40, 0.25: 0.70, 0.5: 0.695}, "increasing"),  # above one end only: no interior optimum
])
def test_the_shape_is_read_off_the_family(tmp_path, accs, label):
    study = dose_study(tmp_path / "s", accs)
    result = sweep.shape(study, analysed(study), "accuracy")
    assert result.label == label, result.text
    assert "no effect" not in result.text.replace("not a finding of no effect", "")
    if label != "interior optimum":
        assert "interior optimum" not in result.text or "no evidence of an interior optimum" in result.text
    assert "`dropout=0.25` − `dropout=0.5`" not in result.text  # each pair is the higher dose minus the lower


def test_an_interior_optimum_needs_both_ends(tmp_path):
    """The best interior dose shown above the low end only: the statement says there is no evidence of an interior
    optimum, never that there is one."""
    study = dose_study(tmp_path / "s", {0.0: 0.40, 0.25: 0.70, 0.5: 0.695})
    text = sweep.shape(study, analysed(study), "accuracy").text
    assert "no evidence of an interior optimum" in text


def test_one_seed_a_dose_makes_no_claim(tmp_path):
    study = dose_study(tmp_path / "s", {0.0: 0.40, 0.25: 0.80, 0.5: 0.40}, seeds=1)
    an = analysed(study)
    assert sweep.shape(study, an, "accuracy").label == "no claim"
    assert sweep.indistinguishable(an) == []
    assert any("**No claim**" in line for line in sweep.verdicts(study, an))


def test_a_dose_with_one_learned_seed_is_named_apart_and_the_guarantee_is_not_claimed(tmp_path):
    """One seed of dropout=0.5 at chance: the others still get their verdicts, it gets no claim, and the report does
    not claim that the set holds the truly best dose."""
    root = tmp_path / "s"
    dose_study(root, {0.0: 0.70, 0.25: 0.705})
    make_run(root, "dropout=0.5", "regularized", 0, 0.40, 0.05, overrides={"dropout": 0.5}, n_val=2000)
    make_run(root, "dropout=0.5", "regularized", 1, 0.10, 0.0, overrides={"dropout": 0.5}, n_val=2000, one_class=True)
    study = load_study(root, warn_stderr=False)
    an = analysed(study)
    assert sweep.indistinguishable(an) == ["dropout=0", "dropout=0.25"]
    said = next(line for line in sweep.verdicts(study, an) if "Indistinguishable" in line)
    assert "**no claim** about `dropout=0.5`" in said and "no 95% guarantee" in said


def test_a_sweep_where_no_dose_learned_names_no_best_dose(tmp_path):
    """Every seed of every dose at chance: no dose is called best-scoring, and no shape or verdict is read."""
    root = tmp_path / "s"
    for dose in (0.0, 0.25):
        for seed in (0, 1):
            make_run(root, f"dropout={dose:g}", "regularized", seed, 0.10, 0.0, overrides={"dropout": dose},
                     n_val=2000, one_class=True)
    study = load_study(root, warn_stderr=False)
    said = sweep.verdicts(study, analysed(study))
    assert said[0].startswith("**No dose learned**") and not any("Best-scoring" in line for line in said)


def test_grid_report_has_a_heatmap_and_the_best_cell(tmp_path):
    cells = {(d, s): 0.5 + d - s for d in (0.0, 0.25) for s in (0.0, 0.1)}
    spec = {f"dropout={d:g},smoothing={s:g}": ("regularized", {"dropout": d, "smoothing": s},
                                               [(k, acc + 0.01 * k, 0.05) for k in range(2)])
            for (d, s), acc in cells.items()}
    root = make_study(tmp_path / "g", spec, kind="sweep", n_val=2000)
    meta = json.loads((root / "study.json").read_text())
    meta["sweep"] = [{"setting": "dropout", "values": [0.0, 0.25]}, {"setting": "smoothing", "values": [0.0, 0.1]}]
    (root / "study.json").write_text(json.dumps(meta))
    md_path, _ = reglab.report(root, quiet=True)
    md = md_path.read_text()
    assert "figures/dose-heatmap.png" in md and (root / "figures" / "dose-heatmap.png").exists()
    assert "Best-scoring dose: `dropout=0.25,smoothing=0`" in md
    assert "A grid's shape is not tested" in md
