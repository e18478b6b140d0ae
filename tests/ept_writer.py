"""A seeded EPT (Entwine Point Tile) writer for tests and benchmarks, in Entwine's layout.

The shared data holds three small Entwine-written datasets (``als/ept/``, at most 0.5 M points,
one paged level); the USGS 3DEP archive holds projects of billions of points in Web Mercator
with hierarchies paged many levels deep.  This module writes datasets of any size in the same
layout (https://entwine.io, "Entwine Point Tile" 1.0)::

    ROOT/ept.json                 bounds (a cube), boundsConforming, dataType "laszip",
                                  hierarchyType "json", points, schema, span, srs, version
    ROOT/ept-hierarchy/0-0-0-0.json   {"D-X-Y-Z": count, ...}, nodes at the next page depth -1
    ROOT/ept-hierarchy/D-X-Y-Z.json   the page of each node at a depth multiple of ``step``
    ROOT/ept-data/D-X-Y-Z.laz         one LAZ 1.2 file (point format 1) per node
    ROOT/ept-sources/list.json, 0.json    (optional) the source list, as Entwine writes it
    ROOT/ept-build.json

    layout = write_ept(root, {"x": x, "y": y, "z": z, "intensity": i, "return_number": r,
                              "number_of_returns": nr, "classification": c},
                       srs=srs_for(3857, vertical=5703), scales=(0.01,) * 3)

The octree, as Entwine builds it (top down): the cube is centred on the data's integer-rounded
bounds (``boundsConforming``), its side their largest extent plus 2 units; a node at depth ``d``
is ``D-X-Y-Z`` with side ``side / 2**d``.  A node holding at most ``max_points`` points keeps
them all (a leaf); a larger one keeps one point per cell of a ``span``³ grid over it (the point
drawn at random with ``seed``; Entwine keeps the one nearest the cell's centre) and passes the
rest to its children; at ``max_depth`` a node keeps all.  Within a node, points keep their input
order.  Hierarchy pages: every node at a depth multiple of ``step`` (Entwine's
``hierarchyStep``) is ``-1`` in its parent page and has a page of its own (itself, then its
descendants down to the next such depth), as ``lone-star-laszip`` (step 2) shows.

Coordinates are quantised to ``scales``/``offsets`` (``laspy``'s ``X * scale + offset`` is what a
reader returns: :func:`quantised` gives the same numbers for comparisons).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["EptLayout", "write_ept", "srs_for", "quantised", "key_name", "nodes_as_laz"]

Key = tuple[int, int, int, int]


def key_name(key: Key) -> str:
    return "-".join(str(v) for v in key)


def srs_for(epsg: int, vertical: int | None = None) -> dict:
    """An EPT ``srs`` object as Entwine writes it (authority, horizontal, vertical, wkt)."""
    import pyproj

    crs = pyproj.CRS(f"EPSG:{epsg}" + (f"+{vertical}" if vertical else ""))
    srs = {"authority": "EPSG", "horizontal": str(epsg)}
    if vertical:
        srs["vertical"] = str(vertical)
    srs["wkt"] = crs.to_wkt("WKT1_GDAL")
    return srs


def quantised(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """What a reader gets back for ``values`` written with ``scale`` and ``offset``."""
    ints = np.round((np.asarray(values, dtype=np.float64) - offset) / scale).astype(np.int32)
    return ints * scale + offset


@dataclass
class EptLayout:
    """What was written, for tests and benchmarks."""

    root: Path
    bounds: tuple[float, ...]
    conforming: tuple[float, ...]
    points: int
    nodes: dict[Key, int] = field(default_factory=dict)  # key -> point count
    node_bytes: dict[Key, int] = field(default_factory=dict)
    pages: dict[Key, int] = field(default_factory=dict)  # page (its node's key) -> bytes
    step: int = 2

    @property
    def depth(self) -> int:
        return max(k[0] for k in self.nodes)

    def node_bounds(self, key: Key) -> tuple[float, float, float, float]:
        d, x, y, _ = key
        b = self.bounds
        sx, sy = (b[3] - b[0]) / 2 ** d, (b[4] - b[1]) / 2 ** d
        return b[0] + x * sx, b[1] + y * sy, b[0] + (x + 1) * sx, b[1] + (y + 1) * sy

    def nodes_overlapping(self, boxes) -> list[Key]:
        out = []
        for k in self.nodes:
            nb = self.node_bounds(k)
            if any(nb[0] <= b[2] and nb[2] >= b[0] and nb[1] <= b[3] and nb[3] >= b[1] for b in boxes):
                out.append(k)
        return sorted(out)

    def page_of(self, key: Key) -> Key:
        """The page listing ``key``'s count (its own page for a node at a paged depth)."""
        d, x, y, z = key
        top = (d // self.step) * self.step
        sh = d - top
        return (top, x >> sh, y >> sh, z >> sh)

    def pages_for(self, nodes) -> set[Key]:
        """The pages a reader fetches to reach ``nodes`` (every page on the way down)."""
        out = set()
        for d, x, y, z in nodes:
            for top in range(0, d + 1, self.step):
                sh = d - top
                out.add((top, x >> sh, y >> sh, z >> sh))
        return out

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _assign(x, y, z, bmin, side, max_points, span, max_depth, seed) -> tuple[np.ndarray, np.ndarray]:
    """(depth, node id) per point; node id = (X * 2**d + Y) * 2**d + Z."""
    n = len(x)
    depth = np.full(n, -1, np.int8)
    nid = np.zeros(n, np.int64)
    rank = np.random.default_rng(seed).permutation(n)  # which point of a cell stays: a random one
    rem = np.arange(n)
    for d in range(max_depth + 1):
        if not len(rem):
            break
        s = side / 2 ** d
        dim = 2 ** d
        ijk = [np.clip(np.floor((a[rem] - m) / s).astype(np.int64), 0, dim - 1) for a, m in zip((x, y, z), bmin)]
        node = (ijk[0] * dim + ijk[1]) * dim + ijk[2]
        _, inv, cnt = np.unique(node, return_inverse=True, return_counts=True)
        leaf = (cnt[inv] <= max_points) | (d == max_depth)
        depth[rem[leaf]] = d
        nid[rem[leaf]] = node[leaf]
        up = ~leaf
        if not up.any():
            break
        r, node_u = rem[up], node[up]
        cell = np.zeros(len(r), np.int64)
        for a, m, i in zip((x, y, z), bmin, ijk):
            c = np.clip(np.floor((a[r] - (m + i[up] * s)) / (s / span)).astype(np.int64), 0, span - 1)
            cell = cell * span + c
        combined = node_u * span ** 3 + cell
        order = np.lexsort((rank[r], combined))
        first = np.ones(len(order), bool)
        first[1:] = combined[order][1:] != combined[order][:-1]
        keep = np.zeros(len(r), bool)
        keep[order[first]] = True
        depth[r[keep]] = d
        nid[r[keep]] = node_u[keep]
        rem = r[~keep]
    return depth, nid


def _key(d: int, node: int) -> Key:
    dim = 2 ** d
    return d, int(node // (dim * dim)), int((node // dim) % dim), int(node % dim)


def _schema(scales, offsets) -> list[dict]:
    xyz = [{"name": a, "offset": o, "scale": s, "size": 4, "type": "signed"} for a, s, o in zip("XYZ", scales, offsets)]
    rest = [("Intensity", 2, "unsigned"), ("ReturnNumber", 1, "unsigned"), ("NumberOfReturns", 1, "unsigned"),
            ("ScanDirectionFlag", 1, "unsigned"), ("EdgeOfFlightLine", 1, "unsigned"),
            ("Classification", 1, "unsigned"), ("ScanAngleRank", 4, "float"), ("UserData", 1, "unsigned"),
            ("PointSourceId", 2, "unsigned"), ("GpsTime", 8, "float")]
    return xyz + [{"name": n, "size": s, "type": t} for n, s, t in rest]


def _write_node(path: Path, points: dict, idx: np.ndarray, scales, offsets) -> int:
    import laspy

    hdr = laspy.LasHeader(point_format=1, version="1.2")
    hdr.scales, hdr.offsets = np.array(scales), np.array(offsets)
    las = laspy.LasData(hdr)
    las.X = np.round((points["x"][idx] - offsets[0]) / scales[0]).astype(np.int32)
    las.Y = np.round((points["y"][idx] - offsets[1]) / scales[1]).astype(np.int32)
    las.Z = np.round((points["z"][idx] - offsets[2]) / scales[2]).astype(np.int32)
    for name in ("intensity", "return_number", "number_of_returns", "classification"):
        setattr(las, name, points[name][idx])
    if "gps_time" in points:
        las.gps_time = points["gps_time"][idx]
    if "point_source_id" in points:
        las.point_source_id = points["point_source_id"][idx]
    las.write(path, do_compress=True)
    return path.stat().st_size


def write_ept(root, points: dict, srs: dict, scales=(0.01, 0.01, 0.01), offsets=None, *,
              max_points: int = 100_000, span: int = 128, step: int = 2, max_depth: int = 12,
              sources: bool = True, seed: int = 0) -> EptLayout:
    """Write ``points`` (``x``, ``y``, ``z`` in the srs's units, ``intensity``, ``return_number``,
    ``number_of_returns``, ``classification``; optional ``gps_time``, ``point_source_id``) as an
    EPT dataset under folder ``root``; ``srs`` as in ept.json (:func:`srs_for`).  ``offsets``
    default to the centre of the cube (as Entwine sets them)."""
    root = Path(root)
    n = len(points["x"])
    if n == 0:
        raise ValueError("no points")
    x, y, z = (np.asarray(points[a], dtype=np.float64) for a in "xyz")
    lo = np.floor([x.min(), y.min(), z.min()])
    hi = np.ceil([x.max(), y.max(), z.max()])
    hi = np.where(hi > lo, hi, lo + 1)
    half = float((hi - lo).max()) / 2 + 1
    centre = np.round((lo + hi) / 2)
    bmin, bmax = centre - half, centre + half
    if offsets is None:
        offsets = tuple(float(c) for c in centre)
    scales, offsets = tuple(float(s) for s in scales), tuple(float(o) for o in offsets)
    depth, nid = _assign(x, y, z, bmin, 2 * half, max_points, span, max_depth, seed)
    order = np.lexsort((np.arange(n), nid, depth))  # by node, then input order
    d_sorted, n_sorted = depth[order], nid[order]
    cuts = np.flatnonzero((np.diff(d_sorted) != 0) | (np.diff(n_sorted) != 0)) + 1
    (root / "ept-data").mkdir(parents=True, exist_ok=True)
    (root / "ept-hierarchy").mkdir(exist_ok=True)
    layout = EptLayout(root, (*map(float, bmin), *map(float, bmax)), (*map(float, lo), *map(float, hi)), n, step=step)
    for grp in np.split(order, cuts):
        key = _key(int(depth[grp[0]]), int(nid[grp[0]]))
        layout.nodes[key] = len(grp)
        layout.node_bytes[key] = _write_node(root / "ept-data" / f"{key_name(key)}.laz", points, grp, scales, offsets)
    # hierarchy pages: a node at a depth multiple of step (> 0) is -1 in its parent page
    pages: dict[Key, dict[str, int]] = {(0, 0, 0, 0): {}}
    for key in sorted(layout.nodes):
        page = layout.page_of(key)
        if key[0] and key[0] % step == 0:
            parent = layout.page_of((key[0] - 1, key[1] >> 1, key[2] >> 1, key[3] >> 1))
            pages.setdefault(parent, {})[key_name(key)] = -1
            pages.setdefault(key, {})
        pages.setdefault(page, {})[key_name(key)] = layout.nodes[key]
    for key, entries in pages.items():
        text = json.dumps(dict(sorted(entries.items(), key=lambda kv: tuple(int(v) for v in kv[0].split("-")))))
        (root / "ept-hierarchy" / f"{key_name(key)}.json").write_text(text)
        layout.pages[key] = len(text)
    doc = {"bounds": list(layout.bounds), "boundsConforming": list(layout.conforming), "dataType": "laszip",
           "hierarchyType": "json", "points": n, "schema": _schema(scales, offsets), "span": span, "srs": srs,
           "version": "1.0.0"}
    (root / "ept.json").write_text(json.dumps(doc, indent=2))
    (root / "ept-build.json").write_text(json.dumps({"software": "Entwine", "version": "2.0.0", "trustHeaders": True,
                                                      "maxNodeSize": max_points, "hierarchyStep": step}, indent=2))
    if sources:
        (root / "ept-sources").mkdir(exist_ok=True)
        (root / "ept-sources" / "list.json").write_text(json.dumps([{
            "bounds": [*map(float, lo), *map(float, hi)], "id": "synthetic.laz", "inserts": n,
            "path": "synthetic.laz", "points": n, "status": "inserted", "url": "0.json"}], indent=2))
        (root / "ept-sources" / "0.json").write_text(json.dumps({"synthetic.laz": {"srs": srs}}))
    return layout


def nodes_as_laz(ept_json, dst) -> Path:
    """Every node of a local EPT dataset, in the reader's node order (depth, X, Y, Z), as one
    LAZ file with the nodes' point format, scales, offsets and VLRs: the same points, in the
    same order, as a plain file (to compare a build from the EPT with a build from LAZ)."""
    import laspy

    ept_json, dst = Path(ept_json), Path(dst)
    hier: dict[Key, int] = {}
    for page in sorted((ept_json.parent / "ept-hierarchy").glob("*.json")):
        for k, v in json.loads(page.read_text()).items():
            if v != -1:
                hier[tuple(int(a) for a in k.split("-"))] = v
    nodes = [laspy.read(ept_json.parent / "ept-data" / f"{key_name(k)}.laz") for k in sorted(hier) if hier[k] > 0]
    first = nodes[0].header
    for n in nodes:
        assert np.array_equal(n.header.scales, first.scales) and np.array_equal(n.header.offsets, first.offsets)
    hdr = laspy.LasHeader(point_format=first.point_format, version=first.version)
    hdr.scales, hdr.offsets = first.scales, first.offsets
    hdr.vlrs.extend(first.vlrs)
    out = laspy.LasData(hdr)
    out.points = laspy.ScaleAwarePointRecord(np.concatenate([n.points.array for n in nodes]), first.point_format,
                                             first.scales, first.offsets)
    out.write(dst, do_compress=True)
    return dst
