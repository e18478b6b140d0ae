"""DEM vertical units: a DEM in feet is converted to metres before the slope (declared by the
raster, or given in the recipe as ``dem.z_unit``), and elevations or tile relief that no terrain
has are refused with a hint naming the DEM and ``dem.z_unit``."""

from __future__ import annotations

import json
import math

import numpy as np
import pyproj
import pytest
from synth_inputs import landcover_around, write_recipe

from als_datasets.cli import main
from als_datasets.demo.synth import write_geotiff
from als_datasets.errors import InputError
from als_datasets.kinds.als.frame.build import build_project_frame
from als_datasets.recipe import load_recipe

EPSG = 32610  # WGS 84 / UTM 10N
X0, Y0, SIZE = 560_000.0, 5_040_000.0, 1_250.0  # the project's box (UTM metres)
FT, US_FT = 0.3048, 1200.0 / 3937.0


def _inputs(tmp_path, grade=0.1, base_m=100.0, unit=FT, declare=None):
    """A boundary box, forest land cover and a DEM of a plane rising ``grade`` m per m eastwards,
    stored in ``unit`` (metres per stored unit); ``declare``: 'band:<unit>' or a CRS string."""
    tr = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    ring = [tr.transform(x, y) for x, y in [(X0, Y0), (X0 + SIZE, Y0), (X0 + SIZE, Y0 + SIZE), (X0, Y0 + SIZE),
                                            (X0, Y0)]]
    boundary = tmp_path / "b.geojson"
    boundary.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    lons, lats = zip(*ring)
    landcover_around(tmp_path / "lc.tif", (min(lons), min(lats), max(lons), max(lats)), code=41)
    res, margin = 25.0, 500.0  # on the frame's 25 m lattice: nearest resampling keeps the plane exact
    left, top = X0 - margin, Y0 + SIZE + margin
    n = int((SIZE + 2 * margin) / res)
    x = left + res * (np.arange(n) + 0.5)
    z_m = base_m + grade * (x - X0)
    z = np.tile((z_m / unit).astype(np.float32), (n, 1))
    crs = declare if declare and not declare.startswith("band:") else EPSG
    dem = write_geotiff(tmp_path / "dem.tif", z, (res, 0, left, 0, -res, top), pyproj.CRS(crs), nodata=-9999.0)
    if declare and declare.startswith("band:"):
        import rasterio

        with rasterio.open(dem, "r+") as d:
            d.set_band_unit(1, declare[5:])
    return boundary, dem


def _recipe(tmp_path, boundary, dem, **dem_keys):
    return write_recipe(tmp_path / "r.yaml", name="dem-units", tile_size_m=500, grid_res_m=25, samples_per_project=2,
                        landcover={"path": "lc.tif"}, dem={"path": dem.name, **dem_keys},
                        projects=[{"name": "p", "boundary": boundary.name}], output={"dir": "out"})


def _slopes(tmp_path, **dem_keys) -> np.ndarray:
    boundary, dem = tmp_path / "b.geojson", tmp_path / "dem.tif"
    r = load_recipe(_recipe(tmp_path, boundary, dem, **dem_keys))
    t = build_project_frame(r, r.projects[0]).tiles
    assert len(t) == 4
    return t["slope_mean_deg"].to_numpy()


TRUE = math.degrees(math.atan(0.1))  # 5.71°: sloped
AS_METRES = math.degrees(math.atan(0.1 / FT))  # 18.2°: the feet read as metres, steep


@pytest.mark.parametrize("unit, declare, dem_keys, expect", [
    (FT, "band:ft", {}, TRUE),                       # band unit (GDAL: VerticalUnitsGeoKey)
    (FT, "band:foot", {}, TRUE),
    (US_FT, "EPSG:32610+6360", {}, TRUE),            # compound CRS, NAVD88 height (ftUS)
    (1.0, "EPSG:32610+5703", {}, TRUE),              # compound CRS in metres
    (FT, None, {"z_unit": "ft"}, TRUE),              # undeclared, the recipe says feet
    (US_FT, None, {"z_unit": "us-ft"}, TRUE),
    (FT, None, {"z_unit": 0.3048}, TRUE),            # metres per unit
    (FT, "band:metre", {"z_unit": "ft"}, TRUE),      # the recipe overrides a wrong declaration
    (FT, None, {}, AS_METRES),                       # undeclared: read as metres (nothing tells)
])
def test_dem_in_feet_converted_before_slope(tmp_path, unit, declare, dem_keys, expect):
    _inputs(tmp_path, unit=unit, declare=declare)
    slopes = _slopes(tmp_path, **dem_keys)
    assert np.allclose(slopes, expect, atol=0.05), slopes


def _one_line(capsys, recipe) -> str:
    with pytest.raises(SystemExit) as e:
        main(["plan", str(recipe), "-q"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_implausible_elevations_refused_with_z_unit_hint(tmp_path, capsys):
    boundary, dem = _inputs(tmp_path, base_m=3000.0, unit=FT)  # 9843 ft read as metres: above Everest
    err = _one_line(capsys, _recipe(tmp_path, boundary, dem))
    assert "dem.tif" in err and "dem.z_unit" in err and "outside the plausible" in err
    _slopes(tmp_path, z_unit="ft")  # with the unit given it builds


def test_implausible_tile_relief_refused(tmp_path, capsys):
    boundary, dem = _inputs(tmp_path, grade=1.0, unit=FT)  # 45° in feet: 1640 "m" per 500 m tile
    err = _one_line(capsys, _recipe(tmp_path, boundary, dem))
    assert "dem.tif" in err and "dem.z_unit" in err and "relief" in err
    assert np.allclose(_slopes(tmp_path, z_unit="ft"), 45.0, atol=0.05)


def test_undeclared_nodata_refused(tmp_path):
    boundary, dem = _inputs(tmp_path, unit=1.0)
    import rasterio

    with rasterio.open(dem, "r+") as d:
        z = d.read(1)
        z[30:35] = -32768.0  # inside the boundary: a fill value the raster does not declare as nodata
        d.write(z, 1)
    with pytest.raises(InputError, match="nodata"):
        _slopes(tmp_path)


@pytest.mark.parametrize("dem_keys, msg", [({"z_unit": "furlong"}, "dem.z_unit"), ({"z_unit": -1}, "dem.z_unit"),
                                           ({"units": "ft"}, "unknown key")])
def test_bad_z_unit_in_recipe(tmp_path, dem_keys, msg):
    boundary, dem = _inputs(tmp_path)
    with pytest.raises(InputError, match=msg):
        load_recipe(_recipe(tmp_path, boundary, dem, **dem_keys))


def test_undeclared_unknown_band_unit_refused(tmp_path):
    _inputs(tmp_path, unit=1.0, declare="band:cubits")
    with pytest.raises(InputError, match="cubits.*dem.z_unit"):
        _slopes(tmp_path)
    assert np.allclose(_slopes(tmp_path, z_unit="m"), TRUE, atol=0.05)


def test_resolved_recipe_records_z_unit(tmp_path):
    boundary, dem = _inputs(tmp_path)
    r = load_recipe(_recipe(tmp_path, boundary, dem, z_unit="us-ft"))
    assert r.dem_z_to_m == pytest.approx(US_FT) and r.raw["dem"]["z_unit"] == "us-ft"
    r = load_recipe(_recipe(tmp_path, boundary, dem))
    assert r.dem_z_to_m is None and r.raw["dem"] == {"path": str(dem)}
