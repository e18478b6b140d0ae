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
the centre crop otherwise; then *per-patch normalisation*: subtract the crop's mean elevation and
divide by its standard deviation, floored at ``std_floor_m`` (1 m) so that flat ground is not
blown up into noise; nodata pixels are filled with the mean (0 after normalisation) and left out
of the loss.  Absolute elevation is removed on purpose: the encoder sees relief, not altitude.
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
        "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "epochs": 1, "weight_decay": 0.05,
        "betas": (0.9, 0.95), "schedule": "cosine", "min_lr": 0.0, "clip_grad": 1.0,
    },
    "base": {
        "img_size": None, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16,
        "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16, "mlp_ratio": 4.0,
        "mask_ratio": 0.75, "norm_pix_loss": True, "std_floor_m": 1.0, "hflip": True,
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


def normalise_elevation(z: np.ndarray, valid: np.ndarray, std_floor: float = 1.0) -> np.ndarray:
    """(z − mean) / max(std, floor) over valid pixels; invalid pixels → 0 (the mean).  float32 out."""
    n = int(valid.sum())
    if n == 0:
        return np.zeros(z.shape, np.float32)
    vals = z[valid]
    mean = vals.mean()
    std = max(float(vals.std()), float(std_floor))
    return np.where(valid, (np.where(valid, z, mean) - mean) / std, 0.0).astype(np.float32)


def collate(samples, rng: np.random.Generator, config: dict, info, train: bool = True) -> dict:
    """Decoded samples → ``pixels`` (B, 1, S, S) float32, ``valid`` (B, 1, S, S) bool, ``noise`` (B, L).

    All randomness (crop, flip, mask noise) comes from ``rng``; ``train=False``: centre crop, no
    flip, noise from a fixed seed (reproducible validation loss; ``encode`` ignores it).
    """
    size = resolve_img_size(config, info, DEFAULT_IMG_SIZE)
    floor = float(config.get("std_floor_m", 1.0))
    b = len(samples)
    pix = np.zeros((b, 1, size, size), np.float32)
    val = np.zeros((b, 1, size, size), bool)
    for j, s in enumerate(samples):
        z, v = elevation(s)
        z, v = crop_or_pad(np.where(v, z, 0.0), v, size, rng if train else None)
        if train and config.get("hflip", True) and rng.random() < 0.5:
            z, v = z[..., ::-1], v[..., ::-1]
        pix[j], val[j] = normalise_elevation(z, v, floor), v
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
