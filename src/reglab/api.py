"""The Python API: the one front door. Every `reglab` command's work is a function here; the CLI only parses
flags and calls it, and a notebook calls the same functions with the same options:

    train(config, out, seeds=, pack=, overwrite=)     one run, or several seeds packed into cohorts
    resume(folder, **changes)                         continue (or extend with epochs=N) what train left
    compare(seeds=, out=, ..., **settings)            the notebook's experiment over seeds, and its report
    ablate(variants=, seeds=, out=, ..., **settings)  every regularizer ablated over seeds, and its report
    sweep(setting, values, grid=, seeds=, out=, ...)  dose-response: one setting (or a grid of two), and its report
    list_variants()                                   what each variant ablate accepts changes
    register_regularizer(name, fn, stage=, setting=)  your own regularizer (also a decorator)
    list_regularizers()                               every regularizer: the built-in table, then yours
    load_plugins(specs)                               import regularizer plugins: modules or .py files
    report(folder, margin=)                           re-render a study's or a run's report
    plan(folder, margin=, power=)                     the seeds a new study needs, from a pilot study
    load_run(folder)                                  a finished run as a model: .predict(images)
    predict(run_dir, inputs, out=)                    classify image files into a CSV
    export(run_dir, format=)                          the model as ONNX or TorchScript
    summary(model, **settings)                        a Keras-like model summary
    bench(data, ...)                                  measure the pipeline

Functions take a Config (or config settings as keywords) and plain arguments, never an argparse namespace. They
check all of their input before any work (a bad value raises UserError, one line), and quiet=True silences
everything but errors. A margin is in percentage points, as the --margin flag. `plugins` (--plugin): regularizer
plugins to import first, module names or .py files (plugins.py); installed packages' plugins load by themselves.
The setting mlflow="default" (or a tracking URI; --mlflow [URI]) also logs each run to MLflow (mlflow_log.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from . import atomic, benchmark, mlflow_log, run, rundir, study
from .config import MAX_SEED, Config, absolute_data, check_keys, resolve, valid_keys
from .errors import UserError
from .executors import Executor
from .models import build_model, summary_text
from .plugins import load_all, require
from .regularizers import list_regularizers, register_regularizer  # noqa: F401  (part of the API)
from .trained import TrainedRun, export_run, predict_to_csv
from .trained import load_run as load_trained_run
from .reports.planning import plan as plan_study
from .reports.render import render_report
from .rundir import Summary
from .variants import COMPARE_VARIANTS, parse_variants, sweep_axis, sweep_variants, variant_catalogue

MAX_CLASSES = 100_000  # summary's --num-classes: ImageNet-21k has 21,841; more is a typo (1e9 asked for a terabyte)

Seeds = int | list[int]
Plugins = list[str] | str | None


def load_plugins(specs: list[str] | str) -> None:
    """Import regularizer plugins (what --plugin takes): module names, or paths of .py files. Their regularizers
    are then known to every function here; the installed packages' plugins (entry points) load as well."""
    load_all(specs)


def train(config: Config, out: str | Path, *, seeds: Seeds = 1, pack: int | str = "auto", overwrite: bool = False,
          variant: str | None = None, plugins: Plugins = None, quiet: bool = False,
          verbose: bool = False) -> Summary | dict[Path, Summary]:
    """Train `config` into the run folder `out` and return its summary (also out/summary.json). seeds=N trains N
    seeds from config.seed (a list: exactly those), each into out/<variant>/seed-<seed>/, `pack` seeds to one
    packed network (a number, "auto": on CUDA as many as fit, or "off"), and returns {run folder: summary}.
    variant: the name of what the run is (e.g. "dropout=0.1"; default: the model preset), recorded in it: a report
    over a folder of such runs shows one variant per name (and per configuration). overwrite: replace the run(s)
    there, once the new ones have their data and model."""
    load_all(plugins)
    cfg = resolve(config.to_dict())  # checked now, its data made absolute
    mlflow_log.check_available(cfg.mlflow)
    pack, variant = _pack(pack), _variant(variant)
    if seeds == 1:
        return run.train(cfg, out, overwrite=overwrite, variant=variant, quiet=quiet, verbose=verbose)
    return study.train_seeds(cfg, _seed_list(seeds, cfg.seed), out, pack, overwrite=overwrite, quiet=quiet,
                             verbose=verbose, variant=variant)


def resume(folder: str | Path, *, plugins: Plugins = None, quiet: bool = False, verbose: bool = False,
           **changes) -> Summary | dict[Path, Summary]:
    """Continue what `train` left in `folder`: an interrupted run (returns its summary), or every unfinished seed
    of a `train(seeds=...)` folder, each in the cohort it was trained in (returns {run folder: summary}).
    `changes` are config settings: epochs=N extends the run(s) (a finished run needs keep_last), and settings that
    change only speed or storage are allowed; any other change is refused, naming it. The regularizer plugins the
    runs used must be here (loaded from what they recorded when possible), in the version they were trained with."""
    load_all(plugins)
    require(folder, "resume")
    changes = check_keys(changes, "the changes")
    mlflow_log.check_available(changes.get("mlflow", ""))
    if "data" in changes:
        changes["data"] = absolute_data(changes["data"])
    if rundir.classify(folder) == "study":  # the seeds of train(seeds=...)
        return study.resume_folder(folder, changes, quiet=quiet, verbose=verbose)
    return run.train(None, folder, resume=True, changes=changes, quiet=quiet, verbose=verbose)


def compare(*, seeds: Seeds = 1, out: str | Path = "runs/compare", first_seed: int = 42, pack: int | str = "auto",
            margin: float | None = None, jobs: int = 1, executor: str = "local", address: str | None = None,
            gpus_per_run: float | None = None, retries: int | None = None, plugins: Plugins = None,
            quiet: bool = False, verbose: bool = False, **settings) -> Path:
    """The notebook's experiment (basic vs regularized) over `seeds` (N from first_seed, or a list), with its
    report. Keyword settings are config keys (data=..., epochs=..., image_size=...). pack: seeds per packed
    network; margin: the verdicts' equivalence margin in percentage points (default 1); jobs: runs at once in
    worker processes; executor="ray" runs each as a Ray task (on the cluster at `address`, else a local
    instance; `gpus_per_run` GPUs each); retries: how many times a run whose worker or node died is sent again,
    resuming from its last epoch (default 2 on Ray, 0 with jobs). Rerunning reuses finished runs. Returns the
    study folder."""
    checked, chosen = _study_settings(settings, plugins, out), _seed_list(seeds, first_seed)
    how = Executor(executor, jobs, address, gpus_per_run, retries)
    return study.run_study("compare", checked, COMPARE_VARIANTS, chosen, out, how, pack=_pack(pack),
                           margin=_fraction(margin), quiet=quiet, verbose=verbose,
                           report=_reporter("compare", margin, quiet))


def ablate(*, variants: list[str] | str | None = None, seeds: Seeds = 1, out: str | Path = "runs/ablate",
           first_seed: int = 42, pack: int | str = "auto", margin: float | None = None, jobs: int = 1,
           executor: str = "local", address: str | None = None, gpus_per_run: float | None = None,
           retries: int | None = None, plugins: Plugins = None, quiet: bool = False, verbose: bool = False,
           **settings) -> Path:
    """Every regularizer ablated over `seeds`, with its report: `variants` as `reglab ablate --variants` (a list
    or a comma-separated string; None: the notebook's six; a plugin's regularizer is a variant as a built-in one
    is); every other option as compare()."""
    checked, chosen = _study_settings(settings, plugins, out), _seed_list(seeds, first_seed)
    how = Executor(executor, jobs, address, gpus_per_run, retries)
    return study.run_study("ablate", checked, parse_variants(variants), chosen, out, how, pack=_pack(pack),
                           margin=_fraction(margin), quiet=quiet, verbose=verbose,
                           report=_reporter("ablate", margin, quiet))


def sweep(setting: str, values: Sequence[float] | str | None = None, *, grid: str | None = None, seeds: Seeds = 1,
          out: str | Path = "runs/sweep", first_seed: int = 42, pack: int | str = "auto", margin: float | None = None,
          jobs: int = 1, executor: str = "local", address: str | None = None, gpus_per_run: float | None = None,
          retries: int | None = None, plugins: Plugins = None, quiet: bool = False, verbose: bool = False,
          **settings) -> Path:
    """Dose-response: `setting` (a regularizer setting that takes a number, a plugin's included) at each of
    `values` (sweep("dropout", [0, 0.1, 0.25]), or as `reglab sweep` takes it: sweep("dropout=0,0.1,0.25")), crossed
    with `grid` ("smoothing=0,0.1": every combination) when given, on top of the base model, recipe and settings,
    with the same seeds at every dose, and its report (the dose-response curves, the doses indistinguishable from
    the best, the shape). Variants are named by their doses (dropout=0.25). Every other option as compare()."""
    checked, chosen = _study_settings(settings, plugins, out), _seed_list(seeds, first_seed)
    if values is not None:
        setting = f"{setting}=" + (values if isinstance(values, str) else ",".join(str(v) for v in values))
    axes = [sweep_axis(setting)] + ([sweep_axis(grid)] if grid else [])
    fixed = [name for name, _ in axes if name in checked]
    if fixed:
        raise UserError(f"{fixed[0]} is swept; leave out the flag (or --set, or --config key) that fixes it")
    how = Executor(executor, jobs, address, gpus_per_run, retries)
    record = {"sweep": [{"setting": name, "values": doses} for name, doses in axes]}
    return study.run_study("sweep", checked, sweep_variants(axes), chosen, out, how, pack=_pack(pack),
                           margin=_fraction(margin), quiet=quiet, verbose=verbose,
                           report=_reporter("sweep", margin, quiet), record=record)


def list_variants(plugins: Plugins = None) -> list[tuple[str, str]]:
    """(variant, what it changes) for every variant ablate(variants=...) accepts ("[=VALUE]": takes a value)."""
    load_all(plugins)
    return variant_catalogue()


def report(folder: str | Path, *, margin: float | None = None, plugins: Plugins = None,
           quiet: bool = False) -> tuple[Path, Path]:
    """Re-render the report of a study or run folder from its run folders alone; returns (report.md, report.html).
    margin: percentage points (default: the study's, else 1). The regularizer plugins the runs used must be here
    (loaded from what they recorded when possible): otherwise it is refused, saying what to install."""
    load_all(plugins)
    require(folder, "report")
    return render_report(Path(folder), quiet=quiet, margin=_fraction(margin))


def plan(folder: str | Path, *, margin: float | None = None, power: float = 0.8, quiet: bool = False) -> dict:
    """From a pilot study's run folders (a compare or ablate folder), the seeds a new study needs: per comparison of
    its report, the seeds a side to detect the observed difference and to show equivalence within `margin` (percentage
    points; default: the study's, else 1) with probability `power`, each with its range, and the recommended --seeds
    (key "seeds"; None: nothing to plan from, or nothing resolvable on this val set). Prints the table unless quiet;
    writes nothing."""
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 < power < 1:
        raise UserError(f"invalid power {power!r}; give the probability the new study should reach its verdict, "
                        "between 0 and 1, e.g. 0.8")
    return plan_study(Path(folder), margin=_fraction(margin), power=float(power), quiet=quiet)


def load_run(folder: str | Path, device: str = "cpu") -> TrainedRun:
    """A finished run as a usable model: .model .classes .class_names .history .summary .predict(images)."""
    return load_trained_run(folder, device)


def predict(run_dir: str | Path, inputs: list[str | Path] | str | Path, *, out: str | Path = "predictions.csv",
            top_k: int = 3, device: str = "auto", precision: str | None = None, batch_size: int = 256,
            quiet: bool = False) -> dict:
    """Classify image files (and folders, searched recursively) with a finished run into the CSV `out`, one row
    per image with its top_k classes; unreadable images are named and skipped. precision: "fp32" or "bf16"
    (default: the run's own). Returns {rows, skipped}."""
    inputs = [inputs] if isinstance(inputs, (str, Path)) else inputs
    if precision not in (None, "fp32", "bf16"):
        raise UserError(f"invalid precision {precision!r}; choose fp32 or bf16 (default: the run's own)")
    return predict_to_csv(Path(run_dir), [str(i) for i in inputs], out=Path(out), top_k=_positive("top_k", top_k),
                          device=device, precision=precision, batch_size=_positive("batch_size", batch_size),
                          quiet=quiet)


def export(run_dir: str | Path, *, format: str = "onnx", out: str | Path | None = None) -> Path:
    """A finished run's restored model, preprocessing inside, as "onnx" or "torchscript" (default file:
    RUN_DIR/model.onnx or model.pt). Returns the file written."""
    return export_run(Path(run_dir), format, Path(out) if out else None)


def summary(model: str = "regularized", *, num_classes: int = 10, **settings) -> str:
    """A Keras-like summary of a model preset (settings: config keys that shape it, e.g. image_size=64)."""
    cfg = resolve({**settings, "model": model})
    if _positive("num_classes", num_classes) > MAX_CLASSES:
        raise UserError(f"invalid num_classes {num_classes}; at most {MAX_CLASSES:,}")
    with torch.device("meta"):  # shapes and counts without allocating: a model of any allowed size is described
        network = build_model(cfg, num_classes)
    return summary_text(network, cfg.image_size, title=model)


def bench(data: str = "imagenette2-160", *, device: str = "auto", json_path: str | Path | None = None,
          image_size: int = 160, steps: int = 30, epochs: int = 50, skip_experiment: bool = False,
          naive_batches: int = 0, recipe: str = "seed", batch_sizes: Sequence[int] | int = (16, 512),
          precisions: Sequence[str] | str = ("fp32", "bf16"), cohorts: Sequence[int] | int = (5,),
          profile: str | Path | None = None, quiet: bool = False) -> dict:
    """Measure decode and cache; training throughput of both models at each of `batch_sizes` in each of
    `precisions` (a list, or "fp32,bf16"); the cohort curve (for each size in `cohorts`, a cohort at batch 16
    against one run); the epoch-end writes; with `profile` (a file), a torch.profiler table of one batch-16 step;
    the naive pipeline; and unless skip_experiment, the whole experiment. Prints a table, writes JSON to
    json_path as each section is measured, and returns the result."""
    for name, value in (("json_path", json_path), ("profile", profile)):
        if value is not None:
            atomic.check_can_create(Path(value).parent, f"the folder of {name}")
    precisions = precisions.split(",") if isinstance(precisions, str) else list(precisions)
    if not precisions or any(p not in benchmark.PRECISIONS for p in precisions):
        raise UserError(f"invalid precisions {precisions!r}; give fp32, bf16 or both")
    return benchmark.main(data=data, device=device, json_path=json_path,
                          image_size=_positive("image_size", image_size), steps=_positive("steps", steps),
                          epochs=_positive("epochs", epochs), skip_experiment=skip_experiment,
                          naive_batches=naive_batches, recipe=recipe,
                          batch_sizes=_positives("batch_sizes", batch_sizes),
                          precisions=list(dict.fromkeys(precisions)), cohorts=_positives("cohorts", cohorts),
                          profile_path=profile, quiet=quiet)


# ------------------------------------------------------------------------------------------ checks


def _study_settings(settings: dict, plugins: Plugins, out: str | Path) -> dict:
    """A study's config settings, checked now (a bad value is one line before any work), data made absolute, with
    the plugins loaded first; a study folder's runs must have the plugins they used, in the same version."""
    load_all(plugins)
    if rundir.classify(out) == "study":
        require(out, "resume")
    unknown = sorted(set(settings) - set(valid_keys()))
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(valid_keys())}")
    if "seed" in settings:
        raise UserError("a study trains every seed in seeds=: give seeds=N with first_seed=S, or seeds=[...], "
                        "not seed=")
    cfg = resolve(settings)
    mlflow_log.check_available(cfg.mlflow)
    return {k: cfg.value(k) for k in settings}


def _seed_list(seeds: Seeds, first: int) -> list[int]:
    """seeds=N: N seeds from `first`; a list: exactly those."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise UserError(f"invalid seeds {seeds!r}; give a positive number of seeds, or a list of seeds")
        if first + seeds - 1 > MAX_SEED:
            raise UserError(f"--seed {first} --seeds {seeds} goes past the largest seed {MAX_SEED}; choose a "
                            "smaller --seed")
        return list(range(first, first + seeds))
    chosen = list(seeds) if isinstance(seeds, (list, tuple)) else []
    if not chosen or len(set(chosen)) != len(chosen) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in chosen):
        raise UserError(f"invalid seeds {seeds!r}; give a number of seeds, or a list of distinct seeds from 0 to "
                        f"{MAX_SEED}")
    return chosen


def _pack(pack: int | str) -> int | str:
    if pack in ("auto", "off") or (isinstance(pack, int) and not isinstance(pack, bool) and pack >= 1):
        return pack
    raise UserError(f"invalid pack {pack!r}; give a number of seeds per packed network, auto or off")


def _variant(name: str | None) -> str | None:
    """A variant's name: printable text that can name a folder (train(seeds=N) puts it in the path)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 100 \
            or any(c in name for c in "/\\") or name in (".", ".."):
        raise UserError(f"invalid variant {name!r}; give a short name without slashes, e.g. dropout=0.1")
    return name


def _fraction(margin: float | None) -> float | None:
    """A margin in percentage points as the fraction the statistics use."""
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise UserError(f"invalid margin {margin!r}; give the equivalence margin in percentage points, e.g. 1")
    return margin / 100


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"invalid {name} {value!r}; give a positive integer")
    return value


def _positives(name: str, values: Sequence[int] | int) -> list[int]:
    """One positive integer, or a non-empty list of them, as a list without repeats in the order given."""
    values = [values] if isinstance(values, int) else list(values) if isinstance(values, (list, tuple)) else []
    if not values:
        raise UserError(f"invalid {name}: give a list of positive integers")
    return list(dict.fromkeys(_positive(name, v) for v in values))


def _reporter(kind: str, margin: float | None, quiet: bool):
    """What a study calls to render its report once its runs are done (it holds the study's lock)."""
    def render(folder: Path) -> None:
        md, _ = render_report(folder, kind, quiet=quiet, locked=True, margin=_fraction(margin))
        mlflow_log.attach_report(folder, md)  # to the runs that logged to MLflow (none: nothing is imported)

    return render
