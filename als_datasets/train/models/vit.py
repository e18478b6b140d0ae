"""Shared ViT / masked-autoencoder building blocks for SatMAE and DEM MAE.

One implementation serves both models: a ViT MAE (He et al., CVPR 2022) whose tokens are laid
out as *groups × patches*.  A plain MAE is the one-group case; SatMAE's group-channel MAE (Cong
et al., NeurIPS 2022) has one group per set of spectral bands, each with its own patch
embedding and prediction head, and a group ("channel") encoding next to the position encoding.

What is here and why:

* :func:`sincos_1d` / :func:`sincos_2d` — fixed sin-cos encodings (MAE: the first half of a 2D
  code encodes the column, the second half the row; tokens in row-major order).
* :class:`Block` — pre-norm transformer block; attention through
  ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU, bf16-safe).
* :func:`mask_from_noise` — MAE's random masking, driven by a ``noise`` tensor that the
  model module's ``collate`` draws from the loader's ``rng``: ``keep = argsort(noise)[:, :K]``
  (stable sort), so a forward pass is a deterministic function of the batch.
* :class:`MaskedAutoencoderViT` — encoder on the visible tokens only, light decoder with a
  learned mask token, loss on masked tokens only, optional per-patch normalised targets
  (``norm_pix_loss``), per-element validity weights (absent bands, nodata pixels never count),
  MAE's weight initialisation.  No Python loop runs over the batch (only over the few groups).
* :func:`mae_flops_per_sample` — analytic training FLOPs of one sample (for MFU).
* numpy helpers for the rasters' ``collate``: :func:`resolve_img_size`, :func:`crop_or_pad`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # MAE's LayerNorm epsilon


# ---------------------------------------------------------------------------------------------
# Fixed encodings and masking (pure functions)
# ---------------------------------------------------------------------------------------------
def sincos_1d(dim: int, positions) -> np.ndarray:
    """(len(positions), dim) sin-cos code of scalar positions (dim even): [sin(p·ω), cos(p·ω)]."""
    if dim % 2:
        raise ValueError(f"sin-cos dimension must be even, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(np.asarray(positions, dtype=np.float64).ravel(), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """(grid_h·grid_w, dim) 2D code, row-major tokens: first half encodes the column, second the row."""
    if dim % 4:
        raise ValueError(f"2D sin-cos dimension must be a multiple of 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def num_keep(n: int, mask_ratio: float) -> int:
    """Tokens an MAE keeps visible out of ``n``: round((1 - ratio)·n), at least 1."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, min(n, int(round((1.0 - mask_ratio) * n))))


def mask_from_noise(noise: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE masking from noise (B, N): ids of the ``n_keep`` kept tokens (B, K) and mask (B, N), 1 = masked.

    The tokens with the smallest noise are kept (stable sort: ties cannot make CPU and GPU differ).
    """
    ids_keep = torch.argsort(noise, dim=1, stable=True)[:, :n_keep]
    mask = torch.ones(noise.shape, dtype=torch.float32, device=noise.device)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep, mask


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, L, C, p·p), patches in row-major order, each channel's pixels contiguous."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c, p * p)


def unpatchify(x: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, L, C, p·p) → (B, C, H, W)."""
    b, _, c, _ = x.shape
    x = x.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block (ViT): x + Attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _group_position_code(dim: int, group_dim: int, n_groups: int, grid: int) -> torch.Tensor:
    """(1, G, L, dim): SatMAE's encoding, [2D position code (dim - group_dim) ‖ 1D group code (group_dim)].

    With ``group_dim == 0`` (plain MAE) the whole width is the 2D position code.
    """
    pos = sincos_2d(dim - group_dim, grid, grid)  # (L, dim - group_dim)
    code = np.broadcast_to(pos[None], (n_groups, *pos.shape))
    if group_dim:
        grp = sincos_1d(group_dim, np.arange(n_groups))  # (G, group_dim)
        code = np.concatenate([code, np.broadcast_to(grp[:, None], (n_groups, pos.shape[0], group_dim))], -1)
    return torch.from_numpy(np.ascontiguousarray(code, dtype=np.float32))[None]


class MaskedAutoencoderViT(nn.Module):
    """ViT MAE over ``groups × patches`` tokens (one group = plain MAE; several = SatMAE group-channel).

    ``groups``: per group, the indices of the input channels it holds (channels in no group are
    ignored).  Batch: ``pixels`` (B, C, H, W) float, ``valid`` (B, C, H, W) bool (False = absent
    band or nodata: not in the loss), ``noise`` (B, G·L) for ``mask_mode="independent"`` (SatMAE's
    default: the G·L tokens are masked independently, so a location may be visible in one group and
    masked in another) or (B, L) for ``"consistent"`` (SatMAE's ``--spatial_mask``: a location is
    masked in every group or in none).
    """

    def __init__(self, *, img_size: int, patch_size: int, groups, embed_dim: int, depth: int, num_heads: int,
                 decoder_embed_dim: int, decoder_depth: int, decoder_num_heads: int, mlp_ratio: float = 4.0,
                 channel_embed_dim: int = 0, decoder_channel_embed_dim: int = 0, mask_ratio: float = 0.75,
                 mask_mode: str = "independent", norm_pix_loss: bool = False):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        if mask_mode not in ("independent", "consistent"):
            raise ValueError(f"mask_mode must be 'independent' or 'consistent', got {mask_mode!r}")
        self.groups = [tuple(int(i) for i in g) for g in groups]
        if not self.groups or any(not g for g in self.groups):
            raise ValueError(f"need at least one non-empty channel group, got {groups}")
        self.img_size, self.patch_size = int(img_size), int(patch_size)
        self.grid = self.img_size // self.patch_size
        self.num_patches = self.grid * self.grid
        self.mask_ratio, self.mask_mode = float(mask_ratio), mask_mode
        self.norm_pix_loss = bool(norm_pix_loss)
        num_keep(self.num_patches, self.mask_ratio)  # validates the ratio
        g, pp = len(self.groups), self.patch_size ** 2
        for i, idx in enumerate(self.groups):
            self.register_buffer(f"group_index_{i}", torch.tensor(idx, dtype=torch.long), persistent=False)

        # encoder: one patch embedding per group (a Linear on the patch = MAE's stride-p Conv2d)
        self.patch_embed = nn.ModuleList(nn.Linear(len(idx) * pp, embed_dim) for idx in self.groups)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", _group_position_code(embed_dim, channel_embed_dim, g, self.grid),
                             persistent=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed",
                             _group_position_code(decoder_embed_dim, decoder_channel_embed_dim, g, self.grid),
                             persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(decoder_embed_dim, decoder_num_heads, mlp_ratio)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=LN_EPS)
        self.decoder_pred = nn.ModuleList(nn.Linear(decoder_embed_dim, len(idx) * pp) for idx in self.groups)
        self.embed_dim = embed_dim
        self._init_weights()

    # -- initialisation as MAE: xavier-uniform Linear weights (the patch embedding included, as it
    #    is MAE's Conv2d viewed as a Linear), zero biases, unit LayerNorms, tokens ~ N(0, 0.02).
    def _init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- pieces
    def _group_index(self, i: int) -> torch.Tensor:
        return getattr(self, f"group_index_{i}")

    def _mask_ids(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept token ids (B, K) into the G·L sequence and the mask (B, G, L), 1 = masked."""
        g, n = len(self.groups), self.num_patches
        b = noise.shape[0]
        if self.mask_mode == "independent":
            if noise.shape != (b, g * n):
                raise ValueError(f"noise must be (B, {g * n}) for independent masking, "
                                 f"got {tuple(noise.shape)}")
            ids, mask = mask_from_noise(noise, num_keep(g * n, self.mask_ratio))
            return ids, mask.view(b, g, n)
        if noise.shape != (b, n):
            raise ValueError(f"noise must be (B, {n}) for consistent masking, got {tuple(noise.shape)}")
        ids, mask = mask_from_noise(noise, num_keep(n, self.mask_ratio))
        offsets = torch.arange(g, device=ids.device)[:, None] * n  # same locations in every group
        return (ids[:, None, :] + offsets).reshape(b, -1), mask[:, None, :].expand(b, g, n)

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, L, C, p²) → tokens (B, G·L, D) with position + group codes."""
        tokens = torch.stack([emb(patches.index_select(2, self._group_index(i)).flatten(2))
                              for i, emb in enumerate(self.patch_embed)], dim=1)  # (B, G, L, D)
        return (tokens + self.pos_embed.to(tokens.dtype)).flatten(1, 2)

    def _encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def _decode(self, latent: torch.Tensor, ids_keep: torch.Tensor) -> list[torch.Tensor]:
        """Latent (B, 1+K, D) → per group predictions (B, L, |g|, p²)."""
        y = self.decoder_embed(latent)
        b, d = y.shape[0], y.shape[-1]
        g, n = len(self.groups), self.num_patches
        full = self.mask_token.to(y.dtype).expand(b, g * n, d)
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, d), y[:, 1:])  # visible tokens in place
        full = full + self.decoder_pos_embed.to(y.dtype).flatten(1, 2)
        z = torch.cat([y[:, :1], full], dim=1)
        for blk in self.decoder_blocks:
            z = blk(z)
        z = self.decoder_norm(z)[:, 1:].reshape(b, g, n, d)
        pp = self.patch_size ** 2
        return [head(z[:, i]).reshape(b, n, -1, pp) for i, head in enumerate(self.decoder_pred)]

    def _loss(self, preds, patches, valid, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error over masked tokens, each token's error averaged over its valid elements."""
        total = patches.new_zeros(())
        count = patches.new_zeros(())
        for i, pred in enumerate(preds):
            idx = self._group_index(i)
            target, w = patches.index_select(2, idx).float(), valid.index_select(2, idx).float()
            n = w.sum(dim=(2, 3))  # valid elements per token (B, L)
            if self.norm_pix_loss:  # MAE's per-patch normalised target, over valid elements only
                mean = (target * w).sum(dim=(2, 3), keepdim=True) / n.clamp(min=1)[..., None, None]
                var = (((target - mean) ** 2) * w).sum(dim=(2, 3), keepdim=True)
                var = var / (n - 1).clamp(min=1)[..., None, None]  # unbiased, as torch.var in MAE
                target = (target - mean) / (var + 1e-6).sqrt()
            err = (((pred.float() - target) ** 2) * w).sum(dim=(2, 3)) / n.clamp(min=1)  # (B, L)
            weight = mask[:, i] * (n > 0)
            total = total + (err * weight).sum()
            count = count + weight.sum()
        return total / count.clamp(min=1), count

    def _masked_pass(self, batch: dict):
        """Embed, mask with the batch's noise, encode the visible tokens, decode: (patches, preds, mask)."""
        patches = patchify(batch["pixels"].float(), self.patch_size)
        ids_keep, mask = self._mask_ids(batch["noise"])
        tokens = self._embed(patches)
        visible = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return patches, self._decode(self._encode_tokens(visible), ids_keep), mask

    # -- the model-module protocol
    def forward(self, batch: dict) -> dict:
        """Masked reconstruction loss of a batch; also the masked tokens counted and the valid share."""
        patches, preds, mask = self._masked_pass(batch)
        valid_p = patchify(batch["valid"].to(patches.dtype), self.patch_size)
        loss, count = self._loss(preds, patches, valid_p, mask)
        return {"loss": loss, "masked_tokens": count.detach(), "valid_fraction": valid_p.mean().detach()}

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction (B, C, H, W) in target space, mask (B, G, L)) — to look at what the model does."""
        patches, preds, mask = self._masked_pass(batch)
        out = torch.zeros_like(patches)
        for i, pred in enumerate(preds):
            out[:, :, self._group_index(i)] = pred.float()
        h, w = batch["pixels"].shape[-2:]
        return unpatchify(out, self.patch_size, h, w), mask

    def encode(self, batch: dict) -> torch.Tensor:
        """(B, D): encoder tokens of the whole, unmasked input, mean-pooled over tokens that hold valid data.

        A token whose group has no valid element at that location (absent band, nodata) is left
        out of the mean (all tokens count if a sample has none valid).  The cls token is not used.
        """
        pixels = batch["pixels"].float()
        patches = patchify(pixels, self.patch_size)
        feats = self._encode_tokens(self._embed(patches))[:, 1:].float()  # (B, G·L, D)
        valid_p = patchify(batch["valid"].to(pixels.dtype), self.patch_size)
        has = torch.stack([valid_p.index_select(2, self._group_index(i)).amax(dim=(2, 3))
                           for i in range(len(self.groups))], dim=1).flatten(1)  # (B, G·L)
        has = torch.where(has.sum(1, keepdim=True) > 0, has, torch.ones_like(has))
        return (feats * has[..., None]).sum(1) / has.sum(1, keepdim=True)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters MAE/timm exempt from weight decay (biases and norm weights: 1-D)."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1}


def build_mae(config: dict, groups, img_size: int) -> MaskedAutoencoderViT:
    """A :class:`MaskedAutoencoderViT` from a model config dict (keys as in the models' CONFIGS)."""
    return MaskedAutoencoderViT(
        img_size=img_size, patch_size=config["patch_size"], groups=groups, embed_dim=config["embed_dim"],
        depth=config["depth"], num_heads=config["num_heads"], decoder_embed_dim=config["decoder_embed_dim"],
        decoder_depth=config["decoder_depth"], decoder_num_heads=config["decoder_num_heads"],
        mlp_ratio=config.get("mlp_ratio", 4.0), channel_embed_dim=config.get("channel_embed_dim", 0),
        decoder_channel_embed_dim=config.get("decoder_channel_embed_dim", 0),
        mask_ratio=config.get("mask_ratio", 0.75), mask_mode=config.get("mask_mode", "independent"),
        norm_pix_loss=config.get("norm_pix_loss", False))


# ---------------------------------------------------------------------------------------------
# FLOPs (for MFU)
# ---------------------------------------------------------------------------------------------
def _transformer_flops(tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """Forward FLOPs of ``depth`` blocks on ``tokens`` tokens: matmuls (qkv, proj, MLP) + attention."""
    per_block = 2 * tokens * dim * dim * (4 + 2 * mlp_ratio) + 4 * tokens * tokens * dim
    return depth * per_block


def mae_flops_per_sample(config: dict, group_sizes, img_size: int) -> int:
    """Training FLOPs (forward + backward ≈ 3 × forward) of one sample, counting matmuls only.

    Forward: patch embedding of all G·L tokens, encoder on 1 + K visible tokens, decoder
    embedding, decoder on 1 + G·L tokens, prediction heads; each a ``2 · tokens · in · out``
    matmul, attention as ``4 · N² · D`` per block.  LayerNorm, GELU, softmax and the loss are
    left out (a few per cent), as in the usual "6 × parameters × tokens" estimate.
    """
    p = int(config["patch_size"])
    n = (int(img_size) // p) ** 2
    sizes = [int(s) for s in group_sizes]
    g, pp = len(sizes), p * p
    d, dd, r = int(config["embed_dim"]), int(config["decoder_embed_dim"]), float(config.get("mlp_ratio", 4.0))
    ratio = float(config.get("mask_ratio", 0.75))
    independent = config.get("mask_mode", "independent") == "independent"
    k = num_keep(g * n, ratio) if independent else g * num_keep(n, ratio)
    fwd = 2 * n * sum(sizes) * pp * d  # patch embeddings
    fwd += _transformer_flops(1 + k, d, int(config["depth"]), r)
    fwd += 2 * (1 + k) * d * dd  # decoder embedding
    fwd += _transformer_flops(1 + g * n, dd, int(config["decoder_depth"]), r)
    fwd += 2 * n * dd * sum(sizes) * pp  # prediction heads
    return int(3 * fwd)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# numpy helpers for raster collate functions
# ---------------------------------------------------------------------------------------------
def resolve_img_size(config: dict, info, default: int) -> int:
    """Model input size: ``config["img_size"]`` if set, else the dataset's ``patch_size_px``, else
    ``default``; rounded down to a multiple of the patch size (the rest is cropped away)."""
    size = config.get("img_size") or getattr(info, "patch_size_px", None) or default
    p = int(config["patch_size"])
    size = (int(size) // p) * p
    if size < p:
        raise ValueError(f"image size {config.get('img_size') or size} is smaller than the patch size {p}")
    return size


def crop_or_pad(arr: np.ndarray, valid: np.ndarray, size: int, rng: np.random.Generator | None):
    """Cut (C, H, W) ``arr`` and ``valid`` to (C, size, size).

    Larger sides are cropped at a random offset drawn from ``rng`` (``None``: centred); smaller
    sides are padded with zeros marked invalid, so padding never reaches the loss.
    """
    c, h, w = arr.shape
    out = np.zeros((c, size, size), dtype=arr.dtype)
    ok = np.zeros((c, size, size), dtype=bool)
    offs = []
    for n in (h, w):
        if n > size:
            offs.append(int(rng.integers(0, n - size + 1)) if rng is not None else (n - size) // 2)
        else:
            offs.append(0)
    (y0, x0), hh, ww = offs, min(h, size), min(w, size)
    out[:, :hh, :ww] = arr[:, y0:y0 + hh, x0:x0 + ww]
    ok[:, :hh, :ww] = valid[:, y0:y0 + hh, x0:x0 + ww]
    return out, ok


def sample_source(sample: dict) -> str:
    """What to name in an error about a decoded sample: its shard URL and key when known."""
    key = sample.get("__key__", "?")
    url = sample.get("__url__")
    return f"{url}#{key}" if url else str(key)


def draw_noise(rng: np.random.Generator, batch: int, n: int) -> torch.Tensor:
    """Masking noise (batch, n) float32 in [0, 1) from the loader's generator."""
    return torch.from_numpy(rng.random((batch, n), dtype=np.float32))

