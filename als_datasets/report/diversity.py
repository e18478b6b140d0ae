"""Diversity report of one build (DESIGN.md §7): label entropies, stratum coverage, distributions.

Pure functions over DataFrames (:func:`label_stats`, :func:`distribution_stats`,
:func:`diversity`) plus :func:`write_diversity` / :func:`load_diversity`, which read a build
folder (``index.parquet``, optional ``frame.parquet``, ``manifest.json``) and write / read
``report/diversity.json``.

Columns are handled generically: the build's kind names its label and distribution columns
(:attr:`als_datasets.registry.Kind.label_columns`, ``distribution_columns``), and every one of
them that the index has is reported, so an ALS build (landcover, slope_class, stratum,
point_count, height/intensity entropy ...) and a satellite build (continent, biome,
spectral_entropy, cloud/nodata fractions ...) go through the same code.

Entropies use :mod:`als_datasets.stats` (Shannon entropy in nats).  The normalised entropy of a
sample's labels divides by ln K_frame, the number of labels of the eligible frame (what a draw
could have hit), not by ln of the labels it happens to hold: two evenly used strata out of six
score ln 2 / ln 6, not 1.  Without a frame it falls back to the labels present.
Missing labels (None / NaN) are left out of the counts and counted under ``"missing"``;
non-finite numbers are left out of the distributions the same way.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from als_datasets.stats import normalised_entropy, shannon_entropy

__all__ = [
    "ENTROPY_DEFINITIONS",
    "HISTOGRAM_BINS",
    "REPORT_PATH",
    "SCHEMA",
    "diversity",
    "distribution_stats",
    "frame_strata",
    "label_stats",
    "load_diversity",
    "write_diversity",
]

SCHEMA = "als-datasets/diversity/1"
#: Where :func:`write_diversity` puts the report, relative to the build folder.
REPORT_PATH = Path("report") / "diversity.json"

HISTOGRAM_BINS = 20
_PERCENTILES = (("p05", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95))

#: what every report defines; each kind adds its per-sample measures (``Kind.entropy_definitions``)
ENTROPY_DEFINITIONS = {
    "labels": (
        "Shannon entropy in nats (natural log), H = -sum p ln p over the label proportions; K = the number "
        "of labels present in the sample; normalised = H / ln K_frame with K_frame the number of labels of "
        "the eligible frame (the labels a draw could have hit, plus any sample label the frame lacks), so a "
        "sample using 2 of 6 frame labels evenly scores ln 2 / ln 6; 0 when K_frame <= 1. When the build "
        "has no frame (or the frame lacks the column) K_frame is null and normalised = H / ln K"
    ),
}


def _py(v: Any) -> Any:
    """A JSON-ready python scalar: numpy -> python, NaN / inf / NA -> None."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _label_key(v: Any) -> str:
    v = _py(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def label_stats(values: pd.Series, frame_labels=None) -> dict:
    """Counts, proportions and Shannon entropy of a categorical column.

    ``{"counts": {label: n} sorted by label, "proportions": {label: p}, "entropy": H (nats),
    "K": labels present, "K_frame": labels the sample could have had, "normalised": H / ln K_frame
    (0 when K_frame <= 1), "n": labelled values, "missing": None / NaN values left out}``.
    Labels are written as strings (JSON keys).

    ``frame_labels``: the labels of the frame the sample was drawn from (any iterable; None /
    NaN ignored).  K_frame is the number of them, together with any sample label they lack;
    without them (None) K_frame is None and ``normalised`` falls back to H / ln K.
    """
    s = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    missing = int(s.isna().sum())
    s = s.dropna()
    counts: dict[str, int] = {}
    for v, c in s.map(_label_key).value_counts(sort=False).items():
        counts[str(v)] = counts.get(str(v), 0) + int(c)
    counts = {k: counts[k] for k in sorted(counts)}
    n = int(sum(counts.values()))
    arr = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    k_frame = None
    if frame_labels is not None:
        fl = frame_labels if isinstance(frame_labels, pd.Series) else pd.Series(list(frame_labels), dtype=object)
        k_frame = len({_label_key(v) for v in fl.dropna().unique()} | set(counts))
    return {
        "counts": counts,
        "proportions": {k: c / n for k, c in counts.items()} if n else {},
        "entropy": shannon_entropy(arr),
        "K": len(counts),
        "K_frame": k_frame,
        "normalised": normalised_entropy(arr, k_frame),
        "n": n,
        "missing": missing,
    }


def distribution_stats(values: pd.Series, bins: int = HISTOGRAM_BINS) -> dict:
    """Summary of a numeric column over its finite values.

    ``{"n", "missing", "mean", "std" (population, ddof=0), "min", "p05", "p25", "median", "p75",
    "p95", "max", "histogram": {"edges": [bins + 1], "counts": [bins]}}``; the statistics are
    None (and the histogram empty) when there is no finite value.
    """
    v = pd.to_numeric(pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values,
                      errors="coerce")
    arr = v.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"n": int(finite.size), "missing": int(arr.size - finite.size)}
    keys = ["mean", "std", "min", *(k for k, _ in _PERCENTILES), "max"]
    if finite.size == 0:
        out.update(dict.fromkeys(keys))
        out["histogram"] = {"edges": [], "counts": []}
        return out
    pct = np.percentile(finite, [q for _, q in _PERCENTILES])
    out["mean"] = float(finite.mean())
    out["std"] = float(finite.std())
    out["min"] = float(finite.min())
    out.update({k: float(p) for (k, _), p in zip(_PERCENTILES, pct, strict=True)})
    out["max"] = float(finite.max())
    counts, edges = np.histogram(finite, bins=bins)
    out["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


def _eligible(frame: pd.DataFrame) -> pd.DataFrame:
    if "eligible" not in frame.columns:
        return frame
    return frame[frame["eligible"].fillna(False).astype(bool)]


def frame_strata(frame: pd.DataFrame) -> pd.Series | None:
    """The stratum of every eligible frame tile: ``f"{landcover}/{slope_class}"`` when the frame
    has both columns, else its own ``stratum`` column, else None."""
    el = _eligible(frame)
    if {"landcover", "slope_class"} <= set(el.columns):
        ok = el["landcover"].notna() & el["slope_class"].notna()
        lc = el["landcover"].map(_label_key)
        sc = el["slope_class"].map(_label_key)
        return (lc + "/" + sc).where(ok)
    if "stratum" in el.columns:
        return el["stratum"]
    return None


def _coverage(index: pd.DataFrame, frame: pd.DataFrame | None) -> dict | None:
    if frame is None or "stratum" not in index.columns:
        return None
    fs = frame_strata(frame)
    if fs is None:
        return None
    in_frame = {_label_key(v) for v in fs.dropna()}
    sampled = {_label_key(v) for v in index["stratum"].dropna()}
    reached = in_frame & sampled
    return {
        "strata_in_frame": len(in_frame),
        "strata_reached": len(reached),
        "fraction": len(reached) / len(in_frame) if in_frame else None,
        "missing": sorted(in_frame - sampled),
        "outside_frame": sorted(sampled - in_frame),
    }


def _infer_kind(index: pd.DataFrame) -> str | None:
    from als_datasets.registry import infer_kind

    return infer_kind(index.columns)


def diversity(index: pd.DataFrame, frame: pd.DataFrame | None = None, meta: dict | None = None) -> dict:
    """The diversity report of a build as a JSON-ready dict (see the module docstring).

    ``index``: one row per sample; ``frame``: every candidate tile (optional; its eligible tiles
    give the ``"frame"`` label stats and the stratum coverage); ``meta``: the manifest (name,
    kind, strategy, seed, samples_per_project; each None when absent).
    """
    from als_datasets.registry import report_columns

    meta = dict(meta or {})
    kind = _py(meta.get("kind")) or _infer_kind(index)
    columns = report_columns(kind)
    if "split" in index.columns:
        vc = index["split"].dropna().map(_label_key).value_counts()
        splits = {k: int(vc[k]) for k in sorted(vc.index)}
    else:
        splits = {str(k): int(v) for k, v in sorted((meta.get("splits") or {}).items())}
    eligible = _eligible(frame) if frame is not None else None
    labels: dict[str, dict] = {}
    for col in columns["label"]:
        if col not in index.columns or (len(index) and index[col].isna().all()):  # a layer the recipe did not give
            continue
        in_frame = None  # the eligible frame's labels: what a draw could have hit
        if frame is not None:
            in_frame = frame_strata(frame) if col == "stratum" else eligible.get(col)
        fr = label_stats(in_frame, in_frame) if in_frame is not None else None
        labels[col] = {**label_stats(index[col], in_frame), "frame": fr}
    return {
        "schema": SCHEMA,
        "name": _py(meta.get("name")),
        "kind": kind,
        "strategy": _py(meta.get("strategy")),
        "seed": _py(meta.get("seed")),
        "samples_per_project": _py(meta.get("samples_per_project")),
        "num_samples": int(len(index)),
        "splits": splits,
        "labels": labels,
        "coverage": _coverage(index, frame),
        "distributions": {c: distribution_stats(index[c]) for c in columns["distribution"] if c in index.columns},
        "entropy_definitions": {**ENTROPY_DEFINITIONS, **columns["definitions"]},
    }


def _read_build(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    out = Path(out_dir)
    index = pd.read_parquet(out / "index.parquet")
    frame_path = out / "frame.parquet"
    frame = pd.read_parquet(frame_path) if frame_path.exists() else None
    manifest_path = out / "manifest.json"
    meta = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    return index, frame, meta


def _dumps(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"


def write_diversity(out_dir: str | os.PathLike) -> dict:
    """Compute the report of the build in ``out_dir`` and write ``OUT/report/diversity.json``."""
    from als_datasets.shards.writer import atomic_write

    report = diversity(*_read_build(out_dir))
    data = _dumps(report).encode("utf-8")
    atomic_write(Path(out_dir) / REPORT_PATH, lambda f: f.write(data))
    return report


def load_diversity(out_dir: str | os.PathLike) -> dict:
    """``OUT/report/diversity.json`` if present, else the report computed (not written)."""
    path = Path(out_dir) / REPORT_PATH
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return diversity(*_read_build(out_dir))
