"""Shard writers, explicit features and the dataset card: the output folder loads with
``datasets`` (Parquet and WebDataset configs) and ``webdataset`` with the same samples."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from als_datasets.dataset.card import card_yaml, declared_configs, load_config, read_card_yaml, write_readme
from als_datasets.dataset.features import features_for_samples, normalize_json, to_arrow_row
from als_datasets.shards.writer import (
    atomic_write,
    is_leftover_tmp,
    json_bytes,
    sha256_file,
    tar_shard_bytes,
    write_parquet_shard,
    write_tar_shard,
)

JSON_SCHEMA = {"slope_mean_deg": float, "notes": str, "source_files": [str]}
SIZES = [0, 1, 7, 33, 2, 0, 15, 64, 3, 9, 1, 40, 5, 0, 11, 21, 6, 2, 30, 4]
SHARDS = [(0, 8), (8, 16), (16, 20)]


def als_sample(i: int) -> dict:
    rng = np.random.default_rng(1000 + i)
    n = SIZES[i]
    dev = float(rng.random())
    return {
        "__key__": f"or-lane-2015_c{i:03d}_r{i % 4:03d}",
        "xyz.npy": (rng.random((n, 3)) * [500, 500, 80]).astype(np.float32),
        "intensity.npy": rng.integers(0, 65535, n, dtype=np.uint16),
        "return_number.npy": rng.integers(1, 4, n, dtype=np.uint8),
        "number_of_returns.npy": rng.integers(1, 4, n, dtype=np.uint8),
        "classification.npy": rng.choice(np.array([1, 2, 5, 6], dtype=np.uint8), n),
        "json": {
            "project": "or-lane-2015",
            "tile_id": f"c{i:03d}_r{i % 4:03d}",
            "crs": np.int64(32610),  # numpy scalar on purpose
            "origin": [500000.0 + 500 * i, 4800000.0],
            "lon_lat": [float(-123 + i * 0.01), 44.0],
            "landcover": "developed" if dev > 0.5 else "forest",
            "landcover_fractions": {"developed": dev, "forest": 1.0 - dev, "other": 0.0},
            "slope_mean_deg": None if i % 6 == 0 else (float("nan") if i == 7 else np.float32(3.25 * i)),
            "point_count": n,
            "draw_rank": i,
            "weight": 1.0 / 20,
            "eligible": True,
            "notes": None,
            "source_files": [] if i == 3 else [f"or_lane/{i}.laz"],
        },
    }


SAMPLES = [als_sample(i) for i in range(len(SIZES))]


def expected_json(s: dict) -> dict:
    return normalize_json(s["json"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    out = root / "out"
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(root / "hf_home"))
        mp.setenv("HF_DATASETS_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        features = features_for_samples(SAMPLES[1], json_schema=JSON_SCHEMA)
        manifest = []
        for j, (a, b) in enumerate(SHARDS):
            tar = out / "webdataset" / "train" / f"shard-{j:06d}.tar"
            pq = out / "parquet" / "train" / f"part-{j:06d}.parquet"
            manifest.append(write_tar_shard(tar, iter(SAMPLES[a:b]), features=features))
            manifest.append(write_parquet_shard(pq, (s for s in SAMPLES[a:b]), features, row_group_size=3))
        yaml_dict = card_yaml(
            features,
            {"train": {"num_examples": len(SAMPLES),
                       "num_bytes": sum(e.get("arrow_bytes", 0) for e in manifest)}},  # Parquet entries have it
            pretty_name="Synthetic ALS tiles",
            license="cc-by-4.0",
            tags=["lidar", "geospatial"],
            extra={"task_categories": ["other"]},
        )
        readme = write_readme(out, yaml_dict, "# Synthetic ALS tiles\n\nTest data.\n")
        yield {"out": out, "cache": cache, "features": features, "manifest": manifest, "readme": readme}


# --------------------------------------------------------------------------------------------
def test_features_are_explicit(built):
    from datasets import Array2D, List, Value

    f = built["features"]
    assert list(f) == sorted(f, key=lambda k: (k != "__key__", k))
    assert f["xyz.npy"] == Array2D(shape=(None, 3), dtype="float32")
    assert f["intensity.npy"] == List(Value("uint16"))
    assert f["classification.npy"] == List(Value("uint8"))
    j = f["json"]
    assert j["crs"] == Value("int64") and j["weight"] == Value("float64") and j["eligible"] == Value("bool")
    assert j["slope_mean_deg"] == Value("float64") and j["notes"] == Value("string")
    assert j["landcover_fractions"] == {k: Value("float64") for k in ("developed", "forest", "other")}
    assert j["source_files"] == List(Value("string")) and j["origin"] == List(Value("float64"))


def test_features_need_schema_for_none():
    with pytest.raises(ValueError, match="notes.*json_schema"):
        features_for_samples(SAMPLES[1], json_schema={"slope_mean_deg": float, "source_files": [str]})
    with pytest.raises(ValueError, match="source_files.*json_schema"):
        features_for_samples(SAMPLES[3], json_schema={"slope_mean_deg": float, "notes": str})


def test_manifest_entries(built):
    entries = built["manifest"]
    assert [e["samples"] for e in entries] == [8, 8, 8, 8, 4, 4]
    for e in entries:
        p = Path(e["path"])
        assert e["bytes"] == p.stat().st_size
        assert e["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest() == sha256_file(p)
    leftovers = [p for p in built["out"].rglob("*") if is_leftover_tmp(p)]
    assert leftovers == []


def test_tar_layout_is_deterministic(built, tmp_path):
    tar_path = built["out"] / "webdataset" / "train" / "shard-000000.tar"
    with tarfile.open(tar_path) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    expected = [f"{s['__key__']}.{n}" for s in SAMPLES[:8] for n in sorted(k for k in s if k != "__key__")]
    assert names == expected
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert tar_shard_bytes(SAMPLES[:8]) == tar_path.read_bytes()
    again = write_tar_shard(tmp_path / "again.tar", SAMPLES[:8])
    assert again["sha256"] == built["manifest"][0]["sha256"]
    with tarfile.open(tar_path) as tf:
        j = json.loads(tf.extractfile(f"{SAMPLES[7]['__key__']}.json").read())
    assert j["slope_mean_deg"] is None  # NaN -> null
    assert json_bytes({"b": np.float32(1.5), "a": np.int16(2)}) == b'{"a":2,"b":1.5}'


def test_parquet_is_deterministic(built, tmp_path):
    feats = built["features"]
    a = write_parquet_shard(tmp_path / "a.parquet", iter(SAMPLES[:8]), feats, row_group_size=3)
    b = write_parquet_shard(tmp_path / "b.parquet", iter(SAMPLES[:8]), feats, row_group_size=3)
    assert a["sha256"] == b["sha256"] == built["manifest"][1]["sha256"]
    import pyarrow.parquet as pq

    md = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert md.num_row_groups == 3 and md.num_rows == 8
    assert md.row_group(0).column(0).compression == "ZSTD"
    assert b"huggingface" in md.metadata


def test_writers_reject_bad_samples(built, tmp_path):
    feats = built["features"]
    bad_key = dict(SAMPLES[0], __key__="tile.1")
    with pytest.raises(ValueError, match="key"):
        write_tar_shard(tmp_path / "x.tar", [bad_key])
    with pytest.raises(ValueError, match="duplicate"):
        write_tar_shard(tmp_path / "x.tar", [SAMPLES[0], SAMPLES[0]])
    extra = dict(SAMPLES[1], json=dict(SAMPLES[1]["json"], surprise=1))
    with pytest.raises(ValueError, match="surprise"):
        write_parquet_shard(tmp_path / "x.parquet", [extra], feats)
    wrong_dtype = dict(SAMPLES[1], **{"xyz.npy": SAMPLES[1]["xyz.npy"].astype(np.float64)})
    with pytest.raises(TypeError, match="xyz"):
        write_parquet_shard(tmp_path / "x.parquet", [wrong_dtype], feats)
    inf = dict(SAMPLES[1], json=dict(SAMPLES[1]["json"], weight=float("inf")))
    with pytest.raises(ValueError, match="infinite"):
        write_tar_shard(tmp_path / "x.tar", [inf])
    assert not list(tmp_path.iterdir())  # nothing left behind by the failed writes


def test_atomic_write(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write(target, lambda f: f.write(b"first"))
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]

    def boom(f):
        f.write(b"half-written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, boom)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    assert is_leftover_tmp(f".file.bin.tmp-{os.getpid()}-0a1b2c") and not is_leftover_tmp("file.bin")


def _check_rows(rows: list[dict]) -> None:
    assert [r["__key__"] for r in rows] == [s["__key__"] for s in SAMPLES]
    for r, s in zip(rows, SAMPLES, strict=True):
        for name in (
            "xyz.npy",
            "intensity.npy",
            "return_number.npy",
            "number_of_returns.npy",
            "classification.npy",
        ):
            got = np.asarray(r[name], dtype=s[name].dtype).reshape(s[name].shape)
            np.testing.assert_array_equal(got, s[name])
        assert r["json"] == expected_json(s)


def test_card_declares_one_loadable_config(built):
    """One config (DESIGN §4: every declared config loads with a plain load_dataset(repo, config));
    the tars are described in the card's text, not declared; no made-up num_bytes."""
    card = read_card_yaml(built["out"])
    cfgs = declared_configs(card)
    assert list(cfgs) == ["default"]
    assert cfgs["default"]["data_files"] == {"train": ["parquet/train/*.parquet"]}
    assert cfgs["default"]["features"] == built["features"]
    assert cfgs["default"]["splits"] == {"train": len(SAMPLES)}
    assert card["license"] == "cc-by-4.0" and card["size_categories"] == ["n<1K"]
    assert card["task_categories"] == ["other"]
    # num_bytes: what datasets generates from the Parquet shards (never a made-up 0); unknown: left out
    info = card["dataset_info"]
    assert info["splits"][0]["num_bytes"] == info["dataset_size"] > 0
    bare = card_yaml(built["features"], {"train": len(SAMPLES)}, pretty_name="x", license="mit")
    assert "num_bytes" not in str(bare) and "dataset_size" not in str(bare)
    assert built["readme"].read_text().startswith("---\n")


def test_load_dataset_parquet_and_webdataset_agree(built):
    import datasets

    out, cache = built["out"], str(built["cache"])
    pq_ds = datasets.load_dataset(str(out), split="train", cache_dir=cache)
    wds_ds = load_config(out, "webdataset", split="train", cache_dir=cache)
    for ds in (pq_ds, wds_ds):
        assert ds.features == built["features"]
        assert ds.column_names == list(built["features"])
        _check_rows(ds.to_list())
    assert pq_ds.to_list() == wds_ds.to_list()
    # to_arrow_row gives what load_dataset returns
    assert to_arrow_row(SAMPLES[3], built["features"]) == pq_ds[3]
    # numpy format keeps the (N, 3) float32 shape, also for N = 0
    for ds in (pq_ds, wds_ds):
        npds = ds.with_format("numpy")
        for i in (0, 3):
            x = npds[i]["xyz.npy"]
            assert x.dtype == np.float32 and x.shape == (SIZES[i], 3)


def test_every_declared_config_loads_plainly(built):
    """What a user reading the card types: load_dataset(OUT, config), map-style and streaming."""
    import datasets

    out, cache = str(built["out"]), str(built["cache"])
    card = read_card_yaml(built["out"])
    for name in declared_configs(card):
        ds = datasets.load_dataset(out, name, split="train", cache_dir=cache)
        assert ds.features == built["features"]
        assert ds.info.splits["train"].num_bytes == card["dataset_info"]["splits"][0]["num_bytes"]
        _check_rows(ds.to_list())
        _check_rows(list(datasets.load_dataset(out, name, split="train", streaming=True)))
    plain = datasets.load_dataset("webdataset", data_files={"train": f"{out}/webdataset/train/*.tar"},
                                  split="train", features=built["features"], cache_dir=cache)
    _check_rows(plain.to_list())


def test_webdataset_library_reads_tars(built):
    import webdataset as wds

    urls = sorted(str(p) for p in (built["out"] / "webdataset" / "train").glob("*.tar"))
    pipeline = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    rows = []
    for s in pipeline:
        rows.append({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"})
    assert len(rows) == len(SAMPLES)
    for r, s in zip(rows, SAMPLES, strict=True):
        assert r["__key__"] == s["__key__"]
        for name in ("xyz.npy", "intensity.npy", "classification.npy"):
            assert r[name].dtype == s[name].dtype and r[name].shape == s[name].shape
            np.testing.assert_array_equal(r[name], s[name])
        assert r["json"] == expected_json(s)
        if SAMPLES.index(s) == 7:
            assert r["json"]["slope_mean_deg"] is None and not math.isnan(r["json"]["weight"])


def test_tar_casts_to_declared_dtypes(built, tmp_path):
    """With features, a safely castable array (uint8 for a uint16 field, big-endian float32) is
    stored with the declared dtype, so raw webdataset readers see what the Parquet rows hold."""
    s = dict(SAMPLES[2])
    s["intensity.npy"] = np.arange(SIZES[2], dtype=np.uint8)
    s["xyz.npy"] = SAMPLES[2]["xyz.npy"].astype(">f4")
    import webdataset as wds

    write_tar_shard(tmp_path / "c.tar", [s], features=built["features"])
    (r,) = list(wds.WebDataset([str(tmp_path / "c.tar")], shardshuffle=False, empty_check=False).decode())
    assert r["intensity.npy"].dtype == np.dtype("<u2")
    assert r["xyz.npy"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(r["xyz.npy"], SAMPLES[2]["xyz.npy"])


def test_streaming_configs_agree(built):
    """Streaming: same rows and features; note the webdataset config yields the decoded numpy
    arrays as they are (no Arrow round trip) where Parquet yields lists: compare via np.asarray."""
    import datasets

    out = built["out"]
    pq_it = datasets.load_dataset(str(out), split="train", streaming=True)
    wds_it = load_config(out, "webdataset", split="train", streaming=True)
    assert pq_it.features == wds_it.features == built["features"]
    _check_rows(list(pq_it))
    _check_rows(list(wds_it))
