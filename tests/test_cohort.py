"""Cohorts: K seeds trained as one packed network (issue 12). Correctness on CPU: the packed network and its
optimizer equal K separate models and torch.optim member by member (float64, so the tolerance is tight);
a stopped member is frozen; cohort-trained seeds are statistically the same as single runs; a cohort resumes
exactly; studies pack their seeds into the same folders and reports as before."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reglab import stats
from reglab.cli import main
from reglab.config import Config
from reglab.models import build_model
from reglab.optim import PackedOptimizer
from reglab.packed import Cohort

pytestmark = pytest.mark.usefixtures("no_curve_plots")


def two_models(**overrides):
    cfg = Config(model="regularized", image_size=32, dropout=0.0, dense_dropout=0.0, augment="none", **overrides)
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(build_model(cfg, 10).double())
    return models


@pytest.mark.parametrize("kind,make", [
    ("adam", lambda p, lr: torch.optim.Adam(p, lr=lr, eps=1e-7)),
    ("adamw", lambda p, lr: torch.optim.AdamW(p, lr=lr, eps=1e-7, weight_decay=0.05)),
    ("sgd", lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
])
def test_a_packed_cohort_equals_its_members_trained_apart(kind, make):
    """Same batches: same outputs, gradients, optimizer updates and BatchNorm statistics as two separate models
    with torch.optim, each at its own learning rate; member 0 stops after step 3 and stays exactly as it was."""
    singles = two_models()
    cohort = Cohort(singles)
    packed = cohort.model
    lrs = (1e-3, 5e-4)
    opts = [make(m.parameters(), lr) for m, lr in zip(singles, lrs)]
    popt = PackedOptimizer(packed, 2, kind, lrs[0], eps=1e-7, weight_decay=0.05 if kind == "adamw" else 0.0)
    popt.set_lr(1, lrs[1])
    rng = torch.Generator().manual_seed(0)
    frozen_snapshot = None
    for step in range(6):
        xs = [torch.rand(8, 3, 32, 32, generator=rng, dtype=torch.float64) for _ in singles]
        ys = [torch.randint(0, 10, (8,), generator=rng) for _ in singles]
        outs = [m(x) for m, x in zip(singles, xs)]
        pout = packed(cohort.inputs(torch.cat(xs)))  # member k's images in channels 3k..3k+2
        for k in range(2):
            assert torch.allclose(pout[:, k], outs[k], rtol=1e-6, atol=1e-8), (step, k)
        stopped = step >= 3
        for k in range(2):
            if not (stopped and k == 0):
                opts[k].zero_grad()
                F.cross_entropy(outs[k], ys[k]).backward()
        popt.zero_grad()
        sum(F.cross_entropy(pout[:, k], ys[k]) * (0.0 if stopped and k == 0 else 1.0) for k in range(2)).backward()
        grads = {n: p.grad for n, p in packed.named_parameters()}
        for n, g in cohort.member(grads, 1).items():
            assert torch.allclose(g, dict(singles[1].named_parameters())[n].grad, rtol=1e-6, atol=1e-8), n
        if step == 3:  # member 0 stops: from here on neither side updates it
            popt.freeze(0)
            frozen_snapshot = (cohort.member(dict(packed.named_parameters()), 0), popt.member_state(0))
        popt.step()
        for k in range(2):
            if not (stopped and k == 0):
                opts[k].step()
        got = cohort.member_state(1)
        for n, t in singles[1].state_dict().items():
            assert torch.allclose(got[n].double(), t.double(), rtol=1e-6, atol=1e-8), (step, n)
        if stopped:
            weights, opt_state = frozen_snapshot
            now = cohort.member(dict(packed.named_parameters()), 0)
            assert all(torch.equal(now[n], weights[n]) for n in weights)
            state = popt.member_state(0)["state"]
            assert all(torch.equal(state[n][key], opt_state["state"][n][key]) for n in state for key in state[n])


def make_colours(root: Path, per_class: int = 24, val: int = 16) -> Path:
    """Three classes told apart by their dominant colour: learnable in a few epochs at 16 px."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for c, name in enumerate(("red", "green", "blue")):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, (16, 16, 3))
                img[..., c] += 120
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


def _step_setup(cfgs, data):
    """What the trainer runs a cohort's steps with, without a trainer or run folders: (cohort, optimizer, schedule,
    generators, batches): batches() is the next member-major (images, labels) batch of every member."""
    from reglab.data.loader import shuffled_batches
    from reglab.packed import seeded_models
    from reglab.step import setup

    device = torch.device("cpu")
    cohort, optimizer, scheduler, gens = setup(cfgs, seeded_models(cfgs, len(data.classes)), device, 1)
    images = torch.from_numpy(data.train.images).permute(0, 3, 1, 2)
    labels = torch.from_numpy(data.train.labels)
    everything = np.arange(len(labels))
    orders = zip(*(shuffled_batches(everything, torch.Generator().manual_seed(c.seed), device, c.batch_size)
                   for c in cfgs))

    def batches():
        idx = torch.cat(next(orders))
        return images.index_select(0, idx), labels.index_select(0, idx)

    return cohort, optimizer, scheduler, gens, batches


def test_a_stopped_member_is_frozen_by_the_step(tmp_path):
    from reglab.data import load_data
    from reglab.step import train_step

    data = load_data(str(make_colours(tmp_path / "data")), 16, show_progress=False, workers=1)
    cfgs = [Config(model="regularized", image_size=16, seed=s, device="cpu") for s in (1, 2)]
    cohort, optimizer, scheduler, gens, batches = _step_setup(cfgs, data)
    cohort.model.train()
    train_step(cohort, optimizer, scheduler, *batches(), gens, cfgs[0], "fp32")
    optimizer.freeze(0)  # what the trainer does when member 0 stops
    cohort.freeze(0)
    before, other = (cohort.member_state(k) for k in (0, 1))
    before_opt = optimizer.member_state(0)
    train_step(cohort, optimizer, scheduler, *batches(), gens, cfgs[0], "fp32")
    after, moved = cohort.member_state(0), cohort.member_state(1)
    for name, t in before.items():  # weights and BatchNorm running statistics
        if not name.endswith("num_batches_tracked"):  # one counter shared by the cohort, unused with a momentum
            assert torch.equal(t, after[name]), name
    assert any(not torch.equal(t, moved[n]) for n, t in other.items() if "running_mean" in n)
    assert before_opt["steps"] == optimizer.member_state(0)["steps"] == 1
    assert optimizer.member_state(1)["steps"] == 2


def test_one_step_runs_without_a_run_folder():
    """step.train_step alone, on tensors (no data folder, run folder or temporary directory): a cohort of two with
    every input and target regularizer and the EMA on returns per-member losses and correct counts on the
    device and moves each member's weights and EMA."""
    from reglab.packed import seeded_models
    from reglab.step import setup, train_step

    cfgs = [Config(model="regularized", image_size=16, seed=s, device="cpu", batch_size=8, mixup=0.2, cutmix=1.0,
                   reprob=0.5, smoothing=0.1, model_ema=0.9) for s in (1, 2)]
    cohort, optimizer, scheduler, gens = setup(cfgs, seeded_models(cfgs, 3), torch.device("cpu"), 1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * 8, 3, 16, 16), generator=g, dtype=torch.uint8)  # member-major
    labels = torch.randint(0, 3, (2 * 8,), generator=g)
    cohort.model.train()
    start, start_ema = cohort.member_state(1), cohort.member_state(1, ema=True)
    losses, correct = train_step(cohort, optimizer, scheduler, images, labels, gens, cfgs[0], "fp32")
    assert losses.shape == (2,) and correct.shape == (2,) and torch.isfinite(losses).all()
    assert correct.dtype == torch.long and 0 <= int(correct.min()) and int(correct.max()) <= 8
    assert not losses.requires_grad
    for before, after in ((start, cohort.member_state(1)), (start_ema, cohort.member_state(1, ema=True))):
        assert any(not torch.equal(t, after[n]) for n, t in before.items() if t.is_floating_point())


def test_cohort_seeds_and_single_runs_agree_within_noise(tmp_path):
    data = make_colours(tmp_path / "data")
    common = ["--data", str(data), "--image-size", "16", "--epochs", "4", "--device", "cpu", "--model", "basic",
              "--seeds", "4", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "packed"), "--pack", "4"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "single"), "--pack", "off"]) == 0
    acc = {}
    for how in ("packed", "single"):
        runs = sorted((tmp_path / how / "basic").glob("seed-*/summary.json"))
        summaries = [json.loads(p.read_text()) for p in runs]
        assert [s["cohort"]["size"] for s in summaries] == ([4] * 4 if how == "packed" else [1] * 4)
        acc[how] = [s["restored_val_accuracy"] for s in summaries]
    assert min(acc["packed"] + acc["single"]) > 0.6  # both learn (chance is 1/3)
    w = stats.welch(acc["packed"], acc["single"], n_images=48)
    assert w["zero_variance"] or w["p"] > 0.01, (acc, w)
    assert abs(np.mean(acc["packed"]) - np.mean(acc["single"])) < 0.1


def _metric_rows(path: Path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]


def test_a_cohort_resumes_exactly(tmp_path):
    data = make_colours(tmp_path / "data")
    common = ["--data", str(data), "--image-size", "16", "--epochs", "8", "--device", "cpu", "--seeds", "2",
              "--pack", "2", "--patience", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, "-m", "reglab.cli", "train", *common, "--out", str(tmp_path / "full"),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "reglab.cli", "train", *common, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched = cut / "regularized" / "seed-43" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (watched.exists() and len(_metric_rows(watched)) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    err = proc.stderr.read()
    assert f"reglab train --resume {cut}" in err, err
    assert len(_metric_rows(watched)) < 8
    resumed = subprocess.run([sys.executable, "-m", "reglab.cli", "train", "--resume", str(cut), "--quiet"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for seed in (42, 43):
        a = tmp_path / "full" / "regularized" / f"seed-{seed}"
        b = cut / "regularized" / f"seed-{seed}"
        assert _metric_rows(a / "metrics.csv") == _metric_rows(b / "metrics.csv"), seed
        from safetensors.torch import load_file

        wa, wb = load_file(a / "best.safetensors"), load_file(b / "best.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_compare_packs_its_seeds_into_the_usual_folders_and_report(mini, tmp_path):
    out = tmp_path / "study"
    assert main(["compare", "--data", str(mini), "--seeds", "3", "--pack", "3", "--image-size", "16",
                 "--epochs", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    for variant in ("basic", "regularized"):
        folders = sorted(p.name for p in (out / variant).iterdir())
        assert folders == ["seed-42", "seed-43", "seed-44"]
        for f in folders:
            s = json.loads((out / variant / f / "summary.json").read_text())
            assert s["status"] == "finished" and s["cohort"] == {"size": 3, "seeds": [42, 43, 44]}
            assert (out / variant / f / "best.safetensors").exists() and not (out / variant / f / "last.ckpt").exists()
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert main(["report", str(out), "--quiet"]) == 0


def _train_cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "reglab.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _same_run(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    assert _metric_rows(a / "metrics.csv") == _metric_rows(b / "metrics.csv"), (a, b)
    wa, wb = load_file(a / "best.safetensors"), load_file(b / "best.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa), (a, b)


def test_no_cohort_member_is_lost_when_interrupted_and_resumed_as_printed(tmp_path):
    """train --seeds 3 --pack 2, stopped during the first cohort (42, 43): the printed resume command finishes 42 and
    43 exactly and trains 44, which never started; every seed equals an uninterrupted run's."""
    data = make_colours(tmp_path / "data")
    common = ["--data", str(data), "--image-size", "16", "--epochs", "5", "--device", "cpu", "--seeds", "3",
              "--pack", "2", "--patience", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    full = _train_cli(*common, "--out", str(tmp_path / "full"), "--quiet", env=env)
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "reglab.cli", "train", *common, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched = cut / "regularized" / "seed-43" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (watched.exists() and len(_metric_rows(watched)) >= 1):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    err = proc.stderr.read()
    assert f"reglab train --resume {cut}" in err, err
    assert not (cut / "regularized" / "seed-44").exists()  # the second cohort never started
    again = _train_cli(*common, "--out", str(cut), "--quiet", env=env)  # the original command points to --resume
    assert again.returncode == 2 and f"--resume {cut}" in again.stderr, again.stderr
    resumed = _train_cli("--resume", str(cut), "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr
    for seed in (42, 43, 44):
        _same_run(tmp_path / "full" / "regularized" / f"seed-{seed}", cut / "regularized" / f"seed-{seed}")
    assert json.loads((cut / "regularized" / "seed-44" / "summary.json").read_text())["cohort"]["seeds"] == [44]
    nothing = _train_cli("--resume", str(cut), env=env)
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr


def test_a_finished_cohort_is_extended_like_a_single_run(tmp_path):
    """train --seeds 2 --pack 2 --keep-last for 3 epochs, then --resume DIR --epochs 5: the same as 5 epochs
    straight."""
    data = make_colours(tmp_path / "data")
    common = ["--data", str(data), "--image-size", "16", "--device", "cpu", "--seeds", "2", "--pack", "2",
              "--patience", "0", "--keep-last", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert _train_cli(*common, "--epochs", "5", "--out", str(tmp_path / "five"), env=env).returncode == 0
    assert _train_cli(*common, "--epochs", "3", "--out", str(tmp_path / "ext"), env=env).returncode == 0
    extended = _train_cli("--resume", str(tmp_path / "ext"), "--epochs", "5", "--quiet", env=env)
    assert extended.returncode == 0, extended.stderr
    for seed in (42, 43):
        run = tmp_path / "ext" / "regularized" / f"seed-{seed}"
        _same_run(tmp_path / "five" / "regularized" / f"seed-{seed}", run)
        assert json.loads((run / "summary.json").read_text())["extensions"] == [{"from": 3, "to": 5, "at_epoch": 3}]
