"""DEM MAE: per-patch elevation normalisation, nodata, masking, training steps (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from als_datasets.errors import InputError
from als_datasets.train.info import DatasetInfo
from als_datasets.train.models import dem_mae, get_config
from als_datasets.train.models.vit import num_keep, patchify


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine they only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sample(i: int, rng, size: int = 32, nan_block: bool = False) -> dict:
    """A DEM sample per the schema: float32 (1, H, W) metres, NaN = nodata."""
    yy, xx = np.mgrid[0:size, 0:size]
    z = rng.uniform(0, 2000) + rng.uniform(-3, 3) * xx + rng.uniform(-3, 3) * yy
    z = (z + 5 * np.sin(xx / rng.uniform(2, 6)) * np.cos(yy / 4.0)).astype(np.float32)[None]
    if nan_block:
        z[0, : size // 3, : size // 2] = np.nan
    meta = {"bands": ["elevation"], "common_bands": ["elevation"], "continent": "Africa", "biome": "Tundra",
            "nodata_fraction": float(np.isnan(z).mean()), "sensor": "cop-dem", "scene": "d", "lon": 0.0,
            "lat": 0.0, "tile_id": f"d{i}", "split": "train"}
    return {"__key__": f"d{i}", "json": meta, "pixels.npy": z}


@pytest.fixture()
def info(tmp_path):
    return DatasetInfo(root=str(tmp_path), kind="dem", bands=("elevation",), patch_size_px=32)


@pytest.fixture()
def samples():
    rng = np.random.default_rng(5)
    return [_sample(i, rng, nan_block=(i % 2 == 0)) for i in range(6)]


def _model(cfg, info, seed=0):
    torch.manual_seed(seed)
    return dem_mae.build_model(cfg, info)


def test_normalisation_hand_made():
    z = np.array([[[100.0, 102.0], [104.0, np.nan]]])
    valid = np.isfinite(z)
    out = dem_mae.normalise_elevation(z, valid, std_floor=1.0)
    std = np.sqrt(8 / 3)
    np.testing.assert_allclose(out, [[[-2 / std, 0.0], [2 / std, 0.0]]], rtol=1e-6)
    flat = np.array([[[100.0, 100.1], [100.0, 100.1]]])
    np.testing.assert_allclose(dem_mae.normalise_elevation(flat, np.ones_like(flat, bool), 1.0),
                               [[[-0.05, 0.05], [-0.05, 0.05]]], rtol=1e-5)  # std 0.05 m floored at 1 m
    assert not dem_mae.normalise_elevation(z, np.zeros_like(valid), 1.0).any()


def test_collate_nodata_and_declared_value(info):
    s = _sample(0, np.random.default_rng(0), nan_block=True)
    b = dem_mae.collate([s], np.random.default_rng(0), get_config("dem-mae", "tiny"), info, train=False)
    x, v = b["pixels"][0, 0], b["valid"][0, 0]
    assert x.shape == (32, 32) and not v[:10, :16].any() and v[11:].all()
    assert torch.isfinite(x).all() and (x[~v] == 0).all()
    assert abs(float(x[v].mean())) < 1e-4  # mean removed over valid pixels
    s2 = _sample(1, np.random.default_rng(1))
    s2["pixels.npy"][0, 0, 0] = -9999.0
    s2["json"]["nodata"] = -9999.0
    b2 = dem_mae.collate([s2], np.random.default_rng(0), get_config("dem-mae", "tiny"), info, train=False)
    assert not b2["valid"][0, 0, 0, 0] and b2["valid"][0, 0].sum() == 32 * 32 - 1


def test_bad_sample_is_input_error(info):
    cfg, rng = get_config("dem-mae", "tiny"), np.random.default_rng(0)
    with pytest.raises(InputError, match="no pixels.npy"):
        dem_mae.collate([{"__key__": "x", "json": {}}], rng, cfg, info)
    with pytest.raises(InputError, match="must be"):
        dem_mae.collate([{"__key__": "x", "json": {}, "pixels.npy": np.zeros((2, 3, 4, 5), np.float32)}], rng, cfg,
                        info)


def test_masking_counts_and_determinism(info, samples):
    cfg = get_config("dem-mae", "tiny")
    model = _model(cfg, info)
    a = dem_mae.collate(samples, np.random.default_rng(3), cfg, info)
    b = dem_mae.collate(samples, np.random.default_rng(3), cfg, info)
    for k in a:
        assert torch.equal(a[k], b[k])
    n = model.num_patches
    assert a["noise"].shape == (len(samples), n) and len(model.groups) == 1
    _, mask = model._mask_ids(a["noise"])
    assert torch.all((1 - mask).sum(dim=(1, 2)) == round(0.25 * n)) and num_keep(n, 0.75) == round(0.25 * n)
    with torch.no_grad():
        assert torch.equal(model(a)["loss"], model(b)["loss"])


def test_nodata_not_in_loss(info, samples):
    cfg = get_config("dem-mae", "tiny")
    model = _model(cfg, info)
    batch = dem_mae.collate(samples, np.random.default_rng(0), cfg, info)
    empty = {"pixels": torch.zeros_like(batch["pixels"][:1]), "valid": torch.zeros_like(batch["valid"][:1])}
    both = {k: torch.cat([batch[k], empty.get(k, batch[k][:1])]) for k in batch}
    with torch.no_grad():
        torch.testing.assert_close(model(both)["loss"], model(batch)["loss"], rtol=1e-5, atol=1e-6)
    # predictions at nodata pixels get no gradient
    preds = []
    hook = model.decoder_pred[0].register_forward_hook(lambda m, i, o: preds.append(o))
    out = model(batch)
    hook.remove()
    preds[0].retain_grad()
    out["loss"].backward()
    grad = preds[0].grad.reshape(len(samples), model.num_patches, -1)
    invalid = patchify(~batch["valid"], model.patch_size).reshape(len(samples), model.num_patches, -1)
    assert invalid.any() and (grad[invalid] == 0).all()


def test_few_steps_lower_the_loss(info, samples):
    cfg = get_config("dem-mae", "tiny")
    model = _model(cfg, info)
    batch = dem_mae.collate(samples, np.random.default_rng(0), cfg, info)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for _ in range(12):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_encode_shapes_and_bf16_autocast(info, samples):
    cfg = get_config("dem-mae", "tiny")
    model = _model(cfg, info)
    batch = dem_mae.collate(samples, np.random.default_rng(0), cfg, info, train=False)
    with torch.no_grad():
        f = model.encode(batch)
    assert f.shape == (len(samples), cfg["embed_dim"]) and torch.isfinite(f).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        g = model.encode(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and g.shape == f.shape
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_configs_and_flops(info):
    base = dem_mae.CONFIGS["base"]
    assert (base["patch_size"], base["embed_dim"], base["depth"], base["mask_ratio"]) == (16, 1024, 24, 0.75)
    assert base["blr"] == 1.5e-4 and base["norm_pix_loss"]
    big = DatasetInfo(root=info.root, kind="dem", bands=("elevation",), patch_size_px=224)
    tiny = dem_mae.flops_per_sample(get_config("dem-mae", "tiny"), info)
    assert 0 < tiny < dem_mae.flops_per_sample(base, big)
    # ViT-L/16 on 224 px with 75 % masking: the MAE encoder alone is ~3 × 2 × 304 M × 50 tokens ≈ 9e10
    assert 5e10 < dem_mae.flops_per_sample(base, big) < 5e11


@pytest.mark.slow
def test_base_config_builds_and_runs(tmp_path):
    """MAE's default ViT-L/16 on 224 px elevation patches: one bf16 forward."""
    info = DatasetInfo(root=str(tmp_path), kind="dem", bands=("elevation",), patch_size_px=224)
    cfg = dem_mae.CONFIGS["base"]
    model = _model(cfg, info)
    assert model.num_patches == 196
    rng = np.random.default_rng(0)
    batch = dem_mae.collate([_sample(i, rng, size=224, nan_block=True) for i in range(2)], rng, cfg, info)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(batch)["loss"])
