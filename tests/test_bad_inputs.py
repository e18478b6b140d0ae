"""Bad inputs each stop the build with ONE line naming the file and the reason (no traceback),
exit code 2, and nothing already written is damaged."""

from __future__ import annotations

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, write_recipe

from als_datasets.cli import main
from als_datasets.demo.synth import write_las

MVK = DATA / "als" / "mvk-thin.las"


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def _synthetic_las(path, n=2000, crs="EPSG:32615", seed=0):
    rng = np.random.default_rng(seed)
    pts = {"x": 600000 + rng.random(n) * 600, "y": 3650000 + rng.random(n) * 600, "z": 50 + rng.random(n),
           "classification": np.full(n, 2, np.uint8), "intensity": np.full(n, 100, np.uint16),
           "return_number": np.ones(n, np.uint8), "number_of_returns": np.ones(n, np.uint8)}
    if n == 0:
        pts = {k: v[:0] for k, v in pts.items()}
    return write_las(path, pts, crs)


def _recipe(tmp_path, pcs, lc="lc.tif", boundary=None, tile=100, res=5):
    proj = {"name": "p", "pointclouds": [str(p) for p in pcs]}
    if boundary:
        proj["boundary"] = str(boundary)
    return write_recipe(tmp_path / "r.yaml", name="bad", tile_size_m=tile, grid_res_m=res, samples_per_project=2,
                        landcover={"path": lc}, projects=[proj], output={"dir": "out"})


def _one_line_error(code, err, name):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and name in err
    assert "Traceback" not in err


def test_truncated_laz(tmp_path, capsys):
    src = (DATA / "als" / "autzen_trim.laz").read_bytes()
    bad = tmp_path / "truncated.laz"
    bad.write_bytes(src[: len(src) // 2])
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(bad)).bounds)
    code, err = _run(["build", str(_recipe(tmp_path, [bad])), "-q"], capsys)
    _one_line_error(code, err, "truncated.laz")
    assert "truncated" in err or "corrupt" in err


def test_no_crs(tmp_path, capsys):
    f = _synthetic_las(tmp_path / "nocrs.las", crs=None)
    landcover_around(tmp_path / "lc.tif", (-91.96, 32.97, -91.94, 32.99))
    code, err = _run(["build", str(_recipe(tmp_path, [f])), "-q"], capsys)
    _one_line_error(code, err, "nocrs.las")
    assert "CRS" in err


def test_empty_point_cloud(tmp_path, capsys):
    f = _synthetic_las(tmp_path / "empty.las", n=0)
    landcover_around(tmp_path / "lc.tif", (-91.96, 32.97, -91.94, 32.99))
    code, err = _run(["build", str(_recipe(tmp_path, [f])), "-q"], capsys)
    _one_line_error(code, err, "empty.las")
    assert "no points" in err


def test_boundary_not_overlapping_rasters(tmp_path, capsys):
    # land cover in Montana, point cloud in Mississippi
    landcover_around(tmp_path / "lc.tif", (-113.26, 46.06, -113.25, 46.07))
    code, err = _run(["build", str(_recipe(tmp_path, [MVK], tile=500, res=25)), "-q"], capsys)
    _one_line_error(code, err, "lc.tif")
    assert "overlap" in err


def test_project_without_eligible_tile(tmp_path, capsys):
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds, code=11)  # all water
    code, err = _run(["build", str(_recipe(tmp_path, [MVK], tile=500, res=25)), "-q"], capsys)
    _one_line_error(code, err, "lc.tif")
    assert "no eligible tile" in err


def test_bad_recipe_and_missing_files(tmp_path, capsys):
    r = write_recipe(tmp_path / "typo.yaml", name="x", landcover={"path": "lc.tif"}, projectz=[])
    code, err = _run(["build", str(r), "-q"], capsys)
    _one_line_error(code, err, "typo.yaml")
    assert "projectz" in err
    code, err = _run(["build", str(tmp_path / "nope.yaml"), "-q"], capsys)
    _one_line_error(code, err, "nope.yaml")
    landcover_around(tmp_path / "lc.tif", (-91.96, 32.97, -91.94, 32.99))
    code, err = _run(["build", str(_recipe(tmp_path, [tmp_path / "missing.laz"])), "-q"], capsys)
    _one_line_error(code, err, "missing.laz")


def test_failed_build_keeps_earlier_output(tmp_path, capsys):
    """A build that fails on bad input leaves the previous complete build untouched."""
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds)
    r = _recipe(tmp_path, [MVK], tile=500, res=25)
    main_ok = ["build", str(r), "-q"]
    main(main_ok)
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "truncated.las"
    bad.write_bytes(MVK.read_bytes()[:5000])
    _recipe(tmp_path, [MVK, bad], tile=500, res=25)
    code, err = _run(main_ok, capsys)  # another recipe: refused before any work without --overwrite
    _one_line_error(code, err, str(out))
    assert "different recipe" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    code, err = _run([*main_ok, "--overwrite"], capsys)
    _one_line_error(code, err, "truncated.las")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".build" not in p.parts}
    assert after == before
