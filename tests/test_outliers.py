"""PDAL's statistical outlier filter, exactly: a brute-force reference that follows
``OutlierFilter::processStatistical`` rule for rule, and the production filter equal to it.

The reference (float64 throughout, plain Python loops where PDAL loops):

1. k + 1 nearest neighbours of every point, the point itself first at distance 0; squared
   distances ``(dx² + dy²) + dz²`` with ``dx = query − neighbour`` (nanoflann's L2 metric);
2. the running mean ``m += (√d²_j − m) / j`` over neighbours j = 1..k;
3. Welford's mean and variance over the points in order, variance with n − 1;
   threshold = mean + multiplier × σ;
4. ``mean distance < threshold`` is an inlier, anything else an outlier;
5. when every point is an outlier, PDAL keeps them all.

Coordinates are the float64 values of scaled LAS integers at UTM magnitudes (as PDAL reads them);
the production filter sees the staged tile-relative offsets, which must give the same flags.
"""

import math

import numpy as np
import pytest

from als_datasets.kinds.als.extract.outliers import (
    _welford_threshold,
    mean_neighbour_distances,
    statistical_outliers,
)
from als_datasets.kinds.als.extract.route import POINT_DTYPE, TileGrid, route_points


def reference_means(xyz: np.ndarray, k: int) -> list[float]:
    x, y, z = (xyz[:, i].tolist() for i in range(3))
    means = []
    for i in range(len(x)):
        dx, dy, dz = xyz[i, 0] - xyz[:, 0], xyz[i, 1] - xyz[:, 1], xyz[i, 2] - xyz[:, 2]
        sqr = np.sort((dx * dx + dy * dy) + dz * dz)[: k + 1]  # rule 1 (numpy: no fused multiply-add)
        assert sqr[0] == 0.0  # the point itself (or a duplicate of it) comes first
        m = 0.0
        for j in range(1, k + 1):  # rule 2
            m += (math.sqrt(float(sqr[j])) - m) / j
        means.append(m)
    return means


def _sample_against_rule(xyz, got, idx):
    """Rules 1-2 by brute force (k = 12) for the points ``idx``: ``got`` must hold the same bits."""
    for i in idx:
        d = xyz[i] - xyz
        sqr = np.sort((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2])[:13]
        m = 0.0
        for j in range(1, 13):
            m += (math.sqrt(float(sqr[j])) - m) / j
        assert got[i] == m


def reference_threshold(means: list[float], multiplier: float) -> float:
    n, m1, m2 = 0, 0.0, 0.0
    for d in means:  # rule 3
        n1 = n
        n += 1
        delta = d - m1
        delta_n = delta / n
        m1 += delta_n
        m2 += delta * delta_n * n1
    return m1 + multiplier * math.sqrt(m2 / (n - 1.0))


def reference_outliers(xyz: np.ndarray, k: int = 12, multiplier: float = 2.2) -> np.ndarray:
    if len(xyz) <= k:  # PDAL reads past its neighbour list here; we flag nothing
        return np.zeros(len(xyz), bool)
    means = reference_means(xyz, k)
    t = reference_threshold(means, multiplier)
    out = np.array([not (d < t) for d in means])  # rule 4
    if out.all():  # rule 5
        out[:] = False
    return out


def seeded_tile(seed: int, n: int = 1500, dup: int = 60, lattice: int = 150):
    """Scaled LAS integers (0.01 m) of one 100 m piece of a tile at UTM magnitudes: terrain, canopy,
    a few far outliers, exact duplicates, and a patch of points on a 0.5 m lattice (ties at the
    k-th distance).  Returns the absolute float64 coordinates PDAL would read."""
    rng = np.random.default_rng(seed)
    x = rng.random(n) * 100
    y = rng.random(n) * 100
    z = 50 + 0.1 * x + np.where(rng.random(n) < 0.3, rng.random(n) * 20, 0.0)
    gx, gy = np.meshgrid(np.arange(lattice // 10) * 0.5 + 30, np.arange(10) * 0.5 + 30)
    x = np.concatenate([x, gx.ravel(), [10, 90, 50]])
    y = np.concatenate([y, gy.ravel(), [10, 90, 50]])
    z = np.concatenate([z, np.full(gx.size, 52.0), [150, -40, 300]])
    X, Y, Z = (np.round(v * 100).astype(np.int64) for v in (x, y, z))
    pick = rng.integers(0, len(X), dup)
    X, Y, Z = (np.concatenate([v, v[pick]]) for v in (X, Y, Z))
    order = rng.permutation(len(X))
    X, Y, Z = X[order], Y[order], Z[order]
    scale, off = 0.01, (512_300.0, 4_321_700.0, 0.0)
    return np.column_stack([X * scale + off[0], Y * scale + off[1], Z * scale + off[2]])


def staged(xyz_abs: np.ndarray) -> np.ndarray:
    """The production path: route the absolute coordinates into their tile's staged offsets."""
    n = len(xyz_abs)
    chunk = {"x": xyz_abs[:, 0], "y": xyz_abs[:, 1], "z": xyz_abs[:, 2],
             "intensity": np.zeros(n, np.uint16), "return_number": np.ones(n, np.uint8),
             "number_of_returns": np.ones(n, np.uint8), "classification": np.full(n, 2, np.uint8)}
    grid = TileGrid(32610, x0=512_000.0, y1=4_322_000.0, tile=500.0, cols=1, rows=1)
    (slot, pts), = route_points(chunk, grid, np.array([0]))
    assert pts.dtype == POINT_DTYPE and len(pts) == n  # the piece lies inside the one tile, in order
    return np.column_stack([pts["x"], pts["y"], pts["z"]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filter_equals_pdal_reference_on_seeded_tiles(seed):
    xyz = seeded_tile(seed)
    ref_means = reference_means(xyz, 12)
    rel = staged(xyz)
    assert mean_neighbour_distances(rel, 12).tolist() == ref_means  # bit for bit, from the offsets
    assert mean_neighbour_distances(xyz, 12).tolist() == ref_means  # and from absolute coordinates
    expected = reference_outliers(xyz)
    assert expected.any() and not expected.all()
    assert np.array_equal(statistical_outliers(rel, 12, 2.2), expected)
    assert np.array_equal(statistical_outliers(rel, 12, 2.2, threads=2), expected)


def test_ties_at_the_kth_distance_and_duplicates():
    """A pure lattice (every point has many neighbours at the k-th distance) plus exact duplicates
    (zero distances other than the point's own)."""
    g = np.stack(np.meshgrid(np.arange(25.0), np.arange(25.0), [0.0, 1.0]), -1).reshape(-1, 3)
    xyz = np.vstack([g, g[::7]]) + [500_000.0, 4_000_000.0, 10.0]
    assert mean_neighbour_distances(xyz, 12).tolist() == reference_means(xyz, 12)
    assert np.array_equal(statistical_outliers(xyz, 12, 2.2), reference_outliers(xyz))


def _multiplier_hitting(means: list[float], target: float) -> float:
    """A multiplier whose Welford threshold is exactly ``target`` (searched by ulps)."""
    mean_t = reference_threshold(means, 0.0)
    sigma = reference_threshold(means, 1.0) - mean_t
    m = (target - mean_t) / sigma
    for _ in range(10_000):
        t = reference_threshold(means, m)
        if t == target:
            return m
        m = math.nextafter(m, math.inf if t < target else -math.inf)
    raise AssertionError("no multiplier hits the target")


def test_a_point_exactly_at_the_threshold_is_an_outlier():
    xyz = seeded_tile(3, n=600, dup=10)
    means = reference_means(xyz, 12)
    target = sorted(means)[-5]  # the fifth largest mean distance
    mult = _multiplier_hitting(means, target)
    assert _welford_threshold(np.array(means), mult) == target
    expected = reference_outliers(xyz, 12, mult)
    at = np.array(means) == target
    assert expected[at].all() and expected.sum() == 5  # ">=": the point at the threshold is out
    assert np.array_equal(statistical_outliers(staged(xyz), 12, mult), expected)


def test_when_every_point_is_an_outlier_none_is_flagged():
    """Two stacks of 20 identical points: every mean distance is 0, σ = 0, the threshold is 0 and
    every point sits at it (rule 4 flags all); PDAL then keeps them all (rule 5)."""
    xyz = np.repeat([[500_000.0, 4_000_000.0, 10.0], [500_100.0, 4_000_000.0, 10.0]], 20, axis=0)
    means = reference_means(xyz, 12)
    assert set(means) == {0.0} and reference_threshold(means, 2.2) == 0.0
    assert not reference_outliers(xyz).any()
    assert not statistical_outliers(xyz, 12, 2.2).any()


def test_few_points_and_empty():
    rng = np.random.default_rng(5)
    assert not statistical_outliers(rng.random((12, 3)), 12, 2.2).any()
    assert statistical_outliers(np.zeros((0, 3)), 12, 2.2).shape == (0,)
    xyz = rng.random((13, 3))
    assert np.array_equal(statistical_outliers(xyz, 12, 2.2), reference_outliers(xyz))


def test_far_outliers_and_clusters_take_the_slow_paths():
    """Points far from everything (answered by the ring search) and a dense cluster next to a sparse
    one (different grid levels) still equal the reference."""
    rng = np.random.default_rng(6)
    dense = rng.random((800, 3)) * [5, 5, 1]
    sparse = rng.random((300, 3)) * [200, 200, 40] + [20, 0, 0]
    far = np.array([[1000.0, 1000.0, 0.0], [-500.0, 30.0, 900.0], [1000.0, 1000.5, 0.0]])
    xyz = np.vstack([dense, sparse, far])
    assert mean_neighbour_distances(xyz, 12).tolist() == reference_means(xyz, 12)
    assert np.array_equal(statistical_outliers(xyz, 12, 2.2), reference_outliers(xyz))


def test_threads_change_no_number():
    """Above 50 000 points the passes run as jobs of grid rows in threads: the same means, bit for bit."""
    rng = np.random.default_rng(7)
    n = 60_000
    xyz = np.column_stack([rng.random(n) * 80, rng.random(n) * 80, rng.random(n) * rng.choice([0.1, 20.0], n)])
    a = mean_neighbour_distances(xyz, 12, threads=1)
    b = mean_neighbour_distances(xyz, 12, threads=2)
    assert a.tobytes() == b.tobytes()
    _sample_against_rule(xyz, a, rng.choice(n, 200, replace=False))  # and a sample against the rule


def _scaled(x, y, z, off=(512_300.0, 4_321_700.0, 0.0)):
    """Absolute float64 coordinates of 0.01 m scaled integers (as PDAL reads them)."""
    X, Y, Z = (np.round(np.asarray(v) * 100).astype(np.int64) for v in (x, y, z))
    return np.column_stack([X * 0.01 + off[0], Y * 0.01 + off[1], Z * 0.01 + off[2]])


def test_canopy_heavy_tile_takes_the_slab_pass_exactly():
    """70 % of the points spread up to 30 m above a sloping ground (most queries answered by the
    coarse pass's z slabs, some by the ring search), at UTM magnitude and from the staged offsets."""
    rng = np.random.default_rng(8)
    n = 5000
    x, y = rng.random(n) * 70, rng.random(n) * 70
    ground = 50 + 0.2 * x + 2 * np.sin(y / 9.0)
    z = ground + np.where(rng.random(n) < 0.7, rng.random(n) * 30, 0.0)
    xyz = _scaled(x, y, z)
    ref = reference_means(xyz, 12)
    assert mean_neighbour_distances(xyz, 12).tolist() == ref
    assert mean_neighbour_distances(staged(xyz), 12).tolist() == ref
    assert np.array_equal(statistical_outliers(staged(xyz), 12, 2.2), reference_outliers(xyz))


def test_sparse_and_degenerate_shapes():
    """Two clusters 3 km apart, points along a line, a tall vertical column (no extent in x, y),
    a flat plane of exact duplicates-in-z: every search path must still be exact."""
    rng = np.random.default_rng(9)
    a = rng.random((700, 3)) * [20, 20, 15]
    b = rng.random((500, 3)) * [30, 5, 2] + [3000, 2000, 40]
    line = np.column_stack([np.arange(400) * 0.37, np.full(400, 50.0), 60 + rng.random(400) * 0.02])
    column = np.column_stack([np.full(300, 10.0), np.full(300, 60.0), np.arange(300) * 0.1])
    for xyz in (np.vstack([a, b]), np.vstack([a, line, column]), column, line):
        xyz = _scaled(*xyz.T)
        assert mean_neighbour_distances(xyz, 12).tolist() == reference_means(xyz, 12)
        assert np.array_equal(statistical_outliers(xyz, 12, 2.2), reference_outliers(xyz))


def test_threads_change_no_number_on_a_canopy_tile():
    """The thread pool's jobs (grid rows) on a tile whose canopy goes to the slab pass: the same
    means as one thread, bit for bit, whatever the thread count."""
    rng = np.random.default_rng(10)
    n = 80_000
    x, y = rng.random(n) * 100, rng.random(n) * 100
    z = 100 + 0.1 * y + np.where(rng.random(n) < 0.4, rng.random(n) * 25, 0.0)
    xyz = _scaled(x, y, z)
    a = mean_neighbour_distances(xyz, 12, threads=1)
    for threads in (2, 3):
        assert mean_neighbour_distances(xyz, 12, threads=threads).tobytes() == a.tobytes()
    _sample_against_rule(xyz, a, rng.choice(n, 100, replace=False))  # a sample against the reference rule


def test_trunks_and_poles_take_the_fine_slab_pass_exactly():
    """Real tiles are not uniform: a trunk or a pole puts hundreds of points into one fine cell
    (lone-star, ../shared/data: 471 in a 15 cm column).  Such blocks are searched by z slabs in the
    fine pass (the grid is checked to have them); the means stay those of the reference."""
    from als_datasets.kinds.als.extract.outlier_grid import _grid, _max_block, grid_cell_size
    from als_datasets.kinds.als.extract.outliers import dense_block

    rng = np.random.default_rng(11)
    n = 3000
    x, y = rng.random(n) * 40, rng.random(n) * 40
    z = 50 + 0.1 * x
    parts = [(x, y, z)]
    for cx, cy in [(10, 10), (25, 30), (31, 8)]:
        m = 400  # a pole 12 m high, 5 cm across
        a = rng.random(m) * 2 * np.pi
        parts.append((cx + 0.05 * np.cos(a), cy + 0.05 * np.sin(a), 51 + rng.random(m) * 12))
    xyz = _scaled(*(np.concatenate(v) for v in zip(*parts)))
    o = staged(xyz)
    g = _grid(*(np.ascontiguousarray(o[:, i]) for i in range(3)), grid_cell_size(o[:, 0], o[:, 1], 12))
    assert dense_block(len(o), g[5] * g[6], _max_block(g[1], g[5], g[6], 1)) > 0
    ref = reference_means(xyz, 12)
    for threads in (1, 2):
        assert mean_neighbour_distances(o, 12, threads).tolist() == ref
    assert np.array_equal(statistical_outliers(o, 12, 2.2), reference_outliers(xyz))


def test_returns_kilometres_off_keep_memory_and_time_bounded():
    """A few returns with absurd z (10 000 km up, 3 000 km down) would ask the z index for millions
    of buckets; their count is capped, and the answer stays exact."""
    from als_datasets.kinds.als.extract.outlier_grid import _bucket_total, _grid, bucket_height

    rng = np.random.default_rng(12)
    n = 60_000
    xyz = np.column_stack([rng.random(n) * 60, rng.random(n) * 60, rng.random(n) * 20])
    xyz[0, 2], xyz[1, 2], xyz[2] = 1e7, 5e6, [30.0, 30.0, -3e6]
    x, y, z = (np.ascontiguousarray(xyz[:, i]) for i in range(3))
    order, start, *_ = _grid(x, y, z, 3.0)
    zs = z[order]
    h = bucket_height(zs, start, len(start) - 1, 1.0)
    assert h < 1.0 and _bucket_total(zs, start, len(start) - 1, h) <= 8 * n + len(start) - 1 + len(start)
    got = mean_neighbour_distances(xyz, 12, threads=2)
    assert np.array_equal(got, mean_neighbour_distances(xyz, 12))
    _sample_against_rule(xyz, got, [0, 1, 2, *rng.choice(n, 60, replace=False)])
    assert statistical_outliers(xyz, 12, 2.2)[:3].all()
