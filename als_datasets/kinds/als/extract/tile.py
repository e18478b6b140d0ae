"""Streaming extraction, stage 2: one tile's staged points → cleaned sample (DESIGN.md §5, §6.9).

The paper's PDAL pipeline per tile: crop → drop class 7 → statistical outlier filter
(mean_k 12, multiplier 2.2) → drop class 7 again.  Here: drop the recipe's ``drop_classes``
(7 and 18 by default), then the statistical outlier filter, whose outliers are dropped.
"""

from __future__ import annotations

import numpy as np

from als_datasets.kinds.als.extract.outliers import statistical_outliers
from als_datasets.kinds.als.extract.route import tile_max, tile_relative

__all__ = ["clean_points", "sample_arrays", "statistical_outliers"]


def clean_points(points: np.ndarray, drop_classes, k: int, multiplier: float, threads: int = 1
                 ) -> tuple[np.ndarray, int, int]:
    """Drop noise classes, then statistical outliers: (kept points, n dropped by class, n outliers)."""
    keep = ~np.isin(points["classification"], np.asarray(drop_classes, dtype=np.int64))
    pts = points if keep.all() else points[keep]  # no noise class (the usual tile): no copy
    n_class = int(len(points) - len(pts))
    if len(pts) == 0 or k <= 0:  # k = 0: outlier filter switched off in the recipe
        return pts, n_class, 0
    out = statistical_outliers((pts["x"], pts["y"], pts["z"]), k, multiplier, threads=threads)
    return pts[~out], n_class, int(out.sum())


def sample_arrays(points: np.ndarray, tile: float, attributes=()) -> dict[str, np.ndarray]:
    """The sample's ``.npy`` members (DESIGN.md §5 dtypes): x, y as float32 in [0, tile); and one
    member per recipe ``point_attributes`` entry ((name, dtype): ``<member name>.npy``)."""
    from als_datasets.kinds.als.sources.attributes import member_name

    top = tile_max(tile)
    xyz = np.empty((len(points), 3), dtype=np.float32)
    xyz[:, 0] = tile_relative(np.asarray(points["x"]), top)
    xyz[:, 1] = tile_relative(np.asarray(points["y"]), top)
    xyz[:, 2] = points["z"]
    return {
        "xyz.npy": xyz,
        "intensity.npy": np.ascontiguousarray(points["intensity"], dtype=np.uint16),
        "return_number.npy": np.ascontiguousarray(points["return_number"], dtype=np.uint8),
        "number_of_returns.npy": np.ascontiguousarray(points["number_of_returns"], dtype=np.uint8),
        "classification.npy": np.ascontiguousarray(points["classification"], dtype=np.uint8),
        **{f"{member_name(n)}.npy": np.ascontiguousarray(points[member_name(n)], dtype=d) if len(points)
           else np.zeros(0, d) for n, d in attributes},
    }
