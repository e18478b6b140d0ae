"""Per-tile terrain rasters (recipe key ``terrain_rasters``): the gridding rule on hand-made
points, and a build whose Parquet, WebDataset and declared features agree."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, write_recipe

from als_datasets.errors import InputError
from als_datasets.kinds.als.extract.terrain import RASTER_MEMBERS, terrain_cell_m, terrain_rasters

MVK = DATA / "als" / "mvk-thin.las"


def test_gridding_rule():
    # a 4 m tile at 1 m: rows from the north, a point on an edge belongs to the cell east / north
    xyz = np.array([
        [0.5, 3.5, 10.0],   # NW cell, ground
        [0.7, 3.2, 12.0],   # NW cell, ground: mean 11
        [0.6, 3.9, 20.0],   # NW cell, vegetation: DSM 20
        [1.0, 0.0, 5.0],    # on the edge x = 1, y = 0: column 1, the south row; ground
        [3.9, 3.9, 7.0],    # NE cell, vegetation only (no ground)
    ], np.float32)
    cls = np.array([2, 2, 5, 2, 5], np.uint8)
    inten = np.array([100, 200, 300, 50, 10], np.uint16)
    r, ground = terrain_rasters(xyz, inten, cls, 4.0, 1.0)
    assert set(r) == set(RASTER_MEMBERS)
    for a in r.values():
        assert a.dtype == np.float32 and a.shape == (4, 4)
    dtm, dsm, ndsm, it = (r[m] for m in RASTER_MEMBERS)
    assert dtm[0, 0] == 11.0 and dtm[3, 1] == 5.0 and ground == 2 / 16
    assert np.isfinite(dtm).all()  # gaps filled from the nearest cell with ground
    assert dtm[0, 1] == 11.0 and dtm[3, 2] == 5.0
    assert dsm[0, 0] == 20.0 and dsm[0, 3] == 7.0
    assert dsm[1, 1] == dtm[1, 1] and ndsm[1, 1] == 0.0  # no return: DSM = DTM
    assert ndsm[0, 0] == 9.0
    assert it[0, 0] == 200.0 and it[3, 1] == 50.0 and it[2, 2] == 0.0


def test_no_ground_gives_nan_dtm():
    xyz = np.array([[0.5, 0.5, 3.0]], np.float32)
    r, ground = terrain_rasters(xyz, np.zeros(1, np.uint16), np.array([5], np.uint8), 2.0, 1.0)
    assert ground == 0.0 and np.isnan(r["dtm.npy"]).all() and r["dsm.npy"][1, 0] == 3.0


@pytest.mark.parametrize("value,cell", [(None, 0.0), (False, 0.0), (True, 1.0), ({"cell_m": 2}, 2.0), ({}, 1.0)])
def test_recipe_values(value, cell):
    assert terrain_cell_m(value) == cell


@pytest.mark.parametrize("bad", ["yes", {"cell_m": 0}, {"cell_m": -1}, {"size": 1}, 3])
def test_recipe_values_refused(bad):
    with pytest.raises(ValueError, match="terrain_rasters"):
        terrain_cell_m(bad)


@pytest.fixture
def recipe_path(tmp_path):
    landcover_around(tmp_path / "lc.tif", __import__("als_datasets.kinds.als.sources.pointcloud", fromlist=["x"])
                     .footprint_lonlat(__import__("als_datasets.kinds.als.sources.pointcloud", fromlist=["x"])
                                       .inspect_pointcloud(MVK)).bounds,
                     pattern=lambda h, w: (41 + (np.indices((h, w))[1] < w // 3) * -19))
    return write_recipe(tmp_path / "r.yaml", name="mvk", tile_size_m=500, grid_res_m=25, samples_per_project=3,
                        landcover={"path": "lc.tif"}, projects=[{"name": "mvk", "pointclouds": [str(MVK)]}],
                        terrain_rasters={"cell_m": 2}, output={"dir": "out", "shard_max_samples": 2})


def test_cell_must_divide_the_tile(tmp_path, recipe_path):
    from als_datasets.recipe import load_recipe

    text = recipe_path.read_text().replace("cell_m: 2", "cell_m: 3")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(InputError, match="must divide tile_size_m"):
        load_recipe(bad)


def test_build_with_terrain_rasters(tmp_path, recipe_path):
    import webdataset as wds
    from datasets import load_dataset

    from als_datasets.build import run_build
    from als_datasets.dataset.card import load_config
    from als_datasets.dataset.layout import validate
    from als_datasets.recipe import load_recipe

    out = run_build(load_recipe(recipe_path, out_dir=tmp_path / "a")).out_dir
    assert validate(out) == []
    pq = load_dataset(str(out), split="train")
    wd = load_config(out, "webdataset", split="train")
    assert len(pq) == len(wd) > 0
    assert pq.features == wd.features
    for m in RASTER_MEMBERS:
        assert m in pq.features
    by_key = {r["__key__"]: r for r in wd}
    for row in pq:
        other = by_key[row["__key__"]]
        assert row["json"] == other["json"]
        for m in RASTER_MEMBERS:
            assert np.array_equal(np.asarray(row[m], np.float32), np.asarray(other[m], np.float32), equal_nan=True)
    tars = sorted(str(p) for p in (out / "webdataset" / "train").glob("*.tar"))
    s = next(iter(wds.WebDataset(tars, shardshuffle=False).decode()))
    dtm = s["dtm.npy"]
    assert dtm.dtype == np.float32 and dtm.shape == (250, 250)
    j = s["json"]
    assert j["raster_cell_m"] == 2.0 and j["raster_shape"] == [250, 250]
    assert j["raster_origin_utm"] == [j["bounds_utm"][0], j["bounds_utm"][3]]
    assert 0 < j["raster_ground_fraction"] <= 1
    nd = s["ndsm.npy"]
    assert np.allclose(nd, s["dsm.npy"] - dtm, atol=1e-3)
    assert (nd >= 0).mean() > 0.9  # below 0 only where the DTM was filled from a neighbouring cell
    card = (out / "README.md").read_text()
    assert "dtm.npy" in card and "Cell membership" in card
    # same bytes again (determinism) with two workers
    b = run_build(load_recipe(recipe_path, out_dir=tmp_path / "b"), workers=2).out_dir

    def digest(d):
        return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.rglob("*")) if p.is_file() and p.suffix in (".tar", ".parquet")}
    assert digest(out) == digest(b)


def test_dem_build_from_the_als_dtms(tmp_path, recipe_path):
    """The ALS build's DTMs (and nDSMs) become a kind: dem build whose patches are cut from them."""
    import webdataset as wds

    from als_datasets.build import run_build
    from als_datasets.kinds.als.dem_export import export_dem_recipe
    from als_datasets.recipe import load_recipe

    als = run_build(load_recipe(recipe_path, out_dir=tmp_path / "als")).out_dir
    rp = export_dem_recipe(als, tmp_path / "dem", "dtm", patch_size_px=50)
    dem_recipe = load_recipe(rp, out_dir=tmp_path / "dem-out")
    assert dem_recipe.kind == "dem"
    out = run_build(dem_recipe).out_dir
    tars = sorted(str(p) for p in (out / "webdataset").glob("*/*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert samples
    # every patch is a piece of one tile's DTM, cell for cell
    dtms = {}
    for tar in sorted((als / "webdataset").glob("*/*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False).decode():
            dtms[s["__key__"]] = s["dtm.npy"]
    s = samples[0]
    pix = s["pixels.npy"]
    assert pix.shape == (1, 50, 50) and pix.dtype == np.float32
    tile = s["json"]["scene"].rsplit("-dtm", 1)[0]
    d = dtms[tile]
    hits = [(r, c) for r in range(0, 250, 50) for c in range(0, 250, 50) if np.array_equal(d[r:r + 50, c:c + 50], pix[0])]
    assert hits
    rp2 = export_dem_recipe(als, tmp_path / "dem", "ndsm", patch_size_px=50)
    assert rp2.name == "dem-ndsm.yaml" and len(list((tmp_path / "dem" / "ndsm").glob("*.tif"))) == len(dtms)
    with pytest.raises(InputError, match="layer"):
        export_dem_recipe(als, tmp_path / "dem", "dsm")
