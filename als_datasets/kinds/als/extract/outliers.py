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

Speed: the k-d tree is replaced by uniform 2D grids whose cells hold their points sorted by z,
and every query is answered by the first of three exact searches that can answer it:

* a fine grid (cells of :data:`FINE` × the radius holding k+1 points at the mean density): the
  query's cell and its 8 neighbours, which are three contiguous runs in grid order, every
  squared distance computed once in a branch-free loop;
* a grid :data:`COARSE` times coarser (canopy points, whose neighbours lie further), each cell
  indexed by z buckets (:data:`Z_BUCKET` of a cell high): the block's cells that reach within g
  of the query, and in each only the buckets within ``√(g² − e²)`` of the query's z (e the
  cell's distance from the query in x, y), so only points near a sphere of radius g;
* for the few left (isolated points), a ring search on the coarse grid, cell rectangles and
  z walks pruned against the current k+1-th distance.

Both block searches first try a guessed radius g (the previous answer's, grown by
:data:`GUESS_GROWTH`), then the distance to the block's edge.  A block search keeps only squared
distances below ``r²``, r the distance from the query to the block's edge (or to g), appending
them without a branch, and selects the k+1 smallest; it answers when k+1 of them remain, and
then no point outside the block or the z window can be nearer.  A query whose own cell holds
fewer than two other points within a cell's height of it (canopy) skips the fine pass, where it
would fail anyway.  Every pruning discards only candidates at least as far as the
k+1-th, so the k+1 smallest squared distances — all that rule 2 reads — are those of an
exhaustive search (which of several tied points is kept does not matter).  The kernels are
compiled with numba (no fast-math: no reassociation, no fused multiply-add), once per machine
(``cache=True``; the parallel kernel once per process).  With ``threads > 1`` groups of grid rows run in parallel, which changes no
number (queries are independent; Welford runs serially in point order afterwards).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

#: the fine grid's cells, in radii of a disc holding k + 1 points at the mean 2D density
FINE = 1.5
#: grid rectangles are widened by this much (m) before a cell is skipped: cell membership comes
#: from a floor() of a rounded quotient, so a point may sit a few ulps outside its rectangle
_SLACK = 1e-6
#: the second block pass's cells are this many times the first's
COARSE = 3.0
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
QUERIES_PER_JOB = 2048


def grid_cell_size(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """The fine grid's cell size (m): :data:`FINE` × the radius of a disc that holds k + 1 points
    at the points' mean density over their bounding box (at least 1 cm, never more cells than
    points)."""
    n = len(x)
    w = float(x.max() - x.min()) if n else 0.0
    h = float(y.max() - y.min()) if n else 0.0
    area = max(w * h, 1e-4)
    r = np.sqrt((k + 1) * area / (np.pi * max(n, 1)))
    return float(max(FINE * r, np.sqrt(area / max(n, 1)), 0.01))


@njit(cache=True)
def _build_grid(x, y, z, x0, y0, cell, nx, ny):
    """Counting sort of the points by cell (row-major), each cell's points by z (stable)."""
    n = len(x)
    cid = np.empty(n, np.int64)
    for i in range(n):
        cx = int(np.floor((x[i] - x0) / cell))
        cy = int(np.floor((y[i] - y0) / cell))
        cx = min(max(cx, 0), nx - 1)
        cy = min(max(cy, 0), ny - 1)
        cid[i] = cy * nx + cx
    start = np.zeros(nx * ny + 1, np.int64)
    for i in range(n):
        start[cid[i] + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[cid[i]]] = i
        fill[cid[i]] += 1
    for c in range(nx * ny):  # sort each cell by z (stable): insertion sort for the usual handful
        a, b = start[c], start[c + 1]
        if b - a > 32:
            zc = np.empty(b - a)
            for i in range(a, b):
                zc[i - a] = z[order[i]]
            order[a:b] = order[a:b][np.argsort(zc, kind="mergesort")]
            continue
        for i in range(a + 1, b):
            v = order[i]
            zv = z[v]
            j = i - 1
            while j >= a and z[order[j]] > zv:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = v
    return order, start


@njit(cache=True)
def _insert(best, cnt, d2, kk):
    """Insert ``d2`` into the ascending ``best[:cnt]`` (capacity ``kk``); new count."""
    if cnt == kk:
        if d2 >= best[kk - 1]:
            return cnt
        j = kk - 1
    else:
        j = cnt
        cnt += 1
    while j > 0 and best[j - 1] > d2:
        best[j] = best[j - 1]
        j -= 1
    best[j] = d2
    return cnt


@njit(cache=True)
def _scan_column(best, cnt, qx, qy, qz, x, y, z, order, a, b):
    """Offer a cell's points (``order[a:b]``, sorted by z) to ``best``, walking out from qz."""
    kk = len(best)
    lo, hi = a, b  # first index with z >= qz
    while lo < hi:
        mid = (lo + hi) // 2
        if z[order[mid]] < qz:
            lo = mid + 1
        else:
            hi = mid
    up, down = lo, lo - 1
    while up < b or down >= a:
        worst = best[kk - 1] if cnt == kk else np.inf
        go_up = False
        if up < b and down >= a:
            go_up = (z[order[up]] - qz) <= (qz - z[order[down]])
        elif up < b:
            go_up = True
        p = order[up] if go_up else order[down]
        dz = qz - z[p]
        if dz * dz >= worst:  # every point further along has at least this dz²
            if go_up:
                up = b
            else:
                down = a - 1
            continue
        dx = qx - x[p]
        dy = qy - y[p]
        d2 = (dx * dx + dy * dy) + dz * dz
        cnt = _insert(best, cnt, d2, kk)
        if go_up:
            up += 1
        else:
            down -= 1
    return cnt


@njit(cache=True)
def _query(i, best, x, y, z, order, start, x0, y0, cell, nx, ny):
    """The k+1 smallest squared distances from point ``i`` (itself included), into ``best``."""
    kk = len(best)
    qx, qy, qz = x[i], y[i], z[i]
    ci = min(max(int(np.floor((qx - x0) / cell)), 0), nx - 1)
    cj = min(max(int(np.floor((qy - y0) / cell)), 0), ny - 1)
    cnt = 0
    r = 0
    rmax = max(nx, ny)
    while r <= rmax:
        for cy in range(cj - r, cj + r + 1):
            if cy < 0 or cy >= ny:
                continue
            edge_row = cy == cj - r or cy == cj + r
            step = 1 if edge_row else 2 * r  # ring r: whole top/bottom rows, two cells otherwise
            cx = ci - r
            while cx <= ci + r:
                if 0 <= cx < nx:
                    a, b = start[cy * nx + cx], start[cy * nx + cx + 1]
                    if b > a:
                        skip = False
                        if cnt == kk:
                            lx = x0 + cx * cell - _SLACK - qx
                            hx = qx - (x0 + (cx + 1) * cell + _SLACK)
                            ly = y0 + cy * cell - _SLACK - qy
                            hy = qy - (y0 + (cy + 1) * cell + _SLACK)
                            ex = max(lx, hx, 0.0)
                            ey = max(ly, hy, 0.0)
                            skip = ex * ex + ey * ey >= best[kk - 1]
                        if not skip:
                            cnt = _scan_column(best, cnt, qx, qy, qz, x, y, z, order, a, b)
                cx += step if step > 0 else 1
        if cnt == kk:  # anything in ring r+1 lies at least this far away in x or y
            m = min(qx - (x0 + (ci - r) * cell), (x0 + (ci + r + 1) * cell) - qx,
                    qy - (y0 + (cj - r) * cell), (y0 + (cj + r + 1) * cell) - qy) - _SLACK
            if m > 0 and m * m >= best[kk - 1]:
                break
        r += 1
    return cnt


@njit(cache=True)
def _mean_distance(best, k):
    """PDAL's running mean over neighbours 1..k (neighbour 0 is the query itself)."""
    m = 0.0
    for j in range(1, k + 1):
        m += (np.sqrt(best[j]) - m) / j
    return m


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
    kept without a branch.  Returns their count, which is ``< kk`` only when fewer than ``kk``
    values are below ``bar2`` (then nothing is kept)."""
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
    for j in range(m):
        d2 = buf[j]
        tmp[c] = d2
        c += d2 < bar
    return c


@njit(cache=True)
def _block_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, zwin, buf, tmp, zb0, boff, bst, h, reach):
    """Every pending query of cell ``c`` against the points of the (2 ``reach`` + 1)² cells
    around it (3x3 in both passes).

    ``xs, ys, zs``: the points in grid order (row-major cells, z ascending within a cell), so a
    row of the block is one contiguous run.  A query at distance ``rb`` from the block's edge
    (infinite on a side where the grid ends) is exact when k+1 of the block's squared distances
    are ``< rb²``: no point outside the block can be nearer.  Only the distances below a bar are
    kept (a guess g ≤ rb first: the last answer's radius, grown; then rb itself) and the k+1
    smallest of those selected.  With ``zwin`` only the block's points within ``√(g² − e²)`` of
    the query's z are looked at (e: their cell's distance in x, y; a point further is further than
    ``g``), found through each cell's z buckets (``zb0, boff, bst``, ``h`` buckets per metre:
    :func:`_z_buckets`).  A query that is not exact stays pending for a coarser grid."""
    cx, cy = c % nx, c // nx
    a0, b0 = start[c], start[c + 1]
    lox = x0 + (cx - reach) * cell if cx >= reach else -np.inf
    hix = x0 + (cx + reach + 1) * cell if cx + reach < nx else np.inf
    loy = y0 + (cy - reach) * cell if cy >= reach else -np.inf
    hiy = y0 + (cy + reach + 1) * cell if cy + reach < ny else np.inf
    xa, xb = max(cx - reach, 0), min(cx + reach, nx - 1)
    ya, yb = max(cy - reach, 0), min(cy + reach, ny - 1)
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
        if not zwin:
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
                lo, hi = start[yy * nx + xa], start[yy * nx + xb + 1]
                m = _distances(buf, m, qx, qy, qz, xs, ys, zs, lo, hi)
            kept = _keep_below(tmp, buf, m, g * g, kk)  # ... keeping those below the guess, else rb
            if kept < kk and g < rb:
                g = rb
                kept = _keep_below(tmp, buf, m, rb * rb, kk)
            if kept >= kk:
                _select(best, kk, tmp, kept)
                out[t] = _mean_distance(best, k)
                pending[t] = False
                guess = GUESS_GROWTH * np.sqrt(best[kk - 1])
            continue
        while True:
            m = 0
            g2 = g * g
            for yy in range(ya, yb + 1):
                ey = max(y0 + yy * cell - _SLACK - qy, qy - (y0 + (yy + 1) * cell + _SLACK), 0.0)
                if ey >= g:
                    continue
                for xx in range(xa, xb + 1):
                    ex = max(x0 + xx * cell - _SLACK - qx, qx - (x0 + (xx + 1) * cell + _SLACK), 0.0)
                    e2 = ex * ex + ey * ey  # no point of the cell is nearer than this in x, y
                    if e2 >= g2:
                        continue
                    cc = yy * nx + xx
                    nb = boff[cc + 1] - boff[cc] - 1  # the cell's z buckets (none when empty)
                    if nb <= 0:
                        continue
                    zr = np.sqrt(g2 - e2) + _SLACK  # further in z is further than g
                    bl = int(np.floor((qz - zr) * h)) - zb0[cc]
                    bh = int(np.floor((qz + zr) * h)) - zb0[cc] + 1
                    bl = min(max(bl, 0), nb)
                    bh = min(max(bh, 0), nb)
                    m = _distances(buf, m, qx, qy, qz, xs, ys, zs, bst[boff[cc] + bl], bst[boff[cc] + bh])
            kept = _keep_below(tmp, buf, m, g2, kk)
            if kept >= kk:
                _select(best, kk, tmp, kept)
                out[t] = _mean_distance(best, k)
                pending[t] = False
                guess = GUESS_GROWTH * np.sqrt(best[kk - 1])
                break
            if g >= rb:
                break
            g = rb


@njit(cache=True)
def _z_buckets(zs, start, ncells, h):
    """A z index of every cell (its points sorted by z): bucket b of cell c holds the points with
    ``floor(z × h) = zb0[c] + b`` (``h``: buckets per metre; monotone in z), which are ``bst[boff[c] + b] : bst[boff[c] + b + 1]``."""
    zb0 = np.zeros(ncells, np.int64)
    boff = np.zeros(ncells + 1, np.int64)
    for c in range(ncells):
        nb = 0
        if start[c + 1] > start[c]:
            zb0[c] = int(np.floor(zs[start[c]] * h))
            nb = int(np.floor(zs[start[c + 1] - 1] * h)) - zb0[c] + 1
        boff[c + 1] = boff[c] + nb + 1
    bst = np.empty(boff[ncells], np.int64)
    for c in range(ncells):
        p, hi = start[c], start[c + 1]
        nb = boff[c + 1] - boff[c] - 1
        for b in range(nb):
            while p < hi and int(np.floor(zs[p] * h)) - zb0[c] < b:
                p += 1
            bst[boff[c] + b] = p
        bst[boff[c] + nb] = hi
    return zb0, boff, bst


@njit(cache=True)
def _max_block(start, nx, ny, reach):
    """The most points a block of (2 reach + 1)² cells holds."""
    m = 1
    for cy in range(ny):
        for cx in range(nx):
            s = 0
            for yy in range(max(cy - reach, 0), min(cy + reach, ny - 1) + 1):
                s += start[yy * nx + min(cx + reach, nx - 1) + 1] - start[yy * nx + max(cx - reach, 0)]
            m = max(m, s)
    return m


@njit(cache=True, nogil=True)
def _block_pass(xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, zwin, zb0, boff, bst, h, reach, size, row0, row1):
    """One block pass over grid rows ``row0:row1``, every array in grid order.  Rows are
    independent (a query is read and written only by the job holding its cell), so jobs may run
    in threads."""
    best = np.empty(k + 2, np.float64)  # a spare slot for _select
    buf, tmp = np.empty(size, np.float64), np.empty(size, np.float64)
    for c in range(row0 * nx, row1 * nx):
        _block_cell(c, xs, ys, zs, start, x0, y0, cell, nx, ny, k, pending, out, best, zwin, buf, tmp, zb0, boff, bst, h, reach)


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


@njit(cache=True, nogil=True)
def _ring_pass(x, y, z, order, start, x0, y0, cell, nx, ny, k, queries, out):
    """The queries no block answered (isolated points): exact ring search on the grid."""
    best = np.empty(k + 1, np.float64)
    for i in queries:
        _query(i, best, x, y, z, order, start, x0, y0, cell, nx, ny)
        out[i] = _mean_distance(best, k)


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


def _grid(x, y, z, cell):
    x0, y0 = float(x.min()), float(y.min())
    nx = int((float(x.max()) - x0) // cell) + 1
    ny = int((float(y.max()) - y0) // cell) + 1
    order, start = _build_grid(x, y, z, x0, y0, cell, nx, ny)
    return order, start, x0, y0, cell, nx, ny


def _run(pool, kernel, jobs):
    """``kernel(*job)`` for every job: in the pool's threads (numba releases the GIL), or here."""
    if pool is None:
        for job in jobs:
            kernel(*job)
    else:
        for f in [pool.submit(kernel, *job) for job in jobs]:
            f.result()


def _level(x, y, z, g, k, zwin, pending, out, pool):
    """One block pass over grid ``g`` (z windows with ``zwin``): the pending points it answers get
    their mean distance in ``out``; returns how many remain pending."""
    order, start, x0, y0, cell, nx, ny = g
    # the pass reads and writes in grid order (sequential memory); the answers go back after
    xs, ys, zs, ps = _gather(x, y, z, pending, order)
    os_ = np.empty(len(x))
    h = 1.0 / (cell * Z_BUCKET)
    zi = _z_buckets(zs, start, nx * ny, h) if zwin else _NO_BUCKETS
    size = _max_block(start, nx, ny, 1)
    step = ROWS_PER_JOB if pool is not None else ny
    _run(pool, _block_pass, [(xs, ys, zs, start, x0, y0, cell, nx, ny, k, ps, os_, zwin, *zi, h, 1, size, r,
                              min(r + step, ny)) for r in range(0, ny, step)])
    return _scatter(order, ps, os_, pending, out)


def mean_neighbour_distances(xyz: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """Rules 1-2 for every point: the running mean of its k nearest neighbours' distances.

    Two block passes (a fine grid, then one :data:`COARSE` times coarser for the points whose
    neighbours lie further, as in canopy), then an exact ring search for what is left.  With
    ``threads > 1`` (and enough points) each pass runs as jobs of grid rows in a thread pool:
    every query is answered by the same arithmetic whichever job runs it, so the result does not
    depend on the thread count."""
    pts = np.asarray(xyz, dtype=np.float64)
    x, y, z = (np.ascontiguousarray(pts[:, i]) for i in range(3))
    n = len(x)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    pending = np.ones(n, dtype=np.bool_)
    fine = grid_cell_size(x, y, k)
    pool = ThreadPoolExecutor(threads) if threads > 1 and n > 50_000 else None
    try:
        for level, cell in enumerate((fine, fine * COARSE)):
            g = _grid(x, y, z, cell)
            if _level(x, y, z, g, k, level > 0, pending, out, pool) == 0:
                break
        left = np.flatnonzero(pending)
        if len(left):
            step = QUERIES_PER_JOB if pool is not None else len(left)
            _run(pool, _ring_pass, [(x, y, z, *g, k, left[i:i + step], out) for i in range(0, len(left), step)])
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def statistical_outliers(xyz: np.ndarray, k: int = 12, multiplier: float = 2.2, threads: int = 1) -> np.ndarray:
    """PDAL ``filters.outlier`` (statistical) on float64 coordinates: True for outliers (rules 1-5
    above; with ``k`` or fewer points, none)."""
    n = len(xyz)
    if n <= k:
        return np.zeros(n, dtype=bool)
    d = mean_neighbour_distances(xyz, k, threads)
    out = d >= _welford_threshold(d, float(multiplier))
    if out.all():  # PDAL: "filter would remove all points" → the view is kept unchanged
        out[:] = False
    return out
