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
spconv.  How: :mod:`.rulebook` builds the *rulebook* of a convolution (for each kernel tap, the
pairs (input row, output row)) for all taps at once, and applies it with a handful of large ops
per layer (one gather of every pair laid out by tap, one batched matmul, one scatter-add; the
backward the same pairs transposed) — not one gather, matmul and scatter per tap, which made the
step bound by kernel launches.  The per-tap path stays reachable as ``backend="torch-loop"``.
``backend="torch"`` (default) takes the fused path on GPUs.  On the CPU, for float32 without
autocast, it runs the compiled kernel of :mod:`.rulebook_cpu` (one op per direction: every tap's
gather, MKL ``sgemm`` and scatter-add inside one numba call, in cache-sized tiles, one bucket of
output rows per thread), because there the fused torch path materialises every gathered pair
and is memory-bound (BEV-MAE base's largest layer: 0.54 s fused against 0.31 s per tap, forward
+ backward, 2 threads); float64, autocast, or a torch without MKL take the fused path for layers
whose gathered pairs fit in ``FUSED_CPU_BYTES`` (16 MiB) and the per-tap path otherwise.
``backend="torch-fused"`` forces the fused path (as the kernel launches a GPU step makes; the
tests bound its event count too).  No Python loop over points; memory ~ that of the features
(the backward recomputes the gather).
Rulebooks are cached on the tensor and shared by all convolutions with the same sites and
kernel (spconv's ``indice_key``): each spatial level builds its submanifold map once per batch,
used by every residual block of that level, forward and backward.

Mixed precision: under ``torch.autocast`` the matmuls run in the autocast dtype (bf16 on GPU)
and are accumulated in float32; outputs are float32 (float64 inputs stay float64).

Optional backend: with ``backend="spconv"`` (argument) or ``ALS_DATASETS_SPARSE_BACKEND=spconv``
(environment) and ``spconv.pytorch`` importable, the convolutions call spconv with the same
weights (permuted at call time to the layout the installed spconv uses, read off its own weight
shape) and semantics.  spconv is not installed where this was written: that path is **untested**,
and can only be verified on a CUDA machine with spconv (``test_spconv_bridge_equals_the_torch_path_on_cuda``).
"""

from __future__ import annotations

import itertools
import os
import warnings

import torch
from torch import nn

from . import rulebook_cpu
from .rulebook import (
    Rulebook,
    conv_output_shape,
    linear_keys,
    rulebook_conv,
    strided_rulebook,
    submanifold_rulebook,
    triple,
)

__all__ = ["SparseTensor", "SubMConv3d", "SparseConv3d", "SparseBatchNorm", "SparseReLU", "SparseSequential",
           "linear_keys", "submanifold_rulebook", "strided_rulebook", "conv_output_shape", "spconv_available",
           "resolve_backend", "Rulebook"]


def _triple(v) -> tuple[int, int, int]:
    return triple(v)


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


BACKENDS = ("torch", "torch-fused", "torch-loop", "spconv")

#: on the CPU, ``backend="torch"`` runs a layer fused when its gathered pairs take at most this many bytes
FUSED_CPU_BYTES = 16 << 20


def conv_method(backend: str, rb: Rulebook, feats: torch.Tensor, c_out: int,
                weight: torch.Tensor | None = None) -> str:
    """``cpu``, ``fused`` or ``loop`` for a pure-torch backend (see the module doc)."""
    if backend == "torch-loop":
        return "loop"
    if backend == "torch-fused" or feats.device.type != "cpu":
        return "fused"
    if (feats.dtype == torch.float32 and (weight is None or weight.dtype == torch.float32)
            and _compute_dtype(feats) == torch.float32 and rulebook_cpu.available()):
        return "cpu"
    size = rb.pairs() * max(feats.shape[1], c_out) * feats.element_size()
    return "fused" if size <= FUSED_CPU_BYTES else "loop"


def resolve_backend(backend: str | None = None) -> str:
    """``torch`` (default: fused on GPUs, the compiled kernel on the CPU), ``torch-fused``, ``torch-loop``
    (per tap) or ``spconv``: the argument, else ``$ALS_DATASETS_SPARSE_BACKEND``.

    ``spconv`` is used only if importable; otherwise the pure-torch (fused) path runs.
    """
    name = (backend or os.environ.get("ALS_DATASETS_SPARSE_BACKEND", "torch")).lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown sparse backend {name!r} ({', '.join(BACKENDS)})")
    if name == "spconv":
        if not spconv_available():
            return "torch"
        if not _SPCONV_WARNED:
            _SPCONV_WARNED.append(True)
            warnings.warn("the spconv bridge is unverified: it has never been checked against the torch path on a "
                          "CUDA machine (run tests/test_sparse_conv.py there first); results may differ", stacklevel=2)
        return "spconv"
    return name


_SPCONV_WARNED: list = []


_SPCONV_KEYS = itertools.count()


class _SparseConvBase(nn.Module):
    """Shared weights/bias and the spconv bridge (unverified: needs a CUDA machine with spconv)."""

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
        backend = resolve_backend(self.backend)
        if backend == "spconv":  # pragma: no cover - needs spconv
            return self._spconv_forward(x)
        key = ("subm", self.kernel_size)
        rb = x.cache.get(key)
        if rb is None:
            rb = x.cache[key] = submanifold_rulebook(x.coords, x.spatial_shape, self.kernel_size, x.batch_size)
        out = rulebook_conv(x.features, self.weight, rb, _compute_dtype(x.features),
                            conv_method(backend, rb, x.features, self.out_channels, self.weight))
        return x.replace(self._finish(out))


class SparseConv3d(_SparseConvBase):
    """Regular (strided) sparse convolution: output sites = strided receptive fields hit by input sites."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        backend = resolve_backend(self.backend)
        if backend == "spconv":  # pragma: no cover - needs spconv
            return self._spconv_forward(x)
        key = ("conv", self.kernel_size, self.stride, self.padding)
        hit = x.cache.get(key)
        if hit is None:
            hit = x.cache[key] = strided_rulebook(x.coords, x.spatial_shape, self.kernel_size, self.stride,
                                                  self.padding)
        coords, shape, rb = hit
        out = rulebook_conv(x.features, self.weight, rb, _compute_dtype(x.features),
                            conv_method(backend, rb, x.features, self.out_channels, self.weight))
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
