"""Real LAS/LAZ/COPC files (international feet, US survey feet, metres, COPC) → tiles of the
right size in metres, inside the right place."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import webdataset as wds
from synth_inputs import DATA, SHARED, landcover_around, write_recipe

from als_datasets.build import run_build
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.recipe import load_recipe

# file, tile size, grid res, expected lon/lat centre, z range in metres (from SOURCES.md)
CASES = [
    ("autzen_trim.laz", 100, 5, (-123.071, 44.051), (406.26 * 0.3048, 520.51 * 0.3048)),
    ("mvk-thin.las", 500, 25, (-91.146, 32.989), (95.79 * 0.3048006, 228.73 * 0.3048006)),
    ("file_with_both_wkt_and_geotiff_vlrs.las", 10, 0.5, (-97.063, 41.455), (1352.70 * 0.3048006, 1403.96 * 0.3048006)),
    ("Topography.laz", 100, 5, (-70.916, 47.609), (788.99, 829.76)),
]


def _path(name):
    p = DATA / "als" / name
    if p.is_file():
        return p
    p = SHARED / "als" / name
    if not p.is_file():
        pytest.skip(f"{name} not available (../shared/data absent)")
    return p


def _build(tmp_path, src, tile, res, crs=None, n=3):
    info = inspect_pointcloud(src, crs_override=crs)
    fp = footprint_lonlat(info)
    landcover_around(tmp_path / "lc.tif", fp.bounds, res=min(res, 5.0))
    proj = {"name": "p1", "pointclouds": [str(src)]}
    if crs:
        proj["pointcloud_crs"] = crs
    rp = write_recipe(tmp_path / "r.yaml", name="real", tile_size_m=tile, grid_res_m=res, samples_per_project=n,
                      landcover={"path": "lc.tif"}, projects=[proj], output={"dir": "out", "shard_max_samples": 2})
    recipe = load_recipe(rp)
    run_build(recipe)
    return recipe.out_dir


def _samples(out):
    tars = sorted(str(p) for p in (out / "webdataset" / "train").glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False).decode())


@pytest.mark.parametrize("name,tile,res,centre,zr", CASES, ids=[c[0] for c in CASES])
def test_real_file_tiles_in_metres(tmp_path, name, tile, res, centre, zr):
    out = _build(tmp_path, _path(name), tile, res)
    samples = _samples(out)
    assert samples, "no sample written"
    for s in samples:
        xyz = s["xyz.npy"]
        meta = s["json"]
        assert xyz.dtype == np.float32 and xyz.shape[1] == 3
        # x, y relative to the tile's lower-left corner, in metres: inside [0, tile]
        assert xyz[:, :2].min() >= -1e-3 and xyz[:, :2].max() <= tile + 1e-3
        # z converted to metres (a tile keeps most of the file's z range)
        assert zr[0] - 1 <= xyz[:, 2].min() and xyz[:, 2].max() <= zr[1] + 1
        assert meta["point_count"] == len(xyz)
        assert meta["lon"] == pytest.approx(centre[0], abs=0.02) and meta["lat"] == pytest.approx(centre[1], abs=0.02)
        assert meta["bounds_utm"][2] - meta["bounds_utm"][0] == tile
        assert meta["crs"].startswith("EPSG:326")
    # tiles full of points span (almost) the whole tile in metres — not 0.3048× or 3.28× of it
    spans = [np.ptp(s["xyz.npy"][:, 0]) for s in samples if len(s["xyz.npy"]) > 200]
    assert spans and max(spans) > 0.75 * tile


def test_copc_wrong_units_refused_then_corrected(tmp_path):
    src = _path("simple.copc.laz")
    # the project boundary is where the points really are (Eugene, OR); the file claims metres
    right = inspect_pointcloud(src, crs_override="EPSG:2992")
    fp = footprint_lonlat(right)
    (tmp_path / "b.geojson").write_text(
        '{"type":"Polygon","coordinates":[[[%f,%f],[%f,%f],[%f,%f],[%f,%f],[%f,%f]]]}' % (
            fp.bounds[0], fp.bounds[1], fp.bounds[2], fp.bounds[1], fp.bounds[2], fp.bounds[3],
            fp.bounds[0], fp.bounds[3], fp.bounds[0], fp.bounds[1]))
    landcover_around(tmp_path / "lc.tif", fp.bounds)
    proj = {"name": "autzen", "boundary": "b.geojson", "pointclouds": [str(src)]}
    base = dict(name="copc", tile_size_m=100, grid_res_m=5, samples_per_project=2, landcover={"path": "lc.tif"},
                output={"dir": "out"})
    with pytest.raises(InputError) as e:
        run_build(load_recipe(write_recipe(tmp_path / "r.yaml", **base, projects=[proj])))
    msg = str(e.value)
    assert "simple.copc.laz" in msg and "\n" not in msg and "feet" in msg.lower()
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    proj["pointcloud_crs"] = "EPSG:2992"
    recipe = load_recipe(write_recipe(tmp_path / "r2.yaml", **base, projects=[proj]))
    run_build(recipe)
    samples = _samples(recipe.out_dir)
    assert samples
    for s in samples:
        assert s["xyz.npy"][:, :2].max() <= 100 + 1e-3
        assert s["json"]["lon"] == pytest.approx(-123.07, abs=0.03)
