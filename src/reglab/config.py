"""One config object for every run, resolved in a fixed order.

defaults  <  model preset  <  recipe file (recipes/<name>.yaml)  <  --config FILE.yaml  <  command-line flags

Model presets (`basic`, `regularized`, `none`) are configurations of the one architecture in models.py,
plus the augmentation the notebook used with each. Every run writes the fully resolved config to
config.yaml, so a run folder says exactly what was trained.

The regularizers' settings are declared in their table (regularizers.py), not here: each built-in one is a
Config field added by `_regularizer_fields` (type and default from the table, range and cross-field checks in
`validate`), and a plugin's setting lives in the one field `plugin_settings` (only values away from neutral are
kept, so a run that does not use a plugin does not depend on it). `Config(cutout=8)`, `cfg.replace(cutout=8)` and
`cfg.value("cutout")` take a plugin's setting by name, as they take a field.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from . import regularizers
from .errors import UserError
from .readfile import read_text

# The fields with a fixed set of values: each set is written once, as a type (a typo is a type error), and the
# tuple of its values (what validate() and the CLI's choices accept) is read from it. (The regularizers' own
# choices are in their table.)
Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["plateau", "onecycle", "cosine", "constant"]
Precision = Literal["auto", "fp32", "bf16"]
BadImagePolicy = Literal["error", "skip"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
BAD_IMAGE_POLICIES: tuple[str, ...] = get_args(BadImagePolicy)
# What torch.device accepts for the machines reglab runs on, plus auto (cuda, then mps, then cpu).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?")
MLFLOW_URI = re.compile(r"[a-z][a-z0-9+.-]*:\S+")  # a scheme: a bare path would be read from each worker's cwd
MAX_SEED = 2**32 - 1  # numpy's seed range; torch accepts it too
CONFIG_FILE_BYTES = 1 << 20  # a config is a few hundred bytes; a larger file is the wrong file (or /dev/zero)
# Upper bounds on every size a model or a run is built from, far above any small classifier, so that a typo or a
# hostile file is one line instead of minutes of building layers or an allocation of terabytes.
MAX_WIDTH = 16_384
SIZE_BOUNDS = {"convs_per_block": 16, "dense_width": 65_536, "batch_size": 65_536, "eval_batch_size": 65_536,
               "epochs": 100_000, "clean_train_sample": 10_000_000}
MAX_IMAGE_SIZE = 1024  # the decode cache and the dense layer grow with its square; memory is checked later too


def _regularizer_fields(after: str):
    """Declare every built-in regularizer setting as a field of the class, after the field `after`, with its
    table's type and neutral default (run before @dataclass, which then sees ordinary fields)."""
    def add(cls):
        declared = {}
        for name, kind in cls.__dict__["__annotations__"].items():
            declared[name] = kind
            if name == after:
                for s in regularizers.builtin_settings():
                    declared[s.name] = s.type.__name__
                    setattr(cls, s.name, s.neutral)
        cls.__annotations__ = declared
        return cls
    return add


@dataclass(init=False)
@_regularizer_fields(after="bn_momentum")
class Config:
    """Every setting of one run. Build it with keywords: `Config(model="basic", epochs=5)` or
    `Config.preset("basic", epochs=5)`; values left out come from the model preset, then the recipe, then the
    defaults below, so a config always builds the model it names. Invalid values raise UserError."""

    # what and where
    model: str = "regularized"
    recipe: str = "seed"
    data: str = "imagenette2-160"  # a dataset name, or an ImageFolder directory (stored absolute)
    image_size: int = 160
    seed: int = 42
    device: str = "auto"
    on_bad_image: BadImagePolicy = "error"
    # the notebook's optimisation recipe
    epochs: int = 50
    batch_size: int = 16
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    adam_eps: float = 1e-7  # Keras's Adam default, not PyTorch's 1e-8
    momentum: float = 0.9  # sgd only
    schedule: Schedule = "plateau"
    warmup_epochs: float = 0.0  # onecycle / cosine only
    early_stopping_patience: int = 7  # 0 disables early stopping
    restore_best: bool = True
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    plateau_min_delta: float = 1e-4  # absolute, as Keras's ReduceLROnPlateau
    min_lr: float = 1e-5
    # what chooses and what judges: with selection_split F > 0 a stratified, seeded fraction F of the training
    # images chooses (early stopping, LR on plateau, best checkpoint) and val/ is only evaluated at the end, as a
    # test set. 0 is the notebook's way: val/ both chooses and judges (optimistic).
    selection_split: float = 0.0
    clean_train_sample: int = 2000  # training images (stratified) evaluated clean, in eval mode, at the end
    # architecture (models.build_model); basic and regularized are presets of these
    widths: list = field(default_factory=lambda: [32, 64, 128])
    convs_per_block: int = 2
    dense_width: int = 256
    keras_init: bool = True  # Glorot-uniform kernels, zero biases, BN eps 1e-3 (Keras); off: PyTorch's defaults
    # BatchNorm running-stat update rate, PyTorch convention: Keras's momentum 0.99 is 0.01 here. With few steps
    # per epoch (large batches) 0.01 leaves the running stats far behind the weights; the fast recipe uses 0.1.
    bn_momentum: float = 0.01
    # "precise BN": before the final evaluation, re-estimate the BatchNorm statistics of the restored weights on the
    # clean training sample (evaluate.precise_bn). Off in the seed recipe (the notebook's eval-mode statistics).
    precise_bn: bool = False
    # (here: one field per built-in regularizer setting, from regularizers.BUILTINS, each off by default; the model
    # presets turn the notebook's three on)
    # the settings of plugin regularizers that are not neutral: {setting: value}
    plugin_settings: dict = field(default_factory=dict)
    # speed (never changes what is computed beyond float rounding)
    # bf16 where the hardware runs it natively (CUDA, CPUs with AMX/AVX-512 bf16), else fp32
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    eval_batch_size: int = 500
    # the run folder: keep last.ckpt (weights + optimizer state) after the run finishes, so it can be extended
    keep_last: bool = False
    # the trackers: "" none but TensorBoard; "default" (MLflow's SQLite store beside the study) or a tracking URI
    mlflow: str = ""

    def __init__(self, **values):
        """defaults < model preset < recipe < `values`; then validate. A plugin's setting may be given by name."""
        self._fill(values, strict=True)

    def _fill(self, values: dict, strict: bool) -> None:
        """strict: every plugin setting must belong to a registered plugin; otherwise (a config a run recorded) the
        settings of plugins not loaded here are kept as written, unchecked."""
        values = check_keys(values, "the config", strict)
        model = values.get("model", "regularized")
        if model not in MODEL_PRESETS:
            raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODEL_PRESETS)}")
        merged = {**MODEL_PRESETS[model], **load_recipe(values.get("recipe", "seed")), **values}
        plugin = dict(merged.pop("plugin_settings", None) or {})
        plugin.update({k: merged.pop(k) for k in list(merged) if k not in _FIELDS})  # plugin settings by name
        known = regularizers.plugin_settings()
        merged["plugin_settings"] = {k: plugin[k] for k in sorted(plugin)
                                     if k not in known or plugin[k] != known[k].neutral}
        for f in fields(self):
            setattr(self, f.name, merged[f.name] if f.name in merged else _field_default(f))
        self.validate()

    @classmethod
    def preset(cls, model: str, **overrides) -> "Config":
        """The named model preset with the recipe's (default: the notebook's) training settings, e.g.
        `Config.preset("basic", epochs=5)`."""
        return cls(model=model, **overrides)

    def replace(self, **changes) -> "Config":
        """A copy with some values changed (every other value kept exactly, not re-derived from the preset)."""
        return Config(**{**self.to_dict(), **changes})

    def value(self, name: str) -> Any:
        """A setting by name: a field, or a plugin's setting (its neutral value when not set)."""
        if name in _FIELDS:
            return getattr(self, name)
        if name in self.plugin_settings:
            return self.plugin_settings[name]
        setting = regularizers.plugin_settings().get(name)
        if setting is None:
            raise UserError(f"unknown setting {name!r}; valid: {', '.join(valid_keys())}")
        return setting.neutral

    def validate(self) -> "Config":
        def bad(name, value, hint):
            raise UserError(f"invalid {name}: {value!r}; {hint}")

        choice = {
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "precision": PRECISIONS,
            "on_bad_image": BAD_IMAGE_POLICIES,
        }
        for name, options in choice.items():
            if getattr(self, name) not in options:
                bad(name, getattr(self, name), f"choose one of {', '.join(options)}")
        if self.model not in MODEL_PRESETS:
            bad("model", self.model, f"choose one of {', '.join(MODEL_PRESETS)}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            bad("device", self.device, "choose auto, cpu, cuda, cuda:N or mps")
        if not 0 <= self.seed <= MAX_SEED:
            bad("seed", self.seed, f"it must be an integer from 0 to {MAX_SEED}")
        for name in ("epochs", "batch_size", "eval_batch_size", "image_size", "dense_width", "convs_per_block",
                     "clean_train_sample"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "it must be a positive integer")
        for name, most in SIZE_BOUNDS.items():  # before anything is allocated from them (a memory check included)
            if getattr(self, name) > most:
                bad(name, getattr(self, name), f"at most {most:,}")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            bad("widths", self.widths, "give one positive channel count per block, e.g. [32, 64, 128]")
        if len(self.widths) > 10:
            bad("widths", self.widths, "at most 10 blocks (each halves the image: 1024 px / 2^10 = 1)")
        if any(int(w) > MAX_WIDTH for w in self.widths):
            bad("widths", self.widths, f"at most {MAX_WIDTH:,} channels a block (the notebook's widest is 128)")
        step = 2 ** len(self.widths)
        if self.image_size % step != 0:
            bad("image_size", self.image_size, f"it must be a multiple of {step} (one 2x pool per block), e.g. "
                f"{max(step, self.image_size // step * step)}")
        if self.image_size > MAX_IMAGE_SIZE:
            bad("image_size", self.image_size, f"at most {MAX_IMAGE_SIZE} pixels (the notebook uses 160)")
        known = regularizers.plugin_settings()
        for s in regularizers.builtin_settings() + [known[k] for k in self.plugin_settings if k in known]:
            problem = s.problem(self.value(s.name))
            if problem:
                bad(s.name, self.value(s.name), problem)
        if not 0.0 <= self.selection_split <= 0.5:
            bad("selection_split", self.selection_split, "give the fraction of training images that chooses, "
                "in [0, 0.5] (0: the notebook's way, val/ chooses and judges), e.g. 0.1")
        for name in ("lr", "adam_eps"):
            if getattr(self, name) <= 0:
                bad(name, getattr(self, name), "it must be positive")
        for name in ("min_lr", "warmup_epochs", "early_stopping_patience", "plateau_patience", "plateau_min_delta",
                     "momentum"):
            if getattr(self, name) < 0:
                bad(name, getattr(self, name), "it must be >= 0")
        if not 0.0 < self.bn_momentum <= 1.0:
            bad("bn_momentum", self.bn_momentum, "it must be in (0, 1]; Keras's 0.99 is 0.01 here")
        if not 0.0 < self.plateau_factor < 1.0:
            bad("plateau_factor", self.plateau_factor, "it must be in (0, 1)")
        # combinations that would silently do nothing, or something else than asked
        for reg in regularizers.list_regularizers():
            problem = reg.check(self) if reg.check is not None else None
            if problem:
                bad(reg.setting.name, self.value(reg.setting.name), problem)
        if self.schedule in ("plateau", "constant") and self.warmup_epochs > 0:
            bad("warmup_epochs", self.warmup_epochs, f"warm-up applies to the onecycle and cosine schedules, not "
                f"{self.schedule}; set --schedule onecycle or cosine, or --warmup-epochs 0")
        if self.warmup_epochs > self.epochs:
            bad("warmup_epochs", self.warmup_epochs, f"it must not exceed --epochs ({self.epochs})")
        if self.mlflow not in ("", "default") and not MLFLOW_URI.fullmatch(self.mlflow):
            bad("mlflow", self.mlflow, "give a tracking URI (sqlite:////abs/mlflow.db, http://host:5000) or default")
        if self.batchnorm and self.batch_size < 2:
            bad("batch_size", self.batch_size, "batch normalization needs at least 2 images a batch")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def differences(self, other: "Config | dict", ignore=()) -> list[str]:
        """The settings that change what a run computes and differ in `other` (a Config, or a config.yaml as
        written, which may be older and lack keys, or some settings by name): every field and plugin setting but
        NON_RESULT_FIELDS and `ignore`. The one definition of "the same run" (a cohort's members, a resume, a
        study's finished run)."""
        theirs = _by_setting(other.to_dict() if isinstance(other, Config) else other)
        skip = NON_RESULT_FIELDS | set(ignore)
        return sorted(k for k, v in _by_setting(self.to_dict()).items()
                      if k not in skip and k in theirs and theirs[k] != v)

    def regularizers(self) -> list[str]:
        """The words reports use for the regularizers this run uses, in table order (plugins last)."""
        return [w for reg in regularizers.list_regularizers() if (w := reg.describe(self))]


FIELD_NAMES = tuple(f.name for f in fields(Config))
_FIELDS = {f.name: f for f in fields(Config)}


def valid_keys() -> list[str]:
    """Every key a config takes: its fields, and the settings of the plugins registered now."""
    return [*FIELD_NAMES, *regularizers.plugin_settings()]


def _by_setting(values: dict) -> dict:
    """A config's values with each plugin setting as a key of its own (from plugin_settings, where a setting that
    is absent is neutral, and given by name), so that two configs compare setting by setting."""
    flat = {k: v for k, v in values.items() if k != "plugin_settings" and k in _FIELDS}
    known = regularizers.plugin_settings()
    if isinstance(values.get("plugin_settings"), dict):
        flat.update({name: s.neutral for name, s in known.items()})
        flat.update(values["plugin_settings"])
    flat.update({k: v for k, v in values.items() if k not in _FIELDS})
    return flat
# Fields that change how fast a run goes or what its folder keeps, not what it computes: a finished run may be
# reused, or a run resumed, across them.
NON_RESULT_FIELDS = frozenset({"device", "eval_batch_size", "compile", "channels_last", "keep_last", "mlflow"})


def _field_default(f):
    return f.default_factory() if f.default is MISSING else f.default

# The notebook's two models (and the 6-conv net with its regularizers removed), as configurations.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "regularized": dict(convs_per_block=2, batchnorm=True, dropout=0.25, dense_dropout=0.5, augment="seed"),
    "basic": dict(convs_per_block=1, batchnorm=False, dropout=0.0, dense_dropout=0.0, augment="none"),
    # same depth as regularized, no regularizer: separates depth from regularization in ablations
    "none": dict(convs_per_block=2, batchnorm=False, dropout=0.0, dense_dropout=0.0, augment="none"),
}


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("reglab.recipes").iterdir() if p.name.endswith(".yaml"))


def load_recipe(name: str) -> dict:
    if name not in recipe_names():  # a name, not a path: `recipe: ../../x` must not read other files
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())}")
    path = resources.files("reglab.recipes") / f"{name}.yaml"
    return check_keys(yaml.safe_load(path.read_text()) or {}, f"recipe {name}")


def load_config_file(path: str | Path) -> dict:
    """Parse a YAML config safely (no object construction); unknown keys are errors."""
    path = Path(path)
    text = read_text(path, CONFIG_FILE_BYTES, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"config file {path} is not valid YAML{at}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of option: value, got {type(data).__name__}")
    return check_keys(data, f"config file {path}")


def check_keys(data: dict, where: str, strict: bool = True) -> dict:
    """`data`'s values checked against their keys' types; an unknown key is one line that lists the valid ones.
    strict=False: plugin_settings may name plugins not loaded here (a recorded config)."""
    valid = valid_keys()
    # repr() for odd keys: a key with a newline must not break the one-line error
    unknown = [k if isinstance(k, str) and k.isprintable() and k else repr(k) for k in data if k not in valid]
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in {where}; valid keys: {', '.join(valid)}")
    return {k: _coerce(k, v, where, strict) for k, v in data.items()}


_SHORT = reprlib.Repr()  # values in error messages: a few items, two levels deep
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def _coerce(name: str, value: Any, where: str, strict: bool = True) -> Any:
    """Check a value against the field's (or plugin setting's) type; YAML gives us ints for floats and the like."""
    if name == "plugin_settings":
        return _coerce_plugin_settings(value, where, strict)
    kind = type(_field_default(_FIELDS[name])) if name in _FIELDS else regularizers.plugin_settings()[name].type
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError  # .nan / .inf would slip through every range check in validate()
            return float(value)
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise TypeError
            return list(value)
        if kind is str:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value
    # reprlib: bounded, so a YAML alias bomb (shared nodes, cheap to load) is not expanded into the message
    raise UserError(f"invalid value for {name} in {where}: {_SHORT.repr(value)} (expected {kind.__name__})")


def _coerce_plugin_settings(value: Any, where: str, strict: bool) -> dict:
    """{setting: value} of plugins. Strict: each a registered plugin's setting, of its type. Otherwise the settings
    of plugins not loaded here are kept as written (numbers, text or true/false)."""
    if not isinstance(value, dict):
        raise UserError(f"invalid value for plugin_settings in {where}: {_SHORT.repr(value)} (expected a mapping of "
                        "plugin setting: value)")
    known = regularizers.plugin_settings()
    out = {}
    for k, v in value.items():
        if k in known:
            out[k] = _coerce(k, v, where)
        elif not strict and isinstance(k, str) and isinstance(v, (bool, int, float, str)):
            out[k] = v
        else:
            shown = k if isinstance(k, str) and k.isprintable() and k else repr(k)
            raise UserError(f"invalid value for plugin_settings in {where}: {shown} is the setting of no regularizer "
                            f"loaded here (plugin settings: {', '.join(known) or 'none'}); load its plugin with "
                            "--plugin MODULE, or install the package that provides it")
    return out


def parse_value(name: str, text: str) -> Any:
    """A setting's value as typed on a command line (--set NAME=VALUE), read as its type: 0.4, 1e-3, true, rrc,
    [32, 64]. Unknown names and bad values are one line."""
    if name not in valid_keys():
        raise UserError(f"unknown key {name!r} in --set {name}={text}; valid keys: {', '.join(valid_keys())}")
    kind = type(_field_default(_FIELDS[name])) if name in _FIELDS else regularizers.plugin_settings()[name].type
    words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
    try:
        if kind is bool:
            return words[text.strip().lower()]
        if kind in (int, float):
            return float(text)  # an integer value becomes an int when the config checks it
        if kind in (list, dict):
            return yaml.safe_load(text)
    except (KeyError, ValueError, OverflowError, yaml.YAMLError):
        raise UserError(f"invalid value in --set {name}={text}: expected {kind.__name__}") from None
    return text


def resolve(file_values: dict | None = None, flag_values: dict | None = None) -> Config:
    """Merge defaults < model preset < recipe < config file < flags, then validate. A data directory is made
    absolute, so the run resumes from any working directory (a dataset name stays a name)."""
    file_values = dict(file_values or {})
    flag_values = {k: v for k, v in (flag_values or {}).items() if v is not None}
    check_keys(flag_values, "command-line flags")
    explicit = {**file_values, **flag_values}
    if "data" in explicit:
        explicit["data"] = absolute_data(explicit["data"])
    return Config(**explicit)


def absolute_data(spec: str) -> str:
    """A directory as an absolute path; a known dataset name (with no such directory here) unchanged."""
    from .data.sources import SOURCES

    expanded = os.path.expanduser(str(spec))
    if str(spec) in SOURCES and not os.path.isdir(expanded):
        return str(spec)
    return os.path.abspath(expanded)


def from_dict(values: dict) -> Config:
    """Rebuild a resolved config (e.g. a run folder's config.yaml) exactly as written. The settings of a plugin not
    loaded here are kept as recorded (the model does not depend on them: predict and export work); training with
    them is refused (trainer.py)."""
    if not isinstance(values, dict):
        raise UserError(f"a config must be a mapping of option: value, got {type(values).__name__}")
    cfg = Config.__new__(Config)
    cfg._fill(check_keys(values, "config.yaml", strict=False), strict=False)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
