"""Issue 15: the build compiles the outlier filter's threaded kernel in the background while it
routes the points; a filter call made meanwhile waits for it and gives the same flags, and the
build decides when to warm up (one local process, the filter on, big enough tiles)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

import als_datasets.kinds.als.build as als_build
from als_datasets.kinds.als.extract import tile
from als_datasets.kinds.als.extract.outliers import statistical_outliers


def _cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.random(n) * 200.0, rng.random(n) * 200.0, rng.random(n) * 10.0])
    xyz[: n // 200, 2] += 50.0  # some outliers
    return np.round(xyz, 2)


def test_filter_during_warmup_gives_the_same_flags():
    xyz = _cloud(tile.PARALLEL_FILTER_POINTS + 20_000)
    expected = statistical_outliers(xyz, 12, 2.2, threads=1)
    t = tile.warm_outlier_filter(2)
    assert isinstance(t, threading.Thread) and not t.daemon
    got = statistical_outliers(xyz, 12, 2.2, threads=2)  # while (or after) the warm-up runs
    t.join()
    assert np.array_equal(got, expected)
    assert expected.sum() > 0
    assert tile.warm_outlier_filter(1) is None


def _route(points: int, tiles: int):
    info = SimpleNamespace(point_count=points)
    return SimpleNamespace(info=info, tiles=tuple((i, 0, f"t{i}") for i in range(tiles)))


def test_warm_up_only_where_the_filter_runs_here_threaded(monkeypatch):
    started = []
    monkeypatch.setattr(tile, "warm_outlier_filter", lambda threads: started.append(threads))
    task = SimpleNamespace(outlier_k=12, threads=2)
    local1 = SimpleNamespace(name="local", workers=1)
    big = [_route(4_000_000, 4)]
    als_build._warm_filter([task], big, local1)
    assert started == [2]
    started.clear()
    als_build._warm_filter([task], [_route(40_000, 4)], local1)  # small tiles: no threaded filter
    als_build._warm_filter([SimpleNamespace(outlier_k=0, threads=2)], big, local1)  # filter off
    als_build._warm_filter([SimpleNamespace(outlier_k=12, threads=1)], big, local1)  # one thread
    als_build._warm_filter([task, task], big, SimpleNamespace(name="local", workers=2))  # pool processes
    als_build._warm_filter([task], big, SimpleNamespace(name="dask", workers=1))
    als_build._warm_filter([task], [], local1)  # nothing to read
    assert started == []
    als_build._warm_filter([task], big, SimpleNamespace(name="local", workers=2))  # one task: runs here
    assert started == [2]


def test_tiles_filtered_while_the_kernel_compiles_use_one_thread(monkeypatch):
    ev = threading.Event()
    th = threading.Thread(target=ev.wait)
    th.start()
    monkeypatch.setattr(tile, "_warmup", th)
    assert tile.filter_threads(2) == 1
    ev.set()
    th.join()
    assert tile.filter_threads(2) == 2
    monkeypatch.setattr(tile, "_warmup", None)
    assert tile.filter_threads(2) == 2 and tile.filter_threads(1) == 1
