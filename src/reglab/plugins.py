"""Users' regularizers (plugins): loading them, and making sure a run's are here before it resumes or is reported.

Where a plugin comes from (importing it registers its regularizers: regularizers.register_regularizer):
  --plugin MODULE | FILE.py   `load`: a module by name, or a .py file imported as the module reglab_plugin_<stem>
                              (plugins=[...] in the API)
  an installed package        its entry points in the group `reglab.regularizers`, each naming a module (or a
                              Regularizer), loaded once per process by `load_entry_points`, as pytest loads its
                              plugins; the package and its version are recorded with each regularizer
  Python                      reglab.register_regularizer in a script or notebook

A run records each plugin it used (summary.json `plugins`: rundir.PluginInfo: name, module, file, sha256 of its
source, distribution and version). `require(folder, action)` makes sure they are here before a resume or a report:
a plugin not registered is imported by its recorded module name (code installed on this machine, as --plugin
would), or from its recorded file when that file still has the recorded sha256; otherwise the action is refused in
one line saying what to install or pass. A plugin whose source differs from the recorded one refuses a resume (the
run would mix two versions) and is a warning for a report. Worker processes load `specs()`, what this process
loaded, before they build a config (executors.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from . import regularizers, rundir
from .errors import UserError
from .regularizers import FILE_MODULE_PREFIX, Regularizer
from .rundir import PluginInfo
from .text import say

ENTRY_POINT_GROUP = "reglab.regularizers"
_loaded: list[str] = []  # the --plugin specs loaded in this process, in order (files as absolute paths)
_entry_points_loaded = False


def load_all(specs: Iterable[str] | None = None) -> None:
    """The installed plugins (entry points, once per process), then each of `specs` (--plugin values)."""
    load_entry_points()
    for spec in [specs] if isinstance(specs, str) else specs or ():
        load(spec)


def load(spec: str) -> None:
    """Import one plugin: a module name (`mypackage.regularizers`) or a path to a .py file. Loading the same one
    twice does nothing; a failure is one line."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"invalid plugin {spec!r}; give a module name or the path of a .py file")
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec).expanduser().resolve()
        _load_file(path)
        spec = str(path)
    else:
        _import(spec)
    if spec not in _loaded:
        _loaded.append(spec)


def specs() -> tuple[str, ...]:
    """What a worker process loads to have the plugins this one has: the --plugin specs loaded here, then the
    modules of the regularizers registered from other importable modules. (One registered in `__main__` is
    registered again where a spawned worker re-runs the main script; elsewhere, put it in a module.)"""
    modules = [r.origin.module for r in regularizers.list_regularizers() if r.plugin and _by_name(r.origin.module)]
    return tuple(dict.fromkeys([*_loaded, *modules]))


def load_entry_points() -> None:
    """Import every installed plugin (entry point group `reglab.regularizers`), once per process."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        name = dist.name if dist is not None else None
        with regularizers.provided_by(name, dist.version if dist is not None else None):
            try:
                found = ep.load()
            except UserError:
                raise
            except Exception as e:  # a broken plugin is the user's to fix: said in one line
                raise UserError(f"the regularizer plugin {ep.name!r} ({ep.value}, from the package {name}) failed to "
                                f"load: {_one_line(e)}; fix or uninstall that package") from None
            if isinstance(found, Regularizer):
                regularizers.register_regularizer(found)


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.split(".")[:len(e.name.split("."))] == e.name.split("."):
            raise UserError(f"--plugin {module}: no module named {e.name!r}; give an importable module name or the "
                            "path of a .py file") from None
        raise UserError(f"--plugin {module} failed to load: {_one_line(e)}") from None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"--plugin {module} failed to load: {_one_line(e)}") from None


def _load_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"--plugin {path}: no such file; give the path of a .py file or an importable module name")
    stem = FILE_MODULE_PREFIX + re.sub(r"\W", "_", path.stem)
    name, taken = stem, 1
    while name in sys.modules:  # another file of the same name gets a name of its own
        if getattr(sys.modules[name], "__file__", None) == str(path):
            return  # loaded already
        taken += 1
        name = f"{stem}_{taken}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: its functions pickle by reference, inspect finds their source
    try:
        spec.loader.exec_module(module)
    except UserError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise UserError(f"--plugin {path} failed to load: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


# ------------------------------------------------------------------------------------------ what a run used


def recorded(folder: str | Path) -> list[tuple[Path, PluginInfo]]:
    """(run folder, plugin) for each plugin the runs in `folder` (a run folder, or a study's) recorded; damaged
    summaries are left to the commands that read them."""
    folder = Path(folder)
    runs = [folder] if rundir.classify(folder) == "run" else sorted(p for p in folder.glob("*/seed-*") if p.is_dir())
    out = []
    for run in runs:
        try:
            out += [(run, info) for info in rundir.read_summary(run).plugins]
        except UserError:
            continue
    return out


def require(folder: str | Path, action: Literal["resume", "report"]) -> None:
    """Make sure every plugin the runs in `folder` used is here, loading it from what they recorded; refuse in one
    line when one is not. A plugin whose source differs from the recorded one refuses a resume, warns a report."""
    seen = set()
    for run, info in recorded(folder):
        if (info.name, info.sha256) in seen:
            continue
        seen.add((info.name, info.sha256))
        reg = regularizers.find(info.name) or _load_recorded(info)
        if reg is None or not reg.plugin:
            raise UserError(f"cannot {action} {run}: it used the regularizer plugin {info.name!r} ({_where(info)}), "
                            f"which is not available here; {_how_to_get(info)}")
        now = reg.origin.sha256
        if info.sha256 and now and info.sha256 != now:
            versions = f"sha256 {info.sha256[:12]} then, {now[:12]} in {reg.origin.file or reg.origin.module} here"
            if action == "resume":
                raise UserError(f"cannot resume {run}: its regularizer plugin {info.name!r} has changed since it was "
                                f"trained ({versions}), so the run would mix two versions; restore the version it "
                                "was trained with, or train a new run")
            say(f"reglab: warning: the regularizer plugin {info.name!r} here is not the version {run} was trained "
                f"with ({versions}); the report describes the run as it was trained")


def _load_recorded(info: PluginInfo) -> Regularizer | None:
    """The recorded module imported by name (when it is importable here), else the recorded file when it still has
    the recorded hash; None when neither brings the regularizer back."""
    if _by_name(info.module):
        try:
            found = importlib.util.find_spec(info.module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            _import(info.module)
    if regularizers.find(info.name) is None and info.file and info.sha256 and Path(info.file).is_file() \
            and regularizers.file_sha256(info.file) == info.sha256:
        load(info.file)
    return regularizers.find(info.name)


def _by_name(module: str) -> bool:
    """A module another process can import by its name (not a script's __main__, not a file loaded by path)."""
    return module not in ("__main__", "__mp_main__") and not module.startswith(FILE_MODULE_PREFIX)


def _where(info: PluginInfo) -> str:
    parts = [f"module {info.module}"]
    if info.file:
        parts.append(f"file {info.file}")
    if info.distribution:
        parts.append(f"package {info.distribution}" + (f" {info.version}" if info.version else ""))
    return ", ".join(parts)


def _how_to_get(info: PluginInfo) -> str:
    if info.distribution:
        pin = f"=={info.version}" if info.version else ""
        return f"install its package: pip install '{info.distribution}{pin}'"
    if info.file:
        return (f"pass --plugin {info.file} (or plugins=[...] in Python) with that file as it was (sha256 "
                f"{(info.sha256 or '?')[:12]})")
    if not _by_name(info.module):
        return "register it again (reglab.register_regularizer) in the script or notebook before calling reglab"
    return f"pass --plugin {info.module}, or install the package that provides it"
