"""Build orchestration: plan → route tasks → shard tasks → finalise (DESIGN.md §4, §10).

Re-running a build skips shards that are complete and verified (sha256 against the entry
recorded when they were written, and the same task fingerprint), removes leftovers of an
interrupted run, and ends with the same bytes as a clean build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError
from .executors import Executor
from .extract.route import RouteTask, TileGrid, reset_staging, run_route_task, task_is_done
from .plan import Plan, make_plan
from .progress import Reporter
from .recipe import Recipe
from .shards.tasks import ShardTask, run_shard_task
from .shards.writer import atomic_write, is_leftover_tmp, sha256_file
from .sources.remote import source_name

WORK_DIR = ".build"


@dataclass
class BuildResult:
    out_dir: Path
    samples: int
    shards_written: int
    shards_skipped: int
    files_read: int


def tile_records(plan: Plan) -> dict[str, dict]:
    """The plan's metadata for every selected tile (the sample json, minus extraction counts)."""
    from pyproj import Transformer

    r = plan.recipe
    T = r.tile_size_m
    lc_names = [*r.landcover_classes, "other"]
    sel = plan.selected
    recs = {}
    for crs, grp in sel.groupby("crs", sort=False):
        tr = Transformer.from_crs(crs, 4326, always_xy=True)
        lon, lat = tr.transform(grp["x0"].to_numpy() + T / 2, grp["y0"].to_numpy() + T / 2)
        for (_, row), lo, la in zip(grp.iterrows(), lon, lat):
            x0, y0 = float(row["x0"]), float(row["y0"])
            recs[row["tile_id"]] = {
                "project": row["project"], "tile_id": row["tile_id"], "crs": crs, "split": row["split"],
                "origin": [x0, y0], "bounds_utm": [x0, y0, x0 + T, y0 + T], "tile_size_m": float(T),
                "lon": float(lo), "lat": float(la),
                "landcover": row["landcover"],
                "landcover_fractions": {n: float(row[f"frac_{n}"]) for n in lc_names},
                "slope_class": row["slope_class"], "slope_mean_deg": float(row["slope_mean_deg"]),
                "stratum": f"{row['landcover']}/{row['slope_class']}",
                "strategy": r.strategy, "draw_rank": int(row["draw_rank"]), "weight": float(row["weight"]),
                "seed": r.seed,
            }
    return recs


def _fingerprint(task) -> str:
    d = task.fingerprint_data() if hasattr(task, "fingerprint_data") else asdict(task)
    for k in ("out_dir", "staging", "threads"):  # where and how fast, not what
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_tasks(plan: Plan, out: Path, staging: Path, workers: int = 1) -> list:
    r = plan.recipe
    if r.kind != "als":
        from .raster.build import raster_shard_tasks

        return raster_shard_tasks(plan, out)
    recs = tile_records(plan)
    files = [f for pf in plan.frames for f in pf.pointclouds]
    names = tuple(source_name(f.path) for f in files)  # never a signed URL's token
    return [
        ShardTask(index=s.index, split=s.split, records=tuple(recs[k] for k in s.keys), staging=str(staging),
                  out_dir=str(out), formats=r.formats, drop_classes=r.drop_classes, outlier_k=r.outlier_k,
                  outlier_multiplier=r.outlier_multiplier, landcover_names=(*r.landcover_classes, "other"),
                  source_names=names, threads=max(1, (os.cpu_count() or 1) // max(workers, 1)))
        for s in plan.shards
    ]


def route_tasks(plan: Plan, tiles_needed: set[str], staging: Path) -> list[RouteTask]:
    """One task per input file that touches a needed tile (files touching none are never read)."""
    from pyproj import Transformer

    T = plan.recipe.tile_size_m
    tasks, fi = [], 0
    for pf in plan.frames:
        g = pf.grid
        px = plan.recipe.tile_px
        tg = TileGrid(g.epsg, g.x0, g.y1, T, g.width // px, g.height // px)
        t = pf.tiles
        need = t[t["tile_id"].isin(tiles_needed)]
        for info in pf.pointclouds:
            tr = Transformer.from_crs(info.crs, g.crs, always_xy=True)
            minx, miny, maxx, maxy = tr.transform_bounds(*info.bounds, densify_pts=21)
            hit = need[(need["x0"] < maxx) & (need["x0"] + T >= minx) & (need["y0"] < maxy) & (need["y0"] + T >= miny)]
            if len(hit):
                tiles = tuple(zip(hit["col"].astype(int), hit["row"].astype(int), hit["tile_id"]))
                tasks.append(RouteTask(fi, info, tg, tiles, str(staging)))
            fi += 1
    return tasks


def _completed(out: Path, task: ShardTask, known: dict[str, dict]) -> list[dict] | None:
    """The task's entries if every file it writes is present and matches its recorded sha256."""
    fp = _fingerprint(task)
    entries = []
    for rel in task.paths().values():
        e = known.get(rel)
        p = out / rel
        if e is None or e.get("fingerprint") != fp or not p.is_file() or p.stat().st_size != e["bytes"]:
            return None
        if sha256_file(p) != e["sha256"]:
            return None
        entries.append(e)
    return entries


def _known_entries(out: Path, work: Path) -> dict[str, dict]:
    known = {}
    m = out / "manifest.json"
    if m.is_file():
        try:
            known.update({e["path"]: e for e in json.loads(m.read_text()).get("shards", [])})
        except (ValueError, KeyError, TypeError):
            pass
    for side in sorted((work / "shards").glob("*.json")) if (work / "shards").is_dir() else []:
        try:
            known.update({e["path"]: e for e in json.loads(side.read_text())})
        except (ValueError, KeyError, TypeError):
            side.unlink()
    return known


def remove_leftovers(out: Path) -> int:
    """Delete temp files of interrupted writes anywhere under ``out``."""
    n = 0
    for p in out.rglob(".*.tmp-*"):
        if p.is_file() and is_leftover_tmp(p):
            p.unlink()
            n += 1
    return n


def remove_stale_shards(out: Path, entries: list[dict]) -> int:
    """Delete shard files of an earlier, different build that this build does not write (a
    ``*.parquet`` glob would otherwise pick them up)."""
    keep = {e["path"] for e in entries}
    n = 0
    for fmt, pattern in (("webdataset", "*.tar"), ("parquet", "*.parquet")):
        root = out / fmt
        for p in sorted(root.glob(f"*/{pattern}")) if root.is_dir() else []:
            if p.relative_to(out).as_posix() not in keep:
                p.unlink()
                n += 1
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    return n


def _run_shard(task: ShardTask) -> list[dict]:
    entries = run_shard_task(task)
    fp = _fingerprint(task)
    return [{**e, "fingerprint": fp} for e in entries]


def run_build(recipe: Recipe, workers: int = 1, reporter: Reporter | None = None, plan: Plan | None = None,
              executor: Executor | None = None) -> BuildResult:
    """Build the dataset described by ``recipe`` into ``recipe.out_dir``.

    ``executor`` maps the route and shard tasks (default: a local pool of ``workers``)."""
    from .dataset.layout import finalise

    rep = reporter or Reporter(enabled=False)
    out = Path(recipe.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the output folder: {exc.strerror}") from None
    work = out / WORK_DIR
    staging = work / "staging"
    remove_leftovers(out)

    ex = executor or Executor(workers)
    if plan is None:
        units = len(recipe.projects) if recipe.kind == "als" else len(recipe.scenes)
        with rep.step("sampling frame", units) as adv:
            plan = make_plan(recipe, progress=lambda msg, i, n: adv(1) if i < n else None, executor=ex)
    tasks = shard_tasks(plan, out, staging, ex.workers)
    known = _known_entries(out, work)
    done: dict[int, list[dict]] = {}
    for t in tasks:
        e = _completed(out, t, known)
        if e is not None:
            done[id(t)] = e
    todo = [t for t in tasks if id(t) not in done]

    files_read = 0
    if todo and recipe.kind == "als":
        # staged parts from another routing plan (changed inputs or recipe) are never reused
        reset_staging(staging, route_tasks(plan, set(plan.selected["tile_id"]), staging))
        needed = {r["tile_id"] for t in todo for r in t.records}
        routes = [t for t in route_tasks(plan, needed, staging) if not task_is_done(t)]
        total_pts = sum(t.info.point_count for t in routes)
        with rep.step("reading point clouds", total_pts) as adv:
            if ex.name == "local" and ex.workers <= 1:
                for t in routes:
                    run_route_task(t, progress=adv)
            else:
                for t, _ in ex.map(run_route_task, routes):
                    adv(t.info.point_count)
        files_read = len(routes)
    if todo:
        (work / "shards").mkdir(parents=True, exist_ok=True)
        with rep.step("writing shards", len(todo)) as adv:
            for t, entries in ex.map(_run_shard, todo):
                side = work / "shards" / f"{t.split}-{t.index:06d}.json"
                atomic_write(side, lambda f, e=entries: f.write(json.dumps(e, sort_keys=True).encode()))
                done[id(t)] = entries
                adv(1)

    entries = [e for t in tasks for e in done[id(t)]]
    remove_stale_shards(out, entries)
    with rep.step("finalising", 1) as adv:
        n = finalise(plan, out, entries)
        adv(1)
    shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, n, len(todo), len(tasks) - len(todo), files_read)

