"""Compiled per-point kernels of BEV-MAE's sample preparation (:mod:`.bev_mae`), one pass each.

Each kernel does exactly the float64 operations of the numpy expressions it replaces, in the
same order (numba without fast-math: no reassociation, no fused multiply-add), so the arrays are
bit-identical to the numpy formulation's: sums over a voxel's points are taken in point order,
as :func:`numpy.bincount` takes them; ``np.clip`` is ``min(max(x, lo), hi)``.  Left to numpy on
purpose: the rotation (``@``, which BLAS computes with fused multiply-adds), the sort of the
target points by a random key, and the interpolation of percentiles (:func:`extremes` only finds
the order statistics; :func:`percentiles` does numpy's arithmetic on them).

Why: at 90 k points per tile the numpy path spent most of its time in strided two-column
reductions, temporaries of every intermediate, an ``argsort`` of the voxel keys and one
``bincount`` per feature; here the voxel keys are sorted by two counting passes (the keys are
bounded: ``nz × nxy²``) and all features are accumulated in one pass.
Compiled once per machine (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def xy_bounds(xyz):
    """``(xyz[:, :2].min(0), xyz[:, :2].max(0))`` as four floats; ``nan`` where a column holds one
    (numpy's min and max propagate NaN)."""
    x0 = x1 = xyz[0, 0]
    y0 = y1 = xyz[0, 1]
    bad = False
    for i in range(1, xyz.shape[0]):
        x, y = xyz[i, 0], xyz[i, 1]
        x0, x1 = min(x0, x), max(x1, x)
        y0, y1 = min(y0, y), max(y1, y)
        bad |= (x != x) | (y != y)
    if bad or x0 != x0 or y0 != y0:
        xs, ys = xyz[:, 0], xyz[:, 1]
        nx, ny = np.isnan(xs).any(), np.isnan(ys).any()
        if nx:
            x0 = x1 = np.nan
        if ny:
            y0 = y1 = np.nan
    return x0, y0, x1, y1


@njit(cache=True)
def count_in_box(xyz, cx, cy, half):
    """``count_nonzero((|x - cx| < half) & (|y - cy| < half))``."""
    n = 0
    for i in range(xyz.shape[0]):
        if abs(xyz[i, 0] - cx) < half and abs(xyz[i, 1] - cy) < half:
            n += 1
    return n


@njit(cache=True)
def box_select(xyz, cx, cy, half, fx, fy):
    """Points with ``|x - cx| < half`` and ``|y - cy| < half``: their indices and ``((x - cx) · fx,
    (y - cy) · fy)`` (``fx``, ``fy`` = ±1: the flips)."""
    n = xyz.shape[0]
    idx = np.empty(n, np.int64)
    d = np.empty((n, 2), np.float64)
    m = 0
    for i in range(n):
        dx, dy = xyz[i, 0] - cx, xyz[i, 1] - cy
        if abs(dx) < half and abs(dy) < half:
            idx[m] = i
            d[m, 0] = dx * fx
            d[m, 1] = dy * fy
            m += 1
    return idx[:m], d[:m]  # views: the tail is never read


@njit(cache=True)
def crop_finish(xyz, pre, d, half, hi):
    """Of the candidates ``pre`` (offsets ``d`` from the crop centre), those inside the crop:
    ``(keep, loc = clip(d + half, 0, hi), z = xyz[keep, 2])``."""
    n = pre.shape[0]
    keep = np.empty(n, np.int64)
    loc = np.empty((n, 2), np.float64)
    z = np.empty(n, np.float64)
    m = 0
    for i in range(n):
        dx, dy = d[i, 0], d[i, 1]
        if abs(dx) < half and abs(dy) < half:
            keep[m] = pre[i]
            loc[m, 0] = min(max(dx + half, 0.0), hi)
            loc[m, 1] = min(max(dy + half, 0.0), hi)
            z[m] = xyz[pre[i], 2]
            m += 1
    return keep[:m], loc[:m], z[:m]


@njit(cache=True)
def heights(z, lo, hi, s, zhi):
    """``clip((clip(z, lo, hi) - lo) · s, 0, zhi)``."""
    out = np.empty(z.shape[0], np.float64)
    for i in range(z.shape[0]):
        out[i] = min(max((min(max(z[i], lo), hi) - lo) * s, 0.0), zhi)
    return out


@njit(cache=True)
def voxelise(loc, zrel, v, nxy, nz):
    """The voxel of every point, grouped by voxel.

    ``ix = min(int(loc / v), nxy - 1)``, ``iz = min(int(zrel / v), nz - 1)``; voxel key
    ``(iz · nxy + iy) · nxy + ix``.  Returns ``(ix (n, 2), iz, ukey, vinv, vcount, order, starts,
    vox)``: the sorted distinct keys, each point's voxel, points per voxel, the points in key
    order (stable), where each voxel's run starts in it, each voxel's ``(z, y, x)``.  Sorted by
    two stable counting passes (column, then level): O(n + nxy² + nz), no comparison sort.
    """
    n = loc.shape[0]
    ix = np.empty((n, 2), np.int64)
    iz = np.empty(n, np.int64)
    col = np.empty(n, np.int64)
    ncol = nxy * nxy
    ccount = np.zeros(ncol + 1, np.int64)
    zcount = np.zeros(nz + 1, np.int64)
    for i in range(n):
        a = min(np.int64(loc[i, 0] / v), nxy - 1)
        b = min(np.int64(loc[i, 1] / v), nxy - 1)
        c = min(np.int64(zrel[i] / v), nz - 1)
        ix[i, 0], ix[i, 1], iz[i] = a, b, c
        col[i] = b * nxy + a
        ccount[col[i] + 1] += 1
        zcount[c + 1] += 1
    for k in range(ncol):
        ccount[k + 1] += ccount[k]
    for k in range(nz):
        zcount[k + 1] += zcount[k]
    by_col = np.empty(n, np.int64)
    for i in range(n):
        by_col[ccount[col[i]]] = i
        ccount[col[i]] += 1
    order = np.empty(n, np.int64)
    for j in range(n):
        i = by_col[j]
        order[zcount[iz[i]]] = i
        zcount[iz[i]] += 1
    vinv = np.empty(n, np.int64)
    starts = np.empty(n, np.int64)
    ukey = np.empty(n, np.int64)
    vox = np.empty((n, 3), np.int64)
    nv = 0
    prev = -1
    for j in range(n):
        i = order[j]
        k = iz[i] * ncol + col[i]
        if k != prev:
            starts[nv] = j
            ukey[nv] = k
            vox[nv, 0], vox[nv, 1], vox[nv, 2] = iz[i], ix[i, 1], ix[i, 0]
            nv += 1
            prev = k
        vinv[i] = nv - 1
    vcount = np.empty(nv, np.int64)
    for q in range(nv):
        vcount[q] = (starts[q + 1] if q + 1 < nv else n) - starts[q]
    return ix, iz, ukey[:nv], vinv, vcount, order, starts[:nv], vox[:nv]


@njit(cache=True)
def voxel_means(loc, zrel, ix, iz, vinv, vcount, xyz_only, crop, zr, v, inten, ref, has_inten, rnum, nret,
                has_ret):
    """Per-voxel means of the point features (see :func:`.bev_mae.voxel_features`), float32.

    Sums in point order (what ``np.bincount(vinv, weights)`` does), times ``1 / max(count, 1)``
    in float64, then rounded to float32."""
    nv = vcount.shape[0]
    nf = 3 if xyz_only else 6
    acc = np.zeros((nv, nf), np.float64)
    for i in range(loc.shape[0]):
        q = vinv[i]
        if xyz_only:
            acc[q, 0] += loc[i, 0] / crop
            acc[q, 1] += loc[i, 1] / crop
            acc[q, 2] += zrel[i] / zr
            continue
        acc[q, 0] += loc[i, 0] / v - np.float64(ix[i, 0]) - 0.5
        acc[q, 1] += loc[i, 1] / v - np.float64(ix[i, 1]) - 0.5
        acc[q, 2] += zrel[i] / v - np.float64(iz[i]) - 0.5
        acc[q, 3] += zrel[i] / zr
        if has_inten:
            acc[q, 4] += min(max(inten[i] / ref, 0.0), 1.0)
        if has_ret:
            acc[q, 5] += min(max(rnum[i] / max(nret[i], 1.0), 0.0), 1.0)
    out = np.empty((nv, nf), np.float32)
    for q in range(nv):
        inv = 1.0 / max(vcount[q], 1)
        for j in range(nf):
            out[q, j] = acc[q, j] * inv
        if not xyz_only:
            if not has_inten:
                out[q, 4] = 0.0
            if not has_ret:
                out[q, 5] = 1.0
    return out


@njit(cache=True)
def voxel_cells(vox, cv, ncell):
    """BEV cells of the voxels ``vox (V, 3) = (z, y, x)``: ``(vcell, cells, vcell_inv)`` with
    ``vcell = (y // cv) · ncell + x // cv``, ``cells`` the sorted occupied cells and ``vcell_inv``
    each voxel's index in ``cells``."""
    nv = vox.shape[0]
    vcell = np.empty(nv, np.int64)
    occ = np.zeros(ncell * ncell, np.int64)
    for q in range(nv):
        vcell[q] = (vox[q, 1] // cv) * ncell + vox[q, 2] // cv
        occ[vcell[q]] = 1
    n_occ = 0
    for c in range(ncell * ncell):  # occ becomes the cell's index among the occupied ones
        if occ[c]:
            occ[c] = n_occ
            n_occ += 1
        else:
            occ[c] = -1
    cells = np.empty(n_occ, np.int64)
    vcell_inv = np.empty(nv, np.int64)
    for c in range(ncell * ncell):
        if occ[c] >= 0:
            cells[occ[c]] = c
    for q in range(nv):
        vcell_inv[q] = occ[vcell[q]]
    return vcell, cells, vcell_inv


@njit(cache=True)
def masked_points(vinv, vslot):
    """The points of masked cells, in point order: ``(pidx, slot)`` from each voxel's slot among the
    masked cells (``vslot``, -1 when unmasked)."""
    n = vinv.shape[0]
    pidx = np.empty(n, np.int64)
    slot = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        s = vslot[vinv[i]]
        if s >= 0:
            pidx[m] = i
            slot[m] = s
            m += 1
    return pidx[:m].copy(), slot[:m].copy()


@njit(cache=True)
def fill_targets(loc, zrel, pidx, slot, o, m_cells, T, ncell, cm, zr):
    """The first ``T`` points of every masked cell in the order ``o`` (points by cell, random within
    one): ``((x - cx) / cm, (y - cy) / cm, z / zr)`` into ``(M, T, 3)`` float32, and their counts."""
    M = m_cells.shape[0]
    tgt = np.zeros((M, T, 3), np.float32)
    tlen = np.zeros(M, np.int64)
    run, prev = 0, -1
    for j in range(o.shape[0]):
        i = o[j]
        s, p = slot[i], pidx[i]
        run = run + 1 if s == prev else 0
        prev = s
        if run < T:
            cy, cx = m_cells[s] // ncell, m_cells[s] % ncell
            tgt[s, run, 0] = (loc[p, 0] - (np.float64(cx) + 0.5) * cm) / cm
            tgt[s, run, 1] = (loc[p, 1] - (np.float64(cy) + 0.5) * cm) / cm
            tgt[s, run, 2] = zrel[p] / zr
            tlen[s] = run + 1
    return tgt, tlen


@njit(cache=True)
def extremes(a, k, largest):
    """The ``k`` smallest (or largest) values of ``a``, sorted ascending (descending): a bounded
    heap, O(n log k) — a percentile near 0 or 100 without partitioning the whole array."""
    sign = -1.0 if largest else 1.0
    heap = np.empty(k, np.float64)  # max-heap of sign · value: its root is the k-th kept
    m = 0
    for i in range(a.shape[0]):
        x = sign * np.float64(a[i])
        if m < k:
            j = m
            m += 1
            while j > 0 and heap[(j - 1) // 2] < x:
                heap[j] = heap[(j - 1) // 2]
                j = (j - 1) // 2
            heap[j] = x
        elif x < heap[0]:
            j = 0
            while True:
                c = 2 * j + 1
                if c >= k:
                    break
                if c + 1 < k and heap[c + 1] > heap[c]:
                    c += 1
                if heap[c] <= x:
                    break
                heap[j] = heap[c]
                j = c
            heap[j] = x
    out = np.sort(heap[:m])
    return out * sign


@njit(cache=True)
def order_stats_small_uint(a, j0, j1):
    """The ``j0``-th and ``j1``-th smallest values (0-based) of an array of 8- or 16-bit unsigned
    integers, by counting: O(n + max value)."""
    top = 0
    for i in range(a.shape[0]):
        top = max(top, np.int64(a[i]))
    count = np.zeros(top + 1, np.int64)
    for i in range(a.shape[0]):
        count[np.int64(a[i])] += 1
    x0 = x1 = -1
    seen = 0
    for v in range(top + 1):
        seen += count[v]
        if x0 < 0 and seen > j0:
            x0 = v
        if seen > j1:
            x1 = v
            break
    return x0, x1


def percentiles(a: np.ndarray, ps) -> list[float]:
    """``np.percentile(a, p)`` (method ``linear``) for each ``p``, bit for bit, for a 1-d array of
    real numbers: the two order statistics around ``(n - 1) · p / 100`` come from a bounded heap of
    the smallest or largest values (:func:`extremes`; by counting for 8/16-bit unsigned
    integers) and are interpolated as numpy's ``_lerp`` does.  Percentiles far from both ends,
    NaN and infinities go to numpy itself."""
    n = len(a)
    out = []
    for p in ps:
        v = (n - 1) * float(np.true_divide(p, 100))
        lo = min(int(np.floor(v)), n - 1)
        hi = min(lo + 1, n - 1)
        k_small, k_large = hi + 1, n - lo
        k = min(k_small, k_large)
        if n and a.dtype.kind == "u" and a.dtype.itemsize <= 2:  # counting
            x0, x1 = (float(x) for x in order_stats_small_uint(a, lo, hi))
        elif n < 64 or k > max(n // 16, 1) or (a.dtype.kind == "f" and not np.isfinite(a).all()):
            out.append(float(np.percentile(a, p)))
            continue
        else:  # ascending / descending: order statistic j at [j] / [n - 1 - j]
            ext = extremes(a, k, k_large < k_small)
            x0, x1 = (ext[lo], ext[hi]) if k_large >= k_small else (ext[n - 1 - lo], ext[n - 1 - hi])
        g = v - lo if v < n - 1 else v + 1.0  # numpy takes index -1 there: gamma = v - (-1)
        d = x1 - x0
        out.append(x1 - d * (1 - g) if g >= 0.5 else x0 + d * g)
    return out
