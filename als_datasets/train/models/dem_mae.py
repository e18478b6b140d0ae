"""DEM MAE: a ViT masked autoencoder on 1-channel elevation patches.

After "Self-Supervised Masked Digital Elevation Models Encoding for Low-Resource Downstream
Tasks" (Mazumdar et al., arXiv 2309.03367): an MAE encoder for DEMs, later fine-tuned with an
UperNet head for building and road segmentation.  The paper's abstract and project page
describe an MAE (ViT encoder / decoder) but this project could not check its pre-training
settings (patch size, mask ratio, ViT size, schedule), so ``base`` uses **MAE's own defaults**
(He et al. 2022, ``facebookresearch/mae`` PRETRAIN.md): ViT-Large/16 encoder (1024 / 24 / 16),
decoder 512 / 8 blocks / 16 heads, mask ratio 0.75, normalised-pixel targets, AdamW betas (0.9,
0.95), weight decay 0.05, blr 1.5e-4 with lr = blr × global batch / 256, effective batch 4096
(MAE: 64 GPUs × 64), 40 warm-up epochs then half-cycle cosine, 800 epochs, no gradient clipping.
``batch_size`` is per process: **256** (MAE's 64 left an H200 idle: 12 % MFU at 64, 39 % at 256,
67 vs 82 ms per step, ``bench/bench_train.py --device cuda``), and ``effective_batch`` 4096 is
reached by gradient accumulation (16 micro-batches on one GPU, 1 on 16), so the learning rate,
from ``blr`` and the effective batch, is the paper's on any number of GPUs; ``--batch-size``
lowers it on a smaller GPU without changing the lr (accumulation makes up the difference).  Image size: the
dataset's ``patch_size_px`` (MAE's 224 when unknown), cut to a multiple of 16.

It is the one-group case of the shared :class:`~.vit.MaskedAutoencoderViT` (no group code).

**Input** (:func:`collate`, numpy): the elevation patch (1, H, W) metres, NaN (and a declared
``json["nodata"]`` value) = nodata; a random ``img_size`` crop and horizontal flip in training,
the centre crop otherwise; then the normalisation (``normalise``):

* ``"dataset"`` (default): subtract the crop's own mean elevation and divide by **one
  dataset-wide scale**, ``relief_scale_m``: the pooled standard deviation of elevation about each
  patch's mean over the valid pixels of the train split's first ``stats_samples`` (256) patches
  in stored order, measured once when training (or a probe) starts
  (:func:`dataset_statistics`) and recorded in the run's ``config.json`` and checkpoint; set
  ``relief_scale_m`` to pin it (``collate`` called directly without it uses the batch's own
  pooled scale).  Flat, sloped and steep patches keep their different relief, which
  is what a DEM encoder must learn; absolute altitude is still removed (the crop's mean).
* ``"sample"``: the previous behaviour, each crop z-scored by its own mean and standard deviation
  (floored at ``std_floor_m``, 1 m): every crop gets unit spread, so relief is normalised away
  (a linear probe of slope class on such inputs scored below a random encoder).

Nodata pixels are filled with the mean (0 after normalisation) and left out of the loss.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from .vit import (
    build_mae,
    crop_or_pad,
    draw_noise,
    mae_flops_per_sample,
    resolve_img_size,
    sample_source,
)

KIND = "dem"
DEFAULT_IMG_SIZE = 224  # MAE's input size, used when the dataset does not declare patch_size_px
GROUPS = [(0,)]

CONFIGS = {
    "tiny": {
        "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "decoder_embed_dim": 32,
        "decoder_depth": 1, "decoder_num_heads": 4, "mlp_ratio": 4.0, "mask_ratio": 0.75,
        "norm_pix_loss": True, "std_floor_m": 1.0, "hflip": True,
        "normalise": "dataset", "relief_scale_m": None, "stats_samples": 256,
        "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "epochs": 1, "weight_decay": 0.05,
        "betas": (0.9, 0.95), "schedule": "cosine", "min_lr": 0.0, "clip_grad": 1.0,
    },
    "base": {
        "img_size": None, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16,
        "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16, "mlp_ratio": 4.0,
        "mask_ratio": 0.75, "norm_pix_loss": True, "std_floor_m": 1.0, "hflip": True,
        "normalise": "dataset", "relief_scale_m": None, "stats_samples": 256,
        "batch_size": 256, "effective_batch": 4096, "blr": 1.5e-4, "warmup_epochs": 40, "epochs": 800, "weight_decay": 0.05,
        "betas": (0.9, 0.95), "schedule": "cosine", "min_lr": 0.0, "clip_grad": None,
    },
}


def elevation(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """A decoded sample → (elevation (1, H, W) float64 metres, valid (1, H, W) bool).

    The band is the one ``json["common_bands"]`` names ``elevation`` (else the first); nodata is
    non-finite or equal to a declared ``json["nodata"]``.
    """
    src = sample_source(sample)
    px = sample.get("pixels.npy")
    if px is None:
        raise InputError(src, "sample has no pixels.npy member")
    px = np.asarray(px)
    if px.ndim == 2:
        px = px[None]
    if px.ndim != 3 or px.shape[0] < 1:
        raise InputError(src, f"pixels.npy must be (1, H, W) elevation, got shape {px.shape}")
    meta = sample.get("json") or {}
    names = list(meta.get("common_bands") or meta.get("bands") or [])
    k = names.index("elevation") if "elevation" in names and len(names) == px.shape[0] else 0
    z = px[k:k + 1].astype(np.float64)
    valid = np.isfinite(z)
    if meta.get("nodata") is not None:
        valid &= z != float(meta["nodata"])
    return z, valid


def normalise_elevation(z: np.ndarray, valid: np.ndarray, std_floor: float = 1.0, scale: float | None = None
                        ) -> np.ndarray:
    """(z − mean) / s over valid pixels, s = ``scale`` (dataset-wide) or, without one, max(std, floor)
    of this patch; invalid pixels → 0 (the mean).  float32 out."""
    n = int(valid.sum())
    if n == 0:
        return np.zeros(z.shape, np.float32)
    vals = z[valid]
    mean = vals.mean()
    std = float(scale) if scale is not None else max(float(vals.std()), float(std_floor))
    return np.where(valid, (np.where(valid, z, mean) - mean) / std, 0.0).astype(np.float32)


def _relief_sums(samples, rng=None) -> dict:
    """Σ (z − patch mean)² and the number of valid pixels of each sample (loader collate)."""
    ss, n = [], []
    for s in samples:
        z, v = elevation(s)
        vals = z[v]
        ss.append(float(((vals - vals.mean()) ** 2).sum()) if len(vals) else 0.0)
        n.append(len(vals))
    return {"ss": torch.tensor(ss, dtype=torch.float64), "n": torch.tensor(n, dtype=torch.float64)}


def dataset_statistics(info, config: dict) -> dict:
    """``{"relief_scale_m": s}`` for ``normalise: dataset`` when the config does not pin it: the pooled
    std of elevation about each patch's mean over the first ``stats_samples`` train patches
    (stored shard order, deterministic; at least 1 m).  ``{}`` otherwise."""
    if config.get("normalise", "sample") != "dataset" or config.get("relief_scale_m") is not None:
        return {}
    from ..loader import make_loader

    want = int(config.get("stats_samples") or 256)
    ss = n = 0.0
    seen = 0
    loader = make_loader(info, "train", 16, _relief_sums, seed=0, train=False, num_workers=0)
    try:
        for batch in loader:
            ss += float(batch["ss"].sum())
            n += float(batch["n"].sum())
            seen += len(batch["n"])
            if seen >= want:
                break
    finally:
        loader.close()
    scale = (ss / n) ** 0.5 if n else 1.0
    return {"relief_scale_m": round(max(scale, float(config.get("std_floor_m", 1.0))), 4)}


def collate(samples, rng: np.random.Generator, config: dict, info, train: bool = True) -> dict:
    """Decoded samples → ``pixels`` (B, 1, S, S) float32, ``valid`` (B, 1, S, S) bool, ``noise`` (B, L).

    All randomness (crop, flip, mask noise) comes from ``rng``; ``train=False``: centre crop, no
    flip, noise from a fixed seed (reproducible validation loss; ``encode`` ignores it).
    """
    size = resolve_img_size(config, info, DEFAULT_IMG_SIZE)
    floor = float(config.get("std_floor_m", 1.0))
    mode = config.get("normalise", "sample")  # configs without the key (older checkpoints): per-patch
    if mode not in ("dataset", "sample"):
        raise ValueError(f"dem-mae normalise must be 'dataset' or 'sample', not {mode!r}")
    scale = None
    if mode == "dataset":
        scale = config.get("relief_scale_m")
        if scale is None:  # collate called without dataset_statistics: the batch's own pooled scale
            sums = _relief_sums(samples)
            n = float(sums["n"].sum())
            scale = max((float(sums["ss"].sum()) / n) ** 0.5 if n else 1.0, floor)
    b = len(samples)
    pix = np.zeros((b, 1, size, size), np.float32)
    val = np.zeros((b, 1, size, size), bool)
    for j, s in enumerate(samples):
        z, v = elevation(s)
        z, v = crop_or_pad(np.where(v, z, 0.0), v, size, rng if train else None)
        if train and config.get("hflip", True) and rng.random() < 0.5:
            z, v = z[..., ::-1], v[..., ::-1]
        pix[j], val[j] = normalise_elevation(z, v, floor, scale), v
    n = (size // int(config["patch_size"])) ** 2
    noise = draw_noise(rng if train else np.random.default_rng(0), b, n)
    return {"pixels": torch.from_numpy(pix), "valid": torch.from_numpy(val), "noise": noise}


def build_model(config: dict, info):
    """A plain (one-group) ViT MAE on elevation."""
    cfg = {**config, "mask_mode": "independent", "channel_embed_dim": 0, "decoder_channel_embed_dim": 0}
    return build_mae(cfg, GROUPS, resolve_img_size(config, info, DEFAULT_IMG_SIZE))


def flops_per_sample(config: dict, info) -> int:
    """Analytic training FLOPs (forward + backward) of one sample, matmuls and attention."""
    cfg = {**config, "mask_mode": "independent"}
    return mae_flops_per_sample(cfg, [1], resolve_img_size(config, info, DEFAULT_IMG_SIZE))
