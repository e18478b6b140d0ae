"""The DEM kind: one-band elevation rasters → float32 patches (NaN where the DEM has no data)
with their mean elevation and relief, for a DEM MAE (arXiv 2309.03367)."""

from __future__ import annotations

import numpy as np

from als_datasets.errors import InputError
from als_datasets.kinds.raster.kind import RasterKind, json_float


class DemKind(RasterKind):
    name = "dem"
    default_strategy = "random"
    default_dtype = "float32"
    refused_strategies = {"spectral": "needs multispectral scenes (kind: satellite)"}
    frame_stats = ("elevation_mean", "relief_m")
    sample_stats = {"elevation_mean": float, "elevation_min": float, "elevation_max": float, "relief_m": float}
    index_stats = ("elevation_mean", "relief_m")
    signature_column = "relief_m"
    distribution_columns = ("nodata_fraction", "elevation_mean", "relief_m")
    compare_columns = RasterKind.compare_columns + ("relief_m_mean",)
    what = "elevation (DEM) patches"
    tags = ("dem", "elevation")
    citation_keys = ("pretrain-where", "dem-mae")
    model_text = "a DEM MAE, arXiv 2309.03367"

    def demo_recipe(self, seed: int):
        from als_datasets.demo import ensure_dem_demo

        return ensure_dem_demo(seed=seed)

    def band_names(self, scene, spec: dict) -> list[str]:
        if len(scene.bands) != 1:
            raise InputError(scene.bands[0].path, f"a DEM scene must have one band, this one has {len(scene.bands)} "
                                                  "(name the elevation band with 'bands: [<name>]')")
        return ["elevation"]

    def patch_stats(self, pix, valid, recipe_like) -> dict[str, np.ndarray]:
        n = len(pix)
        z = np.where(valid[:, None], pix.astype(np.float64), np.nan).reshape(n, -1)
        with np.errstate(all="ignore"):
            has = valid.reshape(n, -1).any(axis=1)
            mean = np.where(has, np.nanmean(np.where(has[:, None], z, 0.0), axis=1), np.nan)
            relief = np.where(has, np.nanmax(np.where(has[:, None], z, 0.0), axis=1)
                              - np.nanmin(np.where(has[:, None], z, 0.0), axis=1), np.nan)
        return {"elevation_mean": mean, "relief_m": relief}

    def sample_pixels(self, pix, valid, task, norm=None) -> tuple[np.ndarray, dict]:
        v = valid[0]
        z = pix[0].astype(np.float32)
        z[:, ~v] = np.nan
        ok = z[0][v]
        meta = {
            "elevation_mean": json_float(ok.mean()) if ok.size else None,
            "elevation_min": json_float(ok.min()) if ok.size else None,
            "elevation_max": json_float(ok.max()) if ok.size else None,
            "relief_m": json_float(ok.max() - ok.min()) if ok.size else None,
        }
        return z.astype(task.dtype, copy=False), meta

    def pixels_text(self, dtype: str) -> str:
        return "float32 (1, H, W): elevation in metres, NaN where the DEM has no data"
