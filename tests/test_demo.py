"""The embedded demo region and the seeded synthetic writers."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import laspy
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from pyproj import CRS
from rasterio.warp import Resampling, reproject

from als_datasets.demo import demo_region, ensure_demo, write_geotiff, write_las
from als_datasets.demo.als.generate import generate_demo


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(demo_recipe) -> Path:
    """The session's demo (generated once, shared with the build tests)."""
    return demo_recipe


def test_progress_messages(tmp_path):
    messages: list[str] = []
    generate_demo(tmp_path / "d", seed=0, progress=messages.append, pulse_density=0.004)
    assert messages, "progress callback was never called"


def test_ensure_demo_idempotent(demo: Path):
    assert demo.name == "demo.yaml" and demo.is_file()
    assert (demo.parent / ".complete").is_file()
    before = _hashes(demo.parent)
    t0 = time.perf_counter()
    again = ensure_demo(demo.parent, seed=0, progress=lambda m: pytest.fail(f"regenerated: {m}"))
    assert time.perf_counter() - t0 < 1.0
    assert again == demo
    assert _hashes(demo.parent) == before
    # no temporary siblings left behind (other demos of the session's cache are complete folders)
    assert [p.name for p in demo.parent.parent.iterdir() if not (p / ".complete").is_file()] == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ALS_DATASETS_CACHE", str(tmp_path))
    target = tmp_path / "demo-v1-seed7"
    target.mkdir()
    (target / "demo.yaml").write_text("x")
    (target / ".complete").write_text("done")
    assert ensure_demo(seed=7) == target / "demo.yaml"  # complete => returned as is


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        ensure_demo(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_recipe_schema_and_paths(demo: Path):
    r = yaml.safe_load(demo.read_text())
    assert r["kind"] == "als" and r["name"] == "demo" and r["strategy"] == "geospatial"
    assert r["seed"] == 41 and r["samples_per_project"] == 10 and r["draws"] == 1000
    assert r["tile_size_m"] == 500 and r["grid_res_m"] == 25 and r["min_class_fraction"] == 0.8
    assert r["landcover"]["classes"] == {"developed": [21, 22, 23, 24], "forest": [41, 42, 43]}
    assert r["slope_classes_deg"] == {"flat": [0, 5], "sloped": [5, 17], "steep": [17, 90]}
    assert r["drop_classes"] == [7, 18]
    assert r["output"] == {"formats": ["webdataset", "parquet"], "shard_max_samples": 16}
    root = demo.parent
    assert (root / r["landcover"]["path"]).is_file() and (root / r["dem"]["path"]).is_file()
    assert (root / "README.txt").read_text().count("SYNTHETIC") >= 1
    assert len(r["projects"]) >= 3
    for p in r["projects"]:
        assert all(c.isalnum() or c in "-_" for c in p["name"])
        gj = json.loads((root / p["boundary"]).read_text())
        assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 1
        ring = np.array(gj["features"][0]["geometry"]["coordinates"][0])
        assert gj["features"][0]["geometry"]["type"] == "Polygon"
        assert len(ring) > 10 and np.allclose(ring[0], ring[-1])
        assert (-125 < ring[:, 0]).all() and (ring[:, 0] < -66).all() and (24 < ring[:, 1]).all() and (ring[:, 1] < 50).all()
        files = sorted(root.glob(p["pointclouds"][0]))
        assert len(files) >= 4


def test_landcover(demo: Path):
    with rasterio.open(demo.parent / "landcover.tif") as src:
        assert src.crs.to_epsg() == 5070 and src.nodata == 255 and src.dtypes[0] == "uint8"
        assert src.res == (30.0, 30.0)
        codes = set(np.unique(src.read(1)).tolist())
    assert {21, 22, 23, 24, 41, 42, 43} <= codes
    assert {11, 52, 71, 81, 82, 90} <= codes


def test_dem_slope_classes(demo: Path):
    """Reproject the DEM (nearest) to 25 m UTM over each project: all three slope classes occur."""
    r = yaml.safe_load(demo.read_text())
    counts = np.zeros(3)
    with rasterio.open(demo.parent / "dem.tif") as src:
        assert src.crs.to_epsg() == 4269 and src.nodata == -9999 and src.dtypes[0] == "float32"
        for p in r["projects"]:
            ring = np.array(json.loads((demo.parent / p["boundary"]).read_text())["features"][0]["geometry"]["coordinates"][0])
            from pyproj import Transformer

            x, y = Transformer.from_crs(4326, 32610, always_xy=True).transform(ring[:, 0], ring[:, 1])
            x0, y1 = np.floor(x.min() / 25) * 25, np.ceil(y.max() / 25) * 25
            w, h = int((x.max() - x0) // 25), int((y1 - y.min()) // 25)
            dem = np.full((h, w), -9999, np.float32)
            reproject(rasterio.band(src, 1), dem, dst_transform=Affine(25, 0, x0, 0, -25, y1),
                      dst_crs="EPSG:32610", resampling=Resampling.nearest, dst_nodata=-9999)
            assert (dem != -9999).all()
            gy, gx = np.gradient(dem.astype(np.float64), 25)
            slope = np.degrees(np.arctan(np.hypot(gx, gy)))
            counts += np.bincount(np.digitize(slope.ravel(), [5, 17]), minlength=3)
    share = counts / counts.sum()
    assert (share > 0.1).all(), share


def test_pointclouds(demo: Path):
    r = yaml.safe_load(demo.read_text())
    crs_seen = set()
    for p in r["projects"]:
        classes: Counter = Counter()
        multi = 0
        for f in sorted(demo.parent.glob(p["pointclouds"][0])):
            las = laspy.read(f)
            crs = las.header.parse_crs()
            assert crs is not None and crs.is_projected
            crs_seen.add(crs.to_epsg())
            rn = np.asarray(las.return_number)
            nr = np.asarray(las.number_of_returns)
            assert ((rn >= 1) & (rn <= nr)).all()
            multi += int((nr > 1).sum())
            classes.update(np.asarray(las.classification).tolist())
            assert las.header.creation_date.year == 2024
            assert np.asarray(las.intensity).max() > 0
        assert multi > 0
        assert {2, 3, 4, 5, 6, 7} <= set(classes), (p["name"], classes)
        assert classes[7] + classes[18] < 0.001 * sum(classes.values())
    assert {26910, 2286} <= crs_seen  # UTM metres and State Plane US survey feet


def test_feet_project_units(demo: Path):
    files = sorted((demo.parent / "pointclouds" / "demo-river").glob("*.laz"))
    las = laspy.read(files[len(files) // 2])
    assert las.header.version.minor == 2 and las.header.point_format.id == 1
    crs = las.header.parse_crs()
    assert crs.to_epsg() == 2286 and "foot" in crs.axis_info[0].unit_name.lower()
    g = np.asarray(las.z)[np.asarray(las.classification) == 2]
    assert np.median(g) > 0


def test_same_seed_same_bytes(demo: Path, tmp_path):
    """Two generations with the same seed are byte-identical (small copies for speed)."""
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo(a, seed=0, pulse_density=0.004)
    generate_demo(b, seed=0, pulse_density=0.004)
    ha, hb = _hashes(a), _hashes(b)
    assert ha == hb and any(k.endswith(".laz") for k in ha)
    # rasters, boundaries and recipe do not depend on the density: same as the full demo
    full = _hashes(demo.parent)
    for k in ("landcover.tif", "dem.tif", "demo.yaml", "boundaries/demo-valley.geojson"):
        assert ha[k] == full[k], k
    # and a different seed gives a different landscape
    assert demo_region(1).gauss.tolist() != demo_region(0).gauss.tolist()


def test_write_geotiff_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, (300, 400)).astype(np.uint8)
    tr = Affine(30, 0, -2000000, 0, -30, 2500000)
    p = write_geotiff(tmp_path / "lc.tif", arr, tr, 5070, nodata=255, colormap={1: (255, 0, 0)})
    with rasterio.open(p) as src:
        assert src.crs.to_epsg() == 5070 and src.transform == tr and src.nodata == 255
        assert src.profile["compress"] == "deflate" and src.profile["tiled"]
        assert src.colormap(1)[1] == (255, 0, 0, 255)
        np.testing.assert_array_equal(src.read(1), arr)
    f = rng.normal(size=(20, 30)).astype(np.float32)
    p = write_geotiff(tmp_path / "f.tif", f, tuple(tr)[:6], "EPSG:4269", nodata=-9999.0)
    with rasterio.open(p) as src:
        assert src.crs.to_epsg() == 4269
        np.testing.assert_array_equal(src.read(1), f)


@pytest.mark.parametrize(
    "suffix,fmt,version,crs", [(".laz", 6, "1.4", 32610), (".las", 1, "1.2", 2286), (".laz", 1, "1.2", None)]
)
def test_write_las_roundtrip(tmp_path, suffix, fmt, version, crs):
    rng = np.random.default_rng(1)
    n = 1000
    pts = {
        "x": 500000 + rng.uniform(0, 500, n),
        "y": 5000000 + rng.uniform(0, 500, n),
        "z": rng.uniform(0, 100, n),
        "intensity": rng.integers(0, 4000, n).astype(np.uint16),
        "return_number": np.ones(n, np.uint8),
        "number_of_returns": np.ones(n, np.uint8),
        "classification": np.full(n, 2, np.uint8),
    }
    p = write_las(tmp_path / f"t{suffix}", pts, crs, point_format=fmt, version=version)
    las = laspy.read(p)
    assert las.header.point_format.id == fmt and str(las.header.version) == version
    np.testing.assert_allclose(las.x, pts["x"], atol=0.006)
    np.testing.assert_allclose(las.z, pts["z"], atol=0.006)
    np.testing.assert_array_equal(las.intensity, pts["intensity"])
    np.testing.assert_array_equal(las.classification, pts["classification"])
    parsed = las.header.parse_crs()
    if crs is None:
        assert parsed is None
    else:
        assert parsed.to_epsg() == CRS.from_epsg(crs).to_epsg()
    p2 = write_las(tmp_path / f"u{suffix}", pts, crs, point_format=fmt, version=version)
    assert p.read_bytes() == p2.read_bytes()
    with pytest.raises(ValueError):
        write_las(tmp_path / "bad.las", {**pts, "nonsense": np.zeros(n)}, crs)
