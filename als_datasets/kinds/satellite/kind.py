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
    entropy_pass = True
    frame_stats = ("spectral_entropy",)
    sample_stats = {"spectral_entropy": float, "band_mean": [float], "band_std": [float]}
    index_stats = ("spectral_entropy", "cloud_fraction")
    signature_column = "spectral_entropy"
    distribution_columns = ("spectral_entropy", "cloud_fraction", "nodata_fraction")
    entropy_columns = ("spectral_entropy",)
    entropy_definitions = {
        "spectral_entropy": (
            "per sample: per band, Shannon entropy (nats) of the band after SatMAE-style normalisation "
            "(clip to mean +/- 2 sigma of the sensor's band over the dataset, or of the patch itself with "
            "normalise: patch; scale to 0-255) in 256 bins over 0-255, mean over bands; "
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
                                                     base=recipe_like.entropy_base, norm=recipe_like.entropy_norm)}

    def sample_pixels(self, pix, valid, task, norm=None) -> tuple[np.ndarray, dict]:
        v = valid[0]
        meta = {"spectral_entropy": float(spectral_entropy(pix, valid, bins=task.entropy_bins,
                                                           base=task.entropy_base, norm=norm)[0])}
        ok = pix[0][:, v].astype(np.float64)  # (C, valid pixels): per-band statistics for normalisation
        meta["band_mean"] = [json_float(x) for x in ok.mean(axis=1)] if ok.shape[1] else [None] * len(ok)
        meta["band_std"] = [json_float(x) for x in ok.std(axis=1)] if ok.shape[1] else [None] * len(ok)
        return np.where(v[None], pix[0], 0).astype(task.dtype, copy=False), meta

    def info_fields(self, plan, out, entries) -> dict:
        from als_datasets.kinds.raster.build import band_stats

        return {**super().info_fields(plan, out, entries), "band_stats": band_stats(out, entries),
                "entropy_band_stats": plan.meta.get("entropy_stats")}

    def pixels_text(self, dtype: str) -> str:
        return f"{dtype} (C, H, W): the scene's bands (C varies by sensor), 0 where a pixel has no valid data"

    def entropy_note(self, recipe: dict, div: dict) -> str:
        from als_datasets.report.card import fmt

        ent = recipe.get("spectral_entropy") or {}
        if ent.get("normalise", "patch") == "dataset":
            how = (f"the valid pixels clipped to mean ± 2σ of that sensor's band over the dataset (a seeded first "
                   f"pass over up to {ent.get('sample_patches', 64)} patches per scene; `_info.json` "
                   f"`entropy_band_stats`)")
        else:
            how = "the valid pixels clipped to the patch's own mean ± 2σ"
        return (f"Per-sample spectral entropy: per band, {how} and scaled to "
                f"0–255 (SatMAE-style), histogrammed in {ent.get('bins', 256)} bins, Shannon entropy in log base "
                f"{ent.get('base', 'e')}; the sample's value is the mean over bands. The paper's exact binning "
                f"is not published. Mean over samples: "
                f"{fmt((div.get('distributions') or {}).get('spectral_entropy', {}).get('mean'))}.")
