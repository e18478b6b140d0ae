"""PDAL's statistical outlier filter on real airborne LiDAR files, bit for bit.

The files are read from ``tests/data/als`` (the BSD-licensed copies) or ``../shared/data/als``
(``ALS_SHARED_DATA``; skipped when absent; see its ``SOURCES.md``):
autzen (Oregon, feet, 110 k points), Topography (Québec forest, 73 k), mvk-thin (Mississippi,
thinned), a small LAS with both CRS records, and lone-star (the source of the real EPT dataset,
519 k points at ~390 pts/m²).  Their coordinates are read as PDAL reads them (the scaled
integers as float64, ``X × scale + offset``).

The reference follows ``OutlierFilter::processStatistical`` like the brute force of
``test_outliers.py``, but finds the neighbours with scipy's k-d tree so that half a million
points take seconds: the tree's k + 1 + :data:`EXTRA` nearest of every point are a superset of
its k + 1 nearest, and their squared distances are recomputed with PDAL's arithmetic
(``(dx² + dy²) + dz²``, float64).  Where the superset cannot prove itself (its k+1-th exact
value is not clearly below its last one: ties, duplicates), that point is searched by brute force.

The production filter runs on the staged tile-relative offsets the build gives it, with one and
two threads; its mean distances must equal the reference's bit for bit, and so must the flags.
"""

from pathlib import Path

import numpy as np
import pytest
from synth_inputs import DATA, SHARED
from test_outliers import reference_threshold

from als_datasets.kinds.als.extract.outliers import mean_neighbour_distances, statistical_outliers
from als_datasets.kinds.als.extract.route import TileGrid, route_points

FILES = ["autzen_trim.laz", "Topography.laz", "mvk-thin.las", "file_with_both_wkt_and_geotiff_vlrs.las",
         "ept/lone-star-source.laz"]
K, MULTIPLIER = 12, 2.2
#: neighbours asked of the k-d tree beyond the k + 1 the rule reads
EXTRA = 6


def read_pdal_coordinates(path: Path) -> np.ndarray:
    """The float64 coordinates PDAL reads: ``X × scale + offset`` per axis."""
    import laspy

    las = laspy.read(path)
    h = las.header
    return np.column_stack([np.asarray(las.points.array[d], np.float64) * h.scales[i] + h.offsets[i]
                            for i, d in enumerate(("X", "Y", "Z"))])


def exact_sqr(xyz: np.ndarray, i: int, idx: np.ndarray) -> np.ndarray:
    d = xyz[i] - xyz[idx]  # query − neighbour; numpy: no fused multiply-add
    return (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]


def reference_means(xyz: np.ndarray, k: int = K) -> tuple[np.ndarray, int]:
    """The running mean of every point's k nearest distances (rules 1-2), and how many points
    needed the brute force."""
    from scipy.spatial import cKDTree

    n = len(xyz)
    kk = min(k + 1 + EXTRA, n)
    _, idx = cKDTree(xyz).query(xyz, k=kk)
    d = xyz[:, None, :] - xyz[idx]
    sqr = np.sort((d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2], axis=1)
    # the superset proves itself when its k+1-th exact value is clearly below its largest one
    # (the tree's ordering may differ from ours by rounding, never by a relative 1e-9)
    unsure = np.flatnonzero(~(sqr[:, k] < sqr[:, -1] * (1 - 1e-9))) if kk < n else np.zeros(0, np.int64)
    for i in unsure:
        sqr[i, : k + 1] = np.sort(exact_sqr(xyz, i, np.arange(n)))[: k + 1]
    assert (sqr[:, 0] == 0).all()  # the point itself (or a duplicate of it) first
    m = np.zeros(n)
    for j in range(1, k + 1):  # vectorised over points, the same IEEE operations per point
        m += (np.sqrt(sqr[:, j]) - m) / j
    return m, len(unsure)


def reference_flags(means: np.ndarray, multiplier: float = MULTIPLIER) -> np.ndarray:
    """Rules 3-5 (``test_outliers.reference_threshold``: Welford, n − 1, in point order)."""
    out = ~(means < reference_threshold(means.tolist(), multiplier))
    if out.all():
        out[:] = False
    return out


def staged_offsets(xyz: np.ndarray) -> np.ndarray:
    """The build's route on one tile holding every point: float64 offsets from its corner."""
    n = len(xyz)
    side = float(np.ceil(max(np.ptp(xyz[:, 0]), np.ptp(xyz[:, 1])) + 2))
    x0 = float(np.floor(xyz[:, 0].min()) - 1)
    y1 = float(np.floor(xyz[:, 1].min()) - 1) + side
    chunk = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": np.zeros(n, np.uint16),
             "return_number": np.ones(n, np.uint8), "number_of_returns": np.ones(n, np.uint8),
             "classification": np.full(n, 2, np.uint8)}
    (_, pts), = route_points(chunk, TileGrid(0, x0=x0, y1=y1, tile=side, cols=1, rows=1), np.array([0]))
    assert len(pts) == n
    return np.column_stack([pts["x"], pts["y"], pts["z"]])


@pytest.mark.parametrize("name", FILES)
def test_real_file_equals_pdal_rules_bit_for_bit(name):
    path = next((p for p in (DATA / "als" / name, SHARED / "als" / name) if p.is_file()), None)
    if path is None:
        pytest.skip(f"{name} is absent (tests/data, ../shared/data)")
    xyz = read_pdal_coordinates(path)
    ref, _ = reference_means(xyz)
    flags = reference_flags(ref)
    offsets = staged_offsets(xyz)
    for threads in (1, 2):
        got = mean_neighbour_distances(offsets, K, threads)
        assert np.array_equal(got, ref), f"{name}: {int((got != ref).sum())} mean distances differ"
        assert np.array_equal(statistical_outliers(offsets, K, MULTIPLIER, threads), flags)
    # on the absolute coordinates too (the same differences, hence the same distances)
    assert np.array_equal(mean_neighbour_distances(xyz, K), ref)
