"""The embedded demo region: a deterministic synthetic ALS region generated on first use.

Three "LiDAR projects" near the Columbia River (Camas WA, Troutdale OR, Corbett OR) with
analytic terrain (flat valley floors, rolling hills, steep ridges and bluffs), an NLCD-coded
land-cover raster (EPSG:5070, 30 m), a 1/3 arc-second DEM (EPSG:4269) and LAZ point clouds
(ground, buildings, multi-return vegetation, water, noise) delivered as several tiles per project.
Nothing is real except the rough location: terrain, towns and forests are made up.

Everything is a pure function of the seed; all coordinate conversions are NAD83 -> NAD83
projections (no datum grids), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import default_cache, ensure_generated
from .synth import write_geotiff, write_las

__all__ = ["ensure_demo", "demo_region", "generate_demo", "DemoRegion", "DemoProject", "NLCD_COLORS"]

DEMO_VERSION = "v1"
TERRAIN_CRS = 26910  # NAD83 / UTM zone 10N: the frame the analytic landscape is defined in
LANDCOVER_CRS = 5070  # NAD83 / CONUS Albers, like the real NLCD
DEM_CRS = 4269  # NAD83 geographic, like the 3DEP 1/3 arc-second DEM
DEM_RES_DEG = 1.0 / 10800.0
LC_RES = 30.0
US_FT = 1200.0 / 3937.0  # metres per US survey foot

NLCD_COLORS: dict[int, tuple[int, int, int, int]] = {
    11: (70, 107, 159, 255),
    21: (222, 197, 197, 255),
    22: (217, 146, 130, 255),
    23: (235, 0, 0, 255),
    24: (171, 0, 0, 255),
    41: (104, 171, 95, 255),
    42: (28, 95, 44, 255),
    43: (181, 197, 143, 255),
    52: (204, 184, 121, 255),
    71: (223, 223, 194, 255),
    81: (220, 217, 57, 255),
    82: (171, 108, 40, 255),
    90: (184, 217, 235, 255),
}


# ----------------------------------------------------------------------------------------------
# region description
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoProject:
    name: str
    center: tuple[float, float]  # TERRAIN_CRS metres
    size: tuple[float, float]  # metres (east-west, north-south)
    crs: int  # EPSG of the point clouds
    unit: float  # metres per CRS unit
    las_version: str
    point_format: int
    delivery_tile: float  # delivery tile size in CRS units
    description: str


@dataclass
class DemoRegion:
    """The analytic landscape: terrain z(x, y) and land-cover rules, in TERRAIN_CRS metres."""

    seed: int
    projects: list[DemoProject]
    gauss: np.ndarray  # (k, 6): cx, cy, h, sx, sy, theta
    ridges: np.ndarray  # (k, 6): x0, y0, x1, y1, h, s
    steps: np.ndarray  # (k, 6): px, py, nx, ny, h, w (logistic escarpment rising along n)
    waves: np.ndarray  # (k, 4): kx, ky, phase, amplitude (metres)
    lc_waves: np.ndarray  # (k, 4): normalised noise for land-cover patchiness
    towns: list[dict] = field(default_factory=list)
    farms: list[dict] = field(default_factory=list)
    clearings: list[dict] = field(default_factory=list)
    rivers: list[dict] = field(default_factory=list)
    lakes: list[dict] = field(default_factory=list)
    base: float = 20.0

    # ---- terrain -------------------------------------------------------------------------
    def elevation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = np.full(np.broadcast(x, y).shape, self.base)
        for cx, cy, h, sx, sy, th in self.gauss:
            c, s = math.cos(th), math.sin(th)
            dx, dy = x - cx, y - cy
            u = (c * dx + s * dy) / sx
            v = (-s * dx + c * dy) / sy
            z += h * np.exp(-0.5 * (u * u + v * v))
        for x0, y0, x1, y1, h, s in self.ridges:
            d2 = _seg_dist2(x, y, x0, y0, x1, y1)
            z += h * np.exp(-0.5 * d2 / (s * s))
        for px, py, nx, ny, h, w in self.steps:
            t = ((x - px) * nx + (y - py) * ny) / w
            z += h * 0.5 * (1.0 + np.tanh(0.5 * np.clip(t, -60, 60)))
        for r in self.rivers:  # flat-bottomed channels carved to the water level
            d = np.sqrt(_polyline_dist2(x, y, r["line"]))
            wgt = 1.0 / (1.0 + np.exp(np.clip((d - r["half_width"] - 60.0) / 25.0, -60, 60)))
            z = z * (1.0 - wgt) + r["level"] * wgt
        for lk in self.lakes:
            d = np.hypot(x - lk["cx"], y - lk["cy"])
            wgt = 1.0 / (1.0 + np.exp(np.clip((d - lk["r"] - 40.0) / 20.0, -60, 60)))
            z = z * (1.0 - wgt) + lk["level"] * wgt
        z = z + _waves(self.waves, x, y)
        return z

    def slope_deg(self, x: np.ndarray, y: np.ndarray, h: float = 12.5) -> np.ndarray:
        gx = (self.elevation(x + h, y) - self.elevation(x - h, y)) / (2 * h)
        gy = (self.elevation(x, y + h) - self.elevation(x, y - h)) / (2 * h)
        return np.degrees(np.arctan(np.hypot(gx, gy)))

    # ---- land cover ----------------------------------------------------------------------
    def landcover(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """NLCD code at (x, y). With ``rng``, adds NLCD-like pixel speckle (raster only)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = self.elevation(x, y)
        slope = self.slope_deg(x, y)
        n1 = _waves(self.lc_waves[:8], x, y)
        n2 = _waves(self.lc_waves[8:], x, y)
        # forest by elevation / patchiness: deciduous low, evergreen high, mixed between
        code = np.where(z + 120 * n1 > 230, 42, np.where(z + 120 * n1 < 90, 41, 43)).astype(np.uint8)
        for f in self.farms:
            c, s = math.cos(f["theta"]), math.sin(f["theta"])
            dx, dy = x - f["cx"], y - f["cy"]
            u = c * dx + s * dy
            v = -s * dx + c * dy
            inside = (np.abs(u) < f["hw"]) & (np.abs(v) < f["hh"]) & (slope < f.get("max_slope", 8.0))
            fu = np.floor(u / f["field"]).astype(np.int64)
            fv = np.floor(v / f["field"]).astype(np.int64)
            hsh = (fu * 73856093 ^ fv * 19349663 ^ f["salt"]) % 7
            fcode = np.choose(hsh.clip(0, 6), [81, 82, 82, 81, 71, 82, 81]).astype(np.uint8)
            code = np.where(inside, fcode, code)
        for cl in self.clearings:
            d = np.hypot(x - cl["cx"], y - cl["cy"]) / (cl["r"] * (1 + 0.25 * n2))
            code = np.where(d < 1.0, np.where(n1 > 0.1, 71, 52), code).astype(np.uint8)
        for t in self.towns:
            d = np.hypot((x - t["cx"]) / t["rx"], (y - t["cy"]) / t["ry"]) * (1.0 + 0.18 * n2)
            ok = (d < 1.0) & (slope < t.get("max_slope", 90.0))
            lvl = np.where(d < 0.3, 24, np.where(d < 0.55, 23, np.where(d < 0.8, 22, 21)))
            lvl = np.minimum(lvl, t.get("max_code", 24))
            code = np.where(ok, lvl, code).astype(np.uint8)
        wet = np.zeros(code.shape, dtype=bool)
        water = np.zeros(code.shape, dtype=bool)
        for r in self.rivers:
            d = np.sqrt(_polyline_dist2(x, y, r["line"]))
            water |= d < r["half_width"]
            wet |= (d < r["half_width"] + r.get("wetland", 0.0) * (1 + 0.5 * n1)) & (slope < 4)
        for lk in self.lakes:
            d = np.hypot(x - lk["cx"], y - lk["cy"])
            water |= d < lk["r"]
            wet |= (d < lk["r"] + lk.get("wetland", 0.0) * (1 + 0.5 * n2)) & (slope < 4)
        code = np.where(wet, 90, code).astype(np.uint8)
        code = np.where(water, 11, code).astype(np.uint8)
        if rng is not None:  # NLCD-like speckle: roads/clearings in forest, parks in towns
            u = rng.random(code.shape)
            forest = np.isin(code, (41, 42, 43))
            dev = np.isin(code, (21, 22, 23, 24))
            code = np.where(forest & (u < 0.025), 21, code)
            code = np.where(forest & (u > 0.985), 52, code)
            code = np.where(dev & (u < 0.03), 41, code)
            code = np.where(dev & (u > 0.985), 71, code).astype(np.uint8)
        return code


def _waves(w: np.ndarray, x, y):
    out = 0.0
    for kx, ky, ph, a in w:
        out = out + a * np.cos(kx * x + ky * y + ph)
    return out


def _seg_dist2(x, y, x0, y0, x1, y1):
    vx, vy = x1 - x0, y1 - y0
    L2 = vx * vx + vy * vy
    t = np.clip(((x - x0) * vx + (y - y0) * vy) / L2, 0.0, 1.0)
    dx = x - (x0 + t * vx)
    dy = y - (y0 + t * vy)
    return dx * dx + dy * dy


def _polyline_dist2(x, y, line):
    d2 = None
    for (x0, y0), (x1, y1) in zip(line[:-1], line[1:], strict=True):
        d = _seg_dist2(x, y, x0, y0, x1, y1)
        d2 = d if d2 is None else np.minimum(d2, d)
    return d2


def _make_waves(rng: np.random.Generator, n: int, lam: tuple[float, float], amp: float) -> np.ndarray:
    th = rng.uniform(0, np.pi, n)
    lamv = rng.uniform(*lam, n)
    k = 2 * np.pi / lamv
    a = np.full(n, amp / math.sqrt(n / 2.0))
    return np.stack([k * np.cos(th), k * np.sin(th), rng.uniform(0, 2 * np.pi, n), a], axis=1)


# Local layouts: coordinates are metres relative to the project centre (east, north).
_PROJECTS = [
    DemoProject(
        name="demo-valley",
        center=(546500.0, 5042500.0),
        size=(3600.0, 3000.0),
        crs=26910,
        unit=1.0,
        las_version="1.4",
        point_format=6,
        delivery_tile=1500.0,
        description="valley floor town with farmland, riparian forest and forested rolling hills (Troutdale OR)",
    ),
    DemoProject(
        name="demo-ridge",
        center=(552750.0, 5040900.0),
        size=(3600.0, 3000.0),
        crs=26910,
        unit=1.0,
        las_version="1.4",
        point_format=6,
        delivery_tile=1500.0,
        description="steep forested ridge with a hillside village and a clear-cut (Corbett OR)",
    ),
    DemoProject(
        name="demo-river",
        center=(547000.0, 5049600.0),
        size=(3600.0, 3000.0),
        crs=2286,
        unit=US_FT,
        las_version="1.2",
        point_format=1,
        delivery_tile=5000.0,
        description="river terrace town below a forested bluff, upland farms (Camas WA; State Plane US survey feet)",
    ),
]


def demo_region(seed: int = 0) -> DemoRegion:
    """The analytic landscape of the demo (terrain + land-cover rules) for ``seed``."""
    rng = np.random.default_rng([seed, 1])
    P = {p.name: p for p in _PROJECTS}
    jit = lambda s: rng.uniform(-s, s)  # noqa: E731

    gauss, ridges, steps = [], [], []
    towns, farms, clearings, rivers, lakes = [], [], [], [], []

    # -- demo-valley: flat floor (town, farms, riparian forest, pond), rolling hills east
    cx, cy = P["demo-valley"].center
    for hx, hy, h, s in [(1150, -650, 115, 330), (1350, 650, 95, 360), (700, 1250, 80, 380), (-950, 1350, 55, 330), (1900, 0, 80, 400)]:
        gauss.append((cx + hx + jit(60), cy + hy + jit(60), h * rng.uniform(0.9, 1.1), s, s * rng.uniform(0.8, 1.2), rng.uniform(0, np.pi)))
    towns.append(dict(cx=cx - 650 + jit(50), cy=cy - 250 + jit(50), rx=950, ry=800, max_slope=6.0))
    towns.append(dict(cx=cx + 700, cy=cy - 850, rx=560, ry=450, max_code=22))  # hillside suburb
    farms.append(dict(cx=cx - 1500, cy=cy - 1350, hw=650, hh=420, theta=0.1, field=180.0, salt=11))
    lakes.append(dict(cx=cx - 1150 + jit(40), cy=cy + 750, r=170, level=18.0, wetland=120))

    # -- demo-ridge: a big ridge across the middle, steep flanks, benches, village, clear-cut
    cx, cy = P["demo-ridge"].center
    ridges.append((cx - 2300, cy + 150, cx + 2300, cy + 450, 420 * rng.uniform(0.95, 1.05), 480))
    ridges.append((cx - 600, cy - 1900, cx + 1500, cy - 1500, 60, 300))
    gauss.append((cx + 1500, cy + 1500, 90, 400, 300, 0.3))
    steps.append((cx, cy - 1300, -0.1, -1.0, -70, 160))  # bench lowered to the south
    towns.append(dict(cx=cx - 950 + jit(40), cy=cy - 200, rx=950, ry=330, max_code=22))  # on the steep flank
    towns.append(dict(cx=cx + 1100, cy=cy - 850, rx=520, ry=350, max_code=22))  # on the bench
    clearings.append(dict(cx=cx + 600 + jit(60), cy=cy + 950, r=330))

    # -- demo-river: Columbia in the south, terrace town, forested bluff, upland farms
    cx, cy = P["demo-river"].center
    rivers.append(
        dict(line=[(cx - 3000, cy - 1500), (cx - 800, cy - 1420), (cx + 1200, cy - 1600), (cx + 3000, cy - 1450)],
             half_width=260, level=4.0, wetland=160)
    )
    steps.append((cx, cy + 350, 0.08, 1.0, 130, 65))  # bluff
    steps.append((cx, cy + 750, 0.05, 1.0, 40, 120))
    gauss.append((cx + 1200, cy + 1300, 40, 300, 250, 0.0))
    towns.append(dict(cx=cx - 350 + jit(50), cy=cy - 450, rx=1100, ry=600, max_slope=6.0))
    farms.append(dict(cx=cx - 1000, cy=cy + 1350, hw=900, hh=380, theta=-0.05, field=200.0, salt=29))
    towns.append(dict(cx=cx - 1150, cy=cy + 420, rx=500, ry=230, max_code=21))  # view homes on the bluff
    towns.append(dict(cx=cx + 950, cy=cy + 800, rx=480, ry=330, max_code=22))  # upland subdivision

    return DemoRegion(
        seed=seed,
        projects=list(_PROJECTS),
        gauss=np.array(gauss, dtype=np.float64).reshape(-1, 6),
        ridges=np.array(ridges, dtype=np.float64).reshape(-1, 6),
        steps=np.array(steps, dtype=np.float64).reshape(-1, 6),
        waves=np.concatenate([_make_waves(rng, 6, (500, 1400), 3.0), _make_waves(rng, 6, (180, 400), 0.6)]),
        lc_waves=np.concatenate([_make_waves(rng, 8, (500, 1500), 1.0), _make_waves(rng, 8, (200, 600), 1.0)]),
        towns=towns,
        farms=farms,
        clearings=clearings,
        rivers=rivers,
        lakes=lakes,
    )


# ----------------------------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------------------------


def _transformer(src: int, dst: int):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def project_outline(region: DemoRegion, project: DemoProject) -> np.ndarray:
    """Irregular boundary ring (n, 2) in TERRAIN_CRS metres (closed: first == last)."""
    rng = np.random.default_rng([region.seed, 2, _PROJECTS.index(project)])
    cx, cy = project.center
    hw, hh = project.size[0] / 2, project.size[1] / 2
    per = 4 * (hw + hh)
    n = 40
    s = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n * per
    # walk the rectangle counter-clockwise from the south-west corner
    pts = []
    for si in s:
        if si < 2 * hw:
            pts.append((-hw + si, -hh, 0.0, -1.0))
        elif si < 2 * hw + 2 * hh:
            pts.append((hw, -hh + (si - 2 * hw), 1.0, 0.0))
        elif si < 4 * hw + 2 * hh:
            pts.append((hw - (si - 2 * hw - 2 * hh), hh, 0.0, 1.0))
        else:
            pts.append((-hw, hh - (si - 4 * hw - 2 * hh), -1.0, 0.0))
    pts = np.array(pts)
    t = s / per * 2 * np.pi
    ph = rng.uniform(0, 2 * np.pi, 3)
    off = 70 * np.sin(2 * t + ph[0]) + 45 * np.sin(5 * t + ph[1]) + 25 * np.sin(9 * t + ph[2])
    off += rng.uniform(-15, 15, n)
    x = cx + pts[:, 0] + off * pts[:, 2]
    y = cy + pts[:, 1] + off * pts[:, 3]
    ring = np.stack([x, y], axis=1)
    return np.vstack([ring, ring[:1]])


def region_bounds(region: DemoRegion, margin: float = 800.0) -> tuple[float, float, float, float]:
    xs, ys = [], []
    for p in region.projects:
        xs += [p.center[0] - p.size[0] / 2, p.center[0] + p.size[0] / 2]
        ys += [p.center[1] - p.size[1] / 2, p.center[1] + p.size[1] / 2]
    return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin


def _bbox_in(bounds, dst: int, src: int = TERRAIN_CRS):
    x0, y0, x1, y1 = bounds
    t = np.linspace(0, 1, 41)
    ex = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
    ey = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t])
    X, Y = _transformer(src, dst).transform(ex, ey)
    return float(np.min(X)), float(np.min(Y)), float(np.max(X)), float(np.max(Y))


def make_landcover(region: DemoRegion):
    """(array uint8, Affine) of the NLCD-coded land cover on the NLCD 30 m Albers grid."""
    from affine import Affine

    x0, y0, x1, y1 = _bbox_in(region_bounds(region), LANDCOVER_CRS)
    # NLCD pixel edges lie at 15 m (mod 30) in EPSG:5070
    x0 = math.floor((x0 - 15) / LC_RES) * LC_RES + 15
    y1 = math.ceil((y1 - 15) / LC_RES) * LC_RES + 15
    w = int(math.ceil((x1 - x0) / LC_RES))
    h = int(math.ceil((y1 - y0) / LC_RES))
    tr = Affine(LC_RES, 0, x0, 0, -LC_RES, y1)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    X = x0 + cols * LC_RES
    Y = y1 - rows * LC_RES
    ux, uy = _transformer(LANDCOVER_CRS, TERRAIN_CRS).transform(X.ravel(), Y.ravel())
    rng = np.random.default_rng([region.seed, 3])
    code = region.landcover(ux, uy, rng=rng).reshape(h, w)
    return code, tr


def make_dem(region: DemoRegion):
    """(array float32, Affine) of the DEM on a 1/3 arc-second NAD83 grid."""
    from affine import Affine

    lon0, lat0, lon1, lat1 = _bbox_in(region_bounds(region), DEM_CRS)
    r = DEM_RES_DEG
    lon0 = math.floor(lon0 / r) * r
    lat1 = math.ceil(lat1 / r) * r
    w = int(math.ceil((lon1 - lon0) / r))
    h = int(math.ceil((lat1 - lat0) / r))
    tr = Affine(r, 0, lon0, 0, -r, lat1)
    lon = lon0 + (np.arange(w) + 0.5) * r
    lat = lat1 - (np.arange(h) + 0.5) * r
    LON, LAT = np.meshgrid(lon, lat)
    ux, uy = _transformer(DEM_CRS, TERRAIN_CRS).transform(LON.ravel(), LAT.ravel())
    z = region.elevation(ux, uy).reshape(h, w)
    return np.round(z, 2).astype(np.float32), tr


# ----------------------------------------------------------------------------------------------
# point clouds
# ----------------------------------------------------------------------------------------------

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


class _LandcoverLookup:
    def __init__(self, code: np.ndarray, transform):
        self.code = code
        self.inv = ~transform

    def __call__(self, x5070, y5070):
        c, r = self.inv * (np.asarray(x5070), np.asarray(y5070))
        c = np.clip(np.floor(c).astype(np.int64), 0, self.code.shape[1] - 1)
        r = np.clip(np.floor(r).astype(np.int64), 0, self.code.shape[0] - 1)
        return self.code[r, c]


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


# ----------------------------------------------------------------------------------------------
# the demo folder
# ----------------------------------------------------------------------------------------------

_RECIPE = """\
# Embedded demo recipe (synthetic data, generated by als_datasets.demo; paths relative to this file)
kind: als
name: demo
strategy: geospatial
seed: 41
samples_per_project: 10
draws: 1000
tile_size_m: 500
grid_res_m: 25
landcover:
  path: landcover.tif
  classes: {{developed: [21, 22, 23, 24], forest: [41, 42, 43]}}
min_class_fraction: 0.8
dem: {{path: dem.tif}}
slope_classes_deg: {{flat: [0, 5], sloped: [5, 17], steep: [17, 90]}}
projects:
{projects}drop_classes: [7, 18]
output: {{formats: [webdataset, parquet], shard_max_samples: 16}}
"""

_README = """\
als-datasets embedded demo region (version {version}, seed {seed})
=================================================================

EVERYTHING IN THIS FOLDER IS SYNTHETIC. Only the rough location (the Columbia River near
Camas WA, Troutdale OR and Corbett OR) is real; terrain, towns, forests and point clouds are
made up by als_datasets.demo (a pure function of the seed: same seed => identical bytes).

How it was made
- Terrain: an analytic surface in NAD83 / UTM 10N (sums of Gaussian hills and ridges, logistic
  escarpments, flat-bottomed river channel and pond, low-amplitude plane waves).
- dem.tif: that surface sampled on a 1/3 arc-second NAD83 (EPSG:4269) grid, float32 metres,
  nodata -9999 (like the 3DEP seamless DEM).
- landcover.tif: NLCD codes on the NLCD 30 m CONUS Albers grid (EPSG:5070), uint8, nodata 255:
  towns with a 24 -> 21 intensity gradient (mostly on flat ground, a few hillside
  neighbourhoods), forest 41/42/43 by elevation, water 11, wetland 90, farms 81/82, grass 71,
  shrub / clear-cut 52, plus pixel speckle.
- boundaries/*.geojson: irregular project outlines (EPSG:4326 lon/lat; converted from NAD83,
  the ~1 m datum difference is ignored).
- pointclouds/<project>/*.laz: simulated pulses (~{density:.2f} pulses/m2, ~0.35 points/m2) over
  each outline plus a small buffer, cut into delivery tiles: ground (2) on the terrain,
  building roofs (6), multi-return vegetation (3/4/5; first return on the canopy, last
  mostly on the ground), water (9), low noise (7), high noise (18 in LAS 1.4, 7 in LAS 1.2)
  and a few unclassified bird hits (1).
  demo-valley and demo-ridge: LAS 1.4 point format 6, EPSG:26910 (metres).
  demo-river: LAS 1.2 point format 1, EPSG:2286 NAD83 / Washington South (US survey feet),
  z also in US survey feet.

Projects
{projects}"""


def _bounds_of(ring: np.ndarray) -> tuple[float, float, float, float]:
    return float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max())


def generate_demo(
    out_dir: str | os.PathLike,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    pulse_density: float = PULSE_DENSITY,
) -> Path:
    """Write the complete demo into ``out_dir`` (no atomicity; see :func:`ensure_demo`).

    ``pulse_density`` (pulses/m2) only exists to make small test copies quickly.
    """
    import shapely

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    region = demo_region(seed)

    say("demo: land cover (NLCD codes, EPSG:5070, 30 m)")
    lc, lc_tr = make_landcover(region)
    write_geotiff(out / "landcover.tif", lc, lc_tr, LANDCOVER_CRS, nodata=255, colormap=NLCD_COLORS)
    lookup = _LandcoverLookup(lc, lc_tr)

    say("demo: DEM (1/3 arc-second, EPSG:4269)")
    dem, dem_tr = make_dem(region)
    write_geotiff(out / "dem.tif", dem, dem_tr, DEM_CRS, nodata=-9999.0)

    to_lonlat = _transformer(TERRAIN_CRS, DEM_CRS)
    recipe_projects = []
    readme_projects = []
    for k, project in enumerate(region.projects):
        ring = project_outline(region, project)
        lon, lat = to_lonlat.transform(ring[:, 0], ring[:, 1])
        coords = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
        coords[-1] = coords[0]
        gj = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {
                        "name": project.name,
                        "description": project.description,
                        "synthetic": True,
                        "pointcloud_crs": f"EPSG:{project.crs}",
                    },
                    "geometry": {"type": "Polygon", "coordinates": [coords]},
                }
            ],
        }
        bpath = out / "boundaries" / f"{project.name}.geojson"
        bpath.parent.mkdir(parents=True, exist_ok=True)
        bpath.write_text(json.dumps(gj, indent=1) + "\n")

        # native-CRS outline, buffered like a real delivery
        if project.crs != TERRAIN_CRS:
            nx_, ny_ = _transformer(TERRAIN_CRS, project.crs).transform(ring[:, 0], ring[:, 1])
            native = np.stack([nx_, ny_], axis=1)
        else:
            native = ring
        poly = shapely.Polygon(native).buffer(40.0 / project.unit)
        shapely.prepare(poly)
        bounds = poly.bounds
        grids = _project_grids(region, project, lookup, bounds, np.random.default_rng([seed, 4, k]))
        T = project.delivery_tile
        ix0, iy0 = math.floor(bounds[0] / T), math.floor(bounds[1] / T)
        ix1, iy1 = math.ceil(bounds[2] / T), math.ceil(bounds[3] / T)
        pdir = out / "pointclouds" / project.name
        npts = nfiles = 0
        for iy in range(iy0, iy1):
            for ix in range(ix0, ix1):
                tb = (ix * T, iy * T, (ix + 1) * T, (iy + 1) * T)
                if not poly.intersects(shapely.box(*tb)):
                    continue
                rng = np.random.default_rng([seed, 5, k, ix, iy])
                pts = _tile_points(region, project, grids, lookup, poly, tb, rng, pulse_density)
                if pts is None:
                    continue
                fname = f"{project.name}_{int(tb[0])}_{int(tb[1])}.laz"
                write_las(
                    pdir / fname,
                    pts,
                    project.crs,
                    scale=0.01,
                    offset=(tb[0], tb[1], 0.0),
                    point_format=project.point_format,
                    version=project.las_version,
                )
                npts += pts["x"].size
                nfiles += 1
        say(f"demo: {project.name}: {nfiles} LAZ files, {npts:,} points")
        recipe_projects.append(
            f"  - name: {project.name}\n"
            f"    boundary: boundaries/{project.name}.geojson\n"
            f'    pointclouds: ["pointclouds/{project.name}/*.laz"]\n'
        )
        readme_projects.append(
            f"- {project.name}: {project.description}; EPSG:{project.crs}, LAS {project.las_version} "
            f"format {project.point_format}, {nfiles} files, {npts:,} points\n"
        )

    recipe = out / "demo.yaml"
    recipe.write_text(_RECIPE.format(projects="".join(recipe_projects)))
    (out / "README.txt").write_text(
        _README.format(version=DEMO_VERSION, seed=seed, density=pulse_density, projects="".join(readme_projects))
    )
    say(f"demo: generated in {time.perf_counter() - t0:.1f} s")
    return recipe


_OURS = {"demo.yaml", "README.txt", "landcover.tif", "dem.tif", "boundaries", "pointclouds", ".complete"}


def ensure_demo(
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Return the demo recipe (``<folder>/demo.yaml``), generating the demo on first use.

    ``cache_dir`` is the demo folder itself; by default ``$ALS_DATASETS_CACHE`` (or
    ``~/.cache/als-datasets``) / ``demo-v1-seed<seed>``. The demo is generated into a temporary
    sibling folder and moved into place with ``os.replace``; a ``.complete`` marker is written
    last, so an interrupted generation never leaves a half demo behind.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache() / f"demo-{DEMO_VERSION}-seed{seed}"
    return ensure_generated(target, "demo.yaml", _OURS, lambda tmp: generate_demo(tmp, seed=seed, progress=progress),
                            f"als-datasets demo {DEMO_VERSION} seed {seed}\n")
