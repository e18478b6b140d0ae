"""The test COPC writer (``tests/copc_writer.py``): files laspy opens as COPC and as plain LAZ,
queries that return exactly the points written (all of them, and those inside boxes), the
same through ``copc.iter_copc_boxes`` locally and over HTTP range requests, and a small box
fetching a small share of a file whose octree has several levels."""

from __future__ import annotations

import dataclasses
import struct

import laspy
import lazrs
import numpy as np
import pyproj
import pytest
from copc_writer import ENTRY, HEADER_SIZE, write_copc
from laspy.copc import Bounds, load_octree_for_query
from range_server import RangeServer

from als_datasets.kinds.als.sources import copc, remote
from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud, iter_point_chunks

N = 50_000
X0, Y0 = 500_000.0, 4_100_000.0  # EPSG:32610
W, H = 400.0, 300.0
SCALES = (0.01, 0.01, 0.001)
FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")
# small nodes so that 50 k points make a tree of several levels
OPTS = dict(max_points=4000, cells=32)


def _points(n: int = N, seed: int = 7) -> dict:
    """Seeded ALS-like points: a uniform cover, a dense patch (deeper nodes there), trees."""
    rng = np.random.default_rng(seed)
    dense = rng.random(n) < 0.3
    x = np.where(dense, X0 + 250 + rng.random(n) * 60, X0 + rng.random(n) * W)
    y = np.where(dense, Y0 + 40 + rng.random(n) * 50, Y0 + rng.random(n) * H)
    ground = 120 + 0.05 * (x - X0) + 3 * np.sin((y - Y0) / 40)
    nr = rng.integers(1, 4, n).astype(np.uint8)
    rn = (rng.integers(0, 3, n) % nr + 1).astype(np.uint8)
    veg = rn < nr
    z = ground + np.where(veg, rng.random(n) * 25, rng.normal(0, 0.03, n))
    return {
        "x": x, "y": y, "z": z,
        "intensity": rng.integers(0, 4000, n).astype(np.uint16),
        "return_number": rn, "number_of_returns": nr,
        "classification": np.where(veg, 5, 2).astype(np.uint8),
        "gps_time": 3e8 + np.sort(rng.random(n)) * 600,
        "point_source_id": rng.integers(1, 5, n).astype(np.uint16),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copc-writer")
    pts = _points()
    wkt = pyproj.CRS(32610).to_wkt("WKT1_GDAL")
    flat = write_copc(tmp / "one-page.copc.laz", pts, wkt, SCALES, **OPTS)
    # every node below a page's root that has children starts a page of its own
    paged = write_copc(tmp / "paged.copc.laz", pts, wkt, SCALES, level_break=1, min_page=1, **OPTS)
    return pts, flat, paged


def _quantised(pts: dict) -> dict:
    """The points as a reader decodes them (integers, and x, y, z snapped to the scale grid)."""
    offsets = [np.floor(np.min(pts[a]) / 1000.0) * 1000.0 for a in "xyz"]
    q = {a.upper(): np.round((pts[a] - o) / s).astype(np.int64) for a, o, s in zip("xyz", offsets, SCALES)}
    q.update({a: q[a.upper()] * s + o for a, o, s in zip("xyz", offsets, SCALES)})
    for k in ("intensity", "return_number", "number_of_returns", "classification", "gps_time", "point_source_id"):
        q[k] = np.asarray(pts[k])
    return q


def _rows(cols: list) -> np.ndarray:
    """Rows of the columns, sorted: compares point sets whatever their order."""
    a = np.column_stack([np.asarray(c, np.float64) for c in cols])
    return a[np.lexsort(a.T[::-1])]


def _record_rows(pts) -> np.ndarray:
    return _rows([pts.X, pts.Y, pts.Z, pts.intensity, pts.return_number, pts.number_of_returns,
                  pts.classification, pts.gps_time, pts.point_source_id])


def _input_rows(q: dict, keep=slice(None)) -> np.ndarray:
    return _rows([q[k][keep] for k in ("X", "Y", "Z", "intensity", "return_number", "number_of_returns",
                                       "classification", "gps_time", "point_source_id")])


# --------------------------------------------------------------------------- layout


def test_file_layout(data):
    pts, lay, paged = data
    raw = lay.path.read_bytes()
    assert len(raw) == lay.file_size
    assert raw[:4] == b"LASF" and raw[24:26] == bytes([1, 4])
    assert struct.unpack_from("<H", raw, 94)[0] == HEADER_SIZE
    assert raw[104] == 6 | 0x80  # format 6, compressed
    assert struct.unpack_from("<I", raw, 107)[0] == 0  # legacy count 0 for format 6
    # the copc info VLR first, right after the header; then LAZ (variable chunks) and WKT
    user, rid = struct.unpack_from("<2x16sH", raw, HEADER_SIZE)
    assert (user.rstrip(b"\0"), rid) == (b"copc", 1)
    with laspy.open(lay.path) as r:
        h = r.header
        assert [(v.user_id, v.record_id) for v in h.vlrs] == [
            ("copc", 1), ("laszip encoded", 22204), ("LASF_Projection", 2112)]
        assert h.parse_crs().to_epsg() == 32610
        assert [(v.user_id, v.record_id) for v in h.evlrs] == [("copc", 1000)]
        assert h.point_count == N and h.point_format.id == 6
        assert sum(h.number_of_points_by_return) == N
    with laspy.CopcReader.open(lay.path) as r:
        laz = lazrs.LazVlr(r.laszip_vlr.record_data)
        assert laz.uses_variable_size_chunks() and laz.chunk_size() == 2**32 - 1
        info = r.copc_info
        assert info.halfsize == lay.halfsize and np.allclose(info.spacing, 2 * info.halfsize / OPTS["cells"])
        assert (info.center - info.halfsize <= r.header.mins).all() and (info.center + info.halfsize >= r.header.maxs).all()
        assert info.gps_min == pts["gps_time"].min() and info.gps_max == pts["gps_time"].max()
    # several levels, nodes of at most max_points, contiguous chunks in depth-first order
    levels = lay.level_counts()
    assert len(levels) >= 3 and sum(v[1] for v in levels.values()) == N
    assert max(c for _, _, c in lay.nodes.values()) <= OPTS["max_points"]
    offs = list(lay.nodes.values())
    assert offs[0][0] == lay.point_data_start + 8 and list(lay.nodes)[0] == (0, 0, 0, 0)
    assert all(a[0] + a[1] == b[0] for a, b in zip(offs, offs[1:]))
    assert offs[-1][0] + offs[-1][1] == lay.chunk_table[0]
    # one hierarchy page in the default layout, several in the forced one (root page last)
    assert len(lay.pages) == 1 and len(paged.pages) >= 4
    assert lay.pages[0] == (lay.evlr_start + 60, len(lay.nodes) * ENTRY.size)
    assert paged.pages[-1][0] > paged.pages[0][0]
    # the same chunks in both files: only the hierarchy differs
    assert paged.nodes == lay.nodes


def test_points_lie_in_their_nodes_and_parents_are_coarse(data):
    _, lay, _ = data
    inner_nodes = 0
    with laspy.CopcReader.open(lay.path) as r:
        nodes = load_octree_for_query(r.source, r.copc_info, r.root_page)
        assert {(n.key.level, n.key.x, n.key.y, n.key.z) for n in nodes if n.point_count} == set(lay.nodes)
        for node in nodes:
            if not node.point_count:
                continue
            p = r._fetch_and_decompress_points_of_nodes([node])
            xyz = np.column_stack([p.x, p.y, p.z])
            assert (xyz >= node.bounds.mins).all() and (xyz <= node.bounds.maxs).all(), node
            k = node.key
            inner = any((k.level + 1, 2 * k.x + i % 2, 2 * k.y + i // 2 % 2, 2 * k.z + i // 4) in lay.nodes
                        for i in range(8))
            if inner:
                # an inner node is a grid subsample: at most one point per cell of its grid
                cell = (node.bounds.maxs[0] - node.bounds.mins[0]) / OPTS["cells"]
                c = np.floor((xyz - node.bounds.mins) / cell).astype(np.int64)
                assert len(np.unique(c, axis=0)) >= len(p) - 8 * 100  # hoisted small children aside
                inner_nodes += 1
    assert inner_nodes >= 5


def test_same_seed_same_bytes(tmp_path, data):
    pts, lay, _ = data
    again = write_copc(tmp_path / "again.copc.laz", pts, pyproj.CRS(32610), SCALES, **OPTS)
    assert again.path.read_bytes() == lay.path.read_bytes()


def test_bad_inputs(tmp_path):
    pts = _points(100)
    pts["x"] = pts["x"] + 1e8  # does not fit int32 at 1 cm
    with pytest.raises(ValueError, match="int32"):
        write_copc(tmp_path / "x.copc.laz", pts, "", SCALES, offsets=(0, 0, 0))
    with pytest.raises(ValueError, match="no points"):
        write_copc(tmp_path / "x.copc.laz", {k: v[:0] for k, v in _points(10).items()}, "")


# --------------------------------------------------------------------------- laspy round trips


@pytest.mark.parametrize("which", ["flat", "paged"])
def test_laspy_query_all_returns_the_input(data, which):
    pts, flat, paged = data
    lay = flat if which == "flat" else paged
    with laspy.CopcReader.open(lay.path) as r:
        got = r.query()
    assert len(got) == N
    assert np.array_equal(_record_rows(got), _input_rows(_quantised(pts)))


@pytest.mark.parametrize("which", ["flat", "paged"])
def test_laspy_bounds_queries(data, which):
    pts, flat, paged = data
    lay = flat if which == "flat" else paged
    q = _quantised(pts)
    root_min = np.array(lay.center) - lay.halfsize
    side = 2 * lay.halfsize
    boxes = [
        (X0 + 10, Y0 + 10, X0 + 60, Y0 + 45),  # a small box in the sparse part
        (X0 + 255, Y0 + 50, X0 + 275, Y0 + 60),  # in the dense patch (deep nodes)
        (X0 - 50, Y0 - 50, X0 + W + 50, Y0 + H + 50),  # everything
        # edges on octree node boundaries (level 2 and 3) and on a point's coordinates
        (root_min[0] + side / 4, root_min[1] + side / 8, root_min[0] + side / 2, root_min[1] + 3 * side / 8),
        (q["x"][123], q["y"][456], q["x"][123] + 30, q["y"][456] + 30),
        (X0 + W + 10, Y0, X0 + W + 20, Y0 + 10),  # outside: nothing
    ]
    offsets = [np.floor(np.min(pts[a]) / 1000.0) * 1000.0 for a in "xyz"]
    with laspy.CopcReader.open(lay.path) as r:
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            got = r.query(Bounds(np.array([x0, y0]), np.array([x1, y1])))
            # laspy's own rule: integer coordinates within the rounded box, z within the header
            lo = np.round((np.array([x0, y0]) - offsets[:2]) / SCALES[:2])
            hi = np.round((np.array([x1, y1]) - offsets[:2]) / SCALES[:2])
            keep = (q["X"] >= lo[0]) & (q["X"] <= hi[0]) & (q["Y"] >= lo[1]) & (q["Y"] <= hi[1])
            assert len(got) == keep.sum(), i
            assert np.array_equal(_record_rows(got), _input_rows(q, keep)), i
        # a 3-D box: z is filtered too
        zlo, zhi = 125.0, 135.0
        got = r.query(Bounds(np.array([X0, Y0, zlo]), np.array([X0 + 200, Y0 + 150, zhi])))
        zi = np.round((np.array([zlo, zhi]) - offsets[2]) / SCALES[2])
        keep = ((q["X"] >= 0) & (q["X"] <= 20_000) & (q["Y"] >= 0) & (q["Y"] <= 15_000)
                & (q["Z"] >= zi[0]) & (q["Z"] <= zi[1]))
        assert 0 < len(got) == keep.sum()
        assert np.array_equal(_record_rows(got), _input_rows(q, keep))


def test_laspy_reads_it_as_plain_laz(data):
    pts, lay, _ = data
    las = laspy.read(lay.path)  # the chunk table makes it a valid LAZ 1.4 file
    assert len(las.points) == N
    assert np.array_equal(_record_rows(las.points), _input_rows(_quantised(pts)))
    # in file order: node by node, depth first
    first = lay.nodes[(0, 0, 0, 0)][2]
    with laspy.CopcReader.open(lay.path) as r:
        root = r.query(level=0)
    assert np.array_equal(np.asarray(las.points.X[:first]), np.asarray(root.X))
    # the toolkit's whole-file stream (a COPC file read as LAZ, in chunks)
    chunks = list(iter_point_chunks(inspect_pointcloud(lay.path), 7_000))
    assert len(chunks) > 1 and sum(len(c["x"]) for c in chunks) == N


# --------------------------------------------------------------------------- the toolkit's reader


def _crop(q: dict, boxes) -> dict:
    keep = np.zeros(len(q["x"]), bool)
    for x0, y0, x1, y1 in boxes:
        keep |= (q["x"] >= x0) & (q["x"] <= x1) & (q["y"] >= y0) & (q["y"] <= y1)
    return {k: q[k][keep] for k in FIELDS}


def _query(info, boxes, stats=None, chunk_size=1_000_000) -> dict:
    chunks = list(copc.iter_copc_boxes(info, boxes, chunk_size, stats=stats))
    if not chunks:
        return {k: np.zeros(0) for k in FIELDS}
    return {k: np.concatenate([c[k] for c in chunks]) for k in FIELDS}


def _same_points(a: dict, b: dict) -> bool:
    return len(a["x"]) == len(b["x"]) and np.array_equal(_rows([a[k] for k in FIELDS]), _rows([b[k] for k in FIELDS]))


def test_iter_copc_boxes_local_and_over_http(data):
    pts, flat, paged = data
    q = _quantised(pts)
    boxes = [(X0 + 20, Y0 + 20, X0 + 120, Y0 + 90), (X0 + 100, Y0 + 80, X0 + 140, Y0 + 200),  # overlapping
             (X0 + 250, Y0 + 30, X0 + 300, Y0 + 70), (X0 + 1000, Y0, X0 + 1100, Y0 + 100)]
    want = _crop(q, boxes)
    assert 0 < len(want["x"]) < N
    with RangeServer({"flat.copc.laz": flat.path, "paged.copc.laz": paged.path}) as srv:
        for lay, name in ((flat, "flat.copc.laz"), (paged, "paged.copc.laz")):
            local = inspect_pointcloud(lay.path)
            assert local.is_copc and local.crs.to_epsg() == 32610 and local.point_count == N
            far = inspect_pointcloud(srv.url(name))
            assert far.bounds == local.bounds and far.crs == local.crs
            for info in (local, far):
                got = _query(info, boxes, chunk_size=3000)  # several batches of nodes
                assert _same_points(got, want), (name, info.path)
                assert _same_points(_query(info, [local.bounds]), _crop(q, [local.bounds]))
            # the whole extent: every point once
            assert len(_query(far, [local.bounds])["x"]) == N


def _overlapping(lay, box) -> dict:
    """The nodes of ``lay`` whose bounds (as a reader computes them) overlap a 2-D box."""
    root_min = np.array(lay.center) - lay.halfsize
    width = (np.array(lay.center) + lay.halfsize)[0] - root_min[0]
    out = {}
    for (d, x, y, z), v in lay.nodes.items():
        side = width / 2**d
        lo, hi = root_min + np.array([x, y, z]) * side, root_min + np.array([x + 1, y + 1, z + 1]) * side
        if lo[0] <= box[2] and hi[0] >= box[0] and lo[1] <= box[3] and hi[1] >= box[1]:
            out[(d, x, y, z)] = v
    return out


def test_small_box_fetches_a_small_share(data, record_property):
    _, flat, paged = data
    box = (X0 + 30, Y0 + 30, X0 + 50, Y0 + 50)  # 0.3 % of the area, in the sparse part
    for lay in (flat, paged):
        with RangeServer({"f.copc.laz": lay.path}) as srv:
            info = dataclasses.replace(inspect_pointcloud(lay.path), path=srv.url("f.copc.laz"))
            srv.reset()
            stats = remote.FetchStats()
            n = len(_query(info, [box], stats)["x"])
        ratio = srv.bytes_sent / lay.file_size
        assert n > 0 and stats.bytes_fetched == srv.bytes_sent and stats.requests == srv.requests
        # the first block (header, VLRs), read-ahead blocks over the hierarchy pages on the
        # way, and the chunks of exactly the nodes overlapping the box
        hit = _overlapping(lay, box)
        node_bytes = sum(s for _, s, _ in hit.values())
        assert sorted(k[0] for k in hit) == list(range(len(hit)))  # one node per level down to a leaf
        hier = srv.bytes_sent - remote.FIRST_BLOCK - node_bytes
        assert 0 < hier <= len(lay.pages) * remote.BLOCK_SIZE
        print(f"\n{lay.path.name}: {lay.file_size:,} bytes, {len(lay.nodes)} nodes, {len(lay.pages)} hierarchy "
              f"pages; a 20 m box: {srv.bytes_sent:,} bytes ({ratio:.1%}) in {srv.requests} requests "
              f"({len(hit)} nodes: {node_bytes:,} bytes), {n} points")
        record_property(f"{lay.path.name}_ratio", round(ratio, 4))
        assert ratio < 0.2


def test_default_layout_small_file(tmp_path):
    """With the default (untwine) parameters, 50 k points fit in the root node alone."""
    pts = _points(N, seed=3)
    lay = write_copc(tmp_path / "root.copc.laz", pts, pyproj.CRS(32610), SCALES)
    assert list(lay.nodes) == [(0, 0, 0, 0)] and lay.nodes[(0, 0, 0, 0)][2] == N
    with laspy.CopcReader.open(lay.path) as r:
        assert np.array_equal(_record_rows(r.query()), _input_rows(_quantised(pts)))


@pytest.mark.slow
def test_default_layout_large_file(tmp_path):
    """1.2 M ALS-like points with the default parameters (128³ sampling grid, 100 k points per
    leaf): laspy and iter_copc_boxes (over HTTP) return exactly the points, a 50 m box fetches
    the nodes on its path only."""
    n = 1_200_000
    rng = np.random.default_rng(11)
    pts = _points(n, seed=11)
    pts["x"] = X0 + rng.random(n) * 1000  # 1 km x 1 km at 1.2 pts/m²
    pts["y"] = Y0 + rng.random(n) * 1000
    lay = write_copc(tmp_path / "big.copc.laz", pts, pyproj.CRS(32610), SCALES)
    parents = {(d - 1, x >> 1, y >> 1, z >> 1) for d, x, y, z in lay.nodes if d}
    leaves = [c for k, (_, _, c) in lay.nodes.items() if k not in parents]
    assert lay.depth >= 2 and max(leaves) <= 100_000  # inner nodes: up to one point per cell of 128³
    q = _quantised(pts)
    with laspy.CopcReader.open(lay.path) as r:
        assert np.array_equal(_record_rows(r.query()), _input_rows(q))
    box = (X0 + 400, Y0 + 300, X0 + 450, Y0 + 350)
    with RangeServer({"big.copc.laz": lay.path}) as srv:
        info = dataclasses.replace(inspect_pointcloud(lay.path), path=srv.url("big.copc.laz"))
        srv.reset()
        got = _query(info, [box])
        ratio = srv.bytes_sent / lay.file_size
        print(f"\n{n:,} points, {lay.file_size:,} bytes, {len(lay.nodes)} nodes: a 50 m box fetched "
              f"{srv.bytes_sent:,} bytes ({ratio:.1%}) in {srv.requests} requests")
        assert _same_points(got, _crop(q, [box]))
        # the first block, the root hierarchy page and exactly the nodes on the box's path
        node_bytes = sum(size for _, size, _ in _overlapping(lay, box).values())
        assert 0 < srv.bytes_sent - remote.FIRST_BLOCK - node_bytes <= 2 * remote.BLOCK_SIZE
        assert ratio < 0.25  # at 1.2 pts/m² the root and a level-1 node are a large share
        assert _same_points(_query(info, [info.bounds]), _crop(q, [info.bounds]))
