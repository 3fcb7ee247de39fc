"""fit: equal to hand-written loops and to PyTorch, reproducible, and safe when things go wrong."""
import copy
import io
import pickle

import numpy as np
import pytest

import cmlp
import reference
from cmlp import TrainingDivergedError

# These tests fit sigmoid outputs to targets in [-1, 1] on purpose (the bits are
# the point, not the fit): fit's warning about unreachable targets is expected.
pytestmark = pytest.mark.filterwarnings("ignore:targets run from:UserWarning")


def regression_data(n=50, n_in=3, n_out=2, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    Y = np.tanh(X @ rng.normal(size=(n_in, n_out))).astype(dtype)
    return X, Y


def batch_orders(n, epochs, seed):
    """The sample order of each epoch, drawn as fit documents it."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield reference.shuffled_order(rng, n)


def test_fit_equals_train_steps_over_shuffled_batches(dtype):
    X, Y = regression_data(n=23, dtype=dtype)
    net = cmlp.MLP([3, 5, 2], activation=["tanh", "identity"], dtype=dtype, seed=1)
    twin = copy.deepcopy(net)
    history = net.fit(X, Y, epochs=4, batch_size=5, lr=0.1, seed=7)
    losses = []
    for order in batch_orders(23, 4, seed=7):
        total = 0.0
        for start in range(0, 23, 5):  # the last batch holds 3 samples
            rows = order[start:start + 5]
            total += twin.train_step(X[rows], Y[rows], lr=0.1) * len(rows)
        losses.append(total / 23)
    np.testing.assert_array_equal(net.params, twin.params)
    assert history.loss == losses
    assert history.epochs == 4 and history.val_loss == [] and history.stop_reason is None


def test_fit_without_shuffle_takes_batches_in_order():
    X, Y = regression_data(n=10)
    net = cmlp.MLP([3, 4, 2], seed=2)
    twin = copy.deepcopy(net)
    net.fit(X, Y, epochs=2, batch_size=4, lr=0.3, shuffle=False)
    for _ in range(2):
        for start in (0, 4, 8):
            twin.train_step(X[start:start + 4], Y[start:start + 4], lr=0.3)
    np.testing.assert_array_equal(net.params, twin.params)


def test_same_seed_same_result_bit_for_bit(dtype):
    X, Y = regression_data(dtype=dtype)
    runs = []
    for _ in range(2):
        net = cmlp.MLP([3, 6, 2], dtype=dtype, seed=5)
        history = net.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01, seed=11,
                          validation_data=(X[:10], Y[:10]))
        runs.append((net.params.copy(), history))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    other = cmlp.MLP([3, 6, 2], dtype=dtype, seed=5)
    other.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01, seed=12)
    assert not np.array_equal(other.params, runs[0][0])


TORCH_OPTIMIZERS = [
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, weight_decay=0.1)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, weight_decay=0.05)),
]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("name, settings", TORCH_OPTIMIZERS)
def test_fit_equals_a_torch_training_loop(name, settings, loss):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 4))
    if loss == "cross_entropy":
        net = cmlp.MLP([4, 8, 3], activation=["relu", "softmax"], seed=4)
        Y = rng.integers(0, 3, size=30)
        model, criterion = cmlp.to_torch(net)[:-1], torch.nn.CrossEntropyLoss()
    else:
        net = cmlp.MLP([4, 8, 2], activation=["tanh", "sigmoid"], seed=4)
        Y = rng.uniform(size=(30, 2))
        model, criterion = cmlp.to_torch(net), torch.nn.MSELoss()
    history = net.fit(X, Y, epochs=3, batch_size=7, loss=loss, optimizer=name, seed=9, **settings)

    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name](model.parameters(), **settings)
    expected_losses = []
    for order in batch_orders(30, 3, seed=9):
        total = 0.0
        for start in range(0, 30, 7):
            rows = order[start:start + 7]
            optimizer.zero_grad()
            value = criterion(model(torch.from_numpy(X[rows])), torch.from_numpy(Y[rows]))
            value.backward()
            optimizer.step()
            total += value.item() * len(rows)
        expected_losses.append(total / 30)
    expected = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_allclose(net.params, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(history.loss, expected_losses, rtol=1e-12)


def test_class_indices_and_one_hot_targets_train_alike():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = rng.integers(0, 4, size=20)
    nets = [cmlp.MLP([3, 5, 4], activation=["relu", "softmax"], seed=0) for _ in range(2)]
    nets[0].fit(X, y, epochs=3, batch_size=6, lr=0.2, loss="cross_entropy", seed=0)
    nets[1].fit(X, np.eye(4)[y], epochs=3, batch_size=6, lr=0.2, loss="cross_entropy", seed=0)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)


@pytest.mark.parametrize("loss, activation", [("mse", "identity"), ("half_sse", "tanh"),
                                              ("bce", "sigmoid"), ("cross_entropy", "softmax")])
def test_validation_loss_is_the_loss_of_each_epochs_parameters(loss, activation):
    rng = np.random.default_rng(1)
    X, X_val = rng.normal(size=(16, 3)), rng.normal(size=(9, 3))
    if loss == "cross_entropy":
        Y, Y_val = np.eye(3)[rng.integers(0, 3, 16)], np.eye(3)[rng.integers(0, 3, 9)]
    else:
        Y, Y_val = rng.uniform(size=(16, 3)), rng.uniform(size=(9, 3))
    net = cmlp.MLP([3, 4, 3], activation=["tanh", activation], seed=1)
    expected = []

    def reference_loss(epoch, history):
        expected.append(reference.gradients(list(net.weights), list(net.biases),
                                            net.activation, X_val, Y_val, loss)[0])

    history = net.fit(X, Y, epochs=3, batch_size=5, lr=0.1, loss=loss,
                      validation_data=(X_val, Y_val), callbacks=[reference_loss])
    np.testing.assert_allclose(history.val_loss, expected, rtol=1e-12)


def test_early_stopping_restores_the_best_parameters():
    X, Y = regression_data(n=40, seed=0)
    # Validation targets that training moves away from: the loss soon rises.
    X_val, Y_val = X[:10], -Y[:10]
    net = cmlp.MLP([3, 8, 2], activation=["tanh", "identity"], seed=0)
    snapshots = []
    history = net.fit(X, Y, epochs=200, batch_size=8, lr=0.05, validation_data=(X_val, Y_val),
                      early_stopping=3,
                      callbacks=[lambda epoch, h: snapshots.append(net.params.copy())])
    best = history.best_epoch
    assert history.stop_reason == "early_stopping"
    assert history.epochs == best + 4
    assert history.val_loss[best] == min(history.val_loss)
    np.testing.assert_array_equal(net.params, snapshots[best])


def test_a_callback_can_stop_training():
    X, Y = regression_data()
    seen = []

    def stop_at_two(epoch, history):
        seen.append((epoch, len(history.loss)))
        return epoch == 2

    history = cmlp.MLP([3, 2]).fit(X, Y, epochs=10, callbacks=[stop_at_two])
    assert seen == [(0, 1), (1, 2), (2, 3)]
    assert history.epochs == 3 and history.stop_reason == "callback"


def test_verbose_shows_progress_and_quiet_shows_nothing(capsys):
    X, Y = regression_data()
    net = cmlp.MLP([3, 2], seed=0)
    net.fit(X, Y, epochs=3, validation_data=(X, Y))
    assert capsys.readouterr().out == ""
    net.fit(X, Y, epochs=3, validation_data=(X, Y), verbose=True)
    lines = capsys.readouterr().out.splitlines()  # not a terminal: whole lines
    assert lines[0].startswith("epoch 1/3  loss ") and lines[-1].startswith("epoch 3/3  loss ")
    assert all("val_loss" in line and line.endswith("samples/s") for line in lines)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_in_a_terminal_one_line_is_redrawn():
    from cmlp.training import _Progress

    stream = Terminal()
    progress = _Progress(epochs=3, stream=stream)
    history = cmlp.History(loss=[1.0])
    progress.update(0, history, 100.0)
    history.loss.append(0.25)
    progress.update(1, history, 200.0)  # within the redraw interval: kept for later
    progress.close()
    out = stream.getvalue()
    assert out == ("\repoch 1/3  loss 1  100 samples/s"
                   "\repoch 2/3  loss 0.25  200 samples/s\n")


def test_divergence_raises_and_restores_finite_parameters():
    X, Y = regression_data(n=64)
    X = X * 100
    net = cmlp.MLP([3, 16, 2], activation=["relu", "identity"], seed=0)
    at_epoch_end = [net.params.copy()]
    with pytest.raises(TrainingDivergedError, match="smaller learning rate") as caught:
        net.fit(X, Y, epochs=50, batch_size=4, lr=5.0,
                callbacks=[lambda epoch, h: at_epoch_end.append(net.params.copy())])
    error = caught.value
    assert isinstance(error, FloatingPointError)
    assert f"epoch {error.epoch}, batch {error.batch}" in str(error)
    assert error.history.epochs == error.epoch
    assert np.isfinite(net.params).all()
    np.testing.assert_array_equal(net.params, at_epoch_end[error.epoch])


def test_divergence_in_the_last_update_is_caught():
    # One batch whose loss is finite but whose update overflows the weights.
    net = cmlp.MLP([1, 1], activation="identity", seed=0)
    start = net.params.copy()
    with pytest.raises(TrainingDivergedError, match="parameter"):
        net.fit([[1e200]], [[0.0]], epochs=1, lr=1e200)
    np.testing.assert_array_equal(net.params, start)


@pytest.mark.parametrize("bad, message", [
    (dict(X=[[np.nan, 0, 0], [0, 0, 0]]), "X contains NaN"),
    (dict(Y=[[np.inf, 0], [0, 0]]), "Y contains infinity"),
    (dict(epochs=-1), "epochs"),
    (dict(epochs=1.5), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(loss="bce"), "sigmoid output"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(optimizer="adam", momentum=0.9), "momentum"),
    (dict(early_stopping=2), "validation_data"),
    (dict(validation_data=[1, 2, 3]), "pair"),
    (dict(validation_data=([[0, 0, 0]], [[0, 0], [0, 0]])), "Y_val"),
    (dict(callbacks=[1]), "callables"),
    (dict(Y=[[0, 0]] * 3), "Y must have shape"),
    (dict(X=np.zeros((0, 3)), Y=np.zeros((0, 2))), "no samples"),
])
def test_bad_arguments_raise_before_training(bad, message):
    net = cmlp.MLP([3, 2], activation="identity", seed=0)
    start = net.params.copy()
    arguments = dict(X=np.ones((2, 3)), Y=np.ones((2, 2)), epochs=1)
    arguments.update(bad)
    with pytest.raises((ValueError, TypeError), match=message):
        net.fit(arguments.pop("X"), arguments.pop("Y"), **arguments)
    np.testing.assert_array_equal(net.params, start)


def test_an_optimizer_object_carries_its_state_over():
    X, Y = regression_data()
    net = cmlp.MLP([3, 4, 2], seed=0)
    twin = copy.deepcopy(net)
    opt = cmlp.Adam(net.params, net.grads, lr=0.01)
    net.fit(X, Y, epochs=1, optimizer=opt, shuffle=False)
    net.fit(X, Y, epochs=1, optimizer=opt, shuffle=False)
    assert opt.steps == 2 * 2  # 50 samples in batches of 32, twice
    twin.fit(X, Y, epochs=2, optimizer="adam", lr=0.01, shuffle=False)
    np.testing.assert_array_equal(net.params, twin.params)
    with pytest.raises(ValueError, match="on it rather"):
        net.fit(X, Y, optimizer=opt, lr=0.1)
    with pytest.raises(ValueError, match="this network"):
        twin.fit(X, Y, optimizer=opt)


def test_a_callback_cannot_fit_its_own_model():
    X, Y = regression_data()
    net = cmlp.MLP([3, 2], seed=0)
    with pytest.raises(RuntimeError, match="already being trained"):
        net.fit(X, Y, epochs=1, callbacks=[lambda epoch, h: net.fit(X, Y)])


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda net: pickle.loads(pickle.dumps(net))])
def test_pickle_and_deepcopy_round_trip_bit_exactly(clone, dtype):
    X, Y = regression_data(dtype=dtype)
    net = cmlp.MLP([3, 4, 2], activation=["relu", "sigmoid"], dtype=dtype, seed=3)
    net.fit(X, Y, epochs=2, lr=0.1)
    twin = clone(net)
    assert repr(twin) == repr(net) and twin.dtype == net.dtype
    np.testing.assert_array_equal(twin.params, net.params)
    assert twin.params is not net.params
    # The copy is independent and trains exactly as the original does.
    assert twin.train_step(X, Y, lr=0.1) == net.train_step(X, Y, lr=0.1)
    np.testing.assert_array_equal(twin.params, net.params)
    twin.weights[0][:] = 0
    assert not np.array_equal(twin.params, net.params)


def test_a_callback_can_schedule_the_learning_rate():
    X, Y = regression_data(n=20)
    net = cmlp.MLP([3, 4, 2], seed=0)
    twin = copy.deepcopy(net)
    opt = cmlp.SGD(net.params, net.grads, lr=0.4)

    def halve(epoch, history):
        opt.lr = opt.lr / 2

    net.fit(X, Y, epochs=3, batch_size=10, optimizer=opt, shuffle=False, callbacks=[halve])
    for lr in (0.4, 0.2, 0.1):
        for start in (0, 10):
            twin.train_step(X[start:start + 10], Y[start:start + 10], lr=lr)
    np.testing.assert_array_equal(net.params, twin.params)


def test_jupyters_output_stream_is_redrawn_in_place():
    from cmlp.training import _redraws_in_place

    OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert _redraws_in_place(OutStream())
    assert _redraws_in_place(Terminal())
    assert not _redraws_in_place(io.StringIO())


def test_divergence_restores_the_optimizer_state_too():
    X, Y = regression_data(n=32)
    net = cmlp.MLP([3, 8, 2], activation=["relu", "identity"], seed=0)
    opt = cmlp.Adam(net.params, net.grads, lr=0.01)
    states = [opt.state_dict()]

    def grow_lr(epoch, history):
        states.append(opt.state_dict())
        opt.lr = 1e300 if epoch == 1 else opt.lr  # epoch 2 blows up

    with pytest.raises(TrainingDivergedError) as caught:
        net.fit(X, Y, epochs=5, batch_size=8, optimizer=opt, callbacks=[grow_lr])
    assert caught.value.epoch == 2
    restored = opt.state_dict()
    assert restored["steps"] == states[2]["steps"] == 2 * 4
    np.testing.assert_array_equal(restored["exp_avg"], states[2]["exp_avg"])
    np.testing.assert_array_equal(restored["exp_avg_sq"], states[2]["exp_avg_sq"])
    assert np.isfinite(net.params).all()
