"""Sparse 3D convolution in pure torch (no spconv needed), with spconv as an optional backend.

What: a :class:`SparseTensor` (features ``(N, C)`` + integer coordinates ``(N, 4)`` =
``(batch, z, y, x)`` + the grid's ``spatial_shape`` ``(D, H, W)``), and ``torch.nn`` modules
that convolve it:

* :class:`SubMConv3d` — *submanifold* convolution: the output sites are the input sites; the
  value at a site is the dense ``conv3d`` (padding ``k // 2``) of the grid in which inactive
  sites hold zeros, evaluated at that site.  Odd kernels only.
* :class:`SparseConv3d` — *regular* (strided) sparse convolution as spconv's ``SparseConv3d``:
  an output site is active iff its receptive field holds at least one active input site, i.e.
  ``o = (i + padding - k) / stride`` is an integer inside the output grid for some input site
  ``i`` and kernel tap ``k``; its value is the dense ``conv3d`` (same stride / padding) there.
* :class:`SparseBatchNorm`, :class:`SparseReLU`, :class:`SparseSequential` on the features.

Weights are shaped like a dense ``conv3d`` kernel, ``(C_out, C_in, kz, ky, kx)``, so a dense
reference and a checkpoint are interchangeable with ``torch.nn.functional.conv3d``.

Why pure torch: the harness must run on any machine (CPU CI included) without compiling
spconv.  How: coordinates are linearised to int64 keys; neighbours are found with
``torch.searchsorted`` on the sorted keys (or a dense index table when the grid is small); the
result is a *rulebook*: for each kernel tap, the pairs (input row, output row).  The convolution
is then, per tap, one ``index_select`` + one matmul + one ``index_add_`` over the pairs that exist
(ALS voxels have ~9 of their 27 neighbours, so a dense "im2col" block would mostly multiply
zeros: measured 2.5-3× slower on CPU); no Python loop over points.  Within a tap the scatter
indices are unique, so the sums are deterministic even with GPU atomics.  A custom autograd
function recomputes the gathers in the backward pass instead of keeping ``K`` gathered copies of
the input, so memory stays ~ that of the features.
Rulebooks are cached on the tensor and shared by all convolutions with the same sites and
kernel (spconv's ``indice_key``), so a residual stage builds its map once.

Mixed precision: under ``torch.autocast`` the matmuls run in the autocast dtype (bf16 on GPU)
and are accumulated in float32; outputs are float32 (float64 inputs stay float64).

Optional backend: with ``backend="spconv"`` (argument) or ``ALS_DATASETS_SPARSE_BACKEND=spconv``
(environment) and ``spconv.pytorch`` importable, the convolutions call spconv with the same
weights (permuted at call time to the layout the installed spconv uses, read off its own weight
shape) and semantics.  spconv is not installed where this was written: that path is **untested**.
"""

from __future__ import annotations

import itertools
import os

import torch
from torch import nn

__all__ = ["SparseTensor", "SubMConv3d", "SparseConv3d", "SparseBatchNorm", "SparseReLU", "SparseSequential",
           "linear_keys", "submanifold_rulebook", "strided_rulebook", "conv_output_shape", "spconv_available",
           "resolve_backend"]

#: grids with at most this many cells (batch included) use a dense index table instead of searchsorted
DENSE_TABLE_MAX = 1 << 22


def _triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v}")
    return v


class SparseTensor:
    """Active sites of a batch of 3D grids: ``features (N, C)``, ``coords (N, 4)`` int64 ``(b, z, y, x)``.

    ``spatial_shape`` is ``(D, H, W)``; ``batch_size`` the number of grids.  ``cache`` holds
    rulebooks built for these coordinates; :meth:`replace` keeps it (same sites, new features).
    """

    __slots__ = ("features", "coords", "spatial_shape", "batch_size", "cache")

    def __init__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape, batch_size: int,
                 cache: dict | None = None):
        if features.dim() != 2 or coords.dim() != 2 or coords.shape[1] != 4 or len(features) != len(coords):
            raise ValueError(f"features (N, C) and coords (N, 4) expected, got {tuple(features.shape)} "
                             f"and {tuple(coords.shape)}")
        self.features = features
        self.coords = coords.long()
        self.spatial_shape = _triple(spatial_shape)
        self.batch_size = int(batch_size)
        self.cache = {} if cache is None else cache

    def replace(self, features: torch.Tensor) -> SparseTensor:
        """Same sites (and rulebook cache), new features."""
        return SparseTensor(features, self.coords, self.spatial_shape, self.batch_size, self.cache)

    def dense(self) -> torch.Tensor:
        """``(B, C, D, H, W)`` with zeros at inactive sites."""
        d, h, w = self.spatial_shape
        out = self.features.new_zeros((self.batch_size, d, h, w, self.features.shape[1]))
        b, z, y, x = self.coords.unbind(1)
        out[b, z, y, x] = self.features
        return out.permute(0, 4, 1, 2, 3).contiguous()

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self.coords)}, c={self.features.shape[1]}, shape={self.spatial_shape}, "
                f"batch={self.batch_size})")


# --------------------------------------------------------------------------------------------
# Rulebooks
# --------------------------------------------------------------------------------------------
class Rulebook:
    """Pairs of one sparse convolution, grouped by kernel tap (row-major over (kz, ky, kx)).

    For tap ``k`` (``counts[k]`` pairs), input rows ``in_idx[s:e]`` feed output rows
    ``out_idx[s:e]``.  Within one tap every output row and every input row occurs at most once,
    so the per-tap scatters never collide (deterministic even with GPU atomics).  ``identity``: the
    tap whose pairs are ``(i, i)`` for every row (submanifold centre), run without a gather.
    """

    __slots__ = ("in_idx", "out_idx", "counts", "n_in", "n_out", "identity")

    def __init__(self, in_idx, out_idx, counts, n_in, n_out, identity=None):
        self.in_idx, self.out_idx, self.counts = in_idx, out_idx, [int(c) for c in counts]
        self.n_in, self.n_out, self.identity = int(n_in), int(n_out), identity

    def pairs(self) -> int:
        """Number of (input, output, tap) connections."""
        return sum(self.counts)

    def segments(self):
        start = 0
        for t, c in enumerate(self.counts):
            yield t, start, start + c
            start += c


def linear_keys(coords: torch.Tensor, spatial_shape) -> torch.Tensor:
    """int64 key ``((b·D + z)·H + y)·W + x`` of each row of ``coords (N, 4)``; order = lexicographic."""
    d, h, w = _triple(spatial_shape)
    c = coords.long()
    return ((c[:, 0] * d + c[:, 1]) * h + c[:, 2]) * w + c[:, 3]


def _decode_keys(keys: torch.Tensor, spatial_shape) -> torch.Tensor:
    d, h, w = spatial_shape
    x = keys % w
    r = keys // w
    y = r % h
    r = r // h
    z = r % d
    b = r // d
    return torch.stack([b, z, y, x], 1)


def _kernel_taps(kernel) -> list[tuple[int, int, int]]:
    return list(itertools.product(*(range(k) for k in kernel)))


def conv_output_shape(spatial_shape, kernel_size, stride=1, padding=0) -> tuple[int, int, int]:
    """Dense ``conv3d`` output size per axis: ``(n + 2p - k) // s + 1``."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in
                 zip(_triple(spatial_shape), _triple(kernel_size), _triple(stride), _triple(padding)))


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
    """Rulebook of a submanifold convolution (odd kernel, padding ``k // 2``, stride 1)."""
    kernel = _triple(kernel_size)
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"submanifold convolution needs odd kernel sizes, got {kernel}")
    shape = _triple(spatial_shape)
    coords = coords.long()
    n, dev = len(coords), coords.device
    if batch_size is None:
        batch_size = int(coords[:, 0].max()) + 1 if n else 1
    lookup = _Lookup(linear_keys(coords, shape), max(1, batch_size) * shape[0] * shape[1] * shape[2])
    bounds = torch.tensor(shape, device=dev)
    rows = torch.arange(n, device=dev)
    ins, outs, counts, identity = [], [], [], None
    for t, tap in enumerate(_kernel_taps(kernel)):
        off = tuple(a - k // 2 for a, k in zip(tap, kernel))
        if off == (0, 0, 0):
            identity = t
            ins.append(rows), outs.append(rows), counts.append(n)
            continue
        nb = coords[:, 1:] + torch.tensor(off, device=dev)
        valid = ((nb >= 0) & (nb < bounds)).all(1)
        key = ((coords[:, 0] * shape[0] + nb[:, 0]) * shape[1] + nb[:, 1]) * shape[2] + nb[:, 2]
        src = lookup(key, valid)
        found = src >= 0
        ins.append(src[found]), outs.append(rows[found]), counts.append(found.sum())
    counts = torch.stack([torch.as_tensor(c, device=dev) for c in counts]).tolist() if counts else []
    return Rulebook(torch.cat(ins), torch.cat(outs), counts, n, n, identity)


def strided_rulebook(coords: torch.Tensor, spatial_shape, kernel_size, stride, padding):
    """Output sites, output shape and rulebook of a regular sparse convolution (spconv ``SparseConv3d``).

    Output sites are sorted by :func:`linear_keys` (deterministic).
    """
    kernel, stride, padding = _triple(kernel_size), _triple(stride), _triple(padding)
    shape = _triple(spatial_shape)
    out_shape = conv_output_shape(shape, kernel, stride, padding)
    if min(out_shape) <= 0:
        raise ValueError(f"grid {shape} too small for kernel {kernel}, stride {stride}, padding {padding}")
    coords = coords.long()
    n, dev = len(coords), coords.device
    s, p, ob = (torch.tensor(v, device=dev) for v in (stride, padding, out_shape))
    taps = _kernel_taps(kernel)
    okey = torch.full((len(taps), n), -1, dtype=torch.long, device=dev)  # output key per (tap, input)
    for t, tap in enumerate(taps):
        num = coords[:, 1:] + p - torch.tensor(tap, device=dev)
        o = torch.div(num, s, rounding_mode="floor")
        ok = ((o * s) == num).all(1) & (o >= 0).all(1) & (o < ob).all(1)
        okey[t] = torch.where(ok, linear_keys(torch.cat([coords[:, :1], o], 1), out_shape), -1)
    hit = okey >= 0
    uniq, inv = torch.unique(okey[hit], sorted=True, return_inverse=True)
    in_idx = torch.arange(n, device=dev).expand(len(taps), n)[hit]
    rb = Rulebook(in_idx, inv, hit.sum(1).tolist(), n, len(uniq))
    return _decode_keys(uniq, out_shape), out_shape, rb


# --------------------------------------------------------------------------------------------
# Gather-GEMM-scatter with a memory-lean backward
# --------------------------------------------------------------------------------------------
class _RulebookConv(torch.autograd.Function):
    """``out[o] = Σ_k in[i] @ W[k]`` over the pairs ``(i, o)`` of tap ``k``; ``W`` is ``(K, C_in, C_out)``.

    The backward pass recomputes the per-tap gathers instead of saving them (memory ~ features).
    """

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


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    try:
        if torch.is_autocast_enabled(dev):
            return torch.get_autocast_dtype(dev)
    except (TypeError, RuntimeError):  # pragma: no cover - older torch signatures
        pass
    return t.dtype


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------
def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str | None = None) -> str:
    """``torch`` (default) or ``spconv``: the argument, else ``$ALS_DATASETS_SPARSE_BACKEND``.

    ``spconv`` is used only if importable; otherwise the pure-torch path runs.
    """
    name = (backend or os.environ.get("ALS_DATASETS_SPARSE_BACKEND", "torch")).lower()
    if name not in ("torch", "spconv"):
        raise ValueError(f"unknown sparse backend {name!r} (torch or spconv)")
    return "spconv" if name == "spconv" and spconv_available() else "torch"


_SPCONV_KEYS = itertools.count()


class _SparseConvBase(nn.Module):
    """Shared weights/bias and the spconv bridge (untested: spconv is not installed here)."""

    subm = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 backend: str | None = None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = _triple(kernel_size), _triple(stride), _triple(padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.backend = backend
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # as torch.nn.Conv3d

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")

    def _kio_weight(self) -> torch.Tensor:
        """``(K, C_in, C_out)`` with taps in (kz, ky, kx) row-major order."""
        return self.weight.permute(2, 3, 4, 1, 0).reshape(-1, self.in_channels, self.out_channels)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def _spconv_forward(self, x: SparseTensor) -> SparseTensor:  # pragma: no cover - needs spconv
        import spconv.pytorch as sp
        st = x.cache.get("spconv")
        if st is None:
            st = sp.SparseConvTensor(x.features, x.coords.int(), list(x.spatial_shape), x.batch_size)
        else:
            st = st.replace_feature(x.features)
        mod = self.__dict__.get("_sp")
        if mod is None:
            cls = sp.SubMConv3d if self.subm else sp.SparseConv3d
            kw = {} if self.subm else {"stride": self.stride}
            mod = cls(self.in_channels, self.out_channels, self.kernel_size, padding=self.padding, bias=False,
                      **kw).to(x.features.device)
            self.__dict__["_sp_perm"] = _spconv_weight_permutation(tuple(mod.weight.shape), self)
            del mod.weight
            self.__dict__["_sp"] = mod
        mod.weight = self.weight.permute(*self.__dict__["_sp_perm"]).contiguous()
        if self.subm:  # spconv caches subm pairs by key: one key per set of sites (shared via ``cache``)
            mod.indice_key = f"subm{self.kernel_size}-{x.cache.setdefault('spconv_key', next(_SPCONV_KEYS))}"
        out = mod(st)
        feats = self._finish(out.features)
        if self.subm:
            return SparseTensor(feats, x.coords, x.spatial_shape, x.batch_size, {**x.cache, "spconv": out})
        return SparseTensor(feats, out.indices.long(), tuple(out.spatial_shape), x.batch_size, {"spconv": out})


def _spconv_weight_permutation(shape: tuple, conv: _SparseConvBase) -> tuple[int, ...]:  # pragma: no cover
    """Permutation of our ``(out, in, kz, ky, kx)`` weight into spconv's layout, read off its weight shape.

    spconv ≥ 2.2 stores ``(out, kz, ky, kx, in)``; older 2.x ``(kz, ky, kx, out, in)`` or, with
    ``FILTER_HWIO``, ``(kz, ky, kx, in, out)``.
    """
    o, i, k = conv.out_channels, conv.in_channels, conv.kernel_size
    if shape == (o, *k, i):
        return (0, 2, 3, 4, 1)
    hwio = False
    try:
        from spconv.constants import FILTER_HWIO as hwio  # noqa: N811
    except Exception:
        pass
    if shape == (*k, i, o) and (hwio or i != o):
        return (2, 3, 4, 1, 0)
    if shape == (*k, o, i):
        return (2, 3, 4, 0, 1)
    raise RuntimeError(f"unknown spconv weight layout {shape} for {conv}")


class SubMConv3d(_SparseConvBase):
    """Submanifold sparse convolution (output sites = input sites); dense-kernel-shaped weight."""

    subm = True

    def __init__(self, in_channels, out_channels, kernel_size=3, bias=False, backend: str | None = None):
        k = _triple(kernel_size)
        super().__init__(in_channels, out_channels, k, 1, tuple(a // 2 for a in k), bias, backend)
        if any(a % 2 == 0 for a in k):
            raise ValueError(f"submanifold convolution needs odd kernel sizes, got {k}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if resolve_backend(self.backend) == "spconv":  # pragma: no cover - needs spconv
            return self._spconv_forward(x)
        key = ("subm", self.kernel_size)
        rb = x.cache.get(key)
        if rb is None:
            rb = x.cache[key] = submanifold_rulebook(x.coords, x.spatial_shape, self.kernel_size, x.batch_size)
        out = _RulebookConv.apply(x.features, self._kio_weight(), rb, _compute_dtype(x.features))
        return x.replace(self._finish(out))


class SparseConv3d(_SparseConvBase):
    """Regular (strided) sparse convolution: output sites = strided receptive fields hit by input sites."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if resolve_backend(self.backend) == "spconv":  # pragma: no cover - needs spconv
            return self._spconv_forward(x)
        key = ("conv", self.kernel_size, self.stride, self.padding)
        hit = x.cache.get(key)
        if hit is None:
            hit = x.cache[key] = strided_rulebook(x.coords, x.spatial_shape, self.kernel_size, self.stride,
                                                  self.padding)
        coords, shape, rb = hit
        out = _RulebookConv.apply(x.features, self._kio_weight(), rb, _compute_dtype(x.features))
        return SparseTensor(self._finish(out), coords, shape, x.batch_size)


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active sites' features (OpenPCDet's ``eps=1e-3, momentum=0.01`` by default).

    With fewer than two sites in training mode (batch statistics undefined) it normalises with
    the running statistics instead of failing; parameters stay in the graph (DDP-safe).
    """

    def __init__(self, num_features, eps=1e-3, momentum=0.01):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        f = x.features
        if self.training and f.shape[0] < 2:
            f = nn.functional.batch_norm(f, self.running_mean, self.running_var, self.weight, self.bias,
                                         False, 0.0, self.eps)
            return x.replace(f)
        return x.replace(super().forward(f))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.features))


class SparseSequential(nn.Sequential):
    """``nn.Sequential`` whose members map a :class:`SparseTensor` to a :class:`SparseTensor`."""
