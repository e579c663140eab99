import os
from pathlib import Path

import pytest

MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenette2-mini"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache / download dir, never the user's ~/.cache or ../shared."""
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path_factory.mktemp("reglab-data")))


@pytest.fixture(scope="session")
def mini() -> Path:
    if not MINI.is_dir():
        pytest.skip(f"{MINI} not found (../shared/data/imagenette2-mini)")
    return MINI
