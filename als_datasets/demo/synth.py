"""Seeded synthetic writers: GeoTIFF rasters and LAS/LAZ point clouds.

These are thin, deterministic wrappers around rasterio and laspy. The files they write are
real files that the rest of the toolkit reads exactly like downloaded data; generating the same
arrays twice gives byte-identical files (no timestamps, fixed LAS creation date).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["write_geotiff", "write_las", "FIXED_DATE"]

#: creation date written into every LAS header (laspy would otherwise write today's date)
FIXED_DATE = _dt.date(2024, 1, 1)

_TILE = 256


def _to_rasterio_crs(crs: Any):
    from rasterio.crs import CRS as RioCRS

    if crs is None:
        return None
    if isinstance(crs, RioCRS):
        return crs
    if isinstance(crs, int):
        return RioCRS.from_epsg(crs)
    if hasattr(crs, "to_wkt"):  # pyproj.CRS
        epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
        return RioCRS.from_epsg(epsg) if epsg else RioCRS.from_wkt(crs.to_wkt())
    return RioCRS.from_user_input(crs)


def _to_affine(transform: Any):
    from affine import Affine

    if isinstance(transform, Affine):
        return transform
    vals = tuple(float(v) for v in transform)
    if len(vals) == 9:
        vals = vals[:6]
    if len(vals) != 6:
        raise ValueError(f"transform must be an Affine or 6 numbers, got {transform!r}")
    return Affine(*vals)


def write_geotiff(
    path: str | os.PathLike,
    array: np.ndarray,
    transform: Any,
    crs: Any,
    nodata: float | int | None = None,
    colormap: Mapping[int, tuple[int, ...]] | None = None,
) -> Path:
    """Write a single-band GeoTIFF (deflate, with predictor; tiled 256x256 if larger than a tile).

    ``transform`` is an ``affine.Affine`` (or its 6 coefficients a, b, c, d, e, f);
    ``crs`` anything rasterio/pyproj understands (EPSG int, "EPSG:5070", WKT, pyproj.CRS).
    ``colormap`` (uint8 rasters only) maps pixel values to RGB(A) tuples.
    """
    import rasterio

    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"write_geotiff expects a 2D array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    height, width = arr.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": arr.dtype.name,
        "crs": _to_rasterio_crs(crs),
        "transform": _to_affine(transform),
        "compress": "deflate",
        "predictor": 3 if arr.dtype.kind == "f" else 2,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if height > _TILE and width > _TILE:
        profile.update(tiled=True, blockxsize=_TILE, blockysize=_TILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
        if colormap:
            dst.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in colormap.items()})
    return path


def write_las(
    path: str | os.PathLike,
    points: Mapping[str, np.ndarray],
    crs: Any,
    scale: float | tuple[float, float, float] = 0.01,
    offset: tuple[float, float, float] | None = None,
    point_format: int = 1,
    version: str = "1.2",
    laz_backend: Any = None,
) -> Path:
    """Write a LAS/LAZ file (``.laz`` suffix => lazrs-compressed).

    ``points`` holds ``x``, ``y``, ``z`` (float64 in CRS units) and any other dimension of the
    point format (``intensity``, ``return_number``, ``number_of_returns``, ``classification``,
    ``gps_time``, ``point_source_id``, ``scan_angle`` / ``scan_angle_rank`` ...). The CRS is
    written as a WKT VLR for point formats >= 6 and as GeoTIFF keys for LAS 1.2-1.3 formats
    0-5 (laspy's ``add_crs``); ``crs=None`` writes no CRS. The header creation date is fixed so
    that identical inputs give byte-identical files.
    """
    import laspy

    path = Path(path)
    for k in ("x", "y", "z"):
        if k not in points:
            raise ValueError(f"write_las: missing '{k}'")
    x = np.asarray(points["x"], dtype=np.float64)
    y = np.asarray(points["y"], dtype=np.float64)
    z = np.asarray(points["z"], dtype=np.float64)
    n = x.shape[0]
    if y.shape != (n,) or z.shape != (n,):
        raise ValueError("write_las: x, y and z must be 1D arrays of the same length")

    header = laspy.LasHeader(point_format=point_format, version=version)
    header.creation_date = FIXED_DATE
    header.generating_software = "als-datasets synthetic"
    header.system_identifier = "als-datasets demo"
    sc = np.array(scale if np.ndim(scale) else (scale, scale, scale), dtype=np.float64)
    header.scales = sc
    if offset is None:
        if n:
            offset = tuple(np.floor(np.array([x.min(), y.min(), z.min()]) / 1000.0) * 1000.0)
        else:
            offset = (0.0, 0.0, 0.0)
    header.offsets = np.asarray(offset, dtype=np.float64)
    if crs is not None:
        import pyproj

        header.add_crs(pyproj.CRS.from_user_input(crs))

    las = laspy.LasData(header)
    las.x = x
    las.y = y
    las.z = z
    dims = set(las.point_format.dimension_names)
    for key, vals in points.items():
        if key in ("x", "y", "z"):
            continue
        if key not in dims:
            raise ValueError(f"write_las: '{key}' is not a dimension of point format {point_format}")
        vals = np.asarray(vals)
        if vals.shape != (n,):
            raise ValueError(f"write_las: '{key}' has shape {vals.shape}, expected ({n},)")
        las[key] = vals
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if path.suffix.lower() == ".laz":
        kwargs["laz_backend"] = laz_backend if laz_backend is not None else _default_laz_backend()
    las.write(str(path), **kwargs)
    return path


def _default_laz_backend():
    import laspy

    try:
        if laspy.LazBackend.LazrsParallel.is_available():
            return laspy.LazBackend.LazrsParallel
    except Exception:  # pragma: no cover - depends on the installed backends
        pass
    return laspy.LazBackend.Lazrs
