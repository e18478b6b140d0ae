"""A small COPC 1.0 writer for tests and benchmarks (point format 6, LAS 1.4, lazrs).

laspy reads COPC but does not write it, and PDAL is not a dependency, so the only COPC file
in the shared data is a 33 KB sample.  This module writes realistically sized ones:

    layout = write_copc(path, {"x": x, "y": y, "z": z, "intensity": i, "return_number": r,
                               "number_of_returns": nr, "classification": c},
                        wkt=pyproj.CRS(32610).to_wkt("WKT1_GDAL"), scales=(0.01,) * 3)

File layout (https://copc.io, COPC 1.0)::

    LAS 1.4 header (375 bytes, point format 6 with the LAZ bit, legacy counts 0)
    VLR "copc"/1            copc info (160 bytes): centre, halfsize, spacing, root page, gps range
    VLR "laszip encoded"/22204   LAZ items of format 6, variable-size chunks (chunk size 2^32-1)
    VLR "LASF_Projection"/2112   OGC WKT (global encoding bit 4 set)
    offset of the chunk table (8 bytes), then one LAZ chunk per octree node, then the chunk table
    EVLR "copc"/1000        the hierarchy pages (child pages first, the root page last)

The octree is built the way untwine / PDAL ``writers.copc`` lay it out, but top down:

* the root is a cube anchored at the data's minimum corner (padded by a few scale units), its
  side the largest extent of x, y and z; a node at depth ``d`` has key ``(d, i, j, k)`` and
  side ``side / 2**d``; points are put into nodes with the very float arithmetic laspy uses for
  a node's bounds, so every point lies inside its node's bounds as a reader computes them;
* a node whose points number at most ``max_points`` (100,000, untwine's and PDAL's
  ``MaxPointsPerNode``) keeps them all (a leaf); a larger one keeps one point per cell of a
  ``cells``³ grid over it (128, untwine's ``CellCount``; the point is drawn at random, as both
  shuffle) and passes the rest down to its 8 children; a child that would get fewer than
  ``min_points`` (100) is kept in the parent instead (both hoist such children); at
  ``max_depth`` a node keeps all;
* within a node, points keep their input order (untwine and PDAL sort each chunk by GPS time:
  the same for input in acquisition order), which LAZ compresses best;
* nodes are written depth first (a node, then its children), so siblings are contiguous;
* hierarchy pages as untwine and PDAL write them: a page holds 4 levels; a node at the 4th
  level below the page's root whose subtree has more than 50 nodes starts a page of its own.

Differences from PDAL's writer, which change the bytes a query fetches a little: PDAL fixes
the leaf depth from the point count (millions, divided by 4 per level for flat data, until
under 0.1) and splits over-full leaves afterwards, where this writer stops wherever a node has
at most ``max_points`` (the same depth for evenly dense data); PDAL samples a finer grid
(``spacing / sqrt(3)`` cells: about 221 per side at the root, 148 below) with a power-of-two
grid only here (``cells=256`` brackets it); PDAL writes chunks as its bottom-up pass finishes
them (children before parents, siblings together), here a parent precedes its children, so a
query's nodes form fewer contiguous runs (fewer requests, the same bytes).

Every chunk is compressed by ``lazrs.ParLasZipCompressor`` (all cores) into one LAZ stream
with a variable-size chunk table (``compress_chunks`` per batch of nodes, then ``done``; the
serial ``LasZipCompressor`` adds an empty last chunk there), so the file is also a plain LAZ
1.4 file (``laspy.read``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CopcLayout", "write_copc", "POINT_DTYPE"]

#: point data record format 6 (30 bytes)
POINT_DTYPE = np.dtype([
    ("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("intensity", "<u2"),
    ("returns", "u1"),  # return number (bits 0-3), number of returns (bits 4-7)
    ("flags", "u1"),  # classification flags, scanner channel, scan direction, edge of flight line
    ("classification", "u1"), ("user_data", "u1"), ("scan_angle", "<i2"), ("point_source_id", "<u2"),
    ("gps_time", "<f8"),
])
assert POINT_DTYPE.itemsize == 30

HEADER_SIZE = 375
VLR_HEADER = 54
EVLR_HEADER = 60
ENTRY = struct.Struct("<iiiiQii")  # key (d, x, y, z), offset, byteSize, pointCount


@dataclass
class CopcLayout:
    """What was written: sizes, the octree and the hierarchy, for tests and reports."""

    path: Path
    file_size: int
    point_count: int
    center: tuple[float, float, float]
    halfsize: float
    spacing: float
    #: (d, x, y, z) -> (offset, byte_size, point_count), in file order
    nodes: dict = field(default_factory=dict)
    #: (offset, size) of each hierarchy page, the root page last
    pages: list = field(default_factory=list)
    point_data_start: int = 0  # first byte of the first chunk (after the chunk table offset)
    chunk_table: tuple[int, int] = (0, 0)  # (offset, size)
    evlr_start: int = 0

    @property
    def depth(self) -> int:
        return max(k[0] for k in self.nodes)

    def level_counts(self) -> dict[int, tuple[int, int, int]]:
        """depth -> (nodes, points, bytes)"""
        out: dict[int, list[int]] = {}
        for (d, *_), (_, size, count) in self.nodes.items():
            row = out.setdefault(d, [0, 0, 0])
            row[0] += 1
            row[1] += count
            row[2] += size
        return {d: tuple(v) for d, v in sorted(out.items())}


# --------------------------------------------------------------------------- points


def _pack(points: dict, scales, offsets) -> tuple[np.ndarray, np.ndarray]:
    """The format-6 records of ``points`` and their coordinates as a reader decodes them."""
    n = len(points["x"])
    rec = np.zeros(n, POINT_DTYPE)
    real = np.empty((3, n), np.float64)
    for a, name in enumerate("xyz"):
        v = np.round((np.asarray(points[name], np.float64) - offsets[a]) / scales[a])
        if n and (v.min() < -2**31 or v.max() > 2**31 - 1):
            raise ValueError(f"{name} does not fit in int32 with scale {scales[a]} and offset {offsets[a]}")
        rec[name.upper()] = v
        # what laspy gives back: X * scale + offset
        real[a] = rec[name.upper()] * scales[a] + offsets[a]
    rn = np.asarray(points["return_number"], np.uint8)
    nr = np.asarray(points["number_of_returns"], np.uint8)
    if n and (rn.max() > 15 or nr.max() > 15):
        raise ValueError("return numbers must be 0-15")
    rec["returns"] = (rn & 0x0F) | (nr << 4)
    rec["intensity"] = np.asarray(points["intensity"], np.uint16)
    rec["classification"] = np.asarray(points["classification"], np.uint8)
    for name, dt in (("gps_time", np.float64), ("point_source_id", np.uint16), ("scan_angle", np.int16),
                     ("user_data", np.uint8)):
        if name in points:
            rec[name] = np.asarray(points[name], dt)
    return rec, real


def _spread_table() -> np.ndarray:
    t = np.zeros(128, np.int64)
    for v in range(128):
        for b in range(7):
            t[v] |= ((v >> b) & 1) << (3 * b)
    return t


_SPREAD = _spread_table()


def _morton(jx: np.ndarray, jy: np.ndarray, jz: np.ndarray) -> np.ndarray:
    """Morton code of 21-bit cell indices; x in bit 0 of each 3-bit digit, as laspy's child
    direction (x | y << 1 | z << 2), so a node's code is a prefix of its children's."""
    out = np.zeros(len(jx), np.int64)
    for i, j in enumerate((jx, jy, jz)):
        for part in range(3):
            out |= _SPREAD[(j >> (7 * part)) & 127] << np.int64(21 * part + i)
    return out


def _starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values."""
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    st = _starts(sorted_keys)
    return st, np.diff(np.append(st, sorted_keys.size))


def cell_codes(real: np.ndarray, root_min: np.ndarray, width: float, bits: int) -> np.ndarray:
    """Morton code of the cell of every point at depth ``bits`` (at most 21) of the root cube.

    ``root_min`` and ``width`` are the root cube as a reader computes it (``center -
    halfsize`` and ``2 * halfsize``): node bounds are ``root_min + i * (width / 2**d)``,
    float64, laspy's formula.  Cells are found by exact comparison with such boundaries, and
    boundaries nest exactly (a coarser one is a finer one), so the node of a point at any
    depth (a prefix of its code) holds it by a reader's bounds too."""
    if bits > 21:
        raise ValueError("max_depth + log2(cells) must be at most 21")
    n = real.shape[1]
    step = width / 2**bits
    J = []
    for a in range(3):
        b = root_min[a] + np.arange(2**bits + 1, dtype=np.float64) * step
        if n and (real[a].min() < b[0] or real[a].max() > b[-1]):
            raise AssertionError("a point lies outside the root cube")
        # the last boundary at or below the point (a division may be one off: fix it exactly)
        j = np.clip(np.floor((real[a] - b[0]) / step).astype(np.int64), 0, 2**bits - 1)
        j -= b[j] > real[a]
        j += (j < 2**bits - 1) & (b[np.minimum(j + 1, 2**bits)] <= real[a])
        J.append(j.astype(np.int32))
        del j
    return _morton(*J)


def build_octree(code: np.ndarray, *, max_points: int, cells: int, min_points: int, max_depth: int,
                 seed: int) -> tuple[np.ndarray, list]:
    """(node index of every point, node keys ``(d, x, y, z)`` in depth-first order), from the
    points' :func:`cell_codes` at depth ``max_depth + log2(cells)`` (consumed: sorted in place).

    The points are sorted by code once: then at every depth a node's points, a sampling cell's
    points and a child's points are runs of that order, and each level is a linear pass.
    """
    n = len(code)
    D = max_depth
    cb = cells.bit_length() - 1
    order = np.argsort(code)
    code[:] = code[order]
    # random priority: the point kept in a sampling cell is the one of least priority (untwine
    # shuffles the points and keeps the first in each cell)
    prio = np.random.default_rng(seed).permutation(n).astype(np.uint32)
    node_of = np.empty(n, np.int32)  # by sorted position: index into `found`
    found: list = []  # (d, code at depth d)
    active = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    for d in range(D + 1):
        if active.size == 0:
            break
        kd = code[active] >> (3 * (D - d))  # sampling-cell code at depth d
        take = np.ones(active.size, bool)
        rest = active[:0]
        if d < D:
            _, counts = _runs(kd >> (3 * cb))  # points per node
            inner = np.flatnonzero(np.repeat(counts > max_points, counts))
            if inner.size:
                take[inner] = False
                cst, ccount = _runs(kd[inner])
                p = prio[active[inner]]
                chosen = p == np.repeat(np.minimum.reduceat(p, cst), ccount)
                take[inner[chosen]] = True
                left = inner[~chosen]
                # children that would get fewer than min_points stay in the parent
                _, kcount = _runs(kd[left] >> (3 * (cb - 1)))
                small = np.repeat(kcount < min_points, kcount)
                take[left[small]] = True
                rest = active[left[~small]]
        ti = np.flatnonzero(take)
        tn = kd[ti] >> (3 * cb)
        first = np.zeros(ti.size, bool)
        first[_starts(tn)] = True
        node_of[active[ti]] = len(found) + np.cumsum(first) - 1
        found.extend((d, int(c)) for c in tn[first])
        active = rest
    # depth-first order: by the Morton code of a node's first finest cell, then depth
    rank_key = [((c << (3 * (D - d))), d) for d, c in found]
    dfs = sorted(range(len(found)), key=rank_key.__getitem__)
    rank = np.empty(len(found), np.int64)
    rank[dfs] = np.arange(len(found))
    by_point = np.empty(n, np.int32)
    by_point[order] = rank[node_of]
    keys = []
    for i in dfs:
        d, c = found[i]
        xyz = [0, 0, 0]
        for b in range(d):
            for a in range(3):
                xyz[a] |= ((c >> (3 * b + a)) & 1) << b
        keys.append((d, *xyz))
    return by_point, keys


# --------------------------------------------------------------------------- hierarchy


def _hierarchy(nodes: dict, page_start: int, level_break: int, min_page: int) -> tuple[bytes, int, int, list]:
    """The hierarchy EVLR payload (child pages first, the root page last), written from file
    offset ``page_start``: (payload, root page offset, root page size, pages)."""
    entries = dict(nodes)
    # every ancestor of a node must be in the hierarchy (readers stop at a missing key)
    for d, x, y, z in list(nodes):
        while d > 0:
            d, x, y, z = d - 1, x >> 1, y >> 1, z >> 1
            entries.setdefault((d, x, y, z), (0, 0, 0))
    children: dict = {}
    for k in entries:
        if k[0] > 0:
            children.setdefault((k[0] - 1, k[1] >> 1, k[2] >> 1, k[3] >> 1), []).append(k)
    for v in children.values():
        v.sort(key=lambda k: (k[1] & 1) | (k[2] & 1) << 1 | (k[3] & 1) << 2)
    subtree: dict = {}

    def count(k) -> int:
        subtree[k] = 1 + sum(count(c) for c in children.get(k, ()))
        return subtree[k]

    count((0, 0, 0, 0))
    out = bytearray()
    pages: list = []

    def emit(root) -> tuple[int, int]:
        rows = [(root, entries[root])]
        stop = root[0] + level_break

        def walk(p) -> None:
            for c in children.get(p, ()):
                if c[0] != stop or subtree[c] <= min_page:
                    rows.append((c, entries[c]))
                    walk(c)
                else:
                    off, size = emit(c)
                    rows.append((c, (off, size, -1)))

        walk(root)
        start = page_start + len(out)
        for (d, x, y, z), (off, size, cnt) in rows:
            out.extend(ENTRY.pack(d, x, y, z, off, size, cnt))
        pages.append((start, len(rows) * ENTRY.size))
        return start, len(rows) * ENTRY.size

    root_off, root_size = emit((0, 0, 0, 0))
    return bytes(out), root_off, root_size, pages


# --------------------------------------------------------------------------- file


def _vlr(user_id: str, record_id: int, description: str, data: bytes) -> bytes:
    return struct.pack("<H16sHH32s", 0, user_id.encode(), record_id, len(data), description.encode()) + data


def _header(*, offset_to_points: int, n_vlrs: int, scales, offsets, mins, maxs, evlr_start: int, n_evlrs: int,
            count: int, by_return, global_encoding: int) -> bytes:
    h = struct.pack(
        "<4sHH16sBB32s32sHHHII BHI 5I 3d3d 6d QQI Q15Q",
        b"LASF", 0, global_encoding, b"\0" * 16, 1, 4, b"als-datasets tests".ljust(32, b"\0"),
        b"tests/copc_writer.py".ljust(32, b"\0"), 1, 2026, HEADER_SIZE, offset_to_points, n_vlrs,
        6 | 0x80, POINT_DTYPE.itemsize, 0, 0, 0, 0, 0, 0,  # legacy counts: 0 for formats 6-10
        *scales, *offsets, maxs[0], mins[0], maxs[1], mins[1], maxs[2], mins[2],
        0, evlr_start, n_evlrs, count, *by_return)
    assert len(h) == HEADER_SIZE, len(h)
    return h


def write_copc(path, points: dict, wkt: str, scales=(0.01, 0.01, 0.01), offsets=None, *,
               max_points: int = 100_000, cells: int = 128, min_points: int = 100, max_depth: int = 14,
               level_break: int = 4, min_page: int = 50, seed: int = 0) -> CopcLayout:
    """Write ``points`` as a COPC 1.0 file (point format 6, LAS 1.4) and return its layout.

    ``points``: ``x``, ``y``, ``z`` (float, CRS units), ``intensity``, ``return_number``,
    ``number_of_returns``, ``classification``; optional ``gps_time``, ``point_source_id``,
    ``scan_angle``, ``user_data``.  ``wkt``: the CRS as OGC WKT (a ``pyproj.CRS`` is turned
    into WKT1).  ``offsets`` default to the minimum corner rounded down to 1000 units.
    """
    import lazrs

    path = Path(path)
    if hasattr(wkt, "to_wkt"):
        wkt = wkt.to_wkt("WKT1_GDAL")
    n = len(points["x"])
    if n == 0:
        raise ValueError("no points")
    scales = tuple(float(s) for s in scales)
    if offsets is None:
        offsets = tuple(float(np.floor(np.min(points[a]) / 1000.0) * 1000.0) for a in "xyz")
    offsets = tuple(float(o) for o in offsets)
    rec, real = _pack(points, scales, offsets)
    mins, maxs = real.min(axis=1), real.max(axis=1)

    # root cube: the minimum corner, padded by a few scale units, and the largest extent
    pad = 4 * max(scales)
    side = float((maxs - mins).max()) + 2 * pad
    halfsize = side / 2
    center = mins - pad + halfsize
    root_min = center - halfsize  # what a reader computes
    width = float((center + halfsize)[0] - root_min[0])
    if cells < 2 or (cells & (cells - 1)) or max_depth < 0:
        raise ValueError("cells must be a power of two (at least 2) and max_depth at least 0")
    code = cell_codes(real, root_min, width, max_depth + cells.bit_length() - 1)
    del real
    node_of, keys = build_octree(code, max_points=max_points, cells=cells, min_points=min_points,
                                 max_depth=max_depth, seed=seed)
    del code
    # points by node (depth first), in input (acquisition) order within a node
    counts = np.bincount(node_of, minlength=len(keys))
    small = node_of.astype(np.uint16) if len(keys) <= 2**16 else node_of  # radix sort
    order = np.argsort(small, kind="stable")
    del node_of, small
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gps = rec["gps_time"]
    by_return = [int(v) for v in np.bincount(rec["returns"] & 0x0F, minlength=16)[1:16]]

    laz = lazrs.LazVlr.new_for_compression(6, 0, True)
    vlrs_len = 3 * VLR_HEADER + 160 + len(laz.record_data()) + len(wkt.encode()) + 1
    point_start = HEADER_SIZE + vlrs_len

    with open(path, "w+b") as f:
        f.write(b"\0" * point_start)
        comp = lazrs.ParLasZipCompressor(f, laz)
        step = 64  # nodes per call: only their points are copied out at a time
        for i in range(0, len(keys), step):
            st, ct = starts[i:i + step].tolist(), counts[i:i + step].tolist()
            s0, s1 = st[0], st[-1] + ct[-1]
            raw = rec[order[s0:s1]].view(np.uint8)
            comp.compress_chunks([raw[(s - s0) * 30:(s - s0 + c) * 30] for s, c in zip(st, ct)])
            del raw
        comp.done()
        f.flush()
        evlr_start = f.seek(0, 2)
        f.seek(point_start)
        table = lazrs.read_chunk_table(f, laz)
        f.seek(point_start)
        table_offset = struct.unpack("<q", f.read(8))[0]
        if [c for c, _ in table] != counts.tolist():
            raise AssertionError("chunk table does not match the nodes")
        nodes = {}
        pos = point_start + 8
        for key, (cnt, size) in zip(keys, table):
            nodes[key] = (pos, int(size), int(cnt))
            pos += size
        if pos != table_offset:
            raise AssertionError("chunks do not end at the chunk table")

        payload, root_off, root_size, pages = _hierarchy(nodes, evlr_start + EVLR_HEADER, level_break, min_page)
        f.seek(evlr_start)
        f.write(struct.pack("<H16sHQ32s", 0, b"copc", 1000, len(payload), b"EPT hierarchy"))
        f.write(payload)
        size = f.tell()

        spacing = 2 * halfsize / cells
        info = struct.pack("<5d2Q2d11Q", *center, halfsize, spacing, root_off, root_size,
                           float(gps.min()), float(gps.max()), *([0] * 11))
        head = _header(offset_to_points=point_start, n_vlrs=3, scales=scales, offsets=offsets, mins=mins,
                       maxs=maxs, evlr_start=evlr_start, n_evlrs=1, count=n, by_return=by_return,
                       global_encoding=0x10 | 0x01)  # WKT; adjusted standard GPS time
        vlrs = (_vlr("copc", 1, "copc info", info)
                + _vlr("laszip encoded", 22204, "lazrs variable-size chunks", laz.record_data())
                + _vlr("LASF_Projection", 2112, "OGC WKT", wkt.encode() + b"\0"))
        assert len(head) + len(vlrs) == point_start
        f.seek(0)
        f.write(head + vlrs)

    return CopcLayout(path=path, file_size=size, point_count=n, center=tuple(float(c) for c in center),
                      halfsize=halfsize, spacing=spacing, nodes=nodes, pages=pages, point_data_start=point_start,
                      chunk_table=(table_offset, evlr_start - table_offset), evlr_start=evlr_start)
