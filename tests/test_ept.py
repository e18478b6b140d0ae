"""EPT (Entwine Point Tiles) inputs on the real Entwine-written datasets of the shared data
(``als/ept/``, see SOURCES.md there): the union of ``lone-star-laszip``'s nodes equals its
source LAZ; the two corrupt datasets give one-line errors naming the node; a build from the EPT
(a local folder, its ept.json, or its URL on a loopback server) writes the same shards as a
build from a LAZ file holding the same points.  Synthetic (paged, Web Mercator) datasets are
in ``test_ept_writer.py``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import laspy
import numpy as np
import pytest
from ept_writer import nodes_as_laz
from range_server import RangeServer
from synth_inputs import SHARED, landcover_around, write_recipe

from als_datasets.build import run_build
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources import ept
from als_datasets.kinds.als.sources.pointcloud import (
    footprint_lonlat,
    inspect_pointcloud,
    iter_ept_boxes,
    iter_point_chunks,
)
from als_datasets.kinds.als.sources.remote import FetchStats, source_label
from als_datasets.recipe import load_recipe

EPT_DIR = SHARED / "als" / "ept"
LONE = EPT_DIR / "lone-star-laszip"
FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")

pytestmark = pytest.mark.skipif(not (LONE / "ept.json").is_file(), reason="shared EPT data absent")


def _one_line(e: InputError, *needles: str) -> str:
    msg = str(e)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def _rows(chunks) -> np.ndarray:
    a = np.concatenate([np.stack([c[k].astype(np.float64) for k in FIELDS], 1) for c in chunks])
    return a[np.lexsort(a.T[::-1])]


def _serve_folder(root: Path, prefix: str) -> dict:
    return {f"{prefix}/{p.relative_to(root).as_posix()}": p for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- inspect, read


def test_inspect_lone_star():
    for src in (LONE, LONE / "ept.json"):
        info = inspect_pointcloud(src)
        assert info.is_ept and not info.is_copc and info.path == str(LONE / "ept.json")
        assert info.crs.name == "NAD83 / UTM zone 12N" and info.xy_unit == "metre" and info.z_to_m == 1.0
        assert info.point_count == 518_862 and info.crs_source == "ept-srs-wkt"
        assert info.bounds == (515368.0, 4918340.0, 515402.0, 4918382.0)  # boundsConforming, not the cube
        c = footprint_lonlat(info).centroid
        assert c.x == pytest.approx(-110.807, abs=0.01) and c.y == pytest.approx(44.418, abs=0.01)
    assert source_label(LONE / "ept.json") == "lone-star-laszip"
    assert source_label("https://h.example/usgs-lidar-public/USGS_LPC_X/ept.json?sig=S") == "USGS_LPC_X"


def test_union_of_nodes_equals_source_laz():
    """Every point of lone-star-source.laz, and no other, whatever the chunking."""
    src = laspy.read(EPT_DIR / "lone-star-source.laz")
    want = _rows([{k: np.asarray(getattr(src, k)) for k in FIELDS}])
    info = inspect_pointcloud(LONE)
    chunks = list(iter_point_chunks(info, 100_000))
    assert len(chunks) > 1 and sum(len(c["x"]) for c in chunks) == 518_862
    assert np.array_equal(_rows(chunks), want)


def test_box_query_fetches_only_overlapping_nodes():
    info = inspect_pointcloud(LONE)
    meta = ept.read_ept_meta(info.path)
    every = ept.query_nodes(meta, None)
    assert len(every) == 13 and every == sorted(every)  # (depth, X, Y, Z) order
    box = (515368.0, 4918340.0, 515375.0, 4918350.0)  # the south-west corner of the data
    nodes = ept.query_nodes(meta, [box])
    assert 0 < len(nodes) < len(every)
    for key, _ in nodes:
        nb = ept.node_bounds(meta, key)
        assert nb[0] <= box[2] and nb[2] >= box[0] and nb[1] <= box[3] and nb[3] >= box[1]
    stats = FetchStats()
    got = list(iter_ept_boxes(info, [box], stats=stats))
    # ept.json, the root page, no other page (the paged nodes lie elsewhere) and the nodes
    assert stats.requests == 1 + 1 + len(nodes)
    full = {k: np.concatenate([c[k] for c in iter_point_chunks(info)]) for k in FIELDS}
    keep = (full["x"] >= box[0]) & (full["x"] <= box[2]) & (full["y"] >= box[1]) & (full["y"] <= box[3])
    assert 0 < keep.sum() < len(keep)
    for k in FIELDS:  # exactly the box's points, in the order of a full read
        assert np.array_equal(np.concatenate([c[k] for c in got]), full[k][keep]), k


def test_paged_hierarchy_pages_fetched_only_where_needed():
    meta = ept.read_ept_meta(LONE / "ept.json")
    stats = FetchStats()
    nodes = ept.query_nodes(meta, None, stats)
    assert stats.requests == 1 + 5  # the root page and the five "-1" nodes' own pages
    assert dict(nodes)[(3, 5, 4, 3)] == 18266  # a node listed only in 2-2-2-1.json
    far = (0.0, 0.0, 1.0, 1.0)
    stats = FetchStats()
    assert ept.query_nodes(meta, [far], stats) == [] and stats.requests == 1


# --------------------------------------------------------------------------- corrupt datasets


def test_corrupt_node_names_the_node():
    info = inspect_pointcloud(EPT_DIR / "lone-star-invalid-tile" / "ept.json")
    with pytest.raises(InputError) as e:
        list(iter_point_chunks(info))
    _one_line(e.value, "ept-data/2-2-2-2.laz", "EPT node 2-2-2-2", "lone-star-invalid-tile", "not a readable LAZ")
    # a query away from the corrupt node reads fine
    meta = ept.read_ept_meta(info.path)
    nb = ept.node_bounds(meta, (2, 2, 2, 2))
    box = (515368.0, 4918340.0, 515375.0, 4918350.0)
    assert box[2] < nb[0] or box[3] < nb[1]
    assert sum(len(c["x"]) for c in iter_ept_boxes(info, [box])) > 0


def test_hierarchy_count_mismatch_names_the_node():
    info = inspect_pointcloud(EPT_DIR / "bad-pointcount" / "laszip" / "ept.json")
    assert info.xy_unit == "foot"  # Oregon Lambert in international feet, from the srs wkt
    with pytest.raises(InputError) as e:
        list(iter_point_chunks(info))
    _one_line(e.value, "ept-data/0-0-0-0.laz", "EPT node 0-0-0-0", "1,000", "1,065")


def _copy_ept(tmp: Path, name: str = "ds") -> Path:
    dst = tmp / name
    shutil.copytree(LONE, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dst.chmod(0o755)
    return dst


def test_bad_ept_json(tmp_path):
    d = _copy_ept(tmp_path)
    doc = json.loads((d / "ept.json").read_text())
    for change, needle in ((lambda j: j.update(dataType="zstandard"), "dataType 'zstandard' is not supported"),
                           (lambda j: j.update(dataType="binary"), "dataType 'binary' is not supported"),
                           (lambda j: j.pop("bounds"), "no bounds"),
                           (lambda j: j.update(bounds=[1, 2, 3]), "bounds must be 6"),
                           (lambda j: j.update(srs={}), "set pointcloud_crs"),
                           (lambda j: j.update(hierarchyType="gzip"), "hierarchyType")):
        j = json.loads(json.dumps(doc))
        change(j)
        (d / "ept.json").write_text(json.dumps(j))
        with pytest.raises(InputError) as e:
            inspect_pointcloud(d / "ept.json")
        _one_line(e.value, str(d / "ept.json"), needle)
    (d / "ept.json").write_text("{not json")
    with pytest.raises(InputError) as e:
        inspect_pointcloud(d / "ept.json")
    _one_line(e.value, "not a valid ept.json")
    with pytest.raises(InputError) as e:
        inspect_pointcloud(tmp_path / "nowhere" / "ept.json")
    _one_line(e.value, "file not found")


def test_missing_node_and_page(tmp_path):
    d = _copy_ept(tmp_path)
    info = inspect_pointcloud(d)
    (d / "ept-hierarchy" / "2-3-3-1.json").unlink()
    with pytest.raises(InputError) as e:
        list(iter_point_chunks(info))
    _one_line(e.value, "ept-hierarchy/2-3-3-1.json", "hierarchy page of node 2-3-3-1", "file not found")
    shutil.copy(LONE / "ept-hierarchy" / "2-3-3-1.json", d / "ept-hierarchy" / "2-3-3-1.json")
    (d / "ept-data" / "1-1-1-1.laz").unlink()
    with pytest.raises(InputError) as e:
        list(iter_point_chunks(info))
    _one_line(e.value, "ept-data/1-1-1-1.laz", "EPT node 1-1-1-1", "listed in the hierarchy but missing")


# --------------------------------------------------------------------------- builds


def _dem_around(path: Path, lonlat_bounds, margin_m=30.0, res=1.0) -> Path:
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    from als_datasets.kinds.als.frame.grid import utm_epsg

    epsg = utm_epsg((lonlat_bounds[0] + lonlat_bounds[2]) / 2, (lonlat_bounds[1] + lonlat_bounds[3]) / 2)
    minx, miny, maxx, maxy = Transformer.from_crs(4326, epsg, always_xy=True).transform_bounds(*lonlat_bounds)
    w, h = int((maxx - minx + 2 * margin_m) // res) + 1, int((maxy - miny + 2 * margin_m) // res) + 1
    z = 2300.0 + 0.2 * np.arange(w, dtype=np.float32)[None, :] * res + np.zeros((h, 1), np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=f"EPSG:{epsg}",
                       transform=from_origin(minx - margin_m, maxy + margin_m, res, res), nodata=-9999) as dst:
        dst.write(z, 1)
    return path


@pytest.fixture(scope="module")
def build_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ept-build")
    info = inspect_pointcloud(LONE)
    fp = footprint_lonlat(info).bounds
    (tmp / "b.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[
        [fp[0], fp[1]], [fp[2], fp[1]], [fp[2], fp[3]], [fp[0], fp[3]], [fp[0], fp[1]]]]}))
    landcover_around(tmp / "lc.tif", fp, margin_m=30.0, res=1.0)
    _dem_around(tmp / "dem.tif", fp)
    (tmp / "ref").mkdir()
    # named like the dataset (its label in the samples' source_files): the shards must not differ by name
    nodes_as_laz(LONE / "ept.json", tmp / "ref" / "lone-star-laszip")
    return tmp


def _recipe(tmp: Path, name: str, source: str, crs: str | None = "EPSG:26912") -> Path:
    project = {"name": "lone", "boundary": "b.geojson", "pointclouds": [source]}
    if crs:  # the reference LAZ's GeoTIFF keys are read by laspy like the EPT's srs; said once for both
        project["pointcloud_crs"] = crs
    return write_recipe(tmp / f"{name}.yaml", name="ept", tile_size_m=10, grid_res_m=1, samples_per_project=6,
                        landcover={"path": "lc.tif"}, dem={"path": "dem.tif"}, projects=[project],
                        output={"dir": f"out-{name}", "shard_max_samples": 2})


def _shards(out: Path) -> dict[str, bytes]:
    files = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_build_from_ept_identical_to_laz(build_inputs):
    tmp = build_inputs
    outs = {}
    for name, source, crs in (("laz", str(tmp / "ref" / "lone-star-laszip"), "EPSG:26912"),
                              ("folder", str(LONE), None), ("json", str(LONE / "ept.json"), "EPSG:26912")):
        recipe = load_recipe(_recipe(tmp, name, source, crs))
        run_build(recipe)
        outs[name] = _shards(recipe.out_dir)
    with RangeServer(_serve_folder(LONE, "lone-star-laszip")) as srv:
        url = srv.url("lone-star-laszip/ept.json")
        recipe = load_recipe(_recipe(tmp, "url", url, None))
        run_build(recipe)
        fetched, requests = srv.bytes_sent, srv.requests
    outs["url"] = _shards(recipe.out_dir)
    assert any(k.endswith(".tar") for k in outs["laz"])
    assert outs["folder"] == outs["laz"] == outs["json"] == outs["url"]
    total = sum(p.stat().st_size for p in LONE.rglob("*") if p.is_file())
    print(f"\nEPT build from URL fetched {fetched:,} of {total:,} bytes in {requests} requests")
    assert fetched <= total


def test_dataclass_replace_keeps_is_ept():
    info = inspect_pointcloud(LONE)
    assert dataclasses.replace(info, path="http://127.0.0.1:9/x/ept.json").is_ept
