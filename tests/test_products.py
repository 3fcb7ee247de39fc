"""The two routes of every matrix product -- the small-product kernel and BLAS --
against the NumPy reference, on shapes that straddle the kernel's blocks.

A two-layer identity network [K, H, N] on a batch of M samples makes all three
forms of product: forward ``A W^T`` (M x H x K and M x N x H), the weight
gradients ``delta^T A`` (H x K x M and N x H x M) and the hidden delta
``delta W`` (M x H x N). The kernel works on blocks of 4 rows by 8 (float64)
or 16 (float32) columns, turns a one-column product into a one-row one, and
hands any product with K > 256 to BLAS: the sizes below sit on each side of
those edges. The kernel is checked in every variant this processor runs.
"""
import numpy as np
import pytest

import cmlp
from cmlp import _kernels

import reference

EDGE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33]


def shapes(count=40, seed=0):
    rng = np.random.default_rng(seed)
    picked = [(1, 1, 1, 1), (4, 16, 8, 16), (5, 17, 9, 1), (33, 256, 16, 8), (3, 257, 7, 2)]
    while len(picked) < count:
        picked.append(tuple(int(v) for v in rng.choice(EDGE_SIZES, 4)))
    return picked


@pytest.fixture(params=[f"small_kernel:{v}" for v in _kernels.vector_variants()] + ["blas"])
def route(request):
    """Every product through one route: the small-product kernel of one of the
    variants this processor runs (thresholds beyond any product), or BLAS (0)."""
    kernel, _, variant = request.param.partition(":")
    previous_variant = _kernels._use_vector_variant(variant or _kernels.vector_variant())
    limit = 2**62 if kernel == "small_kernel" else 0
    previous = _kernels._set_blas_min_work(limit)
    yield request.param
    _kernels._set_blas_min_work(previous)
    _kernels._use_vector_variant(previous_variant)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("M, K, H, N", shapes())
def test_products_match_the_reference(route, dtype, rtol, M, K, H, N):
    rng = np.random.default_rng(M * 1000003 + K * 1009 + H * 31 + N)
    net = cmlp.MLP([K, H, N], activation="identity", dtype=dtype, seed=1)
    X = rng.standard_normal((M, K)).astype(dtype)
    Y = rng.standard_normal((M, N)).astype(dtype)
    weights = [W.astype(np.float64) for W in net.weights]
    biases = [b.astype(np.float64) for b in net.biases]

    out = net.forward(X).copy()
    net.backward(Y)
    value, weight_grads, bias_grads, _ = reference.gradients(
        weights, biases, ["identity", "identity"], X.astype(np.float64), Y, "mse")
    expected_out = reference.forward(weights, biases, ["identity", "identity"], X)[0][-1]

    def close(actual, expected):
        scale = np.abs(expected).max() + 1
        np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale * max(K, H, M))

    close(out, expected_out)
    for got, want in zip(net.weight_grads, weight_grads):
        close(got, want)
    for got, want in zip(net.bias_grads, bias_grads):
        close(got, want)


@pytest.mark.parametrize("variant", _kernels.vector_variants())
def test_small_kernel_sums_each_entry_in_order(variant):
    """Outside one-row dot products, the kernel adds k = 0, 1, ... in turn:
    rows of a batch give the same bits whichever block they fall in."""
    previous_variant = _kernels._use_vector_variant(variant)
    previous = _kernels._set_blas_min_work(2**62)
    try:
        net = cmlp.MLP([24, 40, 3], dtype=np.float32, seed=2)
        X = np.random.default_rng(3).standard_normal((13, 24)).astype(np.float32)
        together = net.predict(X)
        for i in range(12):  # two rows at least: one row takes the dot-product route
            np.testing.assert_array_equal(net.predict(X[i:i + 5])[0], together[i])
    finally:
        _kernels._set_blas_min_work(previous)
        _kernels._use_vector_variant(previous_variant)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_of_a_layer_large_enough_for_blas_axpy(dtype):
    """A layer of at least 65536 parameters takes its SGD step through BLAS's
    axpy: the same update as p - lr g, to the last bit or one rounding apart,
    and the same in train_step as in backward then sgd_step."""
    net = cmlp.MLP([300, 256, 40], dtype=dtype, seed=3)   # one large layer, one small
    twin = cmlp.MLP([300, 256, 40], dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((8, 300)).astype(dtype)
    Y = rng.random((8, 40)).astype(dtype)
    before = net.params.copy()
    net.forward(X)
    net.backward(Y)
    expected = before - dtype(0.5) * net.grads
    net.sgd_step(0.5)
    assert net.weights[0].size >= 65536
    np.testing.assert_allclose(net.params, expected, rtol=0,
                               atol=2 * np.finfo(dtype).eps * np.abs(before).max())
    twin.train_step(X, Y, 0.5)
    np.testing.assert_array_equal(twin.params, net.params)
