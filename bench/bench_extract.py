"""Benchmark: streaming extraction against the bare LAZ decode, side by side in one run.

    python bench/bench_extract.py                 # ~20 M points, and a 3x larger file for memory
    python bench/bench_extract.py --points 2e6 --no-large   # quick look

Generates a LAZ file (UTM metres, ~4 points/m², points in flight-line order like real ALS),
then measures in this one run:

* decode: laspy/lazrs decompressing every point (``chunk_iterator``, nothing else);
* build:  ``als-datasets build`` with one worker selecting every tile of the file (so every
  point is routed, cleaned and written), with the paper's outlier filter, and without it
  (``outlier: false``) to separate the pipeline's own cost from the filter's;
* peak RSS of the build process (with the filter) for the file and for a file 3x larger.

Prints a table of points/s and ratios and writes ``bench/results/extract.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_laz(path: Path, n: int, density: float = 4.0, seed: int = 0, chunk: int = 2_000_000) -> tuple:
    """A LAZ file of ``n`` points on a square at ``density`` pts/m², written in chunks."""
    import laspy
    from pyproj import CRS

    side = float(np.sqrt(n / density))
    rows = max(int(np.sqrt(n)), 1)  # scan lines running east-west, south to north
    rng = np.random.default_rng(seed)
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([500000.0, 4000000.0, 0.0])
    header.add_crs(CRS.from_epsg(32610))
    x0, y0 = 500000.0, 4000000.0
    with laspy.open(path, mode="w", header=header, laz_backend=laspy.LazBackend.Lazrs) as w:
        done = 0
        while done < n:
            m = min(chunk, n - done)
            i = np.arange(done, done + m)
            line = i * rows // n
            x = x0 + (i - line * n / rows) / (n / rows) * side + rng.normal(0, 0.2, m)
            y = y0 + (line + rng.random(m)) * side / rows
            ground = 100 + 20 * np.sin((x - x0) / 300.0) + 10 * np.cos((y - y0) / 400.0)
            veg = rng.random(m) < 0.4
            z = ground + np.where(veg, rng.random(m) * 25, 0.0) + rng.normal(0, 0.05, m)
            pts = laspy.ScaleAwarePointRecord.zeros(m, header=header)
            pts.x, pts.y, pts.z = np.clip(x, x0, x0 + side), y, z
            pts.classification = np.where(veg, 5, 2).astype(np.uint8)
            pts.intensity = rng.integers(0, 4000, m).astype(np.uint16)
            pts.return_number = np.ones(m, np.uint8)
            pts.number_of_returns = np.ones(m, np.uint8)
            w.write_points(pts)
            done += m
    return (x0, y0, x0 + side, y0 + side)


def make_inputs(folder: Path, n: int, outlier: bool) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    laz = folder / "cloud.laz"
    meta = folder / "cloud.json"
    if not (laz.is_file() and meta.is_file() and json.loads(meta.read_text())["n"] == n):
        bounds = make_laz(laz, n)
        meta.write_text(json.dumps({"n": n, "bounds": bounds}))
    minx, miny, maxx, maxy = json.loads(meta.read_text())["bounds"]
    res = 25.0
    w, h = int((maxx - minx) // res) + 40, int((maxy - miny) // res) + 40
    t = from_origin(minx - 500, maxy + 500, res, res)
    with rasterio.open(folder / "lc.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       crs="EPSG:32610", transform=t, nodata=255) as d:
        d.write(np.full((h, w), 41, np.uint8), 1)
    with rasterio.open(folder / "dem.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs="EPSG:32610", transform=t, nodata=-9999) as d:
        d.write(np.full((h, w), 100.0, np.float32), 1)
    recipe = {
        "kind": "als", "name": "bench", "samples_per_project": 100000, "landcover": {"path": "lc.tif"},
        "dem": {"path": "dem.tif"}, "projects": [{"name": "bench", "pointclouds": ["cloud.laz"]}],
        "output": {"formats": ["webdataset", "parquet"], "shard_max_samples": 8},
        "outlier": {"mean_k": 12, "multiplier": 2.2} if outlier else False,
    }
    import yaml

    rp = folder / ("recipe.yaml" if outlier else "recipe-nofilter.yaml")
    rp.write_text(yaml.safe_dump(recipe))
    return rp


def bare_decode(laz: Path) -> tuple[int, float]:
    import laspy

    t = time.perf_counter()
    n = 0
    with laspy.open(laz) as r:
        for c in r.chunk_iterator(1_000_000):
            n += len(c)
    return n, time.perf_counter() - t


def run_build(recipe: Path, out: Path) -> tuple[float, float]:
    """Wall time and peak RSS (MiB) of one ``als-datasets build`` process."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "als_datasets", "build", str(recipe), "--out", str(out), "-q",
                          "--workers", "1"])
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {recipe}")
    return wall, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, default=20e6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/als-bench"))
    ap.add_argument("--no-large", action="store_true", help="skip the 3x file (peak-memory comparison)")
    args = ap.parse_args()
    n = int(args.points)
    res: dict = {"points": n, "cpu_count": os.cpu_count()}

    t = time.perf_counter()
    rp = make_inputs(args.work / "x1", n, outlier=True)
    rp_nf = make_inputs(args.work / "x1", n, outlier=False)
    print(f"inputs ready ({time.perf_counter() - t:.1f} s): {n:,} points")
    npts, dec = bare_decode(rp.parent / "cloud.laz")
    res["decode_s"], res["decode_pts_s"] = dec, npts / dec
    wall, rss = run_build(rp, args.work / "out-x1")
    res["build_s"], res["build_pts_s"], res["build_peak_rss_mib"] = wall, npts / wall, rss
    wall_nf, rss_nf = run_build(rp_nf, args.work / "out-x1-nofilter")
    res["build_nofilter_s"], res["build_nofilter_pts_s"], res["build_nofilter_peak_rss_mib"] = wall_nf, npts / wall_nf, rss_nf
    if not args.no_large:
        rp3 = make_inputs(args.work / "x3", 3 * n, outlier=True)
        _, dec3 = bare_decode(rp3.parent / "cloud.laz")
        wall3, rss3 = run_build(rp3, args.work / "out-x3")
        res.update({"x3_points": 3 * n, "x3_decode_s": dec3, "x3_build_s": wall3, "x3_build_peak_rss_mib": rss3})

    print(f"\n{'':34}{'seconds':>10}{'points/s':>14}{'ratio':>8}{'peak MiB':>10}")
    print(f"{'bare decode (laspy+lazrs)':34}{dec:10.1f}{npts / dec:14,.0f}{1.0:8.2f}{'':>10}")
    print(f"{'build, 1 worker, outlier filter':34}{wall:10.1f}{npts / wall:14,.0f}{dec / wall:8.2f}{rss:10.0f}")
    print(f"{'build, 1 worker, no filter':34}{wall_nf:10.1f}{npts / wall_nf:14,.0f}{dec / wall_nf:8.2f}{rss_nf:10.0f}")
    if not args.no_large:
        print(f"{'3x file: bare decode':34}{dec3:10.1f}{3 * npts / dec3:14,.0f}{1.0:8.2f}{'':>10}")
        print(f"{'3x file: build, outlier filter':34}{wall3:10.1f}{3 * npts / wall3:14,.0f}{dec3 / wall3:8.2f}{rss3:10.0f}")
        print(f"peak memory of the build, 3x file / 1x file: {rss3 / rss:.2f}")
    out = HERE / "results" / "extract.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
