"""Shared look of the report plots: label/entropy columns (the kinds'), the category colours, markers,
frame colours, label and metric names, and the figure/save helpers.

Colours: a category (``forest/steep``, ``Europe``, ``random`` ...) always gets the same colour,
in every plot of a build and in every build, because the colour is a function of the name only
(a fixed table for the known ALS labels and continents, a stable hash into a palette for other
names). PNGs are written without the ``Software`` tag so equal inputs give equal bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd


def label_columns(kind: str | None = None) -> tuple[str, ...]:
    """Categorical label columns plotted when present, in this order: the kind's (its grouping
    column left out: that is the map's panels), or every registered kind's when ``kind`` is None."""
    from als_datasets.registry import report_columns

    cols = report_columns(kind)
    return tuple(c for c in cols["label"] if c not in cols["group"])


def group_columns(kind: str | None = None) -> tuple[str, ...]:
    """The columns that group samples (ALS projects, raster scenes ...)."""
    from als_datasets.registry import report_columns

    return tuple(dict.fromkeys(report_columns(kind)["group"]))


def entropy_columns(kind: str | None = None) -> tuple[str, ...]:
    """Per-sample entropy columns (nats) plotted when present: the kind's, or every kind's."""
    from als_datasets.registry import report_columns

    return tuple(report_columns(kind)["entropy"])

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

    from ...shards.writer import atomic_write

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
        return f"{_pretty(name)} (H / ln K of the frame)"
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

