"""Side-by-side comparison of the diversity reports of several builds.

:func:`compare_table` puts one build per row (label entropies, normalised entropies, K and K_frame,
stratum coverage, distribution means), :func:`differences` subtracts a baseline row, and
:func:`format_table` / :func:`format_markdown` render a table for the terminal / dataset card.
:func:`compare_builds` does it all from build folders, labelling rows by folder name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from als_datasets.registry import report_columns
from als_datasets.report.diversity import load_diversity

__all__ = ["compare_builds", "compare_table", "differences", "format_markdown", "format_table"]

_INT_COLUMNS_SUFFIXES = ("_K", "_K_frame")
_INT_COLUMNS = ("samples_per_project", "num_samples")


def _ordered(found: set[str], known: Sequence[str]) -> list[str]:
    return [c for c in known if c in found] + sorted(found - set(known))


def _default_labels(reports: Sequence[dict]) -> list[str]:
    names = [str(r.get("label") or r.get("name") or f"build{i}") for i, r in enumerate(reports)]
    if len(set(names)) == len(names):
        return names
    # same dataset name built several ways (e.g. one recipe, two strategies): say how
    names = [
        f"{n} ({r.get('strategy')}, {r.get('samples_per_project')}/project)"
        if names.count(n) > 1 else n
        for n, r in zip(names, reports, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} #{seen[n]}")
    return out


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def compare_table(reports: list[dict], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per report: ``label, strategy, samples_per_project, num_samples``, then for each
    label column present in any report ``<col>_entropy, <col>_normalised, <col>_K, <col>_K_frame``
    (normalised = H / ln K_frame, K_frame the labels of the eligible frame; see
    :func:`als_datasets.report.diversity.label_stats`), then
    ``strata_coverage`` (fraction), then ``<col>_mean`` for each distribution column present in
    any report.  Missing values are NaN (``<NA>`` in the integer columns).  Row order as given;
    ``labels`` default to the reports' names (made unique with strategy / samples per project).
    """
    reports = list(reports)
    if labels is None:
        labels = _default_labels(reports)
    elif len(labels) != len(reports):
        raise ValueError(f"{len(labels)} labels for {len(reports)} reports")
    known = report_columns(None)  # every kind's columns, in kind order
    label_cols = _ordered({c for r in reports for c in (r.get("labels") or {})}, known["label"])
    dist_cols = _ordered({c for r in reports for c in (r.get("distributions") or {})}, known["distribution"])
    rows = []
    for lab, r in zip(labels, reports, strict=True):
        row: dict[str, Any] = {
            "label": str(lab),
            "strategy": r.get("strategy"),
            "samples_per_project": _num(r.get("samples_per_project")),
            "num_samples": _num(r.get("num_samples")),
        }
        for c in label_cols:
            st = (r.get("labels") or {}).get(c) or {}
            row[f"{c}_entropy"] = _num(st.get("entropy"))
            row[f"{c}_normalised"] = _num(st.get("normalised"))
            row[f"{c}_K"] = _num(st.get("K"))
            row[f"{c}_K_frame"] = _num(st.get("K_frame"))
        cov = r.get("coverage") or {}
        row["strata_coverage"] = _num(cov.get("fraction"))
        for c in dist_cols:
            row[f"{c}_mean"] = _num(((r.get("distributions") or {}).get(c) or {}).get("mean"))
        rows.append(row)
    columns = ["label", "strategy", "samples_per_project", "num_samples"]
    columns += [f"{c}_{s}" for c in label_cols for s in ("entropy", "normalised", "K", "K_frame")]
    columns += ["strata_coverage"] + [f"{c}_mean" for c in dist_cols]
    table = pd.DataFrame(rows, columns=columns)
    for c in columns:
        if c in _INT_COLUMNS or c.endswith(_INT_COLUMNS_SUFFIXES):
            table[c] = table[c].astype("Int64")
    table["strategy"] = table["strategy"].astype(object)
    return table


def differences(table: pd.DataFrame, baseline: int | str = 0) -> pd.DataFrame:
    """``table`` with every numeric column minus the baseline row's (a row position, or a label).

    Non-numeric columns (label, strategy) are kept as they are; the baseline row becomes zeros.
    """
    if isinstance(baseline, str):
        hits = np.flatnonzero(table["label"].astype(str).to_numpy() == baseline)
        if hits.size == 0:
            raise KeyError(f"no build labelled {baseline!r}; labels: {list(table['label'])}")
        pos = int(hits[0])
    else:
        pos = int(baseline)
        if not -len(table) <= pos < len(table):
            raise IndexError(f"baseline row {baseline} out of range for {len(table)} builds")
    out = table.copy()
    for c in table.columns:
        if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]):
            out[c] = table[c] - table[c].iloc[pos]
    return out


def _fmt(v: Any) -> str:
    if v is None or v is pd.NA:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "-" if math.isnan(v) else f"{float(v):.3f}"
    return str(v)


def _cells(table: pd.DataFrame, columns: list[str] | None) -> tuple[list[str], list[list[str]], list[bool]]:
    cols = list(table.columns) if columns is None else list(columns)
    unknown = [c for c in cols if c not in table.columns]
    if unknown:
        raise KeyError(f"unknown columns {unknown}")
    body = [[_fmt(v) for v in row] for row in table[cols].itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]) for c in cols]
    return cols, body, numeric


def format_table(table: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A fixed-width text table (numbers right-aligned, floats to 3 decimals, missing as ``-``)."""
    cols, body, numeric = _cells(table, columns)
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            s.rjust(w) if num else s.ljust(w) for s, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cols), rule] + [line(r) for r in body]) + "\n"


def format_markdown(table: pd.DataFrame, columns: list[str] | None = None) -> str:
    """The same table as Markdown (pipe table, numeric columns right-aligned)."""
    cols, body, numeric = _cells(table, columns)

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(esc(s) for s in r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def compare_builds(out_dirs: Sequence[str | os.PathLike], labels: list[str] | None = None) -> pd.DataFrame:
    """:func:`compare_table` of the builds in ``out_dirs``, labelled by folder name by default."""
    reports = [load_diversity(d) for d in out_dirs]
    if labels is None:
        labels = [Path(d).resolve().name for d in out_dirs]
        if len(set(labels)) != len(labels):
            labels = [str(d) for d in out_dirs]
    return compare_table(reports, labels)
