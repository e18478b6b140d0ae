"""Raster shard tasks: one shard of satellite or DEM patches, written by the same machinery as the
ALS tiles (:func:`als_datasets.shards.tasks.run_shard_task`: tar and Parquet in lockstep,
atomic, byte-deterministic).

A task holds the selected patches' frame records and the scenes they come from; it reads each
patch by window (:func:`~als_datasets.kinds.raster.scenes.read_patches`), sets pixels without valid data
to 0 (satellite) or NaN (DEM), casts to the dataset's dtype and recomputes the per-sample
statistics from the pixels actually written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from als_datasets.kinds.raster.scenes import Scene, read_cloud, read_patches, scene_env
from als_datasets.registry import get_kind
from als_datasets.shards.tasks import ShardOutputs


def raster_features(json_schema: dict, dtype: str, patch_px: int):
    """Declared features: ``pixels.npy`` (C, P, P) with C variable (sensors differ), and ``json``."""
    from als_datasets.dataset.features import features_for_samples

    example = {"__key__": "x", "json": None, "pixels.npy": np.zeros((1, patch_px, patch_px), dtype=dtype)}
    return features_for_samples(example, json_schema=json_schema,
                                array_shapes={"pixels.npy": (None, patch_px, patch_px)})


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
    #: per scene (same order as ``scenes``): dataset-wide (lo, hi) per band for the entropy, or None
    entropy_norms: tuple = ()

    def features(self):
        return raster_features(get_kind(self.kind).json_schema(), self.dtype, self.patch_px)

    def make_sample(self, rec: dict, handles: dict | None = None) -> dict:
        i = [s.name for s in self.scenes].index(rec["scene"])
        scene, common = self.scenes[i], list(self.common_bands[i])
        cell = [(int(rec["col"]), int(rec["row"]))]
        with scene_env(scene):
            pix, valid = read_patches(scene, cell, self.patch_px, self.stride_px, handles)
            cloud = read_cloud(scene, cell, self.patch_px, self.stride_px, handles)
        if cloud is None:
            cloud = get_kind(self.kind).pixel_cloud(scene, pix, valid)
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
        norm = self.entropy_norms[i] if self.entropy_norms else None
        meta.update(get_kind(self.kind).scene_meta(scene))
        out, stats = get_kind(self.kind).sample_pixels(pix, valid, self,
                                                       norm=None if norm is None else np.asarray(norm))
        meta.update(stats)
        return {"__key__": rec["tile_id"], "pixels.npy": np.ascontiguousarray(out), "json": meta}

    def iter_samples(self) -> Iterator[dict]:
        handles: dict = {}  # band files stay open for the shard (one header fetch per remote file)
        try:
            for rec in self.records:
                yield self.make_sample(rec, handles)
        finally:
            for ds in handles.values():
                ds.close()

    def fingerprint_data(self) -> dict:
        """What this shard's bytes depend on (the build's resume check compares it)."""
        return {
            "index": self.index, "split": self.split, "records": list(self.records), "formats": list(self.formats),
            "kind": self.kind, "scenes": [_scene_facts(s) for s in self.scenes],
            "common_bands": [list(c) for c in self.common_bands], "patch_px": self.patch_px,
            "stride_px": self.stride_px, "dtype": self.dtype, "entropy": [self.entropy_bins, self.entropy_base],
            "entropy_norms": [None if n is None else [list(x) for x in n] for n in self.entropy_norms],
            "strategy": self.strategy, "seed": self.seed, "row_group_size": self.row_group_size,
        }


def _file_stamp(path) -> list:
    """Which version of a band / mask file: [size, mtime_ns] (empty for a path that is not a local
    file, e.g. a GDAL ``/vsi...`` path)."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return []
    return [st.st_size, st.st_mtime_ns]


def _scene_facts(s) -> dict:
    return {
        "name": s.name, "bands": [[b.name, b.path, b.band_index, _file_stamp(b.path)] for b in s.bands],
        "crs": s.crs.to_wkt(),
        "transform": list(s.transform)[:6], "size": [s.width, s.height], "res": s.res, "dtype": s.dtype,
        "nodata": None if s.nodata is None or s.nodata != s.nodata else s.nodata, "zero": s.zero_is_nodata,
        "cloud": None if s.cloud_mask is None else [s.cloud_mask.path, s.cloud_mask.band_index,
                                                    list(s.cloud_classes), _file_stamp(s.cloud_mask.path),
                                                    list(s.cloud_bits)],
        "product": s.product,
        "sensor": s.sensor, "date": s.date,
    }
