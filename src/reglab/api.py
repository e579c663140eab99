"""The Python API: the layer the CLI calls, usable from a notebook. Commands take a Config (or config
settings as keywords) and plain arguments, never an argparse namespace."""

from __future__ import annotations

from pathlib import Path

from .config import FIELD_NAMES, Config, resolve


def train(config: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          verbose: bool = False) -> dict:
    """Train one run into the folder `out` and return its summary (also out/summary.json)."""
    from .run import train as _train

    if resume:
        return _train(None, out, resume=True, quiet=quiet, verbose=verbose)
    return _train(resolve(config.to_dict()), out, overwrite=overwrite, quiet=quiet, verbose=verbose)


def _settings(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(FIELD_NAMES))
    if unknown:
        from .errors import UserError

        raise UserError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(FIELD_NAMES)}")
    cfg = resolve(settings)  # checked now, data made absolute
    return {k: getattr(cfg, k) for k in settings}


def _seeds(seeds: int | list[int], first: int) -> list[int]:
    return list(range(first, first + seeds)) if isinstance(seeds, int) else list(seeds)


def compare(*, seeds: int | list[int] = 1, out: str | Path = "runs/compare", first_seed: int = 42,
            jobs: int = 1, executor: str = "local", quiet: bool = False, **settings) -> Path:
    """The notebook's experiment (basic vs regularized) over `seeds`, with its report. Keyword settings are
    config keys (data=..., epochs=..., image_size=...). Returns the study folder."""
    from .study import compare as _compare

    return _compare(_settings(settings), _seeds(seeds, first_seed), out, jobs=jobs, executor=executor, quiet=quiet)


def ablate(*, variants: list[str] | str | None = None, seeds: int | list[int] = 1, out: str | Path = "runs/ablate",
           first_seed: int = 42, jobs: int = 1, executor: str = "local", quiet: bool = False, **settings) -> Path:
    """Every regularizer ablated over `seeds` (variants as `reglab ablate --variants`), with its report."""
    from .study import ablate as _ablate

    return _ablate(_settings(settings), _seeds(seeds, first_seed), variants, out, jobs=jobs, executor=executor,
                   quiet=quiet)


def report(folder: str | Path, quiet: bool = False) -> tuple[Path, Path]:
    """Re-render the report of a study or run folder; returns (report.md, report.html)."""
    from .reports.render import render_report

    return render_report(Path(folder), quiet=quiet)


def load_run(folder: str | Path, device: str = "cpu"):
    """A finished run as a usable model: .model .classes .class_names .history .summary .predict(images)."""
    from .predict import load_run as _load

    return _load(folder, device)
