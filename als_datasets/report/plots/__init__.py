"""PNG plots for a build's report folder and for comparing builds.

Every function takes DataFrames (or GeoDataFrames) and a path, draws with matplotlib's Agg
canvas on a private :class:`~matplotlib.figure.Figure` (never through ``pyplot``, so no global
backend state is touched and nothing GUI-related is imported) and returns the path written.
matplotlib itself is imported lazily, inside the functions.

The drawing is split by what it draws: :mod:`.footprints` (the sample map), :mod:`.charts`
(label bars, entropy histograms, the build comparison) and :mod:`.style` (colours, markers,
label names, the figure/save helpers, shared by both).
"""

from __future__ import annotations

import json
from pathlib import Path

from .charts import plot_comparison, plot_entropy_hist, plot_label_bars
from .footprints import plot_footprints
from .style import DPI, category_colors, entropy_columns, label_columns

__all__ = [
    "label_columns",
    "entropy_columns",
    "DPI",
    "category_colors",
    "plot_footprints",
    "plot_label_bars",
    "plot_entropy_hist",
    "plot_comparison",
    "write_plots",
    "PLOT_FILES",
]


# ------------------------------------------------------------------------------------ driver
#: every plot :func:`write_plots` may write into OUT/report/
PLOT_FILES = ("footprints.png", "labels.png", "entropy.png")


def _present(index, columns) -> tuple[str, ...]:
    """The label columns the index has with at least one value (layers the recipe did not give
    are left out)."""
    return tuple(c for c in columns if c in index.columns and index[c].notna().any())


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
    manifest = out_dir / "manifest.json"
    kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    report = out_dir / "report"
    written: list[Path] = []
    if isinstance(index, gpd.GeoDataFrame) and "geometry" in index.columns:
        written.append(plot_footprints(index, frame, report / "footprints.png", kind=kind))
    written.append(plot_label_bars(index, frame, report / "labels.png", columns=_present(index, label_columns(kind))))
    p = plot_entropy_hist(index, report / "entropy.png", columns=entropy_columns(kind))
    if p is not None:
        written.append(p)
    for name in PLOT_FILES:  # a plot this build has no data for is not left from an earlier one
        if report / name not in written:
            (report / name).unlink(missing_ok=True)
    return written
