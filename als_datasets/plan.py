"""Plan: recipe → frame (every candidate sample) → strategy draw → splits → shard specs.

The kind builds the frame and the draw (:meth:`als_datasets.registry.Kind.make_plan`); what
every kind shares is here: the :class:`Plan` it returns, the seeded split of each sample, the
cut of the selected samples into shards and ``frame.parquet``.  Pure and deterministic given
the recipe and its input files.  ``als-datasets plan`` stops at the plan and writes the frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from als_datasets.registry import get_kind


@dataclass
class ShardSpec:
    index: int
    split: str
    keys: list[str]
    est_bytes: int = 0  # the plan's estimate of the shard's WebDataset tar (0: the kind gave none)


@dataclass
class Plan:
    recipe: object  # the kind's resolved recipe
    frames: list  # the kind's per-unit frames (ALS: project frames; raster: scenes)
    frame: object  # GeoDataFrame, every candidate sample of every unit
    shards: list[ShardSpec] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # kind-specific facts (raster: bands, dtype)

    @property
    def selected(self) -> pd.DataFrame:
        return self.frame[self.frame["selected"]]


def split_of(tile_id: str, seed: int, holdout_fraction: float) -> str:
    """Seeded hash of the tile id → ``validation`` with the given probability, else ``train``.

    Stable across builds: it depends on nothing but the id, the seed and the fraction.
    """
    if holdout_fraction <= 0:
        return "train"
    h = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    return "validation" if u < holdout_fraction else "train"


def make_plan(recipe, progress: Callable[[str, int, int], None] | None = None, executor=None) -> Plan:
    """The recipe's kind frames, draws and cuts it into shards.  ``executor`` (optional) maps the
    kind's frame tasks in parallel (the frame is the same either way)."""
    return get_kind(recipe.kind, recipe.path).make_plan(recipe, progress, executor)


def shard_specs(frame, shard_max_samples: int, group: str, shard_max_bytes: int | None = None,
                sample_bytes=None) -> list[ShardSpec]:
    """Selected samples per split, ordered by (``group`` column in frame order, draw rank), cut
    into shards: a shard ends before the sample that would take it past ``shard_max_samples``
    samples or past ``shard_max_bytes`` estimated bytes.  A sample estimated at more than
    ``shard_max_bytes`` on its own makes a shard of its own.

    ``sample_bytes``: the kind's estimate of each frame row's bytes in a WebDataset tar (aligned
    with ``frame``'s rows; only the selected rows are read), made in the plan from headers, never
    from the data, so the cut is decided before any sample is read.  Without it (or without
    ``shard_max_bytes``) only the sample bound applies."""
    if sample_bytes is not None:
        frame = frame.assign(_est_bytes=np.nan_to_num(np.asarray(sample_bytes, dtype=np.float64)))
    sel = frame[frame["selected"]]
    order = {p: i for i, p in enumerate(dict.fromkeys(frame[group]))}
    specs: list[ShardSpec] = []
    for split in sorted(set(sel["split"]), key=lambda s: (s != "train", s)):
        s = sel[sel["split"] == split]
        s = s.assign(_p=s[group].map(order)).sort_values(["_p", "draw_rank"], kind="stable")
        keys = list(s["tile_id"])
        est = [int(max(b, 0)) for b in s["_est_bytes"]] if sample_bytes is not None else [0] * len(keys)
        limit = shard_max_bytes if sample_bytes is not None and shard_max_bytes else None
        cut: list[ShardSpec] = []
        for key, b in zip(keys, est):
            last = cut[-1] if cut else None
            if last is None or len(last.keys) >= shard_max_samples or (limit is not None and last.est_bytes + b > limit):
                last = ShardSpec(len(cut), split, [], 0)
                cut.append(last)
            last.keys.append(key)
            last.est_bytes += b
        specs += cut
    return specs


def write_frame(plan: Plan, path) -> None:
    """``frame.parquet``: GeoParquet, every candidate tile (deterministic bytes)."""
    from als_datasets.shards.writer import atomic_write

    df = typed_empty_columns(plan.frame.copy())
    df["draw_rank"] = df["draw_rank"].astype("Int64")
    atomic_write(path, lambda f: df.to_parquet(f, index=False, compression="zstd"))


def typed_empty_columns(df):
    """Label columns with no value at all (no biome or land-cover layer given) as strings of
    nulls, never Arrow's ``null`` type, which readers type differently (DuckDB ``NULL`` or
    ``INTEGER``, GDAL ``int32``).  Returns ``df`` (changed in place)."""
    geometry = getattr(df, "_geometry_column_name", None)
    for col in df.columns:
        if col != geometry and df[col].dtype == object and df[col].isna().all():
            df[col] = df[col].astype("string")
    return df
