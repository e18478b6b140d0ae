"""Benchmark: peak memory and open files of a build against the number of tiles and input files.

    python bench/bench_tiles.py --quick      # 16 / 64 / 256 tiles, 16 / 64 / 256 files (~3 min on 2 cores)
    python bench/bench_tiles.py              # 4x the area: up to 1024 tiles and 1024 files (~15 min)
    python bench/bench_tiles.py --copc-only  # bytes fetched by remote COPC queries (seconds)

PDAL's tiler keeps one open writer per output tile and fails on large jobs ("too many open
files", memory growing with tiles).  This script checks that a build does not: it generates
many small LAZ files over a square region (seeded; UTM metres; every tile eligible), builds it
with an increasing number of selected tiles (and, separately, of input files), and while each
``als-datasets build`` runs, samples every 10 ms the process and all its descendants (the worker
pool) through ``/proc``: the sum and the largest RSS, and the sum and the largest number of open
file descriptors.  It also reads the kernel's peak RSS of the build process (``wait4``).

Prints a table and the ratios of the peaks at the largest to the smallest run, then the bytes
that bounds queries of growing size fetch from the shared COPC file served over loopback HTTP
(with Range support) against the file's size, and writes
``bench/results/tiles.json`` (its ``quick`` key says which run it was).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
X0, Y0 = 500000.0, 4000000.0  # region's south-west corner, EPSG:32610
TILE = 100.0
RES = 5.0


# --------------------------------------------------------------------------- inputs


def make_files(folder: Path, side_tiles: int, files_side: int, density: float, seed: int = 0) -> list[Path]:
    """``files_side``² LAZ files tiling a square of ``side_tiles`` × ``TILE`` metres.

    The file grid is shifted by a third of a tile so that files straddle tile edges, and every
    file draws its points from its own seeded generator (so the set is the same however many
    files are rewritten)."""
    from als_datasets.demo.synth import write_las

    side = side_tiles * TILE
    step = side / files_side
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for j in range(files_side):
        for i in range(files_side):
            p = folder / f"f{j:03d}_{i:03d}.laz"
            paths.append(p)
            if p.is_file():
                continue
            rng = np.random.default_rng([seed, j, i])
            n = int(density * step * step)
            x = X0 + TILE / 3 + step * (i + rng.random(n))
            y = Y0 + TILE / 3 + step * (j + rng.random(n))
            x = np.minimum(x, X0 + side - 0.01)
            y = np.minimum(y, Y0 + side - 0.01)
            veg = rng.random(n) < 0.4
            z = 100 + 5 * np.sin((x - X0) / 150) + 3 * np.cos((y - Y0) / 210) + np.where(veg, rng.random(n) * 20, 0)
            tmp = p.with_name(f".{p.name}.tmp.laz")
            write_las(tmp, {"x": x, "y": y, "z": z, "classification": np.where(veg, 5, 2).astype(np.uint8),
                            "intensity": rng.integers(0, 4000, n).astype(np.uint16),
                            "return_number": np.ones(n, np.uint8), "number_of_returns": np.ones(n, np.uint8)},
                      crs=32610, offset=(X0, Y0, 0.0))
            os.replace(tmp, p)
    return paths


def make_region(folder: Path, side_tiles: int) -> None:
    """Land cover (all forest: every tile eligible), a DEM and the boundary of the region."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    side = side_tiles * TILE
    margin = 2 * TILE
    w = h = int((side + 2 * margin) / RES)
    t = from_origin(X0 - margin, Y0 + side + margin, RES, RES)
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(folder / "lc.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       crs="EPSG:32610", transform=t, nodata=255) as d:
        d.write(np.full((h, w), 41, np.uint8), 1)
    with rasterio.open(folder / "dem.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs="EPSG:32610", transform=t, nodata=-9999) as d:
        d.write(np.full((h, w), 100.0, np.float32), 1)
    tr = Transformer.from_crs(32610, 4326, always_xy=True)
    ring = [tr.transform(X0 + a, Y0 + b) for a, b in ((0, 0), (side, 0), (side, side), (0, side), (0, 0))]
    (folder / "boundary.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))


def write_recipe(folder: Path, name: str, files: list[Path], tiles: int, outlier: bool) -> Path:
    import yaml

    recipe = {
        "kind": "als", "name": name, "samples_per_project": tiles, "draws": max(tiles, 1000),
        "tile_size_m": TILE, "grid_res_m": RES,
        "landcover": {"path": "lc.tif"}, "dem": {"path": "dem.tif"},
        "projects": [{"name": "bench", "boundary": "boundary.geojson",
                      "pointclouds": [str(f.relative_to(folder)) for f in files]}],
        "output": {"formats": ["webdataset", "parquet"], "shard_max_samples": 64},
        "outlier": {"mean_k": 12, "multiplier": 2.2} if outlier else False,
    }
    rp = folder / f"{name}.yaml"
    rp.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return rp


# --------------------------------------------------------------------------- measuring


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (worker pool, fork server), from ``/proc/*/stat``."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, ()))
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _nfds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """Peaks over the process tree of ``pid``, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop = threading.Event()
        self.peak = {"rss_sum_mib": 0.0, "rss_max_mib": 0.0, "fds_sum": 0, "fds_max": 0, "procs": 0}
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _descendants(self.pid)
            rss = [_rss_kib(p) / 1024.0 for p in pids]
            fds = [_nfds(p) for p in pids]
            live = [i for i, r in enumerate(rss) if r > 0]
            if live:
                pk = self.peak
                pk["rss_sum_mib"] = max(pk["rss_sum_mib"], sum(rss))
                pk["rss_max_mib"] = max(pk["rss_max_mib"], max(rss))
                pk["fds_sum"] = max(pk["fds_sum"], sum(fds))
                pk["fds_max"] = max(pk["fds_max"], max(fds))
                pk["procs"] = max(pk["procs"], len(live))
                self.samples += 1
            self.stop.wait(self.interval)


def run_build(recipe: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "als_datasets", "build", str(recipe), "--out", str(out), "-q",
                          "--workers", str(workers)], env=env)
    s = Sampler(p.pid)
    s.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    s.stop.set()
    s.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {recipe}")
    samples = json.loads((out / "_info.json").read_text())
    n = sum(v.get("num_samples", 0) for v in samples.get("splits", {}).values()) if "splits" in samples else None
    return {"wall_s": round(wall, 2), "build_maxrss_mib": round(usage.ru_maxrss / 1024.0, 1),
            **{k: round(v, 1) if isinstance(v, float) else v for k, v in s.peak.items()},
            "samples_taken": s.samples, "samples_written": n}


# --------------------------------------------------------------------------- remote COPC


def copc_sweep() -> dict:
    """Bytes fetched by bounds queries of growing size on the shared COPC file served over
    loopback HTTP with Range support (``tests/range_server.py``), against the file size."""
    import dataclasses

    sys.path.insert(0, str(ROOT / "tests"))
    from range_server import RangeServer

    from als_datasets.kinds.als.sources.copc import iter_copc_boxes
    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud

    src = ROOT / "tests" / "data" / "als" / "simple.copc.laz"
    size = src.stat().st_size
    rows = []
    with RangeServer({src.name: src}) as srv:
        info = inspect_pointcloud(srv.url(src.name), crs_override="EPSG:2992")
        out = {"file": src.name, "file_bytes": size, "points": info.point_count,
               "inspect_bytes": srv.bytes_sent, "inspect_requests": srv.requests}
        info = dataclasses.replace(info, path=srv.url(src.name))
        minx, miny, maxx, maxy = info.bounds
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
        for frac in (0.01, 0.04, 0.16, 0.36, 1.0):
            h = frac ** 0.5 / 2
            box = (cx - h * (maxx - minx), cy - h * (maxy - miny), cx + h * (maxx - minx), cy + h * (maxy - miny))
            srv.reset()
            n = sum(len(c["x"]) for c in iter_copc_boxes(info, [box]))
            rows.append({"area_fraction": frac, "points": n, "bytes": srv.bytes_sent, "requests": srv.requests,
                         "bytes_ratio": round(srv.bytes_sent / size, 3)})
    out["queries"] = rows
    print(f"\nremote COPC ({src.name}, {size:,} bytes, {out['points']:,} points; inspection "
          f"{out['inspect_bytes']:,} bytes in {out['inspect_requests']} request):")
    print(f"{'area':>8}{'points':>9}{'bytes':>9}{'of file':>9}{'requests':>10}")
    for r in rows:
        print(f"{r['area_fraction']:8.0%}{r['points']:9,}{r['bytes']:9,}{r['bytes_ratio']:9.1%}{r['requests']:10}")
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points and at most 256 tiles / files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/als-bench-tiles"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--outlier", action="store_true", help="with the paper's statistical outlier filter")
    ap.add_argument("--copc-only", action="store_true",
                    help="only the remote COPC bytes-fetched sweep (seconds), merged into the results")
    args = ap.parse_args()
    out = HERE / "results" / "tiles.json"
    if args.copc_only:
        res = json.loads(out.read_text()) if out.is_file() else {}
        res["remote_copc"] = copc_sweep()
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwritten {out}")
        return
    if args.quick:
        side, density, tiles_list, files_list, base_files = 16, 1.0, (16, 64, 256), (16, 64, 256), 64
    else:
        side, density, tiles_list, files_list, base_files = 32, 1.0, (16, 64, 256, 1024), (16, 64, 256, 1024), 256
    work = args.work / ("quick" if args.quick else "full")
    make_region(work, side)
    t = time.perf_counter()
    inputs = {f: make_files(work / f"files{f}", side, int(round(f ** 0.5)), density) for f in files_list}
    pts = int(density * (side * TILE) ** 2)
    print(f"inputs ready ({time.perf_counter() - t:.1f} s): {side}x{side} tiles of {TILE:g} m, ~{pts:,} points, "
          f"as {', '.join(map(str, files_list))} files")

    runs = []
    plan = [(n, base_files) for n in tiles_list] + [(max(tiles_list), f) for f in files_list if f != base_files]
    for tiles, nfiles in plan:
        rp = write_recipe(work, f"t{tiles}-f{nfiles}", inputs[nfiles], tiles, args.outlier)
        r = run_build(rp, work / f"out-t{tiles}-f{nfiles}", args.workers)
        r.update(tiles=tiles, files=nfiles)
        runs.append(r)
        print(f"  tiles {tiles:5d} files {nfiles:5d}: {r['wall_s']:6.1f} s, RSS sum {r['rss_sum_mib']:7.0f} MiB "
              f"(largest process {r['rss_max_mib']:5.0f}), open fds sum {r['fds_sum']:4d} "
              f"(largest process {r['fds_max']:3d}), {r['procs']} processes", flush=True)
        shutil.rmtree(work / f"out-t{tiles}-f{nfiles}", ignore_errors=True)

    def ratio(key: str, rows: list[dict]) -> float:
        return rows[-1][key] / max(rows[0][key], 1e-9)

    by_tiles = [r for r in runs if r["files"] == base_files]
    by_files = sorted([r for r in runs if r["tiles"] == max(tiles_list)], key=lambda r: r["files"])
    summary = {}
    for label, rows, what in (("tiles", by_tiles, "tiles"), ("files", by_files, "files")):
        for key in ("rss_sum_mib", "rss_max_mib", "build_maxrss_mib", "fds_sum", "fds_max"):
            summary[f"{key}_ratio_{label}"] = round(ratio(key, rows), 3)
        print(f"\n{what} x{rows[-1][what] // rows[0][what]} ({rows[0][what]} -> {rows[-1][what]}, "
              f"{'files' if what == 'tiles' else 'tiles'} fixed at {rows[0]['files' if what == 'tiles' else 'tiles']}):"
              f" peak RSS sum x{summary[f'rss_sum_mib_ratio_{label}']:.2f}, largest process "
              f"x{summary[f'rss_max_mib_ratio_{label}']:.2f}, open fds sum x{summary[f'fds_sum_ratio_{label}']:.2f},"
              f" largest process x{summary[f'fds_max_ratio_{label}']:.2f}")
    res = {"quick": args.quick, "cpu_count": os.cpu_count(), "workers": args.workers, "outlier": args.outlier,
           "tile_size_m": TILE, "side_tiles": side, "density_pts_m2": density, "points": pts,
           "runs": runs, "summary": summary, "remote_copc": copc_sweep()}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
