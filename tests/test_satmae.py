"""SatMAE group-channel MAE: band groups, normalisation, masking, loss, training steps (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from als_datasets.errors import InputError
from als_datasets.train.info import DatasetInfo
from als_datasets.train.models import get_config, satmae
from als_datasets.train.models.vit import count_parameters, num_keep, patchify

S2 = [("B1", "coastal"), ("B2", "blue"), ("B3", "green"), ("B4", "red"), ("B5", "rededge1"),
      ("B6", "rededge2"), ("B7", "rededge3"), ("B8", "nir"), ("B8A", "nir08"), ("B9", "nir09"),
      ("B10", "cirrus"), ("B11", "swir16"), ("B12", "swir22")]
L8 = [("B1", "coastal"), ("B2", "blue"), ("B3", "green"), ("B4", "red"), ("B5", "nir08"), ("B6", "swir16"),
      ("B7", "swir22")]
S2_COMMON = tuple(c for _, c in S2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine they only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sample(i: int, table, rng, size: int = 32, nodata_block: bool = False) -> dict:
    """A satellite sample per the schema: uint16 (C, H, W), json with bands / common_bands."""
    base = rng.uniform(500, 3000, (len(table), 1, 1))
    px = base * (0.7 + 0.6 * rng.uniform(0, 1, (1, size, size))) + rng.normal(0, 30, (len(table), size, size))
    px = np.clip(px, 1, 65535).astype(np.uint16)
    if nodata_block:
        px[:, : size // 4, :] = 0
    meta = {"bands": [b for b, _ in table], "common_bands": [c for _, c in table], "continent": "Europe",
            "biome": "Tundra", "landcover": None, "spectral_entropy": 3.0, "cloud_fraction": 0.0,
            "nodata_fraction": 0.25 if nodata_block else 0.0, "sensor": "s2" if table is S2 else "l8",
            "scene": "x", "lon": 0.0, "lat": 0.0, "tile_id": f"k{i}", "split": "train"}
    return {"__key__": f"k{i}", "json": meta, "pixels.npy": px}


@pytest.fixture()
def info(tmp_path):
    return DatasetInfo(root=str(tmp_path), kind="satellite", bands=S2_COMMON, patch_size_px=32)


@pytest.fixture()
def samples():
    rng = np.random.default_rng(3)
    return [_sample(i, L8 if i % 3 == 2 else S2, rng, nodata_block=(i == 1)) for i in range(6)]


def _model(cfg, info, seed=0):
    torch.manual_seed(seed)
    return satmae.build_model(cfg, info)


# --------------------------------------------------------------------------------------------
# band groups
# --------------------------------------------------------------------------------------------
def test_groups_sentinel2():
    assert satmae.band_group_names(S2_COMMON) == [
        ("blue", "green", "red", "nir"), ("rededge1", "rededge2", "rededge3", "nir08"), ("swir16", "swir22"),
        ("coastal", "nir09", "cirrus")]
    assert satmae.band_groups(S2_COMMON) == [(1, 2, 3, 7), (4, 5, 6, 8), (11, 12), (0, 9, 10)]
    # SatMAE's own setting: B1, B9, B10 dropped; the 10 remaining bands give its default channel groups
    assert satmae.band_groups(S2_COMMON, drop=satmae.SATMAE_DROPPED) == [(1, 2, 3, 7), (4, 5, 6, 8), (11, 12)]
    ten = [b for b in S2_COMMON if b not in satmae.SATMAE_DROPPED]
    assert satmae.band_groups(ten) == [(0, 1, 2, 6), (3, 4, 5, 7), (8, 9)]


def test_groups_landsat_rgb_elevation():
    oli = ["blue", "green", "red", "nir08", "swir16", "swir22"]
    assert satmae.band_group_names(oli) == [("blue", "green", "red"), ("nir08",), ("swir16", "swir22")]
    assert satmae.band_group_names(["coastal"] + oli)[-1] == ("coastal",)
    assert satmae.band_groups(["red", "green", "blue"]) == [(2, 1, 0)]
    assert satmae.band_group_names(["elevation"]) == [("elevation",)]
    assert satmae.band_group_names(["red", "green", "blue"], groups=[["red"], ["green"]]) == [
        ("red",), ("green",), ("blue",)]


def test_no_bands_is_input_error(tmp_path):
    bare = DatasetInfo(root=str(tmp_path), kind="satellite")
    with pytest.raises(InputError, match="_info.json"):
        satmae.build_model(get_config("satmae", "tiny"), bare)
    only_dropped = DatasetInfo(root=str(tmp_path), kind="satellite", bands=("cirrus",))
    with pytest.raises(InputError, match="no band left"):
        satmae.build_model(get_config("satmae", "tiny", drop_bands=["cirrus"]), only_dropped)


# --------------------------------------------------------------------------------------------
# normalisation and placement
# --------------------------------------------------------------------------------------------
def test_normalisation_hand_made():
    band = np.array([[10, 20], [30, 40]], np.uint16)
    outlier = np.array([[10, 10, 10, 10], [10, 10, 10, 1000]], np.uint16).reshape(2, 4)
    x = satmae.satmae_normalise(band[None], np.ones((1, 2, 2), bool))[0]
    mean, std = 25.0, np.sqrt(125.0)
    np.testing.assert_allclose(x, (band - (mean - 2 * std)) / (4 * std), rtol=1e-6)
    y = satmae.satmae_normalise(outlier[None], np.ones((1, 2, 4), bool))[0]
    assert y[1, 3] == 1.0 and np.all(y[:, :3] == y[0, 0]) and 0 < y[0, 0] < 0.5
    # invalid pixels are left out of the statistics and come out as 0; a constant band is 0
    valid = np.array([[[True, True], [True, False]]])
    z = satmae.satmae_normalise(np.array([[[10, 20], [30, 60000]]], np.uint16), valid)[0]
    m3, s3 = 20.0, np.sqrt(200 / 3)
    expect = [[(10 - m3 + 2 * s3) / (4 * s3), 0.5], [(30 - m3 + 2 * s3) / (4 * s3), 0]]
    np.testing.assert_allclose(z, expect, rtol=1e-6)
    assert not satmae.satmae_normalise(np.full((1, 3, 3), 7, np.uint16), np.ones((1, 3, 3), bool)).any()


def test_placement_by_common_name_and_nodata():
    rng = np.random.default_rng(0)
    s = _sample(0, L8, rng, size=8, nodata_block=True)
    x, v = satmae.sample_bands(s, S2_COMMON)
    assert x.shape == v.shape == (13, 8, 8)
    absent = [S2_COMMON.index(b) for b in ("rededge1", "rededge2", "rededge3", "nir", "nir09", "cirrus")]
    assert not v[absent].any() and not x[absent].any()
    blue = S2_COMMON.index("blue")
    assert not v[blue, :2].any() and v[blue, 2:].all()  # rows of zeros = nodata (nodata_fraction > 0)
    expect = satmae.satmae_normalise(s["pixels.npy"][1:2, 2:], np.ones((1, 6, 8), bool))[0]
    np.testing.assert_allclose(x[blue, 2:], expect, rtol=1e-6)
    # without nodata_fraction, zeros are data
    s["json"]["nodata_fraction"] = 0.0
    assert satmae.sample_bands(s, S2_COMMON)[1][blue].all()


def test_bad_sample_is_input_error(info):
    s = _sample(0, S2, np.random.default_rng(0))
    s["json"]["common_bands"] = s["json"]["common_bands"][:5]
    with pytest.raises(InputError, match="k0"):
        satmae.collate([s], np.random.default_rng(0), get_config("satmae", "tiny"), info)
    with pytest.raises(InputError, match="no pixels.npy"):
        satmae.collate([{"__key__": "k9", "json": {}}], np.random.default_rng(0),
                       get_config("satmae", "tiny"), info)


def test_collate_crop_and_pad(tmp_path):
    rng = np.random.default_rng(1)
    big = DatasetInfo(root=str(tmp_path), kind="satellite", bands=S2_COMMON, patch_size_px=48)
    cfg = get_config("satmae", "tiny")  # 32 px model on 48 px patches: random crop
    b = satmae.collate([_sample(0, S2, rng, size=48)], np.random.default_rng(0), cfg, big)
    assert b["pixels"].shape == (1, 13, 32, 32)
    small = satmae.collate([_sample(0, S2, rng, size=20)], np.random.default_rng(0), cfg, big)
    assert small["valid"][0, :, :20, :20].all() and not small["valid"][0, :, 20:].any()


# --------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["independent", "consistent"])
def test_masking_counts_and_determinism(info, samples, mode):
    cfg = get_config("satmae", "tiny", mask_mode=mode)
    model = _model(cfg, info)
    g, n = len(model.groups), model.num_patches
    a = satmae.collate(samples, np.random.default_rng(7), cfg, info)
    b = satmae.collate(samples, np.random.default_rng(7), cfg, info)
    c = satmae.collate(samples, np.random.default_rng(8), cfg, info)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["noise"], c["noise"])
    ids, mask = model._mask_ids(a["noise"])
    kept = (1 - mask).sum(dim=2)  # (B, G)
    if mode == "independent":
        assert a["noise"].shape == (len(samples), g * n)
        assert num_keep(g * n, 0.75) == round(0.25 * g * n)
        assert torch.all(kept.sum(1) == round(0.25 * g * n))
    else:
        assert a["noise"].shape == (len(samples), n)
        assert torch.all(kept == round(0.25 * n))
        assert torch.all(mask == mask[:, :1])  # same locations in every group
    assert ids.shape == (len(samples), int((1 - mask).sum(dim=(1, 2))[0]))
    with torch.no_grad():
        assert torch.equal(model(a)["loss"], model(b)["loss"])


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_ignores_invalid_targets(info, samples, norm_pix):
    cfg = get_config("satmae", "tiny", norm_pix_loss=norm_pix)
    model = _model(cfg, info)
    batch = satmae.collate(samples, np.random.default_rng(0), cfg, info)
    p = model.patch_size
    patches, valid = patchify(batch["pixels"], p), patchify(batch["valid"].float(), p)
    _, mask = model._mask_ids(batch["noise"])
    preds = [torch.randn(len(samples), model.num_patches, len(gr), p * p) for gr in model.groups]
    loss, _ = model._loss(preds, patches, valid, mask)
    junk = torch.where(valid > 0, patches, torch.full_like(patches, 1e4))
    loss2, _ = model._loss(preds, junk, valid, mask)
    assert valid.min() == 0 and torch.allclose(loss, loss2, rtol=1e-6)
    # a sample with nothing valid adds nothing
    none = batch["pixels"][:1] * 0, batch["valid"][:1] & False
    both = {"pixels": torch.cat([batch["pixels"], none[0]]), "valid": torch.cat([batch["valid"], none[1]]),
            "noise": torch.cat([batch["noise"], batch["noise"][:1]])}
    with torch.no_grad():
        torch.testing.assert_close(model(both)["loss"], model(batch)["loss"], rtol=1e-5, atol=1e-6)


def test_absent_band_gets_no_gradient(info):
    """A Landsat-only batch in a Sentinel-2 dataset: the heads' rows for absent bands get zero gradient."""
    rng = np.random.default_rng(2)
    cfg = get_config("satmae", "tiny", norm_pix_loss=True)
    model = _model(cfg, info)
    batch = satmae.collate([_sample(i, L8, rng) for i in range(4)], np.random.default_rng(0), cfg, info)
    model(batch)["loss"].backward()
    pp = model.patch_size ** 2
    for gi, names in enumerate(model.band_groups):
        grad = model.decoder_pred[gi].weight.grad.view(len(names), pp, -1)
        for k, name in enumerate(names):
            present = name in {c for _, c in L8}
            assert (grad[k].abs().sum() > 0) == present, name


def test_every_parameter_gets_a_gradient(info, samples):
    """DDP without find_unused_parameters: every trainable parameter takes part in the loss."""
    for mode in ("independent", "consistent"):
        cfg = get_config("satmae", "tiny", mask_mode=mode)
        model = _model(cfg, info)
        model(satmae.collate(samples, np.random.default_rng(0), cfg, info))["loss"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing


# --------------------------------------------------------------------------------------------
# training, encode, autocast, FLOPs
# --------------------------------------------------------------------------------------------
def test_few_steps_lower_the_loss(info, samples):
    cfg = get_config("satmae", "tiny")
    model = _model(cfg, info)
    batch = satmae.collate(samples, np.random.default_rng(0), cfg, info)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for _ in range(12):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_encode_shapes_and_eval_view(info, samples):
    cfg = get_config("satmae", "tiny")
    model = _model(cfg, info).eval()
    a = satmae.collate(samples, np.random.default_rng(0), cfg, info, train=False)
    b = satmae.collate(samples, np.random.default_rng(99), cfg, info, train=False)
    for k in a:
        assert torch.equal(a[k], b[k])  # the eval view does not depend on the rng
    with torch.no_grad():
        f = model.encode(a)
        g = model.encode({**a, "noise": torch.rand_like(a["noise"])})
    assert f.shape == (len(samples), cfg["embed_dim"]) and torch.isfinite(f).all()
    assert torch.equal(f, g)
    rec, mask = model.reconstruct(a)
    assert rec.shape == a["pixels"].shape
    assert mask.shape == (len(samples), len(model.groups), model.num_patches)


def test_bf16_autocast_on_cpu(info, samples):
    cfg = get_config("satmae", "tiny", mask_mode="consistent", norm_pix_loss=True)
    model = _model(cfg, info)
    batch = satmae.collate(samples, np.random.default_rng(0), cfg, info)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        feats = model.encode(batch)
    out["loss"].backward()
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert feats.shape == (len(samples), cfg["embed_dim"])


def test_flops_per_sample_matches_module_sizes(info):
    cfg = get_config("satmae", "tiny")
    model = _model(cfg, info)
    g, n, d, dd = len(model.groups), model.num_patches, cfg["embed_dim"], cfg["decoder_embed_dim"]
    k = num_keep(g * n, cfg["mask_ratio"])

    def w(mods):
        return sum(m.weight.numel() for mod in mods for m in mod.modules() if isinstance(m, torch.nn.Linear))

    fwd = (2 * n * w(model.patch_embed) + 2 * (1 + k) * w(model.blocks)
           + 2 * (1 + k) * w([model.decoder_embed])
           + 2 * (1 + g * n) * w(model.decoder_blocks) + 2 * n * w(model.decoder_pred)
           + 4 * cfg["depth"] * (1 + k) ** 2 * d + 4 * cfg["decoder_depth"] * (1 + g * n) ** 2 * dd)
    assert satmae.flops_per_sample(cfg, info) == 3 * fwd
    base_info = DatasetInfo(root=info.root, kind="satellite", bands=S2_COMMON, patch_size_px=96)
    big = satmae.flops_per_sample(satmae.CONFIGS["base"], base_info)
    assert big > 100 * satmae.flops_per_sample(cfg, info)


def test_base_config_is_satmae_vit_large(info):
    base = satmae.CONFIGS["base"]
    assert (base["patch_size"], base["embed_dim"], base["depth"], base["num_heads"]) == (8, 1024, 24, 16)
    assert (base["decoder_embed_dim"], base["decoder_depth"], base["decoder_num_heads"]) == (512, 8, 16)
    assert base["mask_ratio"] == 0.75 and tuple(base["betas"]) == (0.9, 0.95) and base["weight_decay"] == 0.05
    tiny = _model(get_config("satmae", "tiny"), info)
    assert count_parameters(tiny) < 1_000_000


def test_build_folder_metadata_and_shared_synthetic_data(tmp_path):
    """From a build folder's ``_info.json`` (DatasetInfo.from_folder) to a training step."""
    import json

    (tmp_path / "_info.json").write_text(json.dumps({
        "name": "s", "version": "0", "bands": list(S2_COMMON), "patch_size_px": 32,
        "splits": {"train": {"num_samples": 6, "filenames": [], "shard_lengths": [6]}}}))
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "satellite"}))
    info = DatasetInfo.from_folder(tmp_path)
    train_data = pytest.importorskip("train_data")
    samples = train_data.make_samples("satellite", 6, seed=0, patch_size_px=32)
    cfg = get_config("satmae", "tiny")
    model = _model(cfg, info)
    out = model(satmae.collate(samples, np.random.default_rng(0), cfg, info))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 < float(out["valid_fraction"]) < 1


@pytest.mark.slow
def test_base_config_builds_and_runs(tmp_path):
    """The paper-size model (ViT-L, ~303 M encoder parameters): one bf16 forward on 96 px patches."""
    info = DatasetInfo(root=str(tmp_path), kind="satellite", bands=S2_COMMON, patch_size_px=96)
    cfg = satmae.CONFIGS["base"]
    model = _model(cfg, info)
    encoder = sum(p.numel() for n, p in model.named_parameters()
                  if not n.startswith("decoder") and n != "mask_token")
    assert 300e6 < encoder < 306e6 and model.band_groups == list(satmae.SATMAE_GROUPS)
    rng = np.random.default_rng(0)
    batch = satmae.collate([_sample(i, S2, rng, size=96) for i in range(2)], rng, cfg, info)
    assert batch["noise"].shape == (2, 3 * 144)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(batch)["loss"])


def test_random_resized_crop_is_satmaes_augmentation():
    """base: RandomResizedCrop(96, scale 0.2-1, bicubic) + flip (SatMAE); tiny keeps the native crop."""
    assert satmae.CONFIGS["base"]["augment"] == "rrc" and tuple(satmae.CONFIGS["base"]["rrc_scale"]) == (0.2, 1.0)
    assert satmae.CONFIGS["tiny"]["augment"] == "crop"
    ramp = np.broadcast_to(np.linspace(0, 1, 96, dtype=np.float32), (2, 96, 96)).copy()  # value = x / width
    valid = np.ones(ramp.shape, bool)
    valid[:, :10, :10] = False
    spans = []
    for seed in range(20):
        out, ok = satmae.random_resized_crop(ramp, valid, 96, np.random.default_rng(seed))
        again, _ = satmae.random_resized_crop(ramp, valid, 96, np.random.default_rng(seed))
        assert out.shape == (2, 96, 96) and ok.shape == (2, 96, 96) and np.array_equal(out, again)
        assert not out[~ok].any()  # invalid pixels are zero
        vals = out[ok]
        spans.append(float(vals.max() - vals.min()))
    # a box of 20-100 % of the area and aspect 3/4-4/3 spans ~0.39-1 of the width (bicubic overshoot aside)
    assert 0.3 < min(spans) and max(spans) > 0.85 and min(spans) < 0.8, spans
