"""Per-sample spectral entropy of satellite patches (DESIGN.md §7, Pretrain Where? arXiv 2604.21104).

For each sample and band: SatMAE-style normalisation of the band's valid pixels (clip to
mean ± 2σ, scale linearly to 0-255), a histogram in ``bins`` equal bins over 0-255, and its
Shannon entropy in log base ``base``; the sample's spectral entropy is the mean over its bands.
This is :func:`als_datasets.stats.satmae_entropy` band by band (same operations in the same
order), vectorised over a whole batch: one ``bincount`` with per-(sample, band) offsets, in chunks
of samples to bound memory.  The paper's exact binning is not published, so ``bins`` and ``base``
are parameters (defaults 256 bins, nats) and the card should state them.

Invalid pixels (``valid`` False, or non-finite values) are excluded.  A band with no valid pixel
scores 0 (as ``satmae_entropy`` of an empty array) and is left out of the sample's mean; a sample
with no valid pixel at all scores 0.  A constant band scores 0.

Two normalisations (issue 14):

* ``norm=None`` — *per patch*: each patch's band is clipped to its own mean ± 2σ.  Sensor noise on a
  uniform lake is then stretched over the whole 0-255 range and scores like a full histogram, so a
  featureless patch can outscore a land-cover mosaic.
* ``norm`` = (C, 2) array of (lo, hi) per band — *dataset-wide*, as SatMAE normalises: every patch's
  band is clipped to the same range, mean ± 2σ of that sensor's band over a seeded sample of the
  frame (:func:`dataset_band_stats`, :func:`norm_ranges`).  A uniform patch then fills a few bins
  and scores low; a patch holding several land covers spreads over many bins.
"""

from __future__ import annotations

import math

import numpy as np

from als_datasets.stats import DEFAULT_BINS

CHUNK_VALUES = 1 << 17  # pixel values per chunk (at least one sample): ~1 MiB of float64 stays in cache


def _check(pixels, valid, bins: int, base: float) -> tuple[np.ndarray, np.ndarray | None]:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be (N, C, H, W), got shape {pixels.shape}")
    if not np.issubdtype(pixels.dtype, np.number) or np.issubdtype(pixels.dtype, np.complexfloating):
        raise ValueError(f"pixels must be real numbers, got dtype {pixels.dtype}")
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if not (base > 0 and base != 1):
        raise ValueError(f"base must be > 0 and != 1, got {base!r}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        n, c, h, w = pixels.shape
        if valid.ndim == 3:
            valid = valid[:, None]
        if valid.ndim != 4 or valid.shape[0] != n or valid.shape[1] not in (1, c) or valid.shape[2:] != (h, w):
            raise ValueError(f"valid must be (N, H, W), (N, 1, H, W) or (N, C, H, W) for pixels {pixels.shape}, "
                             f"got {valid.shape}")
    return pixels, valid


def _chunk_entropy(x: np.ndarray, valid: np.ndarray | None, bins: int, base: float,
                   norm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(entropy, valid count) per (sample, band) for one chunk; ``norm`` (C, 2) fixed (lo, hi) per band."""
    n, c = x.shape[:2]
    nc = n * c
    v = x.reshape(nc, -1).astype(np.float64)  # always a copy: modified in place below
    ok = None
    if valid is not None:
        ok = np.broadcast_to(valid, x.shape).reshape(nc, -1)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(v)
        if not finite.all():
            ok = finite if ok is None else ok & finite
    if ok is None:
        count = np.full(nc, v.shape[1], dtype=np.int64)
        mean = v.mean(axis=1)
        std = v.std(axis=1)
    else:
        bad = ~ok
        count = ok.shape[1] - bad.sum(axis=1)
        np.copyto(v, 0.0, where=bad)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = v.sum(axis=1) / count
            dev = v - mean[:, None]
            np.copyto(dev, 0.0, where=bad)
            std = np.sqrt(np.einsum("ij,ij->i", dev, dev) / count)
        del dev
    if norm is None:
        lo, hi = mean - 2 * std, mean + 2 * std
    else:
        lo, hi = np.tile(norm[:, 0], n), np.tile(norm[:, 1], n)
    spread = hi > lo  # False for constant bands (and empty ones): satmae_normalise gives zeros
    lo_, hi_ = np.where(spread, lo, 0.0)[:, None], np.where(spread, hi, 0.0)[:, None]
    span = np.where(spread, hi - lo, 1.0)[:, None]
    # the operations of satmae_normalise then satmae_entropy's binning, in the same order, in place
    np.clip(v, lo_, hi_, out=v)
    v -= lo_
    v /= span
    v *= 255.0
    v *= bins / 256.0
    idx = v.astype(np.int64)
    np.minimum(idx, bins - 1, out=idx)
    idx[~spread] = 0
    idx += (np.arange(nc, dtype=np.int64) * bins)[:, None]
    if ok is not None:
        np.copyto(idx, nc * bins, where=bad)  # invalid pixels go to a dump bin
    hist = np.bincount(idx.ravel(), minlength=nc * bins + 1)[: nc * bins].reshape(nc, bins)
    total = hist.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = hist / np.maximum(total, 1)
        plogp = np.where(hist > 0, p * np.log(np.where(hist > 0, p, 1.0)), 0.0)
    ent = -plogp.sum(axis=1) / math.log(base)
    ent = np.where(count > 0, ent, 0.0) + 0.0  # + 0.0 turns -0.0 into 0.0
    return ent.reshape(n, c), count.reshape(n, c)


def _per_band(pixels, valid, bins, base, norm=None) -> tuple[np.ndarray, np.ndarray]:
    pixels, valid = _check(pixels, valid, bins, base)
    n, c, h, w = pixels.shape
    if norm is not None:
        norm = np.asarray(norm, dtype=np.float64)
        if norm.shape != (c, 2):
            raise ValueError(f"norm must be (C, 2) = ({c}, 2) (lo, hi per band), got {norm.shape}")
    ent = np.zeros((n, c), dtype=np.float64)
    count = np.zeros((n, c), dtype=np.int64)
    step = max(1, CHUNK_VALUES // max(1, c * h * w))
    for s in range(0, n, step):
        sl = slice(s, s + step)
        ent[sl], count[sl] = _chunk_entropy(pixels[sl], None if valid is None else valid[sl], int(bins), base,
                                            norm)
    return ent, count


def per_band_entropy(pixels: np.ndarray, valid: np.ndarray | None = None, bins: int = DEFAULT_BINS,
                     base: float = math.e, norm: np.ndarray | None = None) -> np.ndarray:
    """(N, C) spectral entropy of each band of each sample (see the module docstring).

    ``pixels``: (N, C, H, W), any real dtype.  ``valid``: optional boolean mask (N, H, W),
    (N, 1, H, W) or (N, C, H, W); non-finite pixel values are invalid as well.
    """
    return _per_band(pixels, valid, bins, base, norm)[0]


def spectral_entropy(pixels: np.ndarray, valid: np.ndarray | None = None, bins: int = DEFAULT_BINS,
                     base: float = math.e, norm: np.ndarray | None = None) -> np.ndarray:
    """(N,) per-sample spectral entropy: the mean over bands (with a valid pixel) of per-band entropy.

    ``norm``: None (per-patch mean ± 2σ) or (C, 2) fixed (lo, hi) per band (dataset-wide)."""
    ent, count = _per_band(pixels, valid, bins, base, norm)
    has = count > 0
    nb = has.sum(axis=1)
    return np.where(nb > 0, np.where(has, ent, 0.0).sum(axis=1) / np.maximum(nb, 1), 0.0)


def band_moments(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C, 3) per band: valid pixel count, sum and sum of squares over the patches ``pixels`` (N, C, H, W)."""
    pixels = np.asarray(pixels)
    ok = np.broadcast_to(np.asarray(valid, dtype=bool)[:, None], pixels.shape)
    if np.issubdtype(pixels.dtype, np.floating):
        ok = ok & np.isfinite(pixels)
    out = np.zeros((pixels.shape[1], 3))
    for j in range(pixels.shape[1]):
        v = pixels[:, j][ok[:, j]].astype(np.float64)
        out[j] = (v.size, v.sum(), (v * v).sum())
    return out


def pool_moments(parts) -> dict[str, dict[str, dict]]:
    """Pool ``(sensor, band, moments (3,), patches)`` records into
    ``{sensor: {band: {"mean", "std", "patches", "pixels"}}}`` (dataset-wide statistics)."""
    acc: dict[tuple[str, str], list] = {}
    for sensor, band, m, patches in parts:
        a = acc.setdefault((str(sensor), str(band)), [0.0, 0.0, 0.0, 0])
        a[0] += float(m[0])
        a[1] += float(m[1])
        a[2] += float(m[2])
        a[3] += int(patches)
    stats: dict[str, dict] = {}
    for (sensor, band), (n, s1, s2, patches) in sorted(acc.items()):
        mean = s1 / n if n else 0.0
        std = math.sqrt(max(s2 / n - mean * mean, 0.0)) if n else 0.0
        stats.setdefault(sensor, {})[band] = {"mean": round(mean, 6), "std": round(std, 6), "patches": patches,
                                              "pixels": int(n)}
    return stats


def norm_ranges(stats: dict, sensor: str, bands: list[str]) -> np.ndarray:
    """(C, 2) SatMAE clip range (mean − 2σ, mean + 2σ) of each of ``bands`` from :func:`pool_moments`."""
    out = np.zeros((len(bands), 2))
    for j, b in enumerate(bands):
        s = stats[sensor][b]
        out[j] = (s["mean"] - 2 * s["std"], s["mean"] + 2 * s["std"])
    return out
