"""The raster sampling frame: every candidate patch of every scene, with its quality, place and
spectral entropy (DESIGN.md §7).

A scene is scanned one *strip* (a row of patches) at a time: each band file is read once per
strip through a window at its native resolution and resampled on the fly to the scene's common
grid (nearest when the band is coarser, average when finer — the same rule as
:func:`~als_datasets.kinds.raster.scenes.read_patches`), so memory holds one strip whatever the scene
size.  Per patch: nodata fraction (declared nodata, undeclared zero fill, non-finite values,
pixels outside a band file), cloud fraction from the mask band, spectral entropy (vectorised over
the strip, :func:`~als_datasets.kinds.raster.entropy.spectral_entropy`), centre lon/lat, footprint.
Continent, biome and land cover are then looked up for all patches at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from als_datasets.errors import InputError
from als_datasets.kinds.raster.entropy import spectral_entropy
from als_datasets.kinds.raster.scenes import (
    Scene,
    _snap,
    _valid,
    cloud_pixels,
    patch_bounds,
    patch_lonlat,
    ropen,
)

#: STAC ``eo:common_name`` of each band per sensor family, so that scenes of different sensors
#: share one band order (a Landsat-8 "B5" is near infrared, a Sentinel-2 "B5" is red edge).
COMMON_NAMES = {
    "sentinel-2": {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1",
                   "B6": "rededge2", "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09",
                   "B10": "cirrus", "B11": "swir16", "B12": "swir22"},
    "landsat-oli": {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08", "B6": "swir16",
                    "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12"},
    "landsat-tm": {"B1": "blue", "B2": "green", "B3": "red", "B4": "nir08", "B5": "swir16", "B6": "lwir",
                   "B7": "swir22", "B8": "pan"},
}
#: dataset band order: the union of the samples' common names in this order, then unknown names sorted
COMMON_ORDER = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
                "cirrus", "swir16", "swir22", "pan", "lwir", "lwir11", "lwir12", "elevation")


def sensor_family(sensor: str | None, band_names: list[str]) -> str | None:
    s = (sensor or "").lower().replace("_", "-").replace(" ", "-")
    if "sentinel-2" in s or s.startswith("s2"):
        return "sentinel-2"
    if any(k in s for k in ("landsat-8", "landsat-9", "oli", "l8", "l9")):
        return "landsat-oli"
    if any(k in s for k in ("landsat-4", "landsat-5", "landsat-7", "etm", "tm", "l5", "l7")):
        return "landsat-tm"
    names = {n.upper() for n in band_names}
    if "B8A" in names or len(names) >= 12:
        return "sentinel-2"
    return None


def common_band_names(scene: Scene, explicit: list[str] | None = None) -> list[str]:
    """Common names of a scene's bands: the recipe's ``common_bands``, else by sensor family.

    Landsat TM/ETM+ products that number bands ×10 (``B10`` … ``B70``, as Geoscience Australia's
    NBAR) are read as bands 1-7.  A band with no known common name keeps its own name.
    """
    from als_datasets.kinds.raster.scenes import normalise_band_name

    names = [normalise_band_name(n) for n in scene.band_names]
    if explicit is not None:
        if len(explicit) != len(names):
            raise InputError(scene.bands[0].path, f"common_bands lists {len(explicit)} names for {len(names)} bands")
        return [str(x) for x in explicit]
    fam = sensor_family(scene.sensor, names)
    table = COMMON_NAMES.get(fam or "", {})
    if fam == "landsat-tm" and names and all(n.startswith("B") and n[1:].isdigit() and n.endswith("0")
                                             and len(n) == 3 for n in names):
        names = [f"B{int(n[1:]) // 10}" for n in names]
    return [table.get(n, n) for n in names]


def dataset_bands(common_lists) -> list[str]:
    """Ordered union of the common names of several scenes."""
    found = {n for names in common_lists for n in names}
    known = [n for n in COMMON_ORDER if n in found]
    return known + sorted(found - set(known))


def _read_window(ds, indexes: list[int], bounds, out_h: int, out_w: int, target_res: float, fill,
                 categorical: bool = False) -> np.ma.MaskedArray:
    w = _snap(from_bounds(*bounds, transform=ds.transform))
    down = abs(ds.transform.a) < target_res * (1 - 1e-6)
    resampling = Resampling.average if (down and not categorical) else Resampling.nearest
    inside = (w.col_off >= -1e-6 and w.row_off >= -1e-6 and w.col_off + w.width <= ds.width + 1e-6
              and w.row_off + w.height <= ds.height + 1e-6)
    shape = (len(indexes), out_h, out_w)
    if inside:
        return np.ma.masked_array(ds.read(indexes, window=w, out_shape=shape, resampling=resampling))
    return ds.read(indexes, window=w, out_shape=shape, resampling=resampling, boundless=True, masked=True,
                   fill_value=fill)


def strip_cells(scene: Scene, patch_px: int, stride_px: int) -> tuple[int, int]:
    """(columns, rows) of whole patches on the scene grid (edge remainders dropped)."""
    nc = (scene.width - patch_px) // stride_px + 1 if scene.width >= patch_px else 0
    nr = (scene.height - patch_px) // stride_px + 1 if scene.height >= patch_px else 0
    return nc, nr


def read_strip(scene: Scene, row: int, patch_px: int, stride_px: int, handles: dict | None = None,
               cloud: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Patches of one strip: pixels (ncols, C, P, P), valid (ncols, P, P), cloud (ncols, P, P) or None."""
    nc, _ = strip_cells(scene, patch_px, stride_px)
    width_px = (nc - 1) * stride_px + patch_px
    left, top = scene.transform * (0, row * stride_px)
    right, bottom = scene.transform * (width_px, row * stride_px + patch_px)
    bounds = (left, bottom, right, top)
    handles = {} if handles is None else handles
    nb = len(scene.bands)
    strip = np.zeros((nb, patch_px, width_px), dtype=scene.dtype)
    valid = np.ones((patch_px, width_px), dtype=bool)
    fill = scene.nodata if scene.nodata is not None else 0
    by_file: dict[str, list[int]] = {}
    for j, b in enumerate(scene.bands):
        by_file.setdefault(b.path, []).append(j)
    for path, js in by_file.items():
        ds = handles.get(path) or handles.setdefault(path, ropen(path))
        a = _read_window(ds, [scene.bands[j].band_index for j in js], bounds, patch_px, width_px, scene.res, fill)
        data = np.ma.getdata(a)
        strip[js] = data.astype(scene.dtype, copy=False)
        valid &= ~np.ma.getmaskarray(a).any(axis=0)
        valid &= _valid(data, scene.nodata, scene.zero_is_nodata).all(axis=0)
    cl = None
    if cloud and scene.cloud_mask is not None:
        ds = handles.get(scene.cloud_mask.path) or handles.setdefault(scene.cloud_mask.path,
                                                                      ropen(scene.cloud_mask.path))
        a = _read_window(ds, [scene.cloud_mask.band_index], bounds, patch_px, width_px, scene.res, 0,
                         categorical=True)
        cl = cloud_pixels(np.ma.getdata(a)[0], scene)
    starts = np.arange(nc) * stride_px
    pix = np.stack([strip[:, :, s:s + patch_px] for s in starts]) if nc else strip[None, :, :, :0]
    val = np.stack([valid[:, s:s + patch_px] for s in starts]) if nc else valid[None, :, :0]
    cld = None if cl is None else np.stack([cl[:, s:s + patch_px] for s in starts])
    return pix, val, cld


def close_handles(handles: dict) -> None:
    for ds in handles.values():
        ds.close()
    handles.clear()


def scan_scene(scene: Scene, patch_px: int, stride_px: int, stats: Callable | None = None,
               stat_columns: tuple[str, ...] = ("spectral_entropy",),
               progress: Callable[[int], None] | None = None, cloud_fn: Callable | None = None) -> pd.DataFrame:
    """One row per candidate patch of ``scene`` (row-major): quality and per-sample statistics.

    ``stats(pix (N, C, P, P), valid (N, P, P))`` → {column: (N,) array} for ``stat_columns``
    (the kind's :meth:`~als_datasets.kinds.raster.kind.RasterKind.patch_stats`); default: spectral
    entropy, 256 bins, nats.  ``cloud_fn(pix, valid)`` → (N, P, P) cloud pixels for a scene without a
    mask band (the kind's pixel test), else its cloud fraction is NaN."""
    stats = stats or (lambda pix, val: {"spectral_entropy": spectral_entropy(pix, val)})
    nc, nr = strip_cells(scene, patch_px, stride_px)
    cols = {k: [] for k in ("col", "row", "nodata_fraction", "cloud_fraction", *stat_columns)}
    handles: dict = {}
    try:
        for r in range(nr):
            pix, val, cld = read_strip(scene, r, patch_px, stride_px, handles)
            n = len(pix)
            if cld is None and cloud_fn is not None:
                cld = cloud_fn(pix, val)
            cols["col"].append(np.arange(n))
            cols["row"].append(np.full(n, r))
            cols["nodata_fraction"].append(1.0 - val.reshape(n, -1).mean(axis=1))
            cols["cloud_fraction"].append(np.full(n, np.nan) if cld is None else cld.reshape(n, -1).mean(axis=1))
            values = stats(pix, val)
            for k in stat_columns:
                cols[k].append(values[k])
            if progress:
                progress(n)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(scene.bands[0].path, f"cannot read raster: {exc}") from None
    finally:
        close_handles(handles)
    df = pd.DataFrame({k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()})
    df["col"] = df["col"].astype(np.int64)
    df["row"] = df["row"].astype(np.int64)
    return df


def scan_cells(scene: Scene, cells: list[tuple[int, int]], patch_px: int, stride_px: int, stats: Callable,
               stat_columns: tuple[str, ...], cloud_fn: Callable | None = None, batch: int = 16) -> pd.DataFrame:
    """Like :func:`scan_scene` for the listed cells only, each read by its own window (an archive's
    scene: only the candidate patches' windows are fetched, never the whole scene)."""
    from als_datasets.kinds.raster.scenes import read_cloud, read_patches

    cols = {k: [] for k in ("col", "row", "nodata_fraction", "cloud_fraction", *stat_columns)}
    handles: dict = {}
    for i in range(0, len(cells), batch):
        part = cells[i:i + batch]
        try:
            pix, val = read_patches(scene, part, patch_px, stride_px, handles)
            cld = read_cloud(scene, part, patch_px, stride_px, handles)
        except BaseException:
            close_handles(handles)
            raise
        if cld is None and cloud_fn is not None:
            cld = cloud_fn(pix, val)
        n = len(part)
        cols["col"].append(np.array([c for c, _ in part]))
        cols["row"].append(np.array([r for _, r in part]))
        cols["nodata_fraction"].append(1.0 - val.reshape(n, -1).mean(axis=1))
        cols["cloud_fraction"].append(np.full(n, np.nan) if cld is None else cld.reshape(n, -1).mean(axis=1))
        values = stats(pix, val)
        for k in stat_columns:
            cols[k].append(values[k])
    close_handles(handles)
    df = pd.DataFrame({k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()})
    df["col"] = df["col"].astype(np.int64)
    df["row"] = df["row"].astype(np.int64)
    return df


def scene_patch_geometry(scene: Scene, cells: list[tuple[int, int]], patch_px: int, stride_px: int):
    """Native bounds (N, 4), centres lon/lat (N, 2) and EPSG:4326 footprints (densified)."""
    from pyproj import Transformer
    from shapely import box, segmentize

    b = patch_bounds(scene, cells, patch_px, stride_px)
    ll = patch_lonlat(scene, cells, patch_px, stride_px)
    if not len(cells):
        return b, ll, np.zeros(0, dtype=object)
    geoms = segmentize(box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]), (b[0, 2] - b[0, 0]) / 4)
    tr = Transformer.from_crs(scene.crs, 4326, always_xy=True)
    import shapely

    foot = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return b, ll, foot


def landcover_labels(lc: dict, lon: np.ndarray, lat: np.ndarray, footprints) -> list[str | None]:
    """Mode land-cover class of a 5 × 5 grid of points inside each patch: the recipe's class name
    (codes in no class: ``other``), or the raster code as text without ``classes``; None outside
    the layer / on nodata."""
    import shapely
    from pyproj import Transformer

    path = lc["path"]
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot read land-cover raster: {exc}") from None
    with ds:
        if ds.crs is None:
            raise InputError(path, "land-cover raster has no CRS")
        lut = {c: name for name, codes in (lc.get("classes") or {}).items() for c in codes}
        out: list[str | None] = []
        tr = Transformer.from_crs(4326, ds.crs, always_xy=True)
        g = (np.arange(5) + 0.5) / 5
        band = ds.read(1, masked=True) if ds.width * ds.height <= 64_000_000 else None
        for f in footprints:
            x0, y0, x1, y1 = shapely.bounds(f)
            xs, ys = np.meshgrid(x0 + g * (x1 - x0), y0 + g * (y1 - y0))
            px, py = tr.transform(xs.ravel(), ys.ravel())
            rows, cols = rasterio.transform.rowcol(ds.transform, px, py)
            rows, cols = np.asarray(rows), np.asarray(cols)
            ok = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
            if band is None:
                vals = np.ma.masked_array([v[0] for v in ds.sample(zip(np.asarray(px)[ok], np.asarray(py)[ok]),
                                                                   masked=True)])
            else:
                vals = band[rows[ok], cols[ok]]
            vals = np.asarray(np.ma.compressed(vals)).astype(np.int64)
            if not len(vals):
                out.append(None)
                continue
            codes, counts = np.unique(vals, return_counts=True)
            code = int(codes[np.argmax(counts)])
            out.append(lut.get(code, "other") if lut else str(code))
    return out
