"""The sampling frame's pure core (DESIGN.md §6, the authors' released notebook).

Everything here works on numpy arrays already on the project's 25 m UTM grid, so each step
can be tested on small hand-made grids with known answers.  Conventions:

* land-cover class ids: ``0 .. K-1`` for the recipe's classes in recipe order, ``K`` for
  "other" (every other code, nodata, and pixels outside the boundary);
* slope class ids: ``0 .. S-1`` in recipe order, ``-1`` where the slope is undefined;
* tiles are ``px × px`` pixel blocks counted from the north-west corner; the east and south
  remainders that do not fill a whole tile are dropped; frame order is row-major.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

OTHER = "other"


def utm_epsg(lon: float, lat: float) -> int:
    """WGS84 UTM zone EPSG code (326xx north, 327xx south) of a lon/lat point."""
    if not (math.isfinite(lon) and math.isfinite(lat)) or not -90 <= lat <= 90:
        raise ValueError(f"not a lon/lat position: {lon}, {lat}")
    zone = int(math.floor((((lon + 180.0) % 360.0)) / 6.0)) + 1
    zone = min(max(zone, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def landcover_ids(codes: np.ndarray, classes: Sequence[Sequence[int]], valid: np.ndarray | None = None) -> np.ndarray:
    """Map raster codes to class ids (recipe order); everything else, and invalid pixels, → K."""
    k = len(classes)
    out = np.full(codes.shape, k, dtype=np.int16)
    for i, cls_codes in enumerate(classes):
        out[np.isin(codes, np.asarray(cls_codes))] = i
    if valid is not None:
        out[~valid] = k
    return out


def slope_degrees(dem: np.ndarray, res: float) -> np.ndarray:
    """Slope in degrees: arctan(hypot(dz/dx, dz/dy)) with numpy's gradient at ``res`` spacing.

    Central differences inside, one-sided at the edges (``np.gradient``'s defaults); NaN in the
    DEM (nodata, outside the boundary) propagates to the neighbouring slopes, as in the paper.
    """
    dem = np.asarray(dem, dtype=np.float64)
    if dem.shape[0] < 2 or dem.shape[1] < 2:
        return np.full(dem.shape, np.nan)
    dz_dy, dz_dx = np.gradient(dem, res)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))


def slope_ids(slope_deg: np.ndarray, bins: Sequence[tuple[float, float]]) -> np.ndarray:
    """Slope classes from ``[low, high)`` degree ranges (the last range includes its high end)."""
    out = np.full(slope_deg.shape, -1, dtype=np.int16)
    finite = np.isfinite(slope_deg)
    for i, (lo, hi) in enumerate(bins):
        upper = slope_deg <= hi if i == len(bins) - 1 else slope_deg < hi
        out[finite & (slope_deg >= lo) & upper & (out < 0)] = i
    return out


def tile_blocks(arr: np.ndarray, px: int) -> np.ndarray:
    """``(H, W)`` → ``(rows, cols, px*px)`` blocks from the north-west corner, remainders dropped."""
    rows, cols = arr.shape[0] // px, arr.shape[1] // px
    a = arr[: rows * px, : cols * px]
    return a.reshape(rows, px, cols, px).swapaxes(1, 2).reshape(rows, cols, px * px)


def _counts(blocks: np.ndarray, n: int) -> np.ndarray:
    """Per-tile histogram of ids ``0..n-1`` (negative ids ignored): ``(tiles, n)``."""
    flat = blocks.reshape(-1, blocks.shape[-1]).astype(np.int64)
    t = flat.shape[0]
    ok = flat >= 0
    idx = (np.arange(t)[:, None] * n + flat)[ok]
    return np.bincount(idx, minlength=t * n).reshape(t, n)


def tile_stats(
    lc_ids: np.ndarray, sl_ids: np.ndarray, slope_deg: np.ndarray, n_classes: int, n_slopes: int, px: int
) -> dict[str, np.ndarray]:
    """Per-tile statistics, frame order (row-major from the north-west).

    Returns ``row, col, class_fraction`` (share of pixels in the recipe classes),
    ``lc_fractions`` (tiles × K+1, "other" last), ``lc_label`` (mode, ties to the class listed
    first, "other" last), ``slope_label`` (mode of valid slope-class pixels, -1 when none),
    ``slope_fractions`` and ``slope_mean_deg`` (mean of finite slope pixels, NaN when none).
    """
    lcb = tile_blocks(lc_ids, px)
    rows, cols = lcb.shape[:2]
    lc_counts = _counts(lcb, n_classes + 1)
    sl_counts = _counts(tile_blocks(sl_ids, px), n_slopes)
    npx = px * px
    sb = tile_blocks(slope_deg, px).reshape(-1, npx)
    finite = np.isfinite(sb)
    nfin = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        smean = np.where(nfin > 0, np.where(finite, sb, 0.0).sum(axis=1) / np.maximum(nfin, 1), np.nan)
    r, c = np.divmod(np.arange(rows * cols), cols)
    sl_total = sl_counts.sum(axis=1)
    return {
        "row": r,
        "col": c,
        "class_fraction": lc_counts[:, :n_classes].sum(axis=1) / npx,
        "lc_fractions": lc_counts / npx,
        "lc_label": lc_counts.argmax(axis=1),  # argmax → first maximum: ties go to the class listed first
        "slope_fractions": sl_counts / np.maximum(sl_total, 1)[:, None],
        "slope_label": np.where(sl_total > 0, sl_counts.argmax(axis=1), -1),
        "slope_mean_deg": smean,
        "shape": np.array([rows, cols]),
    }


def eligibility(class_fraction: np.ndarray, slope_label: np.ndarray, min_fraction: float) -> np.ndarray:
    """Eligible = at least ``min_fraction`` of the pixels in the recipe's classes (and a slope label)."""
    return (class_fraction >= min_fraction - 1e-12) & (slope_label >= 0)


def stratum_weights(eligible: np.ndarray, lc_label: np.ndarray, slope_label: np.ndarray, n_slopes: int) -> np.ndarray:
    """Inverse-probability weights: 1 / (eligible tiles in the same stratum), summing to 1.

    Ineligible tiles get weight 0; with no eligible tile every weight is 0.
    """
    stratum = lc_label.astype(np.int64) * max(n_slopes, 1) + slope_label.astype(np.int64)
    w = np.zeros(eligible.shape, dtype=np.float64)
    if not eligible.any():
        return w
    _, inv, counts = np.unique(stratum[eligible], return_inverse=True, return_counts=True)
    w[eligible] = 1.0 / counts[inv]
    return w / w.sum()


def uniform_weights(eligible: np.ndarray) -> np.ndarray:
    w = eligible.astype(np.float64)
    s = w.sum()
    return w / s if s else w


def ordered_draw(weights: np.ndarray, seed: int, draws: int) -> np.ndarray:
    """The paper's draw: ``RandomState(seed).choice(n, min(n, draws), replace=False, p=w)``.

    ``weights`` are over the *eligible* tiles in frame order; returns positions into that
    list, in draw order (the first N form the N-per-project set, so subsets are nested).
    """
    n = len(weights)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    rs = np.random.RandomState(seed)
    return rs.choice(n, size=min(n, draws), replace=False, p=p).astype(np.int64)


def class_names(classes: Mapping[str, object]) -> list[str]:
    return [*classes.keys(), OTHER]
