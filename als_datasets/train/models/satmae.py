"""SatMAE group-channel MAE for multispectral patches (Cong et al., NeurIPS 2022, arXiv 2207.08051).

The bands of a sample are split into *groups*; each group has its own patch embedding and its
own prediction head, and its tokens carry a fixed group ("spectral") code next to the 2D
position code (SatMAE concatenates the two: position in the first ``embed_dim -
channel_embed_dim`` features, group in the last ``channel_embed_dim``; the sum is added to
the tokens).  Tokens are groups × patches; 75 % of them are masked, independently across groups
(SatMAE's default) or at the same locations in every group (``mask_mode="consistent"``,
SatMAE's ``--spatial_mask``).  The decoder reconstructs every group's masked patches.  As in
SatMAE's code both codes are fixed sin-cos (not learned); unlike it, the cls token gets no code
in the decoder (SatMAE gives it an extra group code) — it is not used by ``encode``.

**Band groups** (:func:`band_groups`), from the dataset's band list (``_info.json`` ``bands``,
STAC common names):

1. SatMAE's Sentinel-2 groups, by common name: (blue, green, red, nir) = (B2, B3, B4, B8),
   (rededge1, rededge2, rededge3, nir08) = (B5, B6, B7, B8A), (swir16, swir22) = (B11, B12);
2. bands in ``config["drop_bands"]`` are removed first (``base`` drops coastal, nir09 and
   cirrus = B1, B9, B10, as SatMAE's ``--dropped_bands 0 9 10``);
3. each group keeps the dataset's bands it names, in the group's order; empty groups are dropped;
4. the remaining bands (in no group, not dropped) form one extra group, in dataset order.

So Sentinel-2 gives SatMAE's three groups; Landsat-8 (blue, green, red, nir08, swir16, swir22)
gives (blue, green, red), (nir08), (swir16, swir22); RGB one group; ``["elevation"]`` one group.
``config["band_groups"]`` (lists of common names) replaces rule 1.

**Input** (:func:`collate`, numpy, in the loader worker): each sample's bands are placed into
the dataset's band order by ``json["common_bands"]``; bands the sample lacks stay zero and
invalid.  A pixel of a band is *nodata* when it is not finite, or — when ``json`` reports
``nodata_fraction > 0`` or declares ``nodata`` — when it equals the declared ``nodata`` value
(0 by default).  Invalid elements are zero in the input and never count in the loss.
**Normalisation** as SatMAE's ``SentinelNormalize`` (clip to mean ± 2σ, scale to [0, 1]) with
the dataset's statistics: a satellite build records, per sensor and band, the pooled mean and
std of its train split's valid pixels (``_info.json`` ``band_stats``), so sensors with
different units (reflectance × 10000, DN) are each normalised by their own table.  Where a
dataset has no table (older builds, synthetic folders) or ``config["normalise"] == "sample"``,
the sample's own statistics are used (per band, over its valid pixels, population σ, on the
whole patch before cropping).  A constant band maps to 0.  Training views (``augment``):
``"rrc"`` (``base``: SatMAE's ``RandomResizedCrop(input_size, scale=(0.2, 1.0),
interpolation=BICUBIC)``, :func:`random_resized_crop`: a box of 20-100 % of the patch's area and
aspect 3/4-4/3, resized bicubically to ``img_size``; the validity mask by nearest neighbour) or
``"crop"`` (``tiny``, and the previous default: an ``img_size`` crop at native ground resolution,
which does nothing when the patch is ``img_size`` wide), each followed by a horizontal flip
(``hflip``); ``train=False`` takes the centre crop.
"""

from __future__ import annotations

from pathlib import Path

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

KIND = "satellite"

#: SatMAE's Sentinel-2 band groups by STAC common name (SatMAE: bands (0,1,2,6), (3,4,5,7), (8,9)
#: of B2..B12 without B1, B9, B10).
SATMAE_GROUPS = (("blue", "green", "red", "nir"), ("rededge1", "rededge2", "rededge3", "nir08"),
                 ("swir16", "swir22"))
#: Bands SatMAE drops (``--dropped_bands 0 9 10`` of the 13 Sentinel-2 bands: B1, B9, B10).
SATMAE_DROPPED = ("coastal", "nir09", "cirrus")

_OPTIM_PAPER = {"weight_decay": 0.05, "betas": (0.9, 0.95), "schedule": "cosine", "min_lr": 0.0,
                "clip_grad": None}

#: ``base``: SatMAE's multispectral pre-training (fMoW-Sentinel).  Sources —
#: model ``mae_vit_large_patch16`` of ``models_mae_group_channels.py`` (default ``--model`` of
#: SatMAE's ``main_pretrain.py``): embed 1024, depth 24, heads 16, channel code 256, decoder
#: 512 / 8 blocks / 16 heads, decoder channel code 128, MLP ratio 4; README's multispectral
#: command: ``--input_size 96 --patch_size 8 --model_type group_c --dropped_bands 0 9 10
#: --blr 0.0001 --batch_size 16 --accum_iter 32`` on 8 GPUs = effective batch 4096 (lr = blr ×
#: 4096 / 256 = 1.6e-3); ``main_pretrain.py`` defaults: mask ratio 0.75, independent masking,
#: pixel targets (``norm_pix_loss`` off), weight decay 0.05, AdamW betas (0.9, 0.95), min lr 0,
#: half-cycle cosine after a linear warm-up, no gradient clipping; epochs 50 (the paper; the README
#: notes its released checkpoints ran 200 with 20 warm-up epochs); warm-up 5 epochs (the setup of
#: "Pretrain Where?", arXiv 2604.21104, which re-ran SatMAE for 50 epochs).
#: ``batch_size`` is *per process*: 256 per GPU as "Pretrain Where?"; ``effective_batch`` 4096
#: is the paper's, reached by gradient accumulation (``accum_steps`` = 4096 / (256 × ranks): 16
#: on one GPU, 1 on 16) and lr = blr × 4096 / 256 = 1.6e-3 whatever the number of GPUs
#: (``--accum-steps`` / ``--effective-batch`` override it).
#: ``vit-base``: the same with ViT-Base (768 / 12 / 12), as "Pretrain Where?" used.
#: ``tiny``: seconds on a CPU, same code path.
CONFIGS = {
    "tiny": {
        "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "channel_embed_dim": 16,
        "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 4, "decoder_channel_embed_dim": 8,
        "mlp_ratio": 4.0, "mask_ratio": 0.75, "mask_mode": "independent", "norm_pix_loss": False,
        "drop_bands": (), "band_groups": None, "hflip": True, "augment": "crop", "rrc_scale": (0.2, 1.0),
        "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "epochs": 1,
        **_OPTIM_PAPER, "clip_grad": 1.0,
    },
    "base": {
        "img_size": None, "patch_size": 8, "embed_dim": 1024, "depth": 24, "num_heads": 16,
        "channel_embed_dim": 256, "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16,
        "decoder_channel_embed_dim": 128, "mlp_ratio": 4.0, "mask_ratio": 0.75, "mask_mode": "independent",
        "norm_pix_loss": False, "drop_bands": SATMAE_DROPPED, "band_groups": None, "hflip": True,
        "augment": "rrc", "rrc_scale": (0.2, 1.0),
        "batch_size": 256, "effective_batch": 4096, "blr": 1e-4, "warmup_epochs": 5, "epochs": 50, **_OPTIM_PAPER,
    },
}
CONFIGS["vit-base"] = {**CONFIGS["base"], "embed_dim": 768, "depth": 12, "num_heads": 12}

DEFAULT_IMG_SIZE = 96


# ---------------------------------------------------------------------------------------------
# Band groups
# ---------------------------------------------------------------------------------------------
def band_group_names(bands, groups=None, drop=()) -> list[tuple[str, ...]]:
    """The groups (common names) for a dataset's ``bands``; the rule is in the module docstring."""
    groups = SATMAE_GROUPS if groups is None else groups
    drop = set(drop or ())
    kept = [b for b in dict.fromkeys(bands) if b not in drop]
    out, used = [], set()
    for group in groups:
        members = tuple(b for b in group if b in kept and b not in used)
        used.update(members)
        if members:
            out.append(members)
    rest = tuple(b for b in kept if b not in used)
    if rest:
        out.append(rest)
    return out


def band_groups(bands, groups=None, drop=()) -> list[tuple[int, ...]]:
    """As :func:`band_group_names`, as indices into ``bands``."""
    pos = {}
    for i, b in enumerate(bands):
        pos.setdefault(b, i)
    return [tuple(pos[b] for b in g) for g in band_group_names(bands, groups, drop)]


def dataset_bands(info) -> tuple[str, ...]:
    """The dataset's band list, or an :class:`InputError` naming ``_info.json`` if it has none."""
    bands = tuple(getattr(info, "bands", ()) or ())
    if not bands:
        raise InputError(Path(getattr(info, "root", ".")) / "_info.json",
                         "no 'bands' list: SatMAE needs the dataset's band names")
    return bands


def _groups_for(config: dict, info) -> tuple[tuple[str, ...], list[tuple[int, ...]]]:
    bands = dataset_bands(info)
    groups = band_groups(bands, config.get("band_groups"), config.get("drop_bands", ()))
    if not groups:
        raise InputError(Path(getattr(info, "root", ".")) / "_info.json",
                         f"no band left for SatMAE after dropping {list(config.get('drop_bands', ()))}")
    return bands, groups


# ---------------------------------------------------------------------------------------------
# Per-sample preparation (numpy)
# ---------------------------------------------------------------------------------------------
def nodata_mask(pixels: np.ndarray, meta: dict) -> np.ndarray:
    """True where a band's pixel is nodata: not finite, or equal to the declared nodata value when
    ``nodata_fraction > 0`` or ``nodata`` is declared (default value 0)."""
    bad = ~np.isfinite(pixels) if np.issubdtype(pixels.dtype, np.floating) else np.zeros(pixels.shape, bool)
    declared = meta.get("nodata")
    if declared is not None or float(meta.get("nodata_fraction") or 0.0) > 0:
        bad |= pixels == (0 if declared is None else declared)
    return bad


def satmae_normalise(pixels: np.ndarray, valid: np.ndarray, dataset_mean=None, dataset_std=None) -> np.ndarray:
    """Per band: clip to mean ± 2σ and scale to [0, 1]; invalid pixels → 0.

    (C, H, W) in, float32 (C, H, W) out.  ``dataset_mean`` / ``dataset_std`` (C,): the dataset's
    statistics, as SatMAE's ``SentinelNormalize``; bands where they are NaN (or not given) use the
    band's own valid-pixel statistics.  A band with no valid pixel or σ = 0 maps to 0.
    """
    x = pixels.astype(np.float64)
    w = valid.astype(np.float64)
    n = w.sum(axis=(1, 2))
    xz = np.where(valid, x, 0.0)
    mean = xz.sum(axis=(1, 2)) / np.maximum(n, 1)
    var = (np.where(valid, x - mean[:, None, None], 0.0) ** 2).sum(axis=(1, 2)) / np.maximum(n, 1)
    std = np.sqrt(var)
    if dataset_mean is not None and dataset_std is not None:
        dm, ds = np.asarray(dataset_mean, np.float64), np.asarray(dataset_std, np.float64)
        use = np.isfinite(dm) & np.isfinite(ds)
        mean, std = np.where(use, dm, mean), np.where(use, ds, std)
    lo, span = (mean - 2 * std)[:, None, None], (4 * std)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, np.clip((xz - lo) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
    return np.where(valid, out, 0.0).astype(np.float32)


def sample_bands(sample: dict, bands, band_stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A decoded sample → (normalised pixels (C, H, W) float32 in dataset band order, valid (C, H, W)).

    Bands are matched by ``json["common_bands"]`` (else ``json["bands"]``, else — same count —
    the dataset order); bands the sample lacks are zero and invalid, bands the dataset does not
    list are ignored.  ``band_stats`` (``DatasetInfo.band_stats``: sensor → band → mean/std) gives
    the dataset statistics for the sample's sensor; bands without them use the sample's own.
    """
    src = sample_source(sample)
    px = sample.get("pixels.npy")
    if px is None:
        raise InputError(src, "sample has no pixels.npy member")
    px = np.asarray(px)
    if px.ndim != 3:
        raise InputError(src, f"pixels.npy must be (C, H, W), got shape {px.shape}")
    meta = sample.get("json") or {}
    names = meta.get("common_bands") or meta.get("bands")
    if names is None and px.shape[0] == len(bands):
        names = list(bands)
    if names is None or len(names) != px.shape[0]:
        raise InputError(src, f"pixels.npy has {px.shape[0]} bands but json names "
                              f"{'none' if names is None else len(names)} (common_bands)")
    pos = {b: i for i, b in enumerate(bands)}
    take = [i for i, b in enumerate(names) if b in pos]
    c, (h, w) = len(bands), px.shape[1:]
    out = np.zeros((c, h, w), np.float32)
    ok = np.zeros((c, h, w), bool)
    if take:
        sub = px[take]
        valid = ~nodata_mask(sub, meta)
        dst = [pos[names[i]] for i in take]
        table = (band_stats or {}).get(meta.get("sensor") or "unknown") or {}
        dm = [table.get(names[i], {}).get("mean", np.nan) for i in take]
        ds = [table.get(names[i], {}).get("std", np.nan) for i in take]
        out[dst] = satmae_normalise(sub, valid, dm, ds) if table else satmae_normalise(sub, valid)
        ok[dst] = valid
    return out, ok


def info_band_stats(info, config: dict) -> dict | None:
    """The dataset statistics to normalise with (``config["normalise"]``: ``dataset`` — the
    default, falling back per band to the sample's own — or ``sample``)."""
    if config.get("normalise", "dataset") != "dataset":
        return None
    return getattr(info, "band_stats", None) or None


def random_resized_crop(x: np.ndarray, valid: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ``RandomResizedCrop`` box (10 tries of area × aspect, else the centred largest
    box of an allowed aspect) on (C, H, W) ``x``, resized bicubically to (C, size, size); ``valid``
    by nearest neighbour.  All randomness from ``rng``."""
    import torch.nn.functional as F

    _, h, w = x.shape
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            break
    if box is None:  # torchvision's fallback: centre crop, aspect clamped into ``ratio``
        r = w / h
        cw, ch = (w, int(round(w / ratio[0]))) if r < ratio[0] else \
            ((int(round(h * ratio[1])), h) if r > ratio[1] else (w, h))
        ch, cw = min(ch, h), min(cw, w)
        box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    i, j, ch, cw = box
    xs = torch.from_numpy(np.ascontiguousarray(x[None, :, i:i + ch, j:j + cw], np.float32))
    vs = torch.from_numpy(np.ascontiguousarray(valid[None, :, i:i + ch, j:j + cw], np.float32))
    out = F.interpolate(xs, size=(size, size), mode="bicubic", align_corners=False)[0]
    ok = F.interpolate(vs, size=(size, size), mode="nearest")[0] > 0.5
    return (out * ok).numpy(), ok.numpy()


def collate(samples, rng: np.random.Generator, config: dict, info, train: bool = True) -> dict:
    """Decoded samples → ``pixels`` (B, C, S, S) float32, ``valid`` (B, C, S, S) bool, ``noise``.

    C = the dataset's bands, S = the model's image size.  ``noise`` (B, G·L), or (B, L) for
    consistent masking, drives the mask.  All randomness (crop, flip, noise) comes from ``rng``;
    ``train=False`` centres the crop, does not flip and takes the noise from a fixed seed (so a
    validation loss is reproducible; ``encode`` ignores the noise).
    """
    bands, groups = _groups_for(config, info)
    size = resolve_img_size(config, info, DEFAULT_IMG_SIZE)
    augment = config.get("augment", "crop")
    if augment not in ("crop", "rrc"):
        raise ValueError(f"satmae augment must be 'crop' or 'rrc', not {augment!r}")
    b = len(samples)
    pix = np.zeros((b, len(bands), size, size), np.float32)
    val = np.zeros((b, len(bands), size, size), bool)
    for j, s in enumerate(samples):
        x, v = sample_bands(s, bands, info_band_stats(info, config))
        if train and augment == "rrc":
            x, v = random_resized_crop(x, v, size, rng, tuple(config.get("rrc_scale", (0.2, 1.0))))
        else:
            x, v = crop_or_pad(x, v, size, rng if train else None)
        if train and config.get("hflip", True) and rng.random() < 0.5:
            x, v = x[..., ::-1], v[..., ::-1]
        pix[j], val[j] = x, v
    n = (size // int(config["patch_size"])) ** 2
    n_noise = len(groups) * n if config.get("mask_mode", "independent") == "independent" else n
    noise = draw_noise(rng if train else np.random.default_rng(0), b, n_noise)
    return {"pixels": torch.from_numpy(pix), "valid": torch.from_numpy(val), "noise": noise}


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def build_model(config: dict, info):
    """The group-channel MAE for ``info``'s bands; ``model.band_groups`` names its groups."""
    bands, groups = _groups_for(config, info)
    model = build_mae(config, groups, resolve_img_size(config, info, DEFAULT_IMG_SIZE))
    model.band_names = bands
    model.band_groups = [tuple(bands[i] for i in g) for g in groups]
    return model


def flops_per_sample(config: dict, info) -> int:
    """Analytic training FLOPs (forward + backward) of one sample, matmuls and attention."""
    _, groups = _groups_for(config, info)
    size = resolve_img_size(config, info, DEFAULT_IMG_SIZE)
    return mae_flops_per_sample(config, [len(g) for g in groups], size)
