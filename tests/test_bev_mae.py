"""BEV-MAE (als_datasets.train.models.bev_mae): collate, masking, targets, losses, a few steps on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from als_datasets.errors import InputError
from als_datasets.train.models import bev_mae as M


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: faster than two on a shared 2-core machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = M.CONFIGS["tiny"]


def _tile(seed: int, n: int = 20000, tile: float = 500.0, key: str | None = None) -> dict:
    """An in-memory ALS sample: sloped terrain, box buildings, tree crowns (DESIGN §5 member names)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, tile, n), rng.uniform(0, tile, n)
    z = 300.0 + 0.05 * x - 0.02 * y + rng.normal(0, 0.1, n)
    kind = rng.random(n)
    roof, tree = kind < 0.2, (kind >= 0.2) & (kind < 0.5)
    z[roof] += 8.0 + (np.floor(x[roof] / 40) % 3) * 3.0
    z[tree] += rng.uniform(2.0, 20.0, int(tree.sum()))
    nret = np.where(tree, rng.integers(2, 5, n), 1)
    rnum = np.minimum(rng.integers(1, 5, n), nret)
    return {
        "__key__": key or f"synth_c{seed}_r0",
        "json": {"tile_size_m": tile, "stratum": "developed/flat", "point_count": n},
        "xyz.npy": np.stack([x, y, z], 1).astype(np.float32),
        "intensity.npy": rng.integers(100, 4000, n).astype(np.uint16),
        "return_number.npy": rnum.astype(np.uint8),
        "number_of_returns.npy": nret.astype(np.uint8),
        "classification.npy": np.where(roof, 6, np.where(tree, 5, 2)).astype(np.uint8),
    }


@pytest.fixture(scope="module")
def samples():
    return [_tile(s) for s in range(4)]


def _cells_of(coords: torch.Tensor, cv: int) -> torch.Tensor:
    return torch.stack([coords[:, 0], coords[:, 2] // cv, coords[:, 3] // cv], 1)


# --------------------------------------------------------------------------------------------
# collate: masking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.33])
def test_mask_ratio_is_exact_per_sample(samples, ratio):
    cfg = {**TINY, "mask_ratio": ratio}
    batch = M.collate(samples, np.random.default_rng(0), cfg, None, train=True)
    cells = _cells_of(batch["coords"], cfg["cell_voxels"])
    for b in range(len(samples)):
        occupied = torch.unique(cells[cells[:, 0] == b], dim=0)
        masked = torch.unique(cells[(cells[:, 0] == b) & batch["masked"]], dim=0)
        n_occ, n_mask = len(occupied), len(masked)
        assert n_occ == int(batch["num_cells"][b]) > 10
        assert n_mask == int(batch["num_masked"][b]) == M.masked_count(n_occ, ratio)
        assert abs(n_mask - ratio * n_occ) <= 0.5 + 1e-9  # round(0.7 × occupied)
        # the masked target cells are exactly the masked voxels' cells
        tcells = batch["cell_index"][batch["cell_index"][:, 0] == b]
        assert torch.equal(torch.unique(tcells, dim=0), masked)
    # a cell is masked as a whole: every voxel of a masked cell is masked
    key = (cells[:, 0] * 1000 + cells[:, 1]) * 1000 + cells[:, 2]
    for k in torch.unique(key[batch["masked"]]):
        assert bool(batch["masked"][key == k].all())


def test_masked_voxels_keep_coordinates_and_carry_the_token(samples):
    full = M.collate(samples[:2], np.random.default_rng(3), {**TINY, "mask_ratio": 0.0}, None)
    part = M.collate(samples[:2], np.random.default_rng(3), TINY, None)
    assert not bool(full["masked"].any()) and bool(part["masked"].any())
    # same sites and features whether masked or not: masked voxels keep their coordinates
    assert torch.equal(full["coords"], part["coords"]) and torch.equal(full["features"], part["features"])
    model = M.build_model(TINY)
    with torch.no_grad():
        model.mask_token.copy_(torch.arange(1.0, 7.0)[None] * 11)
    seen = model.masked_input(part)
    m = part["masked"]
    assert torch.equal(seen[m], model.mask_token.expand(int(m.sum()), -1))
    assert torch.equal(seen[~m], part["features"][~m])
    # the encoder never sees a masked voxel's own features
    model.eval()
    scrambled = dict(part, features=part["features"].clone())
    scrambled["features"][m] = torch.randn(int(m.sum()), part["features"].shape[1]) * 100
    with torch.no_grad():
        a, b = model(part)["loss"], model(scrambled)["loss"]
    assert torch.equal(a, b)


def test_collate_is_deterministic_given_the_rng(samples):
    a = M.collate(samples, np.random.default_rng(7), TINY, None)
    b = M.collate(samples, np.random.default_rng(7), TINY, None)
    c = M.collate(samples, np.random.default_rng(8), TINY, None)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["coords"], c["coords"]) if len(a["coords"]) == len(c["coords"]) else True
    # evaluation view: centre crop, key-seeded mask — independent of the rng
    e1 = M.collate(samples, np.random.default_rng(1), TINY, None, train=False)
    e2 = M.collate(samples, np.random.default_rng(2), TINY, None, train=False)
    assert all(torch.equal(e1[k], e2[k]) for k in e1)


def test_collate_shapes_and_ranges(samples):
    batch = M.collate(samples, np.random.default_rng(0), TINY, None)
    g = M.grid_geometry(TINY)
    c = batch["coords"]
    assert c.dtype == torch.long and c.shape[1] == 4 and batch["features"].shape == (len(c), 6)
    assert int(c[:, 1].max()) < g["nz"] and int(c[:, 2:].max()) < g["nxy"] and int(c.min()) >= 0
    assert len(torch.unique(c, dim=0)) == len(c)  # one row per voxel
    T = TINY["max_target_points"]
    assert batch["target_points"].shape == (len(batch["cell_index"]), T, 3)
    lens = batch["target_len"]
    assert int(lens.min()) >= 1 and int(lens.max()) <= T
    pts, valid = batch["target_points"], torch.arange(T)[None] < lens[:, None]
    assert float(pts[valid][:, :2].abs().max()) <= 0.5 + 1e-6 and float(pts[valid][:, 2].min()) >= 0.0
    assert float(pts[~valid].abs().max()) == 0.0  # padding is zero
    assert torch.isfinite(batch["features"]).all() and float(batch["features"][:, 3:].min()) >= -1e-6


# --------------------------------------------------------------------------------------------
# targets and losses on hand-made inputs
# --------------------------------------------------------------------------------------------
def test_density_and_points_targets_on_a_hand_made_cell():
    v = TINY["voxel_m"]  # 1.5 m voxels, 8 × 8 voxel cells of 12 m, 96 m crop centred on the bbox
    pts = [(0.1, 0.1, 100.0), (95.9, 95.9, 100.0)]  # anchors: bbox [0, 96]², cells (0, 0) and (7, 7)
    pts += [(50.1, 50.1, 100.0)] * 7  # 7 points in one voxel of cell (4, 4): capped at 5
    pts += [(50.1 + v, 50.1, 100.0)] * 2  # 2 points in the neighbouring column
    pts += [(50.1, 50.1 + v, 103.0)]  # 1 point higher up
    xyz = np.array(pts, np.float32)
    n = len(xyz)
    sample = {"__key__": "hand_c0_r0", "json": {}, "xyz.npy": xyz, "intensity.npy": np.full(n, 500, np.uint16),
              "return_number.npy": np.ones(n, np.uint8), "number_of_returns.npy": np.ones(n, np.uint8)}
    cfg = {**TINY, "mask_ratio": 1.0}
    batch = M.collate([sample], np.random.default_rng(0), cfg, None, train=False)
    cells = [tuple(r) for r in batch["cell_index"].tolist()]
    assert sorted(cells) == [(0, 0, 0), (0, 4, 4), (0, 7, 7)]
    i = cells.index((0, 4, 4))
    assert batch["target_density"][i].item() == pytest.approx((5 + 2 + 1) / 64)  # BEV-MAE: Σ min(n, 5) / 8²
    assert batch["target_density"][cells.index((0, 0, 0))].item() == pytest.approx(1 / 64)
    assert int(batch["target_len"][i]) == 10
    got = batch["target_points"][i, :10].numpy()
    cm, zr = 8 * v, TINY["z_range_m"]
    expect = np.array([((p[0] - 54.0) / cm, (p[1] - 54.0) / cm, (p[2] - 100.0) / zr) for p in pts[2:]])
    key = np.lexsort(np.round(got, 4).T[::-1])
    ekey = np.lexsort(np.round(expect, 4).T[::-1])
    np.testing.assert_allclose(got[key], expect[ekey], atol=2e-3)  # top z clipped at its 99.9th percentile


def test_chamfer_on_hand_made_point_sets():
    t = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [100, 100, 100]]])  # third point is padding
    lengths = torch.tensor([2])
    assert M.masked_chamfer(t[:, :2].clone(), t, lengths).item() == pytest.approx(0.0)  # identical sets
    shifted = t[:, :2] + torch.tensor([0.1, 0.0, 0.0])
    # src: 0.01 for each prediction; dst: 0.01 for each real point; padding ignored
    assert M.masked_chamfer(shifted, t, lengths).item() == pytest.approx(0.02)
    pred = torch.tensor([[[0.0, 0, 0.5]]])
    # src = 0.25; dst = (0.25 + 1.25) / 2 = 0.75
    assert M.masked_chamfer(pred, t, lengths).item() == pytest.approx(1.0)
    # two cells: the means run over all predictions and over all real target points
    pred2 = torch.tensor([[[0.0, 0, 0.5]], [[0.0, 0, 0]]])
    t2 = torch.cat([t, torch.tensor([[[0.0, 0, 0], [7, 7, 7], [9, 9, 9]]])])
    got = M.masked_chamfer(pred2, t2, torch.tensor([2, 1])).item()
    assert got == pytest.approx((0.25 + 0.0) / 2 + (0.25 + 1.25 + 0.0) / 3)
    assert M.masked_chamfer(torch.zeros((0, 20, 3)), torch.zeros((0, 30, 3)), torch.zeros(0, dtype=torch.long)) == 0
    assert M.density_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0])).item() == pytest.approx(
        (0.5 * 0.25 + 2.5) / 2)  # SmoothL1, β = 1


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(samples):
    torch.manual_seed(0)
    model = M.build_model(TINY)
    batch = M.collate(samples[:2], np.random.default_rng(0), TINY, None)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for _ in range(8):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        if not losses:  # no unused parameters: plain DDP works without find_unused_parameters
            assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(out["loss"].item())
        assert set(out) >= {"loss", "chamfer", "density"}
        assert out["loss"].item() == pytest.approx(out["chamfer"].item() + out["density"].item(), rel=1e-5)
    assert losses[-1] < 0.7 * losses[0], losses


def test_encode_shape_and_ignores_the_mask(samples):
    torch.manual_seed(0)
    model = M.build_model(TINY).eval()
    batch = M.collate(samples, np.random.default_rng(0), TINY, None, train=False)
    with torch.no_grad():
        e = model.encode(batch)
        e2 = model.encode(dict(batch, masked=~batch["masked"]))
    assert e.shape == (len(samples), TINY["widths"][-1]) and torch.isfinite(e).all()
    assert torch.equal(e, e2)
    assert not torch.allclose(e[0], e[1])


def test_very_different_point_counts_and_empty_tiles():
    samples = [_tile(10, n=60000), _tile(11, n=40), _tile(12, n=3, tile=20.0),
               {**_tile(13, n=1), "xyz.npy": np.zeros((0, 3), np.float32), "intensity.npy": np.zeros(0, np.uint16),
                "return_number.npy": np.zeros(0, np.uint8), "number_of_returns.npy": np.zeros(0, np.uint8)}]
    batch = M.collate(samples, np.random.default_rng(0), TINY, None)
    assert batch["num_points"].tolist()[3] == 0 and batch["num_points"][0] > 10 * batch["num_points"][1]
    assert int(batch["batch_size"]) == 4
    torch.manual_seed(0)
    model = M.build_model(TINY)
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    model.eval()
    with torch.no_grad():
        e = model.encode(M.collate(samples, np.random.default_rng(0), TINY, None, train=False))
    assert e.shape == (4, TINY["widths"][-1]) and torch.isfinite(e).all() and float(e[3].abs().sum()) == 0.0


def test_nothing_masked_gives_zero_loss_with_gradients(samples):
    model = M.build_model(TINY)
    batch = M.collate(samples[:2], np.random.default_rng(0), {**TINY, "mask_ratio": 0.0}, None)
    out = model(batch)
    out["loss"].backward()
    assert out["loss"].item() == 0.0 and all(p.grad is not None for p in model.parameters())


def test_bf16_autocast_forward_on_cpu(samples):
    torch.manual_seed(0)
    model = M.build_model(TINY)
    batch = M.collate(samples[:2], np.random.default_rng(0), TINY, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32


def test_paper_xyz_features_variant(samples):
    cfg = {**TINY, "features": "xyz"}  # the ALS paper's input: mean absolute coordinates
    batch = M.collate(samples[:2], np.random.default_rng(0), cfg, None)
    f = batch["features"]
    assert f.shape[1] == 3 and float(f.min()) >= 0.0 and float(f.max()) <= 1.0
    out = M.build_model(cfg)(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_configs_and_geometry():
    base = M.CONFIGS["base"]
    g = M.grid_geometry(base)
    assert (g["nxy"], g["nz"], g["ncell"]) == (240, 480, 30) and g["cell_m"] == pytest.approx(4.8)
    assert base["crop_m"] == 144 and base["mask_ratio"] == 0.7 and base["num_pred_points"] == 20
    assert tuple(base["blocks"]) == (2, 3, 6, 2) and tuple(base["widths"]) == (48, 96, 192, 384)
    enc = M.SparseResNetEncoder(6, base["widths"], base["blocks"])
    assert enc.output_shape((480, 240, 240)) == (29, 30, 30)  # BEV stride 8 = 4.8 m cells
    for key in ("batch_size", "lr", "weight_decay", "betas", "schedule", "clip_grad"):
        assert key in base and key in TINY
    with pytest.raises(ValueError):
        M.grid_geometry({**TINY, "crop_m": 100.0})  # not a whole number of voxels / cells
    with pytest.raises(ValueError):
        M.build_model({**TINY, "z_range_m": 6.0})  # too shallow for three stride-2 levels


def test_bad_inputs_name_the_sample():
    class Info:
        kind, root = "satellite", "/data/sat"

    with pytest.raises(InputError, match="/data/sat"):
        M.build_model(TINY, Info())
    bad = {"__key__": "t_c0_r0", "__url__": "shard-000000.tar", "json": {}, "xyz.npy": np.zeros((5, 2))}
    with pytest.raises(InputError, match="shard-000000.tar"):
        M.collate([bad], np.random.default_rng(0), TINY, None)
    bad = {**_tile(1, n=10), "intensity.npy": np.zeros(3, np.uint16)}
    with pytest.raises(InputError, match="intensity"):
        M.collate([bad], np.random.default_rng(0), TINY, None)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("features", ["full", "xyz"])
def test_vectorised_preparation_equals_the_previous_one(samples, train, features):
    """prepare_sample (one sort by voxel, table look-ups) gives the arrays of the previous
    implementation (np.unique, bincount per column, isin + lexsort), kept in bench/bench_collate.py."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_collate import prepare_sample_old

    cfg = {**TINY, "features": features}
    for i, s in enumerate([*samples, _tile(9, n=40), {**_tile(10, n=3000), "intensity.npy": None}]):
        s = {k: v for k, v in s.items() if v is not None}
        a = M.prepare_sample(s, np.random.default_rng(i), cfg, train)
        b = prepare_sample_old(s, np.random.default_rng(i), cfg, train)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)


def _bench_collate():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_collate

    return bench_collate


@pytest.mark.parametrize("config", ["tiny", "base"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("features", ["full", "xyz"])
def test_compiled_preparation_equals_the_numpy_one_exactly(samples, config, train, features):
    """The compiled kernels (crop, counting-sort voxelisation, one-pass means, cells, targets) give
    bit-identical arrays to the numpy version they replaced (``*_main`` in bench/bench_collate.py),
    for the same rng — per-sample masks and the batch-scope path (a given mask) alike."""
    bc = _bench_collate()
    cfg = {**M.CONFIGS[config], "features": features}
    tiles = [*samples, _tile(9, n=40), {**_tile(10, n=3000), "intensity.npy": None},
             {**_tile(11, n=5000), "return_number.npy": None},
             {**_tile(12, n=30000, tile=150.0), "intensity.npy": np.arange(30000, dtype=np.float32) % 700},
             {**_tile(13, n=4000), "xyz.npy": _tile(13, n=4000)["xyz.npy"].astype(np.float64) + 0.123}]
    for i, s in enumerate(tiles):
        s = {k: v for k, v in s.items() if v is not None}
        a = M.prepare_sample(s, np.random.default_rng(i), cfg, train)
        b = bc.prepare_sample_main(s, np.random.default_rng(i), cfg, train)
        assert a.keys() == b.keys()
        for k in a:
            assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        va = M.prepare_sample(s, np.random.default_rng(i), cfg, train, cell_masked=False)
        vb = bc.prepare_sample_main(s, np.random.default_rng(i), cfg, train, cell_masked=False)
        mask = np.random.default_rng(i).random(len(va["cells"])) < 0.5
        a, b = M.finish_sample(va, mask, cfg, train), bc.finish_sample_main(vb, mask, cfg, train)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_percentiles_are_numpys_bit_for_bit():
    """The heap-based order statistics + numpy's interpolation give np.percentile exactly (floats,
    integers, ties, sorted and reversed input; percentiles near the middle go to numpy itself)."""
    rng = np.random.default_rng(0)
    for t in range(300):
        n = int(rng.integers(1, 3000)) if t % 2 else int(rng.integers(64, 40000))
        a = [rng.normal(300, 20, n), rng.integers(0, 65535, n).astype(np.uint16),
             np.round(rng.normal(0, 3, n)), rng.integers(0, 5, n).astype(np.uint8)][t % 4]
        a = np.sort(a) if t % 7 == 0 else np.sort(a)[::-1].copy() if t % 11 == 0 else a
        ps = [0.1, 99.9, 99.0, 1.0, 0.0, 100.0, 50.0, float(rng.uniform(0, 100))]
        for p, got in zip(ps, M.percentiles(a, ps)):
            assert got == np.percentile(a, p), (t, n, p)
    assert np.isnan(M.percentiles(np.array([1.0, np.nan, 3.0] * 40), [0.1])[0])  # NaN: numpy's answer


def test_batch_mask_scope_is_bev_maes(samples):
    """mask_scope: batch keeps int(0.3 × n) of the batch's n occupied cells visible (BEV-MAE)."""
    cfg = {**TINY, "mask_scope": "batch"}
    b = M.collate(samples, np.random.default_rng(3), cfg)
    again = M.collate(samples, np.random.default_rng(3), cfg)
    assert all(torch.equal(b[k], again[k]) for k in b)
    n = int(b["num_cells"].sum())
    assert int(b["num_masked"].sum()) == n - int(n * 0.3)
    # every masked voxel lies in a masked cell and the targets follow the cells
    assert len(b["target_points"]) == len(b["cell_index"]) == int(b["num_masked"].sum())
    cv = M.grid_geometry(cfg)["cell_voxels"]
    masked_cells = {tuple(r) for r in b["cell_index"].tolist()}
    vox_cells = {tuple(r) for r in _cells_of(b["coords"][b["masked"]], cv).tolist()}
    assert vox_cells <= masked_cells
    with pytest.raises(ValueError, match="mask_scope"):
        M.collate(samples, np.random.default_rng(3), {**TINY, "mask_scope": "cells"})


@pytest.mark.parametrize("config", ["tiny", "base"])
def test_warm_up_runs_the_preparation(config):
    """loader_for calls warm_up before forking workers: it must run on any config, train and eval."""
    M.warm_up(M.CONFIGS[config])
    M.warm_up({**M.CONFIGS[config], "features": "xyz", "augment": False})
