"""Height entropy above ground (als_datasets.kinds.als.extract.ground, stats.height_entropy):
terrain relief is not vegetation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from als_datasets.kinds.als.extract.ground import GROUND, LOWEST, ground_surface, heights_above_ground
from als_datasets.kinds.als.extract.route import POINT_DTYPE
from als_datasets.stats import height_entropy

SIZE = 100.0  # m


def _points(x, y, z, cls) -> np.ndarray:
    pts = np.zeros(len(x), dtype=POINT_DTYPE)
    pts["x"], pts["y"], pts["z"], pts["classification"] = x, y, z, cls
    return pts


def _tile(rng, *, slope_deg=0.0, trees_m=0.0, density=4.0, base=250.0) -> np.ndarray:
    """Ground returns (class 2) over a SIZE x SIZE tile sloping ``slope_deg`` along x; with
    ``trees_m`` > 0, vegetation returns (class 5) spread evenly 0-``trees_m`` m above the ground
    over half the tile, as many as the ground returns under them."""
    n = int(SIZE * SIZE * density)
    x, y = rng.random(n) * SIZE, rng.random(n) * SIZE
    ground = base + x * math.tan(math.radians(slope_deg))
    z = ground + rng.normal(0, 0.05, n)
    cls = np.full(n, 2, np.uint8)
    if trees_m > 0:
        veg = x < SIZE / 2
        vx, vy = x[veg], y[veg]
        vz = base + vx * math.tan(math.radians(slope_deg)) + rng.random(veg.sum()) * trees_m
        x, y, z = np.concatenate([x, vx]), np.concatenate([y, vy]), np.concatenate([z, vz])
        cls = np.concatenate([cls, np.full(veg.sum(), 5, np.uint8)])
    return _points(x, y, z, cls)


def _above_ground(pts) -> tuple[float, str]:
    h, ref = heights_above_ground(pts)
    return height_entropy(h, reference=0.0), ref


def test_bare_slope_scores_near_zero_above_ground_but_high_above_the_lowest_point():
    pts = _tile(np.random.default_rng(0), slope_deg=30.0)
    h, ref = _above_ground(pts)
    assert ref == GROUND
    assert h < 0.05
    lowest = height_entropy(pts["z"])  # the old rule: 0-58 m of relief, ~uniform
    assert lowest > 3.5
    assert lowest == pytest.approx(math.log(58), abs=0.1)


def test_trees_score_higher_than_bare_ground_on_flat_and_sloped_land():
    rng = np.random.default_rng(1)
    bare, ref = _above_ground(_tile(rng))
    trees, ref_t = _above_ground(_tile(rng, trees_m=20.0))
    assert ref == ref_t == GROUND
    assert bare < 0.05
    # ground returns (2/3 of the points) in bin 0, the vegetation (1/3) evenly over bins 0-19
    assert trees == pytest.approx(_entropy([2 / 3 + 1 / 60] + [1 / 60] * 19), abs=0.05)
    assert trees > 1.5
    # the same trees on a 30° slope: the same score above ground, while above the lowest point the
    # relief makes bare slope look as "structured" as forest
    sloped_trees, _ = _above_ground(_tile(rng, slope_deg=30.0, trees_m=20.0))
    assert sloped_trees == pytest.approx(trees, abs=0.1)
    assert height_entropy(_tile(rng, slope_deg=30.0)["z"]) > trees


def test_curved_terrain_follows_the_ground():
    rng = np.random.default_rng(2)
    n = 40000
    x, y = rng.random(n) * SIZE, rng.random(n) * SIZE
    z = 300 + 20 * np.sin(x / 15) * np.cos(y / 20)  # hills of ±20 m
    pts = _points(x, y, z, np.full(n, 2, np.uint8))
    surface = ground_surface(pts["x"], pts["y"], pts["z"], pts["classification"])
    assert np.abs(surface - pts["z"]).max() < 1.0  # 5 m cells: within a metre everywhere
    assert _above_ground(pts)[0] < 0.05


def test_too_few_ground_returns_falls_back_to_the_lowest_point():
    rng = np.random.default_rng(3)
    pts = _tile(rng, slope_deg=10.0)
    unclassified = pts.copy()
    unclassified["classification"] = 1
    h, ref = heights_above_ground(unclassified)
    assert ref == LOWEST and np.allclose(h, unclassified["z"] - unclassified["z"].min())
    corner = pts.copy()  # ground in one 10 m corner only: 4 cells of ~400, under the 10 % needed
    corner["classification"] = np.where((pts["x"] < 10) & (pts["y"] < 10), 2, 1)
    assert heights_above_ground(corner)[1] == LOWEST
    two = pts[:2].copy()  # two ground points: no surface
    assert heights_above_ground(two)[1] == LOWEST
    empty = pts[:0]
    h, ref = heights_above_ground(empty)
    assert h.size == 0 and ref == LOWEST and height_entropy(h, reference=0.0) == 0.0


def test_ground_on_one_line_uses_the_nearest_cell():
    # ground only along a road (one row of cells, collinear: no triangle), vegetation elsewhere
    x = np.concatenate([np.linspace(0, 99, 200), np.linspace(0, 99, 50)])
    y = np.concatenate([np.full(200, 2.0), np.full(50, 3.0)])
    z = np.concatenate([np.full(200, 10.0), np.full(50, 15.0)])
    cls = np.concatenate([np.full(200, 2), np.full(50, 5)]).astype(np.uint8)
    h, ref = heights_above_ground(_points(x, y, z, cls))
    assert ref == GROUND
    assert np.allclose(h[:200], 0.0, atol=1e-4) and np.allclose(h[200:], 5.0, atol=1e-4)


def _entropy(counts) -> float:
    p = np.asarray(counts, float) / np.sum(counts)
    return float(-(p * np.log(p)).sum())


def test_height_entropy_reference_and_bins():
    z = np.array([10.0, 10.5, 11.2, 12.9, 250.0])
    # default: above the lowest point (unchanged): 1 m bins 0, 0, 1, 2 and the last (99) for 240 m
    assert height_entropy(z) == pytest.approx(_entropy([2, 1, 1, 1]))
    assert height_entropy(z, reference=10.0) == height_entropy(z)
    # a per-point reference; a point below it goes to the first bin: heights 0, -0.5, 0.2, 1.9, 1.0
    ref = np.array([10.0, 11.0, 11.0, 11.0, 249.0])
    assert height_entropy(z, reference=ref) == pytest.approx(_entropy([3, 2]))


def test_ground_under_a_building_keeps_the_slope():
    """No ground returns under a 20 x 20 m roof on a 30° slope: the ground there continues the
    hillside, so the roof points stand 8 m above it (above the nearest ground they would not)."""
    rng = np.random.default_rng(4)
    pts = _tile(rng, slope_deg=30.0)
    t = math.tan(math.radians(30.0))
    inside = (np.abs(pts["x"] - 50) < 10) & (np.abs(pts["y"] - 50) < 10)
    pts = pts[~inside]
    rx, ry = rng.random(1600) * 20 + 40, rng.random(1600) * 20 + 40
    roof = _points(rx, ry, 250 + rx * t + 8.0, np.full(1600, 6, np.uint8))
    h, ref = heights_above_ground(np.concatenate([pts, roof]))
    assert ref == GROUND
    assert np.allclose(h[len(pts):], 8.0, atol=0.3)
    assert np.abs(h[:len(pts)]).max() < 0.3


def test_ground_far_from_any_ground_return_stays_level():
    """Water 40 m wide between two banks that slope towards it: the surface follows each bank's
    slope for 10 m, then stays level, instead of tilting on across the lake."""
    rng = np.random.default_rng(5)
    n = 20000
    x, y = rng.random(n) * SIZE, rng.random(n) * SIZE
    bank = (x < 30) | (x >= 70)
    ground = 100 + np.where(x < 30, (30 - x) * 0.2, (x - 70) * 0.2)  # 0.2 m/m down to the water
    cls = np.where(bank, 2, 9).astype(np.uint8)
    z = np.where(bank, ground, 100.0)
    surface = ground_surface(x, y, z, cls)
    water = ~bank
    # the banks: exact; the water: within the 10 m reach of the slope (2 m), never far below it
    assert np.abs(surface[bank] - z[bank]).max() < 0.05
    assert surface[water].min() > 100 - 2.5 and surface[water].max() < 100 + 0.5


def test_every_sample_declares_its_height_reference_and_the_card_counts_them():
    from als_datasets.kinds.als.card import entropy_note
    from als_datasets.kinds.als.kind import INDEX_COLUMNS, AlsKind
    from als_datasets.kinds.als.tasks import als_json_schema

    assert als_json_schema(["forest"])["height_reference"] is str
    assert "height_reference" in INDEX_COLUMNS
    assert "above ground" in AlsKind.entropy_definitions["height_entropy"]
    assert "lowest point" not in AlsKind.field_docs["height_entropy"]
    note = entropy_note(["ground", "ground", "lowest"])
    assert "2 of 3 tiles were measured above their ground returns and 1 above their lowest point" in note
    assert "whatever its slope" in note and "Neither is the paper's spectral entropy" in note
    assert "Here" not in entropy_note([])  # no sample: no count
    old = entropy_note(None)  # re-rendering a build from before the field: it says what that build measured
    assert "predates `height_reference`" in old and "lowest point" in old and "above ground" not in old
