"""PDAL's statistical outlier filter (``filters.outlier``, method ``statistical``), exactly and fast.

The rules, as PDAL's ``OutlierFilter::processStatistical`` applies them (the tests hold a brute
force reference that follows them one by one):

1. for every point, its ``k + 1`` nearest neighbours in 3D (the point itself, at distance 0, is
   the first), squared distances ``(dx² + dy²) + dz²`` in float64 (``dx`` = query − neighbour);
2. its mean distance is the *running* mean of the square roots of neighbours 1..k:
   ``m += (√d²_j − m) / j``;
3. over all points, in point order, Welford's mean and variance (``n − 1``);
   ``threshold = mean + multiplier × σ``;
4. a point is an inlier when its mean distance is ``< threshold`` (so ``≥`` is an outlier);
5. when every point would be an outlier, none is flagged (PDAL keeps the whole view).

PDAL reads neither file coordinates nor our float32 sample coordinates: it uses the float64
values of the scaled integers.  The staged tile-relative offsets ``x − X0`` are exact (Sterbenz:
a coordinate and its tile's corner are within a factor of two of each other), so every
difference, hence every distance, is bit-identical to the one PDAL computes from absolute
coordinates (for a PDAL built without fused multiply-add contraction, the x86-64 default).  With
``k`` or fewer points PDAL's neighbour list is shorter than the loop that reads it (undefined);
here nothing is flagged.

Speed: the k-d tree is replaced by uniform 2D grids whose cells hold their points sorted by z;
every query is answered by the first of three exact searches that can answer it, queries taken
cell by cell (grid order, so memory is read sequentially; answers are scattered back after):

* a fine grid (cells of :data:`FINE` × the radius holding k+1 points at the mean density): the
  query's cell and its 8 neighbours, three contiguous runs, every squared distance computed in a
  vectorised loop.  A query whose own cell holds fewer than two other points within a cell's
  height of it (canopy) skips this pass, where it would fail anyway.  A block holding more than
  :data:`DENSE` times the mean (real tiles: a trunk or a pole puts hundreds of points in one
  column, overlapping strips double the density) is searched by z slabs, as the coarse pass
  does: every distance of such a block for every query would make the pass quadratic there;
* a grid :data:`COARSE` times coarser (canopy points, whose neighbours lie further; each cell
  merged from its COARSE² fine cells, already z-sorted, so not sorted again), each cell
  indexed by z buckets (:data:`Z_BUCKET` of a cell high): for each cell, once, its 3x3 block's
  points are copied bucket level by level, so that a query's z slab ``|dz| < g`` is one
  contiguous run of that copy (no per-cell work per query);
* for the few left (isolated points), a ring search on the coarse grid, cell rectangles and
  z walks pruned against the current k+1-th distance.

Both block searches first try a guessed radius g (the previous answer's, grown by
:data:`GUESS_GROWTH`), then the distance rb to the block's edge.  They count the squared
distances below g² (and below the fractions :data:`TIGHTER` of it), keep those below the
tightest bar that k+1 of them are below, and select the k+1 smallest; no point outside the block
or the slab, and no point not kept, can be nearer than those.  Every pruning discards only
candidates at least as far as the k+1-th, so the k+1 smallest squared distances — all that
rule 2 reads — are those of an exhaustive search (which of several tied points is kept does not
matter).  The kernels are compiled with numba (no fast-math: no reassociation, no fused
multiply-add), once per machine (``cache=True``).  With ``threads > 1`` jobs of grid rows run
in a thread pool (the kernels release the GIL); no number changes (queries are independent;
Welford runs serially in point order afterwards).

Measured (``bench/bench_outliers.py --real --scenes``: CPU seconds of one thread, best of 3;
2-core shared machine, whose cKDTree figures vary 0.28-0.43 M/s from run to run: ratios are within
one run): 2 M points of a 500 m tile (8 pts/m², 40 % canopy) 1.76 M points/s (cKDTree 0.29 in that
run); 10 M points of 1 km² 1.57 M/s (0.43); structured tiles of 2 M points: tree crowns 1.27 M/s,
buildings 1.46, scan lines 1.82, a tile with a 250 m void 1.51 (4.3-5.7x cKDTree); the real files
of ``../shared/data`` 1.60-2.14 M/s (2.9-3.4x), the lone-star cloud (519 k points, ~390 pts/m²,
trunks) 1.60 M/s (0.63 M/s before the dense blocks took z slabs).  The flags and means are the
same, bit for bit, in every case.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from als_datasets.kinds.als.extract.outlier_grid import (
    _SLACK,
    FINE,
    _block_levels,
    _block_size,
    _bounds,
    _compress8,
    _grid,
    _insert,
    _max_block,
    _mean_distance,
    _ring_pass,
    _z_buckets,
    bucket_height,
    coarse_grid,
    grid_cell_size,
)

__all__ = ["FINE", "grid_cell_size", "mean_neighbour_distances", "statistical_outliers"]

#: the second block pass's cells are this many times the first's (COARSE × COARSE fine cells)
COARSE = 3
#: the coarse pass indexes each cell's z-sorted points by z buckets this many cells high
Z_BUCKET = 1.0 / 3.0
_NO_BUCKETS = (np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
#: _select ranks this many values or fewer directly (quadratic, without a branch)
RANK_SELECT = 32
#: the second pass first searches within this many times the previous query's k+1-th distance
GUESS_GROWTH = 1.25
#: a block's distances are kept below the tightest of these fractions of the squared guess that
#: k + 1 of them are below (fewer values to select from)
TIGHTER = (0.64, 0.81)
#: with ``threads > 1``, a block pass runs as jobs of this many grid rows (the ring pass: queries)
ROWS_PER_JOB = 4
#: a fine cell whose 3x3 block holds more than this many times the points the mean density puts
#: in a block (vertical structure: trunks, poles, walls; overlapping strips) is searched by z slabs
DENSE = 6.0
QUERIES_PER_JOB = 2048


@njit(cache=True)
def _select(best, kk, tmp, m):
    """The ``kk`` smallest of ``tmp[:m]`` (``m ≥ kk``), ascending, into ``best`` (capacity
    ``kk + 1``: the last slot takes what falls past the kk-th).  Few values: each goes straight to
    its rank (the number of smaller values, ties broken by position), without a branch."""
    if m <= RANK_SELECT:
        for i in range(m):
            d2 = tmp[i]
            r = 0
            for j in range(m):
                r += (tmp[j] < d2) | ((tmp[j] == d2) & (j < i))
            best[min(r, kk)] = d2
        return kk
    cnt = 0
    for j in range(m):
        d2 = tmp[j]
        if cnt < kk or d2 < best[kk - 1]:
            cnt = _insert(best, cnt, d2, kk)
    return cnt


@njit(cache=True)
def _distances(buf, m, qx, qy, qz, xs, ys, zs, lo, hi):
    """``buf[m:…]`` ← the squared distances from the query to points ``lo:hi`` (a loop without
    branch or dependence: vectorised); the new count."""
    for j in range(lo, hi):
        dx = qx - xs[j]
        dy = qy - ys[j]
        dz = qz - zs[j]
        buf[m + j - lo] = (dx * dx + dy * dy) + dz * dz
    return m + hi - lo


@njit(cache=True)
def _keep_below(tmp, buf, m, bar2, kk):
    """``tmp[:…]`` ← the values of ``buf[:m]`` below a bar: the tightest of ``bar2`` × :data:`TIGHTER`
    and ``bar2`` itself that ``kk`` values are below (counted first, in a vectorised loop), then
    kept in order, eight at a time (:func:`~.outlier_grid._compress8`).  Returns their count,
    which is ``< kk`` only when fewer than ``kk`` values are below ``bar2`` (then nothing is kept)."""
    b1 = bar2 * TIGHTER[0]
    b2 = bar2 * TIGHTER[1]
    c1 = 0
    c2 = 0
    c3 = 0
    for j in range(m):
        d2 = buf[j]
        c1 += d2 < b1
        c2 += d2 < b2
        c3 += d2 < bar2
    if c3 < kk:
        return c3
    bar = b1 if c1 >= kk else b2 if c2 >= kk else bar2
    c = 0
    j = 0
    while j + 8 <= m:  # eight at a time, compressed in place (in order)
        c += _compress8(tmp, c, buf, j, bar)
        j += 8
    while j < m:
        d2 = buf[j]
        tmp[c] = d2
        c += d2 < bar
        j += 1
    return c


@njit(cache=True)
def _block_bounds(cx, cy, x0, y0, cell, nx, ny):
    """The 3x3 block around cell (cx, cy): its rectangle (infinite on a side where the grid ends)
    and its first and last cell columns and rows."""
    lox = x0 + (cx - 1) * cell if cx >= 1 else -np.inf
    hix = x0 + (cx + 2) * cell if cx + 1 < nx else np.inf
    loy = y0 + (cy - 1) * cell if cy >= 1 else -np.inf
    hiy = y0 + (cy + 2) * cell if cy + 1 < ny else np.inf
    return lox, hix, loy, hiy, max(cx - 1, 0), min(cx + 1, nx - 1), max(cy - 1, 0), min(cy + 1, ny - 1)


@njit(cache=True)
def _block_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp):
    """Every pending query of cell ``c`` against the points of the 3x3 cells around it.

    ``xs, ys, zs``: the points in grid order (row-major cells, z ascending within a cell), so a
    row of the block is one contiguous run.  A query at distance ``rb`` from the block's edge
    (infinite on a side where the grid ends) is exact when k+1 of the block's squared distances
    are ``< rb²``: no point outside the block can be nearer.  Only the distances below a bar are
    kept (a guess g ≤ rb first: the last answer's radius, grown; then rb itself) and the k+1
    smallest of those selected.  A query that is not exact stays pending for a coarser grid."""
    cx, cy = c % nx, c // nx
    a0, b0 = start[c], start[c + 1]
    lox, hix, loy, hiy, xa, xb, ya, yb = _block_bounds(cx, cy, x0, y0, cell, nx, ny)
    kk = k + 1
    guess = 0.0
    for t in range(a0, b0):
        if not pending[t]:
            continue
        qx, qy, qz = xs[t], ys[t], zs[t]
        rb = min(qx - lox, hix - qx, qy - loy, hiy - qy) - _SLACK
        if rb <= 0:
            continue
        g = min(guess, rb) if guess > 0 else rb
        # a query with fewer than two points within a cell's height of it among its own cell's
        # nearest in z (canopy) is left to the coarse pass, where it would end anyway
        near = 0
        for j in range(max(t - 2, a0), min(t + 3, b0)):
            near += abs(zs[j] - qz) < cell
        if near < 3:  # the query itself and two others
            continue
        # every squared distance of the block once (the three rows: contiguous runs) ...
        m = 0
        for yy in range(ya, yb + 1):
            m = _distances(buf, m, qx, qy, qz, xs, ys, zs, start[yy * nx + xa], start[yy * nx + xb + 1])
        kept = _keep_below(tmp, buf, m, g * g, kk)  # ... keeping those below the guess, else rb
        if kept < kk and g < rb:
            g = rb
            kept = _keep_below(tmp, buf, m, rb * rb, kk)
        if kept >= kk:
            _select(best, kk, tmp, kept)
            out[t] = _mean_distance(best, k)
            pending[t] = False
            guess = GUESS_GROWTH * np.sqrt(best[kk - 1])


@njit(cache=True)
def _slab_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp, zb0, boff, bst, h,
               mx, my, mz, moff):
    """Every pending query of cell ``c`` against the points of the 3x3 cells around it, through a
    copy of the block's points ordered by z bucket (``mx, my, mz``; level b, the block's lowest
    bucket + b, starts at ``moff[b]``), made once for the cell: the block's points within g of a
    query in z are then one contiguous run, with no per-cell work per query.  A query at distance
    ``rb`` from the block's edge in x, y is exact when k+1 of those runs' squared distances are
    ``< g² ≤ rb²`` (a point outside the run or the block is at least g away); g is a guess (the
    last answer's radius, grown) first, then rb.  A query that is not exact stays pending."""
    cx, cy = c % nx, c // nx
    a0, b0 = start[c], start[c + 1]
    todo = 0
    for t in range(a0, b0):
        todo += pending[t]
    if todo == 0:
        return
    lox, hix, loy, hiy, xa, xb, ya, yb = _block_bounds(cx, cy, x0, y0, cell, nx, ny)
    lo_b, hi_b = _block_levels(c, nx, ny, zb0, boff)
    nl = hi_b - lo_b
    p = 0
    for b in range(nl):  # the block's points, level by level
        moff[b] = p
        for yy in range(ya, yb + 1):
            for xx in range(xa, xb + 1):
                cc = yy * nx + xx
                bb = lo_b + b - zb0[cc]
                if 0 <= bb < boff[cc + 1] - boff[cc] - 1:
                    for j in range(bst[boff[cc] + bb], bst[boff[cc] + bb + 1]):
                        mx[p], my[p], mz[p] = xs[j], ys[j], zs[j]
                        p += 1
    moff[nl] = p
    kk = k + 1
    guess = 0.0
    for t in range(a0, b0):
        if not pending[t]:
            continue
        qx, qy, qz = xs[t], ys[t], zs[t]
        rb = min(qx - lox, hix - qx, qy - loy, hiy - qy) - _SLACK
        if rb <= 0:
            continue
        g = min(guess, rb) if guess > 0 else rb
        while True:
            zr = g + _SLACK  # further in z is further than g
            bl = min(max(int(np.floor((qz - zr) * h)) - lo_b, 0), nl)
            bh = min(max(int(np.floor((qz + zr) * h)) - lo_b + 1, 0), nl)
            m = _distances(buf, 0, qx, qy, qz, mx, my, mz, moff[bl], moff[bh])
            kept = _keep_below(tmp, buf, m, g * g, kk)
            if kept >= kk:
                _select(best, kk, tmp, kept)
                out[t] = _mean_distance(best, k)
                pending[t] = False
                guess = GUESS_GROWTH * np.sqrt(best[kk - 1])
                break
            if g >= rb:
                break
            g = rb


@njit(cache=True, nogil=True)
def _block_pass(xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, zwin, zb0, boff, bst, h, size, row0, row1,
                dense):
    """One block pass over grid rows ``row0:row1``, every array in grid order: each cell's queries
    against its whole 3x3 block, or (``zwin``; and for a block of more than ``dense`` points when
    ``dense > 0``) against the z slabs of the block.  Rows are independent (a query is read and
    written only by the job holding its cell), so jobs may run in threads."""
    best = np.empty(k + 2, np.float64)  # a spare slot for _select
    buf, tmp = np.empty(size, np.float64), np.empty(size, np.float64)
    if not zwin and dense == 0:
        for c in range(row0 * nx, row1 * nx):
            _block_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp)
        return
    levels = 1
    for c in range(row0 * nx, row1 * nx):
        lo, hi = _block_levels(c, nx, ny, zb0, boff)
        levels = max(levels, hi - lo + 1)
    mx, my, mz, moff = np.empty(size), np.empty(size), np.empty(size), np.empty(levels, np.int64)
    if zwin:
        for c in range(row0 * nx, row1 * nx):
            _slab_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp, zb0, boff, bst, h,
                       mx, my, mz, moff)
        return
    for c in range(row0 * nx, row1 * nx):  # the fine pass of a grid with dense blocks
        if _block_size(start, nx, ny, c % nx, c // nx, 1) > dense:
            _slab_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp, zb0, boff, bst, h,
                       mx, my, mz, moff)
        else:
            _block_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, buf, tmp)


@njit(cache=True)
def _gather(x, y, z, pending, order):
    """The points and their pending flags in grid order."""
    n = len(order)
    xs, ys, zs, ps = np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.bool_)
    for t in range(n):
        i = order[t]
        xs[t], ys[t], zs[t], ps[t] = x[i], y[i], z[i], pending[i]
    return xs, ys, zs, ps


@njit(cache=True)
def _scatter(order, ps, os_, pending, out):
    """The answers of a pass (in grid order) back to the points; how many are still pending."""
    left = 0
    for t in range(len(order)):
        i = order[t]
        if pending[i] and not ps[t]:
            out[i] = os_[t]
            pending[i] = False
        left += pending[i]
    return left


@njit(cache=True)
def _welford_threshold(d, multiplier):
    """Welford's mean and variance (n − 1) over ``d`` in order → mean + multiplier × σ."""
    m1 = 0.0
    m2 = 0.0
    n = 0
    for v in d:
        n1 = n
        n += 1
        delta = v - m1
        delta_n = delta / n
        m1 += delta_n
        m2 += delta * delta_n * n1
    return m1 + multiplier * np.sqrt(m2 / (n - 1.0))


def _run(pool, kernel, jobs):
    """``kernel(*job)`` for every job: in the pool's threads (numba releases the GIL), or here."""
    if pool is None:
        for job in jobs:
            kernel(*job)
    else:
        for f in [pool.submit(kernel, *job) for job in jobs]:
            f.result()


def dense_block(n: int, ncells: int, largest: int) -> int:
    """The block size (points) above which a fine block is searched by z slabs (:data:`DENSE`
    times the mean a 3x3 block holds); 0 when no block of the grid (``largest``) is above it."""
    bar = int(DENSE * 9 * n / max(ncells, 1))
    return bar if largest > bar else 0


def _level(x, y, z, g, k, zwin, pending, out, pool):
    """One block pass over grid ``g`` (z windows with ``zwin``): the pending points it answers get
    their mean distance in ``out``; returns how many remain pending."""
    order, start, x0, y0, cell, nx, ny = g
    # the pass reads and writes in grid order (sequential memory); the answers go back after
    xs, ys, zs, ps = _gather(x, y, z, pending, order)
    os_ = np.empty(len(x))
    h = 1.0 / (cell * Z_BUCKET)
    size = _max_block(start, nx, ny, 1)
    dense = 0 if zwin else dense_block(len(x), nx * ny, size)
    if zwin or dense:
        h = bucket_height(zs, start, nx * ny, h)
        zi = _z_buckets(zs, start, nx * ny, h)
    else:
        zi = _NO_BUCKETS
    step = ROWS_PER_JOB if pool is not None else ny
    _run(pool, _block_pass, [(xs, ys, zs, start, x0, y0, cell, nx, ny, k, ps, os_, zwin, *zi, h, size, r,
                              min(r + step, ny), dense) for r in range(0, ny, step)])
    return _scatter(order, ps, os_, pending, out)


def _columns(xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z as contiguous float64 arrays, from an (N, 3) array or a tuple of three columns
    (copied only where they are not already so)."""
    if isinstance(xyz, tuple):
        return tuple(np.ascontiguousarray(c, dtype=np.float64) for c in xyz)
    pts = np.asarray(xyz, dtype=np.float64)
    return tuple(np.ascontiguousarray(pts[:, i]) for i in range(3))


def mean_neighbour_distances(xyz, k: int, threads: int = 1) -> np.ndarray:
    """Rules 1-2 for every point: the running mean of its k nearest neighbours' distances
    (``xyz``: an (N, 3) array or a tuple of the three columns).

    Two block passes (a fine grid, then one :data:`COARSE` times coarser for the points whose
    neighbours lie further, as in canopy), then an exact ring search for what is left.  With
    ``threads > 1`` (and enough points) each pass runs as jobs of grid rows in a thread pool:
    every query is answered by the same arithmetic whichever job runs it, so the result does not
    depend on the thread count."""
    x, y, z = _columns(xyz)
    n = len(x)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    pending = np.ones(n, dtype=np.bool_)
    box = _bounds(x, y)
    fine = grid_cell_size(x, y, k, box)
    pool = ThreadPoolExecutor(threads) if threads > 1 and n > 50_000 else None
    try:
        g = _grid(x, y, z, fine, box)
        if _level(x, y, z, g, k, False, pending, out, pool):
            g = coarse_grid(g, z, COARSE)
            _level(x, y, z, g, k, True, pending, out, pool)
        left = np.flatnonzero(pending)
        if len(left):
            step = QUERIES_PER_JOB if pool is not None else len(left)
            _run(pool, _ring_pass, [(x, y, z, *g, k, left[i:i + step], out) for i in range(0, len(left), step)])
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def statistical_outliers(xyz, k: int = 12, multiplier: float = 2.2, threads: int = 1) -> np.ndarray:
    """PDAL ``filters.outlier`` (statistical) on float64 coordinates (an (N, 3) array, or a tuple
    of the three columns): True for outliers (rules 1-5 above; with ``k`` or fewer points, none)."""
    cols = _columns(xyz)
    n = len(cols[0])
    if n <= k:
        return np.zeros(n, dtype=bool)
    d = mean_neighbour_distances(cols, k, threads)
    out = d >= _welford_threshold(d, float(multiplier))
    if out.all():  # PDAL: "filter would remove all points" → the view is kept unchanged
        out[:] = False
    return out
