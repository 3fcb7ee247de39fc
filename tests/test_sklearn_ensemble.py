"""The bagging estimators over cmlp.MLPEnsemble: scikit-learn's own checks, each network
against cmlp.MLP trained alone on its rows, the bagged predictions against the networks',
and the accuracy against scikit-learn's bagging of its own MLP."""
import inspect
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.ensemble import BaggingRegressor  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import cmlp  # noqa: E402
from cmlp.sklearn import MLPEnsembleClassifier, MLPEnsembleRegressor  # noqa: E402
from cmlp.training import TrainingDivergedError  # noqa: E402

# scikit-learn's MLP warns when max_iter ends its fit (the reference below).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Plain SGD: what MLPEnsemble.fit has always taken. One thread: the numbers do not
# depend on it (a test below says so), and a busy machine runs one faster.
PLAIN = dict(solver="sgd", momentum=0.0, alpha=0.0, n_threads=1)


@parametrize_with_checks([
    MLPEnsembleRegressor(3, batch_size=32, **PLAIN),
    MLPEnsembleClassifier(3, learning_rate_init=0.01, **PLAIN),
    MLPEnsembleRegressor(3, batch_size=32, bootstrap=False, max_samples=0.8,
                         early_stopping=True, validation_fraction=0.2, **PLAIN),
    MLPEnsembleClassifier(3, (8,), "logistic", learning_rate_init=0.05, max_samples=40,
                          dtype="float32", **PLAIN),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# scikit-learn's defaults (Adam, alpha 1e-4), and its SGD's (momentum 0.9, Nesterov) on
# classes: on the checks' unscaled regression targets SGD with momentum may diverge.
@parametrize_with_checks([
    MLPEnsembleRegressor(3, n_threads=1),
    MLPEnsembleClassifier(3, n_threads=1),
    MLPEnsembleClassifier(3, solver="sgd", n_threads=1),
])
def test_sklearn_estimator_checks_with_momentum_adam_and_alpha(estimator, check):
    check(estimator)


# -- data and the reference: one cmlp.MLP trained alone ------------------------------------

def regression(n=120, n_targets=1):
    X, y = make_regression(n_samples=n, n_features=4, n_targets=n_targets, noise=1,
                           random_state=0)
    return StandardScaler().fit_transform(X), y / y.std()


def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def alone(model, k, X, Y, loss, batch_size=None, **fit_options):
    """Network k of ``model`` as cmlp.MLP trains it alone: its initial weights, its rows,
    its shuffling seed and the estimator's settings; returns the network and its History."""
    ensemble = model.ensemble_
    net = cmlp.MLP(ensemble.layer_sizes, list(ensemble.activation), ensemble.dtype,
                   seed=ensemble.seeds[k])
    rows = model.estimators_samples_[k]
    history = net.fit(X[rows], Y[rows], epochs=model.max_iter,
                      batch_size=batch_size or model.batch_size,
                      lr=model.learning_rate_init, loss=loss, shuffle=model.shuffle,
                      seed=int(model.shuffle_seeds_[k]), **fit_options)
    return net, history


def one_hot(y):
    return np.eye(y.max() + 1)[y]


def assert_each_network_is_alone(model, X, Y, loss, batch_size=None, **fit_options):
    for k in range(model.n_estimators):
        net, history = alone(model, k, X, Y, loss, batch_size, **fit_options)
        assert np.array_equal(model.ensemble_.params[k], net.params), k
        assert model.loss_curve_[k] == history.loss, k
        assert model.n_iter_[k] == history.epochs, k


# -- every network is MLP.fit's, bit for bit ------------------------------------------------

@pytest.mark.parametrize("bootstrap, max_samples, m", [(True, 1.0, 120), (True, 50, 50),
                                                      (False, 1.0, 120), (False, 0.5, 60)])
def test_each_regressor_network_is_mlp_fit_alone_on_its_rows(bootstrap, max_samples, m):
    X, y = regression()
    model = MLPEnsembleRegressor(4, (8,), "tanh", batch_size=16, learning_rate_init=0.05,
                                 max_iter=15, bootstrap=bootstrap, max_samples=max_samples,
                                 random_state=0, **PLAIN).fit(X, y)
    assert_each_network_is_alone(model, X, y.reshape(-1, 1), "half_sse")
    samples = model.estimators_samples_
    assert len(samples) == 4 and all(rows.shape == (m,) for rows in samples)
    if bootstrap:
        assert all(len(np.unique(rows)) < m for rows in samples)   # rows drawn again
        assert not np.array_equal(samples[0], samples[1])
    elif m == 120:
        assert all(np.array_equal(rows, np.arange(120)) for rows in samples)
    else:
        assert all(np.array_equal(rows, np.unique(rows)) for rows in samples)
    np.testing.assert_array_equal(model.n_iter_, [15] * 4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_classifier_network_is_mlp_fit_alone_with_one_hot_cross_entropy(dtype):
    X, y = iris()
    model = MLPEnsembleClassifier(3, (6,), "logistic", batch_size=20, learning_rate_init=0.1,
                                  max_iter=10, random_state=1, dtype=dtype, **PLAIN).fit(X, y)
    assert model.ensemble_.activation == ("sigmoid", "softmax")
    assert model.ensemble_.params.dtype == dtype
    assert_each_network_is_alone(model, X, one_hot(y), "cross_entropy")


def test_auto_batch_size_and_no_shuffling_are_mlp_fits():
    X, y = regression(n=250)
    model = MLPEnsembleRegressor(2, (5,), learning_rate_init=0.05, max_iter=5, shuffle=False,
                                 random_state=2, **PLAIN).fit(X, y)
    # "auto": min(200, the rows of a network's sample)
    assert_each_network_is_alone(model, X, y.reshape(-1, 1), "half_sse", batch_size=200)


def test_early_stopping_holds_out_rows_and_each_network_stops_as_mlp_fit():
    X, y = regression(n=160)
    model = MLPEnsembleRegressor(4, (16,), batch_size=8, learning_rate_init=0.2, max_iter=60,
                                 bootstrap=False, early_stopping=True, validation_fraction=0.25,
                                 n_iter_no_change=2, random_state=0, **PLAIN).fit(X, y)
    rows = model.estimators_samples_[0]
    held_out = np.setdiff1d(np.arange(160), rows)
    assert len(held_out) == 40 and all(np.array_equal(r, rows) for r in model.estimators_samples_)
    Y = y.reshape(-1, 1)
    for k in range(4):
        # scikit-learn's count: stop after *more than* n_iter_no_change epochs without a new best.
        net, history = alone(model, k, X, Y, "half_sse",
                             validation_data=(X[held_out], Y[held_out]), early_stopping=3)
        assert np.array_equal(model.ensemble_.params[k], net.params), k
        assert model.loss_curve_[k] == history.loss
        assert model.validation_loss_curve_[k] == history.val_loss
    assert (model.n_iter_ < 60).all()


def test_the_held_out_rows_are_stratified_and_never_in_a_sample():
    X, y = iris()
    settings = dict(n_estimators=5, hidden_layer_sizes=(4,), max_iter=2, early_stopping=True,
                    validation_fraction=0.2, random_state=0, **PLAIN)
    whole = MLPEnsembleClassifier(**settings, bootstrap=False).fit(X, y)
    training = whole.estimators_samples_[0]
    held_out = np.setdiff1d(np.arange(150), training)
    np.testing.assert_array_equal(np.bincount(y[held_out]), [10, 10, 10])
    bagged = MLPEnsembleClassifier(**settings).fit(X, y)   # the same split, then the samples
    assert all(np.isin(rows, training).all() for rows in bagged.estimators_samples_)
    assert len(bagged.validation_loss_curve_) == 5


# -- the bagged predictions are the networks' ----------------------------------------------

@pytest.mark.parametrize("n_targets", [1, 2])
def test_predict_is_the_mean_of_the_networks_and_return_std_their_spread(n_targets):
    X, y = regression(n_targets=n_targets)
    model = MLPEnsembleRegressor(5, (8,), learning_rate_init=0.05, batch_size=16, max_iter=20,
                                 random_state=0, **PLAIN).fit(X, y)
    outputs = np.stack([model.ensemble_.models[k].predict(X) for k in range(5)])
    mean, std = model.predict(X, return_std=True)
    expected_mean, expected_std = outputs.mean(axis=0), outputs.std(axis=0)
    if n_targets == 1:
        expected_mean, expected_std = expected_mean.ravel(), expected_std.ravel()
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(std, expected_std)
    np.testing.assert_array_equal(model.predict(X), mean)
    assert mean.shape == y.shape and (std > 0).all()
    assert model.n_outputs_ == n_targets


def test_predict_proba_is_the_mean_of_the_networks_probabilities():
    X, y = iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = MLPEnsembleClassifier(4, (8,), learning_rate_init=0.05, batch_size=16, max_iter=30,
                                  random_state=0, **PLAIN).fit(X, names)
    probabilities = np.stack([model.ensemble_.models[k].predict(X) for k in range(4)])
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(proba, probabilities.mean(axis=0))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(model.predict_log_proba(X), np.log(proba))
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert model.score(X, names) > 0.9


def test_a_network_whose_sample_misses_a_class_still_has_every_class():
    X, y = iris()
    model = MLPEnsembleClassifier(3, (4,), max_iter=3, bootstrap=False, max_samples=1,
                                  random_state=0, **PLAIN).fit(X, y)
    assert model.predict_proba(X).shape == (150, 3)
    assert all(rows.shape == (1,) for rows in model.estimators_samples_)


# -- against scikit-learn's bagging of its own MLP ------------------------------------------

def test_accuracy_is_that_of_sklearns_bagging_of_its_mlp():
    X, y = make_regression(n_samples=300, n_features=6, noise=5, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(StandardScaler().fit_transform(X),
                                                        y / y.std(), random_state=0)
    settings = dict(hidden_layer_sizes=(32,), solver="sgd", momentum=0.0, alpha=0.0,
                    learning_rate_init=0.01, batch_size=32, max_iter=60)
    mlp = neural_network.MLPRegressor(**settings, n_iter_no_change=60, random_state=0)
    # In a pipeline, which takes no sample_weight, Bagging trains each MLP on its drawn rows
    # (not on all rows weighted by their counts, which scikit-learn's MLP can fail on:
    # a batch of zero weights divides by zero).
    theirs = BaggingRegressor(make_pipeline(mlp), n_estimators=5,
                              random_state=0).fit(X_train, y_train)
    ours = MLPEnsembleRegressor(5, **settings, n_threads=1, random_state=0).fit(X_train, y_train)
    their_score, our_score = theirs.score(X_test, y_test), ours.score(X_test, y_test)
    assert their_score > 0.9 and our_score > their_score - 0.05


def test_shared_parameters_have_sklearns_defaults():
    mine = inspect.signature(MLPEnsembleRegressor).parameters
    assert list(mine) == [
        "n_estimators", "hidden_layer_sizes", "activation", "solver", "alpha", "batch_size",
        "learning_rate_init", "max_iter", "shuffle", "random_state", "momentum",
        "nesterovs_momentum", "bootstrap", "max_samples", "early_stopping",
        "validation_fraction", "n_iter_no_change", "n_threads", "dtype"]
    assert all(p.kind == p.KEYWORD_ONLY for name, p in mine.items()
               if list(mine).index(name) >= 3)
    assert inspect.signature(MLPEnsembleClassifier).parameters == mine
    for reference in (neural_network.MLPRegressor, BaggingRegressor):
        for name, parameter in inspect.signature(reference).parameters.items():
            if name in mine and name != "max_samples":
                assert mine[name].default == parameter.default, name
    assert mine["solver"].default == "adam" and mine["max_samples"].default == 1.0


# -- the optimizer settings, passed to MLPEnsemble.fit as MLPRegressor passes them to MLP.fit

class _Called(Exception):
    pass


@pytest.mark.parametrize("settings, passed", [
    (dict(solver="sgd", momentum=0.0, alpha=0.0), {}),
    (dict(solver="sgd", momentum=0.0, alpha=1e-3), dict(alpha=1e-3)),
    (dict(solver="sgd", momentum=0.9, alpha=0.0), dict(momentum=0.9, nesterov=True)),
    (dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, alpha=1e-4),
     dict(momentum=0.5, nesterov=False, alpha=1e-4)),
    (dict(solver="adam", alpha=0.0), dict(optimizer="adam")),
    (dict(solver="adam"), dict(optimizer="adam", alpha=1e-4)),   # momentum is SGD's
])
def test_only_settings_beyond_plain_sgd_reach_the_ensembles_fit(settings, passed, monkeypatch):
    seen = []

    def fit(self, X, Y, **kwargs):
        seen.append(kwargs)
        raise _Called

    monkeypatch.setattr(cmlp.MLPEnsemble, "fit", fit)
    X, y = regression()
    with pytest.raises(_Called):
        MLPEnsembleRegressor(2, (4,), learning_rate_init=0.02, random_state=0,
                             **settings).fit(X, y)
    optimizer = {name: seen[0][name] for name in ("optimizer", "momentum", "nesterov", "alpha")
                 if name in seen[0]}
    assert optimizer == passed
    assert seen[0]["lr"] == 0.02 and seen[0]["loss"] == "half_sse"


@pytest.mark.parametrize("settings, fit_options", [
    (dict(solver="sgd", momentum=0.9, alpha=1e-4),
     dict(momentum=0.9, nesterov=True, alpha=1e-4)),
    (dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, alpha=0.0), dict(momentum=0.5)),
    (dict(solver="sgd", momentum=0.0, alpha=1e-2), dict(alpha=1e-2)),
    (dict(solver="adam", alpha=1e-3), dict(optimizer="adam", alpha=1e-3)),
])
def test_momentum_adam_and_alpha_give_each_network_mlp_fits_bits(settings, fit_options):
    X, y = regression()
    model = MLPEnsembleRegressor(3, (8,), batch_size=16, learning_rate_init=0.01, max_iter=8,
                                 random_state=0, n_threads=1, **settings).fit(X, y)
    assert_each_network_is_alone(model, X, y.reshape(-1, 1), "half_sse", **fit_options)
    X, y = iris()
    model = MLPEnsembleClassifier(3, (8,), batch_size=16, learning_rate_init=0.01, max_iter=8,
                                  random_state=0, n_threads=1, **settings).fit(X, y)
    assert_each_network_is_alone(model, X, one_hot(y), "cross_entropy", **fit_options)


def test_the_defaults_learn_as_sklearns_mlp():
    X, y = iris()
    model = MLPEnsembleClassifier(3, random_state=0, n_threads=1).fit(X, y)
    reference = neural_network.MLPClassifier(random_state=0).fit(X, y)
    assert model.score(X, y) > reference.score(X, y) - 0.05 > 0.75


# -- scikit-learn's tools --------------------------------------------------------------------

def test_pipeline_grid_search_clone_and_pickle():
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(),
                             MLPEnsembleClassifier(3, (8,), learning_rate_init=0.1,
                                                   max_iter=60, random_state=0, **PLAIN))
    search = GridSearchCV(pipeline, {"mlpensembleclassifier__n_estimators": [2, 4]},
                          cv=3).fit(X, y)
    assert search.best_score_ > 0.85
    best = search.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(again.predict_proba(X), best.predict_proba(X))
    assert np.array_equal(again[-1].ensemble_.params, best[-1].ensemble_.params)
    assert again[-1].ensemble_.seeds == best[-1].ensemble_.seeds
    fresh = clone(best[-1])
    assert fresh.get_params() == best[-1].get_params() and not hasattr(fresh, "ensemble_")
    assert best[-1].n_features_in_ == 4


def test_same_random_state_same_networks_other_random_state_others():
    X, y = regression()
    settings = dict(n_estimators=3, hidden_layer_sizes=(6,), max_iter=5, **PLAIN)
    first = MLPEnsembleRegressor(**settings, random_state=3).fit(X, y)
    second = MLPEnsembleRegressor(**settings, random_state=3).fit(X, y)
    other = MLPEnsembleRegressor(**settings, random_state=4).fit(X, y)
    assert np.array_equal(first.ensemble_.params, second.ensemble_.params)
    assert not np.array_equal(first.ensemble_.params, other.ensemble_.params)
    assert len(set(first.ensemble_.seeds)) == 3 and len(set(first.shuffle_seeds_)) == 3


@pytest.mark.starts_threads
def test_the_threads_change_no_number():
    X, y = regression()
    settings = dict(n_estimators=4, hidden_layer_sizes=(6,), max_iter=5, momentum=0.0,
                    alpha=0.0, random_state=0)
    one = MLPEnsembleRegressor(**settings, n_threads=1).fit(X, y)
    two = MLPEnsembleRegressor(**settings, n_threads=2).fit(X, y)
    assert np.array_equal(one.ensemble_.params, two.ensemble_.params)


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (dict(n_estimators=0), "n_estimators"), (dict(n_estimators=2.0), "n_estimators"),
    (dict(max_samples=0), "max_samples"), (dict(max_samples=1.5), "max_samples"),
    (dict(max_samples="all"), "max_samples"),
    (dict(bootstrap=False, max_samples=121), "max_samples"),
    (dict(bootstrap="yes"), "bootstrap"),
    (dict(solver="lbfgs"), "solver"), (dict(activation="softmax"), "activation"),
    (dict(learning_rate_init=0), "learning_rate_init"), (dict(momentum=1.0), "momentum"),
    (dict(alpha=-1.0), "alpha"), (dict(batch_size=0), "batch_size"),
    (dict(max_iter=0), "max_iter"), (dict(n_threads=0), "n_threads"),
    (dict(hidden_layer_sizes=(4, 0)), "hidden_layer_sizes"),
    (dict(early_stopping=True, validation_fraction=1.0), "validation_fraction"),
    (dict(early_stopping=True, n_iter_no_change=0), "n_iter_no_change"),
])
def test_bad_parameters_raise_at_fit(bad, message):
    X, y = regression()
    model = MLPEnsembleRegressor(**{"n_estimators": 2, "hidden_layer_sizes": (4,),
                                    "max_iter": 2, **PLAIN, **bad})
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)
    assert not hasattr(model, "n_features_in_")


def test_multi_label_targets_are_refused_with_the_estimator_to_use():
    X, y = iris()
    with pytest.raises(ValueError, match="multi-label.*MLPClassifier"):
        MLPEnsembleClassifier(2, (4,), **PLAIN).fit(X, one_hot(y).astype(int))


def test_a_fit_that_diverges_raises_and_leaves_the_estimator_unfitted():
    X, y = regression()
    model = MLPEnsembleRegressor(3, (8,), learning_rate_init=0.01, max_iter=3, random_state=0,
                                 **PLAIN).fit(X, y)
    model.set_params(learning_rate_init=1e4, batch_size=16, max_iter=10)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite") as error:
        model.fit(X, y * 1e6)
    assert isinstance(error.value.history, cmlp.EnsembleHistory)
    assert not [name for name in vars(model) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        model.predict(X)
