"""Charts of a build's labels and entropies, and the plot comparing builds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .style import (
    _MARKERS,
    _labels,
    _metric_label,
    _new_figure,
    _pretty,
    _save,
    _with_stratum,
    category_colors,
    entropy_columns,
    label_columns,
)


def _eligible(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or len(frame) == 0:
        return None
    if "eligible" in frame.columns:
        frame = frame[frame["eligible"].fillna(False).astype(bool)]
    return frame


# --------------------------------------------------------------------------------- label bars
def plot_label_bars(
    index: pd.DataFrame,
    frame: pd.DataFrame | None,
    path,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Per label column, horizontal grouped bars: the proportion of each category in the sample
    (solid, category colour) and in the eligible frame (hatched, light). ``columns`` defaults to
    every column of :func:`~.style.label_columns` present in the index (``("landcover", "slope_class",
    "stratum")`` for an ALS build). The frame's stratum is derived as landcover/slope_class when
    it lacks one."""
    from matplotlib.patches import Patch

    index = _with_stratum(pd.DataFrame(index))
    ref = _eligible(frame)
    ref = _with_stratum(pd.DataFrame(ref)) if ref is not None else None
    cols = [c for c in (columns if columns is not None else label_columns())
            if c in index.columns and (columns is not None or index[c].notna().any())]  # skip layers not given

    if not cols:
        fig = _new_figure(8, 3)
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no label columns in the index", ha="center", va="center", fontsize=11)
        ax.set_axis_off()
        fig.suptitle(title or "Label proportions", fontsize=12)
        return _save(fig, path)

    tables = []
    for col in cols:
        s = _labels(index[col]).value_counts(normalize=True)
        f = (
            _labels(ref[col]).value_counts(normalize=True)
            if ref is not None and col in ref.columns and len(ref)
            else None
        )
        cats = sorted(set(s.index) | (set(f.index) if f is not None else set()))
        tables.append((col, cats, s, f))

    heights = [max(1.3, 0.2 * len(cats) * (2 if f is not None else 1) + 0.75) for _, cats, _, f in tables]
    longest = max(len(c) for _, cats, _, _ in tables for c in cats)
    fig = _new_figure(8.0 + max(0.0, (longest - 18) * 0.05), min(max(5.0, sum(heights) + 1.0), 24))
    axes = fig.subplots(len(tables), 1, squeeze=False, gridspec_kw={"height_ratios": heights}).ravel()
    any_frame = False
    for ax, (col, cats, s, f) in zip(axes, tables):
        colors = category_colors(cats)
        y = np.arange(len(cats))[::-1].astype(float)
        sv = np.array([s.get(c, 0.0) for c in cats])
        if f is not None:
            any_frame = True
            fv = np.array([f.get(c, 0.0) for c in cats])
            h = 0.38
            ax.barh(y + h / 2, sv, height=h, color=[colors[c] for c in cats], edgecolor="#222222", linewidth=0.5)
            ax.barh(y - h / 2, fv, height=h, color=[colors[c] for c in cats], alpha=0.35, hatch="///",
                    edgecolor="#555555", linewidth=0.5)
            vmax = max(sv.max(), fv.max())
            for yy, v in zip(y, sv):
                ax.text(v + 0.01 * max(vmax, 1e-9), yy + h / 2, f"{v:.0%}", va="center", fontsize=7)
            for yy, v in zip(y, fv):
                ax.text(v + 0.01 * max(vmax, 1e-9), yy - h / 2, f"{v:.0%}", va="center", fontsize=7,
                        color="#555555")
        else:
            ax.barh(y, sv, height=0.6, color=[colors[c] for c in cats], edgecolor="#222222", linewidth=0.5)
            vmax = sv.max()
            for yy, v in zip(y, sv):
                ax.text(v + 0.01 * max(vmax, 1e-9), yy, f"{v:.0%}", va="center", fontsize=7)
        ax.set_yticks(y, cats, fontsize=8)
        ax.set_xlim(0, min(1.0, vmax * 1.15 + 0.02) if vmax > 0 else 1.0)
        ax.set_ylim(-0.7, len(cats) - 0.3)
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel(_pretty(col), fontsize=9)
        ax.grid(True, axis="x", color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel("proportion of samples / of eligible tiles" if any_frame else "proportion of samples")
    fig.align_ylabels(axes)

    handles = [Patch(facecolor="#888888", edgecolor="#222222", label=f"sample (n={len(index)})")]
    if any_frame:
        handles.append(Patch(facecolor="#888888", alpha=0.35, hatch="///", edgecolor="#555555",
                             label=f"eligible frame (n={len(ref)})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    default = "Label proportions: sample vs eligible frame" if any_frame else "Label proportions in the sample"
    fig.suptitle(title or default, fontsize=12)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ entropy
def plot_entropy_hist(
    index: pd.DataFrame,
    path,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """Histogram of each per-sample entropy column present (nats), one subplot each, with the
    mean marked. Returns None (and writes nothing) when none of ``columns`` is present."""
    cols = [c for c in (entropy_columns() if columns is None else columns) if c in index.columns and pd.to_numeric(index[c], errors="coerce").notna().any()]
    if not cols:
        return None
    n = len(cols)
    fig = _new_figure(max(8.0, 3.6 * n), 4.6)
    axes = fig.subplots(1, n, squeeze=False).ravel()
    colors = category_colors(cols)
    for ax, col in zip(axes, cols):
        v = pd.to_numeric(index[col], errors="coerce").dropna().to_numpy(dtype=float)
        bins = int(np.clip(np.ceil(np.sqrt(len(v))) * 2, 5, 40))
        if np.ptp(v) == 0:
            bins = 5
        ax.hist(v, bins=bins, color=colors[col], edgecolor="white", linewidth=0.6)
        mean = float(v.mean())
        ax.axvline(mean, color="#222222", linestyle="--", linewidth=1.2, label=f"mean {mean:.2f}")
        ax.set_xlabel(f"{_pretty(col)} (nats)")
        ax.set_ylabel("samples")
        ax.set_title(f"{_pretty(col)} (n={len(v)})", fontsize=10)
        ax.legend(fontsize=8, loc="best", frameon=False)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="y", color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
    fig.suptitle(title or "Per-sample entropy", fontsize=12)
    return _save(fig, path)


# --------------------------------------------------------------------------------- comparison
def plot_comparison(
    table: pd.DataFrame,
    path,
    metric: str | Sequence[str] = "stratum_entropy",
    x: str = "samples_per_project",
    group: str = "strategy",
    title: str | None = None,
) -> Path:
    """Compare builds. When ``x`` varies: one line (with markers) per ``group`` value of
    ``metric`` against ``x`` (log-2 axis ticked at the values present when they span a factor
    of 4 or more). When every build has the same ``x`` (or there is no ``x`` column): bars per
    build ``label`` coloured by ``group``. ``metric`` may be a list: one subplot per metric."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullLocator

    metrics = [metric] if isinstance(metric, str) else list(metric)
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise ValueError(f"plot_comparison: metric column(s) {missing} not in the table "
                         f"(columns: {list(table.columns)})")
    table = table.copy()
    if group not in table.columns:
        table[group] = "build"
    table[group] = _labels(table[group])
    if "label" not in table.columns:
        table["label"] = [f"build {i}" for i in range(len(table))]
    colors = category_colors(table[group].unique())
    xs = pd.to_numeric(table[x], errors="coerce") if x in table.columns else None
    curve = xs is not None and xs.notna().all() and xs.nunique() > 1

    n = len(metrics)
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    if curve:
        fig = _new_figure(8.0 if n == 1 else 10.0, 5.0 if n == 1 else 3.8 * nrows + 0.8)
    else:
        longest = max(len(str(s)) for s in table["label"])
        fig = _new_figure(max(8.0, 0.55 * len(table) * ncols + 3), (5.0 + 0.04 * longest) if n == 1
                          else (3.6 + 0.04 * longest) * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()

    for ax, m in zip(axes, metrics):
        vals = pd.to_numeric(table[m], errors="coerce")
        if curve:
            for k, g in enumerate(sorted(table[group].unique())):
                sel = table[group] == g
                d = pd.DataFrame({"x": xs[sel], "y": vals[sel]}).dropna()
                d = d.groupby("x", as_index=False)["y"].mean().sort_values("x")
                # distinct markers and dashes so coinciding curves stay visible
                ax.plot(d["x"], d["y"], marker=_MARKERS[k % len(_MARKERS)], markersize=7 - (k % 3),
                        linewidth=1.8, linestyle=("-", "--", ":", "-.")[k % 4], color=colors[g], label=g)
            xv = np.sort(xs.unique())
            if xv.min() > 0 and xv.max() / xv.min() >= 4:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_locator(FixedLocator(xv))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
            else:
                ax.set_xticks(xv, [f"{v:g}" for v in xv])
            ax.set_xlabel(_pretty(x) + (" (log scale)" if ax.get_xscale() == "log" else ""))
            if n == 1:
                ax.legend(title=_pretty(group), fontsize=8, title_fontsize=9, loc="best")
        else:
            order = table.sort_values([group, "label"]).index
            labels = table.loc[order, "label"].astype(str).tolist()
            v = vals.loc[order].to_numpy(dtype=float)
            pos = np.arange(len(order))
            ax.bar(pos, v, width=0.7, color=[colors[g] for g in table.loc[order, group]], edgecolor="#222222",
                   linewidth=0.5)
            top = np.nanmax(v) if np.isfinite(v).any() else 1.0
            for p_, vv in zip(pos, v):
                if np.isfinite(vv):
                    ax.text(p_, vv + 0.01 * max(abs(top), 1e-9), f"{vv:.3g}", ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
            rot = 0 if (max(len(s) for s in labels) + 2) * len(labels) * ncols < 100 else 30
            ax.set_xticks(pos, labels, rotation=rot, ha="right" if rot else "center", fontsize=8)
            ax.set_xlabel("build")
        ax.set_ylabel(_metric_label(m))
        if n > 1:
            ax.set_title(_pretty(m), fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="#eeeeee", linewidth=0.6)
        ax.set_axisbelow(True)
    for ax in axes[n:]:
        ax.set_axis_off()
    if not curve:
        handles = [Patch(facecolor=colors[g], edgecolor="#222222", label=g) for g in sorted(colors)]
        fig.legend(handles=handles, title=_pretty(group), fontsize=8, title_fontsize=9,
                   loc="outside right upper", frameon=False)
    elif n > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, title=_pretty(group), fontsize=8, title_fontsize=9,
                   loc="outside right upper", frameon=False)
    what = _pretty(metrics[0]) if n == 1 else "diversity metrics"
    fig.suptitle(title or (f"{what} vs {_pretty(x)}" if curve else f"{what} by build"), fontsize=12)
    return _save(fig, path)
