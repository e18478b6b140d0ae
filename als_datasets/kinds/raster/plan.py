"""Raster plan: recipe → scenes on their common grids → frame of every candidate patch → ordered
draw (strategy) → overlap check → splits → shard specs.  ``als-datasets plan`` stops here.

Deterministic given the recipe and its files.  The frame pass reads every scene once, strip by
strip (:mod:`.frame`), to score every candidate patch; the shard tasks then read the selected
patches again by window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from als_datasets.errors import InputError
from als_datasets.kinds.raster.frame import (
    dataset_bands,
    landcover_labels,
    scan_cells,
    scan_scene,
    scene_patch_geometry,
)
from als_datasets.kinds.raster.sampling import drop_overlaps, ordered_draw, rebalance, spectral_weights
from als_datasets.kinds.raster.scenes import Scene, patch_grid, read_patches, scene_env
from als_datasets.plan import Plan, shard_specs, split_of
from als_datasets.registry import get_kind
from als_datasets.shards.writer import estimate_tar_sample_bytes

FRAME_COLUMNS = [
    "tile_id", "scene", "col", "row", "geometry", "crs", "x0", "y0", "x1", "y1", "lon", "lat", "sensor", "date",
    "continent", "continent_rule", "biome", "biome_rule", "landcover", "nodata_fraction", "cloud_fraction",
]
TAIL_COLUMNS = ["eligible", "reason", "weight", "draw_rank", "selected", "split"]


def open_scenes(recipe, kind, specs=None) -> tuple[list[Scene], list[list[str]]]:
    """Open every scene of the recipe (or ``specs``: the kind's scene list, an archive's included);
    returns the scenes and each scene's common band names."""
    scenes, commons = [], []
    for spec in (recipe.scenes if specs is None else specs):
        s = kind.open_scene(spec)
        commons.append(kind.band_names(s, spec))
        if s.crs is None:
            raise InputError(s.bands[0].path, "raster has no CRS")
        scenes.append(s)
    return scenes, commons


def output_dtype(recipe, scenes: list[Scene]) -> str:
    if recipe.dtype:
        return str(recipe.dtype)
    return np.result_type(*[np.dtype(s.dtype) for s in scenes]).name


@dataclass(frozen=True)
class ScanTask:
    """Scan one scene: a pure task an executor maps (a local pool or Dask), like the shard tasks."""

    scene: Scene
    patch_px: int
    stride_px: int
    kind: str
    bins: int
    base: float
    norm: tuple[tuple[float, float], ...] | None = None  # dataset-wide (lo, hi) per band; None: per patch
    cells: tuple[tuple[int, int], ...] | None = None  # only these candidates (an archive's scene); None: all

    @property
    def entropy_bins(self) -> int:
        return self.bins

    @property
    def entropy_base(self) -> float:
        return self.base

    @property
    def entropy_norm(self) -> np.ndarray | None:
        return None if self.norm is None else np.asarray(self.norm, dtype=np.float64)


def norm_sensor(scene: Scene) -> str:
    """The key scenes share dataset-wide band statistics under: the sensor (product), else the scene."""
    return str(scene.sensor) if scene.sensor else f"scene {scene.name}"


def sample_cells(scene: Scene, patch_px: int, stride_px: int, seed: int, n: int,
                 by_block: bool = False) -> list[tuple[int, int]]:
    """A seeded sample of up to ``n`` of the scene's patch cells (the first pass of the statistics;
    an archive's candidate patches).  ``by_block``: whole internal tiles of the band files are
    drawn (in a seeded order) and every cell lying in one taken, so that the tiles a remote read
    fetches are used in full instead of one 96 px window per 1024 px tile."""
    import zlib

    cells = patch_grid(scene, patch_px, stride_px)
    if len(cells) <= n:
        return cells
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(scene.name.encode())])
    block = int(scene.block_px or 0)
    if not by_block or block < 2 * patch_px:
        return [cells[i] for i in sorted(rng.choice(len(cells), n, replace=False).tolist())]
    groups: dict[tuple[int, int], list] = {}
    for c, r in cells:
        x0, y0 = c * stride_px, r * stride_px
        inside = x0 // block == (x0 + patch_px - 1) // block and y0 // block == (y0 + patch_px - 1) // block
        groups.setdefault((x0 // block, y0 // block) if inside else (-1, -1), []).append((c, r))
    keys = sorted(k for k in groups if k != (-1, -1))
    chosen: list[tuple[int, int]] = []
    for i in rng.permutation(len(keys)).tolist():
        chosen += groups[keys[i]][: n - len(chosen)]
        if len(chosen) >= n:
            break
    return sorted(chosen, key=lambda cr: (cr[1], cr[0]))


def scene_moments(scene: Scene, patch_px: int, stride_px: int, seed: int, n: int,
                  by_block: bool = False) -> tuple[np.ndarray, int]:
    """(C, 3) valid-pixel moments of a seeded sample of the scene's patches, and the patch count."""
    from als_datasets.kinds.raster.entropy import band_moments

    cells = sample_cells(scene, patch_px, stride_px, seed, n, by_block)
    if not cells:
        return np.zeros((len(scene.bands), 3)), 0
    with scene_env(scene):
        pix, valid = read_patches(scene, cells, patch_px, stride_px)
    return band_moments(pix, valid), len(cells)


def dataset_band_stats(recipe, scenes: list[Scene], commons: list[list[str]], limits: dict | None = None) -> dict:
    """Per-sensor, per-band mean and std over a seeded sample of every scene's patches (issue 14):
    the dataset-wide SatMAE normalisation the spectral entropy is measured on.  ``limits``: scene
    name → its number of candidate patches (an archive's scene), so the sample stays inside them."""
    from als_datasets.kinds.raster.entropy import pool_moments

    parts = []
    limits = limits or {}
    for s, common in zip(scenes, commons):
        n = min(recipe.entropy_sample_patches, int(limits.get(s.name) or recipe.entropy_sample_patches))
        m, k = scene_moments(s, recipe.patch_px, recipe.stride_px, recipe.seed, n, by_block=bool(limits.get(s.name)))
        parts += [(norm_sensor(s), b, m[j], k) for j, b in enumerate(common)]
    return pool_moments(parts)


def scene_norms(recipe, scenes: list[Scene], commons: list[list[str]], stats: dict | None) -> dict:
    """Scene name → ((lo, hi) per band) for the entropy, or None per scene under ``normalise: patch``."""
    from als_datasets.kinds.raster.entropy import norm_ranges

    if stats is None:
        return {s.name: None for s in scenes}
    return {s.name: tuple(map(tuple, norm_ranges(stats, norm_sensor(s), c).tolist())) for s, c in zip(scenes, commons)}


def run_scan_task(t: ScanTask) -> pd.DataFrame:
    """Every candidate patch of one scene: quality, statistics, geometry (labels come later)."""
    scene = t.scene
    kind = get_kind(t.kind)
    stats = lambda pix, val: kind.patch_stats(pix, val, t)  # noqa: E731
    clouds = lambda pix, val: kind.pixel_cloud(scene, pix, val)  # noqa: E731
    with scene_env(scene):
        if t.cells is not None:
            df = scan_cells(scene, list(t.cells), t.patch_px, t.stride_px, stats, kind.frame_stats, clouds)
        else:
            df = scan_scene(scene, t.patch_px, t.stride_px, stats=stats, stat_columns=kind.frame_stats,
                            cloud_fn=clouds)
    cells = list(zip(df["col"].tolist(), df["row"].tolist()))
    b, ll, foot = scene_patch_geometry(scene, cells, t.patch_px, t.stride_px)
    df.insert(0, "tile_id", [f"{scene.name}_c{c}_r{r}" for c, r in cells])
    df.insert(1, "scene", scene.name)
    df["geometry"] = foot
    df["crs"] = scene.crs.to_string()
    df["x0"], df["y0"], df["x1"], df["y1"] = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    df["lon"], df["lat"] = ll[:, 0], ll[:, 1]
    df["sensor"] = scene.sensor
    df["date"] = scene.date
    return df


def _labels(recipe, table: pd.DataFrame) -> None:
    from als_datasets.kinds.raster.labels import BiomeLookup, ContinentLookup

    lon, lat = table["lon"].to_numpy(), table["lat"].to_numpy()
    c = recipe.continents
    cont = ContinentLookup(c.get("path"), field=c.get("field", "CONTINENT"), nearest_max_km=c.get("nearest_max_km", 500))
    names, rules = cont.lookup(lon, lat)
    table["continent"] = list(names)
    table["continent_rule"] = [f"{r}: {cont.rule_text}" for r in rules]
    if recipe.biomes:
        bl = BiomeLookup(recipe.biomes["raster"], recipe.biomes["table"], nearest_px=recipe.biomes["nearest_px"])
        names, rules = bl.lookup(lon, lat)
        table["biome"] = list(names)
        table["biome_rule"] = [f"{r}: {bl.rule_text}" for r in rules]
    else:
        table["biome"] = None
        table["biome_rule"] = "none: no biome layer in the recipe"
    table["landcover"] = landcover_labels(recipe.landcover, lon, lat, table["geometry"]) if recipe.landcover else None


def eligibility(recipe, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, reason) from the quality thresholds."""
    nod = table["nodata_fraction"].to_numpy(dtype=float)
    cloud = table["cloud_fraction"].to_numpy(dtype=float)
    reason = np.full(len(table), "", dtype=object)
    too_cloudy = np.nan_to_num(cloud, nan=0.0) > recipe.max_cloud_fraction + 1e-12
    too_empty = nod > recipe.max_nodata_fraction + 1e-12
    reason[too_cloudy] = "cloud"
    reason[too_empty] = "nodata"
    return ~(too_cloudy | too_empty), reason


def draw_weights(table: pd.DataFrame, recipe, order: np.ndarray) -> np.ndarray:
    """The frame's ``weight`` column: each drawn patch's relative chance under the strategy —
    exp(β·z) for ``spectral``, 1 / (drawable patches of its continent) for ``global`` (balanced),
    uniform otherwise; 0 for patches the strategy cannot draw."""
    w = np.zeros(len(table))
    if recipe.strategy == "spectral":
        return spectral_weights(table["spectral_entropy"].to_numpy(), table["eligible"].to_numpy(),
                                recipe.spectral_beta)
    if recipe.strategy == "global":
        cont = table["continent"].to_numpy(dtype=object)[order]
        counts = pd.Series(cont).value_counts()
        w[order] = 1.0 / counts.loc[cont].to_numpy(dtype=float)
        return w
    w[order] = 1.0
    return w


def estimated_sample_bytes(frame: pd.DataFrame, scenes: list[Scene], patch_px: int, dtype: str) -> np.ndarray:
    """Each patch's sample in a WebDataset tar: C × P × P × itemsize of ``pixels.npy`` (C = its
    scene's bands) and the json, with their headers."""
    bands = {s.name: len(s.bands) for s in scenes}
    c = frame["scene"].map(bands).to_numpy(dtype=np.int64)
    return estimate_tar_sample_bytes(c * patch_px * patch_px * np.dtype(dtype).itemsize, 1)


def make_raster_plan(recipe, kind, progress: Callable[[str, int, int], None] | None = None, executor=None):
    """Frame every scene, draw with the recipe's strategy, drop overlaps, assign splits and shards.

    ``kind``: the recipe's :class:`~als_datasets.kinds.raster.kind.RasterKind`.  ``executor``
    (optional) scans the scenes in parallel; the frame is the same either way."""
    import geopandas as gpd

    kind.check_strategy(recipe)
    specs = kind.scene_specs(recipe)
    scenes, commons = open_scenes(recipe, kind, specs)
    cand = {spec["name"]: spec.get("candidate_patches") for spec in specs}
    stats = None
    if kind.entropy_pass and recipe.entropy_normalise == "dataset":
        stats = dataset_band_stats(recipe, scenes, commons, cand)
    norms = scene_norms(recipe, scenes, commons, stats)
    tasks = [ScanTask(s, recipe.patch_px, recipe.stride_px, recipe.kind, recipe.entropy_bins, recipe.entropy_base,
                      norms[s.name], None if not cand.get(s.name) else
                      tuple(sample_cells(s, recipe.patch_px, recipe.stride_px, recipe.seed, int(cand[s.name]),
                                         by_block=True)))
             for s in scenes]
    if executor is not None and executor.workers > 1 and len(tasks) > 1:
        results = executor.map(run_scan_task, tasks)
    else:
        results = ((t, run_scan_task(t)) for t in tasks)
    found: dict[str, pd.DataFrame] = {}
    for i, (t, df) in enumerate(results):
        found[t.scene.name] = df
        if progress:
            progress(f"frame {t.scene.name}", i, len(scenes))
    if progress:
        progress("frame", len(scenes), len(scenes))
    tables = [found[s.name] for s in scenes]  # recipe order, whatever order the scans finished in
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not len(table):
        raise InputError(recipe.path, f"no scene is at least {recipe.patch_px} px wide and high: no patch to cut")
    _labels(recipe, table)
    elig, reason = eligibility(recipe, table)
    table["eligible"] = elig
    table["reason"] = reason
    if not elig.any():
        raise InputError(recipe.path, f"no eligible patch: every patch has more than {recipe.max_nodata_fraction:.0%} "
                                      f"nodata or {recipe.max_cloud_fraction:.0%} cloud")

    order = ordered_draw(table, recipe.strategy, recipe.seed, recipe.spectral_beta, where=recipe.path)
    weight = draw_weights(table, recipe, order)  # of the draw, before the overlap check
    if recipe.max_overlap < 1.0:
        order, rejected = drop_overlaps(order, table["geometry"].to_numpy(), recipe.max_overlap)
        if recipe.strategy == "global":  # a continent that lost patches must not lose its turns
            order = rebalance(order, table["continent"].to_numpy(dtype=object))
        table.loc[rejected, "eligible"] = False
        table.loc[rejected, "reason"] = "overlap"
        weight[rejected] = 0.0
    rank = np.full(len(table), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    weight = weight / weight.sum() if weight.sum() > 0 else weight
    table["weight"] = weight
    table["draw_rank"] = pd.array(np.where(rank >= 0, rank, 0), dtype="Int64")
    table.loc[rank < 0, "draw_rank"] = pd.NA
    table["selected"] = (rank >= 0) & (rank < recipe.samples)
    table["split"] = [split_of(k, recipe.seed, recipe.holdout_fraction) for k in table["tile_id"]]
    frame = gpd.GeoDataFrame(table[FRAME_COLUMNS + list(kind.frame_stats) + TAIL_COLUMNS], geometry="geometry", crs=4326)
    by_name = dict(zip([s.name for s in scenes], commons))
    used = sorted(set(frame.loc[frame["selected"], "scene"]))
    plan = Plan(recipe, scenes, frame, meta={
        "kind": recipe.kind, "dtype": output_dtype(recipe, scenes),
        "bands": dataset_bands([by_name[s] for s in used] or commons),
        "common_bands": by_name, "patch_size_px": recipe.patch_px,
        "entropy_stats": stats, "entropy_norms": norms,
    })
    plan.shards = shard_specs(frame, recipe.shard_max_samples, kind.group_column, recipe.shard_max_bytes,
                              estimated_sample_bytes(frame, scenes, recipe.patch_px, plan.meta["dtype"]))
    return plan
