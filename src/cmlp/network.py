"""The multilayer perceptron: one flat parameter buffer, its views, and the compiled passes.

:class:`MLP` is the public face of :class:`cmlp._kernels.Engine`: it checks the
architecture, initialises the parameters, and exposes the flat ``params`` and
``grads`` buffers as per-layer views named as in PyTorch. The passes themselves
(``forward``, ``backward``, ``sgd_step``, ``train_step``, ``predict``) run in
compiled code; see the ``_kernels`` module for the layout of the buffers.
"""
import numpy as np

from cmlp._kernels import ACTIVATIONS, Engine
from cmlp._validation import as_real_array

__all__ = ["MLP"]

#: activations a layer may use; softmax makes sense on the output layer
ACTIVATION_NAMES = tuple(ACTIVATIONS)
#: the losses ``backward`` and ``train_step`` accept
LOSS_NAMES = ("mse", "half_sse", "bce", "cross_entropy")
# BLAS takes 32-bit sizes: a wider layer could not be multiplied safely.
_MAX_WIDTH = 2**31 - 1


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

    def __init__(self, layer_sizes, activation="sigmoid", dtype=np.float64, seed=None):
        self._sizes = _check_sizes(layer_sizes)
        self._activations = _check_activations(activation, len(self._sizes) - 1)
        self._dtype = _check_dtype(dtype)
        self._build_engine()
        self._init_weights(seed)

    def _build_engine(self):
        """The compiled engine and the per-layer views of its buffers (zeroed parameters)."""
        self._engine = Engine(self._sizes, [ACTIVATIONS[a] for a in self._activations],
                              self._dtype)
        self._param_views = _layer_views(self._engine.params, self._sizes)
        self._grad_views = _layer_views(self._engine.grads, self._sizes)

    def _init_weights(self, seed):
        rng = np.random.default_rng(seed)
        for W in self.weights:
            n_out, n_in = W.shape
            limit = np.sqrt(6.0 / (n_in + n_out))
            W[:] = rng.uniform(-limit, limit, size=W.shape)

    # -- architecture -------------------------------------------------------------

    @property
    def layer_sizes(self):
        """Widths from input to output, as a tuple."""
        return self._sizes

    @property
    def activation(self):
        """The activation of each layer, as a tuple of names."""
        return self._activations

    @property
    def dtype(self):
        """The :class:`numpy.dtype` of parameters and computation."""
        return self._dtype

    @property
    def n_layers(self):
        """Number of weight layers (``len(layer_sizes) - 1``)."""
        return len(self._sizes) - 1

    def __repr__(self):
        acts = self._activations
        activation = acts[0] if len(set(acts)) == 1 else list(acts)
        return (f"MLP({list(self._sizes)}, activation={activation!r}, "
                f"dtype={self._dtype.name})")

    # -- parameters and gradients -----------------------------------------------

    @property
    def params(self):
        """All parameters in one contiguous 1-D buffer (layer by layer: W, b)."""
        return self._engine.params

    @property
    def grads(self):
        """All gradients, laid out as :attr:`params`; filled by :meth:`backward`."""
        return self._engine.grads

    @property
    def weights(self):
        """Writable views of each layer's weight, shape ``(n_out, n_in)``."""
        return self._param_views[0]

    @property
    def biases(self):
        """Writable views of each layer's bias, shape ``(n_out,)``."""
        return self._param_views[1]

    @property
    def weight_grads(self):
        """Views of each layer's weight gradient, shape ``(n_out, n_in)``."""
        return self._grad_views[0]

    @property
    def bias_grads(self):
        """Views of each layer's bias gradient, shape ``(n_out,)``."""
        return self._grad_views[1]

    def named_parameters(self):
        """Yield ``("layer0.weight", W0), ("layer0.bias", b0), ...`` as PyTorch names them."""
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            yield f"layer{l}.weight", W
            yield f"layer{l}.bias", b

    def state_dict(self):
        """A dict of copies of the parameters, keyed as :meth:`named_parameters`."""
        return {name: value.copy() for name, value in self.named_parameters()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from a mapping keyed as :meth:`named_parameters`.

        Values may be anything :func:`numpy.asarray` takes. A PyTorch model's
        ``state_dict()`` loads directly: one built like the reference
        notebook's (``layer0.weight``, ...), or an ``nn.Sequential`` of
        ``Linear`` and activation modules (``0.weight``, ``2.weight``, ...);
        see :func:`cmlp.io.layer_state_dict` for how keys are matched.
        Everything is checked before anything is written: missing or
        unexpected keys and wrong shapes raise a ValueError naming them, and
        leave the model unchanged.
        """
        from cmlp.io import layer_state_dict

        state_dict = layer_state_dict(state_dict)
        expected = dict(self.named_parameters())
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        values = {}
        for key, target in expected.items():
            value = as_real_array(state_dict[key], self._dtype, key)
            if value.shape != target.shape:
                raise ValueError(f"{key} must have shape {target.shape}, got {value.shape}")
            values[key] = value
        for key, target in expected.items():
            target[...] = values[key]

    # -- the passes ---------------------------------------------------------------

    @property
    def activations(self):
        """``A^(0)`` (the input) ... ``A^(L)`` (the output) of the last forward pass.

        Each is ``(n, width)``, a view into a work buffer that the next pass
        with the same batch size overwrites.
        """
        n = self._engine.batch_size
        return _batch_views(self._engine.activations_buffer, n, self._sizes)

    @property
    def deltas(self):
        """``dL/dz`` of each layer from the last :meth:`backward`, ``(n, n_out_l)``."""
        n = self._engine.batch_size
        return _batch_views(self._engine.deltas_buffer, n, self._sizes[1:])

    def forward(self, X, out=None):
        """Run the network on ``X`` and keep the activations for :meth:`backward`.

        Parameters
        ----------
        X : array_like, shape ``(n_in,)`` or ``(n, n_in)``
            Real numbers; cast to the network's dtype.
        out : numpy.ndarray, optional
            C-contiguous array of the output's shape and the network's dtype to
            write into (then nothing is allocated).

        Returns
        -------
        numpy.ndarray, shape ``(n_out,)`` or ``(n, n_out)``
        """
        return self._engine.forward(X, out)

    def predict(self, X, out=None):
        """Like :meth:`forward`, but keeps no state: :attr:`activations` are untouched."""
        return self._engine.predict(X, out)

    def backward(self, Y, loss="mse"):
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

    def sgd_step(self, lr):
        """``params -= lr * grads``, in place, in one compiled pass."""
        self._engine.sgd_step(lr)

    def train_step(self, X, Y, lr, loss="mse"):
        """:meth:`forward`, :meth:`backward` and :meth:`sgd_step` in one compiled call.

        Nothing is allocated after the first call with a given batch shape.
        Returns the loss before the update.
        """
        return self._engine.train_step(X, Y, lr, loss)

    # -- training and persistence ---------------------------------------------------

    def fit(self, X, Y, *, epochs=1, batch_size=32, lr=None, loss="mse", optimizer="sgd",
            momentum=0.0, nesterov=False, weight_decay=0.0, shuffle=True, seed=None,
            validation_data=None, early_stopping=None, callbacks=(), verbose=False):
        """Train on ``(X, Y)`` with mini-batches, in place; returns a :class:`cmlp.History`.

        Mini-batch SGD (with momentum and Nesterov) or Adam, PyTorch's update
        rules; each batch's gradient is that of its mean loss; weight decay
        applies to biases too, as in PyTorch. Every option is documented in
        :func:`cmlp.training.fit`, which this calls. A non-finite loss raises
        :class:`cmlp.TrainingDivergedError` and restores the parameters of the
        start of that epoch. One model must not be trained from two threads
        at once: a second concurrent ``fit`` raises a RuntimeError.

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
        from cmlp.training import fit

        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                   optimizer=optimizer, momentum=momentum, nesterov=nesterov,
                   weight_decay=weight_decay, shuffle=shuffle, seed=seed,
                   validation_data=validation_data, early_stopping=early_stopping,
                   callbacks=callbacks, verbose=verbose)

    def save(self, path):
        """Write the network to a ``.npz`` file, atomically; see :func:`cmlp.io.save`."""
        from cmlp.io import save

        save(self, path)

    # A network pickles as its architecture and a copy of its parameters; the
    # compiled engine and its work buffers are rebuilt on unpickling.
    _ENGINE_ATTRIBUTES = ("_engine", "_param_views", "_grad_views")

    def __getstate__(self):
        state = {key: value for key, value in self.__dict__.items()
                 if key not in self._ENGINE_ATTRIBUTES}
        state["params"] = self.params.copy()
        return state

    def __setstate__(self, state):
        state = dict(state)
        params = state.pop("params")
        self.__dict__.update(state)
        self._build_engine()
        self._engine.params[...] = params


def _check_sizes(layer_sizes):
    try:
        sizes = tuple(int(s) for s in layer_sizes)
        exact = all(s == s_in and not isinstance(s_in, (bool, np.bool_))
                    for s, s_in in zip(sizes, layer_sizes))
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}") from None
    if not exact:
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    if len(sizes) < 2 or min(sizes) < 1 or max(sizes) > _MAX_WIDTH:
        raise ValueError("layer_sizes must hold at least two widths, each from 1 to "
                         f"{_MAX_WIDTH}, got {list(sizes)}")
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


def _check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):  # NumPy parses strings: "f8,," is a SyntaxError
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _layer_views(buffer, sizes):
    """(weights, biases) of each layer as views into a flat buffer."""
    weights, biases, start = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights.append(buffer[start:start + n_out * n_in].reshape(n_out, n_in))
        start += n_out * n_in
        biases.append(buffer[start:start + n_out])
        start += n_out
    return tuple(weights), tuple(biases)


def _batch_views(buffer, n, widths):
    """Consecutive (n, width) blocks of a flat work buffer."""
    views, start = [], 0
    for width in widths:
        views.append(buffer[start:start + n * width].reshape(n, width))
        start += n * width
    return views
