"""Pure-torch sparse convolution (als_datasets.train.sparse) against dense ``conv3d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from als_datasets.train import sparse
from als_datasets.train.sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseSequential,
    SparseTensor,
    SubMConv3d,
    conv_output_shape,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: faster than two on a shared 2-core machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_sparse(seed: int, shape=(6, 7, 8), batch=2, channels=3, density=0.25):
    """A random sparse tensor (features float64 for exact comparisons) and its dense twin."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand((batch, *shape), generator=g) < density
    coords = occ.nonzero()  # (N, 4) b, z, y, x — sorted
    perm = torch.randperm(len(coords), generator=g)  # the conv must not rely on input order
    coords = coords[perm]
    feats = torch.randn((len(coords), channels), generator=g, dtype=torch.float64)
    x = SparseTensor(feats, coords, shape, batch)
    return x, x.dense()


def _at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, z, y, x = coords.long().unbind(1)
    return dense.permute(0, 2, 3, 4, 1)[b, z, y, x]


@pytest.mark.parametrize("kernel", [1, 3, 5, (3, 1, 1), (1, 3, 3)])
@pytest.mark.parametrize("dense_table", [True, False])
def test_submanifold_equals_dense_conv(kernel, dense_table, monkeypatch):
    monkeypatch.setattr(sparse, "DENSE_TABLE_MAX", 1 << 30 if dense_table else 0)
    x, xd = _random_sparse(1)
    conv = SubMConv3d(3, 4, kernel, bias=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    out = conv(x)
    assert torch.equal(out.coords, x.coords)  # output sites = input sites
    ref = F.conv3d(xd, conv.weight, conv.bias, padding=tuple(k // 2 for k in conv.kernel_size))
    torch.testing.assert_close(out.features, _at(ref, x.coords), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 2, 1), (2, 2, 0), (3, 1, 1), ((3, 1, 1), (2, 1, 1), 0), (3, 2, (0, 1, 1)), (3, 3, 0),
])
def test_strided_equals_dense_conv(kernel, stride, padding):
    x, xd = _random_sparse(2, shape=(8, 9, 10), density=0.15)
    conv = SparseConv3d(3, 5, kernel, stride, padding).double()
    out = conv(x)
    ref = F.conv3d(xd, conv.weight, stride=conv.stride, padding=conv.padding)
    assert out.spatial_shape == tuple(ref.shape[2:]) == conv_output_shape((8, 9, 10), kernel, stride, padding)
    # output sites = exactly the outputs whose receptive field holds an active input
    occ = (xd.abs().sum(1, keepdim=True) > 0).double()
    hit = F.conv3d(occ, torch.ones((1, 1, *conv.kernel_size), dtype=torch.float64), stride=conv.stride,
                   padding=conv.padding)[:, 0] > 0
    assert torch.equal(out.coords, hit.nonzero())  # same set, sorted the same way (b, z, y, x)
    torch.testing.assert_close(out.features, _at(ref, out.coords), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sub_k,down_k,stride,pad", [(3, 3, 2, 1), (5, 2, 2, 0), ((1, 3, 3), (3, 1, 1), (2, 1, 1), 0)])
def test_gradients_agree_with_dense(sub_k, down_k, stride, pad):
    x, _ = _random_sparse(3, density=0.3)
    feats = x.features.clone().requires_grad_(True)
    sub = SubMConv3d(3, 4, sub_k, bias=True).double()
    down = SparseConv3d(4, 2, down_k, stride, pad).double()
    y = down(sub(SparseTensor(feats, x.coords, x.spatial_shape, x.batch_size)))
    g = torch.Generator().manual_seed(9)
    w_out = torch.randn(y.features.shape, generator=g, dtype=torch.float64)
    (y.features * w_out).sum().backward()

    # dense reference with the same weights; the submanifold output is zeroed off the active sites
    feats_d = x.features.clone().requires_grad_(True)
    w1 = sub.weight.detach().clone().requires_grad_(True)
    b1 = sub.bias.detach().clone().requires_grad_(True)
    w2 = down.weight.detach().clone().requires_grad_(True)
    xd = SparseTensor(feats_d, x.coords, x.spatial_shape, x.batch_size).dense()
    active = SparseTensor(torch.ones((len(x.coords), 1), dtype=torch.float64), x.coords, x.spatial_shape,
                          x.batch_size).dense()
    h = F.conv3d(xd, w1, b1, padding=sub.padding) * active
    yd = F.conv3d(h, w2, stride=down.stride, padding=down.padding)
    (_at(yd, y.coords) * w_out).sum().backward()

    torch.testing.assert_close(feats.grad, feats_d.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sub.weight.grad, w1.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sub.bias.grad, b1.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(down.weight.grad, w2.grad, rtol=1e-9, atol=1e-9)


def test_rulebook_is_cached_and_shared():
    x, _ = _random_sparse(4)
    net = SparseSequential(SubMConv3d(3, 4, 3), SparseBatchNorm(4), SubMConv3d(4, 4, 3)).double()
    y = net(x)
    assert y.cache is x.cache and list(x.cache) == [("subm", (3, 3, 3))]


def test_empty_and_single_site_batches():
    conv = SubMConv3d(2, 3, 3)
    bn = SparseBatchNorm(3)
    empty = SparseTensor(torch.zeros((0, 2)), torch.zeros((0, 4), dtype=torch.long), (4, 4, 4), 1)
    assert bn(conv(empty)).features.shape == (0, 3)
    one = SparseTensor(torch.ones((1, 2)), torch.tensor([[0, 1, 2, 3]]), (4, 4, 4), 1)
    out = bn(conv(one))  # training-mode BN with one site: running statistics, no error
    out.features.sum().backward()
    assert conv.weight.grad is not None and bn.weight.grad is not None
    down = SparseConv3d(2, 3, 3, 2, 1)(empty)
    assert down.features.shape == (0, 3) and down.spatial_shape == (2, 2, 2)


def test_autocast_bf16_close_to_fp32():
    x, _ = _random_sparse(5, channels=8)
    x = x.replace(x.features.float())
    conv = SubMConv3d(8, 8, 3)
    ref = conv(x).features
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x).features
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=5e-2, atol=5e-2)


def test_backend_selection(monkeypatch):
    monkeypatch.setenv("ALS_DATASETS_SPARSE_BACKEND", "spconv")
    expected = "spconv" if sparse.spconv_available() else "torch"
    assert sparse.resolve_backend() == expected
    assert sparse.resolve_backend("torch") == "torch"
    with pytest.raises(ValueError):
        sparse.resolve_backend("cuda-magic")
    with pytest.raises(ValueError):
        SubMConv3d(2, 2, 2)
