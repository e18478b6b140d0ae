"""Benchmark: builds from a loopback archive vs local files; remote raster windows.

    python bench/bench_archive.py                      # both parts (~3 min on 2 cores)
    python bench/bench_archive.py --part rasters       # raster windows only
    python bench/bench_archive.py --part build --density 0.5 --size 1500   # quick look
    python bench/bench_archive.py --pointclouds ept    # EPT (Web Mercator) instead of COPC via STAC

**Raster windows.**  A national-like land cover (NLCD-like codes, uint8, 30 m, EPSG:5070) and a
DEM (float32) are written as cloud-optimised GeoTIFFs (GDAL's COG driver: 512 px tiles,
DEFLATE, overviews), served by the loopback Range server of ``tests/range_server.py``, and one
project's frame window is read through :func:`kinds.als.sources.geo.reproject_to_grid` (what
``plan``/``build`` do per project: a ``/vsicurl/`` window read under the GDAL HTTP options).
Recorded: bytes and requests the server sent, against the window's own size (its pixels
uncompressed), against the share of the file its internal tiles hold (file bytes x overlapped
tiles / all tiles), and against the file.

**Build throughput.**  A synthetic 3DEP-like archive (``tests/archive_fixtures.py``: projects
in UTM 10N, an index GeoJSON, NLCD/DEM COGs) is built twice in one run: from local files (the
same COPC files, or the EPT datasets' nodes as LAZ, local rasters) and from loopback URLs (the
index and rasters on the Range server; COPC found through the STAC stub, or EPT ``ept.json``
URLs from the index).  Recorded: seconds, points per second, the ratio, bytes fetched, and that
the shards are byte-identical.

Writes ``bench/results/archive.json`` (one entry per run label, other runs kept).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))


# --------------------------------------------------------------------------- raster windows


def bench_rasters(tmp: Path, size: int, window_km: float) -> dict:
    from affine import Affine
    from cog_fixtures import dem, landcover, write_cog
    from pyproj import Transformer
    from range_server import RangeServer

    from als_datasets.kinds.als.frame.grid import utm_epsg
    from als_datasets.kinds.als.sources import geo

    res, block = 30.0, 512
    tr = Affine(res, 0, -2_000_000.0, 0, -res, 3_000_000.0)
    t0 = time.perf_counter()
    files = {"nlcd.tif": write_cog(tmp / "nlcd.tif", landcover((size, size), seed=1, patch=16), "EPSG:5070", tr,
                                   nodata=0, block=block),
             "dem.tif": write_cog(tmp / "dem.tif", dem((size, size), seed=2), "EPSG:5070", tr, nodata=-9999.0,
                                  block=block, units="metre")}
    write_s = time.perf_counter() - t0
    # a project of window_km x window_km in its UTM zone, centred in the rasters
    cx, cy = tr * (size / 2, size / 2)
    lon, lat = Transformer.from_crs(5070, 4326, always_xy=True).transform(cx, cy)
    epsg = utm_epsg(lon, lat)
    ux, uy = Transformer.from_crs(5070, epsg, always_xy=True).transform(cx, cy)
    half = window_km * 500.0
    x0, y1 = math.floor((ux - half) / 25) * 25, math.ceil((uy + half) / 25) * 25
    n = int(window_km * 1000 / 25)
    grid = geo.Grid(epsg, x0, y1, n, n, 25.0)
    out = {"raster_px": size, "block_px": block, "window_km": window_km, "write_s": round(write_s, 1), "runs": []}
    with RangeServer(files) as srv:
        for name, what, itemsize in (("nlcd.tif", "land-cover", 1), ("dem.tif", "DEM", 4)):
            import rasterio
            from rasterio.warp import transform_bounds
            from rasterio.windows import from_bounds

            with rasterio.open(files[name]) as src:
                b = transform_bounds(grid.crs, src.crs, grid.x0, grid.y1 - n * 25.0, grid.x0 + n * 25.0, grid.y1)
                w = from_bounds(*b, transform=src.transform)
                win_px = math.ceil(w.width + 2) * math.ceil(w.height + 2)
                c0, r0 = int(w.col_off) // block, int(w.row_off) // block
                c1, r1 = int(w.col_off + w.width) // block, int(w.row_off + w.height) // block
                tiles = (c1 - c0 + 1) * (r1 - r0 + 1)
                all_tiles = math.ceil(src.width / block) * math.ceil(src.height / block)
            fsize = files[name].stat().st_size
            srv.reset()
            t0 = time.perf_counter()
            geo.reproject_to_grid(srv.url(name), grid, what)
            secs = time.perf_counter() - t0
            t0 = time.perf_counter()
            geo.reproject_to_grid(files[name], grid, what)
            local_s = time.perf_counter() - t0
            share = fsize * tiles / all_tiles
            run = {"raster": name, "file_bytes": fsize, "window_px": win_px, "window_bytes": win_px * itemsize,
                   "tiles_overlapped": tiles, "tiles_total": all_tiles, "tiles_share_bytes": round(share),
                   "bytes_fetched": srv.bytes_sent, "requests": srv.requests,
                   "fetched_over_window": round(srv.bytes_sent / (win_px * itemsize), 3),
                   "fetched_over_tiles_share": round(srv.bytes_sent / share, 3),
                   "fetched_over_file": round(srv.bytes_sent / fsize, 4),
                   "seconds_url": round(secs, 2), "seconds_local": round(local_s, 2)}
            out["runs"].append(run)
            print(f"{name}: window {win_px:,} px ({win_px * itemsize / 1e6:.2f} MB raw), {tiles} of {all_tiles} "
                  f"tiles; fetched {srv.bytes_sent / 1e6:.2f} MB in {srv.requests} requests = "
                  f"{run['fetched_over_window']}x the window, {run['fetched_over_tiles_share']}x its tiles' share, "
                  f"{run['fetched_over_file']:.2%} of the {fsize / 1e6:.1f} MB file; {secs:.2f} s (local {local_s:.2f} s)")
    return out


# --------------------------------------------------------------------------- build throughput


def _shards(out: Path) -> dict[str, str]:
    import hashlib

    got = sorted(p for fmt in ("webdataset", "parquet") for p in (out / fmt).rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in got}


def bench_build(tmp: Path, size: float, density: float, n_projects: int, samples: int, pointclouds: str,
                workers: int, repeats: int = 2) -> dict:
    import yaml
    from archive_fixtures import make_archive
    from range_server import RangeServer
    from stac_server import StacServer

    from als_datasets.archives import read_index
    from als_datasets.build import run_build
    from als_datasets.recipe import load_recipe

    writer = None
    if pointclouds == "ept":
        from archive_fixtures import write_project_ept as writer
    t0 = time.perf_counter()
    arch = make_archive(tmp / "archive", n_projects=n_projects, size_m=(size, size), density=density, seed=11,
                        ept_writer=writer, paged=("*",))
    gen_s = time.perf_counter() - t0
    common = dict(kind="als", name="bench", tile_size_m=500, grid_res_m=25, samples_per_project=samples,
                  draws=samples, seed=41)
    idx = arch.index_for("http://unused.invalid")
    projects = []
    for e in read_index(str(idx)):
        b = tmp / f"{e.name}.geojson"
        b.write_text(json.dumps(e.geometry))
        d = arch.root / e.name
        project = {"name": e.name, "boundary": str(b), "pointclouds": [str(d / "east.copc.laz"),
                                                                         str(d / "west.copc.laz")]}
        if pointclouds == "ept":  # the EPT's points as one LAZ named like the dataset (its label)
            from ept_writer import nodes_as_laz

            (tmp / "ref").mkdir(exist_ok=True)
            project["pointclouds"] = [str(nodes_as_laz(d / "ept" / "ept.json", tmp / "ref" / e.name))]
            project["pointcloud_crs"] = "EPSG:3857"
        projects.append(project)
    local_recipe = tmp / "local.yaml"
    local_recipe.write_text(yaml.safe_dump({**common, "landcover": {"path": str(arch.landcover)},
                                            "dem": {"path": str(arch.dem)}, "projects": projects,
                                            "output": {"dir": str(tmp / "out-local")}}))
    points = sum(p.points for p in arch.projects)
    res = {"projects": n_projects, "project_km": size / 1000, "density": density, "points": points,
           "samples_per_project": samples, "pointclouds": pointclouds, "workers": workers,
           "generate_s": round(gen_s, 1), "repeats": repeats}
    with RangeServer(arch.files()) as srv:
        base = srv.url("").rstrip("/")
        srv._srv.files["resources.geojson"] = arch.index_for(base)
        with StacServer(arch.stac_items(base), page_size=10) as api:
            remote = {**common, "landcover": {"path": f"{base}/landcover.tif"}, "dem": {"path": f"{base}/dem.tif"},
                      "source": {"archive": "3dep-ept", "index": f"{base}/resources.geojson", "projects": "all",
                                 "pointclouds": pointclouds},
                      "output": {"dir": str(tmp / "out-remote")}}
            if pointclouds == "stac":
                remote["stac"] = {"api": api.url, "collection": "3dep-lidar-copc"}
            remote_recipe = tmp / "remote.yaml"
            remote_recipe.write_text(yaml.safe_dump(remote))
            timings: dict[str, float] = {}
            # alternating, best of `repeats` each (the first build of a process pays one-time costs)
            for _rep in range(repeats):
                for label, path in (("local", local_recipe), ("remote", remote_recipe)):
                    shutil.rmtree(tmp / f"out-{label}", ignore_errors=True)
                    srv.reset()
                    t0 = time.perf_counter()
                    result = run_build(load_recipe(path), workers=workers)
                    secs = time.perf_counter() - t0
                    timings[label] = min(timings.get(label, secs), secs)
                    res.setdefault(f"{label}_runs_s", []).append(round(secs, 2))
                    res[f"{label}_s"] = round(timings[label], 2)
                    if label == "remote":
                        res["bytes_fetched"] = srv.bytes_sent
                        res["requests"] = srv.requests
                    res[f"{label}_samples"] = getattr(result, "samples", None)
    same = _shards(tmp / "out-local") == _shards(tmp / "out-remote")
    res["identical_shards"] = same
    res["remote_over_local_time"] = round(timings["remote"] / timings["local"], 3)
    if pointclouds == "stac":
        src_bytes = sum(p.files[k].stat().st_size for p in arch.projects for k in ("east", "west"))
    else:  # every file of the EPT datasets (nodes, hierarchy, ept.json)
        src_bytes = sum(f.stat().st_size for p in arch.projects for f in p.files["ept"].parent.rglob("*")
                        if f.is_file())
    res["pointcloud_bytes"] = src_bytes
    print(f"build of {n_projects} x {samples} tiles from {points:,} points ({pointclouds}): local "
          f"{timings['local']:.1f} s, loopback URLs {timings['remote']:.1f} s (best of {repeats}) = "
          f"{res['remote_over_local_time']}x; "
          f"fetched {res['bytes_fetched'] / 1e6:.1f} MB in {res['requests']} requests; identical shards: {same}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "rasters", "build"], default="all")
    ap.add_argument("--raster-px", type=int, default=8192, help="raster side in pixels (30 m)")
    ap.add_argument("--window-km", type=float, default=30.0, help="the project's window side (km)")
    ap.add_argument("--size", type=float, default=2000.0, help="project side (m)")
    ap.add_argument("--density", type=float, default=1.5, help="points per m²")
    ap.add_argument("--projects", type=int, default=2)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pointclouds", choices=["stac", "ept"], default="stac")
    ap.add_argument("--repeats", type=int, default=2, help="builds of each kind, alternating (best kept)")
    ap.add_argument("--label", default=None)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=a.keep))
    entry = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} cpus"}
    try:
        if a.part in ("all", "rasters"):
            entry["rasters"] = bench_rasters(tmp / "rasters", a.raster_px, a.window_km)
        if a.part in ("all", "build"):
            entry["build"] = bench_build(tmp / "build", a.size, a.density, a.projects, a.samples, a.pointclouds,
                                         a.workers, a.repeats)
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    out = HERE / "results" / "archive.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    label = a.label or f"{a.part}-{a.pointclouds}"
    data[label] = entry
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} [{label}]")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
