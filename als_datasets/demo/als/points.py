"""The demo's point clouds: per-project building and tree grids, then the simulated pulses and
returns of one delivery tile (ground, roofs, multi-return vegetation, water, noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .region import LANDCOVER_CRS, TERRAIN_CRS, _transformer

PULSE_DENSITY = 0.2  # pulses per square metre (~0.35 points/m2 with multiple returns)
BLD_CELL = 25.0
TREE_CELL = 6.0
_P_BUILDING = {21: 0.10, 22: 0.35, 23: 0.55, 24: 0.70}
_P_TREE = {41: 0.80, 42: 0.88, 43: 0.85, 90: 0.35, 21: 0.22, 22: 0.10, 23: 0.05, 24: 0.02, 52: 0.06, 71: 0.03, 81: 0.01, 82: 0.01}
_TREE_H = {41: (12, 26), 42: (18, 35), 43: (14, 30), 90: (5, 14)}  # others: (7, 18)
_P_LOWVEG = {52: 0.55, 71: 0.3, 81: 0.15, 82: 0.3, 90: 0.4, 21: 0.1}


def _lut(d: dict, default: float, dtype=np.float64) -> np.ndarray:
    lut = np.full(256, default, dtype=dtype)
    for k, v in d.items():
        lut[k] = v
    return lut


@dataclass
class _ProjectGrids:
    x0: float  # metric frame origin of the cell grids
    y0: float
    bld: dict
    tree: dict


def _project_grids(region, project, lc_lookup, bounds_native, rng) -> _ProjectGrids:
    """Buildings (25 m cells) and trees (6 m cells) for a whole project, in its metric frame."""
    u = project.unit
    to_lc = _transformer(project.crs, LANDCOVER_CRS)
    to_terrain = _transformer(project.crs, TERRAIN_CRS) if project.crs != TERRAIN_CRS else None
    mx0 = math.floor(bounds_native[0] * u / BLD_CELL) * BLD_CELL - BLD_CELL
    my0 = math.floor(bounds_native[1] * u / BLD_CELL) * BLD_CELL - BLD_CELL
    mx1 = bounds_native[2] * u + BLD_CELL
    my1 = bounds_native[3] * u + BLD_CELL

    def cells(size):
        nx = int(math.ceil((mx1 - mx0) / size))
        ny = int(math.ceil((my1 - my0) / size))
        cx, cy = np.meshgrid(mx0 + (np.arange(nx) + 0.5) * size, my0 + (np.arange(ny) + 0.5) * size)
        return cx, cy

    def native_lookup(mx, my):
        nx_, ny_ = mx.ravel() / u, my.ravel() / u
        code = lc_lookup(*to_lc.transform(nx_, ny_)).reshape(mx.shape)
        tx, ty = to_terrain.transform(nx_, ny_) if to_terrain else (nx_, ny_)
        return code, region.elevation(tx, ty).reshape(mx.shape)

    # buildings
    bx, by = cells(BLD_CELL)
    bcode, bz = native_lookup(bx, by)
    shape = bx.shape
    present = rng.random(shape) < _lut(_P_BUILDING, 0.0)[bcode]
    core = bcode == 24
    hw = np.where(core, rng.uniform(6.5, 8.5, shape), rng.uniform(4.0, 7.5, shape))
    hh = np.where(core, rng.uniform(6.0, 8.5, shape), rng.uniform(3.5, 6.0, shape))
    ang = rng.uniform(-0.35, 0.35, shape)
    slack = np.clip(BLD_CELL / 2 - np.hypot(hw, hh) - 0.5, 0.0, None)
    bx = bx + rng.uniform(-1, 1, shape) * slack
    by = by + rng.uniform(-1, 1, shape) * slack
    height = np.select(
        [bcode <= 22, bcode == 23], [rng.uniform(5, 9, shape), rng.uniform(6, 14, shape)], rng.uniform(10, 20, shape)
    )
    gable = np.where(bcode <= 22, rng.uniform(0.3, 0.6, shape), 0.0)
    bld = dict(present=present, x=bx, y=by, hw=hw, hh=hh, ang=ang, roof=bz + height, gable=gable)

    # trees
    tx, ty = cells(TREE_CELL)
    tcode, _ = native_lookup(tx, ty)
    shape = tx.shape
    tpresent = rng.random(shape) < _lut(_P_TREE, 0.0)[tcode]
    lo = _lut({k: v[0] for k, v in _TREE_H.items()}, 7.0)[tcode]
    hi = _lut({k: v[1] for k, v in _TREE_H.items()}, 18.0)[tcode]
    th = lo + (hi - lo) * rng.beta(2.0, 2.0, shape)
    tr = np.clip(0.13 * th + rng.uniform(0.3, 1.5, shape), 1.5, 5.5)
    tx = tx + rng.uniform(-2.0, 2.0, shape)
    ty = ty + rng.uniform(-2.0, 2.0, shape)
    tree = dict(present=tpresent, x=tx, y=ty, h=th, r=tr)
    return _ProjectGrids(mx0, my0, bld, tree)


def _gather(grid: dict, key: str, i, j, ok):
    a = grid[key]
    return np.where(ok, a[np.clip(j, 0, a.shape[0] - 1), np.clip(i, 0, a.shape[1] - 1)], 0)


def _tile_points(
    region, project, grids, lc_lookup, polygon, bounds, rng, density: float = PULSE_DENSITY
) -> dict[str, np.ndarray] | None:
    """Simulate the pulses and returns of one delivery tile (native CRS bounds)."""
    import shapely

    u = project.unit
    x0, y0, x1, y1 = bounds
    area = (x1 - x0) * (y1 - y0) * u * u
    n = int(rng.poisson(area * density))
    x = rng.uniform(x0, x1, n)
    y = rng.uniform(y0, y1, n)
    keep = shapely.contains_xy(polygon, x, y)
    x, y = x[keep], y[keep]
    n = x.size
    if n == 0:
        return None
    mx, my = x * u, y * u
    if project.crs != TERRAIN_CRS:
        ux, uy = _transformer(project.crs, TERRAIN_CRS).transform(x, y)
    else:
        ux, uy = x, y
    ground = region.elevation(ux, uy)
    code = lc_lookup(*_transformer(project.crs, LANDCOVER_CRS).transform(x, y))

    # buildings: the point's own 25 m cell
    b = grids.bld
    bi = np.floor((mx - grids.x0) / BLD_CELL).astype(np.int64)
    bj = np.floor((my - grids.y0) / BLD_CELL).astype(np.int64)
    inb = (bi >= 0) & (bj >= 0) & (bi < b["x"].shape[1]) & (bj < b["x"].shape[0])
    bp = _gather(b, "present", bi, bj, inb).astype(bool)
    ca, sa = np.cos(_gather(b, "ang", bi, bj, inb)), np.sin(_gather(b, "ang", bi, bj, inb))
    dx, dy = mx - _gather(b, "x", bi, bj, inb), my - _gather(b, "y", bi, bj, inb)
    lu, lv = ca * dx + sa * dy, -sa * dx + ca * dy
    bhw, bhh = _gather(b, "hw", bi, bj, inb), _gather(b, "hh", bi, bj, inb)
    in_bld = bp & (np.abs(lu) < bhw) & (np.abs(lv) < bhh)
    roof = _gather(b, "roof", bi, bj, inb) + _gather(b, "gable", bi, bj, inb) * (bhh - np.abs(lv))

    # trees: the 3 x 3 nearest 6 m cells, highest canopy wins
    t = grids.tree
    ti = np.floor((mx - grids.x0) / TREE_CELL).astype(np.int64)
    tj = np.floor((my - grids.y0) / TREE_CELL).astype(np.int64)
    canopy = np.zeros(n)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = ti + di, tj + dj
            ok = (i >= 0) & (j >= 0) & (i < t["x"].shape[1]) & (j < t["x"].shape[0])
            ok &= _gather(t, "present", i, j, ok).astype(bool)
            d = np.hypot(mx - _gather(t, "x", i, j, ok), my - _gather(t, "y", i, j, ok))
            r = np.where(ok, _gather(t, "r", i, j, ok), 1.0)
            h = _gather(t, "h", i, j, ok) * (1.0 - 0.55 * (d / r) ** 1.5)
            canopy = np.where(ok & (d < r), np.maximum(canopy, h), canopy)

    # pulse categories: 0 open ground, 1 building, 2 canopy, 3 water, 4 low noise, 5 high noise, 6 bird
    cat = np.where(in_bld, 1, np.where(canopy > 1.0, 2, 0))
    cat = np.where(code == 11, 3, cat)
    keep = (cat != 3) | (rng.random(n) < 0.35)  # water absorbs most pulses
    u_noise = rng.random(n)
    cat = np.where(u_noise < 6e-5, 4, np.where(u_noise > 1 - 5e-5, 5, np.where(u_noise > 1 - 7e-5, 6, cat)))
    x, y, mx, my, ground, code, cat, canopy, roof = (
        a[keep] for a in (x, y, mx, my, ground, code, cat, canopy, roof)
    )
    n = x.size
    lowveg = (cat == 0) & (rng.random(n) < _lut(_P_LOWVEG, 0.0)[code])
    nret = np.ones(n, dtype=np.int64)
    nret = np.where(cat == 2, rng.choice([1, 2, 3, 4], size=n, p=[0.22, 0.38, 0.28, 0.12]), nret)
    nret = np.where((cat == 2) & (canopy < 3.0), np.minimum(nret, 2), nret)
    nret = np.where(lowveg, 2, nret)
    vegh = np.where(code == 52, rng.uniform(0.5, 3.0, n), rng.uniform(0.2, 1.2, n))

    # flight lines run north-south, 700 m apart, flown at 1400 m; gps time orders the pulses
    line = np.floor(mx / 700.0)
    ang = np.degrees(np.arctan((mx - (line + 0.5) * 700.0) / 1400.0))
    direction = np.where(line % 2 == 0, 1.0, -1.0)
    gps = 3.0e8 + line * 900.0 + 450.0 + direction * ((my % 20000.0) / 65.0 - 154.0)
    order = np.lexsort((mx, gps))
    (x, y, ground, code, cat, canopy, roof, nret, vegh, lowveg, ang, line, gps) = (
        a[order] for a in (x, y, ground, code, cat, canopy, roof, nret, vegh, lowveg, ang, line, gps)
    )

    # expand pulses into returns
    pid = np.repeat(np.arange(n), nret)
    start = np.cumsum(nret) - nret
    rn = np.arange(pid.size) - start[pid] + 1
    nr = nret[pid]
    c = cat[pid]
    g = ground[pid] + rng.normal(0.0, 0.04, pid.size)
    hgt = np.zeros(pid.size)  # height above ground of each return
    cls = np.full(pid.size, 2, dtype=np.uint8)
    first = rn == 1
    last = (rn == nr) & (nr > 1)
    mid = ~first & ~last
    cano = canopy[pid]
    # canopy pulses
    m = (c == 2) & first
    hgt[m] = cano[m] + rng.normal(0, 0.15, m.sum())
    m = (c == 2) & mid
    hgt[m] = cano[m] * np.clip((nr[m] - rn[m]) / nr[m] * rng.uniform(0.7, 1.2, m.sum()), 0.05, 0.95)
    m = (c == 2) & last
    understory = rng.random(pid.size) < 0.28
    hgt[m & understory] = rng.uniform(0.2, 1.5, (m & understory).sum())
    veg = (c == 2) & ~(last & ~understory)
    # low vegetation over open ground (two returns: top of the grass/shrub, then ground)
    m = lowveg[pid] & first
    hgt[m] = vegh[pid][m]
    veg |= m
    cls[veg] = np.where(hgt[veg] < 2.0, 3, np.where(hgt[veg] < 5.0, 4, 5))
    z = g + hgt
    m = c == 1
    z[m] = roof[pid][m] + rng.normal(0, 0.03, m.sum())
    cls[m] = 6
    m = c == 3
    cls[m] = 9
    z[m] = ground[pid][m] + rng.normal(0, 0.02, m.sum())
    m = c == 4
    z[m] = g[m] - rng.uniform(8, 80, m.sum())
    cls[m] = 7
    m = c == 5
    z[m] = g[m] + rng.uniform(150, 600, m.sum())
    cls[m] = 18 if project.point_format >= 6 else 7
    m = c == 6
    z[m] = g[m] + rng.uniform(25, 120, m.sum())
    cls[m] = 1

    # intensity by surface (uint16)
    dev = np.isin(code[pid], (21, 22, 23, 24))
    base = np.select(
        [cls == 6, cls == 9, (cls == 2) & dev, cls == 2, np.isin(cls, (3, 4, 5))],
        [1700.0, 120.0, 650.0, 1150.0, 850.0],
        400.0,
    )
    inten = base / np.sqrt(rn) * rng.lognormal(0.0, 0.22, pid.size)
    inten = np.clip(np.round(inten), 1, 65535).astype(np.uint16)

    # later returns travel further along the slanted beam
    zf = np.maximum.reduceat(z, start) if n else z
    shift = (zf[pid] - z) * np.tan(np.radians(ang[pid]))
    px = (x[pid] * u + shift) / u
    py = y[pid]
    pts = {
        "x": px,
        "y": py,
        "z": z / u,
        "intensity": inten,
        "return_number": rn.astype(np.uint8),
        "number_of_returns": nr.astype(np.uint8),
        "classification": cls,
        "gps_time": gps[pid],
        "point_source_id": (line[pid] % 60000 + 1).astype(np.uint16),
    }
    if project.point_format >= 6:
        pts["scan_angle"] = np.round(ang[pid] / 0.006).astype(np.int16)
    else:
        pts["scan_angle_rank"] = np.round(ang[pid]).astype(np.int8)
    return pts
