"""Shared fixtures: an isolated cache for the whole session and the embedded demo, once."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Demo cache and HF caches never touch the user's home; nothing reaches the network."""
    root = tmp_path_factory.getbasetemp()
    env = {
        "ALS_DATASETS_CACHE": str(root / "als-cache"),
        "HF_HOME": str(root / "hf-home"),
        "HF_DATASETS_CACHE": str(root / "hf-datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def demo_recipe(_isolated_env):
    """The embedded demo's recipe, generated once per session into the session cache."""
    from als_datasets.demo import ensure_demo

    return ensure_demo()
