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
from als_datasets.shards.writer import estimate_tar_sample_bytes

#: bytes per point in a sample: xyz float32 × 3, intensity uint16, return number, number of returns
#: and classification uint8
BYTES_PER_POINT = 3 * 4 + 2 + 3 * 1
#: the sample's ``.npy`` members (xyz, intensity, return_number, number_of_returns, classification)
ARRAYS_PER_SAMPLE = 5

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


def estimated_points(frame: ProjectFrame, tiles: pd.DataFrame, tile: float) -> np.ndarray:
    """Points each tile of ``tiles`` will hold, from the point clouds' headers alone: per file,
    its density (header point count / area of its header box in the project's UTM) × the area of
    the tile inside that box, summed over the files (overlapping flight lines add up)."""
    import shapely

    from als_datasets.kinds.als.sources.pointcloud import footprint_in

    x0, y0 = tiles["x0"].to_numpy(dtype=float), tiles["y0"].to_numpy(dtype=float)
    boxes = shapely.box(x0, y0, x0 + tile, y0 + tile)
    pts = np.zeros(len(tiles))
    for info in frame.pointclouds:
        foot = footprint_in(info, frame.grid.crs)
        if foot.area < 1.0:  # every point on a line or one spot: spread over a metre around it
            foot = foot.buffer(0.5)
        minx, miny, maxx, maxy = foot.bounds
        hit = np.flatnonzero((x0 < maxx) & (x0 + tile > minx) & (y0 < maxy) & (y0 + tile > miny))
        if len(hit):
            pts[hit] += info.point_count * shapely.area(shapely.intersection(boxes[hit], foot)) / foot.area
    return np.ceil(pts)


def estimated_sample_bytes(frame: ProjectFrame, tiles: pd.DataFrame, tile: float, attrs=()) -> np.ndarray:
    """Each tile's sample in a WebDataset tar, estimated before any point is read (from
    :func:`estimated_points`: the noise and outlier filters only make it smaller); ``attrs``: the
    recipe's ``point_attributes``."""
    from als_datasets.kinds.als.sources.attributes import attribute_bytes

    return estimate_tar_sample_bytes(estimated_points(frame, tiles, tile) * (BYTES_PER_POINT + attribute_bytes(attrs)),
                                     ARRAYS_PER_SAMPLE + len(attrs))


def make_als_plan(recipe: Recipe, progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Frame every project, draw with the recipe's strategy, assign splits and shards."""
    import geopandas as gpd

    frames, tables, sizes = [], [], []
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
        est = np.zeros(len(t))  # bytes of the selected tiles' samples (the shard cut's byte bound)
        sel = t["selected"].to_numpy(dtype=bool)
        est[sel] = estimated_sample_bytes(pf, t[sel], recipe.tile_size_m, recipe.point_attributes)
        frames.append(pf)
        tables.append(t)
        sizes.append(est)
    if progress:
        progress("frame", len(recipe.projects), len(recipe.projects))
    table = pd.concat(tables, ignore_index=True)
    extra = [c for c in table.columns if c not in FRAME_COLUMNS and not c.startswith("_")]
    frame = gpd.GeoDataFrame(table[FRAME_COLUMNS + extra], geometry="geometry", crs=4326)
    plan = Plan(recipe, frames, frame)
    plan.shards = shard_specs(frame, recipe.shard_max_samples, "project", recipe.shard_max_bytes,
                              np.concatenate(sizes))
    return plan
