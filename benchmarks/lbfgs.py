"""solver="lbfgs": cmlp's estimators beside scikit-learn's MLP, same problem, same settings.

Run from a clone, after ``pip install .`` and scikit-learn::

    python benchmarks/lbfgs.py              # every case, 3 repeats
    python benchmarks/lbfgs.py --repeats 1

Each case fits both estimators with ``solver="lbfgs"`` and the same
``hidden_layer_sizes``, ``activation``, ``alpha``, ``max_iter`` and
``random_state`` at one BLAS thread, and prints the best wall time of the
repeats, the final loss (``loss_``, both the loss scikit-learn reports: the
regressor's half squared error for one output, the classifier's log loss), the
iterations run, the time per iteration, and the ratio of the times
(scikit-learn's over cmlp's). The starting weights differ (each
library initialises its own), so the losses are those two runs reach, not one
path followed twice. The data sets are scikit-learn's usual small ones: the
digits (1797 x 64, 10 classes) and made-up regression and classification
problems.
"""
import argparse
import time
import warnings

import numpy as np
from sklearn import neural_network
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import cmlp.sklearn


def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def classification():
    return make_classification(n_samples=2000, n_features=20, n_informative=10, n_classes=3,
                               random_state=0)


def regression():
    X, y = make_regression(n_samples=2000, n_features=20, noise=5, random_state=0)
    return X, y / np.std(y)


CASES = [
    ("digits (64, 10 classes)", digits, "MLPClassifier", (64,)),
    ("classification (20, 3 classes)", classification, "MLPClassifier", (32, 32)),
    ("regression (20)", regression, "MLPRegressor", (32,)),
]


def best_time(Estimator, settings, X, y, repeats):
    best, model = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        model = Estimator(**settings).fit(X, y)
        best = min(best, time.perf_counter() - start)
    return best, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"{'case':32} {'library':8} {'time (s)':>9} {'loss_':>12} {'n_iter_':>8} "
          f"{'ms/iter':>8} {'ratio':>6}")
    with threadpool_limits(1):
        for name, data, estimator, hidden in CASES:
            X, y = data()
            settings = dict(hidden_layer_sizes=hidden, activation="relu", solver="lbfgs",
                            alpha=1e-4, max_iter=200, random_state=0)
            rows = {}
            for library, module in (("sklearn", neural_network), ("cmlp", cmlp.sklearn)):
                rows[library] = best_time(getattr(module, estimator), settings, X, y,
                                          args.repeats)
            for library, (seconds, model) in rows.items():
                ratio = rows["sklearn"][0] / seconds
                print(f"{name:32} {library:8} {seconds:9.3f} {model.loss_:12.6g} "
                      f"{model.n_iter_:8d} {1e3 * seconds / model.n_iter_:8.2f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
