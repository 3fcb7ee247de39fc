"""MLPEnsemble: every model gets the bits MLP gives it alone, on both routes
(the per-model kernels and the vectorised tiny-network kernel), on one thread
and on two; and nothing reachable from Python crashes the interpreter."""
import numpy as np
import pytest

import cmlp
from cmlp import _ensemble
from cmlp.ensemble import MLPEnsemble

# Two threads start OpenMP's workers: left out where threads cannot start (qemu-aarch64).
THREADS = [1, pytest.param(2, marks=pytest.mark.starts_threads)]


def _alone(ens, k, seed):
    return cmlp.MLP(ens.layer_sizes, list(ens.activation), ens.dtype, seed=seed)


def _data(rng, K, n, n_in, n_out, dtype, scale=1.0):
    X = (rng.standard_normal((K, n, n_in)) * scale).astype(dtype)
    Y = rng.uniform(0.05, 0.95, (K, n, n_out)).astype(dtype)
    return X, Y


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("sizes, activation, loss, n", [
    ([2, 1, 1], "sigmoid", "mse", 1),                            # tiny route, the notebook's net
    ([10, 16, 3], ["tanh", "sigmoid"], "bce", 1),               # tiny route, dot products in 8s
    ([3, 5, 4, 2], ["relu", "identity", "sigmoid"], "half_sse", 1),
    ([16, 32, 1], "sigmoid", "mse", 32),                         # per-model route, BLAS
    ([4, 6, 3], ["tanh", "softmax"], "cross_entropy", 5),
])
def test_train_step_gives_each_model_its_own_bits(sizes, activation, loss, n, n_threads):
    rng = np.random.default_rng(1)
    K = 45   # not a multiple of the tiny kernel's lanes
    seeds = list(range(100, 100 + K))
    ens = MLPEnsemble(K, sizes, activation, seed=seeds, n_threads=n_threads)
    nets = [_alone(ens, k, seeds[k]) for k in range(K)]
    for k in range(K):
        assert np.array_equal(ens.params[k], nets[k].params)
    lr = rng.uniform(0.05, 0.5, K)
    for step in range(4):
        X, Y = _data(rng, K, n, sizes[0], sizes[-1], np.float64)
        if loss == "cross_entropy":
            Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], (K, n))]
        losses = ens.train_step(X, Y, lr, loss=loss)
        for k in range(K):
            expected = nets[k].train_step(X[k], Y[k], lr[k], loss=loss)
            assert losses[k] == expected, (step, k)
            assert np.array_equal(ens.params[k], nets[k].params), (step, k)


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_shared_batch(dtype, n_threads):
    rng = np.random.default_rng(2)
    ens = MLPEnsemble(5, [3, 4, 2], "tanh", dtype=dtype, seed=[1, 2, 3, 4, 5], n_threads=n_threads)
    nets = [_alone(ens, k, k + 1) for k in range(5)]
    X = rng.standard_normal((1, 3))
    Y = rng.standard_normal((1, 2))
    losses = ens.train_step(X, Y, 0.1)
    for k in range(5):
        assert losses[k] == nets[k].train_step(X, Y, 0.1)
        assert np.array_equal(ens.params[k], nets[k].params)
        assert ens.params.dtype == dtype


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("scale", [1e3, np.inf])
def test_tiny_route_outside_the_vector_sigmoids_range(scale, n_threads):
    # |z| beyond 707 takes libm's exp, NaN propagates: as in MLP, lane by lane.
    K = 40
    ens = MLPEnsemble(K, [2, 3, 1], seed=list(range(K)), n_threads=n_threads)
    nets = [_alone(ens, k, k) for k in range(K)]
    rng = np.random.default_rng(3)
    X, Y = _data(rng, K, 1, 2, 1, np.float64)
    X[::3] *= scale
    with np.errstate(all="ignore"):
        losses = ens.train_step(X, Y, 0.3)
        for k in range(K):
            expected = nets[k].train_step(X[k], Y[k], 0.3)
            assert np.array_equal(losses[k], expected, equal_nan=True)
            assert np.array_equal(ens.params[k], nets[k].params, equal_nan=True)


def test_tiny_route_is_taken_and_all_variants_agree():
    assert _ensemble.tiny_route((2, 1, 1), (1, 1), np.float64, "mse", 1)
    assert not _ensemble.tiny_route((2, 1, 1), (1, 1), np.float64, "mse", 2)
    assert not _ensemble.tiny_route((2, 1, 1), (1, 1), np.float32, "mse", 1)
    assert not _ensemble.tiny_route((2, 40, 1), (1, 1), np.float64, "mse", 1)
    from cmlp import _kernels
    rng = np.random.default_rng(4)
    X, Y = _data(rng, 70, 1, 10, 3, np.float64)
    results = []
    for variant in _kernels.vector_variants():
        previous = _kernels._use_vector_variant(variant)
        try:
            ens = MLPEnsemble(70, [10, 12, 3], seed=7)
            results.append((ens.train_step(X, Y, 0.2), ens.params.copy()))
        finally:
            _kernels._use_vector_variant(previous)
    for losses, params in results[1:]:
        assert np.array_equal(losses, results[0][0])
        assert np.array_equal(params, results[0][1])


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_fit_is_mlp_fit_per_model(batch_size, n_threads):
    rng = np.random.default_rng(5)
    K, n = 6, 23
    X = rng.standard_normal((n, 2))
    Y = rng.uniform(0, 1, (n, 1))
    boot = rng.integers(0, n, (K, n))
    lr = np.linspace(0.1, 0.6, K)
    ens = MLPEnsemble(K, [2, 3, 1], seed=list(range(K)), n_threads=n_threads)
    history = ens.fit(X, Y, epochs=5, batch_size=batch_size, lr=lr, seed=list(range(50, 50 + K)),
                      sample_indices=boot)
    for k in range(K):
        net = cmlp.MLP([2, 3, 1], seed=k)
        h = net.fit(X[boot[k]], Y[boot[k]], epochs=5, batch_size=batch_size, lr=lr[k],
                    seed=50 + k)
        assert np.array_equal(ens.params[k], net.params), k
        assert list(history.loss[:, k]) == h.loss


@pytest.mark.parametrize("n_threads", THREADS)
def test_fit_early_stopping_per_model(n_threads):
    rng = np.random.default_rng(6)
    K, n = 4, 30
    X, Y = _data(rng, K, n, 3, 2, np.float64)
    Xv, Yv = _data(rng, K, 10, 3, 2, np.float64)
    ens = MLPEnsemble(K, [3, 4, 2], seed=[1, 2, 3, 4], n_threads=n_threads)
    history = ens.fit(X, Y, epochs=40, batch_size=4, lr=[0.5, 2.0, 5.0, 9.0], seed=[9, 8, 7, 6],
                      validation_data=(Xv, Yv), early_stopping=2)
    for k in range(K):
        net = cmlp.MLP([3, 4, 2], seed=k + 1)
        h = net.fit(X[k], Y[k], epochs=40, batch_size=4, lr=[0.5, 2.0, 5.0, 9.0][k], seed=9 - k,
                    validation_data=(Xv[k], Yv[k]), early_stopping=2)
        assert np.array_equal(ens.params[k], net.params), k
        ran = len(h.loss)
        assert list(history.loss[:ran, k]) == h.loss
        assert list(history.val_loss[:ran, k]) == h.val_loss
        assert history.best_epoch[k] == (h.best_epoch if h.best_epoch is not None else -1)
        assert history.stop_reason[k] == h.stop_reason


def _adamw():
    # A template: its hyperparameters, not its buffers, are what fit takes.
    return cmlp.Adam(np.zeros(1), np.zeros(1), lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                     weight_decay=0.1, decoupled_weight_decay=True)


OPTIONS = {
    "momentum": dict(momentum=0.9),
    "nesterov, weight decay": dict(momentum=0.5, nesterov=True, weight_decay=1e-3),
    "adam": dict(optimizer="adam"),
    "adam, weight decay": dict(optimizer="adam", weight_decay=0.01),
    "adamw object": dict(optimizer=_adamw),
    "alpha": dict(alpha=0.3),
    "weights": dict(sample_weight="shared"),
    "weights per model, one model's all equal": dict(sample_weight="per model"),
    "weights, alpha, adam": dict(sample_weight="shared", alpha=0.05, optimizer="adam"),
}


def _mlp_optimizer(option, net):
    """MLP.fit's optimizer argument for the same option."""
    if option.get("optimizer") is _adamw:
        t = _adamw()
        return cmlp.Adam(net.params, net.grads, lr=t.lr, betas=t.betas, eps=t.eps,
                         weight_decay=t.weight_decay, decoupled_weight_decay=True)
    return option.get("optimizer", "sgd")


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_fit_with_each_option_is_mlp_fit_per_model(name, batch_size, dtype, n_threads):
    option = OPTIONS[name]
    rng = np.random.default_rng(8)
    K, n = 4, 21
    X = rng.standard_normal((n, 3))
    Y = rng.uniform(0, 1, (n, 2))
    boot = rng.integers(0, n, (K, n))
    weights = {"shared": rng.uniform(0, 2, n), "per model": rng.uniform(0, 2, (K, n)),
               None: None}[option.get("sample_weight")]
    if option.get("sample_weight") == "per model":
        weights[1] = 0.5   # all equal: MLP.fit takes no weights then, and so must model 1
    template = option.get("optimizer") is _adamw
    lr = None if template else np.linspace(0.02, 0.2, K)
    kwargs = {key: value for key, value in option.items() if key != "sample_weight"}
    if template:
        kwargs["optimizer"] = _adamw()
    ens = MLPEnsemble(K, [3, 5, 2], dtype=dtype, seed=list(range(K)), n_threads=n_threads)
    history = ens.fit(X, Y, epochs=3, batch_size=batch_size, lr=lr, seed=list(range(20, 20 + K)),
                      sample_indices=boot, sample_weight=weights, **kwargs)
    for k in range(K):
        net = cmlp.MLP([3, 5, 2], dtype=dtype, seed=k)
        w = None if weights is None else (weights[boot[k]] if weights.ndim == 1 else weights[k])
        h = net.fit(X[boot[k]], Y[boot[k]], epochs=3, batch_size=batch_size,
                    lr=None if template else lr[k], seed=20 + k, sample_weight=w,
                    **{**kwargs, "optimizer": _mlp_optimizer(option, net)})
        assert ens.params[k].tobytes() == net.params.tobytes(), k
        assert list(history.loss[:, k]) == h.loss


@pytest.mark.parametrize("n_threads", THREADS)
def test_fit_with_adam_stops_each_model_on_its_own(n_threads):
    # Models stop at different epochs: the others' optimizer state must go on as theirs.
    rng = np.random.default_rng(9)
    K, n = 4, 30
    X, Y = _data(rng, K, n, 3, 2, np.float64)
    Xv, Yv = _data(rng, K, 10, 3, 2, np.float64)
    rates = [0.01, 0.05, 0.2, 0.5]
    ens = MLPEnsemble(K, [3, 6, 2], seed=[1, 2, 3, 4], n_threads=n_threads)
    history = ens.fit(X, Y, epochs=30, batch_size=4, lr=rates, optimizer="adam",
                      seed=[9, 8, 7, 6], validation_data=(Xv, Yv), early_stopping=2)
    assert len({int(np.isfinite(history.loss[:, k]).sum()) for k in range(K)}) > 1
    for k in range(K):
        net = cmlp.MLP([3, 6, 2], seed=k + 1)
        h = net.fit(X[k], Y[k], epochs=30, batch_size=4, lr=rates[k], optimizer="adam",
                    seed=9 - k, validation_data=(Xv[k], Yv[k]), early_stopping=2)
        assert np.array_equal(ens.params[k], net.params), k
        assert list(history.loss[:len(h.loss), k]) == h.loss
        assert history.stop_reason[k] == h.stop_reason


def test_fit_with_momentum_stops_a_diverging_model_alone():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((40, 2)) * 100
    Y = rng.standard_normal((40, 1)) * 100
    ens = MLPEnsemble(3, [2, 8, 1], ["relu", "identity"], seed=[0, 1, 2])
    history = ens.fit(X, Y, epochs=4, lr=[1e-6, 1e3, 1e-5], momentum=0.9, seed=[3, 4, 5])
    assert history.stop_reason == [None, "diverged", None]
    assert np.isfinite(ens.params).all()
    net = cmlp.MLP([2, 8, 1], ["relu", "identity"], seed=1)
    with pytest.raises(cmlp.TrainingDivergedError) as error:
        net.fit(X, Y, epochs=4, lr=1e3, momentum=0.9, seed=4)
    assert np.array_equal(ens.params[1], net.params)   # both back at the failing epoch's start
    assert not np.isfinite(history.loss[error.value.epoch:, 1]).any()
    for k in (0, 2):
        net = cmlp.MLP([2, 8, 1], ["relu", "identity"], seed=k)
        net.fit(X, Y, epochs=4, lr=[1e-6, 1e3, 1e-5][k], momentum=0.9, seed=3 + k)
        assert np.array_equal(ens.params[k], net.params)


def test_fit_callbacks_verbose_and_refusals(capsys):
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((12, 2)), rng.uniform(0, 1, 12)
    ens = MLPEnsemble(3, [2, 3, 1], seed=0)
    seen = []

    def stop_after_two(epoch, history):
        seen.append((epoch, history.loss.shape))
        return epoch == 1

    history = ens.fit(X, Y, epochs=5, optimizer="adam", callbacks=[stop_after_two],
                      verbose=True)
    assert seen == [(0, (1, 3)), (1, (2, 3))]
    assert history.loss.shape == (2, 3) and history.stop_reason == ["callback"] * 3
    assert "epoch 2/5" in capsys.readouterr().out
    with pytest.raises(ValueError, match="L-BFGS"):
        ens.fit(X, Y, optimizer="lbfgs")
    with pytest.raises(ValueError, match="optimizer object"):
        ens.fit(X, Y, optimizer=_adamw(), lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        ens.fit(X, Y, optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        ens.fit(X, Y, momentum=1.0)
    with pytest.raises(ValueError, match="alpha"):
        ens.fit(X, Y, alpha=-1.0)
    with pytest.raises(ValueError, match="sample_weight"):
        ens.fit(X, Y, sample_weight=np.ones(11))
    with pytest.raises(ValueError, match="sample_weight"):
        ens.fit(X, Y, sample_weight=-np.ones(12))
    with pytest.raises(TypeError, match="callables"):
        ens.fit(X, Y, callbacks=[1])
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="dense"):
        ens.fit(scipy_sparse.csr_array(X), Y)


def test_predict_models_and_files(tmp_path):
    rng = np.random.default_rng(7)
    ens = MLPEnsemble(5, [4, 8, 3], ["relu", "sigmoid"], seed=3)
    ens.train_step(*_data(rng, 5, 6, 4, 3, np.float64), lr=0.2)
    X = rng.standard_normal((9, 4))
    out = ens.predict(X)
    assert out.shape == (5, 9, 3)
    for k in range(5):
        net = ens.models[k]
        assert isinstance(net, cmlp.MLP)
        assert np.array_equal(net.params, ens.params[k])
        assert np.array_equal(out[k], net.predict(X))
    np.testing.assert_allclose(ens.predict_mean(X), np.mean([ens.models[k].predict(X)
                                                             for k in range(5)], axis=0),
                               rtol=1e-15)
    np.testing.assert_allclose(ens.predict_var(X), out.var(axis=0), rtol=1e-15)
    ens.save(tmp_path / "e.npz")
    again = MLPEnsemble.load(tmp_path / "e.npz")
    assert np.array_equal(again.params, ens.params) and again.seeds == ens.seeds
    net = cmlp.MLP([4, 8, 3], ["relu", "sigmoid"], seed=0)
    ens.set_model(2, net)
    assert np.array_equal(ens.params[2], net.params)
    assert len(ens.models) == 5 and len(ens.models[1:3]) == 2


@pytest.mark.starts_threads
def test_bad_input_raises():
    ens = MLPEnsemble(3, [2, 2, 1], seed=0)
    with pytest.raises(ValueError):
        ens.train_step(np.zeros((4, 1, 2)), np.zeros((4, 1, 1)), 0.1)
    with pytest.raises(ValueError):
        ens.train_step(np.zeros((3, 1, 3)), np.zeros((3, 1, 1)), 0.1)
    with pytest.raises(ValueError):
        ens.train_step(np.zeros((3, 1, 2)), np.zeros((3, 1, 1)), [0.1, 0.2])
    with pytest.raises(ValueError):
        ens.train_step(np.zeros((3, 1, 2)), np.zeros((3, 1, 1)), -1.0)
    with pytest.raises(TypeError):
        ens.train_step(np.array([["a", "b"]]), np.zeros(1), 0.1)
    with pytest.raises(ValueError):
        ens.train_step(np.zeros((1, 2)), np.zeros((1, 1)), 0.1, loss="cross_entropy")
    with pytest.raises(ValueError):
        ens.fit(np.zeros((5, 2)), np.zeros(5), sample_indices=np.full((3, 5), 5))
    with pytest.raises(IndexError):
        ens.models[3]
    # the compiled door itself, given what a caller should not give it
    plan = _ensemble.Plan([2, 2, 1], [1, 1], np.float64)
    P = plan.n_params
    good = dict(params=np.zeros((3, P)), grads=np.zeros((3, P)), storage=np.zeros((3, 100)),
                X=np.zeros((3, 4, 2)), Y=np.zeros((3, 4, 1)), order=None, batch_size=2,
                lr=np.zeros(3), losses=np.zeros((3, 2)), ran=np.zeros(3, dtype=np.intp),
                totals=np.zeros(3))
    plan.train(0, n_threads=2, **good)
    for key, bad in [("params", np.zeros((3, P - 1))), ("grads", np.zeros((2, P))),
                     ("storage", np.zeros((3, 5))), ("X", np.zeros((3, 4, 3))),
                     ("Y", np.zeros((3, 3, 1))), ("order", np.full((3, 4), 4, dtype=np.intp)),
                     ("order", np.zeros((3, 4), dtype=np.int8)), ("batch_size", 0),
                     ("lr", np.zeros(2)), ("losses", np.zeros((3, 1))),
                     ("ran", np.zeros(3)), ("totals", np.zeros(2)),
                     ("params", np.zeros((3, P), dtype=np.float32)),
                     ("X", np.zeros((3, 4, 2))[:, :, ::-1]), ("params", [[0.0] * P] * 3),
                     ("params", np.zeros((3, P))[:, ::2]), ("losses", np.zeros((3, 2))[::-1])]:
        with pytest.raises(ValueError):
            plan.train(0, n_threads=2, **{**good, key: bad})
    readonly = np.zeros((3, P))
    readonly.flags.writeable = False
    with pytest.raises(ValueError):
        plan.train(0, n_threads=2, **{**good, "params": readonly})
    with pytest.raises(ValueError):
        plan.train(0, n_threads=0, **good)
    plan.train(0, n_threads=10**9, **good)   # bounded: never more threads than models
    with pytest.raises(ValueError):
        plan.train(7, n_threads=1, **good)
    with pytest.raises(ValueError):   # cross_entropy without a softmax output to keep logits of
        plan.train(3, n_threads=1, **good)
    with pytest.raises(ValueError):   # bce without a sigmoid output
        _ensemble.Plan([2, 2, 1], [1, 0], np.float64).train(2, n_threads=1, **good)
    with pytest.raises(ValueError):
        _ensemble.Plan([2, 2], [1, 1], np.float64)
    with pytest.raises((ValueError, TypeError)):
        _ensemble.Plan([2, 0, 1], [1, 1], np.float64)
    with pytest.raises(ValueError):
        plan.predict(np.zeros((3, P)), np.zeros((3, 1)), np.zeros((3, 4, 2)),
                     np.zeros((3, 4, 1)), 1)


@pytest.mark.starts_threads
def test_the_optimizers_compiled_door_checks_what_it_is_given():
    plan = _ensemble.Plan([2, 2, 1], [1, 1], np.float64)
    P = plan.n_params
    K = 3
    good = dict(params=np.zeros((K, P)), grads=np.zeros((K, P)), storage=np.zeros((K, 100)),
                X=np.zeros((K, 4, 2)), Y=np.zeros((K, 4, 1)), weights=np.ones((K, 4)),
                weighted=np.ones(K, dtype=np.intc), batch_weights=np.zeros((K, 2)),
                order=np.zeros((K, 4), dtype=np.intp), batch_size=2, alpha=0.1,
                optimizer=("adam", 0.9, 0.999, 1e-8, 0.0, False), lr=np.full(K, 0.1),
                first_state=np.zeros((K, P)), second_state=np.zeros((K, P)),
                steps=np.zeros(K, dtype=np.intp), losses=np.zeros((K, 2)),
                shares=np.zeros((K, 2)), ran=np.zeros(K, dtype=np.intp), totals=np.zeros(K))
    plan.train_with_optimizer(0, n_threads=2, **good)
    assert list(good["steps"]) == [2, 2, 2] and list(good["ran"]) == [2, 2, 2]
    readonly = np.zeros((K, P))
    readonly.flags.writeable = False
    for key, bad in [("weights", np.ones((K, 3))), ("weights", np.ones((K, 4), np.float32)),
                     ("weighted", np.ones(K - 1, dtype=np.intc)), ("weighted", np.ones(K)),
                     ("batch_weights", np.zeros((K, 1))), ("alpha", -1.0),
                     ("alpha", float("nan")), ("optimizer", ("adam", 1.0, 0.9, 1e-8, 0, False)),
                     ("optimizer", ("adam", 0.9, 0.9, 0.0, 0, False)),
                     ("optimizer", ("sgd", 0.9, 0.0, False)), ("optimizer", ("rmsprop",)),
                     ("optimizer", ("sgd", 0.9, 2.0, False, 0.0)),
                     ("first_state", np.zeros((K, P - 1))), ("second_state", readonly),
                     ("steps", np.zeros(K - 1, dtype=np.intp)), ("steps", np.zeros(K)),
                     ("shares", np.zeros((K, 3))), ("order", np.full((K, 4), 9, dtype=np.intp)),
                     ("lr", np.zeros(K - 1)), ("X", np.zeros((K, 4, 2), np.float32))]:
        with pytest.raises(ValueError):
            plan.train_with_optimizer(0, n_threads=2, **{**good, key: bad})
    with pytest.raises(TypeError):
        plan.train_with_optimizer(0, n_threads=2, **{**good, "optimizer": None})


def test_pickle_and_deepcopy_keep_every_model():
    import copy
    import pickle
    rng = np.random.default_rng(12)
    ens = MLPEnsemble(3, [2, 4, 1], ["tanh", "sigmoid"], np.float32, seed=[5, 6, 7], n_threads=1)
    ens.train_step(*_data(rng, 3, 5, 2, 1, np.float32), lr=0.3)
    for again in (pickle.loads(pickle.dumps(ens)), copy.deepcopy(ens)):
        assert again.params.tobytes() == ens.params.tobytes()
        assert again.seeds == ens.seeds and again.n_threads == 1
        assert again.activation == ens.activation and again.dtype == ens.dtype
        X = rng.standard_normal((4, 2))
        assert np.array_equal(again.predict(X), ens.predict(X))
    name, args = ens.__reduce__()[0], list(ens.__reduce__()[1])
    for position, bad in [(3, np.zeros((3, 2), np.float32)), (3, np.zeros((2, 17), np.float32)),
                          (3, np.zeros((3, 17))), (0, [2, -4, 1]), (1, ["bogus", "sigmoid"])]:
        with pytest.raises((ValueError, TypeError)):
            name(*(args[:position] + [bad] + args[position + 1:]))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_shared_X_is_read_in_place_not_copied_per_model(optimizer):
    # 200 models on one 0.8 MB data set, with bootstrap samples and validation data:
    # a copy per model would be 160 MB; the data are read where they lie (each model
    # has its own buffers for one batch: 200 x 32 rows).
    import tracemalloc
    rng = np.random.default_rng(13)
    K, n = 200, 2000
    X = rng.standard_normal((n, 50))
    Y = rng.uniform(0, 1, (n, 1))
    boot = rng.integers(0, n, (K, n))
    ens = MLPEnsemble(K, [50, 4, 1], seed=0, n_threads=1)
    tracemalloc.start()
    try:
        ens.fit(X, Y, epochs=1, batch_size=32, optimizer=optimizer, sample_indices=boot,
                validation_data=(X, Y), early_stopping=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, peak


def test_per_model_weights_of_a_shared_X_weigh_its_rows():
    rng = np.random.default_rng(14)
    K, n = 3, 17
    X = rng.standard_normal((n, 2))
    Y = rng.uniform(0, 1, n)
    w = rng.uniform(0, 1, (K, n))
    ens = MLPEnsemble(K, [2, 3, 1], seed=[0, 1, 2])
    history = ens.fit(X, Y, epochs=2, batch_size=4, momentum=0.5, sample_weight=w, seed=[3, 4, 5])
    for k in range(K):
        net = cmlp.MLP([2, 3, 1], seed=k)
        h = net.fit(X, Y, epochs=2, batch_size=4, momentum=0.5, sample_weight=w[k], seed=3 + k)
        assert np.array_equal(ens.params[k], net.params)
        assert list(history.loss[:, k]) == h.loss
