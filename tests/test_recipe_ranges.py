"""Every number of a recipe is range-checked when the recipe is loaded (issue 12 item 11): one line
naming the recipe file and the key, before any work — never a ``ValueError`` from deep inside the
build, nor a build that runs with a nonsense value (``shard_max_samples: -5`` wrote no shard)."""

from __future__ import annotations

import pytest
import yaml

from als_datasets.errors import InputError
from als_datasets.recipe import load_recipe

ALS = {"kind": "als", "name": "x", "landcover": {"path": "lc.tif"}, "projects": [{"name": "p", "pointclouds": ["a.las"]}]}
RASTER = {"kind": "satellite", "name": "s", "scenes": [{"path": "s.tif"}]}

#: (recipe keys on top of ALS, what the one-line error must say)
ALS_CASES = [
    ({"output": {"shard_max_samples": 0}}, "output.shard_max_samples must be in [1, inf], got 0"),
    ({"output": {"shard_max_samples": -5}}, "output.shard_max_samples must be in [1, inf], got -5"),
    ({"output": {"shard_max_samples": 2.5}}, "output.shard_max_samples must be an integer, got 2.5"),
    ({"output": "out/"}, "output must be a mapping"),
    ({"output": {"formats": "parquet"}}, "output.formats must be a list"),
    ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),
    ({"seed": 2**32}, "seed must be in [0, 4294967295]"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"seed": True}, "seed must be an integer, got True"),
    ({"samples_per_project": 0}, "samples_per_project must be in [1, inf], got 0"),
    ({"draws": -3}, "draws must be in [1, inf], got -3"),
    ({"tile_size_m": -500}, "tile_size_m must be in (0, inf], got -500"),
    ({"grid_res_m": 0}, "grid_res_m must be in (0, inf], got 0"),
    ({"tile_size_m": float("nan")}, "tile_size_m must be a number, got nan"),
    ({"min_class_fraction": 0}, "min_class_fraction must be in (0, 1], got 0"),
    ({"min_class_fraction": 1.5}, "min_class_fraction must be in (0, 1], got 1.5"),
    ({"slope_classes_deg": {"flat": [0, 5], "steep": [17, 95]}}, "slope_classes_deg.steep must be in [0, 90], got 95"),
    ({"slope_classes_deg": {"flat": [-1, 5]}}, "slope_classes_deg.flat must be in [0, 90], got -1"),
    ({"slope_classes_deg": {"flat": [5, 5]}}, "slope_classes_deg.flat: low must be below high"),
    ({"slope_classes_deg": {"flat": 5}}, "slope_classes_deg.flat must be [low, high] in degrees"),
    ({"slope_classes_deg": [0, 5]}, "slope_classes_deg must map class names"),
    ({"outlier": {"mean_k": -1}}, "outlier.mean_k must be in [0, inf], got -1"),
    ({"outlier": {"mean_k": 2.5}}, "outlier.mean_k must be an integer, got 2.5"),
    ({"outlier": {"multiplier": 0}}, "outlier.multiplier must be in (0, inf], got 0"),
    ({"outlier": {"mean_k": 12, "multipler": 2}}, "outlier: unknown key(s): multipler"),
    ({"outlier": "strong"}, "outlier must be a mapping"),
    ({"drop_classes": [7, 256]}, "drop_classes must be in [0, 255], got 256"),
    ({"drop_classes": [-1]}, "drop_classes must be in [0, 255], got -1"),
    ({"drop_classes": ["noise"]}, "drop_classes must be an integer, got 'noise'"),
    ({"holdout_fraction": 1}, "holdout_fraction must be in [0, 1), got 1"),
    ({"holdout_fraction": -0.1}, "holdout_fraction must be in [0, 1), got -0.1"),
    ({"landcover": {"path": "lc.tif", "classes": {"forest": [41.5]}}}, "landcover.classes.forest must be an integer"),
]

RASTER_CASES = [
    ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),
    ({"output": {"shard_max_samples": -5}}, "output.shard_max_samples must be in [1, inf], got -5"),
    ({"stride_px": 0}, "stride_px must be in [1, inf], got 0"),
    ({"continents": {"nearest_max_km": -1}}, "continents.nearest_max_km must be in [0, inf], got -1"),
    ({"continents": {"nearest_max_km": "far"}}, "continents.nearest_max_km must be a number, got 'far'"),
    ({"biomes": {"raster": "b.tif", "table": "b.csv", "nearest_px": -1}}, "biomes.nearest_px must be in [0, inf]"),
    ({"scenes": [{"path": "s.tif", "resolution": 0}]}, "scenes[0].resolution must be in (0, inf], got 0"),
    ({"scenes": [{"path": "s.tif", "resolution": "fine"}]}, "scenes[0].resolution must be a number"),
    ({"scenes": [{"path": "s.tif", "nodata": "none"}]}, "scenes[0].nodata must be a number, got 'none'"),
    ({"spectral_beta": float("inf")}, "spectral_beta must be a number, got inf"),
    ({"holdout_fraction": 1.0}, "holdout_fraction must be in [0, 1), got 1.0"),
    ({"landcover": {"path": "lc.tif", "classes": {"forest": [1.5]}}}, "landcover.classes.forest must be an integer"),
    ({"output": []}, "output must be a mapping"),
]


def _load(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, load_recipe(path)


@pytest.mark.parametrize("extra,message", ALS_CASES, ids=[m.split(" ")[0] + f"-{i}" for i, (_, m) in enumerate(ALS_CASES)])
def test_als_recipe_numbers(tmp_path, extra, message):
    with pytest.raises(InputError) as e:
        _load(tmp_path, {**ALS, **extra})
    assert str(e.value) == f"{tmp_path / 'recipe.yaml'}: {message}" or (
        str(e.value).startswith(f"{tmp_path / 'recipe.yaml'}: {message}")), str(e.value)


@pytest.mark.parametrize("kind", ["satellite", "dem"])
@pytest.mark.parametrize("extra,message", RASTER_CASES,
                         ids=[m.split(" ")[0] + f"-{i}" for i, (_, m) in enumerate(RASTER_CASES)])
def test_raster_recipe_numbers(tmp_path, kind, extra, message):
    with pytest.raises(InputError) as e:
        _load(tmp_path, {**RASTER, "kind": kind, **extra})
    assert str(e.value).startswith(f"{tmp_path / 'recipe.yaml'}: {message}"), str(e.value)


def test_good_numbers_still_load(tmp_path):
    _, r = _load(tmp_path, {**ALS, "seed": 0, "min_class_fraction": 1, "outlier": None, "drop_classes": [],
                            "slope_classes_deg": {"all": [0, 90]}, "output": {"shard_max_samples": 1},
                            "samples_per_project": 40.0, "holdout_fraction": 0.5})
    assert (r.seed, r.outlier_k, r.drop_classes, r.shard_max_samples, r.samples_per_project) == (0, 0, (), 1, 40)
    _, r = _load(tmp_path, {**ALS, "seed": 2**32 - 1, "outlier": {"mean_k": 0}, "drop_classes": 7})
    assert (r.seed, r.outlier_k, r.outlier_multiplier, r.drop_classes) == (2**32 - 1, 0, 2.2, (7,))
    _, r = _load(tmp_path, {**RASTER, "kind": "dem", "scenes": [{"path": "d.tif", "nodata": float("nan"),
                                                                   "resolution": 30}], "stride_px": None})
    assert r.stride_px == r.patch_px


def test_recipe_slope_classes_replace_the_defaults(tmp_path):
    """A recipe's ``slope_classes_deg`` is the whole set: the defaults it leaves out are not kept."""
    _, r = _load(tmp_path, {**ALS, "slope_classes_deg": {"gentle": [0, 10], "rugged": [10, 90]}})
    assert r.slope_classes == {"gentle": (0.0, 10.0), "rugged": (10.0, 90.0)}
    _, r = _load(tmp_path, dict(ALS))
    assert list(r.slope_classes) == ["flat", "sloped", "steep"]
