"""Regularizers as parts (issue 22): one table, and a user's regularizer without forking.

One parametrised test runs over every row of the table (`list_regularizers()`, as timm's tests run over
`list_models()`) and over three plugins, one per stage a user can add to (the worked example Cutout, a confidence
penalty on the loss, a max-norm constraint after each step): each is off at its neutral value (the config is the
baseline's, one step is identical), changes one step at its ablation value (from the same initial weights and
generators), and is recorded and described by a run. Then: what registration refuses, plugin settings in a config
and on the command line, entry points, a plugin in a cohort (its own generator, a frozen member untouched), and
the worked example through the CLI: a cohort interrupted and resumed exactly, ablated, reported, and the report
refused where the plugin is not.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import reglab
from reglab import plugins, regularizers
from reglab.cli import defaults_text, main
from reglab.config import Config
from reglab.data.loader import to_float
from reglab.errors import UserError
from reglab.models import build_model
from reglab.packed import seeded_models
from reglab.step import setup, train_step
from reglab.variants import variant_catalogue, variant_overrides
from conftest import make_tree, one_line_error

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cutout.py"
TINY = {"image_size": 16, "device": "cpu", "batch_size": 8, "seed": 1, "epochs": 1}
BUILTIN_NAMES = [r.name for r in regularizers.list_regularizers()]


def confidence_penalty(logits, targets, beta, params):
    """Pereyra et al. 2017: minus beta times the entropy of the softmax."""
    p = torch.softmax(logits, dim=1)
    return beta * torch.sum(p * torch.log_softmax(logits, dim=1), dim=1).mean()


@torch.no_grad()
def max_norm(params, cap):
    """Each dense kernel's rows rescaled to a norm of at most `cap`."""
    for name, p in params.items():
        if p.dim() == 2:
            p.mul_(torch.clamp(cap / p.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0))


TEST_PLUGINS = {
    "cutout": lambda: plugins.load(str(EXAMPLE)),
    "confidence-penalty": lambda: reglab.register_regularizer(
        "confidence-penalty", confidence_penalty, stage="loss", ablation=0.1, about="a confidence penalty",
        setting=reglab.Setting("confidence_beta", float, 0.0, "[0, inf)", metavar="BETA", help="penalty weight")),
    "max-norm": lambda: reglab.register_regularizer(
        "max-norm", max_norm, stage="after_step", ablation=0.01, about="max-norm of dense rows",
        setting=reglab.Setting("max_norm", float, 0.0, "[0, inf)", metavar="C", help="max-norm of dense rows")),
}


@pytest.fixture
def registry(monkeypatch):
    """Regularizers registered in a test are gone after it: the registry, the loaded specs and modules restored."""
    monkeypatch.setattr(regularizers, "_REGISTRY", dict(regularizers._REGISTRY))
    monkeypatch.setattr(plugins, "_loaded", [])
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(regularizers.FILE_MODULE_PREFIX):
            del sys.modules[name]


def regularizer(name: str) -> regularizers.Regularizer:
    if name in TEST_PLUGINS and regularizers.find(name) is None:
        TEST_PLUGINS[name]()
    return regularizers.get(name)


def pair(reg) -> tuple[dict, dict]:
    """(without it, with it) as the ablation has them: no-X and full for the notebook's three, full and X else."""
    if reg.notebook:
        return variant_overrides(f"no-{reg.name}")[1], variant_overrides("full")[1]
    return variant_overrides("full")[1], variant_overrides(reg.name)[1]


def one_step(cfg: Config) -> tuple[dict, torch.Tensor]:
    """One training step from the seed's initial weights and generators: (the weights as evaluated, the eval-mode
    output of the network on the batch)."""
    cohort, optimizer, scheduler, gens = setup([cfg], seeded_models([cfg], 3), torch.device("cpu"), 1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (16,), generator=g)
    cohort.model.train()
    train_step(cohort, optimizer, scheduler, images, labels, gens, cfg, "fp32")
    state = cohort.evaluated_state(0)
    model = build_model(cfg, 3)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return state, model(to_float(images, False))


ROWS = BUILTIN_NAMES + list(TEST_PLUGINS)


def test_the_rows_are_the_table():
    """Every built-in regularizer is a row, the notebook's three and the added ones, and each stage users can add
    to has a plugin row."""
    assert {"batchnorm", "dropout", "augment"} == {r.name for r in regularizers.BUILTINS if r.notebook}
    assert {"weight-decay", "smoothing", "mixup", "cutmix", "reprob", "model-ema", "drop-path",
            "spatial-dropout"} <= set(BUILTIN_NAMES)
    assert BUILTIN_NAMES == [r.name for r in regularizers.BUILTINS]
    assert {"input", "loss", "after_step"} == set(regularizers.PLUGIN_STAGES)


@pytest.mark.usefixtures("no_curve_plots")
@pytest.mark.parametrize("name", ROWS)
def test_each_regularizer(name, registry, tmp_path):
    """Off at its neutral value (the baseline's config and step), a different step at its ablation value, recorded
    in summary.json and described in the words reports use."""
    reg = regularizer(name)
    without, with_ = pair(reg)
    base, on = Config(**without, **TINY), Config(**with_, **TINY)
    # off at its neutral value: the baseline itself
    off = on.replace(**reg.off())
    assert off.to_dict() == base.to_dict() and off.plugin_settings == {}
    assert not reg.active(off) and reg.describe(off) is None
    assert all(Config(model="none").value(s.name) == s.neutral for s in reg.settings)  # off unless asked for
    (state_off, out_off), (state_base, out_base) = one_step(off), one_step(base)
    assert torch.equal(out_off, out_base) and all(torch.equal(t, state_base[n]) for n, t in state_off.items())
    # on at its ablation value: the same initial weights and generators give another step
    assert reg.active(on)
    assert not torch.equal(one_step(on)[1], out_base)
    # recorded and described
    words = reg.describe(on)
    assert words and words not in base.regularizers()
    data = make_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=4, shape=(16, 16))
    reglab.train(on.replace(data=str(data)), tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert words in summary["regularizers"]
    assert [p["name"] for p in summary["plugins"]] == ([reg.name] if reg.plugin else [])
    if reg.plugin:
        info = summary["plugins"][0]
        assert info["module"] == reg.origin.module and len(info["sha256"]) == 64


def test_list_variants_and_flags_come_from_the_table(registry):
    regularizer("cutout")
    listed = dict(variant_catalogue())
    for reg in regularizers.list_regularizers():
        if reg.notebook:
            assert f"no-{reg.name}" in listed
        else:
            assert any(v.split("[")[0] == reg.name for v in listed), reg.name
    assert "plugin" in next(about for v, about in listed.items() if v.startswith("cutout"))
    assert defaults_text("dropout").startswith("regularized: 0.25; basic, none: 0")
    assert defaults_text("mixup") == "default 0"


@pytest.mark.parametrize("spec,needle", [
    ("mixup=0", "would not add mixup"), ("reprob=1.5", "would not add reprob"), ("spatial-dropout=1", "no value"),
    ("no-dropout=1", "takes no value"), ("augment=rot", "choose one of"), ("bogus", "unknown variant"),
])
def test_variant_values_are_checked(spec, needle):
    with pytest.raises(UserError, match=needle):
        variant_overrides(spec)


def test_variant_settings_by_name():
    assert variant_overrides("augment=rrc") == ("augment-rrc", {"model": "regularized", "augment": "rrc"})
    assert variant_overrides("weight-decay=0.1")[1]["weight_decay"] == 0.1
    assert variant_overrides("mixup")[1]["mixup"] == 0.2


@pytest.mark.parametrize("kwargs,needle", [
    ({"name": "full"}, "a name is"), ({"name": "no-x"}, "a name is"), ({"name": "mixup"}, "taken by reglab"),
    ({"stage": "model"}, "stage 'model'"), ({"setting": reglab.Setting("lr", float, 0.0, "[0, 1]")}, "config key"),
    ({"setting": reglab.Setting("mixup", float, 0.0, "[0, 1]")}, "config key"), ({"ablation": 0.0}, "would not"),
    ({"ablation": None}, "ablation=None"), ({"setting": None}, "needs its setting"),
])
def test_registration_refuses_in_one_line(kwargs, needle, registry):
    args = {"name": "mine", "stage": "loss", "ablation": 0.1,
            "setting": reglab.Setting("mine_weight", float, 0.0, "[0, inf)"), **kwargs}
    with pytest.raises(UserError, match=needle) as e:
        reglab.register_regularizer(args.pop("name"), confidence_penalty, **args)
    assert "\n" not in str(e.value)
    assert regularizers.find("mine") is None


def test_plugin_settings_in_a_config(registry):
    assert Config().plugin_settings == {}
    with pytest.raises(UserError, match="unknown key"):
        Config(cutout=8)
    regularizer("cutout")
    cfg = Config(cutout=8)
    assert cfg.value("cutout") == 8 and cfg.plugin_settings == {"cutout": 8}
    assert cfg.replace(cutout=0).plugin_settings == {}  # neutral values are not stored
    assert cfg.replace(epochs=3).value("cutout") == 8
    assert Config(cutout=8).differences(Config()) == ["cutout"]
    with pytest.raises(UserError, match="invalid cutout"):
        Config(cutout=-1)
    with pytest.raises(UserError, match="expected int"):
        Config(cutout="big")


def test_a_recorded_config_loads_without_its_plugin():
    """A run's config.yaml with a plugin's setting loads where the plugin is not (predict, export); training it is
    refused by the trainer."""
    from reglab.config import from_dict

    cfg = from_dict({**Config().to_dict(), "plugin_settings": {"cutout": 48}})
    assert cfg.plugin_settings == {"cutout": 48}
    with pytest.raises(UserError, match="cutout is the setting of no regularizer loaded here"):
        Config(**{**Config().to_dict(), "plugin_settings": {"cutout": 48}})


def test_set_reaches_any_key(registry, capfd, tmp_path):
    from reglab.cli import set_values

    assert set_values(["mixup=0.4", "augment=rrc", "widths=[8, 16, 32]", "batchnorm=false"]) == \
        {"mixup": 0.4, "augment": "rrc", "widths": [8, 16, 32], "batchnorm": False}
    one_line_error(capfd, main(["train", "--out", str(tmp_path / "x"), "--set", "bogus=1"]), "unknown key 'bogus'")
    assert not (tmp_path / "x").exists()
    one_line_error(capfd, main(["train", "--out", str(tmp_path / "x"), "--set", "mixup=0.1", "--mixup", "0.2"]),
                   "set twice")
    one_line_error(capfd, main(["train", "--out", str(tmp_path / "x"), "--plugin", str(EXAMPLE), "--set",
                                "cutout=-3"]), "invalid cutout")
    assert not (tmp_path / "x").exists()


def test_a_missing_plugin_is_one_line(capfd, tmp_path, registry):
    one_line_error(capfd, main(["train", "--plugin", str(tmp_path / "nope.py"), "--out", str(tmp_path / "x")]),
                   "no such file")
    one_line_error(capfd, main(["train", "--plugin", "no_such_module_here", "--out", str(tmp_path / "x")]),
                   "no module named")


def test_installed_plugins_load_from_their_entry_points(tmp_path, monkeypatch, registry):
    """A package with an entry point in the group reglab.regularizers is loaded at start, as pytest loads its
    plugins, and its regularizer records the package and its version."""
    (tmp_path / "myregs").mkdir()
    (tmp_path / "myregs" / "__init__.py").write_text(
        "import reglab\n"
        "@reglab.register_regularizer('label-noise', stage='loss', ablation=0.5,\n"
        "                             setting=reglab.Setting('label_noise', float, 0.0, '[0, 1]'))\n"
        "def term(logits, targets, strength, params):\n"
        "    return strength * logits.square().mean()\n")
    info = tmp_path / "myregs-1.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myregs\nVersion: 1.3\n")
    (info / "entry_points.txt").write_text("[reglab.regularizers]\nlabel-noise = myregs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "myregs", raising=False)
    reglab.load_plugins([])
    reg = regularizers.get("label-noise")
    assert (reg.origin.distribution, reg.origin.version, reg.origin.module) == ("myregs", "1.3", "myregs")
    assert Config(label_noise=0.5).value("label_noise") == 0.5
    sys.modules.pop("myregs", None)


def test_a_plugin_in_a_cohort(registry):
    """Each member draws from its own generator for a plugin's transform (a second member never moves the first's
    draws), and an after-step hook never touches a stopped member."""
    regularizer("cutout")
    regularizer("max-norm")
    a = Config(model="none", cutout=6, **{**TINY, "seed": 1})
    b = a.replace(seed=2)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    soft = torch.eye(3)[torch.arange(8) % 3]
    reg = regularizers.get("cutout")
    alone = setup([a], seeded_models([a], 3), torch.device("cpu"), 1)[3]
    both = setup([a, b], seeded_models([a, b], 3), torch.device("cpu"), 1)[3]
    first = reg.apply(images, soft, 6, alone.plugins[0]["cutout"])[0]
    assert torch.equal(first, reg.apply(images, soft, 6, both.plugins[0]["cutout"])[0])
    assert not torch.equal(first, reg.apply(images, soft, 6, both.plugins[1]["cutout"])[0])

    cfgs = [Config(model="none", max_norm=0.01, **{**TINY, "seed": s}) for s in (1, 2)]
    cohort, optimizer, scheduler, gens = setup(cfgs, seeded_models(cfgs, 3), torch.device("cpu"), 1)
    optimizer.freeze(0)
    cohort.freeze(0)
    before, other = cohort.member_state(0), cohort.member_state(1)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    train_step(cohort, optimizer, scheduler, images, torch.arange(16) % 3, gens, cfgs[0], "fp32")
    after, moved = cohort.member_state(0), cohort.member_state(1)
    assert all(torch.equal(t, after[n]) for n, t in before.items())
    dense = [n for n, t in moved.items() if t.dim() == 2]
    assert dense and all(float(moved[n].norm(dim=1).max()) <= 0.01 + 1e-6 for n in dense)
    assert any(not torch.equal(other[n], moved[n]) for n in dense)


# ------------------------------------------------------------------------------------------ the worked example


def _cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "reglab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _rows(path: Path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]


def test_the_cutout_example_through_the_cli(tmp_path):
    """A regularizer in a file outside the package: trained in a cohort, interrupted and resumed exactly (the
    plugin found again from what the run recorded), ablated against full and reported; once its source has
    changed a report warns and a resume is refused, and once it is gone the report is refused in one line.
    (About 3 minutes on 2 CPU cores: seven CLI processes.)"""
    from safetensors.torch import load_file

    plugin = tmp_path / "mine" / "cutout.py"
    plugin.parent.mkdir()
    shutil.copy(EXAMPLE, plugin)
    data = make_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=8, val=4, shape=(16, 16))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    common = ["train", "--plugin", str(plugin), "--cutout", "6", "--data", str(data), "--image-size", "16",
              "--epochs", "6", "--device", "cpu", "--seeds", "2", "--pack", "2", "--patience", "0"]
    full = _cli(*common, "--out", str(tmp_path / "full"), "--quiet", env=env)
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "reglab.cli", *common, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched = cut / "regularized" / "seed-43" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (watched.exists() and len(_rows(watched)) >= 1):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read()
    assert len(_rows(watched)) < 6
    resumed = _cli("train", "--resume", str(cut), "--quiet", env=env)  # no --plugin: the recorded file is loaded
    assert resumed.returncode == 0, resumed.stderr
    for seed in (42, 43):
        a, b = tmp_path / "full" / "regularized" / f"seed-{seed}", cut / "regularized" / f"seed-{seed}"
        assert _rows(a / "metrics.csv") == _rows(b / "metrics.csv"), seed
        wa, wb = load_file(a / "best.safetensors"), load_file(b / "best.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        summary = json.loads((b / "summary.json").read_text())
        assert summary["plugins"][0]["file"] == str(plugin) and "cutout 6" in summary["regularizers"]

    study = tmp_path / "study"
    ablated = _cli("ablate", "--plugin", str(plugin), "--variants", "full,cutout", "--seeds", "2", "--data", str(data),
                   "--image-size", "16", "--epochs", "1", "--device", "cpu", "--out", str(study), "--quiet", env=env)
    assert ablated.returncode == 0, ablated.stderr
    assert "cutout 48" in json.loads((study / "cutout" / "seed-43" / "summary.json").read_text())["regularizers"]
    assert "cutout" in (study / "report.md").read_text()

    plugin.write_text(plugin.read_text() + "\n# changed\n")  # passed as --plugin: this version is used
    changed = _cli("report", str(study), "--plugin", str(plugin), "--quiet", env=env)
    assert changed.returncode == 0 and "warning" in changed.stderr and "not the version" in changed.stderr
    refused = _cli("train", "--resume", str(cut), "--plugin", str(plugin), "--epochs", "7", env=env)
    assert refused.returncode == 2 and "has changed" in refused.stderr and len(refused.stderr.splitlines()) == 1
    unpassed = _cli("report", str(study), env=env)  # not passed: the recorded file no longer has the recorded hash
    assert unpassed.returncode == 2 and "as it was" in unpassed.stderr

    plugin.unlink()  # a machine without the plugin
    gone = _cli("report", str(study), env=env)
    lines = gone.stderr.splitlines()
    assert gone.returncode == 2 and len(lines) == 1 and lines[0].startswith("reglab: cannot report"), gone.stderr
    assert "'cutout'" in lines[0] and f"--plugin {plugin}" in lines[0]


@pytest.mark.parametrize("info,needle", [
    ({"distribution": "myregs", "version": "1.3"}, "install its package: pip install 'myregs==1.3'"),
    ({"module": "myregs.extra"}, "pass --plugin myregs.extra, or install the package"),
    ({"module": "__main__"}, "register it again"),
])
def test_a_run_whose_plugin_is_not_here_is_refused_saying_what_to_install(info, needle, monkeypatch, registry):
    from reglab.rundir import PluginInfo

    recorded = PluginInfo(**{"name": "label-noise", "module": "no_such_module_here", **info})
    monkeypatch.setattr(plugins, "recorded", lambda folder: [(Path("runs/x"), recorded)])
    for action in ("report", "resume"):
        with pytest.raises(UserError, match=f"cannot {action} runs/x: it used the regularizer plugin 'label-noise'") \
                as e:
            plugins.require("runs/x", action)
        assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.usefixtures("no_curve_plots")
def test_worker_processes_load_the_plugins(registry, tmp_path):
    """ablate(jobs=2): each run in its own spawned process, which loads the plugins this process has first."""
    data = make_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=4, shape=(16, 16))
    out = reglab.ablate(variants="cutout=4", seeds=[1, 2], pack="off", jobs=2, plugins=[str(EXAMPLE)],
                        data=str(data), image_size=16, epochs=1, device="cpu", out=tmp_path / "study", quiet=True)
    for seed in (1, 2):
        summary = json.loads((out / "cutout-4" / f"seed-{seed}" / "summary.json").read_text())
        assert "cutout 4" in summary["regularizers"] and summary["plugins"][0]["file"] == str(EXAMPLE)
