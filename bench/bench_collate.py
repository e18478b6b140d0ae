"""BEV-MAE per-sample preparation: three implementations side by side, and the whole loader-worker path.

    python bench/bench_train.py --collate            # 90 k-point synthetic tiles, base config
    python bench/bench_collate.py                    # the same, printed only

* ``old`` (``*_old`` below): the pre-issue-16 code (commit 5617f51: ``np.unique``, a
  ``bincount`` per stacked column, ``isin`` + ``lexsort`` for the targets, ``(|d| < h).all(1)``
  box tests) — self-contained here; until this change it imported the live ``crop_points``, so
  its earlier figures (``old_s_per_sample`` 0.038) timed a crop that had already been sped up.
* ``main`` (``*_main``): the vectorised numpy version that preceded the compiled kernels
  (one ``argsort`` by voxel, a ``bincount`` per contiguous column, table look-ups).
* ``new``: :func:`als_datasets.train.models.bev_mae.prepare_sample` as it is now.

Kept only to be timed against, and for the tests: ``new`` must give exactly the arrays of
``main`` for the same rng (and those of ``old`` up to float rounding of the feature means).

Two figures per implementation: ``prepare_sample`` alone on decoded samples, and the *worker
path* — what a loader worker does per sample: read the members of a WebDataset shard of a
synthetic build (``tests/train_data.py``), decode them (:func:`..decode.decode_sample`), prepare
each sample and assemble the batch of 2 (``new``: :func:`..bev_mae.batch_parts`; ``old`` and
``main``: the concatenating assembly before issue 16, :func:`batch_parts_main`).  Not timed:
the hand-over of the batch to the training process (``new`` allocates it in shared memory in a
worker, which saves one copy there).  Repeats are
interleaved (old, main, new, old, …) so that load on the machine hits all three alike; min and
median are reported, with the load average.  ``feed_8_workers_samples_per_s`` = 8 / (median
seconds per sample): what 8 loader workers on 8 free cores could feed.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from als_datasets.train.models.bev_mae import (  # noqa: E402
    _sample_arrays,
    grid_geometry,
    masked_count,
    n_features,
)


# --------------------------------------------------------------------------------------------
# old: before issue 16 (5617f51)
# --------------------------------------------------------------------------------------------
def _crop_centre_old(xy: np.ndarray, half: float, rng, train: bool, min_points: int) -> np.ndarray:
    lo, hi = xy.min(0), xy.max(0)
    c_lo, c_hi = lo + half, hi - half
    c_lo, c_hi = np.minimum(c_lo, (lo + hi) / 2), np.maximum(c_hi, (lo + hi) / 2)  # tile narrower than crop
    c = rng.uniform(c_lo, c_hi) if train else (c_lo + c_hi) / 2
    if int((np.abs(xy - c) < half).all(1).sum()) < min_points:  # empty corner: centre on a point instead
        p = xy[rng.integers(len(xy))] if train else np.median(xy, 0)
        c = np.clip(p, c_lo, c_hi)
    return c


def crop_points_old(xyz: np.ndarray, rng: np.random.Generator, config: dict, train: bool):
    """Crop (and, in training, augment) a tile: ``(keep, loc (n, 2) in [0, crop), zrel (n,))``.

    ``keep`` indexes the tile's points inside the crop; ``loc`` is x/y in metres from the crop's
    corner; ``zrel`` the height above the crop's ``z_low_percentile`` ground level, z clipped to the
    ``[low, high]`` percentiles (ALS ``percentile_clip_z``) and to ``[0, z_range_m)``.  Training
    crops are placed uniformly at random, rotated ±``rotation_deg``, flipped, scaled (ALS
    augmentations); evaluation crops are centred, unaugmented.
    """
    crop = float(config["crop_m"])
    half, zr = crop / 2, float(config["z_range_m"])
    if not len(xyz):
        return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
    c = _crop_centre_old(xyz[:, :2], half, rng, train, int(config.get("min_points", 16)))
    d = xyz[:, :2] - c
    s = 1.0
    if train and config.get("augment", False):
        s = rng.uniform(*config["scale_range"])
        th = np.deg2rad(rng.uniform(-config["rotation_deg"], config["rotation_deg"]))
        flip = np.where(rng.random(2) < 0.5, -1.0, 1.0)
        pre = np.flatnonzero((np.abs(d) < 1.5 * half).all(1))  # covers the rotated, scaled square
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        d = ((d[pre] * flip) @ rot.T) * s
        inside = (np.abs(d) < half).all(1)
        keep, d = pre[inside], d[inside]
    else:
        inside = (np.abs(d) < half).all(1)
        keep, d = np.flatnonzero(inside), d[inside]
    if not len(keep):
        return keep, np.zeros((0, 2)), np.zeros(0)
    z = xyz[keep, 2]
    lo, hi = np.percentile(z, [config["z_low_percentile"], config["z_high_percentile"]])
    zrel = np.clip((np.clip(z, lo, hi) - lo) * s, 0.0, zr - 1e-6)
    return keep, np.clip(d + half, 0.0, crop - 1e-6), zrel


def voxel_features_old(loc, zrel, ix, iz, vinv, vcount, inten, rnum, nret, config: dict) -> np.ndarray:
    """Per-voxel input features (mean over the voxel's points), see the module docstring."""
    crop, zr, v = float(config["crop_m"]), float(config["z_range_m"]), float(config["voxel_m"])
    nv, n = len(vcount), len(zrel)
    if not nv:
        return np.zeros((0, n_features(config)), np.float32)

    def vmean(a):
        return np.bincount(vinv, weights=a, minlength=nv) / np.maximum(vcount, 1)

    if config.get("features", "full") == "xyz":  # the ALS paper's absolute coordinates
        cols = [loc[:, 0] / crop, loc[:, 1] / crop, zrel / zr]
    else:
        off = np.stack([loc[:, 0] / v - ix[:, 0], loc[:, 1] / v - ix[:, 1], zrel / v - iz], 1) - 0.5
        ref = max(float(np.percentile(inten, 99)), 1.0) if inten is not None else 1.0
        i_norm = np.clip(inten / ref, 0, 1) if inten is not None else np.zeros(n)
        r_ratio = np.clip(rnum / np.maximum(nret, 1), 0, 1) if rnum is not None and nret is not None \
            else np.ones(n)
        cols = [off[:, 0], off[:, 1], off[:, 2], zrel / zr, i_norm, r_ratio]
    return np.stack([vmean(a) for a in cols], 1).astype(np.float32)


def cell_targets_old(loc, zrel, pcell, m_cells, rng: np.random.Generator, config: dict):
    """Up to ``max_target_points`` points of every masked cell, drawn with ``rng``: ``(M, T, 3)``, lengths.

    A target point is ``((x - cx) / cell, (y - cy) / cell, z / z_range)`` (BEV-MAE); padding is zero.
    """
    g = grid_geometry(config)
    T, ncell, cm, zr = int(config["max_target_points"]), g["ncell"], g["cell_m"], float(config["z_range_m"])
    pidx = np.flatnonzero(np.isin(pcell, m_cells))
    order = pidx[np.lexsort((rng.random(len(pidx)), pcell[pidx]))]  # by cell, random within a cell
    pc = pcell[order]
    slot = np.searchsorted(m_cells, pc)
    rank = np.arange(len(order)) - np.searchsorted(pc, pc, side="left")
    take = rank < T
    sel, sl, rk = order[take], slot[take], rank[take]
    cy, cx = m_cells // ncell, m_cells % ncell
    tgt = np.zeros((len(m_cells), T, 3), np.float32)
    tgt[sl, rk, 0] = (loc[sel, 0] - (cx[sl] + 0.5) * cm) / cm
    tgt[sl, rk, 1] = (loc[sel, 1] - (cy[sl] + 0.5) * cm) / cm
    tgt[sl, rk, 2] = zrel[sel] / zr
    return tgt, np.minimum(np.bincount(slot, minlength=len(m_cells)), T).astype(np.int64)


def prepare_sample_old(sample: dict, rng: np.random.Generator, config: dict, train: bool = True) -> dict:
    """One ALS sample → voxels, mask and targets (numpy), a function of ``(sample, rng, config, train)``."""
    g = grid_geometry(config)
    xyz, inten, rnum, nret = _sample_arrays(sample)
    v, cv, nxy, ncell = g["voxel_m"], g["cell_voxels"], g["nxy"], g["ncell"]
    if not train:
        rng = np.random.default_rng(zlib.crc32(str(sample.get("__key__", "")).encode()))
    # independent streams: the view does not depend on the mask ratio, nor the mask on the targets
    r_view, r_mask, r_tgt = (np.random.default_rng(int(sd)) for sd in rng.integers(0, 2 ** 63 - 1, size=3))
    keep, loc, zrel = crop_points_old(xyz, r_view, config, train)

    # voxels: unique (z, y, x) cells of the points
    ix = np.minimum((loc / v).astype(np.int64), nxy - 1)
    iz = np.minimum((zrel / v).astype(np.int64), g["nz"] - 1)
    ukey, vinv, vcount = np.unique((iz * nxy + ix[:, 1]) * nxy + ix[:, 0], return_inverse=True,
                                   return_counts=True)
    vox = np.stack([ukey // (nxy * nxy), (ukey // nxy) % nxy, ukey % nxy], 1)
    feats = voxel_features_old(loc, zrel, ix, iz, vinv, vcount, *(None if a is None else a[keep]
                                                             for a in (inten, rnum, nret)), config)

    # BEV cells: mask exactly round(ratio × occupied) of them
    vcell = (vox[:, 1] // cv) * ncell + vox[:, 2] // cv
    cells, vcell_inv = np.unique(vcell, return_inverse=True)
    cell_masked = np.zeros(len(cells), bool)
    cell_masked[r_mask.permutation(len(cells))[:masked_count(len(cells), float(config["mask_ratio"]))]] = True
    vmasked = cell_masked[vcell_inv]

    # targets: points (Chamfer) and density = Σ_voxels min(count, cap) / cell_voxels² (BEV-MAE)
    m_cells = cells[cell_masked]
    tgt, tlen = cell_targets_old(loc, zrel, vcell[vinv], m_cells, r_tgt, config)
    capped = np.bincount(vcell_inv, weights=np.minimum(vcount, int(config["max_points_per_voxel"])),
                         minlength=len(cells))
    density = (capped[cell_masked] / (cv * cv)).astype(np.float32)

    maxv = int(config.get("max_voxels") or 0)
    if maxv and len(vox) > maxv:  # BEV-MAE's MAX_NUMBER_OF_VOXELS; cells/targets stay as computed
        sub = np.sort(r_tgt.choice(len(vox), maxv, replace=False)) if train else \
            np.linspace(0, len(vox) - 1, maxv).astype(np.int64)
        vox, feats, vmasked = vox[sub], feats[sub], vmasked[sub]
    return {"coords": vox, "features": feats, "masked": vmasked,
            "cells": np.stack([m_cells // ncell, m_cells % ncell], 1), "target_points": tgt, "target_len": tlen,
            "target_density": density, "num_cells": len(cells), "num_points": len(keep)}


# --------------------------------------------------------------------------------------------
# main: the numpy version before the compiled kernels (b84c549)
# --------------------------------------------------------------------------------------------
def _in_box_main(d: np.ndarray, half: float) -> np.ndarray:
    """``(|d| < half).all(1)`` for (n, 2) ``d``, without the slow two-column reduction."""
    return (np.abs(d[:, 0]) < half) & (np.abs(d[:, 1]) < half)


def _crop_centre_main(xy: np.ndarray, half: float, rng, train: bool, min_points: int) -> np.ndarray:
    lo, hi = xy.min(0), xy.max(0)
    c_lo, c_hi = lo + half, hi - half
    c_lo, c_hi = np.minimum(c_lo, (lo + hi) / 2), np.maximum(c_hi, (lo + hi) / 2)  # tile narrower than crop
    c = rng.uniform(c_lo, c_hi) if train else (c_lo + c_hi) / 2
    if int(np.count_nonzero(_in_box_main(xy - c, half))) < min_points:  # empty corner: centre on a point instead
        p = xy[rng.integers(len(xy))] if train else np.median(xy, 0)
        c = np.clip(p, c_lo, c_hi)
    return c


def crop_points_main(xyz: np.ndarray, rng: np.random.Generator, config: dict, train: bool):
    """Crop (and, in training, augment) a tile: ``(keep, loc (n, 2) in [0, crop), zrel (n,))``.

    ``keep`` indexes the tile's points inside the crop; ``loc`` is x/y in metres from the crop's
    corner; ``zrel`` the height above the crop's ``z_low_percentile`` ground level, z clipped to the
    ``[low, high]`` percentiles (ALS ``percentile_clip_z``) and to ``[0, z_range_m)``.  Training
    crops are placed uniformly at random, rotated ±``rotation_deg``, flipped, scaled (ALS
    augmentations); evaluation crops are centred, unaugmented.
    """
    crop = float(config["crop_m"])
    half, zr = crop / 2, float(config["z_range_m"])
    if not len(xyz):
        return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
    c = _crop_centre_main(xyz[:, :2], half, rng, train, int(config.get("min_points", 16)))
    d = xyz[:, :2] - c
    s = 1.0
    if train and config.get("augment", False):
        s = rng.uniform(*config["scale_range"])
        th = np.deg2rad(rng.uniform(-config["rotation_deg"], config["rotation_deg"]))
        flip = np.where(rng.random(2) < 0.5, -1.0, 1.0)
        pre = np.flatnonzero(_in_box_main(d, 1.5 * half))  # covers the rotated, scaled square
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        d = ((d[pre] * flip) @ rot.T) * s
        inside = _in_box_main(d, half)
        keep, d = pre[inside], d[inside]
    else:
        inside = _in_box_main(d, half)
        keep, d = np.flatnonzero(inside), d[inside]
    if not len(keep):
        return keep, np.zeros((0, 2)), np.zeros(0)
    z = xyz[keep, 2]
    lo, hi = np.percentile(z, [config["z_low_percentile"], config["z_high_percentile"]])
    zrel = np.clip((np.clip(z, lo, hi) - lo) * s, 0.0, zr - 1e-6)
    return keep, np.clip(d + half, 0.0, crop - 1e-6), zrel


def voxelise_main(loc: np.ndarray, zrel: np.ndarray, g: dict):
    """Voxel of every point: ``(ix (n, 2), iz (n,), ukey, vinv, vcount, order, starts)``.

    ``ukey`` the sorted voxel keys ``(iz · nxy + iy) · nxy + ix``, ``vinv`` each point's voxel,
    ``vcount`` points per voxel, ``order`` the points sorted by voxel and ``starts`` where each
    voxel's run begins in it (what ``np.unique`` computes).
    """
    v, nxy = g["voxel_m"], g["nxy"]
    ix = np.minimum((loc / v).astype(np.int64), nxy - 1)
    iz = np.minimum((zrel / v).astype(np.int64), g["nz"] - 1)
    key = (iz * nxy + ix[:, 1]) * nxy + ix[:, 0]
    order = np.argsort(key)
    sk = key[order]
    first = np.ones(len(sk), bool)
    np.not_equal(sk[1:], sk[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    vinv = np.empty(len(sk), np.int64)
    vinv[order] = np.cumsum(first) - 1
    return ix, iz, sk[starts], vinv, np.diff(np.append(starts, len(sk))), order, starts


def voxel_features_main(loc, zrel, ix, iz, vinv, vcount, inten, rnum, nret, config: dict) -> np.ndarray:
    """Per-voxel input features (mean over the voxel's points), see the module docstring."""
    crop, zr, v = float(config["crop_m"]), float(config["z_range_m"]), float(config["voxel_m"])
    nv = len(vcount)
    if not nv:
        return np.zeros((0, n_features(config)), np.float32)
    out = np.empty((nv, n_features(config)), np.float32)
    inv_count = 1.0 / np.maximum(vcount, 1)

    def put(j, a):  # one contiguous column at a time: a bincount per feature, no (n, F) temporaries
        out[:, j] = np.bincount(vinv, weights=a, minlength=nv) * inv_count

    if config.get("features", "full") == "xyz":  # the ALS paper's absolute coordinates
        put(0, loc[:, 0] / crop)
        put(1, loc[:, 1] / crop)
        put(2, zrel / zr)
        return out
    put(0, loc[:, 0] / v - ix[:, 0] - 0.5)
    put(1, loc[:, 1] / v - ix[:, 1] - 0.5)
    put(2, zrel / v - iz - 0.5)
    put(3, zrel / zr)
    if inten is not None:
        ref = max(float(np.percentile(inten, 99)), 1.0)
        put(4, np.clip(inten / ref, 0, 1))
    else:
        out[:, 4] = 0.0
    if rnum is not None and nret is not None:
        put(5, np.clip(rnum / np.maximum(nret, 1), 0, 1))
    else:
        out[:, 5] = 1.0
    return out


def cell_targets_main(loc, zrel, pcell, m_cells, rng: np.random.Generator, config: dict):
    """Up to ``max_target_points`` points of every masked cell, drawn with ``rng``: ``(M, T, 3)``, lengths.

    A target point is ``((x - cx) / cell, (y - cy) / cell, z / z_range)`` (BEV-MAE); padding is zero.
    ``m_cells`` sorted; O(n) table look-ups and one sort of the masked cells' points.
    """
    g = grid_geometry(config)
    T, ncell, cm, zr = int(config["max_target_points"]), g["ncell"], g["cell_m"], float(config["z_range_m"])
    slot_of = np.full(ncell * ncell, -1, np.int64)
    slot_of[m_cells] = np.arange(len(m_cells))
    ps = slot_of[pcell]
    pidx = np.flatnonzero(ps >= 0)
    # by cell, random within a cell (slot + a uniform in [0, 1) sorts as the pair (slot, uniform))
    o = np.argsort(ps[pidx] + rng.random(len(pidx)))
    order, sl = pidx[o], ps[pidx][o]
    first = np.ones(len(sl), bool)
    np.not_equal(sl[1:], sl[:-1], out=first[1:])
    st = np.flatnonzero(first)
    rank = np.arange(len(sl)) - np.repeat(st, np.diff(np.append(st, len(sl))))
    take = rank < T
    sel, sl_t, rk = order[take], sl[take], rank[take]
    cy, cx = m_cells // ncell, m_cells % ncell
    tgt = np.zeros((len(m_cells), T, 3), np.float32)
    tgt[sl_t, rk, 0] = (loc[sel, 0] - (cx[sl_t] + 0.5) * cm) / cm
    tgt[sl_t, rk, 1] = (loc[sel, 1] - (cy[sl_t] + 0.5) * cm) / cm
    tgt[sl_t, rk, 2] = zrel[sel] / zr
    return tgt, np.minimum(np.bincount(sl, minlength=len(m_cells)), T).astype(np.int64)


def prepare_sample_main(sample: dict, rng: np.random.Generator, config: dict, train: bool = True,
                   cell_masked=None) -> dict:
    """One ALS sample → voxels, mask and targets (numpy), a function of ``(sample, rng, config, train)``.

    Vectorised throughout (one sort of the points by voxel, table look-ups for cells): no
    per-point or per-cell Python.  ``cell_masked=False`` returns the unmasked view (for
    :func:`batch_cell_masks` then :func:`finish_sample`)."""
    g = grid_geometry(config)
    xyz, inten, rnum, nret = _sample_arrays(sample)
    cv, nxy, ncell = g["cell_voxels"], g["nxy"], g["ncell"]
    if not train:
        rng = np.random.default_rng(zlib.crc32(str(sample.get("__key__", "")).encode()))
    # independent streams: the view does not depend on the mask ratio, nor the mask on the targets
    r_view, r_mask, r_tgt = (np.random.default_rng(int(sd)) for sd in rng.integers(0, 2 ** 63 - 1, size=3))
    keep, loc, zrel = crop_points_main(xyz, r_view, config, train)

    # voxels: unique (z, y, x) cells of the points
    ix, iz, ukey, vinv, vcount, order, starts = voxelise_main(loc, zrel, g)
    vox = np.stack([ukey // (nxy * nxy), (ukey // nxy) % nxy, ukey % nxy], 1)
    feats = voxel_features_main(loc, zrel, ix, iz, vinv, vcount, *(None if a is None else a[keep]
                                                             for a in (inten, rnum, nret)), config)

    # BEV cells occupied by the sample
    vcell = (vox[:, 1] // cv) * ncell + vox[:, 2] // cv
    occ = np.zeros(ncell * ncell, bool)
    occ[vcell] = True
    cells = np.flatnonzero(occ)
    view = {"loc": loc, "zrel": zrel, "vox": vox, "feats": feats, "vcell": vcell, "cells": cells,
            "vcell_inv": (np.cumsum(occ) - 1)[vcell], "vinv": vinv, "vcount": vcount, "keep": keep,
            "r_mask": r_mask, "r_tgt": r_tgt}
    if cell_masked is False:  # the batch draws the mask (mask_scope: batch)
        return view
    if cell_masked is None:  # mask exactly round(ratio × occupied) cells of this sample
        cell_masked = np.zeros(len(cells), bool)
        cell_masked[r_mask.permutation(len(cells))[:masked_count(len(cells), float(config["mask_ratio"]))]] = True
    return finish_sample_main(view, cell_masked, config, train)


def finish_sample_main(view: dict, cell_masked: np.ndarray, config: dict, train: bool = True) -> dict:
    """The masked view of :func:`prepare_sample`: voxel mask, targets of the masked cells."""
    g = grid_geometry(config)
    cv, ncell = g["cell_voxels"], g["ncell"]
    vox, feats, cells, vcell_inv, vcount = (view[k] for k in ("vox", "feats", "cells", "vcell_inv", "vcount"))
    r_tgt = view["r_tgt"]
    vmasked = cell_masked[vcell_inv]

    # targets: points (Chamfer) and density = Σ_voxels min(count, cap) / cell_voxels² (BEV-MAE)
    m_cells = cells[cell_masked]
    tgt, tlen = cell_targets_main(view["loc"], view["zrel"], view["vcell"][view["vinv"]], m_cells, r_tgt, config)
    capped = np.bincount(vcell_inv, weights=np.minimum(vcount, int(config["max_points_per_voxel"])),
                         minlength=len(cells))
    density = (capped[cell_masked] / (cv * cv)).astype(np.float32)

    maxv = int(config.get("max_voxels") or 0)
    if maxv and len(vox) > maxv:  # BEV-MAE's MAX_NUMBER_OF_VOXELS; cells/targets stay as computed
        sub = np.sort(r_tgt.choice(len(vox), maxv, replace=False)) if train else \
            np.linspace(0, len(vox) - 1, maxv).astype(np.int64)
        vox, feats, vmasked = vox[sub], feats[sub], vmasked[sub]
    return {"coords": vox, "features": feats, "masked": vmasked,
            "cells": np.stack([m_cells // ncell, m_cells % ncell], 1), "target_points": tgt, "target_len": tlen,
            "target_density": density, "num_cells": len(cells), "num_points": len(view["keep"])}


def batch_parts_main(parts: list[dict], config: dict) -> dict:
    """The batch assembly of ``collate`` before issue 16 (per-sample temporaries, concatenated)."""
    import torch

    cat = np.concatenate

    def with_b(key, width):
        rows = [np.concatenate([np.full((len(p[key]), 1), b, np.int64), p[key].reshape(-1, width)], 1)
                for b, p in enumerate(parts)]
        return torch.from_numpy(cat(rows) if rows else np.zeros((0, width + 1), np.int64)).long()

    T, nf = int(config["max_target_points"]), n_features(config)
    return {
        "coords": with_b("coords", 3),
        "features": torch.from_numpy(cat([p["features"] for p in parts] or [np.zeros((0, nf), np.float32)])),
        "masked": torch.from_numpy(cat([p["masked"] for p in parts] or [np.zeros(0, bool)])),
        "cell_index": with_b("cells", 2),
        "target_points": torch.from_numpy(cat([p["target_points"] for p in parts] or
                                              [np.zeros((0, T, 3), np.float32)])),
        "target_len": torch.from_numpy(cat([p["target_len"] for p in parts] or [np.zeros(0, np.int64)])),
        "target_density": torch.from_numpy(cat([p["target_density"] for p in parts] or [np.zeros(0, np.float32)])),
        "num_cells": torch.tensor([p["num_cells"] for p in parts], dtype=torch.long),
        "num_masked": torch.tensor([len(p["cells"]) for p in parts], dtype=torch.long),
        "num_points": torch.tensor([p["num_points"] for p in parts], dtype=torch.long),
        "batch_size": torch.tensor(len(parts), dtype=torch.long),
    }


# --------------------------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------------------------
def _stats(runs: list[float]) -> dict:
    return {"min_s": round(min(runs), 5), "median_s": round(statistics.median(runs), 5)}


def bench_collate(config: str = "base", points: int = 90000, samples: int = 8, repeats: int = 5,
                  batch: int = 2) -> dict:
    """Seconds per sample of the old, main and new preparation, alone and on the whole worker path."""
    from train_data import make_samples, write_dataset

    from als_datasets.train.decode import decode_sample, iter_raw
    from als_datasets.train.models import bev_mae, get_config

    cfg = get_config("bev-mae", config)
    impls = {"old": prepare_sample_old, "main": prepare_sample_main, "new": bev_mae.prepare_sample}
    batchers = {"old": batch_parts_main, "main": batch_parts_main, "new": bev_mae.batch_parts}
    data = make_samples("als", samples, seed=0, n_points=points)

    def prepare_only(name, r: int) -> int:
        prepare, rng = impls[name], np.random.default_rng(r)
        for s in data:
            prepare(s, rng, cfg, True)
        return len(data)

    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "als", "als", n_train=samples, n_val=0, shard_size=samples, n_points=points)
        shards = sorted(str(p) for p in Path(root).rglob("*.tar"))

        def worker_path(name, r: int) -> int:  # shard bytes -> decode -> prepare -> batch, as a worker does
            prepare, batch_parts = impls[name], batchers[name]
            n, pending = 0, []
            for shard in shards:
                for key, fields in iter_raw(shard):
                    pending.append(decode_sample(shard, key, fields))
                    if len(pending) == batch:
                        rng = np.random.default_rng([r, n])
                        batch_parts([prepare(s, rng, cfg, True) for s in pending], cfg)
                        n, pending = n + len(pending), []
            return n

        for name in impls:  # warm-up: page cache, compiled kernels
            worker_path(name, 0)
        load = [os.getloadavg()[0]]
        runs = {(k, name): [] for k in ("prepare", "worker") for name in impls}
        for r in range(repeats):
            for name in impls:
                for k, f in (("prepare", prepare_only), ("worker", worker_path)):
                    t0 = time.perf_counter()
                    n = f(name, r)
                    runs[k, name].append((time.perf_counter() - t0) / n)
        load.append(os.getloadavg()[0])

    med = {key: statistics.median(v) for key, v in runs.items()}
    out = {"config": config, "points_per_tile": points, "samples": samples, "repeats": repeats,
           # prepare_sample alone, medians (the keys of the earlier results)
           "old_s_per_sample": round(med["prepare", "old"], 4), "new_s_per_sample": round(med["prepare", "new"], 4),
           "speedup": round(med["prepare", "old"] / med["prepare", "new"], 2),
           "main_s_per_sample": round(med["prepare", "main"], 4),
           "speedup_vs_main": round(med["prepare", "main"] / med["prepare", "new"], 2),
           "prepare": {name: _stats(runs["prepare", name]) for name in impls},
           "worker_path": {"batch": batch, **{name: _stats(runs["worker", name]) for name in impls},
                           "speedup_vs_old": round(med["worker", "old"] / med["worker", "new"], 2),
                           "speedup_vs_main": round(med["worker", "main"] / med["worker", "new"], 2),
                           "speedup_vs_old_min": round(min(runs["worker", "old"]) / min(runs["worker", "new"]), 2),
                           "speedup_vs_main_min": round(min(runs["worker", "main"]) / min(runs["worker", "new"]), 2),
                           "feed_8_workers_samples_per_s": {name: round(8 / med["worker", name], 1) for name in impls}},
           "load_avg_1m_before_after": [round(v, 2) for v in load]}
    w = out["worker_path"]
    print(f"prepare_sample ({config}, ~{points} points, median of {repeats}): old {med['prepare', 'old'] * 1e3:.1f}, "
          f"main {med['prepare', 'main'] * 1e3:.1f}, new {med['prepare', 'new'] * 1e3:.1f} ms per sample "
          f"({out['speedup']:.2f}x old, {out['speedup_vs_main']:.2f}x main)\n"
          f"worker path (shard bytes -> decode -> prepare -> batch of {batch}): old "
          f"{med['worker', 'old'] * 1e3:.1f}, main {med['worker', 'main'] * 1e3:.1f}, new {med['worker', 'new'] * 1e3:.1f} "
          f"ms per sample ({w['speedup_vs_old']:.2f}x old, {w['speedup_vs_main']:.2f}x main); 8 workers could feed "
          f"{w['feed_8_workers_samples_per_s']['new']:.0f} samples/s (old {w['feed_8_workers_samples_per_s']['old']:.0f}); "
          f"load average {load[0]:.2f} -> {load[1]:.2f}", flush=True)
    return out


if __name__ == "__main__":
    bench_collate()
