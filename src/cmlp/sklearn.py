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

from cmlp.network import MLP
from cmlp.training import LBFGS, Adam, TrainingDivergedError, make_optimizer

__all__ = ["MLPRegressor", "MLPClassifier"]

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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The inputs; ``scipy.sparse`` CSR is read in place, CSC and the
            other formats are converted to CSR once (never densified).
        y : array-like
            The targets.
        sample_weight : array-like of shape (n_samples,), optional
            Finite weights >= 0: each batch follows the gradient of its
            weighted mean loss, ``sum(w_i L_i) / sum(w_i)``. Weights all
            equal give the numbers of no weights.
"""

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
        if not isinstance(self.activation, str) or self.activation not in _HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_HIDDEN_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        activation = _HIDDEN_ACTIVATIONS[self.activation]
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
        alpha = self.alpha
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) \
                or not 0 <= alpha < np.inf:
            raise ValueError(f"alpha must be a float >= 0, got {alpha!r}")
        return float(alpha)

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

    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self.
""" + _FIT_DOC + """        """
        return self._train(X, y, sample_weight, incremental=False)

    @available_if(_MLPEstimator._is_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """Train for exactly one epoch, continuing from the current state; returns self.

        Only for the stochastic solvers, "sgd" and "adam".
""" + _FIT_DOC + """        """
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

    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self.
""" + _FIT_DOC + """        """
        return self._train(X, y, sample_weight, incremental=False)

    @available_if(_MLPEstimator._is_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train for exactly one epoch; ``classes`` (all labels) is needed on the first call.

        Only for the stochastic solvers, "sgd" and "adam".
""" + _FIT_DOC + """        """
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


def _check_hidden(hidden_layer_sizes):
    sizes = ([hidden_layer_sizes] if isinstance(hidden_layer_sizes, numbers.Integral)
             else list(hidden_layer_sizes))
    for size in sizes:
        _check_int("hidden_layer_sizes entries", size, 1)
    return [int(size) for size in sizes]
