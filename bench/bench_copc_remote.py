"""Benchmark: bytes fetched by tile queries of a realistically sized COPC file over HTTP ranges.

    python bench/bench_copc_remote.py                   # 54 M points, 2.25 km x 2.25 km, 10.7 pts/m²
                                                        # (~2.5 min on 2 cores, 7.7 GiB peak RSS)
    python bench/bench_copc_remote.py --points 20e6     # the same extent at 4.3 pts/m² (~1 min)
    python bench/bench_copc_remote.py --cells 256       # a denser sampling grid per node
    python bench/bench_copc_remote.py --points 2e6 --side 800   # quick look (seconds)
    python bench/bench_copc_remote.py --keep /tmp/x     # keep (and reuse) the generated file

No real 3DEP COPC file can be downloaded here, and the shared sample (``simple.copc.laz``,
33 KB) is so small that fixed costs dominate.  This script generates an ALS-like point cloud
(seeded; UTM 10N metres; north-south flight strips with 30 % side overlap, a zig-zag scan,
1-4 returns under tree cover, buildings, a rolling terrain; GPS time, scan angle and point
source ID filled in, points in acquisition order), writes it as COPC with the test writer
(``tests/copc_writer.py``: untwine-like octree, 128³ sampling grid per node, at most 100 k
points per leaf), serves it with the loopback Range server of ``tests/range_server.py`` (its
handler reading only the requested range, see :func:`serve`) and,
for a 500 m tile, 2x2 tiles, 4x4 tiles and the whole extent (tiles on a 500 m grid that is
not aligned with the octree), records the bytes and requests fetched
(``copc.iter_copc_boxes``, server-side count) and seconds, against the file size, and the
same queries on the local file.  Also: the bytes of ``inspect_pointcloud(url)`` (the header
read of every build), and the file's octree (nodes, points and bytes per level).

Writes ``bench/results/copc_remote.json`` (one entry per run label, other runs kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

EPSG = 32610
TILE = 500.0
# the extent starts 250 m past the tile grid, so tiles are not aligned with the file
X0, Y0 = 500_250.0, 4_100_250.0


# --------------------------------------------------------------------------- synthetic ALS


def _field(rng, x, y, waves: int, scale: float) -> np.ndarray:
    """A smooth random field in [-1, 1] (sum of plane waves of wavelength ~``scale``)."""
    f = np.zeros(len(x))
    for _ in range(waves):
        k = 2 * np.pi / (scale * rng.uniform(0.5, 1.5))
        a = rng.uniform(0, 2 * np.pi)
        f += np.sin(k * (np.cos(a) * x + np.sin(a) * y) + rng.uniform(0, 2 * np.pi))
    return f / np.sqrt(waves / 2)


def synthetic_als(side: float, density: float, seed: int = 0) -> dict:
    """ALS-like points over ``side`` x ``side`` metres from (X0, Y0), ~``density`` points/m².

    Strips 600 m wide, flown north and south alternately 420 m apart (30 % overlap), a
    triangular scan across track; per pulse 1 return on open ground and roofs, 1-4 under
    trees (first on the canopy, last mostly on the ground).  Points come in GPS-time order."""
    rng = np.random.default_rng(seed)
    swath, spacing, altitude = 600.0, 420.0, 1000.0
    overlap = swath / spacing
    mean_returns = 1.45  # measured on this generator (about 35 % of pulses under trees)
    pulse_density = density / (overlap * mean_returns)
    step = 1.0 / np.sqrt(pulse_density)  # across-track and along-track pulse spacing
    per_line = int(swath / step)
    n_strips = int(np.ceil((side + swath) / spacing))
    # land cover rasters (1 m): building roofs (height above ground, NaN elsewhere), tree cover
    npx = int(np.ceil(side)) + 1
    roof = np.full((npx, npx), np.nan, np.float32)
    for _ in range(300):
        bx, by = rng.integers(0, npx - 30, 2)
        bw, bh = rng.integers(8, 30, 2)
        roof[by:by + bh, bx:bx + bw] = rng.uniform(4, 14)
    terrain = [int(v) for v in np.random.default_rng([seed, 1]).integers(0, 2**31, 3)]
    gy, gx = np.mgrid[0:npx:2, 0:npx:2].reshape(2, -1).astype(np.float64)
    tree_map = (_field(np.random.default_rng(terrain[2]), gx, gy, 10, 300) > 0.35).reshape((npx + 1) // 2, -1)
    out: dict[str, list] = {k: [] for k in ("x", "y", "z", "intensity", "return_number", "number_of_returns",
                                            "classification", "gps_time", "scan_angle", "point_source_id")}
    t0 = 3.0e8
    for s in range(n_strips):
        cx = -swath / 2 + spacing * (s + 0.5)
        lines = int((side + 200) / step)
        north = s % 2 == 0
        for l0 in range(0, lines, 4000):  # blocks of scan lines: bounded memory
            nl = min(4000, lines - l0)
            li = np.repeat(np.arange(l0, l0 + nl), per_line)
            k = np.tile(np.arange(per_line), nl)
            phase = np.where(li % 2 == 0, k, per_line - 1 - k) / (per_line - 1)  # zig-zag
            x = cx - swath / 2 + phase * swath + rng.normal(0, 0.05, len(li))
            yy = -100 + (li + k / per_line) * step + rng.normal(0, 0.05, len(li))
            y = yy if north else side - yy
            keep = (x >= 0) & (x < side) & (y >= 0) & (y < side)
            x, y, li, k, phase = x[keep], y[keep], li[keep], k[keep], phase[keep]
            m = len(x)
            if m == 0:
                continue
            gps = t0 + s * 900.0 + (li * per_line + k) / 200_000.0  # 200 kHz
            ground = 150 + 25 * _field(np.random.default_rng(terrain[0]), x, y, 6, 2500) \
                + 4 * _field(np.random.default_rng(terrain[1]), x, y, 8, 400)
            canopy = 12 + 8 * (0.5 + 0.5 * np.sin(x / 37.0) * np.cos(y / 53.0))
            ix, iy = x.astype(np.int64), y.astype(np.int64)
            roof_h = roof[iy, ix]
            building = ~np.isnan(roof_h)
            tree = tree_map[iy // 2, ix // 2] & ~building
            nr = np.where(tree, rng.integers(1, 5, m), 1).astype(np.uint8)
            # expand pulses into returns
            rep = np.repeat(np.arange(m), nr)
            first = np.concatenate([[0], np.cumsum(nr)[:-1]])
            rn = (np.arange(len(rep)) - np.repeat(first, nr) + 1).astype(np.uint8)
            nrr = nr[rep]
            last = rn == nrr
            on_ground = last & (rng.random(len(rep)) < 0.7)
            frac = np.where(on_ground, 0.0, 1.0 - (rn - 1) / np.maximum(nrr, 1) * rng.random(len(rep)))
            h = np.where(tree[rep], canopy[rep] * frac, 0.0)
            h = np.where(building[rep], roof_h[rep], h)
            z = ground[rep] + h + rng.normal(0, 0.03, len(rep))
            cls = np.where(building[rep], 6, np.where(h > 2.0, 5, np.where(h > 0.3, 3, 2))).astype(np.uint8)
            inten = np.where(cls == 2, 900, np.where(cls == 6, 1500, 400)) / np.sqrt(rn) \
                + rng.normal(0, 120, len(rep))
            out["x"].append(X0 + x[rep] + rng.normal(0, 0.02, len(rep)) * (rn > 1))
            out["y"].append(Y0 + y[rep])
            out["z"].append(z)
            out["intensity"].append(np.clip(inten, 0, 65535).astype(np.uint16))
            out["return_number"].append(rn)
            out["number_of_returns"].append(nrr)
            out["classification"].append(cls)
            out["gps_time"].append(gps[rep])
            angle = np.degrees(np.arctan((x - cx) / altitude))
            out["scan_angle"].append(np.round(angle[rep] / 0.006).astype(np.int16))
            out["point_source_id"].append(np.full(len(rep), s + 1, np.uint16))
    return {k: np.concatenate(out.pop(k)) for k in list(out)}  # one field at a time: bounded peak


# --------------------------------------------------------------------------- server


def serve(path: Path):
    """``tests/range_server.RangeServer`` for ``path``, its handler reading only the range asked.

    The test server reads the whole file for every request (``Path.read_bytes``), which for a
    100-300 MB file costs more than the request itself; the handler below answers the same
    (206, ``Content-Range``, the same byte and request counts) from ``os.pread``."""
    import range_server

    class PreadHandler(range_server._Handler):
        def _serve(self, head: bool) -> None:
            src = self.server.files.get(self.path.split("?", 1)[0].lstrip("/"))
            m = range_server._RANGE.match((self.headers.get("Range") or "").strip())
            if src is None or not m or not m.group(1):
                return super()._serve(head)  # the test server's own answers (404, 200, 416, suffix)
            size = src.stat().st_size
            a = int(m.group(1))
            b = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if a >= size or b < a:
                return super()._serve(head)
            fd = os.open(src, os.O_RDONLY)
            try:
                body = os.pread(fd, b - a + 1, a)
            finally:
                os.close(fd)
            self._send(206, body, {"Content-Range": f"bytes {a}-{b}/{size}", "Accept-Ranges": "bytes"}, head)

    srv = range_server.RangeServer({path.name: path})
    srv._srv.RequestHandlerClass = PreadHandler
    return srv


# --------------------------------------------------------------------------- queries


def tile_sets(side: float) -> list[tuple[str, list]]:
    """(label, boxes): one 500 m tile near the centre, 2x2 and 4x4 tiles around it."""
    nt = int(side // TILE)  # whole tiles across (the grid is offset by 250 m: nt - 1 fit)
    c = (nt - 1) // 2  # tile column/row near the centre
    gx0 = X0 - X0 % TILE + TILE  # first tile edge inside the extent
    gy0 = Y0 - Y0 % TILE + TILE

    def block(n: int) -> list:
        i0 = max(0, c - (n - 1) // 2)
        return [(gx0 + (i0 + i) * TILE, gy0 + (i0 + j) * TILE, gx0 + (i0 + i + 1) * TILE, gy0 + (i0 + j + 1) * TILE)
                for j in range(n) for i in range(n)]

    return [("1 tile", block(1)), ("2x2 tiles", block(2)), ("4x4 tiles", block(4))]


def run_query(info, boxes) -> dict:
    from als_datasets.kinds.als.sources import copc, remote

    stats = remote.FetchStats()
    t = time.perf_counter()
    n = 0
    for chunk in copc.iter_copc_boxes(info, boxes, stats=stats):
        n += len(chunk["x"])
    return {"seconds": round(time.perf_counter() - t, 3), "points": n, "bytes": stats.bytes_fetched,
            "requests": stats.requests}


def nodes_hit(layout, boxes) -> tuple[int, int, dict]:
    """(nodes, their bytes, {depth: [nodes, bytes]}) overlapping any box, from the writer's
    layout (node bounds as a reader computes them)."""
    root_min = np.array(layout.center) - layout.halfsize
    width = (np.array(layout.center) + layout.halfsize)[0] - root_min[0]
    hit = 0
    nbytes = 0
    by_level: dict = {}
    for (d, x, y, _), (_, size, _) in layout.nodes.items():
        s = width / 2**d
        lo_x, lo_y, hi_x, hi_y = root_min[0] + x * s, root_min[1] + y * s, root_min[0] + (x + 1) * s, root_min[1] + (y + 1) * s
        if any(lo_x <= b[2] and hi_x >= b[0] and lo_y <= b[3] and hi_y >= b[1] for b in boxes):
            hit += 1
            nbytes += size
            row = by_level.setdefault(str(d), [0, 0])
            row[0] += 1
            row[1] += size
    return hit, nbytes, dict(sorted(by_level.items()))


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, default=50e6, help="about this many points (default 50e6)")
    ap.add_argument("--side", type=float, default=2250.0,
                    help="extent side in metres (default 2250: 4x4 whole 500 m tiles fit)")
    ap.add_argument("--cells", type=int, default=128,
                    help="sampling grid cells per node side, a power of two (default 128, untwine's; PDAL's "
                         "writers.copc samples ~221 per side at the root and ~148 below)")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep (and reuse) the generated file in")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "copc_remote.json",
                    help="results file; the run is stored under its label, other runs are kept")
    ap.add_argument("--label", default=None, help="run label (default '<points>M-<side>m')")
    args = ap.parse_args()

    import pyproj
    from copc_writer import write_copc

    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud

    density = args.points / args.side**2
    folder = args.keep or Path("/tmp/als-bench-copc")
    folder.mkdir(parents=True, exist_ok=True)
    cells = "" if args.cells == 128 else f"-c{args.cells}"
    path = folder / f"synthetic-{int(args.points / 1e6)}M-{int(args.side)}m{cells}.copc.laz"
    meta = path.with_suffix(".json")
    res: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                             "loadavg_at_start": os.getloadavg()}}
    if path.is_file() and meta.is_file():
        gen = json.loads(meta.read_text())
        layout = None
        print(f"reusing {path}")
    else:
        t = time.perf_counter()
        pts = synthetic_als(args.side, density)
        t_gen = time.perf_counter() - t
        n = len(pts["x"])
        print(f"generated {n:,} points over {args.side:g} m x {args.side:g} m ({n / args.side**2:.1f} pts/m²) "
              f"in {t_gen:.1f} s", flush=True)
        t = time.perf_counter()
        layout = write_copc(path, pts, pyproj.CRS(EPSG), (0.01, 0.01, 0.01), (X0 - X0 % 1000, Y0 - Y0 % 1000, 0.0),
                            cells=args.cells, max_depth=min(14, 21 - (args.cells.bit_length() - 1)))
        t_write = time.perf_counter() - t
        del pts
        gen = {"points": n, "cells": args.cells, "side_m": args.side, "density_pts_m2": round(n / args.side**2, 2),
               "generate_s": round(t_gen, 1), "write_s": round(t_write, 1), "file_bytes": layout.file_size,
               "bytes_per_point": round(layout.file_size / n, 2), "nodes": len(layout.nodes),
               "depth": layout.depth, "hierarchy_pages": len(layout.pages),
               "hierarchy_bytes": layout.file_size - layout.evlr_start,
               "root_halfsize_m": layout.halfsize, "spacing_m": layout.spacing,
               "levels": {str(d): {"nodes": v[0], "points": v[1], "bytes": v[2]}
                          for d, v in layout.level_counts().items()},
               "node_points_max": max(c for *_, c in layout.nodes.values()),
               "node_points_median": int(np.median([c for *_, c in layout.nodes.values()]))}
        gen["_nodes"] = [[*k, *v] for k, v in layout.nodes.items()]
        gen["_cube"] = [list(layout.center), layout.halfsize]
        meta.write_text(json.dumps(gen))
        print(f"wrote {path.name}: {layout.file_size / 2**20:.1f} MiB ({gen['bytes_per_point']} B/point), "
              f"{len(layout.nodes)} nodes, depth {layout.depth}, {len(layout.pages)} hierarchy page(s), "
              f"in {t_write:.1f} s", flush=True)
    # the layout (for nodes_hit) from the kept metadata
    if layout is None:
        from copc_writer import CopcLayout

        layout = CopcLayout(path=path, file_size=gen["file_bytes"], point_count=gen["points"],
                            center=tuple(gen["_cube"][0]), halfsize=gen["_cube"][1], spacing=gen["spacing_m"],
                            nodes={tuple(r[:4]): tuple(r[4:]) for r in gen["_nodes"]})
    size = path.stat().st_size
    res["file"] = {k: v for k, v in gen.items() if not k.startswith("_")}
    print("octree: level nodes points MiB")
    for d, v in gen["levels"].items():
        print(f"  {d:>5} {v['nodes']:5} {v['points']:10,} {v['bytes'] / 2**20:7.1f}")

    rows = []
    with serve(path) as srv:
        url = srv.url(path.name)
        srv.reset()
        info_url = inspect_pointcloud(url)
        res["inspect_url"] = {"bytes": srv.bytes_sent, "requests": srv.requests}
        info_local = inspect_pointcloud(path)
        for label, boxes in tile_sets(args.side) + [("whole extent", [info_local.bounds])]:
            # share of the extent covered (tiles that stick out of a small extent count inside only)
            area = 1.0 if label == "whole extent" else sum(max(0.0, min(b[2], X0 + args.side) - max(b[0], X0)) * max(0.0, min(b[3], Y0 + args.side)
                           - max(b[1], Y0)) for b in boxes) / args.side**2
            hit, hit_bytes, hit_levels = nodes_hit(layout, boxes)
            srv.reset()
            far = run_query(dataclasses.replace(info_url, path=url), boxes)
            assert far["bytes"] == srv.bytes_sent and far["requests"] == srv.requests, (far, srv.bytes_sent)
            near = run_query(info_local, boxes)
            assert near["points"] == far["points"]
            row = {"query": label, "boxes": len(boxes), "area_fraction": round(area, 4), "points": far["points"],
                   "nodes": hit, "node_bytes": hit_bytes, "nodes_by_level": hit_levels, "http_bytes": far["bytes"], "http_requests": far["requests"],
                   "http_s": far["seconds"], "bytes_ratio": round(far["bytes"] / size, 4),
                   "points_ratio": round(far["points"] / gen["points"], 4),
                   # bytes fetched per point returned, against the file's average bytes per point
                   "overfetch": round((far["bytes"] / size) / max(far["points"] / gen["points"], 1e-12), 3),
                   "local_bytes": near["bytes"], "local_reads": near["requests"], "local_s": near["seconds"],
                   "http_over_local_s": round(far["seconds"] / max(near["seconds"], 1e-9), 2)}
            rows.append(row)
            print(f"{label}: {far['points']:,} points, {far['bytes']:,} bytes ({row['bytes_ratio']:.1%} of the file) "
                  f"in {far['requests']} requests, {far['seconds']:.2f} s over HTTP, {near['seconds']:.2f} s local",
                  flush=True)
    res["queries"] = rows
    res["machine"]["loadavg_at_end"] = os.getloadavg()

    print(f"\nfile {size:,} bytes ({size / 2**20:.1f} MiB), {gen['points']:,} points; "
          f"inspect_pointcloud(url): {res['inspect_url']['bytes']:,} bytes in {res['inspect_url']['requests']} request")
    print(f"{'query':>13}{'area':>8}{'points':>8}{'nodes':>7}{'bytes':>14}{'of file':>9}{'overfetch':>10}{'req':>6}"
          f"{'http s':>8}{'local s':>9}{'ratio s':>9}")
    for r in rows:
        print(f"{r['query']:>13}{r['area_fraction']:8.1%}{r['points_ratio']:8.1%}{r['nodes']:7}{r['http_bytes']:14,}"
              f"{r['bytes_ratio']:9.1%}{r['overfetch']:10.2f}{r['http_requests']:6}{r['http_s']:8.2f}"
              f"{r['local_s']:9.2f}{r['http_over_local_s']:9.2f}")
    label = args.label or f"{args.points / 1e6:g}M-{args.side:g}m{cells}"
    allres = json.loads(args.out.read_text()) if args.out.is_file() else {}
    allres.setdefault("runs", {})[label] = res
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(allres, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    if args.keep is None:
        path.unlink()
        meta.unlink()


if __name__ == "__main__":
    main()
