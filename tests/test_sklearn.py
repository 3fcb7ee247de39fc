"""The scikit-learn estimators: scikit-learn's own checks, and their use in its tools."""
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from cmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Fits that stop at max_iter warn, as scikit-learn's do; that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([MLPRegressor(), MLPClassifier(),
                          MLPClassifier(optimizer="sgd", lr=0.05, dtype="float32"),
                          MLPRegressor(early_stopping=True, max_iter=50, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)



def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_classifier_learns_iris_and_reports_in_sklearns_layout():
    X, y = iris()
    model = MLPClassifier((16, 8), lr=0.01, max_iter=300, random_state=0).fit(X, y)
    assert model.score(X, y) > 0.95
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])
    assert [W.shape for W in model.coefs_] == [(4, 16), (16, 8), (8, 3)]
    assert [b.shape for b in model.intercepts_] == [(16,), (8,), (3,)]
    np.testing.assert_array_equal(model.coefs_[1], model.net_.weights[1].T)
    assert model.n_layers_ == 4 and model.n_outputs_ == 3 and model.out_activation_ == "softmax"
    assert model.n_iter_ == len(model.loss_curve_) <= 300


def test_string_labels_and_binary_problems():
    X, y = iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = MLPClassifier((8,), lr=0.01, random_state=0).fit(X, names)
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert (model.predict(X) == names).mean() > 0.9
    binary = MLPClassifier((8,), lr=0.01, random_state=0).fit(X[y < 2], names[y < 2])
    assert binary.predict_proba(X[:3]).shape == (3, 2)


def test_regressor_single_and_multi_output():
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=1, random_state=0)
    y = y / 100
    model = MLPRegressor((32,), lr=0.01, max_iter=400, random_state=0).fit(X, y)
    assert model.predict(X).shape == (200, 2) and model.score(X, y) > 0.98
    single = MLPRegressor((32,), lr=0.01, max_iter=400, random_state=0).fit(X, y[:, 0])
    assert single.predict(X).shape == (200,) and single.score(X, y[:, 0]) > 0.98


def test_partial_fit_runs_one_epoch_and_carries_the_optimizer_state():
    X, y = iris()
    stepped = MLPClassifier((8,), lr=0.01, batch_size=16, random_state=3)
    stepped.partial_fit(X, y, classes=[0, 1, 2])
    assert stepped.n_iter_ == 1 and len(stepped.loss_curve_) == 1
    for _ in range(4):
        stepped.partial_fit(X, y)
    assert stepped.n_iter_ == 5
    # Five one-epoch calls are five epochs of one fit: the Adam state and the
    # shuffling stream carry over from call to call.
    whole = MLPClassifier((8,), lr=0.01, batch_size=16, random_state=3, max_iter=5).fit(X, y)
    np.testing.assert_array_equal(stepped.net_.params, whole.net_.params)
    assert stepped.loss_curve_ == whole.loss_curve_


def test_partial_fit_needs_the_classes_first():
    X, y = iris()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    model = MLPClassifier((4,)).partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert model.predict_proba(X).shape == (150, 3)
    with pytest.raises(ValueError, match="not among classes_"):
        MLPClassifier((4,)).partial_fit(X, y + 1, classes=[0, 1, 2])


def test_warm_start_continues_and_cold_start_restarts():
    X, y = make_regression(n_samples=100, n_features=3, noise=1, random_state=1)
    y = y / 100
    model = MLPRegressor((8,), lr=0.01, max_iter=5, warm_start=True, random_state=0)
    model.fit(X, y)
    first = model.net_.params.copy()
    model.fit(X, y)
    assert model.n_iter_ == 10 and len(model.loss_curve_) == 10
    assert model.loss_curve_[5] < model.loss_curve_[0]
    model.set_params(warm_start=False).fit(X, y)
    assert model.n_iter_ == 5
    np.testing.assert_array_equal(model.net_.params, first)  # same seed, same fresh start


def test_tol_stops_training_as_sklearn_does():
    X, y = iris()
    model = MLPClassifier((16,), lr=0.05, max_iter=2000, tol=1e-3, n_iter_no_change=5,
                          random_state=0).fit(X, y)
    # scikit-learn's rule: stop once more than n_iter_no_change epochs in a row
    # failed to beat the best loss so far by tol.
    best, stalled, stopped_at = np.inf, 0, None
    for epoch, loss in enumerate(model.loss_curve_):
        stalled = stalled + 1 if loss > best - 1e-3 else 0
        best = min(best, loss)
        if stalled > 5:
            stopped_at = epoch
            break
    assert stopped_at == model.n_iter_ - 1 < 1999


def test_early_stopping_keeps_the_best_epoch():
    X, y = iris()
    model = MLPClassifier((16,), lr=0.05, max_iter=500, early_stopping=True,
                          n_iter_no_change=5, random_state=0).fit(X, y)
    assert model.n_iter_ < 500 and model.score(X, y) > 0.9


def test_same_random_state_same_model_and_pickle_round_trip():
    X, y = iris()
    a = MLPClassifier((8,), max_iter=20, random_state=7).fit(X, y)
    b = MLPClassifier((8,), max_iter=20, random_state=7).fit(X, y)
    np.testing.assert_array_equal(a.net_.params, b.net_.params)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.predict_proba(X), a.predict_proba(X))
    c.partial_fit(X, y)
    a.partial_fit(X, y)
    np.testing.assert_array_equal(c.net_.params, a.net_.params)


def test_pipeline_grid_search_and_cross_validation():
    X, y = iris()
    pipeline = make_pipeline(StandardScaler(), MLPClassifier((8,), lr=0.01, max_iter=100,
                                                             random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                                     "mlpclassifier__optimizer": ["adam", "sgd"]},
                          cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.85
    assert set(search.best_params_) == {"mlpclassifier__hidden_layer_sizes",
                                        "mlpclassifier__optimizer"}


@pytest.mark.parametrize("bad, message", [
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(activation="softmax"), "activation"),
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(max_iter=0), "max_iter"),
    (dict(batch_size=0), "batch_size"),
    (dict(early_stopping=True, validation_fraction=1.5), "validation_fraction"),
])
def test_bad_parameters_raise_at_fit(bad, message):
    X, y = iris()
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**bad).fit(X, y)


def test_multi_label_targets_train_a_sigmoid_output_with_bce():
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4,
                                          random_state=0)
    X = StandardScaler().fit_transform(X)
    model = MLPClassifier((32,), lr=0.01, max_iter=300, random_state=0).fit(X, Y)
    assert model.out_activation_ == "sigmoid" and model.net_.activation[-1] == "sigmoid"
    assert model.classes_.tolist() == [0, 1, 2, 3]
    proba = model.predict_proba(X)
    predicted = model.predict(X)
    assert predicted.shape == Y.shape
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    assert np.mean(predicted == Y) > 0.9  # per-label accuracy on the training set
    with pytest.raises(ValueError, match="multi-label"):
        model.partial_fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="indicator"):
        MLPClassifier().fit(X, Y * 2)
