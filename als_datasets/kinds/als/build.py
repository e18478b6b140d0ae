"""ALS side of the build: plan → tile records → shard tasks, and the staging pass that routes
each input file's points to the selected tiles before the shard tasks read them.

The orchestration (resume, executors, finalise) is :func:`als_datasets.build.run_build`.
"""

from __future__ import annotations

import os
from pathlib import Path

from als_datasets.kinds.als.extract.route import (
    RouteTask,
    TileGrid,
    reset_staging,
    run_route_task,
    source_facts,
    task_is_done,
)
from als_datasets.kinds.als.sources.remote import source_label
from als_datasets.kinds.als.tasks import ShardTask
from als_datasets.plan import Plan


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


def als_shard_tasks(plan: Plan, out: Path, staging: Path, workers: int = 1) -> list[ShardTask]:
    """One task per shard spec; each names the input files whose bounds touch its tiles (the files
    :func:`route_tasks` reads for them) with their stamps, so that a changed file or CRS override
    reruns exactly the shards it touches."""
    r = plan.recipe
    recs = tile_records(plan)
    files = [f for pf in plan.frames for f in pf.pointclouds]
    touching: dict[str, set[int]] = {}
    for t in route_tasks(plan, set(plan.selected["tile_id"]), staging):
        for _, _, tile_id in t.tiles:
            touching.setdefault(tile_id, set()).add(t.file_index)
    facts: dict[int, dict] = {}
    tasks = []
    for s in plan.shards:
        fis = sorted(set().union(*(touching.get(k, set()) for k in s.keys)))
        for i in fis:
            if i not in facts:
                facts[i] = source_facts(files[i])
        tasks.append(ShardTask(
            index=s.index, split=s.split, records=tuple(recs[k] for k in s.keys), staging=str(staging),
            out_dir=str(out), formats=r.formats, drop_classes=r.drop_classes, outlier_k=r.outlier_k,
            outlier_multiplier=r.outlier_multiplier, landcover_names=(*r.landcover_classes, "other"),
            sources=tuple((i, source_label(files[i].path)) for i in fis),  # never a signed URL's token
            inputs=tuple(facts[i] for i in fis), threads=threads_per_worker(workers),
            raster_cell_m=r.terrain_cell_m, point_attributes=r.point_attributes))
    return tasks


def threads_per_worker(workers: int) -> int:
    """The threads a task may use (the outlier filter's, the reprojection's): the cores each of
    the ``workers`` processes may use."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def route_tasks(plan: Plan, tiles_needed: set[str], staging: Path, threads: int = 1) -> list[RouteTask]:
    """One task per input file that touches a needed tile (files touching none are never read);
    ``threads``: each task's threads for reprojecting points."""
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
                tasks.append(RouteTask(fi, info, tg, tiles, str(staging), attributes=plan.recipe.point_attributes,
                                       threads=threads))
            fi += 1
    return tasks


def stage_points(plan: Plan, todo: list[ShardTask], staging: Path, ex, rep) -> int:
    """Route the points the shard tasks still to run need into per-tile staging files (each input
    file read once); returns the number of files read."""
    # staged parts from another routing plan (changed inputs or recipe) are never reused
    reset_staging(staging, route_tasks(plan, set(plan.selected["tile_id"]), staging))
    needed = {r["tile_id"] for t in todo for r in t.records}
    routes = [t for t in route_tasks(plan, needed, staging, threads_per_worker(ex.workers)) if not task_is_done(t)]
    total_pts = sum(t.info.point_count for t in routes)
    with rep.step("reading point clouds", total_pts) as adv:
        if ex.name == "local" and ex.workers <= 1:
            for t in routes:
                run_route_task(t, progress=adv)
        else:
            for t, _ in ex.map(run_route_task, routes):
                adv(t.info.point_count)
    return len(routes)
