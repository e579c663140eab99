"""The variants a study trains, and the parsing of `reglab ablate --variants`.

A variant is a name and the config values it sets. `compare` trains the notebook's two models. `ablate` removes
the notebook's three regularizers from `full` one at a time, removes all three (`none`, same depth), trains the
notebook's shallow `basic`, and adds each beyond-notebook regularizer to `full` at a common default strength
(override it with name=value, e.g. mixup=0.4). Nothing here trains or touches a folder.
"""

from __future__ import annotations

from .errors import UserError

COMPARE_VARIANTS = {"basic": {"model": "basic"}, "regularized": {"model": "regularized"}}
DEFAULT_ABLATION = ("full", "no-augment", "no-batchnorm", "no-dropout", "none", "basic")

NOTEBOOK_VARIANTS = {  # variant name -> (config values, what it is)
    "full": ({"model": "regularized"}, "the notebook's regularized model: batch norm, dropout, augmentation"),
    "no-augment": ({"model": "regularized", "augment": "none"}, "full without data augmentation"),
    "no-batchnorm": ({"model": "regularized", "batchnorm": False}, "full without batch normalization"),
    "no-dropout": ({"model": "regularized", "dropout": 0.0, "dense_dropout": 0.0}, "full without dropout"),
    "none": ({"model": "none"}, "the same 6-conv network with all three removed (depth without regularization)"),
    "basic": ({"model": "basic"}, "the notebook's shallow plain CNN (3 convs, no regularizer)"),
}
ADDED_REGULARIZERS = {  # variant name -> (config field, default value, what it adds to full)
    "smoothing": ("smoothing", 0.1, "label smoothing"),
    "mixup": ("mixup", 0.2, "mixup with Beta(a, a)"),
    "cutmix": ("cutmix", 1.0, "CutMix with Beta(a, a)"),
    "reprob": ("reprob", 0.25, "random erasing with this probability"),
    "weight-decay": ("weight_decay", 0.05, "decoupled weight decay (AdamW)"),
    "model-ema": ("model_ema", 0.999, "an EMA of the weights with this decay"),
    "rrc": ("augment", "rrc", "random-resized-crop + flip instead of the notebook's augmentation"),
    "spatial-dropout": ("spatial_dropout", True, "conv-block dropout drops whole channels"),
    "drop-path": ("drop_path", 0.1, "stochastic depth with this rate"),
}


def _switch(default) -> bool:
    """An added regularizer that is on or off (a flag or a choice), so it takes no value."""
    return isinstance(default, (bool, str))


def variant_catalogue() -> list[tuple[str, str]]:
    """(name, what it changes) for every variant `ablate --variants` accepts."""
    out = [(name, about) for name, (_, about) in NOTEBOOK_VARIANTS.items()]
    for name, (_, default, about) in ADDED_REGULARIZERS.items():
        value = "" if _switch(default) else f"[=VALUE] (default {default:g})"
        out.append((f"{name}{value}", f"full + {about}"))
    return out


def variant_names() -> list[str]:
    return list(NOTEBOOK_VARIANTS) + list(ADDED_REGULARIZERS)


def variant_overrides(spec: str) -> tuple[str, dict]:
    """'no-dropout' -> ('no-dropout', {...}); 'mixup=0.4' -> ('mixup-0.4', {model: regularized, mixup: 0.4})."""
    name, has_value, value = (part.strip() for part in spec.partition("="))
    if name in NOTEBOOK_VARIANTS:
        if has_value:
            raise UserError(f"variant {name!r} takes no value (got {spec!r}); see reglab ablate --list-variants")
        return name, dict(NOTEBOOK_VARIANTS[name][0])
    if name in ADDED_REGULARIZERS:
        fieldname, default, _ = ADDED_REGULARIZERS[name]
        if not has_value:
            return name, {"model": "regularized", fieldname: default}
        if _switch(default):
            raise UserError(f"variant {name!r} is on or off and takes no value (got {spec!r}); list it to add it")
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"invalid value in variant {spec!r}; give a number, e.g. {name}={default}") from None
        if v <= 0:
            raise UserError(f"variant {spec!r} would not add {name} (its value must be > 0); leave it out, or use "
                            f"`full` for the model without it")
        return f"{name}-{value}", {"model": "regularized", fieldname: v}
    raise UserError(f"unknown variant {spec!r}; choose from {', '.join(variant_names())} (added regularizers take "
                    "name=value; see reglab ablate --list-variants)")


def parse_variants(specs: list[str] | str | None) -> dict[str, dict]:
    """--variants as given (a comma-separated string or a list; None: DEFAULT_ABLATION) -> {name: config values}."""
    given = DEFAULT_ABLATION if specs is None else specs.split(",") if isinstance(specs, str) else specs
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
