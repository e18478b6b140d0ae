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


def _route_reference(chunk, grid, lookup):
    """The routing rule in plain numpy: the tile of floor((x - x0) / T), rows from the north; each
    selected tile's points in chunk order, as offsets from its lower-left corner."""
    x, y = chunk["x"], chunk["y"]
    with np.errstate(invalid="ignore"):
        fc = np.floor((x - grid.x0) / grid.tile)
        fr = np.floor((y - (grid.y1 - grid.rows * grid.tile)) / grid.tile)
        ok = (fc >= 0) & (fc < grid.cols) & (fr >= 0) & (fr < grid.rows)
    out = {}
    for i in np.flatnonzero(ok):
        c, r = int(fc[i]), grid.rows - 1 - int(fr[i])
        slot = int(lookup[r * grid.cols + c])
        if slot >= 0:
            out.setdefault(slot, []).append((i, x[i] - (grid.x0 + c * grid.tile), y[i] - (grid.y1 - (r + 1) * grid.tile)))
    return out


def test_route_points_matches_the_rule_bit_for_bit():
    """Random points (on tile edges, outside the lattice, NaN, in unselected tiles) with a recipe
    attribute: every slot gets exactly its points, in chunk order, with the exact offsets."""
    rng = np.random.default_rng(7)
    grid = TileGrid(32610, x0=512000.0, y1=4322000.0, tile=500.0, cols=4, rows=3)
    lookup = np.array([3, -1, 0, 5, -1, 1, 2, -1, 4, -1, 6, 7])
    n = 20000
    x = grid.x0 - 300 + rng.random(n) * 2600
    y = grid.y1 - 1800 + rng.random(n) * 2100
    x[:50] = grid.x0 + 500.0 * rng.integers(-1, 6, 50)  # exactly on vertical tile edges
    y[50:100] = grid.y1 - 500.0 * rng.integers(-1, 5, 50)  # and on horizontal ones
    x[100:105] = np.nan
    chunk = _chunk(x, y, rng.random(n) * 50, rng.integers(0, 20, n))
    chunk["gps_time"] = rng.random(n) * 1e6
    out = list(route_points(chunk, grid, lookup))
    ref = _route_reference(chunk, grid, lookup)
    assert [s for s, _ in out] == sorted(ref)
    for slot, pts in out:
        idx = [i for i, _, _ in ref[slot]]
        assert pts.dtype.names[-1] == "gps_time"
        assert pts["x"].tolist() == [v for _, v, _ in ref[slot]]  # bit for bit
        assert pts["y"].tolist() == [v for _, _, v in ref[slot]]
        for name in ("z", "intensity", "classification", "gps_time"):
            assert np.array_equal(pts[name], chunk[name][idx])


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_reprojection_is_pyprojs_bit_for_bit(threads):
    """A chunk split across reprojection threads (state plane feet → UTM, with a datum step; points
    far outside the zone and NaN included) gives exactly pyproj's single call, and leaves its
    input alone."""
    from pyproj import Transformer

    from als_datasets.kinds.als.extract.route import SPLIT_POINTS, Reprojection

    rng = np.random.default_rng(11)
    n = 2 * SPLIT_POINTS + 7
    x = 1_145_000 + rng.random(n) * 20_000
    y = 95_000 + rng.random(n) * 20_000
    x[:5], y[5:10], x[10:15] = np.nan, 1e12, -1e9
    x0, y0 = x.copy(), y.copy()
    want = Transformer.from_crs(2286, 32610, always_xy=True).transform(x, y)
    with Reprojection(2286, 32610, threads) as tr:
        got = tr.transform(x, y)
        small = tr.transform(x[:100], y[:100])  # below SPLIT_POINTS: one call
    for g, w in zip(got, want):
        assert g.tobytes() == np.asarray(w).tobytes()
    assert small[0].tobytes() == np.asarray(want[0][:100]).tobytes()
    assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()


def test_route_task_stages_the_same_bytes_with_threaded_reprojection(tmp_path, demo_recipe):
    """A route task over a real state plane file of the demo (EPSG:2286, US feet; one chunk
    above SPLIT_POINTS) stages byte-identical parts whether its points are reprojected in one
    thread or split over several."""
    from pyproj import Transformer

    from als_datasets.kinds.als.extract.route import SPLIT_POINTS, RouteTask, run_route_task
    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud

    path = max((demo_recipe.parent / "pointclouds" / "demo-river").glob("*.laz"), key=lambda p: p.stat().st_size)
    info = inspect_pointcloud(path)
    assert info.point_count > SPLIT_POINTS and info.crs.to_epsg() == 2286
    x0, y0, x1, y1 = Transformer.from_crs(info.crs, 32610, always_xy=True).transform_bounds(*info.bounds)
    x0, y1 = 500.0 * np.floor(x0 / 500) - 500, 500.0 * np.ceil(y1 / 500) + 500
    cols, rows = int((x1 - x0) // 500) + 2, int((y1 - y0) // 500) + 2
    grid = TileGrid(32610, x0=x0, y1=y1, tile=500.0, cols=cols, rows=rows)
    tiles = tuple((c, r, f"t{r}_{c}") for r in range(rows) for c in range(cols))
    staged = {}
    for threads in (1, 2):
        task = RouteTask(0, info, grid, tiles, str(tmp_path / f"s{threads}"), threads=threads)
        stats = run_route_task(task)
        assert stats["points_routed"] == info.point_count
        root = tmp_path / f"s{threads}"
        staged[threads] = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}
    assert staged[1] and staged[1] == staged[2]


def test_staged_parts_round_trip(tmp_path):
    """Parts written piece by piece (and renamed into place by the sync thread) read back as one
    array, in part order; a truncated part is refused by name."""
    from als_datasets.kinds.als.extract.route import _Buffers, load_tile_points

    rng = np.random.default_rng(3)
    chunks = []
    for n in (5, 0, 17, 3):
        a = np.zeros(n, POINT_DTYPE)
        a["x"], a["intensity"] = rng.random(n), rng.integers(0, 9, n)
        chunks.append(a)
    bufs = _Buffers(tmp_path, 2, ["t1", "t2"], flush_points=20)
    for a in chunks:
        bufs.add(0, a)
        bufs.add(1, a[:1])
    bufs.flush()
    bufs.close()
    pts, files = load_tile_points(tmp_path, "t1")
    assert files == [2] and pts.tobytes() == np.concatenate(chunks).tobytes()
    assert sorted(p.name for p in (tmp_path / "t1").iterdir()) == ["f00002-p00000.npy", "f00002-p00001.npy"]
    assert len(load_tile_points(tmp_path, "t2")[0]) == 3
    part = tmp_path / "t1" / "f00002-p00001.npy"
    part.write_bytes(part.read_bytes()[:-5])
    with pytest.raises(ValueError, match="f00002-p00001.npy: truncated"):
        load_tile_points(tmp_path, "t1")


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
