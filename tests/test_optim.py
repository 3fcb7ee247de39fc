"""The compiled optimizers against torch.optim, against steps worked out by hand, and their checks."""
import pickle
import tracemalloc

import numpy as np
import pytest

import cmlp
from cmlp import SGD, Adam

SGD_SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.5, dampening=0.3),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
]
ADAM_SETTINGS = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.02, weight_decay=0.1),
    dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.5, betas=(0.0, 0.5)),
]
CASES = ([("sgd", settings) for settings in SGD_SETTINGS]
         + [("adam", settings) for settings in ADAM_SETTINGS])


def tolerance(dtype):
    return dict(rtol=0, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind, settings", CASES)
def test_steps_equal_torch_optim(kind, settings, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(str(settings)))
    params = rng.normal(size=40).astype(dtype)
    grads = np.zeros_like(params)
    reference = torch.tensor(params.copy(), requires_grad=True)
    if kind == "sgd":
        ours, theirs = SGD(params, grads, **settings), torch.optim.SGD([reference], **settings)
    else:
        ours, theirs = Adam(params, grads, **settings), torch.optim.Adam([reference], **settings)
    for _ in range(7):
        grads[:] = rng.normal(size=params.shape)
        reference.grad = torch.from_numpy(grads.copy())
        ours.step()
        theirs.step()
        np.testing.assert_allclose(params, reference.detach().numpy(), **tolerance(dtype))
    assert ours.steps == 7


def test_sgd_momentum_by_hand():
    params = np.array([1.0, -2.0])
    grads = np.array([0.5, 0.25])
    opt = SGD(params, grads, lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    # g = grad + 0.1 p = [0.6, 0.05]; buf = g; p -= 0.1 g
    np.testing.assert_allclose(params, [0.94, -2.005], rtol=1e-15)
    opt.step()
    # g = [0.5 + 0.094, 0.25 - 0.2005]; buf = 0.9 buf + g; p -= 0.1 buf
    g = np.array([0.594, 0.0495])
    buf = 0.9 * np.array([0.6, 0.05]) + g
    np.testing.assert_allclose(params, np.array([0.94, -2.005]) - 0.1 * buf, rtol=1e-15)
    np.testing.assert_allclose(opt.momentum_buffer, buf, rtol=1e-15)


def test_adam_first_step_by_hand():
    # At t = 1 the bias corrections make m_hat = g and v_hat = g^2, so the
    # step is lr * g / (|g| + eps): lr * sign(g) for |g| >> eps.
    params = np.array([1.0, 1.0, 1.0])
    grads = np.array([3.0, -0.5, 0.0])
    Adam(params, grads, lr=0.1, eps=1e-8).step()
    np.testing.assert_allclose(params, 1 - 0.1 * grads / (np.abs(grads) + 1e-8), rtol=1e-15)


def test_adam_trains_a_network_as_torch_does():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    net = cmlp.MLP([5, 7, 3], activation=["tanh", "softmax"], seed=3)
    model = cmlp.to_torch(net)[:-1]  # CrossEntropyLoss takes the logits
    opt = Adam(net.params, net.grads, lr=0.05, weight_decay=0.01)
    reference = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(6):
        X = rng.normal(size=(9, 5))
        y = rng.integers(0, 3, size=9)
        net.forward(X)
        ours = net.backward(y, loss="cross_entropy")
        opt.step()
        reference.zero_grad()
        theirs = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(X)), torch.from_numpy(y))
        theirs.backward()
        reference.step()
        assert ours == pytest.approx(theirs.item(), rel=1e-12)
    expected = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_allclose(net.params, expected, rtol=0, atol=1e-12)


def test_state_dict_round_trip():
    rng = np.random.default_rng(0)
    params, grads = rng.normal(size=6), rng.normal(size=6)
    opt = Adam(params, grads, lr=0.1)
    opt.step()
    state = opt.state_dict()
    after_one = params.copy()
    opt.step()
    opt.step()
    params[:] = after_one
    opt.load_state_dict(state)
    assert opt.steps == 1
    opt.step()
    twin_params = after_one.copy()
    twin = Adam(twin_params, grads, lr=0.1)
    twin.load_state_dict(state)
    twin.step()
    np.testing.assert_array_equal(params, twin_params)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({"steps": 1, "exp_avg": np.zeros(5), "exp_avg_sq": np.zeros(6)})
    with pytest.raises(ValueError, match="steps"):
        opt.load_state_dict({"steps": -1, "exp_avg": np.zeros(6), "exp_avg_sq": np.zeros(6)})


def test_lr_can_change_between_steps():
    params, grads = np.array([1.0]), np.array([1.0])
    opt = SGD(params, grads, lr=0.1)
    opt.step()
    opt.lr = 0.5
    opt.step()
    assert params[0] == pytest.approx(1 - 0.1 - 0.5, abs=1e-15)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


@pytest.mark.parametrize("make, message", [
    (lambda p, g: SGD(p, g, momentum=1.0), "momentum"),
    (lambda p, g: SGD(p, g, momentum=-0.1), "momentum"),
    (lambda p, g: SGD(p, g, nesterov=True), "nesterov"),
    (lambda p, g: SGD(p, g, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda p, g: SGD(p, g, weight_decay=float("nan")), "weight_decay"),
    (lambda p, g: SGD(p, g, lr=float("inf")), "lr"),
    (lambda p, g: Adam(p, g, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p, g: Adam(p, g, betas=0.9), "betas"),
    (lambda p, g: Adam(p, g, eps=-1.0), "eps"),
    (lambda p, g: SGD(p, g[:2]), "match"),
    (lambda p, g: SGD(p, g.astype(np.float32)), "match"),
    (lambda p, g: SGD(p[::2], g[::2]), "C-contiguous"),
    (lambda p, g: SGD(p.astype(np.int64), g), "float32 or float64"),
    (lambda p, g: SGD(list(p), g), "numpy array"),
])
def test_bad_settings_raise(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(np.zeros(4), np.zeros(4))


def test_read_only_params_refused():
    params = np.zeros(3)
    params.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        SGD(params, np.zeros(3))


def test_optimizers_do_not_pickle():
    opt = SGD(np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="state_dict"):
        pickle.dumps(opt)


def test_no_allocation_per_step(dtype):
    net = cmlp.MLP([8, 16, 2], dtype=dtype, seed=0)
    for opt in (SGD(net.params, net.grads, lr=0.01, momentum=0.9, nesterov=True),
                Adam(net.params, net.grads)):
        opt.step()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(1000):
                opt.step()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert after - before < 1000  # less than a byte per step: nothing per step


def test_repr():
    assert repr(SGD(np.zeros(1), np.zeros(1), lr=0.5, momentum=0.9)).startswith("SGD(lr=0.5, momentum=0.9")
    assert "betas=(0.9, 0.999)" in repr(Adam(np.zeros(1), np.zeros(1)))
