"""Remote COPC inputs: header over HTTP range requests, bounds queries that fetch only the
octree nodes of the selected tiles, builds from a URL identical to builds from the local file
(and to a full read of a plain LAZ copy), and one-line errors for servers without Range, 404,
s3:// without s3fs.  EPT inputs: test_ept.py, test_ept_writer.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import laspy
import numpy as np
import pytest
from range_server import RangeServer
from synth_inputs import DATA, landcover_around, write_recipe

from als_datasets.build import run_build
from als_datasets.errors import InputError
from als_datasets.kinds.als.extract.route import RouteTask, TileGrid, file_boxes, task_key
from als_datasets.kinds.als.sources import copc, remote
from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud, iter_point_chunks
from als_datasets.recipe import load_recipe

COPC = DATA / "als" / "simple.copc.laz"
CRS = "EPSG:2992"  # the file's WKT says metres, its numbers are international feet (see test_real_files)
FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")


@pytest.fixture(scope="module")
def server():
    if not COPC.is_file():
        pytest.skip("tests/data/als/simple.copc.laz absent")
    with RangeServer({"simple.copc.laz": COPC}) as srv:
        yield srv


@pytest.fixture(scope="module")
def local_info():
    return inspect_pointcloud(COPC, crs_override=CRS)


def _one_line(e: InputError, *needles: str) -> str:
    msg = str(e)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def _crop(info, boxes) -> dict:
    """The local file read whole (laspy chunk_iterator) and cropped to the union of boxes."""
    full = {k: np.concatenate([c[k] for c in iter_point_chunks(info)]) for k in FIELDS}
    keep = np.zeros(len(full["x"]), bool)
    for x0, y0, x1, y1 in boxes:
        keep |= (full["x"] >= x0) & (full["x"] <= x1) & (full["y"] >= y0) & (full["y"] <= y1)
    return {k: v[keep] for k, v in full.items()}


def _query(info, boxes, stats=None, chunk_size=1_000_000) -> dict:
    chunks = list(copc.iter_copc_boxes(info, boxes, chunk_size, stats=stats))
    if not chunks:
        return {k: np.zeros(0) for k in FIELDS}
    return {k: np.concatenate([c[k] for c in chunks]) for k in FIELDS}


def _sub_box(bounds, fx0, fy0, fx1, fy1):
    minx, miny, maxx, maxy = bounds
    w, h = maxx - minx, maxy - miny
    return (minx + fx0 * w, miny + fy0 * h, minx + fx1 * w, miny + fy1 * h)


# --------------------------------------------------------------------------- URL helpers


def test_url_helpers():
    url = "https://user:pw@host.example:8443/a/b/tile.copc.laz?sv=2020&sig=SECRET#frag"
    assert remote.is_remote(url) and remote.is_remote("s3://b/k.laz") and not remote.is_remote("/x/y.laz")
    assert not remote.is_remote("file:///x/y.laz") and not remote.is_remote(Path("a/b.laz"))
    assert remote.redact(url) == "https://host.example:8443/a/b/tile.copc.laz"
    assert remote.source_name(url) == "tile.copc.laz"
    assert remote.redact("/local/path.laz") == "/local/path.laz"
    assert remote.is_ept("https://s3-us-west-2.amazonaws.com/usgs-lidar-public/X/ept.json")


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("crs", [CRS, None])
def test_inspect_over_http_matches_local(server, crs):
    local = inspect_pointcloud(COPC, crs_override=crs)
    server.reset()
    far = inspect_pointcloud(server.url("simple.copc.laz"), crs_override=crs)
    # the header and VLRs only: one ranged request of at most the first block
    assert server.requests == 1 and server.bytes_sent <= remote.FIRST_BLOCK
    assert far.path == server.url("simple.copc.laz") and far.is_copc
    for f in ("xy_unit", "z_to_m", "bounds", "point_count", "is_copc", "crs_source", "notes"):
        assert getattr(far, f) == getattr(local, f), f
    assert far.crs == local.crs
    assert "size=33684" in far.stamp and "test-etag" in far.stamp


# --------------------------------------------------------------------------- bounds queries


def test_small_query_fetches_a_fraction_of_the_file(server, local_info, record_property):
    info = dataclasses.replace(local_info, path=server.url("simple.copc.laz"))
    box = _sub_box(local_info.bounds, 0.1, 0.1, 0.3, 0.3)  # 4 % of the area
    server.reset()
    stats = remote.FetchStats()
    pts = _query(info, [box], stats)
    size = COPC.stat().st_size
    ratio = server.bytes_sent / size
    record_property("bytes_fetched", server.bytes_sent)
    record_property("file_size", size)
    record_property("ratio", round(ratio, 3))
    print(f"\nremote COPC query of 4 % of the area: {server.bytes_sent} of {size} bytes ({ratio:.1%}), "
          f"{server.requests} requests, {len(pts['x'])} points")
    assert stats.bytes_fetched == server.bytes_sent and stats.requests == server.requests
    assert len(pts["x"]) > 0
    # header (first block), hierarchy root page and a few octree nodes: far less than the file
    assert ratio < 0.4


def test_query_points_equal_local_crop(server, local_info):
    info = dataclasses.replace(local_info, path=server.url("simple.copc.laz"))
    b = local_info.bounds
    # overlapping boxes: points in both come out once; and a box outside the data
    boxes = [_sub_box(b, 0.0, 0.0, 0.5, 0.5), _sub_box(b, 0.3, 0.3, 0.7, 0.6), _sub_box(b, 0.8, 0.1, 0.95, 0.3),
             (b[2] + 100, b[3] + 100, b[2] + 200, b[3] + 200)]
    want = _crop(local_info, boxes)
    got = _query(info, boxes, chunk_size=200)  # several batches of nodes
    assert 0 < len(want["x"]) < local_info.point_count
    for k in FIELDS:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    # the whole file by bounds == a full read, in the same order; locally too
    whole = _crop(local_info, [b])
    for src in (info, local_info):
        got = _query(src, [b])
        assert all(np.array_equal(got[k], whole[k]) for k in FIELDS)
    assert _query(info, [])["x"].size == 0


def test_plain_laz_over_http_is_streamed_whole():
    """A remote non-COPC file cannot be read by bounds: it is streamed whole by ranged reads."""
    src = DATA / "als" / "autzen_trim.laz"
    with RangeServer({"autzen_trim.laz": src}) as srv:
        url = srv.url("autzen_trim.laz")
        local, far = inspect_pointcloud(src), inspect_pointcloud(url)
        assert not far.is_copc and far.bounds == local.bounds and far.crs == local.crs
        srv.reset()
        got = [c for c in iter_point_chunks(far, 40_000)]
        assert srv.bytes_sent >= src.stat().st_size  # every byte, a block of read-ahead more at most
    want = list(iter_point_chunks(local, 40_000))
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert all(np.array_equal(a[k], b[k]) for k in FIELDS)


def test_route_boxes_cover_tiles(local_info):
    """Tile boxes in the file's CRS (feet, Oregon Lambert) hold every corner of the UTM tile."""
    from pyproj import Transformer

    fp = footprint_lonlat(local_info)
    tr = Transformer.from_crs(4326, 32610, always_xy=True)
    x, y = tr.transform(fp.centroid.x, fp.centroid.y)
    grid = TileGrid(32610, float(int(x) - 500), float(int(y) + 500), 100.0, 10, 10)
    task = RouteTask(0, local_info, grid, ((3, 4, "t"),), "/nonexistent")
    (box,) = file_boxes(task)
    back = Transformer.from_crs(32610, local_info.crs, always_xy=True)
    x0, y1 = grid.x0 + 300, grid.y1 - 400
    for cx, cy in ((x0, y1), (x0 + 100, y1), (x0, y1 - 100), (x0 + 100, y1 - 100)):
        fx, fy = back.transform(cx, cy)
        assert box[0] < fx < box[2] and box[1] < fy < box[3]
    # a URL is never stat'ed: its key comes from the URL (no query) and its inspection
    far = dataclasses.replace(local_info, path="http://127.0.0.1:9/simple.copc.laz?sig=A", stamp="size=1")
    k1 = task_key(dataclasses.replace(task, info=far))
    far2 = dataclasses.replace(far, path="http://127.0.0.1:9/simple.copc.laz?sig=B")
    assert task_key(dataclasses.replace(task, info=far2)) == k1
    assert task_key(dataclasses.replace(task, info=dataclasses.replace(far, stamp="size=2"))) != k1


# --------------------------------------------------------------------------- builds


def _dem_around(path: Path, lonlat_bounds, margin_m=300.0, res=5.0) -> Path:
    """A sloping DEM GeoTIFF (UTM) around a lon/lat box."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    from als_datasets.kinds.als.frame.grid import utm_epsg

    epsg = utm_epsg((lonlat_bounds[0] + lonlat_bounds[2]) / 2, (lonlat_bounds[1] + lonlat_bounds[3]) / 2)
    minx, miny, maxx, maxy = Transformer.from_crs(4326, epsg, always_xy=True).transform_bounds(*lonlat_bounds)
    w = int((maxx - minx + 2 * margin_m) // res) + 1
    h = int((maxy - miny + 2 * margin_m) // res) + 1
    z = 100.0 + 0.15 * np.arange(w, dtype=np.float32)[None, :] * res + np.zeros((h, 1), np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=f"EPSG:{epsg}",
                       transform=from_origin(minx - margin_m, maxy + margin_m, res, res), nodata=-9999) as d:
        d.write(z, 1)
    return path


def _recipe(tmp: Path, name: str, source: str, dem: bool = True) -> Path:
    data = dict(name="remote", tile_size_m=100, grid_res_m=5, samples_per_project=4, landcover={"path": "lc.tif"},
                projects=[{"name": "autzen", "boundary": "b.geojson", "pointclouds": [source],
                           "pointcloud_crs": CRS}],
                output={"dir": f"out-{name}", "shard_max_samples": 2})
    if dem:
        data["dem"] = {"path": "dem.tif"}
    return write_recipe(tmp / f"{name}.yaml", **data)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, local_info):
    tmp = tmp_path_factory.mktemp("remote-build")
    fp = footprint_lonlat(local_info).bounds
    (tmp / "b.geojson").write_text(
        '{"type":"Polygon","coordinates":[[[%f,%f],[%f,%f],[%f,%f],[%f,%f],[%f,%f]]]}' % (
            fp[0], fp[1], fp[2], fp[1], fp[2], fp[3], fp[0], fp[3], fp[0], fp[1]))
    landcover_around(tmp / "lc.tif", fp)
    _dem_around(tmp / "dem.tif", fp)
    # the same points as a plain (non-COPC) LAZ of the same name: read whole, not by bounds
    (tmp / "plain").mkdir()
    las = laspy.read(COPC)
    hdr = laspy.LasHeader(point_format=las.header.point_format, version=las.header.version)
    hdr.scales, hdr.offsets = las.header.scales, las.header.offsets
    hdr.vlrs.extend(v for v in las.header.vlrs if isinstance(v, laspy.vlrs.known.WktCoordinateSystemVlr))
    plain = laspy.LasData(hdr)
    plain.points = las.points
    plain.write(tmp / "plain" / "simple.copc.laz")
    assert not inspect_pointcloud(tmp / "plain" / "simple.copc.laz", crs_override=CRS).is_copc
    return tmp


def _shards(out: Path) -> dict[str, bytes]:
    files = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_build_from_url_identical_to_local(server, inputs):
    outs = {}
    for name, source in (("local", str(COPC)), ("plain", str(inputs / "plain" / "simple.copc.laz"))):
        recipe = load_recipe(_recipe(inputs, name, source))
        run_build(recipe)
        outs[name] = _shards(recipe.out_dir)
    url = server.url("simple.copc.laz")
    recipe = load_recipe(_recipe(inputs, "url", url))
    assert recipe.projects[0].pointclouds == (url,)
    server.reset()
    run_build(recipe)
    fetched = server.bytes_sent
    outs["url"] = _shards(recipe.out_dir)
    assert outs["local"] and any(k.endswith(".tar") for k in outs["local"])
    assert outs["url"] == outs["local"] == outs["plain"]
    # inspection (header) + route (header, hierarchy, the nodes of 4 of ~140 tiles)
    print(f"\nbuild from URL fetched {fetched} of {COPC.stat().st_size} bytes in {server.requests} requests")
    assert fetched < COPC.stat().st_size
    assert url in (recipe.out_dir / "recipe.yaml").read_text()


def test_url_without_dem_refused(server, inputs):
    url = server.url("simple.copc.laz")
    with pytest.raises(InputError) as e:
        run_build(load_recipe(_recipe(inputs, "nodem", url, dem=False)))
    _one_line(e.value, url, "DEM")
    shutil.rmtree(inputs / "out-nodem", ignore_errors=True)


# --------------------------------------------------------------------------- errors


def test_server_without_range_refused():
    with RangeServer({"simple.copc.laz": COPC}, ignore_range=True) as srv:
        url = srv.url("simple.copc.laz")
        with pytest.raises(InputError) as e:
            inspect_pointcloud(url)
        _one_line(e.value, url, "Range", "200")


def test_missing_url_names_it_without_its_token(server):
    url = server.url("nope.copc.laz")
    with pytest.raises(InputError) as e:
        inspect_pointcloud(url + "?sig=SECRET")
    msg = _one_line(e.value, url, "404")
    assert "SECRET" not in msg


def test_connection_refused_is_one_line():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/x.copc.laz"
    fetcher = remote._HttpFetcher.__new__(remote._HttpFetcher)
    fetcher.url, fetcher.name, fetcher.timeout, fetcher.retries, fetcher.size = url, url, 5.0, 0, -1
    with pytest.raises(InputError) as e:
        fetcher.fetch(0, 10)
    _one_line(e.value, url, "cannot fetch")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_s3_without_s3fs():
    url = "s3://usgs-lidar-public/USGS_LPC_X/tile.copc.laz"
    with pytest.raises(InputError) as e:
        inspect_pointcloud(url)
    _one_line(e.value, url, "pip install s3fs")
