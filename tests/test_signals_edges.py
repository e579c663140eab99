"""Signals at the edges of phases (issue 20 §3): each is delivered deterministically, from inside the phase (the
process signals itself where the phase runs), never by timing. Whatever the edge, the command stops with one line
and exit 128 + the signal number, a run is left finished or resumable (its summary says interrupted, never
running, and the printed hint works), a study stops instead of going on, and no output is half-written."""
import importlib.abc
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import make_tree, one_line_error
from reglab import rundir
from reglab.cli import main

FAST = ["--image-size", "16", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("edges") / "data")


def signal_inside(monkeypatch, target: str, name: str, signum=signal.SIGINT, times: int = 1) -> None:
    """Make `target.name` send `signum` to this process (`times` times) when first called, then do its work."""
    import importlib

    module = importlib.import_module(target)
    original, fired = getattr(module, name), []

    def wrapper(*args, **kwargs):
        if not fired:
            fired.append(True)
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def status(run: Path) -> str:
    return json.loads((run / "summary.json").read_text())["status"]


def train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--model", "basic", *FAST, *extra])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_run_writes_its_final_files_leaves_it_resumable(data, tmp_path, capfd, monkeypatch,
                                                                         no_curve_plots, signum):
    run = tmp_path / "run"
    fired = []
    original = rundir.RunWriter.samples

    def samples(self, *a, **k):  # between predictions.npz and summary.json
        fired.append(True)
        os.kill(os.getpid(), signum)
        return original(self, *a, **k)

    monkeypatch.setattr(rundir.RunWriter, "samples", samples)
    rc = train(data, run)
    line = one_line_error(capfd, rc, "resume with: reglab train --resume", str(run), code=128 + signum)
    assert fired and signal.Signals(signum).name in line
    assert status(run) == "interrupted" and (run / "last.ckpt").is_file()
    monkeypatch.setattr(rundir.RunWriter, "samples", original)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the hint works
    assert status(run) == "finished" and not (run / "last.ckpt").exists()


def test_a_signal_as_a_run_starts_writing_its_folder_leaves_it_resumable(data, tmp_path, capfd, monkeypatch,
                                                                       no_curve_plots):
    """Between the first summary.json (status running) and the training loop: never left saying running."""
    run = tmp_path / "run"
    signal_inside(monkeypatch, "reglab.trainer", "RunLog")
    rc = train(data, run)
    one_line_error(capfd, rc, "interrupted by SIGINT", f"resume with: reglab train --resume {run}", code=130)
    assert status(run) == "interrupted"
    monkeypatch.undo()
    monkeypatch.setattr("reglab.curves.plot_curves", lambda *a, **k: None)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert status(run) == "finished"


def test_a_study_stops_at_a_signal_in_a_runs_final_writes_instead_of_going_on(data, tmp_path, capfd, monkeypatch,
                                                                              no_curve_plots):
    out = tmp_path / "study"
    original = rundir.RunWriter.samples

    def samples(self, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *a, **k)

    monkeypatch.setattr(rundir.RunWriter, "samples", samples)
    rc = main(["compare", "--data", str(data), "--seeds", "1", "--out", str(out), *FAST])
    one_line_error(capfd, rc, "interrupted by SIGTERM", "finished runs are kept", "rerun the same command", code=143)
    summaries = sorted(out.glob("*/seed-*/summary.json"))
    assert [json.loads(p.read_text())["status"] for p in summaries] == ["interrupted"]  # the second never started
    assert not (out / "report.md").exists()
    monkeypatch.setattr(rundir.RunWriter, "samples", original)
    assert main(["compare", "--data", str(data), "--seeds", "1", "--out", str(out), *FAST]) == 0
    assert {json.loads(p.read_text())["status"] for p in out.glob("*/seed-*/summary.json")} == {"finished"}


@pytest.mark.parametrize("where", ["loop", "summary"])
def test_a_second_ctrl_c_right_after_the_first_keeps_the_first_hint_true(data, tmp_path, capfd, monkeypatch,
                                                                         no_curve_plots, where):
    """`loop`: two SIGINTs inside one training step (the second raises at once); `summary`: the second arrives
    while the interruption writes the summaries."""
    run = tmp_path / "run"
    if where == "loop":
        signal_inside(monkeypatch, "reglab.trainer", "train_step", times=2)
    else:
        signal_inside(monkeypatch, "reglab.trainer", "train_step")
        original = rundir.RunWriter.summary

        def summary(self, s):
            if s.status == "interrupted":
                os.kill(os.getpid(), signal.SIGINT)
            return original(self, s)

        monkeypatch.setattr(rundir.RunWriter, "summary", summary)
    rc = train(data, run)
    one_line_error(capfd, rc, "interrupted by SIGINT", f"resume with: reglab train --resume {run}", code=130)
    assert status(run) == "interrupted" and (run / "last.ckpt").is_file()
    monkeypatch.undo()
    monkeypatch.setattr("reglab.curves.plot_curves", lambda *a, **k: None)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert status(run) == "finished"


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("reglab.curves.plot_curves", lambda *a, **k: None)
        assert train(data, run) == 0
    return run


def _swallowing(original):
    """A library that catches everything on its way (an `except BaseException` around an optional step)."""
    def draw(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # noqa: BLE001 - the point: the signal's exception never leaves this frame
            pass
        return original(*args, **kwargs)
    return draw


@pytest.mark.parametrize("swallowed", [False, True])
def test_a_signal_while_the_report_plots_stops_it_with_no_report_written(finished, tmp_path, capfd, monkeypatch,
                                                                         swallowed):
    import reglab.reports.plots as plots

    if swallowed:
        monkeypatch.setattr(plots, "_save", _swallowing(plots._save))
    else:
        signal_inside(monkeypatch, "reglab.reports.plots", "_save")
    before = sorted(p.name for p in finished.iterdir())
    rc = main(["report", str(finished), "--quiet"])
    one_line_error(capfd, rc, "stopped by SIGINT", "report", code=130)
    assert sorted(p.name for p in finished.iterdir() if p.name != "figures") == \
        [n for n in before if n != "figures"]  # no report.md, no report.html, no temporary file
    assert not list(finished.glob(".*.tmp")) and not list(finished.glob("figures/.*.tmp"))


class _SignalOnImport(importlib.abc.MetaPathFinder):
    """Delivers SIGINT while Python imports `name`, which is then not found: an optional module that the importing
    library falls back from (the ONNX exporter imports onnxscript and its friends so)."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            os.kill(os.getpid(), signal.SIGINT)
        return None


def test_a_signal_while_export_imports_its_exporter_stops_it_with_no_file(finished, tmp_path, capfd, monkeypatch):
    import reglab.exported as exported

    original = exported._torchscript_bytes

    def importing(*args, **kwargs):
        try:
            import reglab_optional_exporter  # noqa: F401
        except BaseException:  # noqa: BLE001 - as libraries guard their optional imports: whatever fails, fall back
            pass
        return original(*args, **kwargs)

    monkeypatch.setattr(exported, "_torchscript_bytes", importing)
    monkeypatch.setattr(sys, "meta_path", [_SignalOnImport("reglab_optional_exporter"), *sys.meta_path])
    out = tmp_path / "m.pt"
    rc = main(["export", str(finished), "--format", "torchscript", "--out", str(out)])
    one_line_error(capfd, rc, "stopped by SIGINT", "exporting", code=130)
    assert not out.exists() and not list(tmp_path.iterdir())
