"""The `reglab` command: train, compare, ablate, report, summary, bench.

Flags use the names timm users know (--smoothing --mixup --cutmix --reprob --weight-decay --model-ema).
Every flag left unset falls back to --config FILE.yaml, then the recipe, then the model preset.
A UserError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import AUGMENTS, DEVICES, MODEL_PRESETS, OPTIMIZERS, PRECISIONS, SCHEDULES, load_config_file, resolve
from .errors import UserError

# flag -> Config field, for every option a user may set on the command line
CONFIG_FLAGS = {
    "model": "model", "recipe": "recipe", "data": "data", "image_size": "image_size", "epochs": "epochs",
    "batch_size": "batch_size", "seed": "seed", "device": "device", "augment": "augment", "lr": "lr",
    "optimizer": "optimizer", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
    "patience": "early_stopping_patience", "weight_decay": "weight_decay", "smoothing": "smoothing",
    "mixup": "mixup", "cutmix": "cutmix", "reprob": "reprob", "model_ema": "model_ema",
    "batchnorm": "batchnorm", "dropout": "dropout", "dense_dropout": "dense_dropout",
    "spatial_dropout": "spatial_dropout", "drop_path": "drop_path", "on_bad_image": "on_bad_image",
    "precision": "precision", "compile": "compile", "eval_batch_size": "eval_batch_size",
    "channels_last": "channels_last",
}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return v


def add_config_flags(p: argparse.ArgumentParser, with_model: bool = True, with_seed: bool = True):
    g = p.add_argument_group("run configuration (unset flags come from --config, the recipe, the model preset)")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys (see config.yaml in any run folder)")
    if with_model:
        g.add_argument("--model", choices=list(MODEL_PRESETS), help="model preset (default regularized)")
    g.add_argument("--recipe", help="training recipe: seed (the notebook's, default) or fast")
    g.add_argument("--data", help="ImageFolder directory or dataset name (default imagenette2-160)")
    g.add_argument("--image-size", type=_positive_int, help="input size in pixels (default 160)")
    g.add_argument("--epochs", type=_positive_int, help="maximum epochs (default 50)")
    g.add_argument("--batch-size", type=_positive_int, help="training batch size (default 16)")
    if with_seed:
        g.add_argument("--seed", type=int, help="random seed (default 42)")
    g.add_argument("--device", choices=DEVICES, help="auto (default), cpu or cuda")
    g.add_argument("--on-bad-image", choices=["error", "skip"], help="undecodable images: error (default) or skip")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS)
    o.add_argument("--lr", type=_rate)
    o.add_argument("--schedule", choices=SCHEDULES)
    o.add_argument("--warmup-epochs", type=_rate)
    o.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 disables)")
    r = p.add_argument_group("regularizers")
    r.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None)
    r.add_argument("--dropout", type=_rate, help="dropout after each conv block (notebook: 0.25)")
    r.add_argument("--dense-dropout", type=_rate, help="dropout after the dense layer (notebook: 0.5)")
    r.add_argument("--spatial-dropout", action=argparse.BooleanOptionalAction, default=None,
                   help="conv-block dropout drops whole channels")
    r.add_argument("--drop-path", type=_rate, help="stochastic depth rate for each block's extra convs")
    r.add_argument("--augment", choices=AUGMENTS, help="seed (the notebook's), none, flip, rrc")
    r.add_argument("--weight-decay", type=_rate, help="decoupled weight decay (AdamW)")
    r.add_argument("--smoothing", type=_rate, help="label smoothing")
    r.add_argument("--mixup", type=_rate, metavar="ALPHA", help="mixup Beta(alpha, alpha)")
    r.add_argument("--cutmix", type=_rate, metavar="ALPHA", help="cutmix Beta(alpha, alpha)")
    r.add_argument("--reprob", type=_rate, help="random erasing probability")
    r.add_argument("--model-ema", type=_rate, metavar="DECAY", help="evaluate an EMA of the weights")
    s = p.add_argument_group("speed")
    s.add_argument("--precision", choices=PRECISIONS)
    s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--eval-batch-size", type=_positive_int)


def config_from_args(args, **overrides):
    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {field: getattr(args, flag, None) for flag, field in CONFIG_FLAGS.items()}
    flags.update(overrides)
    return resolve(file_values, flags)


def cmd_train(args) -> int:
    from .train import train

    if args.resume:
        summary = train(None, args.resume, resume=True, quiet=args.quiet)
        out = args.resume
    else:
        if not args.out:
            raise UserError("reglab train needs --out RUN_DIR (or --resume RUN_DIR)")
        cfg = config_from_args(args)
        summary = train(cfg, args.out, overwrite=args.overwrite, quiet=args.quiet)
        out = args.out
    if summary["status"] != "finished":
        kept = "; best weights kept in " + str(out) if (Path(out) / "best.safetensors").exists() else ""
        print(f"reglab: run failed: {summary.get('failure')}{kept}", file=sys.stderr)
        return 1
    print(
        f"{summary['variant']}: restored best val_accuracy {summary['restored_val_accuracy']:.4f} "
        f"(epoch {summary['best_epoch']} of {summary['epochs_run']}), {summary['wall_seconds']:.1f}s; run folder {out}"
    )
    return 0


def cmd_summary(args) -> int:
    from .models import build_model, summary_text

    cfg = config_from_args(args, model=args.name)
    print(summary_text(build_model(cfg, args.num_classes), cfg.image_size, title=args.name))
    return 0


def cmd_compare(args) -> int:
    from .study import compare

    return compare(args)


def cmd_ablate(args) -> int:
    from .study import ablate

    return ablate(args)


def cmd_report(args) -> int:
    from .study import render_report

    return render_report(Path(args.dir))


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (what, what to do) and exit code 2, like every other user error."""

    def error(self, message):
        self.exit(2, f"reglab: {self.prog.removeprefix('reglab ').strip()}: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="reglab", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"reglab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one model into a run folder")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder to create")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.ckpt")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("summary", help="print a Keras-like model summary")
    s.add_argument("name", choices=list(MODEL_PRESETS), metavar="MODEL", help=f"one of {', '.join(MODEL_PRESETS)}")
    s.add_argument("--num-classes", type=_positive_int, default=10)
    add_config_flags(s, with_model=False)
    s.set_defaults(func=cmd_summary)

    study_common = _Parser(add_help=False)
    study_common.add_argument("--out", metavar="DIR", help="study folder (default runs/<command>)")
    study_common.add_argument("--seeds", type=_positive_int, default=1, help="seeds per model (42, 43, ...)")
    study_common.add_argument("--jobs", type=_positive_int, default=1, help="runs at once (local executor)")
    study_common.add_argument("--executor", choices=["local", "ray"], default="local")
    study_common.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    study_common.add_argument("--gpus-per-run", type=float, default=None, help="Ray: fraction of a GPU per run")
    study_common.add_argument("--quiet", action="store_true")

    c = sub.add_parser("compare", parents=[study_common], help="the notebook's experiment: basic vs regularized, and its report")
    add_config_flags(c, with_model=False, with_seed=False)
    c.set_defaults(func=cmd_compare, command="compare")

    a = sub.add_parser("ablate", parents=[study_common], help="every regularizer ablated over seeds, and its report")
    a.add_argument("--variants", help="comma-separated variants (default: full,no-augment,no-batchnorm,no-dropout,none,basic)")
    add_config_flags(a, with_model=False, with_seed=False)
    a.set_defaults(func=cmd_ablate, command="ablate")

    r = sub.add_parser("report", help="re-render a study's report from its run folders alone")
    r.add_argument("dir", metavar="DIR")
    r.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="measure decode, cache, throughput and the whole experiment against a naive pipeline")
    b.add_argument("--data", default="imagenette2-160")
    b.add_argument("--device", choices=DEVICES, default="auto")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    b.add_argument("--image-size", type=_positive_int, default=160)
    b.add_argument("--steps", type=_positive_int, default=30, help="timed steps per throughput measurement")
    b.add_argument("--epochs", type=_positive_int, default=50, help="max epochs of the whole-experiment timing")
    b.add_argument("--skip-experiment", action="store_true", help="skip the whole-experiment timing")
    b.add_argument("--naive-batches", type=int, default=0, help="batches of the naive pipeline to time (0: one epoch)")
    b.add_argument("--recipe", default="seed")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already printed as one line)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except UserError as e:
        print(f"reglab: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("reglab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
