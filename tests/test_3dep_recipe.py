"""``builders/3dep-ept.yaml`` end to end, against a synthetic 3DEP archive on 127.0.0.1.

The shipped recipe is loaded as a user would write it; only what points at the internet is
pointed at loopback servers (the archive index, the land-cover and DEM COGs) and the draw is
made small.  The archive: three projects in UTM 10N whose points are EPT datasets in Web Mercator
(one with a hierarchy paged at every level), a resources GeoJSON, NLCD/DEM COGs, and the same
projects' COPC files behind a STAC API stub.  The build from URLs must write the same shards as
a build from local LAZ files of the same points (the EPT nodes), and resume without fetching
again what it staged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from archive_fixtures import make_archive, write_project_ept
from ept_writer import nodes_as_laz
from range_server import RangeServer
from stac_server import StacServer

from als_datasets.archives import read_index
from als_datasets.build import run_build
from als_datasets.recipe import load_recipe

SHIPPED = Path(__file__).resolve().parent.parent / "builders" / "3dep-ept.yaml"
SMALL = {"samples_per_project": 3, "draws": 6}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("3dep"), n_projects=3, seed=21, ept_writer=write_project_ept,
                        paged=(1,))


@pytest.fixture(scope="module")
def served(archive):
    with RangeServer(archive.files()) as srv:
        base = srv.url("").rstrip("/")
        srv._srv.files["resources.geojson"] = archive.index_for(base)
        with StacServer(archive.stac_items(base)) as api:
            yield srv, api, base


def _shipped_as_loopback(tmp: Path, base: str, out: str, **extra) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    assert data["source"]["archive"] == "3dep-ept" and data["source"]["projects"] == "all"
    assert data["source"]["index"].startswith("https://") and data["dem"]["path"].startswith("https://")
    assert data["strategy"] == "geospatial" and data["seed"] == 41 and data["draws"] == 1000
    data["source"]["index"] = f"{base}/resources.geojson"
    data["landcover"]["path"] = f"{base}/landcover.tif"
    data["dem"]["path"] = f"{base}/dem.tif"
    data["output"]["dir"] = out
    data.update(SMALL, **extra)
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _local(tmp: Path, archive, out: str) -> Path:
    """The same recipe over local copies: boundaries from the index, the EPT nodes as LAZ."""
    data = yaml.safe_load(SHIPPED.read_text())
    del data["source"]
    projects = []
    for e in read_index(str(archive.root / "resources.geojson")):
        b = tmp / f"{e.name}.geojson"
        b.write_text(json.dumps(e.geometry))
        (tmp / "ref").mkdir(exist_ok=True)  # named like the EPT dataset: its label in the samples
        laz = nodes_as_laz(archive.root / e.name / "ept" / "ept.json", tmp / "ref" / e.name)
        projects.append({"name": e.name, "boundary": str(b), "pointclouds": [str(laz)], "pointcloud_crs": "EPSG:3857"})
    data.update(SMALL, projects=projects, landcover={**data["landcover"], "path": str(archive.landcover)},
                dem={"path": str(archive.dem)}, output={**data["output"], "dir": out})
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _shards(out: Path) -> dict[str, bytes]:
    got = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in got}


def test_shipped_recipe_builds_from_loopback_archive(served, archive, tmp_path):
    srv, _, base = served
    recipe = load_recipe(_shipped_as_loopback(tmp_path, base, "out-url"))
    assert [p.name for p in recipe.projects] == [p.name for p in archive.projects]
    assert all(p.pointclouds == (f"{base}/{p.name}/ept.json",) for p in recipe.projects)
    paged = archive.root / archive.projects[1].name / "ept" / "ept-hierarchy"
    assert len(list(paged.glob("*.json"))) > 1  # the paged project really is paged
    srv.reset()
    result = run_build(recipe)
    fetched = srv.bytes_sent
    local = load_recipe(_local(tmp_path, archive, "out-local"))
    run_build(local)
    a, b = _shards(recipe.out_dir), _shards(local.out_dir)
    assert a and a == b
    assert result.samples == 3 * len(archive.projects)
    ept_bytes = sum(f.stat().st_size for p in archive.projects for f in (p.files["ept"].parent).rglob("*.laz"))
    print(f"\n3dep-ept recipe over loopback: fetched {fetched} bytes in {srv.requests} requests "
          f"(EPT nodes {ept_bytes} bytes)")


def _log_requests(srv: RangeServer) -> list[tuple[str, str | None]]:
    """Record (path, Range header) of every request the server answers from now on."""
    log: list[tuple[str, str | None]] = []
    base = srv._srv.RequestHandlerClass

    class Logged(base):
        def do_GET(self):  # noqa: N802 - http.server's naming
            log.append((self.path, self.headers.get("Range")))
            super().do_GET()

    srv._srv.RequestHandlerClass = Logged
    return log


@pytest.mark.parametrize("pointclouds", ["ept", "stac"])
def test_interrupted_build_resumes_without_refetching_staged(served, tmp_path, monkeypatch, pointclouds):
    """A build interrupted once its points are staged (at its first shard) resumes from the
    staging: the rerun plans again (index, raster windows, point-cloud headers) but fetches no
    EPT node or hierarchy page and no COPC chunk, and ends with the same shards as an
    uninterrupted build."""
    import als_datasets.build as core_build
    from als_datasets.remote import FIRST_BLOCK

    srv, api, base = served
    extra = {}
    if pointclouds == "stac":
        extra["stac"] = {"api": api.url, "collection": "3dep-lidar-copc"}
    def recipe_path(out):
        p = _shipped_as_loopback(tmp_path, base, out, **extra)
        if pointclouds == "stac":
            data = yaml.safe_load(p.read_text())
            data["source"]["pointclouds"] = "stac"
            p.write_text(yaml.safe_dump(data, sort_keys=False))
        return p

    clean = load_recipe(recipe_path("out-clean"))
    run_build(clean)
    path = recipe_path("out-resume")

    def interrupted(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(core_build, "_run_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_build(load_recipe(path))
    monkeypatch.undo()
    assert (tmp_path / "out-resume" / ".build" / "staging").is_dir()
    handler = srv._srv.RequestHandlerClass
    try:
        log = _log_requests(srv)
        result = run_build(load_recipe(path))
    finally:
        srv._srv.RequestHandlerClass = handler
    assert _shards(tmp_path / "out-resume") == _shards(clean.out_dir)
    assert result.files_read == 0
    assert not [p for p, _ in log if "/ept-data/" in p or "/ept-hierarchy/" in p], log
    copc = [(p, r) for p, r in log if p.endswith(".copc.laz")]
    assert pointclouds == "ept" or copc  # the plan read the COPC headers again...
    assert all(r == f"bytes=0-{FIRST_BLOCK - 1}" for _, r in copc), copc  # ...and nothing else
    shutil.rmtree(tmp_path / "out-resume", ignore_errors=True)
