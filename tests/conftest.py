from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _find_mini() -> Path:
    """../shared/data/imagenette2-mini beside the checkout, or beside a folder above it (a git worktree)."""
    checkout = Path(__file__).resolve().parents[1]
    places = [up / "shared" / "data" / "imagenette2-mini" for up in checkout.parents]
    return next((p for p in places if p.is_dir()), places[0])


MINI = _find_mini()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache / download dir, never the user's ~/.cache or ../shared."""
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path_factory.mktemp("reglab-data")))


@pytest.fixture(scope="session")
def mini() -> Path:
    if not MINI.is_dir():
        pytest.skip(f"{MINI} not found (../shared/data/imagenette2-mini)")
    return MINI


def one_line_error(capfd, rc: int, *needles: str, code: int = 2) -> str:
    """Assert a user error: exit `code`, exactly one stderr line starting 'reglab: ' with every needle, no traceback."""
    out, err = capfd.readouterr()
    assert rc == code, (rc, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reglab: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def no_curve_plots(monkeypatch):
    """curves.png is not what error-path tests are about, and matplotlib is most of a 1-epoch run's time."""
    import reglab.curves

    monkeypatch.setattr(reglab.curves, "plot_curves", lambda *a, **k: None)


def make_tree(root: Path, classes=("a", "b"), per_class: int = 4, val: int = 2, shape=(20, 20)) -> Path:
    """A tiny ImageFolder tree of random PNGs (seeded): train/<class>/i.png, val/<class>/i.png."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root
