"""The demo region: three LiDAR projects over an analytic landscape (terrain z(x, y) and
land-cover rules in NAD83 / UTM 10N metres), the projects' irregular outlines and the region bounds.

A pure function of the seed (see :mod:`als_datasets.demo.als`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

TERRAIN_CRS = 26910  # NAD83 / UTM zone 10N: the frame the analytic landscape is defined in
LANDCOVER_CRS = 5070  # NAD83 / CONUS Albers, like the real NLCD
DEM_CRS = 4269  # NAD83 geographic, like the 3DEP 1/3 arc-second DEM
US_FT = 1200.0 / 3937.0  # metres per US survey foot


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
