"""Compiled core of :class:`cmlp.MLPEnsemble`: K networks of one architecture
trained by one call, the GIL released once for all of them.

Each model's parameters are row k of a ``(K, n_params)`` buffer laid out as
one :class:`cmlp.MLP`'s flat buffer. Two routes, both giving every model the
bits it would get from ``MLP`` alone (same data, same order, same learning
rate):

* per model: ``_kernels``' own single-model kernels (``_epoch``, which runs
  ``_train_step`` on each batch; ``_forward``) on row k of the stacked
  parameter, gradient and work buffers, the models spread over threads by an
  OpenMP ``prange`` (serial where the build has no OpenMP);
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
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from cmlp._kernels cimport _epoch, _forward
from cmlp._kernels import ACTIVATIONS as _ACTIVATIONS
from cmlp._kernels import LOSSES as _LOSSES
from cmlp._kernels import vector_variant as _vector_variant

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


cdef object _checked(object a, object dtype, int ndim, str name):
    """a as the kernels read it: a C-contiguous, aligned, native ndarray of
    dtype with ndim axes."""
    if not (cnp.PyArray_Check(a) and cnp.PyArray_NDIM(a) == ndim
            and cnp.PyArray_TYPE(a) == np.dtype(dtype).num
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a)):
        raise ValueError(f"{name} must be a C-contiguous, aligned, native {ndim}-D "
                         f"ndarray of {np.dtype(dtype).name}")
    return np.asarray(a)


cdef object _checked_net(sizes, codes):
    s = np.ascontiguousarray(sizes, dtype=np.intp)
    c = np.ascontiguousarray(codes, dtype=np.intc)
    if s.ndim != 1 or c.ndim != 1 or s.shape[0] != c.shape[0] + 1 or c.shape[0] < 1:
        raise ValueError("sizes must hold one more width than codes holds layers")
    if s.min() < 1 or any(int(x) not in _ACTIVATIONS.values() for x in c):
        raise ValueError("bad sizes or activation codes")
    return s, c


def work_size(sizes, codes, Py_ssize_t batch_size):
    """Entries of one model's work storage for batches of batch_size samples,
    as _kernels' _epoch lays it out (A, D, the kept logits, the targets)."""
    sizes = [int(x) for x in sizes]
    ws = sum(sizes)
    k = sizes[len(sizes) - 1]
    logits = int(codes[len(codes) - 1]) == _ACTIVATIONS["softmax"]
    return batch_size * ws + batch_size * (ws - sizes[0]) + (batch_size * k if logits else 0) \
        + batch_size * k


def train(sizes, codes, int loss, params, grads, storage, X, Y, order,
          Py_ssize_t batch_size, lr, losses, ran, totals, int n_threads):
    """Train every model on its own data for one pass over it, in one call.

    IN sizes, codes: the architecture; X (K, n, n_in), Y (K, n, n_out): model
    k's samples; order (K, n) intp: the rows each model takes, in turn (or
    None: 0 .. n-1); lr (K,) float64. INOUT params (K, n_params). OUT grads
    (K, n_params), storage (K, work_size(batch_size)): work; losses (K,
    number of batches) float64: each batch's loss before its update; ran (K,)
    intp: the batches each model ran (a model stops after a batch whose loss
    is not finite, as MLP.fit's epoch does); totals (K,) float64: the sum of
    each model's batch losses, each times its batch's size, in batch order
    (as Engine.train_epoch returns it).

    Each model takes, batch after batch, the step MLP.train_step takes: with
    batch_size 1, float64 and a tiny network (tiny_route), the vectorised
    kernel; else _kernels' own _epoch on the model's slices.
    """
    s, c = _checked_net(sizes, codes)
    if loss not in _LOSSES.values():
        raise ValueError(f"unknown loss code {loss}")
    dtype = np.asarray(params).dtype if cnp.PyArray_Check(params) else None
    if dtype not in (np.float32, np.float64):
        raise ValueError("params must be a float32 or float64 ndarray")
    params = _checked(params, dtype, 2, "params")
    grads = _checked(grads, dtype, 2, "grads")
    storage = _checked(storage, dtype, 2, "storage")
    X = _checked(X, dtype, 3, "X")
    Y = _checked(Y, dtype, 3, "Y")
    if lr is None:   # evaluate: the forward pass and the loss alone
        lr_view = np.zeros(params.shape[0])
    else:
        lr_view = _checked(lr, np.float64, 1, "lr")
    losses = _checked(losses, np.float64, 2, "losses")
    ran = _checked(ran, np.intp, 1, "ran")
    totals = _checked(totals, np.float64, 1, "totals")
    cdef Py_ssize_t K = params.shape[0], P, n = X.shape[1], nb
    if not (cnp.PyArray_ISWRITEABLE(params) and cnp.PyArray_ISWRITEABLE(grads)
            and cnp.PyArray_ISWRITEABLE(storage) and cnp.PyArray_ISWRITEABLE(losses)
            and cnp.PyArray_ISWRITEABLE(ran) and cnp.PyArray_ISWRITEABLE(totals)):
        raise ValueError("params, grads, storage, losses and ran must be writable")
    # A model's parameters are the first P entries of its row (rows may be padded).
    P = sum(int(s[l + 1]) * (int(s[l]) + 1) for l in range(c.shape[0]))
    if params.shape[1] < P:
        raise ValueError("params does not hold one network per row")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if n < 1:
        raise ValueError("X must hold at least one sample per model")
    nb = n // batch_size + (n % batch_size != 0)
    if (grads.shape[0] != K or grads.shape[1] < P or storage.shape[0] != K
            or storage.shape[1] < work_size(s, c, batch_size)
            or X.shape[0] != K or X.shape[2] != s[0]
            or Y.shape[0] != K or Y.shape[1] != n or Y.shape[2] != s[s.shape[0] - 1]
            or lr_view.shape[0] != K or losses.shape[0] != K or losses.shape[1] != nb
            or ran.shape[0] != K or totals.shape[0] != K):
        raise ValueError("the shapes of the buffers do not agree")
    if order is None:
        order = np.empty((K, 0), dtype=np.intp)
    order = _checked(order, np.intp, 2, "order")
    if order.shape[0] != K or order.shape[1] not in (0, n):
        raise ValueError(f"order must be None or of shape ({K}, {n})")
    if order.shape[1] and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"order must hold row indices in [0, {n})")
    if n_threads < 1:
        raise ValueError("n_threads must be >= 1")
    if K == 0:
        return
    train_pass = lr is not None
    if train_pass and tiny_route(s, c, dtype, {v: k for k, v in _LOSSES.items()}[loss],
                                 batch_size):
        _train_tiny(s, c, loss, params, P, X, Y, order, lr_view, losses, ran, n_threads)
    elif dtype == np.float64:
        _train_models[double](s, c, loss, P, params, grads, storage, X, Y, order, batch_size,
                              lr_view, train_pass, losses, ran, n_threads)
    else:
        _train_models[float](s, c, loss, P, params, grads, storage, X, Y, order, batch_size,
                             lr_view, train_pass, losses, ran, n_threads)
    _totals(losses, ran, n, batch_size, totals)


def evaluate(sizes, codes, int loss, params, storage, X, Y, Py_ssize_t batch_size, losses,
             ran, totals, int n_threads):
    """Each model's loss on its own data set (X (K, n, n_in), Y (K, n, n_out)),
    batch_size samples at a time, as Engine.evaluate computes it: OUT losses,
    ran and totals as train gives them. No parameter changes."""
    train(sizes, codes, loss, params, np.empty_like(params), storage, X, Y, None, batch_size,
          None, losses, ran, totals, n_threads)


cdef void _totals(const double[:, ::1] losses, const Py_ssize_t[::1] ran, Py_ssize_t n,
                  Py_ssize_t batch_size, double[::1] totals) noexcept:
    cdef Py_ssize_t k, b
    cdef double total
    for k in range(losses.shape[0]):
        total = 0
        for b in range(ran[k]):
            total += losses[k, b] * <double>min(batch_size, n - b * batch_size)
        totals[k] = total


cdef void _train_models(const Py_ssize_t[::1] sizes, const int[::1] codes, int loss,
                        Py_ssize_t P, floating[:, ::1] params, floating[:, ::1] grads,
                        floating[:, ::1] storage, const floating[:, :, ::1] X,
                        const floating[:, :, ::1] Y, const Py_ssize_t[:, ::1] order,
                        Py_ssize_t batch_size, const double[::1] lr, bint train_pass,
                        double[:, ::1] losses, Py_ssize_t[::1] ran, int n_threads) except *:
    cdef Py_ssize_t k, K = params.shape[0]
    cdef int[::1] bad = np.zeros(K, dtype=np.intc)
    with nogil:
        for k in prange(K, num_threads=n_threads, schedule="static"):
            ran[k] = _epoch(sizes, codes, params[k, :P], grads[k, :P], storage[k], X[k], Y[k],
                            order[k], batch_size, loss, train_pass, <floating>lr[k],
                            losses[k], <bint*>&bad[k])
    if np.asarray(bad).any():
        raise RuntimeError("order was changed during the call: an index left [0, n)")


cdef void _train_tiny(const Py_ssize_t[::1] sizes, const int[::1] codes, int loss,
                      double[:, ::1] params, Py_ssize_t P, const double[:, :, ::1] X,
                      const double[:, :, ::1] Y, const Py_ssize_t[:, ::1] order,
                      const double[::1] lr, double[:, ::1] losses, Py_ssize_t[::1] ran,
                      int n_threads) except *:
    cdef cmlp_tiny_net net
    cdef Py_ssize_t l, K = params.shape[0], n = X.shape[1], blocks, b, m0, m1
    cdef const Py_ssize_t* rows = NULL
    # each model's row apart, in entries: params, X, Y, losses
    cdef Py_ssize_t strides[4]
    strides[0] = params.strides[0] // 8
    strides[1] = X.strides[0] // 8
    strides[2] = Y.strides[0] // 8
    strides[3] = losses.strides[0] // 8
    cdef cmlp_tiny_block_d kernel = cmlp_tiny_kernel_d(_VARIANT_INDEX.get(_vector_variant(), 0))
    # A private copy of the order: it is read by index without further checks.
    cdef Py_ssize_t[:, ::1] own
    if order.shape[1] != 0:
        own = np.array(order, dtype=np.intp, copy=True)
        if np.asarray(own).min() < 0 or np.asarray(own).max() >= n:
            raise ValueError(f"order must hold row indices in [0, {n})")
        rows = &own[0, 0]
    net.n_layers = <int>codes.shape[0]
    net.loss = loss
    for l in range(codes.shape[0]):
        net.sizes[l] = sizes[l]
        net.codes[l] = codes[l]
    net.sizes[codes.shape[0]] = sizes[codes.shape[0]]
    net.n_params = P
    blocks = (K + CMLP_TINY_LANES - 1) // CMLP_TINY_LANES
    with nogil:
        for b in prange(blocks, num_threads=n_threads, schedule="static"):
            m0 = b * CMLP_TINY_LANES
            m1 = min(m0 + CMLP_TINY_LANES, K)
            kernel(&net, m0, m1, &params[0, 0], &X[0, 0, 0], &Y[0, 0, 0], n, rows, n,
                   &lr[0], &losses[0, 0], &ran[0], strides)


def predict(sizes, codes, params, storage, X, out, int n_threads):
    """OUT out (K, n, n_out): each model's forward pass of its own X[k]
    (X (K, n, n_in)) or of the one X (X (1, n, n_in)), as MLP.predict
    computes it. storage (K, >= n * sum(sizes)) is work."""
    s, c = _checked_net(sizes, codes)
    dtype = np.asarray(params).dtype if cnp.PyArray_Check(params) else None
    if dtype not in (np.float32, np.float64):
        raise ValueError("params must be a float32 or float64 ndarray")
    params = _checked(params, dtype, 2, "params")
    storage = _checked(storage, dtype, 2, "storage")
    X = _checked(X, dtype, 3, "X")
    out = _checked(out, dtype, 3, "out")
    cdef Py_ssize_t K = params.shape[0], n = X.shape[1], P
    if not (cnp.PyArray_ISWRITEABLE(storage) and cnp.PyArray_ISWRITEABLE(out)):
        raise ValueError("storage and out must be writable")
    P = sum(int(s[l + 1]) * (int(s[l]) + 1) for l in range(c.shape[0]))
    if (params.shape[1] < P or X.shape[0] not in (1, K) or X.shape[2] != s[0]
            or storage.shape[0] != K or storage.shape[1] < n * int(s.sum())
            or out.shape[0] != K or out.shape[1] != n or out.shape[2] != s[s.shape[0] - 1]):
        raise ValueError("the shapes of the buffers do not agree")
    if n_threads < 1:
        raise ValueError("n_threads must be >= 1")
    if K == 0 or n == 0:
        return
    if dtype == np.float64:
        _predict_models[double](s, c, P, params, storage, X, out, n_threads)
    else:
        _predict_models[float](s, c, P, params, storage, X, out, n_threads)


cdef void _predict_models(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t P,
                          floating[:, ::1] params, floating[:, ::1] storage,
                          const floating[:, :, ::1] X, floating[:, :, ::1] out,
                          int n_threads) noexcept:
    cdef Py_ssize_t k, K = params.shape[0], n = X.shape[1], L = codes.shape[0]
    cdef Py_ssize_t n_in = sizes[0], n_out = sizes[L], ws = 0, l, shared = X.shape[0] == 1
    for l in range(L + 1):
        ws += sizes[l]
    with nogil:
        for k in prange(K, num_threads=n_threads, schedule="static"):
            memcpy(&storage[k, 0], &X[0 if shared else k, 0, 0], n * n_in * sizeof(floating))
            _forward(sizes, codes, n, params[k, :P], storage[k, :n * ws], storage[k, :n * ws], False)
            memcpy(&out[k, 0, 0], &storage[k, n * (ws - n_out)],
                   n * n_out * sizeof(floating))
