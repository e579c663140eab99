"""reglab: what does each regularizer really do to a small image classifier?

The Python API (what the `reglab` command calls):

    import reglab
    cfg = reglab.Config.preset("basic", data="path/to/imagefolder", epochs=5)
    summary = reglab.train(cfg, "runs/basic")                 # one run folder
    reglab.compare(data="path/to/imagefolder", seeds=3, out="runs/compare", epochs=5)   # + report
    run = reglab.load_run("runs/basic")                       # .model .classes .history .predict(images)
"""

__version__ = "0.2.0"

from .api import ablate, compare, load_run, report, train  # noqa: E402
from .config import Config  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = ["Config", "UserError", "train", "compare", "ablate", "report", "load_run", "__version__"]
