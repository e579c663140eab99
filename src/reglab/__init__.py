"""reglab: what does each regularizer really do to a small image classifier?

The Python API (api.py: what the `reglab` command calls, with every option its flags have):

    import reglab
    cfg = reglab.Config.preset("basic", data="path/to/imagefolder", epochs=5)
    summary = reglab.train(cfg, "runs/basic")                 # one run folder
    reglab.compare(data="path/to/imagefolder", seeds=3, out="runs/compare", epochs=5)   # + report
    run = reglab.load_run("runs/basic")                       # .model .classes .history .predict(images)
"""

__version__ = "0.2.0"  # the one version number: pyproject.toml reads it from here

# The modules named like API functions are imported first: a submodule imported after the function was bound
# would replace reglab.predict (the function) with the module predict.py.
from . import bench as _bench, export as _export, predict as _predict  # noqa: E402, F401
from .api import (  # noqa: E402  (after __version__, which the modules below the API read)
    ablate, bench, compare, export, list_variants, load_run, predict, report, resume, summary, train)
from .config import Config  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = ["Config", "UserError", "train", "resume", "compare", "ablate", "list_variants", "report", "load_run",
           "predict", "export", "summary", "bench", "__version__"]
