"""Boundaries, project grids and rasters reprojected onto them (the I/O edge of the frame)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from als_datasets.errors import InputError


@dataclass(frozen=True)
class Grid:
    """A north-up grid in a projected CRS: ``x0`` west edge, ``y1`` north edge, metres."""

    epsg: int
    x0: float
    y1: float
    width: int
    height: int
    res: float

    @property
    def transform(self):
        from affine import Affine

        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y1)

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.epsg)


def read_boundary(path: str | Path):
    """Union of a vector file's geometries, in EPSG:4326 (GeoJSON, GeoPackage, shapefile)."""
    import geopandas as gpd
    from shapely import make_valid

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "boundary file not found")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises many types
        raise InputError(path, f"cannot read boundary: {str(exc).splitlines()[0]}") from None
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise InputError(path, "boundary has no geometry")
    if gdf.crs is None:
        gdf = gdf.set_crs(4326)
    geom = make_valid(gdf.to_crs(4326).geometry.union_all())
    if geom.is_empty or geom.area == 0:
        raise InputError(path, "boundary is empty or has no area (it must be a polygon)")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise InputError(path, "boundary coordinates are not lon/lat in degrees")
    return geom


def to_crs(geom, src_epsg: int | CRS, dst_epsg: int | CRS):
    from shapely.ops import transform

    t = Transformer.from_crs(CRS.from_user_input(src_epsg), CRS.from_user_input(dst_epsg), always_xy=True)
    return transform(t.transform, geom)


def project_grid(boundary_utm, epsg: int, res: float) -> Grid:
    """The smallest grid aligned to multiples of ``res`` that covers the boundary."""
    minx, miny, maxx, maxy = boundary_utm.bounds
    x0 = math.floor(minx / res) * res
    y1 = math.ceil(maxy / res) * res
    width = int(math.ceil((maxx - x0) / res))
    height = int(math.ceil((y1 - miny) / res))
    return Grid(epsg, x0, y1, width, height, res)


def boundary_mask(boundary_utm, grid: Grid) -> np.ndarray:
    """True where a pixel centre lies inside the boundary."""
    from rasterio.features import geometry_mask

    return geometry_mask([boundary_utm], out_shape=(grid.height, grid.width), transform=grid.transform, invert=True)


def reproject_to_grid(path: str | Path, grid: Grid, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour reprojection of band 1 onto ``grid``: (values, valid mask).

    Windowed: only the part of the raster under the grid is read.
    """
    import rasterio
    from rasterio.warp import Resampling, reproject, transform_bounds
    from rasterio.windows import from_bounds

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} raster not found")
    try:
        src = rasterio.open(path)
    except Exception as exc:
        raise InputError(path, f"cannot read {what} raster: {str(exc).splitlines()[0]}") from None
    with src:
        if src.crs is None:
            raise InputError(path, f"{what} raster has no CRS")
        left, bottom, right, top = grid.x0, grid.y1 - grid.height * grid.res, grid.x0 + grid.width * grid.res, grid.y1
        b = transform_bounds(grid.crs, src.crs, left, bottom, right, top, densify_pts=21)
        w = from_bounds(*b, transform=src.transform)
        # whole pixels, padded by one so nearest-neighbour at the window edge sees real data
        c0, r0 = max(math.floor(w.col_off) - 1, 0), max(math.floor(w.row_off) - 1, 0)
        c1 = min(math.ceil(w.col_off + w.width) + 1, src.width)
        r1 = min(math.ceil(w.row_off + w.height) + 1, src.height)
        if c1 <= c0 or r1 <= r0:
            raise InputError(path, f"{what} raster does not overlap the project boundary")
        win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(1, window=win, masked=True)
        src_valid = ~np.ma.getmaskarray(data)
        src_transform = src.window_transform(win)
        src_crs = src.crs
        is_float = np.issubdtype(data.dtype, np.floating)
    if not src_valid.any():
        raise InputError(path, f"{what} raster holds only nodata over the project boundary")
    values = np.asarray(data.filled(0), dtype=np.float64 if is_float else np.int32)
    if is_float:
        src_valid &= np.isfinite(values)
        values[~src_valid] = 0
    dst = np.zeros((grid.height, grid.width), dtype=values.dtype)
    reproject(values, dst, src_transform=src_transform, src_crs=src_crs, dst_transform=grid.transform,
              dst_crs=grid.crs, resampling=Resampling.nearest)
    dst_valid = np.zeros((grid.height, grid.width), dtype=np.uint8)
    reproject(src_valid.astype(np.uint8), dst_valid, src_transform=src_transform, src_crs=src_crs,
              dst_transform=grid.transform, dst_crs=grid.crs, resampling=Resampling.nearest)
    return dst, dst_valid.astype(bool)
