"""The regularizers: one record each, in one table, and the registry that holds them beside the ones users add.

A `Regularizer` is everything reglab knows about one regularizer: the config settings it reads (`Setting`: the
config key, its type, its neutral value (off, and the default), its valid range or choices, the flag's metavar and
help), the stage where it acts, the words reports use for it, how the ablation varies it, cross-field rules
(`check`), and for a user's regularizer (a plugin) its implementation and where it came from. Everything else is
derived from the registry: Config's fields and validation (config.py), the flags (cli.py), `--list-variants` and
the ablation's variants (variants.py), the summary's list of regularizers (`Config.regularizers`) and the
parametrised test (tests/test_regularizers.py). `list_regularizers()` and `get(name)` read it, as timm's
`list_models()` and `list_optimizers()` read theirs.

Stages, in the order a training step meets them (step.py):
  model       the network (models.py builds it from the config)
  input       the input batch: images, and with mixing their targets
  targets     the targets the loss compares with
  loss        the loss
  optimizer   the optimizer's update
  after_step  the weights after each optimizer step

A built-in regularizer is one record in BUILTINS plus its implementation at its stage. A plugin brings its
implementation (`apply`) for one of the three stages users are likely to want, called once per cohort member on
that member's own batch or parameters, and has one setting, its strength:
  input       transform(images, targets, strength, generator) -> (images, targets)
              images (B, 3, H, W) float in [0, 1], targets (B, classes) soft targets, generator: the member's own
              torch.Generator on the device (seeded from the member's seed and the regularizer's name, checkpointed)
  loss        term(logits, targets, strength, params) -> a scalar tensor added to the member's loss
              logits (B, classes), targets (B, classes), params: the member's parameters by name (views that
              carry gradients)
  after_step  hook(params, strength) -> None, changes the member's parameters in place (called without grad)
An inactive regularizer (its setting at the neutral value) is never called. `register_regularizer` adds one, from a
script, a notebook, a module passed to `--plugin` or a package's `reglab.regularizers` entry point (plugins.py).

This module imports no torch, and of reglab only errors.py (config.py imports it; `_check_new` reads config.py's
field names when a plugin registers).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from .errors import UserError

Stage = Literal["model", "input", "targets", "loss", "optimizer", "after_step"]
STAGES: tuple[str, ...] = get_args(Stage)
PLUGIN_STAGES = ("input", "loss", "after_step")  # where a user's regularizer can act
FILE_MODULE_PREFIX = "reglab_plugin_"  # the module name of a plugin loaded from a .py file (plugins.py)
RESERVED_NAMES = ("full", "none", "basic")  # the ablation's own variants
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_INTERVAL = re.compile(r"\s*([\[(])\s*(-inf|[-+.\deE]+)\s*,\s*(inf|[-+.\deE]+)\s*([\])])\s*")


# ------------------------------------------------------------------------------------------ intervals


@functools.lru_cache(maxsize=None)
def _interval(text: str) -> tuple[float, float, bool, bool]:
    """'[0, 1)' -> (0.0, 1.0, low open: False, high open: True)."""
    m = _INTERVAL.fullmatch(text)
    try:
        low, high = float(m.group(2)), float(m.group(3))
    except (AttributeError, ValueError):
        raise TypeError(f"range {text!r} is not an interval such as '[0, 1)' or '[0, inf)'") from None
    return low, high, m.group(1) == "(", m.group(4) == ")"


def _inside(value, low: float, high: float, low_open: bool, high_open: bool) -> bool:
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def _interval_text(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


# ------------------------------------------------------------------------------------------ the records


@dataclass(frozen=True)
class Setting:
    """One config setting a regularizer reads. `neutral` is the value at which it does nothing, and its default
    (a model preset or recipe may set another). `range` is an interval such as "[0, 1)" or "[0, inf)" for a number;
    `choices` the values a text setting takes."""

    name: str  # the config key (cfg.<name>, config.yaml, --set NAME=VALUE); the flag is --name-with-dashes
    type: type  # bool, int, float or str
    neutral: Any
    range: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    help: str = ""

    def __post_init__(self):
        if self.type not in (bool, int, float, str):
            raise TypeError(f"setting {self.name!r}: type must be bool, int, float or str, not {self.type!r}")
        if self.range is not None:
            _interval(self.range)  # a malformed range is an error now, not at the first check

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value) -> str | None:
        """Why `value` is not valid for this setting (the end of a one-line error), or None."""
        if self.choices is not None:
            return None if value in self.choices else f"choose one of {', '.join(self.choices)}"
        if self.type is float and not math.isfinite(value):
            return "it must be a finite number"
        if self.range is not None and not _inside(value, *_interval(self.range)):
            return f"it must be {_interval_text(*_interval(self.range))}"
        return None

    def adds(self, value) -> str | None:
        """Why setting `value` would not turn the regularizer on (invalid, or the neutral value), or None."""
        if self.problem(value) is None and value != self.neutral:
            return None
        if self.range is None:
            return f"it must not be {self.neutral!r}"
        low, high, low_open, high_open = _interval(self.range)
        if low == self.neutral and not low_open:  # the usual case: off at the low end of the range
            return f"its value must be {_interval_text(low, high, True, high_open)}"
        return f"its value must be {_interval_text(low, high, low_open, high_open)} and not {self.neutral:g}"


@dataclass(frozen=True)
class Origin:
    """Where a plugin regularizer came from: its module, the file it was read from, a sha256 of that source, and
    the distribution (the package to install) and its version when an installed package provides it."""

    module: str
    file: str | None = None
    sha256: str | None = None
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Regularizer:
    """One regularizer. `about` says what it does (--list-variants: "full + <about>", or "full without <about>");
    `label` starts its words in reports ("label smoothing" -> "label smoothing 0.1"), or `words(cfg)` writes them.
    The notebook's three (`notebook=True`) are ablated by removal (`no-<name>`: every setting neutral); an added one
    by addition to full (`<name>`: full with `ablation`'s values; `<name>=VALUE` for another strength).
    `check(cfg)` returns why a combination of settings is invalid (or None). A plugin has `apply` (see the module
    docstring) and `origin`."""

    name: str
    settings: tuple[Setting, ...]
    stage: Stage
    about: str
    label: str = ""
    words: Callable[[Any], str | None] | None = None
    ablation: dict = field(default_factory=dict)
    notebook: bool = False
    check: Callable[[Any], str | None] | None = None
    apply: Callable | None = None
    origin: Origin | None = None

    @property
    def plugin(self) -> bool:
        return self.apply is not None

    @property
    def setting(self) -> Setting:
        """Its first (for a plugin: its one) setting: its strength, which `<name>=VALUE` varies."""
        return self.settings[0]

    def strength(self, cfg) -> Any:
        return cfg.value(self.setting.name)

    def active(self, cfg) -> bool:
        """Whether it does anything under `cfg`: a setting away from its neutral value."""
        return any(cfg.value(s.name) != s.neutral for s in self.settings)

    def off(self) -> dict:
        """The settings at which it does nothing."""
        return {s.name: s.neutral for s in self.settings}

    def describe(self, cfg) -> str | None:
        """The words reports use for it under `cfg` (None when it is off)."""
        if self.words is not None:
            return self.words(cfg)
        if not self.active(cfg):
            return None
        value = self.strength(cfg)
        shown = f" {value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            "" if isinstance(value, bool) else f" {value}"
        return f"{self.label or self.name}{shown}"


# ------------------------------------------------------------------------------------------ the built-in table


def _dropout_words(cfg) -> str | None:
    parts = ([f"dropout {cfg.dropout:g} (conv blocks)"] if cfg.dropout > 0 else []) + \
        ([f"dropout {cfg.dense_dropout:g} (dense)"] if cfg.dense_dropout > 0 else [])
    return ", ".join(parts) or None


def _spatial_needs_dropout(cfg) -> str | None:
    if cfg.spatial_dropout and cfg.dropout == 0:
        return ("it changes how conv-block dropout drops, but --dropout is 0; set --dropout P (the notebook: 0.25) "
                "or --no-spatial-dropout")
    return None


def _drop_path_needs_two_convs(cfg) -> str | None:
    if cfg.drop_path > 0 and cfg.convs_per_block < 2:
        return (f"stochastic depth drops each block's second convolution; this model has {cfg.convs_per_block} per "
                "block (use --model regularized or none)")
    return None


def _decay_needs_adam(cfg) -> str | None:
    if cfg.optimizer == "sgd" and cfg.weight_decay > 0:
        return "weight decay here is decoupled (AdamW); use --optimizer adamw, or --weight-decay 0 with sgd"
    return None


RATE = "[0, 1)"
NONNEG = "[0, inf)"
BUILTINS = (
    # the notebook's three (the regularized preset turns them on)
    Regularizer("batchnorm", (Setting("batchnorm", bool, False,
                                      help="batch norm after every conv and the dense layer"),),
                "model", "batch normalization", notebook=True,
                words=lambda cfg: "batch normalization" if cfg.batchnorm else None),
    Regularizer("dropout", (Setting("dropout", float, 0.0, RATE, metavar="P", help="dropout after each conv block"),
                            Setting("dense_dropout", float, 0.0, RATE, metavar="P",
                                    help="dropout after the dense layer")),
                "model", "dropout (conv blocks and dense layer)", notebook=True, words=_dropout_words),
    Regularizer("augment", (Setting("augment", str, "none", choices=("none", "seed", "flip", "rrc"),
                                    help="data augmentation: seed (the notebook's: flip, brightness, contrast, "
                                         "rot90), none, flip, rrc (random-resized-crop + flip)"),),
                "input", "data augmentation", notebook=True,
                words=lambda cfg: f"data augmentation ({cfg.augment})" if cfg.augment != "none" else None),
    # beyond the notebook (off unless asked for)
    Regularizer("spatial-dropout", (Setting("spatial_dropout", bool, False,
                                            help="conv-block dropout drops whole channels (Dropout2d)"),),
                "model", "spatial dropout: conv-block dropout drops whole channels",
                label="spatial dropout (whole channels in the conv blocks)", ablation={"spatial_dropout": True},
                check=_spatial_needs_dropout),
    Regularizer("drop-path", (Setting("drop_path", float, 0.0, RATE, metavar="P",
                                      help="stochastic depth: each block's second conv becomes a residual branch "
                                           "dropped per sample with this probability"),),
                "model", "stochastic depth with this rate", label="stochastic depth", ablation={"drop_path": 0.1},
                check=_drop_path_needs_two_convs),
    Regularizer("weight-decay", (Setting("weight_decay", float, 0.0, NONNEG, metavar="W",
                                         help="decoupled weight decay (AdamW)"),),
                "optimizer", "decoupled weight decay (AdamW)", label="weight decay", ablation={"weight_decay": 0.05},
                check=_decay_needs_adam),
    Regularizer("smoothing", (Setting("smoothing", float, 0.0, RATE, metavar="S", help="label smoothing"),),
                "targets", "label smoothing", label="label smoothing", ablation={"smoothing": 0.1}),
    Regularizer("mixup", (Setting("mixup", float, 0.0, NONNEG, metavar="ALPHA",
                                  help="mixup with Beta(alpha, alpha), per batch"),),
                "input", "mixup with Beta(a, a)", label="mixup", ablation={"mixup": 0.2}),
    Regularizer("cutmix", (Setting("cutmix", float, 0.0, NONNEG, metavar="ALPHA",
                                   help="CutMix with Beta(alpha, alpha), per batch (with mixup: either, 50/50)"),),
                "input", "CutMix with Beta(a, a)", label="cutmix", ablation={"cutmix": 1.0}),
    Regularizer("reprob", (Setting("reprob", float, 0.0, RATE, metavar="P",
                                   help="random erasing: one rectangle of noise per image with this probability"),),
                "input", "random erasing with this probability", label="random erasing", ablation={"reprob": 0.25}),
    Regularizer("model-ema", (Setting("model_ema", float, 0.0, RATE, metavar="DECAY",
                                      help="evaluate (and checkpoint) an exponential moving average of the weights "
                                           "with this decay"),),
                "after_step", "an EMA of the weights with this decay", label="model EMA",
                ablation={"model_ema": 0.999}),
)


# ------------------------------------------------------------------------------------------ the registry


_REGISTRY: dict[str, Regularizer] = {r.name: r for r in BUILTINS}
_PROVIDER: list[tuple[str, str | None]] = []  # (distribution, version) whose entry point is being loaded


def list_regularizers(plugins: bool = True) -> list[Regularizer]:
    """Every registered regularizer: the built-ins in table order, then plugins in the order they came."""
    return [r for r in _REGISTRY.values() if plugins or not r.plugin]


def get(name: str) -> Regularizer:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown regularizer {name!r}; registered: {', '.join(_REGISTRY)}") from None


def find(name: str) -> Regularizer | None:
    return _REGISTRY.get(name)


def builtin_settings() -> list[Setting]:
    """The settings of the built-in regularizers: each is a Config field."""
    return [s for r in BUILTINS for s in r.settings]


def plugin_settings() -> dict[str, Setting]:
    """The settings of the registered plugins by name: they live in Config.plugin_settings."""
    return {s.name: s for r in _REGISTRY.values() if r.plugin for s in r.settings}


def check_plugins_loaded(cfg, where) -> None:
    """A config (Config) that sets a plugin's setting trains only where that plugin is registered: one line if not."""
    unloaded = sorted(set(cfg.plugin_settings) - set(plugin_settings()))
    if unloaded:
        raise UserError(f"{where} sets {', '.join(unloaded)}, a setting of a regularizer plugin that is not loaded "
                        "here; load it with --plugin MODULE (or install its package) to train it")


def owner(setting_name: str) -> Regularizer | None:
    """The regularizer that reads a setting."""
    return next((r for r in _REGISTRY.values() if any(s.name == setting_name for s in r.settings)), None)


def register_regularizer(name: str | Regularizer, apply: Callable | None = None, /, *, stage: str | None = None,
                         setting: Setting | None = None, ablation: Any = None, about: str = "", label: str = "",
                         words: Callable | None = None, check: Callable | None = None):
    """Register a user's regularizer, so that every command and function of reglab knows it.

        @reglab.register_regularizer("cutout", stage="input", ablation=48, about="Cutout: one square hole",
                                     setting=reglab.Setting("cutout", int, 0, "[0, 1024]", metavar="PX"))
        def cutout(images, targets, size, generator): ...

    With `apply` (the transform, loss term or hook; see the module docstring) it registers it and returns the
    record; without, it is a decorator that registers the function it decorates and returns that function. A
    Regularizer record may be passed instead of the keywords. `ablation` is the strength its ablation variant
    adds to full. Registering a name again from the same module replaces it (a notebook cell run twice)."""
    if isinstance(name, Regularizer):
        return _add(name)
    if apply is None:
        def decorate(fn: Callable) -> Callable:
            register_regularizer(name, fn, stage=stage, setting=setting, ablation=ablation, about=about, label=label,
                                 words=words, check=check)
            return fn
        return decorate
    if setting is None:
        raise UserError(f"regularizer {name!r} needs its setting: setting=reglab.Setting(name, type, neutral, range)")
    if setting.type is float and isinstance(ablation, int) and not isinstance(ablation, bool):
        ablation = float(ablation)
    return _add(Regularizer(name, (setting,), stage, about or name, label=label, words=words,
                            ablation={setting.name: ablation} if ablation is not None else {}, check=check,
                            apply=apply))


def _add(reg: Regularizer) -> Regularizer:
    if reg.apply is None:
        raise UserError(f"regularizer {reg.name!r} has no implementation: a plugin passes its transform, loss term or "
                        "hook")
    reg = replace(reg, origin=reg.origin or origin_of(reg.apply))
    _check_new(reg)
    _REGISTRY[reg.name] = reg
    return reg


def _check_new(reg: Regularizer) -> None:
    """One line for whatever would make a plugin clash with reglab or another plugin."""
    from .config import FIELD_NAMES  # (config.py imports this module: read at call time)

    def bad(why: str):
        raise UserError(f"cannot register regularizer {reg.name!r}: {why}")

    if not isinstance(reg.name, str) or not _NAME.fullmatch(reg.name) or reg.name in RESERVED_NAMES \
            or reg.name.startswith("no-"):
        bad("a name is lowercase letters, digits, '-' and '_', starts with a letter, and is not full, none, basic or "
            "no-...")
    if reg.stage not in PLUGIN_STAGES:
        bad(f"stage {reg.stage!r}: a plugin acts at one of {', '.join(PLUGIN_STAGES)}")
    if not callable(reg.apply):
        bad(f"its implementation {reg.apply!r} is not callable")
    if len(reg.settings) != 1 or not isinstance(reg.settings[0], Setting):
        bad("a plugin has exactly one setting, its strength (a reglab.Setting)")
    s = reg.setting
    if not s.name.isidentifier() or s.name in FIELD_NAMES:
        bad(f"setting {s.name!r} must be a Python identifier that is not already a config key")
    if s.type is not str and s.choices is not None:
        bad(f"setting {s.name!r}: only a str setting has choices")
    if s.problem(s.neutral) is not None:
        bad(f"its neutral value {s.neutral!r} is not valid for {s.name} ({s.problem(s.neutral)})")
    value = reg.ablation.get(s.name)
    if not isinstance(value, s.type) or (s.type is not bool and isinstance(value, bool)):
        bad(f"ablation={value!r}: give the {s.type.__name__} strength its ablation variant adds to full")
    if s.adds(value) is not None:
        bad(f"ablation={value!r} would not turn it on ({s.adds(value)})")
    taken = _REGISTRY.get(reg.name)
    if taken is not None and (not taken.plugin or taken.origin.module != reg.origin.module):
        where = "reglab itself" if not taken.plugin else f"module {taken.origin.module}"
        bad(f"the name is taken by {where}")
    for other in _REGISTRY.values():
        if other.name != reg.name and any(o.name == s.name for o in other.settings):
            bad(f"setting {s.name!r} is already read by regularizer {other.name!r}")


# ------------------------------------------------------------------------------------------ where a plugin came from


@contextlib.contextmanager
def provided_by(distribution: str, version: str | None) -> Iterator[None]:
    """Regularizers registered inside come from this installed distribution (an entry point being loaded)."""
    _PROVIDER.append((distribution, version))
    try:
        yield
    finally:
        _PROVIDER.pop()


def origin_of(fn: Callable) -> Origin:
    """The module that defines `fn`, its source file and a sha256 of that file (of the function's own source when
    there is no file, as in a notebook), and the distribution that installed it, when one did."""
    module = getattr(fn, "__module__", None) or "__main__"
    path = getattr(sys.modules.get(module), "__file__", None)
    if path and os.path.isfile(path):
        path = os.path.abspath(path)
        digest = file_sha256(path)
    else:
        path = None
        try:
            digest = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
        except (OSError, TypeError):
            digest = None
    if _PROVIDER:
        dist, version = _PROVIDER[-1]
    elif module.startswith(FILE_MODULE_PREFIX) or module in ("__main__", "__mp_main__"):
        dist, version = None, None
    else:
        dist, version = _distribution(module.split(".")[0])
    return Origin(module=module, file=path, sha256=digest, distribution=dist, version=version)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _distribution(top_level: str) -> tuple[str | None, str | None]:
    names = _packages().get(top_level) or []
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None


@functools.lru_cache(maxsize=1)
def _packages() -> dict:
    return importlib.metadata.packages_distributions()
