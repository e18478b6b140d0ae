"""Archives as sources: the 3DEP-style index (``als-datasets projects``, ``source:`` in a recipe)
and COPC point clouds found through a STAC API, all served on 127.0.0.1.

A build whose projects, boundaries, point clouds (COPC via STAC, signed URLs) and rasters (COGs)
all come from loopback servers writes the same shards as a build from local copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import stac_server
from archive_fixtures import make_archive
from range_server import RangeServer
from stac_server import StacServer
from synth_inputs import write_recipe

from als_datasets.archives import read_index, year_of
from als_datasets.build import run_build
from als_datasets.cli import main
from als_datasets.errors import InputError
from als_datasets.recipe import load_recipe

SIGN = "stac_server:sign_for_tests"


@pytest.fixture(autouse=True)
def _no_signers_left():
    """A recipe's signing hook is registered process-wide (and in the environment, for workers):
    drop it after each test."""
    import os

    from als_datasets import remote

    yield
    remote._SIGNERS.clear()
    os.environ.pop(remote.ENV_SIGNERS, None)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("archive"), n_projects=2, seed=5)


@pytest.fixture(scope="module")
def servers(archive):
    with RangeServer(archive.files()) as files:
        base = files.url("").rstrip("/")
        index = archive.index_for(base)
        files._srv.files["resources.geojson"] = index
        with StacServer(archive.stac_items(base), page_size=1) as api:
            yield files, api, base


def _shards(out: Path) -> dict[str, bytes]:
    got = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in got}


# --------------------------------------------------------------------------- the index


def test_projects_command_lists_the_index(servers, archive, capsys):
    _, _, base = servers
    url = f"{base}/resources.geojson?token=SECRET"
    main(["projects", url])
    out = capsys.readouterr().out
    names = [p.name for p in archive.projects]
    assert all(n in out for n in names) and "area_km2" in out and "2019" in out
    assert "2 project(s)" in out
    main(["projects", str(archive.root / "resources.geojson"), "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == names
    assert rows[0]["points"] == archive.projects[0].points and rows[0]["year"] == 2019
    assert rows[0]["area_km2"] == pytest.approx(1.18 * 0.98, rel=0.02)  # the 10 m inset boundary
    # --bbox keeps the projects that intersect it: the first project's west end only
    b = rows[0]["bounds"]
    main(["projects", str(archive.root / "resources.geojson"), "--json", "--bbox",
          f"{b[0]},{b[1]},{b[0] + 0.001},{b[3]}"])
    assert [json.loads(x)["name"] for x in capsys.readouterr().out.splitlines()] == names[:1]


def test_index_errors_are_one_line(servers, tmp_path, capsys):
    _, _, base = servers
    with pytest.raises(SystemExit):
        main(["projects", f"{base}/missing.geojson?token=SECRET"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.geojson" in err and "SECRET" not in err and "\n" not in err
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection"}')
    with pytest.raises(InputError, match="features"):
        read_index(str(bad))
    assert year_of("USGS_LPC_AK_Anchorage_2015_LAS_2017") == 2015 and year_of("ARRA-CA_GoldenGate") is None


def test_recipe_source_names_the_archive(servers, archive, tmp_path):
    _, _, base = servers
    recipe = write_recipe(
        tmp_path / "r.yaml", name="arch", landcover={"path": f"{base}/landcover.tif"}, dem=f"{base}/dem.tif",
        source={"archive": "3dep-ept", "index": f"{base}/resources.geojson", "projects": "all"},
        output={"dir": "out"})
    r = load_recipe(recipe)
    assert [p.name for p in r.projects] == [p.name for p in archive.projects]
    p0 = r.projects[0]
    assert p0.pointclouds == (f"{base}/{p0.name}/ept.json",)
    assert p0.boundary == f"{base}/resources.geojson#{p0.name}" and json.loads(p0.boundary_geojson)["type"]
    assert r.landcover_path == f"{base}/landcover.tif"
    assert r.raw["source"]["index"] == f"{base}/resources.geojson" and r.raw["projects"] == []
    one = write_recipe(tmp_path / "one.yaml", name="arch", landcover={"path": "lc.tif"},
                       source={"archive": "3dep-ept", "index": f"{base}/resources.geojson",
                               "projects": [archive.projects[1].name]})
    assert [p.name for p in load_recipe(one).projects] == [archive.projects[1].name]
    typo = write_recipe(tmp_path / "typo.yaml", name="arch", landcover={"path": "lc.tif"},
                        source={"archive": "3dep-ept", "index": f"{base}/resources.geojson",
                                "projects": [archive.projects[1].name + "x"]})
    with pytest.raises(InputError, match="did you mean"):
        load_recipe(typo)


# --------------------------------------------------------------------------- COPC through STAC


def _stac_recipe(tmp: Path, base: str, api: str, name: str) -> Path:
    return write_recipe(
        tmp / f"{name}.yaml", name="stacset", tile_size_m=250, grid_res_m=25, samples_per_project=3, draws=10,
        landcover={"path": f"{base}/landcover.tif?sig=SECRET"}, dem={"path": f"{base}/dem.tif"},
        source={"archive": "3dep-ept", "index": f"{base}/resources.geojson", "projects": "all",
                "pointclouds": "stac"},
        stac={"api": api, "collection": "3dep-lidar-copc", "sign": SIGN, "project_property": "3dep:project"},
        output={"dir": f"out-{name}", "shard_max_samples": 2})


def _local_recipe(tmp: Path, archive, name: str) -> Path:
    idx = read_index(str(archive.root / "resources.geojson"))
    projects = []
    for e in idx:
        b = tmp / f"{e.name}.geojson"
        b.write_text(json.dumps(e.geometry))
        d = archive.root / e.name
        projects.append({"name": e.name, "boundary": str(b),
                         "pointclouds": [str(d / "east.copc.laz"), str(d / "west.copc.laz")]})
    return write_recipe(
        tmp / f"{name}.yaml", name="stacset", tile_size_m=250, grid_res_m=25, samples_per_project=3, draws=10,
        landcover={"path": str(archive.landcover)}, dem={"path": str(archive.dem)}, projects=projects,
        output={"dir": f"out-{name}", "shard_max_samples": 2})


def test_stac_build_from_loopback_equals_local(servers, archive, tmp_path):
    files, api, base = servers
    stac_server.SIGNED.clear()
    recipe = load_recipe(_stac_recipe(tmp_path, base, api.url, "stac"))
    p0 = recipe.projects[0]
    assert p0.pointclouds == (f"{base}/{p0.name}/east.copc.laz", f"{base}/{p0.name}/west.copc.laz")
    files.reset()
    run_build(recipe)
    remote_bytes = files.bytes_sent
    local = load_recipe(_local_recipe(tmp_path, archive, "local"))
    run_build(local)
    a, b = _shards(recipe.out_dir), _shards(local.out_dir)
    assert a and a == b
    assert stac_server.SIGNED, "the signing hook was not called"
    for f in ("recipe.yaml", "manifest.json", "README.md"):
        assert "SECRET" not in (recipe.out_dir / f).read_text(), f
    total = sum(f.stat().st_size for p in archive.projects for k, f in p.files.items() if k in ("east", "west"))
    print(f"\nSTAC/COPC build fetched {remote_bytes} bytes in {files.requests} requests "
          f"(COPC files {total} bytes, rasters {archive.landcover.stat().st_size + archive.dem.stat().st_size})")


def test_stac_failure_is_one_line(servers, tmp_path):
    _, api, base = servers
    api.fail_next(100, 503)
    try:
        with pytest.raises(InputError) as ei:
            load_recipe(_stac_recipe(tmp_path, base, api.url + "?token=SECRET", "fail"))
    finally:
        api.fail_next(0)
    msg = str(ei.value)
    assert "STAC search failed" in msg and "SECRET" not in msg and "\n" not in msg
    shutil.rmtree(tmp_path / "out-fail", ignore_errors=True)
