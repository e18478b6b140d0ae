"""The numpy ground surface (issue 15) gives the same float64 bits as the scipy
``RegularGridInterpolator`` version it replaced, kept here verbatim as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from als_datasets.kinds.als.extract.ground import (
    GROUND_CELL_M,
    MIN_GROUND_CELLS,
    MIN_GROUND_COVER,
    _cells,
    _fill,
    _floor_div,
    bilinear,
    floor_cells,
    ground_surface,
)


def old_ground_surface(x, y, z, classification, cell_m: float = GROUND_CELL_M):
    """ground_surface before issue 15 (scipy's RegularGridInterpolator), verbatim."""
    from scipy.interpolate import RegularGridInterpolator

    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    g = np.asarray(classification) == 2
    if g.sum() < MIN_GROUND_CELLS:
        return None
    x0, y0 = x.min(), y.min()
    nx = max(int((x.max() - x0) // cell_m) + 1, 2)
    ny = max(int((y.max() - y0) // cell_m) + 1, 2)
    cx = np.minimum(((x - x0) // cell_m).astype(np.int64), nx - 1)
    cy = np.minimum(((y - y0) // cell_m).astype(np.int64), ny - 1)
    cells = cy * nx + cx
    occupied = np.count_nonzero(np.bincount(cells, minlength=nx * ny))
    gi = cells[g]
    n = np.bincount(gi, minlength=nx * ny).astype(np.float64)
    have = n > 0
    if have.sum() < max(MIN_GROUND_CELLS, MIN_GROUND_COVER * occupied):
        return None
    dx = (x[g] - x0) - (cx[g] + 0.5) * cell_m
    dy = (y[g] - y0) - (cy[g] + 0.5) * cell_m
    z0 = z[g].min()
    zg = z[g] - z0

    def total(w):
        return np.bincount(gi, weights=w, minlength=nx * ny)[have]

    m = n[have]
    sx, sy, sz = total(dx) / m, total(dy) / m, total(zg) / m
    vxx, vxy, vyy = total(dx * dx) / m - sx * sx, total(dx * dy) / m - sx * sy, total(dy * dy) / m - sy * sy
    cxz, cyz = total(dx * zg) / m - sx * sz, total(dy * zg) / m - sy * sz
    det = vxx * vyy - vxy * vxy
    plane = (m >= 3) & (det > (0.01 * cell_m * cell_m) ** 2)
    safe = np.where(plane, det, 1.0)
    b = np.where(plane, (cxz * vyy - cyz * vxy) / safe, 0.0)
    c = np.where(plane, (cyz * vxx - cxz * vxy) / safe, 0.0)
    grid, gb, gc = np.full(nx * ny, np.nan), np.zeros(nx * ny), np.zeros(nx * ny)
    grid[have] = z0 + sz - b * sx - c * sy
    gb[have], gc[have] = b, c
    grid = _fill(grid.reshape(ny, nx), gb.reshape(ny, nx), gc.reshape(ny, nx), cell_m)
    centres_x = (np.arange(nx) + 0.5) * cell_m
    centres_y = (np.arange(ny) + 0.5) * cell_m
    interp = RegularGridInterpolator((centres_y, centres_x), grid, method="linear", bounds_error=False,
                                     fill_value=None)
    return interp(np.stack([y - y0, x - x0], axis=1))


def _edgy(rng, n: int, size: float, cell: float) -> np.ndarray:
    """Offsets in [0, size]: random, on cell edges and centres, and a float32 ulp either side."""
    v = rng.random(n) * size
    k = rng.integers(0, int(size / cell) + 1, n)
    on = np.concatenate([k * cell, (k + 0.5) * cell])[:n]
    v[: n // 3] = on[: n // 3]
    nb = n // 6
    v[n // 3: n // 3 + nb] = np.nextafter(on[:nb], np.inf)
    v[n // 3 + nb: n // 3 + 2 * nb] = np.nextafter(on[nb:2 * nb], -np.inf)
    return np.clip(v, 0, size).astype(np.float32)  # the sample's float32 coordinates


@pytest.mark.parametrize("cell", [GROUND_CELL_M, 0.3, 1.0, 7.0])
def test_floor_cells_is_numpy_floor_division(cell):
    rng = np.random.default_rng(3)
    v = _edgy(rng, 200_000, 500.0, cell).astype(np.float64)
    v = np.concatenate([v, np.arange(0, 2000) * cell, np.nextafter(np.arange(1, 2000) * cell, 0)])
    assert np.array_equal(floor_cells(v, cell), (v // cell).astype(np.int64))
    # and the compiled cells of ground_surface follow the same rule, point by point
    cx, _, _, _ = _cells(v, np.zeros(len(v)), np.zeros(len(v), np.uint8), 0.0, 0.0, cell, 1 << 16, 1, 2)
    assert np.array_equal(cx, (v // cell).astype(np.int64))
    w = np.concatenate([v, -v, [0.0, -0.0, 1e-300, cell * 0.5]])
    got = np.array([_floor_div(a, cell) for a in w])
    assert got.tobytes() == (w // cell).tobytes()  # numpy's floor division, signed zeros included


@pytest.mark.parametrize("seed", range(6))
def test_bilinear_is_scipy_bits(seed):
    from scipy.interpolate import RegularGridInterpolator

    rng = np.random.default_rng(seed)
    cell = [GROUND_CELL_M, 0.3, 2.5, 1.0, 5.0, 3.7][seed]
    ny, nx = rng.integers(2, 30, 2)
    grid = rng.normal(100, 20, (ny, nx))
    cy_, cx_ = (np.arange(ny) + 0.5) * cell, (np.arange(nx) + 0.5) * cell
    vy = _edgy(rng, 50_000, ny * cell, cell).astype(np.float64)
    vx = _edgy(rng, 50_000, nx * cell, cell).astype(np.float64)
    cy = np.minimum(floor_cells(vy, cell), ny - 1)
    cx = np.minimum(floor_cells(vx, cell), nx - 1)
    want = RegularGridInterpolator((cy_, cx_), grid, method="linear", bounds_error=False,
                                   fill_value=None)(np.stack([vy, vx], axis=1))
    got = bilinear(grid, cy_, cx_, vy, vx, cy, cx)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("seed", range(8))
def test_ground_surface_is_the_old_bits(seed):
    rng = np.random.default_rng(100 + seed)
    size = [500.0, 500.0, 100.0, 37.0, 500.0, 12.0, 250.0, 3.0][seed]
    n = [300_000, 100_000, 40_000, 5_000, 50_000, 500, 80_000, 40][seed]
    x, y = _edgy(rng, n, size, GROUND_CELL_M), _edgy(rng, n, size, GROUND_CELL_M)
    z = (100 + 20 * np.sin(x / 30.0) + rng.random(n) * 25 * (rng.random(n) < 0.4)).astype(np.float32)
    ground_share = [0.6, 0.05, 0.9, 0.5, 0.6, 0.5, 0.3, 0.5][seed]
    cls = np.where(rng.random(n) < ground_share, 2, 5).astype(np.uint8)
    if seed == 4:  # a hole with no ground (under a roof): filled from the nearest cells
        cls[(x > 100) & (x < 180) & (y > 200) & (y < 300)] = 6
    if seed == 6:  # ground on one side only: extrapolated far and level beyond
        cls[x > 60] = 5
    old = old_ground_surface(x, y, z, cls)
    new = ground_surface(x, y, z, cls)
    assert (old is None) == (new is None)
    if old is not None:
        assert new.tobytes() == old.tobytes()


def test_ground_surface_on_a_real_shape_tile():
    """A strided float32 view (the sample's xyz columns), as the shard task passes it."""
    rng = np.random.default_rng(7)
    xyz = np.column_stack([rng.random(60_000) * 500, rng.random(60_000) * 500,
                           100 + rng.random(60_000) * 5]).astype(np.float32)
    cls = np.where(rng.random(60_000) < 0.5, 2, 5).astype(np.uint8)
    old = old_ground_surface(xyz[:, 0], xyz[:, 1], xyz[:, 2], cls)
    new = ground_surface(xyz[:, 0], xyz[:, 1], xyz[:, 2], cls)
    assert new.tobytes() == old.tobytes()
