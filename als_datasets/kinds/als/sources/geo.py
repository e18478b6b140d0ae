"""Boundaries, project grids and rasters reprojected onto them (the I/O edge of the frame).

Rasters (land cover, DEM) may be local files or URLs (``https://``, ``s3://``, ``gs://``), opened
by the core's :mod:`als_datasets.cog` (GDAL ranged reads: a project's window of a cloud-optimised
GeoTIFF, never the national file).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from als_datasets.cog import GDAL_HTTP_OPTIONS, gdal_env, gdal_reason, open_raster, raster_path  # noqa: F401
from als_datasets.errors import InputError
from als_datasets.remote import redact


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

    name = redact(str(path))
    with gdal_env(path), open_raster(path, what) as src:
        if src.crs is None:
            raise InputError(name, f"{what} raster has no CRS")
        left, bottom, right, top = grid.x0, grid.y1 - grid.height * grid.res, grid.x0 + grid.width * grid.res, grid.y1
        b = transform_bounds(grid.crs, src.crs, left, bottom, right, top, densify_pts=21)
        w = from_bounds(*b, transform=src.transform)
        # whole pixels, padded by one so nearest-neighbour at the window edge sees real data
        c0, r0 = max(math.floor(w.col_off) - 1, 0), max(math.floor(w.row_off) - 1, 0)
        c1 = min(math.ceil(w.col_off + w.width) + 1, src.width)
        r1 = min(math.ceil(w.row_off + w.height) + 1, src.height)
        if c1 <= c0 or r1 <= r0:
            raise InputError(name, f"{what} raster does not overlap the project boundary")
        win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        try:
            data = src.read(1, window=win, masked=True)
        except Exception as exc:  # a remote tile that failed after GDAL's retries, a corrupt block
            raise InputError(name, f"cannot read {what} raster window: {gdal_reason(exc)}") from None
        src_valid = ~np.ma.getmaskarray(data)
        src_transform = src.window_transform(win)
        src_crs = src.crs
        is_float = np.issubdtype(data.dtype, np.floating)
    if not src_valid.any():
        raise InputError(name, f"{what} raster holds only nodata over the project boundary")
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


# --------------------------------------------------------------------------- DEM vertical units

#: metres per unit of the DEM elevation units a recipe (``dem.z_unit``) or a raster may name
Z_UNITS = {
    "m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "international foot": 0.3048, "foot_international": 0.3048,
    "us-ft": 1200.0 / 3937.0, "ftus": 1200.0 / 3937.0, "us survey foot": 1200.0 / 3937.0,
    "us_survey_foot": 1200.0 / 3937.0, "us-survey-foot": 1200.0 / 3937.0, "foot_us": 1200.0 / 3937.0,
    "us survey feet": 1200.0 / 3937.0,
}
#: plausible elevations on Earth (metres): the Dead Sea shore is at -430 m, Everest at 8849 m
ELEVATION_RANGE_M = (-500.0, 9000.0)
#: a tile whose relief exceeds this many times its size is implausible (a 500 m tile rising 1 km)
MAX_RELIEF_PER_TILE = 2.0


def z_unit_factor(value) -> float | None:
    """Metres per unit of ``value``: a unit name of :data:`Z_UNITS` (case-insensitive) or a
    positive number (metres per unit); None when it is neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value > 0 else None
    return Z_UNITS.get(str(value).strip().lower())


def _unit_label(factor: float) -> str:
    names = {1.0: "metres", 0.3048: "international feet", 1200.0 / 3937.0: "US survey feet"}
    return next((v for k, v in names.items() if math.isclose(factor, k, rel_tol=1e-9)), f"units of {factor:g} m")


def dem_vertical_unit(path: str | Path, override: float | None = None) -> tuple[float, str]:
    """(metres per DEM unit, where that came from) of a DEM: the recipe's ``dem.z_unit``
    (``override``) if given; else the unit the raster declares — its band unit (GDAL fills it from
    the GeoTIFF ``VerticalUnitsGeoKey``), then the vertical axis of a compound CRS; else metres."""

    if override is not None:
        return override, f"dem.z_unit in the recipe ({_unit_label(override)})"
    name = redact(str(path))
    with gdal_env(path), open_raster(path, "DEM") as src:
        band_unit = (src.units or ("",))[0] or ""
        wkt = src.crs.to_wkt() if src.crs is not None else None
    if band_unit.strip():
        f = z_unit_factor(band_unit)
        if f is None:
            raise InputError(name, f"DEM declares elevation unit {band_unit!r}, which is not metres or feet; "
                                   "set dem.z_unit in the recipe (m, ft, us-ft or metres per unit)")
        return f, f"the raster's band unit {band_unit!r}"
    if wkt:
        crs = CRS.from_wkt(wkt)
        vert = next((c for c in crs.sub_crs_list if c.is_vertical), None) if crs.is_compound else None
        if vert is not None and vert.axis_info:
            f = float(vert.axis_info[0].unit_conversion_factor)
            return f, f"the vertical CRS {vert.name!r} ({_unit_label(f)})"
    return 1.0, "none declared: metres assumed"


def check_dem_elevations(path: str | Path, dem: np.ndarray, factor: float, source: str, tile_px: int,
                         tile_m: float) -> None:
    """Refuse a DEM (already in metres) whose elevations or tile relief no terrain has: the sign
    of a wrong vertical unit (feet read as metres) or of nodata the raster does not declare."""
    z = dem[np.isfinite(dem)]
    if not z.size:
        return
    lo, hi = float(z.min()), float(z.max())
    hint = (f"read in {_unit_label(factor)} ({source}); a wrong vertical unit? set dem.z_unit in the recipe "
            "(m, ft or us-ft), or declare the raster's nodata")
    if lo < ELEVATION_RANGE_M[0] or hi > ELEVATION_RANGE_M[1]:
        raise InputError(path, f"DEM elevations {lo:.0f} to {hi:.0f} m are outside the plausible "
                               f"{ELEVATION_RANGE_M[0]:.0f} to {ELEVATION_RANGE_M[1]:.0f} m, {hint}")
    h, w = (dem.shape[0] // tile_px) * tile_px, (dem.shape[1] // tile_px) * tile_px
    if not h or not w:
        return
    blocks = dem[:h, :w].reshape(h // tile_px, tile_px, w // tile_px, tile_px)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles
        relief = np.nanmax(blocks, axis=(1, 3)) - np.nanmin(blocks, axis=(1, 3))
    worst = float(np.nanmax(relief)) if np.isfinite(relief).any() else 0.0
    if worst > MAX_RELIEF_PER_TILE * tile_m:
        raise InputError(path, f"DEM relief of {worst:.0f} m within one {tile_m:g} m tile is implausible, {hint}")
