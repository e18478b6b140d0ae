"""Raster side of the build: plan → :class:`~.tasks.RasterShardTask` list, and the satellite
kind's per-sensor band statistics (``_info.json`` ``band_stats``).

The orchestration (resume, executors, finalise) is :func:`als_datasets.build.run_build`, shared
with the ALS builder; this module only turns a raster plan into shard tasks.
"""

from __future__ import annotations

import math
from pathlib import Path

from als_datasets.kinds.raster.tasks import RasterShardTask

RECORD_KEYS = ("tile_id", "scene", "col", "row", "crs", "x0", "y0", "x1", "y1", "lon", "lat", "continent",
               "continent_rule", "biome", "biome_rule", "landcover", "draw_rank", "weight", "split")


def _plain(v):
    """numpy / pandas scalars → python; NaN / NA → None."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    try:
        if isinstance(v, float) and math.isnan(v):
            return None
    except TypeError:
        pass
    if v.__class__.__name__ == "NAType":
        return None
    return v


def raster_shard_tasks(plan, out: Path) -> list[RasterShardTask]:
    r = plan.recipe
    frame = plan.frame
    recs = {}
    for row in frame[frame["selected"]][list(RECORD_KEYS)].itertuples(index=False):
        d = {k: _plain(v) for k, v in zip(RECORD_KEYS, row)}
        recs[d["tile_id"]] = d
    scenes = {s.name: s for s in plan.frames}
    commons = plan.meta["common_bands"]
    norms = plan.meta.get("entropy_norms") or {}
    tasks = []
    for spec in plan.shards:
        records = tuple(recs[k] for k in spec.keys)
        names = list(dict.fromkeys(rec["scene"] for rec in records))
        tasks.append(RasterShardTask(
            index=spec.index, split=spec.split, records=records, out_dir=str(out), formats=r.formats, kind=r.kind,
            scenes=tuple(scenes[n] for n in names), common_bands=tuple(tuple(commons[n]) for n in names),
            patch_px=r.patch_px, stride_px=r.stride_px, dtype=plan.meta["dtype"], entropy_bins=r.entropy_bins,
            entropy_base=r.entropy_base, strategy=r.strategy, seed=r.seed,
            entropy_norms=tuple(norms.get(n) for n in names)))
    return tasks


def band_stats(out: Path, entries: list[dict], split: str = "train") -> dict:
    """Per sensor and common band name: pooled mean and std of the valid pixels of ``split``'s
    samples (each sample weighted by its valid pixels), for SatMAE-style normalisation with
    dataset statistics. ``{sensor: {band: {"mean", "std", "samples"}}}``; sensor ``"unknown"``
    when a scene declares none."""
    from als_datasets.dataset.layout import read_sample_meta

    fmt = "parquet" if any(e["format"] == "parquet" for e in entries) else "webdataset"
    acc: dict[tuple[str, str], list[float]] = {}
    for e in entries:
        if e["format"] != fmt or e["split"] != split:
            continue
        for m in read_sample_meta(out, e):
            w = (1.0 - float(m.get("nodata_fraction") or 0.0)) * float(m["patch_size_px"]) ** 2
            for band, mu, sd in zip(m["common_bands"], m.get("band_mean") or [], m.get("band_std") or []):
                if mu is None or sd is None or w <= 0:
                    continue
                a = acc.setdefault((m.get("sensor") or "unknown", band), [0.0, 0.0, 0.0, 0])
                a[0] += w
                a[1] += w * mu
                a[2] += w * (sd * sd + mu * mu)
                a[3] += 1
    stats: dict[str, dict] = {}
    for (sensor, band), (w, s1, s2, n) in sorted(acc.items()):
        mean = s1 / w
        stats.setdefault(sensor, {})[band] = {"mean": round(mean, 6), "std": round(math.sqrt(max(s2 / w - mean * mean, 0.0)), 6),
                                              "samples": n}
    return stats
