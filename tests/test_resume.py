"""Determinism (two builds → same sha256) and resume after an interrupted build."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from synth_inputs import DATA, landcover_around, split_las, write_recipe

import als_datasets.build as build_mod
import als_datasets.kinds.als.build as als_build
from als_datasets.build import run_build
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.recipe import load_recipe

MVK = DATA / "als" / "mvk-thin.las"


def _digest(out):
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def recipe_path(tmp_path):
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds,
                     pattern=lambda h, w: (41 + (__import__("numpy").indices((h, w))[1] < w // 3) * -19))
    return write_recipe(tmp_path / "r.yaml", name="mvk", tile_size_m=500, grid_res_m=25, samples_per_project=9,
                        landcover={"path": "lc.tif"}, projects=[{"name": "mvk", "pointclouds": [str(MVK)]}],
                        output={"dir": "out", "shard_max_samples": 2})


def test_two_builds_identical(tmp_path, recipe_path):
    a = run_build(load_recipe(recipe_path, out_dir=tmp_path / "a")).out_dir
    b = run_build(load_recipe(recipe_path, out_dir=tmp_path / "b"), workers=2).out_dir
    da, db = _digest(a), _digest(b)
    da.pop("recipe.yaml"), db.pop("recipe.yaml")  # it records the (different) output folder
    assert da == db
    assert any(k.endswith(".tar") for k in da) and any(k.endswith(".parquet") for k in da)
    assert not any(".build" in k or ".tmp-" in k for k in da)


def test_rerun_is_noop_and_repairs(tmp_path, recipe_path):
    r = load_recipe(recipe_path, out_dir=tmp_path / "o")
    res = run_build(r)
    clean = _digest(res.out_dir)
    again = run_build(r)
    assert again.shards_written == 0 and again.files_read == 0
    assert _digest(res.out_dir) == clean
    # a damaged shard, a missing one and a leftover temp file are repaired, nothing else rewritten
    tar = res.out_dir / "webdataset/train/shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-10] + b"0123456789")
    (res.out_dir / "parquet/train/part-000002.parquet").unlink()
    (res.out_dir / "webdataset/train/.shard-000003.tar.tmp-1-abc").write_bytes(b"junk")
    fixed = run_build(r)
    assert fixed.shards_written == 2
    assert _digest(res.out_dir) == clean


def test_resume_after_interruption(tmp_path, recipe_path, monkeypatch):
    clean = _digest(run_build(load_recipe(recipe_path, out_dir=tmp_path / "clean")).out_dir)
    r = load_recipe(recipe_path, out_dir=tmp_path / "o")
    real = build_mod._run_shard
    calls = {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] == 3:  # die in the middle of the third shard: a temp file is left behind
            d = tmp_path / "o" / "webdataset" / task.split
            d.mkdir(parents=True, exist_ok=True)
            (d / f".shard-{task.index:06d}.tar.tmp-99-dead").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(build_mod, "_run_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        run_build(r)
    assert not (tmp_path / "o" / "manifest.json").exists()
    monkeypatch.setattr(build_mod, "_run_shard", real)
    res = run_build(r)
    assert res.shards_skipped == 2
    d = _digest(res.out_dir)
    d.pop("recipe.yaml"), clean.pop("recipe.yaml")
    assert d == clean


def test_changed_recipe_rewrites(tmp_path, recipe_path):
    """Another recipe into a finished build is refused before any work; ``overwrite`` replaces
    it, ending as a fresh build of the new recipe."""
    r = load_recipe(recipe_path, out_dir=tmp_path / "o")
    run_build(r)
    before = _digest(tmp_path / "o")
    r2 = load_recipe(recipe_path, out_dir=tmp_path / "o", overrides={"strategy": "random"})
    with pytest.raises(InputError, match=r"different recipe \(strategy geospatial → random\); pass --overwrite"):
        run_build(r2)
    assert _digest(tmp_path / "o") == before
    res = run_build(r2, overwrite=True)
    assert res.shards_written > 0
    fresh = run_build(load_recipe(recipe_path, out_dir=tmp_path / "f", overrides={"strategy": "random"}))
    da, db = _digest(res.out_dir), _digest(fresh.out_dir)
    da.pop("recipe.yaml"), db.pop("recipe.yaml")
    assert da == db
    shutil.rmtree(tmp_path / "f")


def _rewrite_points(path):
    """Rewrite a point cloud in place with other points over the same ground: every z 7 m higher
    and other intensities (same extent, count and size, so the frame and the draw do not change)."""
    import laspy
    import numpy as np

    las = laspy.read(path)
    las.z = las.z + 7.0
    las.intensity = (np.asarray(las.intensity, dtype=np.uint32) * 3 + 11).astype(np.uint16)
    las.write(path)


@pytest.fixture
def copied_recipe(tmp_path):
    """The mvk recipe over a copy of the point cloud that a test may rewrite."""
    pc = tmp_path / "pc" / "mvk.las"
    pc.parent.mkdir()
    shutil.copy(MVK, pc)
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds,
                     pattern=lambda h, w: (41 + (__import__("numpy").indices((h, w))[1] < w // 3) * -19))
    rp = write_recipe(tmp_path / "r.yaml", name="mvk", tile_size_m=500, grid_res_m=25, samples_per_project=9,
                      landcover={"path": "lc.tif"}, projects=[{"name": "mvk", "pointclouds": [str(pc)]}],
                      output={"dir": "out", "shard_max_samples": 2})
    return rp, pc


def _digest_no_recipe(out):
    d = _digest(out)
    d.pop("recipe.yaml")  # it records the output folder
    return d


def test_rewritten_input_changes_a_clean_build(tmp_path, copied_recipe):
    """What the test below relies on: the rewritten file gives other samples (not only other bytes
    somewhere), while the plan (tiles, draw) stays the same."""
    import json

    import numpy as np
    import pandas as pd

    rp, pc = copied_recipe
    before = run_build(load_recipe(rp, out_dir=tmp_path / "before")).out_dir
    _rewrite_points(pc)
    after = run_build(load_recipe(rp, out_dir=tmp_path / "after")).out_dir
    da, db = _digest_no_recipe(before), _digest_no_recipe(after)
    shards = [k for k in da if k.endswith((".tar", ".parquet")) and "/" in k]
    assert shards and all(da[k] != db[k] for k in shards)
    fa, fb = (pd.read_parquet(o / "frame.parquet") for o in (before, after))
    for col in ("tile_id", "eligible", "draw_rank", "selected", "split"):
        assert fa[col].equals(fb[col]), col
    assert np.allclose(fa["slope_mean_deg"], fb["slope_mean_deg"])  # z shifted: slopes equal but for rounding
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in (before, after))
    assert [e["path"] for e in ma["shards"]] == [e["path"] for e in mb["shards"]]


def test_rewritten_input_is_rebuilt_not_resumed(tmp_path, copied_recipe):
    """A point cloud rewritten with other points between two builds into the same folder: the
    second build must equal a clean build of the new inputs (no shard of the old points kept)."""
    rp, pc = copied_recipe
    run_build(load_recipe(rp, out_dir=tmp_path / "o"))
    _rewrite_points(pc)
    res = run_build(load_recipe(rp, out_dir=tmp_path / "o"))
    fresh = run_build(load_recipe(rp, out_dir=tmp_path / "f")).out_dir
    assert _digest_no_recipe(res.out_dir) == _digest_no_recipe(fresh)


def test_holdout_split_stable(tmp_path, recipe_path):
    from als_datasets.plan import split_of

    ids = [f"p_c{c}_r{r}" for c in range(40) for r in range(40)]
    a = [split_of(i, 41, 0.2) for i in ids]
    assert a == [split_of(i, 41, 0.2) for i in ids]
    assert 0.15 < a.count("validation") / len(a) < 0.25
    assert {split_of(i, 41, 0.0) for i in ids} == {"train"}
    r = load_recipe(recipe_path, out_dir=tmp_path / "h", overrides={"holdout_fraction": 0.4})
    out = run_build(r).out_dir
    import json

    info = json.loads((out / "_info.json").read_text())
    assert set(info["splits"]) == {"train", "validation"}
    assert (out / "webdataset" / "validation").is_dir() and (out / "parquet" / "validation").is_dir()
    from datasets import load_dataset

    ds = load_dataset(str(out))
    assert set(ds) == {"train", "validation"}
    for split, d in ds.items():
        assert all(m["split"] == split == split_of(m["tile_id"], 41, 0.4) for m in d["json"])


def test_smaller_rebuild_removes_stale_shards(tmp_path, recipe_path):
    out = tmp_path / "o"
    run_build(load_recipe(recipe_path, out_dir=out))
    assert len(list((out / "parquet" / "train").glob("*.parquet"))) == 5
    res = run_build(load_recipe(recipe_path, out_dir=out, overrides={"samples_per_project": 3}), overwrite=True)
    assert res.samples == 3
    assert len(list((out / "parquet" / "train").glob("*.parquet"))) == 2
    assert len(list((out / "webdataset" / "train").glob("*.tar"))) == 2


def test_failed_sample_leaves_no_shard(tmp_path, recipe_path, monkeypatch):
    import als_datasets.kinds.als.tasks as tasks

    def broken(task, rec):
        raise RuntimeError("boom")

    monkeypatch.setattr(tasks, "make_sample", broken)
    with pytest.raises(RuntimeError):
        run_build(load_recipe(recipe_path, out_dir=tmp_path / "o"))
    written = [p for p in (tmp_path / "o").rglob("*") if p.suffix in (".tar", ".parquet") or ".tmp-" in p.name]
    assert written == []


def test_interrupted_reading_resumes_with_the_unread_files(tmp_path, monkeypatch):
    """Files routed before the interruption are not read again; the result equals a clean build."""
    # two different files (the same data twice would be refused): mvk-thin.las's west and east halves
    west, east = split_las(MVK, tmp_path / "mvk-west.las", tmp_path / "mvk-east.las")
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds)
    rp = write_recipe(tmp_path / "r2.yaml", name="two", samples_per_project=4, landcover={"path": "lc.tif"},
                      projects=[{"name": "two", "pointclouds": [str(west), str(east)]}])
    clean = _digest(run_build(load_recipe(rp, out_dir=tmp_path / "clean")).out_dir)
    real = als_build.run_route_task
    seen = []

    def dying(task, progress=None):
        seen.append(task.file_index)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(task, progress)

    monkeypatch.setattr(als_build, "run_route_task", dying)
    with pytest.raises(KeyboardInterrupt):
        run_build(load_recipe(rp, out_dir=tmp_path / "o"))
    monkeypatch.setattr(als_build, "run_route_task", real)
    res = run_build(load_recipe(rp, out_dir=tmp_path / "o"))
    assert res.files_read == 1
    d = _digest(res.out_dir)
    d.pop("recipe.yaml"), clean.pop("recipe.yaml")
    assert d == clean


def test_dask_executor_writes_the_same_bytes(tmp_path, recipe_path):
    pytest.importorskip("distributed")
    from als_datasets.executors import make_executor

    local = _digest(run_build(load_recipe(recipe_path, out_dir=tmp_path / "local" / "o")).out_dir)
    with make_executor("dask", workers=2) as ex:
        assert ex.name == "dask" and len(ex.client.scheduler_info()["workers"]) == 2
        res = run_build(load_recipe(recipe_path, out_dir=tmp_path / "dask" / "o"), executor=ex)
    assert res.shards_written > 1
    d = _digest(res.out_dir)
    d.pop("recipe.yaml"), local.pop("recipe.yaml")  # it records the output folder
    assert d == local


def test_executor_errors():
    from als_datasets.errors import InputError
    from als_datasets.executors import make_executor

    with pytest.raises(InputError, match="unknown executor"):
        make_executor("spark")
    with pytest.raises(InputError, match="--executor dask"):
        make_executor("local", scheduler="tcp://127.0.0.1:1")
