"""BEV-MAE on ALS tiles, as the ALS pre-training paper configured it (DESIGN.md §9).

What: BEV-MAE (Lin et al., AAAI 2024, arXiv 2212.05758, code ``VDIGPKU/BEV-MAE``) — mask the
point cloud by bird's-eye-view cells, keep the masked voxels' *coordinates* with a shared learned
token as their features, encode with a sparse 3D ResNet, collapse to BEV, and from each masked
cell reconstruct its points (Chamfer) and its point density (SmoothL1) — with the settings of
Xiu et al., "Advancing ALS Applications with Large-Scale Pre-training" (arXiv 2501.05095; the
authors' released configs ``martianxiu/ALS_pretraining``, ``tools/cfgs/als_models/
bevmae_pretrain_mask0.7_D2362W3_sample40_als.yaml``).

Where every number of ``CONFIGS["base"]`` comes from:

* 144 m square crops (``pillar_crop PILLAR_SIZE: 144``), voxel 0.6 m (``VOXEL_SIZE``), height range
  0-288 m (``POINT_CLOUD_RANGE [-72, -72, 0, 72, 72, 288]``), z clipped to its 0.1 / 99.9
  percentiles (``percentile_clip_z``), at most 200 000 voxels per sample (``MAX_NUMBER_OF_VOXELS``).
* BEV cells 4.8 m = 8 × 8 voxel columns (``VOXEL_SIZE_BEV [4.8, 4.8, 288]``; BEV-MAE's
  ``down_factor = 8``); at most 30 target points per cell (``MAX_POINTS_PER_VOXEL_BEV: 30``,
  BEV-MAE's Waymo value; the ALS dataset base config says 50, its model config 30); 20 predicted
  points per cell (BEV-MAE ``coor_conv``: ``3 * 20`` channels); mask ratio 0.7 (``MASKED_RATIO``).
* Encoder: stem 16 × ``WIDTH_MUL 3`` = 48 channels, ``NUM_BLOCKS [2, 3, 6, 2]``, widths doubling
  48-96-192-384, stride-2 3×3×3 sparse convs between stages (z padding 0 before the last stage),
  then a (3, 1, 1)/(2, 1, 1) sparse conv on z, BatchNorm ``eps=1e-3, momentum=0.01`` (BEV-MAE
  ``BEV_MAE_res``).  Deviation: the ALS code puts one *extra* residual block in stage 1
  (``1 + NUM_BLOCKS[0]``); here stage ``i`` has exactly ``blocks[i]``, as the paper describes it.
  The blocks' convs carry no bias (BatchNorm follows; BEV-MAE's ``bias=True`` is redundant).
* Decoder: BEV features = the final sparse volume made dense with z flattened into channels
  (BEV-MAE's height compression), one 3×3 conv to 256 + BN + ReLU, then 1×1 heads: ``3 · 20``
  point coordinates and 1 density.
* Targets (BEV-MAE ``forward``): a target point is ``((x - cx) / cell, (y - cy) / cell, z / z_range)``
  with ``(cx, cy)`` the cell centre; **density** of a cell = Σ over its voxels of
  ``min(points in voxel, 5)`` / (8 · 8): the voxeliser keeps at most ``MAX_POINTS_PER_VOXEL = 5``
  points per voxel and BEV-MAE sums the kept counts over the cell's 64 voxel columns (all
  heights) and divides by ``down_factor² = 64``.
* Losses (BEV-MAE ``loss_utils.MaskChamferDistance``, ``get_num_loss``): Chamfer with squared L2,
  ``mean over predicted points of min over the cell's real points`` + ``sum over real points of min
  over predictions / number of real points`` over all masked cells; density SmoothL1 (β = 1)
  averaged over masked cells; loss = Chamfer + 1.0 × density (unweighted sum in both codes).
* Optimisation (ALS config ``OPTIMIZATION``, optimiser ``adamW_onecycle``): AdamW (betas 0.9 /
  0.99, OpenPCDet's default), lr 0.01, weight decay 0.01, one-cycle (``PCT_START 0.1``,
  ``DIV_FACTOR 10``, cosine, final lr = lr / 10 / 1e4, beta1 0.95 → 0.85 → 0.95 (``MOMS``)),
  50 epochs, ``BATCH_SIZE_PER_GPU 2`` (its launch script uses 1 GPU), gradient clip 10
  (``GRAD_NORM_CLIP``).  BEV-MAE's own Waymo config (``bevmae_waymo_voxel_20ep.yaml``): Adam
  one-cycle, lr 3e-4, pct 0.4, 20 epochs, batch 4 per GPU.  ``warmup_epochs`` (= pct × epochs) is
  only used if ``schedule`` is switched to ``cosine``.
* Augmentation (ALS ``DATA_AUGMENTOR``): random flips along x and y, rotation ±45°, scaling
  0.95-1.05 (applied to the crop here).  The crop is placed uniformly at random inside the tile's
  extent (the ALS code's ``pillar_crop`` ``GRID_SIZE_2D: 10`` placement is not reproduced); a crop
  with fewer than ``min_points`` points is re-centred on a random point.

``CONFIGS["tiny"]`` runs the same code on a 96 m crop of 1.5 m voxels (12 m cells, 48 m height
range), widths 8-16-32-64, one block per stage, a 32-channel decoder: ~0.15 s per training step
(batch 2) on one CPU core.

Input voxel features (``features="full"``, 6 channels; the choice of this toolkit): mean over the
voxel's points of their offset from the voxel centre (in voxel units), their height above the
crop's ground level / z range, intensity divided by the crop's 99th percentile (clipped to 1:
sensors store 8- to 16-bit scales), and return number / number of returns.  The ALS paper used
the mean absolute coordinates only (``used_feature_list: [x, y, z]``): ``features="xyz"``.

Masking here is exact and per sample (``mask_scope: sample``): ``round(0.7 × occupied cells)``
cells of every sample; ``mask_scope: batch`` is BEV-MAE's: ``int(0.3 × n)`` of the batch's ``n``
occupied cells stay visible, drawn over the whole batch.  ``train=False`` gives the centre
crop, no augmentation, and a mask drawn from a generator seeded by the sample key (so a
validation loss is reproducible); :meth:`BEVMAE.encode` never applies a mask.  ``encode`` pools
the encoder's last sparse volume: max over height per BEV cell, mean over occupied cells
→ ``(B, widths[-1])`` (a sample without points gives zeros).

``collate`` is numpy plus the compiled per-point passes of :mod:`.bev_kernels` (crop, counting-sort
voxelisation, one-pass feature means, cells, targets, extreme percentiles: the same float64 operations
as the numpy formulation, bit-identical results; timed in ``bench/bench_collate.py``);
it runs in loader workers, all randomness from its ``rng``; the model uses
the pure-torch sparse convolution of :mod:`..sparse` (spconv optional: ``backend``).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ..sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseReLU,
    SparseSequential,
    SparseTensor,
    SubMConv3d,
    conv_output_shape,
)
from . import bev_kernels as K
from .bev_kernels import percentiles

KIND = "als"

_DATA = {"z_low_percentile": 0.1, "z_high_percentile": 99.9, "mask_ratio": 0.7, "num_pred_points": 20,
         "max_target_points": 30, "max_points_per_voxel": 5, "density_weight": 1.0, "features": "full",
         "mask_scope": "sample", "augment": True, "rotation_deg": 45.0, "scale_range": (0.95, 1.05), "min_points": 16,
         "backend": None}
_OPTIM = {"optimizer": "adamw", "betas": (0.9, 0.99), "weight_decay": 0.01, "schedule": "onecycle",
          "pct_start": 0.1, "div_factor": 10.0, "final_div_factor": 1e4, "moms": (0.95, 0.85), "clip_grad": 10.0}

CONFIGS = {
    # seconds on CPU: coarse voxels, small crop, narrow and shallow — same code path as base
    "tiny": {**_DATA, **_OPTIM, "crop_m": 96.0, "voxel_m": 1.5, "z_range_m": 48.0, "cell_voxels": 8,
             "widths": (8, 16, 32, 64), "blocks": (1, 1, 1, 1), "decoder_channels": 32, "max_voxels": 20000,
             "batch_size": 2, "lr": 3e-3, "epochs": 1, "warmup_steps": 0},
    # the ALS paper's BEV-MAE (see the module docstring for each number's source)
    "base": {**_DATA, **_OPTIM, "crop_m": 144.0, "voxel_m": 0.6, "z_range_m": 288.0, "cell_voxels": 8,
             "widths": (48, 96, 192, 384), "blocks": (2, 3, 6, 2), "decoder_channels": 256,
             "max_voxels": 200000, "batch_size": 2, "lr": 0.01, "epochs": 50, "warmup_epochs": 5},
}


# --------------------------------------------------------------------------------------------
# Geometry (pure numpy)
# --------------------------------------------------------------------------------------------
def grid_geometry(config: dict) -> dict:
    """Voxel grid of a crop: ``nxy`` columns per side, ``nz`` levels, ``ncell`` BEV cells per side."""
    v, cv = float(config["voxel_m"]), int(config["cell_voxels"])
    nxy, nz = config["crop_m"] / v, config["z_range_m"] / v
    if abs(nxy - round(nxy)) > 1e-6 or abs(nz - round(nz)) > 1e-6:
        raise ValueError(f"crop_m {config['crop_m']} and z_range_m {config['z_range_m']} must be multiples of "
                         f"voxel_m {v}")
    nxy, nz = int(round(nxy)), int(round(nz))
    if nxy % cv:
        raise ValueError(f"crop of {nxy} voxels is not a whole number of {cv}-voxel BEV cells")
    if 2 ** (len(config["widths"]) - 1) != cv:
        raise ValueError(f"{len(config['widths'])} stages give a BEV stride of {2 ** (len(config['widths']) - 1)}, "
                         f"not cell_voxels {cv}")
    return {"nxy": nxy, "nz": nz, "ncell": nxy // cv, "cell_m": v * cv, "voxel_m": v, "cell_voxels": cv}


def n_features(config: dict) -> int:
    return {"full": 6, "xyz": 3}[config.get("features", "full")]


def masked_count(n_cells: int, ratio: float) -> int:
    """``round(ratio × n_cells)`` with halves rounded up (not banker's rounding)."""
    return int(np.floor(ratio * n_cells + 0.5))


def _in_box(d: np.ndarray, half: float) -> np.ndarray:
    """``(|d| < half).all(1)`` for (n, 2) ``d``, without the slow two-column reduction."""
    return (np.abs(d[:, 0]) < half) & (np.abs(d[:, 1]) < half)


def _crop_centre(xyz: np.ndarray, half: float, rng, train: bool, min_points: int) -> np.ndarray:
    x0, y0, x1, y1 = K.xy_bounds(xyz)
    lo, hi = np.array([x0, y0], np.float64), np.array([x1, y1], np.float64)
    c_lo, c_hi = lo + half, hi - half
    c_lo, c_hi = np.minimum(c_lo, (lo + hi) / 2), np.maximum(c_hi, (lo + hi) / 2)  # tile narrower than crop
    c = rng.uniform(c_lo, c_hi) if train else (c_lo + c_hi) / 2
    if K.count_in_box(xyz, c[0], c[1], half) < min_points:  # empty corner: centre on a point instead
        p = np.asarray(xyz[rng.integers(len(xyz)), :2] if train else np.median(np.asarray(xyz[:, :2], np.float64), 0),
                       np.float64)
        c = np.clip(p, c_lo, c_hi)
    return c


def _exact_f64(a: np.ndarray) -> np.ndarray:
    """``a`` as float64, left as it is when it is an integer array of ≤ 32 bits: every use below
    (division by a float, percentiles) gives the same float64 results on those as on the copy."""
    return a if a.dtype.kind in "ui" and a.dtype.itemsize <= 4 else np.asarray(a, np.float64)


def _sample_arrays(sample: dict, convert: bool = True) -> tuple[np.ndarray, ...]:
    where = sample.get("__url__") or sample.get("__key__")
    xyz = sample.get("xyz.npy")
    if xyz is None or np.ndim(xyz) != 2 or np.shape(xyz)[1] != 3:
        raise InputError(where, f"ALS sample {sample.get('__key__')!r} needs xyz.npy of shape (N, 3)")
    # float32 coordinates stay float32 for the compiled crop (every value is widened exactly to float64)
    xyz = np.ascontiguousarray(xyz) if not convert and np.asarray(xyz).dtype in (np.float32, np.float64) \
        else np.asarray(xyz, np.float64)
    n = len(xyz)
    out = [xyz]
    for name in ("intensity.npy", "return_number.npy", "number_of_returns.npy"):
        a = sample.get(name)
        if a is not None and len(a) != n:
            raise InputError(where, f"{name} has {len(a)} values for {n} points")
        out.append(None if a is None else np.asarray(a, np.float64) if convert else np.asarray(a))
    return tuple(out)


def crop_points(xyz: np.ndarray, rng: np.random.Generator, config: dict, train: bool):
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
    xyz = np.ascontiguousarray(xyz) if xyz.dtype in (np.float32, np.float64) else np.asarray(xyz, np.float64)
    c = _crop_centre(xyz, half, rng, train, int(config.get("min_points", 16)))
    s = 1.0
    if train and config.get("augment", False):
        s = rng.uniform(*config["scale_range"])
        th = np.deg2rad(rng.uniform(-config["rotation_deg"], config["rotation_deg"]))
        flip = np.where(rng.random(2) < 0.5, -1.0, 1.0)
        # offsets from the centre, flipped, of the points in a square covering the rotated, scaled crop
        pre, d = K.box_select(xyz, c[0], c[1], 1.5 * half, flip[0], flip[1])
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        d = (d @ rot.T) * s  # numpy's product (BLAS, fused multiply-adds): the same bits as before
    else:
        pre, d = K.box_select(xyz, c[0], c[1], half, 1.0, 1.0)
    keep, loc, z = K.crop_finish(xyz, pre, d, half, crop - 1e-6)
    if not len(keep):
        return keep, np.zeros((0, 2)), np.zeros(0)
    lo, hi = percentiles(z, [config["z_low_percentile"], config["z_high_percentile"]])
    return keep, loc, K.heights(z, float(lo), float(hi), float(s), zr - 1e-6)


def voxelise(loc: np.ndarray, zrel: np.ndarray, g: dict):
    """Voxel of every point: ``(ix (n, 2), iz (n,), ukey, vinv, vcount, order, starts, vox)``.

    ``ukey`` the sorted voxel keys ``(iz · nxy + iy) · nxy + ix``, ``vinv`` each point's voxel,
    ``vcount`` points per voxel, ``order`` the points sorted by voxel and ``starts`` where each
    voxel's run begins in it (what ``np.unique`` computes); ``vox`` the voxels' ``(z, y, x)``.
    """
    return K.voxelise(np.ascontiguousarray(loc, np.float64), np.ascontiguousarray(zrel, np.float64),
                      float(g["voxel_m"]), int(g["nxy"]), int(g["nz"]))


def voxel_features(loc, zrel, ix, iz, vinv, vcount, inten, rnum, nret, config: dict) -> np.ndarray:
    """Per-voxel input features (mean over the voxel's points), see the module docstring; one
    compiled pass (:func:`.bev_kernels.voxel_means`)."""
    crop, zr, v = float(config["crop_m"]), float(config["z_range_m"]), float(config["voxel_m"])
    nv = len(vcount)
    if not nv:
        return np.zeros((0, n_features(config)), np.float32)
    none = np.zeros(0)
    ref = max(percentiles(inten, [99])[0], 1.0) if inten is not None else 1.0
    has_ret = rnum is not None and nret is not None
    arr = (lambda a: none if a is None else np.ascontiguousarray(_exact_f64(a)))  # noqa: E731
    return K.voxel_means(loc, zrel, ix, iz, vinv, vcount, config.get("features", "full") == "xyz", crop, zr, v,
                         arr(inten), ref, inten is not None, arr(rnum if has_ret else None),
                         arr(nret if has_ret else None), has_ret)


def cell_targets(loc, zrel, vinv, vcell, m_cells, rng: np.random.Generator, config: dict):
    """Up to ``max_target_points`` points of every masked cell, drawn with ``rng``: ``(M, T, 3)``, lengths.

    A target point is ``((x - cx) / cell, (y - cy) / cell, z / z_range)`` (BEV-MAE); padding is zero.
    ``m_cells`` sorted; ``vinv`` each point's voxel, ``vcell`` each voxel's cell.  One sort of the
    masked cells' points (numpy), the rest compiled passes (:mod:`.bev_kernels`).
    """
    g = grid_geometry(config)
    T, ncell, cm, zr = int(config["max_target_points"]), g["ncell"], g["cell_m"], float(config["z_range_m"])
    slot_of = np.full(ncell * ncell, -1, np.int64)
    slot_of[m_cells] = np.arange(len(m_cells))
    pidx, ps = K.masked_points(vinv, slot_of[vcell])
    # by cell, random within a cell (slot + a uniform in [0, 1) sorts as the pair (slot, uniform))
    o = np.argsort(ps + rng.random(len(pidx)))
    return K.fill_targets(loc, zrel, pidx, ps, o, m_cells, T, ncell, float(cm), zr)


def prepare_sample(sample: dict, rng: np.random.Generator, config: dict, train: bool = True,
                   cell_masked=None) -> dict:
    """One ALS sample → voxels, mask and targets (numpy), a function of ``(sample, rng, config, train)``.

    No per-point or per-cell Python: compiled passes (:mod:`.bev_kernels`), a counting sort of
    the points by voxel, table look-ups for cells, one numpy sort for the random target order.
    ``cell_masked=False`` returns the unmasked view (for :func:`batch_cell_masks` then
    :func:`finish_sample`)."""
    g = grid_geometry(config)
    xyz, inten, rnum, nret = _sample_arrays(sample, convert=False)
    if not train:
        rng = np.random.default_rng(zlib.crc32(str(sample.get("__key__", "")).encode()))
    # independent streams: the view does not depend on the mask ratio, nor the mask on the targets
    r_view, r_mask, r_tgt = (np.random.default_rng(int(sd)) for sd in rng.integers(0, 2 ** 63 - 1, size=3))
    keep, loc, zrel = crop_points(xyz, r_view, config, train)

    # voxels: unique (z, y, x) cells of the points
    ix, iz, ukey, vinv, vcount, order, starts, vox = voxelise(loc, zrel, g)
    feats = voxel_features(loc, zrel, ix, iz, vinv, vcount, *(None if a is None else _exact_f64(a[keep])
                                                             for a in (inten, rnum, nret)), config)
    # BEV cells occupied by the sample
    vcell, cells, vcell_inv = K.voxel_cells(vox, g["cell_voxels"], g["ncell"])
    view = {"loc": loc, "zrel": zrel, "vox": vox, "feats": feats, "vcell": vcell, "cells": cells,
            "vcell_inv": vcell_inv, "vinv": vinv, "vcount": vcount, "keep": keep, "r_mask": r_mask, "r_tgt": r_tgt}
    if cell_masked is False:  # the batch draws the mask (mask_scope: batch)
        return view
    if cell_masked is None:  # mask exactly round(ratio × occupied) cells of this sample
        cell_masked = np.zeros(len(cells), bool)
        cell_masked[r_mask.permutation(len(cells))[:masked_count(len(cells), float(config["mask_ratio"]))]] = True
    return finish_sample(view, cell_masked, config, train)


def finish_sample(view: dict, cell_masked: np.ndarray, config: dict, train: bool = True) -> dict:
    """The masked view of :func:`prepare_sample`: voxel mask, targets of the masked cells."""
    g = grid_geometry(config)
    cv, ncell = g["cell_voxels"], g["ncell"]
    vox, feats, cells, vcell_inv, vcount = (view[k] for k in ("vox", "feats", "cells", "vcell_inv", "vcount"))
    r_tgt = view["r_tgt"]
    vmasked = cell_masked[vcell_inv]

    # targets: points (Chamfer) and density = Σ_voxels min(count, cap) / cell_voxels² (BEV-MAE)
    m_cells = cells[cell_masked]
    tgt, tlen = cell_targets(view["loc"], view["zrel"], view["vinv"], view["vcell"], m_cells, r_tgt, config)
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


def warm_up(config: dict) -> None:
    """Load the compiled kernels (:mod:`.bev_kernels`, cached on disk) in this process: loader
    workers forked afterwards inherit them instead of spending ~1 s each loading them at every
    epoch start.  Runs :func:`prepare_sample` on a small synthetic tile with the usual dtypes
    (float32 coordinates, uint16 intensity, uint8 returns), training and evaluation views."""
    rng = np.random.default_rng(0)
    c = float(config["crop_m"])
    xyz = np.column_stack([rng.uniform(0, 1.2 * c, (400, 2)), rng.uniform(0, 30, 400)]).astype(np.float32)
    sample = {"__key__": "warm-up", "xyz.npy": xyz, "intensity.npy": rng.integers(0, 4000, 400).astype(np.uint16),
              "return_number.npy": np.ones(400, np.uint8), "number_of_returns.npy": np.ones(400, np.uint8)}
    for train in (True, False):
        prepare_sample(sample, rng, config, train)


def batch_cell_masks(views: list[dict], rng: np.random.Generator, ratio: float) -> list[np.ndarray]:
    """BEV-MAE's masking: ``int((1 - ratio) × n)`` of the batch's ``n`` occupied cells stay visible,
    drawn over the whole batch (samples get more or fewer masked cells than the ratio)."""
    sizes = [len(v["cells"]) for v in views]
    n = sum(sizes)
    masked = np.ones(n, bool)
    masked[rng.permutation(n)[:int(n * (1.0 - ratio))]] = False
    return np.split(masked, np.cumsum(sizes)[:-1]) if views else []


def collate(samples: list[dict], rng: np.random.Generator, config: dict, info=None, train: bool = True) -> dict:
    """Batch of ALS samples for :class:`BEVMAE` (all randomness from ``rng``).

    Keys: ``coords`` (V, 4) int64 ``(b, z, y, x)``, ``features`` (V, F) float32 (real features, also
    for masked voxels: the model swaps in the mask token), ``masked`` (V,) bool, ``cell_index``
    (M, 3) ``(b, cy, cx)`` of masked cells, ``target_points`` (M, T, 3), ``target_len`` (M,),
    ``target_density`` (M,), per sample ``num_cells`` / ``num_masked`` / ``num_points`` (B,),
    and ``batch_size`` (scalar).
    """
    scope = config.get("mask_scope", "sample")
    if scope == "sample":
        parts = [prepare_sample(s, rng, config, train) for s in samples]
    elif scope == "batch":
        views = [prepare_sample(s, rng, config, train, cell_masked=False) for s in samples]
        r_batch = np.random.default_rng(int(rng.integers(0, 2 ** 63 - 1))) if train else np.random.default_rng(0)
        masks = batch_cell_masks(views, r_batch, float(config["mask_ratio"]))
        parts = [finish_sample(v, m, config, train) for v, m in zip(views, masks)]
    else:
        raise ValueError(f"bev-mae mask_scope must be 'sample' or 'batch', not {scope!r}")
    return batch_parts(parts, config)


def batch_parts(parts: list[dict], config: dict) -> dict:
    """The batch of :func:`collate` from the samples' :func:`finish_sample` dicts.

    Each array is allocated once at its final size and filled in place; in a DataLoader worker
    it is allocated in shared memory (:func:`..loader.batch_array`), so sending the batch to the
    training process copies nothing more."""
    from ..loader import batch_array

    T, nf = int(config["max_target_points"]), n_features(config)
    nv, nm = sum(len(p["coords"]) for p in parts), sum(len(p["cells"]) for p in parts)
    spec = {"coords": ((nv, 4), np.int64), "features": ((nv, nf), np.float32), "masked": ((nv,), np.bool_),
            "cell_index": ((nm, 3), np.int64), "target_points": ((nm, T, 3), np.float32),
            "target_len": ((nm,), np.int64), "target_density": ((nm,), np.float32)}
    out, view = {}, {}
    for k, (shape, dtype) in spec.items():
        out[k], view[k] = batch_array(shape, dtype)
    v0 = m0 = 0
    for b, p in enumerate(parts):
        v1, m1 = v0 + len(p["coords"]), m0 + len(p["cells"])
        view["coords"][v0:v1, 0] = b
        view["coords"][v0:v1, 1:] = p["coords"]
        view["features"][v0:v1] = p["features"]
        view["masked"][v0:v1] = p["masked"]
        view["cell_index"][m0:m1, 0] = b
        view["cell_index"][m0:m1, 1:] = p["cells"]
        for k in ("target_points", "target_len", "target_density"):
            view[k][m0:m1] = p[k]
        v0, m0 = v1, m1
    return {
        **out,
        "num_cells": torch.tensor([p["num_cells"] for p in parts], dtype=torch.long),
        "num_masked": torch.tensor([len(p["cells"]) for p in parts], dtype=torch.long),
        "num_points": torch.tensor([p["num_points"] for p in parts], dtype=torch.long),
        "batch_size": torch.tensor(len(parts), dtype=torch.long),
    }


# --------------------------------------------------------------------------------------------
# Losses (pure torch)
# --------------------------------------------------------------------------------------------
def masked_chamfer(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """BEV-MAE's masked Chamfer distance (squared L2) between ``pred (M, P, 3)`` and ``target (M, T, 3)``.

    Only the first ``lengths[m]`` target points of cell ``m`` are real.  Returns
    ``mean_{m,p} min_t d + Σ_{m,t real} min_p d / #real`` (0 when ``M == 0``).
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    d = ((pred[:, :, None, :] - target[:, None, :, :]) ** 2).sum(-1)  # (M, P, T)
    valid = torch.arange(target.shape[1], device=target.device)[None, :] < lengths[:, None]  # (M, T)
    src = d.masked_fill(~valid[:, None, :], float("inf")).min(2).values  # cells have ≥ 1 real point
    dst = d.min(1).values
    return src.mean() + (dst * valid).sum() / valid.sum().clamp(min=1)


def density_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (β = 1) averaged over masked cells (BEV-MAE ``get_num_loss``)."""
    if pred.numel() == 0:
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred, target, beta=1.0)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class SparseBasicBlock(nn.Module):
    """Residual block: subm3 → BN → ReLU → subm3 → BN, + identity, ReLU (BEV-MAE ``SparseBasicBlock``)."""

    def __init__(self, c: int, backend=None):
        super().__init__()
        self.conv1, self.bn1 = SubMConv3d(c, c, 3, backend=backend), SparseBatchNorm(c)
        self.conv2, self.bn2 = SubMConv3d(c, c, 3, backend=backend), SparseBatchNorm(c)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out.replace(torch.relu(out.features))))
        return out.replace(torch.relu(out.features + x.features))


class SparseResNetEncoder(nn.Module):
    """BEV-MAE's sparse 3D ResNet: stem, stages (stride-2 down + residual blocks), a z-only down conv."""

    def __init__(self, in_channels: int, widths, blocks, backend=None):
        super().__init__()
        w0 = widths[0]
        self.stem = SparseSequential(SubMConv3d(in_channels, w0, 3, backend=backend), SparseBatchNorm(w0),
                                     SparseReLU())
        self.stages = nn.ModuleList()
        self.downs = []  # (kernel, stride, padding) of every strided conv, for the output-shape arithmetic
        for i, (w, nb) in enumerate(zip(widths, blocks)):
            layers = []
            if i:
                pad = (0, 1, 1) if i == len(widths) - 1 else 1
                layers += [SparseConv3d(widths[i - 1], w, 3, 2, pad, backend=backend), SparseBatchNorm(w),
                           SparseReLU()]
                self.downs.append((3, 2, pad))
            layers += [SparseBasicBlock(w, backend) for _ in range(nb)]
            self.stages.append(SparseSequential(*layers))
        c = widths[-1]
        self.out = SparseSequential(SparseConv3d(c, c, (3, 1, 1), (2, 1, 1), 0, backend=backend),
                                    SparseBatchNorm(c), SparseReLU())
        self.downs.append(((3, 1, 1), (2, 1, 1), 0))
        self.out_channels = c

    def output_shape(self, shape) -> tuple[int, int, int]:
        for k, s, p in self.downs:
            shape = conv_output_shape(shape, k, s, p)
        return shape

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.out(x)


class BEVMAE(nn.Module):
    """BEV-MAE: ``forward(batch)`` → ``{"loss", "chamfer", "density"}``; ``encode(batch)`` → (B, C)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        g = self.geometry = grid_geometry(config)
        self.grid = (g["nz"], g["nxy"], g["nxy"])
        nf = n_features(config)
        self.mask_token = nn.Parameter(torch.zeros(1, nf))  # BEV-MAE: zeros(1, C_in), learned
        self.encoder = SparseResNetEncoder(nf, tuple(config["widths"]), tuple(config["blocks"]),
                                           config.get("backend"))
        self.bev_shape = self.encoder.output_shape(self.grid)
        if min(self.bev_shape) < 1 or self.bev_shape[1:] != (g["ncell"], g["ncell"]):
            raise ValueError(f"grid {self.grid} gives an encoder output {self.bev_shape}, not {g['ncell']}² BEV "
                             f"cells with ≥ 1 height level: raise z_range_m or crop_m")
        cin, dec, P = self.encoder.out_channels * self.bev_shape[0], int(config["decoder_channels"]), \
            int(config["num_pred_points"])
        self.decoder = nn.Sequential(nn.Conv2d(cin, dec, 3, padding=1), nn.BatchNorm2d(dec), nn.ReLU())
        self.coord_head = nn.Conv2d(dec, 3 * P, 1)
        self.density_head = nn.Conv2d(dec, 1, 1)

    def _encode_sparse(self, batch: dict, masked: bool) -> SparseTensor:
        f = batch["features"]
        if masked:
            m = batch["masked"][:, None]
            f = torch.where(m, self.mask_token.to(f.dtype).expand_as(f), f)
        x = SparseTensor(f, batch["coords"][:, :4], self.grid, int(batch["batch_size"]))
        return self.encoder(x)

    def masked_input(self, batch: dict) -> torch.Tensor:
        """The features the encoder sees: the mask token on masked voxels (exposed for tests)."""
        m = batch["masked"][:, None]
        return torch.where(m, self.mask_token.to(batch["features"].dtype).expand_as(batch["features"]),
                           batch["features"])

    def forward(self, batch: dict) -> dict:
        out = self._encode_sparse(batch, masked=True)
        bev = out.dense()  # (B, C, Dz, H, W)
        b_, c_, d_, h_, w_ = bev.shape
        h = self.decoder(bev.reshape(b_, c_ * d_, h_, w_))
        coords, dens = self.coord_head(h), self.density_head(h)
        b, cy, cx = batch["cell_index"].unbind(1)
        P = int(self.config["num_pred_points"])
        pred_pts = coords[b, :, cy, cx].reshape(-1, P, 3).float()
        pred_den = dens[b, 0, cy, cx].float()
        chamfer = masked_chamfer(pred_pts, batch["target_points"].float(), batch["target_len"])
        density = density_loss(pred_den, batch["target_density"].float())
        loss = chamfer + float(self.config["density_weight"]) * density
        if pred_pts.shape[0] == 0:  # nothing masked: keep every parameter in the graph (DDP)
            loss = loss + 0.0 * (coords.sum() + dens.sum())
        return {"loss": loss, "chamfer": chamfer.detach(), "density": density.detach()}

    def encode(self, batch: dict) -> torch.Tensor:
        """(B, C): encoder features, max over height per BEV cell, mean over occupied cells; no mask."""
        out = self._encode_sparse(batch, masked=False)
        B, (_, H, W) = out.batch_size, out.spatial_shape
        c = out.coords
        col, inv = torch.unique((c[:, 0] * H + c[:, 2]) * W + c[:, 3], return_inverse=True)
        f = out.features.float()
        cell = f.new_zeros((len(col), f.shape[1])).scatter_reduce(
            0, inv[:, None].expand_as(f), f, reduce="amax", include_self=False)
        cb = torch.div(col, H * W, rounding_mode="floor")
        pooled = f.new_zeros((B, f.shape[1])).index_add_(0, cb, cell)
        n = torch.bincount(cb, minlength=B).clamp(min=1).to(f.dtype)
        return pooled / n[:, None]


def build_model(config: dict, info=None) -> BEVMAE:
    """BEV-MAE for an ALS dataset (``info.kind`` must be ``als`` when given)."""
    if info is not None and getattr(info, "kind", "als") != KIND:
        raise InputError(getattr(info, "root", None), f"bev-mae trains on ALS builds, this one is {info.kind!r}")
    return BEVMAE(config)
