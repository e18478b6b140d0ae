"""Extraction pieces: routing points to tiles, the statistical outlier filter, noise classes."""

import numpy as np
import pytest

from als_datasets.kinds.als.extract.route import POINT_DTYPE, TileGrid, route_points
from als_datasets.kinds.als.extract.tile import clean_points, sample_arrays, statistical_outliers


def _chunk(x, y, z=None, cls=None):
    n = len(x)
    return {"x": np.asarray(x, float), "y": np.asarray(y, float), "z": np.zeros(n) if z is None else np.asarray(z, float),
            "intensity": np.arange(n, dtype=np.uint16), "return_number": np.ones(n, np.uint8),
            "number_of_returns": np.ones(n, np.uint8),
            "classification": np.full(n, 2, np.uint8) if cls is None else np.asarray(cls, np.uint8)}


def test_route_points_to_selected_tiles():
    grid = TileGrid(32610, x0=1000.0, y1=3000.0, tile=500.0, cols=2, rows=2)
    lookup = np.array([0, -1, -1, 1])  # NW tile (c0 r0) → slot 0, SE tile (c1 r1) → slot 1
    x = [1000.0, 1499.9, 1600.0, 1700.0, 999.0, 2000.0, 1250.0]
    y = [2999.0, 2500.1, 2100.0, 2000.0, 2900.0, 2100.0, 2400.0]
    out = dict(route_points(_chunk(x, y), grid, lookup))
    assert sorted(out) == [0, 1]
    a = out[0]
    assert a.dtype == POINT_DTYPE
    assert np.allclose(a["x"], [0.0, 499.9]) and np.allclose(a["y"], [499.0, 0.1])  # relative to (1000, 2500)
    b = out[1]  # the SE tile's lower-left corner is (1500, 2000); x = 2000 is outside (east edge)
    assert np.allclose(b["x"], [100.0, 200.0]) and np.allclose(b["y"], [100.0, 0.0])
    assert b["intensity"].tolist() == [2, 3]  # attributes travel with their points, in file order


def test_tile_relative_coordinates_stay_below_the_tile_size():
    """At UTM magnitudes a point 1 µm inside a tile's east / north edge is 499.999999 m from its
    west / south edge, which float32 rounds to 500.0: the sample schema promises [0, tile)."""
    x0, y0 = 512000.0, 4321000.0  # the tile's lower-left corner
    grid = TileGrid(32610, x0=x0, y1=y0 + 500.0, tile=500.0, cols=1, rows=1)
    assert np.float32((x0 + 500 - 1e-6) - x0) == np.float32(500.0)  # what plain rounding gives
    x = [x0 + 500 - 1e-6, x0, x0 + 250.0, x0 + 500 - 1e-6]
    y = [y0 + 10.0, y0 + 500 - 1e-6, y0, y0 + 500 - 1e-6]
    out = dict(route_points(_chunk(x, y), grid, np.array([0])))
    staged = out[0]
    assert len(staged) == 4
    assert staged["x"].dtype == np.float64  # staged exactly (the outlier filter's distances)
    assert staged["x"].tolist() == [xi - x0 for xi in x]
    xyz = sample_arrays(staged, 500.0)["xyz.npy"]
    assert xyz.dtype == np.float32
    assert (xyz[:, :2] >= 0).all() and (xyz[:, :2] < 500.0).all(), xyz
    top = np.nextafter(np.float32(500.0), np.float32(0))
    assert xyz[:, 0].tolist() == [top, 0.0, 250.0, top] and xyz[:, 1].tolist() == [10.0, top, 0.0, top]


def test_outlier_filter_flags_isolated_points():
    rng = np.random.default_rng(1)
    g = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0)), -1).reshape(-1, 2)
    xyz = np.column_stack([g + rng.normal(0, 0.05, g.shape), rng.normal(0, 0.05, len(g))])
    xyz = np.vstack([xyz, [[15, 15, 80.0], [-40, 10, 0.0]]])
    out = statistical_outliers(xyz, k=12, multiplier=2.2)
    assert out[-1] and out[-2]
    assert out[:-2].sum() < 0.01 * len(g)


def test_clean_points_drops_noise_classes_then_outliers():
    n = 200
    rng = np.random.default_rng(3)
    pts = np.zeros(n + 2, dtype=POINT_DTYPE)
    pts["x"][:n], pts["y"][:n] = rng.random(n) * 20, rng.random(n) * 20
    pts["classification"] = 2
    pts["classification"][:3] = 7
    pts["classification"][3] = 18
    pts["x"][n:], pts["z"][n:] = [500, 600], [300, 400]
    kept, n_cls, n_out = clean_points(pts, (7, 18), 12, 2.2)
    assert n_cls == 4 and n_out >= 2
    assert not np.isin(kept["classification"], [7, 18]).any()
    assert kept["x"].max() < 100
    assert len(kept) == n + 2 - n_cls - n_out


@pytest.mark.parametrize("n", [0, 5])
def test_clean_points_small(n):
    pts = np.zeros(n, dtype=POINT_DTYPE)
    kept, n_cls, n_out = clean_points(pts, (7,), 12, 2.2)
    assert len(kept) == n and n_out == 0
