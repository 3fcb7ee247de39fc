"""Gradients against central finite differences and an independent NumPy backprop."""
import numpy as np
import pytest

import cmlp
from reference import gradients

HIDDEN = ["sigmoid", "tanh", "relu", "identity", "softmax"]
# Each loss with the output activations it is defined for.
LOSS_OUTPUTS = {
    "mse": ["sigmoid", "tanh", "relu", "identity", "softmax"],
    "half_sse": ["sigmoid", "tanh", "relu", "identity", "softmax"],
    "bce": ["sigmoid"],
    "cross_entropy": ["softmax"],
}
CASES = [(loss, out) for loss, outs in LOSS_OUTPUTS.items() for out in outs]


def random_problem(seed, loss, output, max_width=40):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    sizes = [int(s) for s in rng.integers(1, max_width + 1, size=depth + 1)]
    if output in ("softmax",) or loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
    activations = [str(a) for a in rng.choice(HIDDEN, size=depth - 1)] + [output]
    net = cmlp.MLP(sizes, activation=activations, seed=seed)
    # Biases away from zero, so relu units are not all on a kink.
    for b in net.biases:
        b[:] = rng.uniform(-0.5, 0.5, size=b.shape)
    n = int(rng.integers(1, 34))
    X = rng.normal(size=(n, sizes[0]))
    if loss in ("bce",):
        Y = rng.uniform(size=(n, sizes[-1]))
    elif loss == "cross_entropy":
        Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=n)]
    else:
        Y = rng.normal(size=(n, sizes[-1]))
    return net, X, Y


def loss_at(net, X, Y, loss):
    net.forward(X)
    return net.backward(Y, loss=loss)


@pytest.mark.parametrize("loss,output", CASES)
@pytest.mark.parametrize("seed", range(6))
def test_finite_differences(loss, output, seed):
    net, X, Y = random_problem(seed, loss, output)
    loss_at(net, X, Y, loss)
    analytic = net.grads.copy()
    params = net.params
    rng = np.random.default_rng(seed)
    # Check a random subset of coordinates: every one on small nets.
    index = rng.permutation(params.size)[:60]
    eps = 1e-5
    numeric = np.empty(index.size)
    for i, p in enumerate(index):
        saved = params[p]
        params[p] = saved + eps
        up = loss_at(net, X, Y, loss)
        params[p] = saved - eps
        down = loss_at(net, X, Y, loss)
        params[p] = saved
        numeric[i] = (up - down) / (2 * eps)
    # Central differences err by O(eps**2) and by rounding, O(|loss| 1e-16 / eps).
    np.testing.assert_allclose(analytic[index], numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss,output", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_against_numpy_reference(loss, output, seed):
    net, X, Y = random_problem(100 + seed, loss, output)
    net.forward(X)
    value = net.backward(Y, loss=loss)
    ref_value, ref_wg, ref_bg, ref_deltas = gradients(
        [W.copy() for W in net.weights], [b.copy() for b in net.biases],
        list(net.activation), X, Y, loss)
    assert value == pytest.approx(ref_value, rel=1e-12, abs=1e-14)
    for got, want in zip(net.weight_grads + net.bias_grads, ref_wg + ref_bg):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    # cmlp's deltas are of the batch loss: the per-sample deltas over n.
    for got, want in zip(net.deltas, ref_deltas):
        np.testing.assert_allclose(got, want / X.shape[0], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("loss,output", [("mse", "sigmoid"), ("cross_entropy", "softmax")])
def test_float32_close_to_float64(loss, output):
    net64, X, Y = random_problem(7, loss, output)
    net32 = cmlp.MLP(net64.layer_sizes, activation=net64.activation, dtype=np.float32)
    net32.params[:] = net64.params
    v64 = loss_at(net64, X, Y, loss)
    v32 = loss_at(net32, X, Y, loss)
    assert v32 == pytest.approx(v64, rel=1e-4)
    np.testing.assert_allclose(net32.grads, net64.grads, rtol=1e-3, atol=1e-5)


def test_wide_layers_use_the_same_maths_as_narrow_ones():
    # Wide enough that products go through BLAS; the reference does not care.
    rng = np.random.default_rng(3)
    net = cmlp.MLP([70, 90, 80, 5], activation=["tanh", "relu", "sigmoid"], seed=3)
    X, Y = rng.normal(size=(64, 70)), rng.uniform(size=(64, 5))
    value = loss_at(net, X, Y, "bce")
    ref_value, ref_wg, ref_bg, _ = gradients(
        [W.copy() for W in net.weights], [b.copy() for b in net.biases],
        list(net.activation), X, Y, "bce")
    assert value == pytest.approx(ref_value, rel=1e-12)
    for got, want in zip(net.weight_grads + net.bias_grads, ref_wg + ref_bg):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)
