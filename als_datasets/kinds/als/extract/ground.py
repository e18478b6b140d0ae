"""Heights above ground of one tile's points, for the per-sample height entropy.

The ground surface comes from the tile's own ground returns (ASPRS class 2): in each ``cell_m``
cell a least-squares plane through its ground returns gives the ground at the cell's centre,
cells without ground (under roofs, dense canopy, water) continue the plane of the nearest cell
with ground for up to :data:`MAX_EXTRAPOLATION_M` and stay level beyond, and every point reads
that grid bilinearly (a plane is reproduced exactly, so a bare slope has heights ≈ 0).  When a
tile has too few ground returns to carry a surface — fewer than :data:`MIN_GROUND_CELLS` cells with ground, or ground in less than
:data:`MIN_GROUND_COVER` of the cells that hold any point (unclassified data, a tile under one
roof) — the heights fall back to the old rule, above the tile's lowest point, and the sample says
so (``height_reference``: ``"ground"`` or ``"lowest"``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

GROUND_CLASS = 2
#: size (m) of the cells whose ground returns are fitted with one plane
GROUND_CELL_M = 5.0
#: a cell without ground follows the slope of the nearest cell with ground this far (m), then stays
#: level (the ground under a building keeps the hillside's slope; a lake does not tilt up or down)
MAX_EXTRAPOLATION_M = 10.0
#: a surface needs ground in at least this many cells ...
MIN_GROUND_CELLS = 3
#: ... and in at least this fraction of the cells that hold any point
MIN_GROUND_COVER = 0.1

GROUND, LOWEST = "ground", "lowest"


def _fill(grid: np.ndarray, b: np.ndarray, c: np.ndarray, cell_m: float) -> np.ndarray:
    """Cells without ground (NaN) take the plane of the nearest cell with ground (``b``, ``c``: its
    slope along x and y), followed for at most :data:`MAX_EXTRAPOLATION_M` and level beyond."""
    have = np.isfinite(grid)
    if have.all():
        return grid
    from scipy import ndimage  # imported only when a cell lacks ground

    _, (ri, ci) = ndimage.distance_transform_edt(~have, return_indices=True)
    rows, cols = np.indices(grid.shape)
    dx, dy = (cols - ci) * cell_m, (rows - ri) * cell_m
    reach = np.minimum(1.0, MAX_EXTRAPOLATION_M / np.maximum(np.hypot(dx, dy), 1e-9))
    return grid[ri, ci] + (b[ri, ci] * dx + c[ri, ci] * dy) * reach


def floor_cells(offset: np.ndarray, cell_m: float) -> np.ndarray:
    """``(offset // cell_m).astype(int64)`` for offsets ≥ 0, without numpy's slow float floor
    division: ``floor(offset / cell_m)`` is the exact floor of the quotient except where the
    rounded quotient is a whole number (a quotient just below a whole number may round up to
    it), and only those offsets are divided with ``//`` again."""
    q = offset / cell_m
    f = np.floor(q)
    whole = np.flatnonzero(f == q)
    if len(whole):
        f[whole] = offset[whole] // cell_m
    return f.astype(np.int64)


@njit(cache=True)
def _interval(v, centres, cell):
    """The interval of ``centres`` that scipy's ``RegularGridInterpolator`` (linear, extrapolating)
    reads for the value ``v``: the last centre ≤ ``v``, kept within [0, n - 2].  ``cell``: the
    value's cell, floor(v / cell_m) at most n - 1 (:func:`floor_cells`), so the answer is
    ``cell`` or the one before; the two checks after it only guard against a value that sits on a
    centre a rounding error away from where its cell puts it."""
    n = len(centres)
    k = cell - 1 if v < centres[cell] else cell
    if k + 1 < n and centres[k + 1] <= v:
        k += 1
    if k >= 0 and centres[k] > v:
        k -= 1
    return min(max(k, 0), n - 2)


@njit(cache=True)
def _bilinear(flat, nx, centres_y, centres_x, step_y, step_x, vy, vx, y0, x0, cy, cx, out):
    # scipy's evaluate_linear_2d (float64, no fast-math: no reassociation, no fused multiply-add),
    # at (vy - y0, vx - x0)
    for p in range(len(vy)):
        py = vy[p] - y0
        px = vx[p] - x0
        iy = _interval(py, centres_y, cy[p])
        ix = _interval(px, centres_x, cx[p])
        ty = (py - centres_y[iy]) / step_y[iy]
        tx = (px - centres_x[ix]) / step_x[ix]
        at = iy * nx + ix
        out[p] = (flat[at] * (1.0 - ty) * (1.0 - tx) + flat[at + 1] * (1.0 - ty) * tx
                  + flat[at + nx] * ty * (1.0 - tx) + flat[at + nx + 1] * ty * tx)


def bilinear(grid: np.ndarray, centres_y: np.ndarray, centres_x: np.ndarray, vy: np.ndarray, vx: np.ndarray,
             cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """``RegularGridInterpolator((centres_y, centres_x), grid, method="linear", bounds_error=False,
    fill_value=None)`` at (vy, vx), with scipy's arithmetic (its 2-D float64 fast path: the
    interval, the normalised distance ``(v - c[i]) / (c[i+1] - c[i])`` and the four weighted
    corners summed in its order), so the same float64 bits; ``cy``, ``cx``: each value's cell
    (see :func:`_interval`).  Beyond the outer centres the edge intervals extrapolate linearly."""
    grid = np.ascontiguousarray(grid, dtype=np.float64)
    out = np.empty(len(vy), dtype=np.float64)
    _bilinear(grid.ravel(), grid.shape[1], centres_y, centres_x, np.diff(centres_y), np.diff(centres_x),
              np.ascontiguousarray(vy, dtype=np.float64), np.ascontiguousarray(vx, dtype=np.float64), 0.0, 0.0,
              np.ascontiguousarray(cy, dtype=np.int64), np.ascontiguousarray(cx, dtype=np.int64), out)
    return out


@njit(cache=True)
def _floor_div(a, b):
    """numpy's float64 floor division ``a // b`` (``npy_divmod``), bit for bit."""
    mod = np.fmod(a, b)
    div = (a - mod) / b
    if mod != 0.0:
        if (b < 0) != (mod < 0):
            div -= 1.0
    if div != 0.0:
        fl = np.floor(div)
        if div - fl > 0.5:
            fl += 1.0
        return fl
    return np.copysign(0.0, a / b)


@njit(cache=True)
def _cell_of(v, v0, cell_m, top):
    """:func:`floor_cells` of one offset ``v - v0``, at most ``top``."""
    o = v - v0
    q = o / cell_m
    f = np.floor(q)
    if f == q:  # the rounded quotient is whole: the exact floor may be one less
        f = _floor_div(o, cell_m)
    return min(int(f), top)


@njit(cache=True)
def _cells(x, y, cls, x0, y0, cell_m, nx, ny, ground):
    """Every point's cell (``cx``, ``cy``), how many cells hold a point, and the ground returns
    per cell: one pass over the tile."""
    n = len(x)
    cx, cy = np.empty(n, np.int64), np.empty(n, np.int64)
    occ = np.zeros(nx * ny, np.bool_)
    cnt = np.zeros(nx * ny, np.int64)
    for i in range(n):
        a = _cell_of(x[i], x0, cell_m, nx - 1)
        b = _cell_of(y[i], y0, cell_m, ny - 1)
        cx[i], cy[i] = a, b
        occ[b * nx + a] = True
        if cls[i] == ground:
            cnt[b * nx + a] += 1
    return cx, cy, occ.sum(), cnt


@njit(cache=True)
def _moments(x, y, z, cls, x0, y0, cell_m, nx, cx, cy, ground, z0, ncells):
    """Per cell, over its ground returns in point order (the order in which numpy's ``bincount``
    adds them): the sums of dx, dy, z - z0 and of their products (dx, dy from the cell's centre)."""
    acc = np.zeros((8, ncells))
    for i in range(len(x)):
        if cls[i] != ground:
            continue
        c = cy[i] * nx + cx[i]
        dx = (x[i] - x0) - (cx[i] + 0.5) * cell_m
        dy = (y[i] - y0) - (cy[i] + 0.5) * cell_m
        zg = z[i] - z0
        acc[0, c] += dx
        acc[1, c] += dy
        acc[2, c] += zg
        acc[3, c] += dx * dx
        acc[4, c] += dx * dy
        acc[5, c] += dy * dy
        acc[6, c] += dx * zg
        acc[7, c] += dy * zg
    return acc


def ground_surface(x, y, z, classification, cell_m: float = GROUND_CELL_M) -> np.ndarray | None:
    """The ground's z under every point, or None when the ground returns are too few (see the
    module docstring).

    Per ``cell_m`` cell with ground returns, a least-squares plane through them gives the ground
    at the cell's centre (their mean z when they do not span a plane); a cell without ground
    continues the nearest ground cell's plane (see :func:`_fill`); the points read the grid of
    centres bilinearly (linear extrapolation over the outer half cell; :func:`bilinear`, the
    arithmetic of scipy's ``RegularGridInterpolator``).  A plane is reproduced exactly, so bare
    ground of any slope has heights ≈ 0.
    """
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    cls = np.asarray(classification)
    g = cls == GROUND_CLASS
    if np.count_nonzero(g) < MIN_GROUND_CELLS:
        return None
    x0, y0 = x.min(), y.min()
    nx = max(int((x.max() - x0) // cell_m) + 1, 2)  # at least 2 x 2 centres to interpolate between
    ny = max(int((y.max() - y0) // cell_m) + 1, 2)
    # one pass for the cells (floor_cells' rule), one over the ground returns for the moments;
    # the sums run in point order, as numpy's bincount adds them: the same float64 bits
    cx, cy, occupied, cnt = _cells(x, y, cls, x0, y0, cell_m, nx, ny, GROUND_CLASS)
    n = cnt.astype(np.float64)
    have = n > 0
    if have.sum() < max(MIN_GROUND_CELLS, MIN_GROUND_COVER * occupied):
        return None
    z0 = z[g].min()  # small numbers in the moments below
    acc = _moments(x, y, z, cls, x0, y0, cell_m, nx, cx, cy, GROUND_CLASS, z0, nx * ny)
    # plane z = a + b dx + c dy per cell, (dx, dy) from the cell's centre: a is the ground there
    m = n[have]
    sx, sy, sz = acc[0][have] / m, acc[1][have] / m, acc[2][have] / m
    vxx, vxy, vyy = acc[3][have] / m - sx * sx, acc[4][have] / m - sx * sy, acc[5][have] / m - sy * sy
    cxz, cyz = acc[6][have] / m - sx * sz, acc[7][have] / m - sy * sz
    det = vxx * vyy - vxy * vxy
    plane = (m >= 3) & (det > (0.01 * cell_m * cell_m) ** 2)  # points spread over the cell in x and y
    safe = np.where(plane, det, 1.0)
    b = np.where(plane, (cxz * vyy - cyz * vxy) / safe, 0.0)
    c = np.where(plane, (cyz * vxx - cxz * vxy) / safe, 0.0)
    grid, gb, gc = np.full(nx * ny, np.nan), np.zeros(nx * ny), np.zeros(nx * ny)
    grid[have] = z0 + sz - b * sx - c * sy  # the plane through the mean point, at the centre
    gb[have], gc[have] = b, c
    grid = _fill(grid.reshape(ny, nx), gb.reshape(ny, nx), gc.reshape(ny, nx), cell_m)
    centres_x = (np.arange(nx) + 0.5) * cell_m
    centres_y = (np.arange(ny) + 0.5) * cell_m
    out = np.empty(len(x), dtype=np.float64)
    _bilinear(np.ascontiguousarray(grid).ravel(), nx, centres_y, centres_x, np.diff(centres_y), np.diff(centres_x),
              y, x, y0, x0, cy, cx, out)
    return out


def heights_above_ground(points: np.ndarray, cell_m: float = GROUND_CELL_M) -> tuple[np.ndarray, str]:
    """(height of every point above the ground surface, ``"ground"``), or above the tile's lowest
    point and ``"lowest"`` when the tile has too few ground returns.  ``points``: a structured
    array with x, y, z and classification."""
    z = np.asarray(points["z"], dtype=np.float64)
    if z.size == 0:
        return z, LOWEST
    surface = ground_surface(points["x"], points["y"], z, points["classification"], cell_m)
    if surface is None:
        return z - z.min(), LOWEST
    return z - surface, GROUND
