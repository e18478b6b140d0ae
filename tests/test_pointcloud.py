"""Tests for als_datasets.kinds.als.sources.pointcloud: CRS/unit detection, footprints, streaming, bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import laspy
import numpy as np
import pyproj
import pytest
import shapely.geometry

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.pointcloud import (
    PointCloudInfo,
    check_within,
    footprint_lonlat,
    inspect_pointcloud,
    iter_point_chunks,
)

DATA = Path(__file__).resolve().parent / "data" / "als"
# GPL-3 file that is not vendored; read from the shared data folder when present.
SHARED = Path(os.environ.get("ALS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "als"))
TOPOGRAPHY = SHARED / "Topography.laz"

FT = 0.3048
US_FT = 1200.0 / 3937.0

# file -> (xy_unit, crs_source, z_to_m, centre lon, centre lat, extent x m, extent y m, points, copc)
EXPECTED = {
    "autzen_trim.laz": ("foot", "wkt", FT, -123.071, 44.051, 358.9, 171.5, 110_000, False),
    "mvk-thin.las": ("US survey foot", "geotiff+unit-override", US_FT, -91.146, 32.989, 1521.6, 1523.6, 6_280, False),
    "file_with_both_wkt_and_geotiff_vlrs.las": ("US survey foot", "wkt", US_FT, -97.063, 41.455, 18.3, 12.2, 25_408, False),
    # what the file *says* (metres); the truth is feet, see test_simple_copc_*
    "simple.copc.laz": ("metre", "wkt", US_FT, -117.24, 49.36, 3362.7, 4635.7, 1_065, True),
}

EUGENE = shapely.geometry.box(-123.25, 43.95, -122.90, 44.15)
FEET_OVERRIDE = "+proj=lcc +lat_0=41.75 +lon_0=-120.5 +lat_1=43 +lat_2=45.5 +x_0=400000 +y_0=0 +datum=NAD83 +units=ft"


def _path(name: str) -> Path:
    if name == "Topography.laz":
        if not TOPOGRAPHY.exists():
            pytest.skip(f"{TOPOGRAPHY} not available (GPL-3, not vendored)")
        return TOPOGRAPHY
    return DATA / name


def _metres(info: PointCloudInfo) -> tuple[float, float]:
    f = info.crs.axis_info[0].unit_conversion_factor
    return (info.bounds[2] - info.bounds[0]) * f, (info.bounds[3] - info.bounds[1]) * f


def _assert_one_line_naming(err: InputError, path) -> str:
    msg = str(err)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ------------------------------------------------------------------------ CRS / units / location


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inspect_vendored_files(name):
    unit, source, z_to_m, lon, lat, ex, ey, n, copc = EXPECTED[name]
    info = inspect_pointcloud(_path(name))
    assert info.xy_unit == unit
    assert info.crs_source == source
    assert info.z_to_m == pytest.approx(z_to_m, rel=1e-9)
    assert info.point_count == n
    assert info.is_copc is copc
    assert info.crs.is_projected and not info.crs.is_compound
    assert len(info.crs.axis_info) == 2
    c = footprint_lonlat(info).centroid
    assert c.x == pytest.approx(lon, abs=0.01)
    assert c.y == pytest.approx(lat, abs=0.01)
    mx, my = _metres(info)
    assert mx == pytest.approx(ex, rel=0.01)
    assert my == pytest.approx(ey, rel=0.01)


def test_topography_metres():
    info = inspect_pointcloud(_path("Topography.laz"))
    assert info.crs.to_epsg() == 2949
    assert (info.xy_unit, info.z_to_m, info.crs_source) == ("metre", 1.0, "geotiff")
    c = footprint_lonlat(info).centroid
    assert (c.x, c.y) == (pytest.approx(-70.916, abs=0.01), pytest.approx(47.609, abs=0.01))
    mx, my = _metres(info)
    assert mx == pytest.approx(285.7, rel=0.01) and my == pytest.approx(285.7, rel=0.01)
    assert info.point_count == 73_403


def test_mvk_unit_override_note():
    info = inspect_pointcloud(DATA / "mvk-thin.las")
    assert info.crs.axis_info[0].unit_name == "US survey foot"
    assert any("9003" in n and "26995" in n for n in info.notes)
    # the same projection in ftUS is EPSG:2255: identical coordinates
    t1 = pyproj.Transformer.from_crs(info.crs, 4326, always_xy=True)
    t2 = pyproj.Transformer.from_crs("EPSG:2255", 4326, always_xy=True)
    assert np.allclose(t1.transform(2047500.0, 1270000.0), t2.transform(2047500.0, 1270000.0), atol=1e-7)


def test_footprint_is_densified_polygon():
    info = inspect_pointcloud(DATA / "autzen_trim.laz")
    fp = footprint_lonlat(info)
    assert fp.is_valid and len(fp.exterior.coords) > 5
    assert fp.bounds[0] < -123.071 < fp.bounds[2]


def test_check_within_accepts_inside():
    for name in ("autzen_trim.laz",):
        check_within(inspect_pointcloud(DATA / name), EUGENE)


def test_simple_copc_refused_then_fixed_by_override():
    path = DATA / "simple.copc.laz"
    info = inspect_pointcloud(path)  # the file's own (wrong) metadata
    with pytest.raises(InputError) as ei:
        check_within(info, EUGENE)
    msg = _assert_one_line_naming(ei.value, path)
    assert "feet" in msg or "foot" in msg
    assert "-117.2" in msg and "49.3" in msg  # where it actually lands
    assert "pointcloud_crs" in msg
    # the suggestion in the message is a usable CRS string that fixes it
    suggested = msg.split("pointcloud_crs: '")[1].split("'")[0]
    fixed_by_hint = inspect_pointcloud(path, crs_override=suggested)
    check_within(fixed_by_hint, EUGENE)

    fixed = inspect_pointcloud(path, crs_override=FEET_OVERRIDE)
    assert fixed.crs_source == "override" and fixed.xy_unit == "foot"
    assert fixed.z_to_m == pytest.approx(FT)
    c = footprint_lonlat(fixed).centroid
    assert (c.x, c.y) == (pytest.approx(-123.07, abs=0.01), pytest.approx(44.05, abs=0.01))
    check_within(fixed, EUGENE)


def test_check_within_far_away_without_unit_fix():
    path = DATA / "autzen_trim.laz"
    with pytest.raises(InputError) as ei:
        check_within(inspect_pointcloud(path), shapely.geometry.box(10, 45, 11, 46))
    msg = _assert_one_line_naming(ei.value, path)
    assert "-123.07" in msg and "no other linear unit" in msg


def test_override_epsg_string():
    info = inspect_pointcloud(DATA / "mvk-thin.las", crs_override="EPSG:2255")
    assert info.crs_source == "override" and info.xy_unit == "US survey foot"
    assert footprint_lonlat(info).centroid.x == pytest.approx(-91.146, abs=0.01)


# ------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("name", [*sorted(EXPECTED), "Topography.laz"])
def test_chunks_match_one_shot_read(name):
    path = _path(name)
    info = inspect_pointcloud(path)
    las = laspy.read(path)
    chunk_size = max(1, info.point_count // 7)
    chunks = list(iter_point_chunks(info, chunk_size=chunk_size))
    assert len(chunks) >= 7
    assert all(len(c["x"]) <= chunk_size for c in chunks)
    got = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    dtypes = {"x": np.float64, "y": np.float64, "z": np.float64, "intensity": np.uint16,
              "return_number": np.uint8, "number_of_returns": np.uint8, "classification": np.uint8}
    assert {k: v.dtype for k, v in got.items()} == dtypes
    assert len(got["x"]) == info.point_count
    np.testing.assert_array_equal(got["x"], np.asarray(las.x))
    np.testing.assert_array_equal(got["y"], np.asarray(las.y))
    np.testing.assert_allclose(got["z"], np.asarray(las.z) * info.z_to_m, rtol=1e-12)
    for k in ("intensity", "return_number", "number_of_returns", "classification"):
        np.testing.assert_array_equal(got[k], np.asarray(las[k]))


def test_z_in_metres():
    info = inspect_pointcloud(DATA / "autzen_trim.laz")
    z = np.concatenate([c["z"] for c in iter_point_chunks(info, chunk_size=50_000)])
    assert z.min() == pytest.approx(406.26 * FT, abs=0.01)
    assert z.max() == pytest.approx(520.51 * FT, abs=0.01)


def test_classes_of_nebraska_file():
    info = inspect_pointcloud(DATA / "file_with_both_wkt_and_geotiff_vlrs.las")
    cls = np.concatenate([c["classification"] for c in iter_point_chunks(info, chunk_size=4096)])
    assert dict(zip(*np.unique(cls, return_counts=True), strict=True)) == {2: 9808, 3: 158, 4: 724, 5: 10956, 6: 3737, 7: 25}


# ------------------------------------------------------------------------ bad inputs


def _write_las(path: Path, n: int, crs: pyproj.CRS | None, version: str = "1.4", pf: int = 6,
               y0: float = 5_000_000.0) -> Path:
    header = laspy.LasHeader(point_format=pf, version=version)
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([500000.0, y0, 0.0])
    if crs is not None:
        header.add_crs(crs)
    las = laspy.LasData(header)
    rng = np.random.default_rng(0)
    las.x = 500000.0 + rng.uniform(0, 100, n)
    las.y = y0 + rng.uniform(0, 100, n)
    las.z = rng.uniform(0, 10, n)
    las.write(path)
    return path


def test_missing_file(tmp_path):
    path = tmp_path / "nope.laz"
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    assert "not found" in _assert_one_line_naming(ei.value, path)


def test_not_a_las_file(tmp_path):
    path = tmp_path / "notes.las"
    path.write_text("this is not a point cloud\n" * 20)
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    assert "LAS" in _assert_one_line_naming(ei.value, path)


def test_truncated_laz(tmp_path):
    src = (DATA / "autzen_trim.laz").read_bytes()
    path = tmp_path / "half.laz"
    path.write_bytes(src[: len(src) // 2])
    with pytest.raises(InputError) as ei:
        info = inspect_pointcloud(path)
        for _ in iter_point_chunks(info, chunk_size=10_000):
            pass
    assert "truncated or corrupt" in _assert_one_line_naming(ei.value, path)


def test_truncated_uncompressed_las(tmp_path):
    src = (DATA / "mvk-thin.las").read_bytes()
    path = tmp_path / "half.las"
    path.write_bytes(src[: len(src) // 2])
    with pytest.raises(InputError) as ei:
        info = inspect_pointcloud(path)
        for _ in iter_point_chunks(info, chunk_size=1000):
            pass
    assert "truncated or corrupt" in _assert_one_line_naming(ei.value, path)


def test_no_crs(tmp_path):
    path = _write_las(tmp_path / "nocrs.las", 10, None, version="1.2", pf=3)
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    msg = _assert_one_line_naming(ei.value, path)
    assert "has no CRS (no WKT or GeoTIFF keys); set pointcloud_crs in the recipe" in msg
    # ... and the override makes it usable
    info = inspect_pointcloud(path, crs_override="EPSG:32633")
    assert info.crs_source == "override" and info.xy_unit == "metre"


def test_empty_point_cloud(tmp_path):
    path = _write_las(tmp_path / "empty.las", 0, pyproj.CRS.from_epsg(32633))
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    assert "contains no points" in _assert_one_line_naming(ei.value, path)


@pytest.mark.parametrize("version,pf", [("1.4", 6), ("1.2", 3)])  # WKT VLR / GeoTIFF keys
def test_geographic_crs(tmp_path, version, pf):
    path = _write_las(tmp_path / f"lonlat_{pf}.las", 10, pyproj.CRS.from_epsg(4326), version=version, pf=pf)
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    assert "geographic" in _assert_one_line_naming(ei.value, path)


@pytest.mark.parametrize("y0", [2e7, 1e9])
def test_implausible_lonlat(tmp_path, y0):
    # UTM 33N northings of 20 000 km / 1 000 000 km: PROJ returns finite but wrapped lon/lat
    path = _write_las(tmp_path / "far.las", 10, pyproj.CRS.from_epsg(32633), y0=y0)
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path)
    assert "plausible lon/lat" in _assert_one_line_naming(ei.value, path)


def test_bad_override_string(tmp_path):
    path = DATA / "mvk-thin.las"
    with pytest.raises(InputError) as ei:
        inspect_pointcloud(path, crs_override="EPSG:99999999")
    assert "pointcloud_crs" in _assert_one_line_naming(ei.value, path)
