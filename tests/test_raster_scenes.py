"""Satellite scenes: band mapping, common grid, windowed patch reads, masks, real shared scenes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from als_datasets.errors import InputError
from als_datasets.kinds.raster.scenes import (
    detect_zero_fill,
    normalise_band_name,
    open_scene,
    patch_bounds,
    patch_grid,
    patch_lonlat,
    patch_quality,
    read_cloud,
    read_patches,
)

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 4200000.0  # upper-left corner of every synthetic scene


def write_tif(path, arrays, res, *, x0=X0, y0=Y0, crs=CRS, nodata=None, descriptions=None):
    """Write (C, H, W) or (H, W) ``arrays`` as a GeoTIFF on a north-up grid."""
    a = np.asarray(arrays)
    a = a[None] if a.ndim == 2 else a
    kw = dict(driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0], dtype=a.dtype,
              transform=from_origin(x0, y0, res, res))
    if crs is not None:
        kw["crs"] = crs
    if nodata is not None:
        kw["nodata"] = nodata
    with rasterio.open(path, "w", **kw) as ds:
        ds.write(a)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A 4-band 10 m file and a folder of 10 m / 20 m band files + SCL, seeded, known values."""
    root = tmp_path_factory.mktemp("synth")
    rng = np.random.default_rng(20240607)
    fine = {b: (rng.integers(1, 1000, (200, 200)) + 1000 * k).astype("uint16")
            for k, b in enumerate(["B02", "B03", "B04", "B08"], start=1)}
    fine["B02"][:20, :30] = 0  # declared nodata block (top-left)
    write_tif(root / "multi.tif", np.stack(list(fine.values())), 10, nodata=0,
              descriptions=["B2", "B3", "B4", "B8"])
    folder = root / "bands"
    folder.mkdir()
    write_tif(folder / "T33_B02.tif", fine["B02"], 10, nodata=0)
    write_tif(folder / "T33_B03.tif", fine["B03"], 10, nodata=0)
    coarse = {b: (rng.integers(1, 1000, (100, 100)) + 5000 + 1000 * k).astype("uint16")
              for k, b in enumerate(["B05", "B11"])}
    for b, a in coarse.items():
        write_tif(folder / f"T33_{b}.tif", a, 20, nodata=0)
    scl = rng.choice(np.array([4, 5, 6, 8, 9], dtype="uint8"), size=(100, 100))
    write_tif(folder / "T33_SCL.tif", scl, 20, nodata=0)
    return dict(root=root, fine=fine, coarse=coarse, scl=scl, folder=folder)


def test_multiband_band_order_and_names(synth):
    sc = open_scene({"path": "multi.tif"}, synth["root"])
    assert sc.band_names == ["B2", "B3", "B4", "B8"] and sc.dtype == "uint16" and sc.nodata == 0
    assert (sc.width, sc.height, sc.res) == (200, 200, 10.0) and not sc.zero_is_nodata
    sc = open_scene({"path": "multi.tif", "bands": ["B8", "B02"]}, synth["root"])
    px, _ = read_patches(sc, [(1, 1)], 96)
    assert np.array_equal(px[0, 0], synth["fine"]["B08"][96:192, 96:192])
    assert np.array_equal(px[0, 1], synth["fine"]["B02"][96:192, 96:192])
    sc = open_scene({"path": "multi.tif", "bands": {"red": 3, "nir": "B8"}}, synth["root"])
    assert [(b.name, b.band_index) for b in sc.bands] == [("red", 3), ("nir", 4)]
    # a folder holding a single multiband file is read as that file
    assert open_scene({"path": "."}, synth["root"]).band_names == ["B2", "B3", "B4", "B8"]


def test_patch_grid_counts(synth):
    sc = open_scene({"path": "multi.tif"}, synth["root"])
    assert len(patch_grid(sc, 96)) == 4  # 200 // 96 = 2 per side, remainders dropped
    assert patch_grid(sc, 96)[:3] == [(0, 0), (1, 0), (0, 1)]
    assert len(patch_grid(sc, 96, stride_px=48)) == 9  # (200 - 96) // 48 + 1 = 3 per side
    assert patch_grid(sc, 256) == []
    b = patch_bounds(sc, [(1, 0)], 96)
    assert np.allclose(b[0], [X0 + 960, Y0 - 960, X0 + 1920, Y0])


def test_windowed_reads_equal_full_read_sliced(synth):
    sc = open_scene({"path": "multi.tif"}, synth["root"])
    with rasterio.open(synth["root"] / "multi.tif") as ds:
        full = ds.read()
    cells = patch_grid(sc, 64, stride_px=40)
    px, valid = read_patches(sc, cells, 64, stride_px=40)
    assert px.shape == (len(cells), 4, 64, 64) and px.dtype == np.uint16
    for i, (c, r) in enumerate(cells):
        sl = full[:, r * 40:r * 40 + 64, c * 40:c * 40 + 64]
        assert np.array_equal(px[i], sl)
        assert np.array_equal(valid[i], (sl != 0).all(axis=0))
    assert not valid[0, :20, :30].any() and valid[0, 20:, 30:].all()
    q = patch_quality(valid)
    assert q["nodata_fraction"][0] == pytest.approx(600 / 64**2) and np.isnan(q["cloud_fraction"]).all()


def test_folder_mixed_resolution_alignment(synth):
    sc = open_scene({"path": "bands"}, synth["root"])
    assert sc.band_names == ["B02", "B03", "B05", "B11"] and sc.cloud_mask.name == "SCL"
    assert (sc.res, sc.width, sc.height) == (10.0, 200, 200)
    cells = [(0, 0), (1, 1)]
    px, valid = read_patches(sc, cells, 96)
    for i, (c, r) in enumerate(cells):
        for j, b in ((2, "B05"), (3, "B11")):  # each 20 m pixel covers 2x2 10 m pixels
            co = synth["coarse"][b][r * 48:(r + 1) * 48, c * 48:(c + 1) * 48]
            assert np.array_equal(px[i, j], np.repeat(np.repeat(co, 2, 0), 2, 1))
        assert np.array_equal(px[i, 0], synth["fine"]["B02"][r * 96:(r + 1) * 96, c * 96:(c + 1) * 96])
    # odd offsets: a 20 m pixel is still exactly 2x2 on the 10 m grid
    px2, _ = read_patches(sc, [(1, 1)], 32, stride_px=33)
    co = synth["coarse"]["B05"]
    want = np.repeat(np.repeat(co, 2, 0), 2, 1)[33:65, 33:65]
    assert np.array_equal(px2[0, 2], want)
    # cloud mask from SCL classes 8, 9 (+3, 10 absent)
    cloud = read_cloud(sc, cells, 96)
    scl = np.repeat(np.repeat(synth["scl"], 2, 0), 2, 1)
    assert np.array_equal(cloud[1], np.isin(scl[96:192, 96:192], [3, 8, 9, 10]))
    q = patch_quality(valid, cloud)
    assert q["cloud_fraction"][1] == pytest.approx(np.isin(synth["scl"][48:96, 48:96], [8, 9]).mean())


def test_declared_coarser_resolution_averages(synth):
    sc = open_scene({"path": "bands", "bands": ["B3", "B05"], "resolution": 20}, synth["root"])
    assert (sc.res, sc.width, sc.height) == (20.0, 100, 100)
    px, _ = read_patches(sc, [(0, 0)], 48)
    f = synth["fine"]["B03"][:96, :96].astype(float).reshape(48, 2, 48, 2).mean(axis=(1, 3))
    assert np.abs(px[0, 0].astype(float) - f).max() <= 0.5 + 1e-9
    assert np.array_equal(px[0, 1], synth["coarse"]["B05"][:48, :48])


def test_zero_fill_detected_and_masked(tmp_path):
    rng = np.random.default_rng(7)
    a = rng.integers(1, 500, (120, 120)).astype("uint16")
    a[:, :30] = 0  # 25 % undeclared zero fill
    write_tif(tmp_path / "x_B1.tif", a, 30)
    write_tif(tmp_path / "x_B2.tif", a + 1, 30)
    assert detect_zero_fill(tmp_path / "x_B1.tif")
    sc = open_scene({"path": "."}, tmp_path)
    assert sc.zero_is_nodata and sc.nodata is None
    _, valid = read_patches(sc, [(0, 0)], 96)
    assert not valid[0, :, :30].any() and valid[0, :, 30:].all()
    sc = open_scene({"path": ".", "zero_is_nodata": False}, tmp_path)
    assert read_patches(sc, [(0, 0)], 96)[1].all()
    write_tif(tmp_path / "tagged.tif", a, 30, nodata=0)
    assert not detect_zero_fill(tmp_path / "tagged.tif")


def test_small_extent_mismatch_tolerated(tmp_path):
    """A coarse band 4 m off (< half its 20 m pixel) is accepted; its out-of-file strip is masked."""
    write_tif(tmp_path / "B02.tif", np.full((100, 100), 7, "uint16"), 10)
    write_tif(tmp_path / "B05.tif", np.full((50, 50), 9, "uint16"), 20, x0=X0 + 4)
    sc = open_scene({"path": "."}, tmp_path)
    px, valid = read_patches(sc, [(0, 0)], 96)
    assert (px[0, 1][valid[0]] == 9).all() and valid[0].mean() > 0.95


def _assert_one_line(err: pytest.ExceptionInfo, name: str):
    msg = str(err.value)
    assert "\n" not in msg and name in msg, msg


def test_bad_inputs(tmp_path):
    good = np.arange(1, 10001, dtype="uint16").reshape(100, 100)
    d = tmp_path / "extents"
    d.mkdir()
    write_tif(d / "B02.tif", good, 10)
    write_tif(d / "B03.tif", good, 10, x0=X0 + 100)  # 10 px off
    with pytest.raises(InputError) as e:
        open_scene({"path": "extents"}, tmp_path)
    _assert_one_line(e, "B03.tif")

    write_tif(tmp_path / "nocrs.tif", good, 10, crs=None)
    with pytest.raises(InputError) as e:
        open_scene({"path": "nocrs.tif"}, tmp_path)
    _assert_one_line(e, "nocrs.tif")

    write_tif(tmp_path / "empty.tif", np.full((100, 100), -999, "int16"), 10, nodata=-999)
    with pytest.raises(InputError) as e:
        open_scene({"path": "empty.tif"}, tmp_path)
    _assert_one_line(e, "empty.tif")

    write_tif(tmp_path / "four.tif", np.stack([good] * 4), 10, descriptions=["B2", "B3", "B4", "B8"])
    with pytest.raises(InputError) as e:
        open_scene({"path": "four.tif", "bands": ["B2", "B9"]}, tmp_path)
    _assert_one_line(e, "four.tif")
    assert "B9" in str(e.value)

    d = tmp_path / "folder"
    d.mkdir()
    write_tif(d / "s_B1.tif", good, 10)
    write_tif(d / "s_B10.tif", good, 10)
    with pytest.raises(InputError) as e:
        open_scene({"path": "folder", "bands": ["B1", "B2"]}, tmp_path)
    _assert_one_line(e, "folder")
    assert "B2" in str(e.value)
    sc = open_scene({"path": "folder", "bands": ["B10", "B01"]}, tmp_path)  # B1 != B10
    assert [Path(b.path).name for b in sc.bands] == ["s_B10.tif", "s_B1.tif"]
    with pytest.raises(InputError) as e:
        open_scene({"path": "missing.tif"}, tmp_path)
    _assert_one_line(e, "missing.tif")


def test_normalise_band_name():
    assert normalise_band_name("B02") == "B2" and normalise_band_name("b8a") == "B8A"
    assert normalise_band_name("B10") == "B10" and normalise_band_name("SCL") == "SCL"


# ---- the six real shared scenes (SOURCES.md, "Satellite") ---------------------------------

def _shared_satellite() -> Path:
    """``$ALS_SHARED_DATA/satellite`` (or the folder itself), else ``../shared/data/satellite``."""
    env = os.environ.get("ALS_SHARED_DATA")
    if env:
        return Path(env) / "satellite" if (Path(env) / "satellite").is_dir() else Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "satellite"


SAT = _shared_satellite()
# dir, spec extras, bands, (width, height), res, patches @ 96 px, lon/lat bounds from SOURCES.md
REAL = {
    "spain": ("europe_spain_s2l1c_sen1floods11/Spain_7370579_S2Hand.tif", {}, 13, (512, 512),
              8.983152841195215e-05, 25, (-0.782, 38.083, -0.736, 38.129)),
    "sahara": ("africa_sahara_s2l2a_S2A_29RKH_20200219", {"cloud_mask": {"band": "SCL", "classes": [3, 8, 9, 10]}},
               12, (1098, 1098), 100.0, 121, (-11.979, 24.296, -10.875, 25.305)),
    "olinda": ("southamerica_olinda_l7etm_stars/L7_ETMs.tif", {}, 6, (349, 352), 28.5, 9,
               (-34.917, -8.041, -34.826, -7.950)),
    "canberra": ("oceania_canberra_ls5tm_nbar_19920323", {}, 6, (456, 404), 25.0, 16,
                 (149.078, -35.352, 149.205, -35.259)),
    "guangdong": ("asia_guangdong_l8oli_LC81210442015044LGN00", {}, 3, (1536, 1570), 150.01953125, 256,
                  (113.975, 22.029, 116.254, 24.181)),
    "alabama": ("northamerica_alabama_l8oli_LC80200392015216LGN00", {}, 7, (627, 603), 30.0, 36,
                (-87.497, 30.647, -87.300, 30.811)),
}


@pytest.fixture(params=sorted(REAL))
def real(request):
    rel, extra, *facts = REAL[request.param]
    if not (SAT / rel).exists():
        pytest.skip(f"shared satellite data absent ({SAT / rel})")
    sc = open_scene({"name": request.param, "path": rel, **extra}, SAT)
    return request.param, sc, facts


def test_real_scene(real):
    key, sc, (nbands, size, res, npatch, llb) = real
    assert len(sc.bands) == nbands and (sc.width, sc.height) == size
    assert sc.res == pytest.approx(res, rel=1e-9)
    cells = patch_grid(sc, 96)
    assert len(cells) == npatch
    pick = cells[:: max(1, len(cells) // 6)][:6]
    px, valid = read_patches(sc, pick, 96)
    assert px.shape == (len(pick), nbands, 96, 96) and valid.shape == (len(pick), 96, 96)
    assert px.dtype == np.dtype(sc.dtype)
    ll = patch_lonlat(sc, cells, 96)
    tol = 1e-3
    assert (ll[:, 0] > llb[0] - tol).all() and (ll[:, 0] < llb[2] + tol).all()
    assert (ll[:, 1] > llb[1] - tol).all() and (ll[:, 1] < llb[3] + tol).all()
    q = patch_quality(valid, read_cloud(sc, pick, 96))
    assert ((q["nodata_fraction"] >= 0) & (q["nodata_fraction"] <= 1)).all()
    if key == "sahara":
        assert sc.cloud_mask is not None and sc.cloud_mask.name == "SCL"
        assert "SCL" not in sc.band_names and ((q["cloud_fraction"] >= 0) & (q["cloud_fraction"] <= 1)).all()
        b05 = sc.band_names.index("B05")  # 200 m band: constant over 2x2 pixels of the 100 m grid
        blk = px[:, b05].reshape(len(pick), 48, 2, 48, 2)
        assert (blk == blk[:, :, :1, :, :1]).all()
    if key == "guangdong":
        assert sc.zero_is_nodata and sc.nodata is None
        _, v = read_patches(sc, cells, 96)
        assert 0.15 < 1 - v.mean() < 0.45  # ~31 % zero fill outside the footprint
    if key == "canberra":
        assert sc.nodata == -999 and not sc.zero_is_nodata
        allpx, v = read_patches(sc, cells, 96)
        assert not v[(allpx == -999).any(axis=1)].any() and (~v).any()
        with rasterio.open(sc.bands[0].path) as ds:  # windowed read == full read sliced
            full = ds.read(1)
        c, r = cells[5]
        assert np.array_equal(allpx[5, 0], full[r * 96:(r + 1) * 96, c * 96:(c + 1) * 96])
    if key in ("alabama", "olinda", "spain"):
        assert not sc.zero_is_nodata
