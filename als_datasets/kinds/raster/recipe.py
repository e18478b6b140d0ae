"""Raster recipes (``kind: satellite`` or ``kind: dem``): YAML → a validated :class:`RasterRecipe`.

Same conventions as every recipe (:mod:`als_datasets.recipe`): paths relative to the recipe
file, command-line flags override keys, unknown keys refused, the resolved recipe written next to
the outputs.  Keys (defaults in :data:`RASTER_DEFAULTS`)::

    kind: satellite                # satellite | dem
    name: my-set
    strategy: global               # global | continent:<name> | spectral | random
    seed: 41
    samples: 1000                  # total samples: the first N of the ordered draw
    patch_size_px: 96              # SatMAE and "Pretrain Where?" use 96 px
    stride_px: null                # default: patch_size_px (no overlap inside a scene)
    max_nodata_fraction: 0.0       # a patch with more nodata (declared or zero fill) is dropped
    max_cloud_fraction: 0.1        # with a cloud mask (Sentinel-2 SCL 3/8/9/10 by default)
    max_overlap: 0.0               # share of a patch's area that may overlap an earlier sample
    spectral_entropy: {bins: 256, base: e, normalise: dataset, sample_patches: 64}
                                   # normalise: dataset (per-sensor, per-band mean ± 2σ from a seeded
                                   # first pass over sample_patches patches per scene) | patch (own mean ± 2σ)
    spectral_beta: 2.0             # "spectral": weight ∝ exp(beta · z-scored entropy)
    continents: {path: null, field: CONTINENT, nearest_max_km: 500}   # default: shipped Natural Earth 110m
    biomes: {raster: ..., table: ...}                                 # optional (RESOLVE 2017)
    landcover: {path: ..., classes: {name: [codes]}}                  # optional
    dtype: null                    # pixels dtype (default: the scenes' common dtype; dem: float32)
    scenes: [{path, name, bands, common_bands, sensor, date, cloud_mask, nodata, zero_is_nodata, resolution}]
    stac: {api, collections, datetime, max_cloud_cover, bbox | continents | biomes, scenes_per_*, ...}
                                   # satellite: scenes found in a STAC archive (kinds/satellite/stac_source.py)
    output: {dir: null, formats: [webdataset, parquet], shard_max_samples: 64, shard_max_bytes: 1GB}
                                   # a shard ends before the sample that would pass either bound (bytes:
                                   # the plan's estimate of the tar, C × P × P × itemsize + json per patch)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from als_datasets.errors import InputError
from als_datasets.recipe import (
    DEFAULT_SHARD_MAX_BYTES,
    KEY_RE,
    check_name,
    holdout_fraction,
    merge_recipe,
    number,
    output_section,
    recipe_base,
    resolve_output,
    resolve_path,
    seed,
    shard_bounds,
)

RASTER_DEFAULTS: dict[str, Any] = {
    "kind": "satellite",
    "name": None,
    "strategy": None,
    "seed": 41,
    "samples": 1000,
    "patch_size_px": 96,
    "stride_px": None,
    "max_nodata_fraction": 0.0,
    "max_cloud_fraction": 0.1,
    "max_overlap": 0.0,
    "spectral_entropy": {"bins": 256, "base": "e"},
    "spectral_beta": 2.0,
    "continents": None,
    "biomes": None,
    "landcover": None,
    "dtype": None,
    "scenes": [],
    "holdout_fraction": 0.0,
    "output": {"dir": None, "formats": ["webdataset", "parquet"], "shard_max_samples": 64,
               "shard_max_bytes": DEFAULT_SHARD_MAX_BYTES},
}
RASTER_KEYS = set(RASTER_DEFAULTS) | {"description", "license", "sources", "demo", "stac"}
SCENE_KEYS = {"path", "name", "bands", "common_bands", "sensor", "date", "cloud_mask", "nodata", "zero_is_nodata",
              "resolution"}


@dataclass(frozen=True)
class RasterRecipe:
    """A resolved satellite / DEM recipe. ``raw`` is what ``recipe.yaml`` records."""

    path: Path | None
    kind: str
    name: str
    strategy: str
    seed: int
    samples: int
    patch_px: int
    stride_px: int
    max_nodata_fraction: float
    max_cloud_fraction: float
    max_overlap: float
    entropy_bins: int
    entropy_base: float
    spectral_beta: float
    scenes: tuple[dict, ...]  # scene specs with absolute paths (for raster.scenes.open_scene)
    continents: dict
    biomes: dict | None
    landcover: dict | None
    dtype: str | None
    holdout_fraction: float
    out_dir: Path
    formats: tuple[str, ...]
    shard_max_samples: int
    raw: dict = field(repr=False, compare=False, default_factory=dict)
    stac: dict | None = None  # an archive to search for scenes (the satellite kind's STAC source)
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES
    entropy_normalise: str = "dataset"  # dataset | patch
    entropy_sample_patches: int = 64

    @property
    def samples_per_project(self) -> int:  # the CLI's -n flag and the ALS-shaped reports
        return self.samples


def _resolve(base: Path, value) -> str | None:
    p = resolve_path(base, value)
    return None if p is None else str(p)


def _base(value) -> float:
    if value in ("e", None):
        return math.e
    try:
        b = float(value)
    except (TypeError, ValueError):
        b = -1.0
    if b <= 1.0:
        raise ValueError(value)
    return b


def load_raster_recipe(data: dict, src: Path | None, overrides: dict | None = None,
                       out_dir: str | Path | None = None, default_strategy: str = "random",
                       default_dtype: str | None = None, entropy_pass: bool = False) -> RasterRecipe:
    """Validate a raster recipe dict (already demo-merged) read from ``src``; the kind passes its
    default strategy and pixel dtype."""
    where = src if src is not None else "<recipe>"
    merged = merge_recipe(where, data, RASTER_DEFAULTS, RASTER_KEYS, overrides, aliases={"samples_per_project": "samples"})
    kind = str(merged["kind"])
    base = recipe_base(src)
    name = check_name(where, merged.get("name") or (src.stem if src is not None else f"{kind}-dataset"))
    strategy = str(merged.get("strategy") or default_strategy)
    merged["strategy"] = strategy

    patch = number(where, merged, "patch_size_px", int, lo=1)
    stride = patch if merged.get("stride_px") is None else number(where, merged, "stride_px", int, lo=1)
    ent = merged.get("spectral_entropy") or {}
    if not isinstance(ent, dict):
        raise InputError(where, "spectral_entropy must be a mapping {bins, base}")
    bins = number(where, {"spectral_entropy.bins": ent.get("bins", 256)}, "spectral_entropy.bins", int, lo=2)
    try:
        log_base = _base(ent.get("base", "e"))
    except ValueError:
        raise InputError(where, f"spectral_entropy.base must be 'e' or a number > 1, got {ent.get('base')!r}") from None
    unknown = set(ent) - {"bins", "base", "normalise", "sample_patches"}
    if unknown:
        raise InputError(where, f"spectral_entropy: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                                "(bins, base, normalise, sample_patches)")
    norm_mode = str(ent.get("normalise", "dataset"))
    if norm_mode not in ("dataset", "patch"):
        raise InputError(where, f"spectral_entropy.normalise must be 'dataset' or 'patch', got {norm_mode!r}")
    sample_patches = number(where, {"spectral_entropy.sample_patches": ent.get("sample_patches", 64)},
                            "spectral_entropy.sample_patches", int, lo=1)
    if entropy_pass:  # the kind measures spectral entropy: record how it is normalised
        merged["spectral_entropy"] = {**ent, "normalise": norm_mode, "sample_patches": sample_patches}

    scenes, seen = [], set()
    for i, s in enumerate(merged.get("scenes") or []):
        if isinstance(s, str):
            s = {"path": s}
        if not isinstance(s, dict) or not s.get("path"):
            raise InputError(where, f"scenes[{i}] needs a path (a raster file or a folder of one file per band)")
        extra = set(s) - SCENE_KEYS
        if extra:
            raise InputError(where, f"scenes[{i}]: unknown key(s): {', '.join(sorted(extra))}")
        spec = copy.deepcopy(s)
        spec["path"] = _resolve(base, s["path"])
        spec["name"] = str(s.get("name") or Path(spec["path"]).name.split(".")[0])
        if not KEY_RE.match(spec["name"]):
            raise InputError(where, f"scene name {spec['name']!r} may only contain letters, digits, '_' and '-' "
                                    "(give the scene a 'name')")
        if spec["name"] in seen:
            raise InputError(where, f"scene name {spec['name']!r} appears twice")
        seen.add(spec["name"])
        _scene_numbers(where, i, spec)
        cm = spec.get("cloud_mask")
        if isinstance(cm, dict) and cm.get("path"):
            cm["path"] = _resolve(base, cm["path"])
        scenes.append(spec)
    stac = merged.get("stac")
    if stac is not None:
        if not isinstance(stac, dict) or not stac.get("api") or not stac.get("collections"):
            raise InputError(where, "stac needs 'api' (a STAC API URL) and 'collections'")
        stac = copy.deepcopy(stac)
    if not scenes and not stac:
        raise InputError(where, "the recipe lists no scenes (give 'scenes', or 'stac' to search an archive)")

    cont = merged.get("continents") or {}
    if isinstance(cont, str):
        cont = {"path": cont}
    if not isinstance(cont, dict):
        raise InputError(where, f"continents must be a path or a mapping {{path, field, nearest_max_km}}, got {cont!r}")
    cont = {"path": _resolve(base, cont.get("path")), "field": str(cont.get("field", "CONTINENT")),
            "nearest_max_km": number(where, {"continents.nearest_max_km": cont.get("nearest_max_km", 500.0)},
                                     "continents.nearest_max_km", float, lo=0)}
    biomes = merged.get("biomes")
    if biomes:
        if not isinstance(biomes, dict) or not biomes.get("raster") or not biomes.get("table"):
            raise InputError(where, "biomes needs 'raster' (RESOLVE ecoregion ids) and 'table' (ecoregions CSV)")
        biomes = {"raster": _resolve(base, biomes["raster"]), "table": _resolve(base, biomes["table"]),
                  "nearest_px": number(where, {"biomes.nearest_px": biomes.get("nearest_px", 2)}, "biomes.nearest_px",
                                       int, lo=0)}
    lc = merged.get("landcover")
    if lc:
        if isinstance(lc, str):
            lc = {"path": lc}
        if not isinstance(lc, dict) or not lc.get("path"):
            raise InputError(where, "landcover needs a 'path'")
        classes = lc.get("classes") or {}
        if not isinstance(classes, dict):
            raise InputError(where, "landcover.classes must map class names to lists of raster codes")
        classes = {str(k): [number(where, {f"landcover.classes.{k}": c}, f"landcover.classes.{k}", int)
                            for c in (v if isinstance(v, list) else [v])] for k, v in classes.items()}
        lc = {"path": _resolve(base, lc["path"]), "classes": classes}
    dtype = merged.get("dtype")
    if dtype is not None:
        try:
            dtype = np.dtype(str(dtype)).name
        except TypeError:
            raise InputError(where, f"dtype {merged.get('dtype')!r} is not a numpy dtype") from None
    else:
        dtype = default_dtype

    output = output_section(where, merged)
    formats, out = resolve_output(where, base, output, out_dir, f"{name}-{strategy.replace(':', '-')}")
    shard_max, shard_bytes = shard_bounds(where, output)

    raw = copy.deepcopy(merged)
    raw.update(name=name, scenes=scenes, continents=cont, biomes=biomes, landcover=lc, dtype=dtype,
               output={"dir": str(out), "formats": list(formats), "shard_max_samples": shard_max,
                       "shard_max_bytes": shard_bytes})
    return RasterRecipe(
        path=src, kind=kind, name=name, strategy=strategy,
        seed=seed(where, merged),
        samples=number(where, merged, "samples", int, lo=1),
        patch_px=patch, stride_px=stride,
        max_nodata_fraction=number(where, merged, "max_nodata_fraction", float, 0.0, 1.0),
        max_cloud_fraction=number(where, merged, "max_cloud_fraction", float, 0.0, 1.0),
        max_overlap=number(where, merged, "max_overlap", float, 0.0, 1.0),
        entropy_bins=bins, entropy_base=log_base,
        spectral_beta=number(where, merged, "spectral_beta", float),
        scenes=tuple(scenes), continents=cont, biomes=biomes, landcover=lc, dtype=dtype,
        holdout_fraction=holdout_fraction(where, merged),
        out_dir=out, formats=formats, shard_max_samples=shard_max, raw=raw, shard_max_bytes=shard_bytes,
        entropy_normalise=norm_mode, entropy_sample_patches=sample_patches, stac=stac,
    )


def _scene_numbers(where, i: int, spec: dict) -> None:
    """A scene's numbers: ``resolution`` > 0 (CRS units), ``nodata`` a number (NaN allowed)."""
    if spec.get("resolution") is not None:
        number(where, {f"scenes[{i}].resolution": spec["resolution"]}, f"scenes[{i}].resolution", float, 0,
               lo_open=True)
    nd = spec.get("nodata")
    if nd is not None:
        try:
            if isinstance(nd, bool):
                raise TypeError
            float(nd)
        except (TypeError, ValueError):
            raise InputError(where, f"scenes[{i}].nodata must be a number, got {nd!r}") from None
