"""The demo's rasters: NLCD-coded land cover (EPSG:5070, 30 m) and the 1/3 arc-second DEM
(EPSG:4269) sampled from the analytic landscape, and the land-cover lookup of the point synthesis.
"""

from __future__ import annotations

import math

import numpy as np

from .region import DEM_CRS, LANDCOVER_CRS, TERRAIN_CRS, DemoRegion, _transformer, region_bounds

DEM_RES_DEG = 1.0 / 10800.0
LC_RES = 30.0

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


class _LandcoverLookup:
    def __init__(self, code: np.ndarray, transform):
        self.code = code
        self.inv = ~transform

    def __call__(self, x5070, y5070):
        c, r = self.inv * (np.asarray(x5070), np.asarray(y5070))
        c = np.clip(np.floor(c).astype(np.int64), 0, self.code.shape[1] - 1)
        r = np.clip(np.floor(r).astype(np.int64), 0, self.code.shape[0] - 1)
        return self.code[r, c]
