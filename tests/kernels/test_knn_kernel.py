"""The native max-norm k-NN kernel (``_dispatch.knn_maxnorm``, backend ``cpp``) against the torch reference."""
import pytest
import torch

from emergence_fast import _dispatch, backends
from emergence_fast.estimators import knn

pytestmark = pytest.mark.skipif(not backends()["cpp"].available, reason="emergence_fast._C is not built")

SHAPES = [  # (batch dims, N, dx, dy): N a multiple of no block size
    ((), 37, 1, 1),
    ((3,), 157, 2, 3),
    ((2, 2), 101, 4, 1),
    ((1,), 257, 1, 7),
]


def _sample(lead, n, d, dtype, generator):
    # Continuous Gaussian draws: no ties among distances, so the k-NN sets are unique.
    return torch.randn(*lead, n, d, generator=generator, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("lead,n,dx,dy", SHAPES)
def test_ksg_counts_match_torch_exactly(lead, n, dx, dy, k, dtype, generator):
    z = _sample(lead, n, dx + dy, dtype, generator)
    z[..., dx:] += 0.5 * z[..., :1]  # some dependence between x and y
    for mode in (1, 2):
        got = _dispatch.knn_maxnorm(z, dx, k, mode, backend="cpp")
        want = _dispatch.knn_maxnorm(z, dx, k, mode, backend="torch")
        assert got[0].dtype == dtype and got[1].dtype == got[2].dtype == torch.int64
        assert got[0].shape == got[1].shape == got[2].shape == (*lead, n)
        for g, w in zip(got, want):
            assert torch.equal(g, w), mode


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("lead,n,d", [((), 37, 1), ((3,), 157, 5), ((2, 2), 101, 3)])
def test_radii_match_torch_exactly(lead, n, d, k, dtype, generator):
    z = _sample(lead, n, d, dtype, generator)
    eps, n_x, n_y = _dispatch.knn_maxnorm(z, d, k, 0, backend="cpp")
    assert n_x is None and n_y is None
    assert torch.equal(eps, knn.knn_radii(z.reshape(-1, n, d), k, metric="max").reshape(*lead, n))


def test_non_contiguous_input(generator):
    base = torch.randn(90, 2, 6, generator=generator, dtype=torch.float64)
    z = base.transpose(0, 1)  # [2, 90, 6] strided view
    assert not z.is_contiguous()
    for g, w in zip(_dispatch.knn_maxnorm(z, 2, 3, 1, backend="cpp"), _dispatch.knn_maxnorm(z, 2, 3, 1, backend="torch")):
        assert torch.equal(g, w)


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("lead,n,dx,dy,k", [((), 200, 1, 1, 3), ((2, 3), 123, 2, 3, 1), ((4,), 311, 3, 2, 7)])
def test_mutual_information_cpp_equals_torch(lead, n, dx, dy, k, variant, generator):
    x = torch.randn(*lead, n, dx, generator=generator, dtype=torch.float64)
    y = x[..., :1] ** 2 + torch.randn(*lead, n, dy, generator=generator, dtype=torch.float64)
    got = knn.mutual_information(x, y, k=k, variant=variant, backend="cpp")
    want = knn.mutual_information(x, y, k=k, variant=variant, backend="torch")
    assert got.shape == lead
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("lead,n,d,k", [((), 200, 1, 3), ((2, 3), 123, 4, 1), ((4,), 311, 2, 7)])
def test_entropy_max_norm_cpp_equals_torch(lead, n, d, k, generator):
    x = torch.randn(*lead, n, d, generator=generator, dtype=torch.float64)
    got = knn.entropy(x, k=k, metric="max", backend="cpp")
    torch.testing.assert_close(got, knn.entropy(x, k=k, metric="max", backend="torch"), rtol=0, atol=1e-12)


def test_duplicates_still_raise_on_cpp():
    x = torch.zeros(50, 1, dtype=torch.float64)
    x[:25] = 1.0
    y = torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="duplicate"):
        knn.mutual_information(x, y, backend="cpp")
    with pytest.raises(ValueError, match="duplicate"):
        knn.entropy(x, backend="cpp")


def test_argument_errors():
    from emergence_fast import _C

    z = torch.randn(1, 10, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="dx"):
        _C.knn_maxnorm_cpu(z, 3, 2, 1)  # KSG needs a y part
    with pytest.raises(RuntimeError, match="dx"):
        _C.knn_maxnorm_cpu(z, 2, 2, 0)  # radii measure every column
    with pytest.raises(RuntimeError, match="k"):
        _C.knn_maxnorm_cpu(z, 2, 10, 1)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        _C.knn_maxnorm_cpu(z.half(), 2, 2, 1)


def test_cpp_backend_takes_the_native_path(monkeypatch, generator):
    """backend="cpp" must not fall through to the torch search (it would still give equal numbers)."""
    def boom(*args, **kwargs):
        raise AssertionError("torch k-NN path used under backend='cpp'")

    x = torch.randn(2, 60, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 60, 1, generator=generator, dtype=torch.float64)
    monkeypatch.setattr(knn, "_ksg_counts", boom)
    monkeypatch.setattr(knn, "knn_radii", boom)
    for variant in (1, 2):
        knn.mutual_information(x, y, variant=variant, backend="cpp")
    knn.entropy(x, metric="max", backend="cpp")
