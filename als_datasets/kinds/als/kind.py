"""The ALS kind: airborne LiDAR projects → 500 m tiles drawn by geospatial (land cover × slope)
or random sampling → cleaned point-cloud samples (DESIGN.md §5, §6)."""

from __future__ import annotations

from pathlib import Path

from als_datasets.errors import InputError
from als_datasets.kinds.als.extract.ground import (
    GROUND_CELL_M,
    MAX_EXTRAPOLATION_M,
    MIN_GROUND_CELLS,
    MIN_GROUND_COVER,
)
from als_datasets.kinds.als.sources.attributes import STANDARD as STANDARD_ATTRIBUTES
from als_datasets.registry import Kind
from als_datasets.stats import HEIGHT_BIN_M, HEIGHT_MAX_M

INDEX_COLUMNS = [
    "key", "split", "shard", "project", "tile_id", "crs", "landcover", "slope_class", "stratum",
    "point_count", "density", "height_range_m", "height_entropy", "height_reference", "intensity_entropy",
    "draw_rank", "weight", "lon", "lat", "points_dropped_noise", "points_dropped_outliers",
]
ALS_POINT_ATTRIBUTES = ["x", "y", "z", "intensity", "return_number", "number_of_returns", "classification"]


class AlsKind(Kind):
    name = "als"
    group_column = "project"
    label_columns = ("landcover", "slope_class", "stratum", "project")
    distribution_columns = ("point_count", "density", "height_range_m", "height_entropy", "intensity_entropy")
    entropy_columns = ("height_entropy", "intensity_entropy")
    entropy_definitions = {
        "height_entropy": (
            f"per sample: Shannon entropy (nats) of the points' heights above ground in {HEIGHT_BIN_M:g} m "
            f"bins from 0 to {HEIGHT_MAX_M:g} m (higher points in the last bin, points below the ground "
            f"surface in the first). The ground surface comes from the tile's ground returns (ASPRS class "
            f"2): a least-squares plane per {GROUND_CELL_M:g} m cell gives the ground at the cell centre, a "
            f"cell without ground continues the nearest ground cell's plane for up to "
            f"{MAX_EXTRAPOLATION_M:g} m (level beyond), and the points read the centres bilinearly; a tile with ground in fewer than {MIN_GROUND_CELLS} cells or in less than {MIN_GROUND_COVER:.0%} of its "
            f"occupied cells is measured above its lowest point instead (json height_reference: "
            f"ground | lowest). It measures the vertical structure standing on the ground (vegetation "
            f"layers, buildings): bare ground scores ~0 whatever its slope"
        ),
        "intensity_entropy": (
            "per sample: Shannon entropy (nats) of the intensities after SatMAE-style normalisation "
            "(clip to mean +/- 2 sigma, scale to 0-255), histogrammed in 256 bins over 0-255"
        ),
        "coverage": (
            "strata of the eligible frame (landcover/slope_class of eligible tiles) that the sample "
            "reaches, as a count and a fraction"
        ),
    }
    compare_columns = ("stratum_entropy", "stratum_normalised", "strata_coverage", "landcover_entropy",
                       "slope_class_entropy", "project_entropy", "height_entropy_mean", "intensity_entropy_mean",
                       "density_mean")
    signature_column = "point_count"
    field_docs = {
        "__key__": "Sample key ([A-Za-z0-9_-], never a dot): <project>_c<col>_r<row>.",
        "xyz.npy": "Point coordinates (N, 3) in metres: x, y relative to the tile's lower-left corner in its UTM CRS "
                   "(json.crs), z in metres.",
        "intensity.npy": "Per-point return intensity, as stored in the source.",
        "return_number.npy": "Per-point return number (ASPRS).",
        "number_of_returns.npy": "Per-point number of returns of the pulse (ASPRS).",
        "classification.npy": "Per-point ASPRS classification code.",
        "crs": "EPSG code of the sample's projected CRS (the CRS of xyz / bounds_utm).",
        "density": "Point density of the sample (points / m^2).",
        "height_entropy": "Shannon entropy (nats) of the points' heights above ground, 1 m bins from 0 to 100 m: "
                          "vertical structure (vegetation, buildings), ~0 for bare ground of any slope.",
        "height_reference": "What height_entropy measured heights above: 'ground' (surface of the tile's ground "
                            "returns, class 2) or 'lowest' (the tile's lowest point; too few ground returns).",
        **{f"{name}.npy": f"Per-point LAS {name} ({dtype}), kept by the recipe's point_attributes"
           + ("; degrees (LAS 1.4 formats: 0.006 degree units, older formats: the integer scan angle rank)."
              if name == "scan_angle" else ", as stored in the source.")
           for name, (dtype, _, _) in STANDARD_ATTRIBUTES.items()},
    }
    json_fields = ("project", "tile_id", "split", "crs", "lon", "lat", "landcover", "slope_class", "slope_mean_deg",
                   "stratum", "point_count", "density", "height_entropy", "height_reference", "draw_rank", "weight", "bounds_utm", "origin")
    skipped_reason = "no points left after reading and cleaning"
    plan_files = ("pointclouds_needed.txt",)

    def load_recipe(self, data, src, overrides, out_dir):
        from als_datasets.kinds.als.recipe import load_als_recipe

        return load_als_recipe(data, src, overrides, out_dir)

    def demo_recipe(self, seed: int) -> Path:
        from als_datasets.demo import ensure_demo

        return ensure_demo(seed=seed)

    def check_strategy(self, recipe) -> None:
        from als_datasets.kinds.als.strategies import STRATEGIES

        if recipe.strategy not in STRATEGIES:
            raise InputError(recipe.path, f"unknown strategy {recipe.strategy!r} "
                                          f"(choose from {', '.join(sorted(STRATEGIES))})")

    def frame_units(self, recipe) -> int:
        return len(recipe.projects)

    def make_plan(self, recipe, progress=None, executor=None):
        from als_datasets.kinds.als.plan import make_als_plan

        return make_als_plan(recipe, progress)

    def shortfall(self, plan) -> list[str]:
        r, f = plan.recipe, plan.frame
        lines = []
        for proj in r.projects:
            rows = f[f["project"] == proj.name]
            got, eligible = int(rows["selected"].sum()), int(rows["eligible"].sum())
            if got < r.samples_per_project:
                lines.append(f"project {proj.name}: {got} of {r.samples_per_project} tiles requested: only {eligible} "
                             f"of its {len(rows)} candidate tiles are eligible (at least {r.min_class_fraction:.0%} "
                             "of their pixels in the sampled land-cover classes)")
        return lines

    def plan_summary(self, plan, out_dir: Path) -> list[str]:
        from als_datasets.kinds.als.build import route_tasks

        r, f = plan.recipe, plan.frame
        needed = set(plan.selected["tile_id"])
        files = sorted({str(t.info.path) for t in route_tasks(plan, needed, Path(out_dir) / ".build" / "staging")})
        lines = [f"{out_dir}/frame.parquet: {len(f)} candidate tiles, {int(f['eligible'].sum())} eligible, "
                 f"{len(needed)} selected ({r.strategy}, seed {r.seed}) in {len(r.projects)} project(s)"]
        for proj, grp in plan.selected.groupby("project", sort=False):
            strata = grp.groupby(["landcover", "slope_class"]).size()
            lines.append(f"  {proj}: " + ", ".join(f"{a}/{b} {n}" for (a, b), n in strata.items()))
        if files:
            # next to the dataset folder, not in it: a local listing (absolute paths), never published
            listing = Path(out_dir).with_name(Path(out_dir).name + "." + self.plan_files[0])
            listing.write_text("".join(f"{f}\n" for f in files))
            lines.append(f"point-cloud files needed by the selected tiles: {len(files)} (listed in {listing})")
        return lines

    def shard_tasks(self, plan, out, staging, workers=1):
        from als_datasets.kinds.als.build import als_shard_tasks

        return als_shard_tasks(plan, out, staging, workers)

    def prepare(self, plan, tasks, staging, executor, reporter) -> int:
        from als_datasets.kinds.als.build import stage_points

        return stage_points(plan, tasks, staging, executor, reporter)

    def index_columns(self, recipe) -> list[str]:
        return list(INDEX_COLUMNS)

    def manifest_fields(self, plan) -> dict:
        return {"samples_per_project": plan.recipe.samples_per_project}

    def features(self, manifest: dict, recipe: dict):
        from als_datasets.kinds.als.tasks import als_features, recipe_attributes, recipe_raster_px

        return als_features([*((recipe.get("landcover") or {}).get("classes") or {}), "other"], recipe_raster_px(recipe),
                            recipe_attributes(recipe))

    def render_card(self, out, div, plots, repo_id=None):
        from als_datasets.kinds.als.card import render_als_card

        return render_als_card(out, div, plots, repo_id)

    def croissant_facts(self, manifest, recipe, idx, columns) -> dict:
        from als_datasets.dataset.croissant import quantity

        extra = {k: recipe[k] for k in ("tile_size_m", "grid_res_m") if recipe.get(k) is not None}
        res = None
        if idx.get("density_mean"):
            res = quantity(float(f"{idx['density_mean'] ** -0.5:.6g}"), "m",
                           "Mean ALS point spacing, 1 / sqrt(mean point density); the density (points/m^2), tile size "
                           "and sampling grid in additionalProperty.", extra)
            res.setdefault("additionalProperty", []).insert(0, {"@type": "PropertyValue", "name": "point_density",
                                                 "value": float(f"{idx['density_mean']:.6g}"), "unitText": "points/m^2"})
        elif extra:
            res = quantity(extra.get("grid_res_m", extra.get("tile_size_m")), "m",
                           "ALS tile sampling grid; tile size in additionalProperty.", extra)
        note = ""
        if manifest.get("strategy") == "geospatial":
            note = ("; inverse-probability weights over the land cover x slope strata of the eligible tiles "
                    "(arXiv 2501.05095)")
        return {"what": "airborne laser scanning (ALS) point-cloud tiles",
                "keywords": {"airborne-laser-scanning", "lidar", "point-cloud"}, "resolution": res,
                "bands": [*ALS_POINT_ATTRIBUTES, *(a["name"] for a in recipe.get("point_attributes") or ())],
                "strategy_note": note}
