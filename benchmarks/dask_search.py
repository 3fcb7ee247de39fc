"""One grid search of 12 fits: serial, threads, loky and Dask; cmlp beside scikit-learn's MLP.

Run from a clone, after ``pip install ".[dask]"``::

    python benchmarks/dask_search.py             # 2 workers
    python benchmarks/dask_search.py --workers 4

The search: :class:`~sklearn.model_selection.GridSearchCV` over the digits
(1797 x 64, standardised), ``hidden_layer_sizes`` in {(32,), (64,)} and
``alpha`` in {1e-4, 1e-2}, 3 folds: 12 fits of 40 Adam epochs, then the refit.
Each backend runs it once, at one BLAS thread per fit:

``serial``   ``n_jobs=None``.
``threads``  ``joblib.parallel_backend("threading", n_jobs=workers)``.
``loky``     ``joblib.parallel_backend("loky", n_jobs=workers)``, joblib's processes.
``dask``     ``joblib.parallel_backend("dask")`` on a ``LocalCluster`` of ``workers``
             processes of one thread each (loopback), started before the clock.

Wall time is the search's; CPU time is that of this process and every process
below it (loky's and Dask's workers) over the search, from psutil. Each line
also says whether the search's ``cv_results_`` scores equal the serial run's.
"""
import argparse
import contextlib
import time
import warnings

import numpy as np

GRID = {"hidden_layer_sizes": [(32,), (64,)], "alpha": [1e-4, 1e-2]}


def cpu_seconds():
    """CPU time of this process and of every live process below it."""
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run(module, X, y, backend):
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(module.MLPClassifier(max_iter=40, random_state=0), GRID, cv=3)
    cpu, wall = cpu_seconds(), time.perf_counter()
    with backend():
        search.fit(X, y)
    return time.perf_counter() - wall, cpu_seconds() - cpu, search.cv_results_["mean_test_score"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # The optional engines are imported once the arguments are read, so that
    # --help works without the dask extra.
    import joblib
    from distributed import Client, LocalCluster
    from sklearn import neural_network
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    import cmlp.sklearn

    warnings.simplefilter("ignore", ConvergenceWarning)

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    backends = {
        "serial": contextlib.nullcontext,
        "threads": lambda: joblib.parallel_backend("threading", n_jobs=args.workers),
        "loky": lambda: joblib.parallel_backend("loky", n_jobs=args.workers,
                                                inner_max_num_threads=1),
        "dask": lambda: joblib.parallel_backend("dask"),
    }
    print(f"{'library':8} {'backend':8} {'wall (s)':>9} {'CPU (s)':>8} {'speed-up':>9} "
          "same scores as serial")
    with (threadpool_limits(1),
          LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                       dashboard_address=None) as cluster,
          Client(cluster)):
        for library, module in (("cmlp", cmlp.sklearn), ("sklearn", neural_network)):
            serial = None
            for name, backend in backends.items():
                wall, cpu, scores = run(module, X, y, backend)
                serial = serial or (wall, scores)
                print(f"{library:8} {name:8} {wall:9.2f} {cpu:8.2f} {serial[0] / wall:9.2f} "
                      f"{bool(np.array_equal(scores, serial[1]))}")


if __name__ == "__main__":
    main()
