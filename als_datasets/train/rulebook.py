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
    lookup = _Lookup(linear_keys(coords, shape), max(1, batch_size) * shape[0] * shape[1] * shape[2])
    off = torch.tensor(taps, device=dev) - torch.tensor([k // 2 for k in kernel], device=dev)  # (K, 3)
    nb = coords[None, :, 1:] + off[:, None, :]  # (K, N, 3)
    valid = ((nb >= 0) & (nb < torch.tensor(shape, device=dev))).all(2)
    key = ((coords[None, :, 0] * shape[0] + nb[..., 0]) * shape[1] + nb[..., 1]) * shape[2] + nb[..., 2]
    src = lookup(key, valid)  # (K, N): input row feeding output row n under tap k, or -1
    found = src >= 0
    counts = found.sum(1).tolist()
    rows = torch.arange(n, device=dev).expand(K, n)
    return Rulebook(src[found], rows[found], counts, n, n, centre)


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
    s, p, ob = (torch.tensor(v, device=dev) for v in (stride, padding, out_shape))
    taps = torch.tensor(kernel_taps(kernel), device=dev)  # (K, 3)
    K = len(taps)
    num = coords[None, :, 1:] + p - taps[:, None, :]  # (K, N, 3)
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
def choose_slot(counts: list[int], c_in: int, c_out: int) -> int:
    """Slot size ``S`` minimising rows moved (padding included) plus per-slot weight copies."""
    live = [c for c in counts if c]
    if not live:
        return 1
    best, best_cost = None, None
    top = max(live)
    for div in (1, 2, 3, 4, 6, 8, 12, 16):
        size = max(1, math.ceil(top / div))
        slots = sum(math.ceil(c / size) for c in live)
        cost = slots * size * (c_in + c_out) + 2 * slots * c_in * c_out
        if best_cost is None or cost < best_cost:
            best, best_cost = size, cost
    return best


class _Plan:
    """Slot layout: ``pad_in``/``pad_out`` (slots·S,) rows, ``slot_tap`` (slots,) the tap of each slot.

    Padding rows read input row 0 and write to the dummy output row ``n_out`` (dropped)."""

    __slots__ = ("pad_in", "pad_out", "slot_tap", "size", "n_slots")

    def __init__(self, rb: Rulebook, size: int):
        dev = rb.in_idx.device
        taps, starts, slot_off, pair_parts, base = [], [], 0, [], []
        start = 0
        for t, c in enumerate(rb.counts):
            if t != rb.identity and c:
                k = math.ceil(c / size)
                taps += [t] * k
                pair_parts.append((start, start + c))
                base.append(slot_off * size - start)  # destination row = pair position + base
                starts.append(c)
                slot_off += k
            start += c
        self.size, self.n_slots = size, slot_off
        self.slot_tap = torch.tensor(taps, dtype=torch.long, device=dev)
        self.pad_in = torch.zeros(slot_off * size, dtype=torch.long, device=dev)
        self.pad_out = torch.full((slot_off * size,), rb.n_out, dtype=torch.long, device=dev)
        if not slot_off:
            return
        if rb.identity is None:
            sel_in, sel_out = rb.in_idx, rb.out_idx
            pos = torch.arange(len(sel_in), device=dev)
        else:  # drop the centre tap's pairs (a plain mm handles them)
            s = sum(rb.counts[:rb.identity])
            e = s + rb.counts[rb.identity]
            sel_in = torch.cat([rb.in_idx[:s], rb.in_idx[e:]])
            sel_out = torch.cat([rb.out_idx[:s], rb.out_idx[e:]])
            pos = torch.cat([torch.arange(s, device=dev), torch.arange(e, len(rb.in_idx), device=dev)])
        dest = pos + torch.repeat_interleave(torch.tensor(base, device=dev), torch.tensor(starts, device=dev))
        self.pad_in[dest] = sel_in
        self.pad_out[dest] = sel_out


def _plan(rb: Rulebook, c_in: int, c_out: int) -> _Plan:
    size = choose_slot([c for t, c in enumerate(rb.counts) if t != rb.identity], c_in, c_out)
    plan = rb.plans.get(size)
    if plan is None:
        plan = rb.plans[size] = _Plan(rb, size)
    return plan


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _scatter_rows(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[r]] += src[r]`` (rows; ``index`` may repeat): one ``scatter_add_`` kernel."""
    shape = (-1,) + (1,) * (src.dim() - 1)
    return out.scatter_add_(0, index.view(shape).expand_as(src), _cast(src, out.dtype))


class _FusedConv(torch.autograd.Function):
    """``out[o] = Σ_k in[i] @ W[k]`` over the pairs ``(i, o)`` of tap ``k``, slot by slot (see module doc)."""

    @staticmethod
    def forward(ctx, feats, weight, rb: Rulebook, compute_dtype):
        plan = _plan(rb, weight.shape[1], weight.shape[2])
        acc = torch.promote_types(compute_dtype, torch.float32)
        f, w = _cast(feats, compute_dtype), _cast(weight, compute_dtype)
        c_out = weight.shape[2]
        ws = None
        if rb.identity is not None:
            out = torch.nn.functional.pad(_cast(torch.mm(f, w[rb.identity]), acc), (0, 0, 0, 1))
        else:
            out = torch.zeros((rb.n_out + 1, c_out), dtype=acc, device=feats.device)
        if plan.n_slots and len(f):
            ws = w.index_select(0, plan.slot_tap)  # (slots, C_in, C_out): each slot's tap weight
            x = f.index_select(0, plan.pad_in).view(plan.n_slots, plan.size, -1)
            _scatter_rows(out, plan.pad_out, torch.bmm(x, ws).view(-1, c_out))
        ctx.save_for_backward(feats, weight, ws)
        ctx.rb, ctx.plan, ctx.compute_dtype = rb, plan, compute_dtype
        return out[:rb.n_out]

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight, ws = ctx.saved_tensors
        rb, plan, dt = ctx.rb, ctx.plan, ctx.compute_dtype
        acc = torch.promote_types(dt, torch.float32)
        f, w, g = _cast(feats, dt), _cast(weight, dt), _cast(grad_out, dt)
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        c_in, c_out = weight.shape[1], weight.shape[2]
        gf = gw = None
        if rb.identity is not None:
            gf = _cast(torch.mm(g, w[rb.identity].t()), acc) if need_f else None
        elif need_f:
            gf = torch.zeros((rb.n_in, c_in), dtype=acc, device=feats.device)
        if need_w:
            gw = torch.zeros(weight.shape, dtype=acc, device=weight.device)
            if rb.identity is not None:
                gw[rb.identity] = torch.mm(f.t(), g)
        if ws is not None and len(g):
            go = torch.nn.functional.pad(g, (0, 0, 0, 1)).index_select(0, plan.pad_out)
            go = go.view(plan.n_slots, plan.size, c_out)  # padding rows read the zero row: no contribution
            if need_f:
                _scatter_rows(gf, plan.pad_in, torch.bmm(go, ws.transpose(1, 2)).view(-1, c_in))
            if need_w:
                x = f.index_select(0, plan.pad_in).view(plan.n_slots, plan.size, c_in)
                _scatter_rows(gw, plan.slot_tap, torch.bmm(x.transpose(1, 2), go))
        return (None if gf is None else _cast(gf, feats.dtype), None if gw is None else _cast(gw, weight.dtype),
                None, None)


class _LoopConv(torch.autograd.Function):
    """The per-tap path: one gather, one matmul, one scatter per kernel tap (kept for comparison)."""

    @staticmethod
    def forward(ctx, feats, weight, rb: Rulebook, compute_dtype):
        ctx.save_for_backward(feats, weight)
        ctx.rb, ctx.compute_dtype = rb, compute_dtype
        acc = torch.promote_types(compute_dtype, torch.float32)
        f, w = feats.to(compute_dtype), weight.to(compute_dtype)
        out = torch.zeros((rb.n_out, weight.shape[2]), dtype=acc, device=feats.device)
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
        f, w, g = feats.to(dt), weight.to(dt), grad_out.to(dt)
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gf = torch.zeros(feats.shape, dtype=acc, device=feats.device) if need_f else None
        gw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
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
        return (None if gf is None else gf.to(feats.dtype), None if gw is None else gw.to(weight.dtype),
                None, None)


def rulebook_conv(feats: torch.Tensor, weight: torch.Tensor, rb: Rulebook, compute_dtype: torch.dtype,
                  method: str = "fused") -> torch.Tensor:
    """Apply ``rb`` with ``weight (K, C_in, C_out)``: ``(n_out, C_out)`` in float32 (float64 stays)."""
    fn = _FusedConv if method == "fused" else _LoopConv
    return fn.apply(feats, weight, rb, compute_dtype)
