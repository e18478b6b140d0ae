"""Plan: recipe → frame (every candidate tile) → strategy draw → splits → shard tasks.

Pure and deterministic given the recipe and its input files; reads rasters and point-cloud
headers, but no points (unless the recipe has no DEM: then slope comes from the ground
returns).  ``als-datasets plan`` stops here and writes ``frame.parquet``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import InputError
from .frame.build import ProjectFrame, build_project_frame
from .recipe import Recipe
from .strategies import apply_strategy

FRAME_COLUMNS = [
    "tile_id", "project", "col", "row", "geometry", "crs", "x0", "y0", "landcover", "slope_class",
    "class_fraction", "slope_mean_deg", "eligible", "weight", "draw_rank", "selected", "split",
]


@dataclass
class ShardSpec:
    index: int
    split: str
    keys: list[str]


@dataclass
class Plan:
    recipe: Recipe
    frames: list[ProjectFrame]
    frame: object  # GeoDataFrame, every candidate tile of every project
    shards: list[ShardSpec] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # kind-specific facts (raster: bands, dtype)

    @property
    def selected(self) -> pd.DataFrame:
        return self.frame[self.frame["selected"]]


def split_of(tile_id: str, seed: int, holdout_fraction: float) -> str:
    """Seeded hash of the tile id → ``validation`` with the given probability, else ``train``.

    Stable across builds: it depends on nothing but the id, the seed and the fraction.
    """
    if holdout_fraction <= 0:
        return "train"
    h = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    return "validation" if u < holdout_fraction else "train"


def _footprints(frame: ProjectFrame, tile: float):
    """EPSG:4326 footprints of the project's tiles (edges densified so curvature is kept)."""
    import geopandas as gpd
    from shapely import box, segmentize

    t = frame.tiles
    boxes = [box(x, y, x + tile, y + tile) for x, y in zip(t["x0"], t["y0"])]
    g = gpd.GeoSeries(segmentize(np.array(boxes, dtype=object), tile / 4), crs=frame.grid.epsg)
    return g.to_crs(4326)


def make_plan(recipe: Recipe, progress: Callable[[str, int, int], None] | None = None, executor=None) -> Plan:
    """Frame every project, draw with the recipe's strategy, assign splits and shards.

    ``executor``: raster recipes scan their scenes through it (in parallel)."""
    import geopandas as gpd

    if recipe.kind != "als":
        from .raster.plan import make_raster_plan

        return make_raster_plan(recipe, progress, executor)

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
    plan.shards = shard_specs(frame, recipe.shard_max_samples)
    return plan


def shard_specs(frame, shard_max_samples: int) -> list[ShardSpec]:
    """Selected tiles per split, ordered by (project or scene, draw rank), cut into shards."""
    sel = frame[frame["selected"]]
    group = "project" if "project" in frame.columns else "scene"
    order = {p: i for i, p in enumerate(dict.fromkeys(frame[group]))}
    specs: list[ShardSpec] = []
    for split in sorted(set(sel["split"]), key=lambda s: (s != "train", s)):
        s = sel[sel["split"] == split]
        s = s.assign(_p=s[group].map(order)).sort_values(["_p", "draw_rank"], kind="stable")
        keys = list(s["tile_id"])
        for i, j in enumerate(range(0, len(keys), shard_max_samples)):
            specs.append(ShardSpec(i, split, keys[j:j + shard_max_samples]))
    return specs


def write_frame(plan: Plan, path) -> None:
    """``frame.parquet``: GeoParquet, every candidate tile (deterministic bytes)."""
    from .shards.writer import atomic_write

    df = plan.frame.copy()
    df["draw_rank"] = df["draw_rank"].astype("Int64")
    atomic_write(path, lambda f: df.to_parquet(f, index=False, compression="zstd"))
