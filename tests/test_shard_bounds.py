"""Shards are bounded by bytes as well as by samples (``output.shard_max_bytes``): the plan cuts
them from each sample's estimated size, before any point or pixel is read."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from als_datasets.errors import InputError
from als_datasets.plan import make_plan, shard_specs
from als_datasets.recipe import DEFAULT_SHARD_MAX_BYTES, byte_size, load_recipe, read_recipe_file

ROOT = Path(__file__).resolve().parents[1]


def _frame(n: int, groups=("a", "b")) -> pd.DataFrame:
    return pd.DataFrame({
        "tile_id": [f"t{i:03d}" for i in range(n)],
        "group": [groups[i % len(groups)] for i in range(n)],
        "draw_rank": [i // len(groups) for i in range(n)],
        "selected": [i % 7 != 3 for i in range(n)],  # some candidates are not drawn
        "split": ["validation" if i % 5 == 0 else "train" for i in range(n)],
    })


def _ordered(specs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in specs:
        out.setdefault(s.split, []).extend(s.keys)
    return out


def _check_bound(specs, sizes: dict[str, int], max_samples: int, max_bytes: int) -> None:
    for s in specs:
        est = [sizes[k] for k in s.keys]
        assert s.est_bytes == sum(est)
        assert 1 <= len(s.keys) <= max_samples
        assert sum(est[:-1]) <= max_bytes  # never over the bound by more than its last sample
        assert len(s.keys) == 1 or sum(est) <= max_bytes  # only a lone sample may pass it
    for split in {s.split for s in specs}:
        assert [s.index for s in specs if s.split == split] == list(range(sum(s.split == split for s in specs)))


def test_byte_bound_cuts_more_shards_in_the_same_order():
    f = _frame(60)
    rng = np.random.default_rng(3)
    est = rng.integers(100, 1000, len(f))
    sizes = dict(zip(f["tile_id"], est.tolist()))
    by_count = shard_specs(f, 8, "group")
    by_bytes = shard_specs(f, 8, "group", 2000, est)
    assert len(by_bytes) > len(by_count)
    assert _ordered(by_bytes) == _ordered(by_count)  # the same samples in the same order, cut elsewhere
    _check_bound(by_bytes, sizes, 8, 2000)
    again = shard_specs(f, 8, "group", 2000, est)
    assert [(s.split, s.index, s.keys, s.est_bytes) for s in again] == \
        [(s.split, s.index, s.keys, s.est_bytes) for s in by_bytes]
    # a bound no shard reaches cuts exactly as the sample bound alone
    loose = shard_specs(f, 8, "group", 10**9, est)
    assert [(s.split, s.keys) for s in loose] == [(s.split, s.keys) for s in by_count]


def test_byte_bound_below_one_sample_gives_one_sample_per_shard():
    f = _frame(30)
    est = np.full(len(f), 5000)
    specs = shard_specs(f, 8, "group", 10, est)
    assert all(len(s.keys) == 1 for s in specs)
    assert sum(len(s.keys) for s in specs) == int(f["selected"].sum())


def test_byte_size_parses_units():
    assert byte_size("r", 1234, "k") == 1234
    assert byte_size("r", "512MB", "k") == 512_000_000
    assert byte_size("r", "1.5 GB", "k") == 1_500_000_000
    assert byte_size("r", "2GiB", "k") == 2 * 2**30
    for bad in ("lots", "5 parsecs", 0, -3, "0MB", True):
        with pytest.raises(InputError, match="shard_max_bytes"):
            byte_size("r.yaml", bad, "output.shard_max_bytes")


@pytest.fixture(scope="module")
def demo_data(demo_recipe):
    return read_recipe_file(demo_recipe)


def _demo(demo_recipe, data, **output):
    d = json.loads(json.dumps(data))
    d["output"] = {**(d.get("output") or {}), **output}
    return load_recipe(demo_recipe, data=d)


def test_als_recipe_records_the_byte_bound(demo_recipe, demo_data):
    r = _demo(demo_recipe, demo_data)
    assert r.shard_max_bytes == DEFAULT_SHARD_MAX_BYTES
    assert r.raw["output"]["shard_max_bytes"] == DEFAULT_SHARD_MAX_BYTES
    r = _demo(demo_recipe, demo_data, shard_max_bytes="8MB")
    assert r.shard_max_bytes == 8_000_000 and r.raw["output"]["shard_max_bytes"] == 8_000_000
    with pytest.raises(InputError, match="shard_max_bytes"):
        _demo(demo_recipe, demo_data, shard_max_bytes="big")


def test_als_plan_cuts_by_estimated_bytes(demo_recipe, demo_data):
    """The ALS demo's tiles are ~1.3 MB each by their headers' point density: a 5 MB bound cuts
    shards of 3 tiles where the sample bound alone (16) cuts 2 shards; a bound below one tile
    gives one tile per shard.  Same plan each time; the default bound leaves the demo's shards."""
    default = make_plan(_demo(demo_recipe, demo_data))
    assert [len(s.keys) for s in default.shards] == [16, 14]
    assert all(0 < s.est_bytes < DEFAULT_SHARD_MAX_BYTES for s in default.shards)

    small = make_plan(_demo(demo_recipe, demo_data, shard_max_bytes="5MB"))
    assert len(small.shards) > len(default.shards)
    assert _ordered(small.shards) == _ordered(default.shards)
    per_tile = [s.est_bytes / len(s.keys) for s in default.shards]
    assert 500_000 < min(per_tile) and max(per_tile) < 5_000_000
    for s in small.shards:
        assert s.est_bytes <= 5_000_000 or len(s.keys) == 1
    again = make_plan(_demo(demo_recipe, demo_data, shard_max_bytes="5MB"))
    assert [(s.keys, s.est_bytes) for s in again.shards] == [(s.keys, s.est_bytes) for s in small.shards]

    tiny = make_plan(_demo(demo_recipe, demo_data, shard_max_bytes=1))
    assert [len(s.keys) for s in tiny.shards] == [1] * len(default.selected)


def test_als_shards_written_stay_near_the_bound(demo_recipe, demo_data, tmp_path):
    """The written tars follow the estimate (the headers' mean density, so a tile denser than its
    files' mean is larger than estimated): none passes the bound by more than one sample."""
    from als_datasets.build import run_build

    bound = 3_000_000
    r = _demo(demo_recipe, demo_data, shard_max_bytes=bound, dir=str(tmp_path / "out"))
    r = load_recipe(demo_recipe, data={**r.raw, "samples_per_project": 3, "projects": r.raw["projects"][:1]})
    plan = make_plan(r)
    assert len(plan.shards) > 1
    run_build(r, plan=plan)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tars = [e for e in manifest["shards"] if e["path"].endswith(".tar")]
    assert len(tars) == len(plan.shards)
    for e, spec in zip(tars, plan.shards):
        with tarfile.open(tmp_path / "out" / e["path"]) as t:
            sizes = {}
            for m in t.getmembers():
                key = m.name.split(".")[0]
                sizes[key] = sizes.get(key, 0) + 512 + -(-m.size // 512) * 512
        assert list(sizes) == spec.keys
        assert e["bytes"] - max(sizes.values()) <= bound
        assert 0.5 * spec.est_bytes < e["bytes"] < 2 * spec.est_bytes  # an estimate, not a measure


def test_raster_plan_cuts_by_pixel_bytes(tmp_path):
    """A DEM patch is 1 × P × P float32 + json: a bound of about two patches cuts two per shard."""
    src = ROOT / "builders" / "dem-demo.yaml"
    data = read_recipe_file(src)
    base = load_recipe(src, data=data)
    default = make_plan(base)
    p = base.patch_px
    one = 4 * p * p
    assert all(one * len(s.keys) < s.est_bytes < (one + 8192) * len(s.keys) for s in default.shards)
    per = default.shards[0].est_bytes // len(default.shards[0].keys)  # every patch: same size
    data["output"] = {**(data.get("output") or {}), "shard_max_bytes": 2 * per + per // 2}
    small = make_plan(load_recipe(src, data=data))
    assert len(small.shards) > len(default.shards)
    assert [len(s.keys) for s in small.shards] == [2] * (len(small.selected) // 2) + [1] * (len(small.selected) % 2)
    assert _ordered(small.shards) == _ordered(default.shards)
