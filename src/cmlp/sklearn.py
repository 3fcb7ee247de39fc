"""scikit-learn estimators over :class:`cmlp.MLP`: :class:`MLPRegressor` and :class:`MLPClassifier`.

They follow scikit-learn's conventions (``fit``/``partial_fit``/``predict``,
``get_params``/``set_params``, ``warm_start``, ``random_state``, fitted
attributes ending in ``_``) and pass its estimator checks, so they work in
pipelines, grid searches and cross-validation. The parameter names and
defaults follow :class:`sklearn.neural_network.MLPRegressor` where the meaning
is the same; where cmlp differs the name says so:

* ``optimizer`` is ``"adam"`` or ``"sgd"`` (scikit-learn's ``solver``; no
  L-BFGS) and ``lr`` its learning rate (``learning_rate_init``), constant;
* ``weight_decay`` is PyTorch's L2 decay, added to the gradient of every
  parameter, biases included (scikit-learn's ``alpha`` penalises weights only,
  and divides by the number of samples);
* the regressor minimises ``"mse"``, ``sum((a - y)**2) / (n * k)``
  (scikit-learn's ``loss_curve_`` reports half of that, for one output);
* ``early_stopping`` watches the loss on the held-out fraction (not the
  score), with patience ``n_iter_no_change``, and keeps the best parameters.

scikit-learn is an optional dependency (``pip install cmlp[sklearn]``).
"""
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call, check_classification_targets, type_of_target,
)
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from cmlp.network import MLP
from cmlp.training import make_optimizer

__all__ = ["MLPRegressor", "MLPClassifier"]

# The core's activations but softmax, which belongs on an output layer.
_HIDDEN_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
_SEED_BOUND = np.iinfo(np.int32).max

_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "sigmoid", "identity"}, default "relu"
        Activation of the hidden layers.
    optimizer : {"adam", "sgd"}, default "adam"
        :class:`cmlp.Adam` or :class:`cmlp.SGD` (PyTorch's update rules).
    lr : float, default 0.001
        Learning rate, constant.
    momentum : float, default 0.9
        SGD momentum (ignored by Adam).
    nesterov : bool, default True
        Nesterov momentum for SGD (ignored by Adam).
    weight_decay : float, default 0
        L2 decay added to every gradient, biases included, as in PyTorch.
    batch_size : int or "auto", default "auto"
        Samples per update; "auto" is ``min(200, n_samples)``. Each update
        follows the gradient of the batch's mean loss.
    max_iter : int, default 200
        Epochs of :meth:`fit` (:meth:`partial_fit` always runs one).
    tol : float, default 1e-4
        :meth:`fit` stops once the training loss has failed to improve on its
        best by ``tol`` for more than ``n_iter_no_change`` epochs in a row.
    n_iter_no_change : int, default 10
        Patience for ``tol``, and for ``early_stopping``.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data, stop once its loss has
        not improved for ``n_iter_no_change`` epochs, and keep the parameters
        of its best epoch.
    validation_fraction : float, default 0.1
        Share of the samples held out for ``early_stopping``.
    shuffle : bool, default True
        Reshuffle the samples before each epoch.
    random_state : int, RandomState or None
        Seeds the initial weights, the shuffling and the validation split.
    warm_start : bool, default False
        :meth:`fit` continues from the current weights (with a new optimizer
        state) instead of starting afresh.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the network.
    verbose : bool, default False
        Show :func:`cmlp.training.fit`'s progress line.
"""

_ATTRIBUTES_DOC = """
    net_ : cmlp.MLP
        The trained network.
    n_iter_ : int
        Epochs run, summed over :meth:`fit` calls with ``warm_start`` and
        :meth:`partial_fit` calls.
    loss_curve_ : list of float
        Training loss of each of those epochs.
    coefs_, intercepts_ : list of numpy.ndarray
        Copies of the weights, ``(fan_in, fan_out)`` as in scikit-learn, and
        of the biases.
    n_layers_ : int
        Layers of units, input and output included.
    n_outputs_ : int
        Width of the output layer.
    out_activation_ : str
        Activation of the output layer.
    n_features_in_ : int
        Inputs seen by the first fit.
"""


class _MLPEstimator(BaseEstimator):
    """What the regressor and the classifier share: parameters, training, fitted attributes."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 lr=0.001, momentum=0.9, nesterov=True, weight_decay=0.0, batch_size="auto",
                 max_iter=200, tol=1e-4, n_iter_no_change=10, early_stopping=False,
                 validation_fraction=0.1, shuffle=True, random_state=None, warm_start=False,
                 dtype="float64", verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.shuffle = shuffle
        self.random_state = random_state
        self.warm_start = warm_start
        self.dtype = dtype
        self.verbose = verbose

    # -- fitted attributes in scikit-learn's layout -----------------------------

    @property
    def coefs_(self):
        """Weights of each layer as ``(fan_in, fan_out)`` copies."""
        check_is_fitted(self)
        return [W.T.copy() for W in self.net_.weights]

    @property
    def intercepts_(self):
        """Biases of each layer, as copies."""
        check_is_fitted(self)
        return [b.copy() for b in self.net_.biases]

    # -- training ----------------------------------------------------------------

    def _train(self, X, y, *, incremental, classes=None):
        fresh = not hasattr(self, "net_") or not (incremental or self.warm_start)
        X, y = validate_data(self, X, y, reset=fresh, dtype=[np.float64, np.float32],
                             **self._validation_options)
        Y = self._encode_targets(y, fresh, classes)
        if fresh:
            self._initialise(X.shape[1])
        optimizer = self._make_optimizer()
        if incremental and self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        validation_data, patience, callbacks = None, None, []
        if incremental:
            epochs = 1
        else:
            epochs = _check_int("max_iter", self.max_iter, 1)
            if self.early_stopping:
                X, Y, validation_data = self._hold_out(X, Y, y)
                patience = _check_int("n_iter_no_change", self.n_iter_no_change, 1)
            else:
                callbacks.append(self._convergence_callback())
        batch_size = (min(200, X.shape[0]) if isinstance(self.batch_size, str)
                      and self.batch_size == "auto"
                      else min(_check_int("batch_size", self.batch_size, 1), X.shape[0]))
        history = self.net_.fit(X, Y, epochs=epochs, batch_size=batch_size, loss=self._loss,
                                optimizer=optimizer, shuffle=self.shuffle, seed=self._rng,
                                validation_data=validation_data, early_stopping=patience,
                                callbacks=callbacks, verbose=self.verbose)
        self.n_iter_ += history.epochs
        self.loss_curve_ += history.loss
        self._optimizer_state = optimizer.state_dict()
        if not incremental and history.stop_reason is None:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached "
                          "before the loss converged", ConvergenceWarning)
        return self

    def _initialise(self, n_features):
        hidden = _check_hidden(self.hidden_layer_sizes)
        if self.activation not in _HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_HIDDEN_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        random_state = check_random_state(self.random_state)
        init_seed, shuffle_seed = random_state.randint(_SEED_BOUND, size=2)
        self._split_seed = int(random_state.randint(_SEED_BOUND))
        sizes = [n_features, *hidden, self.n_outputs_]
        self.net_ = MLP(sizes, activation=[self.activation] * len(hidden) + [self.out_activation_],
                        dtype=self.dtype, seed=int(init_seed))
        # One stream for all shuffling, carried across partial_fit calls.
        self._rng = np.random.default_rng(int(shuffle_seed))
        self._optimizer_state = None
        self.n_layers_ = len(sizes)
        self.n_iter_ = 0
        self.loss_curve_ = []

    def _make_optimizer(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        sgd = self.optimizer == "sgd"
        return make_optimizer(self.net_, self.optimizer, lr=self.lr,
                              momentum=self.momentum if sgd else 0.0,
                              nesterov=bool(self.nesterov) and sgd and self.momentum > 0,
                              weight_decay=self.weight_decay)

    def _hold_out(self, X, Y, y):
        fraction = self.validation_fraction
        if not (isinstance(fraction, numbers.Real) and 0 < fraction < 1):
            raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
        stratify = y if isinstance(self, ClassifierMixin) else None
        X_train, X_val, Y_train, Y_val = train_test_split(
            X, Y, test_size=fraction, random_state=self._split_seed, stratify=stratify)
        return X_train, Y_train, (X_val, Y_val)

    def _convergence_callback(self):
        """Stop as scikit-learn's MLP does: no improvement by tol for more than n_iter_no_change epochs."""
        tol = float(self.tol)
        patience = _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        state = {"best": np.inf, "stalled": 0}

        def converged(epoch, history):
            loss = history.loss[-1]
            state["stalled"] = state["stalled"] + 1 if loss > state["best"] - tol else 0
            state["best"] = min(state["best"], loss)
            return state["stalled"] > patience

        return converged

    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.net_.predict(X)


class MLPRegressor(RegressorMixin, _MLPEstimator):
    __doc__ = ("""A multilayer perceptron regressor trained by cmlp's compiled kernels.

    Identity output layer, ``"mse"`` loss; one or several outputs.
""" + _PARAMETERS_DOC + """
    Attributes
    ----------""" + _ATTRIBUTES_DOC + """
    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from cmlp.sklearn import MLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    >>> model = MLPRegressor((32,), lr=0.01, max_iter=500, random_state=0).fit(X, y / 100)
    >>> model.score(X, y / 100) > 0.99
    True
""")

    out_activation_ = "identity"
    _loss = "mse"
    _validation_options = {"multi_output": True, "y_numeric": True}

    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self."""
        return self._train(X, y, incremental=False)

    def partial_fit(self, X, y):
        """Train for exactly one epoch, continuing from the current state; returns self."""
        return self._train(X, y, incremental=True)

    def predict(self, X):
        """Predictions, ``(n,)`` for one output, else ``(n, n_outputs_)``."""
        out = self._forward(X)
        return out.ravel() if self.n_outputs_ == 1 else out

    def _encode_targets(self, y, fresh, classes):
        y = np.asarray(y)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if fresh:
            self.n_outputs_ = Y.shape[1]
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, the model {self.n_outputs_}")
        return Y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    __doc__ = ("""A multilayer perceptron classifier trained by cmlp's compiled kernels.

    One label per sample: a softmax output layer with one unit per class
    (two for a binary problem) and the ``"cross_entropy"`` loss, i.e.
    :class:`torch.nn.CrossEntropyLoss`. Multi-label targets (a 0/1 indicator
    matrix, one column per label): a sigmoid output layer and the ``"bce"``
    loss, :class:`torch.nn.BCELoss`; a label is predicted where its
    probability exceeds 0.5.
""" + _PARAMETERS_DOC + """
    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels, sorted (for multi-label targets, the column
        indices).""" + _ATTRIBUTES_DOC + """
    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from cmlp.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier((16,), lr=0.01, max_iter=1000, random_state=0).fit(X, y)
    >>> model.score(X, y) > 0.95
    True
""")

    _validation_options = {"multi_output": True}

    @property
    def _loss(self):
        return "bce" if self.out_activation_ == "sigmoid" else "cross_entropy"

    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self."""
        return self._train(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """Train for exactly one epoch; ``classes`` (all labels) is needed on the first call."""
        _check_partial_fit_first_call(self, classes)
        return self._train(X, y, incremental=True, classes=self.classes_)

    def predict_proba(self, X):
        """Class probabilities, ``(n, len(classes_))``, columns in the order of ``classes_``.

        For multi-label targets, each column is its label's own probability.
        """
        return self._forward(X)

    def predict(self, X):
        """The most probable class of each sample (multi-label: a 0/1 row of labels)."""
        probabilities = self._forward(X)  # checks that the model is fitted first
        if self.out_activation_ == "sigmoid":
            return (probabilities > 0.5).astype(int)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _encode_targets(self, y, fresh, classes):
        if y.ndim == 2 and y.shape[1] > 1:
            return self._encode_indicator(y, fresh)
        if not fresh and self.out_activation_ == "sigmoid":
            raise ValueError("this model was fitted on multi-label targets: y must be a 0/1 "
                             f"matrix with {self.n_outputs_} columns")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if fresh:
            self.out_activation_ = "softmax"
        if classes is None and (fresh or not hasattr(self, "classes_")):
            self.classes_ = np.unique(y)
        elif fresh and classes is not None:
            self.classes_ = np.asarray(classes)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y holds labels not among classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unknown]).tolist()}")
        self.n_outputs_ = len(self.classes_)
        return np.searchsorted(self.classes_, y).astype(np.intp)

    def _encode_indicator(self, y, fresh):
        """Multi-label targets: a 0/1 matrix, one column per label."""
        if type_of_target(y) != "multilabel-indicator" or not np.isin(y, (0, 1)).all():
            raise ValueError("2-D y must be a multi-label indicator matrix of 0s and 1s, "
                             f"got {type_of_target(y)} targets")
        if fresh:
            self.out_activation_ = "sigmoid"
            self.classes_ = np.arange(y.shape[1])
            self.n_outputs_ = y.shape[1]
        elif self.out_activation_ != "sigmoid" or y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} label columns; this model was fitted on "
                             + (f"{self.n_outputs_}" if self.out_activation_ == "sigmoid"
                                else "one label per sample"))
        return np.asarray(y, dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _check_int(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_hidden(hidden_layer_sizes):
    sizes = ([hidden_layer_sizes] if isinstance(hidden_layer_sizes, numbers.Integral)
             else list(hidden_layer_sizes))
    for size in sizes:
        _check_int("hidden_layer_sizes entries", size, 1)
    return [int(size) for size in sizes]
