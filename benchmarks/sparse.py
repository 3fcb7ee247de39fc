"""Sparse input: cmlp's MLPClassifier beside scikit-learn's on a made-up text-like problem.

Run from a clone, after ``pip install .`` and scikit-learn::

    python benchmarks/sparse.py                        # 5000 x 20000 at 1%, 3 epochs
    python benchmarks/sparse.py --samples 2000 --epochs 2

The problem is bag-of-words-like: ``--samples`` rows of ``--features``
columns, ``--density`` of them nonzero (term counts 1-3, a few frequent
"words" much more common than the rest), and a label from a hidden linear
score of the words, so that there is something to learn. Both estimators fit
the same ``scipy.sparse.csr_matrix`` with Adam, the same
``hidden_layer_sizes``, ``batch_size``, ``alpha`` and a fixed number of
epochs (``tol=0``: no early stop), at one BLAS thread. Printed, for each:
the wall time per epoch (best of ``--repeats``), the final training loss,
the training accuracy, and the peak memory the fit allocated beyond the data
set (``tracemalloc``, in a separate one-epoch fit, as the tracing slows the
fit down); and beside them, for scale, cmlp's fit of each batch densified
(``X[batch].toarray()``, the alternative to a CSR kernel) and what a dense
copy of the data set would take.
"""
import argparse
import time
import tracemalloc
import warnings

import numpy as np
import scipy.sparse
from sklearn import neural_network
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import cmlp
import cmlp.sklearn


def text_like(n, n_features, density, seed=0):
    """A CSR matrix of term counts and labels from a linear score of the terms."""
    rng = np.random.default_rng(seed)
    per_row = max(1, int(round(density * n_features)))
    # Zipf-like word frequencies: a few words in many documents.
    weights = 1.0 / np.arange(1, n_features + 1) ** 0.8
    weights /= weights.sum()
    indices = np.concatenate([np.sort(rng.choice(n_features, per_row, replace=False, p=weights))
                              for _ in range(n)]).astype(np.int32)
    data = rng.integers(1, 4, indices.shape[0]).astype(np.float64)
    indptr = np.arange(0, n * per_row + 1, per_row)
    X = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n_features))
    score = X @ rng.normal(size=n_features)
    return X, (score > np.median(score)).astype(int)


def options(args):
    return dict(hidden_layer_sizes=(args.hidden,), solver="adam", batch_size=args.batch_size,
                max_iter=args.epochs, tol=0.0, n_iter_no_change=10**6, alpha=1e-4,
                learning_rate_init=1e-3, random_state=0, shuffle=True)


def timed_fit(make, X, y, epochs, repeats):
    best, model = np.inf, None
    for _ in range(repeats):
        model = make()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        best = min(best, time.perf_counter() - started)
    return best / epochs, model


def peak_memory(make, X, y):
    """Peak bytes allocated by a one-epoch fit (its model, buffers and temporaries)."""
    model = make()
    model.set_params(max_iter=1)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


class DensifiedBatches:
    """cmlp with each batch densified: the per-batch alternative to the CSR kernel."""

    def __init__(self, args):
        self.args = args

    def set_params(self, max_iter):
        self.args = argparse.Namespace(**{**vars(self.args), "epochs": max_iter})
        return self

    def fit(self, X, y):
        args = self.args
        net = cmlp.MLP([X.shape[1], args.hidden, 2], activation=["relu", "softmax"], seed=0)
        opt = cmlp.Adam(net.params, net.grads, lr=1e-3)
        rng = np.random.default_rng(0)
        engine = net._engine
        for _ in range(args.epochs):
            order = rng.permutation(X.shape[0])
            for start in range(0, X.shape[0], args.batch_size):
                rows = order[start:start + args.batch_size]
                engine.loss_and_grads(X[rows].toarray(), y[rows].astype(np.intp),
                                      "cross_entropy")
                opt.step()
        self.net_ = net
        return self


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--features", type=int, default=20000)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-densified", action="store_true",
                        help="leave out the per-batch densification run")
    args = parser.parse_args()

    X, y = text_like(args.samples, args.features, args.density)
    data_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    print(f"X: {X.shape[0]} x {X.shape[1]}, {X.nnz} nonzeros ({X.nnz / np.prod(X.shape):.2%}), "
          f"{data_bytes / 1e6:.1f} MB as CSR, {X.shape[0] * X.shape[1] * 8 / 1e6:.0f} MB dense; "
          f"hidden {args.hidden}, batch {args.batch_size}, {args.epochs} epochs of Adam, "
          "1 BLAS thread")
    runs = [("cmlp (CSR kernels)", lambda: cmlp.sklearn.MLPClassifier(**options(args))),
            ("scikit-learn", lambda: neural_network.MLPClassifier(**options(args)))]
    if not args.no_densified:
        runs.append(("cmlp, batches densified", lambda: DensifiedBatches(args)))
    print(f"{'':26} {'s/epoch':>8} {'loss':>8} {'accuracy':>9} {'peak MB':>8}")
    with threadpool_limits(1):
        times = {}
        for name, make in runs:
            per_epoch, model = timed_fit(make, X, y, args.epochs, args.repeats)
            times[name] = per_epoch
            if isinstance(model, DensifiedBatches):
                loss, accuracy = "", ""
                proba = model.net_.predict(X)
                accuracy = f"{np.mean(np.argmax(proba, axis=1) == y):9.3f}"
                loss = f"{'':>8}"
            else:
                loss = f"{model.loss_:8.4f}"
                accuracy = f"{model.score(X, y):9.3f}"
            peak = peak_memory(make, X, y)
            print(f"{name:26} {per_epoch:8.3f} {loss} {accuracy} {peak / 1e6:8.1f}")
    ratio = times["scikit-learn"] / times["cmlp (CSR kernels)"]
    print(f"scikit-learn's time per epoch over cmlp's: {ratio:.2f}")


if __name__ == "__main__":
    main()
