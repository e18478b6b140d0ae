"""Streaming extraction, stage 2: one tile's staged points → cleaned sample (DESIGN.md §5, §6.9).

The paper's PDAL pipeline per tile: crop → drop class 7 → statistical outlier filter
(mean_k 12, multiplier 2.2) → drop class 7 again.  Here: drop the recipe's ``drop_classes``
(7 and 18 by default), then the statistical outlier filter, whose outliers are dropped.
"""

from __future__ import annotations

import numpy as np

from als_datasets.kinds.als.extract.outliers import statistical_outliers
from als_datasets.kinds.als.extract.route import tile_max, tile_relative

__all__ = ["clean_points", "filter_threads", "sample_arrays", "statistical_outliers", "warm_outlier_filter"]

#: the outlier filter runs its neighbour queries on several threads for tiles above this many
#: points (:func:`~als_datasets.kinds.als.extract.outliers.mean_neighbour_distances`)
PARALLEL_FILTER_POINTS = 50_000

#: the background compile started by :func:`warm_outlier_filter` (None: none started)
_warmup = None


def _synthetic_cloud(n: int) -> np.ndarray:
    """``n`` points on a 100 m square, and three far away (outliers: the filter's ring search)."""
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.random(n) * 100.0, rng.random(n) * 100.0, rng.random(n) * 5.0])
    return np.concatenate([xyz, [[400.0, 400.0, 0.0], [-300.0, 50.0, 9.0], [50.0, -250.0, 100.0]]])


def warm_outlier_filter(threads: int):
    """Start compiling the outlier filter's multi-threaded kernel in a background thread.

    numba compiles that kernel once per process (it cannot be cached on disk), which takes a
    couple of seconds of one core.  Started when the build begins routing the input points, the
    compile runs beside the reading and beside the first tiles' filtering: while it runs,
    :func:`clean_points` filters on one thread (the same flags; PDAL's rule does not depend on
    the threads), and takes the threaded kernel once it is ready.  The warm-up first loads the
    filter's and the ground surface's cached single-thread kernels (so the tiles filtered
    meanwhile never wait for numba's compiler lock), then filters a fixed synthetic cloud of just
    over :data:`PARALLEL_FILTER_POINTS` points on ``threads`` threads; it changes nothing else.
    Returns the (non-daemon) thread; None when ``threads`` ≤ 1.
    """
    import threading

    global _warmup
    if threads <= 1:
        return None

    def warm() -> None:
        from als_datasets.kinds.als.extract.ground import ground_surface

        try:
            small = _synthetic_cloud(2000)
            statistical_outliers(small, 12, 2.2, threads=1)
            ground_surface(small[:, 0], small[:, 1], small[:, 2], np.full(len(small), 2, np.uint8))
            statistical_outliers(_synthetic_cloud(PARALLEL_FILTER_POINTS + 1000), 12, 2.2, threads=threads)
        except Exception:  # a warm-up only: the real call reports any problem
            pass

    _warmup = threading.Thread(target=warm, name="outlier-filter-warmup")
    _warmup.start()
    return _warmup


def filter_threads(threads: int) -> int:
    """The threads to filter a tile with now: one while :func:`warm_outlier_filter`'s compile of
    the threaded kernel is still running (a call on more threads would wait for it)."""
    return 1 if threads > 1 and _warmup is not None and _warmup.is_alive() else threads


def clean_points(points: np.ndarray, drop_classes, k: int, multiplier: float, threads: int = 1
                 ) -> tuple[np.ndarray, int, int]:
    """Drop noise classes, then statistical outliers: (kept points, n dropped by class, n outliers)."""
    keep = ~np.isin(points["classification"], np.asarray(drop_classes, dtype=np.int64))
    pts = points if keep.all() else points[keep]  # no noise class (the usual tile): no copy
    n_class = int(len(points) - len(pts))
    if len(pts) == 0 or k <= 0:  # k = 0: outlier filter switched off in the recipe
        return pts, n_class, 0
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float64, copy=False)
    out = statistical_outliers(xyz, k, multiplier, threads=filter_threads(threads))
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
