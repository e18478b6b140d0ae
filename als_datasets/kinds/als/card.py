"""The dataset card (README.md) of an ALS build, rendered from ``cards/als_dataset_card.md``.

Everything comes from the folder itself (manifest.json, recipe.yaml, index/frame, the diversity
report), so ``als-datasets report DIR`` re-renders the same card a build wrote; the shared
tables are :mod:`als_datasets.report.card`'s.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from als_datasets import SCHEMA_VERSION, __version__
from als_datasets.kinds.als.extract.ground import GROUND_CELL_M
from als_datasets.report.card import card_splits, distribution_markdown, diversity_markdown, sources_markdown
from als_datasets.stats import HEIGHT_BIN_M, HEIGHT_MAX_M

CITATIONS = """\
If you use this dataset, cite the papers whose methods built it:

```bibtex
@misc{arxiv_2501_05095,
  howpublished = {arXiv:2501.05095},
  note         = {Airborne LiDAR pre-training with geospatial sampling over land cover x slope},
  url          = {https://arxiv.org/abs/2501.05095}
}
@misc{arxiv_2309_03367,
  howpublished = {arXiv:2309.03367},
  note         = {Masked autoencoders on digital elevation models},
  url          = {https://arxiv.org/abs/2309.03367}
}
```"""


def als_sources(recipe: dict) -> list[str]:
    """The card's "Source data" lines when the recipe states no ``sources:``."""
    lc = Path((recipe.get("landcover") or {}).get("path") or "?").name
    dem = Path((recipe.get("dem") or {}).get("path") or "").name or "none (slope from the ground returns)"
    return [f"- land cover: `{lc}`", f"- DEM: `{dem}`",
            "- point clouds: the projects' LAS/LAZ/COPC files (see `recipe.yaml`)"]


def render_als_card(out_dir, div: dict, plots: list[Path], repo_id: str | None = None) -> tuple[dict, str]:
    """(card YAML dict, full README text) of an ALS build."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from als_datasets.dataset.card import card_yaml
    from als_datasets.kinds.als.tasks import als_features, recipe_attributes, recipe_raster_px

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    lc_names = [*((recipe.get("landcover") or {}).get("classes") or {}), "other"]
    splits, formats = card_splits(manifest, recipe)
    name = manifest["name"]
    strategy = manifest["strategy"]
    pretty = f"{name} — airborne LiDAR tiles, {strategy} sampling"
    ydict = card_yaml(
        als_features(lc_names, recipe_raster_px(recipe), recipe_attributes(recipe)), splits, pretty_name=pretty, license=recipe.get("license") or "other",
        tags=["lidar", "point-cloud", "airborne-laser-scanning", "geospatial", "remote-sensing", "pretraining",
              f"sampling-{strategy}"],
        extra={"task_categories": ["other"]}, formats=formats,
    )
    classes = ", ".join(f"{k} = NLCD {v}" for k, v in (recipe.get("landcover") or {}).get("classes", {}).items())
    slope = ", ".join(f"{k} {lo}–{hi}°" for k, (lo, hi) in (recipe.get("slope_classes_deg") or {}).items())
    method = (
        f"For each project the land cover and "
        f"{'DEM' if recipe.get('dem') else 'a 25 m DTM of the ground returns (no DEM given)'} were reprojected "
        f"(nearest) onto a {recipe.get('grid_res_m')} m grid in the project's UTM zone, clipped to its boundary; slope = "
        f"arctan(hypot(∇z)) ({slope}). Candidate tiles are {recipe.get('tile_size_m')} m squares from the grid's "
        f"north-west corner; a tile is eligible when at least {recipe.get('min_class_fraction', 0.8):.0%} of its "
        f"pixels are in the sampled classes ({classes}). "
        + ("**Geospatial sampling** (arXiv 2501.05095): each eligible tile is weighted by 1 / (eligible tiles in its "
           "land-cover × slope stratum)" if strategy == "geospatial" else
           "**Random sampling**: every eligible tile has the same weight")
        + f"; `numpy.random.RandomState({manifest['seed']}).choice` draws {recipe.get('draws', 1000)} tiles (or all) "
        f"without replacement per project, and the first {manifest['samples_per_project']} of that ordered draw are kept "
        f"(so smaller sets are subsets of larger ones). Points are read once per file, classes "
        f"{recipe.get('drop_classes')} dropped, then PDAL's statistical outlier filter "
        f"(k = {(recipe.get('outlier') or {}).get('mean_k', 0)}, mean + {(recipe.get('outlier') or {}).get('multiplier', '–')} σ) "
        "applied per tile; feet and US survey feet are converted to metres."
    )
    skipped = manifest.get("skipped_tiles") or []
    limitations = [
        "Only tiles with at least "
        f"{recipe.get('min_class_fraction', 0.8):.0%} of their pixels in the sampled land-cover classes are eligible: "
        "water, wetland, barren land, grassland, shrubland and cropland are (almost) absent by design.",
        "Land-cover and slope labels come from rasters resampled (nearest) to a "
        f"{recipe.get('grid_res_m')} m grid; a tile's label is the mode of its pixels.",
        "The statistical outlier filter removes by construction the ~2 % of points with the largest mean "
        "neighbour distance, some of them real (isolated tree tops, wires).",
    ]
    if skipped:
        limitations.append(f"{len(skipped)} selected tile(s) had no points and were skipped (listed in manifest.json).")
    if (recipe.get("name") or "").startswith("demo") or "demo" in str((recipe.get("landcover") or {}).get("path", "")):
        limitations.insert(0, "**This is the embedded synthetic demo**: terrain, land cover and points are generated, "
                              "not measured. Use it to try the tools, not to train models.")
    cov = div.get("coverage") or {}
    coverage_text = (f"{cov.get('strata_reached')} of {cov.get('strata_in_frame')}"
                     + (f" (missing: {', '.join(cov['missing'])})" if cov.get("missing") else "")) if cov else "n/a"
    webdataset_shards = [e for e in manifest["shards"] if e["format"] == "webdataset" and e["split"] == "train"]
    import pyarrow.parquet as pq

    index_crs = sorted(set(pq.read_table(out / "index.parquet", columns=["crs"]).column("crs").to_pylist()))
    body_kwargs = dict(
        pretty_name=pretty,
        summary=f"Airborne laser scanning (LiDAR) point-cloud tiles for self-supervised pre-training (e.g. BEV-MAE), "
                f"chosen from {len(recipe.get('projects') or [])} project(s) by **{strategy} sampling** over land cover × "
                "terrain slope strata, as in *arXiv 2501.05095*.",
        num_samples=div.get("num_samples"),
        splits_text=", ".join(f"{k}: {v}" for k, v in manifest["splits"].items()),
        num_projects=len(recipe.get("projects") or []),
        strategy=strategy, seed=manifest["seed"], samples_per_project=manifest["samples_per_project"],
        tile_size_m=recipe.get("tile_size_m"),
        crs_text=", ".join(index_crs) or "none",
        tool_version=manifest.get("tool_version", __version__), schema_version=manifest.get("schema_version", SCHEMA_VERSION),
        method=method, sources=sources_markdown(recipe, als_sources(recipe)),
        diversity_table=diversity_markdown(div), coverage_text=coverage_text,
        distribution_table=distribution_markdown(div),
        entropy_note=entropy_note(_references(out)),
        plots=[{"path": p.relative_to(out).as_posix(), "alt": p.stem.replace("_", " ")} for p in plots],
        schema=SCHEMA_MD + attributes_markdown(recipe) + terrain_markdown(recipe), repo_id=repo_id or f"ORG/{name}",
        last_shard=f"{max(len(webdataset_shards) - 1, 0):06d}",
        limitations="\n".join(f"- {x}" for x in limitations), citations=CITATIONS,
    )
    template = resources.files("als_datasets.cards").joinpath("als_dataset_card.md").read_text(encoding="utf-8")
    card = DatasetCard.from_template(DatasetCardData(**ydict), template_str=template, **body_kwargs)
    return ydict, str(card)


def _references(out: Path) -> list | None:
    """Each sample's ``height_reference``; None for an index written before the field existed."""
    import pyarrow.parquet as pq

    if "height_reference" not in pq.read_schema(out / "index.parquet").names:
        return None
    return pq.read_table(out / "index.parquet", columns=["height_reference"]).column("height_reference").to_pylist()


def entropy_note(references: list | None) -> str:
    """The card's paragraph on the per-sample entropies: what they measure, and how many tiles had
    their heights measured above the ground returns (``references``: each sample's
    ``height_reference``; None for a build from before the field, whose heights were all taken
    above the tile's lowest point)."""
    if references is None:
        return ("Per-sample **height entropy** (nats): this build predates `height_reference`; its heights were "
                f"measured above each tile's lowest point in {HEIGHT_BIN_M:g} m bins from 0 to {HEIGHT_MAX_M:g} m, so "
                "terrain relief counts as height and sloping tiles score high without any vegetation. Rebuild to "
                "measure heights above the ground returns. **Intensity entropy** (nats): intensities clipped to "
                "mean ± 2σ, scaled to 0–255, 256 bins (SatMAE-style normalisation).")
    n_ground = sum(r == "ground" for r in references)
    n_lowest = sum(r == "lowest" for r in references)
    counted = ""
    if references:
        counted = f" Here {n_ground} of {len(references)} tiles were measured above their ground returns"
        counted += (f" and {n_lowest} above their lowest point (too few ground returns), where the terrain's relief "
                    "counts as height." if n_lowest else ".")
    return (
        f"Per-sample **height entropy** (nats): the points' heights *above ground* in {HEIGHT_BIN_M:g} m bins from 0 "
        f"to {HEIGHT_MAX_M:g} m. The ground is the surface of the tile's ground returns (ASPRS class 2: a "
        f"least-squares plane per {GROUND_CELL_M:g} m cell, continued under roofs and canopy from the nearest cell "
        f"with ground, read bilinearly); a tile with too few of them is measured above its lowest point instead (`height_reference`: "
        "`ground` or `lowest` in each sample)." + counted + " It measures the vertical structure standing on the "
        "ground — vegetation layers, buildings — so bare ground scores about 0 whatever its slope, and terrain relief "
        "is left to the slope classes. **Intensity entropy** (nats): intensities clipped to mean ± 2σ, scaled to "
        "0–255, 256 bins — the SatMAE-style normalisation that *Pretrain Where?* uses for spectral entropy, applied "
        "to one uncalibrated channel. Neither is the paper's spectral entropy or a validated stand-in for it: they "
        "describe a tile's vertical structure and the spread of its return strengths (intensity depends on the "
        "sensor, range and gain, so it is comparable within a project more than across projects), and whether "
        "favouring high values helps pre-training, as spectral entropy did for Sentinel-2, is untested for ALS."
    )


SCHEMA_MD = """\
Sample key: `<project>_c<col>_r<row>` (letters, digits, `_` and `-` only).

| member / column | type | meaning |
|---|---|---|
| `xyz.npy` | float32 (N, 3) | metres; x, y relative to the tile's lower-left corner in its UTM CRS; z in metres |
| `intensity.npy` | uint16 (N,) | as stored in the source |
| `return_number.npy`, `number_of_returns.npy`, `classification.npy` | uint8 (N,) | ASPRS |
| `json` | struct | project, tile_id, crs, split, origin, bounds_utm, tile_size_m, lon, lat, landcover, landcover_fractions, slope_class, slope_mean_deg, stratum, point_count, density, height_range_m, height_entropy, height_reference, intensity_entropy, strategy, draw_rank, weight, seed, source_files, points_dropped_noise, points_dropped_outliers |"""


def attributes_markdown(recipe: dict) -> str:
    """The card's rows for the recipe's ``point_attributes`` (empty when it has none)."""
    from als_datasets.kinds.als.sources.attributes import STANDARD, member_name
    from als_datasets.kinds.als.tasks import recipe_attributes

    rows = []
    for name, dtype in recipe_attributes(recipe):
        meaning = ("scan angle in degrees (LAS 1.4 formats: 0.006° units; older formats: the integer scan angle rank)"
                   if name == "scan_angle" else f"LAS `{name}`, as stored in the source" if name in STANDARD
                   else f"extra-bytes dimension `{name}` (as laspy reads it: scaled when the file gives a scale)")
        rows.append(f"\n| `{member_name(name)}.npy` | {dtype} (N,) | {meaning}; recipe `point_attributes` |")
    return "".join(rows)


def terrain_markdown(recipe: dict) -> str:
    """The card's rows and gridding rule for the terrain rasters (empty when the recipe has none)."""
    from als_datasets.kinds.als.extract import terrain
    from als_datasets.kinds.als.tasks import recipe_raster_px

    px = recipe_raster_px(recipe)
    if not px:
        return ""
    cell = terrain.terrain_cell_m(recipe.get("terrain_rasters"))
    rule = " ".join(line.strip() for line in (terrain.__doc__ or "").split("\n\n", 1)[1].splitlines())
    return (
        f"\n| `dtm.npy`, `dsm.npy`, `ndsm.npy`, `intensity_mean.npy` | float32 ({px}, {px}) | terrain rasters of the "
        f"cleaned points, {cell:g} m cells, north up; json `raster_cell_m`, `raster_origin_utm` (upper-left corner), "
        "`raster_shape`, `raster_ground_fraction` |\n\n"
        f"**Terrain rasters** (recipe key `terrain_rasters`). {rule}"
    )
