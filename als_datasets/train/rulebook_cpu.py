"""The CPU kernel of the sparse convolution: every tap's gather-GEMM-scatter inside one compiled op.

What: :class:`CpuConv`, an autograd function with the semantics of
:func:`.rulebook.rulebook_conv` (``out[o] += in[i] @ W[k]`` over the pairs ``(i, o)`` of tap ``k``)
for float32 CPU tensors, whose forward and backward are each one call into numba-compiled code.
The profiler sees no gather, matmul or scatter per tap (the per-tap path: three per tap and
direction), and memory stays at one tile of pairs (the fused torch path materialises every
gathered pair: ~240 MB for BEV-MAE base's largest layer, and was slower than per tap on a CPU).

How: the pairs are bucketed once per rulebook and direction (a counting sort, O(pairs)) into
``P`` contiguous ranges of destination rows holding about as many pairs each (``P`` = torch's
intra-op threads), each bucket in tap order.  Each range is handled by one thread (numba ``nogil``, a small Python thread pool: no
second spinning OpenMP pool), tap after tap, in tiles of ``T`` pairs: gather the tile's input rows
into a buffer that stays in cache, multiply by the tap's weight with MKL's ``sgemm`` (the BLAS
torch's own ``mm`` calls, taken from ``libtorch_cpu``, single-threaded inside each thread), and add
the products to the destination rows.  The centre tap of a submanifold convolution multiplies the
range's rows in place (no gather; ``beta = 1`` accumulates into the output).  The backward pass
buckets by input row and does, per tile, the input gradient (gathered output gradients times the
transposed weight) and the weight gradient (gathered inputs, transposed, times the same
gathered output gradients, accumulated per thread; the per-thread sums are added in thread
order).

Numbers: float32 throughout, products accumulated in float32 by ``sgemm`` and added to each
output row tap by tap in tap order, like the per-tap path.  Each output row is written by one
thread only, so a run is bit-for-bit repeatable for a given thread count (the tile boundaries
depend on it, as torch's own ``mm`` results do).

Where it is not available (no MKL in the installed torch, a non-x86 build, a ``sgemm`` whose result
disagrees with a float64 torch reference on a small check) :func:`available` is False and the
torch paths run.  The kernels call ``sgemm`` through an address passed at run time (a numba
intrinsic), so they are compiled once per machine and cached on disk (``cache=True``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["available", "CpuConv", "tile_rows"]

_STATE: dict = {}
_LOCK = threading.Lock()


def _mkl_addresses():
    """``(sgemm_, MKL_Set_Num_Threads_Local)`` addresses in torch's MKL, or None."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        return (ctypes.cast(lib.sgemm_, ctypes.c_void_p).value,
                ctypes.cast(lib.MKL_Set_Num_Threads_Local, ctypes.c_void_p).value)
    except (OSError, AttributeError):
        return None


@intrinsic
def _call_sgemm(typingctx, fn, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12):
    """Call the Fortran ``sgemm`` at address ``fn`` with 13 addresses (an address known at run time,
    so that the kernels can be cached on disk)."""
    sig = types.void(fn, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12)

    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        target = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [ptr] * 13).as_pointer())
        builder.call(target, [builder.inttoptr(a, ptr) for a in args[1:]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _call_set_threads(typingctx, fn, n):
    """``MKL_Set_Num_Threads_Local(n)`` at address ``fn``: the previous thread-local setting."""
    sig = types.int32(fn, n)

    def codegen(context, builder, signature, args):
        target = builder.inttoptr(args[0], ir.FunctionType(ir.IntType(32), [ir.IntType(32)]).as_pointer())
        return builder.call(target, [builder.trunc(args[1], ir.IntType(32))])

    return sig, codegen


@njit(nogil=True, cache=True)
def _gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, sc):
    """Column-major ``C (m×n) = alpha·op(A)·op(B) + beta·C`` (Fortran ``sgemm``: every argument by address)."""
    ints, flts, chars = sc
    chars[0] = ta
    chars[1] = tb
    ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = m, n, k, lda, ldb, ldc
    flts[0], flts[1] = alpha, beta
    ip, fp, cp = ints.ctypes.data, flts.ctypes.data, chars.ctypes.data
    _call_sgemm(fn, cp, cp + 1, ip, ip + 4, ip + 8, fp, a.ctypes.data, ip + 12, b.ctypes.data, ip + 16, fp + 4,
                c.ctypes.data, ip + 20)


@njit(nogil=True, cache=True)
def _scratch():
    return np.empty(6, np.int32), np.empty(2, np.float32), np.empty(2, np.uint8)


@njit(nogil=True, cache=True)
def _forward_part(fns, x, w, out, src, dst, lo, hi, ident, r0, r1, tile):
    """``out[dst] += x[src] @ w[t]`` over the pairs ``lo[t]:hi[t]`` of each tap ``t``, in tap order;
    the identity tap on rows ``r0:r1`` without a gather.  ``fns``: (sgemm, set-threads) addresses."""
    fn = fns[0]
    prev = _call_set_threads(fns[1], 1)
    n_taps, cin, cout = w.shape
    buf = np.empty((tile, cin), np.float32)
    prod = np.empty((tile, cout), np.float32)
    sc = _scratch()
    for t in range(n_taps):
        if t == ident:
            if r1 > r0:  # out[r0:r1] += x[r0:r1] @ w[t]  (column-major: outᵀ += wᵀ xᵀ)
                _gemm(fn, 78, 78, cout, r1 - r0, cin, 1.0, w[t], cout, x[r0:], cin, 1.0, out[r0:], cout, sc)
            continue
        for s in range(lo[t], hi[t], tile):
            r = min(hi[t], s + tile) - s
            for j in range(r):
                buf[j] = x[src[s + j]]
            _gemm(fn, 78, 78, cout, r, cin, 1.0, w[t], cout, buf, cin, 0.0, prod, cout, sc)
            for j in range(r):
                o = out[dst[s + j]]
                p = prod[j]
                for c in range(cout):
                    o[c] += p[c]
    _call_set_threads(fns[1], prev)


@njit(nogil=True, cache=True)
def _backward_part(fns, x, w, g, gx, gw, src, dst, lo, hi, ident, r0, r1, tile, need_x, need_w):
    """Pairs bucketed by input row: ``gx[src] += g[dst] @ w[t]ᵀ`` and ``gw[t] += x[src]ᵀ g[dst]``."""
    fn = fns[0]
    prev = _call_set_threads(fns[1], 1)
    n_taps, cin, cout = w.shape
    gbuf = np.empty((tile, cout), np.float32)
    xbuf = np.empty((tile, cin), np.float32)
    prod = np.empty((tile, cin), np.float32)
    sc = _scratch()
    for t in range(n_taps):
        if t == ident:
            if r1 > r0:
                if need_x:  # gx[r0:r1] += g[r0:r1] @ w[t]ᵀ
                    _gemm(fn, 84, 78, cin, r1 - r0, cout, 1.0, w[t], cout, g[r0:], cout, 1.0, gx[r0:], cin, sc)
                if need_w:  # gw[t] += x[r0:r1]ᵀ g[r0:r1]  (column-major: gwᵀ += gᵀ x)
                    _gemm(fn, 78, 84, cout, cin, r1 - r0, 1.0, g[r0:], cout, x[r0:], cin, 1.0, gw[t], cout, sc)
            continue
        for s in range(lo[t], hi[t], tile):
            r = min(hi[t], s + tile) - s
            for j in range(r):
                gbuf[j] = g[dst[s + j]]
            if need_x:
                _gemm(fn, 84, 78, cin, r, cout, 1.0, w[t], cout, gbuf, cout, 0.0, prod, cin, sc)
                for j in range(r):
                    o = gx[src[s + j]]
                    p = prod[j]
                    for c in range(cin):
                        o[c] += p[c]
            if need_w:
                for j in range(r):
                    xbuf[j] = x[src[s + j]]
                _gemm(fn, 78, 84, cout, cin, r, 1.0, gbuf, cout, xbuf, cin, 1.0, gw[t], cout, sc)
    _call_set_threads(fns[1], prev)


@njit(nogil=True, cache=True)
def _bucket(src, dst, counts, key_is_dst, n_rows, parts, ident):
    """Stable counting sort of the pairs (grouped by tap) by (part of the key row, tap); the identity
    tap's pairs are left out.  Parts are contiguous ranges of key rows holding about the same
    number of pairs (identity pairs included): ``bounds`` (parts + 1,).  Returns src, dst,
    lo (parts, taps), hi (parts, taps), bounds."""
    n_taps = len(counts)
    start = np.zeros(n_taps + 1, np.int64)
    for t in range(n_taps):
        start[t + 1] = start[t] + counts[t]
    per_row = np.zeros(n_rows, np.int64)
    for q in range(start[n_taps]):
        per_row[dst[q] if key_is_dst else src[q]] += 1
    part = np.empty(n_rows, np.int64)
    bounds = np.full(parts + 1, n_rows, np.int64)
    bounds[0] = 0
    total, seen, p = start[n_taps], 0, 0
    for r in range(n_rows):  # row r goes to the part its first pair falls in
        while p < parts - 1 and seen * parts >= (p + 1) * total:
            p += 1
            bounds[p] = r
        part[r] = p
        seen += per_row[r]
    size = np.zeros((parts, n_taps), np.int64)
    for t in range(n_taps):
        if t == ident:
            continue
        for q in range(start[t], start[t + 1]):
            size[part[dst[q] if key_is_dst else src[q]], t] += 1
    lo = np.zeros((parts, n_taps), np.int64)
    n = 0
    for p in range(parts):
        for t in range(n_taps):
            lo[p, t] = n
            n += size[p, t]
    hi = lo.copy()
    s2 = np.empty(n, np.int64)
    d2 = np.empty(n, np.int64)
    for t in range(n_taps):
        if t == ident:
            continue
        for q in range(start[t], start[t + 1]):
            p = part[dst[q] if key_is_dst else src[q]]
            k = hi[p, t]
            s2[k] = src[q]
            d2[k] = dst[q]
            hi[p, t] = k + 1
    return s2, d2, lo, hi, bounds


@njit(nogil=True, cache=True)
def _finish_weight_grad(parts, out, t0, t1):
    """``out[o, i, t] = Σ_p parts[p, t, i, o]`` for the taps ``t0:t1`` (the per-thread sums, added in
    thread order, written straight into the conv3d layout ``out (C_out, C_in, K)``)."""
    n_parts, _, cin, cout = parts.shape
    for t in range(t0, t1):
        for i in range(cin):
            for o in range(cout):
                v = parts[0, t, i, o]
                for p in range(1, n_parts):
                    v += parts[p, t, i, o]
                out[o, i, t] = v


def _kernels():
    """``[sgemm, MKL_Set_Num_Threads_Local]`` addresses (int64) for the kernels, or None where this path
    is not available (looked up and checked once per process)."""
    if "k" in _STATE:
        return _STATE["k"]
    with _LOCK:
        if "k" not in _STATE:
            k = None
            addr = _mkl_addresses()
            if addr is not None:
                try:
                    k = np.array(addr, np.int64)
                    if not _self_check(k):
                        k = None
                except Exception:  # pragma: no cover - a numba or MKL that does not fit
                    k = None
            _STATE["k"] = k
    return _STATE["k"]


def _self_check(k) -> bool:
    """A small convolution through the kernel against the same sums in float64 torch."""
    g = np.random.default_rng(0)
    x = g.standard_normal((7, 3)).astype(np.float32)
    w = g.standard_normal((2, 3, 5)).astype(np.float32)
    src = np.array([0, 1, 2, 3, 4, 5, 6, 0, 2], np.int64)
    dst = np.array([0, 1, 2, 3, 4, 5, 6, 3, 1], np.int64)
    counts = np.array([7, 2], np.int64)
    s2, d2, lo, hi, _ = _bucket(src, dst, counts, True, 7, 1, 0)
    out = np.zeros((7, 5), np.float32)
    _forward_part(k, x, w, out, s2, d2, lo[0], hi[0], 0, 0, 7, 4)
    ref = torch.from_numpy(x).double() @ torch.from_numpy(w[0]).double()
    ref.index_add_(0, torch.from_numpy(dst[7:]), torch.from_numpy(x[src[7:]]).double() @ torch.from_numpy(w[1]).double())
    return bool(np.allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5))


def available() -> bool:
    """True where the compiled CPU kernel runs (MKL ``sgemm`` found in torch and checked)."""
    return _kernels() is not None


def tile_rows(c_in: int, c_out: int) -> int:
    """Pairs per tile: the gathered rows and their products take ~4 MiB (at most 4096 rows).

    Each ``sgemm`` call packs the tap's weight again: tiles of 1 MiB made the 384-channel layers
    of BEV-MAE base ~20 % slower than 4 MiB tiles (forward + backward, 2 threads), while the
    96-channel layers ran the same with either."""
    return int(min(4096, max(64, (1 << 20) // max(1, c_in + c_out))))


_POOL: dict = {}


def _run(jobs) -> None:
    """Run the thunks in ``jobs`` on a thread pool (the calling thread takes the last one)."""
    if len(jobs) == 1:
        jobs[0]()
        return
    n = len(jobs) - 1
    pool = _POOL.get("pool")
    if pool is None or _POOL.get("pid") != os.getpid() or _POOL.get("n", 0) < n:  # new, forked or too small
        if pool is not None and _POOL.get("pid") == os.getpid():
            pool.shutdown(wait=False)
        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sparse-conv")
        _POOL.update(pool=pool, pid=os.getpid(), n=n)
    futures = [pool.submit(j) for j in jobs[:-1]]
    jobs[-1]()
    for f in futures:
        f.result()


def _buckets(rb, parts: int, by_out: bool):
    """The rulebook's pairs bucketed for ``parts`` threads, by output row (forward) or input row
    (backward); cached on the rulebook."""
    key = ("cpu", parts, by_out)
    hit = rb.plans.get(key)
    if hit is None:
        ident = -1 if rb.identity is None else rb.identity
        hit = rb.plans[key] = _bucket(rb.in_idx.numpy(), rb.out_idx.numpy(), np.asarray(rb.counts, np.int64),
                                          by_out, max(1, rb.n_out if by_out else rb.n_in), parts, ident)
    return hit


def _kio_np(weight: torch.Tensor) -> np.ndarray:
    """conv3d ``(C_out, C_in, kz, ky, kx)`` → contiguous ``(K, C_in, C_out)`` float32 array."""
    w = weight.detach().numpy()
    return np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0).reshape(-1, w.shape[1], w.shape[0]))


class CpuConv(torch.autograd.Function):
    """``out[o] = Σ_k in[i] @ W[k]`` over the pairs ``(i, o)`` of tap ``k``: float32 CPU tensors only."""

    @staticmethod
    def forward(ctx, feats, weight, rb):
        k = _kernels()
        w = _kio_np(weight)
        x = np.ascontiguousarray(feats.detach().numpy())
        cout = w.shape[2]
        out = np.zeros((rb.n_out, cout), np.float32)
        parts = max(1, min(torch.get_num_threads(), rb.n_out))
        if rb.n_out and rb.n_in:
            src, dst, lo, hi, bounds = _buckets(rb, parts, True)
            ident, tile = (-1 if rb.identity is None else rb.identity), tile_rows(w.shape[1], cout)
            _run([(lambda p=p: _forward_part(k, x, w, out, src, dst, lo[p], hi[p], ident,
                                            bounds[p], bounds[p + 1], tile)) for p in range(parts)])
        ctx.save_for_backward(feats)
        ctx.rb, ctx.w, ctx.wshape = rb, w, tuple(weight.shape)  # the (K, C_in, C_out) copy, for the backward
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        (feats,) = ctx.saved_tensors
        rb, k, w = ctx.rb, _kernels(), ctx.w
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n_taps, cin, cout = w.shape
        x = np.ascontiguousarray(feats.detach().numpy())
        g = np.ascontiguousarray(grad_out.detach().to(torch.float32).numpy())
        parts = max(1, min(torch.get_num_threads(), rb.n_in))
        gx = np.zeros((rb.n_in, cin), np.float32)
        gw = np.zeros((parts, n_taps, cin, cout), np.float32)
        if rb.n_out and rb.n_in and (need_x or need_w):
            src, dst, lo, hi, bounds = _buckets(rb, parts, False)
            ident, tile = (-1 if rb.identity is None else rb.identity), tile_rows(cin, cout)
            _run([(lambda p=p: _backward_part(k, x, w, g, gx, gw[p], src, dst, lo[p], hi[p], ident,
                                             bounds[p], bounds[p + 1], tile, need_x, need_w))
                  for p in range(parts)])
        gx_t = torch.from_numpy(gx) if need_x else None
        gw_t = None
        if need_w:
            shape = ctx.wshape
            full = np.empty(shape, np.float32)
            flat = full.reshape(shape[0], shape[1], n_taps)
            cuts = [n_taps * p // parts for p in range(parts + 1)]
            _run([(lambda p=p: _finish_weight_grad(gw, flat, cuts[p], cuts[p + 1])) for p in range(parts)])
            gw_t = torch.from_numpy(full)
        return gx_t, gw_t, None
