"""Per-tile terrain rasters from a sample's cleaned points (recipe key ``terrain_rasters``).

Four float32 rasters of shape (H, W) = (tile / cell, tile / cell), north up (row 0 is the tile's
north edge, column 0 its west edge), cell size ``cell_m`` (1 m by default):

* ``dtm.npy``: mean z of the ground returns (ASPRS class 2) in the cell; cells without a ground
  return take the value of the nearest cell with one (Euclidean distance between cell centres;
  among equally near cells the one ``scipy.ndimage.distance_transform_edt`` reports, which is
  deterministic).  A tile without any ground return has a DTM of NaN everywhere.
* ``dsm.npy``: the highest return (any class, after the noise and outlier filters) in the cell;
  a cell without any return takes the DTM's value.
* ``ndsm.npy``: DSM − DTM (so 0 where the DSM was filled from the DTM).
* ``intensity_mean.npy``: mean intensity of all returns in the cell; 0 where there is none.

Cell membership: a point at tile-relative (x, y) (the sample's float32 ``xyz``) falls in column
``floor(x / cell)`` and in the row counted from the south ``floor(y / cell)``; a point on a
cell edge belongs to the cell east / north of that edge, and x, y < tile keep every point
inside the raster.  Means are float64 sums in the sample's point order, stored as float32;
the maximum has no ties to break (equal heights are one value).  The json gives
``raster_cell_m``, ``raster_origin_utm`` (x, y of the raster's upper-left corner, the tile's
north-west corner, in the tile's UTM CRS), ``raster_shape`` and ``raster_ground_fraction`` (the
share of cells with a ground return before filling).
"""

from __future__ import annotations

import numpy as np

GROUND_CLASS = 2
#: the sample members this module writes, in order
RASTER_MEMBERS = ("dtm.npy", "dsm.npy", "ndsm.npy", "intensity_mean.npy")
DEFAULT_CELL_M = 1.0


def raster_shape(tile_m: float, cell_m: float) -> tuple[int, int]:
    n = int(round(tile_m / cell_m))
    return n, n


def terrain_cell_m(value) -> float:
    """The recipe's ``terrain_rasters`` as a cell size in metres: 0 when off (absent, null,
    false), :data:`DEFAULT_CELL_M` for ``true``, ``{cell_m: c}`` for another size.  Raises
    ``ValueError`` with the reason for anything else (the recipe loader names the file)."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return DEFAULT_CELL_M
    if isinstance(value, dict):
        extra = set(value) - {"cell_m"}
        if extra:
            raise ValueError(f"terrain_rasters: unknown key(s): {', '.join(sorted(map(str, extra)))}")
        c = value.get("cell_m", DEFAULT_CELL_M)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (c > 0) or not np.isfinite(c):
            raise ValueError(f"terrain_rasters.cell_m must be a positive number of metres, got {c!r}")
        return float(c)
    raise ValueError(f"terrain_rasters must be true, false, null or {{cell_m: metres}}, got {value!r}")


def _cells(x: np.ndarray, y: np.ndarray, cell_m: float, shape: tuple[int, int]) -> np.ndarray:
    """Flat row-major index (row 0 = north) of every point's cell."""
    h, w = shape
    col = np.clip(np.floor(np.asarray(x, np.float64) / cell_m).astype(np.int64), 0, w - 1)
    south = np.clip(np.floor(np.asarray(y, np.float64) / cell_m).astype(np.int64), 0, h - 1)
    return (h - 1 - south) * w + col


def _fill_nearest(grid: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    have = np.isfinite(grid)
    if have.all() or not have.any():
        return grid
    _, (ri, ci) = ndimage.distance_transform_edt(~have, return_indices=True)
    return grid[ri, ci]


def terrain_rasters(xyz: np.ndarray, intensity: np.ndarray, classification: np.ndarray,
                    tile_m: float, cell_m: float) -> tuple[dict[str, np.ndarray], float]:
    """(the four rasters by member name, share of cells with a ground return) for one sample's
    float32 tile-relative ``xyz`` and its attributes (module docstring: the gridding rule)."""
    shape = raster_shape(tile_m, cell_m)
    size = shape[0] * shape[1]
    xyz = np.asarray(xyz)
    z = xyz[:, 2].astype(np.float64)
    cells = _cells(xyz[:, 0], xyz[:, 1], cell_m, shape)
    g = np.asarray(classification) == GROUND_CLASS
    n_g = np.bincount(cells[g], minlength=size)
    sum_g = np.bincount(cells[g], weights=z[g], minlength=size)
    dtm = np.full(size, np.nan)
    have = n_g > 0
    dtm[have] = sum_g[have] / n_g[have]
    dtm = _fill_nearest(dtm.reshape(shape))
    dsm = np.full(size, -np.inf)
    np.maximum.at(dsm, cells, z)
    dsm = dsm.reshape(shape)
    empty = ~np.isfinite(dsm)
    dsm[empty] = dtm[empty]
    n_all = np.bincount(cells, minlength=size)
    s_int = np.bincount(cells, weights=np.asarray(intensity, np.float64), minlength=size)
    inten = np.zeros(size)
    np.divide(s_int, n_all, out=inten, where=n_all > 0)
    out = {
        "dtm.npy": dtm.astype(np.float32),
        "dsm.npy": dsm.astype(np.float32),
        "ndsm.npy": (dsm - dtm).astype(np.float32),
        "intensity_mean.npy": inten.reshape(shape).astype(np.float32),
    }
    return out, float(have.mean()) if size else 0.0


def terrain_json(rec: dict, cell_m: float, ground_fraction: float) -> dict:
    """The json fields that describe a sample's rasters (``rec``: the tile's plan record)."""
    minx, _, _, maxy = rec["bounds_utm"]
    return {"raster_cell_m": float(cell_m), "raster_origin_utm": [float(minx), float(maxy)],
            "raster_shape": list(raster_shape(rec["tile_size_m"], cell_m)),
            "raster_ground_fraction": float(ground_fraction)}


def terrain_schema() -> dict:
    return {"raster_cell_m": float, "raster_origin_utm": [float], "raster_shape": [int],
            "raster_ground_fraction": float}
