"""Seeded synthetic inputs around real files (land-cover rasters, recipes) for the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).parent
DATA = HERE / "data"
SHARED = Path(os.environ.get("ALS_SHARED_DATA", HERE.parent.parent / "shared" / "data"))


def landcover_around(path: Path, lonlat_bounds, code=41, margin_m=300.0, res=5.0, epsg=None, pattern=None) -> Path:
    """A land-cover GeoTIFF (UTM, NLCD codes) covering a lon/lat box with a margin."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    from als_datasets.kinds.als.frame.grid import utm_epsg

    lon = (lonlat_bounds[0] + lonlat_bounds[2]) / 2
    lat = (lonlat_bounds[1] + lonlat_bounds[3]) / 2
    epsg = epsg or utm_epsg(lon, lat)
    minx, miny, maxx, maxy = Transformer.from_crs(4326, epsg, always_xy=True).transform_bounds(*lonlat_bounds)
    w = int((maxx - minx + 2 * margin_m) // res) + 1
    h = int((maxy - miny + 2 * margin_m) // res) + 1
    arr = np.full((h, w), code, np.uint8) if pattern is None else pattern(h, w).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=f"EPSG:{epsg}",
                       transform=from_origin(minx - margin_m, maxy + margin_m, res, res), nodata=255) as d:
        d.write(arr, 1)
    return path


def write_recipe(path: Path, **data) -> Path:
    data.setdefault("kind", "als")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def split_las(src: Path, west: Path, east: Path, x_split: float | None = None, east_intensity_add: int = 0):
    """``src``'s points in two files, west of ``x_split`` (default: the median x) and east of it:
    different files whose union is ``src`` (same header VLRs, scales, offsets); the east file's
    intensities may be shifted to make it another version of itself."""
    import copy

    import laspy

    las = laspy.read(src)
    x = np.asarray(las.x)
    cut = float(np.median(x)) if x_split is None else x_split
    for path, mask, add in ((west, x < cut, 0), (east, x >= cut, east_intensity_add)):
        part = laspy.LasData(copy.deepcopy(las.header))
        part.points = las.points[mask].copy()
        if add:
            part.intensity = np.asarray(part.intensity) + add
        part.write(path)
    return west, east


def shifted_copy(src: Path, dst: Path, dz: float) -> Path:
    """``src`` with every z raised by ``dz`` (native units): another file over the same tiles, whose
    header differs (z bounds), so it is not refused as the same data under two names."""
    import laspy

    las = laspy.read(src)
    if dz:
        las.z = np.asarray(las.z) + dz
    las.write(dst)
    return dst
