"""PNG plots for a build's report folder and for comparing builds.

Every function takes DataFrames (or GeoDataFrames) and a path, draws with matplotlib's Agg
canvas on a private :class:`~matplotlib.figure.Figure` (never through ``pyplot``, so no global
backend state is touched and nothing GUI-related is imported) and returns the path written.
matplotlib itself is imported lazily, inside the functions.

Colours: a category (``forest/steep``, ``Europe``, ``random`` ...) always gets the same colour,
in every plot of a build and in every build, because the colour is a function of the name only
(a fixed table for the known ALS labels and continents, a stable hash into a palette for other
names). PNGs are written without the ``Software`` tag so equal inputs give equal bytes.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd

__all__ = [
    "LABEL_COLUMNS",
    "ENTROPY_COLUMNS",
    "category_colors",
    "plot_footprints",
    "plot_label_bars",
    "plot_entropy_hist",
    "plot_comparison",
    "write_plots",
]

#: categorical label columns plotted when present, in this order
LABEL_COLUMNS = ("continent", "biome", "landcover", "slope_class", "stratum")
#: per-sample entropy columns (nats) plotted when present
ENTROPY_COLUMNS = ("height_entropy", "intensity_entropy", "spectral_entropy")

DPI = 120
_PNG_META = {"Software": None}

# fixed colours for the names the tool itself produces
_LANDCOVER_SHADES = {  # light (flat) -> dark (steep)
    "forest": ("#a1d99b", "#41ab5d", "#005a32"),
    "developed": ("#fcae91", "#fb6a4a", "#a50f15"),
    "other": ("#dadaeb", "#9e9ac8", "#54278f"),
}
_SLOPE_INDEX = {"flat": 0, "sloped": 1, "steep": 2}
_FIXED = {
    "forest": "#2ca02c",
    "developed": "#d62728",
    "other": "#9467bd",
    "flat": "#c6dbef",
    "sloped": "#6baed6",
    "steep": "#08519c",
    # Natural Earth CONTINENT values
    "africa": "#e6a700",
    "antarctica": "#7f7f7f",
    "asia": "#d62728",
    "europe": "#1f77b4",
    "north america": "#2ca02c",
    "oceania": "#17becf",
    "south america": "#9467bd",
    "seven seas (open ocean)": "#8c564b",
    # strategies
    "geospatial": "#1f77b4",
    "random": "#ff7f0e",
    "global": "#2ca02c",
    "spectral": "#9467bd",
    # per-sample entropy columns
    "height_entropy": "#4c72b0",
    "intensity_entropy": "#dd8452",
    "spectral_entropy": "#55a868",
}
_PALETTE = (
    # tab20 then tab20b, hex so no matplotlib import is needed to pick one
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5", "#393b79", "#5254a3", "#6b6ecf", "#9c9ede",
    "#637939", "#8ca252", "#b5cf6b", "#cedb9c", "#8c6d31", "#bd9e39", "#e7ba52", "#e7cb94",
    "#843c39", "#ad494a", "#d6616b", "#e7969c", "#7b4173", "#a55194", "#ce6dbd", "#de9ed6",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_FRAME_EDGE = "#9a9a9a"
_FRAME_FILL_ELIGIBLE = "#dedede"
_MISSING = "#bbbbbb"


# --------------------------------------------------------------------------------------- helpers
def _fixed_color(name: str) -> str | None:
    key = name.strip().lower()
    if key in _FIXED:
        return _FIXED[key]
    if "/" in key:  # stratum "landcover/slope"
        lc, _, sl = key.partition("/")
        if lc in _LANDCOVER_SHADES and sl in _SLOPE_INDEX:
            return _LANDCOVER_SHADES[lc][_SLOPE_INDEX[sl]]
    return None


def category_colors(names: Iterable) -> dict[str, str]:
    """A colour for each category name, a function of the name only (so the same in every plot
    and every build): a fixed table for the tool's own labels, else a stable hash into a
    40-colour palette; collisions within one call are resolved in sorted name order, so the
    colours in one plot are always distinct."""
    out: dict[str, str] = {}
    used: set[str] = set()
    pending = []
    for name in sorted({str(n) for n in names}):
        c = _fixed_color(name)
        if c is None or c in used:  # two fixed names sharing a colour in one plot: hash the later
            pending.append(name)
        else:
            out[name] = c
            used.add(c)
    for name in pending:
        i = zlib.crc32(name.encode("utf-8")) % len(_PALETTE)
        for step in range(len(_PALETTE)):
            c = _PALETTE[(i + step) % len(_PALETTE)]
            if c not in used:
                break
        out[name] = c
        used.add(c)
    return out


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas, chosen here and only for this figure
    return fig


def _save(fig, path) -> Path:
    import io

    from ..shards.writer import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=_PNG_META)
    atomic_write(path, lambda f: f.write(buf.getvalue()))  # a kill mid-write leaves no truncated PNG
    return path


def _pretty(name: str) -> str:
    return {
        "landcover": "land cover",
        "slope_class": "slope class",
        "samples_per_project": "samples per project",
        "num_samples": "samples",
    }.get(name, name.replace("_", " ").replace("landcover", "land cover"))


def _metric_label(name: str) -> str:
    n = name.lower()
    if n.endswith("_norm") or "normalised" in n or "normalized" in n:
        return f"{_pretty(name)} (H / ln K)"
    if "entropy" in n:
        return f"{_pretty(name)} (nats)"
    if n.endswith("coverage"):
        return f"{_pretty(name)} (fraction)"
    if n.endswith("_mean") and n[: -len("_mean")] in ("height_range_m",):
        return f"{_pretty(name)} (m)"
    return _pretty(name)


def _labels(series: pd.Series) -> pd.Series:
    return series.astype("object").where(series.notna(), "(missing)").astype(str)


def _with_stratum(df: pd.DataFrame) -> pd.DataFrame:
    if "stratum" not in df.columns and {"landcover", "slope_class"} <= set(df.columns):
        df = df.copy()
        df["stratum"] = _labels(df["landcover"]) + "/" + _labels(df["slope_class"])
    return df


def _eligible(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or len(frame) == 0:
        return None
    if "eligible" in frame.columns:
        frame = frame[frame["eligible"].fillna(False).astype(bool)]
    return frame


def _polygon_rings(geom) -> list[np.ndarray]:
    """Exterior rings (as (N, 2) arrays) of a polygon or multipolygon; empty for others."""
    if geom is None or geom.is_empty:
        return []
    gt = geom.geom_type
    if gt == "Polygon":
        return [np.asarray(geom.exterior.coords)[:, :2]]
    if gt in ("MultiPolygon", "GeometryCollection"):
        return [r for g in geom.geoms for r in _polygon_rings(g)]
    return []


def _to_lonlat(gdf):
    if gdf is None:
        return None
    crs = getattr(gdf, "crs", None)
    if crs is not None and not crs.equals("EPSG:4326"):
        try:
            gdf = gdf.to_crs("EPSG:4326")
        except Exception:  # keep the coordinates as given
            pass
    return gdf


def _group_column(df: pd.DataFrame) -> str | None:
    for col in ("project", "scene"):
        if col in df.columns:
            return col
    return None


def _bounds_of(gdf) -> np.ndarray | None:
    if gdf is None or len(gdf) == 0 or "geometry" not in gdf.columns:
        return None
    geoms = gdf.geometry[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(geoms) == 0:
        return None
    return np.asarray(geoms.total_bounds, dtype=float)


def _point_xy(index) -> np.ndarray:
    """Sample centres: lon/lat columns when present, else geometry centroids."""
    if {"lon", "lat"} <= set(index.columns):
        return index[["lon", "lat"]].to_numpy(dtype=float)
    g = index.geometry
    with np.errstate(all="ignore"):
        c = g.representative_point()
    return np.column_stack([c.x.to_numpy(), c.y.to_numpy()])


def _cluster_groups(index, frame, group_col, gap_deg: float) -> list[list[str]]:
    """Groups (projects) whose extents lie within gap_deg of each other share a panel."""
    names = sorted(
        set(_labels(index[group_col]))
        | (set(_labels(frame[group_col])) if frame is not None and group_col in frame.columns else set())
    )
    boxes = {}
    for n in names:
        parts = [_bounds_of(index[_labels(index[group_col]) == n])]
        if frame is not None and group_col in frame.columns:
            parts.append(_bounds_of(frame[_labels(frame[group_col]) == n]))
        parts = [p for p in parts if p is not None and np.all(np.isfinite(p))]
        if parts:
            p = np.vstack(parts)
            boxes[n] = np.array([p[:, 0].min(), p[:, 1].min(), p[:, 2].max(), p[:, 3].max()])
    names = [n for n in names if n in boxes]
    parent = {n: n for n in names}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ba, bb = boxes[a], boxes[b]
            dx = max(0.0, max(ba[0], bb[0]) - min(ba[2], bb[2]))
            dy = max(0.0, max(ba[1], bb[1]) - min(ba[3], bb[3]))
            if max(dx, dy) <= gap_deg:
                parent[find(a)] = find(b)
    clusters: dict[str, list[str]] = {}
    for n in names:
        clusters.setdefault(find(n), []).append(n)
    return sorted(clusters.values(), key=lambda c: c[0])


# ---------------------------------------------------------------------------------- footprints
def plot_footprints(
    index: gpd.GeoDataFrame,
    frame: gpd.GeoDataFrame | None,
    path,
    color_by: str = "stratum",
    title: str | None = None,
    *,
    gap_deg: float = 1.0,
    max_panels: int = 6,
) -> Path:
    """Map (lon/lat) of the sample footprints filled by ``color_by`` category, over the frame's
    candidate tiles (grey outlines, eligible ones lightly filled). Projects further apart than
    ``gap_deg`` get their own panel (up to ``max_panels``; more clusters than that are drawn in
    one overview panel). Where footprints would be too small to see, the sample centres are
    drawn as markers as well."""
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    index = _with_stratum(_to_lonlat(index))
    frame = _to_lonlat(frame) if frame is not None and len(frame) else None
    if color_by not in index.columns or index[color_by].isna().all():  # raster builds: no strata, maybe no land cover
        color_by = next((c for c in (*LABEL_COLUMNS[::-1], "project", "scene")
                         if c in index.columns and index[c].notna().any()), None)
    cats = _labels(index[color_by]) if color_by else pd.Series("sample", index=index.index)
    colors = category_colors(cats.unique())
    counts = cats.value_counts()

    group_col = _group_column(index)
    clusters = _cluster_groups(index, frame, group_col, gap_deg) if group_col else []
    if not clusters or len(clusters) > max_panels:
        clusters = [None]  # one panel with everything
    n = len(clusters)
    ncols = 1 if n == 1 else (2 if n <= 4 else 3)
    nrows = math.ceil(n / ncols)
    width = 9.5 if n > 1 else 8.5
    fig = _new_figure(width, max(5.0, 3.8 * nrows + 0.6) if n > 1 else 6.0)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()

    idx_groups = _labels(index[group_col]) if group_col else None
    frm_groups = _labels(frame[group_col]) if frame is not None and group_col and group_col in frame.columns else None
    has_frame = has_eligible = used_markers = False

    for ax, cluster in zip(axes, clusters):
        if cluster is None:
            sub_idx, sub_frm = index, frame
        else:
            sub_idx = index[idx_groups.isin(cluster)]
            sub_frm = frame[frm_groups.isin(cluster)] if frm_groups is not None else (frame if n == 1 else None)
        sub_cats = cats.loc[sub_idx.index]

        if sub_frm is not None and len(sub_frm):
            elig = (
                sub_frm["eligible"].fillna(False).astype(bool).to_numpy()
                if "eligible" in sub_frm.columns
                else np.zeros(len(sub_frm), bool)
            )
            rings, faces = [], []
            for geom, e in zip(sub_frm.geometry, elig):
                for r in _polygon_rings(geom):
                    rings.append(r)
                    faces.append(_FRAME_FILL_ELIGIBLE if e else "none")
            if rings:
                ax.add_collection(PolyCollection(
                    rings, facecolors=faces, edgecolors=_FRAME_EDGE, linewidths=0.5, zorder=1,
                ))
                has_frame = True
                has_eligible |= bool(elig.any())

        rings, faces = [], []
        for geom, c in zip(sub_idx.geometry, sub_cats):
            for r in _polygon_rings(geom):
                rings.append(r)
                faces.append(colors[c])
        if rings:
            ax.add_collection(PolyCollection(
                rings, facecolors=faces, edgecolors="#222222", linewidths=0.6, zorder=2,
            ))

        # extent
        parts = [b for b in (_bounds_of(sub_idx), _bounds_of(sub_frm)) if b is not None]
        xy = _point_xy(sub_idx) if len(sub_idx) else np.empty((0, 2))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy):
            parts.append(np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]))
        if not parts:
            ax.set_axis_off()
            continue
        p = np.vstack(parts)
        x0, y0, x1, y1 = p[:, 0].min(), p[:, 1].min(), p[:, 2].max(), p[:, 3].max()
        span = max(x1 - x0, y1 - y0, 1e-4)
        pad = 0.06 * span
        top = y1 + pad * (2.0 if cluster is not None and group_col else 1.0)
        ax.update_datalim([(x0 - pad, y0 - pad), (x1 + pad, top)])
        ax.set_xmargin(0)
        ax.set_ymargin(0)
        ax.autoscale_view()
        lat = float(np.clip((y0 + y1) / 2, -85, 85))
        # equal ground distances on both axes; the axes fill their box and the data limits grow
        ax.set_aspect(1.0 / math.cos(math.radians(lat)), adjustable="datalim")

        # footprints too small to see at this scale -> markers at the centres too
        widths = [(g.bounds[2] - g.bounds[0]) for g in sub_idx.geometry if g is not None and not g.is_empty]
        if len(xy) and (not widths or np.median(widths) < 0.02 * span):
            ax.scatter(xy[:, 0], xy[:, 1], s=22, c=[colors[c] for c in sub_cats], edgecolors="#222222",
                       linewidths=0.4, zorder=3)
            used_markers = True

        # project names above their extents (only when few, to stay readable)
        if group_col and cluster is not None and (n == 1 or len(cluster) > 1) and len(cluster) <= 8:
            for name in cluster:
                bs = [b for b in (
                    _bounds_of(sub_idx[_labels(sub_idx[group_col]) == name]),
                    _bounds_of(sub_frm[_labels(sub_frm[group_col]) == name])
                    if sub_frm is not None and group_col in sub_frm.columns else None,
                ) if b is not None]
                if not bs:
                    continue
                b = np.vstack(bs)
                ax.annotate(
                    name, xy=(b[:, 0].min(), b[:, 3].max()), xytext=(0, 3), textcoords="offset points",
                    ha="left", va="bottom", fontsize=8, color="#333333", zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
                )
        if n > 1 and cluster is not None:
            ax.set_title(", ".join(cluster) if len(cluster) <= 3 else f"{cluster[0]} + {len(cluster) - 1} more",
                         fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(6))
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=8)
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        ax.grid(True, color="#eeeeee", linewidth=0.6, zorder=0)
        ax.set_axisbelow(True)
    for ax in axes[n:]:
        ax.set_axis_off()

    handles = [
        Patch(facecolor=colors[c], edgecolor="#222222", linewidth=0.6,
              label=textwrap.fill(f"{c} ({counts[c]})", 30, subsequent_indent="  "))
        for c in sorted(colors)
    ]
    if has_frame:
        handles.append(Patch(facecolor="none", edgecolor=_FRAME_EDGE, label="candidate tile"))
    if has_eligible:
        handles.append(Patch(facecolor=_FRAME_FILL_ELIGIBLE, edgecolor=_FRAME_EDGE, label="eligible candidate"))
    if used_markers:
        handles.append(Line2D([], [], marker="o", ls="none", mfc="#888888", mec="#222222",
                              label="sample centre"))
    legend_title = f"{_pretty(color_by)} (samples)" if color_by else "samples"
    fig.legend(handles=handles, loc="outside right upper", title=legend_title, fontsize=8,
               title_fontsize=9, frameon=False)
    fig.suptitle(title or f"Sample footprints ({len(index)} samples)", fontsize=12)
    return _save(fig, path)


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
    every column of :data:`LABEL_COLUMNS` present in the index (``("landcover", "slope_class",
    "stratum")`` for an ALS build). The frame's stratum is derived as landcover/slope_class when
    it lacks one."""
    from matplotlib.patches import Patch

    index = _with_stratum(pd.DataFrame(index))
    ref = _eligible(frame)
    ref = _with_stratum(pd.DataFrame(ref)) if ref is not None else None
    cols = [c for c in (columns if columns is not None else LABEL_COLUMNS)
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
    columns: Sequence[str] = ENTROPY_COLUMNS,
    title: str | None = None,
) -> Path | None:
    """Histogram of each per-sample entropy column present (nats), one subplot each, with the
    mean marked. Returns None (and writes nothing) when none of ``columns`` is present."""
    cols = [c for c in columns if c in index.columns and pd.to_numeric(index[c], errors="coerce").notna().any()]
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


# ------------------------------------------------------------------------------------ driver
def write_plots(out_dir, index=None, frame=None) -> list[Path]:
    """Write OUT/report/footprints.png, labels.png and (when the index has entropy columns)
    entropy.png; read OUT/index.parquet and OUT/frame.parquet when not given. Returns the
    paths written."""
    import geopandas as gpd

    out_dir = Path(out_dir)
    if index is None:
        index = gpd.read_parquet(out_dir / "index.parquet")
    if frame is None and (out_dir / "frame.parquet").exists():
        frame = gpd.read_parquet(out_dir / "frame.parquet")
    report = out_dir / "report"
    written: list[Path] = []
    if isinstance(index, gpd.GeoDataFrame) and "geometry" in index.columns:
        written.append(plot_footprints(index, frame, report / "footprints.png"))
    written.append(plot_label_bars(index, frame, report / "labels.png"))
    p = plot_entropy_hist(index, report / "entropy.png")
    if p is not None:
        written.append(p)
    return written
