"""Compiled core of :class:`cmlp.MLPEnsemble`: K networks of one architecture
trained by one call, the GIL released once for all of them.

Each model's parameters are row k of a ``(K, n_params)`` buffer laid out as
one :class:`cmlp.MLP`'s flat buffer. Two routes, both giving every model the
bits it would get from ``MLP`` alone (same data, same order, same learning
rate):

* per model: the single-model kernels MLP's engine runs (``_batches.epoch``,
  which takes ``_maths.train_step`` on each batch; ``_maths.forward``) on row k of the stacked
  parameter, gradient and work buffers, the models spread over threads by an
  OpenMP ``prange`` (serial where the build has no OpenMP), handed out one at
  a time as threads come free: on a shared machine one core may run slower
  than the other for a while, and a call lasts as long as its slowest thread;
* tiny networks, one sample a step: ``_ensemble_tiny.h``'s kernel, which
  runs blocks of models in the lanes of the vector registers (struct of
  arrays) with the same operations in the same order, the blocks spread over
  threads the same way.

Every def function here checks what it is given (shapes, dtypes, layout,
indices) with the GIL held before any nogil code reads it; the Python layer
(``ensemble.py``) casts and allocates.
"""
from cython cimport floating
from cython.parallel cimport prange
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from cmlp._batches cimport epoch, stepped_epoch
from cmlp._maths cimport Layer, Net, forward, net_init
from cmlp._optim cimport Update, adam_update, sgd_update
from cmlp._maths import ACTIVATIONS as _ACTIVATIONS
from cmlp._maths import LOSS_NEEDS as _LOSS_NEEDS
from cmlp._maths import LOSSES as _LOSSES
from cmlp._maths import vector_variant as _vector_variant
from cmlp._validation import check_architecture

cnp.import_array()

cdef extern from "_ensemble_tiny.h":
    const int CMLP_TINY_LANES
    const int CMLP_TINY_MAX_LAYERS
    const int CMLP_TINY_MAX_WIDTH
    const int CMLP_TINY_MAX_UNITS
    const int CMLP_TINY_MAX_PARAMS
    ctypedef struct cmlp_tiny_net:
        int n_layers
        int loss
        Py_ssize_t sizes[9]
        int codes[8]
        Py_ssize_t n_params
    ctypedef int (*cmlp_tiny_block_d)(const cmlp_tiny_net* net, Py_ssize_t m0, Py_ssize_t m1,
                                      double* params, const double* X, const double* Y,
                                      Py_ssize_t n_rows, const Py_ssize_t* order,
                                      Py_ssize_t steps, const double* lr,
                                      double* losses, Py_ssize_t* ran,
                                      const Py_ssize_t* strides) noexcept nogil
    cmlp_tiny_block_d cmlp_tiny_kernel_d(int v) noexcept nogil

# The order of a pass that takes each model's samples as they come: no indices.
_NO_ORDER = np.empty((1 << 16, 0), dtype=np.intp)
# The weights of a pass without them.
_NO_WEIGHTS = np.empty((1 << 16, 0))
# A bound on the threads a call asks OpenMP for, whatever n_threads says.
cdef Py_ssize_t MAX_THREADS = 256
cdef int SOFTMAX_CODE = _ACTIVATIONS["softmax"]
cdef int CROSS_ENTROPY_CODE = _LOSSES["cross_entropy"]
# loss code -> the output activation's code it needs, as the engine admits them
_LOSS_NEEDS_CODES = {_LOSSES[loss]: _ACTIVATIONS[f] for loss, f in _LOSS_NEEDS.items()}
_VARIANT_INDEX = {"baseline": 0, "avx2": 1, "avx512": 2}
_TINY_CODES = (_ACTIVATIONS["identity"], _ACTIVATIONS["sigmoid"], _ACTIVATIONS["tanh"],
               _ACTIVATIONS["relu"])
_TINY_LOSSES = (_LOSSES["mse"], _LOSSES["half_sse"], _LOSSES["bce"])
TINY_LANES = CMLP_TINY_LANES


def has_openmp():
    """Whether this build spreads the models over threads (OpenMP)."""
    return bool(cmlp_openmp_flag())


cdef extern from *:
    """
    #ifdef _OPENMP
    static int cmlp_openmp_flag(void) { return 1; }
    #else
    static int cmlp_openmp_flag(void) { return 0; }
    #endif
    """
    int cmlp_openmp_flag() noexcept nogil


def tiny_route(sizes, codes, dtype, loss, Py_ssize_t batch_size):
    """Whether a pass of this shape takes the vectorised tiny-network kernel:
    float64, batches of one sample, the tiny kernel's activations and losses,
    every width at most CMLP_TINY_MAX_WIDTH, within its buffers."""
    sizes = tuple(sizes)
    codes = tuple(codes)
    n_params = sum(sizes[l + 1] * (sizes[l] + 1) for l in range(len(codes)))
    return (np.dtype(dtype) == np.float64 and batch_size == 1
            and _LOSSES.get(loss, -1) in _TINY_LOSSES
            and all(c in _TINY_CODES for c in codes)
            and len(codes) <= CMLP_TINY_MAX_LAYERS
            and max(sizes) <= CMLP_TINY_MAX_WIDTH
            and sum(sizes) <= CMLP_TINY_MAX_UNITS
            and n_params <= CMLP_TINY_MAX_PARAMS)


cdef inline int _check(object a, int typenum, int ndim, str name) except -1:
    """a as the kernels read it: a C-contiguous, aligned, native ndarray of
    typenum with ndim axes (read from the array's struct, C calls only)."""
    if not (cnp.PyArray_Check(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISBEHAVED_RO(<cnp.ndarray>a)):
        raise ValueError(f"{name} must be a C-contiguous, aligned, native {ndim}-D "
                         f"ndarray of {np.dtype(cnp.PyArray_TypeObjectFromType(typenum)).name}")
    return 0


cdef inline int _writable(object a, str name) except -1:
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a):
        raise ValueError(f"{name} must be writable")
    return 0


cdef inline Py_ssize_t _dim(object a, int i) noexcept:
    return cnp.PyArray_DIM(<cnp.ndarray>a, i)


def work_size(sizes, codes, Py_ssize_t batch_size):
    """Entries of one model's work storage for batches of batch_size samples,
    as _batches.epoch lays it out (A, D, the kept logits, the targets)."""
    sizes = [int(x) for x in sizes]
    ws = sum(sizes)
    k = sizes[len(sizes) - 1]
    logits = int(codes[len(codes) - 1]) == _ACTIVATIONS["softmax"]
    return batch_size * ws + batch_size * (ws - sizes[0]) + (batch_size * k if logits else 0) \
        + batch_size * k


cdef class Plan:
    """One architecture's passes over K stacked models: the architecture is
    checked once, here, and each call checks only its arrays (C calls).

    Buffers, K models each: params and grads (K, >= n_params), a model's
    parameters the first n_params entries of its row (rows may be padded
    to whole cache lines); storage (K, >= work_size(batch_size)) work;
    X (K, n, n_in) and Y (K, n, n_out) each model's samples.
    """
    cdef readonly object dtype
    cdef readonly Py_ssize_t n_params
    cdef object _sizes_array, _codes_array
    cdef Py_ssize_t[::1] _sizes
    cdef int[::1] _codes
    cdef int _typenum
    cdef Py_ssize_t _n_in, _n_out, _L
    cdef bint _tiny_shape
    cdef cmlp_tiny_net _net     # the tiny kernel's view of the architecture
    cdef Layer* _layers         # the single-model kernels' view: _layout's layers
    cdef Net _layout

    def __cinit__(self, *args, **kwargs):
        self._layers = NULL

    def __dealloc__(self):
        PyMem_Free(self._layers)

    def __init__(self, sizes, codes, dtype):
        cdef Py_ssize_t l
        sizes, codes, dtype, _ = check_architecture(sizes, codes, dtype,
                                                    set(_ACTIVATIONS.values()))
        self.dtype = dtype
        self._typenum = dtype.num
        self._sizes_array = np.array(sizes, dtype=np.intp)
        self._codes_array = np.array(codes, dtype=np.intc)
        self._sizes = self._sizes_array
        self._codes = self._codes_array
        self._L = len(codes)
        self._n_in = sizes[0]
        self._n_out = sizes[self._L]
        self.n_params = sum(sizes[l + 1] * (sizes[l] + 1) for l in range(self._L))
        if self._layers != NULL:
            raise RuntimeError("a Plan is initialised once")
        self._layers = <Layer*>PyMem_Malloc(self._L * sizeof(Layer))
        if self._layers == NULL:
            raise MemoryError()
        net_init(&self._layout, self._layers, &self._sizes[0], &self._codes[0], self._L)
        self._tiny_shape = tiny_route(sizes, codes, dtype, "mse", 1)
        if self._tiny_shape:
            self._net.n_layers = <int>self._L
            for l in range(self._L):
                self._net.sizes[l] = sizes[l]
                self._net.codes[l] = codes[l]
            self._net.sizes[self._L] = sizes[self._L]
            self._net.n_params = self.n_params

    cdef Py_ssize_t _work_size(self, Py_ssize_t batch_size):
        cdef Py_ssize_t ws = 0, l
        for l in range(self._L + 1):
            ws += self._sizes[l]
        return (batch_size * ws + batch_size * (ws - self._n_in)
                + (batch_size * self._n_out if self._codes[self._L - 1] == SOFTMAX_CODE else 0)
                + batch_size * self._n_out)

    def tiny(self, int loss, Py_ssize_t batch_size):
        """Whether train takes the vectorised tiny-network kernel for this loss and batch."""
        return self._tiny_shape and batch_size == 1 and loss in _TINY_LOSSES

    def train(self, int loss, params, grads, storage, X, Y, order, Py_ssize_t batch_size,
              lr, losses, ran, totals, int n_threads):
        """Train every model on its data for one pass over it, in one call.

        IN X (K, rows, n_in) and Y (K, rows, n_out): each model's own rows,
        or X (1, rows, n_in) and Y (1, rows, n_out): rows every model shares;
        order (K, n) intp: the n samples each model takes, in turn, as rows
        (any number of them, rows repeated or left out: bootstrap samples of
        shared rows), or None: every row in turn, n = rows; lr (K,) float64,
        or None: evaluate, no update. INOUT params. OUT grads, storage: work;
        losses (K, number of batches) float64: each batch's loss before its
        update; ran (K,) intp: the batches each model ran (a model stops
        after a batch whose loss is not finite, as MLP.fit's epoch does);
        totals (K,) float64: the sum of each model's batch losses, each times
        its batch's size, in batch order (as Engine.train_epoch returns it).

        Each model takes, batch after batch, the step MLP.train_step takes:
        with batch_size 1, float64 and a tiny network (tiny), the vectorised
        kernel; else _batches.epoch on the model's slices, as MLP's engine runs it.
        """
        cdef Py_ssize_t K, n
        cdef bint train_pass = lr is not None
        if lr is None:
            lr = np.zeros(_dim(params, 0) if cnp.PyArray_Check(params) else 0)
        order, n = self._check_pass(loss, params, grads, storage, X, Y, order, batch_size, lr,
                                    losses, ran, totals, n_threads)
        K = _dim(params, 0)
        if K == 0:
            return
        n_threads = <int>min(n_threads, K, MAX_THREADS)   # never more threads than models
        if train_pass and self.tiny(loss, batch_size):
            self._net.loss = loss
            _train_tiny(&self._net, params, X, Y, order, n, lr, losses, ran, n_threads,
                        _VARIANT_INDEX.get(_vector_variant(), 0))
        elif self._typenum == cnp.NPY_DOUBLE:
            _train_models[double](&self._layout, loss, self.n_params, params, grads, storage, X,
                                  Y, order, batch_size, lr, train_pass, losses, ran, n_threads)
        else:
            _train_models[float](&self._layout, loss, self.n_params, params, grads, storage, X,
                                 Y, order, batch_size, lr, train_pass, losses, ran, n_threads)
        _totals(losses, ran, n, batch_size, totals)

    def train_with_optimizer(self, int loss, params, grads, storage, X, Y, weights, weighted,
                             batch_weights, order, Py_ssize_t batch_size, double alpha,
                             optimizer, lr, first_state, second_state, steps, losses,
                             shares, ran, totals, int n_threads):
        """train, each batch followed by an optimizer's step (MLP.fit's epoch
        with momentum, weight decay, Adam, sample weights or alpha), in one call.

        As train, and: weights (K, rows) float64, each model's weight of each
        row, or (1, rows): weights the models share, or None; weighted (K,)
        intc: whether model k takes its weights (0: the unweighted mean, as
        MLP.fit takes equal weights); batch_weights (K, >= batch_size)
        float64: work; alpha: scikit-learn's penalty (>= 0); optimizer:
        ("sgd", momentum, dampening, nesterov, weight_decay) or ("adam",
        beta1, beta2, eps, weight_decay, decoupled), as cmlp.SGD and cmlp.Adam
        check them; first_state, second_state (K, >= n_params): each model's
        optimizer state (SGD's momentum buffer; Adam's moments), steps (K,)
        intp: the steps each optimizer made, both INOUT. OUT shares (K,
        number of batches) float64: each batch's samples or summed weight;
        totals: the sum of each model's batch losses times their shares.
        """
        cdef Py_ssize_t K, P = self.n_params
        cdef Update update = _update_of(optimizer)
        if not alpha >= 0:
            raise ValueError("alpha must be >= 0")
        order, _ = self._check_pass(loss, params, grads, storage, X, Y, order, batch_size, lr,
                                    losses, ran, totals, n_threads)
        K = _dim(params, 0)
        for name, state in (("first_state", first_state), ("second_state", second_state)):
            _check(state, self._typenum, 2, name)
            _writable(state, name)
            if _dim(state, 0) != K or _dim(state, 1) < P:
                raise ValueError(f"{name} must be of shape ({K}, >= {P})")
        _check(steps, cnp.NPY_INTP, 1, "steps")
        _writable(steps, "steps")
        _check(shares, cnp.NPY_DOUBLE, 2, "shares")
        _writable(shares, "shares")
        _check(batch_weights, cnp.NPY_DOUBLE, 2, "batch_weights")
        _writable(batch_weights, "batch_weights")
        if (_dim(steps, 0) != K or _dim(shares, 0) != K or _dim(shares, 1) != _dim(losses, 1)
                or _dim(batch_weights, 0) != K or _dim(batch_weights, 1) < batch_size):
            raise ValueError("the shapes of the buffers do not agree")
        if weights is None:
            weights = _NO_WEIGHTS[:1]
            weighted = np.zeros(K, dtype=np.intc)
        else:
            _check(weights, cnp.NPY_DOUBLE, 2, "weights")
            _check(weighted, cnp.NPY_INT, 1, "weighted")
            if (_dim(weights, 0) not in (1, K) or _dim(weights, 1) != _dim(X, 1)
                    or _dim(weighted, 0) != K):
                raise ValueError(f"weights must be None or of shape ({K} or 1, {_dim(X, 1)}), "
                                 f"with weighted of shape ({K},)")
        if K == 0:
            return
        n_threads = <int>min(n_threads, K, MAX_THREADS)
        if self._typenum == cnp.NPY_DOUBLE:
            _train_models_stepped[double](&self._layout, loss, P, params, grads, storage, X, Y,
                                          weights, weighted, batch_weights, order, batch_size,
                                          alpha, &update, lr, first_state, second_state, steps,
                                          losses, shares, ran, n_threads)
        else:
            _train_models_stepped[float](&self._layout, loss, P, params, grads, storage, X, Y,
                                         weights, weighted, batch_weights, order, batch_size,
                                         alpha, &update, lr, first_state, second_state, steps,
                                         losses, shares, ran, n_threads)
        _weighted_totals(losses, shares, ran, totals)

    cdef tuple _check_pass(self, int loss, params, grads, storage, X, Y, order,
                           Py_ssize_t batch_size, lr, losses, ran, totals, int n_threads):
        """What every training pass reads, checked; returns the order the
        kernels take (a checked private copy, or the empty order) and the
        samples each model takes in the pass."""
        cdef Py_ssize_t K, rows, n, nb, P = self.n_params
        if loss < 0 or loss > CROSS_ENTROPY_CODE:
            raise ValueError(f"unknown loss code {loss}")
        if _LOSS_NEEDS_CODES.get(loss, self._codes[self._L - 1]) != self._codes[self._L - 1]:
            raise ValueError(f"loss code {loss} does not suit this output layer")
        _check(params, self._typenum, 2, "params")
        _check(grads, self._typenum, 2, "grads")
        _check(storage, self._typenum, 2, "storage")
        _check(X, self._typenum, 3, "X")
        _check(Y, self._typenum, 3, "Y")
        _check(losses, cnp.NPY_DOUBLE, 2, "losses")
        _check(ran, cnp.NPY_INTP, 1, "ran")
        _check(totals, cnp.NPY_DOUBLE, 1, "totals")
        _writable(params, "params")
        _writable(grads, "grads")
        _writable(storage, "storage")
        _writable(losses, "losses")
        _writable(ran, "ran")
        _writable(totals, "totals")
        _check(lr, cnp.NPY_DOUBLE, 1, "lr")
        K = _dim(params, 0)
        rows = _dim(X, 1)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if order is None:
            n = rows
        else:
            _check(order, cnp.NPY_INTP, 2, "order")
            n = _dim(order, 1)
            if _dim(order, 0) != K:
                raise ValueError(f"order must be None or of shape ({K}, n)")
        if n < 1 or rows < 1:
            raise ValueError("X must hold at least one sample per model")
        nb = n // batch_size + (n % batch_size != 0)
        if (_dim(params, 1) < P or _dim(grads, 0) != K or _dim(grads, 1) < P
                or _dim(storage, 0) != K
                or _dim(storage, 1) < self._work_size(batch_size)
                or _dim(X, 0) not in (1, K) or _dim(X, 2) != self._n_in
                or _dim(Y, 0) != _dim(X, 0) or _dim(Y, 1) != rows or _dim(Y, 2) != self._n_out
                or _dim(lr, 0) != K or _dim(losses, 0) != K or _dim(losses, 1) != nb
                or _dim(ran, 0) != K or _dim(totals, 0) != K):
            raise ValueError("the shapes of the buffers do not agree")
        if n_threads < 1:
            raise ValueError("n_threads must be >= 1")
        if order is None:
            order = _NO_ORDER if K <= _dim(_NO_ORDER, 0) else np.empty((K, 0), dtype=np.intp)
            return order[:K], n
        # A private copy, checked: the kernels read it by index.
        order = np.array(order, dtype=np.intp, copy=True)
        if order.size and (order.min() < 0 or order.max() >= rows):
            raise ValueError(f"order must hold row indices in [0, {rows})")
        return order, n

    def predict(self, params, storage, X, out, int n_threads):
        """OUT out (K, n, n_out): each model's forward pass of its own X[k]
        (X (K, n, n_in)) or of the one X (X (1, n, n_in)), as MLP.predict
        computes it. storage (K, >= n * sum(sizes)) is work."""
        cdef Py_ssize_t K, n
        _check(params, self._typenum, 2, "params")
        _check(storage, self._typenum, 2, "storage")
        _check(X, self._typenum, 3, "X")
        _check(out, self._typenum, 3, "out")
        _writable(storage, "storage")
        _writable(out, "out")
        K = _dim(params, 0)
        n = _dim(X, 1)
        if (_dim(params, 1) < self.n_params or _dim(X, 0) not in (1, K)
                or _dim(X, 2) != self._n_in or _dim(storage, 0) != K
                or _dim(storage, 1) < n * int(self._sizes_array.sum())
                or _dim(out, 0) != K or _dim(out, 1) != n or _dim(out, 2) != self._n_out):
            raise ValueError("the shapes of the buffers do not agree")
        if n_threads < 1:
            raise ValueError("n_threads must be >= 1")
        if K == 0 or n == 0:
            return
        n_threads = <int>min(n_threads, K, MAX_THREADS)
        if self._typenum == cnp.NPY_DOUBLE:
            _predict_models[double](&self._layout, self.n_params, params, storage,
                                    X, out, n_threads)
        else:
            _predict_models[float](&self._layout, self.n_params, params, storage,
                                   X, out, n_threads)


cdef void _totals(const double[:, ::1] losses, const Py_ssize_t[::1] ran, Py_ssize_t n,
                  Py_ssize_t batch_size, double[::1] totals) noexcept:
    cdef Py_ssize_t k, b
    cdef double total
    for k in range(losses.shape[0]):
        total = 0
        for b in range(ran[k]):
            total += losses[k, b] * <double>min(batch_size, n - b * batch_size)
        totals[k] = total


cdef void _weighted_totals(const double[:, ::1] losses, const double[:, ::1] shares,
                           const Py_ssize_t[::1] ran, double[::1] totals) noexcept:
    # As training.py's stepped epoch adds them: total += loss * share, batch by batch.
    cdef Py_ssize_t k, b
    cdef double total
    for k in range(losses.shape[0]):
        total = 0
        for b in range(ran[k]):
            total += losses[k, b] * shares[k, b]
        totals[k] = total


cdef Update _update_of(optimizer) except *:
    """The Update of ("sgd", momentum, dampening, nesterov, weight_decay) or
    ("adam", beta1, beta2, eps, weight_decay, decoupled), in the ranges
    cmlp.SGD and cmlp.Adam admit."""
    cdef tuple spec = tuple(optimizer)
    if len(spec) == 5 and spec[0] == "sgd":
        momentum, dampening, weight_decay = float(spec[1]), float(spec[2]), float(spec[4])
        if not (0 <= momentum < 1 and 0 <= dampening <= 1 and 0 <= weight_decay < INFINITY):
            raise ValueError(f"SGD hyperparameters out of range: {spec!r}")
        return sgd_update(momentum, dampening, bool(spec[3]), weight_decay)
    if len(spec) == 6 and spec[0] == "adam":
        beta1, beta2, eps, weight_decay = (float(spec[1]), float(spec[2]), float(spec[3]),
                                           float(spec[4]))
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and 0 < eps < INFINITY
                and 0 <= weight_decay < INFINITY):
            raise ValueError(f"Adam hyperparameters out of range: {spec!r}")
        return adam_update(beta1, beta2, eps, weight_decay, bool(spec[5]))
    raise ValueError(f"optimizer must be ('sgd', momentum, dampening, nesterov, weight_decay) "
                     f"or ('adam', beta1, beta2, eps, weight_decay, decoupled), got {spec!r}")


cdef void _train_models(const Net* net, int loss, Py_ssize_t P, floating[:, ::1] params,
                        floating[:, ::1] grads, floating[:, ::1] storage, const floating[:, :, ::1] X,
                        const floating[:, :, ::1] Y, const Py_ssize_t[:, ::1] order,
                        Py_ssize_t batch_size, const double[::1] lr, bint train_pass,
                        double[:, ::1] losses, Py_ssize_t[::1] ran, int n_threads) except *:
    cdef Py_ssize_t k, K = params.shape[0]
    cdef bint shared = X.shape[0] == 1   # every model reads X[0] and Y[0]
    cdef int[::1] bad = np.zeros(K, dtype=np.intc)
    with nogil:
        for k in prange(K, num_threads=n_threads, schedule="dynamic"):
            ran[k] = epoch(net, params[k, :P], grads[k, :P], storage[k], X[0 if shared else k],
                           Y[0 if shared else k], order[k], batch_size, loss, train_pass,
                           <floating>lr[k], losses[k], <bint*>&bad[k])
    if np.asarray(bad).any():
        raise RuntimeError("order was changed during the call: an index left [0, n)")


cdef void _train_models_stepped(const Net* net, int loss, Py_ssize_t P,
                                floating[:, ::1] params, floating[:, ::1] grads,
                                floating[:, ::1] storage, const floating[:, :, ::1] X,
                                const floating[:, :, ::1] Y, const double[:, ::1] weights,
                                const int[::1] weighted, double[:, ::1] batch_weights,
                                const Py_ssize_t[:, ::1] order,
                                Py_ssize_t batch_size, double alpha, const Update* update,
                                const double[::1] lr, floating[:, ::1] first_state,
                                floating[:, ::1] second_state, Py_ssize_t[::1] steps,
                                double[:, ::1] losses, double[:, ::1] shares,
                                Py_ssize_t[::1] ran, int n_threads) except *:
    cdef Py_ssize_t k, K = params.shape[0]
    cdef bint shared = X.shape[0] == 1, shared_weights = weights.shape[0] == 1
    cdef int[::1] bad = np.zeros(K, dtype=np.intc)
    with nogil:
        for k in prange(K, num_threads=n_threads, schedule="dynamic"):
            ran[k] = stepped_epoch(net, params[k, :P], grads[k, :P], storage[k],
                                   X[0 if shared else k], Y[0 if shared else k],
                                   weights[0 if shared_weights else k,
                                           :weights.shape[1] if weighted[k] else 0],
                                   batch_weights[k], order[k], batch_size, loss,
                                   alpha, update, lr[k], first_state[k, :P],
                                   second_state[k, :P], &steps[k], losses[k], shares[k],
                                   <bint*>&bad[k])
    if np.asarray(bad).any():
        raise RuntimeError("order was changed during the call: an index left [0, n)")


cdef void _train_tiny(cmlp_tiny_net* net, cnp.ndarray params, cnp.ndarray X, cnp.ndarray Y,
                      cnp.ndarray order, Py_ssize_t n, cnp.ndarray lr, cnp.ndarray losses,
                      cnp.ndarray ran, int n_threads, int variant) noexcept:
    # Raw pointers into the checked arrays: a typed memoryview of each would
    # cost more than a thousand tiny models' step. n: the steps of each model.
    cdef Py_ssize_t K = cnp.PyArray_DIM(params, 0), n_rows = cnp.PyArray_DIM(X, 1)
    cdef bint shared = cnp.PyArray_DIM(X, 0) == 1
    cdef Py_ssize_t blocks, b, m0, m1
    cdef double* p = <double*>cnp.PyArray_DATA(params)
    cdef const double* x = <const double*>cnp.PyArray_DATA(X)
    cdef const double* y = <const double*>cnp.PyArray_DATA(Y)
    cdef const double* rates = <const double*>cnp.PyArray_DATA(lr)
    cdef double* out = <double*>cnp.PyArray_DATA(losses)
    cdef Py_ssize_t* counts = <Py_ssize_t*>cnp.PyArray_DATA(ran)
    cdef const Py_ssize_t* rows = NULL
    cdef cmlp_tiny_block_d kernel = cmlp_tiny_kernel_d(variant)
    # each model's row apart, in entries: params, X, Y, losses
    cdef Py_ssize_t strides[4]
    if cnp.PyArray_DIM(order, 1) != 0:
        rows = <const Py_ssize_t*>cnp.PyArray_DATA(order)
    strides[0] = cnp.PyArray_DIM(params, 1)
    strides[1] = 0 if shared else n_rows * cnp.PyArray_DIM(X, 2)
    strides[2] = 0 if shared else n_rows * cnp.PyArray_DIM(Y, 2)
    strides[3] = cnp.PyArray_DIM(losses, 1)
    blocks = (K + CMLP_TINY_LANES - 1) // CMLP_TINY_LANES
    with nogil:
        if n_threads == 1 or blocks == 1:   # no parallel region to open and join
            for b in range(blocks):
                kernel(net, b * CMLP_TINY_LANES, min((b + 1) * CMLP_TINY_LANES, K), p, x, y,
                       n_rows, rows, n, rates, out, counts, strides)
        else:
            for b in prange(blocks, num_threads=n_threads, schedule="static"):
                m0 = b * CMLP_TINY_LANES
                m1 = min(m0 + CMLP_TINY_LANES, K)
                kernel(net, m0, m1, p, x, y, n_rows, rows, n, rates, out, counts, strides)


cdef void _predict_models(const Net* net, Py_ssize_t P,
                          floating[:, ::1] params, floating[:, ::1] storage,
                          const floating[:, :, ::1] X, floating[:, :, ::1] out,
                          int n_threads) noexcept:
    cdef Py_ssize_t k, K = params.shape[0], n = X.shape[1], shared = X.shape[0] == 1
    cdef Py_ssize_t n_in = net.layers[0].n_in, n_out = net.layers[net.L - 1].n_out
    cdef Py_ssize_t ws = net.width
    with nogil:
        for k in prange(K, num_threads=n_threads, schedule="dynamic"):
            memcpy(&storage[k, 0], &X[0 if shared else k, 0, 0], n * n_in * sizeof(floating))
            forward(net, n, params[k, :P], storage[k, :n * ws], storage[k, :n * ws], False)
            memcpy(&out[k, 0, 0], &storage[k, n * (ws - n_out)],
                   n * n_out * sizeof(floating))
