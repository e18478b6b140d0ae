"""Entropies shared by extraction (per-sample statistics) and the diversity report (DESIGN.md §7).

* :func:`shannon_entropy` — −Σ p ln p (nats by default) of counts or proportions.
* :func:`satmae_entropy` — per-sample "spectral" entropy as in Pretrain Where? (arXiv
  2604.21104): the values are normalised SatMAE-style (clipped to mean ± 2σ, scaled to 0-255),
  histogrammed into ``bins`` bins over 0-255, and the Shannon entropy taken.  The paper's exact
  binning is not published; ``bins`` and ``base`` are parameters, defaults 256 and e (nats).
  ALS tiles use it on intensity.
* :func:`height_entropy` — heights above a reference (point-cloud tiles pass the ground surface
  under each point, which their kind derives; by default the lowest point)
  in fixed 1 m bins (0-100 m, higher points in the last bin, lower ones in the first), so that
  bare ground scores ~0 and tall, layered structure high.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 256
HEIGHT_BIN_M = 1.0
HEIGHT_MAX_M = 100.0


def shannon_entropy(counts, base: float = math.e) -> float:
    """Shannon entropy of a histogram (counts or proportions); 0 for an empty one."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum() / math.log(base))


def normalised_entropy(counts, k: int | None = None) -> float:
    """H / ln K (0 for K ≤ 1).

    ``k``: the number of classes the histogram *could* have used (e.g. the labels of the frame a
    sample was drawn from), so that a sample using 2 of 6 classes evenly scores ln 2 / ln 6, not 1;
    default (None) the number of non-empty classes, under which any uniform histogram scores 1.
    """
    present = int((np.asarray(counts) > 0).sum())
    if k is None:
        k = present
    elif k < present:
        raise ValueError(f"{present} classes present but K = {k}")
    return shannon_entropy(counts) / math.log(k) if k > 1 else 0.0


def satmae_normalise(values: np.ndarray) -> np.ndarray:
    """SatMAE-style normalisation to 0-255: clip to mean ± 2σ, then scale linearly."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    mean, std = v.mean(), v.std()
    lo, hi = mean - 2 * std, mean + 2 * std
    if not hi > lo:
        return np.zeros_like(v)
    return (np.clip(v, lo, hi) - lo) / (hi - lo) * 255.0


def satmae_entropy(values: np.ndarray, bins: int = DEFAULT_BINS, base: float = math.e) -> float:
    """Entropy of the SatMAE-normalised values in ``bins`` bins over 0-255."""
    v = satmae_normalise(values)
    if v.size == 0:
        return 0.0
    hist = np.bincount(np.minimum((v * (bins / 256.0)).astype(np.int64), bins - 1), minlength=bins)
    return shannon_entropy(hist, base)


def height_entropy(z: np.ndarray, bin_m: float = HEIGHT_BIN_M, max_m: float = HEIGHT_MAX_M, base: float = math.e,
                   *, reference=None) -> float:
    """Entropy of the heights ``z - reference`` in ``bin_m`` bins from 0 up to ``max_m`` (higher
    points in the last bin, points below the reference in the first).

    ``reference``: one value or one per point (e.g. the ground under each point); default the
    lowest point, so that on sloping land the terrain's relief counts as height.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0:
        return 0.0
    h = z - (z.min() if reference is None else np.asarray(reference, dtype=np.float64))
    nb = int(math.ceil(max_m / bin_m))
    idx = np.clip(np.floor(h / bin_m), 0, nb - 1).astype(np.int64)
    return shannon_entropy(np.bincount(idx, minlength=nb), base) + 0.0  # + 0.0: one bin is 0.0, not -0.0
