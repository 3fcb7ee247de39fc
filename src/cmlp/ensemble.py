"""Many networks of one architecture, trained together: :class:`cmlp.MLPEnsemble`.

K independent models (ensembles, bootstrap uncertainty, sweeps over learning
rates, one model per user or sensor) trained by one compiled call per step or
epoch that releases the GIL once for all of them and spreads them over the
cores (``_ensemble``). Each model gets exactly the bits that
:class:`cmlp.MLP` would give it alone with the same seed, data, order and
learning rate.

What it leaves out: L-BFGS (full-batch, driven from SciPy a model at a time),
sparse input, and a training call running in another thread at the same time
(the ensemble has no lock: share it between threads only to read).
"""
from __future__ import annotations

import dataclasses
import os
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from cmlp import _ensemble
from cmlp._kernels import ACTIVATIONS, LOSSES, shuffled_order
from cmlp._optim import SGD, Adam
from cmlp._validation import check_learning_rate, is_sparse, parameter_count
from cmlp.network import MLP
from cmlp.training import (DEFAULT_LR, LBFGS, _check_alpha, _check_callbacks,
                           _check_sample_weight, _Progress, _warn_if_targets_unreachable)

__all__ = ["MLPEnsemble", "EnsembleHistory"]



@dataclass
class EnsembleHistory:
    """What :meth:`cmlp.MLPEnsemble.fit` records, one column per model.

    ``loss[e, k]`` is model k's mean training loss in epoch e (NaN after the
    model stopped), ``val_loss`` the same on the validation data (empty
    without it), ``best_epoch[k]`` the epoch whose parameters model k kept
    under early stopping (-1 without it), ``stop_reason[k]`` None, or
    ``"early_stopping"``, or ``"diverged"`` (a loss or a parameter became
    NaN or infinite: the model was put back to that epoch's start and
    stopped, where ``MLP.fit`` would raise).
    """

    loss: NDArray[np.float64]
    val_loss: NDArray[np.float64]
    best_epoch: NDArray[np.intp]
    stop_reason: list[str | None] = field(default_factory=list)


class MLPEnsemble:
    """K independent :class:`cmlp.MLP` networks of one architecture, trained together.

    Parameters
    ----------
    n_models : int
        K, the number of networks (>= 1).
    layer_sizes, activation, dtype
        As :class:`cmlp.MLP`; every model has this architecture.
    seed : int, sequence of K ints, or None
        A sequence gives model k the initial weights of ``MLP(..., seed=seed[k])``;
        an int or None is spread into K independent seeds
        (``numpy.random.SeedSequence(seed).spawn(K)``), kept in ``seeds``.
    n_threads : int or None
        Threads the compiled calls use (OpenMP; one where the build has none).
        None: every core this process may run on.

    Notes
    -----
    :attr:`~cmlp.MLPEnsemble.params` is one ``(K, n_params)`` buffer: row k is model k's flat
    parameter buffer, laid out as ``MLP.params``. ``models[k]`` is an
    ordinary ``MLP`` holding a copy of row k; :meth:`~cmlp.MLPEnsemble.set_model` writes one back.

    Examples
    --------
    >>> import numpy as np, cmlp
    >>> ens = cmlp.MLPEnsemble(3, [2, 1, 1], seed=[0, 1, 2])
    >>> X = np.array([[1.0, 2.0]]); Y = np.array([[0.4]])
    >>> losses = ens.train_step(X, Y, lr=0.1)
    >>> net = cmlp.MLP([2, 1, 1], seed=1); loss1 = net.train_step(X, Y, lr=0.1)
    >>> bool(np.array_equal(ens.params[1], net.params) and losses[1] == loss1)
    True
    """

    def __init__(self, n_models: int, layer_sizes: Sequence[int],
                 activation: str | Sequence[str] = "sigmoid", dtype: DTypeLike = np.float64,
                 seed: int | Sequence[int] | None = None, n_threads: int | None = None) -> None:
        n_models = _count("n_models", n_models, 1)
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [int(s.generate_state(1, np.uint64)[0])
                     for s in np.random.SeedSequence(seed).spawn(n_models)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != n_models:
                raise ValueError(f"seed must hold one seed per model, {n_models}, "
                                 f"got {len(seeds)}")
        first = MLP(layer_sizes, activation, dtype, seed=seeds[0])
        self._prototype = first   # checks losses against the architecture, as MLP does
        self._sizes = first.layer_sizes
        self._activations = first.activation
        self._dtype = first.dtype
        self._codes = np.array([ACTIVATIONS[a] for a in self._activations], dtype=np.intc)
        self._plan = _ensemble.Plan(self._sizes, self._codes, self._dtype)
        self._n_params = parameter_count(self._sizes)
        self.seeds = seeds
        self.n_threads = n_threads
        params = _aligned_rows(n_models, self._n_params, self._dtype)
        P = self._n_params
        params[0, :P] = first.params
        for k in range(1, n_models):
            params[k, :P] = MLP(layer_sizes, activation, dtype, seed=seeds[k]).params
        self._params = params
        self._grads = _aligned_rows(n_models, self._n_params, self._dtype)
        self._storage: dict[int, np.ndarray] = {}
        self._last_rates: tuple[float, np.ndarray] | None = None
        self._loss_codes: dict[str, int] = {}
        self._count_buffers: tuple[np.ndarray, np.ndarray] | None = None

    # -- architecture and parameters ------------------------------------------------

    @property
    def n_models(self) -> int:
        """K, the number of models."""
        return self._params.shape[0]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def activation(self) -> tuple[str, ...]:
        return self._activations

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def params(self) -> NDArray[np.floating[Any]]:
        """The ``(K, n_params)`` buffer: row k is model k's ``MLP.params`` (writable)."""
        return self._params[:, :self._n_params]

    @property
    def n_threads(self) -> int:
        """Threads the compiled calls use."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value: int | None) -> None:
        if value is None:
            value = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        self._n_threads = _count("n_threads", value, 1)

    def __len__(self) -> int:
        return self.n_models

    def __repr__(self) -> str:
        acts = self._activations
        activation = acts[0] if len(set(acts)) == 1 else list(acts)
        return (f"MLPEnsemble({self.n_models}, {list(self._sizes)}, activation={activation!r}, "
                f"dtype={self._dtype.name})")

    @property
    def models(self) -> _Models:
        """``models[k]``: model k as an ordinary :class:`cmlp.MLP` (a copy)."""
        return _Models(self)

    def model(self, k: int) -> MLP:
        """Model k as an ordinary :class:`cmlp.MLP`, its parameters copied."""
        k = _index(k, self.n_models)
        net = MLP(self._sizes, list(self._activations), self._dtype, seed=0)
        net.params[:] = self.params[k]
        return net

    def set_model(self, k: int, net: MLP) -> None:
        """Copy ``net``'s parameters into model k (same architecture and dtype)."""
        k = _index(k, self.n_models)
        if (not isinstance(net, MLP) or net.layer_sizes != self._sizes
                or net.activation != self._activations or net.dtype != self._dtype):
            raise ValueError(f"net must be an MLP of the ensemble's architecture, "
                             f"{list(self._sizes)} {self._activations} {self._dtype.name}")
        self.params[k] = net.params

    # -- training ---------------------------------------------------------------------

    def train_step(self, X: ArrayLike, Y: ArrayLike, lr: float | ArrayLike,
                   loss: str = "mse") -> NDArray[np.float64]:
        """One SGD step of every model on one batch each; returns the K losses.

        Parameters
        ----------
        X : array_like, shape ``(K, n, n_in)`` (model k's batch is ``X[k]``) or
            ``(n, n_in)`` / ``(n_in,)`` (one batch for all)
        Y : array_like, the targets, of the matching shape: ``(K, n, n_out)``
            or ``(K, n)`` for one output; ``(n, n_out)``, ``(n,)`` or ``(n_out,)``
        lr : float, or array_like of K floats (each model's own)
        loss : as :meth:`cmlp.MLP.train_step` (not ``"cross_entropy"``'s class indices)

        Model k's parameters end bit for bit as after ``MLP.train_step(X[k], Y[k], lr[k])``.
        """
        X, Y = self._per_model(X, Y)
        return self._run(X, Y, None, X.shape[1], self._rates(lr), self._loss_code(loss))[0][:, 0]

    def fit(self, X: ArrayLike, Y: ArrayLike, *, epochs: int = 1, batch_size: int = 32,
            lr: float | ArrayLike | None = None, loss: str = "mse",
            optimizer: str | SGD | Adam = "sgd", momentum: float = 0.0, nesterov: bool = False,
            weight_decay: float = 0.0, shuffle: bool = True,
            seed: int | Sequence[int] | None = None, sample_indices: ArrayLike | None = None,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            early_stopping: int | None = None,
            callbacks: Sequence[Callable[[int, EnsembleHistory], bool | None]] = (),
            verbose: bool = False, sample_weight: ArrayLike | None = None,
            alpha: float = 0.0) -> EnsembleHistory:
        """Mini-batch training of every model at once; returns an :class:`cmlp.EnsembleHistory`.

        Model k trains as ``MLP.fit(X_k, Y_k, epochs=..., batch_size=...,
        lr=lr[k], loss=..., optimizer=..., momentum=..., nesterov=...,
        weight_decay=..., shuffle=..., seed=seed[k], validation_data=...,
        early_stopping=..., sample_weight=w_k, alpha=...)`` would, bit for
        bit, where X_k is ``X[k]`` for per-model data (``X`` of shape ``(K,
        n, n_in)``), else the shared ``X`` (``(n, n_in)``), or its rows
        ``sample_indices[k]`` (a ``(K, m)`` array of row indices: bootstrap
        samples, subsets); w_k likewise ``sample_weight[k]`` (``(K, n)``,
        or ``(K, m)`` for the samples of ``sample_indices``) or the shared
        ``sample_weight`` (``(n,)``), taken at the same rows.
        The arguments mean what they mean for :meth:`cmlp.MLP.fit`, and:

        * ``lr`` may hold one rate per model (K floats);
        * ``optimizer`` is ``"sgd"`` or ``"adam"`` by name, or a
          :class:`cmlp.SGD` or :class:`cmlp.Adam` over any buffers whose
          hyperparameters (its ``lr`` too, unless ``lr`` is given as well:
          an error) every model's own optimizer takes, each starting from
          zero state; its own state is left alone. ``"lbfgs"`` is not
          offered: it is full-batch and driven from SciPy, a model at a time
          (``models[k]`` gives an ``MLP`` to fit with it);
        * a model whose validation loss has not improved for
          ``early_stopping`` epochs stops and keeps its best epoch's
          parameters, while the others go on;
        * a model that diverges is put back to that epoch's start and
          stopped, and the others go on (``MLP.fit`` raises instead);
        * ``callbacks`` are called as ``callback(epoch, history)`` after
          each epoch; one returning True stops every model (stop reason
          ``"callback"``); ``verbose`` shows MLP.fit's status line with
          the mean loss over the models still training.

        Plain SGD (no momentum, weight decay, sample weights or alpha) takes
        each epoch in one compiled call per epoch for all models, and the
        vectorised kernel for tiny networks; the other settings take, per
        epoch, one compiled call that runs each batch's gradients and the
        optimizer's step for every model. ``X`` must be dense. A shared
        ``X`` (and its bootstrap samples) is read in place by every model,
        never copied per model; only per-sample weights of bootstrap samples
        (``sample_weight`` of shape ``(K, m)`` with ``sample_indices``)
        copy each model's sampled rows out.
        """
        epochs = _count("epochs", epochs, 0)
        batch_size = _count("batch_size", batch_size, 1)
        code = self._loss_code(loss)
        K = self.n_models
        spec, rate = _optimizer_spec(optimizer, lr, momentum, nesterov, weight_decay)
        rates = self._rates(rate)
        alpha = _check_alpha(alpha)
        if is_sparse(X):
            raise TypeError("MLPEnsemble.fit takes dense X; for sparse data, fit the models "
                            "one by one (ensemble.models[k] is an MLP, whose fit takes it)")
        X, Y = self._per_model(X, Y)
        rows = self._sample_rows(sample_indices, X)
        X, Y, rows, weights = _weighted_samples(X, Y, rows, sample_weight, K)
        n = X.shape[1] if rows is None else rows.shape[1]   # each model's samples
        if n:
            _warn_if_targets_unreachable(self._prototype, Y, loss, stacklevel=3)
        if n == 0:
            raise ValueError("X holds no samples")
        batch_size = min(batch_size, n)
        if seed is None or isinstance(seed, (int, np.integer)):
            rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(K)]
        else:
            seeds = list(seed)
            if len(seeds) != K:
                raise ValueError(f"seed must hold one seed per model, {K}, got {len(seeds)}")
            rngs = [np.random.default_rng(s) for s in seeds]
        if validation_data is not None:
            X_val, Y_val = self._per_model(*validation_data)
        if early_stopping is not None:
            early_stopping = _count("early_stopping", early_stopping, 1)
            if validation_data is None:
                raise ValueError("early_stopping needs validation_data to watch")
        callbacks = _check_callbacks(callbacks)
        progress = _Progress(epochs) if verbose else None
        epoch_pass = _EpochPass(self, X, Y, n, weights, batch_size, rates, code, spec, alpha)
        # Each epoch's samples as rows of X: the shuffled order, or the
        # sample rows taken in it, or the sample rows as they come.
        perm = np.empty((K, n), dtype=np.intp) if shuffle else None
        order = perm if rows is None else (np.empty((K, n), dtype=np.intp) if shuffle else rows)
        active = np.ones(K, dtype=bool)
        history = EnsembleHistory(np.full((epochs, K), np.nan),
                                  np.full((epochs if validation_data is not None else 0, K),
                                          np.nan),
                                  np.full(K, -1, dtype=np.intp), [None] * K)
        best = self._params.copy() if early_stopping is not None else None
        since_best = np.zeros(K, dtype=np.intp)
        for epoch in range(epochs):
            if not active.any():
                history.loss = history.loss[:epoch]
                history.val_loss = history.val_loss[:epoch]
                break
            started = time.perf_counter()
            start = self._params.copy()
            if perm is not None:
                for k in np.flatnonzero(active):
                    shuffled_order(perm[k], rngs[k])
                    if rows is not None:
                        np.take(rows[k], perm[k], out=order[k])
            idx = np.flatnonzero(active)
            ran, totals = epoch_pass.run(idx, order)
            n_batches = -(-n // batch_size)
            finite = np.isfinite(self._params[idx]).all(axis=1)
            diverged = (ran < n_batches) | ~np.isfinite(totals) | ~finite
            if validation_data is not None:
                val = self._evaluate(_models_of(X_val, idx), _models_of(Y_val, idx), batch_size,
                                     code, self._params[idx])
                diverged |= ~np.isfinite(val)
            else:
                val = None
            if epoch == epochs - 1:   # the last update is checked by a pass, as MLP.fit does
                diverged |= ~self._predicts_finite(_models_of(X, idx), self._params[idx],
                                                   None if rows is None else rows[idx],
                                                   batch_size)
            for j, k in enumerate(idx):
                if diverged[j]:
                    self._params[k] = start[k]
                    active[k] = False
                    history.stop_reason[k] = "diverged"
                    if history.best_epoch[k] == epoch:
                        history.best_epoch[k] = -1
                    continue
                history.loss[epoch, k] = totals[j] / epoch_pass.total_weight[k]
                if val is not None:
                    history.val_loss[epoch, k] = val[j]
                if early_stopping is not None:
                    b = history.best_epoch[k]
                    if b < 0 or val[j] < history.val_loss[b, k]:
                        history.best_epoch[k] = epoch
                        best[k] = self._params[k]
                        since_best[k] = 0
                    else:
                        since_best[k] += 1
                        if since_best[k] >= early_stopping:
                            history.stop_reason[k] = "early_stopping"
                            active[k] = False
            if progress is not None:
                progress.update(epoch, _mean_of_epoch(history, epoch, idx),
                                idx.size * n / max(time.perf_counter() - started, 1e-9))
            if callbacks:
                so_far = _epochs_so_far(history, epoch)
                if any([callback(epoch, so_far) is True for callback in callbacks]):
                    for k in np.flatnonzero(active):
                        history.stop_reason[k] = "callback"
                    history.loss, history.val_loss = so_far.loss, so_far.val_loss
                    break
        if progress is not None:
            progress.close()
        if best is not None:
            keep = history.best_epoch >= 0
            self._params[keep] = best[keep]
        return history

    # -- prediction ---------------------------------------------------------------------

    def predict(self, X: ArrayLike) -> NDArray[np.floating[Any]]:
        """Every model's output: ``(K, n, n_out)``.

        ``X`` of shape ``(n, n_in)`` (or ``(n_in,)``) goes through every
        model; ``(K, n, n_in)`` gives model k its own ``X[k]``. Each output
        is bit for bit ``MLP.predict``'s.
        """
        X = self._samples(X, allow_per_model=True)
        return self._predict_into(X, self._params)

    def predict_mean(self, X: ArrayLike) -> NDArray[np.floating[Any]]:
        """The ensemble's mean output, ``(n, n_out)``."""
        return self.predict(X).mean(axis=0)

    def predict_var(self, X: ArrayLike, ddof: int = 0) -> NDArray[np.floating[Any]]:
        """The variance of the models' outputs, ``(n, n_out)`` (``ddof`` as NumPy's)."""
        return self.predict(X).var(axis=0, ddof=ddof)

    # -- files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the ensemble to a ``.npz`` file (no pickles), read by :meth:`cmlp.MLPEnsemble.load`."""
        np.savez(path, format=np.array("cmlp.MLPEnsemble/1"),
                 layer_sizes=np.array(self._sizes, dtype=np.int64),
                 activation=np.array(self._activations), dtype=np.array(self._dtype.name),
                 params=self.params, seeds=np.array([str(s) for s in self.seeds]))

    @classmethod
    def load(cls, path: str | os.PathLike, n_threads: int | None = None) -> MLPEnsemble:
        """Read an ensemble written by :meth:`cmlp.MLPEnsemble.save`; every field is checked."""
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f or str(f["format"]) != "cmlp.MLPEnsemble/1":
                raise ValueError("not a file written by MLPEnsemble.save")
            sizes = [int(s) for s in f["layer_sizes"]]
            activation = [str(a) for a in f["activation"]]
            dtype = str(f["dtype"])
            params = np.asarray(f["params"])
            seeds = [int(s) for s in f["seeds"]]
        return cls._from_parts(sizes, activation, dtype, params, seeds, n_threads)

    def __reduce__(self) -> tuple[Any, ...]:
        # What save() writes: the compiled plan is rebuilt from the architecture,
        # and unpickling checks every part as load() does.
        return (MLPEnsemble._from_parts, (list(self._sizes), list(self._activations),
                                          self._dtype.name, self.params.copy(),
                                          list(self.seeds), self._n_threads))

    @classmethod
    def _from_parts(cls, sizes, activation, dtype, params, seeds, n_threads):
        params = np.asarray(params)
        seeds = [int(s) for s in seeds]
        if params.ndim != 2 or params.shape[0] < 1 or params.shape[0] != len(seeds):
            raise ValueError("params must be (n_models, n_params), with one seed per model")
        ens = cls(1, sizes, activation, dtype, seed=[0], n_threads=n_threads)
        if params.shape[1] != ens._n_params or params.dtype != ens.dtype:
            raise ValueError("params do not match the architecture")
        ens._params = _aligned_rows(params.shape[0], params.shape[1], ens.dtype)
        ens.params[:] = params
        ens._grads = _aligned_rows(params.shape[0], params.shape[1], ens.dtype)
        ens.seeds = seeds
        return ens

    # -- internals ------------------------------------------------------------------------

    def _loss_code(self, loss):
        code = self._loss_codes.get(loss) if isinstance(loss, str) else None
        if code is None:
            self._prototype._check_loss(loss)
            code = self._loss_codes[loss] = LOSSES[loss]
        return code

    def _rates(self, lr):
        if type(lr) is float and self._last_rates is not None and self._last_rates[0] == lr:
            return self._last_rates[1]
        if np.ndim(lr) == 0:
            rates = np.full(self.n_models, check_learning_rate(lr))
            rates.flags.writeable = False
            self._last_rates = (rates[0], rates)
            return rates
        rates = np.array([check_learning_rate(r) for r in np.asarray(lr).ravel()])
        if np.ndim(lr) != 1 or rates.shape[0] != self.n_models:
            raise ValueError(f"lr must be a number or hold one per model, {self.n_models}")
        return rates

    def _samples(self, X, allow_per_model):
        X = np.asarray(X)
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool) \
                or np.iscomplexobj(X):
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        n_in = self._sizes[0]
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim == 2:
            X = X[None]
        if X.ndim != 3 or X.shape[2] != n_in or (X.shape[0] not in (1, self.n_models)) \
                or (not allow_per_model and X.shape[0] != 1):
            raise ValueError(f"X must be of shape (n, {n_in}) or ({self.n_models}, n, {n_in}),"
                             f" got {np.shape(X)}")
        return np.ascontiguousarray(X, dtype=self._dtype)

    def _per_model(self, X, Y):
        """X (K, n, n_in) and Y (K, n, n_out), each model's own rows, or X (1,
        n, n_in) and Y (1, n, n_out), rows every model shares (never copied
        K times): C-contiguous, of the ensemble's dtype."""
        K, n_in, n_out = self.n_models, self._sizes[0], self._sizes[-1]
        if (type(X) is np.ndarray and type(Y) is np.ndarray
                and X.dtype == self._dtype and Y.dtype == self._dtype and X.ndim == 3
                and X.shape[0] == K and X.shape[2] == n_in
                and Y.shape == (K, X.shape[1], n_out)
                and X.flags.c_contiguous and Y.flags.c_contiguous):
            return X, Y   # already what the kernels read (the compiled call checks again)
        X = np.asarray(X)
        Y = np.asarray(Y)
        for name, a in (("X", X), ("Y", Y)):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
                raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        if X.ndim == 3:
            if X.shape[0] != K or X.shape[2] != n_in:
                raise ValueError(f"X must be of shape ({K}, n, {n_in}), got {X.shape}")
            n = X.shape[1]
            if Y.ndim == 2 and n_out == 1 and Y.shape == (K, n):
                Y = Y[:, :, None]
            if Y.shape != (K, n, n_out):
                raise ValueError(f"Y must be of shape ({K}, {n}, {n_out}), got {Y.shape}")
        else:
            if X.ndim == 1:
                X = X[None, :]
            if X.ndim != 2 or X.shape[1] != n_in:
                raise ValueError(f"X must be of shape (n, {n_in}) or ({K}, n, {n_in}), "
                                 f"got {X.shape}")
            n = X.shape[0]
            if Y.ndim <= 1 and Y.size == n * n_out:
                Y = Y.reshape(n, n_out)
            if Y.shape != (n, n_out):
                raise ValueError(f"Y must be of shape ({n}, {n_out}), got {Y.shape}")
            X, Y = X[None], Y[None]
        return (np.ascontiguousarray(X, dtype=self._dtype),
                np.ascontiguousarray(Y, dtype=self._dtype))

    def _sample_rows(self, sample_indices, X):
        """sample_indices as the epochs read them: (K, m) intp rows of the shared X, checked."""
        if sample_indices is None:
            return None
        K, n = self.n_models, X.shape[1]
        if X.shape[0] != 1:
            raise ValueError("sample_indices index a shared X (n, n_in), not per-model data")
        idx = np.asarray(sample_indices)
        if idx.ndim != 2 or idx.shape[0] != K or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"sample_indices must be a ({K}, m) array of row indices")
        if idx.shape[1] == 0:
            raise ValueError("sample_indices must give each model at least one row")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"sample_indices must hold rows in [0, {n})")
        return np.ascontiguousarray(idx, dtype=np.intp)

    def _work(self, batch_size, K):
        size = _ensemble.work_size(self._sizes, self._codes, batch_size)
        buf = self._storage.get(batch_size)
        if buf is None or buf.shape[0] < K:
            buf = _aligned_rows(max(K, self.n_models), size, self._dtype)
            self._storage = {batch_size: buf}
        return buf[:K]

    def _run(self, X, Y, order, batch_size, rates, code, params=None):
        params = self._params if params is None else params
        K = params.shape[0]
        n = X.shape[1] if order is None else order.shape[1]
        losses = np.empty((K, -(-n // batch_size)))
        ran, totals = self._counts(K)
        self._plan.train(code, params, self._grads[:K], self._work(batch_size, K), X, Y, order,
                         batch_size, rates, losses, ran, totals, self._n_threads)
        return losses, ran, totals

    def _counts(self, K):
        """The batches run and the totals of each model: reused from call to call."""
        if self._count_buffers is None or self._count_buffers[0].shape[0] != K:
            self._count_buffers = (np.zeros(K, dtype=np.intp), np.empty(K))
        return self._count_buffers

    def _evaluate(self, X, Y, batch_size, code, params):
        K, n = params.shape[0], X.shape[1]
        batch_size = min(batch_size, n)
        losses = np.empty((K, -(-n // batch_size)))
        ran = np.zeros(K, dtype=np.intp)
        totals = np.empty(K)
        self._plan.train(code, params, np.empty_like(params), self._work(batch_size, K), X, Y,
                         None, batch_size, None, losses, ran, totals, self._n_threads)
        return totals / n

    def _predict_into(self, X, params):
        K, n = params.shape[0], X.shape[1]
        out = np.empty((K, n, self._sizes[-1]), dtype=self._dtype)
        storage = np.empty((K, max(1, n * sum(self._sizes))), dtype=self._dtype)
        self._plan.predict(params, storage, X, out, self._n_threads)
        return out

    def _predicts_finite(self, X, params, rows, batch_size):
        """Whether each model predicts finite numbers on its training samples
        (rows (K, m) of the shared X, or all of its X), taken batch_size
        samples at a time, as MLP.fit checks its final parameters."""
        K = params.shape[0]
        n = X.shape[1] if rows is None else rows.shape[1]
        finite = np.ones(K, dtype=bool)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            part = X[:, start:stop] if rows is None else X[0][rows[:, start:stop]]
            out = self._predict_into(np.ascontiguousarray(part), params)
            finite &= np.isfinite(out).all(axis=(1, 2))
        return finite


class _Models(Sequence[MLP]):
    """``ensemble.models``: model k as an ``MLP`` copy, on indexing."""

    def __init__(self, ensemble: MLPEnsemble) -> None:
        self._ensemble = ensemble

    def __len__(self) -> int:
        return self._ensemble.n_models

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self._ensemble.model(i) for i in range(*k.indices(len(self)))]
        return self._ensemble.model(k)


#: each model's row of the stacked buffers starts on its own cache line
_ALIGNMENT = 64


class _EpochPass:
    """One epoch of the models still training, in one compiled call: plain
    SGD's fused epoch, or each batch's gradients followed by an optimizer's
    step, whose state (one row a model) lives from epoch to epoch here."""

    def __init__(self, ensemble, X, Y, n, weights, batch_size, rates, code, spec, alpha):
        K = ensemble.n_models
        self.ensemble, self.X, self.Y = ensemble, X, Y
        self.batch_size, self.rates, self.code = batch_size, rates, code
        self.spec, self.alpha = spec, alpha
        # MLP.fit's denominator of an epoch's loss: the samples, or their summed weight
        self.weights, self.weighted, self.total_weight = (
            weights if weights is not None else (None, None, np.full(K, float(n))))
        plain_sgd = spec[0] == "sgd" and spec[1] == 0 and spec[4] == 0
        self.fused = plain_sgd and self.weights is None and alpha == 0
        if not self.fused:
            P = ensemble._n_params
            self.first_state = np.zeros((K, P), dtype=ensemble.dtype)
            self.second_state = (np.zeros((K, P), dtype=ensemble.dtype) if spec[0] == "adam"
                                 else self.first_state)
            self.steps = np.zeros(K, dtype=np.intp)
            self.batch_weights = np.empty((K, batch_size))
            self.shares = np.empty((K, -(-n // batch_size)))

    def run(self, idx, order):
        """One epoch of the models idx, in place; returns (batches run, loss totals)."""
        ens = self.ensemble
        whole = idx.size == ens.n_models
        sub = slice(None) if whole else idx
        params = ens._params if whole else ens._params[idx]
        X, Y = _models_of(self.X, idx), _models_of(self.Y, idx)
        order = None if order is None else order[sub]
        if self.fused:
            _, ran, totals = ens._run(X, Y, order, self.batch_size, self.rates[sub], self.code,
                                      params)
        else:
            first, second, steps = (self.first_state[sub], self.second_state[sub],
                                    self.steps[sub])
            K = idx.size
            ran, totals = ens._counts(K)
            n_batches = self.shares.shape[1]
            ens._plan.train_with_optimizer(
                self.code, params, ens._grads[:K], ens._work(self.batch_size, K), X, Y,
                None if self.weights is None else _models_of(self.weights, idx),
                None if self.weights is None else self.weighted[sub],
                self.batch_weights[:K], order, self.batch_size, self.alpha, self.spec,
                self.rates[sub], first, second, steps, np.empty((K, n_batches)),
                self.shares[:K], ran, totals, ens._n_threads)
            if not whole:
                self.first_state[idx], self.steps[idx] = first, steps
                if self.second_state is not self.first_state:
                    self.second_state[idx] = second
        if not whole:
            ens._params[idx] = params
        return ran, totals


def _optimizer_spec(optimizer, lr, momentum, nesterov, weight_decay):
    """(the compiled epoch's optimizer tuple, the learning rate) from fit's
    arguments, checked as MLP.fit checks them (by building the optimizer)."""
    if isinstance(optimizer, (SGD, Adam)):
        if lr is not None or momentum != 0 or nesterov or weight_decay != 0:
            raise ValueError("with an optimizer object, set lr, momentum, nesterov and "
                             "weight_decay on it rather than on fit")
        template = optimizer
    elif isinstance(optimizer, LBFGS) or optimizer == "lbfgs":
        raise ValueError("MLPEnsemble.fit offers 'sgd' and 'adam'; L-BFGS is full-batch and "
                         "driven from SciPy a model at a time: fit ensemble.models[k] with it")
    elif optimizer == "sgd":
        template = SGD(_NOTHING, _NOTHING, lr=DEFAULT_LR["sgd"], momentum=momentum,
                       nesterov=nesterov, weight_decay=weight_decay)
    elif optimizer == "adam":
        if momentum != 0 or nesterov:
            raise ValueError("momentum and nesterov belong to SGD; for Adam's betas pass "
                             "a cmlp.Adam(..., betas=...) as optimizer")
        template = Adam(_NOTHING, _NOTHING, lr=DEFAULT_LR["adam"], weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd', 'adam' or a cmlp.SGD / cmlp.Adam, "
                         f"got {optimizer!r}")
    if isinstance(template, SGD):
        spec = ("sgd", template.momentum, template.dampening, template.nesterov,
                template.weight_decay)
    else:
        spec = ("adam", template.beta1, template.beta2, template.eps, template.weight_decay,
                template.decoupled_weight_decay)
    return spec, template.lr if lr is None else lr


# The buffers of the optimizers built only to check fit's hyperparameters.
_NOTHING = np.zeros(0)


def _weighted_samples(X, Y, rows, sample_weight, K):
    """(X, Y, rows, weights) for the epochs. weights is None (no model has
    weights) or (weights, weighted, totals): each row's weight, (1, rows) or
    (K, rows); whether model k takes them (a model whose weights are all
    equal does not, as MLP.fit takes such weights); each model's summed
    weight. Per-sample weights of bootstrap samples, (K, m), weigh samples,
    not rows (a row drawn twice may weigh differently each time): the
    samples' rows are then copied out, as the models' own data."""
    if sample_weight is None:
        return X, Y, rows, None
    w = np.asarray(sample_weight, dtype=np.float64)
    n_rows = X.shape[1]
    if w.ndim == 2 and rows is not None:
        X, Y, rows = X[0][rows], Y[0][rows], None
    elif w.ndim == 1:
        if w.shape[0] != n_rows:
            raise ValueError(f"sample_weight must hold one weight per row of X ({n_rows}), "
                             f"got shape {w.shape}")
        w = w[None]
    if w.ndim != 2 or w.shape[0] not in (1, K) or w.shape[1] != X.shape[1] \
            or (w.shape[0] == 1 and X.shape[0] > 1):
        raise ValueError(f"sample_weight must be of shape (n,) for a shared X, or "
                         f"({K}, n) for each model's samples, got {np.shape(sample_weight)}")
    n = X.shape[1] if rows is None else rows.shape[1]
    weighted = np.zeros(K, dtype=np.intc)
    totals = np.full(K, float(n))
    for k in range(K):
        w_k = w[0 if w.shape[0] == 1 else k]
        samples = w_k if rows is None else w_k[rows[k]]
        checked = _check_sample_weight(samples, n)
        if checked is not None:
            weighted[k] = 1
            totals[k] = float(checked.sum())
    if not weighted.any():
        return X, Y, rows, None
    return X, Y, rows, (np.ascontiguousarray(w), weighted, totals)


def _epochs_so_far(history, epoch):
    """What a callback sees after an epoch: the history of the epochs run so far."""
    return dataclasses.replace(history, loss=history.loss[:epoch + 1],
                               val_loss=history.val_loss[:epoch + 1])


def _models_of(a, idx):
    """The rows of a (K, ...) array for the models idx; an array the models share (1, ...) whole."""
    return a if a.shape[0] == 1 or idx.size == a.shape[0] else a[idx]


def _mean_of_epoch(history, epoch, idx):
    """What the status line shows of an epoch: the mean over the models that ran it."""
    def mean(rows):
        values = rows[epoch, idx] if len(rows) > epoch else np.empty(0)
        values = values[np.isfinite(values)]
        return [float(values.mean())] if values.size else []
    loss = mean(history.loss)
    return types.SimpleNamespace(loss=loss or [float("nan")], val_loss=mean(history.val_loss))


def _aligned_rows(K, width, dtype):
    """A zeroed C-contiguous (K, >= width) array whose rows start on 64-byte
    boundaries, as MLP's own buffers do: each row padded to whole lines."""
    item = np.dtype(dtype).itemsize
    stride = -(-max(width, 1) * item // _ALIGNMENT) * _ALIGNMENT // item
    raw = np.zeros(K * stride + _ALIGNMENT // item, dtype=dtype)
    start = (-raw.ctypes.data % _ALIGNMENT) // item
    return raw[start:start + K * stride].reshape(K, stride)


def _count(name, value, lowest):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lowest:
        raise ValueError(f"{name} must be >= {lowest}, got {value}")
    return int(value)


def _index(k, n):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"a model index must be an int, got {type(k).__name__}")
    if not -n <= k < n:
        raise IndexError(f"model index {k} out of range for {n} models")
    return int(k) % n
