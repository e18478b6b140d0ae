"""The ALS recipe section (DESIGN.md §3): a ``kind: als`` recipe dict → a validated :class:`Recipe`.

Reading the file, ``demo:``, overrides and the output folder are the core's
(:mod:`als_datasets.recipe`); this module checks the ALS keys (land cover, DEM, slope classes,
projects and their point clouds, extraction filters).

``dem`` is a path or ``{path, z_unit}``: ``z_unit`` (m | ft | us-ft, or metres per DEM unit) is
the DEM's elevation unit when the raster does not declare it or declares it wrong.
``output: {dir, formats, shard_max_samples: 64, shard_max_bytes: 1GB}``: a shard ends before the
tile that would pass either bound, bytes estimated in the plan from the point clouds' headers
(:func:`als_datasets.kinds.als.plan.estimated_sample_bytes`).
"""

from __future__ import annotations

import copy
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from als_datasets.errors import InputError, redact_url
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

DEFAULTS: dict[str, Any] = {
    "kind": "als",
    "name": None,
    "strategy": "geospatial",
    "seed": 41,
    "samples_per_project": 40,
    "draws": 1000,
    "tile_size_m": 500.0,
    "grid_res_m": 25.0,
    "landcover": None,
    "min_class_fraction": 0.8,
    "dem": None,
    "slope_mask_other": False,
    "slope_classes_deg": {"flat": [0, 5], "sloped": [5, 17], "steep": [17, 90]},
    "projects": [],
    "drop_classes": [7, 18],
    "outlier": {"mean_k": 12, "multiplier": 2.2},
    "holdout_fraction": 0.0,
    "output": {"dir": None, "formats": ["webdataset", "parquet"], "shard_max_samples": 64,
               "shard_max_bytes": DEFAULT_SHARD_MAX_BYTES},
}

KNOWN_KEYS = set(DEFAULTS) | {"description", "license", "sources", "demo", "source", "stac", "terrain_rasters",
                              "point_attributes"}
PROJECT_KEYS = {"name", "boundary", "pointclouds", "pointcloud_crs"}
DEM_KEYS = {"path", "z_unit"}


@dataclass(frozen=True)
class Project:
    name: str
    boundary: Path | str | None  # a file; for an archive's project "INDEX#NAME" (for messages)
    pointclouds: tuple[Path | str, ...]  # local paths; URLs (http(s)://, s3://) as str
    pointcloud_crs: str | None = None
    boundary_geojson: str | None = None  # an archive project's boundary (GeoJSON geometry, lon/lat)


@dataclass(frozen=True)
class Recipe:
    """A resolved ALS recipe.  ``raw`` keeps the dict that is written as ``recipe.yaml``."""

    path: Path | None
    name: str
    strategy: str
    seed: int
    samples_per_project: int
    draws: int
    tile_size_m: float
    grid_res_m: float
    landcover_path: Path | str  # a URL (https://, s3://) as str
    landcover_classes: dict[str, tuple[int, ...]]
    min_class_fraction: float
    dem_path: Path | str | None
    slope_mask_other: bool
    slope_classes: dict[str, tuple[float, float]]
    projects: tuple[Project, ...]
    drop_classes: tuple[int, ...]
    outlier_k: int
    outlier_multiplier: float
    holdout_fraction: float
    out_dir: Path
    formats: tuple[str, ...]
    shard_max_samples: int
    raw: dict = field(repr=False, compare=False, default_factory=dict)
    shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES
    dem_z_to_m: float | None = None  # dem.z_unit as metres per DEM unit (None: what the DEM declares)
    terrain_cell_m: float = 0.0  # terrain_rasters: per-sample DTM/DSM/nDSM/intensity cell size; 0: off
    point_attributes: tuple[tuple[str, str], ...] = ()  # per-point attributes kept besides the base seven

    kind = "als"

    @property
    def tile_px(self) -> int:
        return int(round(self.tile_size_m / self.grid_res_m))


def expand_pointclouds(where, base: Path, project: str, patterns) -> tuple[Path | str, ...]:
    """A project's point-cloud files in a canonical order: by path (a URL by itself without its
    query string), so that the output never depends on how the files are listed or globbed.

    Each pattern is globbed (a URL is kept as given: never globbed, never made relative); a file
    matched by several patterns or spelled several ways (``a/../a/b``, a link) is kept once, by
    resolved path, under its first spelling in that order.  A pattern that matches no file is an
    error naming the recipe, the project and the pattern; a plain path that does not exist is
    reported by the reader, naming it."""
    from als_datasets.kinds.als.sources.remote import is_remote, redact

    found: dict[str, Path | str] = {}  # identity (resolved path / URL) → the file as named

    def key(f) -> tuple[str, str]:
        return redact(str(f)), str(f)

    for pattern in patterns:
        if is_remote(str(pattern)):
            found.setdefault(str(pattern), str(pattern))
            continue
        full = resolve_path(base, str(pattern))
        hits = [full]
        if glob.has_magic(str(full)):
            hits = [Path(h) for h in glob.glob(str(full))]
            if not hits:
                raise InputError(where, f"project {project!r}: pointclouds pattern {str(pattern)!r} matches no file")
        for h in hits:
            n = Path(os.path.normpath(h))  # "a/./b", "a/../a/b" → "a/b" unless a link makes it another file
            h = n if os.path.realpath(n) == os.path.realpath(h) else h
            ident = os.path.realpath(h)
            if ident not in found or key(h) < key(found[ident]):
                found[ident] = h
    return tuple(sorted(found.values(), key=key))


def load_als_recipe(data: dict, src: Path | None, overrides: dict | None = None,
                    out_dir: str | Path | None = None) -> Recipe:
    """Validate a ``kind: als`` recipe dict (already demo-merged) read from ``src``."""
    where = src if src is not None else "<recipe>"
    merged = merge_recipe(where, data, DEFAULTS, KNOWN_KEYS, overrides)
    base = recipe_base(src)
    name = check_name(where, merged.get("name") or (src.stem if src is not None else "als-dataset"))

    lc = merged.get("landcover")
    if not isinstance(lc, dict) or not lc.get("path"):
        raise InputError(where, "landcover.path is required (a land-cover raster)")
    classes = lc.get("classes") or {"developed": [21, 22, 23, 24], "forest": [41, 42, 43]}
    if not isinstance(classes, dict) or not classes:
        raise InputError(where, "landcover.classes must map class names to lists of raster codes")
    lc_classes = {}
    for cname, codes in classes.items():
        if not KEY_RE.match(str(cname)) or str(cname) == "other":
            raise InputError(where, f"land-cover class name {cname!r} is not allowed")
        if not isinstance(codes, (list, tuple)):
            codes = [codes]
        key = f"landcover.classes.{cname}"
        lc_classes[str(cname)] = tuple(number(where, {key: c}, key, int) for c in codes)

    # the recipe's classes replace the defaults (a deep merge would keep default classes it leaves out)
    given = data.get("slope_classes_deg")
    slope_classes = _slope_classes(where, DEFAULTS["slope_classes_deg"] if given is None else given)

    tile = number(where, merged, "tile_size_m", float, 0, lo_open=True)
    res = number(where, merged, "grid_res_m", float, 0, lo_open=True)
    if abs(tile / res - round(tile / res)) > 1e-9 or round(tile / res) < 1:
        raise InputError(where, f"tile_size_m ({tile}) must be a positive multiple of grid_res_m ({res})")

    from als_datasets.kinds.als.sources import archive

    stac = archive.check_stac(where, merged.get("stac"))
    stac_hrefs: list[str] = []
    projects = []
    seen = set()
    for i, p in enumerate(merged.get("projects") or []):
        if not isinstance(p, dict) or not p.get("name"):
            raise InputError(where, f"projects[{i}] needs a name")
        extra = set(p) - PROJECT_KEYS
        if extra:
            raise InputError(where, f"projects[{i}]: unknown key(s): {', '.join(sorted(extra))}")
        pname = str(p["name"])
        if not KEY_RE.match(pname):
            raise InputError(where, f"project name {pname!r} may only contain letters, digits, '_' and '-'")
        if pname in seen:
            raise InputError(where, f"project name {pname!r} appears twice")
        seen.add(pname)
        pcs = p.get("pointclouds") or []
        boundary = resolve_path(base, p.get("boundary"))
        if pcs == "stac":  # the STAC items over the project's boundary
            if stac is None or boundary is None:
                raise InputError(where, f"project {pname!r}: pointclouds: stac needs a stac: section and a boundary")
            from als_datasets.kinds.als.sources.geo import read_boundary

            pcs = list(archive.stac_pointclouds(where, stac, pname, read_boundary(boundary)))
            stac_hrefs += pcs
        if isinstance(pcs, str):
            pcs = [pcs]
        files = expand_pointclouds(where, base, pname, pcs)
        if boundary is None and not files:
            raise InputError(where, f"project {pname!r} has neither a boundary nor point clouds")
        projects.append(Project(pname, boundary, tuple(files), p.get("pointcloud_crs")))
    explicit = len(projects)
    if merged.get("source") is not None:
        for ap in archive.archive_projects(where, base, merged["source"], stac):
            if ap.name in seen:
                raise InputError(where, f"project name {ap.name!r} appears twice (in projects and in source)")
            seen.add(ap.name)
            if merged["source"].get("pointclouds") == "stac":
                stac_hrefs += ap.pointclouds
            projects.append(Project(ap.name, ap.boundary, expand_pointclouds(where, base, ap.name, ap.pointclouds),
                                    boundary_geojson=ap.boundary_geojson))
    archive.register_stac_signer(stac, stac_hrefs)
    if not projects:
        raise InputError(where, "the recipe lists no projects")

    output = output_section(where, merged)
    formats, out = resolve_output(where, base, output, out_dir, f"{name}-{merged['strategy']}")
    shard_max, shard_bytes = shard_bounds(where, output)
    dem_path, dem_z_unit, dem_z_to_m = _dem(where, base, merged.get("dem"))

    n = number(where, merged, "samples_per_project", int, lo=1)
    draws = number(where, merged, "draws", int, lo=1)
    hold = holdout_fraction(where, merged)
    outlier_k, outlier_multiplier = _outlier(where, merged.get("outlier"))
    terrain_cell = _terrain(where, merged.get("terrain_rasters"), tile)
    drop_classes = _drop_classes(where, merged.get("drop_classes"))
    min_fraction = number(where, merged, "min_class_fraction", float, 0, 1, lo_open=True)
    from als_datasets.kinds.als.sources.attributes import parse_point_attributes

    attributes = parse_point_attributes(where, merged.get("point_attributes"))

    raw = copy.deepcopy(merged)
    raw["name"] = name
    lc_path = _raster_path(base, lc["path"])
    raw["landcover"] = {"path": redact_url(str(lc_path)), "classes": {k: list(v) for k, v in lc_classes.items()}}
    raw["dem"] = ({"path": redact_url(str(dem_path)), **({"z_unit": dem_z_unit} if dem_z_unit is not None else {})}
                  if dem_path else None)
    raw["projects"] = [  # recipe.yaml is published: no URL tokens
        {"name": p.name, "boundary": str(p.boundary) if p.boundary else None,
         "pointclouds": [redact_url(str(f)) for f in p.pointclouds], **({"pointcloud_crs": p.pointcloud_crs} if p.pointcloud_crs else {})}
        for p in projects[:explicit]  # an archive's projects are the source: section's
    ]
    for p, given in zip(raw["projects"], merged.get("projects") or []):
        if given.get("pointclouds") == "stac":
            p["pointclouds"] = "stac"
    if raw.get("source"):
        raw["source"] = {**raw["source"], "index": redact_url(str(raw["source"].get("index")))}
    if raw.get("stac"):
        raw["stac"] = {**raw["stac"], "api": redact_url(str(raw["stac"]["api"]))}
    raw.pop("point_attributes", None)  # absent unless given: recipe.yaml of a default build unchanged
    if attributes:
        raw["point_attributes"] = [{"name": n, "dtype": d} for n, d in attributes]
    raw["output"] = {"dir": str(out), "formats": list(formats), "shard_max_samples": shard_max,
                     "shard_max_bytes": shard_bytes}
    return Recipe(
        path=src,
        name=name,
        strategy=str(merged["strategy"]),
        seed=seed(where, merged),
        samples_per_project=n,
        draws=max(draws, n),
        tile_size_m=tile,
        grid_res_m=res,
        landcover_path=lc_path,
        landcover_classes=lc_classes,
        min_class_fraction=min_fraction,
        dem_path=dem_path,
        slope_mask_other=bool(merged.get("slope_mask_other")),
        slope_classes=slope_classes,
        projects=tuple(projects),
        drop_classes=drop_classes,
        outlier_k=outlier_k,
        outlier_multiplier=outlier_multiplier,
        holdout_fraction=hold,
        out_dir=out,
        formats=formats,
        shard_max_samples=shard_max,
        raw=raw,
        shard_max_bytes=shard_bytes,
        dem_z_to_m=dem_z_to_m,
        terrain_cell_m=terrain_cell,
        point_attributes=attributes,
    )


def _dem(where, base: Path, dem) -> tuple[Path | None, str | float | None, float | None]:
    """(path, ``z_unit`` as written, metres per unit) of the recipe's ``dem`` (a path, or
    ``{path, z_unit}`` with ``z_unit`` m | ft | us-ft or metres per unit)."""
    from als_datasets.kinds.als.sources.geo import z_unit_factor

    if not isinstance(dem, dict):
        return _raster_path(base, dem), None, None
    extra = set(dem) - DEM_KEYS
    if extra:
        raise InputError(where, f"dem: unknown key(s): {', '.join(sorted(extra))} (expected path, z_unit)")
    unit = dem.get("z_unit")
    if unit is None:
        return _raster_path(base, dem.get("path")), None, None
    factor = z_unit_factor(unit)
    if factor is None:
        raise InputError(where, f"dem.z_unit must be m, ft, us-ft or metres per DEM unit (a number > 0), got {unit!r}")
    return _raster_path(base, dem.get("path")), unit, factor


def _raster_path(base: Path, value) -> Path | str | None:
    """A raster's path relative to the recipe's folder, or a URL kept as given (read by ranges)."""
    from als_datasets.remote import is_remote

    if value is not None and is_remote(str(value)):
        return str(value)
    return resolve_path(base, value)


def _slope_classes(where, slope) -> dict[str, tuple[float, float]]:
    """``slope_classes_deg``: name → [low, high] degrees, 0 ≤ low < high ≤ 90."""
    if not isinstance(slope, dict):
        raise InputError(where, "slope_classes_deg must map class names to [low, high] in degrees")
    classes = {}
    for cname, rng in slope.items():
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise InputError(where, f"slope_classes_deg.{cname} must be [low, high] in degrees, got {rng!r}")
        key = f"slope_classes_deg.{cname}"
        lo = number(where, {key: rng[0]}, key, float, 0, 90)
        hi = number(where, {key: rng[1]}, key, float, 0, 90)
        if not lo < hi:
            raise InputError(where, f"{key}: low must be below high, got {list(rng)!r}")
        classes[str(cname)] = (lo, hi)
    if not classes:
        raise InputError(where, "slope_classes_deg must define at least one class")
    return classes


def _outlier(where, outlier) -> tuple[int, float]:
    """``outlier: {mean_k, multiplier}`` (PDAL's statistical filter); ``null`` or mean_k 0: off."""
    if outlier is None:
        return 0, 2.2
    if not isinstance(outlier, dict):
        raise InputError(where, f"outlier must be a mapping {{mean_k, multiplier}} or null, got {outlier!r}")
    extra = set(outlier) - {"mean_k", "multiplier"}
    if extra:
        raise InputError(where, f"outlier: unknown key(s): {', '.join(sorted(map(str, extra)))}")
    k = number(where, {"outlier.mean_k": outlier.get("mean_k", 12)}, "outlier.mean_k", int, lo=0)
    m = number(where, {"outlier.multiplier": outlier.get("multiplier", 2.2)}, "outlier.multiplier", float, 0,
               lo_open=True)
    return k, m


def _terrain(where, value, tile: float) -> float:
    """``terrain_rasters``: true (1 m cells), ``{cell_m}``, or false / null (off): the cell size."""
    from als_datasets.kinds.als.extract.terrain import terrain_cell_m

    try:
        cell = terrain_cell_m(value)
    except ValueError as e:
        raise InputError(where, str(e)) from None
    if cell and abs(tile / cell - round(tile / cell)) > 1e-9:
        raise InputError(where, f"terrain_rasters.cell_m ({cell:g}) must divide tile_size_m ({tile:g})")
    return cell


def _drop_classes(where, classes) -> tuple[int, ...]:
    """``drop_classes``: ASPRS classification codes 0..255 (``null`` or ``[]``: none)."""
    if classes is None:
        return ()
    if not isinstance(classes, (list, tuple)):
        classes = [classes]
    return tuple(number(where, {"drop_classes": c}, "drop_classes", int, 0, 255) for c in classes)
