"""The embedded synthetic satellite and DEM demos (als_datasets.demo.raster): layouts, determinism,
continents, masks, zero fill, overlap, spectral-entropy spread, DEM conventions."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
import yaml

from als_datasets.demo.raster import (
    ensure_dem_demo,
    ensure_satellite_demo,
    generate_dem_demo,
    generate_satellite_demo,
)
from als_datasets.errors import InputError
from als_datasets.kinds.raster.entropy import spectral_entropy
from als_datasets.kinds.raster.labels import ContinentLookup
from als_datasets.kinds.raster.scenes import (
    cloud_fraction,
    normalise_band_name,
    open_scene,
    patch_bounds,
    patch_grid,
    patch_quality,
    read_patches,
)

S2_13 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
S2_L2A = [b for b in S2_13 if b != "B10"]
#: name -> (continent, band names, dtype, nodata, EPSG, patch grid (cols, rows) at 96 px)
EXPECTED = {
    "europe_s2l2a": ("Europe", S2_L2A, "uint16", 0.0, 32632, (6, 6)),
    "europe_s2l2a_later": ("Europe", S2_L2A, "uint16", 0.0, 32632, (6, 6)),
    "africa_s2l1c": ("Africa", S2_13, "int16", 0.0, 4326, (5, 5)),
    "southamerica_s2l1c": ("South America", S2_13, "uint16", 0.0, 32721, (5, 5)),
    "asia_landsat8": ("Asia", ["B1", "B2", "B3", "B4", "B5", "B6", "B7"], "uint16", None, 32643, (7, 7)),
    "oceania_landsat5": ("Oceania", ["B1", "B2", "B3", "B4", "B5", "B7"], "int16", -999.0, 32755, (6, 6)),
    "northamerica_s2l2a": ("North America", S2_L2A, "uint16", 0.0, 32613, (6, 6)),
}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".complete"}


@pytest.fixture(scope="module")
def sat(tmp_path_factory):
    """The satellite demo through ensure_satellite_demo (default cache folder), its recipe and scenes."""
    recipe = ensure_satellite_demo()
    rec = yaml.safe_load(recipe.read_text())
    scenes = {s["name"]: open_scene(s, base_dir=recipe.parent) for s in rec["scenes"]}
    return recipe, rec, scenes


@pytest.fixture(scope="module")
def sat_patches(sat):
    """Per scene: cells, pixels, valid mask, quality (nodata / cloud fractions) at the recipe's patch size."""
    _, rec, scenes = sat
    p = rec["patch_size_px"]
    out = {}
    for name, s in scenes.items():
        cells = patch_grid(s, p)
        px, valid = read_patches(s, cells, p)
        out[name] = dict(cells=cells, pixels=px, valid=valid,
                         quality=patch_quality(valid, cloud_fraction(s, cells, p)))
    return out


@pytest.fixture(scope="module")
def dem():
    recipe = ensure_dem_demo()
    rec = yaml.safe_load(recipe.read_text())
    return recipe, rec


def test_ensure_satellite_demo_cache_and_recipe(sat):
    recipe, rec, _ = sat
    folder = recipe.parent
    assert recipe.name == "satellite.yaml" and folder.name == "satellite-demo-v1-seed0"
    assert folder.parent == Path(os.environ["ALS_DATASETS_CACHE"]).absolute()
    assert (folder / ".complete").is_file() and (folder / "README.txt").is_file()
    mtime = recipe.stat().st_mtime_ns
    assert ensure_satellite_demo() == recipe and recipe.stat().st_mtime_ns == mtime  # cached, not regenerated
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 40e6
    for key, value in dict(kind="satellite", name="satellite-demo", strategy="global", seed=41,
                           samples=120, patch_size_px=96, max_nodata_fraction=0.05, max_cloud_fraction=0.1,
                           max_overlap=0.1, license="cc0-1.0").items():
        assert rec[key] == value, key
    assert rec["spectral_entropy"] == {"bins": 256, "base": "e"}
    assert rec["sources"][0]["license"] == "CC0-1.0"
    names = [s["name"] for s in rec["scenes"]]
    assert names == list(EXPECTED) and all(n.replace("_", "").replace("-", "").isalnum() for n in names)
    assert all(isinstance(s["date"], str) for s in rec["scenes"])  # quoted, not a YAML date
    for s in rec["scenes"]:
        assert not Path(s["path"]).is_absolute() and (folder / s["path"]).exists()
        if s["sensor"] == "sentinel-2-l2a":
            assert s["cloud_mask"] == {"band": "SCL", "classes": [3, 8, 9, 10]}


def test_satellite_recipe_validates(sat):
    from als_datasets.kinds.raster.recipe import load_raster_recipe

    recipe, rec, _ = sat
    r = load_raster_recipe(rec, recipe)
    assert r.kind == "satellite" and len(r.scenes) == len(EXPECTED) and r.patch_px == 96


def test_satellite_demo_is_deterministic(sat, tmp_path):
    recipe, _, _ = sat
    again = generate_satellite_demo(tmp_path / "again", seed=0)
    assert again.name == "satellite.yaml"
    assert _tree_digest(tmp_path / "again") == _tree_digest(recipe.parent)
    with rasterio.open(recipe.parent / "scenes" / "africa_s2l1c.tif") as ds:
        assert not any("DATETIME" in k.upper() for k in ds.tags())


def test_every_scene_opens_as_designed(sat, sat_patches):
    _, rec, scenes = sat
    lookup = ContinentLookup()
    continents = set()
    for name, (continent, bands, dtype, nodata, epsg, grid) in EXPECTED.items():
        s = scenes[name]
        assert [normalise_band_name(b) for b in s.band_names] == bands, name
        assert s.dtype == dtype and s.nodata == nodata and s.crs.to_epsg() == epsg, name
        assert 500 <= s.width <= 800 and 500 <= s.height <= 800, name
        cells = sat_patches[name]["cells"]
        assert (max(c for c, _ in cells) + 1, max(r for _, r in cells) + 1) == grid, name
        assert sat_patches[name]["pixels"].shape[1:] == (len(bands), 96, 96)
        cx, cy = s.transform * (s.width / 2, s.height / 2)
        lon, lat = pyproj.Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
        got, rule = lookup.lookup(lon, lat)
        assert (got.item(), rule.item()) == (continent, "within"), name
        continents.add(got.item())
        # the 4326 scene is ~10 m, the UTM ones at their sensor's resolution
        if epsg == 4326:
            assert s.res == pytest.approx(9e-5)
        else:
            assert s.res == (30.0 if "landsat" in name else 10.0)
    assert len(continents) >= 4 and len(continents) == 6


def test_mixed_resolution_folder_lands_on_the_10m_grid(sat, sat_patches):
    recipe, _, scenes = sat
    folder = recipe.parent / "scenes" / "europe_s2l2a"
    res = {}
    for f in sorted(folder.glob("*.tif")):
        with rasterio.open(f) as ds:
            res[f.stem] = ds.res[0]
            assert ds.nodata == 0 and ds.dtypes[0] == ("uint8" if f.stem == "SCL" else "uint16")
    assert res["B02"] == res["B03"] == res["B04"] == res["B08"] == 10.0
    assert {res[b] for b in ("B05", "B06", "B07", "B8A", "B11", "B12", "SCL")} == {20.0}
    assert res["B01"] == res["B09"] == 60.0 and "B10" not in res
    s = scenes["europe_s2l2a"]
    assert (s.res, s.width, s.height) == (10.0, 600, 600)
    px = sat_patches["europe_s2l2a"]["pixels"][0]
    names = [normalise_band_name(b) for b in s.band_names]
    b1, b5, b2 = px[names.index("B1")], px[names.index("B5")], px[names.index("B2")]
    assert np.array_equal(b1, np.repeat(np.repeat(b1[::6, ::6], 6, 0), 6, 1))  # 60 m: 6 x 6 blocks
    assert np.array_equal(b5, np.repeat(np.repeat(b5[::2, ::2], 2, 0), 2, 1))  # 20 m: 2 x 2 blocks
    assert not np.array_equal(b2, np.repeat(np.repeat(b2[::2, ::2], 2, 0), 2, 1))  # 10 m: native


def test_scl_has_cloud_and_shadow(sat, sat_patches):
    recipe, _, scenes = sat
    with rasterio.open(recipe.parent / "scenes" / "europe_s2l2a" / "SCL.tif") as ds:
        scl = ds.read(1)
    values = set(np.unique(scl).tolist())
    assert {3, 8, 9, 10} <= values and {4, 5, 6} <= values
    share = np.isin(scl, [3, 8, 9, 10]).mean()
    assert 0.03 < share < 0.2
    cf = sat_patches["europe_s2l2a"]["quality"]["cloud_fraction"]
    assert (cf > 0.1).sum() >= 2 and (cf == 0).sum() >= 10  # some patches dropped, most clean
    assert scenes["europe_s2l2a"].cloud_mask is not None


def test_landsat8_zero_fill_is_detected(sat, sat_patches):
    recipe, _, scenes = sat
    s = scenes["asia_landsat8"]
    assert s.zero_is_nodata is True and s.nodata is None
    files = sorted((recipe.parent / "scenes" / "asia_landsat8").glob("*.tif"))
    assert [f.stem.rsplit("_", 1)[1] for f in files] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    assert (recipe.parent / "scenes" / "asia_landsat8").glob("*_MTL.txt")
    masks = []
    for f in files:
        with rasterio.open(f) as ds:
            assert ds.nodata is None
            masks.append(ds.read(1) == 0)
    zero = np.mean(masks[0])
    assert 0.2 < zero < 0.3
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])  # edges differ between bands
    q = sat_patches["asia_landsat8"]["quality"]["nodata_fraction"]
    assert (q == 0).sum() >= 20 and (q > 0.5).sum() >= 5


def test_landsat5_multiband_nodata_and_negative_values(sat, sat_patches):
    recipe, rec, scenes = sat
    spec = next(s for s in rec["scenes"] if s["name"] == "oceania_landsat5")
    assert spec["bands"] == ["B1", "B2", "B3", "B4", "B5", "B7"]
    with rasterio.open(recipe.parent / spec["path"]) as ds:
        assert ds.count == 6 and ds.dtypes[0] == "int16" and ds.nodata == -999
        assert not any(ds.descriptions)
        a = ds.read()
    void = (a == -999).all(axis=0)
    assert 0.04 < void.mean() < 0.15 and ((a == -999).any(axis=0) == void).all()
    assert ((a < 0) & (a != -999)).any()  # water reflectance slightly below 0 is valid data
    assert scenes["oceania_landsat5"].zero_is_nodata is False


def test_l1c_multiband_descriptions(sat):
    recipe, _, scenes = sat
    for name, dtype in (("africa_s2l1c", "int16"), ("southamerica_s2l1c", "uint16")):
        with rasterio.open(recipe.parent / "scenes" / f"{name}.tif") as ds:
            assert ds.count == 13 and list(ds.descriptions) == S2_13 and ds.dtypes == (dtype,) * 13
            assert ds.nodata == 0
        assert scenes[name].cloud_mask is None


def test_overlapping_scenes(sat, sat_patches):
    _, _, scenes = sat
    a, e = scenes["europe_s2l2a"], scenes["europe_s2l2a_later"]
    assert a.crs == e.crs and a.date != e.date and a.sensor == e.sensor
    fa = shapely.box(*a.transform * (0, a.height), *a.transform * (a.width, 0))
    fe = shapely.box(*e.transform * (0, e.height), *e.transform * (e.width, 0))
    assert 0.3 <= fa.intersection(fe).area / fa.area <= 0.5
    # patches of the two scenes overlap each other, with valid data in the overlap
    ba = patch_bounds(a, sat_patches["europe_s2l2a"]["cells"])
    be = patch_bounds(e, sat_patches["europe_s2l2a_later"]["cells"])
    pa, pe = shapely.box(*ba.T), shapely.box(*be.T)
    ok_e = sat_patches["europe_s2l2a_later"]["quality"]["nodata_fraction"] == 0
    hit = shapely.area(shapely.intersection(pa[:, None], pe[None, ok_e])) > 0.1 * 960 * 960
    assert hit.sum() >= 10


def test_spectral_entropy_spans_a_wide_range(sat, sat_patches):
    _, rec, _ = sat
    ents, by_scene = [], {}
    for name, d in sat_patches.items():
        q = d["quality"]
        cloudy = np.nan_to_num(q["cloud_fraction"]) > rec["max_cloud_fraction"]
        keep = (q["nodata_fraction"] <= rec["max_nodata_fraction"]) & ~cloudy
        e = spectral_entropy(d["pixels"][keep], d["valid"][keep])
        ents.append(e)
        by_scene[name] = e
    ent = np.concatenate(ents)
    assert len(ent) >= 150
    assert ent.min() < 3.0 and ent.max() > 5.0 and np.percentile(ent, 95) - np.percentile(ent, 5) > 2.0
    assert by_scene["africa_s2l1c"].min() < 2.8  # calm desert and river
    assert max(e.max() for e in by_scene.values()) > 5.1  # urban / field mosaics


def test_ensure_refuses_a_foreign_folder(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        ensure_dem_demo(cache_dir=folder)


def test_dem_demo(dem, tmp_path):
    recipe, rec = dem
    assert recipe.name == "dem.yaml" and recipe.parent.name == "dem-demo-v1-seed0"
    for key, value in dict(kind="dem", name="dem-demo", strategy="random", seed=41, samples=60,
                           patch_size_px=64, max_nodata_fraction=0.0, license="cc0-1.0").items():
        assert rec[key] == value, key
    lookup = ContinentLookup()
    crs, continents, voids = set(), set(), {}
    for spec in rec["scenes"]:
        s = open_scene(spec, base_dir=recipe.parent)
        assert len(s.bands) == 1 and s.dtype == "float32" and s.nodata == -9999.0
        assert 400 <= s.width <= 600 and 400 <= s.height <= 600
        with rasterio.open(recipe.parent / spec["path"]) as ds:
            z = ds.read(1)
            assert ds.nodata == -9999.0 and ds.count == 1
            crs.add(ds.crs.to_epsg())
            res_m = ds.res[0] * (111320 * np.cos(np.radians(ds.xy(ds.height // 2, ds.width // 2)[1]))
                                 if ds.crs.is_geographic else 1.0)
            assert 25 < res_m < 35
        voids[spec["name"]] = (z == -9999).mean()
        valid = z[z != -9999]
        cx, cy = s.transform * (s.width / 2, s.height / 2)
        lon, lat = pyproj.Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
        continents.add(lookup.lookup(lon, lat)[0].item())
        if spec["name"] == "alps_dem":
            assert valid.max() - valid.min() > 1500
        if spec["name"] == "texas_coast_dem":
            assert (valid == 0).mean() > 0.1 and valid.min() == 0 and valid.max() < 60
        assert len(patch_grid(s, 64)) >= 36
    assert 4326 in crs and len(crs) == 3 and len(continents) >= 2
    assert 0.005 < voids["alps_dem"] < 0.1 and sum(v > 0 for v in voids.values()) == 1
    generate_dem_demo(tmp_path / "again", seed=0)
    assert _tree_digest(tmp_path / "again") == _tree_digest(recipe.parent)
    generate_dem_demo(tmp_path / "other", seed=1)
    assert _tree_digest(tmp_path / "other")["dems/alps.tif"] != _tree_digest(recipe.parent)["dems/alps.tif"]
