"""Numerics under stress: extreme pre-activations, saturated units, NaN.

Every activation and loss stays finite and correct for pre-activations far
outside the range where a naive formula overflows (|z| up to 1e30), in both
dtypes; the gradients of saturated units are exactly zero or tiny, never NaN;
NaN in the input or the targets comes out as NaN, never as a plausible number.
The references are closed forms in float64 and, where it is installed,
PyTorch in float64 (its own float32 sigmoid is 1/(1+exp(-z)), which flushes to
0 below z = -88 where cmlp keeps the subnormal value).
"""
import math
import warnings

import numpy as np
import pytest

from scipy.special import expit

import cmlp

try:
    import torch
except ImportError:  # the closed-form checks still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

EXTREME_Z = [-1e30, -1e4, -1000.0, -745.2, -710.0, -104.0, -88.8, -40.0, -17.0, -1e-30, 0.0,
             5e-324, 1e-40, 17.0, 40.0, 88.8, 104.0, 710.0, 1000.0, 1e4, 1e30]
TINY = {np.float64: 1e-300, np.float32: 1e-37}


def eps(dtype):
    return float(np.finfo(dtype).eps)


def single_unit(activation, dtype, z):
    """A 1-1 network whose pre-activation is exactly z (weight 1, bias 0, input z)."""
    net = cmlp.MLP([1, 1], activation=activation, dtype=dtype)
    net.weights[0][:] = 1.0
    return net, np.array([[z]], dtype=dtype)


def exact_sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@pytest.mark.parametrize("z", EXTREME_Z)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturating_activations_at_extreme_z(activation, dtype, z):
    net, X = single_unit(activation, dtype, z)
    z_net = float(X[0, 0])  # z as the network's dtype holds it
    expected = exact_sigmoid(z_net) if activation == "sigmoid" else math.tanh(z_net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = float(net.forward(X)[0, 0])
        net.backward(np.array([[0.25]]), loss="mse")
    assert a == pytest.approx(float(dtype(expected)), rel=8 * eps(dtype), abs=TINY[dtype])
    # The gradient through a saturated unit is f'(a) = a(1 - a) or 1 - a^2
    # computed from a: exactly 0 once a rounds to 0, 1 or -1, tiny before.
    assert np.isfinite(net.grads).all()
    bias_grad = float(net.bias_grads[0][0])
    slope = a * (1 - a) if activation == "sigmoid" else 1 - a * a
    assert abs(bias_grad) <= 2 * abs(a - 0.25) * slope * (1 + 1e-5) + TINY[dtype]
    if abs(z_net) >= 1000:
        assert bias_grad == 0.0


@pytest.mark.parametrize("position", [0, 7, 15, 16, 31, 32, 39])
@pytest.mark.parametrize("z", [1e30, 1000.0, 710.0, 104.0, -88.8, -104.0, -745.2, -1e30, np.nan])
def test_one_extreme_entry_in_a_wide_sigmoid_layer(dtype, z, position):
    # A layer 40 wide puts entries both in the vector lanes of the bias pass
    # (32 in float32, 40 in float64) and after them. One entry beyond the
    # vector sigmoid's range, or a NaN, wherever it sits, sends the whole
    # block down the element-by-element route: it gets the closed form, and
    # every other entry the same bits as when the block was in range.
    ordinary = np.linspace(-30.0, 30.0, 40)
    net = cmlp.MLP([1, 40], activation="sigmoid", dtype=dtype)
    X = np.ones((3, 1), dtype=dtype)
    net.weights[0][:, 0] = ordinary  # Z = W x + 0: each row is the weights
    in_range = net.forward(X).copy()
    net.weights[0][position, 0] = z
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = net.forward(X)
    others = np.arange(40) != position
    np.testing.assert_array_equal(out[:, others], in_range[:, others])
    z_net = float(dtype(z))
    if math.isnan(z_net):
        assert np.isnan(out[:, position]).all()
    else:
        expected = float(dtype(exact_sigmoid(z_net)))
        np.testing.assert_allclose(out[:, position], expected, rtol=8 * eps(dtype),
                                   atol=TINY[dtype])


@pytest.mark.parametrize("z", [1e30, 1e4, 710.0, 88.8, 17.0, 0.0])
def test_saturated_hidden_units_pass_no_nan_backwards(dtype, z):
    # A hidden layer pinned at 0/1 (sigmoid), +-1 (tanh) or 0 (relu): the
    # deltas below it are exactly 0, the gradients finite.
    for hidden in ("sigmoid", "tanh", "relu"):
        net = cmlp.MLP([2, 3, 2], activation=[hidden, "softmax"], dtype=dtype, seed=0)
        net.weights[0][:] = [[1, 1], [-1, -1], [1, -1]]
        X = np.array([[z, z], [-z, -z]], dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            net.forward(X)
            loss = net.backward([0, 1], loss="cross_entropy")
        assert math.isfinite(loss)
        assert np.isfinite(net.grads).all(), hidden
        if z >= 1e4 and hidden != "relu":
            np.testing.assert_array_equal(net.deltas[0][:, :2], 0.0)


@pytest.mark.parametrize("scale", [1.0, 30.0, 100.0, 1e3, 1e4, 1e30])
def test_softmax_cross_entropy_at_extreme_logits(dtype, scale):
    net = cmlp.MLP([1, 4], activation="softmax", dtype=dtype)
    net.weights[0][:] = [[scale], [0.0], [-scale], [scale * 0.5]]
    X = np.ones((1, 1), dtype=dtype)
    logits = net.weights[0][:, 0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = net.forward(X)[0].astype(np.float64)
        losses = [net.backward(np.array([c]), loss="cross_entropy") for c in range(4)]
        grads = net.bias_grads[0].copy()
    top = logits.max()
    log_p = logits - top - math.log(np.exp(logits - top).sum())
    np.testing.assert_allclose(p, np.exp(log_p), rtol=8 * eps(dtype), atol=TINY[dtype])
    # Even a loss of 3e-7 next to logits of 30 keeps its relative precision:
    # log-sum-exp is taken relative to the largest logit.
    np.testing.assert_allclose(losses, -log_p, rtol=8 * eps(dtype), atol=TINY[dtype])
    expected = np.exp(log_p)
    expected[3] -= 1  # the last backward was for class 3
    np.testing.assert_allclose(grads, expected, rtol=8 * eps(dtype), atol=TINY[dtype])
    assert np.isfinite(losses).all() and np.isfinite(grads).all()


@pytest.mark.parametrize("z", EXTREME_Z)
@pytest.mark.parametrize("y", [0.0, 1.0, 0.5])
def test_bce_at_extreme_z(dtype, z, y):
    net, X = single_unit("sigmoid", dtype, z)
    z_net = float(X[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = float(net.forward(X)[0, 0])
        loss = net.backward(np.array([[y]]), loss="bce")
    # torch.nn.BCELoss: each log clamped at -100, of the sigmoid cmlp computed.
    log_a = max(math.log(a), -100) if a > 0 else -100
    log_1ma = max(math.log1p(-a), -100) if a < 1 else -100
    assert loss == pytest.approx(-(y * log_a + (1 - y) * log_1ma), rel=1e-12, abs=1e-12)
    assert 0 <= loss <= 100 + 1e-9
    # The delta is a - y straight, not through a(1 - a): exact when saturated.
    assert float(net.bias_grads[0][0]) == pytest.approx(exact_sigmoid(z_net) - y, abs=1e-6)


@needs_torch
@pytest.mark.parametrize("z", [-1e4, -710.0, -88.8, -17.0, 0.0, 17.0, 88.8, 710.0, 1e4])
def test_against_pytorch_at_extreme_z(dtype, z):
    tdtype = torch.float64  # PyTorch's float32 sigmoid flushes to 0 early: compare in float64
    zt = torch.tensor([[float(dtype(z))]], dtype=tdtype, requires_grad=True)
    for activation, function in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        net, X = single_unit(activation, dtype, z)
        a = net.forward(X)
        np.testing.assert_allclose(a, function(zt).detach().numpy(),
                                   rtol=8 * eps(dtype), atol=TINY[dtype])
    # bce: the loss is BCELoss's; the gradient is BCEWithLogitsLoss's (exact),
    # where BCELoss's own backward divides by max(a(1 - a), 1e-12) and loses it.
    net, X = single_unit("sigmoid", dtype, z)
    net.forward(X)
    loss = net.backward(np.array([[1.0]]), loss="bce")
    expected = torch.nn.BCELoss()(torch.sigmoid(zt), torch.ones(1, 1, dtype=tdtype))
    assert loss == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)
    torch.nn.BCEWithLogitsLoss()(zt, torch.ones(1, 1, dtype=tdtype)).backward()
    assert float(net.bias_grads[0][0]) == pytest.approx(zt.grad.item(), rel=1e-6, abs=eps(dtype))


@needs_torch
@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4, 1e30])
def test_cross_entropy_against_pytorch_at_extreme_logits(dtype, scale):
    rng = np.random.default_rng(0)
    net = cmlp.MLP([3, 5], activation="softmax", dtype=dtype, seed=0)
    net.weights[0][:] *= scale
    X = rng.normal(size=(6, 3)).astype(dtype)
    labels = rng.integers(0, 5, size=6)
    net.forward(X)
    loss = net.backward(labels, loss="cross_entropy")
    W = torch.tensor(net.weights[0].astype(np.float64), requires_grad=True)
    b = torch.tensor(net.biases[0].astype(np.float64), requires_grad=True)
    expected = torch.nn.functional.cross_entropy(torch.tensor(X.astype(np.float64)) @ W.T + b,
                                                 torch.tensor(labels))
    expected.backward()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert loss == pytest.approx(expected.item(), rel=tol * 10)
    scale_g = float(W.grad.abs().max())
    np.testing.assert_allclose(net.weight_grads[0], W.grad.numpy(), rtol=tol * 10,
                               atol=tol * 10 * max(scale_g, 1))
    assert np.isfinite(net.grads).all()


# -- NaN ---------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity", "softmax"])
def test_nan_input_propagates_to_its_own_rows_only(dtype, activation):
    net = cmlp.MLP([3, 4, 2], activation=activation, dtype=dtype, seed=0)
    X = np.array([[np.nan, 0.5, 1.0], [0.0, 1.0, 2.0], [1.0, np.nan, np.nan]], dtype=dtype)
    out = net.predict(X)
    assert np.isnan(out[[0, 2]]).all() and np.isfinite(out[1]).all()
    np.testing.assert_array_equal(out[1], net.predict(X[1]))


@pytest.mark.parametrize("loss,activation", [("mse", "identity"), ("half_sse", "tanh"),
                                             ("bce", "sigmoid"), ("cross_entropy", "softmax")])
def test_nan_gives_a_nan_loss_never_a_plausible_number(dtype, loss, activation):
    # bce clamps its logs at -100: before the fix a NaN output came out as 100.
    net = cmlp.MLP([2, 3], activation=activation, dtype=dtype, seed=0)
    Y = np.array([[0.0, 1.0, 0.0]])
    net.forward(np.array([[np.nan, 1.0]], dtype=dtype))
    assert math.isnan(net.backward(Y, loss=loss))
    if loss != "cross_entropy":  # a NaN target (a one-hot row has none)
        net.forward(np.ones((1, 2), dtype=dtype))
        assert math.isnan(net.backward(np.array([[0.0, np.nan, 0.0]]), loss=loss))


def test_infinite_input_saturates_like_the_closed_form(dtype):
    net = cmlp.MLP([1, 1], activation="sigmoid", dtype=dtype)
    net.weights[0][:] = 1.0
    out = net.predict(np.array([[np.inf], [-np.inf]], dtype=dtype))
    np.testing.assert_array_equal(out, [[1.0], [0.0]])
    tanh = cmlp.MLP([1, 1], activation="tanh", dtype=dtype)
    tanh.weights[0][:] = 1.0
    np.testing.assert_array_equal(tanh.predict(np.array([[np.inf], [-np.inf]], dtype=dtype)),
                                  [[1.0], [-1.0]])


@pytest.mark.parametrize("where,value,message", [
    ("X", np.nan, "X contains NaN"), ("X", np.inf, "X contains infinity"),
    ("Y", np.nan, "Y contains NaN"), ("X_val", np.nan, "X_val contains NaN"),
    ("Y_val", -np.inf, "Y_val contains infinity")])
def test_fit_refuses_nan_and_inf_up_front(dtype, where, value, message):
    # forward propagates NaN as NumPy does; fit, like scikit-learn, refuses it
    # before the first step, and the model is left as it was.
    rng = np.random.default_rng(0)
    data = {"X": rng.normal(size=(8, 3)), "Y": rng.normal(size=(8, 2)),
            "X_val": rng.normal(size=(4, 3)), "Y_val": rng.normal(size=(4, 2))}
    data[where][1, 1] = value
    net = cmlp.MLP([3, 4, 2], activation=["tanh", "identity"], dtype=dtype, seed=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match=message):
        net.fit(data["X"], data["Y"], epochs=2, batch_size=4, lr=0.1,
                validation_data=(data["X_val"], data["Y_val"]))
    np.testing.assert_array_equal(net.params, before)


def test_nan_input_propagates_like_numpy():
    net = cmlp.MLP([3, 4, 2], seed=0)
    X = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    out = net.predict(X)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


@pytest.mark.parametrize("z", [1e4, -1e4, 1e3, -1e3, 88.8, -88.8, 30.0, -30.0, 710.0, -710.0])
def test_sigmoid_is_stable_for_extreme_inputs(dtype, z):
    net = cmlp.MLP([1, 1], dtype=dtype)
    net.weights[0][:] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = float(net.forward(np.array([z], dtype=dtype))[0])
        assert a == pytest.approx(float(dtype(expit(z))), rel=1e-6, abs=1e-44)
        net.backward(np.array([0.5]), loss="mse")
    assert np.isfinite(net.grads).all()
    bce = cmlp.MLP([1, 1], dtype=dtype)
    bce.weights[0][:] = 1.0
    a = float(bce.forward(np.array([z], dtype=dtype))[0])
    loss = bce.backward(np.array([0.0 if z > 0 else 1.0]), loss="bce")
    # -log(1 - sigmoid(z)) = z for large z, but torch.nn.BCELoss clamps each
    # log at -100, and at 100 once a rounds to exactly 1 (or 0).
    assert loss == pytest.approx(100.0 if a in (0.0, 1.0) else min(abs(z), 100.0), rel=1e-3)
    assert np.isfinite(bce.grads).all()


def test_softmax_cross_entropy_is_stable_for_extreme_logits(dtype):
    net = cmlp.MLP([1, 3], activation="softmax", dtype=dtype)
    net.weights[0][:] = [[1000.0], [0.0], [-1000.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = net.forward(np.ones(1, dtype=dtype))
        np.testing.assert_allclose(p, [1.0, 0.0, 0.0], atol=1e-30)
        loss = net.backward(2, loss="cross_entropy")
    assert loss == pytest.approx(2000.0, rel=1e-6)
    np.testing.assert_allclose(net.bias_grads[0], [1.0, 0.0, -1.0], atol=1e-30)
