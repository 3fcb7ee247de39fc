"""One epoch of plain SGD in one compiled call: the numbers of train_step, batch by batch.

``fit`` with plain SGD hands each epoch to ``Engine.train_epoch``, which gathers
every batch from the whole data set itself. Its parameters, history and
divergence reports must be those of the loop of ``train_step`` calls it
replaced, bit for bit, over the order ``fit`` documents; and the engine method
must refuse, never crash on, anything but the arrays it reads in place.
"""
import copy
import math

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cmlp
from cmlp import TrainingDivergedError
import reference
from reference import shuffled_order

# These tests fit sigmoid outputs to targets in [-1, 1] on purpose (the bits are
# the point, not the fit): fit's warning about unreachable targets is expected.
pytestmark = pytest.mark.filterwarnings("ignore:targets run from:UserWarning")


# (loss, layer sizes, activations): every loss the fused path admits, and one
# network wide enough that its products go to BLAS.
CASES = [
    ("mse", [3, 5, 2], ["tanh", "identity"]),
    ("half_sse", [3, 4, 2], ["relu", "sigmoid"]),
    ("bce", [3, 6, 2], ["tanh", "sigmoid"]),
    ("cross_entropy", [3, 6, 4], ["relu", "softmax"]),
    ("mse", [20, 40, 3], ["sigmoid", "identity"]),
]


def data_for(loss, sizes, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    k = sizes[-1]
    if loss == "cross_entropy":
        Y = np.eye(k, dtype=dtype)[rng.integers(0, k, size=n)]
    elif loss == "bce":
        Y = rng.integers(0, 2, size=(n, k)).astype(dtype)
    else:
        Y = rng.uniform(-1, 1, size=(n, k)).astype(dtype)
    return X, Y


def epoch_orders(n, epochs, seed, shuffle):
    """The sample order of each epoch, drawn as fit's docstring says."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield shuffled_order(rng, n) if shuffle else np.arange(n)


def train_steps_as_fit_did(net, X, Y, *, epochs, batch_size, lr, loss, shuffle, seed,
                           lr_growth=1.0):
    """The loop fit ran before its epochs were compiled: one train_step per batch.

    The learning rate is multiplied by lr_growth after each epoch. Returns the
    loss of each epoch (the batch-size-weighted mean, summed in batch order)
    and, if a batch loss was not finite, (epoch, batch, loss) of the first
    one, with the parameters as they were at that epoch's start.
    """
    n, losses = X.shape[0], []
    for epoch, order in enumerate(epoch_orders(n, epochs, seed, shuffle)):
        at_start, total = net.params.copy(), 0.0
        for batch, start in enumerate(range(0, n, batch_size)):
            rows = order[start:start + batch_size]
            value = net.train_step(X[rows], Y[rows], lr, loss=loss)
            if not math.isfinite(value):
                return losses, (epoch, batch, value, at_start)
            total += value * len(rows)
        losses.append(total / n)
        lr = lr * lr_growth
    return losses, None


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in_order"])
@pytest.mark.parametrize("loss, sizes, activation", CASES, ids=[c[0] + str(c[1][0]) for c in CASES])
def test_fit_equals_train_steps_bit_for_bit(dtype, shuffle, loss, sizes, activation):
    X, Y = data_for(loss, sizes, 23, dtype)   # batches of 5: the last holds 3
    net = cmlp.MLP(sizes, activation=activation, dtype=dtype, seed=3)
    twin = copy.deepcopy(net)
    history = net.fit(X, Y, epochs=3, batch_size=5, lr=0.2, loss=loss, shuffle=shuffle, seed=9)
    losses, diverged = train_steps_as_fit_did(twin, X, Y, epochs=3, batch_size=5, lr=0.2,
                                              loss=loss, shuffle=shuffle, seed=9)
    assert diverged is None
    np.testing.assert_array_equal(net.params, twin.params)
    assert history.loss == losses
    # The work buffers hold the last batch's pass, as after its train_step.
    assert net._engine.batch_size == twin._engine.batch_size == 3
    for mine, theirs in zip(net.activations + net.deltas, twin.activations + twin.deltas):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("batch_size", [1, 7, 23, 24, 10**30])
def test_every_batch_size_from_one_sample_to_all_of_them(dtype, batch_size):
    X, Y = data_for("mse", [3, 5, 2], 23, dtype, seed=1)
    net = cmlp.MLP([3, 5, 2], activation=["tanh", "identity"], dtype=dtype, seed=4)
    twin = copy.deepcopy(net)
    history = net.fit(X, Y, epochs=2, batch_size=batch_size, lr=0.05, seed=2)
    losses, _ = train_steps_as_fit_did(twin, X, Y, epochs=2, batch_size=min(batch_size, 23),
                                       lr=0.05, loss="mse", shuffle=True, seed=2)
    np.testing.assert_array_equal(net.params, twin.params)
    assert history.loss == losses


def test_class_indices_train_as_their_one_hot_rows(dtype):
    X, Y = data_for("cross_entropy", [3, 6, 4], 23, dtype)
    net = cmlp.MLP([3, 6, 4], activation=["relu", "softmax"], dtype=dtype, seed=3)
    twin = copy.deepcopy(net)
    net.fit(X, Y.argmax(axis=1), epochs=2, batch_size=5, lr=0.2, loss="cross_entropy", seed=1)
    train_steps_as_fit_did(twin, X, Y.argmax(axis=1), epochs=2, batch_size=5, lr=0.2,
                           loss="cross_entropy", shuffle=True, seed=1)
    np.testing.assert_array_equal(net.params, twin.params)


def test_train_epoch_takes_any_index_array_and_reports_each_batch_loss(dtype):
    # Not only permutations: repeated and missing samples, a one-column Y as (n,).
    X, Y = data_for("mse", [4, 6, 1], 10, dtype)
    net = cmlp.MLP([4, 6, 1], activation=["tanh", "identity"], dtype=dtype, seed=0)
    twin = copy.deepcopy(net)
    order = np.array([9, 9, 0, 3, 3, 3, 1, 2, 8, 9], dtype=np.intp)
    losses = np.full(5, -1.0)
    ran, total = net._engine.train_epoch(X, Y[:, 0], order, 3, 0.1, "mse", losses)
    expected = [twin.train_step(X[order[s:s + 3]], Y[order[s:s + 3]], 0.1)
                for s in range(0, 10, 3)]
    assert ran == 4
    assert total == ((expected[0] * 3 + expected[1] * 3) + expected[2] * 3) + expected[3] * 1
    assert losses[:4].tolist() == expected and losses[4] == -1.0   # room to spare is untouched
    np.testing.assert_array_equal(net.params, twin.params)


@given(st.data())
def test_train_epoch_equals_train_steps_for_any_batching(data):
    loss, activation = data.draw(st.sampled_from([
        ("mse", "identity"), ("half_sse", "tanh"), ("bce", "sigmoid"),
        ("cross_entropy", "softmax")]))
    sizes = data.draw(st.lists(st.sampled_from([1, 2, 3, 7, 40]), min_size=2, max_size=4))
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n = data.draw(st.integers(1, 40))
    batch_size = data.draw(st.integers(1, 45))
    X, Y = data_for(loss, sizes, n, dtype, seed=data.draw(st.integers(0, 2**16)))
    order = data.draw(st.one_of(st.none(), st.lists(st.integers(0, n - 1), min_size=n,
                                                    max_size=n).map(np.array)))
    net = cmlp.MLP(sizes, activation=["relu"] * (len(sizes) - 2) + [activation], dtype=dtype,
                   seed=data.draw(st.integers(0, 2**16)))
    twin = copy.deepcopy(net)
    losses = np.empty(-(-n // batch_size))
    ran, total = net._engine.train_epoch(X, Y, order, batch_size, 0.3, loss, losses)
    rows, expected, expected_total = np.arange(n) if order is None else order, [], 0.0
    for start in range(0, n, batch_size):
        batch = rows[start:start + batch_size]
        expected.append(twin.train_step(X[batch], Y[batch], 0.3, loss))
        expected_total += expected[-1] * len(batch)
        if not math.isfinite(expected[-1]):
            break
    assert ran == len(expected)
    assert total == expected_total or math.isnan(total) and math.isnan(expected_total)
    np.testing.assert_array_equal(losses[:ran], expected)
    np.testing.assert_array_equal(net.params, twin.params)
    np.testing.assert_array_equal(net.activations[-1], twin.activations[-1])


def test_train_epoch_stops_after_the_first_batch_whose_loss_is_not_finite(dtype):
    X, Y = data_for("mse", [2, 3, 1], 12, dtype)
    X[5] = np.inf   # in the second batch of four
    net = cmlp.MLP([2, 3, 1], activation=["tanh", "identity"], dtype=dtype, seed=0)
    twin = copy.deepcopy(net)
    losses = np.zeros(3)
    with np.errstate(all="ignore"):
        ran, _ = net._engine.train_epoch(X, Y, None, 4, 0.1, "mse", losses)
        expected = [twin.train_step(X[s:s + 4], Y[s:s + 4], 0.1) for s in (0, 4)]
    assert ran == 2
    assert losses[0] == expected[0] and math.isnan(losses[1]) and math.isnan(expected[1])
    assert losses[2] == 0.0
    np.testing.assert_array_equal(net.params, twin.params)


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in_order"])
def test_divergence_is_reported_where_the_train_steps_diverged(dtype, shuffle):
    # The learning rate triples after every epoch until, some epochs in, a
    # batch loss overflows.
    rng = np.random.default_rng(0)
    X = (3 * rng.normal(size=(64, 3))).astype(dtype)
    Y = np.tanh(rng.normal(size=(64, 2))).astype(dtype)
    net = cmlp.MLP([3, 16, 2], activation=["relu", "identity"], dtype=dtype, seed=0)
    twin = copy.deepcopy(net)
    opt = cmlp.SGD(net.params, net.grads, lr=0.001)

    def triple_lr(epoch, history):
        opt.lr = opt.lr * 3

    with np.errstate(all="ignore"):
        losses, diverged = train_steps_as_fit_did(twin, X, Y, epochs=40, batch_size=4, lr=0.001,
                                                  loss="mse", shuffle=shuffle, seed=6,
                                                  lr_growth=3)
        assert diverged is not None and diverged[0] > 2, "the reference must diverge, late"
        with pytest.raises(TrainingDivergedError) as caught:
            net.fit(X, Y, epochs=40, batch_size=4, optimizer=opt, shuffle=shuffle, seed=6,
                    callbacks=[triple_lr])
    epoch, batch, value, at_start = diverged
    error = caught.value
    assert (error.epoch, error.batch) == (epoch, batch)
    assert f"the loss became {value} at epoch {epoch}, batch {batch}." in str(error)
    assert error.history.loss == losses
    np.testing.assert_array_equal(net.params, at_start)
    assert opt.steps == 0   # the fused epochs never touch the optimizer's state


def test_a_parameter_that_overflows_with_a_finite_loss_is_caught_at_the_last_batch(dtype):
    # A saturated sigmoid output: the weights reach infinity, the loss stays finite.
    net = cmlp.MLP([1, 1], activation="sigmoid", dtype=dtype, seed=0)
    start = net.params.copy()
    X = np.full((3, 1), 10.0, dtype=dtype)
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match="parameter") as caught:
        net.fit(X, np.zeros(3), epochs=1, batch_size=2, loss="bce", lr=1e308)
    assert (caught.value.epoch, caught.value.batch) == (0, 1)
    np.testing.assert_array_equal(net.params, start)


def test_params_finite_agrees_with_numpy(dtype):
    net = cmlp.MLP([30, 20, 5], dtype=dtype, seed=0)
    assert net._engine.params_finite()
    info = np.finfo(dtype)
    for value in (np.nan, np.inf, -np.inf, info.max, -info.max, info.smallest_subnormal, -0.0):
        for where in (0, net.params.size // 2, net.params.size - 1):
            kept = net.params[where]
            net.params[where] = value
            assert net._engine.params_finite() == bool(np.isfinite(net.params).all()), (value, where)
            net.params[where] = kept


# ---------------------------------------------------------------------------
# Engine.train_epoch refuses what it cannot read in place, and changes nothing
# ---------------------------------------------------------------------------

N, N_IN, N_OUT = 10, 3, 2


def refusals(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    X = np.ones((N, N_IN), dtype=dtype)
    Y = np.ones((N, N_OUT), dtype=dtype)
    order = np.arange(N)
    losses = np.empty(4)
    cases = {
        "X of another dtype": (dict(X=X.astype(other)), TypeError, "network's dtype"),
        "X of ints": (dict(X=np.ones((N, N_IN), dtype=int)), TypeError, "network's dtype"),
        "X as a list": (dict(X=X.tolist()), TypeError, "numpy array"),
        "X too wide": (dict(X=np.ones((N, N_IN + 1), dtype=dtype)), ValueError, "shape"),
        "X of one sample, 1-D": (dict(X=X[0]), ValueError, "shape"),
        "X of no samples": (dict(X=X[:0], Y=Y[:0]), ValueError, "no samples"),
        "X strided": (dict(X=np.ones((N, 2 * N_IN), dtype=dtype)[:, ::2]), ValueError,
                      "C-contiguous"),
        "X in Fortran order": (dict(X=np.asfortranarray(X)), ValueError, "C-contiguous"),
        "X byte-swapped": (dict(X=X.astype(np.dtype(dtype).newbyteorder())), ValueError,
                           "byte order"),
        "Y of another dtype": (dict(Y=Y.astype(other)), TypeError, "network's dtype"),
        "Y of class indices": (dict(Y=np.zeros(N, dtype=int)), TypeError, "network's dtype"),
        "Y of other rows": (dict(Y=Y[:-1]), ValueError, "shape"),
        "Y of other columns": (dict(Y=np.ones((N, N_OUT + 1), dtype=dtype)), ValueError, "shape"),
        "Y strided": (dict(Y=np.ones((2 * N, N_OUT), dtype=dtype)[::2]), ValueError,
                      "C-contiguous"),
        "order of floats": (dict(order=order.astype(float)), TypeError, "intp"),
        "order of int32": (dict(order=order.astype(np.int32)), TypeError, "intp"),
        "order as a list": (dict(order=order.tolist()), TypeError, "intp"),
        "order too short": (dict(order=order[:-1]), ValueError, "one index per sample"),
        "order too long": (dict(order=np.arange(N + 1)), ValueError, "one index per sample"),
        "order 2-D": (dict(order=order.reshape(2, 5)), ValueError, "one index per sample"),
        "order strided": (dict(order=np.repeat(order, 2)[::2]), ValueError, "C-contiguous"),
        "order past the end": (dict(order=np.r_[order[:-1], N]), ValueError, r"order\[9\] = 10"),
        "order negative": (dict(order=np.r_[-1, order[1:]]), ValueError, r"order\[0\] = -1"),
        "order far out": (dict(order=np.r_[order[:-1], 2**62]), ValueError, r"\[0, 10\)"),
        "batch_size 0": (dict(batch_size=0), ValueError, "batch_size"),
        "batch_size negative": (dict(batch_size=-3), ValueError, "batch_size"),
        "batch_size a float": (dict(batch_size=3.0), TypeError, "integer"),
        "lr negative": (dict(lr=-0.1), ValueError, "lr"),
        "lr NaN": (dict(lr=math.nan), ValueError, "lr"),
        "unknown loss": (dict(loss="hinge"), ValueError, "loss must be one of"),
        "bce without a sigmoid output": (dict(loss="bce"), ValueError, "sigmoid"),
        "losses of float32": (dict(losses=np.empty(4, dtype=np.float32)), TypeError, "float64"),
        "losses as a list": (dict(losses=[0.0] * 4), TypeError, "float64"),
        "losses too short": (dict(losses=np.empty(3)), ValueError, "room for the 4 batches"),
        "losses 2-D": (dict(losses=np.empty((4, 1))), ValueError, "1-D"),
        "losses read-only": (dict(losses=np.empty(4)), ValueError, "writable"),
        "losses strided": (dict(losses=np.empty(8)[::2]), ValueError, "C-contiguous"),
        "losses over X": (dict(X="losses view"), ValueError, "share memory"),
        "losses over order": (dict(losses=order.view(np.float64)[:4]), ValueError,
                              "share memory"),
    }
    cases["losses read-only"][0]["losses"].flags.writeable = False
    defaults = dict(X=X, Y=Y, order=order, batch_size=3, lr=0.1, loss="mse", losses=losses)
    return cases, defaults


@pytest.mark.parametrize("case", sorted(refusals(np.float64)[0]))
def test_train_epoch_refuses_bad_inputs_and_leaves_the_network_as_it_was(dtype, case):
    cases, arguments = refusals(dtype)
    change, error, message = cases[case]
    arguments.update(change)
    if isinstance(arguments["X"], str):   # losses written over the samples they are read from
        arguments["X"] = arguments["losses"] = np.zeros(2 * N * N_IN)
        arguments["X"] = arguments["X"].view(dtype)[:N * N_IN].reshape(N, N_IN)
        arguments["losses"] = arguments["losses"][:4]
    net = cmlp.MLP([N_IN, 4, N_OUT], activation=["tanh", "identity"], dtype=dtype, seed=0)
    net.train_step(np.ones((3, N_IN)), np.ones((3, N_OUT)), 0.1)
    before = net.params.copy()
    with pytest.raises(error, match=message):
        net._engine.train_epoch(**arguments)
    np.testing.assert_array_equal(net.params, before)
    # ...and the engine works on as before.
    twin = copy.deepcopy(net)
    X, Y = np.ones((N, N_IN), dtype=dtype), np.ones((N, N_OUT), dtype=dtype)
    net._engine.train_epoch(X, Y, None, 5, 0.1, "mse", np.empty(2))
    for start in (0, 5):
        twin.train_step(X[start:start + 5], Y[start:start + 5], 0.1)
    np.testing.assert_array_equal(net.params, twin.params)


@pytest.mark.parametrize("buffer", ["params", "grads"])
def test_train_epoch_refuses_data_inside_the_networks_own_buffers(buffer):
    net = cmlp.MLP([2, 3, 2], activation=["tanh", "identity"], seed=0)
    own = getattr(net, buffer)           # 17 float64 entries
    before = net.params.copy()
    inside = own[:8].reshape(4, 2)
    outside = np.ones((4, 2))
    for X, Y, losses in [(inside, outside, np.empty(2)), (outside, inside, np.empty(2)),
                         (outside, outside, own[:2])]:
        with pytest.raises(ValueError, match="share memory"):
            net._engine.train_epoch(X, Y, None, 2, 0.1, "mse", losses)
    np.testing.assert_array_equal(net.params, before)


def test_shuffled_order_is_the_documented_permutation():
    rng, twin = np.random.default_rng(4), np.random.default_rng(4)
    for n in (0, 1, 2, 3, 10, 257):
        order = np.empty(n, dtype=np.intp)
        cmlp._kernels.shuffled_order(order, rng)
        np.testing.assert_array_equal(order, shuffled_order(twin, n))
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # rng's stream moved on by one draw of integers(2**64) per shuffle
    assert rng.random() == twin.random()


def test_the_shuffles_generator_is_xoshiro256starstar_seeded_by_splitmix64():
    # The first outputs for seed 0, as the algorithms' authors' C code gives
    # them: SplitMix64 from 0 starts 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, ...
    assert reference.splitmix64(0) == (0x9E3779B97F4A7C15, 0xE220A8397B1DCDAF)
    assert reference.splitmix64(0x9E3779B97F4A7C15)[1] == 0x6E789E6AA1B965F4
    u = reference.xoshiro256starstar_uniforms(0, 3)
    assert np.all((u >= 0) & (u < 1))


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937,
                                           np.random.Philox, np.random.SFC64])
def test_shuffled_order_seeds_from_any_bit_generator(bit_generator):
    rng, twin = np.random.Generator(bit_generator(7)), np.random.Generator(bit_generator(7))
    order = np.empty(1000, dtype=np.intp)
    cmlp._kernels.shuffled_order(order, rng)
    np.testing.assert_array_equal(order, shuffled_order(twin, 1000))


@pytest.mark.starts_threads
def test_shuffled_order_from_several_threads_is_each_a_permutation():
    # The bit generator's lock keeps the draws of concurrent shuffles apart.
    rng = np.random.default_rng(0)
    orders = [np.empty(20000, dtype=np.intp) for _ in range(4)]
    threads = [threading.Thread(target=cmlp._kernels.shuffled_order, args=(o, rng))
               for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(20000))


@pytest.mark.parametrize("order, rng, error, message", [
    (np.empty(3, dtype=np.int32), np.random.default_rng(0), ValueError, "intp"),
    (np.empty((3, 1), dtype=np.intp), np.random.default_rng(0), ValueError, "intp"),
    (np.empty(6, dtype=np.intp)[::2], np.random.default_rng(0), ValueError, "intp"),
    (np.empty(3, dtype=np.intp), np.random.PCG64(0), TypeError, "Generator"),
    (np.empty(3, dtype=np.intp), np.zeros(3), TypeError, "Generator"),
    (np.empty(3, dtype=np.intp), None, TypeError, "Generator"),
])
def test_shuffled_order_refuses_what_it_cannot_use(order, rng, error, message):
    with pytest.raises(error, match=message):
        cmlp._kernels.shuffled_order(order, rng)


# -- evaluate: the loss over a data set, without gradients or an update ----------

@pytest.mark.parametrize("loss, sizes, activation", CASES, ids=[c[0] + str(c[1][0]) for c in CASES])
@pytest.mark.parametrize("batch_size", [1, 4, 23, 100])
def test_evaluate_is_the_mean_loss_and_changes_no_parameter(loss, sizes, activation, batch_size):
    X, Y = data_for(loss, sizes, 23, np.float64, seed=3)
    net = cmlp.MLP(sizes, activation=activation, seed=2)
    net.train_step(X[:5], Y[:5], 0.1, loss)   # gradients from elsewhere, to be left alone
    params, grads = net.params.copy(), net.grads.copy()
    losses = np.empty(-(-23 // batch_size))
    ran, total = net._engine.evaluate(X, Y, batch_size, loss, losses)
    expected = reference.gradients(list(net.weights), list(net.biases), net.activation,
                                   X, Y, loss)[0]
    assert ran == len(losses)
    assert total / 23 == pytest.approx(expected, rel=1e-12)
    for b in range(ran):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        assert losses[b] == pytest.approx(reference.gradients(
            list(net.weights), list(net.biases), net.activation, X[rows], Y[rows], loss)[0],
            rel=1e-12)
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(net.grads, grads)


def test_validation_cross_entropy_comes_from_the_logits():
    # Logits 800 apart: softmax gives the true class a probability of exactly 0,
    # whose log no floor recovers; log-softmax of the logits gives -800.
    net = cmlp.MLP([1, 2], activation="softmax", seed=0)
    net.weights[0][...] = [[400.0], [-400.0]]
    net.biases[0][...] = 0
    X, Y = np.ones((2, 1)), np.array([[0.0, 1.0], [0.0, 1.0]])
    ran, total = net._engine.evaluate(X, Y, 2, "cross_entropy", np.empty(1))
    assert total / 2 == pytest.approx(800.0, rel=1e-12)
    history = net.fit(X, Y, epochs=1, lr=0.0, loss="cross_entropy", validation_data=(X, Y))
    assert history.val_loss == [pytest.approx(800.0, rel=1e-12)]


@pytest.mark.parametrize("case", ["X of another dtype", "Y of other rows", "batch_size 0",
                                  "unknown loss", "losses too short"])
def test_evaluate_refuses_what_train_epoch_refuses(case):
    cases, arguments = refusals(np.float64)
    change, error, message = cases[case]
    arguments.update(change)
    del arguments["order"], arguments["lr"]
    net = cmlp.MLP([N_IN, 4, N_OUT], activation=["tanh", "identity"], seed=0)
    before = net.params.copy()
    with pytest.raises(error, match=message):
        net._engine.evaluate(**arguments)
    np.testing.assert_array_equal(net.params, before)
