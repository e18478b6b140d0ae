"""Each sampling-frame step on small hand-made grids with known answers (DESIGN.md §6)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from als_datasets.kinds.als.frame import grid as g
from als_datasets.kinds.als.strategies import apply_strategy


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


def test_ordered_draw_matches_numpy_legacy_and_is_repeatable():
    """(The nesting 5 ⊂ 10 ⊂ 20 ⊂ 40 is checked below, on draws computed separately per N.)"""
    w = np.array([0.1, 0.2, 0.3, 0.4])
    d = g.ordered_draw(w, 41, 1000)
    exp = np.random.RandomState(41).choice(4, size=4, replace=False, p=w)
    assert d.tolist() == exp.tolist()
    w = np.random.default_rng(0).random(60)
    full = g.ordered_draw(w / w.sum(), 41, 1000)
    assert len(full) == 60 and len(set(full.tolist())) == 60
    # the draw does not depend on how many tiles are kept: computed again, it is the same order
    assert g.ordered_draw(w / w.sum(), 41, 1000).tolist() == full.tolist()


SIZES = (5, 10, 20, 40)


def _strategy_frame(n=90, seed=3):
    """One project's frame: ``n`` tiles in frame order, a third ineligible (interleaved), three
    land-cover × three slope labels of very unequal sizes (so geospatial weights are unequal)."""
    rng = np.random.default_rng(seed)
    lc = rng.choice(2, n, p=[0.8, 0.2])
    sl = rng.choice(3, n, p=[0.7, 0.25, 0.05])
    return pd.DataFrame({"tile_id": [f"p_c{i % 10}_r{i // 10}" for i in range(n)], "eligible": np.arange(n) % 3 != 1,
                         "_lc_label": lc, "_slope_label": sl})


def _recipe(strategy, n, seed=41):
    slope = {"flat": (0, 5), "sloped": (5, 17), "steep": (17, 90)}
    return SimpleNamespace(strategy=strategy, seed=seed, draws=1000, samples_per_project=n, slope_classes=slope)


def _selected_in_order(t):
    s = t[t["selected"]]
    return s.sort_values("draw_rank")["tile_id"].tolist()


@pytest.mark.parametrize("strategy", ["geospatial", "random"])
def test_draws_computed_separately_are_nested(strategy):
    """§6.7: 5 ⊂ 10 ⊂ 20 ⊂ 40 across draws computed independently (one per samples_per_project),
    and the smaller set is the first N of the larger one's order."""
    frame = _strategy_frame()
    n_elig = int(frame["eligible"].sum())
    got = {n: apply_strategy(frame.copy(), _recipe(strategy, n)) for n in SIZES}
    order = {n: _selected_in_order(t) for n, t in got.items()}
    for n in SIZES:
        t = got[n]
        assert len(order[n]) == min(n, n_elig)
        assert not t.loc[~t["eligible"], "selected"].any() and t.loc[~t["eligible"], "draw_rank"].isna().all()
        # ranks are exactly 0..k-1 over the eligible tiles, and selected == rank < N
        ranks = t.loc[t["eligible"], "draw_rank"].astype(int)
        assert sorted(ranks) == list(range(n_elig))
        assert (t.loc[t["eligible"], "selected"] == (ranks < n)).all()
        assert t["tile_id"].tolist() == frame["tile_id"].tolist()  # frame order kept
    for a, b in zip(SIZES, SIZES[1:]):
        assert set(order[a]) < set(order[b])
        assert order[b][:a] == order[a]
        # the whole draw (ranks and weights) does not depend on N
        assert got[a]["draw_rank"].equals(got[b]["draw_rank"])
        assert np.array_equal(got[a]["weight"].to_numpy(), got[b]["weight"].to_numpy())
    # another seed gives another order (the nesting is not an accident of a fixed ranking)
    other = _selected_in_order(apply_strategy(frame.copy(), _recipe(strategy, 40, seed=42)))
    assert other != order[40]


def test_draws_nested_when_a_project_has_fewer_eligible_tiles_than_n():
    frame = _strategy_frame(n=36)  # 24 eligible tiles: 40 takes all of them, 20 is its prefix
    got = {n: _selected_in_order(apply_strategy(frame.copy(), _recipe("geospatial", n))) for n in SIZES}
    assert len(got[40]) == 24 and set(got[40]) == set(frame.loc[frame["eligible"], "tile_id"])
    for a, b in zip(SIZES, SIZES[1:]):
        assert got[b][:a] == got[a]


def test_plans_computed_separately_are_nested(tmp_path):
    """The same at the plan level: four plans of a small real COPC file, one per N; the selected
    tiles, their order and the shard keys of the smaller plan are the first N of the larger one's."""
    from synth_inputs import DATA, landcover_around, write_recipe

    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
    from als_datasets.plan import make_plan
    from als_datasets.recipe import load_recipe

    pc = DATA / "als" / "simple.copc.laz"
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(pc)).bounds,
                     pattern=lambda h, w: np.where(np.indices((h, w))[1] < w // 4, 22, 41))
    rp = write_recipe(tmp_path / "r.yaml", name="nest", landcover={"path": "lc.tif"},
                      projects=[{"name": "nest", "pointclouds": [str(pc)]}], output={"dir": "out", "shard_max_samples": 3})
    plans = {n: make_plan(load_recipe(rp, overrides={"samples_per_project": n})) for n in SIZES}
    f40 = plans[40].frame
    assert int(f40["eligible"].sum()) > 40 and f40.loc[f40["eligible"], "landcover"].nunique() == 2
    order = {n: p.selected.sort_values("draw_rank")["tile_id"].tolist() for n, p in plans.items()}
    keys = {n: [k for s in p.shards for k in s.keys] for n, p in plans.items()}
    for n in SIZES:
        assert len(order[n]) == n and keys[n] == order[n]
    for a, b in zip(SIZES, SIZES[1:]):
        assert set(order[a]) < set(order[b]) and order[b][:a] == order[a]
        assert keys[b][:a] == keys[a]
        fa, fb = plans[a].frame, plans[b].frame
        assert fa["tile_id"].tolist() == fb["tile_id"].tolist() and fa["draw_rank"].equals(fb["draw_rank"])
