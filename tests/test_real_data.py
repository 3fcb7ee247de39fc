"""Real data bundled with scikit-learn (no download): digits and diabetes."""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import cmlp

# Seconds of training each: run by `-m slow` (.ci/run does), not by default.
pytestmark = pytest.mark.slow

pytest.importorskip("sklearn")
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPRegressor as SklearnMLPRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from cmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits.py"


def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)


@pytest.mark.parametrize("optimizer, settings", [("adam", dict(lr=0.001)),
                                                 ("sgd", dict(lr=0.05, momentum=0.9))])
def test_digits_reach_95_percent_on_held_out_images(optimizer, settings):
    X_train, X_test, y_train, y_test = digits()
    net = cmlp.MLP([64, 64, 10], activation=["relu", "softmax"], seed=0)
    history = net.fit(X_train, y_train, epochs=50, batch_size=32, loss="cross_entropy",
                      optimizer=optimizer, seed=0, **settings)
    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    assert accuracy >= 0.95
    assert history.loss[-1] < history.loss[0] / 10


def test_digits_with_the_sklearn_classifier():
    X_train, X_test, y_train, y_test = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier((64,), random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.95


def test_diabetes_r2_in_line_with_sklearns_mlp():
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    mean, std = y_train.mean(), y_train.std()
    y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    ours, theirs = [], []
    settings = dict(hidden_layer_sizes=(16,), max_iter=100, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(5):
            ours.append(MLPRegressor(random_state=seed, **settings)
                        .fit(X_train, y_train).score(X_test, y_test))
            theirs.append(SklearnMLPRegressor(random_state=seed, **settings)
                          .fit(X_train, y_train).score(X_test, y_test))
    # Same architecture, optimiser (Adam, lr 0.001) and epochs: the held-out
    # R^2 (about 0.3 on this split for both) agrees within seed-to-seed noise.
    assert np.mean(ours) > 0.2
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.05, (ours, theirs)


def test_the_digits_example_runs(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            cwd=tmp_path, check=True, timeout=600)
    assert "test accuracy" in result.stdout
    accuracy = float(result.stdout.split("test accuracy")[1].split("%")[0].strip(" :"))
    assert accuracy >= 95.0
