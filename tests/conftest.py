"""Shared fixtures: paths to real sample data, and seeded synthetic rasters/recipes around them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DATA = HERE / "data"
SHARED = Path(os.environ.get("ALS_SHARED_DATA", HERE.parent.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Demo cache and HF caches never touch the user's home."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ALS_DATASETS_CACHE", str(root / "als-cache"))
    monkeypatch.setenv("HF_HOME", str(root / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "hf-datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
