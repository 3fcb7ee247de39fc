"""Compiled optimizers: in-place updates of a network's flat parameter buffer.

An optimizer is built over the two flat buffers of an :class:`cmlp.MLP`,
``params`` and ``grads`` (any two 1-D arrays of one dtype and length will do),
allocates its state buffers once, and each :meth:`step` makes one pass over
all parameters in compiled code with the GIL released. The update rules are
PyTorch's, operation for operation, so that a network trained here follows
the same trajectory as one trained with ``torch.optim``:

* :class:`SGD` is :class:`torch.optim.SGD` (momentum, dampening, Nesterov,
  L2 weight decay);
* :class:`Adam` is :class:`torch.optim.Adam` (L2 or decoupled weight decay,
  the latter being :class:`torch.optim.AdamW`).

Weight decay applies to every entry of the buffer, biases included, as it
does in PyTorch when all of a model's parameters are handed to one
optimizer. Left out: AMSGrad, ``maximize``, per-layer parameter groups.

The optimizers read the gradients; computing them (``MLP.backward``) is the
caller's business. Plain SGD without momentum or weight decay needs no
optimizer at all: ``MLP.train_step`` fuses it into the backward pass.
"""
from cython cimport floating
from libc.math cimport pow, sqrt

cimport numpy as cnp
import numpy as np

from cmlp._maths cimport descend, sgd_entries
from cmlp._validation import as_real_array, check_learning_rate

cnp.import_array()


# ---------------------------------------------------------------------------
# Kernels: one pass over the flat buffers, nothing allocated
# ---------------------------------------------------------------------------

cdef void _sgd_update(floating[::1] params, const floating[::1] grads, floating[::1] buf,
                      floating lr, floating momentum, floating keep,
                      floating weight_decay, bint nesterov, bint first) noexcept nogil:
    """INOUT params, buf (the momentum buffer); IN grads.

    As torch.optim.SGD, per entry:
        g = grad + weight_decay * p
        buf = g                                      on the first step
        buf = momentum * buf + (1 - dampening) * g   after it
        g = g + momentum * buf  (Nesterov)  or  g = buf
        p = p - lr * g
    keep is 1 - dampening; with momentum 0 the buffer is not touched, and
    with no weight decay either, the update is _maths' plain SGD pass.
    """
    cdef Py_ssize_t i
    cdef floating g, b, p
    if momentum == 0 and weight_decay == 0:
        if params.shape[0] > 0:
            sgd_entries(&params[0], &grads[0], lr, params.shape[0])
        return
    for i in range(params.shape[0]):
        p = params[i]
        g = grads[i]
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            if first:
                b = g
            else:
                b = buf[i] * momentum + keep * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        params[i] = descend(p, lr, g)


cdef inline floating _lerp(floating start, floating end, floating weight) noexcept nogil:
    # torch.lerp's two-sided formula: exact at weight 0 and at weight 1.
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


cdef void _adam_update(floating[::1] params, const floating[::1] grads,
                       floating[::1] m, floating[::1] v,
                       floating one_minus_beta1, floating beta2, floating one_minus_beta2,
                       floating eps, floating weight_decay, floating decay_factor,
                       floating bias2_sqrt, floating neg_step_size) noexcept nogil:
    """INOUT params, m (first moment), v (second moment); IN grads.

    As torch.optim.Adam, per entry (bias corrections worked out by the caller):
        p = p * (1 - lr * weight_decay)            decoupled (AdamW) only
        g = grad + weight_decay * p                L2 (Adam) only
        m = lerp(m, g, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    with step_size = lr / (1 - beta1^t); decay_factor is 1 for L2 decay.
    """
    cdef Py_ssize_t i
    cdef floating g, p, mi, vi, denom
    for i in range(params.shape[0]):
        p = params[i]
        if decay_factor != 1:
            p = p * decay_factor
        g = grads[i]
        if weight_decay != 0:
            g = g + weight_decay * p
        mi = _lerp(m[i], g, one_minus_beta1)
        vi = v[i] * beta2 + one_minus_beta2 * g * g
        m[i] = mi
        v[i] = vi
        denom = <floating>sqrt(vi) / bias2_sqrt + eps
        params[i] = p + neg_step_size * (mi / denom)


cdef Update sgd_update(double momentum, double dampening, bint nesterov,
                       double weight_decay) noexcept:
    """SGD's hyperparameters, as checked by SGD.__init__."""
    cdef Update update
    update.kind = SGD_UPDATE
    update.momentum = momentum
    update.keep = 1 - dampening
    update.weight_decay = weight_decay
    update.nesterov = nesterov
    update.beta1 = update.beta2 = update.eps = 0
    update.decoupled = False
    return update


cdef Update adam_update(double beta1, double beta2, double eps, double weight_decay,
                        bint decoupled) noexcept:
    """Adam's hyperparameters, as checked by Adam.__init__."""
    cdef Update update
    update.kind = ADAM_UPDATE
    update.momentum = update.keep = 0
    update.nesterov = False
    update.weight_decay = weight_decay
    update.beta1 = beta1
    update.beta2 = beta2
    update.eps = eps
    update.decoupled = decoupled
    return update


cdef void apply_update(const Update* update, floating[::1] params, const floating[::1] grads,
                       floating[::1] first_state, floating[::1] second_state,
                       Py_ssize_t steps, double lr) noexcept nogil:
    """The step after ``steps`` earlier ones: INOUT params and the state (SGD's
    momentum buffer first_state; Adam's moments first_state, second_state).

    The scalars are worked out in double precision as PyTorch does in
    Python, then rounded once to the buffers' dtype: every caller (SGD.step,
    Adam.step, the ensemble's epochs) takes the same bits from here.
    """
    cdef double t, step_size, bias2_sqrt, l2, decay
    if update.kind == SGD_UPDATE:
        _sgd_update(params, grads, first_state, <floating>lr, <floating>update.momentum,
                    <floating>update.keep, <floating>update.weight_decay, update.nesterov,
                    steps == 0)
        return
    t = <double>(steps + 1)
    step_size = lr / (1 - pow(update.beta1, t))
    bias2_sqrt = pow(1 - pow(update.beta2, t), 0.5)
    l2 = 0 if update.decoupled else update.weight_decay
    decay = 1 - lr * update.weight_decay if update.decoupled else 1
    _adam_update(params, grads, first_state, second_state, <floating>(1 - update.beta1),
                 <floating>update.beta2, <floating>(1 - update.beta2), <floating>update.eps,
                 <floating>l2, <floating>decay, <floating>bias2_sqrt, <floating>-step_size)


# ---------------------------------------------------------------------------
# The optimizers: checked hyperparameters, state allocated once
# ---------------------------------------------------------------------------

cdef object _check_buffers(params, grads):
    """params and grads as the kernels need them: 1-D, C-contiguous, one float dtype.

    Returns the base-class views (numpy.asarray) the checks were made on:
    shape, dtype and flags are read from them, never from attributes an
    ndarray subclass can override, and the kernels are bound to them."""
    for name, array in (("params", params), ("grads", grads)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    params, grads = np.asarray(params), np.asarray(grads)
    for name, array in (("params", params), ("grads", grads)):
        if array.ndim != 1 or not array.flags.c_contiguous or not array.flags.aligned:
            raise ValueError(f"{name} must be a 1-D C-contiguous array, got shape {array.shape}")
        if array.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {array.dtype}")
    if grads.dtype != params.dtype or grads.shape != params.shape:
        raise ValueError(f"grads ({grads.dtype}, {grads.shape}) must match "
                         f"params ({params.dtype}, {params.shape})")
    if not params.flags.writeable:
        raise ValueError("params must be writable")
    return params, grads


cdef double _as_float(name, value) except? -1:
    """float(value), or a TypeError that names the argument (a string is no number here)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


cdef double _check_fraction(name, value, bint closed) except? -1:
    """value as a float in [0, 1), or [0, 1] when closed."""
    value = _as_float(name, value)
    if not (0 <= value < 1 or (closed and value == 1)):
        bound = "]" if closed else ")"
        raise ValueError(f"{name} must lie in [0, 1{bound}, got {value}")
    return value


cdef double _check_non_negative(name, value) except? -1:
    value = _as_float(name, value)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


cdef class _Optimizer:
    """What every optimizer holds: the two buffers, the step count, the learning
    rate, and its state arrays (named by ``_state_names``, one entry of
    ``params`` each), saved and restored by :meth:`state_dict` and
    :meth:`load_state_dict`."""
    cdef readonly object params, grads
    cdef readonly Py_ssize_t steps
    cdef double _lr
    cdef bint _double
    cdef double[::1] _p64, _g64
    cdef float[::1] _p32, _g32
    cdef Update _update
    # The state apply_update reads: SGD's momentum buffer twice, Adam's moments.
    cdef double[::1] _first64, _second64
    cdef float[::1] _first32, _second32
    _state_names = ()

    cdef Py_ssize_t _size   # entries of params, grads and each state array

    cdef object _bind(self, params, grads, lr):
        """Check and keep the buffers and the learning rate; return the dtype."""
        checked_params, checked_grads = _check_buffers(params, grads)
        self._lr = check_learning_rate(lr)
        self.params = params
        self.grads = grads
        self.steps = 0
        dtype = checked_params.dtype
        self._double = dtype == np.float64
        if self._double:
            self._p64, self._g64 = checked_params, checked_grads
            self._size = self._p64.shape[0]
        else:
            self._p32, self._g32 = checked_params, checked_grads
            self._size = self._p32.shape[0]
        return dtype

    @property
    def lr(self):
        """The learning rate of the next step."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_learning_rate(value)

    def state_dict(self):
        """Copies of the state: ``{"steps": int}`` and each state array."""
        state = {"steps": self.steps}
        for name in self._state_names:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state):
        """Restore a state from :meth:`state_dict` (every entry checked before
        any is copied in)."""
        steps = _check_steps(state)
        values = {name: _check_state_array(getattr(self, name), state, name)
                  for name in self._state_names}
        for name, value in values.items():
            if self._shares_memory(value):   # a view of this optimizer's own state
                values[name] = value.copy()   # must be read before anything is written
        for name, value in values.items():
            getattr(self, name)[...] = value
        self.steps = steps

    cdef bint _shares_memory(self, value):
        return any(np.may_share_memory(value, getattr(self, name))
                   for name in self._state_names + ("params", "grads"))

    def __reduce__(self):
        raise TypeError("an optimizer holds references to a network's buffers and cannot be "
                        "pickled; save its state_dict() instead")

    def step(self):
        """Update ``params`` in place from ``grads``: one compiled pass."""
        if self._double:
            with nogil:
                apply_update(&self._update, self._p64, self._g64, self._first64,
                             self._second64, self.steps, self._lr)
        else:
            with nogil:
                apply_update(&self._update, self._p32, self._g32, self._first32,
                             self._second32, self.steps, self._lr)
        self.steps += 1

    cdef void _bind_state(self, first, second):
        if self._double:
            self._first64, self._second64 = first, second
        else:
            self._first32, self._second32 = first, second


cdef class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, exactly as :class:`torch.optim.SGD`.

    Parameters
    ----------
    params, grads : numpy.ndarray
        The flat buffers to update and to read, e.g. ``net.params`` and
        ``net.grads`` of an :class:`cmlp.MLP`: 1-D, C-contiguous, both
        float32 or both float64. The optimizer keeps references to them.
    lr : float, default 0.01
        Learning rate; may be changed between steps (a schedule).
    momentum : float, default 0
        Momentum factor in [0, 1).
    dampening : float, default 0
        Dampening of the momentum, in [0, 1].
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * p`` is added to each gradient before the
        update, for every parameter, biases included (as PyTorch does when a
        model's ``parameters()`` form one group).

    Notes
    -----
    Each :meth:`step` does, for every entry::

        g = grad + weight_decay * p
        buf = g                                      (first step)
        buf = momentum * buf + (1 - dampening) * g   (later steps)
        g = g + momentum * buf   if nesterov else   g = buf
        p = p - lr * g

    No ``1/n`` appears here: the gradients are those of the batch *mean*
    loss already (see :class:`cmlp.MLP`).
    """
    cdef readonly object momentum_buffer
    cdef readonly double momentum, dampening, weight_decay
    cdef readonly bint nesterov
    _state_names = ("momentum_buffer",)

    def __init__(self, params, grads, lr=0.01, momentum=0.0, dampening=0.0,
                 nesterov=False, weight_decay=0.0):
        dtype = self._bind(params, grads, lr)
        self.momentum = _check_fraction("momentum", momentum, False)
        self.dampening = _check_fraction("dampening", dampening, True)
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")
        self.momentum_buffer = np.zeros(self._size if self.momentum else 0, dtype=dtype)
        self._update = sgd_update(self.momentum, self.dampening, self.nesterov,
                                  self.weight_decay)
        self._bind_state(self.momentum_buffer, self.momentum_buffer)

    def __repr__(self):
        return (f"SGD(lr={self._lr!r}, momentum={self.momentum!r}, dampening={self.dampening!r}, "
                f"nesterov={bool(self.nesterov)!r}, weight_decay={self.weight_decay!r})")


cdef class Adam(_Optimizer):
    """Adam, exactly as :class:`torch.optim.Adam` (and :class:`torch.optim.AdamW`).

    Parameters
    ----------
    params, grads : numpy.ndarray
        The flat buffers to update and to read (see :class:`SGD`).
    lr : float, default 0.001
        Learning rate; may be changed between steps.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment averages, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, after the square root.
    weight_decay : float, default 0
        Applies to every parameter, biases included, as in PyTorch.
    decoupled_weight_decay : bool, default False
        False: L2 decay, ``weight_decay * p`` added to the gradient (Adam).
        True: ``p *= 1 - lr * weight_decay`` before the step (AdamW).

    Notes
    -----
    At step ``t`` (from 1), for every entry::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """
    cdef readonly object exp_avg, exp_avg_sq
    cdef readonly double beta1, beta2, eps, weight_decay
    cdef readonly bint decoupled_weight_decay
    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, grads, lr=0.001, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, decoupled_weight_decay=False):
        dtype = self._bind(params, grads, lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair of floats, got {betas!r}") from None
        self.beta1 = _check_fraction("betas[0]", beta1, False)
        self.beta2 = _check_fraction("betas[1]", beta2, False)
        self.eps = _check_non_negative("eps", eps)
        if self.eps == 0:   # the first step would divide 0 by 0 wherever a gradient is 0
            raise ValueError("eps must be > 0, got 0.0")
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.exp_avg = np.zeros(self._size, dtype=dtype)
        self.exp_avg_sq = np.zeros(self._size, dtype=dtype)
        self._update = adam_update(self.beta1, self.beta2, self.eps, self.weight_decay,
                                   self.decoupled_weight_decay)
        self._bind_state(self.exp_avg, self.exp_avg_sq)

    @property
    def betas(self):
        """``(beta1, beta2)``."""
        return (self.beta1, self.beta2)

    def __repr__(self):
        return (f"Adam(lr={self._lr!r}, betas={self.betas!r}, eps={self.eps!r}, "
                f"weight_decay={self.weight_decay!r}, "
                f"decoupled_weight_decay={bool(self.decoupled_weight_decay)!r})")


cdef object _state_entry(state, key):
    try:
        return state[key]
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"state must be a mapping with a {key!r} entry, as state_dict() "
                         "returns") from None


cdef Py_ssize_t _check_steps(state) except -1:
    steps = _state_entry(state, "steps")
    try:
        valid = (not isinstance(steps, (bool, np.bool_)) and int(steps) == steps
                 and 0 <= steps < 2**62)
    except (TypeError, ValueError, OverflowError):  # a string, NaN, inf
        valid = False
    if not valid:
        raise ValueError(f"state['steps'] must be an int >= 0, got {steps!r}")
    return int(steps)


cdef object _check_state_array(target, state, key):
    # Real numbers only, as MLP.load_state_dict takes them: NumPy would turn
    # None into NaN, drop an imaginary part or parse a string, all silently.
    value = as_real_array(_state_entry(state, key), target.dtype, f"state[{key!r}]")
    if value.shape != target.shape:
        raise ValueError(f"state[{key!r}] must have shape {target.shape}, got {value.shape}")
    return value
