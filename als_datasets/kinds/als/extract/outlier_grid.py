"""The grids of the exact statistical outlier filter (:mod:`.outliers`), and its last resort.

A grid covers the points' bounding box with square cells of one size; its points are sorted by
cell (row-major), each cell's by z, so that a cell, and a row of cells, is one contiguous run of
the sorted points.  The coarse grid also indexes each cell by z buckets (:func:`_z_buckets`).
The ring search (:func:`_ring_pass`) answers exactly the few queries no block search answered
(isolated points): rings of cells around the query's, each cell walked outwards from the query's
z, cells and walks pruned against the current k+1-th squared distance.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: the fine grid's cells, in radii of a disc holding k + 1 points at the mean 2D density
FINE = 1.5
#: grid rectangles are widened by this much (m) before a cell is skipped: cell membership comes
#: from a floor() of a rounded quotient, so a point may sit a few ulps outside its rectangle
_SLACK = 1e-6


def grid_cell_size(x: np.ndarray, y: np.ndarray, k: int, box=None) -> float:
    """The fine grid's cell size (m): :data:`FINE` × the radius of a disc that holds k + 1 points
    at the points' mean density over their bounding box (at least 1 cm, never more cells than
    points)."""
    n = len(x)
    x0, x1, y0, y1 = box if box is not None else _bounds(x, y) if n else (0.0, 0.0, 0.0, 0.0)
    w, h = x1 - x0, y1 - y0
    area = max(w * h, 1e-4)
    r = np.sqrt((k + 1) * area / (np.pi * max(n, 1)))
    return float(max(FINE * r, np.sqrt(area / max(n, 1)), 0.01))


@intrinsic
def _compress8(typingctx, dst, doff, src, soff, bar):
    """``dst[doff:…]`` ← those of the 8 values ``src[soff:soff + 8]`` that are ``< bar``, in order
    (LLVM's ``masked.compressstore``: one instruction with AVX-512, a scalar sequence elsewhere);
    returns how many.  Nothing past them is written."""
    sig = types.int64(dst, types.int64, src, types.int64, types.float64)

    def codegen(context, builder, signature, args):
        dst_v, doff_v, src_v, soff_v, bar_v = args
        dptr = builder.gep(context.make_array(signature.args[0])(context, builder, dst_v).data, [doff_v])
        sptr = builder.gep(context.make_array(signature.args[2])(context, builder, src_v).data, [soff_v])
        vty = ir.VectorType(ir.DoubleType(), 8)
        vec = builder.load(builder.bitcast(sptr, vty.as_pointer()), align=8)
        bars = ir.Constant(vty, ir.Undefined)
        for i in range(8):
            bars = builder.insert_element(bars, bar_v, ir.Constant(ir.IntType(32), i))
        mask = builder.fcmp_ordered("<", vec, bars)
        mty = ir.VectorType(ir.IntType(1), 8)
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, ir.DoubleType().as_pointer(), mty]),
            "llvm.masked.compressstore.v8f64")
        builder.call(store, [vec, dptr, mask])
        pop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]),
                                             "llvm.ctpop.i8")
        return builder.zext(builder.call(pop, [builder.bitcast(mask, ir.IntType(8))]), ir.IntType(64))

    return sig, codegen


@njit(cache=True)
def _mean_distance(best, k):
    """PDAL's running mean over neighbours 1..k (neighbour 0 is the query itself)."""
    m = 0.0
    for j in range(1, k + 1):
        m += (np.sqrt(best[j]) - m) / j
    return m


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
def _block_levels(c, nx, ny, zb0, boff):
    """The z buckets the 3x3 block around cell ``c`` spans: (lowest, past the highest)."""
    cx, cy = c % nx, c // nx
    lo, hi = 0, 0
    for yy in range(max(cy - 1, 0), min(cy + 1, ny - 1) + 1):
        for xx in range(max(cx - 1, 0), min(cx + 1, nx - 1) + 1):
            cc = yy * nx + xx
            nb = boff[cc + 1] - boff[cc] - 1
            if nb > 0:
                if hi == lo:
                    lo, hi = zb0[cc], zb0[cc] + nb
                else:
                    lo, hi = min(lo, zb0[cc]), max(hi, zb0[cc] + nb)
    return lo, hi


@njit(cache=True)
def _bucket_total(zs, start, ncells, h):
    """How many z buckets :func:`_z_buckets` would make with ``h`` buckets per metre."""
    t = 0
    for c in range(ncells):
        if start[c + 1] > start[c]:
            t += int(np.floor(zs[start[c + 1] - 1] * h)) - int(np.floor(zs[start[c]] * h)) + 1
    return t


def bucket_height(zs, start, ncells, h):
    """``h`` (buckets per metre), lowered where the z buckets would outnumber the points eightfold
    (a stray return kilometres above its cell would otherwise ask for millions of them)."""
    cap = 8 * len(zs) + ncells
    t = _bucket_total(zs, start, ncells, h)
    return h if t <= cap else h * cap / t


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
def _block_size(start, nx, ny, cx, cy, reach):
    """How many points the (2 reach + 1)² cells around cell (cx, cy) hold (rows: contiguous runs)."""
    s = 0
    for yy in range(max(cy - reach, 0), min(cy + reach, ny - 1) + 1):
        s += start[yy * nx + min(cx + reach, nx - 1) + 1] - start[yy * nx + max(cx - reach, 0)]
    return s


@njit(cache=True)
def _max_block(start, nx, ny, reach):
    """The most points a block of (2 reach + 1)² cells holds."""
    m = 1
    for cy in range(ny):
        for cx in range(nx):
            m = max(m, _block_size(start, nx, ny, cx, cy, reach))
    return m


@njit(cache=True, nogil=True)
def _ring_pass(x, y, z, order, start, x0, y0, cell, nx, ny, k, queries, out):
    """The queries no block answered (isolated points): exact ring search on the grid."""
    best = np.empty(k + 1, np.float64)
    for i in queries:
        _query(i, best, x, y, z, order, start, x0, y0, cell, nx, ny)
        out[i] = _mean_distance(best, k)


@njit(cache=True)
def _bounds(x, y):
    """(min x, max x, min y, max y), in one pass (``len(x) > 0``)."""
    x0 = x1 = x[0]
    y0 = y1 = y[0]
    for i in range(1, len(x)):
        x0, x1 = min(x0, x[i]), max(x1, x[i])
        y0, y1 = min(y0, y[i]), max(y1, y[i])
    return x0, x1, y0, y1


@njit(cache=True)
def _coarsen(order_f, start_f, nxf, nyf, zs, f):
    """The grid of ``f`` × ``f`` fine cells from a fine grid (``order_f``, ``start_f``; ``zs``: the
    points' z): a coarse cell holds its fine cells' points, merged run by run into z order (each
    fine run is z-sorted already), with no sort.  A point lies in its fine cell's rectangle, which
    lies in its coarse cell's: the searches' rectangle rules hold as for a grid built directly."""
    nx, ny = (nxf + f - 1) // f, (nyf + f - 1) // f
    start = np.zeros(nx * ny + 1, np.int64)
    for yy in range(nyf):
        for xx in range(nxf):
            start[(yy // f) * nx + xx // f + 1] += start_f[yy * nxf + xx + 1] - start_f[yy * nxf + xx]
    for c in range(nx * ny):
        start[c + 1] += start[c]
    order = np.empty(len(order_f), np.int64)
    for cy in range(ny):
        for cx in range(nx):
            c0 = start[cy * nx + cx]
            p = c0
            for yy in range(cy * f, min(cy * f + f, nyf)):
                for xx in range(cx * f, min(cx * f + f, nxf)):
                    a, b = start_f[yy * nxf + xx], start_f[yy * nxf + xx + 1]
                    i, j, w = p - 1, b - 1, p + b - a - 1  # merge from the end, in place
                    while j >= a:
                        if i >= c0 and zs[order[i]] > zs[order_f[j]]:
                            order[w] = order[i]
                            i -= 1
                        else:
                            order[w] = order_f[j]
                            j -= 1
                        w -= 1
                    p += b - a
    return order, start, nx, ny


def coarse_grid(g, z, f: int):
    """:func:`_coarsen` of grid ``g`` (as :func:`_grid` returns it): the same tuple, cells ``f``
    times larger."""
    order_f, start_f, x0, y0, cell, nxf, nyf = g
    order, start, nx, ny = _coarsen(order_f, start_f, nxf, nyf, z, f)
    return order, start, x0, y0, cell * f, nx, ny


def _grid(x, y, z, cell, box=None):
    """The grid of ``cell`` m over the points' bounding box ``box`` (:func:`_bounds`)."""
    x0, x1, y0, y1 = (float(v) for v in (box if box is not None else _bounds(x, y)))
    nx = int((x1 - x0) // cell) + 1
    ny = int((y1 - y0) // cell) + 1
    order, start = _build_grid(x, y, z, x0, y0, cell, nx, ny)
    return order, start, x0, y0, cell, nx, ny
