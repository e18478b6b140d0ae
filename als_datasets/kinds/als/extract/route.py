"""Streaming extraction, stage 1: read each input file once and route its points to tiles.

A route task reads one point-cloud file chunk by chunk (laspy ``chunk_iterator``), moves the
points into the project's UTM CRS (:class:`Reprojection`: a chunk's runs in threads), and
appends every point that falls in a *selected* tile to that tile's staging buffer.  Buffers
are flushed to small ``.npy`` parts when they grow past a fixed number of points, so memory
stays flat however large the file.  A COPC file (local or a URL) and an EPT dataset are read by
bounds instead: only the octree nodes over the task's tiles.  A task ends by writing a ``done``
marker; parts of a task without its marker are leftovers of an interrupted run and are removed
before the task runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numba import njit

#: staged points: x, y are float64 offsets from the tile's lower-left corner, exact (the offset of
#: a coordinate from a nearby corner has no rounding error), so the outlier filter measures the
#: same distances PDAL measures on the float64 scaled-integer coordinates; samples store float32
#: (:func:`~als_datasets.kinds.als.extract.tile.sample_arrays`)
POINT_DTYPE = np.dtype([
    ("x", "<f8"), ("y", "<f8"), ("z", "<f8"),
    ("intensity", "<u2"), ("return_number", "u1"), ("number_of_returns", "u1"), ("classification", "u1"),
])


def staged_dtype(chunk: dict) -> np.dtype:
    """:data:`POINT_DTYPE` plus the chunk's recipe ``point_attributes`` (its other keys, in order)."""
    extra = [(k, chunk[k].dtype.str) for k in chunk if k not in POINT_DTYPE.names]
    return np.dtype(POINT_DTYPE.descr + extra) if extra else POINT_DTYPE


@dataclass(frozen=True)
class TileGrid:
    """The 500 m tile lattice of one project: ``x0`` west edge, ``y1`` north edge (UTM metres)."""

    epsg: int
    x0: float
    y1: float
    tile: float
    cols: int
    rows: int


@dataclass(frozen=True)
class RouteTask:
    file_index: int
    info: object  # PointCloudInfo
    grid: TileGrid
    tiles: tuple[tuple[int, int, str], ...]  # (col, row, tile_id) of the selected tiles to fill
    staging: str
    chunk_size: int = 1_000_000
    flush_points: int = 4_000_000
    attributes: tuple[tuple[str, str], ...] = ()  # recipe point_attributes: (name, dtype)
    threads: int = 1  # threads for reprojecting the points (does not change the output)


def marker_path(staging: str | Path, file_index: int) -> Path:
    return Path(staging) / "_done" / f"f{file_index:05d}.json"


def part_glob(file_index: int) -> str:
    return f"f{file_index:05d}-p*.npy"


def source_facts(info) -> dict:
    """What a file contributes to the points read from it: which file (path; a URL without its
    query string), which version of it (local: size and mtime_ns; a URL: what its inspection saw,
    size and ETag / Last-Modified, never fetched again here) and how its coordinates are read
    (the CRS and z unit, overrides included)."""
    from als_datasets.kinds.als.sources.remote import is_remote, redact

    if is_remote(info.path):
        d = {"file": redact(info.path), "stamp": info.stamp, "points": info.point_count,
             "bounds": list(info.bounds)}
    else:
        st = os.stat(info.path)
        d = {"file": str(info.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    d.update({"crs": info.crs.to_wkt(), "z_to_m": info.z_to_m})
    return d


def task_key(task: RouteTask) -> str:
    """What the staged parts depend on: the file (:func:`source_facts`) and the tile lattice.

    A URL is never stat'ed (nor fetched) here: its key is the URL without its query string
    (signed-URL tokens rotate) and what its inspection saw (size, ETag / Last-Modified, header)."""
    d = {**source_facts(task.info), "grid": asdict(task.grid), "staged": str(POINT_DTYPE.descr)}
    if task.attributes:
        d["attributes"] = [list(a) for a in task.attributes]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def task_is_done(task: RouteTask) -> bool:
    """Done when its marker exists, was made from the same file and lattice, and routed at
    least the tiles asked for now."""
    m = marker_path(task.staging, task.file_index)
    if not m.is_file():
        return False
    try:
        marker = json.loads(m.read_text())
        done = set(marker["tiles"])
        same = marker["key"] == task_key(task)
    except (ValueError, KeyError, OSError):
        return False
    return same and {t[2] for t in task.tiles} <= done


def clear_task(task: RouteTask) -> None:
    """Remove the parts (and the marker) that an earlier, unfinished run of this task left.

    Only this task's tiles are looked at (a task writes nowhere else); parts of a different
    routing plan are removed wholesale by :func:`reset_staging`.
    """
    root = Path(task.staging)
    marker_path(root, task.file_index).unlink(missing_ok=True)
    for _, _, tile_id in task.tiles:
        d = root / tile_id
        if d.is_dir():
            for p in d.glob(part_glob(task.file_index)):
                p.unlink()
            for p in d.glob(f".f{task.file_index:05d}-*"):
                p.unlink()


def reset_staging(staging: str | Path, tasks: list[RouteTask]) -> None:
    """Empty the staging folder unless it was made for the same files and tile lattices."""
    import shutil

    root = Path(staging)
    key = hashlib.sha256(json.dumps(sorted((t.file_index, task_key(t)) for t in tasks)).encode()).hexdigest()
    stamp = root / "_plan.json"
    if stamp.is_file() and stamp.read_text() == key:
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    stamp.write_text(key)


def _write_part(tmp: Path, chunks: list[np.ndarray]):
    """``chunks`` (one dtype) as one ``.npy`` file at ``tmp``, written piece by piece (no joined
    copy); returns the file, still open, for :func:`_sync_into_place`."""
    f = open(tmp, "wb")
    try:
        header = {"descr": np.lib.format.dtype_to_descr(chunks[0].dtype), "fortran_order": False,
                  "shape": (sum(len(c) for c in chunks),)}
        np.lib.format.write_array_header_1_0(f, header)
        for c in chunks:
            f.write(np.ascontiguousarray(c).view(np.uint8))
        f.flush()
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    return f


def _sync_into_place(f, tmp: Path, path: Path) -> None:
    """A written part made durable (fsync), then renamed into place: a part exists under its
    name only once it is on disk."""
    try:
        os.fsync(f.fileno())
    finally:
        f.close()
    os.replace(tmp, path)


class _Buffers:
    """Each tile's routed points, held until ``flush_points`` are buffered, then written as one
    part per tile.  The parts are made durable and renamed into place by a background thread
    (fsync waits on the disk, not the CPU: decoding goes on meanwhile); :meth:`close` waits for
    every part, so the task's marker is written only after its parts are on disk."""

    def __init__(self, root: Path, file_index: int, tile_ids: list[str], flush_points: int):
        from concurrent.futures import ThreadPoolExecutor

        self.root, self.fi, self.ids, self.flush_points = root, file_index, tile_ids, flush_points
        self.bufs: list[list[np.ndarray]] = [[] for _ in tile_ids]
        self.parts = [0] * len(tile_ids)
        self.buffered = 0
        self.syncer = ThreadPoolExecutor(1, thread_name_prefix="stage-sync")
        self.pending: list = []

    def add(self, slot: int, pts: np.ndarray) -> None:
        self.bufs[slot].append(pts)
        self.buffered += len(pts)
        if self.buffered >= self.flush_points:
            self.flush()

    def flush(self) -> None:
        for slot, chunks in enumerate(self.bufs):
            if not chunks:
                continue
            d = self.root / self.ids[slot]
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"f{self.fi:05d}-p{self.parts[slot]:05d}.npy"
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            f = _write_part(tmp, chunks)
            self.pending.append(self.syncer.submit(_sync_into_place, f, tmp, path))
            self.parts[slot] += 1
            self.bufs[slot] = []
        self.buffered = 0

    def close(self, ok: bool = True) -> None:
        """Wait for every part (with ``ok``: raise the first failure) and stop the thread."""
        try:
            for fut in self.pending:
                if ok:
                    fut.result()
                else:
                    fut.exception()
        finally:
            self.syncer.shutdown()


def tile_max(tile: float) -> np.float32:
    """The largest float32 below the tile size: tile-relative x and y stay in [0, tile) (DESIGN.md
    §5), where a float32 of x - x0 just under the tile size would round up to it."""
    return np.nextafter(np.float32(tile), np.float32(0))


def tile_relative(d: np.ndarray, top: np.float32) -> np.ndarray:
    """Offsets from a tile's edge (float64) as float32 in [0, ``top``]: rounding may neither reach
    the tile size nor dip below 0 (a point on the edge whose division rounded into the next tile)."""
    return np.clip(d.astype(np.float32), np.float32(0), top)


def reproject(x: np.ndarray, y: np.ndarray, transformer=None) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's x, y in the project's UTM CRS (unchanged without a ``transformer``)."""
    return (x, y) if transformer is None else transformer.transform(x, y)


#: a chunk is split across the reprojection threads only from this many points on
SPLIT_POINTS = 50_000


class Reprojection:
    """pyproj's ``transform`` of x, y from ``src`` to ``dst`` (``always_xy``), a chunk split into
    ``threads`` contiguous runs that run at once: PROJ releases the GIL, and reprojecting is slower
    per point than decoding LAZ.  Every thread has its own ``Transformer``, and every point is
    transformed on its own, so the values do not depend on the split.  Use as a context manager
    (the threads stop at its end)."""

    def __init__(self, src, dst, threads: int = 1):
        from pyproj import Transformer

        self.threads = max(1, int(threads))
        self._tr = [Transformer.from_crs(src, dst, always_xy=True) for _ in range(self.threads)]
        self._pool = None
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="reproject")

    def transform(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        n = len(x)
        if self._pool is None or n < SPLIT_POINTS:
            return self._tr[0].transform(x, y)
        ox = np.array(x, dtype=np.float64)  # copies, transformed in place run by run
        oy = np.array(y, dtype=np.float64)
        cuts = np.linspace(0, n, self.threads + 1).astype(np.int64)

        def run(i: int) -> None:
            a, b = cuts[i], cuts[i + 1]
            self._tr[i].transform(ox[a:b], oy[a:b], inplace=True)

        for f in [self._pool.submit(run, i) for i in range(self.threads)]:
            f.result()
        return ox, oy

    def __enter__(self) -> Reprojection:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()


@njit(cache=True)
def _route_cells(x, y, x0, y0, tile, cols, rows, lookup, nslots):
    """Each point's tile cell (``row × cols + col``, rows counted from the north; -1 outside the
    lattice or in an unselected tile) and how many points each slot receives."""
    cell = np.empty(len(x), np.int64)
    counts = np.zeros(nslots, np.int64)
    for i in range(len(x)):
        fc = np.floor((x[i] - x0) / tile)
        fr = np.floor((y[i] - y0) / tile)  # from the south edge; NaN fails every test
        c = -1
        if fc >= 0 and fc < cols and fr >= 0 and fr < rows:
            c = (rows - 1 - int(fr)) * cols + int(fc)
            if lookup[c] < 0:
                c = -1
            else:
                counts[lookup[c]] += 1
        cell[i] = c
    return cell, counts


@njit(cache=True)
def _route_fill(out, starts, cell, lookup, x, y, z, intensity, return_number, number_of_returns, classification,
                x0, y1, tile, cols):
    """The routed points into ``out``, grouped by slot (``starts``), in chunk order within a slot;
    x, y as offsets from their tile's lower-left corner.  Returns where each came from."""
    fill = starts.copy()
    src = np.empty(len(out), np.int64)
    for i in range(len(x)):
        c = cell[i]
        if c < 0:
            continue
        s = lookup[c]
        j = fill[s]
        fill[s] += 1
        src[j] = i
        out[j].x = x[i] - (x0 + (c % cols) * tile)
        out[j].y = y[i] - (y1 - (c // cols + 1) * tile)
        out[j].z = z[i]
        out[j].intensity = intensity[i]
        out[j].return_number = return_number[i]
        out[j].number_of_returns = number_of_returns[i]
        out[j].classification = classification[i]
    return src


def route_points(chunk: dict, grid: TileGrid, lookup: np.ndarray, transformer=None):
    """Pure core: (slot per routed point group, structured points) for one chunk.

    Yields ``(slot, points)`` pairs in slot order, each slot's points in chunk order, relative to
    their tile's lower-left corner (float64; exact: ``x − (x0 + col × tile)``; a point on a
    tile's edge may lie a rounding error outside [0, tile): :func:`tile_relative` clips it when
    the sample is written).  One compiled pass finds every point's tile, a second writes the
    groups (a counting sort: linear, stable).
    """
    x, y = reproject(chunk["x"], chunk["y"], transformer)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    lookup = np.ascontiguousarray(lookup, dtype=np.int64)
    nslots = int(lookup.max()) + 1 if len(lookup) else 0
    if nslots <= 0 or not len(x):
        return
    cell, counts = _route_cells(x, y, float(grid.x0), float(grid.y1 - grid.rows * grid.tile), float(grid.tile),
                                grid.cols, grid.rows, lookup, nslots)
    starts = np.zeros(nslots + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    if not starts[-1]:
        return
    dtype = staged_dtype(chunk)
    pts = np.empty(int(starts[-1]), dtype=dtype)
    fixed = [np.ascontiguousarray(chunk[n], dtype=POINT_DTYPE[n]) for n in POINT_DTYPE.names[2:]]
    src = _route_fill(pts, starts, cell, lookup, x, y, *fixed, float(grid.x0), float(grid.y1), float(grid.tile),
                      grid.cols)
    for name in dtype.names[len(POINT_DTYPE):]:  # the recipe's point_attributes
        pts[name] = chunk[name][src]
    for s in np.flatnonzero(counts):
        yield int(s), pts[starts[s]:starts[s + 1]]


def file_boxes(task: RouteTask, margin_m: float = 1.0) -> list[tuple[float, float, float, float]]:
    """The task's tile boxes (UTM, grown by ``margin_m``) as boxes in the file's CRS and units.

    Edges are densified before reprojecting, so a box holds every point that routes into its
    tile; points between the box and the tile are dropped by :func:`route_points`."""
    from pyproj import CRS, Transformer

    g = task.grid
    dst = CRS.from_epsg(g.epsg)
    tr = None if task.info.crs == dst else Transformer.from_crs(dst, task.info.crs, always_xy=True)
    boxes = []
    for c, r, _ in task.tiles:
        x0, y1 = g.x0 + c * g.tile, g.y1 - r * g.tile
        b = (x0 - margin_m, y1 - g.tile - margin_m, x0 + g.tile + margin_m, y1 + margin_m)
        boxes.append(b if tr is None else tuple(tr.transform_bounds(*b, densify_pts=21)))
    return boxes


def run_route_task(task: RouteTask, progress=None) -> dict:
    """Route one file's points into the staging folder; returns the file's counts.

    A COPC file (local or remote) is read by bounds: only the octree nodes overlapping the
    task's tiles are fetched and decoded, in file order, so the staged points are the same as
    a full read's.  An EPT dataset likewise (its nodes in a fixed order; a Web Mercator one is
    queried with the 3857 boxes covering the UTM tiles, its points then reprojected and routed in
    UTM).  Other files are read whole, chunk by chunk."""
    from contextlib import nullcontext

    from pyproj import CRS

    from als_datasets.kinds.als.sources.copc import iter_copc_boxes
    from als_datasets.kinds.als.sources.pointcloud import iter_ept_boxes, iter_point_chunks
    from als_datasets.kinds.als.sources.remote import FetchStats, redact

    clear_task(task)
    root = Path(task.staging)
    g = task.grid
    lookup = np.full(g.rows * g.cols, -1, dtype=np.int64)
    for slot, (c, r, _) in enumerate(task.tiles):
        lookup[r * g.cols + c] = slot
    dst = CRS.from_epsg(g.epsg)
    bufs = _Buffers(root, task.file_index, [t[2] for t in task.tiles], task.flush_points)
    read = routed = 0
    fetched = FetchStats()
    by_bounds = task.info.is_copc or getattr(task.info, "is_ept", False)
    attrs = {"attributes": task.attributes}
    if task.info.is_copc:
        chunks = iter_copc_boxes(task.info, file_boxes(task), task.chunk_size, stats=fetched, **attrs)
    elif by_bounds:
        chunks = iter_ept_boxes(task.info, file_boxes(task), task.chunk_size, stats=fetched, **attrs)
    else:
        chunks = iter_point_chunks(task.info, task.chunk_size, **attrs)
    ok = False
    try:
        with nullcontext() if task.info.crs == dst else Reprojection(task.info.crs, dst, task.threads) as tr:
            for chunk in chunks:
                n = len(chunk["x"])
                read += n
                for slot, pts in route_points(chunk, g, lookup, tr):
                    bufs.add(slot, pts)
                    routed += len(pts)
                if progress:
                    progress(n)
        bufs.flush()
        ok = True
    finally:
        bufs.close(ok)  # every part durable and in place before the marker
    if progress and by_bounds and task.info.point_count > read:
        progress(task.info.point_count - read)  # the points a bounds query did not need to read
    stats = {"file": redact(task.info.path), "points_read": read, "points_routed": routed,
             "bytes_fetched": fetched.bytes_fetched, "requests": fetched.requests,
             "tiles": sorted(t[2] for t in task.tiles), "key": task_key(task)}
    m = marker_path(root, task.file_index)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_name(f".{m.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, m)
    return stats


def _part_header(f, path: Path) -> tuple[int, np.dtype]:
    """A staged part's point count and dtype, from its ``.npy`` header (``f`` is left at its data)."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{path}: not a staged part (.npy format {version})")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if len(shape) != 1 or fortran:
        raise ValueError(f"{path}: not a staged part (shape {shape})")
    return shape[0], dtype


def load_tile_points(staging: str | Path, tile_id: str) -> tuple[np.ndarray, list[int]]:
    """All staged points of one tile, in (file, chunk) order; and the file indexes they came from.
    The parts are read straight into one array (no joined copy)."""
    d = Path(staging) / tile_id
    parts = sorted(d.glob("f*-p*.npy")) if d.is_dir() else []
    if not parts:
        return np.zeros(0, dtype=POINT_DTYPE), []
    files = sorted({int(p.name[1:6]) for p in parts})
    heads = []
    for p in parts:
        with open(p, "rb") as f:
            heads.append(_part_header(f, p))
    dtypes = {dt for _, dt in heads}
    if len(dtypes) != 1:
        raise ValueError(f"{d}: staged parts of different point layouts {sorted(map(str, dtypes))}")
    out = np.empty(sum(n for n, _ in heads), dtype=dtypes.pop())
    at = 0
    for p, (n, _) in zip(parts, heads):
        with open(p, "rb") as f:
            _part_header(f, p)
            view = out[at:at + n].view(np.uint8)
            if f.readinto(view) != view.nbytes:
                raise ValueError(f"{p}: truncated staged part (expected {n:,} points)")
        at += n
    return out, files
