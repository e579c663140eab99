"""The `reglab` command: train, compare, ablate, sweep, report, plan, summary, predict, export, bench.

The CLI only parses: it turns flags into a config (or explicit settings) and plain arguments, calls the Python
API (api.py: every command's work is a function there, with every option the flags have) and prints results.
Flags use the names timm users know (--smoothing --mixup --cutmix --reprob --weight-decay --model-ema);
prefixes of flags are never guessed. The regularizers' flags are generated from their table (regularizers.py),
their help showing the defaults each model preset and recipe gives; `--set NAME=VALUE` sets any config key.
Regularizer plugins (`--plugin MODULE`, and installed ones) are loaded before the parser is built, so their
settings are flags too. Every flag left unset falls back to --config FILE.yaml, then the recipe, then the model
preset. A UserError becomes one line on stderr and exit code 2; a signal, one line and exit code 128 + its number.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import math
import re
import sys
from pathlib import Path

from . import __version__, api
from .config import (BAD_IMAGE_POLICIES, MAX_SEED, MODEL_PRESETS, OPTIMIZERS, PRECISIONS, SCHEDULES, Config,
                     load_config_file, parse_value, recipe_names, resolve)
from .errors import UserError
from .executors import EXECUTORS
from .text import say, visible
from .variants import default_ablation, variant_names

EXAMPLES = """examples:
  reglab compare --data imagenette2-160 --seeds 5 --out runs/compare     the notebook's experiment, 5 seeds
  reglab ablate --seeds 5 --variants full,no-dropout,mixup=0.4 --out runs/ablate
  reglab sweep dropout=0,0.1,0.25,0.5 --seeds 3 --out runs/sweep        dropout's dose-response, 3 seeds a dose
  reglab predict runs/compare/regularized/seed-42 photos/ --out predictions.csv

'reglab COMMAND --help' lists a command's flags with their defaults."""

# flag dest -> Config field, for the options of the command line that are not a regularizer's (those: their table)
CONFIG_FLAGS = {
    "model": "model", "recipe": "recipe", "data": "data", "image_size": "image_size", "epochs": "epochs",
    "batch_size": "batch_size", "seed": "seed", "device": "device", "lr": "lr",
    "optimizer": "optimizer", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
    "patience": "early_stopping_patience", "on_bad_image": "on_bad_image",
    "precision": "precision", "compile": "compile", "eval_batch_size": "eval_batch_size",
    "channels_last": "channels_last", "selection_split": "selection_split", "keep_last": "keep_last",
    "mlflow": "mlflow",
    "bn_momentum": "bn_momentum", "precise_bn": "precise_bn",
}


def config_flags() -> dict[str, str]:
    """flag dest -> config key, for every option a user may set on the command line: CONFIG_FLAGS and every
    registered regularizer's settings (a plugin's included)."""
    return {**CONFIG_FLAGS, **{s.name: s.name for r in api.list_regularizers() for s in r.settings}}


# ------------------------------------------------------------------------------------------ value types


def _int_at_least(lowest: int, words: str):
    """An argparse type: an integer >= lowest, else argparse's one-line error naming `words`."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lowest - 1
        if v < lowest:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_count = _int_at_least(0, "a number (0 or more)")


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be from 0 to {MAX_SEED}, got {text!r}")
    return v


def _seeds(text: str) -> int | list[int]:
    """'5' -> 5 seeds from --seed; '1,2,7' -> exactly those."""
    if "," not in text:
        return _positive_int(text)
    seeds = [_seed(part.strip()) for part in text.split(",") if part.strip()]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds repeat in {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def _pack(text: str) -> int | str:
    if text in ("auto", "off"):
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds, auto or off, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of seeds, auto or off, got {text!r}")
    return v


def _gpus(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GPUs such as 0.25, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of GPUs such as 0.25, got {text!r}")
    return v


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return v


# ------------------------------------------------------------------------------------------ flag groups


@functools.lru_cache(maxsize=1)
def _preset_configs() -> dict[tuple[str, str], Config]:
    """The config of every (model preset, recipe): where a setting's default comes from."""
    return {(model, recipe): Config(model=model, recipe=recipe) for recipe in recipe_names() for model in MODEL_PRESETS}


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def defaults_text(name: str) -> str:
    """A setting's defaults as the config gives them, per model preset and recipe where they differ:
    'default 0', 'regularized: 0.25; basic, none: 0', 'default 0; recipe fast: 0.1'."""
    configs = _preset_configs()

    def by_model(recipe: str) -> str:
        models: dict[str, list[str]] = {}
        for model in MODEL_PRESETS:
            models.setdefault(_shown(configs[(model, recipe)].value(name)), []).append(model)
        if len(models) == 1:
            return f"default {next(iter(models))}"
        return "; ".join(f"{', '.join(ms)}: {v}" for v, ms in models.items())

    base = by_model("seed")
    others = [f"recipe {r}: {by_model(r).removeprefix('default ')}" for r in recipe_names()
              if r != "seed" and by_model(r) != base]
    return "; ".join([base, *others])


def add_regularizer_flag(g, s) -> None:
    """One flag for a regularizer setting (regularizers.Setting), its help ending with its defaults."""
    help_text = f"{s.help} ({defaults_text(s.name)})"
    try:
        if s.type is bool:
            g.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif s.choices is not None:
            g.add_argument(s.flag, dest=s.name, choices=s.choices, help=help_text)
        else:
            g.add_argument(s.flag, dest=s.name, type=_number if s.type is float else _integer, metavar=s.metavar,
                           help=help_text)
    except argparse.ArgumentError:
        raise UserError(f"the regularizer setting {s.name!r} clashes with the flag {s.flag} of reglab itself; "
                        f"rename that setting") from None


def _regularizer_settings(which) -> list:
    """The settings of the registered regularizers that `which(regularizer)` picks, in table order."""
    return [s for r in api.list_regularizers() if which(r) for s in r.settings]


def add_model_flags(p: argparse.ArgumentParser, with_config: bool = True) -> None:
    """What shapes the network (shared by train, compare, ablate and summary): the model-stage regularizers."""
    g = p.add_argument_group("model (unset: the --model preset's value)")
    if with_config:
        g.add_argument("--config", metavar="FILE.yaml",
                       help="YAML file of config keys, e.g. a run folder's config.yaml; flags override it")
    g.add_argument("--image-size", type=_positive_int, metavar="PX", help="input size in pixels (default 160)")
    for s in _regularizer_settings(lambda r: not r.plugin and r.stage == "model"):
        add_regularizer_flag(g, s)


def add_training_flags(p: argparse.ArgumentParser, with_model: bool, seed_help: str) -> None:
    g = p.add_argument_group("data and run")
    if with_model:
        g.add_argument("--model", choices=list(MODEL_PRESETS), help="model preset (default regularized)")
    g.add_argument("--recipe", help="training recipe: seed (the notebook's, default) or fast")
    g.add_argument("--data", help="ImageFolder directory (train/<class>/*, val/<class>/*) or a dataset name "
                   "(default imagenette2-160)")
    g.add_argument("--epochs", type=_positive_int, help="maximum epochs (default 50)")
    g.add_argument("--batch-size", type=_positive_int, help="training batch size (default 16)")
    g.add_argument("--seed", type=_seed, help=seed_help)
    g.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--on-bad-image", choices=BAD_IMAGE_POLICIES,
                   help="an undecodable image: error (default) or skip it and list it")
    g.add_argument("--selection-split", type=_rate, metavar="F", help="hold out this stratified fraction of the "
                   "training images to choose the epoch (early stopping, LR, checkpoint); val/ is then only the "
                   "test set (default 0: val/ chooses and judges, as the notebook does)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam (the notebook's)")
    o.add_argument("--lr", type=_rate, help="learning rate (default 0.001)")
    o.add_argument("--schedule", choices=SCHEDULES, help="default plateau (halve after 3 epochs without "
                   "improvement)")
    o.add_argument("--warmup-epochs", type=_rate, help="linear warm-up of onecycle/cosine (default 0)")
    o.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 7; 0 disables)")
    b = p.add_argument_group("BatchNorm statistics (a model without BatchNorm ignores them)")
    b.add_argument("--bn-momentum", type=_number, metavar="M", help="running-statistics update rate, PyTorch's "
                   "convention: Keras's momentum 0.99 is 0.01 here (default 0.01, the notebook's; fast recipe 0.1). "
                   "With few optimizer steps 0.01 leaves (1-M)^steps of the initial statistics: try 0.1")
    b.add_argument("--precise-bn", action=argparse.BooleanOptionalAction, default=None, help="before the final "
                   "evaluation, re-estimate the restored weights' BatchNorm statistics on the clean training sample "
                   "(no augmentation; dropout off; in batches of --batch-size); the epoch-end evaluations that choose "
                   "keep training's statistics (default off, the notebook's way)")
    r = p.add_argument_group("regularizers (default: the --model preset's; beyond-notebook ones off)")
    for s in _regularizer_settings(lambda r: not r.plugin and r.stage != "model"):
        add_regularizer_flag(r, s)
    r.add_argument("--set", action="append", metavar="NAME=VALUE", help="set any config key, a plugin's setting "
                   "included, e.g. --set mixup=0.4 or --set widths=[16,32,64] (repeatable)")
    add_plugin_flag(r)
    loaded = _regularizer_settings(lambda r: r.plugin)
    if loaded:
        u = p.add_argument_group("regularizer plugins (loaded; default: off)")
        for s in loaded:
            add_regularizer_flag(u, s)
    s = p.add_argument_group("speed and storage (never change what is computed beyond float rounding)")
    s.add_argument("--precision", choices=PRECISIONS, help="auto (default: bf16 where the hardware runs it "
                   "natively, else fp32), fp32 or bf16")
    s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default off)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory layout (default on)")
    s.add_argument("--eval-batch-size", type=_positive_int, help="evaluation batch size (default 500)")
    s.add_argument("--keep-last", action="store_true", default=None, help="keep last.ckpt (weights and optimizer "
                   "state) after the run finishes, so it can be extended with --resume --epochs N")
    s.add_argument("--mlflow", nargs="?", const="default", metavar="URI", help="also log each run to MLflow "
                   "(pip install 'reglab[mlflow]'): alone, the SQLite store mlflow.db beside the study (or run) "
                   "folder; else this tracking URI (default off)")


def add_plugin_flag(p) -> None:
    p.add_argument("--plugin", dest="plugins", action="append", metavar="MODULE", help="import a regularizer plugin "
                   "first: a module name or a .py file (repeatable; installed plugins load by themselves; default "
                   "none)")


def add_pack_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", type=_pack, default="auto", metavar="K|auto|off",
                   help="train K seeds of a variant as one packed network (a cohort); auto (default): on CUDA as "
                   "many as memory allows, elsewhere off")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    g.add_argument("-v", "--verbose", action="store_true", help="also print Keras's per-epoch checkpoint messages")


# ------------------------------------------------------------------------------------------ args -> API


def explicit_settings(args) -> dict:
    """The config values the user set: --config FILE.yaml, then flags and --set NAME=VALUE on top (None: not set)."""
    settings = load_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {field: getattr(args, flag) for flag, field in config_flags().items()
             if getattr(args, flag, None) is not None}
    given = set_values(getattr(args, "set", None) or [])
    both = sorted(set(flags) & set(given))
    if both:
        raise UserError(f"{both[0]} is set twice, by --set {both[0]}=... and by its flag; give one")
    return {**settings, **flags, **given}


def set_values(items: list[str]) -> dict:
    """--set NAME=VALUE, repeatable: {name: value read as the key's type}."""
    out = {}
    for item in items:
        name, has_value, text = item.partition("=")
        name = name.strip()
        if not has_value or not name:
            raise UserError(f"--set takes NAME=VALUE, e.g. --set mixup=0.4; got {item!r}")
        if name in out:
            raise UserError(f"--set {name}=... is given twice; give it once")
        out[name] = parse_value(name, text.strip())
    return out


def check_seed_flags(args) -> None:
    if isinstance(args.seeds, list) and args.seed is not None:
        raise UserError("--seed is the first of N seeds (--seeds N); with a list (--seeds 1,2,7) leave it out")


def cmd_train(args) -> int:
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise UserError("--resume RUN_DIR continues that folder; leave out --out (or give the same folder)")
        if args.overwrite:
            raise UserError("--resume and --overwrite contradict each other; choose one")
        results = api.resume(args.resume, plugins=args.plugins, quiet=args.quiet, verbose=args.verbose,
                             **explicit_settings(args))
    else:
        if not args.out:
            raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR to continue one)")
        cfg = resolve(explicit_settings(args))
        check_seed_flags(args)
        results = api.train(cfg, args.out, seeds=args.seeds, pack=args.pack, overwrite=args.overwrite,
                            variant=args.variant, plugins=args.plugins, quiet=args.quiet, verbose=args.verbose)
    if not isinstance(results, dict):  # one run folder
        results = {Path(args.resume or args.out): results}
    code = 0
    for out, summary in results.items():
        if not summary.finished:
            kept = "; best weights kept in " + str(out) if (Path(out) / "best.safetensors").exists() else ""
            say(f"reglab: run failed: {summary.failure}{kept}")
            code = 1
        elif not args.quiet:
            print(f"{summary.variant} seed {summary.seed}: restored best val_accuracy "
                  f"{summary.restored_val_accuracy:.4f} (epoch {summary.best_epoch} of {summary.epochs_run}), "
                  f"{summary.wall_seconds:.1f}s")
    return code


def study_options(args) -> dict:
    """The options compare and ablate share, and their config settings (--seed is the first seed, not a setting)."""
    check_seed_flags(args)
    settings = explicit_settings(args)
    settings.pop("seed", None)
    return dict(seeds=args.seeds, first_seed=42 if args.seed is None else args.seed, pack=args.pack,
                margin=args.margin, jobs=args.jobs, executor=args.executor, address=args.address,
                gpus_per_run=args.gpus_per_run, retries=args.retries, plugins=args.plugins, quiet=args.quiet,
                verbose=args.verbose, **settings)


def cmd_compare(args) -> int:
    api.compare(out=args.out or "runs/compare", **study_options(args))
    return 0


def cmd_ablate(args) -> int:
    if args.list_variants:
        catalogue = api.list_variants()
        width = max(len(n) for n, _ in catalogue)
        for name, about in catalogue:
            print(f"{name:<{width}}  {about}")
        return 0
    api.ablate(variants=args.variants, out=args.out or "runs/ablate", **study_options(args))
    return 0


def cmd_sweep(args) -> int:
    api.sweep(args.setting, grid=args.grid, out=args.out or "runs/sweep", **study_options(args))
    return 0


def cmd_report(args) -> int:
    api.report(args.dir, margin=args.margin, plugins=args.plugins, quiet=args.quiet)
    return 0


def cmd_plan(args) -> int:
    api.plan(args.dir, margin=args.margin, power=args.power, quiet=args.quiet)
    return 0


def cmd_summary(args) -> int:
    # MODEL names the model, whatever a --config file says
    settings = {k: v for k, v in explicit_settings(args).items() if k != "model"}
    text = api.summary(args.name, num_classes=args.num_classes, **settings)
    if not args.quiet:
        print(text)
    return 0


def cmd_predict(args) -> int:
    api.predict(args.run_dir, args.inputs, out=args.out, top_k=args.top_k, device=args.device,
                precision=args.precision, batch_size=args.batch_size, quiet=args.quiet)
    return 0


def cmd_export(args) -> int:
    path = api.export(args.run_dir, format=args.format, out=args.out)
    if not args.quiet:
        print(f"exported {args.run_dir} as {args.format}: {path}")
    return 0


def _positive_ints(text: str) -> list[int]:
    """'16,128,512' -> [16, 128, 512] (bench's lists)."""
    values = [_positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    """'fp32,bf16' -> ['fp32', 'bf16'] (the API says which names it accepts)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_bench(args) -> int:
    api.bench(args.data, device=args.device, json_path=args.json, image_size=args.image_size, steps=args.steps,
              epochs=args.epochs, skip_experiment=args.skip_experiment, naive_batches=args.naive_batches,
              recipe=args.recipe, batch_sizes=args.batch_sizes, precisions=args.precisions, cohorts=args.cohorts,
              profile=args.profile, quiet=args.quiet)
    return 0


# ------------------------------------------------------------------------------------------ the parser


class _Parser(argparse.ArgumentParser):
    """argparse without prefix guessing, where a bad flag is one line (what, the nearest real flag, where to
    look) and exit code 2, like every other user error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        hint = self._suggestion(message)
        prog = self.prog if self.prog != "reglab" else "reglab"
        where = prog.removeprefix("reglab").strip()
        prefix = f"reglab: {where}: " if where else "reglab: "
        self.exit(2, visible(f"{prefix}{message}{hint}; see '{prog} --help'") + "\n")

    def _suggestion(self, message: str) -> str:
        m = re.search(r"unrecognized arguments: (\S+)", message) or re.search(r"invalid choice: '([^']+)'", message)
        if not m:
            return ""
        word = m.group(1).split("=")[0]
        instead = WHERE_INSTEAD.get((self.prog.removeprefix("reglab").strip(), word))
        if instead:
            return f" ({instead})"
        options = [s for s in self._option_string_actions if s.startswith("--")]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                options += list(action.choices)
        close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""


# Flags of another command that a user reaches for here: the nearest spelling would mislead (`--model-ema`).
WHERE_INSTEAD = {
    ("ablate", "--model"): "ablate chooses its models with --variants; see reglab ablate --list-variants",
    ("compare", "--model"): "compare always trains basic and regularized; reglab train --model trains one",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="reglab", description=__doc__.splitlines()[0].removesuffix(".") + ".", epilog=EXAMPLES)
    p.add_argument("--version", action="version", version=f"reglab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train one model into a run folder")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder to create (absent, empty or a run to --overwrite)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (or extend one with --epochs N)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out (only once the new one has "
                   "its data and model)")
    t.add_argument("--variant", metavar="NAME", help="what the run is, recorded in it, e.g. dropout=0.1: a report "
                   "shows one variant per name and configuration (default: the --model preset)")
    t.add_argument("--seeds", type=_seeds, default=1, metavar="N|LIST", help="N seeds from --seed (default 1: one "
                   "run in --out), or exactly these: 1,2,7; several go to OUT/<model>/seed-<seed>/")
    add_pack_flag(t)
    add_training_flags(t, with_model=True, seed_help="random seed (default 42)")
    add_model_flags(t)
    add_output_flags(t)
    t.set_defaults(func=cmd_train)

    study = _Parser(add_help=False)
    study.add_argument("--out", metavar="DIR", help="study folder (default runs/<command>)")
    study.add_argument("--seeds", type=_seeds, default=1, metavar="N|LIST",
                       help="N seeds from --seed (default 1), or exactly these: 1,2,7")
    study.add_argument("--jobs", type=_positive_int, default=1, help="runs at once with the local executor "
                       "(default 1)")
    study.add_argument("--executor", choices=EXECUTORS, default="local", help="default local")
    study.add_argument("--address", help="Ray cluster address, or 'auto' for the one `ray start` began here "
                       "(default: RAY_ADDRESS if set, else a new local instance)")
    study.add_argument("--gpus-per-run", type=_gpus, default=None, help="Ray: GPUs per run, e.g. 0.25 for four "
                       "runs a GPU (default 0.25)")
    study.add_argument("--retries", type=_count, default=None, metavar="N", help="send a run whose worker or node "
                       "died again, up to N times, resuming after its last epoch (default 2 with --executor ray, "
                       "0 with --jobs)")
    study.add_argument("--margin", type=_rate, default=None, metavar="PP", help="equivalence margin of the verdicts, "
                       "in percentage points (default 1)")
    add_pack_flag(study)

    c = sub.add_parser("compare", parents=[study],
                       help="the notebook's experiment: basic vs regularized, and its report")
    add_training_flags(c, with_model=False, seed_help="the first seed (default 42)")
    add_model_flags(c)
    add_output_flags(c)
    c.set_defaults(func=cmd_compare)

    a = sub.add_parser("ablate", parents=[study], help="every regularizer ablated over seeds, and its report",
                       epilog="variants (--list-variants says what each changes): " + ", ".join(variant_names()))
    a.add_argument("--variants", help=f"comma-separated variants (default {','.join(default_ablation())}); added "
                   "regularizers take name=value, e.g. mixup=0.4, and a regularizer's setting SETTING=VALUE, e.g. "
                   "augment=rrc")
    a.add_argument("--list-variants", action="store_true", help="list every variant with what it changes, and exit")
    add_training_flags(a, with_model=False, seed_help="the first seed (default 42)")
    add_model_flags(a)
    add_output_flags(a)
    a.set_defaults(func=cmd_ablate)

    sw = sub.add_parser("sweep", parents=[study], help="dose-response: one setting over a list of values (or a grid "
                        "of two), the same seeds at each, and its report")
    sw.add_argument("setting", metavar="SETTING=V1,V2,...", help="the setting swept and its doses, e.g. "
                    "dropout=0,0.1,0.25,0.5: any regularizer setting that takes a number, a plugin's included (its "
                    "neutral value, usually 0, is the dose without it)")
    sw.add_argument("--grid", metavar="SETTING=W1,W2,...", help="a second setting crossed with the first: every "
                    "combination of the two (default: none, one setting)")
    add_training_flags(sw, with_model=True, seed_help="the first seed (default 42)")
    add_model_flags(sw)
    add_output_flags(sw)
    sw.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="re-render a study's (or one run's) report from its run folders alone")
    r.add_argument("dir", metavar="DIR", help="a compare or ablate --out folder, or one run folder")
    r.add_argument("--margin", type=_rate, default=None, metavar="PP", help="equivalence margin of the verdicts, in "
                   "percentage points (default: the study's, else 1)")
    add_plugin_flag(r)
    add_output_flags(r)
    r.set_defaults(func=cmd_report)

    pl = sub.add_parser("plan", help="the seeds a new study needs, from a pilot study's run folders")
    pl.add_argument("dir", metavar="DIR", help="a compare or ablate --out folder: the pilot study")
    pl.add_argument("--margin", type=_rate, default=None, metavar="PP", help="equivalence margin, in percentage "
                    "points (default: the study's, else 1)")
    pl.add_argument("--power", type=float, default=0.8, help="probability that the new study reaches its verdict "
                    "(default 0.8)")
    add_output_flags(pl)
    pl.set_defaults(func=cmd_plan)

    s = sub.add_parser("summary", help="print a Keras-like model summary")
    s.add_argument("name", choices=list(MODEL_PRESETS), metavar="MODEL", help=f"one of {', '.join(MODEL_PRESETS)}")
    s.add_argument("--num-classes", type=_positive_int, default=10, help="default 10")
    add_model_flags(s)
    add_output_flags(s)
    s.set_defaults(func=cmd_summary)

    pr = sub.add_parser("predict", help="classify images with a trained run's restored best model")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    pr.add_argument("--top-k", type=_positive_int, default=3, help="classes listed per image (default 3)")
    pr.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    pr.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="default: the precision the run "
                    "was evaluated at, so its own val/ gives its accuracy; fp32 gives what the export computes")
    pr.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch (default 256)")
    add_output_flags(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a trained run's model (preprocessing inside) for use without reglab")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    ex.add_argument("--out", metavar="FILE", help="default RUN_DIR/model.onnx or RUN_DIR/model.pt")
    add_output_flags(ex)
    ex.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="measure decode, cache, throughput, the cohort curve and the whole experiment "
                       "against a naive pipeline")
    b.add_argument("--data", default="imagenette2-160", help="default imagenette2-160")
    b.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    b.add_argument("--image-size", type=_positive_int, default=160, help="default 160")
    b.add_argument("--steps", type=_positive_int, default=30, help="timed steps per throughput measurement "
                   "(default 30)")
    b.add_argument("--epochs", type=_positive_int, default=50, help="max epochs of the whole-experiment timing "
                   "(default 50)")
    b.add_argument("--skip-experiment", action="store_true", help="skip the whole-experiment timing")
    b.add_argument("--naive-batches", type=int, default=0, help="batches of the naive pipeline to time "
                   "(default 0: one epoch)")
    b.add_argument("--recipe", default="seed", help="default seed")
    b.add_argument("--batch-sizes", type=_positive_ints, default=[16, 512], metavar="B[,B...]",
                   help="training batch sizes timed for each model (default 16,512)")
    b.add_argument("--precisions", type=_names, default=["fp32", "bf16"], metavar="P[,P...]",
                   help="precisions timed at each batch size: fp32, bf16 or both (default fp32,bf16)")
    b.add_argument("--cohorts", "--cohort", type=_positive_ints, default=[5], metavar="K[,K...]",
                   help="cohort sizes timed at batch 16 for each model against one run, e.g. 1,2,5,10,20 (default 5)")
    b.add_argument("--profile", metavar="FILE", help="also write a torch.profiler table of one batch-16 step of "
                   "regularized: the top kernels by device time and the CPU time spent launching them")
    add_output_flags(b)
    b.set_defaults(func=cmd_bench)
    p.set_defaults(subcommands=sub.choices)
    return p


def main(argv: list[str] | None = None) -> int:
    from . import provenance, signals

    argv = sys.argv[1:] if argv is None else list(argv)
    provenance.invoked_as(argv)
    try:  # the plugins first: their settings are flags of the parser
        api.load_plugins(plugin_specs(argv))
        parser = build_parser()
    except UserError as e:
        say(f"reglab: {e}")
        return e.exit_code
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.error(f"no command given{' (' + ' '.join(extra) + ')' if extra else ''}")
        if extra:  # said by the subcommand's parser, which knows its own flags and help
            args.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, --version, or a bad flag (already printed as one line)
        return e.code if isinstance(e.code, int) else 2
    try:
        with signals.handled():
            code = args.func(args)
            signals.honour()  # a signal deferred to the end, or swallowed on the way: the command did not finish
            return code
    except UserError as e:
        say(f"reglab: {e}")
        return e.exit_code
    except signals.Stopped as e:
        say(f"reglab: {e}; nothing finished was lost: rerun the same command to continue")
        return e.exit_code
    except KeyboardInterrupt:
        say("reglab: interrupted")
        return 130


def plugin_specs(argv: list[str]) -> list[str]:
    """The --plugin values on a command line, read before it is parsed."""
    return [argv[i + 1] if a == "--plugin" else a.split("=", 1)[1] for i, a in enumerate(argv)
            if (a == "--plugin" and i + 1 < len(argv)) or a.startswith("--plugin=")]


if __name__ == "__main__":
    sys.exit(main())
