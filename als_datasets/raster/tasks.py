"""Raster shard tasks: one shard of satellite or DEM patches, written by the same machinery as the
ALS tiles (:func:`als_datasets.shards.tasks.run_shard_task`: tar and Parquet in lockstep,
atomic, byte-deterministic).

A task holds the selected patches' frame records and the scenes they come from; it reads each
patch by window (:func:`~als_datasets.raster.scenes.read_patches`), sets pixels without valid data
to 0 (satellite) or NaN (DEM), casts to the dataset's dtype and recomputes the per-sample
statistics from the pixels actually written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..shards.tasks import ShardOutputs
from .entropy import spectral_entropy
from .scenes import Scene, read_cloud, read_patches

COMMON_JSON = {
    "scene": str, "sensor": str, "date": str, "tile_id": str, "split": str, "crs": str, "bounds": [float],
    "col": int, "row": int, "patch_size_px": int, "resolution": float, "lon": float, "lat": float,
    "bands": [str], "common_bands": [str], "continent": str, "continent_rule": str, "biome": str,
    "biome_rule": str, "landcover": str, "cloud_fraction": float, "nodata_fraction": float,
    "strategy": str, "draw_rank": int, "weight": float, "seed": int,
}
SATELLITE_JSON = {**COMMON_JSON, "spectral_entropy": float, "band_mean": [float], "band_std": [float]}
DEM_JSON = {**COMMON_JSON, "elevation_mean": float, "elevation_min": float, "elevation_max": float,
            "relief_m": float}


def raster_json_schema(kind: str) -> dict:
    return dict(DEM_JSON if kind == "dem" else SATELLITE_JSON)


def raster_features(kind: str, dtype: str, patch_px: int):
    """Declared features: ``pixels.npy`` (C, P, P) with C variable (sensors differ), and ``json``."""
    from ..dataset.features import features_for_samples

    example = {"__key__": "x", "json": None, "pixels.npy": np.zeros((1, patch_px, patch_px), dtype=dtype)}
    return features_for_samples(example, json_schema=raster_json_schema(kind),
                                array_shapes={"pixels.npy": (None, patch_px, patch_px)})


def _f(x) -> float | None:
    """JSON-safe float (the tar's json refuses NaN): NaN → None."""
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class RasterShardTask(ShardOutputs):
    index: int
    split: str
    records: tuple[dict, ...]  # frame rows of the selected patches (plain python values)
    out_dir: str
    formats: tuple[str, ...]
    kind: str
    scenes: tuple[Scene, ...]
    common_bands: tuple[tuple[str, ...], ...]  # per scene, same order as ``scenes``
    patch_px: int
    stride_px: int
    dtype: str
    entropy_bins: int
    entropy_base: float
    strategy: str
    seed: int
    row_group_size: int = 16

    def features(self):
        return raster_features(self.kind, self.dtype, self.patch_px)

    def make_sample(self, rec: dict) -> dict:
        i = [s.name for s in self.scenes].index(rec["scene"])
        scene, common = self.scenes[i], list(self.common_bands[i])
        cell = [(int(rec["col"]), int(rec["row"]))]
        pix, valid = read_patches(scene, cell, self.patch_px, self.stride_px)
        cloud = read_cloud(scene, cell, self.patch_px, self.stride_px)
        v = valid[0]
        meta = {
            "scene": scene.name, "sensor": scene.sensor, "date": scene.date, "tile_id": rec["tile_id"],
            "split": rec["split"], "crs": rec["crs"], "bounds": [float(rec[k]) for k in ("x0", "y0", "x1", "y1")],
            "col": cell[0][0], "row": cell[0][1], "patch_size_px": self.patch_px, "resolution": float(scene.res),
            "lon": float(rec["lon"]), "lat": float(rec["lat"]),
            "bands": list(scene.band_names), "common_bands": common,
            "continent": rec["continent"], "continent_rule": rec["continent_rule"],
            "biome": rec["biome"], "biome_rule": rec["biome_rule"], "landcover": rec["landcover"],
            "cloud_fraction": None if cloud is None else float(cloud[0].mean()),
            "nodata_fraction": float(1.0 - v.mean()),
            "strategy": self.strategy, "draw_rank": int(rec["draw_rank"]), "weight": float(rec["weight"]),
            "seed": self.seed,
        }
        if self.kind == "dem":
            z = pix[0].astype(np.float32)
            z[:, ~v] = np.nan
            ok = z[0][v]
            meta.update({
                "elevation_mean": _f(ok.mean()) if ok.size else None,
                "elevation_min": _f(ok.min()) if ok.size else None,
                "elevation_max": _f(ok.max()) if ok.size else None,
                "relief_m": _f(ok.max() - ok.min()) if ok.size else None,
            })
            out = z.astype(self.dtype, copy=False)
        else:
            meta["spectral_entropy"] = float(spectral_entropy(pix, valid, bins=self.entropy_bins,
                                                              base=self.entropy_base)[0])
            ok = pix[0][:, v].astype(np.float64)  # (C, valid pixels): per-band statistics for normalisation
            meta["band_mean"] = [_f(x) for x in ok.mean(axis=1)] if ok.shape[1] else [None] * len(ok)
            meta["band_std"] = [_f(x) for x in ok.std(axis=1)] if ok.shape[1] else [None] * len(ok)
            out = np.where(v[None], pix[0], 0).astype(self.dtype, copy=False)
        return {"__key__": rec["tile_id"], "pixels.npy": np.ascontiguousarray(out), "json": meta}

    def iter_samples(self) -> Iterator[dict]:
        return (self.make_sample(rec) for rec in self.records)

    def fingerprint_data(self) -> dict:
        from .build import fingerprint_data

        return fingerprint_data(self)
