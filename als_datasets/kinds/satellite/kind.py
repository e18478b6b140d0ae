"""The satellite kind: scenes of several bands → patches scored by spectral entropy (the
*Pretrain Where?* signal), stored in the scenes' units with per-band statistics for SatMAE-style
normalisation (``_info.json`` ``band_stats``)."""

from __future__ import annotations

import numpy as np

from als_datasets.kinds.raster.entropy import spectral_entropy
from als_datasets.kinds.raster.kind import RasterKind, json_float


class SatelliteKind(RasterKind):
    name = "satellite"
    default_strategy = "global"
    frame_stats = ("spectral_entropy",)
    sample_stats = {"spectral_entropy": float, "band_mean": [float], "band_std": [float]}
    index_stats = ("spectral_entropy", "cloud_fraction")
    signature_column = "spectral_entropy"
    distribution_columns = ("spectral_entropy", "cloud_fraction", "nodata_fraction")
    entropy_columns = ("spectral_entropy",)
    entropy_definitions = {
        "spectral_entropy": (
            "per sample: per band, Shannon entropy (nats) of the band after SatMAE-style normalisation "
            "(clip to mean +/- 2 sigma, scale to 0-255) in 256 bins over 0-255, mean over bands; "
            "the paper's exact binning is not published (bins and log base are configurable)"
        ),
    }
    compare_columns = RasterKind.compare_columns[:-1] + ("spectral_entropy_mean", "cloud_fraction_mean",
                                                          "nodata_fraction_mean")
    what = "multispectral satellite patches"
    tags = ("satellite-imagery", "multispectral")
    model_text = "e.g. SatMAE"

    def demo_recipe(self, seed: int):
        from als_datasets.demo import ensure_satellite_demo

        return ensure_satellite_demo(seed=seed)

    def band_names(self, scene, spec: dict) -> list[str]:
        from als_datasets.kinds.raster.frame import common_band_names

        return common_band_names(scene, spec.get("common_bands"))

    def patch_stats(self, pix, valid, recipe_like) -> dict[str, np.ndarray]:
        return {"spectral_entropy": spectral_entropy(pix, valid, bins=recipe_like.entropy_bins,
                                                     base=recipe_like.entropy_base)}

    def sample_pixels(self, pix, valid, task) -> tuple[np.ndarray, dict]:
        v = valid[0]
        meta = {"spectral_entropy": float(spectral_entropy(pix, valid, bins=task.entropy_bins,
                                                           base=task.entropy_base)[0])}
        ok = pix[0][:, v].astype(np.float64)  # (C, valid pixels): per-band statistics for normalisation
        meta["band_mean"] = [json_float(x) for x in ok.mean(axis=1)] if ok.shape[1] else [None] * len(ok)
        meta["band_std"] = [json_float(x) for x in ok.std(axis=1)] if ok.shape[1] else [None] * len(ok)
        return np.where(v[None], pix[0], 0).astype(task.dtype, copy=False), meta

    def info_fields(self, plan, out, entries) -> dict:
        from als_datasets.kinds.raster.build import band_stats

        return {**super().info_fields(plan, out, entries), "band_stats": band_stats(out, entries)}

    def pixels_text(self, dtype: str) -> str:
        return (f"{dtype} (C, H, W): the scene's bands, in the order of the sample's json.common_bands; C is "
                "fixed per sensor, not per dataset (each sensor's layout: `band_layouts` in _info.json and "
                "manifest.json); 0 where a pixel has no valid data")

    def entropy_note(self, recipe: dict, div: dict) -> str:
        from als_datasets.report.card import fmt

        ent = recipe.get("spectral_entropy") or {}
        return (f"Per-sample spectral entropy: per band, the valid pixels clipped to mean ± 2σ and scaled to "
                f"0–255 (SatMAE-style), histogrammed in {ent.get('bins', 256)} bins, Shannon entropy in log base "
                f"{ent.get('base', 'e')}; the sample's value is the mean over bands. The paper's exact binning "
                f"is not published. Mean over samples: "
                f"{fmt((div.get('distributions') or {}).get('spectral_entropy', {}).get('mean'))}.")
