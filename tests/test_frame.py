"""Each sampling-frame step on small hand-made grids with known answers (DESIGN.md §6)."""

import numpy as np
import pytest

from als_datasets.kinds.als.frame import grid as g


def test_utm_epsg():
    assert g.utm_epsg(-123.07, 44.05) == 32610
    assert g.utm_epsg(149.14, -35.3) == 32755
    assert g.utm_epsg(-180.0, 0.0) == 32601
    assert g.utm_epsg(179.99, 10) == 32660
    assert g.utm_epsg(3.0, 0.0) == 32631  # zone edge goes east


def test_landcover_ids_other_and_invalid():
    codes = np.array([[21, 41, 11], [24, 43, 255]])
    valid = np.array([[True, True, True], [True, False, True]])
    ids = g.landcover_ids(codes, [(21, 22, 23, 24), (41, 42, 43)], valid)
    assert ids.tolist() == [[0, 1, 2], [0, 2, 2]]


def test_slope_plane_and_edges():
    # a plane rising 25 m per 25 m pixel eastwards: 45 degrees everywhere (edges one-sided)
    dem = np.tile(np.arange(5) * 25.0, (4, 1))
    s = g.slope_degrees(dem, 25.0)
    assert np.allclose(s, 45.0)
    # gradient with central differences: a single bump
    dem = np.zeros((3, 3))
    dem[1, 1] = 50.0
    s = g.slope_degrees(dem, 25.0)
    # centre: central differences of 0,50,0 → 0; left edge cell (1,0): one-sided (50-0)/25 = 2
    assert s[1, 1] == pytest.approx(0.0)
    assert s[1, 0] == pytest.approx(np.degrees(np.arctan(2.0)))
    assert s[0, 1] == pytest.approx(np.degrees(np.arctan(2.0)))
    # north-south plane: np.gradient's axis 0 is y
    dem = np.tile((np.arange(4) * 5.0)[:, None], (1, 3))
    assert np.allclose(g.slope_degrees(dem, 25.0), np.degrees(np.arctan(0.2)))


def test_slope_nan_propagates():
    dem = np.ones((4, 4))
    dem[0, 0] = np.nan
    s = g.slope_degrees(dem, 25.0)
    assert np.isnan(s[0, 0]) and np.isnan(s[0, 1]) and np.isnan(s[1, 0])
    assert np.isfinite(s[3, 3])


def test_slope_classes_boundaries():
    bins = [(0, 5), (5, 17), (17, 90)]
    s = np.array([0.0, 4.999, 5.0, 16.9, 17.0, 89.0, 90.0, np.nan])
    assert g.slope_ids(s, bins).tolist() == [0, 0, 1, 1, 2, 2, 2, -1]


def test_tile_blocks_drop_remainders_and_order():
    a = np.arange(5 * 7).reshape(5, 7)
    b = g.tile_blocks(a, 2)
    assert b.shape == (2, 3, 4)
    assert b[0, 0].tolist() == [0, 1, 7, 8]      # north-west tile
    assert b[0, 2].tolist() == [4, 5, 11, 12]    # row-major: east along the first row
    assert b[1, 0].tolist() == [14, 15, 21, 22]


def _stats(lc, sl, slope=None, k=2, s=3, px=2):
    lc, sl = np.asarray(lc), np.asarray(sl)
    slope = np.zeros(lc.shape) if slope is None else slope
    return g.tile_stats(lc, sl, slope, k, s, px)


def test_tile_stats_fraction_mode_and_ties():
    # one 2x2 tile: classes 0,1,1,2(other) → fraction 0.75, mode 1
    st = _stats([[0, 1], [1, 2]], [[0, 0], [1, -1]])
    assert st["class_fraction"].tolist() == [0.75]
    assert st["lc_label"].tolist() == [1]
    assert st["slope_label"].tolist() == [0]
    # tie between classes 0 and 1 → the class listed first wins; slope tie → first slope class
    st = _stats([[0, 1], [1, 0]], [[2, 1], [1, 2]])
    assert st["lc_label"].tolist() == [0]
    assert st["slope_label"].tolist() == [1]
    # no valid slope pixel → -1
    st = _stats([[0, 0], [0, 0]], [[-1, -1], [-1, -1]])
    assert st["slope_label"].tolist() == [-1]


def test_tile_stats_slope_mean_ignores_nan():
    slope = np.array([[1.0, 3.0], [np.nan, 5.0]])
    st = _stats([[0, 0], [0, 0]], [[0, 0], [-1, 1]], slope)
    assert st["slope_mean_deg"][0] == pytest.approx(3.0)


def test_eligibility_threshold():
    frac = np.array([0.79, 0.8, 1.0, 0.9])
    slope = np.array([0, 0, 0, -1])
    assert g.eligibility(frac, slope, 0.8).tolist() == [False, True, True, False]


def test_stratum_weights():
    eligible = np.array([True, True, True, True, False])
    lc = np.array([0, 0, 0, 1, 1])
    sl = np.array([0, 0, 0, 2, 2])
    w = g.stratum_weights(eligible, lc, sl, 3)
    # stratum (0,0) has 3 tiles: 1/3 each; (1,2) has 1 eligible: 1 → normalised by 2
    assert w.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2, 0.0])
    assert w.sum() == pytest.approx(1.0)
    assert g.stratum_weights(np.zeros(3, bool), lc[:3], sl[:3], 3).tolist() == [0, 0, 0]


def test_ordered_draw_matches_numpy_legacy_and_is_nested():
    w = np.array([0.1, 0.2, 0.3, 0.4])
    d = g.ordered_draw(w, 41, 1000)
    exp = np.random.RandomState(41).choice(4, size=4, replace=False, p=w)
    assert d.tolist() == exp.tolist()
    w = np.random.default_rng(0).random(60)
    full = g.ordered_draw(w / w.sum(), 41, 1000)
    assert len(full) == 60 and len(set(full.tolist())) == 60
    for a, b in [(5, 10), (10, 20), (20, 40)]:
        assert set(full[:a]) <= set(full[:b])
