"""Bad input gets a clear exception naming what was expected; odd layouts get right answers."""

import numpy as np
import pytest

import cmlp


@pytest.fixture
def net():
    return cmlp.MLP([3, 4, 2], seed=0)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(layer_sizes=[3]), ValueError, "at least two widths"),
    (dict(layer_sizes=[3, 0, 2]), ValueError, "each from 1"),
    (dict(layer_sizes=[3, -1]), ValueError, "each from 1"),
    (dict(layer_sizes=[3, 2.5]), TypeError, "sequence of ints"),
    (dict(layer_sizes="abc"), TypeError, "sequence of ints"),
    (dict(layer_sizes=5), TypeError, "sequence of ints"),
    (dict(layer_sizes=[2, 2], activation="swish"), ValueError, "activation must be one of"),
    (dict(layer_sizes=[2, 2, 2], activation=["relu"]), ValueError, "2 names"),
    (dict(layer_sizes=[2, 2], dtype=np.int64), TypeError, "float32 or float64"),
    (dict(layer_sizes=[2, 2], dtype=np.float16), TypeError, "float32 or float64"),
    (dict(layer_sizes=[2, 2], dtype="bogus"), TypeError, "float32 or float64"),
])
def test_bad_architecture(kwargs, error, message):
    with pytest.raises(error, match=message):
        cmlp.MLP(**kwargs)


@pytest.mark.parametrize("X,error,message", [
    (np.ones(4), ValueError, r"shape \(3,\) or \(n, 3\), got \(4,\)"),
    (np.ones((2, 4)), ValueError, r"shape \(3,\) or \(n, 3\), got \(2, 4\)"),
    (np.ones((2, 3, 1)), ValueError, r"shape \(3,\) or \(n, 3\), got \(2, 3, 1\)"),
    (np.float64(1.0), ValueError, r"got \(\)"),
    (np.ones(3, dtype=complex), TypeError, "real numeric array.*complex128"),
    (np.array([1, "a", None], dtype=object), TypeError, "real numeric.*object"),
    (np.array(["1", "2", "3"]), TypeError, "real numeric.*<U1"),
    ([[1, 2], [3]], TypeError, "real numeric"),
])
def test_bad_inputs_name_what_was_expected(net, X, error, message):
    for call in (net.forward, net.predict, lambda X: net.train_step(X, np.zeros(2), 0.1)):
        with pytest.raises(error, match=message):
            call(X)


def test_bad_targets_name_the_expected_shape(net):
    net.forward(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"Y must have shape \(5, 2\), got \(5, 3\)"):
        net.backward(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"Y must have shape \(5, 2\), got \(2,\)"):
        net.backward(np.ones(2))
    with pytest.raises(TypeError, match="Y must be a real numeric"):
        net.backward(np.ones((5, 2), dtype=complex))
    net.forward(np.ones(3))
    with pytest.raises(ValueError, match=r"Y must have shape \(2,\), got \(3,\)"):
        net.backward(np.ones(3))


def test_class_indices_out_of_range():
    net = cmlp.MLP([2, 3], activation="softmax")
    net.forward(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"class indices in Y must lie in \[0, 3\)"):
        net.backward([0, 3], loss="cross_entropy")


@pytest.mark.parametrize("lr,error", [(-0.1, ValueError), (float("nan"), ValueError),
                                      (float("inf"), ValueError), ("0.1", TypeError),
                                      (None, TypeError), (True, TypeError)])
def test_bad_learning_rate(net, lr, error):
    before = net.params.copy()
    with pytest.raises(error, match="lr must be"):
        net.train_step(np.ones(3), np.ones(2), lr)
    with pytest.raises(error, match="lr must be"):
        net.sgd_step(lr)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("out,error,message", [
    (np.empty((2, 2), dtype=np.float32), ValueError, "dtype float64"),
    (np.empty((3, 2)), ValueError, r"shape \(2, 2\)"),
    (np.empty((2, 4))[:, ::2], ValueError, "C-contiguous"),
    ([[0.0, 0.0], [0.0, 0.0]], TypeError, "numpy array"),
])
def test_bad_out(net, out, error, message):
    with pytest.raises(error, match=message):
        net.forward(np.ones((2, 3)), out=out)


def test_read_only_out_is_refused(net):
    out = np.empty((2, 2))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        net.predict(np.ones((2, 3)), out=out)


def layouts(X):
    """The same values in layouts a kernel must never be handed directly."""
    fortran = np.asfortranarray(X)
    reversed_rows = X[::-1].copy()[::-1]
    stepped = np.repeat(X, 2, axis=1)[:, ::2]
    read_only = X.copy()
    read_only.flags.writeable = False
    swapped = X.astype(X.dtype.newbyteorder())
    unaligned = np.frombuffer(b"\0" + X.astype(np.float64).tobytes(), dtype=np.float64,
                              offset=1).reshape(X.shape)
    return {"fortran": fortran, "negative_strides": reversed_rows, "stepped": stepped,
            "read_only": read_only, "byteswapped": swapped, "unaligned": unaligned,
            "list": X.tolist(), "int": X.round().astype(np.int32), "bool": X > 0,
            "float16": X.astype(np.float16)}


def test_any_layout_gives_the_contiguous_answer(dtype):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    reference = cmlp.MLP([3, 4, 2], dtype=dtype, seed=0)
    for name, variant in layouts(X).items():
        contiguous = np.ascontiguousarray(np.asarray(variant), dtype=dtype)
        expected = reference.predict(contiguous)
        np.testing.assert_array_equal(reference.predict(variant), expected, err_msg=name)
        a = cmlp.MLP([3, 4, 2], dtype=dtype, seed=0)
        b = cmlp.MLP([3, 4, 2], dtype=dtype, seed=0)
        for name_y, variant_y in layouts(Y).items():
            contiguous_y = np.ascontiguousarray(np.asarray(variant_y), dtype=dtype)
            assert a.train_step(variant, variant_y, 0.1) == b.train_step(
                contiguous, contiguous_y, 0.1), (name, name_y)
            np.testing.assert_array_equal(a.params, b.params, err_msg=f"{name} {name_y}")


def test_empty_batch(net):
    assert net.forward(np.empty((0, 3))).shape == (0, 2)
    assert net.predict(np.empty((0, 3))).shape == (0, 2)
    with pytest.raises(ValueError, match="no samples"):
        net.train_step(np.empty((0, 3)), np.empty((0, 2)), 0.1)
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.empty((0, 2)))
