"""Synthetic EPT datasets (``tests/ept_writer.py``: Entwine's layout, Web Mercator, a hierarchy
paged every 2 levels) read from a loopback Range server: the writer round-trips, a query
fetches exactly ept.json, the hierarchy pages on the way down and the nodes over its box, a
Web Mercator build cuts its tiles in UTM and equals a build from a LAZ of the same points, and
network faults (5xx, timeouts, truncated bodies, a vanished node) are retried and then reported
in one line naming the URL (token redacted) and the node."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import range_server
from ept_writer import nodes_as_laz, quantised, srs_for, write_ept
from synth_inputs import landcover_around, write_recipe

from als_datasets import remote as core_remote
from als_datasets.build import run_build
from als_datasets.errors import InputError
from als_datasets.kinds.als.sources import ept
from als_datasets.kinds.als.sources.pointcloud import (
    footprint_lonlat,
    inspect_pointcloud,
    iter_ept_boxes,
    iter_point_chunks,
)
from als_datasets.kinds.als.sources.remote import FetchStats
from als_datasets.recipe import load_recipe

FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")
UTM = 32610
X0, Y0, SIDE = 500_130.0, 4_980_070.0, 600.0


def synthetic_points(n: int, seed: int = 7) -> dict:
    """ALS-like points over SIDE x SIDE m of UTM 10N (45° N), as Web Mercator x, y and z metres."""
    from pyproj import Transformer

    rng = np.random.default_rng(seed)
    ux, uy = X0 + rng.uniform(0, SIDE, n), Y0 + rng.uniform(0, SIDE, n)
    ground = 120 + 8 * np.sin(ux / 90.0) + 5 * np.cos(uy / 130.0)
    veg = rng.random(n) < 0.4
    z = ground + np.where(veg, rng.uniform(0.5, 20, n), rng.normal(0, 0.05, n))
    x, y = Transformer.from_crs(UTM, 3857, always_xy=True).transform(ux, uy)
    nr = np.where(veg, rng.integers(1, 4, n), 1).astype(np.uint8)
    return {"x": x, "y": y, "z": z, "intensity": rng.integers(0, 4000, n).astype(np.uint16),
            "return_number": np.minimum(rng.integers(1, 4, n), nr).astype(np.uint8), "number_of_returns": nr,
            "classification": np.where(veg, 5, 2).astype(np.uint8), "gps_time": np.sort(rng.uniform(0, 1e4, n))}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ept-synth")
    pts = synthetic_points(60_000)
    layout = write_ept(tmp / "proj", pts, srs_for(3857, vertical=5703), max_points=700, span=16, step=2)
    return tmp, pts, layout


def _files(root: Path, prefix: str = "proj") -> dict:
    return {f"{prefix}/{p.relative_to(root).as_posix()}": p for p in root.rglob("*") if p.is_file()}


def _rows(d: dict) -> np.ndarray:
    a = np.stack([np.asarray(d[k], dtype=np.float64) for k in FIELDS], 1)
    return a[np.lexsort(a.T[::-1])]


def _cat(chunks) -> dict:
    chunks = list(chunks)
    return {k: np.concatenate([c[k] for c in chunks]) if chunks else np.zeros(0) for k in FIELDS}


def test_writer_layout_and_round_trip(synth):
    tmp, pts, layout = synth
    root = layout.root
    doc = json.loads((root / "ept.json").read_text())
    assert doc["dataType"] == "laszip" and doc["points"] == 60_000 and doc["srs"]["horizontal"] == "3857"
    assert layout.depth >= 4 and sum(layout.nodes.values()) == 60_000
    root_page = json.loads((root / "ept-hierarchy" / "0-0-0-0.json").read_text())
    paged = [k for k, v in root_page.items() if v == -1]
    assert paged and all(k.startswith("2-") for k in paged) and len(layout.pages) > 1 + len(paged)  # deeper pages too
    assert (root / "ept-sources" / "list.json").is_file()
    info = inspect_pointcloud(root)
    assert info.is_ept and info.crs.to_epsg() == 3857 and info.z_to_m == 1.0 and info.crs_source == "ept-srs-wkt"
    c = footprint_lonlat(info).centroid
    assert c.x == pytest.approx(-123.0, abs=0.05) and c.y == pytest.approx(45.0, abs=0.05)
    got = _cat(iter_point_chunks(info, 7_000))
    want = dict(pts)
    for a, o in zip("xyz", doc["schema"][:3]):
        want[a] = quantised(pts[a], o["scale"], o["offset"])
    assert np.array_equal(_rows(got), _rows(want))


@pytest.fixture()
def served(synth):
    tmp, pts, layout = synth
    with range_server.RangeServer(_files(layout.root)) as srv:
        yield srv, layout


def test_query_fetches_only_overlapping_nodes_and_pages(served, synth):
    srv, layout = served
    url = srv.url("proj/ept.json")
    info = inspect_pointcloud(url)
    b = info.bounds
    box = (b[0] + 0.31 * (b[2] - b[0]), b[1] + 0.27 * (b[3] - b[1]), b[0] + 0.49 * (b[2] - b[0]),
           b[1] + 0.44 * (b[3] - b[1]))
    nodes = layout.nodes_overlapping([box])
    pages = layout.pages_for(nodes)
    assert 0 < len(nodes) < len(layout.nodes) and len(pages) < len(layout.pages)
    srv.reset()
    stats = FetchStats()
    got = _cat(iter_ept_boxes(info, [box], 5_000, stats=stats))
    ept_json = (layout.root / "ept.json").stat().st_size
    want_bytes = ept_json + sum(layout.pages[p] for p in pages) + sum(layout.node_bytes[k] for k in nodes)
    assert stats.bytes_fetched == srv.bytes_sent == want_bytes
    assert stats.requests == srv.requests == 1 + len(pages) + len(nodes)
    assert all(r is None for r in srv._srv.ranges)  # whole small files: plain GETs
    full = _cat(iter_point_chunks(inspect_pointcloud(layout.root)))
    keep = (full["x"] >= box[0]) & (full["x"] <= box[2]) & (full["y"] >= box[1]) & (full["y"] <= box[3])
    assert 0 < keep.sum() < len(keep)
    for k in FIELDS:
        assert np.array_equal(got[k], full[k][keep]), k
    print(f"\nEPT query of {keep.mean():.1%} of the points: {len(nodes)} of {len(layout.nodes)} nodes, {len(pages)} "
          f"of {len(layout.pages)} pages, {srv.bytes_sent:,} of {layout.total_bytes:,} bytes")


# --------------------------------------------------------------------------- Web Mercator build


def _recipe(tmp: Path, name: str, source: str, crs: str | None) -> Path:
    project = {"name": "merc", "boundary": "b.geojson", "pointclouds": [source]}
    if crs:
        project["pointcloud_crs"] = crs
    return write_recipe(tmp / f"{name}.yaml", name="ept-merc", tile_size_m=100, grid_res_m=5, samples_per_project=5,
                        landcover={"path": "lc.tif"}, dem={"path": "dem.tif"}, projects=[project],
                        output={"dir": f"out-{name}", "shard_max_samples": 2})


def _shards(out: Path) -> dict[str, bytes]:
    files = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_web_mercator_build_cuts_utm_tiles_and_equals_laz(synth, tmp_path):
    import tarfile

    from pyproj import Transformer
    from test_ept import _dem_around

    _, _, layout = synth
    tr = Transformer.from_crs(UTM, 4326, always_xy=True)
    lon0, lat0 = tr.transform(X0 + 20, Y0 + 20)
    lon1, lat1 = tr.transform(X0 + SIDE - 20, Y0 + SIDE - 20)
    (tmp_path / "b.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[
        [lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]}))
    landcover_around(tmp_path / "lc.tif", (lon0, lat0, lon1, lat1), margin_m=100.0)
    _dem_around(tmp_path / "dem.tif", (lon0, lat0, lon1, lat1), margin_m=100.0, res=5.0)
    (tmp_path / "ref").mkdir()
    nodes_as_laz(layout.root / "ept.json", tmp_path / "ref" / "proj")  # named like the dataset (its label)
    r = load_recipe(_recipe(tmp_path, "laz", str(tmp_path / "ref" / "proj"), "EPSG:3857+5703"))
    run_build(r)
    want = _shards(r.out_dir)
    with range_server.RangeServer(_files(layout.root)) as srv:
        r = load_recipe(_recipe(tmp_path, "url", srv.url("proj/ept.json"), None))
        run_build(r)
    got = _shards(r.out_dir)
    assert any(k.endswith(".tar") for k in got) and got == want
    tile = np.float32(100.0)
    n = 0
    for tar in (r.out_dir / "webdataset").rglob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    assert meta["crs"] == f"EPSG:{UTM}" and meta["source_files"] == ["proj"]
                    x0, y0, x1, y1 = meta["bounds_utm"]
                    assert x1 - x0 == 100.0 and y1 - y0 == 100.0
                elif m.name.endswith(".xyz.npy"):
                    xyz = np.load(io.BytesIO(t.extractfile(m).read()))
                    assert (xyz[:, :2] >= 0).all() and (xyz[:, :2] < tile).all()
                    n += len(xyz)
    assert n > 0


# --------------------------------------------------------------------------- faults


class _FaultHandler(range_server._Handler):
    """The test server, misbehaving on request for the paths in ``server.faults``: each entry is
    a list of actions used up one per request ("503", "slow", "truncate"), then served normally;
    an entry ending in "always" repeats its first action."""

    def _serve(self, head: bool) -> None:
        name = self.path.split("?", 1)[0].lstrip("/")
        self.server.seen.append(self.path)
        plan = self.server.faults.get(name)
        action = None
        if plan:
            action = plan[0] if plan[-1] == "always" else plan.pop(0)
        if action == "503":
            return self._send(503, b"busy")
        if action == "slow":
            time.sleep(self.server.delay)
        if action == "truncate":
            data = self.server.files[name].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        return super()._serve(head)


@pytest.fixture()
def faulty(synth, monkeypatch):
    _, _, layout = synth
    monkeypatch.setattr(core_remote, "RETRY_BASE_S", 0.01)
    monkeypatch.setattr(core_remote, "TIMEOUT_S", 0.5)
    srv = range_server.RangeServer(_files(layout.root))
    srv._srv.RequestHandlerClass = _FaultHandler
    srv._srv.faults, srv._srv.seen, srv._srv.delay = {}, [], 1.5
    with srv:
        yield srv, layout


def _some_box(info):
    b = info.bounds
    return (b[0] + 0.1 * (b[2] - b[0]), b[1] + 0.1 * (b[3] - b[1]), b[0] + 0.3 * (b[2] - b[0]), b[1] + 0.3 * (b[3] - b[1]))


def test_transient_faults_are_retried(faulty):
    srv, layout = faulty
    url = srv.url("proj/ept.json") + "?sig=SECRET"
    info = inspect_pointcloud(url)
    box = _some_box(info)
    clean = _cat(iter_ept_boxes(info, [box]))
    node = layout.nodes_overlapping([box])[-1]
    page = sorted(layout.pages_for([node]))[-1]
    srv._srv.faults.update({
        "proj/ept.json": ["503", "503"],
        f"proj/ept-hierarchy/{ept.key_name(page)}.json": ["truncate"],
        f"proj/ept-data/{ept.key_name(node)}.laz": ["slow", "truncate", "503"],
    })
    srv._srv.seen.clear()
    got = _cat(iter_ept_boxes(info, [box]))
    assert all(np.array_equal(got[k], clean[k]) for k in FIELDS)
    assert sum(p.startswith("/proj/ept-data/" + ept.key_name(node)) for p in srv._srv.seen) == 4
    assert all(p.endswith("?sig=SECRET") for p in srv._srv.seen)  # the folder's token goes to every file


@pytest.mark.parametrize("action,needle", [("503", "HTTP 503"), ("truncate", "truncated body"),
                                           ("slow", "timed out")])
def test_persistent_fault_is_one_line_naming_url_and_node(faulty, action, needle):
    srv, layout = faulty
    url = srv.url("proj/ept.json") + "?sig=SECRET"
    info = inspect_pointcloud(url)
    box = _some_box(info)
    node = layout.nodes_overlapping([box])[-1]
    srv._srv.faults[f"proj/ept-data/{ept.key_name(node)}.laz"] = [action, "always"]
    with pytest.raises(InputError) as e:
        list(iter_ept_boxes(info, [box]))
    msg = str(e.value)
    node_url = srv.url(f"proj/ept-data/{ept.key_name(node)}.laz")
    assert "\n" not in msg and "SECRET" not in msg and "sig=" not in msg
    for n in (node_url, f"EPT node {ept.key_name(node)}", needle, f"after {core_remote.RETRIES + 1} tries"):
        assert n in msg, msg


def test_node_missing_from_server(synth):
    _, _, layout = synth
    files = _files(layout.root)
    node = sorted(layout.nodes)[-1]
    del files[f"proj/ept-data/{ept.key_name(node)}.laz"]
    with range_server.RangeServer(files) as srv:
        info = inspect_pointcloud(srv.url("proj/ept.json"))
        with pytest.raises(InputError) as e:
            list(iter_point_chunks(info))
    msg = str(e.value)
    assert "\n" not in msg
    for n in (srv.url(f"proj/ept-data/{ept.key_name(node)}.laz"), f"EPT node {ept.key_name(node)}",
              "listed in the hierarchy but missing", "404"):
        assert n in msg, msg


def test_info_survives_replace(synth):
    _, _, layout = synth
    info = inspect_pointcloud(layout.root)
    assert dataclasses.replace(info, path="http://127.0.0.1:9/proj/ept.json").is_ept


def test_srs_without_wkt_uses_the_epsg_codes(synth, tmp_path):
    """3DEP-style srs objects may carry only the codes: EPSG:3857 horizontal + 5703 vertical."""
    import shutil

    _, _, layout = synth
    root = tmp_path / "proj"
    shutil.copytree(layout.root, root)
    doc = json.loads((root / "ept.json").read_text())
    doc["srs"] = {"authority": "EPSG", "horizontal": "3857", "vertical": "5703"}
    (root / "ept.json").write_text(json.dumps(doc))
    info = inspect_pointcloud(root / "ept.json")
    assert info.crs.to_epsg() == 3857 and info.crs_source == "ept-srs-epsg" and info.z_to_m == 1.0
    assert info.bounds == inspect_pointcloud(layout.root).bounds
