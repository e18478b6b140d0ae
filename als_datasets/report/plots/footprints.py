"""The footprint map of a build's samples over the frame's candidate tiles, and its geometry
helpers (rings, extents, lon/lat, grouping projects into panels)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .style import (
    _FRAME_EDGE,
    _FRAME_FILL_ELIGIBLE,
    _labels,
    _new_figure,
    _pretty,
    _save,
    _with_stratum,
    category_colors,
    group_columns,
    label_columns,
)

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd


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
    kind: str | None = None,
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
        color_by = next((c for c in (*label_columns(kind)[::-1], *group_columns(kind))
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
        # a narrow panel (a scene a few km wide) has room for few horizontal labels: slant them
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
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
