"""Cloud screening without a mask band: a pixel test on the visible, NIR and SWIR bands (issue 14,
item 2).  Scenes with a mask use it instead (Sentinel-2 SCL classes, Landsat ``QA_PIXEL`` bits).

Why not ``s2cloudless``: it is on the registry, but it needs ``lightgbm`` and its model file, works
only on Sentinel-2 L1C top-of-atmosphere reflectance of ten given bands (not L2A, not Landsat, not
three-band scenes), and it is a classifier trained on one sensor — the build needs one documented
test for every sensor it reads, offline.  So this is a rule-based test in the manner of the
*potential cloud pixel* tests of Fmask (Zhu & Woodcock 2012, Remote Sens. Environ. 118: 83-94),
without the thermal band and without the scene-wide probability step:

1. reflectance ρ = DN × scale + offset, per band, from the product metadata; without one, the
   sensor's convention (Sentinel-2 and surface-reflectance products ×10⁻⁴, Landsat-8/9 Level-1 DN
   2·10⁻⁵ − 0.1, TM / ETM+ 8-bit DN × 0.0015 — top of atmosphere with typical gains, approximate) —
   the card says which was assumed;
2. a pixel is cloud when it is **bright** (mean visible reflectance > 0.25), **white**
   (Σ |ρ_b − mean| / mean over the visible bands < 0.7), passes the **haze-optimised transform**
   (HOT = ρ_blue − 0.5 ρ_red − 0.08 > 0), and, where the bands exist, is **not vegetation or snow**
   (NDVI < 0.8 and NDSI < 0.8) and **bright in SWIR** (ρ_swir2 > 0.03);
3. with fewer than two visible bands only the brightness test applies (on the mean of all bands);
4. clouds are contiguous: a flagged pixel stays cloud only when at least 5 of the 9 pixels of its
   3 × 3 neighbourhood are flagged (a majority filter), which drops isolated bright pixels (noise,
   single roofs) and keeps cloud bodies.

It is deliberately conservative on thick cloud and misses thin cirrus and cloud shadow (the
mask bands flag them); bright white ground (salt flats, some roofs) can pass it.
"""

from __future__ import annotations

import numpy as np

BRIGHT = 0.25
WHITE = 0.7
HOT_OFFSET = 0.08
SWIR2_MIN = 0.03
INDEX_MAX = 0.8
ROLES = ("blue", "green", "red", "nir", "swir16", "swir22")


def assumed_scaling(sensor: str | None, dtype: str, level: str | None) -> tuple[float, float, str]:
    """(scale, offset, why) for a scene whose metadata gives no rescaling."""
    s = (sensor or "").lower()
    lvl = (level or "").upper()
    if np.dtype(dtype).itemsize == 1:  # TM / ETM+ 8-bit DN: ρ ≈ π·G·DN / (ESUN·cos θ) with typical gains, sun at 37°
        return 1.5e-3, 0.0, "8-bit DN x 0.0015 (TM/ETM+ TOA, typical gains)"
    if "landsat-8" in s or "landsat-9" in s or "oli" in s:
        if not lvl.startswith("L2") and "l2" not in s:
            return 2e-5, -0.1, "Landsat-8/9 Level-1 TOA rescaling 2e-05 - 0.1"
        return 2.75e-5, -0.2, "Landsat C2 Level-2 rescaling 2.75e-05 - 0.2"
    return 1e-4, 0.0, "reflectance x 10000"


def screen_setup(common: list[str], scale: list, offset: list, sensor: str | None, dtype: str,
               level: str | None) -> dict:
    """What :func:`pixel_cloud` needs for one scene: band positions by role, per-band rescaling."""
    roles = {}
    for r in ROLES:
        want = {"nir": ("nir", "nir08"), "swir16": ("swir16",), "swir22": ("swir22",)}.get(r, (r,))
        idx = next((i for i, c in enumerate(common) if c in want), None)
        if idx is not None:
            roles[r] = idx
    a_s, a_o, why = assumed_scaling(sensor, dtype, level)
    known = all(s is not None for s in scale) and len(scale) == len(common)
    sc = [float(s) for s in scale] if known else [a_s] * len(common)
    of = [float(o or 0.0) for o in offset] if known else [a_o] * len(common)
    return {"roles": roles, "scale": sc, "offset": of, "scaling": "product metadata" if known else f"assumed {why}"}


def pixel_cloud(pix: np.ndarray, valid: np.ndarray, setup: dict) -> np.ndarray:
    """(N, P, P) cloud pixels of patches ``pix`` (N, C, P, P) by the test in the module docstring
    (False where a pixel is not valid)."""
    n = len(pix)
    sc = np.asarray(setup["scale"], dtype=np.float32)[None, :, None, None]
    of = np.asarray(setup["offset"], dtype=np.float32)[None, :, None, None]
    rho = pix.astype(np.float32) * sc + of
    roles = setup["roles"]
    vis = [roles[r] for r in ("blue", "green", "red") if r in roles]
    if len(vis) < 2:
        return _majority(rho.mean(axis=1) > BRIGHT) & valid
    v = rho[:, vis]
    mean = v.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        white = np.abs(v - mean[:, None]).sum(axis=1) / np.where(mean > 0, mean, np.inf)
        cloud = (mean > BRIGHT) & (white < WHITE)
        if "blue" in roles and "red" in roles:
            cloud &= rho[:, roles["blue"]] - 0.5 * rho[:, roles["red"]] - HOT_OFFSET > 0
        if "nir" in roles and "red" in roles:
            nir, red = rho[:, roles["nir"]], rho[:, roles["red"]]
            cloud &= ((nir - red) / np.where(nir + red != 0, nir + red, np.inf)) < INDEX_MAX
        if "green" in roles and "swir16" in roles:
            g, sw = rho[:, roles["green"]], rho[:, roles["swir16"]]
            cloud &= ((g - sw) / np.where(g + sw != 0, g + sw, np.inf)) < INDEX_MAX
        if "swir22" in roles:
            cloud &= rho[:, roles["swir22"]] > SWIR2_MIN
    return _majority(cloud & valid).reshape(n, *pix.shape[2:]) & valid


def _majority(flag: np.ndarray) -> np.ndarray:
    """(N, H, W): True where ≥ 5 of the 3 × 3 neighbourhood is True (outside the patch counts as False)."""
    from scipy.ndimage import convolve

    k = np.ones((1, 3, 3), dtype=np.int32)
    return flag & (convolve(flag.astype(np.int32), k, mode="constant", cval=0) >= 5)
