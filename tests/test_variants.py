"""Every variant of the vector kernels gives the same bits.

The element-wise passes and the small-product kernel are compiled once for
each instruction set (SSE2, AVX2 and AVX-512 on x86), and import picks the
widest this processor runs. A variant changes how many entries one
instruction computes, never the operations that compute an entry nor their
order, so the variants agree to the last bit: checked here on every variant
this processor runs, with all products in the small-product kernel (BLAS
rounds its own way; tests/test_same_bits_everywhere.py compares whole fits
with the products on their usual routes).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cmlp
from cmlp import _kernels

VARIANTS = _kernels.vector_variants()

# (layer sizes, activations, batch): narrow and wide layers, batches that fill
# the kernel's blocks and batches that leave rows over, one-row products.
NETWORKS = [
    ([2, 1, 1], "sigmoid", 1),
    ([16, 32, 1], "sigmoid", 1),
    ([16, 32, 1], "sigmoid", 32),
    ([24, 40, 3], ["tanh", "sigmoid"], 13),
    ([7, 33, 17, 5], ["relu", "sigmoid", "identity"], 9),
    ([64, 64, 10], ["relu", "softmax"], 32),
    ([300, 20, 2], "sigmoid", 6),   # K = 300 > 256: the first product goes to BLAS
]


@pytest.fixture
def every_product_in_the_small_kernel():
    previous_variant = _kernels.vector_variant()
    previous = _kernels._set_blas_min_work(2**62)
    yield
    _kernels._use_vector_variant(previous_variant)
    _kernels._set_blas_min_work(previous)


def run(variant, sizes, activation, n, dtype, scale):
    """Forward, backward, three train_steps and a predict under one variant."""
    _kernels._use_vector_variant(variant)
    _kernels._set_blas_min_work(2**62)
    rng = np.random.default_rng(len(sizes) * 100 + n)
    net = cmlp.MLP(sizes, activation=activation, dtype=dtype, seed=4)
    X = (scale * rng.standard_normal((n, sizes[0]))).astype(dtype)
    Y = rng.random((n, sizes[-1])).astype(dtype)
    if activation == ["relu", "softmax"]:
        Y = Y / Y.sum(axis=1, keepdims=True)
    loss = "cross_entropy" if activation == ["relu", "softmax"] else "mse"
    results = [net.forward(X).copy()]
    net.backward(Y, loss=loss)
    results.append(net.grads.copy())
    for _ in range(3):
        results.append(np.float64(net.train_step(X, Y, 0.1, loss=loss)))
    results += [net.params.copy(), net.predict(X[::-1]).copy()]
    return results


@pytest.mark.skipif(len(VARIANTS) < 2, reason="this processor runs one variant only")
@pytest.mark.parametrize("scale", [1.0, 1000.0], ids=["ordinary", "beyond-the-vector-range"])
@pytest.mark.parametrize("sizes, activation, n", NETWORKS)
def test_variants_agree_to_the_bit(every_product_in_the_small_kernel, dtype, sizes,
                                   activation, n, scale):
    # scale 1000 puts pre-activations far beyond the vector sigmoid's range
    # (707 in double, 80 in float): those blocks take the element-by-element
    # route in every variant.
    with np.errstate(over="ignore", invalid="ignore"):
        expected = run(VARIANTS[0], sizes, activation, n, dtype, scale)
        for variant in VARIANTS[1:]:
            for got, want in zip(run(variant, sizes, activation, n, dtype, scale), expected):
                np.testing.assert_array_equal(got, want, err_msg=variant)


def test_the_widest_variant_is_in_use_and_each_can_be_chosen():
    # The widest, unless CMLP_VECTOR_VARIANT chose another at import.
    at_import = os.environ.get("CMLP_VECTOR_VARIANT") or VARIANTS[-1]
    assert _kernels.vector_variant() == at_import
    assert VARIANTS[0] == "baseline"
    previous = _kernels._use_vector_variant(VARIANTS[0])
    try:
        assert _kernels.vector_variant() == "baseline"
        with pytest.raises(ValueError, match="runs the variants"):
            _kernels._use_vector_variant("no-such-variant")
    finally:
        _kernels._use_vector_variant(previous)
    assert _kernels.vector_variant() == at_import


@pytest.mark.spawns_python
def test_the_environment_variable_forces_a_variant_and_refuses_what_cannot_run():
    def import_with(value):
        env = dict(os.environ, CMLP_VECTOR_VARIANT=value)
        return subprocess.run([sys.executable, "-c", "import cmlp._kernels as k; print(k.vector_variant())"],
                              env=env, capture_output=True, text=True)

    for variant in VARIANTS:
        result = import_with(variant)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == variant
    refused = import_with("no-such-variant")
    assert refused.returncode != 0
    assert "CMLP_VECTOR_VARIANT='no-such-variant' cannot be used" in refused.stderr
    assert "this processor runs" in refused.stderr


def test_show_config_reports_the_variant_and_the_blas(capsys):
    config = cmlp.show_config(mode="dicts")
    assert config["cmlp"]["version"] == cmlp.__version__
    assert config["vector kernels"]["in use"] == _kernels.vector_variant()
    assert config["vector kernels"]["processor runs"] == VARIANTS
    assert config["blas"]["through"] == "scipy.linalg.cython_blas"
    assert capsys.readouterr().out == ""
    assert cmlp.show_config() is None
    printed = capsys.readouterr().out
    assert f"in use          {_kernels.vector_variant()}" in printed
    assert "threads" in printed
    with pytest.raises(ValueError, match="mode must be"):
        cmlp.show_config(mode="json")


def test_show_config_works_with_a_scipy_that_only_prints_its_configuration(monkeypatch):
    import scipy

    def show_before_1_11():  # SciPy 1.9 and 1.10 take no mode
        print("blas_opt_info: ...")

    monkeypatch.setattr(scipy, "show_config", show_before_1_11)
    config = cmlp.show_config(mode="dicts")
    assert config["blas"]["built with"] == "unknown: SciPy before 1.11 does not report it"
