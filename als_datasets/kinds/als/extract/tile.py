"""Streaming extraction, stage 2: one tile's staged points → cleaned sample (DESIGN.md §5, §6.9).

The paper's PDAL pipeline per tile: crop → drop class 7 → statistical outlier filter
(mean_k 12, multiplier 2.2) → drop class 7 again.  Here: drop the recipe's ``drop_classes``
(7 and 18 by default), then the statistical outlier filter, whose outliers are dropped.
"""

from __future__ import annotations

import numpy as np


def statistical_outliers(xyz: np.ndarray, k: int = 12, multiplier: float = 2.2, workers: int = 1) -> np.ndarray:
    """PDAL ``filters.outlier`` (statistical): True for outliers.

    For each point, the mean 3D distance to its ``k`` nearest neighbours (itself excluded);
    threshold = mean + multiplier × std (N-1) of those means; above the threshold → outlier.
    With ``k`` or fewer points nothing is flagged.
    """
    from scipy.spatial import cKDTree

    n = len(xyz)
    if n <= k:
        return np.zeros(n, dtype=bool)
    pts = np.asarray(xyz, dtype=np.float64)
    # query in a spatially coherent order (5 m cells, row-major): ~3x faster than file order for
    # shuffled points, and the result does not depend on the order
    cell = np.floor(pts[:, :2] / 5.0).astype(np.int64)
    order = np.lexsort((cell[:, 0], cell[:, 1]))
    q = pts[order]
    tree = cKDTree(q, balanced_tree=False, compact_nodes=False)
    mean_d = np.empty(n)
    block = 1 << 19  # bounded memory: (block, k+1) distance and index arrays, not (n, k+1)
    for i in range(0, n, block):
        dist, _ = tree.query(q[i:i + block], k=k + 1, workers=workers)
        mean_d[order[i:i + block]] = dist[:, 1:].mean(axis=1)
    threshold = mean_d.mean() + multiplier * mean_d.std(ddof=1)
    return mean_d > threshold


def clean_points(points: np.ndarray, drop_classes, k: int, multiplier: float, threads: int = 1
                 ) -> tuple[np.ndarray, int, int]:
    """Drop noise classes, then statistical outliers: (kept points, n dropped by class, n outliers)."""
    keep = ~np.isin(points["classification"], np.asarray(drop_classes, dtype=np.int64))
    pts = points[keep]
    n_class = int(len(points) - len(pts))
    if len(pts) == 0 or k <= 0:  # k = 0: outlier filter switched off in the recipe
        return pts, n_class, 0
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1)
    out = statistical_outliers(xyz, k, multiplier, workers=threads)
    return pts[~out], n_class, int(out.sum())


def sample_arrays(points: np.ndarray) -> dict[str, np.ndarray]:
    """The sample's ``.npy`` members (DESIGN.md §5 dtypes)."""
    return {
        "xyz.npy": np.ascontiguousarray(np.stack([points["x"], points["y"], points["z"]], axis=1), dtype=np.float32),
        "intensity.npy": np.ascontiguousarray(points["intensity"], dtype=np.uint16),
        "return_number.npy": np.ascontiguousarray(points["return_number"], dtype=np.uint8),
        "number_of_returns.npy": np.ascontiguousarray(points["number_of_returns"], dtype=np.uint8),
        "classification.npy": np.ascontiguousarray(points["classification"], dtype=np.uint8),
    }
