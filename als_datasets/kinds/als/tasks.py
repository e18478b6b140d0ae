"""ALS shard task: the selected tiles' staged points → cleaned samples (DESIGN.md §5, §6 step 9).

A task gets everything it needs in its spec (tile records, staging folder, filter settings),
reads the tiles' staged points, drops noise classes, applies the statistical outlier filter and
yields one sample per tile; :func:`als_datasets.shards.tasks.run_shard_task` writes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from als_datasets.kinds.als.extract.ground import heights_above_ground
from als_datasets.kinds.als.extract.route import load_tile_points
from als_datasets.kinds.als.extract.terrain import (
    RASTER_MEMBERS,
    raster_shape,
    terrain_json,
    terrain_rasters,
    terrain_schema,
)
from als_datasets.kinds.als.extract.tile import clean_points, sample_arrays
from als_datasets.shards.tasks import ShardOutputs
from als_datasets.stats import height_entropy, satmae_entropy

#: which outlier rule wrote a shard (in its fingerprint: shards of an older rule are rebuilt)
OUTLIER_RULE = "pdal-statistical-exact"
ALS_ARRAYS = ("xyz.npy", "intensity.npy", "return_number.npy", "number_of_returns.npy", "classification.npy")


def als_json_schema(landcover_names: list[str], rasters: bool = False) -> dict:
    """The ``json`` member's fixed schema (every sample carries every field; the raster fields
    when the recipe asks for terrain rasters)."""
    return {**(terrain_schema() if rasters else {}),
        "project": str, "tile_id": str, "crs": str, "split": str,
        "origin": [float], "bounds_utm": [float], "tile_size_m": float,
        "lon": float, "lat": float,
        "landcover": str, "landcover_fractions": {n: float for n in landcover_names},
        "slope_class": str, "slope_mean_deg": float, "stratum": str,
        "point_count": int, "density": float,
        "height_range_m": float, "height_entropy": float, "height_reference": str, "intensity_entropy": float,
        "strategy": str, "draw_rank": int, "weight": float, "seed": int,
        "source_files": [str], "points_dropped_noise": int, "points_dropped_outliers": int,
    }


def als_features(landcover_names: list[str], raster_px: int = 0, attributes=()):
    """The samples' features; ``raster_px``: the terrain rasters' width in cells (0: none);
    ``attributes``: the recipe's ``point_attributes`` ((name, dtype) pairs)."""
    from als_datasets.dataset.features import features_for_samples
    from als_datasets.kinds.als.sources.attributes import member_name

    example = {"__key__": "x", "json": None}
    example.update({
        "xyz.npy": np.zeros((0, 3), np.float32), "intensity.npy": np.zeros(0, np.uint16),
        "return_number.npy": np.zeros(0, np.uint8), "number_of_returns.npy": np.zeros(0, np.uint8),
        "classification.npy": np.zeros(0, np.uint8),
    })
    if raster_px:
        example.update({m: np.zeros((0, raster_px), np.float32) for m in RASTER_MEMBERS})
    example.update({f"{member_name(n)}.npy": np.zeros(0, d) for n, d in attributes})
    return features_for_samples(example, json_schema=als_json_schema(landcover_names, bool(raster_px)))



@dataclass(frozen=True)
class ShardTask(ShardOutputs):
    index: int
    split: str
    records: tuple[dict, ...]  # one per sample: the tile's metadata from the plan
    staging: str
    out_dir: str
    formats: tuple[str, ...]
    drop_classes: tuple[int, ...]
    outlier_k: int
    outlier_multiplier: float
    landcover_names: tuple[str, ...]
    # the input files whose bounds touch the shard's tiles, in file-index order: (file index, file
    # name) and what their points depend on (:func:`~als_datasets.kinds.als.extract.route.source_facts`)
    sources: tuple[tuple[int, str], ...]
    inputs: tuple[dict, ...]
    threads: int = 1  # threads for the outlier filter's neighbour queries (does not change the output)
    raster_cell_m: float = 0.0  # terrain rasters' cell size (recipe ``terrain_rasters``); 0: none
    point_attributes: tuple[tuple[str, str], ...] = ()  # recipe ``point_attributes``: (name, dtype)

    def raster_px(self) -> int:
        return raster_shape(self.records[0]["tile_size_m"], self.raster_cell_m)[1] if self.raster_cell_m else 0

    def features(self):
        return als_features(list(self.landcover_names), self.raster_px(), self.point_attributes)

    def iter_samples(self) -> Iterator[dict]:
        # a selected tile with no point left (no input file covers it) is not written; finalise
        # lists it in the manifest's skipped_tiles
        return (s for s in (make_sample(self, rec) for rec in self.records) if s["json"]["point_count"] > 0)

    def fingerprint_data(self) -> dict:
        """What this shard's bytes depend on (the build's resume check compares it): its tiles, the
        recipe values it reads, and the files that touch its tiles with their stamps, CRS and units
        (in file order; not the build-wide file indexes, so a file added to or changed in another
        project reruns none of this shard)."""
        return {
            "index": self.index, "split": self.split, "records": list(self.records), "formats": list(self.formats),
            "drop_classes": list(self.drop_classes), "outlier": [self.outlier_k, self.outlier_multiplier, OUTLIER_RULE],
            "landcover_names": list(self.landcover_names), "sources": [name for _, name in self.sources],
            "inputs": list(self.inputs),
            **({"terrain_rasters": self.raster_cell_m} if self.raster_cell_m else {}),
            **({"point_attributes": [list(a) for a in self.point_attributes]} if self.point_attributes else {}),
        }


def make_sample(task: ShardTask, rec: dict) -> dict:
    """One tile's sample: staged points → drop noise classes → outlier filter → arrays + json.

    ``height_entropy`` is taken over the heights above the ground surface of the tile's ground
    returns (``height_reference: "ground"``), or above its lowest point when it has too few of them
    (``"lowest"``); see :mod:`als_datasets.kinds.als.extract.ground`.
    """
    raw, files = load_tile_points(task.staging, rec["tile_id"])
    names = dict(task.sources)
    pts, n_class, n_out = clean_points(raw, task.drop_classes, task.outlier_k, task.outlier_multiplier, task.threads)
    size = rec["tile_size_m"]
    arrays = sample_arrays(pts, size, task.point_attributes)
    xyz = arrays["xyz.npy"]  # the sample's float32 coordinates: its statistics describe what it stores
    view = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "classification": pts["classification"]}
    heights, reference = heights_above_ground(view)  # above the ground returns' surface, else the lowest point
    meta = dict(rec)
    meta.update({
        "point_count": int(len(pts)),
        "density": float(len(pts) / (size * size)),
        "height_range_m": float(np.ptp(xyz[:, 2])) if len(pts) else 0.0,
        "height_entropy": height_entropy(heights, reference=0.0),
        "height_reference": reference,
        "intensity_entropy": satmae_entropy(pts["intensity"]),
        "source_files": [names[i] for i in files],
        "points_dropped_noise": n_class,
        "points_dropped_outliers": n_out,
    })
    if task.raster_cell_m:
        rasters, ground = terrain_rasters(xyz, pts["intensity"], pts["classification"], size, task.raster_cell_m)
        arrays.update(rasters)
        meta.update(terrain_json(rec, task.raster_cell_m, ground))
    return {"__key__": rec["tile_id"], **arrays, "json": meta}


def recipe_attributes(recipe: dict) -> tuple[tuple[str, str], ...]:
    """The ``point_attributes`` of a resolved recipe dict (``recipe.yaml``): (name, dtype) pairs."""
    return tuple((str(a["name"]), str(a["dtype"])) for a in recipe.get("point_attributes") or ())


def recipe_raster_px(recipe: dict) -> int:
    """The terrain rasters' width in cells for a resolved recipe dict (0: none)."""
    from als_datasets.kinds.als.extract.terrain import terrain_cell_m

    cell = terrain_cell_m(recipe.get("terrain_rasters"))
    return raster_shape(float(recipe.get("tile_size_m") or 500.0), cell)[1] if cell else 0
