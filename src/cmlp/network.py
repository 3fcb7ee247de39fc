"""The multilayer perceptron: one flat parameter buffer, its views, and the compiled passes.

:class:`MLP` is the public face of :class:`cmlp._kernels.Engine`: it checks the
architecture, initialises the parameters, and exposes the flat ``params`` and
``grads`` buffers as per-layer views named as in PyTorch. The passes themselves
(``forward``, ``backward``, ``sgd_step``, ``train_step``, ``predict``) run in
compiled code; see the ``_maths`` module for the layout of the buffers. This
is the only module that touches the engine: ``fit``, the estimators and the
files go through the model's private methods.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from cmlp._archive import save
from cmlp._kernels import ACTIVATIONS, LOSSES, Engine
from cmlp._validation import (SparseSamples, as_real_array, as_sparse_samples, check_float_dtype,
                              check_parameter_bytes, check_widths, is_sparse, parameter_count)
from cmlp.training import History, fit

if TYPE_CHECKING:
    import scipy.sparse

    from cmlp._optim import SGD, Adam
    from cmlp.training import LBFGS

    from typing import TypeAlias

    #: what the passes take as samples: anything np.asarray reads, or a scipy.sparse matrix
    Samples: TypeAlias = ArrayLike | scipy.sparse.spmatrix | scipy.sparse.sparray
    FloatArray: TypeAlias = NDArray[np.floating[Any]]

__all__ = ["MLP"]

#: activations a layer may use; softmax makes sense on the output layer
ACTIVATION_NAMES = tuple(ACTIVATIONS)
#: the losses ``backward`` and ``train_step`` accept
LOSS_NAMES = tuple(LOSSES)


class MLP:
    """A fully connected feed-forward network with compiled forward, backward and SGD.

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from the input to the output, e.g. ``[2, 1, 1]``: two inputs,
        one hidden unit, one output. At least two entries, all >= 1.
    activation : str or sequence of str, default "sigmoid"
        One of ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"identity"``,
        ``"softmax"`` for every layer, or a list with one name per layer.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Precision of the parameters and of all computation.
    seed : int, numpy.random.Generator or None
        Seed of :func:`numpy.random.default_rng` for the initial weights:
        Glorot-uniform, ``U(-r, r)`` with ``r = sqrt(6 / (n_in + n_out))``,
        drawn in float64 layer by layer, so the same seed gives bit-identical
        parameters. Biases start at zero.

    Notes
    -----
    All parameters live in one contiguous 1-D buffer, :attr:`params`: for
    each layer its weight ``(n_out, n_in)`` (as in :class:`torch.nn.Linear`)
    and then its bias ``(n_out,)``. :attr:`weights` and :attr:`biases` are
    writable views into it, :attr:`weight_grads` and :attr:`bias_grads` views
    into :attr:`grads`.

    Losses (``n`` samples, ``k`` outputs, ``a`` the output, ``y`` the target);
    the gradients are those of the batch loss ``L``, so every ``1/n`` is where
    the table puts it and nowhere else:

    ===================  ====================================  ==========================
    ``loss``             ``L``                                 output delta ``dL/dz``
    ===================  ====================================  ==========================
    ``"mse"``            ``sum((a - y)**2) / (n*k)``           ``2(a - y)/(n*k) * f'(a)``
    ``"half_sse"``       ``sum(0.5 * (a - y)**2) / n``         ``(a - y)/n * f'(a)``
    ``"bce"``            ``-mean(y log a + (1-y) log(1-a))``   ``(a - y)/(n*k)``
    ``"cross_entropy"``  ``-sum(y * log_softmax(z)) / n``      ``(softmax(z) - y)/n``
    ===================  ====================================  ==========================

    ``"mse"`` is :class:`torch.nn.MSELoss`; ``"half_sse"`` the textbook delta
    rule; ``"bce"`` is :class:`torch.nn.BCELoss` (each log clamped at -100) and
    needs a sigmoid output; ``"cross_entropy"`` is
    :class:`torch.nn.CrossEntropyLoss` and needs a softmax output.

    ``f'(a)`` is the activation's derivative written through its output:
    ``a(1 - a)`` for the sigmoid, ``1 - a**2`` for tanh, ``[a > 0]`` for relu.
    :attr:`deltas` hold ``dL/dz`` of each layer, so for a single sample they
    are the textbook deltas, and for ``n`` samples they are the per-sample
    deltas divided by ``n``: ``dL/dW = deltas[l].T @ activations[l]`` and
    ``dL/db = deltas[l].sum(axis=0)``.

    Examples
    --------
    The reference network: 2 inputs, 1 hidden unit, 1 output, all sigmoid.

    >>> import numpy as np, cmlp
    >>> net = cmlp.MLP([2, 1, 1])
    >>> for w, b in zip(net.weights, net.biases):
    ...     w[:] = 0.5; b[:] = 1.0
    >>> net.forward(np.array([1.0, 2.0]))
    array([0.81184921])
    >>> round(net.backward(np.array([0.4]), loss="mse"), 8)
    0.16961977
    >>> net.sgd_step(lr=0.1)
    >>> net.params
    array([0.49955898, 0.49911796, 0.99955898, 0.48837245, 0.987418  ])
    """

    def __init__(self, layer_sizes: Sequence[int], activation: str | Sequence[str] = "sigmoid",
                 dtype: DTypeLike = np.float64,
                 seed: int | np.random.SeedSequence | np.random.Generator | None = None) -> None:
        # Everything is checked and built first, and only then assigned in one
        # step: a failed (re-)__init__ leaves the model as it was.
        sizes, activations, dtype = _check_architecture(layer_sizes, activation, dtype)
        rng = np.random.default_rng(seed)
        parts = _build(sizes, activations, dtype)
        _init_weights(parts["_param_views"][0], rng)
        self.__dict__.update(parts)

    # -- architecture -------------------------------------------------------------

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths from input to output, as a tuple."""
        return self._sizes

    @property
    def activation(self) -> tuple[str, ...]:
        """The activation of each layer, as a tuple of names."""
        return self._activations

    @property
    def dtype(self) -> np.dtype[Any]:
        """The :class:`numpy.dtype` of parameters and computation."""
        return self._dtype

    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(layer_sizes) - 1``)."""
        return len(self._sizes) - 1

    def __repr__(self) -> str:
        acts = self._activations
        activation = acts[0] if len(set(acts)) == 1 else list(acts)
        return (f"MLP({list(self._sizes)}, activation={activation!r}, "
                f"dtype={self._dtype.name})")

    # -- parameters and gradients -----------------------------------------------

    @property
    def params(self) -> FloatArray:
        """All parameters in one contiguous 1-D buffer (layer by layer: W, b)."""
        return self._engine.params

    @property
    def grads(self) -> FloatArray:
        """All gradients, laid out as :attr:`params`; filled by :meth:`backward`."""
        return self._engine.grads

    @property
    def weights(self) -> tuple[FloatArray, ...]:
        """Writable views of each layer's weight, shape ``(n_out, n_in)``."""
        return self._param_views[0]

    @property
    def biases(self) -> tuple[FloatArray, ...]:
        """Writable views of each layer's bias, shape ``(n_out,)``."""
        return self._param_views[1]

    @property
    def weight_grads(self) -> tuple[FloatArray, ...]:
        """Views of each layer's weight gradient, shape ``(n_out, n_in)``."""
        return self._grad_views[0]

    @property
    def bias_grads(self) -> tuple[FloatArray, ...]:
        """Views of each layer's bias gradient, shape ``(n_out,)``."""
        return self._grad_views[1]

    def named_parameters(self) -> Iterator[tuple[str, FloatArray]]:
        """Yield ``("layer0.weight", W0), ("layer0.bias", b0), ...`` as PyTorch names them."""
        yield from _named_layers(self.weights, self.biases)

    def state_dict(self) -> dict[str, FloatArray]:
        """A dict of copies of the parameters, keyed as :meth:`named_parameters`.

        Taken in one step: a call running in another thread (``train_step``,
        ``fit``'s batches) is seen wholly or not at all.
        """
        sizes, _, params = self._snapshot()
        return {name: value.copy() for name, value in _named_layers(*_layer_views(params, sizes))}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Copy parameters in from a mapping keyed as :meth:`named_parameters`.

        Values may be anything :func:`numpy.asarray` takes. A PyTorch model's
        ``state_dict()`` loads directly: one built like the reference
        notebook's (``layer0.weight``, ...), or an ``nn.Sequential`` of
        ``Linear`` and activation modules (``0.weight``, ``2.weight``, ...);
        see :func:`layer_state_dict` for how keys are matched.
        Everything is checked before anything is written: missing or
        unexpected keys and wrong shapes raise a ValueError naming them, and
        leave the model unchanged.

        The values are gathered into one new buffer, which then replaces the
        parameters in one step: values that are views of the model's own
        parameters load as if copied first, and a call running in another
        thread sees the old parameters or the new ones, never a mix.
        """
        state_dict = layer_state_dict(state_dict)
        flat = np.empty(parameter_count(self._sizes), dtype=self._dtype)
        expected = dict(_named_layers(*_layer_views(flat, self._sizes)))
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        for key, target in expected.items():
            value = as_real_array(state_dict[key], self._dtype, key)
            if value.shape != target.shape:
                raise ValueError(f"{key} must have shape {target.shape}, got {value.shape}")
            target[...] = value
        self._engine.restore(flat)

    # -- the passes ---------------------------------------------------------------

    @property
    def activations(self) -> list[FloatArray]:
        """``A^(0)`` (the input) ... ``A^(L)`` (the output) of the last forward pass.

        Each is ``(n, width)``, a view into a work buffer that the next pass
        with the same batch size overwrites. After a pass on sparse input,
        ``A^(0)`` is a copy of its batch, a ``scipy.sparse.csr_array``.
        """
        engine = self._engine
        n = engine.batch_size
        if engine.sparse_input:
            batch = engine.sparse_batch()
            if batch is not None:
                first = SparseSamples(*batch, self._sizes[0]).to_scipy()
                return [first] + _batch_views(engine.activations_buffer, n, self._sizes[1:])
        return _batch_views(engine.activations_buffer, n, self._sizes)

    @property
    def deltas(self) -> list[FloatArray]:
        """``dL/dz`` of each layer from the last :meth:`backward`, ``(n, n_out_l)``."""
        n = self._engine.batch_size
        return _batch_views(self._engine.deltas_buffer, n, self._sizes[1:])

    def forward(self, X: Samples, out: FloatArray | None = None) -> FloatArray:
        """Run the network on ``X`` and keep the activations for :meth:`backward`.

        Parameters
        ----------
        X : array_like, shape ``(n_in,)`` or ``(n, n_in)``, or scipy.sparse matrix or array
            Real numbers; cast to the network's dtype. Sparse ``X`` (CSR as it
            is, any other format converted to CSR once, never densified) goes
            through the first layer's sparse kernel; see :meth:`fit`.
        out : numpy.ndarray, optional
            C-contiguous array of the output's shape and the network's dtype to
            write into (then nothing is allocated).

        Returns
        -------
        numpy.ndarray, shape ``(n_out,)`` or ``(n, n_out)``
        """
        if type(X) is not np.ndarray and is_sparse(X):
            return self._engine.sparse_forward(*self._sparse(X).parts, out)
        return self._engine.forward(X, out)

    def predict(self, X: Samples, out: FloatArray | None = None) -> FloatArray:
        """Like :meth:`forward`, but keeps no state: :attr:`activations` are untouched."""
        if type(X) is not np.ndarray and is_sparse(X):
            return self._engine.sparse_forward(*self._sparse(X).parts, out, keep=False)
        return self._engine.predict(X, out)

    def _sparse(self, X):
        return as_sparse_samples(X, self._sizes[0], self._dtype)

    def backward(self, Y: ArrayLike, loss: str = "mse") -> float:
        """Loss of the last :meth:`forward` against ``Y``; fills the gradients.

        Parameters
        ----------
        Y : array_like
            Targets of the forward output's shape (``(n,)`` also does for one
            output; for ``"cross_entropy"``, integer class indices ``(n,)``).
        loss : {"mse", "half_sse", "bce", "cross_entropy"}
            See the table in the class docstring for where each ``1/n`` lives.

        Returns
        -------
        float
            The loss; :attr:`grads` and :attr:`deltas` now hold its gradients.
        """
        return self._engine.backward(Y, loss)

    def sgd_step(self, lr: float) -> None:
        """``params -= lr * grads``, in place, in one compiled pass."""
        self._engine.sgd_step(lr)

    def train_step(self, X: Samples, Y: ArrayLike, lr: float, loss: str = "mse") -> float:
        """:meth:`forward`, :meth:`backward` and :meth:`sgd_step` in one compiled call.

        Nothing is allocated after the first call with a given batch shape.
        Returns the loss before the update. ``X`` may be sparse (see :meth:`fit`).
        """
        if type(X) is not np.ndarray and is_sparse(X):
            return self._engine.sparse_train_step(*self._sparse(X).parts, Y, lr, loss)
        return self._engine.train_step(X, Y, lr, loss)

    # -- what fit, the estimators and io need: the engine's only doors ------------------

    def _check_loss(self, loss: str) -> None:
        """ValueError unless ``loss`` names a loss this output layer admits."""
        self._engine.check_loss(loss)

    def _buffer_views(self) -> tuple[FloatArray, FloatArray]:
        """New 1-D views of (params, grads): :attr:`params` may have been reshaped."""
        return self._engine.buffer_views()

    def _snapshot_params(self, out: FloatArray | None = None) -> FloatArray:
        """A copy of :attr:`params` taken in one step, into ``out`` if given."""
        return self._engine.snapshot(out)

    def _restore_params(self, values: FloatArray) -> None:
        """``params <- values`` in one step (C-contiguous, the model's dtype)."""
        self._engine.restore(values)

    def _shares_memory(self, array: Any) -> bool:
        """Whether ``array`` may share memory with the model's buffers."""
        return self._engine.shares_memory(array)

    def _params_finite(self) -> bool:
        """Whether every parameter is finite."""
        return self._engine.params_finite()

    def _reserve_sparse(self, X: SparseSamples, batch_size: int) -> None:
        """CSR buffers for the largest batch of ``X`` that any order makes."""
        self._engine.reserve_sparse(X.most_nonzeros(batch_size), batch_size)

    def _train_epoch(self, X, Y, order, batch_size, lr, loss, losses):
        """Plain SGD over the batches (rows ``order`` or in turn) in one compiled
        call, which stops after a non-finite batch loss. Fills ``losses``;
        returns (batches run, sum of their losses times their sizes)."""
        if isinstance(X, SparseSamples):
            return self._engine.sparse_train_epoch(*X.parts, Y, order, batch_size, lr, loss,
                                                   losses)
        return self._engine.train_epoch(X, Y, order, batch_size, lr, loss, losses)

    def _evaluate(self, X, Y, batch_size, loss, losses):
        """The loss over a data set, in order, without gradients or an update;
        fills and returns as :meth:`_train_epoch`."""
        if isinstance(X, SparseSamples):
            return self._engine.sparse_evaluate(*X.parts, Y, batch_size, loss, losses)
        return self._engine.evaluate(X, Y, batch_size, loss, losses)

    def _predicts_finite(self, X, batch_size):
        """Whether :meth:`predict` on ``X``, batch by batch, gives finite numbers."""
        if isinstance(X, SparseSamples):
            return self._engine.sparse_predicts_finite(*X.parts, batch_size)
        return self._engine.predicts_finite(X, batch_size)

    def _loss_and_grads(self, X, Y, loss, w, m, alpha=0.0, order=None, start=0, step=None):
        """(loss, the batch's weight) with :attr:`grads` filled, for ``m`` samples.

        The loss is the ``w``-weighted mean (``w`` None: the mean), plus
        :meth:`_add_weight_penalty` if ``alpha``. Sparse ``X`` is the whole data
        set, the batch its rows ``order[start:start + m]`` (or from ``start``).
        If the loss is finite, ``step()`` (an optimizer's update) then runs
        holding the model's lock: other threads see it whole.
        """
        engine = self._engine
        if isinstance(X, SparseSamples):
            value = engine.sparse_loss_and_grads(*X.parts, Y, loss, w, order, start, m)
            share = m if w is None else float(w.sum())
        elif w is None:
            value, share = engine.loss_and_grads(X, Y, loss), m
        else:
            value, share = engine.weighted_loss_and_grads(X, Y, w, loss), float(w.sum())
        if alpha > 0 and share > 0:
            value += self._add_weight_penalty(alpha, share)
        if step is not None and math.isfinite(value):
            engine.locked(step)
        return value, share

    def _add_weight_penalty(self, alpha: float, m: float) -> float:
        """scikit-learn's ``alpha / 2 * sum(W**2) / m`` on the weights only: its
        gradient added into :attr:`grads` in one compiled pass; returns it
        (infinite when the weights overflow)."""
        scale = alpha / m
        return 0.5 * scale * self._engine.add_weight_penalty(scale)

    # -- training and persistence ---------------------------------------------------

    def fit(self, X: Samples, Y: ArrayLike, *, epochs: int = 1, batch_size: int = 32,
            lr: float | None = None, loss: str = "mse",
            optimizer: str | SGD | Adam | LBFGS = "sgd", momentum: float = 0.0,
            nesterov: bool = False, weight_decay: float = 0.0, shuffle: bool = True,
            seed: int | None = None, validation_data: tuple[Samples, ArrayLike] | None = None,
            early_stopping: int | None = None,
            callbacks: Sequence[Callable[[int, History], bool | None]] = (),
            verbose: bool = False, sample_weight: ArrayLike | None = None,
            alpha: float = 0.0) -> History:
        """Train on ``(X, Y)`` with mini-batches, in place; returns a :class:`cmlp.History`.

        Mini-batch SGD (with momentum and Nesterov) or Adam, PyTorch's update
        rules, or full-batch L-BFGS (``optimizer="lbfgs"``, SciPy's); each
        batch's gradient is that of its (``sample_weight``-weighted) mean loss; weight decay
        applies to biases too, as in PyTorch. Every option is documented in
        :func:`cmlp.training.fit`, which this calls. A non-finite loss raises
        :class:`cmlp.TrainingDivergedError` and restores the parameters of the
        start of that epoch. One model must not be trained from two threads
        at once: a second concurrent ``fit`` raises a RuntimeError.

        ``X`` (and ``validation_data``'s) may be a ``scipy.sparse`` matrix or
        array, ``csr_matrix``/``csr_array`` read in place, CSC or any other
        format converted to CSR once (a copy of the nonzeros). It is never
        densified: the first layer's product ``X W^T`` and gradient
        ``delta^T X`` are compiled CSR kernels, and each batch's nonzeros are
        copied into the engine's CSR buffers, sized once per fit for the
        largest batch (12 bytes a nonzero in float64, 8 in float32, plus a
        row pointer a sample). Beyond those, the memory is that of dense
        input without the input's own block of the work buffers:
        ``batch_size * (2 * sum(layer_sizes[1:]) + 2 * layer_sizes[-1])``
        values, and the first layer's dense gradient (scikit-learn's too).
        Results agree with those of the dense ``X`` to rounding (the sums run
        in another order), not bit for bit.

        Examples
        --------
        >>> import numpy as np, cmlp
        >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
        >>> net = cmlp.MLP([2, 8, 1], activation=["tanh", "sigmoid"], seed=0)
        >>> history = net.fit(X, [0, 1, 1, 0], epochs=2000, batch_size=4, lr=0.5,
        ...                   loss="bce", optimizer="sgd", momentum=0.9, seed=0)
        >>> net.predict(X).round().ravel()
        array([0., 1., 1., 0.])
        """
        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                   optimizer=optimizer, momentum=momentum, nesterov=nesterov,
                   weight_decay=weight_decay, shuffle=shuffle, seed=seed,
                   validation_data=validation_data, early_stopping=early_stopping,
                   callbacks=callbacks, verbose=verbose, sample_weight=sample_weight,
                   alpha=alpha)

    def save(self, path: str | bytes | os.PathLike | BinaryIO) -> None:
        """Write the network to a ``.npz`` file, atomically; see :func:`cmlp.io.save`."""
        save(self, path)

    # A network pickles as its architecture and a copy of its parameters; the
    # compiled engine and its work buffers are rebuilt on unpickling.
    _ENGINE_ATTRIBUTES = ("_engine", "_param_views", "_grad_views")

    def __getstate__(self):
        attributes = dict(self.__dict__)   # one copy: a concurrent re-__init__ cannot tear it
        state = {key: value for key, value in attributes.items()
                 if key not in self._ENGINE_ATTRIBUTES}
        state["params"] = attributes["_engine"].snapshot()   # one step, never half an update
        return state

    def _snapshot(self):
        """(layer sizes, activations, a copy of params), all of one moment: the
        parameters between two steps of any other thread's call."""
        attributes = dict(self.__dict__)
        return (attributes["_sizes"], attributes["_activations"],
                attributes["_engine"].snapshot())

    def __setstate__(self, state):
        """Unpickling goes through the checks of __init__: a tampered state raises
        a TypeError or ValueError and leaves the object as it was."""
        if not isinstance(state, dict):
            raise TypeError(f"an MLP's pickled state is a dict, got {type(state).__name__}")
        state = dict(state)
        try:
            layer_sizes, activation = state.pop("_sizes"), state.pop("_activations")
            dtype, params = state.pop("_dtype"), state.pop("params")
        except KeyError as error:
            raise ValueError(f"an MLP's pickled state has no {error.args[0]!r} entry") from None
        sizes, activations, dtype = _check_architecture(layer_sizes, activation, dtype)
        params = as_real_array(params, dtype, "params")
        n_params = parameter_count(sizes)
        if params.shape != (n_params,):
            raise ValueError(f"params must have shape ({n_params},) for layer_sizes "
                             f"{list(sizes)}, got {params.shape}")
        parts = _build(sizes, activations, dtype)
        parts["_engine"].restore(params)
        self.__dict__.update(state)
        self.__dict__.update(parts)


_LAYER_KEY = re.compile(r"layer\d+\.(weight|bias)")


def layer_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a PyTorch-style state dict to cmlp's ``layer{l}.weight`` / ``layer{l}.bias`` keys.

    Accepted: cmlp's own names (returned as they are); the keys of an
    ``nn.Sequential`` of ``Linear`` and activation modules (``0.weight``,
    ``0.bias``, ``2.weight``, ..., possibly under a common prefix such as
    ``net.0.weight``), ordered by index; and any other ``<name>.weight`` /
    ``<name>.bias`` pairs, taken in the mapping's order (a torch
    ``state_dict`` lists modules in the order they were registered).

    Raises
    ------
    ValueError
        A key that is not a ``.weight`` or ``.bias``, or a layer missing one.
    """
    keys = list(state_dict)
    if all(_LAYER_KEY.fullmatch(key) for key in keys):
        return dict(state_dict)
    prefixes = []
    for key in keys:
        prefix, dot, kind = key.rpartition(".")
        if not dot or kind not in ("weight", "bias"):
            raise ValueError(f"unexpected state_dict key {key!r}: a network of Linear layers "
                             "has only '<layer>.weight' and '<layer>.bias' keys")
        if prefix not in prefixes:
            prefixes.append(prefix)
    parents = {prefix.rpartition(".")[0] for prefix in prefixes}
    if len(parents) == 1 and all(prefix.rpartition(".")[2].isdigit() for prefix in prefixes):
        prefixes.sort(key=lambda prefix: int(prefix.rpartition(".")[2]))
    renamed = {}
    for l, prefix in enumerate(prefixes):
        for kind in ("weight", "bias"):
            if f"{prefix}.{kind}" not in state_dict:
                raise ValueError(f"state_dict has no {prefix}.{kind!s}: cmlp layers need both "
                                 "a weight and a bias")
            renamed[f"layer{l}.{kind}"] = state_dict[f"{prefix}.{kind}"]
    return renamed


def _check_architecture(layer_sizes, activation, dtype):
    """(sizes, activations, dtype) checked, the buffers' size included."""
    sizes = _check_sizes(layer_sizes)
    activations = _check_activations(activation, len(sizes) - 1)
    dtype = check_float_dtype(dtype)
    check_parameter_bytes(sizes, dtype)
    return sizes, activations, dtype


def _build(sizes, activations, dtype):
    """The attributes of a model of this architecture, zeroed parameters: the
    compiled engine and the per-layer views of its buffers."""
    engine = Engine(sizes, [ACTIVATIONS[a] for a in activations], dtype)
    return {"_sizes": sizes, "_activations": activations, "_dtype": dtype, "_engine": engine,
            "_param_views": _layer_views(engine.params, sizes),
            "_grad_views": _layer_views(engine.grads, sizes)}


def _init_weights(weights, rng):
    """Glorot-uniform, layer by layer, drawn in float64."""
    for W in weights:
        n_out, n_in = W.shape
        limit = np.sqrt(6.0 / (n_in + n_out))
        W[:] = rng.uniform(-limit, limit, size=W.shape)


def _check_sizes(layer_sizes):
    try:
        sizes = tuple(int(s) for s in layer_sizes)
        exact = all(s == s_in and not isinstance(s_in, (bool, np.bool_))
                    for s, s_in in zip(sizes, layer_sizes))
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}") from None
    if not exact:
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    check_widths(sizes, "layer_sizes")
    return sizes


def _check_activations(activation, n_layers):
    if isinstance(activation, str):
        names = [activation] * n_layers
    else:
        try:
            names = list(activation)
        except TypeError:
            raise TypeError(f"activation must be a name or a list of names, "
                            f"got {activation!r}") from None
    if len(names) != n_layers:
        raise ValueError(f"activation must be one name or {n_layers} names (one per layer), "
                         f"got {len(names)}")
    for name in names:
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATION_NAMES)}, got {name!r}")
    return tuple(names)


def _layer_views(buffer, sizes):
    """(weights, biases) of each layer as views into a flat buffer."""
    weights, biases, start = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights.append(buffer[start:start + n_out * n_in].reshape(n_out, n_in))
        start += n_out * n_in
        biases.append(buffer[start:start + n_out])
        start += n_out
    return tuple(weights), tuple(biases)


def _named_layers(weights, biases):
    """``("layer0.weight", W0), ("layer0.bias", b0), ...``: PyTorch's names for them."""
    for l, (W, b) in enumerate(zip(weights, biases)):
        yield f"layer{l}.weight", W
        yield f"layer{l}.bias", b


def _batch_views(buffer, n, widths):
    """Consecutive (n, width) blocks of a flat work buffer."""
    views, start = [], 0
    for width in widths:
        views.append(buffer[start:start + n * width].reshape(n, width))
        start += n * width
    return views
