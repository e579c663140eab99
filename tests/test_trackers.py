"""Trackers (issue 23): TensorBoard's HParams view gets each run's settings and final metrics, read back from the
event files; MLflow (the `mlflow` extra) gets one run per reglab run, tested against a local SQLite store. Tiny
random images, 16 px, 1-2 epochs: what is checked is what the code guarantees, not what a model learned."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

import reglab
from reglab.cli import build_parser, explicit_settings, main
from reglab.errors import UserError
from reglab.mlflow_log import attach_report
from conftest import make_tree, one_line_error

TINY = dict(image_size=16, epochs=2, device="cpu", batch_size=4, clean_train_sample=8)
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed (pip install -e '.[test]' installs it)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("trackers") / "data", classes=("a", "b", "c"), per_class=6)


def _hparams(run_dir) -> tuple[dict, list[str], dict]:
    """(hparams, the metrics the experiment declares, {scalar tag: [(step, value)]}) of a run folder's events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    hparams, metrics = {}, []
    for content in acc.PluginTagToContent("hparams").values():
        d = plugin_data_pb2.HParamsPluginData.FromString(content)
        if d.HasField("session_start_info"):
            hparams = {k: v.number_value if v.HasField("number_value") else v.string_value if v.HasField(
                "string_value") else v.bool_value for k, v in d.session_start_info.hparams.items()}
        if d.HasField("experiment"):
            metrics = [m.name.tag for m in d.experiment.metric_infos]
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return hparams, metrics, scalars


def test_tensorboard_gets_each_cohort_members_hparams_and_final_metrics(data, tmp_path, monkeypatch):
    """One HParams session per run folder, a packed cohort's members each with their own seed and results; a run
    that does not ask for MLflow never imports it."""
    import builtins

    real_import, asked = builtins.__import__, []

    def recording_import(name, *a, **k):
        asked.append(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", recording_import)
    cfg = reglab.Config.preset("regularized", data=str(data), selection_split=0.2, **TINY)
    runs = reglab.train(cfg, tmp_path / "seeds", seeds=[3, 4], pack=2, quiet=True)
    monkeypatch.undo()
    assert asked and not [name for name in asked if name.startswith("mlflow")]
    assert len(runs) == 2
    for folder, s in runs.items():
        hparams, metrics, scalars = _hparams(folder)
        assert hparams["seed"] == s.seed and hparams["variant"] == "regularized" and hparams["dropout"] == 0.25
        assert hparams["widths"] == "[32, 64, 128]" and "device" not in hparams  # result-relevant settings only
        assert {"final/val_accuracy", "final/select_accuracy", "final/clean_train_accuracy", "final/gap"} <= set(
            metrics)
        assert scalars["final/val_accuracy"] == [(2, pytest.approx(s.restored_val_accuracy))]
        assert scalars["final/gap"] == [(2, pytest.approx(s.clean_train_accuracy - s.restored_val_accuracy))]
        assert [step for step, _ in scalars["loss/train"]] == [1, 2]  # the per-epoch values stay beside them
        assert not (folder / "mlflow.json").exists()


def test_importing_reglab_does_not_import_mlflow():
    code = "import sys, reglab, reglab.cli, reglab.trainer; print('mlflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["False"], r.stderr


def test_the_mlflow_flag_is_a_setting_of_every_training_command():
    parser = build_parser()
    for command in ("train", "compare", "ablate"):
        assert explicit_settings(parser.parse_args([command, "--mlflow"]))["mlflow"] == "default"
        args = parser.parse_args([command, "--mlflow", "http://tracker:5000"])
        assert explicit_settings(args)["mlflow"] == "http://tracker:5000"
        assert "mlflow" not in explicit_settings(parser.parse_args([command]))


def test_a_bare_path_for_mlflow_is_refused_before_any_work(data, tmp_path, capfd):
    rc = main(["compare", "--data", str(data), "--out", str(tmp_path / "study"), "--mlflow", "mlruns"])
    one_line_error(capfd, rc, "invalid mlflow", "tracking URI")
    assert not (tmp_path / "study").exists()


def test_mlflow_asked_without_the_package_is_refused_before_any_work(data, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'reglab\[mlflow\]'"):
        reglab.compare(data=str(data), out=tmp_path / "study", mlflow="default", **TINY)
    with pytest.raises(UserError, match="mlflow package"):
        reglab.train(reglab.Config.preset("basic", data=str(data), mlflow="default", **TINY), tmp_path / "run")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ MLflow


def _store(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@needs_mlflow
def test_mlflow_logs_one_run_per_cohort_member_with_params_metrics_files_and_the_report(data, tmp_path):
    cfg = reglab.Config.preset("basic", data=str(data), mlflow="default", **TINY)
    runs = reglab.train(cfg, tmp_path / "study", seeds=[1, 2], pack=2, quiet=True)
    client = _store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store: beside the study folder
    experiment = client.get_experiment_by_name("study")
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(logged) == {"basic/seed-1", "basic/seed-2"}
    for folder, s in runs.items():
        run = logged[f"basic/seed-{s.seed}"]
        assert json.loads((folder / "mlflow.json").read_text())["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(s.seed) and run.data.params["variant"] == "basic"
        assert run.data.params["lr"] == "0.001" and "mlflow" not in run.data.params
        assert run.data.metrics["final/val_accuracy"] == pytest.approx(s.restored_val_accuracy)
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "config.yaml", "metrics.csv", "train.log"} <= files
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "study" / "mlruns").exists()
    report = tmp_path / "study" / "report.md"  # a study's report, once rendered, goes to each of its runs
    report.write_text("# a report\n")
    attach_report(tmp_path / "study", report)
    for folder in runs:
        run_id = json.loads((folder / "mlflow.json").read_text())["run_id"]
        assert "report.md" in {a.path for a in client.list_artifacts(run_id)}


@needs_mlflow
def test_a_resumed_run_continues_its_mlflow_run(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'runs.db'}"
    (tmp_path / "store").mkdir()
    cfg = reglab.Config.preset("basic", data=str(data), mlflow=uri, keep_last=True, **{**TINY, "epochs": 1})
    reglab.train(cfg, tmp_path / "run", quiet=True)
    first = json.loads((tmp_path / "run" / "mlflow.json").read_text())
    reglab.resume(tmp_path / "run", epochs=2, quiet=True)
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text()) == first
    client = _store(uri)
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first["run_id"], "train_loss")] == [1, 2]
    assert len(client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])) == 1


@needs_mlflow
def test_a_tracker_failure_is_one_warning_and_the_run_goes_on(data, tmp_path, capfd):
    (tmp_path / "not-a-folder").write_text("")
    cfg = reglab.Config.preset("basic", data=str(data), mlflow=f"sqlite:///{tmp_path / 'not-a-folder' / 'x.db'}",
                               **TINY)
    summary = reglab.train(cfg, tmp_path / "run", quiet=True)
    assert summary.finished and summary.epochs_run == 2
    warnings = [line for line in capfd.readouterr().err.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: MLflow logging stopped") and "goes on" in warnings[0]
    assert "MLflow logging stopped" in (tmp_path / "run" / "train.log").read_text()
