"""The WebDataset loader of the pre-training harness: fixed length per rank, coverage, determinism,
exact resume, safe decoding (DESIGN.md §9), and the synthetic build folders of ``train_data``."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train_data import make_samples, write_dataset  # noqa: E402

from als_datasets.errors import InputError  # noqa: E402
from als_datasets.train.info import DatasetInfo  # noqa: E402
from als_datasets.train.loader import (  # noqa: E402
    batches_per_rank,
    iter_samples,
    loader_for,
    make_loader,
    pad_collate,
    worker_batch_counts,
)


def keys_collate(samples, rng):
    """Batch = the sample keys plus one draw of the batch rng (checks the rng seeding too)."""
    return {"keys": [s["__key__"] for s in samples], "r": int(rng.integers(1 << 30))}


def _ds(tmp_path, name="ds", kind="als", n_train=25, shard_size=(7, 5, 9, 3, 1), **kw) -> DatasetInfo:
    kw.setdefault("n_points", 150)
    kw.setdefault("patch_size_px", 8)
    root = write_dataset(tmp_path / name, kind, n_train=n_train, n_val=kw.pop("n_val", 4),
                         shard_size=list(shard_size) if not isinstance(shard_size, int) else shard_size, **kw)
    return DatasetInfo.from_folder(root)


def _epoch(info, bs, world, nw, seed=3, epoch=0, buf=8):
    """All ranks' batches of one epoch: {rank: [batch, ...]}."""
    return {r: list(make_loader(info, "train", bs, keys_collate, seed=seed, epoch=epoch, rank=r, world_size=world,
                                num_workers=nw, shuffle_buffer=buf))
            for r in range(world)}


# --------------------------------------------------------------------------------------------
# bookkeeping
# --------------------------------------------------------------------------------------------
def test_batch_counts_pure():
    assert batches_per_rank(25, 3, 1) == 8
    assert batches_per_rank(25, 3, 4) == 2
    assert batches_per_rank(3, 4, 4) == 1  # fewer samples than one global batch: still one batch
    assert batches_per_rank(0, 4, 2) == 0
    counts = worker_batch_counts(7, 3)
    assert counts == [(0, 3), (0, 2), (0, 2)]
    assert worker_batch_counts(7, 3, start_batch=4) == [(2, 1), (1, 1), (1, 1)]
    assert sum(t for _, t in worker_batch_counts(7, 3, 5)) == 2


# --------------------------------------------------------------------------------------------
# fixed length per rank, coverage
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_len_equal_per_rank_uneven_shards(tmp_path, world):
    info = _ds(tmp_path)  # 25 samples in 5 uneven shards
    bs = 3
    for nw in (0, 1, 2):
        per_rank = _epoch(info, bs, world, nw)
        expect = 25 // (world * bs)
        for r, batches in per_rank.items():
            loader = make_loader(info, "train", bs, keys_collate, seed=3, rank=r, world_size=world, num_workers=nw)
            assert len(loader) == expect
            assert len(batches) == expect, (world, nw, r)
            assert all(len(b["keys"]) == bs for b in batches)


@pytest.mark.parametrize("world,nw,shards", [(1, 0, 8), (2, 0, 8), (2, 2, 8), (4, 0, 8), (2, 2, 2), (4, 0, 1)])
def test_union_covers_split_without_duplicates(tmp_path, world, nw, shards):
    n = 48
    info = _ds(tmp_path, n_train=n, shard_size=n // shards)
    bs = 4 if n % (world * max(1, nw) * 4) == 0 else 2
    per_rank = _epoch(info, bs, world, nw)
    seen = [k for batches in per_rank.values() for b in batches for k in b["keys"]]
    stored = [s["__key__"] for s in iter_samples(info, "train")]
    assert len(seen) == n and sorted(seen) == sorted(stored)


def test_fewer_shards_than_workers(tmp_path):
    info = _ds(tmp_path, n_train=20, shard_size=20)  # one shard, 2 ranks × 2 workers
    per_rank = _epoch(info, 5, 2, 2)
    assert [len(v) for v in per_rank.values()] == [2, 2]
    seen = Counter(k for v in per_rank.values() for b in v for k in b["keys"])
    assert len(seen) == 20 and set(seen.values()) == {1}


def test_fewer_samples_than_global_workers_still_yields(tmp_path):
    info = _ds(tmp_path, n_train=3, shard_size=3)
    per_rank = _epoch(info, 1, 4, 0)
    assert [len(v) for v in per_rank.values()] == [1, 1, 1, 1]
    per_rank = _epoch(info, 2, 2, 2)  # wraps around inside the worker to fill the batch
    assert all(len(v) == 1 and len(v[0]["keys"]) == 2 for v in per_rank.values())


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------
def test_order_depends_on_seed_and_epoch_only(tmp_path):
    info = _ds(tmp_path, n_train=40, shard_size=5)

    def order(seed, epoch, nw=0):
        return [k for b in make_loader(info, "train", 4, keys_collate, seed=seed, epoch=epoch, num_workers=nw,
                                       shuffle_buffer=16) for k in b["keys"]]

    a = order(0, 0)
    assert a == order(0, 0)
    assert a == order(0, 0, nw=0)
    assert a != order(0, 1)
    assert a != order(1, 0)
    assert sorted(a) == sorted(order(0, 1))  # 40 samples, one worker: a permutation of the split
    assert order(5, 2, nw=2) == order(5, 2, nw=2)


def test_batch_rng_differs_per_rank_and_batch(tmp_path):
    info = _ds(tmp_path, n_train=32, shard_size=8)
    per_rank = _epoch(info, 4, 2, 1)
    draws = [b["r"] for v in per_rank.values() for b in v]
    assert len(set(draws)) == len(draws)


def test_eval_mode_keeps_stored_order(tmp_path):
    info = _ds(tmp_path, n_train=24, shard_size=[10, 8, 6])
    stored = [s["__key__"] for s in iter_samples(info, "train")]
    got = [k for b in make_loader(info, "train", 4, keys_collate, seed=0, train=False) for k in b["keys"]]
    assert got == stored


# --------------------------------------------------------------------------------------------
# exact resume
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nw", [0, 1, 2])
def test_resume_equals_tail_of_uninterrupted_run(tmp_path, nw):
    info = _ds(tmp_path, n_train=38, shard_size=[9, 9, 9, 9, 2])
    full = list(make_loader(info, "train", 3, keys_collate, seed=7, epoch=2, num_workers=nw, shuffle_buffer=5))
    assert len(full) == 12
    for k in (1, 4, 5, 11, 12):
        loader = make_loader(info, "train", 3, keys_collate, seed=7, epoch=2, num_workers=nw, shuffle_buffer=5,
                             start_batch=k)
        assert len(loader) == 12 and loader.remaining == 12 - k
        assert list(loader) == full[k:], k


def test_resume_does_not_collate_skipped_batches(tmp_path):
    info = _ds(tmp_path, n_train=30, shard_size=6)
    calls = []

    def counting(samples, rng):
        calls.append(1)
        return keys_collate(samples, rng)

    full = list(make_loader(info, "train", 2, counting, seed=1, world_size=2, rank=1))
    calls.clear()
    tail = list(make_loader(info, "train", 2, counting, seed=1, world_size=2, rank=1, start_batch=5))
    assert tail == full[5:] and len(calls) == len(full) - 5
    with pytest.raises(ValueError):
        make_loader(info, "train", 2, counting, seed=1, start_batch=99)


def test_at_moves_the_position(tmp_path):
    info = _ds(tmp_path, n_train=20, shard_size=5)
    loader = make_loader(info, "train", 2, keys_collate, seed=4)
    assert list(loader.at(1, 3)) == list(make_loader(info, "train", 2, keys_collate, seed=4, epoch=1))[3:]


# --------------------------------------------------------------------------------------------
# safe decoding
# --------------------------------------------------------------------------------------------
def _npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _bad_folder(tmp_path, members: list[tuple[str, bytes]], corrupt=None, first=False) -> tuple[DatasetInfo, Path]:
    """A valid one-shard folder plus a shard holding ``members`` (or ``corrupt`` bytes), listed
    last (or ``first``) in ``_info.json``."""
    info = _ds(tmp_path, n_train=4, shard_size=4, n_val=0)
    root = Path(info.root)
    bad = root / "webdataset/train/shard-000001.tar"
    if corrupt is not None:
        bad.write_bytes(corrupt)
    else:
        with tarfile.open(bad, "w") as tar:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    meta = json.loads((root / "_info.json").read_text())
    sp = meta["splits"]["train"]
    at = 0 if first else len(sp["filenames"])
    sp["filenames"].insert(at, "webdataset/train/shard-000001.tar")
    sp["shard_lengths"].insert(at, 1)
    sp["num_samples"] += 1
    (root / "_info.json").write_text(json.dumps(meta))
    return DatasetInfo.from_folder(root), bad


GOOD = [("k1.json", b'{"a": 1}'), ("k1.xyz.npy", _npy(np.zeros((3, 3), np.float32)))]


@pytest.mark.parametrize("name,data,needle", [
    ("k1.pickle", b"\x80\x04N.", ".pickle members are refused"),
    ("k1.pkl", b"\x80\x04N.", ".pkl members are refused"),
    ("k1.pth", b"PK\x03\x04", ".pth members are refused"),
    ("k1.model.pt", b"PK\x03\x04", ".pt members are refused"),
    ("k1.cls", b"3", ".cls members are refused"),
    ("k1", b"x", "no extension"),
    ("k1.obj.npy", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "cannot decode"),
    ("k1.zip.npy", b"PK\x03\x04" + b"\0" * 40, "cannot decode"),
    ("k1.json", b"{not json", "cannot decode"),
])
@pytest.mark.parametrize("nw", [0, 1])
def test_forbidden_members_refused_naming_the_shard(tmp_path, name, data, needle, nw):
    members = [m for m in GOOD if not (name.endswith(".json") and m[0].endswith(".json"))] + [(name, data)]
    info, bad = _bad_folder(tmp_path, members)
    with pytest.raises(InputError) as ei:
        list(make_loader(info, "train", 1, keys_collate, seed=0, num_workers=nw, train=False))
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.path == str(bad) and needle in msg, msg
    with pytest.raises(InputError):
        list(iter_samples(info, "train"))


def test_forbidden_member_refused_even_when_skipped(tmp_path):
    info, bad = _bad_folder(tmp_path, GOOD + [("k1.pth", b"x")], first=True)  # sample 0 is bad
    with pytest.raises(InputError, match="pth members are refused"):
        list(make_loader(info, "train", 1, keys_collate, seed=0, start_batch=2, train=False))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing"])
def test_corrupt_tar_refused(tmp_path, kind):
    src = tmp_path / "src.tar"
    with tarfile.open(src, "w") as tar:
        for name, data in GOOD + [("k2.big.npy", _npy(np.arange(5000, dtype=np.float64)))]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    raw = src.read_bytes()
    corrupt = {"garbage": b"this is not a tar" * 100, "truncated": raw[: len(raw) // 2], "missing": b""}[kind]
    info, bad = _bad_folder(tmp_path, [], corrupt=corrupt)
    if kind == "missing":
        bad.unlink()
    for nw in (0, 1):
        with pytest.raises(InputError) as ei:
            list(make_loader(info, "train", 1, keys_collate, seed=0, num_workers=nw))
        assert ei.value.path == str(bad) and "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------
# decoding, collate helpers, model binding
# --------------------------------------------------------------------------------------------
def test_iter_samples_decodes_every_member(tmp_path):
    info = _ds(tmp_path, n_train=6, shard_size=4, n_val=2)
    samples = list(iter_samples(info, "train"))
    assert len(samples) == 6 and len(list(iter_samples(info, "validation"))) == 2
    s = samples[0]
    assert set(s) == {"__key__", "json", "xyz.npy", "intensity.npy", "return_number.npy",
                      "number_of_returns.npy", "classification.npy"}
    assert s["xyz.npy"].dtype == np.float32 and s["xyz.npy"].shape[1] == 3
    assert s["intensity.npy"].dtype == np.uint16 and s["json"]["tile_id"] == s["__key__"]
    ref = make_samples("als", 6, 0, "train", n_points=150)
    assert [r["__key__"] for r in ref] == [x["__key__"] for x in samples]
    assert np.array_equal(ref[2]["xyz.npy"], samples[2]["xyz.npy"])


def test_pad_collate_pads_with_lengths(tmp_path):
    info = _ds(tmp_path, n_train=8, shard_size=8)
    b = next(iter(make_loader(info, "train", 4, pad_collate, seed=0, num_workers=1)))
    n = b["xyz.npy.lengths"]
    assert b["xyz.npy"].shape == (4, int(n.max()), 3) and b["xyz.npy"].dtype == torch.float32
    i = int(n.argmin())
    assert torch.all(b["xyz.npy"][i, int(n[i]):] == 0)
    sat = _ds(tmp_path, "sat", "satellite", n_train=6, shard_size=6)
    b = next(iter(make_loader(sat, "train", 3, pad_collate, seed=0, train=False)))
    assert b["pixels.npy"].dtype == torch.uint16  # S2 (13 bands) and L8 (7 bands) mixed → padded
    assert b["pixels.npy"].shape[1:] == (13, 8, 8) and b["pixels.npy.lengths"].tolist() == [13, 13, 7]


class _FakeModel:
    KIND = "als"

    @staticmethod
    def collate(samples, rng, config, info, train=True):
        return {"n": torch.tensor(len(samples)), "train": torch.tensor(train), "k": config["k"],
                "kind": info.kind}


def test_loader_for_binds_model_collate(tmp_path):
    info = _ds(tmp_path, n_train=12, shard_size=4)
    loader = loader_for(info, "train", _FakeModel, {"batch_size": 4, "k": 9}, seed=0)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert batches[0]["n"].item() == 4 and batches[0]["k"] == 9 and batches[0]["train"].item()
    ev = list(loader_for(info, "train", _FakeModel, {"batch_size": 4, "k": 1}, batch_size=6, train=False))
    assert len(ev) == 2 and not ev[0]["train"].item()


# --------------------------------------------------------------------------------------------
# the synthetic build folders themselves
# --------------------------------------------------------------------------------------------
def test_train_data_is_deterministic_and_valid(tmp_path):
    from als_datasets.dataset.layout import validate

    for kind in ("als", "satellite", "dem"):
        a = write_dataset(tmp_path / f"{kind}-a", kind, n_train=10, n_val=3, shard_size=4, n_points=200,
                          patch_size_px=16)
        b = write_dataset(tmp_path / f"{kind}-b", kind, n_train=10, n_val=3, shard_size=4, n_points=200,
                          patch_size_px=16)
        assert validate(a) == []
        ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
        assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
        info = DatasetInfo.from_folder(a)
        assert info.kind == kind and info.num_samples("train") == 10 and info.num_samples("validation") == 3
        keys = [s["__key__"] for sp in ("train", "validation") for s in iter_samples(info, sp)]
        assert len(set(keys)) == 13 and all("." not in k for k in keys)


def test_train_data_labels_are_learnable():
    als = make_samples("als", 45, seed=1, n_points=400)
    multi = {lc: [] for lc in ("developed", "forest", "other")}
    roofs = {lc: [] for lc in multi}
    for s in als:
        lc = s["json"]["landcover"]
        multi[lc].append(float(np.mean(s["number_of_returns.npy"] > 1)))
        roofs[lc].append(float(np.mean(s["classification.npy"] == 6)))
    assert min(multi["forest"]) > 0.9 and max(multi["developed"] + multi["other"]) == 0
    assert min(roofs["developed"]) > 0.3 and max(roofs["forest"] + roofs["other"]) == 0
    assert {s["json"]["stratum"] for s in als} == {f"{a}/{b}" for a in multi for b in ("flat", "sloped", "steep")}

    sat = make_samples("satellite", 24, seed=0, patch_size_px=16)
    assert {s["json"]["sensor"] for s in sat} == {"sentinel-2-l2a", "landsat-8-oli"}
    for s in sat:
        assert s["pixels.npy"].dtype == np.uint16 and len(s["json"]["bands"]) == len(s["pixels.npy"])
        assert len(s["json"]["common_bands"]) == len(s["json"]["bands"])
    red_nir = {}
    for s in sat:
        cb = s["json"]["common_bands"]
        px = s["pixels.npy"].astype(float)
        nir = px[cb.index("nir08")].mean()
        red_nir.setdefault(s["json"]["biome"], []).append(nir / max(px[cb.index("red")].mean(), 1))
    assert min(red_nir["Temperate Broadleaf & Mixed Forests"]) > 2 > max(red_nir["Tundra"])

    dem = make_samples("dem", 24, seed=0, patch_size_px=16)
    assert all(s["pixels.npy"].dtype == np.float32 and s["pixels.npy"].shape == (1, 16, 16) for s in dem)
    assert any(np.isnan(s["pixels.npy"]).any() for s in dem)
