"""Benchmark: bytes and requests fetched by tile queries of a realistically sized EPT dataset over HTTP.

    python bench/bench_ept_remote.py                  # 50 M points, 2.25 km x 2.25 km, Web Mercator,
                                                      # hierarchy paged every 3 levels (generated once,
                                                      # cached in /tmp/als-bench-ept)
    python bench/bench_ept_remote.py --points 5e6     # a quicker look at the same extent
    python bench/bench_ept_remote.py --keep /tmp/x    # another cache folder
    python bench/bench_ept_remote.py --build 4        # also: a 4-tile build from the URL, the local folder
                                                      # and a local LAZ of the same points (seconds, ratios)

No 3DEP EPT dataset can be downloaded here, and the shared Entwine-written ones (``als/ept/``)
hold at most 0.5 M points.  This script generates the same ALS-like point cloud as
``bench_copc_remote.py`` (seeded; UTM 10N; flight strips, trees, buildings; points in
acquisition order), moves it to Web Mercator (EPSG:3857 + NAVD88 height, as the 3DEP archive
stores it) and writes it with the test writer (``tests/ept_writer.py``: Entwine's layout, at
most ``--max-points`` per leaf node, a ``--span``³ sampling grid per node, the hierarchy paged
every ``--step`` levels), serves the folder with the loopback server of
``tests/range_server.py``, and for one 500 m UTM tile, 2x2 and 4x4 tiles (a grid not aligned with
the octree) queries the dataset the way a build does (each UTM tile grown by 1 m, its 3857
covering box, :func:`iter_ept_boxes`), recording the bytes and requests fetched (client and
server counts), the points inside the UTM tiles, and the tiles' share of the dataset: the bytes
of the dataset times the share of its points inside the tiles.  The target: a one-tile query
fetches under 2x its share.  The same queries on the local folder are timed too.  With
``--build N``: the seconds of an N-tile build from the URL, from the local folder and from one
local LAZ file of the same points, whose shards must be byte-identical.

Writes ``bench/results/ept_remote.json`` (one entry per run label, other runs kept).
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
sys.path.insert(0, str(HERE))

EPSG = 32610
TILE = 500.0


def generate(folder: Path, points: float, side: float, max_points: int, span: int, step: int) -> dict:
    from bench_copc_remote import synthetic_als
    from ept_writer import srs_for, write_ept
    from pyproj import Transformer

    t = time.perf_counter()
    pts = synthetic_als(side, points / side**2)
    t_gen = time.perf_counter() - t
    n = len(pts["x"])
    print(f"generated {n:,} points over {side:g} m x {side:g} m ({n / side**2:.1f} pts/m²) in {t_gen:.1f} s", flush=True)
    t = time.perf_counter()
    pts["x"], pts["y"] = Transformer.from_crs(EPSG, 3857, always_xy=True).transform(pts["x"], pts["y"])
    t_proj = time.perf_counter() - t
    t = time.perf_counter()
    layout = write_ept(folder, pts, srs_for(3857, vertical=5703), (0.01, 0.01, 0.01),
                       max_points=max_points, span=span, step=step)
    t_write = time.perf_counter() - t
    del pts
    total = layout.total_bytes
    levels: dict[str, list[int]] = {}
    for k, c in layout.nodes.items():
        row = levels.setdefault(str(k[0]), [0, 0, 0])
        row[0] += 1
        row[1] += c
        row[2] += layout.node_bytes[k]
    gen = {"points": n, "side_m": side, "density_pts_m2": round(n / side**2, 2), "max_points": max_points,
           "span": span, "hierarchy_step": step, "generate_s": round(t_gen, 1), "reproject_s": round(t_proj, 1),
           "write_s": round(t_write, 1), "dataset_bytes": total,
           "data_bytes": sum(layout.node_bytes.values()), "hierarchy_bytes": sum(layout.pages.values()),
           "bytes_per_point": round(total / n, 2), "nodes": len(layout.nodes), "depth": layout.depth,
           "hierarchy_pages": len(layout.pages),
           "levels": {d: {"nodes": v[0], "points": v[1], "bytes": v[2]} for d, v in sorted(levels.items(), key=lambda kv: int(kv[0]))}}
    (folder / "bench-meta.json").write_text(json.dumps(gen))
    print(f"wrote {folder}: {total / 2**20:.1f} MiB ({gen['bytes_per_point']} B/point), {len(layout.nodes)} nodes, "
          f"depth {layout.depth}, {len(layout.pages)} hierarchy pages, in {t_write:.1f} s", flush=True)
    return gen


def tile_sets(side: float) -> list[tuple[str, list]]:
    from bench_copc_remote import tile_sets as copc_tiles

    return copc_tiles(side)


def run_query(info, utm_boxes) -> dict:
    """A build's query: each UTM tile grown by 1 m, as its densified 3857 covering box; points
    counted inside the exact UTM tiles."""
    from pyproj import Transformer

    from als_datasets.kinds.als.sources.pointcloud import iter_ept_boxes
    from als_datasets.kinds.als.sources.remote import FetchStats

    to_file = Transformer.from_crs(EPSG, info.crs, always_xy=True)
    to_utm = Transformer.from_crs(info.crs, EPSG, always_xy=True)
    boxes = [to_file.transform_bounds(b[0] - 1, b[1] - 1, b[2] + 1, b[3] + 1, densify_pts=21) for b in utm_boxes]
    stats = FetchStats()
    t = time.perf_counter()
    n_box = n_tile = 0
    for chunk in iter_ept_boxes(info, boxes, stats=stats):
        n_box += len(chunk["x"])
        x, y = to_utm.transform(chunk["x"], chunk["y"])
        inside = np.zeros(len(x), bool)
        for b in utm_boxes:
            inside |= (x >= b[0]) & (x < b[2]) & (y >= b[1]) & (y < b[3])
        n_tile += int(inside.sum())
    return {"seconds": round(time.perf_counter() - t, 3), "points_in_boxes": n_box, "points_in_tiles": n_tile,
            "bytes": stats.bytes_fetched, "requests": stats.requests}


def _dem(path: Path, bounds_utm, res: float = 25.0) -> None:
    """A rolling DEM (UTM) over ``bounds_utm`` with a 500 m margin."""
    import rasterio
    from rasterio.transform import from_origin

    x0, y0, x1, y1 = (bounds_utm[0] - 500, bounds_utm[1] - 500, bounds_utm[2] + 500, bounds_utm[3] + 500)
    w, h = int((x1 - x0) / res), int((y1 - y0) / res)
    yy, xx = np.mgrid[0:h, 0:w] * res
    z = (150 + 40 * np.sin(xx / 700.0) + 30 * np.cos(yy / 500.0)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=f"EPSG:{EPSG}",
                       transform=from_origin(x0, y1, res, res), nodata=-9999) as d:
        d.write(z, 1)


def build_compare(folder: Path, url: str, side: float, samples: int) -> dict:
    """Build throughput: the same recipe from the EPT URL (loopback), the local EPT folder and a
    local LAZ file of the same points (``tests/ept_writer.nodes_as_laz``); the shards must be
    byte-identical.  Seconds per build and the ratios."""
    import shutil

    from bench_copc_remote import X0, Y0
    from ept_writer import nodes_as_laz
    from pyproj import Transformer
    from synth_inputs import landcover_around, write_recipe

    from als_datasets.build import run_build
    from als_datasets.recipe import load_recipe

    work = folder.parent / f"{folder.name}-build"
    work.mkdir(exist_ok=True)
    laz = work / "ref" / folder.name  # named like the dataset: its label in the samples
    if not laz.is_file():
        laz.parent.mkdir(exist_ok=True)
        t = time.perf_counter()
        nodes_as_laz(folder / "ept.json", laz)
        print(f"wrote the same points as one LAZ file in {time.perf_counter() - t:.1f} s", flush=True)
    tr = Transformer.from_crs(EPSG, 4326, always_xy=True)
    b = (X0 + 10, Y0 + 10, X0 + side - 10, Y0 + side - 10)
    lon0, lat0, lon1, lat1 = tr.transform_bounds(*b)
    ring = [list(tr.transform(x, y)) for x, y in ((b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3]), (b[0], b[1]))]
    (work / "b.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    landcover_around(work / "lc.tif", (lon0, lat0, lon1, lat1), res=25.0)
    _dem(work / "dem.tif", b)
    out: dict = {"samples": samples}
    shards = {}
    for name, source, crs in (("laz", str(laz), "EPSG:3857+5703"), ("ept_local", str(folder / "ept.json"), None),
                              ("ept_url", url, None)):
        project = {"name": "bench", "boundary": "b.geojson", "pointclouds": [source]}
        if crs:
            project["pointcloud_crs"] = crs
        r = load_recipe(write_recipe(work / f"{name}.yaml", name="bench-ept", samples_per_project=samples,
                                     landcover={"path": "lc.tif"}, dem={"path": "dem.tif"}, projects=[project],
                                     output={"dir": f"out-{name}"}))
        shutil.rmtree(r.out_dir, ignore_errors=True)
        t = time.perf_counter()
        run_build(r)
        out[f"{name}_s"] = round(time.perf_counter() - t, 2)
        files = sorted(p for fmt in ("webdataset", "parquet") for p in (r.out_dir / fmt).rglob("*") if p.is_file())
        shards[name] = {p.relative_to(r.out_dir).as_posix(): p.read_bytes() for p in files}
        print(f"build from {name}: {out[f'{name}_s']:.1f} s", flush=True)
    out["shards_identical"] = shards["laz"] == shards["ept_local"] == shards["ept_url"] and bool(shards["laz"])
    out["url_over_laz"] = round(out["ept_url_s"] / out["laz_s"], 2)
    out["url_over_local_ept"] = round(out["ept_url_s"] / out["ept_local_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, default=50e6, help="about this many points (default 50e6)")
    ap.add_argument("--side", type=float, default=2250.0, help="extent side in metres (default 2250)")
    ap.add_argument("--max-points", type=int, default=100_000, help="points per leaf node at most (default 100000)")
    ap.add_argument("--span", type=int, default=128, help="sampling grid cells per node side (Entwine: 128)")
    ap.add_argument("--step", type=int, default=3, help="hierarchy paged every STEP levels (default 3)")
    ap.add_argument("--keep", type=Path, default=Path("/tmp/als-bench-ept"), help="cache folder of generated datasets")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ept_remote.json")
    ap.add_argument("--label", default=None, help="run label (default '<points>M-<side>m')")
    ap.add_argument("--build", type=int, default=0, metavar="N",
                    help="also time a build of N tiles from the URL, the local folder and a LAZ of the same points")
    args = ap.parse_args()

    import range_server

    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud

    name = f"synthetic-{args.points / 1e6:g}M-{int(args.side)}m-n{args.max_points}-s{args.span}-h{args.step}"
    folder = args.keep / name
    res: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                             "loadavg_at_start": os.getloadavg()}}
    if (folder / "bench-meta.json").is_file():
        gen = json.loads((folder / "bench-meta.json").read_text())
        print(f"reusing {folder}")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        gen = generate(folder, args.points, args.side, args.max_points, args.span, args.step)
    res["dataset"] = gen
    total = gen["dataset_bytes"]
    # served under the dataset's folder name (a build names an EPT source by that folder)
    files = {f"{folder.name}/{p.relative_to(folder).as_posix()}": p for p in folder.rglob("*")
             if p.is_file() and p.name != "bench-meta.json"}
    rows = []
    with range_server.RangeServer(files) as srv:
        url = srv.url(f"{folder.name}/ept.json")
        srv.reset()
        info_url = inspect_pointcloud(url)
        res["inspect_url"] = {"bytes": srv.bytes_sent, "requests": srv.requests}
        info_local = inspect_pointcloud(folder)
        for label, boxes in tile_sets(args.side):
            srv.reset()
            far = run_query(dataclasses.replace(info_url, path=url), boxes)
            assert far["bytes"] == srv.bytes_sent and far["requests"] == srv.requests, (far, srv.bytes_sent)
            near = run_query(info_local, boxes)
            assert near["points_in_tiles"] == far["points_in_tiles"]
            share = far["points_in_tiles"] / gen["points"]
            row = {"query": label, "tiles": len(boxes), "points_in_tiles": far["points_in_tiles"],
                   "points_share": round(share, 5), "share_bytes": int(share * total),
                   "points_in_3857_boxes": far["points_in_boxes"], "http_bytes": far["bytes"],
                   "http_requests": far["requests"], "bytes_over_share": round(far["bytes"] / max(share * total, 1), 3),
                   "bytes_of_dataset": round(far["bytes"] / total, 4), "http_s": far["seconds"],
                   "local_s": near["seconds"], "http_over_local_s": round(far["seconds"] / max(near["seconds"], 1e-9), 2)}
            rows.append(row)
            print(f"{label}: {row['points_in_tiles']:,} points in the tiles ({share:.2%} of the dataset), "
                  f"{far['bytes']:,} bytes in {far['requests']} requests = {row['bytes_over_share']:.2f}x their share; "
                  f"{far['seconds']:.2f} s over HTTP, {near['seconds']:.2f} s local", flush=True)
        if args.build:
            res["build"] = build_compare(folder, url, args.side, args.build)
            bc = res["build"]
            print(f"build of {args.build} tiles: URL {bc['ept_url_s']} s, local EPT {bc['ept_local_s']} s, local LAZ "
                  f"{bc['laz_s']} s: URL / LAZ = {bc['url_over_laz']}, URL / local EPT = {bc['url_over_local_ept']}; "
                  f"shards identical: {bc['shards_identical']}", flush=True)
    res["queries"] = rows
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    print(f"\ndataset {total:,} bytes ({total / 2**20:.1f} MiB), {gen['points']:,} points, {gen['nodes']} nodes, "
          f"{gen['hierarchy_pages']} pages; inspect_pointcloud(url): {res['inspect_url']['bytes']:,} bytes in "
          f"{res['inspect_url']['requests']} request(s)")
    print(f"{'query':>10}{'points':>9}{'bytes':>14}{'x share':>9}{'req':>6}{'http s':>8}{'local s':>9}")
    for r in rows:
        print(f"{r['query']:>10}{r['points_share']:9.2%}{r['http_bytes']:14,}{r['bytes_over_share']:9.2f}"
              f"{r['http_requests']:6}{r['http_s']:8.2f}{r['local_s']:9.2f}")
    label = args.label or f"{args.points / 1e6:g}M-{args.side:g}m"
    allres = json.loads(args.out.read_text()) if args.out.is_file() else {}
    allres.setdefault("runs", {})[label] = res
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(allres, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
