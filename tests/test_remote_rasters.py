"""Land cover and DEM as URLs: COGs read by window through GDAL's ranged reads (/vsicurl/).

A project's window of a remote COG gives the same arrays as the local file, fetches about the
bytes of the internal tiles it overlaps (not the file), and a missing or failing raster is one
line naming the URL without its token."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from affine import Affine
from cog_fixtures import dem, landcover, write_cog
from range_server import RangeServer

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources import geo

ALBERS = "EPSG:5070"
# 2048 x 2048 px of 30 m in CONUS Albers (~61 km square, western Oregon)
LC_TR = Affine(30.0, 0, -2_200_000.0, 0, -30.0, 2_900_000.0)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cogs")
    lc = write_cog(d / "nlcd.tif", landcover((2048, 2048), seed=3), ALBERS, LC_TR, nodata=0)
    z = write_cog(d / "dem.tif", dem((2048, 2048), seed=4), ALBERS, LC_TR, nodata=-9999.0, units="metre")
    return {"nlcd.tif": lc, "dem.tif": z}


def _grid():
    """A ~10 x 8 km project grid in UTM 10N inside the rasters' extent."""
    import pyproj

    tr = pyproj.Transformer.from_crs(ALBERS, 32610, always_xy=True)
    cx, cy = tr.transform(-2_200_000.0 + 30 * 1024, 2_900_000.0 - 30 * 1024)
    x0, y1 = round(cx / 25) * 25 - 5000, round(cy / 25) * 25 + 4000
    return geo.Grid(32610, x0, y1, 400, 320, 25.0)


def test_remote_window_equals_local_and_fetches_its_tiles(cogs):
    grid = _grid()
    with RangeServer(cogs) as srv:
        for name, what in (("nlcd.tif", "land-cover"), ("dem.tif", "DEM")):
            local, local_ok = geo.reproject_to_grid(cogs[name], grid, what)
            srv.reset()
            remote, remote_ok = geo.reproject_to_grid(srv.url(name) + "?sig=SECRET", grid, what)
            np.testing.assert_array_equal(remote, local)
            np.testing.assert_array_equal(remote_ok, local_ok)
            size = cogs[name].stat().st_size
            # ~10x8 km of a 61 km square file: a small share of it, fetched in few requests
            assert srv.bytes_sent < 0.25 * size, (name, srv.bytes_sent, size)
            assert 0 < srv.requests < 40, srv.requests
        srv.reset()
        f, why = geo.dem_vertical_unit(srv.url("dem.tif"))
        assert f == 1.0 and "metre" in why
        assert srv.bytes_sent < 64 * 1024  # the header only


def test_raster_paths_and_options():
    assert geo.raster_path("https://h.test/a/nlcd.tif") == "/vsicurl/https://h.test/a/nlcd.tif"
    assert geo.raster_path("s3://bucket/k/dem.tif") == "/vsis3/bucket/k/dem.tif"
    assert geo.raster_path("/data/x.tif") == "/data/x.tif"
    with pytest.raises(InputError, match="ftp://"):
        geo.raster_path("ftp://h.test/x.tif")
    assert geo.GDAL_HTTP_OPTIONS["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_missing_remote_raster_is_one_line_without_token(cogs):
    with RangeServer(cogs) as srv:
        url = srv.url("gone.tif") + "?token=SECRET-TOKEN"
        with pytest.raises(InputError) as ei:
            geo.reproject_to_grid(url, _grid(), "land-cover")
    msg = str(ei.value)
    assert "SECRET" not in msg and "\n" not in msg and "gone.tif" in msg and "land-cover" in msg


class _Flaky(RangeServer):
    """Answers 503 to every ``every``-th request (GDAL must retry them)."""

    def __init__(self, files, every: int):
        super().__init__(files)
        handler = self._srv.RequestHandlerClass
        lock, state = threading.Lock(), {"n": 0, "failed": 0}
        self.state = state

        class H(handler):
            def do_GET(self):  # noqa: N802
                with lock:
                    state["n"] += 1
                    fail = state["n"] % every == 0
                    state["failed"] += fail
                if fail:
                    self._send(503, b"busy")
                    return
                super().do_GET()

        self._srv.RequestHandlerClass = H


def test_5xx_are_retried(cogs):
    grid = _grid()
    local, _ = geo.reproject_to_grid(cogs["nlcd.tif"], grid, "land-cover")
    with _Flaky(cogs, every=3) as srv:
        remote, _ = geo.reproject_to_grid(srv.url("nlcd.tif"), grid, "land-cover")
    assert srv.state["failed"] >= 1
    np.testing.assert_array_equal(remote, local)
