"""scikit-learn estimators over :class:`cmlp.MLP`: :class:`MLPRegressor` and :class:`MLPClassifier`.

They follow scikit-learn's conventions (``fit``/``partial_fit``/``predict``,
``get_params``/``set_params``, ``warm_start``, ``random_state``, fitted
attributes ending in ``_``) and pass its estimator checks, so they work in
pipelines, grid searches and cross-validation. Their constructors are those of
``sklearn.neural_network.MLPRegressor`` and ``MLPClassifier``: the same
parameters in the same order, the same defaults, the same keyword-only
marker, so code written for scikit-learn's MLP runs unchanged. Two keyword-only
parameters follow scikit-learn's: ``weight_decay`` (PyTorch's L2 decay) and
``dtype``. Where the numbers differ from scikit-learn's, it is because:

* the optimizers are PyTorch's (:class:`cmlp.SGD`, :class:`cmlp.Adam`): with
  a constant learning rate SGD's momentum is scikit-learn's update written
  differently, Adam adds ``epsilon`` to the bias-corrected ``sqrt(v)``
  (scikit-learn to the uncorrected one); with ``learning_rate="invscaling"``
  or ``"adaptive"`` the momentum buffer holds gradients, not steps, so a new
  learning rate applies to the whole update at once;
* the regressor minimises ``"half_sse"``, ``sum((a - y)**2) / (2 n)``, whose
  gradient is scikit-learn's; ``loss_curve_`` reports that loss, scikit-learn's
  value for one output and ``n_outputs_`` times it for several (scikit-learn
  reports the mean over the outputs but follows the sum's gradient);
* a binary classifier has a softmax output of two units, not one logistic
  unit: the same loss, another parametrisation;
* a multi-label classifier minimises :class:`torch.nn.BCELoss`, the mean over
  the ``k`` labels as well as the samples, ``1 / k`` of scikit-learn's loss (a
  sum over the labels): the estimator divides ``alpha`` by ``k`` and
  multiplies SGD's rate by ``k`` (divides Adam's ``epsilon`` and the L-BFGS
  ``tol`` by ``k``), so the same settings take scikit-learn's steps, and it
  reports scikit-learn's loss in ``loss_``, ``loss_curve_`` and ``best_loss_``;
* the network trains in ``dtype`` whatever the dtype of ``X`` (scikit-learn's
  in float32 when ``X`` is float32).

``alpha`` is scikit-learn's penalty, ``alpha / 2 * sum(W**2)`` over the weight
matrices divided by the batch's samples (or summed ``sample_weight``).
``early_stopping`` and ``tol`` follow scikit-learn's rule: the held-out score
(accuracy, R²) or the training loss must beat its best by more than ``tol`` to
count as an improvement. ``solver="lbfgs"`` runs SciPy's L-BFGS-B on the flat
parameter buffer (:class:`cmlp.LBFGS`), with ``max_iter``, ``max_fun`` and
``tol`` as scikit-learn passes them.

A fit whose loss becomes NaN or infinite raises
:class:`cmlp.TrainingDivergedError`. A fresh fit then leaves the estimator
unfitted; a warm-started fit or ``partial_fit`` leaves it at the start of
the failing epoch, as the error says, with ``loss_curve_`` holding the epochs
before it and ``n_iter_`` counting those of the failing call. With
``early_stopping``, a held-out score that cannot be computed (the network's
outputs are no longer finite) is recorded as NaN, as scikit-learn records it,
and is no improvement.

Sparse ``X`` (``scipy.sparse`` matrices and arrays, as scikit-learn's MLP
takes) is never densified: CSR is read in place, CSC and the other formats
are converted to CSR once (a copy of the nonzeros), and the first layer's
product and gradient are compiled CSR kernels; see :meth:`cmlp.MLP.fit` for
the memory they need.

:class:`MLPEnsembleRegressor` and :class:`MLPEnsembleClassifier` bag K
networks, as ``sklearn.ensemble.BaggingRegressor`` over :class:`MLPRegressor`
would, but train all K together in :class:`cmlp.MLPEnsemble`'s compiled calls,
each network bit for bit what :class:`cmlp.MLP` gives it alone (dense ``X`` only).

scikit-learn is an optional dependency (``pip install scikit-learn``).
"""
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from cmlp._optional import require
from cmlp._validation import check_count

require("sklearn", "cmlp.sklearn")
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call, check_classification_targets, type_of_target,
)
from sklearn.utils.validation import (
    _check_sample_weight, check_is_fitted, column_or_1d, validate_data,
)

from cmlp.ensemble import MLPEnsemble
from cmlp.network import MLP
from cmlp.training import LBFGS, Adam, TrainingDivergedError, make_optimizer

__all__ = ["MLPRegressor", "MLPClassifier", "MLPEnsembleRegressor", "MLPEnsembleClassifier"]

# The core's activations but softmax, which belongs on an output layer;
# "logistic" is scikit-learn's name for the sigmoid.
_HIDDEN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
                       "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("adam", "sgd", "lbfgs")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")
# scikit-learn's adaptive schedule stops once the rate has fallen this low.
_SMALLEST_ADAPTIVE_RATE = 1e-6
_SEED_BOUND = np.iinfo(np.int32).max
# Sparse X is taken as CSR (read in place) or CSC (converted to CSR once by
# cmlp, a copy of the nonzeros); scikit-learn converts any other format to CSR.
_SPARSE_FORMATS = ("csr", "csc")

_PARAMETERS_DOC = """
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
        Activation of the hidden layers; "sigmoid" is another name of
        "logistic".
    solver : {"adam", "sgd", "lbfgs"}, default "adam"
        :class:`cmlp.Adam`, :class:`cmlp.SGD` (PyTorch's update rules) or
        full-batch L-BFGS-B through ``scipy.optimize.minimize``
        (:class:`cmlp.LBFGS`), the best of the three on small data sets.
    alpha : float, default 0.0001
        scikit-learn's L2 penalty: ``alpha / 2 * sum(W**2) / m`` over the
        weight matrices (not the biases) is added to each batch's loss, ``m``
        its samples (with ``sample_weight``, their summed weight).
    batch_size : int or "auto", default "auto"
        Samples per update; "auto" is ``min(200, n_samples)``; larger than
        the data set means the whole of it. Each update follows the gradient
        of the batch's (weighted) mean loss. Not used by "lbfgs".
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        Schedule of the SGD learning rate (Adam's stays constant), as in
        scikit-learn: "invscaling" sets it to
        ``learning_rate_init / (t + 1)**power_t`` after each epoch, ``t`` the
        samples seen (``t_``); "adaptive" divides it by 5 whenever the
        stopping rule would stop, and stops only once it is at most 1e-6.
    learning_rate_init : float, default 0.001
        The initial learning rate (SGD and Adam).
    power_t : float, default 0.5
        Exponent of "invscaling".
    max_iter : int, default 200
        Most epochs of :meth:`fit` (``partial_fit`` always runs one);
        with "lbfgs", most iterations.
    shuffle : bool, default True
        Reshuffle the samples before each epoch (SGD and Adam).
    random_state : int, RandomState or None
        Seeds the initial weights, the shuffling and the validation split.
    tol : float, default 1e-4
        :meth:`fit` stops once the training loss (with ``early_stopping``,
        the held-out score) has failed to beat its best by more than ``tol``
        for more than ``n_iter_no_change`` epochs in a row. With "lbfgs",
        SciPy's ``gtol``: stop once the largest gradient entry is below it.
    verbose : bool, default False
        Show :func:`cmlp.training.fit`'s progress line.
    warm_start : bool, default False
        :meth:`fit` continues from the current weights (with a new optimizer
        state) instead of starting afresh; for the classifier, ``y`` must then
        hold the same classes as before (``ValueError`` otherwise).
    momentum : float, default 0.9
        SGD momentum, in [0, 1].
    nesterovs_momentum : bool, default True
        Nesterov momentum for SGD (with ``momentum > 0``).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified for one
        label per sample), score it after every epoch with the estimator's
        ``score`` (accuracy; R² for the regressor; weighted by the held-out
        ``sample_weight``), stop by ``tol`` and ``n_iter_no_change``, and
        keep the parameters of the best score. A held-out set of fewer than
        two samples raises ``ValueError``. SGD and Adam only;
        ``partial_fit`` ignores it (scikit-learn's raises ``ValueError``).
    validation_fraction : float, default 0.1
        Share of the samples held out for ``early_stopping``.
    beta_1, beta_2 : float, default 0.9, 0.999
        Adam's decay rates of the first and second moment estimates, in [0, 1).
    epsilon : float, default 1e-8
        Adam's term for numerical stability.
    n_iter_no_change : int or numpy.inf, default 10
        Patience for ``tol``; ``numpy.inf`` never stops before ``max_iter``.
    max_fun : int, default 15000
        With "lbfgs", most loss evaluations.
    weight_decay : float, default 0
        cmlp's addition: PyTorch's L2 decay, ``weight_decay * p`` added to
        every gradient, biases included (SGD and Adam).
    dtype : {"float64", "float32"}, default "float64"
        cmlp's addition: precision of the network, whatever the dtype of
        ``X`` (which is converted to it).
"""

_FIT_DOC = """
        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The inputs; ``scipy.sparse`` CSR is read in place, CSC and the
            other formats are converted to CSR once (never densified).
        y : array-like
            The targets.
        sample_weight : array-like of shape (n_samples,), optional
            Finite weights >= 0: each batch follows the gradient of its
            weighted mean loss, ``sum(w_i L_i) / sum(w_i)``. Weights all
            equal give the numbers of no weights.%s

        Returns
        -------
        self : object
            The fitted estimator.
        """

def _documented(doc):
    """Give a method the docstring ``doc``, built from parts (a literal joined by + is no
    docstring: Python leaves ``__doc__`` None)."""
    def document(method):
        method.__doc__ = doc
        return method
    return document


_CLASSES_DOC = """
        classes : array-like of shape (n_classes,), optional
            Every label the classifier will see; needed on the first call."""

_ATTRIBUTES_DOC = """
    net_ : cmlp.MLP
        The trained network.
    loss_ : float
        The training loss of the last epoch (with "lbfgs", at the solution),
        the ``alpha`` penalty included.
    n_iter_ : int
        Epochs (with "lbfgs", iterations) run by the last call, as in
        scikit-learn: a warm-started :meth:`fit` counts its own, and each
        ``partial_fit`` sets it to 1 (``loss_curve_`` and ``t_`` go on
        across calls).
    t_ : int or float
        Samples seen by the stochastic solvers, as "invscaling" counts them
        (a sample of weight ``w`` as ``w`` samples).
    loss_curve_ : list of float
        Training loss of each of those epochs (iterations).
    best_loss_ : float or None
        The lowest of them; None with ``early_stopping``.
    validation_scores_ : list of float or None
        With ``early_stopping``, the held-out score after each epoch; else None.
    best_validation_score_ : float or None
        The best of them (its parameters are the ones kept); else None.
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 weight_decay=0.0, dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.weight_decay = weight_decay
        self.dtype = dtype

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

    def _is_stochastic(self):
        return self.solver in ("sgd", "adam")

    def _loss_scale(self):
        """scikit-learn's loss over the one cmlp minimises: 1 but for multi-label targets."""
        return 1.0

    def _rate_scale(self):
        """SGD's rate over scikit-learn's: the loss scale, so that the steps are its."""
        return self._loss_scale() if self.solver == "sgd" else 1.0

    # -- training ----------------------------------------------------------------

    def _train(self, X, y, sample_weight, *, incremental, classes=None):
        fresh = not hasattr(self, "net_") or not (incremental or self.warm_start)
        X, y = validate_data(self, X, y, reset=fresh, dtype=[np.float64, np.float32],
                             accept_sparse=_SPARSE_FORMATS, **self._validation_options)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        Y = self._encode_targets(y, fresh, classes)
        _check_solver(self.solver)
        if fresh:
            self._initialise(X.shape[1])
        if self.solver == "lbfgs":
            return self._train_lbfgs(X, Y, sample_weight, fresh)
        optimizer = self._make_optimizer(incremental)
        if incremental and self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        if incremental:
            # One epoch: nothing to stop. With early_stopping there is no
            # held-out set either, so partial_fit keeps no score.
            epochs, held_out = 1, None
        else:
            epochs = _check_int("max_iter", self.max_iter, 1)
            held_out = self._hold_out(X, Y, sample_weight) if self.early_stopping else None
            if held_out is not None:
                X, Y, sample_weight = held_out.X_train, held_out.Y_train, held_out.w_train
        # t_ counts a sample of weight w as w samples: weights then act as repetitions.
        seen = X.shape[0] if sample_weight is None else float(sample_weight.sum())
        callbacks = [self._epoch_callback(optimizer, seen, held_out,
                                          stops=not (incremental and self.early_stopping))]
        batch_size = (min(200, X.shape[0]) if isinstance(self.batch_size, str)
                      and self.batch_size == "auto"
                      else min(_check_int("batch_size", self.batch_size, 1), X.shape[0]))
        try:
            history = self.net_.fit(X, Y, epochs=epochs, batch_size=batch_size,
                                    loss=self._loss, optimizer=optimizer, shuffle=self.shuffle,
                                    seed=self._rng, callbacks=callbacks, verbose=self.verbose,
                                    sample_weight=sample_weight,
                                    alpha=self._alpha() / self._loss_scale())
        except TrainingDivergedError as error:
            # A fresh fit that diverged leaves no model. A continued one keeps
            # what the error says: the epochs before the failing one, whose
            # parameters and optimizer state fit restored.
            if fresh:
                self._forget_fit()
            else:
                self._record(error.history, optimizer)
            raise
        if held_out is not None:
            self.net_._restore_params(held_out.best_params)   # one step, as fit restores
        self._record(history, optimizer)
        if not incremental and history.stop_reason is None:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached "
                          "before the loss converged", ConvergenceWarning)
        return self

    def _train_lbfgs(self, X, Y, sample_weight, fresh):
        """scikit-learn's L-BFGS: max_iter iterations, max_fun evaluations, gtol = tol."""
        scale = self._loss_scale()
        solver = LBFGS(max_fun=_check_int("max_fun", self.max_fun, 1),
                       tol=_check_tol(self.tol) / scale)
        try:
            history = self.net_.fit(X, Y, epochs=_check_int("max_iter", self.max_iter, 1),
                                    loss=self._loss, optimizer=solver,
                                    sample_weight=sample_weight, alpha=self._alpha() / scale)
        except TrainingDivergedError:
            if fresh:
                self._forget_fit()
            raise
        self.n_iter_ = history.epochs
        losses = [loss * scale for loss in history.loss]
        self.loss_curve_ += losses
        if losses:
            self.loss_ = losses[-1]
            best = np.inf if self.best_loss_ is None else self.best_loss_
            self.best_loss_ = min(best, min(losses))
        if history.stop_reason != "converged":
            warnings.warn(f"{type(self).__name__}: lbfgs failed to converge after "
                          f"{history.epochs} iterations ({history.stop_reason or 'max_iter'} "
                          "reached)", ConvergenceWarning)
        return self

    def _record(self, history, optimizer):
        # scikit-learn's n_iter_: the epochs of this call, not of the model.
        self.n_iter_ = history.epochs
        self.loss_curve_ += [loss * self._loss_scale() for loss in history.loss]
        if self.loss_curve_:
            self.loss_ = self.loss_curve_[-1]
        self._optimizer_state = optimizer.state_dict()
        self._learning_rate = optimizer.lr / self._rate_scale()

    def _forget_fit(self):
        """Back to unfitted: every fitted attribute (``name_``) and the training state go."""
        for name in [name for name in vars(self) if name.endswith("_") and not name.startswith("__")]:
            delattr(self, name)
        for name in ("_rng", "_optimizer_state", "_split_seed", "_no_improvement_count",
                     "_learning_rate"):
            self.__dict__.pop(name, None)

    def _initialise(self, n_features):
        hidden = _check_hidden(self.hidden_layer_sizes)
        activation = _check_activation(self.activation)
        random_state = check_random_state(self.random_state)
        init_seed, shuffle_seed = random_state.randint(_SEED_BOUND, size=2)
        self._split_seed = int(random_state.randint(_SEED_BOUND))
        sizes = [n_features, *hidden, self.n_outputs_]
        self.net_ = MLP(sizes, activation=[activation] * len(hidden) + [self.out_activation_],
                        dtype=self.dtype, seed=int(init_seed))
        # One stream for all shuffling, carried across partial_fit calls.
        self._rng = np.random.default_rng(int(shuffle_seed))
        self._optimizer_state = None
        self.n_layers_ = len(sizes)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        # scikit-learn's bookkeeping of its stopping rule, carried across
        # warm-started fits and partial_fit calls as scikit-learn carries it.
        self._no_improvement_count = 0
        if self.early_stopping and self._is_stochastic():
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = None, [], -np.inf
        else:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None

    def _alpha(self):
        return _check_alpha(self.alpha)

    def _make_optimizer(self, incremental):
        """SGD or Adam at scikit-learn's settings; partial_fit goes on at the rate the
        schedule had reached, a fit starts at learning_rate_init (as scikit-learn's)."""
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {list(_LEARNING_RATES)}, "
                             f"got {self.learning_rate!r}")
        if not (isinstance(self.power_t, numbers.Real) and 0 <= self.power_t < np.inf):
            raise ValueError(f"power_t must be a float >= 0, got {self.power_t!r}")
        lr = self.learning_rate_init
        if incremental and getattr(self, "_learning_rate", None) is not None:
            lr = self._learning_rate
        scale = self._loss_scale()
        if self.solver == "sgd":
            return make_optimizer(self.net_, "sgd", lr=lr * self._rate_scale(),
                                  momentum=self.momentum,
                                  nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
                                  weight_decay=self.weight_decay / scale)
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and 0 <= value < 1):
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        return Adam(self.net_.params, self.net_.grads, lr=lr, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon / scale, weight_decay=self.weight_decay / scale)

    def _hold_out(self, X, Y, sample_weight):
        fraction = self.validation_fraction
        if not (isinstance(fraction, numbers.Real) and 0 < fraction < 1):
            raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
        # As scikit-learn: stratified for one label per sample only; a
        # multi-label indicator matrix has no classes to stratify on.
        stratify = Y if getattr(self, "out_activation_", None) == "softmax" else None
        arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
        parts = train_test_split(*arrays, test_size=fraction, random_state=self._split_seed,
                                 stratify=stratify)
        X_train, X_val, Y_train, Y_val = parts[:4]
        if X_val.shape[0] < 2:
            # scikit-learn's error: a score of one sample is no score (R² is undefined).
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        w_train, w_val = parts[4:] if sample_weight is not None else (None, None)
        return _HeldOut(X_train, Y_train, w_train, X_val, Y_val, w_val, self.net_._snapshot_params())

    def _epoch_callback(self, optimizer, samples_per_epoch, held_out, stops):
        """scikit-learn's end of an epoch, as a callback of :meth:`cmlp.MLP.fit`.

        In scikit-learn's order: count the samples seen (``t_``), apply the
        stopping rule, set the "invscaling" rate, and once the rule says
        stop, stop, or with "adaptive" SGD divide the rate by 5 instead.
        """
        tol = _check_tol(self.tol)
        patience = _check_patience(self.n_iter_no_change)
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        invscaling = self.solver == "sgd" and self.learning_rate == "invscaling"
        rate_scale = self._rate_scale()

        def end_of_epoch(epoch, history):
            self.t_ += samples_per_epoch
            if stops:
                self._update_no_improvement_count(history, held_out, tol)
            if invscaling:
                optimizer.lr = (rate_scale * float(self.learning_rate_init)
                                / (self.t_ + 1) ** self.power_t)
            if self._no_improvement_count <= patience:
                return False
            if adaptive and optimizer.lr / rate_scale > _SMALLEST_ADAPTIVE_RATE:
                optimizer.lr = optimizer.lr / 5.0
                self._no_improvement_count = 0
                return False
            return True

        return end_of_epoch

    def _update_no_improvement_count(self, history, held_out, tol):
        """An epoch improves only if its training loss (or, with early stopping,
        its held-out score) beats the best so far by more than ``tol``. With
        early stopping the parameters of the best score are kept, even when it
        beat the one before by less than ``tol``."""
        if held_out is None:
            loss = history.loss[-1] * self._loss_scale()
            self._no_improvement_count = (self._no_improvement_count + 1
                                          if loss > self.best_loss_ - tol else 0)
            self.best_loss_ = min(self.best_loss_, loss)
            return
        score = self._held_out_score(held_out.X_val, held_out.Y_val, held_out.w_val)
        self.validation_scores_.append(score)
        # A NaN score (a diverged network) is no improvement either.
        self._no_improvement_count = (0 if score >= self.best_validation_score_ + tol
                                      else self._no_improvement_count + 1)
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self.net_._snapshot_params(held_out.best_params)

    def _held_out_score(self, X_val, Y_val, w_val):
        """The estimator's ``score`` on the held-out set, from the encoded targets."""
        raise NotImplementedError

    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                          accept_sparse=_SPARSE_FORMATS)
        return self.net_.predict(X)


class MLPRegressor(RegressorMixin, _MLPEstimator):
    __doc__ = ("""A multilayer perceptron regressor trained by cmlp's compiled kernels.

    Identity output layer, one or several outputs; the loss is
    ``"half_sse"``, ``sum((a - y)**2) / (2 n)``, whose gradient is
    scikit-learn's squared error's.

    ``X`` may be a ``scipy.sparse`` matrix or array: CSR is read in place,
    CSC and the other formats converted to CSR once, and the first layer's
    product and gradient are compiled CSR kernels; the data set is never
    densified (see the guide's "Sparse input").

    Parameters
    ----------
    loss : {"squared_error"}, default "squared_error"
        The only loss; scikit-learn's "poisson" is not available.""" + _PARAMETERS_DOC + """
    Attributes
    ----------""" + _ATTRIBUTES_DOC + """
    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from cmlp.sklearn import MLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    >>> model = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=500,
    ...                      random_state=0).fit(X, y / 100)
    >>> model.score(X, y / 100) > 0.99
    True
""")

    out_activation_ = "identity"
    _loss = "half_sse"
    _validation_options = {"multi_output": True, "y_numeric": True}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 weight_decay=0.0, dtype="float64"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, weight_decay=weight_decay, dtype=dtype)
        self.loss = loss

    @_documented("""Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``).
""" + _FIT_DOC % "")
    def fit(self, X, y, sample_weight=None):
        return self._train(X, y, sample_weight, incremental=False)

    @available_if(_MLPEstimator._is_stochastic)
    @_documented("""Train for exactly one epoch, continuing from the current state.

        Only for the stochastic solvers, "sgd" and "adam".
""" + _FIT_DOC % "")
    def partial_fit(self, X, y, sample_weight=None):
        return self._train(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predictions, ``(n,)`` for one output, else ``(n, n_outputs_)``; ``X`` dense or sparse."""
        out = self._forward(X)
        return out.ravel() if self.n_outputs_ == 1 else out

    def _held_out_score(self, X_val, Y_val, w_val):
        predictions = self.net_.predict(X_val)
        if not np.isfinite(predictions).all():
            return float("nan")   # as scikit-learn's: the score of a diverged network
        return float(r2_score(Y_val, predictions, sample_weight=w_val))

    def _encode_targets(self, y, fresh, classes):
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error' (cmlp has no {self.loss!r} loss)")
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

    ``X`` may be a ``scipy.sparse`` matrix or array: CSR is read in place,
    CSC and the other formats converted to CSR once, and the first layer's
    product and gradient are compiled CSR kernels; the data set is never
    densified (see the guide's "Sparse input").

    Parameters
    ----------""" + _PARAMETERS_DOC + """
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
    >>> model = MLPClassifier((16,), learning_rate_init=0.01, max_iter=1000,
    ...                       random_state=0).fit(X, y)
    >>> model.score(X, y) > 0.95
    True
""")

    _validation_options = {"multi_output": True}

    @property
    def _loss(self):
        return "bce" if self.out_activation_ == "sigmoid" else "cross_entropy"

    def _loss_scale(self):
        """Multi-label targets: cmlp's "bce" is the mean over the k labels too, scikit-learn's
        loss their sum. cmlp minimises 1/k of scikit-learn's objective (alpha / k): SGD
        takes k times the rate, Adam epsilon / k, L-BFGS tol / k, and the losses reported
        are k times cmlp's, so that the steps, the stops and the numbers are scikit-learn's."""
        return float(self.n_outputs_) if self.out_activation_ == "sigmoid" else 1.0

    @_documented("""Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``).
""" + _FIT_DOC % "")
    def fit(self, X, y, sample_weight=None):
        return self._train(X, y, sample_weight, incremental=False)

    @available_if(_MLPEstimator._is_stochastic)
    @_documented("""Train for exactly one epoch; ``classes`` (all labels) is needed on the first call.

        Only for the stochastic solvers, "sgd" and "adam".
""" + _FIT_DOC % _CLASSES_DOC)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        _check_partial_fit_first_call(self, classes)
        return self._train(X, y, sample_weight, incremental=True, classes=self.classes_)

    def predict_proba(self, X):
        """Class probabilities, ``(n, len(classes_))``, columns in the order of ``classes_``.

        ``X`` may be dense or a ``scipy.sparse`` matrix or array.

        For multi-label targets, each column is its label's own probability.
        """
        return self._forward(X)

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``, as scikit-learn's: a probability that underflowed is ``-inf``."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sample (multi-label: a 0/1 row of labels)."""
        probabilities = self._forward(X)  # checks that the model is fitted first
        if self.out_activation_ == "sigmoid":
            return (probabilities > 0.5).astype(int)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _held_out_score(self, X_val, Y_val, w_val):
        """Accuracy; for multi-label targets, the share of rows with every label right."""
        probabilities = self.net_.predict(X_val)
        if not np.isfinite(probabilities).all():
            return float("nan")   # as scikit-learn's: the score of a diverged network
        if self.out_activation_ == "sigmoid":
            return float(accuracy_score(Y_val > 0.5, probabilities > 0.5, sample_weight=w_val))
        return float(accuracy_score(Y_val, np.argmax(probabilities, axis=1),
                                    sample_weight=w_val))

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
        if fresh:
            self.classes_ = np.unique(y) if classes is None else np.asarray(classes)
        elif classes is None and not np.array_equal(np.unique(y), self.classes_):
            # A warm-started fit (partial_fit passes classes_): scikit-learn's
            # rule, the same classes or none.
            raise ValueError("warm_start can only be used where `y` has the same classes as "
                             f"in the previous call to fit. Previously got {self.classes_}, "
                             f"`y` has {np.unique(y)}")
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


# -- bagging: K networks trained together by one cmlp.MLPEnsemble -----------------------

_ENSEMBLE_SOLVERS = ("sgd", "adam")

_ENSEMBLE_PARAMETERS_DOC = """
    n_estimators : int, default 10
        K, the networks of the ensemble.
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers, the same in every network.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
        Activation of the hidden layers; "sigmoid" is another name of
        "logistic".
    solver : {"adam", "sgd"}, default "adam"
        Every network's update rule, as :class:`MLPRegressor`'s (PyTorch's
        Adam, at scikit-learn's betas and epsilon, and SGD).
    alpha : float, default 0.0001
        scikit-learn's L2 penalty: ``alpha / 2 * sum(W**2) / m`` over the
        weight matrices is added to each batch's loss, ``m`` its samples.
    batch_size : int or "auto", default "auto"
        Samples per update; "auto" is ``min(200, m)``, ``m`` the rows of
        each network's sample.
    learning_rate_init : float, default 0.001
        The learning rate of every network, constant.
    max_iter : int, default 200
        Epochs. Every network runs them all unless ``early_stopping`` stops
        it: there is no ``tol`` and no ``ConvergenceWarning``.
    shuffle : bool, default True
        Reshuffle each network's sample before each epoch, in an order of
        its own.
    random_state : int, RandomState or None
        Seeds the initial weights, the shuffling, the samples and the
        validation split.
    momentum : float, default 0.9
        SGD momentum, in [0, 1) (PyTorch's SGD takes no 1).
    nesterovs_momentum : bool, default True
        Nesterov momentum for SGD (with ``momentum > 0``).
    bootstrap : bool, default True
        Draw each network's ``max_samples`` rows with replacement (a
        bootstrap sample); False draws them without replacement, so that with
        ``max_samples=1.0`` every network trains on all rows and the networks
        differ only in their initial weights and their shuffling.
    max_samples : float or int, default 1.0
        Rows of each network's sample: a float in (0, 1] is that share of
        the training rows (at least one), an int their number (at most the
        training rows without ``bootstrap``).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the rows (stratified for the
        classifier) before the samples are drawn, compute each network's
        loss on them after every epoch, stop a network once that loss has
        not fallen below its lowest for more than ``n_iter_no_change``
        epochs in a row, and keep each network's parameters of its lowest
        held-out loss. scikit-learn's MLP watches the held-out score
        (R², accuracy) with ``tol`` instead; :class:`cmlp.MLPEnsemble`
        watches the loss.
    validation_fraction : float, default 0.1
        Share of the rows held out for ``early_stopping``.
    n_iter_no_change : int or numpy.inf, default 10
        Patience of ``early_stopping``; ``numpy.inf`` never stops before
        ``max_iter`` (each network still keeps its best epoch's parameters).
    n_threads : int or None, default None
        Threads of the compiled calls (:class:`cmlp.MLPEnsemble`); None:
        every core this process may run on. The numbers do not depend on it.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the networks, whatever the dtype of ``X``.
"""

_ENSEMBLE_ATTRIBUTES_DOC = """
    ensemble_ : cmlp.MLPEnsemble
        The trained networks; ``ensemble_.models[k]`` is network k as a
        :class:`cmlp.MLP`, ``ensemble_.seeds[k]`` the seed of its initial
        weights.
    estimators_samples_ : list of numpy.ndarray
        The rows of ``X`` each network trained on (indices into the ``X``
        given to :meth:`fit`; a bootstrap sample repeats rows), as in
        scikit-learn's bagging.
    shuffle_seeds_ : numpy.ndarray of int
        The seed of each network's shuffling. Network k is, bit for bit,
        ``cmlp.MLP(sizes, activations, dtype, seed=ensemble_.seeds[k])``
        trained by ``MLP.fit`` on ``X[estimators_samples_[k]]`` with
        ``seed=shuffle_seeds_[k]`` and the estimator's settings.
    n_iter_ : numpy.ndarray of int, shape (n_estimators,)
        Epochs each network ran: ``max_iter``, or fewer for a network that
        ``early_stopping`` stopped.
    loss_curve_ : list of list of float
        Each network's training loss in each of its epochs, as
        :meth:`cmlp.MLP.fit`'s ``History.loss`` records it
        (``loss_curve_[k]`` holds ``n_iter_[k]`` values).
    validation_loss_curve_ : list of list of float or None
        With ``early_stopping``, each network's held-out loss after each of
        its epochs; else None.
    n_features_in_ : int
        Inputs seen by :meth:`fit`.
    feature_names_in_ : numpy.ndarray of str
        Their names, when ``X`` had string column names (a pandas DataFrame).
"""

_ENSEMBLE_FIT_DOC = """Train the ``n_estimators`` networks, each on its own sample of the rows.

        All in one :meth:`cmlp.MLPEnsemble.fit` call, from scratch (there is no
        ``warm_start``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The inputs (dense; sparse matrices are not supported).
        y : array-like
            The targets.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        cmlp.TrainingDivergedError
            If a network's loss or parameters became NaN or infinite. The
            estimator is then left unfitted (as :class:`MLPRegressor` is); the
            error's ``history`` is the :class:`cmlp.EnsembleHistory`.
"""


class _MLPEnsembleEstimator(BaseEstimator):
    """What the bagging regressor and classifier share: parameters, samples, training."""

    def __init__(self, n_estimators=10, hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate_init=0.001,
                 max_iter=200, shuffle=True, random_state=None, momentum=0.9,
                 nesterovs_momentum=True, bootstrap=True, max_samples=1.0, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, n_threads=None, dtype="float64"):
        self.n_estimators = n_estimators
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.bootstrap = bootstrap
        self.max_samples = max_samples
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.n_threads = n_threads
        self.dtype = dtype

    def fit(self, X, y):
        """Train every network (documented on the estimators: _ENSEMBLE_FIT_DOC)."""
        try:
            return self._fit(X, y)
        except BaseException:
            _forget_fitted(self)   # a failed fit leaves no half-fitted estimator
            raise

    def _fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32],
                             **self._validation_options)
        Y, stratify = self._encode_targets(y)
        K = _check_int("n_estimators", self.n_estimators, 1)
        hidden = _check_hidden(self.hidden_layer_sizes)
        activation = _check_activation(self.activation)
        epochs = _check_int("max_iter", self.max_iter, 1)
        lr = _check_rate(self.learning_rate_init)
        options = self._optimizer_options()
        n_threads = None if self.n_threads is None else _check_int("n_threads", self.n_threads, 1)
        random_state = check_random_state(self.random_state)
        init_seeds = random_state.randint(_SEED_BOUND, size=K)
        shuffle_seeds = random_state.randint(_SEED_BOUND, size=K)
        split_seed = int(random_state.randint(_SEED_BOUND))
        rows = np.arange(X.shape[0])
        held_out = {}
        if self.early_stopping:
            rows, val_rows = self._hold_out(rows, stratify, split_seed)
            held_out = {"validation_data": (X[val_rows], Y[val_rows]),
                        "early_stopping": _ensemble_patience(self.n_iter_no_change, epochs)}
            X, Y = X[rows], Y[rows]
        samples = self._draw_samples(K, rows.size, random_state)
        m = rows.size if samples is None else samples.shape[1]
        batch_size = (min(200, m) if isinstance(self.batch_size, str) and self.batch_size == "auto"
                      else min(_check_int("batch_size", self.batch_size, 1), m))
        sizes = [X.shape[1], *hidden, Y.shape[1]]
        ensemble = MLPEnsemble(K, sizes, [activation] * len(hidden) + [self._out_activation],
                               dtype=self.dtype, seed=init_seeds.tolist(), n_threads=n_threads)
        history = ensemble.fit(X, Y, epochs=epochs, batch_size=batch_size, lr=lr,
                               loss=self._loss, shuffle=bool(self.shuffle),
                               seed=shuffle_seeds.tolist(), sample_indices=samples,
                               **held_out, **options)
        n_iter = np.count_nonzero(~np.isnan(history.loss), axis=0)
        _raise_if_diverged(type(self).__name__, history, n_iter)
        self.ensemble_ = ensemble
        self.estimators_samples_ = ([rows.copy() for _ in range(K)] if samples is None
                                    else [rows[s] for s in samples])
        self.shuffle_seeds_ = shuffle_seeds
        self.n_iter_ = n_iter
        self.loss_curve_ = [history.loss[:n_iter[k], k].tolist() for k in range(K)]
        self.validation_loss_curve_ = (
            [history.val_loss[:n_iter[k], k].tolist() for k in range(K)]
            if self.early_stopping else None)
        return self

    def _optimizer_options(self):
        """:meth:`cmlp.MLPEnsemble.fit`'s optimizer arguments, as :class:`MLPRegressor` gives
        them to :meth:`cmlp.MLP.fit` (one label per sample or a regression: no rate or alpha
        scaling). Plain SGD (no momentum, no penalty) passes none of them."""
        if not isinstance(self.solver, str) or self.solver not in _ENSEMBLE_SOLVERS:
            raise ValueError(f"solver must be one of {list(_ENSEMBLE_SOLVERS)}, "
                             f"got {self.solver!r}")
        options = {}
        if self.solver == "adam":
            options["optimizer"] = "adam"
        else:
            momentum = self.momentum
            if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real) \
                    or not 0 <= momentum < 1:
                raise ValueError(f"momentum must be a float in [0, 1), got {momentum!r}")
            if momentum > 0:
                options["momentum"] = float(momentum)
                options["nesterov"] = bool(self.nesterovs_momentum)
        alpha = _check_alpha(self.alpha)
        if alpha > 0:
            options["alpha"] = alpha
        return options

    def _hold_out(self, rows, stratify, split_seed):
        """The training and the held-out rows, each sorted."""
        fraction = self.validation_fraction
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real) \
                or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
        train, held_out = train_test_split(rows, test_size=fraction, random_state=split_seed,
                                           stratify=stratify)
        return np.sort(train), np.sort(held_out)

    def _draw_samples(self, K, n, random_state):
        """Each network's rows, ``(K, m)`` indices into the n training rows; None for all n."""
        if not isinstance(self.bootstrap, (bool, np.bool_)):
            raise ValueError(f"bootstrap must be a bool, got {self.bootstrap!r}")
        m = _check_max_samples(self.max_samples, n, bool(self.bootstrap))
        if self.bootstrap:
            return random_state.randint(0, n, size=(K, m))
        if m == n:
            return None
        return np.stack([np.sort(random_state.permutation(n)[:m]) for _ in range(K)])

    def _outputs(self, X):
        """Every network's output, ``(n_estimators, n_samples, n_outputs)``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.ensemble_.predict(X)


class MLPEnsembleRegressor(RegressorMixin, _MLPEnsembleEstimator):
    __doc__ = ("""Bagging of cmlp regressors: K networks trained together by :class:`cmlp.MLPEnsemble`.

    What ``BaggingRegressor(cmlp.sklearn.MLPRegressor(...), n_estimators=K)``
    does, in one compiled call per epoch for all K networks. Each network is
    an :class:`MLPRegressor`'s (identity output, the ``"half_sse"`` loss
    whose gradient is scikit-learn's squared error's) trained on its own
    sample of the rows; :meth:`predict` is the mean of their predictions
    and, with ``return_std=True``, gives their standard deviation too.

    Parameters
    ----------""" + _ENSEMBLE_PARAMETERS_DOC + """
    Attributes
    ----------""" + _ENSEMBLE_ATTRIBUTES_DOC + """    n_outputs_ : int
        Outputs of each network (columns of ``y``).

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from cmlp.sklearn import MLPEnsembleRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    >>> model = MLPEnsembleRegressor(8, (32,), learning_rate_init=0.01, max_iter=300,
    ...                              random_state=0).fit(X, y / 100)
    >>> model.ensemble_
    MLPEnsemble(8, [5, 32, 1], activation=['relu', 'identity'], dtype=float64)
    >>> mean, std = model.predict(X[:3], return_std=True)
    >>> mean.shape, std.shape
    ((3,), (3,))
    >>> bool(model.score(X, y / 100) > 0.99)
    True
""")

    _out_activation = "identity"
    _loss = "half_sse"
    _validation_options = {"multi_output": True, "y_numeric": True}

    @_documented(_ENSEMBLE_FIT_DOC)
    def fit(self, X, y):
        return super().fit(X, y)

    def predict(self, X, return_std=False):
        """The mean of the networks' predictions; with ``return_std``, also their spread.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default False
            Also return the standard deviation of the networks' predictions
            (over the networks, ``ddof=0``), as
            ``sklearn.gaussian_process.GaussianProcessRegressor.predict`` does.

        Returns
        -------
        mean : numpy.ndarray, ``(n_samples,)`` for one output, else ``(n_samples, n_outputs_)``
        std : numpy.ndarray of the same shape, with ``return_std`` only
        """
        outputs = self._outputs(X)
        mean = outputs.mean(axis=0)
        if self.n_outputs_ == 1:
            mean = mean.ravel()
        if not return_std:
            return mean
        std = outputs.std(axis=0)
        return mean, (std.ravel() if self.n_outputs_ == 1 else std)

    def _encode_targets(self, y):
        y = np.asarray(y)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self.n_outputs_ = Y.shape[1]
        return Y, None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class MLPEnsembleClassifier(ClassifierMixin, _MLPEnsembleEstimator):
    __doc__ = ("""Bagging of cmlp classifiers: K networks trained together by :class:`cmlp.MLPEnsemble`.

    What ``BaggingClassifier(cmlp.sklearn.MLPClassifier(...), n_estimators=K)``
    does, in one compiled call per epoch for all K networks. Each network is
    an :class:`MLPClassifier`'s for one label per sample (a softmax output of
    one unit per class, two for a binary problem, and the
    ``"cross_entropy"`` loss on one-hot targets) trained on its own sample
    of the rows; every network has every class, also where its sample misses
    one. :meth:`predict_proba` is the mean of the networks' probabilities
    (soft voting, as ``BaggingClassifier``'s). Multi-label targets (a 2-D
    ``y``) are refused: use :class:`MLPClassifier`.

    Parameters
    ----------""" + _ENSEMBLE_PARAMETERS_DOC + """
    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels, sorted.""" + _ENSEMBLE_ATTRIBUTES_DOC + """
    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from cmlp.sklearn import MLPEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPEnsembleClassifier(5, (16,), learning_rate_init=0.01, max_iter=300,
    ...                               random_state=0).fit(X, y)
    >>> model.predict_proba(X[:2]).shape
    (2, 3)
    >>> bool(model.score(X, y) > 0.95)
    True
""")

    _out_activation = "softmax"
    _loss = "cross_entropy"
    _validation_options = {"multi_output": True}   # for the error that refuses multi-label y

    @_documented(_ENSEMBLE_FIT_DOC)
    def fit(self, X, y):
        return super().fit(X, y)

    def predict_proba(self, X):
        """The mean of the networks' class probabilities, ``(n, len(classes_))``."""
        return self._outputs(X).mean(axis=0)

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``: a probability that underflowed is ``-inf``."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The class of the highest mean probability."""
        probabilities = self.predict_proba(X)   # checks that the model is fitted first
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _encode_targets(self, y):
        """One-hot rows over ``classes_``; the class codes stratify the held-out split."""
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(f"{type(self).__name__} takes one label per sample; for "
                             "multi-label targets (a 2-D y) use cmlp.sklearn.MLPClassifier")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        return np.eye(len(self.classes_))[codes], codes


@dataclass
class _HeldOut:
    """The early-stopping split, and the parameters of the best held-out score so far."""

    X_train: np.ndarray
    Y_train: np.ndarray
    w_train: np.ndarray | None
    X_val: np.ndarray
    Y_val: np.ndarray
    w_val: np.ndarray | None
    best_params: np.ndarray


def _check_int(name, value, minimum):
    """cmlp's rule for counts (check_count), with scikit-learn's ValueError for a wrong type too."""
    try:
        return check_count(name, value, minimum)
    except TypeError as error:
        raise ValueError(str(error)) from None


def _check_solver(solver):
    if not isinstance(solver, str) or solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {list(_SOLVERS)}, got {solver!r}")


def _check_tol(tol):
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a float >= 0, got {tol!r}")
    return float(tol)


def _check_patience(n_iter_no_change):
    """An int >= 1, or numpy.inf to never stop before max_iter (as scikit-learn)."""
    if isinstance(n_iter_no_change, numbers.Real) and n_iter_no_change == np.inf:
        return np.inf
    return _check_int("n_iter_no_change", n_iter_no_change, 1)


def _check_activation(activation):
    """cmlp's name of a hidden activation given by its scikit-learn (or cmlp) name."""
    if not isinstance(activation, str) or activation not in _HIDDEN_ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(_HIDDEN_ACTIVATIONS)}, "
                         f"got {activation!r}")
    return _HIDDEN_ACTIVATIONS[activation]


def _check_alpha(alpha):
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) \
            or not 0 <= alpha < np.inf:
        raise ValueError(f"alpha must be a float >= 0, got {alpha!r}")
    return float(alpha)


def _check_hidden(hidden_layer_sizes):
    sizes = ([hidden_layer_sizes] if isinstance(hidden_layer_sizes, numbers.Integral)
             else list(hidden_layer_sizes))
    for size in sizes:
        _check_int("hidden_layer_sizes entries", size, 1)
    return [int(size) for size in sizes]


def _forget_fitted(estimator):
    """Back to unfitted: every fitted attribute (``name_``) goes."""
    for name in [name for name in vars(estimator)
                 if name.endswith("_") and not name.startswith("__")]:
        delattr(estimator, name)


def _ensemble_patience(n_iter_no_change, epochs):
    """MLPEnsemble.fit's early_stopping for scikit-learn's rule: stop after *more than*
    n_iter_no_change epochs without improvement; numpy.inf never stops."""
    patience = _check_patience(n_iter_no_change)
    return epochs if patience == np.inf else patience + 1


def _check_max_samples(max_samples, n, bootstrap):
    """Rows per network, as scikit-learn's bagging counts them."""
    if isinstance(max_samples, numbers.Integral) and not isinstance(max_samples, (bool, np.bool_)):
        if max_samples < 1 or (not bootstrap and max_samples > n):
            raise ValueError(f"max_samples must lie in [1, {n}] (the training rows) without "
                             f"bootstrap, got {max_samples}" if not bootstrap else
                             f"max_samples must be >= 1, got {max_samples}")
        return int(max_samples)
    if isinstance(max_samples, numbers.Real) and not isinstance(max_samples, (bool, np.bool_)) \
            and 0 < max_samples <= 1:
        return max(int(max_samples * n), 1)
    raise ValueError(f"max_samples must be a float in (0, 1] or an int >= 1, got {max_samples!r}")


def _check_rate(learning_rate_init):
    rate = learning_rate_init
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real) \
            or not 0 < rate < np.inf:
        raise ValueError(f"learning_rate_init must be a float > 0, got {rate!r}")
    return float(rate)


def _raise_if_diverged(name, history, n_iter):
    diverged = [k for k, reason in enumerate(history.stop_reason) if reason == "diverged"]
    if diverged:
        epoch = int(min(n_iter[k] for k in diverged))
        raise TrainingDivergedError(
            f"{name}: the loss or the parameters of network(s) {diverged} of "
            f"{len(history.stop_reason)} became NaN or infinite (first in epoch {epoch}); "
            "a lower learning_rate_init may help", epoch, None, history)
