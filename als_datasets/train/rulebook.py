"""Rulebooks (kernel maps) of sparse 3D convolutions and the gather-GEMM-scatter that applies them.

What: for a set of active sites (integer coordinates ``(b, z, y, x)``) and a kernel, a
:class:`Rulebook` lists every connection *(input row, output row, kernel tap)*, grouped by tap.
:func:`submanifold_rulebook` (output sites = input sites) and :func:`strided_rulebook` (output
sites = the strided receptive fields hit by an input site, spconv's ``SparseConv3d``) build
them; :func:`rulebook_conv` applies one to features with a ``(K, C_in, C_out)`` weight.

How (the organisation of spconv's, torchsparse's and MinkowskiEngine's kernel maps, written
again in pure torch): coordinates are linearised to int64 keys, the neighbours of *all* sites
under *all* taps are looked up at once (a dense index table for small grids, ``searchsorted``
on the sorted keys otherwise), so building a rulebook is a few dozen tensor ops, not a few per
tap.  A rulebook is built once per set of sites and kernel and shared by every convolution that
uses it (the :class:`~.sparse.SparseTensor` cache: one per spatial level), and the backward pass
runs the same pairs transposed.

The convolution itself (``fused``, the default) is a handful of large ops per layer whatever the
kernel size: the pairs of the non-centre taps are laid out in fixed-size *slots* (a tap with
``c`` pairs takes ``ceil(c / S)`` slots of ``S`` rows; unused rows point at a dummy output row),
so one ``index_select`` gathers every input row, one ``bmm`` multiplies each slot by its tap's
weight, and one ``index_add_`` scatters all products; the centre tap of a submanifold
convolution is one plain ``mm`` without a gather.  ``S`` is chosen per layer from the tap counts
and the channel widths to balance padding rows against per-slot weight copies (typically < 15 %
extra rows).  The backward pass recomputes the gather (memory ~ the features, as before) and
does the same in reverse: a gather of output gradients, two ``bmm`` (input and weight
gradients), one ``index_add_``, and one ``index_add_`` folding the slots' weight gradients back
into taps.  ``loop`` is the previous path — per tap one gather, one matmul, one scatter — kept
for comparison (``ALS_DATASETS_SPARSE_BACKEND=torch-loop``, ``bench/bench_train.py --events``).
``cpu`` is the compiled CPU kernel of :mod:`.rulebook_cpu` (float32): the per-tap work inside
one op per direction, in cache-sized tiles, without the fused path's materialised pairs.
On a GPU the single ``index_add_`` sums contributions of different taps to one output row with
atomics, so the order of those additions (not the set) may change from run to run unless
``torch.use_deterministic_algorithms(True)``; on the CPU it is fixed.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = ["Rulebook", "linear_keys", "decode_keys", "submanifold_rulebook", "strided_rulebook",
           "conv_output_shape", "rulebook_conv", "kernel_taps", "triple", "DENSE_TABLE_MAX"]

#: grids with at most this many cells (batch included) use a dense index table instead of searchsorted
DENSE_TABLE_MAX = 1 << 22


def triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v}")
    return v


def kernel_taps(kernel) -> list[tuple[int, int, int]]:
    """Taps of a kernel in (kz, ky, kx) row-major order (the order of a flattened conv3d weight)."""
    return list(itertools.product(*(range(k) for k in kernel)))


def conv_output_shape(spatial_shape, kernel_size, stride=1, padding=0) -> tuple[int, int, int]:
    """Dense ``conv3d`` output size per axis: ``(n + 2p - k) // s + 1``."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in
                 zip(triple(spatial_shape), triple(kernel_size), triple(stride), triple(padding)))


def linear_keys(coords: torch.Tensor, spatial_shape) -> torch.Tensor:
    """int64 key ``((b·D + z)·H + y)·W + x`` of each row of ``coords (N, 4)``; order = lexicographic."""
    d, h, w = triple(spatial_shape)
    c = coords.long()
    return ((c[:, 0] * d + c[:, 1]) * h + c[:, 2]) * w + c[:, 3]


def decode_keys(keys: torch.Tensor, spatial_shape) -> torch.Tensor:
    d, h, w = spatial_shape
    x = keys % w
    r = keys // w
    y = r % h
    r = r // h
    z = r % d
    b = r // d
    return torch.stack([b, z, y, x], 1)


class Rulebook:
    """Pairs of one sparse convolution, grouped by kernel tap (row-major over (kz, ky, kx)).

    For tap ``k`` (``counts[k]`` pairs), input rows ``in_idx[s:e]`` feed output rows
    ``out_idx[s:e]``.  Within one tap every output row and every input row occurs at most once.
    ``identity``: the tap whose pairs are ``(i, i)`` for every row (submanifold centre), run
    without a gather.  ``plans`` caches the slot layouts of the fused path (by slot size).
    """

    __slots__ = ("in_idx", "out_idx", "counts", "n_in", "n_out", "identity", "plans")

    def __init__(self, in_idx, out_idx, counts, n_in, n_out, identity=None):
        self.in_idx, self.out_idx, self.counts = in_idx, out_idx, [int(c) for c in counts]
        self.n_in, self.n_out, self.identity = int(n_in), int(n_out), identity
        self.plans: dict = {}

    def pairs(self) -> int:
        """Number of (input, output, tap) connections."""
        return sum(self.counts)

    def segments(self):
        start = 0
        for t, c in enumerate(self.counts):
            yield t, start, start + c
            start += c


class _Lookup:
    """Row of a key among ``keys`` (or -1): dense table for small grids, else searchsorted."""

    def __init__(self, keys: torch.Tensor, total: int):
        self.n = len(keys)
        if total <= DENSE_TABLE_MAX:
            self.table = torch.full((total,), -1, dtype=torch.long, device=keys.device)
            self.table[keys] = torch.arange(self.n, device=keys.device)
            self.sorted = None
        else:
            self.table = None
            self.sorted, self.perm = torch.sort(keys)

    def __call__(self, query: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.n == 0:
            return torch.full_like(query, -1)
        if self.table is not None:
            return torch.where(valid, self.table[torch.where(valid, query, 0)], -1)
        pos = torch.searchsorted(self.sorted, query).clamp_(max=self.n - 1)
        hit = valid & (self.sorted[pos] == query)
        return torch.where(hit, self.perm[pos], -1)


def submanifold_rulebook(coords: torch.Tensor, spatial_shape, kernel_size, batch_size: int | None = None
                         ) -> Rulebook:
    """Rulebook of a submanifold convolution (odd kernel, padding ``k // 2``, stride 1).

    All taps at once: the neighbour keys of every site under every offset, one lookup.  Within a
    tap, pairs are ordered by output row.
    """
    kernel = triple(kernel_size)
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"submanifold convolution needs odd kernel sizes, got {kernel}")
    shape = triple(spatial_shape)
    coords = coords.long()
    n, dev = len(coords), coords.device
    if batch_size is None:
        batch_size = int(coords[:, 0].max()) + 1 if n else 1
    taps = kernel_taps(kernel)
    K = len(taps)
    centre = taps.index(tuple(k // 2 for k in kernel))
    if n == 0:
        z = torch.zeros(0, dtype=torch.long, device=dev)
        return Rulebook(z, z, [0] * K, 0, 0, centre)
    keys = linear_keys(coords, shape)
    lookup = _Lookup(keys, max(1, batch_size) * shape[0] * shape[1] * shape[2])
    off, dkey, bound = _constants(("subm", kernel, shape, dev), lambda: _subm_constants(taps, kernel, shape, dev))
    nb = coords[None, :, 1:] + off  # (K, N, 3)
    valid = ((nb >= 0) & (nb < bound)).all(2)
    src = lookup(keys + dkey, valid)  # (K, N): input row feeding output row n under tap k, or -1
    found = src >= 0
    counts = found.sum(1).tolist()
    rows = torch.arange(n, device=dev).expand(K, n)
    return Rulebook(src[found], rows[found], counts, n, n, centre)


_CONSTANTS: dict = {}


def _constants(key, make):
    """Small constant tensors of a kernel and grid, made once per device."""
    v = _CONSTANTS.get(key)
    if v is None:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        v = _CONSTANTS[key] = make()
    return v


def _subm_constants(taps, kernel, shape, dev):
    off = torch.tensor([[t - k // 2 for t, k in zip(tap, kernel)] for tap in taps], device=dev)  # (K, 3)
    dkey = (off[:, 0] * shape[1] + off[:, 1]) * shape[2] + off[:, 2]
    return off[:, None, :], dkey[:, None], torch.tensor(shape, device=dev)


def strided_rulebook(coords: torch.Tensor, spatial_shape, kernel_size, stride, padding):
    """Output sites, output shape and rulebook of a regular sparse convolution (spconv ``SparseConv3d``).

    Output sites are sorted by :func:`linear_keys` (deterministic); within a tap, pairs are
    ordered by input row.
    """
    kernel, stride, padding = triple(kernel_size), triple(stride), triple(padding)
    shape = triple(spatial_shape)
    out_shape = conv_output_shape(shape, kernel, stride, padding)
    if min(out_shape) <= 0:
        raise ValueError(f"grid {shape} too small for kernel {kernel}, stride {stride}, padding {padding}")
    coords = coords.long()
    n, dev = len(coords), coords.device
    s, ptap, ob = _constants(("conv", kernel, stride, padding, out_shape, dev), lambda: (
        torch.tensor(stride, device=dev), torch.tensor(padding, device=dev) - torch.tensor(
            kernel_taps(kernel), device=dev)[:, None, :], torch.tensor(out_shape, device=dev)))
    K = ptap.shape[0]
    num = coords[None, :, 1:] + ptap  # (K, N, 3): padding - tap + input site
    o = torch.div(num, s, rounding_mode="floor")
    hit = ((o * s) == num).all(2) & (o >= 0).all(2) & (o < ob).all(2)  # (K, N)
    d, h, w = out_shape
    okey = ((coords[None, :, 0] * d + o[..., 0]) * h + o[..., 1]) * w + o[..., 2]
    uniq, inv = torch.unique(okey[hit], sorted=True, return_inverse=True)
    in_idx = torch.arange(n, device=dev).expand(K, n)[hit]
    rb = Rulebook(in_idx, inv, hit.sum(1).tolist(), n, len(uniq))
    return decode_keys(uniq, out_shape), out_shape, rb


# --------------------------------------------------------------------------------------------
# Slot plan of the fused path
# --------------------------------------------------------------------------------------------
#: nominal channel width of the slot-size cost model (one plan per rulebook, whatever the layer)
SLOT_COST_CHANNELS = 64


def choose_slot(counts: list[int], channels: int = SLOT_COST_CHANNELS) -> int:
    """Slot size ``S`` minimising rows moved (padding included) plus per-slot weight copies.

    Cost of ``S``: ``slots · S · 2c`` (rows gathered and scattered) ``+ 2 · slots · c²`` (the
    slots' weight copies and their gradients), ``c`` a nominal channel width.
    """
    live = [c for c in counts if c]
    if not live:
        return 1
    best, best_cost = None, None
    top = max(live)
    for div in (1, 2, 3, 4, 6, 8, 12, 16):
        size = max(1, math.ceil(top / div))
        slots = sum(math.ceil(c / size) for c in live)
        cost = slots * size * 2 * channels + 2 * slots * channels * channels
        if best_cost is None or cost < best_cost:
            best, best_cost = size, cost
    return best


class _Plan:
    """Slot layout: ``pad_in``/``pad_out`` (slots·S,) rows, ``slot_tap`` (slots,) the tap of each slot,
    ``live`` (slots, S, 1) bool: the row holds a pair.

    Padding rows point at row 0 of both sides and are zeroed by ``live`` (the gathered inputs in
    the forward pass, the gathered output gradients in the backward pass), so they add nothing.
    Built with one scatter of every pair to its slot row (the centre tap's pairs land in a tail
    that is cut off)."""

    __slots__ = ("pad_in", "pad_out", "slot_tap", "size", "n_slots", "live", "_live")

    def __init__(self, rb: Rulebook, size: int):
        dev = rb.in_idx.device
        taps, base, slot_off, start = [], [], 0, 0
        for t, c in enumerate(rb.counts):
            if t == rb.identity:
                base.append(-1 - start)  # placeholder, set below once the slot area is known
            else:
                k = math.ceil(c / size)
                taps += [t] * k
                base.append(slot_off * size - start)  # destination row = pair position + base
                slot_off += k
            start += c
        self.size, self.n_slots = size, slot_off
        area = slot_off * size
        if rb.identity is not None:  # centre pairs go to [area, area + count): cut off below
            base[rb.identity] = area - sum(rb.counts[:rb.identity])
        tail = rb.counts[rb.identity] if rb.identity is not None else 0
        self.slot_tap = torch.tensor(taps, dtype=torch.long, device=dev)
        pad_in = torch.zeros(area + tail, dtype=torch.long, device=dev)
        pad_out = torch.full((area + tail,), -1, dtype=torch.long, device=dev)
        if start:
            b_cnt = torch.tensor([base, rb.counts], dtype=torch.long, device=dev)
            dest = torch.repeat_interleave(b_cnt[0], b_cnt[1], output_size=start)
            dest += torch.arange(start, device=dev)
            pad_in.index_put_((dest,), rb.in_idx)
            pad_out.index_put_((dest,), rb.out_idx)
        pad_out = pad_out[:area]
        self.live = (pad_out >= 0).view(slot_off, size, 1)
        self._live = {}
        self.pad_in, self.pad_out = pad_in[:area], pad_out.clamp_(min=0)


    def live_as(self, dtype: torch.dtype) -> torch.Tensor:
        """``live`` as 0/1 of ``dtype`` (cached: a multiply without a cast)."""
        m = self._live.get(dtype)
        if m is None:
            m = self._live[dtype] = self.live.to(dtype)
        return m


def _plan(rb: Rulebook) -> _Plan:
    size = choose_slot([c for t, c in enumerate(rb.counts) if t != rb.identity])
    plan = rb.plans.get(size)
    if plan is None:
        plan = rb.plans[size] = _Plan(rb, size)
    return plan


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _kio(weight: torch.Tensor) -> torch.Tensor:
    """conv3d-shaped ``(C_out, C_in, kz, ky, kx)`` → ``(K, C_in, C_out)``, taps row-major (kz, ky, kx)."""
    return weight.permute(2, 3, 4, 1, 0).reshape(-1, weight.shape[1], weight.shape[0])


def _from_kio(grad: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`_kio` for a gradient: back to the conv3d layout, contiguous."""
    return grad.view(*shape[2:], shape[1], shape[0]).permute(4, 3, 0, 1, 2).contiguous()


def _scatter_rows(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[r]] += src[r]`` (rows; ``index`` may repeat): one ``scatter_add_`` kernel."""
    shape = (-1,) + (1,) * (src.dim() - 1)
    return out.scatter_add_(0, index.view(shape).expand_as(src), _cast(src, out.dtype))


class _FusedConv(torch.autograd.Function):
    """``out[o] = Σ_k in[i] @ W[k]`` over the pairs ``(i, o)`` of tap ``k``, slot by slot (see module doc)."""

    @staticmethod
    def forward(ctx, feats, weight, rb: Rulebook, compute_dtype):
        plan = _plan(rb)
        acc = torch.promote_types(compute_dtype, torch.float32)
        f, w = _cast(feats, compute_dtype), _kio(_cast(weight, compute_dtype))
        c_out = w.shape[2]
        ws = None
        if rb.identity is not None:
            out = _cast(torch.mm(f, w[rb.identity]), acc)
        else:
            out = torch.zeros((rb.n_out, c_out), dtype=acc, device=feats.device)
        if plan.n_slots and len(f) and rb.n_out:
            ws = w.index_select(0, plan.slot_tap)  # (slots, C_in, C_out): each slot's tap weight
            x = f.index_select(0, plan.pad_in).view(plan.n_slots, plan.size, -1)
            x.mul_(plan.live_as(compute_dtype))
            _scatter_rows(out, plan.pad_out, torch.bmm(x, ws).view(-1, c_out))
        ctx.save_for_backward(feats, w, ws)
        ctx.rb, ctx.plan, ctx.compute_dtype, ctx.shape, ctx.wdtype = rb, plan, compute_dtype, weight.shape, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, w, ws = ctx.saved_tensors
        rb, plan, dt = ctx.rb, ctx.plan, ctx.compute_dtype
        acc = torch.promote_types(dt, torch.float32)
        f, g = _cast(feats, dt), _cast(grad_out, dt)
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        c_in, c_out = w.shape[1], w.shape[2]
        gf = gw = None
        if rb.identity is not None:
            gf = _cast(torch.mm(g, w[rb.identity].t()), acc) if need_f else None
        elif need_f:
            gf = torch.zeros((rb.n_in, c_in), dtype=acc, device=feats.device)
        if need_w:
            gw = torch.zeros(w.shape, dtype=acc, device=w.device)
            if rb.identity is not None:
                gw[rb.identity] = torch.mm(f.t(), g)
        if ws is not None:
            go = g.index_select(0, plan.pad_out).view(plan.n_slots, plan.size, c_out).mul_(plan.live_as(dt))
            if need_f:
                _scatter_rows(gf, plan.pad_in, torch.bmm(go, ws.transpose(1, 2)).view(-1, c_in))
            if need_w:
                x = f.index_select(0, plan.pad_in).view(plan.n_slots, plan.size, c_in)
                _scatter_rows(gw, plan.slot_tap, torch.bmm(x.transpose(1, 2), go))
        return (None if gf is None else _cast(gf, feats.dtype),
                None if gw is None else _from_kio(_cast(gw, ctx.wdtype), ctx.shape), None, None)


class _LoopConv(torch.autograd.Function):
    """The per-tap path: one gather, one matmul, one scatter per kernel tap (kept for comparison)."""

    @staticmethod
    def forward(ctx, feats, weight, rb: Rulebook, compute_dtype):
        ctx.save_for_backward(feats, weight)
        ctx.rb, ctx.compute_dtype = rb, compute_dtype
        acc = torch.promote_types(compute_dtype, torch.float32)
        f, w = feats.to(compute_dtype), _kio(weight.to(compute_dtype))
        out = torch.zeros((rb.n_out, w.shape[2]), dtype=acc, device=feats.device)
        for t, s, e in rb.segments():
            if s == e:
                continue
            if t == rb.identity:
                out += (f @ w[t]).to(acc)
            else:
                out.index_add_(0, rb.out_idx[s:e], (f.index_select(0, rb.in_idx[s:e]) @ w[t]).to(acc))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        rb, dt = ctx.rb, ctx.compute_dtype
        acc = torch.promote_types(dt, torch.float32)
        f, w, g = feats.to(dt), _kio(weight.to(dt)), grad_out.to(dt)
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gf = torch.zeros(feats.shape, dtype=acc, device=feats.device) if need_f else None
        gw = torch.zeros(w.shape, dtype=acc, device=weight.device) if need_w else None
        for t, s, e in rb.segments():
            if s == e:
                continue
            if t == rb.identity:
                go, fi = g, f
            else:
                go, fi = g.index_select(0, rb.out_idx[s:e]), f.index_select(0, rb.in_idx[s:e])
            if need_f:
                contrib = (go @ w[t].t()).to(acc)
                if t == rb.identity:
                    gf += contrib
                else:
                    gf.index_add_(0, rb.in_idx[s:e], contrib)
            if need_w:
                gw[t] = (fi.t() @ go).to(acc)
        return (None if gf is None else gf.to(feats.dtype),
                None if gw is None else _from_kio(gw.to(weight.dtype), weight.shape), None, None)


def rulebook_conv(feats: torch.Tensor, weight: torch.Tensor, rb: Rulebook, compute_dtype: torch.dtype,
                  method: str = "fused") -> torch.Tensor:
    """Apply ``rb`` with a conv3d-shaped ``weight (C_out, C_in, kz, ky, kx)``: ``(n_out, C_out)`` in
    float32 (float64 stays)."""
    if method == "cpu":  # the compiled CPU kernel (float32 CPU tensors; see .rulebook_cpu)
        from .rulebook_cpu import CpuConv

        return CpuConv.apply(feats, weight, rb)
    fn = _FusedConv if method == "fused" else _LoopConv
    return fn.apply(feats, weight, rb, compute_dtype)
