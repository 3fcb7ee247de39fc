"""Threads: one model shared by many never sees half an update; many models run as if alone.

Each model's compiled passes take turns on a per-model lock and release the GIL
while they compute. What must hold:

* a reader of a shared model sees its parameters as they were between two
  whole updates, never in the middle of one: snapshots (state dicts, pickles,
  saved files) and predictions taken while another thread trains or loads a
  state dict are each a whole state of the model;
* calls that depend on earlier calls (backward on the last forward) either
  work or raise a clear RuntimeError when another thread has replaced that
  state -- they never let the kernels index buffers of another batch size;
* models trained on separate threads end bit-identical to sequential runs, and
  threads sharing one model end as the same steps taken in turn;
* one model is never fitted from two threads at once (RuntimeError);
* a callback into the same model from inside a call (an ``__array__`` that
  trains) cannot deadlock, because inputs are read before the lock is taken;
* another thread runs while a large pass computes: the GIL is released.
"""
import io
import pickle
import sys
import threading
import time

import numpy as np
import pytest

import cmlp

JOIN_TIMEOUT = 120  # seconds; only a deadlock comes near it


def run_threads(targets):
    """Start every target on its own thread, join them all, re-raise the first error."""
    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as error:  # noqa: BLE001 -- reported below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "a thread is stuck: deadlock?"
    if errors:
        raise errors[0]


def sample_while(work, sample):
    """Run ``work`` on a thread and call ``sample`` until it is done; return the samples."""
    done = threading.Event()

    def worker():
        try:
            work()
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    samples = []
    while not done.is_set():
        samples.append(sample())
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "a thread is stuck: deadlock?"
    return samples


def regression_data(n=50, seed=0):
    """Targets in (0, 1), the range of the default sigmoid output."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, 1 / (1 + np.exp(-X @ rng.normal(size=(3, 2))))


def test_readers_see_whole_updates_only(dtype):
    # Precompute the model's output at every state a sequence of identical
    # steps passes through; concurrent readers must only ever see one of them.
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(32, 40)).astype(dtype), rng.normal(size=(32, 8)).astype(dtype)
    probe = rng.normal(size=(3, 40)).astype(dtype)
    n_writers, steps = 3, 60
    alone = cmlp.MLP([40, 80, 8], activation=["tanh", "identity"], dtype=dtype, seed=0)
    states = {alone.predict(probe).tobytes()}
    for _ in range(n_writers * steps):
        alone.train_step(X, Y, 0.01)
        states.add(alone.predict(probe).tobytes())
    shared = cmlp.MLP([40, 80, 8], activation=["tanh", "identity"], dtype=dtype, seed=0)
    seen = []
    done = threading.Event()

    def write():
        for _ in range(steps):
            shared.train_step(X, Y, 0.01)

    def read():
        while not done.is_set():
            seen.append(shared.predict(probe).tobytes())

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        run_threads([write] * n_writers)
    finally:
        done.set()
        for t in readers:
            t.join(JOIN_TIMEOUT)
    assert seen and set(seen) <= states, "a reader saw parameters in the middle of an update"
    np.testing.assert_array_equal(shared.params, alone.params)


class ForwardsWhenRead:
    """Targets whose conversion runs a forward of another batch size: the race
    between a backward and another thread's forward, made deterministic."""

    def __init__(self, net, X, Y):
        self.net, self.X, self.Y = net, X, Y

    def __array__(self, dtype=None, copy=None):
        self.net.forward(self.X)
        return np.asarray(self.Y, dtype=dtype)


@pytest.mark.parametrize("n_before,n_between", [(50, 1), (1, 50), (8, 0)])
def test_backward_whose_forward_was_replaced_is_refused(n_before, n_between):
    net = cmlp.MLP([4, 16, 3], seed=0)
    net.forward(np.ones((n_before, 4)))
    targets = ForwardsWhenRead(net, np.ones((n_between, 4)), np.zeros((n_before, 3)))
    with pytest.raises(RuntimeError, match="replaced by another thread's forward"):
        net.backward(targets)
    assert np.isfinite(net.grads).all()


def test_backward_after_another_threads_forward_is_refused_not_corrupting():
    # Forwards of ever-changing batch sizes race backwards that shaped their
    # targets for the batch before. Before the fix this was a segfault.
    net = cmlp.MLP([4, 64, 3], seed=0)
    refused = []

    def forward():
        for i in range(1500):
            net.forward(np.ones((1 + (i % 7) * 40, 4)))

    def backward():
        for _ in range(1500):
            n = net.activations[0].shape[0]
            try:
                loss = net.backward(np.zeros((n, 3)))
            except RuntimeError as error:
                assert "another thread" in str(error) or "forward pass first" in str(error)
                refused.append(error)
                continue
            except ValueError as error:  # Y shaped for a batch that is already gone
                assert "Y must have shape" in str(error)
                continue
            assert np.isfinite(loss)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many more interleavings than the default 5 ms
    try:
        run_threads([forward, forward, backward, backward])
    finally:
        sys.setswitchinterval(interval)
    assert np.isfinite(net.grads).all() and np.isfinite(net.params).all()
    # The model still computes exactly what a fresh one with its parameters does.
    twin = cmlp.MLP([4, 64, 3])
    twin.params[:] = net.params
    X = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_array_equal(net.forward(X), twin.forward(X))


def test_many_threads_hammering_one_model_with_every_call():
    rng = np.random.default_rng(2)
    net = cmlp.MLP([6, 12, 3], activation=["relu", "softmax"], seed=0)
    X, labels = rng.normal(size=(10, 6)), rng.integers(0, 3, size=10)
    n_calls = 300

    def trainer():
        for _ in range(n_calls):
            assert np.isfinite(net.train_step(X, labels, 0.01, loss="cross_entropy"))

    def predictor():
        for i in range(n_calls):
            out = net.predict(X[: 1 + i % 10])
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)

    def forward_backward():
        for i in range(n_calls):
            net.forward(X[: 1 + i % 10])
            try:
                net.backward(labels[: 1 + i % 10], loss="cross_entropy")
            except (RuntimeError, ValueError):
                pass  # another thread's forward came between: refused, as documented
            net.sgd_step(0.001)

    def viewer():
        for _ in range(n_calls):
            assert all(np.isfinite(value).all() for value in net.state_dict().values())
            assert [a.shape[1] for a in net.activations] == [6, 12, 3]

    run_threads([trainer, trainer, predictor, predictor, forward_backward, viewer])
    assert np.isfinite(net.params).all()
    np.testing.assert_allclose(net.predict(X).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("n_models", [2, 8])
def test_separate_models_in_parallel_equal_sequential(dtype, n_models):
    rng = np.random.default_rng(3)
    X, labels = rng.normal(size=(48, 30)).astype(dtype), rng.integers(0, 5, size=48)

    def make(seed):
        return cmlp.MLP([30, 64, 5], activation=["sigmoid", "softmax"], dtype=dtype, seed=seed)

    def train(net):
        for step in range(40):
            batch = slice((step * 16) % 48, (step * 16) % 48 + 16)
            net.train_step(X[batch], labels[batch], 0.1, loss="cross_entropy")
            net.forward(X[batch])
            net.backward(labels[batch], loss="cross_entropy")
            net.sgd_step(0.05)
            net.predict(X[:1])

    sequential = [make(seed) for seed in range(n_models)]
    for net in sequential:
        train(net)
    parallel = [make(seed) for seed in range(n_models)]
    run_threads([lambda net=net: train(net) for net in parallel])
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.grads, b.grads)


class Reentrant:
    """An array-like whose conversion trains the very model it is passed to."""

    def __init__(self, net, X, Y, value):
        self.net, self.X, self.Y, self.value = net, X, Y, value

    def __array__(self, dtype=None, copy=None):
        self.net.train_step(self.X, self.Y, 0.1)
        return np.asarray(self.value, dtype=dtype)


def test_reentrant_call_from_inside_a_call_does_not_deadlock():
    net = cmlp.MLP([3, 4, 2], seed=0)
    twin = cmlp.MLP([3, 4, 2], seed=0)
    X, Y = np.ones((2, 3)), np.zeros((2, 2))
    result = []
    run_threads([lambda: result.append(net.forward(Reentrant(net, X, Y, X)))])
    twin.train_step(X, Y, 0.1)
    np.testing.assert_array_equal(result[0], twin.forward(X))
    run_threads([lambda: net.train_step(X, Reentrant(net, X, Y, Y), 0.1)])
    twin.train_step(X, Y, 0.1)
    twin.train_step(X, Y, 0.1)
    np.testing.assert_array_equal(net.params, twin.params)
    # The conversion's own train_step is a forward of the same batch: backward
    # then differentiates that one, whole.
    run_threads([lambda: net.backward(Reentrant(net, X, Y, Y))])
    assert np.isfinite(net.grads).all()


def test_threads_on_separate_models_match_sequential_runs():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 20)), rng.normal(size=(64, 3))

    def train(net):
        for _ in range(50):
            net.train_step(X, Y, 0.05)

    sequential = [cmlp.MLP([20, 64, 3], seed=s) for s in range(4)]
    for net in sequential:
        train(net)
    parallel = [cmlp.MLP([20, 64, 3], seed=s) for s in range(4)]
    threads = [threading.Thread(target=train, args=(net,)) for net in parallel]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a.params, b.params)


def test_threads_sharing_one_model_take_turns():
    # Each step holds the model's lock: the result is that of *some* order of
    # the steps, and with identical steps every order gives the same numbers.
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(16, 8)), rng.normal(size=(16, 2))
    shared, alone = cmlp.MLP([8, 16, 2], seed=0), cmlp.MLP([8, 16, 2], seed=0)
    n_threads, steps = 8, 100

    def hammer():
        for _ in range(steps):
            shared.train_step(X, Y, 0.01)
            shared.predict(X[:3])

    threads = [threading.Thread(target=hammer) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(n_threads * steps):
        alone.train_step(X, Y, 0.01)
    np.testing.assert_array_equal(shared.params, alone.params)


@pytest.mark.starts_threads
def test_one_model_is_not_fitted_from_two_threads_at_once():
    X, Y = regression_data()
    net = cmlp.MLP([3, 2], seed=0)
    inside, release = threading.Event(), threading.Event()
    errors = []

    def wait_inside(epoch, history):
        inside.set()
        release.wait(timeout=30)

    def first():
        try:
            net.fit(X, Y, epochs=1, callbacks=[wait_inside])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(timeout=30)
    try:
        with pytest.raises(RuntimeError, match="two threads"):
            net.fit(X, Y, epochs=1)
    finally:
        release.set()
        thread.join()
    assert errors == []
    net.fit(X, Y, epochs=1)  # free again once the first fit has returned


def train_one(seed):
    X, Y = regression_data(n=40, seed=seed)
    net = cmlp.MLP([3, 8, 2], activation=["tanh", "identity"], seed=seed)
    net.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01, seed=seed)
    return net.params


@pytest.mark.starts_threads
def test_64_models_train_in_threads_as_they_do_alone():
    joblib = pytest.importorskip("joblib")
    alone = [train_one(seed) for seed in range(64)]
    together = joblib.Parallel(n_jobs=4, prefer="threads")(
        joblib.delayed(train_one)(seed) for seed in range(64))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def step_states(sizes, X, Y, steps):
    """The parameters after each of ``steps`` train_steps (and before the first)."""
    net = cmlp.MLP(sizes, activation=["tanh", "identity"], seed=0)
    states = {net.params.tobytes()}
    for _ in range(steps):
        net.train_step(X, Y, 1e-4)
        states.add(net.params.tobytes())
    return states


@pytest.mark.starts_threads
def test_snapshots_taken_while_another_thread_trains_are_whole():
    sizes, steps = [64, 64, 8], 300   # big enough for train_step to release the GIL
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((16, 64)), rng.standard_normal((16, 8))
    states = step_states(sizes, X, Y, steps)
    net = cmlp.MLP(sizes, activation=["tanh", "identity"], seed=0)

    def train():
        for _ in range(steps):
            net.train_step(X, Y, 1e-4)

    def snapshot():
        file = io.BytesIO()
        net.save(file)
        file.seek(0)
        return (np.concatenate([v.ravel() for v in net.state_dict().values()]),
                pickle.loads(pickle.dumps(net)).params, cmlp.load(file).params)

    snapshots = [one for three in sample_while(train, snapshot) for one in three]
    torn = sum(snapshot.tobytes() not in states for snapshot in snapshots)
    assert torn == 0, f"{torn} of {len(snapshots)} snapshots were never a state of the model"


@pytest.mark.starts_threads
def test_a_predict_never_sees_half_a_load_state_dict():
    net = cmlp.MLP([64, 64, 8], seed=0)
    states = [net.state_dict(), cmlp.MLP([64, 64, 8], seed=1).state_dict()]
    X = np.ones((16, 64))
    expected = []
    for state in states:
        net.load_state_dict(state)
        expected.append(net.predict(X))

    def load():
        for i in range(400):
            net.load_state_dict(states[i % 2])

    outputs = sample_while(load, lambda: net.predict(X))
    mixed = sum(not any(np.array_equal(out, e) for e in expected) for out in outputs)
    assert mixed == 0, f"{mixed} of {len(outputs)} predictions saw a mix of two states"


@pytest.mark.starts_threads
def test_state_dict_while_adam_trains_sees_no_half_step():
    # Each snapshot is compared with the states between two Adam steps.
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((64, 64)), rng.standard_normal((64, 8))
    twin = cmlp.MLP([64, 64, 8], activation=["tanh", "identity"], seed=0)
    opt = cmlp.Adam(twin.params, twin.grads, lr=1e-3)
    states = {twin.params.tobytes()}
    for _ in range(3):
        for start in range(0, 64, 16):
            twin._engine.loss_and_grads(X[start:start + 16], Y[start:start + 16])
            opt.step()
            states.add(twin.params.tobytes())
    net = cmlp.MLP([64, 64, 8], activation=["tanh", "identity"], seed=0)

    def train():
        net.fit(X, Y, epochs=3, batch_size=16, lr=1e-3, optimizer="adam", shuffle=False)

    snapshots = sample_while(
        train, lambda: np.concatenate([v.ravel() for v in net.state_dict().values()]))
    assert sum(s.tobytes() not in states for s in snapshots) == 0


@pytest.mark.starts_threads
def test_another_thread_runs_while_a_large_pass_computes():
    # A thread that holds the GIL through a call lets others in only around it:
    # within a switch interval of its start, and after it returns. So a tick
    # more than a few switch intervals inside a call proves the GIL was
    # released. The ticker sleeps between ticks, so it needs the GIL to wake and
    # keeps few ticks; the batch grows until a pass is long enough to have an
    # inside on this machine and build; retried because a loaded machine may
    # not schedule the ticker at all during a call.
    margin = 4 * sys.getswitchinterval()
    net = cmlp.MLP([512, 512, 512], seed=0)
    X = np.ones((2048, 512))
    assert X.shape[0] * net.params.size >= cmlp._kernels.gil_release_min_work()
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        for _ in range(40):
            first = len(ticks)
            start = time.perf_counter()
            net.forward(X)
            end = time.perf_counter()
            if end - start < 4 * margin and X.shape[0] < 32768:
                X = np.ones((2 * X.shape[0], 512))
                continue
            if any(start + margin < t < end - margin for t in ticks[first:]):
                return
    finally:
        stop.set()
        thread.join()
    pytest.fail("no other thread ran in the middle of forty large forward passes")
