"""Benchmark: the exact statistical outlier filter against its previous version and cKDTree.

    python bench/bench_outliers.py                      # 2 M points / 500 m and 10 M / 1 km
    python bench/bench_outliers.py --points 2e6 --repeats 5
    python bench/bench_outliers.py --real                # also the real files of ../shared/data/als
    python bench/bench_outliers.py --scenes              # also forest crowns, buildings, scan lines, a void

The previous version is ``als_datasets/kinds/als/extract/outliers.py`` as committed at ``--ref``
(default ``main``), copied to a temporary folder and imported from there.  On the synthetic tiles
of ``bench_extract.tile_points`` (8 pts/m² on a 500 m tile, 40 % canopy up to 25 m), in this one
process and interleaved (ref, new, ref, new, ...): CPU seconds of ``statistical_outliers`` with one
thread, min and median over the repeats, the flags and the mean distances compared (ref and new
must be identical, bit for bit);
scipy's cKDTree (``bench_extract.old_filter``) once per size.  Then the first call's cost in a fresh
process (numba's kernels loaded from its cache, 100 k points, ``threads=2``), ref and new, and the
wall time with two threads.  With ``--real``, the real LiDAR files of ``../shared/data/als`` too
(autzen, Topography, mvk-thin, a small LAS, and lone-star: 519 k points at ~390 pts/m², trunks
and poles), read as PDAL reads them; with ``--scenes``, synthetic tiles with the structure real
ones have (:func:`scene`).  The machine may be shared: the load average is recorded.
Writes ``bench/results/outliers.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_extract import old_filter, tile_points  # noqa: E402

MODULE = "als_datasets/kinds/als/extract/outliers.py"
GRID = "als_datasets/kinds/als/extract/outlier_grid.py"

FIRST_CALL = """
import sys, time
sys.path.insert(0, {path!r})
import numpy as np
t = time.perf_counter()
from {mod} import statistical_outliers
t_import = time.perf_counter() - t
rng = np.random.default_rng(0)
xyz = np.column_stack([rng.random(100_000) * 110, rng.random(100_000) * 110, rng.random(100_000) * 20])
t = time.perf_counter()
statistical_outliers(xyz, 12, 2.2, threads=2)
print(t_import, time.perf_counter() - t)
"""


def ref_module(ref: str, folder: Path):
    """The filter as committed at ``ref``, importable as ``outliers_ref`` from ``folder`` (with
    its own ``outlier_grid`` where ``ref`` has one, as ``outlier_grid_ref``)."""
    def show(path: str) -> str | None:
        r = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    src = show(MODULE)
    if src is None:
        raise SystemExit(f"{MODULE} is not in {ref}")
    grid = show(GRID)
    if grid is not None:
        (folder / "outlier_grid_ref.py").write_text(grid)
        src = src.replace("als_datasets.kinds.als.extract.outlier_grid", "outlier_grid_ref")
    (folder / "outliers_ref.py").write_text(src)
    sys.path.insert(0, str(folder))
    return importlib.import_module("outliers_ref")


def side_by_side(old, new, xyz: np.ndarray, repeats: int) -> dict:
    """``repeats`` interleaved runs of the two filters and one cKDTree run on ``xyz``: the row
    every table shares (CPU seconds, best and median; outliers; flags compared)."""
    times: list[list[float]] = [[], []]
    flags: list = [None, None]
    for _ in range(repeats):
        for i, mod in enumerate((old, new)):
            t = time.process_time()
            flags[i] = mod.statistical_outliers(xyz)
            times[i].append(time.process_time() - t)
    t = time.process_time()
    f_kd = old_filter(xyz)
    t_kd = time.process_time() - t
    return {"points": len(xyz), "ref_cpu_s": min(times[0]), "new_cpu_s": min(times[1]),
            "new_cpu_s_median": float(np.median(times[1])), "kdtree_cpu_s": t_kd, "outliers": int(flags[1].sum()),
            "flags_equal_ref": bool(np.array_equal(flags[0], flags[1])),
            "kdtree_flags_differ": int((f_kd != flags[1]).sum())}


#: real files of ../shared/data/als (see its SOURCES.md)
REAL = ["autzen_trim.laz", "Topography.laz", "mvk-thin.las", "file_with_both_wkt_and_geotiff_vlrs.las",
        "ept/lone-star-source.laz"]


def real_files(old, new, repeats: int) -> list[dict]:
    """The filter on the real LiDAR files of ``../shared/data/als`` (absent: skipped): the float64
    coordinates PDAL reads, less a whole-unit corner (exact), ref / new / cKDTree CPU seconds."""
    import laspy

    rows = []
    data = ROOT.parent / "shared" / "data" / "als"
    for name in REAL:
        path = data / name
        if not path.is_file():
            print(f"{path}: absent, skipped")
            continue
        las = laspy.read(path)
        h = las.header
        xyz = np.column_stack([np.asarray(las.points.array[d], np.float64) * h.scales[i] + h.offsets[i]
                               for i, d in enumerate(("X", "Y", "Z"))])
        xyz[:, :2] -= np.floor(xyz[:, :2].min(axis=0))
        n = len(xyz)
        row = {"file": name, "points_per_unit2": n / float(np.ptp(xyz[:, 0]) * np.ptp(xyz[:, 1])),
               **side_by_side(old, new, xyz, repeats)}
        t_old, t_new, t_kd = row["ref_cpu_s"], row["new_cpu_s"], row["kdtree_cpu_s"]
        rows.append(row)
        print(f"{name}: {n} points, {row['points_per_unit2']:.1f} per unit²: ref {n / t_old / 1e6:.2f} M/s, "
              f"new {n / t_new / 1e6:.2f} M/s ({t_old / t_new:.2f}x), cKDTree {n / t_kd / 1e6:.2f} M/s; "
              f"{row['outliers']} outliers, flags {'equal' if row['flags_equal_ref'] else 'DIFFER'} (ref), "
              f"{row['kdtree_flags_differ']} differ from cKDTree's", flush=True)
    return rows


def first_call(path: str, mod: str) -> dict:
    """Seconds of a fresh process's import and first call (run twice: the first may fill the
    cache; the second is reported)."""
    code = FIRST_CALL.format(path=path, mod=mod)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
    t_import, t_call = map(float, out.split())
    return {"import_s": t_import, "first_call_s": t_call}


def scene(name: str, n: int = 2_000_000, side: float = 500.0, seed: int = 3) -> np.ndarray:
    """Synthetic 500 m tiles with the structure real ones have (0.01 m scaled):

    * ``forest``: 30 % ground, 70 % on the shells of 6 000 tree crowns (2-4 m radius, 8-25 m up);
    * ``urban``: half ground, half on 800 buildings (flat roofs 4-24 m up, a few wall returns);
    * ``scanlines``: bare ground sampled along scan lines 0.5 m apart;
    * ``river``: the bench tile with a 250 m wide band through the middle empty (a void)."""
    rng = np.random.default_rng(seed)

    def ground(m):
        x, y = rng.random(m) * side, rng.random(m) * side
        return np.column_stack([x, y, 100 + 5 * np.sin(x / 50) + rng.normal(0, 0.03, m)])

    if name == "forest":
        g = ground(int(n * 0.3))
        m, trees = n - len(g), 6000
        t = rng.integers(0, trees, m)
        cx, cy = rng.random(trees) * side, rng.random(trees) * side
        r, h = 2 + 2 * rng.random(trees), 8 + 17 * rng.random(trees)
        u = rng.normal(size=(m, 3))
        u /= np.linalg.norm(u, axis=1)[:, None]
        s = r[t] * (0.6 + 0.4 * rng.random(m) ** 0.3)
        xyz = np.vstack([g, np.column_stack([cx[t] + u[:, 0] * s, cy[t] + u[:, 1] * s, 100 + h[t] + u[:, 2] * s * 1.5])])
    elif name == "urban":
        g = ground(n // 2)
        m, nb = n - len(g), 800
        b = rng.integers(0, nb, m)
        bx, by = rng.random(nb) * side, rng.random(nb) * side
        w, d, h = 8 + 20 * rng.random(nb), 8 + 20 * rng.random(nb), 4 + 20 * rng.random(nb)
        roof = rng.random(m) < 0.95
        px, py = np.where(roof, bx[b] + w[b] * rng.random(m), bx[b]), by[b] + d[b] * rng.random(m)
        pz = np.where(roof, 100 + h[b] + rng.normal(0, 0.03, m), 100 + h[b] * rng.random(m))
        xyz = np.vstack([g, np.column_stack([px, py, pz])])
    elif name == "scanlines":
        xyz = ground(n)
        xyz[:, 1] = np.round(xyz[:, 1] / 0.5) * 0.5 + rng.normal(0, 0.01, n)
    elif name == "river":
        xyz = tile_points(n, side)
        return xyz[(xyz[:, 0] <= 125) | (xyz[:, 0] >= 375)]
    else:
        raise ValueError(name)
    return np.round(xyz, 2)


SCENES = ("forest", "urban", "scanlines", "river")


def scenes(old, new, repeats: int) -> list[dict]:
    """The structured tiles of :func:`scene`: ref / new / cKDTree CPU seconds, flags compared."""
    rows = []
    for name in SCENES:
        xyz = scene(name)
        n = len(xyz)
        row = {"scene": name, **side_by_side(old, new, xyz, repeats)}
        t_old, t_new, t_kd = row["ref_cpu_s"], row["new_cpu_s"], row["kdtree_cpu_s"]
        rows.append(row)
        print(f"scene {name}: {n / 1e6:.2f} M points: ref {n / t_old / 1e6:.2f} M/s, new {n / t_new / 1e6:.2f} "
              f"M/s (median {n / row['new_cpu_s_median'] / 1e6:.2f}), cKDTree {n / t_kd / 1e6:.2f} M/s "
              f"({t_kd / t_new:.1f}x); flags {'equal' if row['flags_equal_ref'] else 'DIFFER'} (ref), "
              f"{row['kdtree_flags_differ']} differ from cKDTree's", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, nargs="*", default=[2e6, 10e6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref", default="main")
    ap.add_argument("--no-kdtree", action="store_true")
    ap.add_argument("--real", action="store_true", help="also the real files of ../shared/data/als")
    ap.add_argument("--scenes", action="store_true", help="also structured tiles: forest, urban, scan lines, a void")
    args = ap.parse_args()
    from als_datasets.kinds.als.extract import outliers as new

    res: dict = {"ref": args.ref, "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = ref_module(args.ref, Path(tmp))
        warm = tile_points(20_000, 50.0)
        old.statistical_outliers(warm), new.statistical_outliers(warm)
        for m in args.points:
            n = int(m)
            side = 500.0 if n <= 2e6 else float(np.sqrt(n / 10.0))
            xyz = tile_points(n, side)
            t_old, t_new = [], []
            for _ in range(args.repeats):
                t = time.process_time()
                f_old = old.statistical_outliers(xyz)
                t_old.append(time.process_time() - t)
                t = time.process_time()
                f_new = new.statistical_outliers(xyz)
                t_new.append(time.process_time() - t)
                assert np.array_equal(f_old, f_new), "flags differ from the reference version"
            same_means = (old.mean_neighbour_distances(xyz, 12).tobytes()
                          == new.mean_neighbour_distances(xyz, 12).tobytes())
            assert same_means, "mean distances differ from the reference version"
            row = {"points": n, "side_m": side, "old_cpu_s": t_old, "new_cpu_s": t_new,
                   "old_pts_s_best": n / min(t_old), "new_pts_s_best": n / min(t_new),
                   "old_pts_s_median": n / float(np.median(t_old)), "new_pts_s_median": n / float(np.median(t_new)),
                   "outliers": int(f_new.sum()), "flags_equal": True,
                   "means_bit_equal": same_means}
            t = time.perf_counter()
            new.statistical_outliers(xyz, threads=2)
            row["new_wall_s_threads2"] = time.perf_counter() - t
            if not args.no_kdtree:
                t = time.process_time()
                f_kd = old_filter(xyz)
                row["kdtree_cpu_s"] = time.process_time() - t
                row["kdtree_pts_s"] = n / row["kdtree_cpu_s"]
                row["kdtree_flags_differ"] = int((f_kd != f_new).sum())
            res["sizes"].append(row)
            print(f"{n / 1e6:.0f} M points on {side:.0f} m: ref {row['old_pts_s_best'] / 1e6:.2f} M/s "
                  f"(median {row['old_pts_s_median'] / 1e6:.2f}), new {row['new_pts_s_best'] / 1e6:.2f} M/s "
                  f"(median {row['new_pts_s_median'] / 1e6:.2f}), {min(t_old) / min(t_new):.2f}x; "
                  + (f"cKDTree {row['kdtree_pts_s'] / 1e6:.2f} M/s ({row['kdtree_flags_differ']} flags differ); "
                     if not args.no_kdtree else "")
                  + f"2 threads {row['new_wall_s_threads2']:.2f} s wall", flush=True)
        if args.real:
            res["real_files"] = real_files(old, new, args.repeats)
        if args.scenes:
            res["scenes"] = scenes(old, new, args.repeats)
        res["first_call_s"] = {"ref": first_call(tmp, "outliers_ref"),
                               "new": first_call(str(ROOT), "als_datasets.kinds.als.extract.outliers")}
    fc = res["first_call_s"]
    print(f"fresh process, cache warm, 100 k points, threads=2: first call ref {fc['ref']['first_call_s']:.2f} s, "
          f"new {fc['new']['first_call_s']:.2f} s (import ref {fc['ref']['import_s']:.2f} s, new {fc['new']['import_s']:.2f} s)")
    res["load_avg_end"] = os.getloadavg()
    print(f"load average at start / end: {res['load_avg_start']} / {res['load_avg_end']}")
    out = HERE / "results" / "outliers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
