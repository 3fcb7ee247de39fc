"""The training loop of :class:`cmlp.MLP`: mini-batches, optimizers, history, early stopping.

:func:`fit` loops over epochs in Python; it reaches the compiled engine only
through the model's private methods (``MLP._train_epoch``,
``MLP._loss_and_grads``, ...). With plain SGD (no momentum, no weight decay)
an epoch is one compiled call, ``MLP._train_epoch``: the kernel gathers each
batch's rows from ``X`` and ``Y`` straight into the work buffers and takes the
step :meth:`~cmlp.MLP.train_step` would take, update fused into the backward
pass. Any other optimizer loops over the batches in Python, two compiled calls
each (``MLP._loss_and_grads``, then a step from :mod:`cmlp._optim`), over
contiguous slices of one copy of the data filled by one gather per epoch when
shuffling. Neither allocates anything per batch.

Sparse ``X`` (:class:`cmlp._validation.SparseSamples`, CSR) takes the same
two routes through the engine's sparse kernels: each batch's rows are gathered
from the data set in place, through the shuffled order, into CSR buffers
reserved once per fit; no copy of the data set is made, shuffled or not.

Sample weights and scikit-learn's weight penalty (``alpha``) take the second
route; ``optimizer="lbfgs"`` hands the whole data set, one compiled loss and
gradient per evaluation, to SciPy's L-BFGS-B (:class:`LBFGS`).

Left out on purpose: learning-rate schedules (a callback may set ``lr`` on an
optimizer passed in), gradient clipping.
"""
from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from cmlp._kernels import shuffled_order
from cmlp._optim import SGD, Adam
from cmlp._validation import (SparseSamples, as_samples, as_sparse_samples, as_targets,
                              check_count, is_sparse)

if TYPE_CHECKING:
    from cmlp.network import MLP, Samples

__all__ = ["fit", "History", "TrainingDivergedError", "SGD", "Adam", "LBFGS"]

#: default learning rates, as in PyTorch's examples and Keras
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}
# The progress line is redrawn at most this often (seconds): printing every
# epoch of a fast fit would cost more than the epochs.
_PROGRESS_INTERVAL = 0.1


class TrainingDivergedError(FloatingPointError):
    """The loss of a mini-batch (or a parameter) became NaN or infinite during :func:`fit`.

    Attributes
    ----------
    epoch, batch : int
        Where it happened, both counted from 0.
    history : History
        The epochs completed before it.
    """

    def __init__(self, message, epoch, batch, history):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history


@dataclass
class History:
    """What :func:`fit` returns: the loss curve and why training stopped.

    Attributes
    ----------
    loss : list of float
        Training loss of each epoch: the sample-weighted mean of its batch
        losses, each computed before that batch's update.
    val_loss : list of float
        Loss on ``validation_data`` after each epoch (empty without it).
    best_epoch : int or None
        With early stopping, the epoch (from 0) whose parameters were kept.
    stop_reason : {None, "early_stopping", "callback", "converged", "max_fun"}
        None when all requested epochs ran; with :class:`LBFGS`, "converged"
        when SciPy reports convergence and "max_fun" when the evaluations
        ran out.
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: str | None = None

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.loss)


@dataclass(frozen=True)
class LBFGS:
    """Full-batch L-BFGS-B (``scipy.optimize.minimize``), as ``optimizer`` of :func:`fit`.

    Each evaluation writes SciPy's point into ``net.params`` and takes the loss
    and every gradient over the whole data set in one compiled call; ``epochs``
    of :func:`fit` is the most iterations (SciPy's ``maxiter``), and ``history.loss``
    holds the loss after each. ``batch_size``, ``lr``, ``shuffle`` and ``seed``
    play no part. The work buffers hold the whole data set's activations and
    deltas: ``n * sum(layer_sizes)`` values each.

    Parameters
    ----------
    max_fun : int, default 15000
        Most loss evaluations (SciPy's ``maxfun``).
    tol : float, default 1e-4
        SciPy's ``gtol``: stop once the largest gradient entry is below it.
    """

    max_fun: int = 15000
    tol: float = 1e-4


def fit(net: MLP, X: Samples, Y: ArrayLike, *, epochs: int = 1, batch_size: int = 32,
        lr: float | None = None, loss: str = "mse", optimizer: str | SGD | Adam | LBFGS = "sgd",
        momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
        shuffle: bool = True, seed: int | None = None,
        validation_data: tuple[Samples, ArrayLike] | None = None,
        early_stopping: int | None = None,
        callbacks: Sequence[Callable[[int, History], bool | None]] = (),
        verbose: bool = False, sample_weight: ArrayLike | None = None,
        alpha: float = 0.0) -> History:
    """Train ``net`` on ``(X, Y)`` with mini-batch gradient descent, in place.

    Parameters
    ----------
    net : cmlp.MLP
        The network; its parameters are updated in place.
    X : array_like, shape ``(n, n_in)``, or scipy.sparse matrix or array
        Training inputs, all finite. Sparse input is never densified (see
        :meth:`cmlp.MLP.fit` for how, and the memory it needs).
    Y : array_like
        Targets of shape ``(n, n_out)``; ``(n,)`` for one output; for
        ``"cross_entropy"`` also integer class indices ``(n,)``.
    epochs : int, default 1
        Passes over the data.
    batch_size : int, default 32
        Samples per update; the last batch of an epoch holds the remainder.
        Each batch's gradient is that of its *mean* loss (the ``1/m`` of a
        batch of ``m`` samples is in the gradient; see :class:`cmlp.MLP`).
    lr : float, optional
        Learning rate; default 0.01 for SGD and 0.001 for Adam.
    loss : {"mse", "half_sse", "bce", "cross_entropy"}, default "mse"
        See :class:`cmlp.MLP` for each loss and where its ``1/n`` lives.
    optimizer : {"sgd", "adam", "lbfgs"} or cmlp.SGD, cmlp.Adam or LBFGS, default "sgd"
        By name, built with ``lr``, ``momentum``, ``nesterov`` and
        ``weight_decay``; or an optimizer already built over ``net.params``
        and ``net.grads`` (its state then carries over between calls, and
        those four arguments must be left at their defaults). ``"lbfgs"``
        is ``LBFGS()``: full-batch, ``epochs`` iterations at most, without
        ``validation_data``, ``early_stopping`` or ``weight_decay``.
    momentum : float, default 0
        SGD momentum in [0, 1), as :class:`torch.optim.SGD`.
    nesterov : bool, default False
        Nesterov momentum (SGD only).
    weight_decay : float, default 0
        L2 penalty added to the gradient, ``grad + weight_decay * p``, for
        every parameter, **biases included** (PyTorch's default behaviour).
    shuffle : bool, default True
        Reshuffle the samples before every epoch: each epoch visits them in
        a random order, drawn from ``seed``.
    seed : int, numpy.random.Generator or None
        Seed of the shuffling: the same seed, starting network and data give
        bit-identical parameters and history on one machine, and on every
        machine and in every version of the same major release while the
        network's products stay below the BLAS threshold (larger ones go to
        the BLAS SciPy ships, whose kernels differ between processors: the
        guide's "Your processor" page says more). A Generator is used as it
        is, so successive calls continue its stream.
    validation_data : (X_val, Y_val), optional
        Evaluated after each epoch into ``history.val_loss``: the same loss
        as training's (for ``"cross_entropy"``, from the logits), over the
        whole set, taken ``batch_size`` samples at a time in one compiled call
        with the parameters left as they are. The network's kept forward pass
        (:attr:`~cmlp.MLP.activations`) is then that of its last batch. A
        validation loss that is not finite counts as divergence.
    early_stopping : int, optional
        Patience: stop once the validation loss has not improved on its best
        for this many epochs, and restore the parameters of the best epoch
        (also when the epochs run out first). Needs ``validation_data``.
    callbacks : sequence of callable, default ()
        Each is called as ``callback(epoch, history)`` after every epoch
        (``epoch`` counted from 0, so ``history.loss[epoch]`` is its loss);
        returning ``True`` stops training after that epoch.
    verbose : bool, default False
        Show progress on stdout (epoch, loss, validation loss, samples/s): one
        line redrawn in place (up to ten times a second) in a terminal and in
        Jupyter; elsewhere (a pipe, a log file) a line a second at most.
    sample_weight : array_like of shape ``(n,)``, optional
        Finite weights >= 0, not all 0. Each batch then follows the gradient
        of its weighted mean loss, ``sum(w_i L_i) / sum(w_i)`` over its
        samples (a batch whose weights are all 0 leaves the gradient 0), and
        ``history.loss`` is the weighted mean over the epoch. Weights that are
        all equal are no weights: the numbers are those of a fit without them.
    alpha : float, default 0
        scikit-learn's L2 penalty: ``alpha / 2 * sum(W**2) / m`` over the
        weight matrices (not the biases) is added to each batch's loss, and
        its gradient ``alpha * W / m`` to theirs, ``m`` the batch's samples
        (with ``sample_weight``, their summed weight).

    Returns
    -------
    History

    Raises
    ------
    TrainingDivergedError
        If a batch loss, the validation loss or a parameter becomes NaN or
        infinite, or the final parameters predict NaN or infinity on the
        training data (the last update can leave finite but huge parameters
        that do). The parameters (and the optimizer's state) are first
        restored to their values at the start of that epoch, the last state
        known to give finite losses: a fit that returns leaves a model that
        predicts finite numbers on its training data, and a failed fit never
        leaves NaN weights behind.
    RuntimeError
        If ``net`` is already being trained by ``fit`` in another thread.
        One model must not be trained from two threads at once; independent
        models train in parallel threads, as the kernels release the GIL.
        Other threads may call ``net.predict``, ``state_dict`` or ``save``
        while it trains: each compiled call and each optimizer step holds
        the network's lock, so they see the parameters between two steps.

    Notes
    -----
    After the last epoch, the final parameters are checked by one forward
    pass over the training set, as :meth:`~cmlp.MLP.predict` takes it (the
    kept forward pass is left as training left it). Data that lies in the
    network's own buffers (a view of its parameters, say) is copied first.

    With plain SGD each epoch is one compiled call that holds
    the network's lock, so a ``predict`` from another thread waits for the
    epoch to end; other optimizers hold it for one batch at a time, and keep
    one shuffled copy of ``X`` and ``Y`` when shuffling.
    """
    epochs = check_count("epochs", epochs, 0)
    batch_size = check_count("batch_size", batch_size, 1)
    net._check_loss(loss)
    X, Y = _training_arrays(net, X, Y, loss, "")
    _warn_if_targets_unreachable(net, Y, loss)
    if validation_data is not None:
        X_val, Y_val = _unpack_validation(validation_data)
        X_val, Y_val = _training_arrays(net, X_val, Y_val, loss, "_val")
    if early_stopping is not None:
        early_stopping = check_count("early_stopping", early_stopping, 1)
        if validation_data is None:
            raise ValueError("early_stopping needs validation_data to watch")
    callbacks = _check_callbacks(callbacks)
    weights = _check_sample_weight(sample_weight, X.shape[0])
    alpha = _check_alpha(alpha)
    if isinstance(optimizer, LBFGS) or (isinstance(optimizer, str) and optimizer == "lbfgs"):
        return _fit_lbfgs(net, X, Y, loss, LBFGS() if isinstance(optimizer, str)
                          else optimizer, epochs, weights, alpha, callbacks,
                          validation_data is None and early_stopping is None
                          and weight_decay == 0 and lr is None and momentum == 0 and not nesterov)
    opt = make_optimizer(net, optimizer, lr, momentum, nesterov, weight_decay)
    with _exclusive(net):
        loop = _Loop(net, X, Y, loss, opt, batch_size, shuffle, np.random.default_rng(seed),
                     weights, alpha)
        validation = (None if validation_data is None
                      else _Validation(net, X_val, Y_val, loss, loop.batch_size))
        return loop.run(epochs, validation, early_stopping, callbacks,
                        _Progress(epochs) if verbose else None)


def make_optimizer(net: MLP, optimizer: str | SGD | Adam, lr: float | None = None,
                   momentum: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0) -> SGD | Adam:
    """The optimizer :func:`fit` uses: one built by name, or the one given, checked."""
    if isinstance(optimizer, (SGD, Adam)):
        params, grads = net._buffer_views()
        if not (_same_buffer(optimizer.params, params) and _same_buffer(optimizer.grads, grads)):
            raise ValueError("the optimizer must be built over this network's params and grads")
        if lr is not None or momentum != 0 or nesterov or weight_decay != 0:
            raise ValueError("with an optimizer object, set lr, momentum, nesterov and "
                             "weight_decay on it rather than on fit")
        return optimizer
    # Built over fresh views of the model's own buffers: net.params may have
    # been reshaped by its user, and that must change nothing fit computes.
    params, grads = net._buffer_views()
    if optimizer == "sgd":
        return SGD(params, grads, lr=DEFAULT_LR["sgd"] if lr is None else lr,
                   momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if optimizer == "adam":
        if momentum != 0 or nesterov:
            raise ValueError("momentum and nesterov belong to SGD; for Adam's betas pass "
                             "cmlp.Adam(net.params, net.grads, betas=...) as optimizer")
        return Adam(params, grads, lr=DEFAULT_LR["adam"] if lr is None else lr,
                    weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or a cmlp.SGD / cmlp.Adam, "
                     f"got {optimizer!r}")


def _same_buffer(given, own):
    """Whether an optimizer's buffer is all of one of the model's (not a copy, not a part),
    judged from the base-class view: a subclass's attributes may lie."""
    given = np.asarray(given)
    return (given.__array_interface__["data"][0] == own.__array_interface__["data"][0]
            and given.nbytes == own.nbytes and given.dtype == own.dtype)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

class _Loop:
    """The buffers of one fit and the epoch loop over them."""

    def __init__(self, net, X, Y, loss, opt, batch_size, shuffle, rng, weights=None, alpha=0.0):
        self.net = net
        self.loss = loss
        self.opt = opt
        self.rng = rng
        self.n = X.shape[0]
        self.X, self.Y = X, Y
        self.sparse = isinstance(X, SparseSamples)
        self.weights = weights
        self.total_weight = self.n if weights is None else float(weights.sum())
        self.alpha = alpha
        self.batch_size = min(batch_size, self.n)   # a larger one means one batch of all
        self.n_batches = -(-self.n // self.batch_size)
        if shuffle:
            self.order = np.empty(self.n, dtype=np.intp)
        else:
            self.order = None
        # Plain SGD is fused into the backward pass, and its epoch is one
        # compiled call that gathers each batch from X and Y by itself.
        self.fused = (isinstance(opt, SGD) and opt.momentum == 0 and opt.weight_decay == 0
                      and weights is None and alpha == 0)
        if self.sparse:
            net._reserve_sparse(X, self.batch_size)   # once
        if self.fused:
            self.batch_losses = np.empty(self.n_batches)
        elif self.sparse:
            # Each batch is read from the data set through the order: no copy
            # of X or Y, only of the weights when shuffling.
            self.w_batches = weights
            if shuffle and weights is not None:
                self.w_batches = np.empty_like(weights)
            size = self.batch_size
            self.batches = [(i, None if weights is None else self.w_batches[i:i + size],
                             min(size, self.n - i)) for i in range(0, self.n, size)]
        else:
            # The other optimizers take batches as contiguous slices of one
            # copy of the data, filled by one gather per epoch when shuffling.
            self.X_batches, self.Y_batches, self.w_batches = X, Y, weights
            if shuffle:
                self.X_batches, self.Y_batches = np.empty_like(X), np.empty_like(Y)
                if weights is not None:
                    self.w_batches = np.empty_like(weights)
            size = self.batch_size
            self.batches = [(self.X_batches[i:i + size], self.Y_batches[i:i + size],
                             None if weights is None else self.w_batches[i:i + size],
                             min(size, self.n - i)) for i in range(0, self.n, size)]
        # What a divergence restores: kept in buffers filled at each epoch's
        # start. A fused epoch leaves the optimizer's state as it was, so
        # there is none of it to keep.
        self.params_at_epoch_start = net._snapshot_params()   # allocated once, refilled each epoch
        self.opt_at_epoch_start = None if self.fused else opt.state_dict()

    def run(self, epochs, validation, patience, callbacks, progress):
        history = History()
        best_params = self.net._snapshot_params() if patience is not None else None
        since_best = 0
        epoch = None
        for epoch in range(epochs):
            started = time.perf_counter()
            history.loss.append(self._epoch(epoch, history))
            if validation is not None:
                history.val_loss.append(validation.loss())
                if not math.isfinite(history.val_loss[-1]):
                    self._undo_epoch(epoch, history, f"the validation loss became "
                                                     f"{history.val_loss[-1]}")
            if patience is not None:
                if history.best_epoch is None or history.val_loss[-1] < history.val_loss[history.best_epoch]:
                    history.best_epoch = epoch
                    self.net._snapshot_params(best_params)
                    since_best = 0
                else:
                    since_best += 1
                    if since_best >= patience:
                        history.stop_reason = "early_stopping"
            if progress is not None:
                progress.update(epoch, history, self.n / max(time.perf_counter() - started, 1e-9))
            if callbacks and any([callback(epoch, history) is True for callback in callbacks]):
                history.stop_reason = history.stop_reason or "callback"
            if history.stop_reason is not None:
                break
        if history.best_epoch is not None:
            self.net._restore_params(best_params)
        if progress is not None:
            progress.close()
        if epoch is not None:
            self._check_final_parameters(epoch, history)
        return history

    def _check_final_parameters(self, epoch, history):
        """The last batch's update was never checked by a loss: a training call
        must not return parameters that predict NaN or infinity on the training
        set (finite but huge ones do). One compiled pass through predict's buffer."""
        if not self.net._predicts_finite(self.X, self.batch_size):
            self._undo_epoch(epoch, history, "the final parameters predict NaN or infinity "
                                             "on the training data")

    def _undo_epoch(self, epoch, history, what):
        """An epoch that ran but left parameters that are not good: drop it from
        the history and raise, restoring the epoch's start."""
        del history.loss[epoch:]
        del history.val_loss[epoch:]
        if history.best_epoch is not None and history.best_epoch >= epoch:
            history.best_epoch = None
        self._diverged(epoch, self.n_batches - 1, what, history)

    def _epoch(self, epoch, history):
        """One pass over the batches; returns the epoch's training loss."""
        self._remember_epoch_start()
        if self.order is not None:
            shuffled_order(self.order, self.rng)
        if self.fused:
            total = self._fused_epoch(epoch, history)
        else:
            total = self._stepped_epoch(epoch, history)
        if not self.net._params_finite():
            self._diverged(epoch, self.n_batches - 1, "a parameter became NaN or infinite",
                           history)
        return total / self.total_weight

    def _fused_epoch(self, epoch, history):
        """Plain SGD: the whole epoch in one compiled call; returns the sum of
        the batch losses, each weighted by its batch's size."""
        ran, total = self.net._train_epoch(self.X, self.Y, self.order, self.batch_size,
                                           self.opt.lr, self.loss, self.batch_losses)
        value = float(self.batch_losses[ran - 1])
        if not math.isfinite(value):   # the call stops at the first such batch
            self._diverged(epoch, ran - 1, f"the loss became {value}", history)
        return total

    def _stepped_epoch(self, epoch, history):
        """An optimizer step after each batch's gradients: one gather of the
        shuffled samples, then two compiled calls per batch."""
        if self.sparse:
            return self._stepped_sparse_epoch(epoch, history)
        if self.order is not None:
            # mode="clip" lets take() write straight into out (the order is
            # a permutation, so nothing is ever clipped); "raise" would buffer.
            np.take(self.X, self.order, axis=0, out=self.X_batches, mode="clip")
            np.take(self.Y, self.order, axis=0, out=self.Y_batches, mode="clip")
            if self.weights is not None:
                np.take(self.weights, self.order, out=self.w_batches, mode="clip")
        # Each update holds the network's lock, as a compiled call does: another
        # thread's predict or state_dict never sees half an optimizer step.
        loss_and_grads, loss, alpha, update = (self.net._loss_and_grads, self.loss, self.alpha,
                                               self.opt.step)
        total = 0.0
        for batch, (X_batch, Y_batch, w_batch, m) in enumerate(self.batches):
            value, share = loss_and_grads(X_batch, Y_batch, loss, w_batch, m, alpha, step=update)
            if not math.isfinite(value):   # then the update was not made
                self._diverged(epoch, batch, f"the loss became {value}", history)
            total += value * share   # the batch's loss times its samples (or summed weight)
        return total

    def _stepped_sparse_epoch(self, epoch, history):
        """_stepped_epoch for sparse X: each batch's rows read from the data set
        through the order by the compiled call itself."""
        if self.order is not None and self.weights is not None:
            np.take(self.weights, self.order, out=self.w_batches, mode="clip")
        loss_and_grads, loss, alpha, update = (self.net._loss_and_grads, self.loss, self.alpha,
                                               self.opt.step)
        X, Y, order = self.X, self.Y, self.order
        total = 0.0
        for batch, (start, w_batch, m) in enumerate(self.batches):
            value, share = loss_and_grads(X, Y, loss, w_batch, m, alpha, order, start, step=update)
            if not math.isfinite(value):
                self._diverged(epoch, batch, f"the loss became {value}", history)
            total += value * share
        return total

    def _remember_epoch_start(self):
        self.net._snapshot_params(self.params_at_epoch_start)
        saved = self.opt_at_epoch_start
        if saved is None:
            return
        for key in saved:
            if key == "steps":
                saved[key] = self.opt.steps
            else:
                saved[key][...] = getattr(self.opt, key)

    def _diverged(self, epoch, batch, what, history):
        self.net._restore_params(self.params_at_epoch_start)
        if self.opt_at_epoch_start is not None:
            self.opt.load_state_dict(self.opt_at_epoch_start)
        raise TrainingDivergedError(
            f"training diverged: {what} at epoch {epoch}, batch {batch}. The parameters were "
            f"restored to their values at the start of epoch {epoch}. Try a smaller learning "
            f"rate (lr={self.opt.lr:g} now), or scale the inputs.",
            epoch, batch, history)


# ---------------------------------------------------------------------------
# Full-batch L-BFGS
# ---------------------------------------------------------------------------

def _fit_lbfgs(net, X, Y, loss, lbfgs, epochs, weights, alpha, callbacks, plain):
    """Minimise the full-batch loss with SciPy's L-BFGS-B from net.params, in place."""
    from scipy.optimize import minimize

    if not plain:
        raise ValueError("optimizer='lbfgs' takes no lr, momentum, nesterov, weight_decay, "
                         "validation_data or early_stopping")
    max_fun = check_count("max_fun", lbfgs.max_fun, 1)
    if not (isinstance(lbfgs.tol, (int, float)) and lbfgs.tol >= 0):
        raise ValueError(f"tol must be a float >= 0, got {lbfgs.tol!r}")
    history = History()
    if epochs == 0:
        return history
    start = net._snapshot_params()
    params, grads = net._buffer_views()   # net.params may have been reshaped by its user
    same_dtype = grads.dtype == np.float64

    last = {"loss": math.nan}

    def loss_and_gradient(x):
        params[...] = x
        value, _ = net._loss_and_grads(X, Y, loss, weights, X.shape[0], alpha)
        last["loss"] = value
        # A float64 network hands SciPy its gradient buffer as it is.
        return value, grads if same_dtype else grads.astype(np.float64)

    def loss_at(x):
        # The iterate L-BFGS-B accepts is, but for a rare line search, the
        # point it evaluated last, whose loss is known.
        if np.array_equal(params, x.astype(params.dtype, copy=False)):
            return last["loss"]
        return loss_and_gradient(x)[0]

    def after_iteration(intermediate_result):
        # SciPy 1.11 and later pass an OptimizeResult (the parameter's name
        # asks for it); earlier versions pass the iterate alone.
        if isinstance(intermediate_result, np.ndarray):
            x, value = intermediate_result, loss_at(intermediate_result)
        else:
            x, value = intermediate_result.x, intermediate_result.fun
        history.loss.append(float(value))
        if callbacks and any([callback(history.epochs - 1, history) is True
                              for callback in callbacks]):
            history.stop_reason = "callback"
            raise _StoppedByCallback(x.copy(), value)

    with _exclusive(net):
        try:
            result = minimize(loss_and_gradient, start.astype(np.float64), method="L-BFGS-B",
                              jac=True, callback=after_iteration,
                              options={"maxfun": max_fun, "maxiter": epochs,
                                       "gtol": float(lbfgs.tol)})
            x, value = result.x, result.fun
        except _StoppedByCallback as stop:
            result, x, value = None, stop.x, stop.loss
        if not np.isfinite(value) or not np.isfinite(x).all():
            params[...] = start
            raise TrainingDivergedError(
                f"training diverged: the loss became {value} under L-BFGS; the "
                "parameters were restored to their values before fit. Scale the inputs.",
                history.epochs, 0, history)
        params[...] = x
    if history.stop_reason is None:
        if result.status == 0:
            history.stop_reason = "converged"
        elif result.nfev >= max_fun:
            history.stop_reason = "max_fun"
    return history


class _StoppedByCallback(Exception):
    """A callback stopped L-BFGS: raised through SciPy, with the iterate to keep."""

    def __init__(self, x, loss):
        super().__init__("stopped by a callback")
        self.x, self.loss = x, loss


def _check_sample_weight(sample_weight, n):
    """float64 weights of n samples, or None for none (or for all-equal ones)."""
    if sample_weight is None:
        return None
    w = np.array(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must hold one weight per sample ({n}), got shape "
                         f"{np.shape(sample_weight)}")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and >= 0")
    if not w.any():
        raise ValueError("sample_weight must not be all 0")
    # Equal weights give the unweighted mean: take its path, and its bits.
    return None if (w == w[0]).all() else w


def _check_callbacks(callbacks):
    """callbacks as a list of callables, or TypeError."""
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of callables, got {callbacks!r}") from None
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables, got {callback!r}")
    return callbacks


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite float >= 0, got {alpha!r}")
    return float(alpha)


class _Validation:
    """The validation loss after an epoch: the data set taken batch by batch
    through the forward pass and the loss, in one compiled call."""

    def __init__(self, net, X, Y, loss, batch_size):
        self.net, self.X, self.Y, self.loss_name = net, X, Y, loss
        self.batch_size = min(batch_size, X.shape[0])
        self.batch_losses = np.empty(-(-X.shape[0] // self.batch_size))

    def loss(self):
        _, total = self.net._evaluate(self.X, self.Y, self.batch_size, self.loss_name,
                                      self.batch_losses)
        return total / self.X.shape[0]


# ---------------------------------------------------------------------------
# Progress, exclusivity, checks
# ---------------------------------------------------------------------------

class _Progress:
    """A status line: redrawn in place with a carriage return where that works
    (a terminal, Jupyter), else printed as separate lines, at most one a second."""

    def __init__(self, epochs, stream=None):
        self.epochs = epochs
        self.stream = sys.stdout if stream is None else stream
        self.live = _redraws_in_place(self.stream)
        self.interval = _PROGRESS_INTERVAL if self.live else 1.0
        self.width = 0
        self.last_draw = -math.inf
        self.pending = None

    def update(self, epoch, history, samples_per_second):
        text = f"epoch {epoch + 1}/{self.epochs}  loss {history.loss[-1]:.6g}"
        if history.val_loss:
            text += f"  val_loss {history.val_loss[-1]:.6g}"
        text += f"  {samples_per_second:,.0f} samples/s"
        self.pending = text
        now = time.perf_counter()
        if now - self.last_draw >= self.interval:
            self._draw()
            self.last_draw = now

    def _draw(self):
        text = self.pending
        if self.live:
            self.stream.write("\r" + text + " " * max(self.width - len(text), 0))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.width = len(text)
        self.pending = None

    def close(self):
        if self.pending is not None:
            self._draw()
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _redraws_in_place(stream):
    """True for a terminal and for Jupyter's output stream, which both honour '\\r'."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    return type(stream).__module__.split(".")[0] == "ipykernel"


_fitting = set()
_fitting_lock = threading.Lock()


@contextmanager
def _exclusive(net):
    """Refuse a second concurrent fit of one network (from another thread or a callback)."""
    with _fitting_lock:
        if id(net) in _fitting:
            raise RuntimeError("this network is already being trained by fit (in another thread "
                               "or from a callback): one model must not be trained from two "
                               "threads at once; give each thread its own copy.deepcopy(net)")
        _fitting.add(id(net))
    try:
        yield
    finally:
        with _fitting_lock:
            _fitting.discard(id(net))


# The closed range of each bounded output activation's values.
_OUTPUT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, math.inf),
                  "softmax": (0.0, 1.0)}


def _warn_if_targets_unreachable(net, Y, loss, stacklevel=4):
    """Warn when targets lie where the output activation never goes.

    Training would fit them badly, and silently.
    """
    output = net.activation[-1]
    if output not in _OUTPUT_RANGES or loss == "cross_entropy":  # class indices, not values
        return
    low, high = _OUTPUT_RANGES[output]
    y_min, y_max = float(Y.min()), float(Y.max())
    if low <= y_min and y_max <= high:
        return
    warnings.warn(
        f"targets run from {y_min:.4g} to {y_max:.4g}, but the output activation {output!r} "
        f"only reaches [{low:g}, {high:g}]: the network cannot fit them. For regression on "
        "unbounded targets use an 'identity' output layer, e.g. "
        "cmlp.MLP(sizes, activation=[..., 'identity']), or rescale the targets into that range.",
        UserWarning, stacklevel=stacklevel)


def _unpack_validation(validation_data):
    try:
        X_val, Y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X_val, Y_val)") from None
    return X_val, Y_val


def _training_arrays(net, X, Y, loss, suffix):
    """X as ``(n, n_in)`` and Y as ``(n, n_out)`` of the network's dtype, finite, ready for the kernels.

    Sparse X becomes :class:`SparseSamples` (CSR), its nonzeros checked finite."""
    if is_sparse(X):
        return _sparse_training_arrays(net, X, Y, loss, suffix)
    X, single = as_samples(X, net.layer_sizes[0], net.dtype, "X" + suffix)
    n = X.shape[0]
    if n == 0:
        raise ValueError(f"X{suffix} holds no samples")
    try:
        Y = as_targets(Y, n, net.layer_sizes[-1], net.dtype, single, loss == "cross_entropy")
    except ValueError as error:
        raise ValueError(str(error).replace("Y ", f"Y{suffix} ", 1)) from None
    for name, array in (("X" + suffix, X), ("Y" + suffix, Y)):
        if not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "infinity"
            raise ValueError(f"{name} contains {what}")
    # Exact ndarrays (not subclasses): the kernels' fast path takes them as they are.
    # Data that lies in the network's own buffers (a view of its parameters,
    # say) is copied: training behaves as if its inputs were copied first.
    X, Y = np.asarray(X), np.asarray(Y)
    if net._shares_memory(X):
        X = X.copy()
    if net._shares_memory(Y):
        Y = Y.copy()
    return X, Y


def _sparse_training_arrays(net, X, Y, loss, suffix):
    X = as_sparse_samples(X, net.layer_sizes[0], net.dtype, "X" + suffix)
    n = X.shape[0]
    if n == 0:
        raise ValueError(f"X{suffix} holds no samples")
    try:
        Y = as_targets(Y, n, net.layer_sizes[-1], net.dtype, False, loss == "cross_entropy")
    except ValueError as error:
        raise ValueError(str(error).replace("Y ", f"Y{suffix} ", 1)) from None
    for name, array in (("X" + suffix, X.data), ("Y" + suffix, Y)):
        if not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "infinity"
            raise ValueError(f"{name} contains {what}")
    Y = np.asarray(Y)
    if any(net._shares_memory(part) for part in X.parts):
        X = X.copy()
    if net._shares_memory(Y):
        Y = Y.copy()
    return X, Y
