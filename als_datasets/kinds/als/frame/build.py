"""A project's sampling frame from its files: boundary → UTM grid → land cover, slope → tiles.

This is the I/O shell around :mod:`als_datasets.kinds.als.frame.grid`.  It reads rasters (windowed) and,
only when the recipe has no DEM, the ground returns of the point clouds (for a 25 m DTM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from als_datasets.errors import InputError
from als_datasets.kinds.als.frame import grid as g
from als_datasets.kinds.als.recipe import Project, Recipe
from als_datasets.kinds.als.sources import geo


@dataclass
class ProjectFrame:
    project: Project
    grid: geo.Grid
    boundary_lonlat: object
    boundary_utm: object
    tiles: pd.DataFrame  # frame order; no weights / draws yet
    pointclouds: list = field(default_factory=list)  # PointCloudInfo per file
    slope_source: str = "dem"


def inspect_project_pointclouds(project: Project) -> list:
    """Every file's header (CRS, units, bounds); the same data under two names is refused."""
    from als_datasets.kinds.als.sources.pointcloud import check_distinct, inspect_pointcloud

    infos = [inspect_pointcloud(p, crs_override=project.pointcloud_crs) for p in project.pointclouds]
    check_distinct(infos, project.name)
    return infos


def project_boundary(project: Project, infos: list):
    """The recipe's boundary, or the union of the point clouds' footprints."""
    if project.boundary_geojson is not None:  # an archive index's project
        import json

        from shapely.geometry import shape

        return shape(json.loads(project.boundary_geojson))
    if project.boundary is not None:
        return geo.read_boundary(project.boundary)
    from shapely import union_all

    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat

    return union_all([footprint_lonlat(i) for i in infos])


def ground_dtm(infos: list, grid: geo.Grid, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Mean z (metres) of ground returns (class 2) per grid cell; empty cells filled from the
    nearest cell with ground; NaN everywhere when there is no ground at all."""
    from pyproj import Transformer
    from scipy import ndimage

    from als_datasets.kinds.als.sources.pointcloud import iter_point_chunks

    total = np.zeros(grid.height * grid.width)
    count = np.zeros(grid.height * grid.width)
    for info in infos:
        tr = Transformer.from_crs(info.crs, grid.crs, always_xy=True)
        for chunk in iter_point_chunks(info):
            m = chunk["classification"] == 2
            if m.any():
                x, y = tr.transform(chunk["x"][m], chunk["y"][m])
                c = np.floor((x - grid.x0) / grid.res).astype(np.int64)
                r = np.floor((grid.y1 - y) / grid.res).astype(np.int64)
                ok = (c >= 0) & (c < grid.width) & (r >= 0) & (r < grid.height)
                idx = r[ok] * grid.width + c[ok]
                total += np.bincount(idx, weights=chunk["z"][m][ok], minlength=total.size)
                count += np.bincount(idx, minlength=count.size)
            if progress:
                progress(len(chunk["x"]))
    have = (count > 0).reshape(grid.height, grid.width)
    if not have.any():
        return np.full((grid.height, grid.width), np.nan)
    dtm = np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(grid.height, grid.width)
    _, (ri, ci) = ndimage.distance_transform_edt(~have, return_indices=True)
    return dtm[ri, ci]


def build_project_frame(recipe: Recipe, project: Project, progress: Callable[[int], None] | None = None) -> ProjectFrame:
    """Every candidate tile of one project with its labels, fractions and eligibility."""
    from als_datasets.kinds.als.sources.pointcloud import check_within

    infos = inspect_project_pointclouds(project)
    if project.boundary is None and not infos:
        raise InputError(recipe.path, f"project {project.name!r} has no boundary and no point clouds")
    boundary = project_boundary(project, infos)
    for info in infos:
        check_within(info, boundary)
    c = boundary.centroid
    epsg = g.utm_epsg(c.x, c.y)
    boundary_utm = geo.to_crs(boundary, 4326, epsg)
    grid = geo.project_grid(boundary_utm, epsg, recipe.grid_res_m)
    inside = geo.boundary_mask(boundary_utm, grid)
    where = project.boundary or (infos[0].path if infos else recipe.path)
    if not inside.any():
        raise InputError(where, f"project {project.name!r}: boundary is smaller than one {recipe.grid_res_m:g} m grid cell")

    codes, lc_valid = geo.reproject_to_grid(recipe.landcover_path, grid, "land-cover")
    lc_valid &= inside
    if not lc_valid.any():
        raise InputError(recipe.landcover_path, f"land-cover raster does not overlap project {project.name!r}'s boundary")
    classes = list(recipe.landcover_classes.values())
    lc = g.landcover_ids(codes, classes, lc_valid)

    if recipe.dem_path is not None:
        dem, dem_valid = geo.reproject_to_grid(recipe.dem_path, grid, "DEM")
        z_to_m, z_source = geo.dem_vertical_unit(recipe.dem_path, recipe.dem_z_to_m)
        dem = dem.astype(np.float64)
        if z_to_m != 1.0:  # slope needs z in the grid's unit: metres
            dem *= z_to_m
        dem[~(dem_valid & inside)] = np.nan
        if not np.isfinite(dem).any():
            raise InputError(recipe.dem_path, f"DEM does not overlap project {project.name!r}'s boundary")
        geo.check_dem_elevations(recipe.dem_path, dem, z_to_m, z_source, recipe.tile_px, recipe.tile_size_m)
        slope_source = "dem"
    else:
        if not infos:
            raise InputError(recipe.path, f"project {project.name!r}: no DEM and no point clouds to derive slope from")
        from als_datasets.kinds.als.sources.remote import is_remote, redact

        far = [i.path for i in infos if is_remote(i.path)]
        if far:  # a DTM from ground returns reads every point: the whole remote project
            raise InputError(redact(far[0]), f"project {project.name!r}: remote point clouds need a DEM in the "
                             "recipe (dem: path); slope from ground returns would download every point")
        dem = ground_dtm(infos, grid, progress)
        if not np.isfinite(dem).any():
            raise InputError(infos[0].path, f"no ground returns (class 2) to derive slope for project {project.name!r}")
        dem[~inside] = np.nan
        slope_source = "ground-returns-dtm"
    if recipe.slope_mask_other:
        dem[lc == len(classes)] = np.nan

    slope = g.slope_degrees(dem, recipe.grid_res_m)
    sl = g.slope_ids(slope, list(recipe.slope_classes.values()))
    px = recipe.tile_px
    if grid.height < px or grid.width < px:
        raise InputError(where, f"project {project.name!r} is smaller than one {recipe.tile_size_m:g} m tile")
    st = g.tile_stats(lc, sl, slope, len(classes), len(recipe.slope_classes), px)
    eligible = g.eligibility(st["class_fraction"], st["slope_label"], recipe.min_class_fraction)

    lc_names = g.class_names(recipe.landcover_classes)
    sl_names = list(recipe.slope_classes)
    T = recipe.tile_size_m
    x0 = grid.x0 + st["col"] * T
    y0 = grid.y1 - (st["row"] + 1) * T
    table = pd.DataFrame({
        "tile_id": [f"{project.name}_c{c}_r{r}" for r, c in zip(st["row"], st["col"])],
        "project": project.name,
        "col": st["col"].astype(np.int32),
        "row": st["row"].astype(np.int32),
        "crs": f"EPSG:{epsg}",
        "x0": x0,
        "y0": y0,
        "landcover": [lc_names[i] for i in st["lc_label"]],
        "slope_class": [sl_names[i] if i >= 0 else None for i in st["slope_label"]],
        "class_fraction": st["class_fraction"],
        "slope_mean_deg": st["slope_mean_deg"],
        "eligible": eligible,
        "_lc_label": st["lc_label"],
        "_slope_label": st["slope_label"],
    })
    for i, name in enumerate(lc_names):
        table[f"frac_{name}"] = st["lc_fractions"][:, i]
    return ProjectFrame(project, grid, boundary, boundary_utm, table, infos, slope_source)
