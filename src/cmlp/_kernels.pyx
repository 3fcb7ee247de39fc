"""The engine: the buffers of one network and the checked doors into the maths.

:class:`Engine` owns a network's flat ``params`` and ``grads`` and the work
buffers of its last batch size (the layout: ``_maths.pyx``), checks every
input with the GIL held, takes the model's lock, and only then runs the maths
(``_maths.pyx``) or an epoch (``_batches.pyx``), without the GIL for a pass
big enough for that to pay. No kernel is reachable with an unchecked shape.

Sparse input (a CSR batch) changes the first layer alone: its nonzeros are
gathered and checked into CSR buffers the engine owns (``_CSRBuffer``); the
work buffers then hold no ``A^(0)``.
"""
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_get_thread_ident, PyThread_release_lock, PyThread_type_lock,
)
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport isfinite
from libc.float cimport DBL_MAX
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from cmlp._maths cimport (
    BACKWARD, CROSS_ENTROPY, FORWARD, GRADIENTS, PREDICT, SOFTMAX, TRAIN,
    Layer, Net, Views, Views32, Views64, net_init, sparse_pass,
)
from cmlp._batches cimport (
    check_epoch_views, check_losses, check_order, csr_batch_nonzeros, epoch, gather_csr,
    gather_rows, predictions_finite, sparse_epoch, work_bounds,
)

from cmlp._batches import IN_ORDER as _IN_ORDER
from cmlp._batches import shuffled_order
from cmlp._maths import (ACTIVATIONS, LOSS_NEEDS, LOSSES, VARIANT_ASKED_AT_IMPORT, blas_min_work,
                         vector_variant, vector_variants)
# For the tests and benchmarks, which switch variants and thresholds through this module.
from cmlp._maths import _set_blas_min_work, _use_vector_variant  # no-cython-lint
from cmlp._maths import _variant_at_import  # no-cython-lint
from cmlp._validation import (MAX_BUFFER_BYTES, as_output, as_samples, as_targets,
                              check_architecture, check_batch_rows, check_learning_rate)

cnp.import_array()

# What the rest of the package imports from here: the engine, and the maths'
# names and switches that the engine's callers see through it.
__all__ = ["ACTIVATIONS", "LOSSES", "MAX_BUFFER_BYTES", "VARIANT_ASKED_AT_IMPORT", "Engine",
           "blas_min_work", "gil_release_min_work", "shuffled_order", "vector_variant",
           "vector_variants"]

# Below this many multiply-adds (batch size times parameters) a pass keeps the
# GIL: releasing and retaking it would cost more than the pass itself.
cdef Py_ssize_t GIL_MIN_WORK = 4096


cdef class _CSRBuffer:
    """The CSR buffers of one sparse batch, owned by an Engine: they only grow."""
    cdef object data, indices, indptr
    cdef double[::1] d64
    cdef float[::1] d32
    cdef int[::1] ind
    cdef Py_ssize_t[::1] ptr
    cdef Py_ssize_t rows, nnz   # the batch held now

    cdef int reserve(self, object dtype, Py_ssize_t nnz, Py_ssize_t rows) except -1:
        """Room for a batch of rows rows and nnz nonzeros."""
        if self.data is None or nnz > cnp.PyArray_DIM(self.data, 0):
            nnz = max(nnz, 1)
            self.data = _aligned_zeros(nnz, dtype)
            self.indices = np.zeros(nnz, dtype=np.intc)
            self.ind = self.indices
            if dtype == np.float64:
                self.d64 = self.data
            else:
                self.d32 = self.data
        if self.indptr is None or rows + 1 > cnp.PyArray_DIM(self.indptr, 0):
            self.indptr = np.zeros(rows + 1, dtype=np.intp)
            self.ptr = self.indptr
        return 0

    cdef object copies(self):
        """(data, indices, indptr) of the batch held, as new arrays."""
        return (self.data[:self.nnz].copy(), self.indices[:self.nnz].copy(),
                self.indptr[:self.rows + 1].copy())

    cdef bint shares_memory(self, object array):
        return any(np.may_share_memory(array, buffer)
                   for buffer in (self.data, self.indices, self.indptr) if buffer is not None)


cdef object _check_weights(object weights, Py_ssize_t n):
    """weights as a float64, C-contiguous array of n finite values >= 0, else
    ValueError; checked by one loop, without the temporaries of NumPy's tests
    (a weighted fit checks every batch's weights)."""
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"weights must hold one value per sample ({n}), got shape {w.shape}")
    cdef const double[::1] view = w
    cdef Py_ssize_t i
    for i in range(n):
        if not (0 <= view[i] <= DBL_MAX):   # false for NaN too
            raise ValueError("weights must be finite and >= 0")
    return w


# ---------------------------------------------------------------------------
# The passes on the buffers of one dtype: declared here, generated per dtype
# ---------------------------------------------------------------------------

cdef class _Passes:
    """The engine's epochs and sparse passes, whatever its dtype: the typed
    calls into _batches and _maths live in the subclasses _Passes64 and
    _Passes32, generated from _passes.pxi.tp (the other passes are the
    engine's _maths.Views). Each expects the engine's lock held and its
    buffers checked and sized."""

    cdef int all_predictions_finite(self, object X, Py_ssize_t batch_size) except -1:
        return True

    cdef Py_ssize_t run_epoch(self, object X, object Y, object order, object storage,
                              Py_ssize_t batch_size, int code, bint train, double step,
                              double[::1] out, bint* bad_row, bint release) except -1:
        return 0

    cdef int gather(self, _CSRBuffer b, object data, object indices, object indptr, object order,
                    Py_ssize_t start, Py_ssize_t m, object Y, bint predict) except -1:
        return False

    cdef double sparse(self, Py_ssize_t n, int code, double step, int mode, const double[::1] w,
                       bint weighted, _CSRBuffer b, bint predict) noexcept nogil:
        return 0

    cdef Py_ssize_t run_sparse_epoch(self, object data, object indices, object indptr,
                                     object Y, object order, object storage,
                                     Py_ssize_t batch_size, int code, bint train, double step,
                                     double[::1] out, bint* bad_row, bint release,
                                     _CSRBuffer b) except -1:
        return 0


include "_passes.pxi"


# ---------------------------------------------------------------------------
# Engine: the buffers of one network, and the checked doors into the kernels
# ---------------------------------------------------------------------------

# The buffers start on a cache line, so that no 64-byte vector load (an AVX-512
# register) straddles two lines; NumPy promises only 16-byte alignment.
cdef size_t BUFFER_ALIGNMENT = 64


cdef object _aligned_zeros(Py_ssize_t count, dtype):
    """A zeroed 1-D array of count entries of dtype, its data on a BUFFER_ALIGNMENT boundary."""
    cdef Py_ssize_t nbytes = count * np.dtype(dtype).itemsize
    cdef cnp.ndarray raw = np.zeros(nbytes + BUFFER_ALIGNMENT, dtype=np.uint8)
    cdef size_t address = <size_t>cnp.PyArray_DATA(raw)
    cdef Py_ssize_t start = <Py_ssize_t>(
        (BUFFER_ALIGNMENT - address % BUFFER_ALIGNMENT) % BUFFER_ALIGNMENT)
    return raw[start:start + nbytes].view(dtype)


cdef class Engine:
    """Buffers and compiled passes of one network; :class:`cmlp.MLP` wraps it.

    Owns the flat ``params`` and ``grads`` buffers and the work buffers of the
    last batch size seen (reallocated only when the batch size changes, so a
    training loop allocates nothing after its first step). Every method
    checks and casts its inputs with the GIL held, then runs the kernels with
    the GIL released (for every pass of at least GIL_MIN_WORK multiply-adds;
    a smaller one is over before another thread could have used the GIL). A
    lock makes concurrent calls on one Engine take turns, so threads sharing a
    model never see half-updated buffers; a call from the thread that holds
    it (a finalizer run by the collector inside a call) raises RuntimeError
    rather than wait for itself. Every size, dtype and flag a kernel relies
    on is read from the arrays' own structs or typed memoryviews, never from
    attributes an ndarray subclass can override; the arguments of __init__
    are checked here too, as this class is reachable from Python.

    Inputs that are already what the kernels read (an ndarray of the
    network's dtype, C-contiguous, aligned, native byte order, of an accepted
    shape) are checked in C and copied straight into the work buffers; only
    anything else goes through the Python checks of ``_validation``. That fast
    door is what keeps a one-sample step of a tiny network under a microsecond.
    """
    cdef readonly object dtype
    cdef object _params, _grads                  # the engine's own arrays, never handed out
    cdef object _params_view, _grads_view        # what params and grads hand out
    cdef object _activations, _deltas            # work buffers of the current batch size
    cdef readonly Py_ssize_t batch_size
    cdef readonly bint has_forward
    cdef bint _single   # the last kept forward pass was given one sample, 1-D
    cdef object _logits_buffer, _targets_buffer, _predict_buffer
    cdef object _storage, _predict_storage   # the allocations behind the work buffers
    cdef bint _sparse_layout, _predict_sparse   # the work (predict) buffers have no A^(0)
    cdef _CSRBuffer _kept_csr, _predict_csr   # the sparse batch of a kept pass, of predict
    cdef Py_ssize_t _predict_size   # samples the predict buffer holds
    cdef dict _loss_codes           # the losses the output layer admits: name -> code
    cdef Net _net          # the architecture as the maths reads it (offsets in _layers)
    cdef Layer* _layers
    cdef int _typenum, _last_code
    cdef Views _views      # the buffers' typed views and the passes on them (_maths)
    cdef _Passes _passes   # the epochs and sparse passes on those views
    cdef Py_ssize_t _n_in, _n_out, _width_sum
    cdef Py_ssize_t _gil_min_batch    # from this many samples a pass releases the GIL
    cdef Py_ssize_t _max_batch        # the most samples whose work buffers can be addressed
    cdef PyThread_type_lock _lock
    cdef unsigned long _owner   # the thread holding _lock, 0 when none does
    cdef bint _started          # __init__ has begun: an Engine is initialised once
    cdef bint _ready            # __init__ has ended: every buffer and view is in place

    def __cinit__(self, *args, **kwargs):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("could not allocate a lock")

    def __init__(self, sizes, codes, dtype):
        """Engine(sizes, codes, dtype): checked here too, as anything reachable from Python.

        An Engine is initialised once: a second __init__ would swap the
        buffers under a kernel that another thread is running.
        """
        if self._started:
            raise RuntimeError("an Engine is initialised once; build a new one")
        self._started = True
        try:
            self._setup(sizes, codes, dtype)
        except BaseException:
            self._started = False
            raise
        self._ready = True

    cdef _setup(self, sizes, codes, dtype):
        sizes, codes, dtype, n_params = check_architecture(sizes, codes, dtype,
                                                           set(ACTIVATIONS.values()))
        cdef Py_ssize_t[::1] size_view = np.array(sizes, dtype=np.intp)
        cdef int[::1] code_view = np.array(codes, dtype=np.intc)
        PyMem_Free(self._layers)
        self._layers = <Layer*>PyMem_Malloc(code_view.shape[0] * sizeof(Layer))
        if self._layers == NULL:
            raise MemoryError("could not allocate the layers' offsets")
        net_init(&self._net, self._layers, &size_view[0], &code_view[0], code_view.shape[0])
        self.dtype = dtype
        if self.dtype == np.float64:
            self._views = Views64()
            self._passes = _Passes64()
            (<_Passes64>self._passes).v = self._views
        else:
            self._views = Views32()
            self._passes = _Passes32()
            (<_Passes32>self._passes).v = self._views
        self._views.net = &self._net
        self._typenum = self.dtype.num
        self._n_in = sizes[0]
        self._n_out = sizes[len(sizes) - 1]
        self._last_code = codes[len(codes) - 1]
        self._width_sum = sum(sizes)
        self._loss_codes = {name: code for name, code in LOSSES.items()
                            if LOSS_NEEDS.get(name, _name(self._last_code))
                            == _name(self._last_code)}
        # n_params multiply-adds per sample: the GIL is released for a pass of
        # at least GIL_MIN_WORK of them (a count of samples, which cannot overflow).
        gil_min_work = GIL_MIN_WORK
        self._gil_min_batch = max(1, -(-gil_min_work // n_params))
        # A, D, Z and the targets of one sample, in entries; the storage of a
        # batch must stay addressable (check_architecture keeps this >= 1).
        self._max_batch = MAX_BUFFER_BYTES // (
            (2 * self._width_sum + 2 * self._n_out) * self.dtype.itemsize)
        self._params = _aligned_zeros(n_params, self.dtype)
        self._grads = _aligned_zeros(n_params, self.dtype)
        self._params_view = self._params.view()
        self._grads_view = self._grads.view()
        self._views.bind(self._params, self._grads)
        self._kept_csr = _CSRBuffer()
        self._predict_csr = _CSRBuffer()
        self._resize(0)
        self._resize_predict(0)

    @property
    def params(self):
        """A view of the flat parameter buffer (reshaping it leaves the engine's own array be)."""
        return self._params_view

    @property
    def grads(self):
        """A view of the flat gradient buffer."""
        return self._grads_view

    def buffer_views(self):
        """New 1-D views of params and grads, for an optimizer built by name: views
        handed out before may have been reshaped by whoever holds them."""
        self._check_ready()
        return self._params.view(), self._grads.view()

    @property
    def activations_buffer(self):
        """A view of the activations of the current batch size (A^(0) .. A^(L), flat)."""
        return None if self._activations is None else self._activations.view()

    @property
    def deltas_buffer(self):
        """A view of the deltas of the current batch size (flat)."""
        return None if self._deltas is None else self._deltas.view()

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)
        PyMem_Free(self._layers)

    # -- buffers --------------------------------------------------------------

    cdef _resize(self, Py_ssize_t n, bint sparse=False):
        """Size the work buffers for batches of n samples (sparse: without
        A^(0), the input being a CSR batch of its own buffers).

        The storage behind them only grows: a smaller batch (the last, partial
        one of an epoch) uses the front of it, so alternating batch sizes cost
        four array views, never a new buffer.
        """
        cdef Py_ssize_t ends[4]
        cdef Py_ssize_t n_in = 0 if sparse else self._n_in
        check_batch_rows(n)
        self._check_addressable(n)
        work_bounds(n, self._width_sum - self._n_in + n_in, n_in, self._n_out,
                    self._last_code == SOFTMAX, ends)
        if self._storage is None or ends[3] > cnp.PyArray_DIM(self._storage, 0):
            self._storage = _aligned_zeros(ends[3], self.dtype)
        self._activations = self._storage[:ends[0]]
        self._deltas = self._storage[ends[0]:ends[1]]
        self._logits_buffer = self._storage[ends[1]:ends[2]]
        self._targets_buffer = self._storage[ends[2]:ends[3]]
        self._views.bind_work(self._activations, self._deltas, self._logits_buffer,
                              self._targets_buffer)
        self.batch_size = n
        self._sparse_layout = sparse
        self.has_forward = False

    cdef _resize_predict(self, Py_ssize_t n, bint sparse=False):
        """Size the activations of predict (kept apart from forward's) for n
        samples (sparse: without A^(0)); grows only."""
        cdef Py_ssize_t width = self._width_sum - (self._n_in if sparse else 0)
        check_batch_rows(n)
        self._check_addressable(n)
        if self._predict_storage is None or n * width > cnp.PyArray_DIM(self._predict_storage, 0):
            self._predict_storage = _aligned_zeros(n * width, self.dtype)
        self._predict_buffer = self._predict_storage[:n * width]
        self._predict_sparse = sparse
        self._views.bind_predict(self._predict_buffer)
        self._predict_size = n

    cdef int _check_addressable(self, Py_ssize_t n) except -1:
        """ValueError unless the work buffers of n samples fit in the address space."""
        if n > self._max_batch:
            raise ValueError(f"a batch of {n} samples needs more than {MAX_BUFFER_BYTES} bytes "
                             f"of work buffers for this network; at most {self._max_batch} "
                             "samples fit: split it")
        return 0

    cdef inline bint _is_ready(self, object M):
        """M can go to the kernels as it is: an ndarray of the network's dtype,
        C-contiguous, aligned, native byte order (else it is checked and copied)."""
        return (cnp.PyArray_CheckExact(M)
                and cnp.PyArray_TYPE(M) == self._typenum
                and cnp.PyArray_IS_C_CONTIGUOUS(M)
                and cnp.PyArray_ISBEHAVED_RO(M))

    cdef object _load_input(self, object X, Py_ssize_t* n, bint* single):
        """Return X checked, its n samples in rows; single: X was one sample, 1-D."""
        if self._is_ready(X):
            if cnp.PyArray_NDIM(X) == 2 and cnp.PyArray_DIM(X, 1) == self._n_in:
                n[0] = cnp.PyArray_DIM(X, 0)
                single[0] = False
                return X
            if cnp.PyArray_NDIM(X) == 1 and cnp.PyArray_DIM(X, 0) == self._n_in:
                n[0] = 1
                single[0] = True
                return X
        X, single[0] = as_samples(X, self._n_in, self.dtype)
        n[0] = cnp.PyArray_DIM(X, 0)
        return X

    cdef object _load_targets(self, object Y, Py_ssize_t n, bint single, int loss):
        """Return Y checked: n * n_out values of the network's dtype, sample by sample."""
        cdef Py_ssize_t length
        if self._is_ready(Y):
            if cnp.PyArray_NDIM(Y) == 2:
                if cnp.PyArray_DIM(Y, 0) == n and cnp.PyArray_DIM(Y, 1) == self._n_out:
                    return Y
            elif cnp.PyArray_NDIM(Y) == 1:
                length = cnp.PyArray_DIM(Y, 0)
                if (single and length == self._n_out) or (self._n_out == 1 and length == n):
                    return Y
        return as_targets(Y, n, self._n_out, self.dtype, single, loss == CROSS_ENTROPY)

    cdef object _output(self, object out, Py_ssize_t n, bint single):
        """out checked, or a new array: (n_out,) after one 1-D sample, else (n, n_out)."""
        cdef cnp.npy_intp dims[2]
        cdef int nd = 1 if single else 2
        dims[0] = self._n_out if single else n
        dims[1] = self._n_out
        if out is None:
            return cnp.PyArray_EMPTY(nd, dims, self._typenum, 0)
        # Read from the array's own struct, never from attributes a subclass
        # can override: these are the facts the copy out relies on.
        if (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(out) == self._typenum
                and cnp.PyArray_NDIM(out) == nd and cnp.PyArray_DIM(out, 0) == dims[0]
                and (single or cnp.PyArray_DIM(out, 1) == dims[1])
                and cnp.PyArray_IS_C_CONTIGUOUS(out) and cnp.PyArray_ISBEHAVED(out)):
            return out
        shape = <tuple>(self._n_out,) if single else <tuple>(n, self._n_out)
        as_output(out, shape, self.dtype)   # raises, naming what is wrong
        raise ValueError(f"out must be a C-contiguous, aligned, writable array of shape {shape} "
                         f"and dtype {self.dtype}")

    def check_loss(self, loss):
        """ValueError unless ``loss`` is a loss's name that this output layer admits."""
        self._loss_code(loss)

    cdef int _loss_code(self, loss) except -1:
        try:
            return self._loss_codes[loss]
        except (KeyError, TypeError):
            pass
        self._check_ready()
        try:
            code = LOSSES[loss]
        except (KeyError, TypeError):
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}") from None
        name = next(name for name, value in LOSSES.items() if value == code)
        raise ValueError(f"loss={name!r} needs a {LOSS_NEEDS[name]} output layer, "
                         f"not {_name(self._last_code)!r}")

    cdef double _learning_rate(self, lr) except -1:
        """lr as a C double; a finite float >= 0 is taken as it is, anything else checked."""
        cdef double value
        if type(lr) is float:
            value = PyFloat_AS_DOUBLE(lr)
            if value >= 0 and isfinite(value):
                return value
        return check_learning_rate(lr)

    cdef int _check_ready(self) except -1:
        if not self._ready:
            raise RuntimeError("this Engine was never initialised: build it as "
                               "Engine(sizes, codes, dtype)")
        return 0

    cdef int _acquire(self) except -1:
        # Uncontended, this is one atomic operation; only waiting drops the GIL.
        cdef unsigned long me = PyThread_get_thread_ident()
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            if self._owner == me:
                # A finalizer or callback run (by the GC, say) inside one of
                # this network's calls, on the same thread: waiting would hang.
                raise RuntimeError("this network was called again from inside one of its own "
                                   "calls on the same thread (a finalizer, weakref callback or "
                                   "signal handler): call it once that call has returned")
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)
        self._owner = me
        if not self._ready:
            self._release()
            self._check_ready()
        return 0

    cdef inline void _release(self) noexcept:
        # Cleared first: a thread that finds the lock taken must never see its own id
        # left behind by a call that has returned.
        self._owner = 0
        PyThread_release_lock(self._lock)

    cdef inline bint _releases_gil(self, Py_ssize_t n) noexcept:
        # Below GIL_MIN_WORK the pass is over before another thread could use
        # the GIL (NumPy's ufunc loops decide alike). For sgd_step, n = 1
        # counts one sweep over the parameters.
        return n >= self._gil_min_batch

    cdef object _detached(self, cnp.ndarray M):
        """M, or a copy of it if it lies in the work storage (a view of the
        activations): the pass behaves as if its inputs were copied first."""
        if _overlaps(M, self._storage):
            return M.copy()
        return M

    cdef int _load_batch(self, object X, object Y, Py_ssize_t n) except -1:
        """A^(0) <- X and, if Y is given, the targets buffer <- Y (lock held)."""
        X = self._detached(X)
        if Y is not None:
            Y = self._detached(Y)
        if n != self.batch_size or self._sparse_layout:
            self._resize(n)
        _copy_in(X, self._activations)
        if Y is not None:
            _copy_in(Y, self._targets_buffer)
        return 0

    # -- the kernels on this engine's buffers (GIL not needed, lock held) --------

    cdef void _forward_kept(self, Py_ssize_t n, bint keep_logits) noexcept nogil:
        self._views.forward_pass(n, keep_logits, False)

    cdef void _forward_predict(self, Py_ssize_t n) noexcept nogil:
        self._views.forward_pass(n, False, True)

    cdef double _backward_pass(self, Py_ssize_t n, int code) noexcept nogil:
        return self._views.backward_pass(n, code)

    cdef void _sgd_pass(self, double step) noexcept nogil:
        self._views.sgd_pass(step)

    cdef double _train_pass(self, Py_ssize_t n, int code, double step) noexcept nogil:
        return self._views.train(n, code, step)

    # -- passes -----------------------------------------------------------------

    def forward(self, X, out=None, *, bint keep=True):
        """Run the network on X of shape (n_in,) or (n, n_in).

        Returns the output, (n_out,) or (n, n_out), in a new array or in out
        (C-contiguous, of the network's dtype, nothing allocated). With keep
        (the default) the activations stay in the work buffers for backward;
        keep=False uses a separate buffer and leaves them untouched.
        """
        return self._forward(X, out, keep)

    def predict(self, X, out=None):
        """forward(X, out, keep=False): the output, and no state kept."""
        return self._forward(X, out, False)

    cdef object _forward(self, X, out, bint keep):
        cdef bint single
        cdef bint keep_logits = keep and self._last_code == SOFTMAX
        cdef Py_ssize_t n
        X = self._load_input(X, &n, &single)
        out = self._output(out, n, single)
        if n == 0:
            if keep:
                self.has_forward = False
            return out
        self._acquire()
        try:
            if keep:
                _refuse_overlap_with_kept(out, self._activations)
                self._load_batch(X, None, n)
                if self._releases_gil(n):
                    with nogil:
                        self._forward_kept(n, keep_logits)
                else:
                    self._forward_kept(n, keep_logits)
                _copy_out(self._activations, out)
                self.has_forward = True
                self._single = single
            else:
                if n != self._predict_size or self._predict_sparse:
                    self._resize_predict(n)
                _copy_in(X, self._predict_buffer)
                if self._releases_gil(n):
                    with nogil:
                        self._forward_predict(n)
                else:
                    self._forward_predict(n)
                _copy_out(self._predict_buffer, out)
        finally:
            self._release()
        return out

    def backward(self, Y, loss="mse"):
        """Loss of the last forward pass against Y; fills grads and deltas.

        Y has the shape of that forward's output, or (n,) for one output
        column; for cross_entropy, class indices of shape (n,) also do.
        Returns the loss as a Python float.
        """
        cdef int code = self._loss_code(loss)
        cdef double value
        cdef Py_ssize_t n = self.batch_size
        if not self.has_forward:
            raise RuntimeError("backward needs a forward pass first: call forward(X)")
        Y = self._load_targets(Y, n, self._single, code)
        self._acquire()
        try:
            # Y was shaped for the batch seen before the lock was taken; another
            # thread's forward may have replaced that batch since, and the
            # kernels must never index the new buffers with the old size.
            if not self.has_forward or self.batch_size != n:
                raise RuntimeError("the forward pass for this backward was replaced by "
                                   "another thread's forward; guard forward and backward "
                                   "together, or use train_step")
            _copy_in(self._detached(Y), self._targets_buffer)
            if self._sparse_layout:
                value = self._run_sparse_pass(n, code, 0.0, BACKWARD, None, self._kept_csr,
                                              False)
            elif self._releases_gil(n):
                with nogil:
                    value = self._backward_pass(n, code)
            else:
                value = self._backward_pass(n, code)
        finally:
            self._release()
        return value

    def sgd_step(self, lr):
        """params <- params - lr * grads, in place, one pass over the buffer."""
        cdef double step = self._learning_rate(lr)
        self._acquire()
        try:
            if self._releases_gil(1):
                with nogil:
                    self._sgd_pass(step)
            else:
                self._sgd_pass(step)
        finally:
            self._release()

    def train_step(self, X, Y, lr, loss="mse"):
        """Forward, loss, backward and SGD in one compiled call; returns the loss."""
        return self._step(X, Y, loss, self._learning_rate(lr), True)

    def loss_and_grads(self, X, Y, loss="mse"):
        """Forward, loss and backward in one compiled call, without an update.

        Fills grads (for an optimizer to apply) and returns the loss; the
        parameters are left as they are.
        """
        return self._step(X, Y, loss, 0.0, False)

    def weighted_loss_and_grads(self, X, Y, weights, loss="mse"):
        """loss_and_grads for the sample-weighted mean loss, sum(w_i L_i) / sum(w).

        weights: float64, 1-D, one finite value >= 0 per sample of X (checked
        here). Fills grads and returns the loss; the parameters are left as
        they are.
        """
        return self._step(X, Y, loss, 0.0, False, weights)

    cdef double _weighted_backward_pass(self, Py_ssize_t n, int code,
                                        const double[::1] w) noexcept nogil:
        return self._views.weighted_backward_pass(n, code, w)

    cdef object _step(self, X, Y, loss, double step, bint update, weights=None):
        """The one door of train_step, loss_and_grads and weighted_loss_and_grads:
        check, then one compiled pass."""
        cdef int code = self._loss_code(loss)
        cdef bint single
        cdef double value
        cdef Py_ssize_t n
        cdef const double[::1] w = None
        X = self._load_input(X, &n, &single)
        if n == 0:
            raise ValueError("X holds no samples: a step needs at least one")
        Y = self._load_targets(Y, n, single, code)
        if weights is not None:
            w = _check_weights(weights, n)
        self._acquire()
        try:
            self._load_batch(X, Y, n)
            if self._releases_gil(n):
                with nogil:
                    value = self._gradient_pass(n, code, step, update, w)
            else:
                value = self._gradient_pass(n, code, step, update, w)
            self.has_forward = True
            self._single = single
        finally:
            self._release()
        return value

    cdef double _gradient_pass(self, Py_ssize_t n, int code, double step, bint update,
                               const double[::1] w) noexcept nogil:
        if update:
            return self._train_pass(n, code, step)
        self._forward_kept(n, self._last_code == SOFTMAX)
        if w is not None:
            return self._weighted_backward_pass(n, code, w)
        return self._backward_pass(n, code)

    # -- sparse input: a CSR batch through the first layer's own kernels ---------

    @property
    def sparse_input(self):
        """Whether the kept pass was on a sparse batch: the activations buffer
        then starts with A^(1), and sparse_batch() gives the batch."""
        return self._sparse_layout

    def sparse_batch(self):
        """Copies (data, indices, indptr) of the kept pass's CSR batch, or
        None when the kept pass was dense."""
        self._acquire()
        try:
            return self._kept_csr.copies() if self._sparse_layout else None
        finally:
            self._release()

    def reserve_sparse(self, Py_ssize_t nnz, Py_ssize_t rows):
        """Room in the CSR buffers of training for a batch of rows rows and
        nnz nonzeros: a fit reserves its largest batch once, and no epoch
        allocates after."""
        if nnz < 0 or rows < 0:
            raise ValueError("nnz and rows must be >= 0")
        check_batch_rows(rows)
        if nnz > MAX_BUFFER_BYTES // 16:
            raise ValueError(f"a batch of {nnz} nonzeros cannot be addressed")
        self._acquire()
        try:
            self._kept_csr.reserve(self.dtype, nnz, rows)
        finally:
            self._release()

    cdef tuple _csr(self, data, indices, indptr):
        """The arrays of a CSR data set as the kernels read them, or an
        exception: 1-D, C-contiguous, aligned, native byte order; data of the
        network's dtype, indices int32 (numpy.intc), indptr intp; data and
        indices of one length, indptr of at least one entry (rows + 1).
        Read from the arrays' own structs, never copied
        (cmlp._validation.as_sparse_samples makes them so). Their values are
        checked as each batch is gathered."""
        for name, M, typenum in (("data", data, self._typenum), ("indices", indices, cnp.NPY_INT),
                                 ("indptr", indptr, cnp.NPY_INTP)):
            if not cnp.PyArray_Check(M) or cnp.PyArray_TYPE(M) != typenum:
                got = M.dtype if cnp.PyArray_Check(M) else type(M).__name__
                want = {"data": self.dtype, "indices": np.dtype(np.intc),
                        "indptr": np.dtype(np.intp)}[name]
                raise TypeError(f"{name} must be a numpy array of dtype {want}, got {got}")
            if (cnp.PyArray_NDIM(M) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(M)
                    or not cnp.PyArray_ISBEHAVED_RO(M)):
                raise ValueError(f"{name} must be 1-D, C-contiguous, aligned and in native "
                                 "byte order")
        data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr)
        if cnp.PyArray_DIM(data, 0) != cnp.PyArray_DIM(indices, 0):
            raise ValueError(f"data and indices must have one length, got "
                             f"{cnp.PyArray_DIM(data, 0)} and {cnp.PyArray_DIM(indices, 0)}")
        if cnp.PyArray_DIM(indptr, 0) < 1:
            raise ValueError("indptr must hold rows + 1 entries, at least one")
        check_batch_rows(cnp.PyArray_DIM(indptr, 0) - 1)
        return data, indices, indptr

    cdef int _gather(self, _CSRBuffer b, data, indices, indptr, order, Py_ssize_t start,
                     Py_ssize_t m, object Y, bint predict) except -1:
        """b <- rows order[start:start+m] of the CSR data set (start ... when
        order is empty), and, if Y is given, the targets' buffer <- the same
        rows of Y (n_rows, n_out); ValueError if the arrays do not hold a CSR
        matrix of n_in columns. Lock held, the work buffers sized for m."""
        cdef Py_ssize_t nnz = cnp.PyArray_DIM(data, 0)
        cdef Py_ssize_t need = csr_batch_nonzeros(indptr, order, start, start + m, m, nnz)
        cdef bint ok
        if need < 0:
            raise ValueError(f"X's row pointers (indptr) must not fall, and lie within [0, {nnz}] "
                             "(its stored entries)")
        b.reserve(self.dtype, need, m)
        ok = self._passes.gather(b, data, indices, indptr, order, start, m, Y, predict)
        if not ok:
            raise ValueError(f"X's column indices must lie in [0, {self._n_in}) and its row "
                             "pointers (indptr) must not fall (nor change during the call)")
        b.rows = m
        b.nnz = b.ptr[m]
        return 0

    cdef double _run_sparse_pass(self, Py_ssize_t n, int code, double step, int mode,
                                 const double[::1] w, _CSRBuffer b, bint predict):
        """_sparse_pass on b's batch (lock held, b gathered, buffers sized),
        without the GIL for a pass big enough."""
        cdef bint weighted = w is not None
        cdef double value
        if self._releases_gil(n):
            with nogil:
                value = self._passes.sparse(n, code, step, mode, w, weighted, b, predict)
        else:
            value = self._passes.sparse(n, code, step, mode, w, weighted, b, predict)
        return value

    def sparse_forward(self, data, indices, indptr, out=None, *, bint keep=True):
        """forward on a CSR batch: data, indices (int32) and indptr (intp) of
        len(indptr) - 1 samples of n_in features, as a scipy.sparse CSR matrix
        holds them (cmlp._validation.as_sparse_samples makes them so). A row's
        entries may come in any order, and repeated columns add up.

        The batch's nonzeros are copied into CSR buffers of the engine's own:
        with keep (the default), those of the kept pass, for backward; without,
        predict's. Returns the output (n, n_out), in a new array or in out."""
        cdef Py_ssize_t n
        data, indices, indptr = self._csr(data, indices, indptr)
        n = cnp.PyArray_DIM(indptr, 0) - 1
        out = self._output(out, n, False)
        if n == 0:
            if keep:
                self.has_forward = False
            return out
        self._acquire()
        try:
            if keep:
                _refuse_overlap_with_kept(out, self._storage)
                if n != self.batch_size or not self._sparse_layout:
                    self._resize(n, True)
                self.has_forward = False
                self._gather(self._kept_csr, data, indices, indptr, _IN_ORDER, 0, n, None, False)
                self._run_sparse_pass(n, 0, 0.0, FORWARD, None, self._kept_csr, False)
                _copy_out(self._activations, out)
                self.has_forward = True
                self._single = False
            else:
                if n != self._predict_size or not self._predict_sparse:
                    self._resize_predict(n, True)
                self._gather(self._predict_csr, data, indices, indptr, _IN_ORDER, 0, n, None, True)
                self._run_sparse_pass(n, 0, 0.0, PREDICT, None, self._predict_csr, True)
                _copy_out(self._predict_buffer, out)
        finally:
            self._release()
        return out

    def sparse_train_step(self, data, indices, indptr, Y, lr, loss="mse"):
        """train_step on a CSR batch (see sparse_forward): Y its targets."""
        return self._sparse_step(data, indices, indptr, Y, loss, self._learning_rate(lr), TRAIN,
                                 None, None, 0, -1)

    def sparse_loss_and_grads(self, data, indices, indptr, Y, loss="mse", weights=None,
                              order=None, Py_ssize_t start=0, Py_ssize_t count=-1):
        """loss_and_grads (with weights, weighted_loss_and_grads) on a CSR
        batch: rows order[start:start+count] of the data set (data, indices,
        indptr) and of its targets Y (one row per row of the data set); order
        None takes rows start, start + 1, ...; count -1 every row from start
        on. A loop over the batches of a shuffled epoch so reads the data set
        in place, copying each batch's nonzeros alone."""
        return self._sparse_step(data, indices, indptr, Y, loss, 0.0, GRADIENTS, weights, order,
                                 start, count)

    cdef object _sparse_step(self, data, indices, indptr, Y, loss, double step, int mode,
                             weights, order, Py_ssize_t start, Py_ssize_t count):
        cdef int code = self._loss_code(loss)
        cdef const double[::1] w = None
        cdef Py_ssize_t n_rows
        cdef double value
        data, indices, indptr = self._csr(data, indices, indptr)
        n_rows = cnp.PyArray_DIM(indptr, 0) - 1
        if count < 0:
            count = n_rows - start
        if start < 0 or count < 1 or start > n_rows - count:
            raise ValueError(f"the batch must be at least one of X's {n_rows} rows, got rows "
                             f"from {start}, {count} of them")
        order = check_order(order, n_rows)
        Y = self._load_targets(Y, n_rows, False, code)
        Y = np.asarray(Y).reshape(n_rows, self._n_out)
        if weights is not None:
            w = _check_weights(weights, count)
        self._acquire()
        try:
            Y = self._detached(Y)
            if count != self.batch_size or not self._sparse_layout:
                self._resize(count, True)
            self.has_forward = False
            self._gather(self._kept_csr, data, indices, indptr, order, start, count, Y, False)
            value = self._run_sparse_pass(count, code, step, mode, w, self._kept_csr, False)
            self.has_forward = True
            self._single = False
        finally:
            self._release()
        return value

    def sparse_train_epoch(self, data, indices, indptr, Y, order, Py_ssize_t batch_size, lr,
                           loss, losses):
        """train_epoch on a CSR data set (data, indices, indptr; see
        sparse_forward), Y its targets (as train_epoch takes them): each
        batch's rows are gathered into the engine's CSR buffers (which grow to
        the largest batch's nonzeros; see reserve_sparse), its targets into
        the targets' buffer. The parameters end, to rounding, as after
        train_epoch on the dense X."""
        return self._run_sparse_epoch(data, indices, indptr, Y, order, batch_size, loss, True,
                                      self._learning_rate(lr), losses)

    def sparse_evaluate(self, data, indices, indptr, Y, Py_ssize_t batch_size, loss, losses):
        """evaluate on a CSR data set (see sparse_train_epoch)."""
        return self._run_sparse_epoch(data, indices, indptr, Y, None, batch_size, loss, False,
                                      0.0, losses)

    cdef object _epoch_arguments(self, Py_ssize_t n, Y, order, Py_ssize_t batch_size, losses):
        """An epoch's arguments over n samples, checked: (Y, order, losses)."""
        cdef Py_ssize_t n_batches
        if n == 0:
            raise ValueError("X holds no samples: an epoch needs at least one")
        Y = self._data_set(Y, "Y", n, self._n_out, True)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_batches = n // batch_size + (n % batch_size != 0)
        order = check_order(order, n)
        check_losses(losses, n_batches)
        return Y, order, np.asarray(losses)

    cdef int _refuse_shared_memory(self, X, Y, losses) except -1:
        """ValueError if an epoch's data shares memory with the model's own buffers."""
        for given in (X, Y, losses):
            for buffer in (self._storage, self._params, self._grads):
                if _overlaps(given, buffer):
                    raise ValueError("X, Y and losses must not share memory with the "
                                     "network's parameters, gradients or work buffers")
        return 0

    cdef object _run_sparse_epoch(self, data, indices, indptr, Y, order, Py_ssize_t batch_size,
                                  loss, bint train, double step, losses):
        cdef int code = self._loss_code(loss)
        cdef Py_ssize_t n, ran, last, need
        cdef bint bad_row = False
        cdef double[::1] out
        data, indices, indptr = self._csr(data, indices, indptr)
        n = cnp.PyArray_DIM(indptr, 0) - 1
        Y, order, losses = self._epoch_arguments(n, Y, order, batch_size, losses)
        out = losses
        self._acquire()
        try:
            if min(batch_size, n) != self.batch_size or not self._sparse_layout:
                self._resize(min(batch_size, n), True)
            self._refuse_shared_memory(data, Y, losses)
            if (_overlaps(losses, data) or _overlaps(losses, Y) or _overlaps(losses, order)
                    or _overlaps(losses, indices) or _overlaps(losses, indptr)):
                raise ValueError("losses must not share memory with X, Y or order")
            need = csr_batch_nonzeros(indptr, order, 0, n, batch_size, cnp.PyArray_DIM(data, 0))
            if need < 0:
                raise ValueError("X's row pointers (indptr) must not fall, and lie within "
                                 f"[0, {cnp.PyArray_DIM(data, 0)}] (its stored entries)")
            self._kept_csr.reserve(self.dtype, need, min(batch_size, n))
            self.has_forward = False
            ran = self._sparse_epoch_pass(data, indices, indptr, Y, order, batch_size, code,
                                          train, step, out, &bad_row)
            if ran > 0:
                last = min(batch_size, n - (ran - 1) * batch_size)
                if last != self.batch_size:
                    self._resize(last, True)
                self._kept_csr.rows = last
                self._kept_csr.nnz = self._kept_csr.ptr[last]
            self.has_forward = ran > 0 and not bad_row
            self._single = False
        finally:
            self._release()
        if bad_row:
            raise ValueError(f"X's column indices must lie in [0, {self._n_in}) and its row "
                             f"pointers must not fall, nor X or order change during the epoch; "
                             f"{ran} batches had run")
        return ran, _epoch_total(out, ran, n, batch_size)

    cdef Py_ssize_t _sparse_epoch_pass(self, data, indices, indptr, Y, order,
                                       Py_ssize_t batch_size, int code, bint train, double step,
                                       double[::1] out, bint* bad_row) except -1:
        cdef const Py_ssize_t[::1] ptr = indptr
        cdef bint release = self._releases_gil(cnp.PyArray_DIM(Y, 0))
        if cnp.PyArray_DIM(Y, 1) != self._n_out or cnp.PyArray_DIM(Y, 0) != ptr.shape[0] - 1:
            raise ValueError("X and Y changed shape while the epoch was starting")
        return self._passes.run_sparse_epoch(data, indices, indptr, Y, order, self._storage,
                                             batch_size, code, train, step, out, bad_row, release,
                                             self._kept_csr)

    def sparse_predicts_finite(self, data, indices, indptr, Py_ssize_t batch_size):
        """predicts_finite for a CSR data set (see sparse_forward), batch_size
        rows at a time through predict's buffers."""
        cdef Py_ssize_t n, start, m, k = self._n_out, width = self._width_sum - self._n_in
        data, indices, indptr = self._csr(data, indices, indptr)
        n = cnp.PyArray_DIM(indptr, 0) - 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._acquire()
        try:
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                if m != self._predict_size or not self._predict_sparse:
                    self._resize_predict(m, True)
                self._gather(self._predict_csr, data, indices, indptr, _IN_ORDER, start, m, None,
                             True)
                self._run_sparse_pass(m, 0, 0.0, PREDICT, None, self._predict_csr, True)
                if not self._views.outputs_finite(m * (width - k), m * width):
                    return False
        finally:
            self._release()
        return True

    # -- one epoch of plain SGD ---------------------------------------------------

    def train_epoch(self, X, Y, order, Py_ssize_t batch_size, lr, loss, losses):
        """Plain SGD over the batches of one epoch, in one compiled call.

        X (n, n_in) and Y (n, n_out), or (n,) for one output, are the whole
        data set: ndarrays of the network's dtype, C-contiguous and aligned,
        checked here once and then read in place, never cast or copied (for
        cross_entropy, Y holds the target rows, not class indices). The epoch
        takes the samples in the order of ``order``, an intp array of n
        indices in [0, n) (None: 0, 1, ..., n - 1), batch_size at a time, the
        last batch holding the remainder. Each batch's rows go straight from
        X and Y into the work buffers and take the step train_step takes:
        the parameters end bit for bit as after train_step on each batch in
        turn, and the work buffers hold the last batch's pass.

        OUT losses (float64, 1-D, an entry for each batch): the loss of each
        batch, before its update. The epoch stops after the first batch whose
        loss is not finite. Returns (batches run, total): total is the sum of
        their losses, each times its batch's size, added in batch order (the
        sum a loop over the batches would make; over n, the epoch's loss).
        """
        return self._run_epoch(X, Y, order, batch_size, loss, True, self._learning_rate(lr),
                               losses)

    def evaluate(self, X, Y, Py_ssize_t batch_size, loss, losses):
        """The loss over a data set, without gradients or an update: one compiled call.

        As train_epoch, in order (order None) and with the parameters left as
        they are: each batch of batch_size samples takes the forward pass and
        the loss alone, the loss computed as train_step computes it (for
        cross_entropy, from the logits). OUT losses: each batch's loss.
        Returns (batches run, total): total / n is the mean loss over the data
        set. The work buffers then hold the last batch's forward pass.
        """
        return self._run_epoch(X, Y, None, batch_size, loss, False, 0.0, losses)

    cdef object _run_epoch(self, X, Y, order, Py_ssize_t batch_size, loss, bint train,
                           double step, losses):
        """The checked door of train_epoch and evaluate: (batches run, total)."""
        cdef int code = self._loss_code(loss)
        cdef Py_ssize_t n, ran, last
        cdef bint bad_row = False
        cdef double[::1] out
        X = self._data_set(X, "X", 0, self._n_in, False)
        n = cnp.PyArray_DIM(X, 0)
        Y, order, losses = self._epoch_arguments(n, Y, order, batch_size, losses)
        out = losses
        self._acquire()
        try:
            if min(batch_size, n) != self.batch_size or self._sparse_layout:
                self._resize(min(batch_size, n))
            self._refuse_shared_memory(X, Y, losses)
            if _overlaps(losses, X) or _overlaps(losses, Y) or _overlaps(losses, order):
                raise ValueError("losses must not share memory with X, Y or order")
            ran = self._epoch_pass(X, Y, order, batch_size, code, train, step, out, &bad_row)
            if ran > 0:
                # The views train_step would have left: those of the last batch run.
                last = min(batch_size, n - (ran - 1) * batch_size)
                if last != self.batch_size:
                    self._resize(last)
            self.has_forward = ran > 0 and not bad_row
            self._single = False
        finally:
            self._release()
        if bad_row:
            raise RuntimeError(f"an index of order left [0, {n}) during the epoch (another "
                               f"thread wrote into it); {ran} batches had run")
        return ran, _epoch_total(out, ran, n, batch_size)

    def predicts_finite(self, X, Py_ssize_t batch_size):
        """Whether predict(X) is finite for every sample of X: one compiled call.

        X as train_epoch takes it (the network's dtype, C-contiguous, read in
        place), batch_size samples at a time through predict's own buffer:
        the kept forward pass (activations, deltas) is left as it is.
        """
        cdef Py_ssize_t n
        cdef bint finite
        X = self._data_set(X, "X", 0, self._n_in, False)
        n = cnp.PyArray_DIM(X, 0)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n == 0:
            return True
        batch_size = min(batch_size, n)
        self._acquire()
        try:
            if batch_size != self._predict_size or self._predict_sparse:
                self._resize_predict(batch_size)
            finite = self._passes.all_predictions_finite(X, batch_size)
        finally:
            self._release()
        return finite

    # -- the parameters as a whole, each read or write one step under the lock ----

    def snapshot(self, out=None):
        """A copy of params, taken under the lock (never half an update); into
        out if given (an ndarray of the network's dtype and params' size,
        C-contiguous and writable), else into a new array. Returns it."""
        self._check_ready()
        if out is None:
            out = np.empty(cnp.PyArray_DIM(self._params, 0), dtype=self.dtype)
        self._check_flat(out, "out", True)
        self._acquire()
        try:
            if _overlaps(out, self._params):
                raise ValueError("out must not share memory with the parameters")
            _copy_in(self._params, out)
        finally:
            self._release()
        return out

    def restore(self, values):
        """params <- values, in one step under the lock: another call sees the old
        parameters or the new ones, never a mix. values: an ndarray of the
        network's dtype and params' size, C-contiguous (copied first if it
        overlaps the engine's buffers)."""
        self._check_flat(values, "values", False)
        values = np.asarray(values)
        self._acquire()
        try:
            if self.shares_memory(values):
                values = values.copy()
            _copy_in(values, self._params)
        finally:
            self._release()

    def locked(self, step):
        """Call step() holding the lock: an optimizer's update, then, is one
        step with respect to every other call on this engine. Returns its result."""
        self._acquire()
        try:
            return step()
        finally:
            self._release()

    def shares_memory(self, array):
        """Whether an array may share memory with the engine's parameters,
        gradients or work buffers."""
        return (any(np.may_share_memory(array, buffer) for buffer in
                    (self._params, self._grads, self._storage, self._predict_storage)
                    if buffer is not None)
                or self._kept_csr.shares_memory(array) or self._predict_csr.shares_memory(array))

    cdef int _check_flat(self, object M, str name, bint writable) except -1:
        """M is a 1-D array of params' size and dtype, read from its own struct."""
        self._check_ready()
        if not (cnp.PyArray_Check(M) and cnp.PyArray_TYPE(M) == self._typenum
                and cnp.PyArray_NDIM(M) == 1
                and cnp.PyArray_DIM(M, 0) == cnp.PyArray_DIM(self._params, 0)
                and cnp.PyArray_IS_C_CONTIGUOUS(M) and cnp.PyArray_ISBEHAVED_RO(M)
                and (not writable or cnp.PyArray_ISWRITEABLE(M))):
            which = "writable " if writable else ""
            raise ValueError(f"{name} must be a 1-D C-contiguous {which}array of "
                             f"{cnp.PyArray_DIM(self._params, 0)} entries of dtype {self.dtype}")
        return 0

    def add_weight_penalty(self, double scale):
        """grads of the weights += scale * W, under the lock; returns sum(W**2).

        The gradient of scikit-learn's penalty ``alpha / 2 * sum(W**2) / m``
        for scale = alpha / m: one compiled pass over the weights, none over
        the biases."""
        cdef double squares
        self._acquire()
        try:
            if self._releases_gil(1):
                with nogil:
                    squares = self._weight_penalty_pass(scale)
            else:
                squares = self._weight_penalty_pass(scale)
        finally:
            self._release()
        return squares

    cdef double _weight_penalty_pass(self, double scale) noexcept nogil:
        return self._views.weight_penalty(scale)

    def params_finite(self):
        """Whether every parameter is finite (no NaN, no infinity): one compiled pass."""
        cdef bint finite
        self._acquire()
        try:
            if self._releases_gil(1):
                with nogil:
                    finite = self._params_finite()
            else:
                finite = self._params_finite()
        finally:
            self._release()
        return finite

    cdef bint _params_finite(self) noexcept nogil:
        return self._views.params_finite()

    cdef object _data_set(self, object M, str name, Py_ssize_t n, Py_ssize_t width,
                          bint is_targets):
        """M as the (n, width) array an epoch reads in place (any n for X; (n,)
        also does for targets of one column), or an exception: never a copy."""
        if not cnp.PyArray_Check(M):
            raise TypeError(f"{name} must be a numpy array of the network's dtype "
                            f"({self.dtype}), got {type(M).__name__}")
        M = np.asarray(M)   # a subclass's reshape or shape may lie; the base class's do not
        if cnp.PyArray_TYPE(M) != self._typenum:
            raise TypeError(f"{name} must have the network's dtype {self.dtype}, got "
                            f"{M.dtype}: convert the data set once, before the epochs")
        if not (cnp.PyArray_IS_C_CONTIGUOUS(M) and cnp.PyArray_ISBEHAVED_RO(M)):
            raise ValueError(f"{name} must be C-contiguous, aligned and in native byte order "
                             f"(numpy.ascontiguousarray makes it so)")
        if is_targets and width == 1 and cnp.PyArray_NDIM(M) == 1 and cnp.PyArray_DIM(M, 0) == n:
            return M.reshape(n, 1)
        if (cnp.PyArray_NDIM(M) != 2 or cnp.PyArray_DIM(M, 1) != width
                or (is_targets and cnp.PyArray_DIM(M, 0) != n)):
            expected = f"({n}, {width})" if is_targets else f"(n, {width})"
            if is_targets and width == 1:
                expected += f" or ({n},)"
            raise ValueError(f"{name} must have shape {expected}, got {M.shape}")
        return M

    cdef Py_ssize_t _epoch_pass(self, X, Y, order, Py_ssize_t batch_size, int code, bint train,
                                double step, double[::1] out, bint* bad_row) except -1:
        """epoch on this engine's buffers, without the GIL if the epoch is big enough."""
        return self._passes.run_epoch(X, Y, order, self._storage, batch_size, code, train, step,
                                      out, bad_row, self._releases_gil(cnp.PyArray_DIM(X, 0)))


cdef inline void _copy_in(cnp.ndarray source, cnp.ndarray buffer) noexcept:
    """The opening block of buffer <- all of source (a checked, C-contiguous array)."""
    memcpy(cnp.PyArray_DATA(buffer), cnp.PyArray_DATA(source), cnp.PyArray_NBYTES(source))


cdef double _epoch_total(const double[::1] losses, Py_ssize_t ran, Py_ssize_t n,
                         Py_ssize_t batch_size) noexcept:
    """The sum of the first ran batches' losses, each times its batch's size."""
    cdef double total = 0
    cdef Py_ssize_t batch
    for batch in range(ran):
        total += losses[batch] * <double>min(batch_size, n - batch * batch_size)
    return total


cdef inline bint _overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether two C-contiguous arrays share any byte."""
    cdef char* a0 = <char*>cnp.PyArray_DATA(a)
    cdef char* b0 = <char*>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cdef int _refuse_overlap_with_kept(cnp.ndarray out, cnp.ndarray kept) except -1:
    # A kept pass would overwrite the activations it keeps for backward.
    if _overlaps(out, kept):
        raise ValueError("out must not share memory with the network's activations "
                         "(forward keeps them for backward); use predict, or another array")
    return 0


cdef inline void _copy_out(cnp.ndarray buffer, cnp.ndarray out) noexcept:
    """out <- the closing block of buffer: A^(L) ends the activation buffer."""
    cdef Py_ssize_t size = cnp.PyArray_NBYTES(out)
    memcpy(cnp.PyArray_DATA(out), <char*>cnp.PyArray_DATA(buffer) + cnp.PyArray_NBYTES(buffer) - size,
           size)


def gil_release_min_work():
    """Passes of at least this many multiply-adds release the GIL while they compute."""
    return GIL_MIN_WORK


cdef str _name(int code):
    for name, value in ACTIVATIONS.items():
        if value == code:
            return name
    return str(code)
