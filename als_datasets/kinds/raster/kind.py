"""The raster kinds' shared :class:`~als_datasets.registry.Kind`: patches cut from georeferenced
rasters (scenes) on their own grids, labelled by continent / biome / land cover, drawn by the
*Pretrain Where?* strategies.  ``kinds.satellite`` and ``kinds.dem`` subclass it with what
differs: the per-patch statistics, the pixels a sample stores, the band names, the card's words.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from als_datasets.errors import InputError
from als_datasets.registry import Kind

#: every raster sample's json (the kind adds its statistics)
COMMON_JSON = {
    "scene": str, "sensor": str, "date": str, "tile_id": str, "split": str, "crs": str, "bounds": [float],
    "col": int, "row": int, "patch_size_px": int, "resolution": float, "lon": float, "lat": float,
    "bands": [str], "common_bands": [str], "continent": str, "continent_rule": str, "biome": str,
    "biome_rule": str, "landcover": str, "cloud_fraction": float, "nodata_fraction": float,
    "strategy": str, "draw_rank": int, "weight": float, "seed": int,
}
INDEX_HEAD = ["key", "split", "shard", "scene", "tile_id", "crs", "sensor", "date", "continent", "biome", "landcover"]
INDEX_TAIL = ["draw_rank", "weight", "lon", "lat"]


def json_float(x) -> float | None:
    """JSON-safe float (the tar's json refuses NaN): NaN → None."""
    x = float(x)
    return None if math.isnan(x) else x


class RasterKind(Kind):
    """Satellite and DEM patches share recipe, scenes, frame, draw, shard task and card."""

    group_column = "scene"
    field_docs = {
        "__key__": "Sample key ([A-Za-z0-9_-], never a dot): <scene>_c<col>_r<row>.",
        "pixels.npy": "Image patch (C, H, W) in the dataset's declared dtype.",
        "crs": "CRS of the sample's scene (the CRS of json.bounds).",
    }
    json_fields = ("tile_id", "scene", "sensor", "split", "crs", "lon", "lat", "landcover", "continent", "biome",
                   "spectral_entropy", "cloud_fraction", "nodata_fraction", "draw_rank", "weight")
    label_columns = ("continent", "biome", "landcover")
    compare_columns = ("continent_entropy", "continent_normalised", "continent_K", "biome_entropy",
                       "biome_normalised", "nodata_fraction_mean")
    #: strategy when the recipe names none; pixel dtype when the recipe names none (None: the scenes')
    default_strategy = "random"
    default_dtype: str | None = None
    #: strategies this kind refuses, with the reason
    refused_strategies: dict[str, str] = {}
    #: json fields every sample carries about its scene (:meth:`scene_meta`), name → type
    scene_fields: dict[str, object] = {}
    #: whether the plan runs the seeded first pass of dataset-wide per-sensor band statistics
    entropy_pass = False
    #: per-patch statistics the frame pass computes (frame columns, in order)
    frame_stats: tuple[str, ...] = ()
    #: per-sample statistics in the json (index columns, in order, after the common ones)
    sample_stats: dict[str, object] = {}
    index_stats: tuple[str, ...] = ()
    # card words
    what = "raster patches"
    tags: tuple[str, ...] = ()
    model_text = "a masked autoencoder"
    #: works the card cites (keys of ``raster.card.BIBTEX``)
    citation_keys: tuple[str, ...] = ("pretrain-where",)

    # ---- per kind (override)
    def band_names(self, scene, spec: dict) -> list[str]:
        """The scene's common band names (one per band, the dataset's band order)."""
        raise NotImplementedError

    def patch_stats(self, pix: np.ndarray, valid: np.ndarray, recipe_like) -> dict[str, np.ndarray]:
        """Frame statistics of a strip of patches: ``pix`` (N, C, P, P), ``valid`` (N, P, P) →
        {column: (N,) array} for :attr:`frame_stats`.  ``recipe_like`` has ``entropy_bins``,
        ``entropy_base`` and ``entropy_norm`` (None, or the scene's dataset-wide (lo, hi) per band)."""
        raise NotImplementedError

    def sample_pixels(self, pix: np.ndarray, valid: np.ndarray, task, norm=None) -> tuple[np.ndarray, dict]:
        """One patch read for a sample: ``pix`` (1, C, P, P), ``valid`` (1, P, P) → (the stored
        array in ``task.dtype``, the json statistics); ``norm`` as in :meth:`patch_stats`."""
        raise NotImplementedError

    def pixels_text(self, dtype: str) -> str:
        return f"{dtype} (C, H, W)"

    #: how the card says cloud pixels were found
    cloud_text = "mask band classes, Sentinel-2 SCL 3/8/9/10 by default"

    def card_scenes(self, out) -> str:
        """A markdown section about the build's scenes (after the sources), or ""."""
        return ""

    def scene_specs(self, recipe) -> list[dict]:
        """The recipe's scene entries (a kind may add an archive's scenes)."""
        return list(recipe.scenes)

    def open_scene(self, spec: dict):
        """Open one recipe scene entry (:func:`~als_datasets.kinds.raster.scenes.open_scene`); a kind
        may read more about the scene first (product metadata)."""
        from als_datasets.kinds.raster.scenes import open_scene

        return open_scene({k: v for k, v in spec.items() if k != "common_bands"}, base_dir="/")

    def scene_meta(self, scene) -> dict:
        """The :attr:`scene_fields` of a sample of ``scene``."""
        return {}

    def pixel_cloud(self, scene, pix: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        """(N, P, P) cloud pixels of a scene without a mask band from its pixels, or None."""
        return None

    def scene_notes(self, scene) -> list[str]:
        """Warnings about a scene for the plan's output (e.g. its metadata says it is all cloud)."""
        return []

    def entropy_note(self, recipe: dict, div: dict) -> str:
        return ""

    # ---- Kind
    def json_schema(self) -> dict:
        return {**COMMON_JSON, **self.scene_fields, **self.sample_stats}

    def load_recipe(self, data, src, overrides, out_dir):
        from als_datasets.kinds.raster.recipe import load_raster_recipe

        return load_raster_recipe(data, src, overrides, out_dir, default_strategy=self.default_strategy,
                                  default_dtype=self.default_dtype, entropy_pass=self.entropy_pass)

    def check_strategy(self, recipe) -> None:
        from als_datasets.kinds.raster.sampling import check_strategy

        check_strategy(recipe.strategy, self.name, recipe.path)
        why = self.refused_strategies.get(recipe.strategy)
        if why:
            raise InputError(recipe.path, f"strategy {recipe.strategy!r} {why}")

    def frame_units(self, recipe) -> int:
        return max(len(recipe.scenes), 1)

    def make_plan(self, recipe, progress=None, executor=None):
        from als_datasets.kinds.raster.plan import make_raster_plan

        return make_raster_plan(recipe, self, progress, executor)

    def shortfall(self, plan) -> list[str]:
        r, f = plan.recipe, plan.frame
        got = int(f["selected"].sum())
        if got >= r.samples:
            return []
        reason = f["reason"].astype(str)
        drawable = int(f["draw_rank"].notna().sum())
        quality, overlap = int(reason.isin(["nodata", "cloud"]).sum()), int((reason == "overlap").sum())
        other = int((f["eligible"].astype(bool) & f["draw_rank"].isna()).sum())
        why = [f"{quality} fail the nodata / cloud thresholds ({r.max_nodata_fraction:.0%} / {r.max_cloud_fraction:.0%})",
               f"{overlap} overlap a patch kept earlier by more than {r.max_overlap:.0%}"]
        if other:
            why.append(f"{other} are outside what strategy {r.strategy!r} draws from")
        return [f"{got} of {r.samples} samples requested: only {drawable} of the {len(f)} candidate patches could be "
                f"drawn; " + ", ".join(why)]

    def plan_summary(self, plan, out_dir: Path) -> list[str]:
        r, f, sel = plan.recipe, plan.frame, plan.selected
        reasons = f.loc[~f["eligible"], "reason"].value_counts().to_dict()
        lines = [f"{out_dir}/frame.parquet: {len(f)} candidate patches, {int(f['eligible'].sum())} eligible"
                 + (f" (dropped: {', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else "")
                 + f", {len(sel)} selected ({r.strategy}, seed {r.seed}) in {len(plan.frames)} scene(s)"]
        lines += [f"  {cont}: {n}" for cont, n in sel["continent"].fillna("none").value_counts().items()]
        lines += [f"  warning: scene {s.name}: {note}" for s in plan.frames for note in self.scene_notes(s)]
        return lines

    def shard_tasks(self, plan, out, staging, workers=1):
        from als_datasets.kinds.raster.build import raster_shard_tasks

        return raster_shard_tasks(plan, out)

    def index_columns(self, recipe) -> list[str]:
        return INDEX_HEAD + list(self.index_stats) + ["nodata_fraction"] + INDEX_TAIL

    def info_fields(self, plan, out, entries) -> dict:
        r = plan.recipe
        return {"kind": r.kind, "bands": plan.meta["bands"], "band_layouts": band_layouts(plan),
                "patch_size_px": r.patch_px, "dtype": plan.meta["dtype"]}

    def manifest_fields(self, plan) -> dict:
        r = plan.recipe
        return {"samples": r.samples, "bands": plan.meta["bands"], "band_layouts": band_layouts(plan),
                "pixel_dtype": plan.meta["dtype"], "patch_size_px": r.patch_px}

    def features(self, manifest: dict, recipe: dict):
        from als_datasets.kinds.raster.tasks import raster_features

        return raster_features(self.json_schema(), manifest.get("pixel_dtype", "uint16"),
                               int(manifest.get("patch_size_px", 96)))

    def render_card(self, out, div, plots, repo_id=None):
        from als_datasets.kinds.raster.card import render_raster_card

        return render_raster_card(self, out, div, plots, repo_id)

    def croissant_facts(self, manifest, recipe, idx, columns) -> dict:
        from als_datasets.dataset.croissant import quantity

        res = None
        for k in ("gsd_m", "resolution_m", "res_m", "spatial_resolution_m"):
            if recipe.get(k) is not None:
                extra = {k2: recipe[k2] for k2 in ("patch_size_m", "tile_size_m") if recipe.get(k2) is not None}
                res = quantity(recipe[k], "m", "Ground sampling distance.", extra)
                break
        b = recipe.get("bands")
        if isinstance(b, dict):
            bands = [str(k) for k in b]
        elif isinstance(b, (list, tuple)):
            bands = [str(x["name"]) if isinstance(x, dict) and "name" in x else str(x) for x in b]
        else:
            bands = []
        return {"what": f"{self.name} patches", "keywords": {"remote-sensing"}, "resolution": res, "bands": bands,
                "strategy_note": ""}


def band_layouts(plan) -> list[dict]:
    """The channel contract of a raster set: a sample's ``pixels.npy`` holds its scene's bands, in
    the order of its ``json.common_bands``, so C is fixed per sensor (layout), not per dataset.
    One entry per layout of the selected samples: ``{"sensor", "channels", "bands"}`` (common band
    names in channel order), sorted by sensor; ``bands`` of the dataset is their ordered union."""
    f = plan.frame
    sel = f[f["selected"].astype(bool)]
    by_scene = plan.meta.get("common_bands") or {}
    found = {(str(sensor), tuple(by_scene.get(scene, ()))) for scene, sensor in zip(sel["scene"], sel["sensor"])}
    return [{"sensor": sensor, "channels": len(bands), "bands": list(bands)} for sensor, bands in sorted(found)]
