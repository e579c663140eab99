"""Never silently wrong (issue 23, items 1 and 5): runs are grouped by what they are, not by their label alone, and
BatchNorm statistics are told honestly (--bn-momentum, --precise-bn, the stale-statistics alert)."""

import json

import pytest
import torch
import yaml

import reglab
from reglab.cli import main
from reglab.config import Config
from reglab.data.loader import DeviceLoader
from reglab.errors import UserError
from reglab.evaluate import precise_bn
from reglab.models import build_model
from reglab.reports.facts import load_study

from conftest import make_tree, one_line_error

TINY = dict(image_size=16, epochs=1, device="cpu", batch_size=4, seed=42)


@pytest.fixture
def data(tmp_path):
    return make_tree(tmp_path / "data", per_class=6, val=3)


def _train(data, out, variant=None, **settings):
    cfg = Config.preset("regularized", data=str(data), **{**TINY, **settings})
    return reglab.train(cfg, out, variant=variant, quiet=True)


# ------------------------------------------------------------------------------------------ grouping


def test_runs_of_one_label_with_different_settings_are_different_variants(data, tmp_path, no_curve_plots):
    """Issue 23.1: runs made through the API at two dropout settings, no variant named, were pooled as one."""
    study = tmp_path / "study"
    for i, rate in enumerate((0.1, 0.3)):
        for seed in (42, 43):
            _train(data, study / f"d{i}" / f"seed-{seed}", dropout=rate, seed=seed)
    loaded = load_study(study, warn_stderr=False)
    assert sorted(loaded.variants) == ["regularized [dropout=0.1]", "regularized [dropout=0.3]"]
    assert all(sorted(f.seed for f in v.runs) == [42, 43] for v in loaded.variants.values())
    assert any("Runs recorded as one variant are different things" in a and "dropout" in a for a in loaded.alerts)


def test_the_variant_a_run_is_given_is_recorded_and_reported(data, tmp_path, no_curve_plots):
    study = tmp_path / "study"
    for name, rate in (("dropout=0.1", 0.1), ("dropout=0.3", 0.3)):
        summary = _train(data, study / name / "seed-42", variant=name, dropout=rate)
        assert summary.variant == name
        assert json.loads((study / name / "seed-42" / "summary.json").read_text())["variant"] == name
    loaded = load_study(study, warn_stderr=False)
    assert sorted(loaded.variants) == ["dropout=0.1", "dropout=0.3"]
    assert not any("different things" in a for a in loaded.alerts)


def test_runs_of_one_configuration_stay_one_variant(data, tmp_path, no_curve_plots):
    """Only what changes a result splits a label: a seed or the evaluation batch size does not."""
    study = tmp_path / "study"
    _train(data, study / "a" / "seed-42")
    _train(data, study / "b" / "seed-43", seed=43, eval_batch_size=7)
    assert list(load_study(study, warn_stderr=False).variants) == ["regularized"]


def test_train_seeds_with_a_variant_and_its_resume_keep_the_name(data, tmp_path, no_curve_plots):
    cfg = Config.preset("regularized", data=str(data), **TINY)
    runs = reglab.train(cfg, tmp_path / "seeds", seeds=2, variant="mine", quiet=True)
    assert sorted(p.parent.name for p in runs) == ["mine", "mine"]
    assert {s.variant for s in runs.values()} == {"mine"}
    extended = reglab.train(cfg.replace(keep_last=True), tmp_path / "one", variant="mine", quiet=True)
    assert extended.variant == "mine"
    assert reglab.resume(tmp_path / "one", epochs=2, quiet=True).variant == "mine"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x\ny", 7])
def test_a_bad_variant_is_refused_before_anything_is_written(data, tmp_path, bad):
    with pytest.raises(UserError, match="invalid variant"):
        _train(data, tmp_path / "run", variant=bad)
    assert not (tmp_path / "run").exists()


def test_train_variant_flag(data, tmp_path, no_curve_plots, capfd):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--image-size", "16", "--epochs", "1",
                 "--device", "cpu", "--variant", "dropout=0.1", "--dropout", "0.1", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["variant"] == "dropout=0.1"
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--variant", "a/b", "--quiet"])
    one_line_error(capfd, rc, "invalid variant")
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ BatchNorm


def _norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_precise_bn_recomputes_the_statistics_from_the_weights_alone(tmp_path):
    """Whatever statistics training left (here: two different garbage states), the re-estimate is the same, and
    it is the statistics of the images (the first layer's: its input's per-channel mean after the conv)."""
    cfg = Config.preset("regularized", **{**TINY, "precise_bn": True, "channels_last": False})
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.zeros(24, dtype=torch.long), 8)
    states = []
    for fill in (0.0, 50.0):
        torch.manual_seed(0)
        model = build_model(cfg, 2)
        for bn in _norms(model):
            bn.running_mean.fill_(fill)
            bn.running_var.fill_(fill + 1)
        precise_bn(model, loader, cfg, "fp32", tmp_path / "absent.safetensors")
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        assert not model.training and all(bn.momentum == cfg.bn_momentum for bn in _norms(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    first = _norms(model)[0]
    assert not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))
    assert not (tmp_path / "absent.safetensors").exists()  # only a best.safetensors that exists is updated


def test_precise_bn_off_changes_nothing(tmp_path):
    cfg = Config.preset("regularized", **TINY)
    model = build_model(cfg, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DeviceLoader(torch.zeros((8, 3, 16, 16), dtype=torch.uint8), torch.zeros(8, dtype=torch.long), 8)
    precise_bn(model, loader, cfg, "fp32", tmp_path / "best.safetensors")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_precise_bn_run_records_it_and_keeps_the_statistics_it_evaluated(data, tmp_path, no_curve_plots):
    """The same training with and without --precise-bn: the same learned weights, other BatchNorm statistics in
    best.safetensors (what predict and export load), and config.yaml says which."""
    from reglab.checkpoint import load_weights

    plain = _train(data, tmp_path / "plain")
    precise = _train(data, tmp_path / "precise", precise_bn=True)
    assert yaml.safe_load((tmp_path / "precise" / "config.yaml").read_text())["precise_bn"] is True
    assert yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())["precise_bn"] is False
    a, b = (load_weights(tmp_path / name / "best.safetensors") for name in ("plain", "precise"))
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)
    assert any(not torch.equal(a[k], b[k]) for k in stats)
    assert plain.variant == precise.variant == "regularized"


def test_bn_flags(data, tmp_path, no_curve_plots, capfd):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--image-size", "16", "--epochs", "1",
                 "--device", "cpu", "--bn-momentum", "0.1", "--precise-bn", "--quiet"]) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["bn_momentum"] == 0.1 and written["precise_bn"] is True
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--bn-momentum", "0", "--quiet"])
    assert "0.01 here" in one_line_error(capfd, rc, "bn_momentum")
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ stale statistics


def _stale_study(tmp_path, data):
    """A compare-shaped folder of tiny runs (2 seeds a side) whose regularized runs record what stale statistics
    look like: few steps for momentum 0.01 (a tiny run has 3), and train mode far above eval mode."""
    study = tmp_path / "study"
    for model in ("basic", "regularized"):
        for seed in (42, 43):
            cfg = Config.preset(model, data=str(data), **{**TINY, "seed": seed})
            reglab.train(cfg, study / model / f"seed-{seed}", quiet=True)
    for seed in (42, 43):
        file = study / "regularized" / f"seed-{seed}" / "summary.json"
        summary = json.loads(file.read_text())
        summary.update(train_accuracy=0.9, clean_train_accuracy=0.2)
        file.write_text(json.dumps(summary))
    return study


def test_stale_batchnorm_is_named_and_no_verdict_is_read_into_it(data, tmp_path, no_curve_plots):
    from dataclasses import replace

    from reglab.reports.analysis import Comparison, analyze, verdict_text, verdict_word

    study = load_study(_stale_study(tmp_path, data), warn_stderr=False)
    stale = study.variants["regularized"].bn_stale
    assert [f.seed for f in stale] == [42, 43] and not study.variants["basic"].bn_stale
    assert stale[0].bn_stale["steps"] == 3 and stale[0].bn_stale["left"] == pytest.approx(0.99 ** 3)
    alert = next(a for a in study.alerts if "BatchNorm statistics stale" in a)
    assert "97% of the initial statistics" in alert and "--precise-bn" in alert and "--bn-momentum 0.1" in alert
    c = analyze(study, "basic").get("accuracy", "regularized")
    assert c.bn_stale == ["regularized"]
    assert "not a verdict on the regularizers" in verdict_text(c) and "--precise-bn" in verdict_word(c)
    differs = Comparison("accuracy", "regularized", "basic", 0.975, 0.01, diff=-0.25, lo=-0.3, hi=-0.2,
                         verdict="differs", at_least=0.2, n_seeds=(2, 2), bn_stale=["regularized"])
    assert verdict_text(differs).startswith("**BatchNorm statistics stale** in `regularized`: not a verdict on the "
                                            "regularizers")
    assert verdict_word(differs).startswith("no verdict") and "lower" in verdict_word(replace(differs, bn_stale=[]))
    md, _ = reglab.report(tmp_path / "study", quiet=True)
    assert md.read_text().count("BatchNorm statistics stale") >= 2  # the alert, and the verdicts
    for seed in (42, 43):  # the same facts from runs whose statistics were re-estimated: nothing stale
        file = tmp_path / "study" / "regularized" / f"seed-{seed}" / "config.yaml"
        file.write_text(yaml.safe_dump({**yaml.safe_load(file.read_text()), "precise_bn": True}))
    study = load_study(tmp_path / "study", warn_stderr=False)
    assert not study.variants["regularized"].bn_stale and not any("BatchNorm" in a for a in study.alerts)
    md, _ = reglab.report(tmp_path / "study", quiet=True)  # runs trained one by one are reported again and again
    assert "BatchNorm statistics stale" not in md.read_text()
    assert "**BatchNorm statistics re-estimated** (`--precise-bn`) in `regularized`" in md.read_text()


def test_a_report_reglab_wrote_keeps_a_folder_of_runs_a_study_and_one_it_did_not_protects_it(tmp_path):
    """Runs trained one by one (no study.json) are reported again and again; a report a user wrote is theirs."""
    from reglab import rundir
    from reglab.reports.document import Document, write_document

    (tmp_path / "basic" / "seed-42").mkdir(parents=True)
    (tmp_path / "basic" / "seed-42" / "summary.json").write_text("{}")
    assert rundir.classify(tmp_path) == "study"
    write_document(Document("a report"), tmp_path)
    assert rundir.classify(tmp_path) == "study"
    (tmp_path / "report.html").write_text("<html><head><title>my notes</title></head></html>")
    assert rundir.classify(tmp_path) == "foreign"
    (tmp_path / "report.html").unlink()
    assert rundir.classify(tmp_path) == "foreign"
