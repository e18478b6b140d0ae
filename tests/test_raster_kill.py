"""Kill anywhere, raster edition (issue 7 × issue 3): SIGKILL a real satellite ``build`` at seeded
moments (frame scan, shards, finalisation, exit), re-run the same command, and require the folder
to end byte-identical to an uninterrupted build — the raster builder shares the ALS builder's
resume machinery, so it must keep the same promise.  Helpers come from ``test_kill_resume``."""

from __future__ import annotations

import os
import random
import shutil
import sys
import time

import numpy as np
import pytest
import yaml
from test_kill_resume import (
    _check_like_reference,
    _digest,
    _keys,
    _kill_group,
    _run_to_end,
    _start,
    _validate_ok,
)
from test_raster_scenes import write_tif

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs process groups and SIGKILL")


@pytest.fixture(scope="module")
def raster_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("raster_kill")
    rng = np.random.default_rng(7)
    scenes = []
    for i in range(3):
        a = rng.integers(100, 4000, (4, 288, 288)).astype("uint16")
        write_tif(root / f"s{i}.tif", a, 10, x0=500000.0 + 10000 * i, descriptions=["B2", "B3", "B4", "B8"])
        scenes.append({"name": f"s{i}", "path": f"s{i}.tif", "sensor": "sentinel-2"})
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "satellite", "name": "rk", "strategy": "global", "samples": 14,
                                      "patch_size_px": 64, "holdout_fraction": 0.2, "scenes": scenes,
                                      "output": {"shard_max_samples": 2}}))
    ref_out = root / "ref" / "out"
    ref_out.parent.mkdir()
    cmd = [sys.executable, "-m", "als_datasets", "build", str(recipe), "--out", str(ref_out), "-q"]
    t0 = time.monotonic()
    _run_to_end(cmd, ref_out.parent / "log")
    duration = time.monotonic() - t0
    keys = _keys(ref_out)
    assert len(keys["index"]) == 14 and len(list(ref_out.glob("webdataset/*/*.tar"))) >= 6
    _validate_ok(ref_out)
    return root, recipe, {"digest": _digest(ref_out), "keys": keys, "out": ref_out}, duration


def _trial(seed: int, raster_case) -> None:
    root, recipe, ref, duration = raster_case
    rng = random.Random(f"raster-kill-{seed}")
    workers = 1 + seed % 2
    out = root / f"t{seed:03d}" / "out"
    out.parent.mkdir()
    log = out.parent / "log"
    cmd = [sys.executable, "-m", "als_datasets", "build", str(recipe), "--out", str(out), "-q",
           "--workers", str(workers)]
    kills = [0.2 + 0.8 * rng.random() for _ in range(1 + (seed % 3 == 2))]  # past interpreter start-up
    for frac in kills:
        p = _start(cmd, log)
        deadline = time.monotonic() + frac * duration
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        _kill_group(p)
    _run_to_end(cmd, log)
    _check_like_reference(out, ref, f"raster seed {seed}, {workers} worker(s), kills at {kills} of {duration:.1f}s")
    shutil.rmtree(out.parent)


@pytest.mark.parametrize("seed", range(3))
def test_raster_kill_and_resume(seed, raster_case):
    _trial(seed, raster_case)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 15))
def test_raster_kill_and_resume_slow(seed, raster_case):
    _trial(seed, raster_case)
