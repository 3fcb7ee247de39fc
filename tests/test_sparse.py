"""Sparse input (scipy.sparse CSR/CSC): the first layer's CSR kernels, never a dense copy.

Sparse and dense inputs give the same numbers to rounding (the sums of the
first layer run in another order, so not bit for bit): checked against the
dense path, finite differences and PyTorch, for every pass, optimizer and
estimator; and malformed CSR arrays raise, never crash.
"""
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

scipy_sparse = pytest.importorskip("scipy.sparse")

import cmlp  # noqa: E402
from cmlp._kernels import Engine  # noqa: E402

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}
FORMATS = ["csr_matrix", "csr_array", "csc_matrix", "csc_array", "coo_array"]


def sparse_data(rng, n, n_in, density=0.1, duplicates=False, unsorted=False):
    """A random CSR matrix and its dense twin; optionally with repeated columns
    in a row and columns out of order, which the dense twin sums."""
    X = scipy_sparse.random(n, n_in, density=density, format="csr", random_state=rng,
                            data_rvs=lambda k: rng.normal(size=k))
    data, indices, indptr = X.data.copy(), X.indices.copy(), X.indptr.copy()
    if unsorted:
        for i in range(n):
            lo, hi = indptr[i], indptr[i + 1]
            order = rng.permutation(hi - lo)
            data[lo:hi], indices[lo:hi] = data[lo:hi][order], indices[lo:hi][order]
    if duplicates:
        # Repeat the first entry of every non-empty row, with another value.
        rows_d, rows_i, ptr = [], [], [0]
        for i in range(n):
            lo, hi = indptr[i], indptr[i + 1]
            d, c = list(data[lo:hi]), list(indices[lo:hi])
            if hi > lo:
                d.append(0.5)
                c.append(c[0])
            rows_d += d
            rows_i += c
            ptr.append(len(rows_d))
        data, indices, indptr = np.array(rows_d), np.array(rows_i, dtype=np.int32), np.array(ptr)
    S = scipy_sparse.csr_matrix((data, indices, indptr), shape=(n, n_in))
    dense = np.zeros((n, n_in))
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            dense[i, indices[k]] += data[k]
    return S, dense


def as_format(S, name):
    return getattr(scipy_sparse, name)(S)


def random_net(seed, dtype, sizes=None, output="sigmoid"):
    rng = np.random.default_rng(seed)
    if sizes is None:
        sizes = [int(rng.integers(5, 40))] + [int(rng.integers(1, 9))
                                              for _ in range(int(rng.integers(1, 4)))]
    hidden = [str(rng.choice(["sigmoid", "tanh", "relu", "identity"]))
              for _ in range(len(sizes) - 2)]
    return cmlp.MLP(sizes, activation=hidden + [output], dtype=dtype, seed=seed)


def twins(net):
    """Two networks of the same parameters."""
    other = cmlp.MLP(net.layer_sizes, activation=list(net.activation), dtype=net.dtype)
    other.params[:] = net.params
    return net, other


# ---------------------------------------------------------------------------
# The passes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", range(4))
def test_forward_and_predict_match_dense(seed, fmt, dtype):
    net = random_net(seed, dtype)
    rng = np.random.default_rng(100 + seed)
    S, dense = sparse_data(rng, 13, net.layer_sizes[0], duplicates=seed % 2 == 1,
                           unsorted=seed >= 2)
    X = as_format(S, fmt)
    expected = net.predict(dense)
    np.testing.assert_allclose(net.predict(X), expected, **TOL[dtype])
    np.testing.assert_allclose(net.forward(X), expected, **TOL[dtype])
    first = net.activations[0]
    assert scipy_sparse.issparse(first)
    np.testing.assert_allclose(first.toarray(), dense.astype(dtype), **TOL[dtype])
    twin = twins(net)[1]
    twin.forward(dense)
    for kept, reference in zip(net.activations[1:], twin.activations[1:]):
        np.testing.assert_allclose(kept, reference, **TOL[dtype])
    out = np.empty_like(expected)
    assert net.predict(X, out=out) is out
    np.testing.assert_allclose(out, expected, **TOL[dtype])


@pytest.mark.parametrize("sizes, output, loss", [
    ([30, 1], "sigmoid", "bce"),                 # the sparse layer is the output layer
    ([30, 4], "softmax", "cross_entropy"),
    ([30, 6, 1], "identity", "mse"),
    ([30, 5, 4, 3], "softmax", "cross_entropy"),
    ([30, 7, 2], "sigmoid", "half_sse"),
])
def test_train_step_and_backward_match_dense(sizes, output, loss, dtype):
    rng = np.random.default_rng(1)
    S, dense = sparse_data(rng, 9, sizes[0], density=0.2, duplicates=True, unsorted=True)
    Y = (rng.integers(0, sizes[-1], 9) if loss == "cross_entropy"
         else rng.uniform(0, 1, (9, sizes[-1])))
    a, b = twins(random_net(3, dtype, sizes, output))
    a.forward(S)
    b.forward(dense)
    np.testing.assert_allclose(a.backward(Y, loss), b.backward(Y, loss), **TOL[dtype])
    np.testing.assert_allclose(a.grads, b.grads, **TOL[dtype])
    for da, db in zip(a.deltas, b.deltas):
        np.testing.assert_allclose(da, db, **TOL[dtype])
    for _ in range(3):
        np.testing.assert_allclose(a.train_step(S, Y, 0.1, loss), b.train_step(dense, Y, 0.1, loss),
                                   **TOL[dtype])
    np.testing.assert_allclose(a.params, b.params, **TOL[dtype])
    # A dense pass after a sparse one (and back) takes its own layout.
    np.testing.assert_allclose(a.predict(dense), b.predict(S), **TOL[dtype])
    np.testing.assert_allclose(a.forward(dense), b.forward(S), **TOL[dtype])


def test_gradient_against_finite_differences():
    rng = np.random.default_rng(7)
    S, _ = sparse_data(rng, 6, 12, density=0.3, duplicates=True, unsorted=True)
    net = random_net(5, np.float64, [12, 4, 3], "softmax")
    Y = rng.integers(0, 3, 6)
    net.forward(S)
    net.backward(Y, "cross_entropy")
    analytic = net.grads.copy()
    numeric = np.empty_like(analytic)
    h = 1e-6
    for j in range(net.params.size):
        saved = net.params[j]
        net.params[j] = saved + h
        up = net._engine.sparse_loss_and_grads(*net._sparse(S).parts, Y, "cross_entropy")
        net.params[j] = saved - h
        down = net._engine.sparse_loss_and_grads(*net._sparse(S).parts, Y, "cross_entropy")
        net.params[j] = saved
        numeric[j] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_gradient_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    S, dense = sparse_data(rng, 8, 25, density=0.15, duplicates=True)
    net = random_net(2, np.float64, [25, 6, 1], "sigmoid")
    Y = rng.uniform(0, 1, (8, 1))
    loss = net.train_step(S, Y, 0.0, "mse")   # lr 0: the gradients, parameters kept
    coo = S.tocoo()
    X_t = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, size=S.shape,
                                  check_invariants=True)
    W0 = torch.tensor(net.weights[0], requires_grad=True)
    b0 = torch.tensor(net.biases[0], requires_grad=True)
    W1 = torch.tensor(net.weights[1], requires_grad=True)
    b1 = torch.tensor(net.biases[1], requires_grad=True)
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "identity": lambda z: z}[net.activation[0]]
    hidden = act(torch.sparse.mm(X_t, W0.T) + b0)
    out = torch.sigmoid(hidden @ W1.T + b1)
    torch_loss = torch.nn.functional.mse_loss(out, torch.tensor(Y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    grads = np.concatenate([t.grad.numpy().ravel() for t in (W0, b0, W1, b1)])
    np.testing.assert_allclose(net.grads, grads, rtol=1e-10, atol=1e-13)


def test_duplicates_and_unsorted_entries_sum_as_scipy_does():
    rng = np.random.default_rng(3)
    S, dense = sparse_data(rng, 10, 15, density=0.3, duplicates=True, unsorted=True)
    assert not S.has_canonical_format
    np.testing.assert_array_equal(S.toarray(), dense)
    net = random_net(1, np.float64, [15, 3, 2])
    np.testing.assert_allclose(net.predict(S), net.predict(dense), rtol=1e-12)


def test_empty_rows_and_an_empty_matrix():
    net = random_net(1, np.float64, [15, 3, 2], "identity")
    empty_rows = scipy_sparse.csr_array((4, 15))
    np.testing.assert_allclose(net.predict(empty_rows), net.predict(np.zeros((4, 15))))
    assert net.predict(scipy_sparse.csr_array((0, 15))).shape == (0, 2)
    net.train_step(empty_rows, np.zeros((4, 2)), 0.1)


def test_float32_network_takes_float64_and_int_data():
    net = random_net(2, np.float32, [10, 3, 1])
    rng = np.random.default_rng(0)
    S, dense = sparse_data(rng, 5, 10, density=0.4)
    np.testing.assert_allclose(net.predict(S), net.predict(dense), **TOL[np.float32])
    ints = scipy_sparse.csr_array((np.array([1, 2]), np.array([0, 9]), np.array([0, 1, 2])),
                                  shape=(2, 10))
    np.testing.assert_allclose(net.predict(ints), net.predict(ints.toarray()), rtol=1e-6)


# ---------------------------------------------------------------------------
# fit: every optimizer and option, against the dense fit
# ---------------------------------------------------------------------------

FIT_CASES = [
    dict(optimizer="sgd", lr=0.1),                              # fused, one call per epoch
    dict(optimizer="sgd", lr=0.1, shuffle=False),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    dict(optimizer="adam", lr=0.01),
    dict(optimizer="adam", lr=0.01, shuffle=False, weight_decay=1e-3),
    dict(optimizer="sgd", lr=0.1, alpha=1e-2),
    dict(optimizer="sgd", lr=0.1, sample_weight=True),
    dict(optimizer="adam", lr=0.01, sample_weight=True, shuffle=False),
    dict(optimizer="lbfgs"),
    dict(optimizer="lbfgs", sample_weight=True, alpha=1e-3),
]


@pytest.mark.parametrize("case", FIT_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_fit_matches_dense(case, dtype):
    rng = np.random.default_rng(4)
    S, dense = sparse_data(rng, 61, 40, density=0.1, duplicates=True)
    y = rng.integers(0, 3, 61)
    options = dict(case)
    if options.pop("sample_weight", False):
        options["sample_weight"] = rng.uniform(0.1, 2, 61)
    a, b = twins(random_net(6, dtype, [40, 8, 3], "softmax"))
    epochs = 5
    ha = a.fit(S, y, epochs=epochs, batch_size=16, loss="cross_entropy", seed=0, **options)
    hb = b.fit(dense, y, epochs=epochs, batch_size=16, loss="cross_entropy", seed=0, **options)
    tol = TOL[dtype] if dtype == np.float32 else dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ha.loss, hb.loss, **tol)
    np.testing.assert_allclose(a.params, b.params, **tol)


def test_fit_with_sparse_validation_data_and_early_stopping():
    rng = np.random.default_rng(8)
    S, dense = sparse_data(rng, 80, 30, density=0.1)
    y = (dense.sum(axis=1) > 0).astype(int)
    S_val, dense_val = sparse_data(rng, 20, 30, density=0.1)
    y_val = (dense_val.sum(axis=1) > 0).astype(int)
    a, b = twins(random_net(9, np.float64, [30, 8, 2], "softmax"))
    common = dict(epochs=40, batch_size=8, lr=0.5, loss="cross_entropy", seed=1,
                  early_stopping=3)
    ha = a.fit(as_format(S, "csc_array"), y, validation_data=(S_val, y_val), **common)
    hb = b.fit(dense, y, validation_data=(dense_val, y_val), **common)
    assert ha.best_epoch == hb.best_epoch and ha.stop_reason == hb.stop_reason
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, rtol=1e-9)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-8, atol=1e-10)
    # Dense training data with sparse validation data, and the reverse.
    c, d = twins(random_net(9, np.float64, [30, 8, 2], "softmax"))
    hc = c.fit(dense, y, validation_data=(S_val, y_val), **common)
    hd = d.fit(S, y, validation_data=(dense_val, y_val), **common)
    np.testing.assert_allclose(hc.val_loss, hd.val_loss, rtol=1e-9)


def test_fit_refuses_nan_and_wrong_width():
    net = random_net(1, np.float64, [10, 3, 1])
    X = scipy_sparse.csr_array(np.eye(10)[:4])
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net.fit(bad, np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        net.fit(scipy_sparse.csr_array((4, 11)), np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        net.predict(scipy_sparse.csr_array((4, 9)))


def test_fit_does_not_densify():
    """20k features, 1% dense: a dense copy of X would be 64 MB (a batch, 1.6 MB)."""
    rng = np.random.default_rng(0)
    n, n_in = 400, 20000
    X = scipy_sparse.random(n, n_in, density=0.01, format="csr", random_state=rng)
    y = rng.integers(0, 2, n)
    net = cmlp.MLP([n_in, 16, 2], activation=["relu", "softmax"], seed=0)
    for optimizer in ("sgd", "adam"):
        tracemalloc.start()
        net.fit(X, y, epochs=2, batch_size=10, loss="cross_entropy", optimizer=optimizer,
                seed=0, lr=0.01)
        net.predict(X)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # The parameters and the optimizer's state are a few MB; X is 0.96 MB.
        assert peak < 20e6, peak


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("options", [dict(solver="lbfgs", max_iter=5),
                                     dict(solver="adam", max_iter=2, early_stopping=True),
                                     dict(solver="sgd", max_iter=2, batch_size=10)])
def test_estimators_and_lbfgs_do_not_densify(options):
    """The estimators (their validation, the early-stopping split) and full-batch
    L-BFGS keep X sparse: a dense copy would be 64 MB. Two hidden units: SciPy's
    L-BFGS-B keeps 25 float64 vectors of the parameters (8 MB of 40,000 here)."""
    sk = pytest.importorskip("cmlp.sklearn")
    rng = np.random.default_rng(0)
    X = scipy_sparse.random(400, 20000, density=0.01, format="csr", random_state=rng)
    y = rng.integers(0, 2, 400)
    model = sk.MLPClassifier((2,), random_state=0, **options)
    tracemalloc.start()
    model.fit(X, y)
    model.predict_proba(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20e6, peak


# ---------------------------------------------------------------------------
# Malformed CSR arrays: an exception, never a crash
# ---------------------------------------------------------------------------

def malformed(kind):
    data = np.array([1.0, 2.0, 3.0])
    indices = np.array([0, 2, 1], dtype=np.int32)
    indptr = np.array([0, 2, 3])
    if kind == "index too large":
        indices[1] = 10**6
    elif kind == "negative index":
        indices[1] = -1
    elif kind == "falling indptr":
        indptr = np.array([0, 3, 2])
    elif kind == "indptr past the entries":
        indptr = np.array([0, 2, 50])
    elif kind == "negative indptr":
        indptr = np.array([-5, 2, 3])
    return data, indices, indptr


KINDS = ["index too large", "negative index", "falling indptr", "indptr past the entries",
         "negative indptr"]


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_csr_is_refused_before_any_kernel(kind):
    data, indices, indptr = malformed(kind)
    X = scipy_sparse.csr_matrix((3, 3))
    X.data, X.indices, X.indptr = data, indices, indptr   # past scipy's own checks
    net = random_net(0, np.float64, [3, 2, 1])
    before = net.params.copy()
    for call in (lambda: net.predict(X), lambda: net.forward(X),
                 lambda: net.train_step(X, np.zeros(2), 0.1),
                 lambda: net.fit(X, np.zeros(2), epochs=1),
                 lambda: net.fit(X, np.zeros(2), epochs=1, optimizer="adam")):
        with pytest.raises(ValueError, match="CSR"):
            call()
    np.testing.assert_array_equal(net.params, before)


def test_engine_checks_its_own_sparse_arguments():
    """The engine is reachable from Python: every malformed array raises in a
    child process (a crash would kill the child, not pytest)."""
    code = textwrap.dedent("""
        KINDS = KINDS_GIVEN
        import numpy as np
        from cmlp._kernels import Engine
        e = Engine([3, 2, 1], [1, 1], np.float64)
        Y = np.zeros((2, 1))
        losses = np.empty(2)
        def cases():
            for kind in KINDS:
                data = np.array([1.0, 2.0, 3.0]); ind = np.array([0, 2, 1], dtype=np.intc)
                ptr = np.array([0, 2, 3], dtype=np.intp)
                if kind == "index too large": ind[1] = 10**6
                if kind == "negative index": ind[1] = -1
                if kind == "falling indptr": ptr[:] = [0, 3, 2]
                if kind == "indptr past the entries": ptr[:] = [0, 2, 50]
                if kind == "negative indptr": ptr[:] = [-5, 2, 3]
                yield data, ind, ptr
            yield np.ones(2), np.zeros(3, np.intc), np.array([0, 1, 2], np.intp)
            yield np.ones(3), np.zeros(3, np.int64), np.array([0, 1, 3], np.intp)
            yield np.ones(3, np.float32), np.zeros(3, np.intc), np.array([0, 1, 3], np.intp)
            yield np.ones(3), np.zeros(3, np.intc), np.array([], np.intp)
            yield np.ones(3), np.zeros(3, np.intc)[::-1], np.array([0, 1, 3], np.intp)
            yield np.ones(3), np.zeros(3, np.intc), np.array([0, 1, 3], np.intp)[::-1]
        raised = 0
        for parts in cases():
            for call in (lambda: e.sparse_forward(*parts),
                         lambda: e.sparse_forward(*parts, keep=False),
                         lambda: e.sparse_train_step(*parts, Y, 0.1),
                         lambda: e.sparse_loss_and_grads(*parts, Y, "mse", None, None, 0, 2),
                         lambda: e.sparse_loss_and_grads(*parts, Y, "mse", None, None, 1, 5),
                         lambda: e.sparse_train_epoch(*parts, Y, None, 1, 0.1, "mse", losses),
                         lambda: e.sparse_evaluate(*parts, Y, 1, "mse", losses),
                         lambda: e.sparse_predicts_finite(*parts, 1)):
                try:
                    call()
                except (ValueError, TypeError):
                    raised += 1
        print(raised)
    """).replace("KINDS_GIVEN", repr(KINDS))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # Every call on every malformed case raises (a few shapes of the last
    # ones happen to be well-formed for a call: those return).
    assert int(done.stdout) >= 8 * len(KINDS) + 8 * 5, done.stdout


def test_engine_order_rows_are_checked():
    e = Engine([3, 2, 1], [1, 1], np.float64)
    parts = (np.ones(3), np.array([0, 1, 2], np.intc), np.array([0, 1, 2, 3], np.intp))
    Y = np.zeros((3, 1))
    with pytest.raises(ValueError, match="order"):
        e.sparse_train_epoch(*parts, Y, np.array([0, 1, 5], np.intp), 2, 0.1, "mse",
                             np.empty(2))
    with pytest.raises(TypeError, match="order"):
        e.sparse_loss_and_grads(*parts, Y, "mse", None, [0, 1, 2], 0, 2)


def test_csr_subclass_lying_about_its_shape():
    class Liar(scipy_sparse.csr_matrix):
        lying = False

        @property
        def nnz(self):
            return 10**9 if self.lying else super().nnz

    X = Liar(scipy_sparse.random(4, 6, density=0.5, format="csr", random_state=0))
    X.lying = True   # the sizes come from the arrays, never from nnz
    net = random_net(0, np.float64, [6, 2, 1])
    np.testing.assert_allclose(net.predict(X), net.predict(X.toarray()), rtol=1e-12)


# ---------------------------------------------------------------------------
# The scikit-learn estimators
# ---------------------------------------------------------------------------

def text_like(n=150, n_in=300, seed=0):
    rng = np.random.default_rng(seed)
    X = scipy_sparse.random(n, n_in, density=0.05, format="csr", random_state=rng)
    w = rng.normal(size=n_in)
    score = X @ w
    return X, (score > np.median(score)).astype(int), score


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc_matrix"])
def test_estimators_match_dense(solver, fmt):
    sk = pytest.importorskip("cmlp.sklearn")
    X, y, score = text_like()
    Xs = as_format(X, fmt)
    options = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=15, random_state=0,
                   learning_rate_init=0.01)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sk.MLPClassifier(**options).fit(Xs, y)
        b = sk.MLPClassifier(**options).fit(X.toarray(), y)
        np.testing.assert_allclose(a.predict_proba(Xs), b.predict_proba(X.toarray()), rtol=1e-7,
                                   atol=1e-10)
        np.testing.assert_array_equal(a.predict(Xs), b.predict(X.toarray()))
        np.testing.assert_allclose(a.predict_log_proba(Xs), b.predict_log_proba(X.toarray()),
                                   rtol=1e-7)
        r = sk.MLPRegressor(**options).fit(Xs, score)
        q = sk.MLPRegressor(**options).fit(X.toarray(), score)
        np.testing.assert_allclose(r.predict(Xs), q.predict(X.toarray()), rtol=1e-7, atol=1e-10)
        if solver != "lbfgs":
            a.partial_fit(Xs, y)
            b.partial_fit(X.toarray(), y)
            np.testing.assert_allclose(a.predict_proba(Xs), b.predict_proba(X.toarray()),
                                       rtol=1e-7, atol=1e-10)


def test_estimator_early_stopping_and_sample_weight_on_sparse():
    sk = pytest.importorskip("cmlp.sklearn")
    X, y, _ = text_like(seed=1)
    w = np.random.default_rng(0).uniform(0.5, 2, X.shape[0])
    options = dict(hidden_layer_sizes=(8,), early_stopping=True, max_iter=30, random_state=0,
                   learning_rate_init=0.01, n_iter_no_change=5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sk.MLPClassifier(**options).fit(X, y, sample_weight=w)
        b = sk.MLPClassifier(**options).fit(X.toarray(), y, sample_weight=w)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.validation_scores_, b.validation_scores_)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X.toarray()), rtol=1e-7,
                               atol=1e-10)


def test_estimators_declare_sparse_input():
    sk = pytest.importorskip("cmlp.sklearn")
    for estimator in (sk.MLPClassifier(), sk.MLPRegressor()):
        assert estimator.__sklearn_tags__().input_tags.sparse


def test_arrays_rewritten_by_another_thread_during_an_epoch():
    """Another thread writing out-of-range indices and row pointers into the
    data set while epochs read it: each batch is checked as it is gathered, so
    an epoch raises ValueError (or runs, if the writes missed it), never crashes."""
    code = textwrap.dedent("""
        import threading
        import numpy as np
        from cmlp._kernels import Engine
        rng = np.random.default_rng(0)
        n, n_in = 400, 50
        counts = rng.integers(0, 6, n)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        ind = rng.integers(0, n_in, ptr[-1]).astype(np.intc)
        data = rng.normal(size=ptr[-1])
        Y = rng.uniform(0, 1, (n, 1))
        order = np.arange(n, dtype=np.intp)
        e = Engine([n_in, 64, 1], [2, 1], np.float64)
        losses = np.empty(n)
        stop = False
        def vandal():
            k = 0
            while not stop:
                i = k % ind.shape[0]
                saved_ind, saved_ptr = ind[i], ptr[1 + k % n]
                ind[i] = 10**6 if k % 2 else -3
                ptr[1 + k % n] = 10**9 if k % 3 else -7
                ind[i], ptr[1 + k % n] = saved_ind, saved_ptr
                k += 1
        t = threading.Thread(target=vandal)
        t.start()
        outcomes = set()
        for _ in range(300):
            try:
                e.sparse_train_epoch(data, ind, ptr, Y, order, 1, 0.01, "mse", losses)
                outcomes.add("ran")
            except ValueError:
                outcomes.add("raised")
        stop = True
        t.join()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok"]


def test_training_allocates_nothing_per_batch():
    """After the first epoch has sized the buffers, a sparse epoch (fused or one
    call per batch) allocates no array: the traced peak stays under a few KB."""
    rng = np.random.default_rng(0)
    S, _ = sparse_data(rng, 300, 2000, density=0.02)
    net = cmlp.MLP([2000, 32, 3], activation=["relu", "softmax"], seed=0)
    X = net._sparse(S)
    Y = np.eye(3)[rng.integers(0, 3, 300)]
    e = net._engine
    order = np.arange(300, dtype=np.intp)
    losses = np.empty(300)
    e.reserve_sparse(X.most_nonzeros(20), 20)
    e.sparse_train_epoch(*X.parts, Y, order, 20, 0.01, "cross_entropy", losses)
    cmlp._kernels.shuffled_order(order, np.random.default_rng(1))
    tracemalloc.start()
    e.sparse_train_epoch(*X.parts, Y, order, 20, 0.01, "cross_entropy", losses)
    for start in range(0, 300, 20):
        e.sparse_loss_and_grads(*X.parts, Y, "cross_entropy", None, order, start, 20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16_000, peak
