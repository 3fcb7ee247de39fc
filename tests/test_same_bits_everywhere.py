"""The same seed gives the same bits on every processor.

Two promises, end to end (initialisation, shuffling, forward, backward, the
optimisers, the losses):

- On one machine, every variant of the vector kernels gives the same bits for
  any network: a product takes the same route (small-product kernel or BLAS)
  whichever variant is in use, and the variants agree to the bit.
- On every processor cmlp is built for, a network whose every product is below
  the BLAS threshold gives the bits recorded below. .ci/run checks this under
  emulated processors (x86-64 with AVX2 only, with SSE2 only, and aarch64).
  Larger products go to the BLAS SciPy ships, whose kernels differ between
  processors: there each product is within rounding of the exact one
  (tests/test_products.py), but the bits may differ.

The recorded digests are also the promise across versions: a release that
changes them is a new major version (fit's docstring says so).

The data are small multiples of 1/8 (exact in both dtypes) so that nothing but
cmlp's own arithmetic enters the digest.
"""
import hashlib
import os

import numpy as np
import pytest

import cmlp
from cmlp import _kernels

# These tests fit sigmoid outputs to targets in [-1, 1] on purpose (the bits are
# the point, not the fit): fit's warning about unreachable targets is expected.
pytestmark = pytest.mark.filterwarnings("ignore:targets run from:UserWarning")

VARIANTS = _kernels.vector_variants()


def exact_data(n, width, dtype, offset=0):
    values = ((np.arange(n * width) * 7 + offset) % 17 - 8) / 8
    return values.reshape(n, width).astype(dtype)


def one_hot(n, classes, dtype):
    return np.eye(classes, dtype=dtype)[np.arange(n) % classes]


# (name, layer sizes, activation, loss, batch, fit options). Every product of
# the first four has fewer than 2048 multiply-adds: they never meet BLAS.
RUNS = [
    ("notebook", [2, 1, 1], "sigmoid", "mse", 1, dict(optimizer="sgd")),
    ("softmax", [4, 8, 3], ["tanh", "softmax"], "cross_entropy", 16,
     dict(optimizer="sgd", momentum=0.9, nesterov=True)),
    ("relu-adam", [3, 16, 16, 1], ["relu", "relu", "identity"], "mse", 7,
     dict(optimizer="adam", weight_decay=1e-3)),
    ("bce", [5, 12, 1], "sigmoid", "bce", 8, dict(optimizer="sgd", momentum=0.5)),
]
BLAS_RUN = ("blas", [64, 48, 10], ["relu", "softmax"], "cross_entropy", 32,
            dict(optimizer="adam"))


def train(sizes, activation, loss, batch, options, dtype, n=40):
    net = cmlp.MLP(sizes, activation=activation, dtype=dtype, seed=11)
    X = exact_data(n, sizes[0], dtype)
    if loss == "cross_entropy":
        Y = one_hot(n, sizes[-1], dtype)
    elif loss == "bce":
        Y = (exact_data(n, sizes[-1], dtype, offset=3) > 0).astype(dtype)
    else:
        Y = exact_data(n, sizes[-1], dtype, offset=5) / 2
    lr = 0.01 if options["optimizer"] == "adam" else 0.1
    history = net.fit(X, Y, epochs=3, batch_size=batch, lr=lr, loss=loss, seed=5, **options)
    return [net.params.copy(), np.asarray(history.loss, np.float64),
            net.predict(X[::-1][:batch]).copy()]


def digest(results):
    h = hashlib.sha256()
    for array in results:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def digests(dtype):
    return {name: digest(train(sizes, activation, loss, batch, options, dtype))
            for name, sizes, activation, loss, batch, options in RUNS}


# Recorded on x86-64 (AVX-512) and checked under emulation on the others. A
# change to the maths changes them: record the new ones only when the change
# is meant to change the numbers, and say so in the changelog.
RECORDED = {
    np.float64: {"notebook": "16ae48f7b2b67c2f", "softmax": "bf7102c1ec36a33f",
                 "relu-adam": "07ca2fd145e84949", "bce": "ad4711e10997ab55"},
    np.float32: {"notebook": "e1f13f7270568a8d", "softmax": "5d465bfa3fb6a317",
                 "relu-adam": "c8f95ace83c89c7c", "bce": "160a5ed96e389d00"},
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_small_networks_give_the_recorded_bits_on_this_processor(dtype):
    assert digests(dtype) == RECORDED[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_the_recorded_runs_never_meet_blas(dtype):
    previous = _kernels._set_blas_min_work(2**62)
    try:
        assert digests(dtype) == RECORDED[dtype]
    finally:
        _kernels._set_blas_min_work(previous)


@pytest.mark.skipif(len(VARIANTS) < 2, reason="this processor runs one variant only")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("run", RUNS + [BLAS_RUN], ids=lambda run: run[0])
def test_fit_gives_the_same_bits_under_every_variant(dtype, run):
    _, sizes, activation, loss, batch, options = run
    previous = _kernels.vector_variant()
    try:
        results = {}
        for variant in VARIANTS:
            _kernels._use_vector_variant(variant)
            results[variant] = train(sizes, activation, loss, batch, options, dtype)
    finally:
        _kernels._use_vector_variant(previous)
    for variant in VARIANTS[1:]:
        for got, want in zip(results[variant], results[VARIANTS[0]]):
            np.testing.assert_array_equal(got, want, err_msg=variant)


def test_the_variant_import_picked_is_the_one_expected():
    """.ci/run names, for each emulated processor, the variant import must pick."""
    expected = os.environ.get("CMLP_EXPECT_VARIANT")
    if not expected:
        pytest.skip("CMLP_EXPECT_VARIANT is not set (.ci/run sets it under emulation)")
    assert _kernels.vector_variant() == expected, cmlp.show_config(mode="dicts")
