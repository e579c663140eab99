"""The variants a study trains, and the parsing of `reglab ablate --variants`.

A variant is a name and the config values it sets. `compare` trains the notebook's two models. `ablate`'s variants
are derived from the regularizers' table (regularizers.py, plugins included): `full` (the notebook's regularized
model), `no-X` for each of the notebook's three (full with X's settings at their neutral values), `none` (all three
removed, same depth) and `basic` (the notebook's shallow net); and for each added regularizer `X` (full with X at
its ablation strength) or `X=VALUE` (at another: a value that would not turn it on is refused). `SETTING=VALUE` sets
one regularizer setting of full by its config key (e.g. augment=rrc, dropout=0.1).

`sweep`'s variants are the doses of one numeric regularizer setting (or every combination of two: a grid), each
named by its values (`dropout=0.25`, `dropout=0.25,smoothing=0.1`), setting only the swept values on top of the
study's base model and settings. Nothing here trains or touches a folder.
"""

from __future__ import annotations

import itertools

from . import regularizers
from .errors import UserError
from .regularizers import Regularizer, Setting

COMPARE_VARIANTS = {"basic": {"model": "basic"}, "regularized": {"model": "regularized"}}
PRESET_VARIANTS = {  # variant name -> (config values, what it is)
    "full": ({"model": "regularized"}, "the notebook's regularized model: batch norm, dropout, augmentation"),
    "none": ({"model": "none"}, "the same 6-conv network with all three removed (depth without regularization)"),
    "basic": ({"model": "basic"}, "the notebook's shallow plain CNN (3 convs, no regularizer)"),
}
FULL = PRESET_VARIANTS["full"][0]


def _notebook() -> list[Regularizer]:
    return [r for r in regularizers.list_regularizers() if r.notebook]


def _added() -> list[Regularizer]:
    return [r for r in regularizers.list_regularizers() if not r.notebook]


def default_ablation() -> tuple[str, ...]:
    """What `ablate` trains without --variants: full, each of the notebook's three removed, none and basic."""
    return ("full", *sorted(f"no-{r.name}" for r in _notebook()), "none", "basic")


def _takes_value(s: Setting) -> bool:
    """A setting on or off (true/false) takes no value in a variant: listing the variant turns it on."""
    return s.type is not bool


def _value_text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def variant_catalogue() -> list[tuple[str, str]]:
    """(name, what it changes) for every variant `ablate --variants` accepts."""
    out = [("full", PRESET_VARIANTS["full"][1])]
    out += [(f"no-{r.name}", f"full without {r.about}") for r in _notebook()]
    out += [(name, about) for name, (_, about) in PRESET_VARIANTS.items() if name != "full"]
    for r in _added():
        where = f" [plugin {r.origin.file or r.origin.module}]" if r.plugin else ""
        if _takes_value(r.setting):
            out.append((f"{r.name}[=VALUE]", f"full + {r.about} (default {_value_text(r.ablation[r.setting.name])})"
                        + where))
        else:
            out.append((r.name, f"full + {r.about}{where}"))
    keys = [s.name for r in _notebook() for s in r.settings if _takes_value(s)]
    out.append(("SETTING=VALUE", f"full with one setting of a regularizer changed, e.g. augment=rrc ({', '.join(keys)}"
                                 ", or an added regularizer's setting)"))
    return out


def variant_names() -> list[str]:
    return ["full", *(f"no-{r.name}" for r in _notebook()), "none", "basic", *(r.name for r in _added())]


def _setting_named(name: str) -> tuple[Regularizer, Setting] | None:
    """The regularizer setting a variant's NAME=VALUE sets: a setting's config key, or an added regularizer's name
    (its one setting: weight-decay=0.1 is weight_decay=0.1)."""
    for r in regularizers.list_regularizers():
        for s in r.settings:
            if s.name == name:
                return r, s
        if r.name == name and not r.notebook and len(r.settings) == 1:
            return r, r.setting
    return None


def _parse_value(spec: str, reg: Regularizer, s: Setting, text: str):
    try:
        if s.type is float:
            return float(text)
        if s.type is int:
            return int(text)
    except ValueError:
        raise UserError(f"invalid value in variant {spec!r}; give {'a number' if s.type is float else 'an integer'}, "
                        f"e.g. {spec.partition('=')[0]}={reg.ablation.get(s.name, 1)}") from None
    if s.choices is not None and text not in s.choices:
        raise UserError(f"invalid value in variant {spec!r}; choose one of {', '.join(s.choices)}")
    return text


def variant_overrides(spec: str) -> tuple[str, dict]:
    """'no-dropout' -> ('no-dropout', {...}); 'mixup=0.4' -> ('mixup-0.4', {model: regularized, mixup: 0.4})."""
    name, has_value, value = (part.strip() for part in spec.partition("="))
    removed = {f"no-{r.name}": r for r in _notebook()}
    if name in PRESET_VARIANTS or name in removed:
        if has_value:
            raise UserError(f"variant {name!r} takes no value (got {spec!r}); see reglab ablate --list-variants")
        if name in PRESET_VARIANTS:
            return name, dict(PRESET_VARIANTS[name][0])
        return name, {**FULL, **removed[name].off()}
    added = {r.name: r for r in _added()}
    if name in added and not has_value:
        return name, {**FULL, **added[name].ablation}
    found = _setting_named(name) if has_value else None
    if found is None:
        if name in added:
            raise UserError(f"variant {name!r} is on or off and takes no value (got {spec!r}); list it to add it")
        raise UserError(f"unknown variant {spec!r}; choose from {', '.join(variant_names())} (added regularizers "
                        "take name=value, and a regularizer's setting SETTING=VALUE; see reglab ablate "
                        "--list-variants)")
    reg, s = found
    if not _takes_value(s):
        hint = f"full has it and no-{reg.name} removes it" if reg.notebook else "list it to add it"
        raise UserError(f"variant {name!r} is on or off and takes no value (got {spec!r}); {hint}")
    v = _parse_value(spec, reg, s, value)
    if not reg.notebook and s.adds(v) is not None:
        raise UserError(f"variant {spec!r} would not add {reg.name} ({s.adds(v)}); leave it out, or use `full` for "
                        "the model without it")
    label = reg.name if not reg.notebook and len(reg.settings) == 1 else s.name
    return f"{label}-{value}", {**FULL, s.name: v}


def parse_variants(specs: list[str] | str | None) -> dict[str, dict]:
    """--variants as given (a comma-separated string or a list; None: default_ablation()) -> {name: config values}."""
    given = default_ablation() if specs is None else specs.split(",") if isinstance(specs, str) else specs
    specs = [s for s in given if s.strip()]
    if not specs:
        raise UserError("--variants names no variant; list at least one (see reglab ablate --list-variants)")
    out: dict[str, dict] = {}
    for spec in specs:
        name, overrides = variant_overrides(spec)
        if name in out:
            raise UserError(f"variant {name!r} is listed twice in --variants")
        out[name] = overrides
    return out


# ------------------------------------------------------------------------------------------ sweeps


def sweep_axis(spec: str) -> tuple[str, list]:
    """'dropout=0,0.1,0.25' -> ('dropout', [0.0, 0.1, 0.25]): a regularizer setting that takes a number (a plugin's
    included; an added regularizer's name stands for its one setting) and at least two distinct doses, each of its
    type and in its range, in increasing order. The neutral value is a dose like any other (the dose 0)."""
    name, has_values, text = (part.strip() for part in spec.partition("="))
    found = _setting_named(name) if name and has_values else None
    if found is None:
        known = ", ".join(s.name for r in regularizers.list_regularizers() for s in r.settings
                          if s.type in (int, float))
        raise UserError(f"a sweep takes SETTING=V1,V2,..., e.g. dropout=0,0.1,0.25,0.5, with SETTING one of {known}; "
                        f"got {spec!r}")
    _, s = found
    if s.type not in (int, float):
        kind = "on or off" if s.type is bool else "a choice"
        raise UserError(f"{s.name} is {kind}, not a dose; sweep a setting that takes a number, or compare its values "
                        "with reglab ablate --variants")
    doses = [_dose(spec, s, t.strip()) for t in text.split(",") if t.strip()]
    if len(set(doses)) != len(doses):
        raise UserError(f"a dose repeats in {spec!r}; give each value once")
    if len(doses) < 2:
        raise UserError(f"a sweep needs at least two doses, got {spec!r}; e.g. {s.name}=0,0.1,0.25")
    return s.name, sorted(doses)


def _dose(spec: str, s: Setting, text: str):
    try:
        value = float(text) if s.type is float else int(text)
    except ValueError:
        raise UserError(f"invalid dose {text!r} in {spec!r}; give {'a number' if s.type is float else 'an integer'}"
                        ) from None
    problem = s.problem(value)
    if problem:
        raise UserError(f"invalid dose {text} in {spec!r}: {problem}")
    return value


def sweep_variants(axes: list[tuple[str, list]]) -> dict[str, dict]:
    """Every combination of the axes' doses (the first axis outermost) -> the swept values it sets, named by them:
    'dropout=0.25' or, for a grid, 'dropout=0.25,smoothing=0.1'."""
    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        raise UserError(f"{names[0]} is swept twice; a grid crosses two different settings")
    combos = itertools.product(*[[(name, v) for v in values] for name, values in axes])
    return {",".join(f"{n}={_value_text(v)}" for n, v in combo): dict(combo) for combo in combos}


def sweep_doses(variant: str) -> dict[str, float]:
    """A sweep variant's doses from its name: 'dropout=0.25,smoothing=0.1' -> {dropout: 0.25, smoothing: 0.1}."""
    return {name: float(value) for name, _, value in (part.partition("=") for part in variant.split(","))}
