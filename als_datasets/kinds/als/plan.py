"""ALS plan: projects → frame (every candidate tile) → strategy draw → splits → shard specs.

Pure and deterministic given the recipe and its input files; reads rasters and point-cloud
headers, but no points (unless the recipe has no DEM: then slope comes from the ground
returns).  ``als-datasets plan`` stops here and writes ``frame.parquet``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from als_datasets.errors import InputError
from als_datasets.kinds.als.frame.build import ProjectFrame, build_project_frame
from als_datasets.kinds.als.recipe import Recipe
from als_datasets.kinds.als.strategies import apply_strategy
from als_datasets.plan import Plan, shard_specs, split_of

FRAME_COLUMNS = [
    "tile_id", "project", "col", "row", "geometry", "crs", "x0", "y0", "landcover", "slope_class",
    "class_fraction", "slope_mean_deg", "eligible", "weight", "draw_rank", "selected", "split",
]


def _footprints(frame: ProjectFrame, tile: float):
    """EPSG:4326 footprints of the project's tiles (edges densified so curvature is kept)."""
    import geopandas as gpd
    from shapely import box, segmentize

    t = frame.tiles
    boxes = [box(x, y, x + tile, y + tile) for x, y in zip(t["x0"], t["y0"])]
    g = gpd.GeoSeries(segmentize(np.array(boxes, dtype=object), tile / 4), crs=frame.grid.epsg)
    return g.to_crs(4326)


def make_als_plan(recipe: Recipe, progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Frame every project, draw with the recipe's strategy, assign splits and shards."""
    import geopandas as gpd

    frames, tables = [], []
    for i, project in enumerate(recipe.projects):
        if progress:
            progress(f"frame {project.name}", i, len(recipe.projects))
        pf = build_project_frame(recipe, project)
        if not pf.tiles["eligible"].any():
            classes = "/".join(recipe.landcover_classes)
            where = project.boundary or recipe.landcover_path
            raise InputError(where, f"project {project.name!r} has no eligible tile (no {recipe.tile_size_m:g} m tile "
                                    f"with ≥ {recipe.min_class_fraction:.0%} {classes} pixels)")
        t = apply_strategy(pf.tiles, recipe)
        t["split"] = [split_of(k, recipe.seed, recipe.holdout_fraction) for k in t["tile_id"]]
        t["geometry"] = _footprints(pf, recipe.tile_size_m).values
        frames.append(pf)
        tables.append(t)
    if progress:
        progress("frame", len(recipe.projects), len(recipe.projects))
    table = pd.concat(tables, ignore_index=True)
    extra = [c for c in table.columns if c not in FRAME_COLUMNS and not c.startswith("_")]
    frame = gpd.GeoDataFrame(table[FRAME_COLUMNS + extra], geometry="geometry", crs=4326)
    plan = Plan(recipe, frames, frame)
    plan.shards = shard_specs(frame, recipe.shard_max_samples, "project")
    return plan
