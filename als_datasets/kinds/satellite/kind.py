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
    scene_fields = {"dates": [str], "product_id": str, "processing_level": str, "metadata_source": str,
                    "scene_cloud_cover": float, "band_scale": [float], "band_offset": [float], "cloud_method": str}
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
    cloud_text = ("the scene's mask band: Sentinel-2 SCL classes 3/8/9/10, Landsat QA_PIXEL bits 1-4; without a "
                  "mask a pixel test on the visible, NIR and SWIR bands — see the scenes table")
    tags = ("satellite-imagery", "multispectral")
    citation_keys = ("pretrain-where", "satmae")
    model_text = "e.g. SatMAE"

    def demo_recipe(self, seed: int):
        from als_datasets.demo import ensure_satellite_demo

        return ensure_satellite_demo(seed=seed)

    def band_names(self, scene, spec: dict) -> list[str]:
        from als_datasets.kinds.raster.frame import common_band_names

        return common_band_names(scene, spec.get("common_bands"))

    def scene_specs(self, recipe) -> list[dict]:
        """The recipe's scenes, then those its ``stac:`` section finds in an archive."""
        if not recipe.stac:
            return list(recipe.scenes)
        from als_datasets.kinds.satellite.stac_source import stac_specs

        return list(recipe.scenes) + stac_specs(recipe)

    def open_scene(self, spec: dict):
        """Read the scene's product metadata (:mod:`.metadata`) first: it fills the sensor and date
        the recipe leaves out, and gives per-band scale / offset, cloud cover and dates."""
        import dataclasses
        import logging

        from als_datasets.kinds.satellite.metadata import read_product, scene_product, sensor_label

        spec = dict(spec)
        product = spec.pop("product", None) or read_product(spec["path"])
        product = {**product, "warnings": list(product.get("warnings") or [])}
        if not spec.get("sensor") and sensor_label(product):
            spec["sensor"] = sensor_label(product)
        if not spec.get("date") and product.get("dates"):
            spec["date"] = product["dates"][0]
        if spec.get("cloud_mask") is None and product.get("mask") and product["mask"].get("path"):
            spec["cloud_mask"] = {k: v for k, v in product["mask"].items() if k != "href"}
        from als_datasets.kinds.raster.scenes import scene_env

        urls = list((spec.get("band_urls") or {}).values())
        with scene_env(urls):
            scene = super().open_scene(spec)
            product = scene_product(product, scene, spec)
        if scene.cloud_mask is None:  # screened by the pixel test (.clouds)
            from als_datasets.kinds.satellite.clouds import screen_setup

            product["screen"] = screen_setup(self.band_names(scene, spec), product["band_scale"],
                                             product["band_offset"], scene.sensor, scene.dtype,
                                             product.get("processing_level"))
        for note in product["warnings"]:
            logging.getLogger("als_datasets").warning("scene %s (%s): %s", scene.name, spec["path"], note)
        return dataclasses.replace(scene, product=product)

    def scene_meta(self, scene) -> dict:
        p = scene.product or {}
        return {"dates": list(p.get("dates") or ([scene.date] if scene.date else [])),
                "product_id": p.get("product_id"), "processing_level": p.get("processing_level"),
                "metadata_source": p.get("source"), "scene_cloud_cover": p.get("cloud_cover"),
                "band_scale": list(p.get("band_scale") or [None] * len(scene.bands)),
                "band_offset": list(p.get("band_offset") or [None] * len(scene.bands)),
                "cloud_method": cloud_method(scene)}

    def pixel_cloud(self, scene, pix, valid):
        from als_datasets.kinds.satellite.clouds import pixel_cloud

        screen = (scene.product or {}).get("screen")
        return None if scene.cloud_mask is not None or not screen else pixel_cloud(pix, valid, screen)

    def scene_notes(self, scene) -> list[str]:
        return list((scene.product or {}).get("warnings") or [])

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

        used = set(plan.selected["scene"]) if len(plan.selected) else set()
        return {**super().info_fields(plan, out, entries), "band_stats": band_stats(out, entries),
                "entropy_band_stats": plan.meta.get("entropy_stats"),
                "scenes": {s.name: scene_record(s) for s in plan.frames if s.name in used}}

    def card_scenes(self, out) -> str:
        from als_datasets.kinds.satellite.card import scenes_markdown

        return scenes_markdown(out)

    def pixels_text(self, dtype: str) -> str:
        return (f"{dtype} (C, H, W): the scene's bands, in the order of the sample's json.common_bands; C is "
                "fixed per sensor, not per dataset (each sensor's layout: `band_layouts` in _info.json and "
                "manifest.json); 0 where a pixel has no valid data")

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


def scene_record(scene) -> dict:
    """What ``_info.json`` ``scenes`` and the card say about one scene."""
    p = scene.product or {}
    return {"sensor": scene.sensor, "dates": list(p.get("dates") or ([scene.date] if scene.date else [])),
            "product_id": p.get("product_id"), "processing_level": p.get("processing_level"),
            "metadata_source": p.get("source"), "metadata_file": p.get("source_file"),
            "scene_cloud_cover": p.get("cloud_cover"), "cloud_method": cloud_method(scene),
            "bands": list(scene.band_names), "band_scale": p.get("band_scale"), "band_offset": p.get("band_offset"),
            "scale_meaning": p.get("scale_meaning"), "nodata": scene.nodata, "warnings": list(p.get("warnings") or [])}


def cloud_method(scene) -> str:
    """How a scene's ``cloud_fraction`` figures were made."""
    m = scene.cloud_mask
    if m is None:
        screen = (scene.product or {}).get("screen")
        if not screen:
            return "none"
        return f"pixel test (brightness, whiteness, HOT, NDVI/NDSI, SWIR; {screen['scaling']})"
    if scene.cloud_bits:
        return f"mask {m.name} bits {','.join(map(str, scene.cloud_bits))}"
    return f"mask {m.name} classes {','.join(map(str, scene.cloud_classes))}"
