"""Pure, seeded synthesis core of the raster demos (:mod:`als_datasets.demo.raster`).

Class reflectance spectra, smooth random fields, landscapes, surface reflectance, clouds, Sentinel-2
scene classification, top-of-atmosphere reflectance, quantisation and DEM terrain: every array is a
pure function of the seed (no I/O).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------------------------------------
# spectra: surface reflectance (0-1) of each class at these wavelengths (nm)
# ---------------------------------------------------------------------------------------------
_WL = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2200], dtype=float)
WATER, FOREST, GRASS, CROP, BARE, DESERT, URBAN, SNOW, SHRUB, ROCK = range(10)
_SPEC = np.array([
    [.060, .055, .045, .025, .018, .012, .009, .007, .006, .004, .003, .002],  # water
    [.020, .025, .050, .025, .070, .200, .280, .300, .310, .300, .150, .070],  # forest
    [.035, .045, .090, .050, .120, .270, .360, .400, .410, .400, .240, .120],  # grass
    [.030, .040, .085, .035, .120, .320, .430, .470, .480, .470, .220, .100],  # crop (green; see stages)
    [.070, .090, .130, .180, .200, .220, .240, .260, .270, .280, .340, .280],  # bare soil
    [.150, .190, .270, .360, .390, .410, .430, .450, .460, .470, .550, .480],  # desert sand
    [.090, .100, .120, .140, .150, .160, .170, .180, .185, .190, .220, .200],  # urban (see materials)
    [.900, .920, .900, .860, .840, .820, .800, .760, .740, .620, .100, .050],  # snow
    [.050, .060, .090, .120, .150, .190, .220, .240, .250, .260, .300, .220],  # shrub / dry grass
    [.100, .120, .150, .180, .200, .210, .220, .230, .235, .240, .280, .250],  # rock
], dtype=np.float32)
_STAGES = np.array([_SPEC[CROP], [.060, .080, .120, .150, .190, .220, .250, .270, .280, .285, .330, .240],
                    _SPEC[BARE]], dtype=np.float32)  # green crop, ripe / senescent, bare (harvested, sown)
_MATERIALS = np.array([
    [.050, .055, .060, .065, .070, .070, .075, .080, .080, .080, .090, .090],  # asphalt
    [.180, .200, .220, .240, .250, .260, .270, .280, .280, .290, .300, .270],  # concrete
    [.060, .070, .090, .200, .250, .280, .300, .320, .330, .340, .400, .350],  # red tiles
    [.300, .320, .330, .340, .340, .350, .350, .350, .350, .350, .330, .300],  # metal roofs
    _SPEC[GRASS],                                                                 # gardens, parks
], dtype=np.float32)
_CLOUD = np.array([.60, .62, .63, .64, .64, .64, .64, .64, .64, .60, .45, .35], dtype=np.float32)
# per class: (smooth brightness variation, pixel texture), relative
# (calm water, flat sand and snow have few distinct values -> low spectral entropy; forest, shrub, rock high)
_TEXTURE = {WATER: (.010, .002), FOREST: (.10, .08), GRASS: (.06, .03), CROP: (.03, .02), BARE: (.04, .01),
            DESERT: (.004, .001), URBAN: (.05, .10), SNOW: (.004, .001), SHRUB: (.10, .08), ROCK: (.12, .05)}
_SCL_OF = np.array([6, 4, 4, 4, 5, 5, 5, 11, 4, 5], dtype=np.uint8)  # class -> Sentinel-2 SCL code


# ---------------------------------------------------------------------------------------------
# random fields and landscapes (pure functions of a numpy Generator)
# ---------------------------------------------------------------------------------------------
def _field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth zero-mean unit-variance field: white noise low-passed by a Gaussian of ``scale`` px.

    Made on a padded canvas (FFT filtering wraps around) and cropped, so opposite edges differ;
    broad fields are made on a coarser grid (>= 4 px of smoothing per coarse pixel) and
    interpolated (cubic convolution), which keeps every field cheap.
    """
    from scipy.fft import next_fast_len

    f = max(1, int(scale // 4))
    hs, ws = (-(-h // f) + 3, -(-w // f) + 3) if f > 1 else (h, w)
    s = scale / f
    pad = int(min(3 * s, 256))
    shape = (next_fast_len(hs + pad, real=True), next_fast_len(ws + pad, real=True))
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    small = np.fft.irfft2(np.fft.rfft2(noise) * np.exp(-2 * (math.pi * s) ** 2 * (kx * kx + ky * ky)),
                          s=shape)[:hs, :ws]
    out = _upsample(small, f, h, w) if f > 1 else small[:h, :w]
    out = out - out.mean()
    return out / (out.std() or 1.0)


def _upsample(a: np.ndarray, f: int, h: int, w: int) -> np.ndarray:
    """Cubic-convolution (Keys, a = -0.5) interpolation of a grid of step ``f`` to ``h`` x ``w`` unit steps.

    Coarse pixel ``k + 1`` sits on fine pixel ``k * f`` (one coarse pixel of margin before the
    start, two after the end).  C1-continuous, so no creases show in hillshades.
    """
    for ax, n in ((0, h), (1, w)):
        p = np.arange(n) / f
        i = np.floor(p).astype(np.int64) + 1
        t = p - (i - 1)
        k = [-0.5 * t ** 3 + t ** 2 - 0.5 * t, 1.5 * t ** 3 - 2.5 * t ** 2 + 1,
             -1.5 * t ** 3 + 2 * t ** 2 + 0.5 * t, 0.5 * t ** 3 - 0.5 * t ** 2]
        shape = (n, 1) if ax == 0 else (1, n)
        a = sum(kj.reshape(shape) * np.take(a, i + j - 1, axis=ax) for j, kj in enumerate(k))
    return a


def _fbm(rng, h, w, scale: float, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    out = sum(gain ** i * _field(rng, h, w, scale / 2 ** i) for i in range(octaves))
    return (out - out.mean()) / (out.std() or 1.0)


def _rank(a: np.ndarray) -> np.ndarray:
    """Values -> approximately their quantile in (0, 1) (normal CDF of the standardised values)."""
    from scipy.special import ndtr

    return ndtr((a - a.mean()) / (a.std() or 1.0))


def _take(cls: np.ndarray, free: np.ndarray, score: np.ndarray, frac: float, value: int) -> None:
    """Give class ``value`` to the ``frac`` share (of all pixels) of free pixels with the top score."""
    n = min(int(round(frac * cls.size)), int(free.sum()))
    if n <= 0:
        return
    s = np.where(free, score, -np.inf).ravel()
    idx = np.argpartition(-s, n - 1)[:n]
    cls.ravel()[idx] = value
    free.ravel()[idx] = False


def _river(rng, h, w, width_px: float, vertical: bool = False) -> np.ndarray:
    """Distance (px, across the flow) to the bank of a meandering river crossing the canvas."""
    n, across = (h, w) if vertical else (w, h)
    centre = 0.5 * across + 0.12 * n * _field(rng, 1, n, n / 6)[0]
    yy, xx = np.mgrid[0:h, 0:w]
    return np.abs((xx if vertical else yy) - centre[yy if vertical else xx]) - width_px / 2


def landscape(seed_seq, h: int, w: int, profile: dict) -> dict:
    """Land-cover classes (uint8 codes above), elevation rank (0-1) and crop parcels of a canvas.

    ``profile`` gives class shares and layout: ``water``, ``river`` (px width), ``snow``, ``rock``,
    ``forest`` (+ ``forest_level``), ``urban``, ``towns``, ``crop``, ``parcel_px``, ``extra`` ([(class,
    share, field scale px)]), ``background`` (class of the rest), ``gradient`` ((north, east) trend
    of the elevation), ``relief_px``, ``crop_near_river``, ``river_vertical``.
    """
    rng = np.random.default_rng(seed_seq)
    gy, gx = profile.get("gradient", (0.0, 0.0))  # elevation trend towards the north / the east
    elev = (_fbm(rng, h, w, profile.get("relief_px", 120)) + gy * np.linspace(1.5, -1.5, h)[:, None]
            + gx * np.linspace(-1.5, 1.5, w)[None, :])
    elev = _rank(elev)
    cls = np.full((h, w), profile.get("background", GRASS), dtype=np.uint8)
    free = np.ones((h, w), dtype=bool)
    if profile.get("river"):
        d = _river(rng, h, w, profile["river"], vertical=profile.get("river_vertical", False))
        cls[d < 0] = WATER
        free &= d >= 0
    else:
        d = None
    _take(cls, free, -elev, profile.get("water", 0.0), WATER)  # lakes in the lowest ground
    _take(cls, free, elev + 0.05 * _field(rng, h, w, 8), profile.get("snow", 0.0), SNOW)
    _take(cls, free, elev + 0.15 * _field(rng, h, w, 6), profile.get("rock", 0.0), ROCK)
    yy, xx = np.mgrid[0:h, 0:w]
    towns = np.zeros((h, w))
    for _ in range(profile.get("towns", 2)):  # towns on low ground
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        towns += rng.uniform(0.6, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.12 * w) ** 2))
    _take(cls, free, towns + 0.25 * _field(rng, h, w, 10) - 0.6 * elev, profile.get("urban", 0.0), URBAN)
    mid = -np.abs(elev - profile.get("forest_level", 0.6))  # forest on hillsides
    _take(cls, free, mid + 0.5 * _fbm(rng, h, w, 40, 3), profile.get("forest", 0.0), FOREST)
    near = -d / max(w, 1) if (d is not None and profile.get("crop_near_river")) else -elev
    _take(cls, free, near + 0.2 * _field(rng, h, w, 25), profile.get("crop", 0.0), CROP)
    for value, share, scale in profile.get("extra", ()):  # e.g. bare soil, shrub, pasture
        _take(cls, free, _field(rng, h, w, scale), share, value)
    # crop parcels: a rotated grid of fields, each with its own width, phase of the season and rows
    th = rng.uniform(-0.4, 0.4)
    u = math.cos(th) * xx + math.sin(th) * yy
    v = -math.sin(th) * xx + math.cos(th) * yy
    size = profile.get("parcel_px", 30)
    strip = np.floor(v / size).astype(np.int64)
    offs = rng.uniform(0, 1, 4096)
    lens = rng.uniform(0.6, 2.5, 4096) * size
    k = (strip - strip.min()) % 4096
    parcel = k * 4096 + np.floor(u / lens[k] + offs[k]).astype(np.int64)
    _, parcel = np.unique(parcel, return_inverse=True)
    parcel = parcel.reshape(h, w)
    return {"cls": cls, "elev": elev, "parcel": parcel,
            "phase": rng.uniform(0, 1, int(parcel.max()) + 1), "rows": (u % 3.0) / 3.0}


def _stage_weights(phase: np.ndarray, t: float, rng) -> np.ndarray:
    """(n, 3) weights of green / ripe / bare for each parcel at season time ``t`` (0 = early June)."""
    x = (phase + t) % 1.0
    stage = np.where(x < 0.15, 2, np.where(x < 0.6, 0, np.where(x < 0.8, 1, 2)))
    w = 0.8 * np.eye(3, dtype=np.float32)[stage] + 0.2 * rng.dirichlet(np.ones(3), size=phase.size)
    return w.astype(np.float32)


def _psf(a: np.ndarray) -> np.ndarray:
    """Separable [1/4, 1/2, 1/4] blur over the last two axes (edges replicated): sensor PSF, mixed pixels."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    p = 0.5 * p[..., 1:-1, :] + 0.25 * (p[..., :-2, :] + p[..., 2:, :])
    return 0.5 * p[..., 1:-1] + 0.25 * (p[..., :-2] + p[..., 2:])


def surface(seed_seq, land: dict, t: float = 0.0, shading: float = 0.0, psf: bool = True) -> np.ndarray:
    """(12, H, W) float32 surface reflectance at :data:`_WL` from a :func:`landscape` at season ``t``.

    Class spectra (crop parcels: a per-parcel mix of green / ripe / bare at season time ``t`` with
    row texture; urban: per-pixel mixes of roof and road materials) x brightness texture x terrain
    shading, then a small point-spread blur.
    """
    rng = np.random.default_rng(seed_seq)
    cls = land["cls"]
    h, w = cls.shape
    refl = np.ascontiguousarray(_SPEC.T)[:, cls]  # (12, H, W)
    crop = cls == CROP
    if crop.any():
        wts = _stage_weights(land["phase"], t, rng)[land["parcel"][crop]]
        refl[:, crop] = (wts @ _STAGES * (1 + 0.04 * (land["rows"][crop] - 0.5))[:, None]).T
    urban = cls == URBAN
    if urban.any():
        mat = rng.dirichlet(np.full(len(_MATERIALS), 0.4), size=int(urban.sum())).astype(np.float32)
        refl[:, urban] = (mat @ _MATERIALS).T
    lo = np.array([_TEXTURE[c][0] for c in range(len(_SPEC))], dtype=np.float32)[cls]
    hi = np.array([_TEXTURE[c][1] for c in range(len(_SPEC))], dtype=np.float32)[cls]
    bright = 1 + lo * _field(rng, h, w, 12) + hi * rng.standard_normal((h, w))
    if shading:  # illumination from the north-west on the elevation surface; water stays flat
        gy, gx = np.gradient(ndimage.uniform_filter(land["elev"], 5) * 100)
        bright *= np.where(cls == WATER, 1.0, np.clip(1 + shading * (gx - gy), 0.3, 1.3))
    refl *= bright.astype(np.float32)[None]
    return _psf(refl) if psf else refl


def clouds(seed_seq, h: int, w: int, cover: float, cirrus: float = 0.0, shadow: tuple = (24, 16)) -> dict:
    """Cloud opacity (0-1), cirrus opacity and shadow strength fields covering ~``cover`` of a canvas."""
    rng = np.random.default_rng(seed_seq)
    f = _fbm(rng, h, w, 60, 3)
    thr = np.quantile(f, 1 - cover) if cover > 0 else np.inf
    alpha = np.clip((f - thr) / 0.5 + 0.3, 0, 1) * (f > thr)
    g = _field(rng, h, w, 40)
    cthr = np.quantile(g, 1 - cirrus) if cirrus > 0 else np.inf
    ci = np.where(g > cthr, 0.25, 0.0)
    sh = np.zeros_like(alpha)
    dy, dx = shadow
    sh[dy:, dx:] = alpha[:-dy, :-dx]
    sh *= alpha < 0.05
    return {"alpha": alpha.astype(np.float32), "cirrus": ci.astype(np.float32),
            "shadow": sh.astype(np.float32)}


def _apply_clouds(refl: np.ndarray, cl: dict) -> np.ndarray:
    a, ci, s = cl["alpha"], cl["cirrus"], cl["shadow"]
    out = refl * (1 - 0.6 * s)[None]
    out = out * (1 - a)[None] + a[None] * _CLOUD[:, None, None]
    return out * (1 - ci)[None] + ci[None] * (0.7 * _CLOUD[:, None, None])


def scl(cls: np.ndarray, cl: dict | None) -> np.ndarray:
    """Sentinel-2 scene classification from classes and clouds (3 shadow, 8 / 9 cloud, 10 cirrus)."""
    out = _SCL_OF[cls]
    if cl is not None:
        out = np.where(cl["shadow"] > 0.3, 3, out)
        out = np.where(cl["cirrus"] > 0, 10, out)
        out = np.where(cl["alpha"] > 0.25, 8, out)
        out = np.where(cl["alpha"] > 0.6, 9, out)
    return out.astype(np.uint8)


def at_wavelengths(refl: np.ndarray, wavelengths) -> np.ndarray:
    """Surface reflectance at band centres (linear interpolation between the :data:`_WL` nodes)."""
    out = []
    for wl in wavelengths:
        i = int(np.clip(np.searchsorted(_WL, wl) - 1, 0, len(_WL) - 2))
        t = float(np.clip((wl - _WL[i]) / (_WL[i + 1] - _WL[i]), 0, 1))
        out.append((1 - t) * refl[i] + t * refl[i + 1])
    return np.stack(out)


def toa(refl: np.ndarray, wavelengths) -> np.ndarray:
    """Top-of-atmosphere reflectance: transmittance, Rayleigh path radiance, B9 / B10 absorption."""
    out = np.empty_like(refl)
    for j, wl in enumerate(wavelengths):
        if 1300 < wl < 1450:  # cirrus band: the surface is hidden by water vapour
            out[j] = 0.02 * refl[j] + 0.002
        elif 900 < wl < 990:  # water-vapour band
            out[j] = 0.45 * refl[j] + 0.004
        else:
            out[j] = (0.82 + 0.1 * min(wl, 1000) / 1000) * refl[j] + 0.09 * (443.0 / wl) ** 4 + 0.004
    return out


def _noise(rng, a: np.ndarray, base: float, rel: float) -> np.ndarray:
    return a + (base + rel * np.abs(a)) * rng.standard_normal(a.shape).astype(np.float32)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[-2] // f * f, a.shape[-1] // f * f
    a = a[..., :h, :w]
    return a.reshape(a.shape[:-2] + (h // f, f, w // f, f)).mean(axis=(-3, -1))


def _quantise(a: np.ndarray, dtype: str, lo: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(a), max(lo, info.min), info.max).astype(dtype)


# ---------------------------------------------------------------------------------------------
# DEM terrain
# ---------------------------------------------------------------------------------------------
DEM_NODATA = -9999.0


def dem_terrain(seed_seq, shape: tuple[int, int], terrain: str) -> np.ndarray:
    """Float32 elevation (m) of one synthetic terrain kind; DEM voids (``mountains``) are -9999."""
    rng = np.random.default_rng(seed_seq)
    h, w = shape
    if terrain == "mountains":  # ridged fractal: sharp crest lines, broad valleys, voids on steep slopes
        n = _fbm(rng, h, w, 80, 5)
        ridged = (1 - np.abs(n) / np.abs(n).max()) ** 2  # crests on the zero lines of a fractal field
        massif = 0.4 + 0.6 * _rank(_field(rng, h, w, 200))
        z = 700 + 2600 * ridged * massif + 120 * _fbm(rng, h, w, 16, 3) * (0.3 + ridged)
        gy, gx = np.gradient(z, 30.0)
        slope = np.degrees(np.arctan(np.hypot(gx, gy)))
        score = _field(rng, h, w, 25) + 0.8 * _rank(slope)  # a few void clusters on steep ground
        z = np.where(score > np.quantile(score, 0.98), DEM_NODATA, z)
    elif terrain == "coast":  # plain rising inland from the sea (exactly 0 m), an incised river
        coast = 0.72 * h + 0.05 * h * _field(rng, 1, w, 60)[0]
        yy, xx = np.mgrid[0:h, 0:w]
        inland = np.clip((coast[xx] - yy) * 30.0, 0, None)  # metres from the shore
        z = 0.4 + inland * 0.0012 + 1.5 * _fbm(rng, h, w, 50, 3) * np.clip(inland / 600, 0, 1)
        d = np.abs(xx - (0.45 * w + 0.1 * w * _field(rng, 1, h, 80)[0][yy]))
        z = np.where(d < 4, np.maximum(z - 4.0, 0.2), z)
        z = np.where(inland <= 0, 0.0, np.maximum(z, 0.2))
    elif terrain == "hills":  # rolling hills, flat valley-floor swamps
        z = 1550 + 120 * _fbm(rng, h, w, 60, 3) + 30 * _field(rng, h, w, 15) + 6 * _field(rng, h, w, 4)
        z = np.maximum(z, np.quantile(z, 0.08))
    else:
        raise ValueError(f"unknown terrain {terrain!r}")
    return z.astype(np.float32)
