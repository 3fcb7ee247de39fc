"""Sample weights, scikit-learn's weight penalty and full-batch L-BFGS in cmlp.MLP.fit.

References: central finite differences, PyTorch's per-sample losses
(``reduction="none"``) weighted by hand, repeated samples, SciPy's L-BFGS-B
on a NumPy loss, and the unweighted path's own bits.
"""
import numpy as np
import pytest

import cmlp
from test_gradients import CASES, random_problem


def weighted_loss(net, X, Y, w, loss):
    return net._engine.weighted_loss_and_grads(X, Y, w, loss)


@pytest.mark.parametrize("loss,output", CASES)
@pytest.mark.parametrize("seed", range(3))
def test_weighted_gradient_equals_finite_differences(loss, output, seed):
    net, X, Y = random_problem(seed, loss, output, max_width=12)
    w = np.random.default_rng(seed).uniform(0, 3, size=X.shape[0])
    weighted_loss(net, X, Y, w, loss)
    analytic = net.grads.copy()
    params, eps = net.params, 1e-6
    numeric = np.empty(params.size)
    for p in range(params.size):
        saved = params[p]
        params[p] = saved + eps
        up = weighted_loss(net, X, Y, w, loss)
        params[p] = saved - eps
        down = weighted_loss(net, X, Y, w, loss)
        params[p] = saved
        numeric[p] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
def test_weighted_loss_and_gradient_equal_torch_per_sample_losses(loss):
    torch = pytest.importorskip("torch")
    output = {"mse": "tanh", "bce": "sigmoid", "cross_entropy": "softmax"}[loss]
    net, X, Y = random_problem(4, loss, output, max_width=10)
    w = np.random.default_rng(1).uniform(0, 2, size=X.shape[0])
    value = weighted_loss(net, X, Y, w, loss)
    model = cmlp.to_torch(net)
    if output == "softmax":   # CrossEntropyLoss takes the logits
        model = model[:-1]
    out = model(torch.from_numpy(X))
    target = torch.from_numpy(Y)
    per_sample = {
        "mse": lambda: torch.nn.MSELoss(reduction="none")(out, target).mean(dim=1),
        "bce": lambda: torch.nn.BCELoss(reduction="none")(out, target).mean(dim=1),
        "cross_entropy": lambda: torch.nn.CrossEntropyLoss(reduction="none")(out, target),
    }[loss]()
    weights = torch.from_numpy(w)
    reference = (weights * per_sample).sum() / weights.sum()
    reference.backward()
    expected = np.concatenate([np.concatenate([layer.weight.grad.numpy().ravel(),
                                               layer.bias.grad.numpy()])
                               for layer in model if isinstance(layer, torch.nn.Linear)])
    assert value == pytest.approx(reference.item(), rel=1e-12)
    np.testing.assert_allclose(net.grads, expected, rtol=1e-10, atol=1e-14)


def test_integer_weights_equal_repeated_samples():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    counts = rng.integers(0, 4, size=12)
    counts[0] = 1
    weighted = cmlp.MLP([3, 5, 2], activation=["tanh", "identity"], seed=0)
    repeated = cmlp.MLP([3, 5, 2], activation=["tanh", "identity"], seed=0)
    a = weighted.fit(X, Y, epochs=5, batch_size=12, optimizer="adam", shuffle=False,
                     sample_weight=counts)
    b = repeated.fit(np.repeat(X, counts, axis=0), np.repeat(Y, counts, axis=0), epochs=5,
                     batch_size=int(counts.sum()), optimizer="adam", shuffle=False)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    np.testing.assert_allclose(weighted.params, repeated.params, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_equal_weights_give_the_bits_of_no_weights(optimizer, momentum, dtype):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(50, 4)).astype(dtype), rng.normal(size=(50, 1)).astype(dtype)
    runs = []
    for sample_weight in (None, np.ones(50), np.full(50, 2.5)):
        net = cmlp.MLP([4, 6, 1], activation=["relu", "identity"], dtype=dtype, seed=2)
        history = net.fit(X, Y, epochs=3, batch_size=16, optimizer=optimizer,
                          momentum=momentum, seed=3, sample_weight=sample_weight)
        runs.append((history.loss, net.params.copy()))
    for losses, params in runs[1:]:
        assert losses == runs[0][0]
        assert params.tobytes() == runs[0][1].tobytes()


def test_sample_weight_is_checked():
    net = cmlp.MLP([2, 1])
    X, Y = np.zeros((3, 2)), np.zeros(3)
    for bad in ([1, 2], [1, -1, 1], [0, 0, 0], [1, np.nan, 1], np.ones((3, 1))):
        with pytest.raises(ValueError, match="sample_weight"):
            net.fit(X, Y, sample_weight=bad)


def test_alpha_is_scikit_learns_penalty_on_the_weights_only():
    net, X, Y = random_problem(2, "mse", "identity", max_width=8)
    alpha, w = 0.3, np.random.default_rng(0).uniform(0.5, 2, size=X.shape[0])

    def objective():
        value = weighted_loss(net, X, Y, w, "mse")
        return value + net._add_weight_penalty(alpha, w.sum())

    value = objective()
    squares = sum(float((W ** 2).sum()) for W in net.weights)
    assert value == pytest.approx(weighted_loss(net, X, Y, w, "mse")
                                  + 0.5 * alpha * squares / w.sum(), rel=1e-14)
    objective()
    analytic, params, eps = net.grads.copy(), net.params, 1e-6
    numeric = np.empty(params.size)
    for p in range(params.size):
        saved = params[p]
        params[p] = saved + eps
        up = objective()
        params[p] = saved - eps
        down = objective()
        params[p] = saved
        numeric[p] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    objective()
    penalised = [b.copy() for b in net.bias_grads]
    weighted_loss(net, X, Y, w, "mse")
    for got, plain in zip(penalised, net.bias_grads):   # biases: the loss's gradient alone
        np.testing.assert_array_equal(got, plain)


def numpy_loss_and_gradient(net, X, Y, theta):
    """The mse of a tanh-identity network and its gradient, by NumPy, for SciPy's reference run."""
    (W1, W2), (b1, b2) = cmlp.network._layer_views(theta, net.layer_sizes)
    H = np.tanh(X @ W1.T + b1)
    E = H @ W2.T + b2 - Y
    n, k = Y.shape
    D2 = 2 * E / (n * k)
    D1 = (D2 @ W2) * (1 - H ** 2)
    grad = np.concatenate([(D1.T @ X).ravel(), D1.sum(0), (D2.T @ H).ravel(), D2.sum(0)])
    return float((E ** 2).mean()), grad


def test_lbfgs_follows_scipys_l_bfgs_b_on_the_same_loss():
    from scipy.optimize import minimize
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    Y = np.sin(X.sum(axis=1, keepdims=True))
    net = cmlp.MLP([3, 6, 1], activation=["tanh", "identity"], seed=0)
    start = net.params.copy()
    reference = minimize(lambda t: numpy_loss_and_gradient(net, X, Y, t), start,
                         method="L-BFGS-B", jac=True, options={"maxiter": 40, "gtol": 1e-4})
    history = net.fit(X, Y, epochs=40, optimizer="lbfgs")
    assert history.epochs == reference.nit
    assert history.loss[-1] == pytest.approx(reference.fun, rel=1e-8)
    np.testing.assert_allclose(net.params, reference.x, rtol=1e-6, atol=1e-9)


def test_lbfgs_stops_by_tol_and_max_fun():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    Y = X @ np.array([[1.0], [-2.0]])
    net = cmlp.MLP([2, 1], activation="identity", seed=0)   # linear: converges fast
    history = net.fit(X, Y, epochs=500, optimizer=cmlp.LBFGS(tol=1e-8))
    assert history.stop_reason == "converged" and history.epochs < 500
    np.testing.assert_allclose(net.weights[0], [[1.0, -2.0]], atol=1e-6)
    net = cmlp.MLP([2, 4, 1], activation=["tanh", "identity"], seed=0)
    assert net.fit(X, Y, epochs=500, optimizer=cmlp.LBFGS(max_fun=5)).stop_reason == "max_fun"
    with pytest.raises(ValueError, match="lbfgs"):
        net.fit(X, Y, optimizer="lbfgs", lr=0.1)


def test_lbfgs_with_weights_float32_and_a_callback():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2)).astype(np.float32)
    Y = (X[:, :1] > 0).astype(np.float32)
    net = cmlp.MLP([2, 4, 1], activation=["tanh", "sigmoid"], dtype=np.float32, seed=0)
    history = net.fit(X, Y, epochs=50, loss="bce", optimizer="lbfgs",
                      sample_weight=rng.uniform(0.5, 1.5, size=30), alpha=1e-3,
                      callbacks=[lambda epoch, history: epoch == 4])
    assert history.epochs == 5 and history.stop_reason == "callback"
    assert history.loss[-1] < history.loss[0]
