"""BEV-MAE per-sample preparation: the current ``prepare_sample`` against the previous one, side by side.

    python bench/bench_train.py --collate            # 90 k-point synthetic tiles, base config

The previous implementation (``*_old`` below, as of the fused-convolution change) is kept here
only to be timed against and to check that the new one gives the same arrays for the same rng.
"""

from __future__ import annotations

import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from als_datasets.train.models.bev_mae import (  # noqa: E402
    _sample_arrays,
    crop_points,
    grid_geometry,
    masked_count,
    n_features,
)


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
    keep, loc, zrel = crop_points(xyz, r_view, config, train)

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


def bench_collate(config: str = "base", points: int = 90000, samples: int = 8, repeats: int = 3) -> dict:
    """Seconds per sample of the current and the previous ``prepare_sample`` (median of ``repeats``)."""
    from train_data import make_samples

    from als_datasets.train.models import bev_mae, get_config

    cfg = get_config("bev-mae", config)
    data = make_samples("als", samples, seed=0, n_points=points)
    res = {}
    for name, fn in (("old", prepare_sample_old), ("new", bev_mae.prepare_sample)):
        runs = []
        for r in range(repeats):
            rng = np.random.default_rng(r)
            t0 = time.perf_counter()
            for s in data:
                fn(s, rng, cfg, True)
            runs.append((time.perf_counter() - t0) / len(data))
        res[name] = statistics.median(runs)
    out = {"config": config, "points_per_tile": points, "samples": samples, "old_s_per_sample": round(res["old"], 4),
           "new_s_per_sample": round(res["new"], 4), "speedup": round(res["old"] / res["new"], 2)}
    print(f"prepare_sample ({config}, ~{points} points): old {res['old'] * 1e3:.1f} ms, new {res['new'] * 1e3:.1f} ms "
          f"per sample: {out['speedup']:.2f}x", flush=True)
    return out


if __name__ == "__main__":
    bench_collate()
