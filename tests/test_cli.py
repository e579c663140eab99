"""The command line behaves like the tools people trust (issue 16): no silent guesses, quiet means quiet,
runs that say where they came from, disk that fits a study. Every test goes through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reglab.cli import build_parser, main
from conftest import make_tree, one_line_error

TINY = ["--image-size", "16", "--epochs", "1", "--device", "cpu"]


@pytest.fixture
def data(tmp_path) -> Path:
    return make_tree(tmp_path / "data")


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reglab.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


# ------------------------------------------------------------------------------------- 1. no silent guesses


@pytest.mark.parametrize("argv,suggestion", [
    (["compare", "--seeed", "7"], "--seed"),
    (["ablate", "--model", "basic"], "ablate chooses its models with --variants"),
    (["compare", "--model", "basic"], "reglab train --model trains one"),
    (["train", "--epoch", "3"], "--epochs"),
    (["compare", "--see", "7"], "--seed"),
])
def test_flag_prefixes_are_never_accepted(argv, suggestion, capfd):
    line = one_line_error(capfd, main(argv), "unrecognized arguments", f"see 'reglab {argv[0]} --help'")
    if suggestion and suggestion.startswith("--"):
        assert f"did you mean {suggestion}?" in line
    elif suggestion:  # a flag of another command: where to go instead, not the nearest spelling (--model-ema)
        assert suggestion in line and "did you mean" not in line


def test_every_parser_refuses_abbreviations():
    parser = build_parser()
    parsers = [parser, *parser.get_default("subcommands").values()]
    assert all(p.allow_abbrev is False for p in parsers)


def test_compare_seed_is_the_base_seed_not_a_count(data, tmp_path):
    out = tmp_path / "s"
    assert main(["compare", "--data", str(data), "--seed", "7", "--out", str(out), *TINY, "--quiet"]) == 0
    assert sorted(p.name for p in (out / "basic").iterdir()) == ["seed-7"]


def test_seeds_can_be_named(data, tmp_path):
    out = tmp_path / "s"
    assert main(["ablate", "--data", str(data), "--variants", "none", "--seeds", "3,1", "--out", str(out), *TINY,
                 "--quiet"]) == 0
    assert sorted(p.name for p in (out / "none").iterdir()) == ["seed-1", "seed-3"]


def test_summary_help_lists_only_model_flags():
    help_text = run_cli("summary", "--help").stdout
    assert "--dropout" in help_text and "--image-size" in help_text
    for training_flag in ("--lr", "--epochs", "--mixup", "--data", "--optimizer"):
        assert training_flag not in help_text
    assert run_cli("summary", "basic", "--lr", "0.1").returncode == 2


def test_every_flag_has_help_with_its_default():
    for name, sub in build_parser().get_default("subcommands").items():
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help",):
                assert action.help, (name, action.option_strings)


def test_no_arguments_prints_the_short_help():
    r = run_cli()
    assert r.returncode == 2 and "COMMAND" in r.stderr and "examples:" in r.stderr
    r = run_cli("--help")
    assert r.returncode == 0 and "reglab compare" in r.stdout


def test_list_variants_says_what_each_changes():
    r = run_cli("ablate", "--list-variants")
    assert r.returncode == 0
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert "without dropout" in lines["no-dropout"] and "label smoothing" in lines["smoothing[=VALUE]"]


@pytest.mark.parametrize("variants,first,second", [("full,mixup=0.2,mixup=0.20", "mixup-0.2", "mixup-0.20"),
                                                    ("full,dropout=0.25", "full", "dropout-0.25")])
def test_two_variants_of_one_configuration_are_refused(tmp_path, capfd, variants, first, second):
    """Issue 23 item 4: `mixup=0.2,mixup=0.20` trained the same configuration twice under two names."""
    out = tmp_path / "study"
    rc = main(["ablate", "--data", str(make_tree(tmp_path / "data")), "--out", str(out), "--variants", variants,
               "--epochs", "1", "--image-size", "16", "--device", "cpu"])
    one_line_error(capfd, rc, f"variants '{first}' and '{second}' train the same configuration")
    assert not out.exists()


def test_compare_refuses_a_config_that_makes_basic_the_regularized_network(tmp_path, capfd):
    """Issue 23 item 2: a regularized run's config.yaml as --config set every architecture key, so `basic` trained
    the regularized network under its name. Now the conflict is one line, before anything is written."""
    import yaml

    from reglab.config import resolve

    written = resolve({"model": "regularized"}).to_dict()  # what a regularized run's config.yaml holds
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({k: v for k, v in written.items() if k not in ("data", "device")}))
    out = tmp_path / "study"
    rc = main(["compare", "--config", str(conf), "--data", str(make_tree(tmp_path / "data")), "--out", str(out),
               "--epochs", "1", "--image-size", "16", "--device", "cpu"])
    one_line_error(capfd, rc, "variants 'basic' and 'regularized' train the same configuration")
    assert not out.exists()


def test_the_cli_only_parses_and_calls_the_api():
    """One front door: the CLI imports the API and parsing helpers, never the modules that do the work."""
    import ast

    import reglab.cli

    tree = ast.parse(Path(reglab.cli.__file__).read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                 and node.module is None for alias in node.names}
    assert imported <= {"api", "config", "errors", "executors", "text", "variants", "provenance", "signals",
                        "__version__"}, imported


def test_one_version_number():
    """pyproject.toml takes its version from reglab.__version__, which `reglab --version` prints."""
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml", reason="setuptools reads pyproject.toml")
    import reglab

    path = Path(__file__).resolve().parents[1] / "pyproject.toml"
    written = pyprojecttoml.load_file(path)["project"]
    assert "version" not in written and "version" in written["dynamic"]  # no second number written by hand
    assert pyprojecttoml.read_configuration(path)["project"]["version"] == reglab.__version__
    assert run_cli("--version").stdout.strip() == f"reglab {reglab.__version__}"


# ---------------------------------------------------------------------------- 2. quiet means quiet


def test_quiet_prints_nothing_and_bars_never_reach_stdout(data, tmp_path):
    quiet = run_cli("compare", "--data", str(data), "--out", str(tmp_path / "q"), *TINY, "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", (quiet.stdout, quiet.stderr)
    loud = run_cli("train", "--data", str(data), "--out", str(tmp_path / "l"), *TINY)
    assert loud.returncode == 0
    assert loud.stdout.startswith("Epoch 1/1 - ") and "\r" not in loud.stdout and "\x1b" not in loud.stdout
    assert main(["summary", "basic", "--quiet"]) == 0


def test_verbose_adds_the_checkpoint_messages(data, tmp_path):
    r = run_cli("train", "--data", str(data), "--out", str(tmp_path / "v"), *TINY, "-v")
    assert "val_loss improved from inf to" in r.stdout


def test_the_python_api_is_quiet_when_asked(data, tmp_path, capfd):
    import reglab

    reglab.train(reglab.Config.preset("basic", data=str(data), image_size=16, epochs=1, device="cpu"),
                 tmp_path / "run", quiet=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ----------------------------------------------------------------------------- 3. provenance in every run


def test_a_run_says_where_it_came_from(data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    p = s["provenance"]
    assert p["started"] <= p["ended"] and p["started"].endswith("+00:00")
    assert "train" in p["command"] and str(out) in p["command"]
    assert p["software"]["reglab"] and p["software"]["torch"] and p["host"] and p["cpu"]
    assert isinstance(p["cpu_native_bf16"], bool) and p["precision"] in ("fp32", "bf16")
    assert p["device"] == "cpu" and s["precision"] == p["precision"]
    git = p["git"]
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))
    assert s["dataset"]["identity"]["fingerprint"]


def test_bench_json_uses_the_same_provenance(data, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--data", str(data), "--device", "cpu", "--image-size", "16", "--steps", "1",
                 "--skip-experiment", "--naive-batches", "1", "--json", str(out), "--quiet"]) == 0
    b = json.loads(out.read_text())
    assert set(b["provenance"]) >= {"host", "cpu", "cpu_native_bf16", "software", "git", "precision", "started"}


# ------------------------------------------------------------------------------------- 4. disk that fits


def test_a_finished_run_keeps_weights_not_optimizer_state(data, tmp_path):
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    common = ["--model", "regularized", "--image-size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(plain), *common]) == 0
    assert main(["train", "--data", str(data), "--out", str(kept), *common, "--keep-last"]) == 0
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())  # noqa: E731
    weights = (plain / "best.safetensors").stat().st_size
    assert not (plain / "last.ckpt").exists() and (kept / "last.ckpt").exists()
    assert size(plain) < 1.3 * weights  # the weights, plus small metrics, predictions and figures
    assert size(kept) > 3.5 * weights  # + last.ckpt: weights and Adam's two moments
    assert main(["train", "--resume", str(kept), "--epochs", "2", "--quiet"]) == 0


# ------------------------------------------------------------------------------------- plan a study from a pilot


def test_plan_turns_a_pilot_study_into_a_recommended_seeds(tmp_path, capfd, monkeypatch):
    """`reglab plan DIR` reads a pilot study and prints the --seeds each comparison needs and the one to use; it
    writes nothing, plans nothing from one seed a side, and refuses bad input in one line before any work."""
    from reglab import stats
    from reglab.reports.facts import load_study
    from test_report import compare_spec, make_study

    pilot = make_study(tmp_path / "pilot", compare_spec([0.60, 0.62, 0.61], [0.75, 0.78, 0.76]))
    before = sorted(p.relative_to(pilot) for p in pilot.rglob("*"))
    monkeypatch.setenv("COLUMNS", "250")  # the table on one line a row
    assert main(["plan", str(pilot)]) == 0
    out, _ = capfd.readouterr()
    study = load_study(pilot, warn_stderr=False)
    ca, cb = (np.stack([f.correctness for f in study.variants[v].runs]) for v in ("regularized", "basic"))
    detect = stats.seeds_needed(stats.compare_variants(ca, cb, 0.975, 0.01))["detect"]  # 2 comparisons: 97.5% each
    assert f"--seeds {detect['seeds']} (range {detect['range'][0]} to {detect['range'][1]}) to detect" in out
    assert "Recommended: --seeds " in out and "`" not in out
    assert sorted(p.relative_to(pilot) for p in pilot.rglob("*")) == before  # it wrote nothing

    one = make_study(tmp_path / "one", compare_spec([0.60], [0.75]))
    assert main(["plan", str(one), "--quiet"]) == 0
    assert capfd.readouterr().out == ""
    assert main(["plan", str(one)]) == 0
    assert "Nothing to plan from yet" in capfd.readouterr().out

    one_line_error(capfd, main(["plan", str(pilot), "--power", "1.5"]), "invalid power")
    one_line_error(capfd, main(["plan", str(tmp_path / "missing")]), "is not a study folder")
    one_line_error(capfd, main(["plan", str(pilot / "basic" / "seed-0")]), "is not a study folder")
