"""reglab: what does each regularizer really do to a small image classifier?

The Python API (api.py: what the `reglab` command calls, with every option its flags have):

    import reglab
    cfg = reglab.Config.preset("basic", data="path/to/imagefolder", epochs=5)
    summary = reglab.train(cfg, "runs/basic")                 # one run folder
    reglab.compare(data="path/to/imagefolder", seeds=3, out="runs/compare", epochs=5)   # + report
    run = reglab.load_run("runs/basic")                       # .model .classes .history .predict(images)

Your own regularizer (regularizers.py; README "Your own regularizer"):

    @reglab.register_regularizer("cutout", stage="input", ablation=48,
                                 setting=reglab.Setting("cutout", int, 0, "[0, 1024]", metavar="PX"))
    def cutout(images, targets, size, generator): ...
"""

__version__ = "0.2.0"  # the one version number: pyproject.toml reads it from here

from .config import Config  # noqa: E402  (after __version__, which the modules below read)
from .errors import UserError  # noqa: E402
from .regularizers import Regularizer, Setting, list_regularizers, register_regularizer  # noqa: E402  (no torch)

API = ("train", "resume", "compare", "ablate", "sweep", "list_variants", "report", "plan", "load_run", "predict",
       "export", "summary", "bench", "load_plugins")
__all__ = ["Config", "UserError", "Setting", "Regularizer", "register_regularizer", "list_regularizers", "train",
           "resume", "compare", "ablate", "sweep", "list_variants", "report", "plan", "load_run", "predict",
           "export", "summary", "bench", "load_plugins", "__version__"]


def __getattr__(name: str):
    """The API functions (api.py), imported on first use: `import reglab` stays light (no torch) until a function
    is called. No submodule is named like an API function, so importing one never replaces a function."""
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reglab' has no attribute {name!r}")
