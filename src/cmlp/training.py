"""The training loop of :class:`cmlp.MLP`: mini-batches, optimizers, history, early stopping.

:func:`fit` loops over epochs in Python. With plain SGD (no momentum, no
weight decay) an epoch is one compiled call, ``Engine.train_epoch``: the
kernel gathers each batch's rows from ``X`` and ``Y`` straight into the work
buffers and takes the step ``Engine.train_step`` would take, update fused into
the backward pass. Any other optimizer loops over the batches in Python, two
compiled calls each (``Engine.loss_and_grads``, then a step from
:mod:`cmlp._optim`), over contiguous slices of one copy of the data filled by
one gather per epoch when shuffling. Neither allocates anything per batch.

Left out on purpose: learning-rate schedules (a callback may set ``lr`` on an
optimizer passed in), sample weights, gradient clipping.
"""
import math
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from cmlp._kernels import shuffled_order
from cmlp._optim import SGD, Adam
from cmlp._validation import as_samples, as_targets

__all__ = ["fit", "History", "TrainingDivergedError", "SGD", "Adam"]

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
    stop_reason : {None, "early_stopping", "callback"}
        None when all requested epochs ran.
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: str | None = None

    @property
    def epochs(self):
        """Number of epochs run."""
        return len(self.loss)


def fit(net, X, Y, *, epochs=1, batch_size=32, lr=None, loss="mse", optimizer="sgd",
        momentum=0.0, nesterov=False, weight_decay=0.0, shuffle=True, seed=None,
        validation_data=None, early_stopping=None, callbacks=(), verbose=False):
    """Train ``net`` on ``(X, Y)`` with mini-batch gradient descent, in place.

    Parameters
    ----------
    net : cmlp.MLP
        The network; its parameters are updated in place.
    X : array_like, shape ``(n, n_in)``
        Training inputs, all finite.
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
    optimizer : {"sgd", "adam"} or cmlp.SGD or cmlp.Adam, default "sgd"
        By name, built with ``lr``, ``momentum``, ``nesterov`` and
        ``weight_decay``; or an optimizer already built over ``net.params``
        and ``net.grads`` (its state then carries over between calls, and
        those four arguments must be left at their defaults).
    momentum : float, default 0
        SGD momentum in [0, 1), as :class:`torch.optim.SGD`.
    nesterov : bool, default False
        Nesterov momentum (SGD only).
    weight_decay : float, default 0
        L2 penalty added to the gradient, ``grad + weight_decay * p``, for
        every parameter, **biases included** (PyTorch's default behaviour).
    shuffle : bool, default True
        Reshuffle the samples before every epoch: each epoch visits them in
        a random order. With ``rng = numpy.random.default_rng(seed)``, each
        epoch draws ``s = rng.integers(2**64, dtype=numpy.uint64)``, seeds a
        xoshiro256** generator from ``s`` by SplitMix64, and takes its
        uniforms ``u = (x >> 11) * 2**-53`` in turn through the inside-out
        Fisher-Yates shuffle: for ``i = 0, 1, ..., n - 1``, with
        ``j = min(floor(u * (i + 1)), i)``, ``order[i] = order[j]`` then
        ``order[j] = i`` (``cmlp._kernels.shuffled_order``).
    seed : int, numpy.random.Generator or None
        Seed of the shuffling: the same seed (and the same starting network)
        gives bit-identical parameters and history. A Generator is used as it
        is, so successive calls continue its stream.
    validation_data : (X_val, Y_val), optional
        Evaluated after each epoch into ``history.val_loss``: the same loss
        as training's (for ``"cross_entropy"``, from the logits), over the
        whole set, taken ``batch_size`` samples at a time in one compiled call
        with the parameters left as they are. The network's kept forward pass
        (:attr:`~cmlp.MLP.activations`) is then that of its last batch.
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

    Returns
    -------
    History

    Raises
    ------
    TrainingDivergedError
        If a batch loss or a parameter becomes NaN or infinite. The
        parameters (and the optimizer's state) are first restored to their
        values at the start of that epoch, the last state known to give
        finite losses, so a failed fit never leaves NaN weights behind.
    RuntimeError
        If ``net`` is already being trained by ``fit`` in another thread.
        One model must not be trained from two threads at once; independent
        models train in parallel threads, as the kernels release the GIL.
        Other threads may call ``net.predict`` while it trains (each compiled
        call holds the network's lock; an optimizer step does not),
        but may see parameters in the middle of an optimizer step.

    Notes
    -----
    With plain SGD each epoch is one compiled call that holds
    the network's lock, so a ``predict`` from another thread waits for the
    epoch to end; other optimizers hold it for one batch at a time, and keep
    one shuffled copy of ``X`` and ``Y`` when shuffling.
    """
    epochs = _check_count("epochs", epochs, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    _check_loss(net, loss)
    X, Y = _training_arrays(net, X, Y, loss, "")
    if validation_data is not None:
        X_val, Y_val = _unpack_validation(validation_data)
        X_val, Y_val = _training_arrays(net, X_val, Y_val, loss, "_val")
    if early_stopping is not None:
        early_stopping = _check_count("early_stopping", early_stopping, 1)
        if validation_data is None:
            raise ValueError("early_stopping needs validation_data to watch")
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of callables, got {callbacks!r}") from None
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables, got {callback!r}")
    opt = make_optimizer(net, optimizer, lr, momentum, nesterov, weight_decay)
    with _exclusive(net):
        loop = _Loop(net, X, Y, loss, opt, batch_size, shuffle, np.random.default_rng(seed))
        validation = (None if validation_data is None
                      else _Validation(net, X_val, Y_val, loss, loop.batch_size))
        return loop.run(epochs, validation, early_stopping, callbacks,
                        _Progress(epochs) if verbose else None)


def make_optimizer(net, optimizer, lr=None, momentum=0.0, nesterov=False, weight_decay=0.0):
    """The optimizer :func:`fit` uses: one built by name, or the one given, checked."""
    if isinstance(optimizer, (SGD, Adam)):
        if optimizer.params is not net.params or optimizer.grads is not net.grads:
            raise ValueError("the optimizer must be built over this network's params and grads")
        if lr is not None or momentum != 0 or nesterov or weight_decay != 0:
            raise ValueError("with an optimizer object, set lr, momentum, nesterov and "
                             "weight_decay on it rather than on fit")
        return optimizer
    if optimizer == "sgd":
        return SGD(net.params, net.grads, lr=DEFAULT_LR["sgd"] if lr is None else lr,
                   momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if optimizer == "adam":
        if momentum != 0 or nesterov:
            raise ValueError("momentum and nesterov belong to SGD; for Adam's betas pass "
                             "cmlp.Adam(net.params, net.grads, betas=...) as optimizer")
        return Adam(net.params, net.grads, lr=DEFAULT_LR["adam"] if lr is None else lr,
                    weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or a cmlp.SGD / cmlp.Adam, "
                     f"got {optimizer!r}")


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

class _Loop:
    """The buffers of one fit and the epoch loop over them."""

    def __init__(self, net, X, Y, loss, opt, batch_size, shuffle, rng):
        self.net = net
        self.loss = loss
        self.opt = opt
        self.rng = rng
        self.n = X.shape[0]
        self.X, self.Y = X, Y
        self.batch_size = min(batch_size, self.n)   # a larger one means one batch of all
        self.n_batches = -(-self.n // self.batch_size)
        if shuffle:
            self.order = np.empty(self.n, dtype=np.intp)
        else:
            self.order = None
        # Plain SGD is fused into the backward pass, and its epoch is one
        # compiled call that gathers each batch from X and Y by itself.
        self.fused = isinstance(opt, SGD) and opt.momentum == 0 and opt.weight_decay == 0
        if self.fused:
            self.batch_losses = np.empty(self.n_batches)
        else:
            # The other optimizers take batches as contiguous slices of one
            # copy of the data, filled by one gather per epoch when shuffling.
            self.X_batches, self.Y_batches = X, Y
            if shuffle:
                self.X_batches, self.Y_batches = np.empty_like(X), np.empty_like(Y)
            size = self.batch_size
            self.batches = [(self.X_batches[i:i + size], self.Y_batches[i:i + size],
                             min(size, self.n - i)) for i in range(0, self.n, size)]
        # What a divergence restores: kept in buffers filled at each epoch's
        # start. A fused epoch leaves the optimizer's state as it was, so
        # there is none of it to keep.
        self.params_at_epoch_start = np.empty_like(net.params)
        self.opt_at_epoch_start = None if self.fused else opt.state_dict()

    def run(self, epochs, validation, patience, callbacks, progress):
        history = History()
        best_params = np.empty_like(self.net.params) if patience is not None else None
        since_best = 0
        for epoch in range(epochs):
            started = time.perf_counter()
            history.loss.append(self._epoch(epoch, history))
            if validation is not None:
                history.val_loss.append(validation.loss())
            if patience is not None:
                if history.best_epoch is None or history.val_loss[-1] < history.val_loss[history.best_epoch]:
                    history.best_epoch = epoch
                    best_params[...] = self.net.params
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
            self.net.params[...] = best_params
        if progress is not None:
            progress.close()
        return history

    def _epoch(self, epoch, history):
        """One pass over the batches; returns the epoch's training loss."""
        self._remember_epoch_start()
        if self.order is not None:
            shuffled_order(self.order, self.rng)
        if self.fused:
            total = self._fused_epoch(epoch, history)
        else:
            total = self._stepped_epoch(epoch, history)
        if not self.net._engine.params_finite():
            self._diverged(epoch, self.n_batches - 1, "a parameter became NaN or infinite",
                           history)
        return total / self.n

    def _fused_epoch(self, epoch, history):
        """Plain SGD: the whole epoch in one compiled call; returns the sum of
        the batch losses, each weighted by its batch's size."""
        ran, total = self.net._engine.train_epoch(self.X, self.Y, self.order, self.batch_size,
                                                  self.opt.lr, self.loss, self.batch_losses)
        value = float(self.batch_losses[ran - 1])
        if not math.isfinite(value):   # the call stops at the first such batch
            self._diverged(epoch, ran - 1, f"the loss became {value}", history)
        return total

    def _stepped_epoch(self, epoch, history):
        """An optimizer step after each batch's gradients: one gather of the
        shuffled samples, then two compiled calls per batch."""
        if self.order is not None:
            # mode="clip" lets take() write straight into out (the order is
            # a permutation, so nothing is ever clipped); "raise" would buffer.
            np.take(self.X, self.order, axis=0, out=self.X_batches, mode="clip")
            np.take(self.Y, self.order, axis=0, out=self.Y_batches, mode="clip")
        loss_and_grads, update = self.net._engine.loss_and_grads, self.opt.step
        loss, isfinite, total = self.loss, math.isfinite, 0.0
        for batch, (X_batch, Y_batch, m) in enumerate(self.batches):
            value = loss_and_grads(X_batch, Y_batch, loss)
            if not isfinite(value):
                self._diverged(epoch, batch, f"the loss became {value}", history)
            update()
            total += value * m
        return total

    def _remember_epoch_start(self):
        self.params_at_epoch_start[...] = self.net.params
        saved = self.opt_at_epoch_start
        if saved is None:
            return
        for key in saved:
            if key == "steps":
                saved[key] = self.opt.steps
            else:
                saved[key][...] = getattr(self.opt, key)

    def _diverged(self, epoch, batch, what, history):
        self.net.params[...] = self.params_at_epoch_start
        if self.opt_at_epoch_start is not None:
            self.opt.load_state_dict(self.opt_at_epoch_start)
        raise TrainingDivergedError(
            f"training diverged: {what} at epoch {epoch}, batch {batch}. The parameters were "
            f"restored to their values at the start of epoch {epoch}. Try a smaller learning "
            f"rate (lr={self.opt.lr:g} now), or scale the inputs.",
            epoch, batch, history)


class _Validation:
    """The validation loss after an epoch: the data set taken batch by batch
    through the forward pass and the loss, in one compiled call."""

    def __init__(self, net, X, Y, loss, batch_size):
        self.net, self.X, self.Y, self.loss_name = net, X, Y, loss
        self.batch_size = min(batch_size, X.shape[0])
        self.batch_losses = np.empty(-(-X.shape[0] // self.batch_size))

    def loss(self):
        _, total = self.net._engine.evaluate(self.X, self.Y, self.batch_size, self.loss_name,
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


def _check_count(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_loss(net, loss):
    from cmlp.network import LOSS_NAMES

    if loss not in LOSS_NAMES:
        raise ValueError(f"loss must be one of {sorted(LOSS_NAMES)}, got {loss!r}")
    needs = {"bce": "sigmoid", "cross_entropy": "softmax"}.get(loss)
    if needs is not None and net.activation[-1] != needs:
        raise ValueError(f"loss={loss!r} needs a {needs} output layer, not {net.activation[-1]!r}")


def _unpack_validation(validation_data):
    try:
        X_val, Y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X_val, Y_val)") from None
    return X_val, Y_val


def _training_arrays(net, X, Y, loss, suffix):
    """X as ``(n, n_in)`` and Y as ``(n, n_out)`` of the network's dtype, finite, ready for the kernels."""
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
    return np.asarray(X), np.asarray(Y)
