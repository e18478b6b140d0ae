"""Benchmark: streaming extraction against the bare LAZ decode, side by side in one run.

    python bench/bench_extract.py                 # ~20 M points, and a 3x larger file for memory
    python bench/bench_extract.py --points 2e6 --no-large   # quick look
    python bench/bench_extract.py --points 4e6 --no-large --workers2 --ref /tmp/wt-main-ref  # before/after

Generates a LAZ file (UTM metres, ~4 points/m², points in flight-line order like real ALS),
then measures in this one run:

* decode: laspy/lazrs decompressing every point (``chunk_iterator``, nothing else);
* build:  ``als-datasets build`` with one worker selecting every tile of the file (so every
  point is routed, cleaned and written), with the paper's outlier filter, and without it
  (``outlier: false``) to separate the pipeline's own cost from the filter's;
* the build with the filter and the per-tile terrain rasters (``terrain_rasters: true``);
* peak RSS of the build process (with the filter) for the file and for a file 3x larger;
* with ``--workers2``: the filtered build with two worker processes (both cores for the build:
  shards of 2 tiles, so that each worker writes one; peak RSS is the main process's and the
  largest worker's, whichever is higher);
* the time split per stage of the filtered build (one in-process build: route = read + route +
  stage, load = staged parts, filter = noise classes + outlier filter, sample = float32 arrays +
  heights above ground + entropies, terrain, write = both formats, rest = plan, frame, finalise),
  with finer splits of route (decode / reproject / route / stage write), sample (arrays / ground /
  entropies) and rest (plan / finalise / report);
* with ``--ref DIR`` (a checkout of another version, e.g. ``git worktree add /tmp/ref main``):
  builds of that version and of this checkout interleaved ``--repeats`` times on the same LAZ,
  with and without the filter (min / median wall s), every output file compared byte for byte,
  and the stage split of both (each in a fresh interpreter);
* the outlier filter alone on 2 M points of one 500 m tile (8 pts/m², 40 % canopy up to 25 m)
  and on 10 M points (a 1 km square at 10 pts/m²): the old implementation (scipy ``cKDTree``,
  the filter before issue 15, kept here verbatim) against the new one, CPU seconds of this
  process side by side, with the flags compared;
* the CPU budget of the goal "build ≥ 0.5× the decode rate" (:func:`cpu_budget`): twice the
  decode's wall time on every core, against the CPU seconds of the bare decode, of the filter
  alone and of the builds, with the best ratio each allows when every core is kept busy.

The development machine is shared: every figure is a ratio measured within this one run.
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


def make_inputs(folder: Path, n: int, outlier: bool, terrain: bool = False, shard_samples: int = 8) -> Path:
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
        "output": {"formats": ["webdataset", "parquet"], "shard_max_samples": shard_samples},
        "outlier": {"mean_k": 12, "multiplier": 2.2} if outlier else None,
        **({"terrain_rasters": True} if terrain else {}),
    }
    import yaml

    rp = folder / ("recipe-terrain.yaml" if terrain else "recipe.yaml" if outlier else "recipe-nofilter.yaml")
    if shard_samples != 8:
        rp = rp.with_name(f"{rp.stem}-shards{shard_samples}.yaml")
    rp.write_text(yaml.safe_dump(recipe))
    return rp


#: CPU seconds (every thread: lazrs decodes on all cores) of the last :func:`bare_decode`
DECODE_CPU = [0.0]


def bare_decode(laz: Path) -> tuple[int, float]:
    import laspy

    t = time.perf_counter()
    c0 = time.process_time()
    n = 0
    with laspy.open(laz) as r:
        for c in r.chunk_iterator(1_000_000):
            n += len(c)
    DECODE_CPU[0] = time.process_time() - c0
    return n, time.perf_counter() - t


def cpu_budget(res: dict) -> dict:
    """What the goal "the build at ≥ 0.5× the bare decode rate" leaves to spend, in CPU seconds.

    Twice the decode's wall time on every core is all a build may use.  A build can go no faster
    than its CPU seconds spread over every core, so ``decode wall × cores / build CPU`` bounds its
    ratio to the decode from above, whatever is overlapped.  The same bound for the decode and the
    filter alone (the 2 M-point filter-alone rate, one thread, applied to the build's points) is
    the ratio a build that spent nothing else would reach."""
    cores, dec, n = res["cpu_count"], res["decode_s"], res["points"]
    out = {"cores": cores, "cpu_available_s": 2 * dec * cores, "decode_cpu_s": res["decode_cpu_s"],
           "build_cpu_s": res["build_cpu_s"], "build_nofilter_cpu_s": res["build_nofilter_cpu_s"],
           "ratio_bound_build": dec * cores / res["build_cpu_s"],
           "ratio_bound_nofilter": dec * cores / res["build_nofilter_cpu_s"]}
    rate = next((f["new_pts_s"] for f in res.get("filter_alone", []) if f["points"] == 2_000_000), None)
    if rate:
        out["filter_cpu_s"] = n / rate
        out["ratio_bound_decode_filter"] = dec * cores / (res["decode_cpu_s"] + n / rate)
    return out


def print_budget(b: dict) -> None:
    print(f"\nCPU budget of the goal (build >= 0.5x decode): 2 x decode wall x {b['cores']} cores = "
          f"{b['cpu_available_s']:.1f} CPU s; the bare decode alone uses {b['decode_cpu_s']:.1f}")
    if "filter_cpu_s" in b:
        print(f"  + the filter alone (its one-thread rate) {b['filter_cpu_s']:.1f} CPU s: ratio <= "
              f"{b['ratio_bound_decode_filter']:.2f} with nothing else spent and every core busy")
    print(f"  the build used {b['build_cpu_s']:.1f} CPU s with the filter (ratio <= {b['ratio_bound_build']:.2f} "
          f"with every core busy), {b['build_nofilter_cpu_s']:.1f} without it (<= {b['ratio_bound_nofilter']:.2f})")


#: CPU seconds (user + system, every thread; with workers, the waited-for worker processes too)
#: of the last :func:`run_build`: on a shared machine a steadier figure than the wall time
LAST_CPU = [0.0]


#: runs ``als-datasets build`` (``sys.argv``) and, at exit, writes to ``$ALS_BENCH_RSS`` the peak RSS
#: (kB) of this process's own memory (``VmHWM``: counted from its exec) and of its largest waited-for
#: child (the worker processes).  ``wait4``'s ``ru_maxrss`` is no good here: a child inherits the
#: high-water mark of the process that forked it, so a build started by a bench process that had
#: grown (after an in-process stage split) would report the bench's memory, not its own.
_RSS_WRAPPER = """
import atexit, os, resource, sys
def _peak():
    own = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.environ['ALS_BENCH_RSS'], 'w') as f:
        f.write(f'{own} {kids}')
atexit.register(_peak)
sys.argv = ['als-datasets', *sys.argv[1:]]
from als_datasets.cli import main
main()
"""


def run_build(recipe: Path, out: Path, workers: int = 1, env: dict | None = None) -> tuple[float, float]:
    """Wall time and peak RSS (MiB: the build process's or its largest worker's, whichever is
    higher; see :data:`_RSS_WRAPPER`) of one ``als-datasets build`` process (``env``: which
    package, see :func:`tree_env`; default this checkout's)."""
    import shutil
    import tempfile

    shutil.rmtree(out, ignore_errors=True)
    env = dict(env or tree_env(None))
    with tempfile.TemporaryDirectory() as tmp:
        env["ALS_BENCH_RSS"] = str(Path(tmp) / "rss")
        t = time.perf_counter()
        # run from the tree itself: ``-c`` puts the working directory before PYTHONPATH on sys.path
        p = subprocess.Popen([sys.executable, "-c", _RSS_WRAPPER, "build", str(recipe.resolve()), "--out",
                              str(out.resolve()), "-q", "--workers", str(workers)], env=env, cwd=env["PYTHONPATH"])
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"build failed: {recipe}")
        own, kids = (int(v) for v in (Path(tmp) / "rss").read_text().split())
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime  # CPU seconds of the build (all its threads)
    return wall, max(own, kids) / 1024.0


def old_filter(xyz: np.ndarray, k: int = 12, multiplier: float = 2.2) -> np.ndarray:
    """The outlier filter as it was before issue 15 (scipy cKDTree, ``>`` the threshold, numpy
    mean / std) — kept for the side-by-side rate; it differs from PDAL's in rare ties."""
    from scipy.spatial import cKDTree

    n = len(xyz)
    pts = np.asarray(xyz, dtype=np.float64)
    cell = np.floor(pts[:, :2] / 5.0).astype(np.int64)
    order = np.lexsort((cell[:, 0], cell[:, 1]))
    q = pts[order]
    tree = cKDTree(q, balanced_tree=False, compact_nodes=False)
    mean_d = np.empty(n)
    block = 1 << 19
    for i in range(0, n, block):
        dist, _ = tree.query(q[i:i + block], k=k + 1, workers=1)
        mean_d[order[i:i + block]] = dist[:, 1:].mean(axis=1)
    return mean_d > mean_d.mean() + multiplier * mean_d.std(ddof=1)


def tile_points(n: int, side: float, seed: int = 0) -> np.ndarray:
    """``n`` points on a ``side`` m square in scan-line order, 0.01 m scaled like LAS: 60 % on a
    rolling ground, 40 % canopy spread up to 25 m above it."""
    rng = np.random.default_rng(seed)
    x, y = rng.random(n) * side, rng.random(n) * side
    ground = 100 + 20 * np.sin(x / 300.0) + 10 * np.cos(y / 400.0)
    veg = rng.random(n) < 0.4
    z = ground + np.where(veg, rng.random(n) * 25, 0.0) + rng.normal(0, 0.05, n)
    xyz = np.round(np.column_stack([x, y, z]), 2)
    return xyz[np.lexsort((xyz[:, 0], np.floor(xyz[:, 1])))]


def filter_alone(n: int, side: float) -> dict:
    from als_datasets.kinds.als.extract.outliers import statistical_outliers

    xyz = tile_points(n, side)
    statistical_outliers(xyz[:20000])  # compiled (or loaded from numba's cache) outside the timing
    t = time.process_time()
    new = statistical_outliers(xyz)
    t_new = time.process_time() - t
    t = time.process_time()
    old = old_filter(xyz)
    t_old = time.process_time() - t
    return {"points": n, "side_m": side, "old_cpu_s": t_old, "new_cpu_s": t_new, "old_pts_s": n / t_old,
            "new_pts_s": n / t_new, "speedup": t_old / t_new, "outliers": int(new.sum()),
            "flags_differ": int((new != old).sum())}


def _wrap(spent: dict, originals: list, mod, name: str, stage: str, gen: bool = False) -> None:
    """Time every call of ``mod.name`` into ``spent[stage]`` (a generator: every step); a name the
    code under test lacks (an older tree, see ``--ref``) is skipped."""
    import functools

    f = getattr(mod, name, None)
    if f is None:
        return
    originals.append((mod, name, f))

    def add(t: float) -> None:
        spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - t

    if gen:
        @functools.wraps(f)
        def timed(*a, **kw):
            t = time.perf_counter()
            it = f(*a, **kw)
            add(t)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    add(t)
                    return
                add(t)
                yield item
    else:
        @functools.wraps(f)
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                add(t)
    setattr(mod, name, timed)


def stage_split(recipe: Path, out: Path, workers: int = 1) -> dict:
    """Seconds per stage of one in-process build (one worker, so every stage runs here).

    Coarse stages (the keys of earlier runs): route, load, filter, sample, terrain, write, rest,
    total.  Finer ones: ``route_detail`` (decode: laspy decompression and scaling; reproject;
    route: sorting points into tile slots; stage_write: staging parts written, their fsync in a
    background thread; other: mostly the wait for the last fsyncs), ``sample_detail`` (arrays: float32 coordinates and attribute arrays; ground:
    heights above ground; entropies; other: noise-class drop, coordinate copies, json) and
    ``rest_detail`` (plan; finalise without the report; report: plots, card, croissant; other)."""
    import shutil

    import als_datasets.build as core_build
    import als_datasets.dataset.layout as layout
    import als_datasets.kinds.als.build as als_build
    import als_datasets.kinds.als.extract.route as route
    import als_datasets.kinds.als.sources.pointcloud as pointcloud
    import als_datasets.kinds.als.tasks as tasks
    import als_datasets.report.folder as folder
    from als_datasets.recipe import load_recipe

    spent: dict[str, float] = {}
    originals: list = []
    from als_datasets.kinds.als.extract.outliers import statistical_outliers

    statistical_outliers(tile_points(20000, 50.0))  # numba's cached kernels loaded before the clock starts
    w = functools_partial(_wrap, spent, originals)
    w(als_build, "stage_points", "route")
    w(pointcloud, "iter_point_chunks", "r_decode", gen=True)
    w(route, "reproject", "r_reproject")
    w(route, "route_points", "r_route", gen=True)
    w(route._Buffers, "flush", "r_stage_write")
    w(tasks, "load_tile_points", "load")
    w(tasks, "clean_points", "filter")
    w(tasks, "terrain_rasters", "terrain")
    w(tasks, "sample_arrays", "s_arrays")
    w(tasks, "heights_above_ground", "s_ground")
    w(tasks, "height_entropy", "s_entropies")
    w(tasks, "satmae_entropy", "s_entropies")
    w(tasks, "make_sample", "_sample_total")
    w(core_build, "run_shard_task", "_shards_total")
    w(core_build, "make_plan", "x_plan")
    w(layout, "finalise", "x_finalise")
    w(folder, "write_report", "x_report")
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    try:
        core_build.run_build(load_recipe(recipe, out_dir=out), workers=workers)
    finally:
        for mod, name, f in reversed(originals):
            setattr(mod, name, f)
    total = time.perf_counter() - t
    g = spent.get
    sample = g("_sample_total", 0.0)
    shards = g("_shards_total", 0.0)
    split = {"route": g("route", 0.0), "load": g("load", 0.0), "filter": g("filter", 0.0),
             "sample": sample - g("load", 0.0) - g("filter", 0.0) - g("terrain", 0.0),
             "terrain": g("terrain", 0.0), "write": shards - sample}
    split["rest"] = total - sum(split.values())
    split["total"] = total
    split["shards_wall"] = shards  # load + filter + sample + terrain + write
    rd = {"decode": g("r_decode", 0.0), "reproject": g("r_reproject", 0.0),
          "route": g("r_route", 0.0) - g("r_reproject", 0.0), "stage_write": g("r_stage_write", 0.0)}
    rd["other"] = split["route"] - sum(rd.values())
    sd = {"arrays": g("s_arrays", 0.0), "ground": g("s_ground", 0.0), "entropies": g("s_entropies", 0.0)}
    sd["other"] = split["sample"] - sum(sd.values())
    xd = {"plan": g("x_plan", 0.0), "finalise": g("x_finalise", 0.0) - g("x_report", 0.0), "report": g("x_report", 0.0)}
    xd["other"] = split["rest"] - sum(xd.values())
    split.update({"route_detail": rd, "sample_detail": sd, "rest_detail": xd})
    return split


def functools_partial(f, *a):
    import functools

    return functools.partial(f, *a)


def tree_env(tree: Path | None) -> dict:
    """The environment that runs the package of ``tree`` (default: this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree or HERE.parent)
    return env


def stage_split_in(tree: Path | None, recipe: Path, out: Path) -> dict:
    """:func:`stage_split` run in a fresh interpreter on the package of ``tree``."""
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage-split", str(recipe), str(out)],
                       env=tree_env(tree), capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def tree_files(out: Path) -> dict[str, str]:
    """sha256 of every file a build wrote (relative path → digest)."""
    import hashlib

    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def compare_with_ref(args, recipes: dict[str, Path], npts: int) -> dict:
    """Builds of ``--ref``'s package and of this checkout's, interleaved ``--repeats`` times on the
    same inputs (one worker), with every output file compared; and the stage split of both."""
    import statistics

    trees = {"ref": args.ref, "new": None}
    walls: dict = {}
    same: dict = {}
    for rep in range(args.repeats):
        for label, rp in recipes.items():
            outs = {}
            for name, tree in (list(trees.items()) if rep % 2 == 0 else list(trees.items())[::-1]):  # alternate
                out = args.work / f"cmp-{name}-{label}"
                wall, rss = run_build(rp, out, env=tree_env(tree))
                walls.setdefault(f"{name}_{label}", []).append((wall, rss, LAST_CPU[0]))
                outs[name] = out
            a, b = tree_files(outs["ref"]), tree_files(outs["new"])
            same[label] = same.get(label, True) and a == b
            if a != b:
                print(f"  {label}: files differ: {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:10]}")
    res: dict = {"ref": str(args.ref), "repeats": args.repeats, "identical_outputs": same}
    for key, v in walls.items():
        ws, cs = [w for w, _, _ in v], [c for _, _, c in v]
        res[key] = {"min_s": min(ws), "median_s": statistics.median(ws), "all_s": ws,
                    "peak_rss_mib": max(r for _, r, _ in v), "pts_s_best": npts / min(ws),
                    "cpu_min_s": min(cs), "cpu_median_s": statistics.median(cs), "cpu_all_s": cs}
    res["stages_ref"] = stage_split_in(args.ref, recipes["filter"], args.work / "cmp-stages-ref")
    res["stages_new"] = stage_split_in(None, recipes["filter"], args.work / "cmp-stages-new")
    res["stages_nofilter_ref"] = stage_split_in(args.ref, recipes["nofilter"], args.work / "cmp-stages-ref")
    res["stages_nofilter_new"] = stage_split_in(None, recipes["nofilter"], args.work / "cmp-stages-new")
    return res


def print_stages(title: str, st: dict) -> None:
    flat = {k: v for k, v in st.items() if not isinstance(v, dict) and k != "shards_wall"}
    print(f"\n{title}: " + ", ".join(f"{k} {v:.2f} ({v / st['total']:.0%})" for k, v in flat.items() if k != "total")
          + f"; total {st['total']:.2f}")
    for k, v in st.items():
        if isinstance(v, dict):
            print(f"  {k}: " + ", ".join(f"{a} {b:.2f}" for a, b in v.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, default=20e6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/als-bench"))
    ap.add_argument("--no-large", action="store_true", help="skip the 3x file (peak-memory comparison)")
    ap.add_argument("--filter-points", type=float, nargs="*", default=[2e6, 10e6],
                    help="sizes for the filter-alone comparison (2 M: one 500 m tile; larger: 10 pts/m²)")
    ap.add_argument("--workers2", action="store_true",
                    help="also a 2-worker build (both cores for the build) with the filter, and its ratio to decode")
    ap.add_argument("--ref", type=Path, default=None,
                    help="a checkout of another version (e.g. main): its builds and this checkout's interleaved "
                         "on the same inputs, outputs compared byte for byte, stage splits of both")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved builds per version with --ref")
    ap.add_argument("--no-filter-alone", action="store_true", help="skip the filter-alone comparison")
    ap.add_argument("--results", default="extract.json", help="file name under bench/results/")
    ap.add_argument("--stage-split", nargs=2, type=Path, metavar=("RECIPE", "OUT"),
                    help=argparse.SUPPRESS)  # internal: one stage split, printed as JSON (for --ref)
    args = ap.parse_args()
    if args.stage_split:
        print(json.dumps(stage_split(*args.stage_split)))
        return
    n = int(args.points)
    res: dict = {"points": n, "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}

    t = time.perf_counter()
    rp = make_inputs(args.work / "x1", n, outlier=True)
    rp_nf = make_inputs(args.work / "x1", n, outlier=False)
    rp_t = make_inputs(args.work / "x1", n, outlier=True, terrain=True)
    print(f"inputs ready ({time.perf_counter() - t:.1f} s): {n:,} points")
    run_build(rp, args.work / "out-warm")  # numba compiles its kernels once per machine (cached)
    npts, dec = bare_decode(rp.parent / "cloud.laz")
    res["decode_s"], res["decode_pts_s"], res["decode_cpu_s"] = dec, npts / dec, DECODE_CPU[0]
    wall, rss = run_build(rp, args.work / "out-x1")
    res["build_cpu_s"] = LAST_CPU[0]
    res["build_s"], res["build_pts_s"], res["build_peak_rss_mib"] = wall, npts / wall, rss
    wall_nf, rss_nf = run_build(rp_nf, args.work / "out-x1-nofilter")
    res["build_nofilter_cpu_s"] = LAST_CPU[0]
    res["build_nofilter_s"], res["build_nofilter_pts_s"], res["build_nofilter_peak_rss_mib"] = wall_nf, npts / wall_nf, rss_nf
    wall_t, rss_t = run_build(rp_t, args.work / "out-x1-terrain")
    res["build_terrain_s"], res["build_terrain_pts_s"], res["build_terrain_peak_rss_mib"] = wall_t, npts / wall_t, rss_t
    _, dec2 = bare_decode(rp.parent / "cloud.laz")  # decode again: load drift between the two ends
    res["decode_again_s"] = dec2
    if args.workers2:
        # two shards of 2 tiles: the two workers filter one shard each, one thread each
        rp_w2 = make_inputs(args.work / "x1", n, outlier=True, shard_samples=2)
        wall2, rss2 = run_build(rp_w2, args.work / "out-x1-w2", workers=2)
        res["build_w2_cpu_s"] = LAST_CPU[0]
        res.update({"build_w2_s": wall2, "build_w2_pts_s": npts / wall2, "build_w2_peak_rss_mib": rss2})
    res["stages_s"] = stage_split(rp, args.work / "out-x1-stages")
    if not args.no_large:
        rp3 = make_inputs(args.work / "x3", 3 * n, outlier=True)
        _, dec3 = bare_decode(rp3.parent / "cloud.laz")
        wall3, rss3 = run_build(rp3, args.work / "out-x3")
        res.update({"x3_points": 3 * n, "x3_decode_s": dec3, "x3_build_s": wall3, "x3_build_peak_rss_mib": rss3})
    if args.ref:
        res["vs_ref"] = compare_with_ref(args, {"filter": rp, "nofilter": rp_nf}, npts)
    res["filter_alone"] = [] if args.no_filter_alone else [
        filter_alone(int(m), 500.0 if m <= 2e6 else float(np.sqrt(m / 10.0))) for m in args.filter_points]
    res["cpu_budget"] = cpu_budget(res)
    res["load_avg_end"] = os.getloadavg()

    print(f"\n{'':34}{'seconds':>10}{'points/s':>14}{'ratio':>8}{'peak MiB':>10}")
    print(f"{'bare decode (laspy+lazrs)':34}{dec:10.1f}{npts / dec:14,.0f}{1.0:8.2f}{'':>10}")
    print(f"{'build, 1 worker, outlier filter':34}{wall:10.1f}{npts / wall:14,.0f}{dec / wall:8.2f}{rss:10.0f}")
    print(f"{'build, 1 worker, no filter':34}{wall_nf:10.1f}{npts / wall_nf:14,.0f}{dec / wall_nf:8.2f}{rss_nf:10.0f}")
    print(f"{'build, filter + terrain rasters':34}{wall_t:10.1f}{npts / wall_t:14,.0f}{dec / wall_t:8.2f}{rss_t:10.0f}")
    if args.workers2:
        print(f"{'build, 2 workers, outlier filter':34}{wall2:10.1f}{npts / wall2:14,.0f}{dec / wall2:8.2f}{rss2:10.0f}")
    print(f"{'bare decode, again':34}{dec2:10.1f}{npts / dec2:14,.0f}")
    if not args.no_large:
        print(f"{'3x file: bare decode':34}{dec3:10.1f}{3 * npts / dec3:14,.0f}{1.0:8.2f}{'':>10}")
        print(f"{'3x file: build, outlier filter':34}{wall3:10.1f}{3 * npts / wall3:14,.0f}{dec3 / wall3:8.2f}{rss3:10.0f}")
        print(f"peak memory of the build, 3x file / 1x file: {rss3 / rss:.2f}")
    print_stages("stages of the filtered build (in-process, s)", res["stages_s"])
    if args.ref:
        v = res["vs_ref"]
        print(f"\n--ref {v['ref']}: {v['repeats']} interleaved builds each (min / median s; ratio to decode of the min); "
              f"outputs identical: {v['identical_outputs']}")
        for label in ("filter", "nofilter"):
            for name in ("ref", "new"):
                b = v[f"{name}_{label}"]
                print(f"  {name} {label:9}{b['min_s']:8.2f}{b['median_s']:8.2f}{dec / b['min_s']:8.3f}"
                      f"{b['peak_rss_mib']:8.0f} MiB   CPU s min / median {b['cpu_min_s']:.2f} / {b['cpu_median_s']:.2f}")
        for key in ("stages_ref", "stages_new", "stages_nofilter_ref", "stages_nofilter_new"):
            print_stages(key, v[key])
    print("\noutlier filter alone (CPU s of this process; same flags?)")
    for f in res["filter_alone"]:
        print(f"  {f['points'] / 1e6:.0f} M points on {f['side_m']:.0f} m: old {f['old_pts_s'] / 1e6:.2f} M/s, "
              f"new {f['new_pts_s'] / 1e6:.2f} M/s, {f['speedup']:.2f}x; flags differing: {f['flags_differ']}")
    print_budget(res["cpu_budget"])
    print(f"load average at start / end: {res['load_avg_start']} / {res['load_avg_end']}")
    out = HERE / "results" / args.results
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
