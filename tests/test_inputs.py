"""A build's bytes depend on its inputs alone (issue 12): a changed input file or CRS override reruns
exactly the shards it touches, the order the files are listed in does not matter, a file is read
once however many patterns match it, the same data under two names is refused, and a pattern that
matches nothing is an error."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, split_las, write_recipe

import als_datasets.build as build_mod
from als_datasets.build import run_build
from als_datasets.cli import main
from als_datasets.errors import InputError
from als_datasets.kinds.als.build import route_tasks
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
from als_datasets.plan import make_plan
from als_datasets.recipe import load_recipe

MVK = DATA / "als" / "mvk-thin.las"


def _digest(out, skip=("recipe.yaml",)):
    """sha256 of every output file but ``skip`` (recipe.yaml records the output folder)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in skip}


def _mixed_landcover(h, w):
    return 41 + (np.indices((h, w))[1] < w // 3) * -19  # developed in the west third, forest elsewhere


@pytest.fixture
def halves(tmp_path):
    """mvk-thin.las as two different files (west and east of its median x), land cover around it."""
    west, east = split_las(MVK, tmp_path / "west.las", tmp_path / "east.las")
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, pattern=_mixed_landcover)
    return west, east


def _one_project(tmp_path, files, name="r.yaml"):
    return write_recipe(tmp_path / name, name="mvk", tile_size_m=250, grid_res_m=25, samples_per_project=9,
                        landcover={"path": "lc.tif"}, projects=[{"name": "mvk", "pointclouds": [str(f) for f in files]}],
                        output={"dir": "out", "shard_max_samples": 2})


def _record_shards(monkeypatch) -> list[tuple[str, int]]:
    ran, real = [], build_mod._run_shard

    def recording(task):
        ran.append((task.split, task.index))
        return real(task)

    monkeypatch.setattr(build_mod, "_run_shard", recording)
    return ran


def _shards_touched(recipe, out, path) -> tuple[set[tuple[str, int]], int]:
    """The shards holding a tile whose box the file's bounds touch (the tiles it is routed to),
    and the number of shards."""
    plan = make_plan(recipe)
    tiles = {tile for t in route_tasks(plan, set(plan.selected["tile_id"]), out / ".build" / "staging")
             if t.info.path == str(path) for _, _, tile in t.tiles}
    return {(s.split, s.index) for s in plan.shards if tiles & set(s.keys)}, len(plan.shards)


def test_rewritten_file_reruns_exactly_the_shards_it_touches(tmp_path, halves, monkeypatch):
    west, east = halves
    rp = _one_project(tmp_path, [west, east])
    out = tmp_path / "o"
    run_build(load_recipe(rp, out_dir=out))
    again = run_build(load_recipe(rp, out_dir=out))
    assert again.shards_written == 0 and again.files_read == 0
    # another version of east.las: same size, header and name, other intensities, a newer mtime
    st = east.stat()
    split_las(MVK, tmp_path / "west-again.las", east, east_intensity_add=7)
    os.utime(east, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert east.stat().st_size == st.st_size
    expected, n = _shards_touched(load_recipe(rp, out_dir=out), out, east)
    assert expected and len(expected) < n  # the test means something: some shards untouched
    ran = _record_shards(monkeypatch)
    res = run_build(load_recipe(rp, out_dir=out))
    assert set(ran) == expected and res.shards_written == len(expected)
    clean = run_build(load_recipe(rp, out_dir=tmp_path / "clean")).out_dir
    assert _digest(out) == _digest(clean)
    ran.clear()
    assert run_build(load_recipe(rp, out_dir=out)).shards_written == 0 and ran == []


def test_changed_pointcloud_crs_reruns_only_that_projects_shards(tmp_path, halves, monkeypatch):
    """Adding a CRS override (here: z in metres, not US survey feet) to one project rewrites the
    shards holding its tiles and nothing else; the result equals a clean build."""
    west, east = halves
    projects = []
    for f in (west, east):
        lon0, lat0, lon1, lat1 = footprint_lonlat(inspect_pointcloud(f)).bounds
        ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
        (tmp_path / f"{f.stem}.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
        projects.append({"name": f.stem, "boundary": f"{f.stem}.geojson", "pointclouds": [str(f)]})
    # a flat DEM: slope (so the plan) does not depend on the points' z
    landcover_around(tmp_path / "dem.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, code=50)
    data = dict(name="halves", tile_size_m=250, grid_res_m=25, samples_per_project=4, landcover={"path": "lc.tif"},
                dem={"path": "dem.tif"}, projects=projects, output={"dir": "out", "shard_max_samples": 3})
    rp = write_recipe(tmp_path / "r.yaml", **data)
    out = tmp_path / "o"
    run_build(load_recipe(rp, out_dir=out))
    before = _digest(out)
    projects[1]["pointcloud_crs"] = "EPSG:2255+5703"  # Mississippi West (ftUS) + NAVD88 height (metres)
    write_recipe(rp, **data)
    r = load_recipe(rp, out_dir=out)
    plan = make_plan(r)
    expected = {(s.split, s.index) for s in plan.shards
                if set(plan.selected[plan.selected["project"] == "east"]["tile_id"]) & set(s.keys)}
    assert expected and len(expected) < len(plan.shards)
    ran = _record_shards(monkeypatch)
    with pytest.raises(InputError, match="different recipe"):  # a changed recipe needs --overwrite (item 8)
        run_build(r)
    assert ran == [] and _digest(out) == before
    run_build(r, overwrite=True)  # ... and then reruns only what the change touches
    assert set(ran) == expected
    after = _digest(out)
    assert after != before
    assert _digest(run_build(load_recipe(rp, out_dir=tmp_path / "clean")).out_dir) == after
    ran.clear()
    assert run_build(load_recipe(rp, out_dir=out)).shards_written == 0 and ran == []


def test_listing_order_does_not_change_the_bytes(tmp_path, halves):
    west, east = halves
    a = run_build(load_recipe(_one_project(tmp_path, [west, east], "a.yaml"), out_dir=tmp_path / "a")).out_dir
    b = run_build(load_recipe(_one_project(tmp_path, [east, west], "b.yaml"), out_dir=tmp_path / "b")).out_dir
    assert _digest(a) == _digest(b)
    import pyarrow.parquet as pq

    metas = [m for p in sorted((a / "parquet").rglob("*.parquet")) for m in pq.read_table(p)["json"].to_pylist()]
    assert any(len(m["source_files"]) == 2 for m in metas)  # a tile with points of both files: order matters there


def test_file_matched_twice_is_read_once(tmp_path):
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, pattern=_mixed_landcover)
    once = load_recipe(_one_project(tmp_path, [MVK], "once.yaml"), out_dir=tmp_path / "once")
    twice = load_recipe(_one_project(tmp_path, [MVK, DATA / "als" / "mvk-*.las", DATA / "als" / ".." / "als" / "mvk-thin.las"],
                                     "twice.yaml"), out_dir=tmp_path / "twice")
    assert twice.projects[0].pointclouds == once.projects[0].pointclouds == (MVK,)
    res = run_build(twice)
    assert res.files_read == 1
    assert _digest(res.out_dir) == _digest(run_build(once).out_dir)
    # a link is the file it points to: kept once, under the first of its names in path order
    (tmp_path / "link.las").symlink_to(MVK)
    linked = load_recipe(_one_project(tmp_path, [MVK, tmp_path / "link.las"], "linked.yaml"))
    assert linked.projects[0].pointclouds == (min(MVK, tmp_path / "link.las"),)


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_same_data_under_two_names_refused(tmp_path, capsys):
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, pattern=_mixed_landcover)
    shutil.copy(MVK, tmp_path / "copy-of-mvk.las")
    err = _run(["build", str(_one_project(tmp_path, [MVK, tmp_path / "copy-of-mvk.las"])), "-q"], capsys)
    assert "copy-of-mvk.las" in err and "mvk-thin.las" in err and "same data" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_pattern_matching_nothing_is_an_error(tmp_path, capsys):
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, pattern=_mixed_landcover)
    rp = write_recipe(tmp_path / "typo.yaml", name="mvk", tile_size_m=500, grid_res_m=25, samples_per_project=9,
                      landcover={"path": "lc.tif"},
                      projects=[{"name": "mvk", "pointclouds": [str(MVK)]},
                                {"name": "demo-vally", "pointclouds": ["pointclouds/demo-vally/*.laz"]}],
                      output={"dir": "out"})
    err = _run(["build", str(rp), "-q"], capsys)
    assert "typo.yaml" in err and "demo-vally" in err and "pointclouds/demo-vally/*.laz" in err and "matches no file" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_rewritten_raster_band_reruns_its_shards(tmp_path, monkeypatch):
    """A band file rewritten in place (same path and size) is a new input: its shards are rewritten."""
    import rasterio
    from rasterio.transform import from_origin

    def write_dem(offset):
        z = (np.add.outer(np.arange(128.0), np.arange(128.0)) + 200 + offset).astype("float32")
        with rasterio.open(tmp_path / "dem.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="float32",
                           crs="EPSG:32633", transform=from_origin(500000, 4200000, 30, 30), nodata=-9999) as ds:
            ds.write(z, 1)

    write_dem(0)
    rp = write_recipe(tmp_path / "dem.yaml", kind="dem", samples=4, patch_size_px=64, max_nodata_fraction=0.5,
                      scenes=[{"name": "d", "path": "dem.tif"}], output={"shard_max_samples": 2})
    out = tmp_path / "o"
    run_build(load_recipe(rp, out_dir=out))
    assert run_build(load_recipe(rp, out_dir=out)).shards_written == 0
    st = (tmp_path / "dem.tif").stat()
    write_dem(0)  # the same pixels written again: a newer file, whatever its content
    os.utime(tmp_path / "dem.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ran = _record_shards(monkeypatch)
    res = run_build(load_recipe(rp, out_dir=out))
    assert res.shards_written == 2 and len(ran) == 2
    assert _digest(out) == _digest(run_build(load_recipe(rp, out_dir=tmp_path / "clean")).out_dir, skip=("recipe.yaml",))
