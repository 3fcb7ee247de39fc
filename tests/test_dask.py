"""Beyond one machine: cmlp on a dask.distributed cluster gives the serial numbers.

Each test starts its own two-process LocalCluster on the loopback interface
(no dashboard, one thread per worker), waits a bounded time for it, and shuts
it down after. Skipped without dask.distributed (``pip install ".[dask]"`` from a clone).
"""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")
import joblib  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import cmlp  # noqa: E402
from cmlp.sklearn import MLPClassifier  # noqa: E402

TIMEOUT_S = 60
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address=None,
                                       worker_dashboard_address=None)
    try:
        with distributed.Client(cluster, timeout=TIMEOUT_S) as client:
            client.wait_for_workers(2, timeout=TIMEOUT_S)
            yield client
    finally:
        cluster.close(timeout=TIMEOUT_S)


def search():
    return GridSearchCV(MLPClassifier(max_iter=30, random_state=0),
                        {"hidden_layer_sizes": [(4,), (8,)], "solver": ["adam", "sgd", "lbfgs"]},
                        cv=2)


def test_a_grid_search_on_the_cluster_equals_the_serial_one(client):
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    serial = search().fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = search().fit(X, y)
    for key in ("mean_test_score", "std_test_score", "params"):
        assert list(remote.cv_results_[key]) == list(serial.cv_results_[key])
    assert (remote.best_estimator_.net_.params.tobytes()
            == serial.best_estimator_.net_.params.tobytes())


def train(seed):
    """One independent model, trained wherever it runs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 4))
    y = np.sin(X.sum(axis=1))
    net = cmlp.MLP([4, 16, 1], activation=["tanh", "identity"], seed=seed)
    net.fit(X, y, epochs=20, optimizer="adam", seed=seed)
    return net


def saved(net):
    buffer = io.BytesIO()
    cmlp.io.save(net, buffer)
    return buffer.getvalue()


def test_models_trained_by_client_map_come_back_as_local_ones(client):
    seeds = list(range(4))
    nets = client.gather(client.map(train, seeds), errors="raise")
    files = client.gather(client.map(lambda seed: saved(train(seed)), seeds))
    for seed, net, data in zip(seeds, nets, files):
        local = train(seed)
        assert net.params.tobytes() == local.params.tobytes()
        assert cmlp.load(io.BytesIO(data)).params.tobytes() == local.params.tobytes()


@pytest.mark.slow
@pytest.mark.spawns_python
def test_the_scaling_out_page_runs_as_written():
    """docs/guide/scaling.rst's Python examples, in order, as one session (a fresh
    interpreter, as if pasted into its prompt): each starts and stops its own
    two-process LocalCluster on loopback."""
    page = Path(__file__).resolve().parents[1] / "docs" / "guide" / "scaling.rst"
    blocks = []
    for block in page.read_text(encoding="utf-8").split(".. code-block:: python")[1:]:
        lines = []
        for line in block.splitlines()[1:]:
            if line and not line.startswith("   "):
                break
            lines.append(line[3:])
        blocks.append("\n".join(lines))
    assert len(blocks) == 3
    check = ("\nassert search.best_score_ > 0.9, search.best_score_"
             "\nassert [m.params.tobytes() for m in models] == [n.params.tobytes() for n in nets]"
             "\nassert train_one_thread(0).params.tobytes() == train(0).params.tobytes()"
             "\nprint('ran')\n")
    # python -c, not stdin: like an interactive prompt, -c gives the main module
    # no file, which the worker processes would otherwise try to import.
    done = subprocess.run([sys.executable, "-c", "\n".join(blocks) + check], text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.endswith("ran\n"), done.stderr[-3000:]
