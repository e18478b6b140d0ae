"""Raster sampling strategies (DESIGN.md §7): pure functions of the frame and a seed.

Every strategy returns an *ordered* draw over the eligible patches, so the N-sample set is the
first N entries and smaller sets are subsets of larger ones, as for the ALS builder.

* ``random`` — a uniform random permutation of all eligible patches.
* ``global`` — balanced across the continents present: each continent's patches in uniform
  random order, interleaved round-robin (continents in alphabetical order), so every prefix of
  ``K × m`` samples holds ``m`` per continent while each continent lasts; a continent that runs out
  leaves the rotation.  Patches with no continent (open sea beyond the nearest-polygon limit) are
  not drawn.
* ``continent:<name>`` — one continent's patches, uniform random order (names compare without
  case, spaces, ``_`` or ``-``: ``north-america`` = ``North America``).
* ``spectral`` — favours high per-sample spectral entropy while keeping coverage: a weighted
  random order of all eligible patches with weights ``exp(beta · z)`` (``z`` = the patch's
  spectral entropy standardised over the eligible patches) — soft, so low-entropy land is still
  drawn, only less often — after which the first ``min_per_continent`` patches (in that order) of
  every continent present are moved to the front, so no continent is left out of a small set.

Weighted orders without replacement use exponential keys (Efraimidis & Spirakis 2006:
``u^(1/w)``, sorted descending), which is exactly sequential weighted sampling without
replacement, from ``numpy.random.default_rng([seed, stream])``.

The overlap check (:func:`drop_overlaps`) then walks the order and drops a patch when more than
``max_overlap`` of its area is covered by a patch accepted earlier (any scene), using an R-tree
(shapely ``STRtree``) over the footprints in an equal-area CRS (EPSG:6933).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd

from als_datasets.errors import InputError

STRATEGIES = ("global", "random", "spectral", "continent:<name>")


def _norm(name) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def check_strategy(strategy: str, kind: str, where) -> None:
    ok = strategy in ("global", "random", "spectral") or strategy.startswith("continent:")
    if not ok:
        raise InputError(where, f"unknown strategy {strategy!r} for a {kind} recipe "
                                f"(choose from {', '.join(STRATEGIES)})")
    if strategy == "spectral" and kind == "dem":
        raise InputError(where, "strategy 'spectral' needs multispectral scenes (kind: satellite)")
    if strategy.startswith("continent:") and not strategy.split(":", 1)[1].strip():
        raise InputError(where, "strategy continent:<name> needs a continent name, e.g. continent:europe")


def weighted_order(weights: np.ndarray, seed: int, stream: int = 0) -> np.ndarray:
    """Positions in the order of sequential weighted sampling without replacement (weights > 0)."""
    w = np.asarray(weights, dtype=np.float64)
    if not len(w):
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(stream)])
    u = rng.random(len(w))
    with np.errstate(divide="ignore"):
        keys = np.log(u) / w  # log(u^(1/w)): larger is earlier
    return np.argsort(-keys, kind="stable").astype(np.int64)


def _interleave(groups: list[np.ndarray]) -> np.ndarray:
    """Round-robin merge of several ordered index lists."""
    out, depth = [], max((len(g) for g in groups), default=0)
    for i in range(depth):
        out.extend(int(g[i]) for g in groups if i < len(g))
    return np.asarray(out, dtype=np.int64)


def _stream(name: str) -> int:
    return zlib.crc32(name.encode())


def spectral_weights(entropy: np.ndarray, eligible: np.ndarray, beta: float) -> np.ndarray:
    """``exp(beta · z)`` over the eligible patches (0 elsewhere), z = standardised spectral entropy."""
    h = np.asarray(entropy, dtype=np.float64)
    e = np.asarray(eligible, dtype=bool) & np.isfinite(h)
    w = np.zeros(len(h))
    if e.any():
        sd = float(h[e].std()) or 1.0
        w[e] = np.exp(np.clip(beta * (h[e] - float(h[e].mean())) / sd, -50, 50))
    return w


def ordered_draw(frame: pd.DataFrame, strategy: str, seed: int, beta: float = 2.0, where=None,
                 min_per_continent: int = 1) -> np.ndarray:
    """Positions (into ``frame``) of the eligible patches in draw order for ``strategy``."""
    elig = np.flatnonzero(frame["eligible"].to_numpy())
    if strategy == "random":
        return elig[weighted_order(np.ones(len(elig)), seed)]
    cont = frame["continent"].to_numpy(dtype=object)
    if strategy.startswith("continent:"):
        want = _norm(strategy.split(":", 1)[1])
        idx = elig[[_norm(c) == want if c is not None else False for c in cont[elig]]]
        if not len(idx):
            present = sorted({c for c in cont[elig] if c is not None})
            raise InputError(where, f"no eligible patch in continent {strategy.split(':', 1)[1]!r} "
                                    f"(eligible patches are in: {', '.join(present) or 'none'})")
        return idx[weighted_order(np.ones(len(idx)), seed, _stream(want))]
    if strategy == "spectral":
        w = spectral_weights(frame["spectral_entropy"].to_numpy(), frame["eligible"].to_numpy(), beta)
        idx = elig[w[elig] > 0]
        order = idx[weighted_order(w[idx], seed)]
        first = []
        for name in sorted({c for c in cont[order] if c is not None}):
            first.extend(order[cont[order] == name][:max(0, int(min_per_continent))].tolist())
        front = order[np.isin(order, first)]
        return np.concatenate([front, order[~np.isin(order, first)]]).astype(np.int64)
    if strategy != "global":
        raise InputError(where, f"unknown strategy {strategy!r}")
    groups = []
    for name in sorted({c for c in cont[elig] if c is not None}):
        idx = elig[[c == name for c in cont[elig]]]
        groups.append(idx[weighted_order(np.ones(len(idx)), seed, _stream(_norm(name)))])
    return _interleave(groups)


def rebalance(order: np.ndarray, continents) -> np.ndarray:
    """``order`` interleaved again round-robin by continent (each continent's patches keeping
    their relative order): after the overlap check has removed patches from some continents,
    every prefix of the ``global`` draw is balanced again."""
    cont = np.asarray(continents, dtype=object)[order]
    names = sorted({c for c in cont if c is not None})
    return _interleave([order[cont == name] for name in names])


def drop_overlaps(order: np.ndarray, footprints, max_overlap: float, need: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Walk ``order`` (positions into ``footprints``, EPSG:4326 polygons) and keep a patch unless
    more than ``max_overlap`` of its area lies in one patch kept earlier.

    Returns (kept positions in order, rejected positions). With ``need``, stops after ``need`` kept.
    """
    import geopandas as gpd
    import shapely

    if not len(order):
        return order, order
    geoms = gpd.GeoSeries(np.asarray(footprints, dtype=object)[order], crs=4326).to_crs(6933).values
    geoms = np.asarray(geoms, dtype=object)
    areas = shapely.area(geoms)
    tree = shapely.STRtree(geoms)
    kept_mask = np.zeros(len(order), dtype=bool)
    rejected = []
    n_kept = 0
    for i, g in enumerate(geoms):
        if need is not None and n_kept >= need:
            break
        cand = tree.query(g)
        cand = cand[(cand < i) & kept_mask[cand]] if len(cand) else cand
        if len(cand):
            inter = shapely.area(shapely.intersection(g, geoms[cand]))
            if np.any(inter > (max_overlap + 1e-6) * areas[i]):
                rejected.append(order[i])
                continue
        kept_mask[i] = True
        n_kept += 1
    return order[kept_mask], np.asarray(rejected, dtype=np.int64)
