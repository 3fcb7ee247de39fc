"""The scikit-learn estimators: scikit-learn's own checks, and their use in its tools."""
import pickle
import re

import numpy as np
import pytest

pytest.importorskip("sklearn")
import joblib  # noqa: E402  (scikit-learn's own dependency)
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from cmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from cmlp.training import TrainingDivergedError  # noqa: E402

# Fits that stop at max_iter warn, as scikit-learn's do, and so does R² on a
# held-out set of too few distinct targets; that is not what is tested here.
pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")]


@parametrize_with_checks([MLPRegressor(), MLPClassifier(),
                          MLPClassifier(solver="sgd", learning_rate_init=0.05, dtype="float32"),
                          MLPRegressor(early_stopping=True, validation_fraction=0.2, max_iter=50,
                                       random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    run_check(estimator, check)


# The other solvers and schedules pass the same checks; seconds more, so in
# the slow run (.ci/run runs it).
@pytest.mark.slow
@parametrize_with_checks([MLPRegressor(solver="lbfgs", max_iter=100),
                          MLPClassifier(solver="lbfgs", max_iter=100),
                          MLPClassifier(solver="sgd", learning_rate="adaptive",
                                        activation="logistic"),
                          MLPClassifier(solver="sgd", learning_rate="invscaling", power_t=0.25,
                                        learning_rate_init=0.05)])
def test_sklearn_estimator_checks_of_every_solver_and_schedule(estimator, check):
    run_check(estimator, check)


def run_check(estimator, check):
    name = getattr(check, "func", check).__name__
    if name.startswith("check_sample_weight_equivalence_on_") and estimator.dtype == "float32":
        # scikit-learn compares at rtol=1e-7, float32's own rounding step:
        # the same comparison at a float32 tolerance instead (dense and sparse X).
        weights_equal_repetitions(estimator, rtol=2e-5, sparse=name.endswith("_sparse_data"))
        return
    if name.startswith("check_sample_weight_equivalence_on_") and estimator.early_stopping:
        # A random hold-out cannot split repeated samples as it splits one
        # weighted sample (nor can scikit-learn's): the check is of the fit
        # without it.
        estimator = clone(estimator).set_params(early_stopping=False)
    check(estimator)


def weights_equal_repetitions(estimator, rtol, sparse=False):
    """scikit-learn's check_sample_weight_equivalence_on_dense_data (or _sparse_data), at
    tolerance rtol."""
    rng = np.random.RandomState(42)
    X, y = rng.rand(15, 30), rng.randint(0, 3, size=15)
    weights = rng.randint(0, 5, size=15)
    if sparse:
        from scipy.sparse import csr_array
        X = csr_array(X * (X > 0.5))
    repeated = clone(estimator).set_params(random_state=0).fit(
        X[np.repeat(np.arange(15), weights)], y.repeat(weights))
    weighted = clone(estimator).set_params(random_state=0).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               rtol=rtol, atol=1e-6)



def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_classifier_learns_iris_and_reports_in_sklearns_layout():
    X, y = iris()
    model = MLPClassifier((16, 8), learning_rate_init=0.01, max_iter=300, random_state=0).fit(X, y)
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
    model = MLPClassifier((8,), learning_rate_init=0.01, random_state=0).fit(X, names)
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert (model.predict(X) == names).mean() > 0.9
    binary = MLPClassifier((8,), learning_rate_init=0.01, random_state=0).fit(X[y < 2], names[y < 2])
    assert binary.predict_proba(X[:3]).shape == (3, 2)


def test_regressor_single_and_multi_output():
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=1, random_state=0)
    y = y / 100
    model = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=400,
                         random_state=0).fit(X, y)
    assert model.predict(X).shape == (200, 2) and model.score(X, y) > 0.98
    single = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=400,
                          random_state=0).fit(X, y[:, 0])
    assert single.predict(X).shape == (200,) and single.score(X, y[:, 0]) > 0.98


def test_partial_fit_runs_one_epoch_and_carries_the_optimizer_state():
    X, y = iris()
    stepped = MLPClassifier((8,), learning_rate_init=0.01, batch_size=16, random_state=3)
    stepped.partial_fit(X, y, classes=[0, 1, 2])
    assert stepped.n_iter_ == 1 and len(stepped.loss_curve_) == 1
    for _ in range(4):
        stepped.partial_fit(X, y)
    # As scikit-learn's: n_iter_ is the last call's epochs, loss_curve_ and t_ go on.
    assert stepped.n_iter_ == 1 and len(stepped.loss_curve_) == 5 and stepped.t_ == 5 * len(X)
    # Five one-epoch calls are five epochs of one fit: the Adam state and the
    # shuffling stream carry over from call to call.
    whole = MLPClassifier((8,), learning_rate_init=0.01, batch_size=16, random_state=3, max_iter=5).fit(X, y)
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
    model = MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=5,
                         warm_start=True, random_state=0)
    model.fit(X, y)
    first = model.net_.params.copy()
    model.fit(X, y)
    # scikit-learn's n_iter_: the epochs of the last fit (loss_curve_ holds all).
    assert model.n_iter_ == 5 and len(model.loss_curve_) == 10
    assert model.loss_curve_[5] < model.loss_curve_[0]
    model.set_params(warm_start=False).fit(X, y)
    assert model.n_iter_ == 5
    np.testing.assert_array_equal(model.net_.params, first)  # same seed, same fresh start


def test_tol_stops_training_as_sklearn_does():
    X, y = iris()
    model = MLPClassifier((16,), learning_rate_init=0.05, max_iter=2000, tol=1e-3, n_iter_no_change=5,
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


def test_early_stopping_keeps_the_parameters_of_the_best_score():
    X, y = iris()
    settings = dict(hidden_layer_sizes=(16,), learning_rate_init=0.05, early_stopping=True,
                    n_iter_no_change=5,
                    random_state=0)
    model = MLPClassifier(max_iter=500, **settings).fit(X, y)
    assert model.n_iter_ < 500
    best_epoch = int(np.argmax(model.validation_scores_))   # the first of the best
    assert best_epoch < model.n_iter_ - 1
    # The same fit cut at the best epoch ends on the parameters early stopping kept.
    cut = MLPClassifier(max_iter=best_epoch + 1, **settings).fit(X, y)
    np.testing.assert_array_equal(cut.net_.params, model.net_.params)


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
    pipeline = make_pipeline(StandardScaler(), MLPClassifier((8,), learning_rate_init=0.01,
                                                             max_iter=100, random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    # Two threads: the fits release the GIL (worker processes are tested with
    # dask, tests/test_dask.py, and cost seconds to start).
    with joblib.parallel_backend("threading"):
        search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                                         "mlpclassifier__solver": ["adam", "sgd"]},
                              cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.85
    assert set(search.best_params_) == {"mlpclassifier__hidden_layer_sizes",
                                        "mlpclassifier__solver"}


@pytest.mark.parametrize("bad, message", [
    (dict(solver="newton"), "solver"),
    (dict(learning_rate="cosine", solver="sgd"), "learning_rate"),
    (dict(power_t=-1.0, solver="sgd"), "power_t"),
    (dict(alpha=-1.0), "alpha"),
    (dict(beta_1=1.0), "beta_1"),
    (dict(solver="lbfgs", max_fun=0), "max_fun"),
    (dict(activation="softmax"), "activation"),
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(max_iter=0), "max_iter"),
    (dict(batch_size=0), "batch_size"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(n_iter_no_change=2.5), "n_iter_no_change"),
    (dict(n_iter_no_change=-np.inf), "n_iter_no_change"),
    (dict(tol=-1.0), "tol"),
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
    model = MLPClassifier((32,), learning_rate_init=0.01, max_iter=300, random_state=0).fit(X, Y)
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


# --- ported from scikit-learn's sklearn/neural_network/tests/test_mlp.py --------


def test_early_stopping_on_multi_label_targets_splits_without_stratifying():
    # test_multilabel_classification: the hold-out split is stratified for one
    # label per sample only, so an indicator matrix whose rows are nearly all
    # distinct still trains.
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    model = MLPClassifier(early_stopping=True, random_state=0).fit(X, Y)
    assert model.predict(X).shape == Y.shape


def test_early_stopping_split_is_stratified_for_single_labels():
    # test_early_stopping_stratified
    with pytest.raises(ValueError, match=r"The least populated class(es)? in y ha(s|ve) only 1 member"):
        MLPClassifier(early_stopping=True).fit([[1, 2], [2, 3], [3, 4], [4, 5]], [0, 0, 0, 1])


def digits_binary():
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import MinMaxScaler

    X, y = load_digits(n_class=2, return_X_y=True)
    return MinMaxScaler().fit_transform(X[:100]), y[:100]


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_early_stopping_counts_only_improvements_beyond_tol(Estimator):
    # test_early_stopping
    X, y = digits_binary()
    tol = 0.2
    model = Estimator(tol=tol, max_iter=3000, solver="sgd", early_stopping=True,
                      random_state=0).fit(X, y)
    assert model.n_iter_ < 3000
    assert model.best_loss_ is None
    scores = model.validation_scores_
    assert isinstance(scores, list) and len(scores) == model.n_iter_
    assert max(scores) == model.best_validation_score_
    assert model.best_validation_score_ + tol > scores[-2]
    assert model.best_validation_score_ + tol > scores[-1]
    model = Estimator(tol=tol, max_iter=3000, solver="sgd", random_state=0).fit(X, y)
    assert model.validation_scores_ is None and model.best_validation_score_ is None
    assert model.best_loss_ is not None


@pytest.mark.parametrize("seed", range(8))
def test_early_stopping_stops_on_separable_data_and_keeps_the_best_score(seed):
    # A held-out accuracy of 1 cannot be beaten by tol: scikit-learn stops
    # n_iter_no_change + 1 epochs after reaching it.
    from sklearn.datasets import make_blobs
    from sklearn.model_selection import train_test_split

    X, y = make_blobs(n_samples=200, centers=[[-2, -2], [2, 2]], random_state=seed)
    model = MLPClassifier((8,), early_stopping=True, max_iter=3000, batch_size=16, learning_rate_init=0.01,
                          random_state=seed).fit(X, y)
    best, stalled, stopped_at = -np.inf, 0, None
    for epoch, score in enumerate(model.validation_scores_):
        stalled = stalled + 1 if score < best + model.tol else 0
        best = max(best, score)
        if stalled > model.n_iter_no_change:
            stopped_at = epoch
            break
    assert stopped_at == model.n_iter_ - 1 < 30   # scikit-learn's MLP: 12 to 15 here
    assert model.best_validation_score_ == best == 1.0
    _, X_val, _, y_val = train_test_split(X, y, test_size=model.validation_fraction,
                                          random_state=model._split_seed, stratify=y)
    assert model.score(X_val, y_val) == model.best_validation_score_


@pytest.mark.parametrize("labels", [[0] * 75 + [1] * 75,                       # fewer
                                    [0] * 50 + [1] * 50 + [3] * 50,            # other
                                    [0] * 37 + [1] * 37 + [2] * 38 + [3] * 38])  # more
def test_warm_start_refuses_other_classes(labels):
    # test_warm_start
    X, y = iris()
    model = MLPClassifier((2,), warm_start=True, max_iter=5, random_state=42).fit(X, y)
    model.fit(X, y)
    model.fit(X, [0] * 40 + [1] * 40 + [2] * 70)   # the same classes in other numbers
    message = ("warm_start can only be used where `y` has the same classes as in the "
               f"previous call to fit. Previously got [0 1 2], `y` has {np.unique(labels)}")
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(X, labels)
    assert model.classes_.tolist() == [0, 1, 2]


def test_n_iter_no_change_inf_never_stops_early():
    # test_n_iter_no_change_inf: a tolerance no epoch can beat, and no patience limit.
    X, y = digits_binary()
    model = MLPClassifier(tol=1e9, max_iter=100, solver="sgd", n_iter_no_change=np.inf,
                          random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    assert model.n_iter_ == 100
    assert model._no_improvement_count == model.n_iter_ - 1


def test_n_iter_no_change_stops_after_that_many_epochs_without_improvement():
    # test_n_iter_no_change
    X, y = digits_binary()
    for n_iter_no_change in [2, 5, 10, 50, 100]:
        model = MLPClassifier(tol=0.01, max_iter=3000, solver="sgd",
                              n_iter_no_change=n_iter_no_change, random_state=0).fit(X, y)
        assert model._no_improvement_count == n_iter_no_change + 1
        assert model.n_iter_ < 3000


def diverging_regression():
    X, y = make_regression(n_samples=100, n_features=5, noise=1, random_state=0)
    return X, y * 1e3


def test_a_fresh_fit_that_diverges_leaves_the_estimator_unfitted():
    X, y = diverging_regression()
    model = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=10.0, momentum=0,
                         max_iter=50, random_state=0)
    with pytest.raises(TrainingDivergedError):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    with pytest.raises(NotFittedError):
        model.predict(X)
    assert not [name for name in vars(model) if name.endswith("_")]
    model.set_params(learning_rate_init=1e-6).fit(X, y / 1e3)   # and it fits afresh
    assert model.n_iter_ == 50


@pytest.mark.parametrize("continue_fit", ["fit", "partial_fit"])
def test_a_continued_fit_that_diverges_keeps_the_model_it_continued(continue_fit):
    X, y = make_regression(n_samples=100, n_features=5, noise=1, random_state=0)
    # Identity units: nothing saturates or dies, so targets a million times
    # larger make the first epoch of the continued fit diverge.
    model = MLPRegressor(hidden_layer_sizes=(8,), activation="identity", solver="sgd",
                         learning_rate_init=0.01, momentum=0,
                         batch_size=10, max_iter=3, warm_start=True,
                         random_state=0).fit(X, y / 100)
    before, curve = model.net_.params.copy(), list(model.loss_curve_)
    with pytest.raises(TrainingDivergedError, match="at epoch 0") as raised:
        getattr(model, continue_fit)(X, y * 1e4)
    # As the error says: the parameters are those at the start of epoch 0.
    assert raised.value.history.epochs == 0
    # n_iter_ counts the failing call's epochs before the failure (scikit-learn's
    # n_iter_ is the last call's); loss_curve_ the model's.
    assert model.n_iter_ == 0 and model.loss_curve_ == curve
    np.testing.assert_array_equal(model.net_.params, before)
    model.partial_fit(X, y / 100)   # and it goes on from there
    assert model.n_iter_ == 1 and len(model.loss_curve_) == 4


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_n_iter_counts_the_last_fits_iterations(Estimator, solver):
    # test_warm_start_full_iteration and test_mlp_warm_start_no_convergence:
    # a warm-started fit runs max_iter more and n_iter_ counts its own.
    X, y = iris()
    model = Estimator(hidden_layer_sizes=(4,), solver=solver, warm_start=True, max_iter=10,
                      n_iter_no_change=np.inf, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    assert model.n_iter_ == 10
    model.set_params(max_iter=20)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    assert model.n_iter_ == 20 and len(model.loss_curve_) == 30
    if solver != "lbfgs":
        assert model.t_ == 30 * len(X)
        model.partial_fit(X, y)
        assert model.n_iter_ == 1 and len(model.loss_curve_) == 31


@pytest.mark.parametrize("schedule", ["invscaling", "constant"])
def test_a_warm_started_fit_sets_the_rate_from_every_sample_seen(schedule):
    # test_learning_rate_warmstart: the second fit's invscaling rate counts the
    # first fit's samples too (t_ = 8).
    X, y = [[3, 2], [1, 6], [5, 6], [-2, -4]], [1, 1, 1, 0]
    model = MLPClassifier(hidden_layer_sizes=4, solver="sgd", learning_rate=schedule,
                          max_iter=1, power_t=0.25, warm_start=True)
    model.fit(X, y)
    first = model._learning_rate
    model.fit(X, y)
    if schedule == "constant":
        assert model._learning_rate == first == model.learning_rate_init
    else:
        assert model._learning_rate == model.learning_rate_init / pow(8 + 1, model.power_t)


def test_a_diverging_fit_with_early_stopping_raises_the_divergence_and_leaves_no_model():
    # test_mlp_diverging_loss: the held-out score of a diverged network is NaN (as
    # scikit-learn's), not r2_score's "Input contains NaN"; the divergence then
    # raises TrainingDivergedError (where scikit-learn returns its best weights)
    # and a fresh fit leaves no model.
    X, y = load_iris(return_X_y=True)
    model = MLPRegressor(hidden_layer_sizes=100, activation="identity", solver="sgd",
                         learning_rate_init=1, max_iter=20, early_stopping=True, random_state=0)
    with pytest.raises(TrainingDivergedError):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    for Estimator, targets in ((MLPRegressor, y), (MLPClassifier, y)):
        fitted = Estimator(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, targets)
        fitted.net_.params[:] = np.inf
        encoded = fitted._encode_targets(targets, False, None)
        assert np.isnan(fitted._held_out_score(X, encoded, None))


def test_a_validation_set_of_one_sample_is_refused():
    # test_minimum_input_sample_size
    X, y = make_regression(n_samples=2, n_features=5, random_state=0)
    with pytest.raises(ValueError, match="The validation set is too small"):
        MLPRegressor(early_stopping=True, random_state=0).fit(X, y)
    X, y = make_regression(n_samples=10, n_features=5, random_state=0)
    with pytest.raises(ValueError, match="The validation set is too small"):
        MLPRegressor(early_stopping=True, random_state=0).fit(X, y)
    MLPRegressor(early_stopping=True, validation_fraction=0.2, max_iter=5,
                 random_state=0).fit(X, y)


def test_partial_fit_after_an_early_stopping_fit_runs_one_epoch_without_a_score():
    # test_mlp_partial_fit_after_fit: scikit-learn refuses partial_fit with
    # early_stopping=True; cmlp runs the one epoch (there is nothing to stop)
    # and keeps no held-out score for it.
    X, y = iris()
    model = MLPClassifier((8,), early_stopping=True, max_iter=20, random_state=0).fit(X, y)
    scores = list(model.validation_scores_)
    model.partial_fit(X, y)
    assert model.n_iter_ == 1 and model.validation_scores_ == scores


def test_predict_log_proba_is_the_log_of_predict_proba():
    # test_predict_proba_multiclass and test_predict_proba_multilabel
    from sklearn.datasets import make_multilabel_classification

    X, y = iris()
    model = MLPClassifier((5,), max_iter=20, random_state=0).fit(X[::15], y[::15])
    proba, log_proba = model.predict_proba(X), model.predict_log_proba(X)
    assert log_proba.shape == (150, 3)
    np.testing.assert_array_equal(log_proba.argmax(axis=1), proba.argmax(axis=1))
    np.testing.assert_allclose(log_proba, np.log(proba))
    X, Y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    model = MLPClassifier((30,), max_iter=20, random_state=0).fit(X, Y)
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(model.predict_proba(X)))


# -- scikit-learn's MLP as the reference ----------------------------------------

CMLP_ONLY = ("weight_decay", "dtype")


@pytest.mark.parametrize("ours, theirs", [("MLPRegressor", "MLPRegressor"),
                                          ("MLPClassifier", "MLPClassifier")])
def test_the_constructor_is_scikit_learns(ours, theirs):
    import inspect

    import sklearn.neural_network
    import cmlp.sklearn

    mine = inspect.signature(getattr(cmlp.sklearn, ours)).parameters
    reference = inspect.signature(getattr(sklearn.neural_network, theirs)).parameters
    assert [name for name in mine if name not in CMLP_ONLY] == list(reference)
    for name, parameter in reference.items():
        assert mine[name].kind == parameter.kind, name
        assert mine[name].default == parameter.default, name
    assert [name for name in mine][-len(CMLP_ONLY):] == list(CMLP_ONLY)
    assert all(mine[name].kind == inspect.Parameter.KEYWORD_ONLY for name in CMLP_ONLY)


def test_the_guide_lists_every_parameter_of_scikit_learns_mlps():
    import inspect
    from pathlib import Path

    import sklearn.neural_network

    page = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "sklearn.rst").read_text(
        encoding="utf-8")
    table = page.split(".. list-table::", 1)[1].split("\nSparse input", 1)[0]
    listed = set(re.findall(r"^   \* - ``(\w+)``(?:, ``(\w+)``)?", table, flags=re.M))
    listed = {name for row in listed for name in row if name}
    for Estimator in (sklearn.neural_network.MLPRegressor, sklearn.neural_network.MLPClassifier):
        assert set(inspect.signature(Estimator).parameters) <= listed


def test_code_written_for_scikit_learn_runs_unchanged():
    from sklearn import neural_network

    X, y = iris()
    settings = dict(hidden_layer_sizes=(10,), activation="logistic", solver="sgd", alpha=1e-3,
                    batch_size=32, learning_rate="adaptive", learning_rate_init=0.05,
                    power_t=0.5, max_iter=50, shuffle=True, random_state=0, tol=1e-4,
                    verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                    early_stopping=True, validation_fraction=0.2, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-8, n_iter_no_change=10, max_fun=15000)
    theirs = neural_network.MLPClassifier(**settings).fit(X, y)
    ours = MLPClassifier(**settings).fit(X, y)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.1
    regressor = MLPRegressor("squared_error", (8,), "tanh", solver="lbfgs").fit(X, y)
    assert regressor.hidden_layer_sizes == (8,) and regressor.score(X, y) > 0.9


def test_logistic_is_the_sigmoid():
    X, y = iris()
    a = MLPClassifier((8,), activation="logistic", max_iter=20, random_state=0).fit(X, y)
    b = MLPClassifier((8,), activation="sigmoid", max_iter=20, random_state=0).fit(X, y)
    assert a.net_.activation[0] == "sigmoid"
    assert a.net_.params.tobytes() == b.net_.params.tobytes()


def test_invscaling_sets_the_rate_as_scikit_learns_sgd_optimizer():
    from sklearn.neural_network._stochastic_optimizers import SGDOptimizer

    X, y = iris()
    model = MLPClassifier((8,), solver="sgd", learning_rate="invscaling", power_t=0.3,
                          learning_rate_init=0.2, batch_size=50, random_state=0)
    reference = SGDOptimizer([np.zeros(1)], learning_rate_init=0.2, lr_schedule="invscaling",
                             power_t=0.3)
    for epoch in range(4):
        model.partial_fit(X, y, classes=np.unique(y))
        reference.iteration_ends((epoch + 1) * len(X))
        assert model.t_ == (epoch + 1) * len(X)
        assert model._learning_rate == pytest.approx(reference.learning_rate, rel=1e-15)


def test_invscaling_epochs_take_the_rate_of_the_epoch_before():
    X, y = iris()
    model = MLPClassifier((8,), solver="sgd", learning_rate="invscaling", momentum=0,
                          learning_rate_init=0.2, max_iter=3, random_state=0).fit(X, y)
    # Constant-rate epochs one at a time, each at the rate invscaling had set
    # (partial_fit goes on at the rate a fit reached, which _learning_rate holds).
    by_hand = MLPClassifier((8,), solver="sgd", momentum=0, max_iter=1, random_state=0,
                            learning_rate_init=0.2).fit(X, y)
    for epoch in (1, 2):
        by_hand._learning_rate = 0.2 / (epoch * len(X) + 1) ** 0.5
        by_hand.partial_fit(X, y)
    assert model.net_.params.tobytes() == by_hand.net_.params.tobytes()


def test_adaptive_divides_the_rate_by_five_and_stops_as_scikit_learn():
    from sklearn import neural_network

    X, y = iris()
    # tol so large that no epoch improves: each stall divides the rate by 5
    # until it reaches 1e-6.
    settings = dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate="adaptive",
                    learning_rate_init=0.01, tol=1e9, n_iter_no_change=2, max_iter=500,
                    random_state=0)
    theirs = neural_network.MLPClassifier(**settings).fit(X, y)
    ours = MLPClassifier(**settings).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours._learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-15)


def test_sample_weights_of_one_give_the_bits_of_none():
    X, y = iris()
    for make in (lambda: MLPClassifier((8,), solver="sgd", momentum=0, max_iter=5,
                                       random_state=0),
                 lambda: MLPClassifier((8,), max_iter=5, early_stopping=True, random_state=0),
                 lambda: MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=20,
                                      random_state=0)):
        plain, weighted = make().fit(X, y), make().fit(X, y, sample_weight=np.ones(len(y)))
        assert plain.net_.params.tobytes() == weighted.net_.params.tobytes()
        assert plain.loss_curve_ == weighted.loss_curve_
    stepped = MLPClassifier((8,), random_state=0)
    stepped.partial_fit(X, y, sample_weight=np.ones(len(y)), classes=[0, 1, 2])
    assert stepped.loss_curve_ == MLPClassifier((8,), random_state=0).partial_fit(
        X, y, classes=[0, 1, 2]).loss_curve_


def test_weights_act_as_repetitions():
    X, y = iris()
    counts = np.random.default_rng(0).integers(0, 3, size=len(y))
    settings = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=30, random_state=0)
    weighted = MLPRegressor(**settings).fit(X, y, sample_weight=counts)
    repeated = MLPRegressor(**settings).fit(X.repeat(counts, axis=0), y.repeat(counts))
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-6, atol=1e-8)
    assert weighted.n_iter_ == repeated.n_iter_


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_lbfgs_stops_at_max_fun_and_warns(Estimator):
    # test_lbfgs_classification_maxfun and test_lbfgs_regression_maxfun
    X, y = iris()
    model = Estimator(solver="lbfgs", hidden_layer_sizes=50, max_iter=150, max_fun=10,
                      random_state=1)
    with pytest.warns(ConvergenceWarning, match="max_fun"):
        model.fit(X, y)
    assert 1 <= model.n_iter_ <= 10 and len(model.loss_curve_) == model.n_iter_


def test_lbfgs_has_no_partial_fit_as_scikit_learns():
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert hasattr(MLPClassifier(solver="adam"), "partial_fit")


def scikit_learn_twin(ours, reference_class, X, y, **settings):
    """scikit-learn's MLP with our model's starting weights, warm-started from them."""
    from sklearn import neural_network

    theirs = getattr(neural_network, reference_class)(warm_start=True, **settings)
    theirs.set_params(max_iter=1).fit(X, y)
    theirs.coefs_ = [W.copy() for W in ours.coefs_]
    theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
    return theirs.set_params(max_iter=settings.get("max_iter", 200))


@pytest.mark.parametrize("Estimator, reference_class, data", [
    (MLPRegressor, "MLPRegressor", "regression"),
    (MLPClassifier, "MLPClassifier", "iris"),
    (MLPClassifier, "MLPClassifier", "multilabel"),
])
def test_lbfgs_follows_scikit_learns_lbfgs_from_the_same_start(Estimator, reference_class, data):
    # Multi-label: cmlp's "bce" is 1/k of scikit-learn's loss, the estimator
    # scales alpha, tol and the losses it reports so that the fit is scikit-learn's.
    if data == "iris":
        X, y = iris()
    elif data == "multilabel":
        from sklearn.datasets import make_multilabel_classification

        X, y = make_multilabel_classification(n_samples=80, n_features=6, n_classes=4,
                                              random_state=0)
        X = StandardScaler().fit_transform(X)
    else:
        X, y = make_regression(n_samples=120, n_features=4, noise=1, random_state=0)
        y = y / 100
    # 25 iterations: far enough to test the path, short enough that the
    # rounding of two different parameter orders has not yet moved it.
    settings = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=1e-3,
                    max_iter=25, random_state=0)
    start = Estimator(**{**settings, "max_iter": 1}).fit(X, y)
    theirs = scikit_learn_twin(start, reference_class, X, y, **settings).fit(X, y)
    ours = Estimator(warm_start=True, **settings)
    ours.net_ = start.net_
    vars(ours).update({name: value for name, value in vars(start).items()
                       if name.endswith("_") or name.startswith("_")})
    ours.n_iter_ = 0
    ours.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    regression = data == "regression"
    np.testing.assert_allclose(ours.predict(X) if regression else ours.predict_proba(X),
                               theirs.predict(X) if regression else theirs.predict_proba(X),
                               rtol=1e-4, atol=1e-6)


def test_multi_label_sgd_takes_scikit_learns_steps():
    # test_multilabel_classification: the same rate and alpha as scikit-learn's give its
    # steps (cmlp's "bce" is 1/k of scikit-learn's loss; the estimator scales the rate).
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    settings = dict(hidden_layer_sizes=(20,), activation="logistic", solver="sgd", alpha=1e-3,
                    learning_rate_init=0.2, momentum=0, batch_size=50, shuffle=False,
                    max_iter=5, random_state=0)
    start = MLPClassifier(**{**settings, "max_iter": 1}).fit(X, Y)
    theirs = scikit_learn_twin(start, "MLPClassifier", X, Y, **settings)
    ours = MLPClassifier(**{**settings, "warm_start": True})
    ours.net_ = start.net_
    vars(ours).update({name: value for name, value in vars(start).items()
                       if name.endswith("_") or name.startswith("_")})
    ours.loss_curve_ = []
    ours.fit(X, Y)
    theirs.loss_curve_ = []
    theirs.fit(X, Y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
    model = MLPClassifier(solver="sgd", hidden_layer_sizes=50, activation="logistic",
                          alpha=1e-5, learning_rate_init=0.2, random_state=0)
    for _ in range(100):
        model.partial_fit(X, Y, classes=[0, 1, 2, 3, 4])
    assert model.score(X, Y) > 0.9   # scikit-learn's threshold (0.88 before the scaling)
