"""Compiled core of cmlp: the forward pass, delta backpropagation and SGD.

Everything here works on flat, C-ordered buffers that ``network.py`` allocates
once and views as per-layer arrays:

``params`` (and ``grads``, same layout)
    for each layer ``l``: ``W`` of shape ``(n_out, n_in)`` row-major, then
    ``b`` of shape ``(n_out,)`` -- the order and shapes of ``torch.nn.Linear``.
``A`` (activations of one batch of ``n`` samples)
    ``A^(0)`` (the input, ``(n, sizes[0])``), then ``A^(1)`` ... ``A^(L)``.
``D`` (deltas of the same batch)
    ``delta^(1)`` ``(n, sizes[1])`` ... ``delta^(L)``: ``delta = dLoss/dZ`` of
    the *batch* loss, so the ``1/n`` of the batch mean is inside the deltas and
    the gradients are plain sums: ``dW = delta^T A_prev``, ``db = sum(delta)``.

The module has three layers. ``cdef inline`` scalar helpers and ``nogil``
kernels over typed memoryviews (one fused float32/float64 type) do the maths;
:class:`Engine` owns the buffers, checks every input with the GIL held, and
only then enters the kernels with the GIL released. No kernel allocates, and
none is reachable with an unchecked shape.

Matrix products go through a row-major ``_gemm``: a compiled small-product
kernel (register-blocked C, in ``_vector_kernels.c``) for the layers where a
BLAS call costs more than the work, and ``scipy.linalg.cython_blas`` (no
link-time BLAS dependency) beyond that. That kernel, and the
element-wise passes beside it, are built for SSE2, AVX2 and AVX-512 on x86;
import picks the widest the processor runs, or the one the environment
variable ``CMLP_VECTOR_VARIANT`` names (:func:`vector_variant`).

Sparse input (a CSR batch) changes the first layer alone: its product
``X W^T`` and gradient ``delta^T X`` are kernels of their own over the
batch's nonzeros, which are gathered and checked into CSR buffers the engine
owns; the work buffers then hold no ``A^(0)`` (see the section "Sparse
input" below).
"""
from cython cimport floating
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_get_thread_ident, PyThread_release_lock, PyThread_type_lock,
)
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.pycapsule cimport PyCapsule_GetPointer
from numpy.random cimport bitgen_t
from libc.math cimport exp, expf, isfinite, log, tanh, tanhf
from libc.limits cimport INT_MAX
from libc.float cimport DBL_MAX
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport daxpy, dgemm, saxpy, sgemm

cimport numpy as cnp
import os

import numpy as np

from cmlp._validation import (MAX_BUFFER_BYTES, as_output, as_samples, as_targets,
                              check_architecture, check_batch_rows, check_learning_rate)

cnp.import_array()

# The element-wise passes and the small-product kernel, in C so that the
# compiler vectorises them, once for each instruction set (see the header);
# each is called through the table of the variant in use, cmlp_active.
cdef extern from "_vector_kernels.h":
    const double CMLP_SIGMOID_RANGE_D
    const float CMLP_SIGMOID_RANGE_F
    double cmlp_sigmoid_d(double z) noexcept nogil
    float cmlp_sigmoid_f(float z) noexcept nogil
    const Py_ssize_t CMLP_GEMM_MAX_K
    ctypedef struct cmlp_vector_kernels:
        const char* name
        bint (*add_bias_d)(double* z, const double* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil
        bint (*add_bias_f)(float* z, const float* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil
        void (*sigmoid_block_d)(double* z, Py_ssize_t m) noexcept nogil
        void (*sigmoid_block_f)(float* z, Py_ssize_t m) noexcept nogil
        void (*sigmoid_backprop_d)(double* d, const double* a, Py_ssize_t count) noexcept nogil
        void (*sigmoid_backprop_f)(float* d, const float* a, Py_ssize_t count) noexcept nogil
        void (*column_sums_d)(const double* D, Py_ssize_t n, Py_ssize_t m, double* out) noexcept nogil
        void (*column_sums_f)(const float* D, Py_ssize_t n, Py_ssize_t m, float* out) noexcept nogil
        void (*sgd_d)(double* p, const double* g, double lr, Py_ssize_t count) noexcept nogil
        void (*sgd_f)(float* p, const float* g, float lr, Py_ssize_t count) noexcept nogil
        void (*small_gemm_d)(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                             const double* A, const double* B, double* C) noexcept nogil
        void (*small_gemm_f)(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                             const float* A, const float* B, float* C) noexcept nogil
    const cmlp_vector_kernels* cmlp_variants[]
    const int CMLP_N_VARIANTS
    const cmlp_vector_kernels* cmlp_active
    bint cmlp_variant_runs(int v)
    void cmlp_use_variant(int v)

# Codes shared with network.py; the names are the public spelling.
cdef enum:
    IDENTITY = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4

# What a pass on a sparse batch computes (_sparse_pass).
cdef enum:
    PREDICT = 0     # the forward pass
    FORWARD = 1     # the forward pass, the output's logits kept (for a loss after)
    LOSS_ONLY = 2   # forward and loss
    GRADIENTS = 3   # forward, loss and gradients
    TRAIN = 4       # forward, loss, gradients and the SGD update
    BACKWARD = 5    # loss and gradients from the kept forward pass

cdef enum:
    MSE = 0
    HALF_SSE = 1
    BCE = 2
    CROSS_ENTROPY = 3

ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "tanh": TANH,
               "relu": RELU, "softmax": SOFTMAX}
LOSSES = {"mse": MSE, "half_sse": HALF_SSE, "bce": BCE,
          "cross_entropy": CROSS_ENTROPY}

# Where a product goes: below BLAS_MIN_WORK multiply-adds to the compiled
# small-product kernel, where a BLAS call, its checks and its packing of the
# operands cost more than the arithmetic; to BLAS beyond. One threshold for
# every variant of the vector kernels, so that a product takes the same route,
# and gives the same bits, on every processor (benchmarks/blas_threshold.py
# measures the choice under each variant).
cdef Py_ssize_t BLAS_MIN_WORK = 2048
# Rows of at most this many entries are gathered by a loop, longer ones by memcpy.
cdef Py_ssize_t SHORT_ROW = 32
# From this many entries an SGD update goes to BLAS's axpy (see _sgd).
cdef Py_ssize_t SGD_BLAS_MIN = 65536
# Below this many multiply-adds (batch size times parameters) a pass keeps the
# GIL: releasing and retaking it would cost more than the pass itself.
cdef Py_ssize_t GIL_MIN_WORK = 4096
# PyTorch clamps log() at -100 in BCELoss so that a saturated output gives a
# large finite loss instead of inf; we do the same to give the same numbers.
cdef double BCE_LOG_FLOOR = -100.0


# ---------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating _sigmoid(floating z) noexcept nogil:
    # Branch on the sign so that exp() only ever sees a non-positive argument:
    # no overflow for any z, and NaN still propagates. Computed in the
    # network's own precision, as PyTorch does, so float32 results agree.
    cdef floating one = 1, e  # a typed 1: a literal would promote float32 to double
    if z >= 0:
        return one / (one + _exp(-z))
    e = _exp(z)
    return e / (one + e)


cdef inline floating _relu(floating z) noexcept nogil:
    # "z < 0" rather than "z > 0" so that NaN passes through, as np.maximum does.
    return 0 if z < 0 else z


cdef inline double _clamped_log(double x) noexcept nogil:
    # log(0) = -inf is clamped; NaN is not (a NaN output gives a NaN loss, as in PyTorch).
    cdef double v = log(x)
    return BCE_LOG_FLOOR if v < BCE_LOG_FLOOR else v


# ---------------------------------------------------------------------------
# Row-major matrix product: C(M, N) = op(A) @ op(B)
# ---------------------------------------------------------------------------

cdef void _gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                floating[::1] A, Py_ssize_t a0, floating[::1] B, Py_ssize_t b0,
                floating[::1] C, Py_ssize_t c0) noexcept nogil:
    """OUT C[c0:c0+M*N] = op(A) @ op(B); op(X) is X or X^T, all row-major."""
    cdef Py_ssize_t i
    if M == 0 or N == 0:
        return
    if K == 0:
        for i in range(c0, c0 + M * N):
            C[i] = 0
        return
    if _blas_pays(M, N, K):
        _blas_gemm(trans_a, trans_b, M, N, K, &A[a0], &B[b0], &C[c0])
    elif floating is float:
        cmlp_active.small_gemm_f(trans_a, trans_b, M, N, K, &A[a0], &B[b0], &C[c0])
    else:
        cmlp_active.small_gemm_d(trans_a, trans_b, M, N, K, &A[a0], &B[b0], &C[c0])


cdef inline bint _blas_pays(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    return K > CMLP_GEMM_MAX_K or M * N * K >= BLAS_MIN_WORK


cdef void _blas_gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     floating* A, floating* B, floating* C) noexcept nogil:
    # A row-major matrix is its transpose in Fortran order, so the row-major
    # C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: swap the operands.
    cdef char* tb = b"T" if trans_b else b"N"
    cdef char* ta = b"T" if trans_a else b"N"
    cdef int m = <int>N, n = <int>M, k = <int>K
    cdef int ldb = <int>(K if trans_b else N)
    cdef int lda = <int>(M if trans_a else K)
    cdef int ldc = <int>N
    cdef floating one = 1, zero = 0
    if floating is float:
        sgemm(tb, ta, &m, &n, &k, &one, B, &ldb, A, &lda, &zero, C, &ldc)
    else:
        dgemm(tb, ta, &m, &n, &k, &one, B, &ldb, A, &lda, &zero, C, &ldc)


# ---------------------------------------------------------------------------
# Activations: forward in place, and their derivative taken from the output
# ---------------------------------------------------------------------------

cdef void _add_bias_and_activate(int code, floating[::1] Z, Py_ssize_t z0,
                                 floating[::1] params, Py_ssize_t b0,
                                 Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """INOUT Z (n, m): Z <- f(Z + b), one fused pass."""
    cdef Py_ssize_t i, j, r
    if code == SIGMOID:
        _add_bias_and_sigmoid(Z, z0, params, b0, n, m)
        return
    for i in range(n):
        r = z0 + i * m
        if code == TANH:
            for j in range(m):
                Z[r + j] = _tanh(Z[r + j] + params[b0 + j])
        elif code == RELU:
            for j in range(m):
                Z[r + j] = _relu(Z[r + j] + params[b0 + j])
        else:
            for j in range(m):
                Z[r + j] = Z[r + j] + params[b0 + j]
            if code == SOFTMAX:
                _softmax_row(Z, r, m)


cdef void _add_bias_and_sigmoid(floating[::1] Z, Py_ssize_t z0, floating[::1] params,
                                Py_ssize_t b0, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """INOUT Z (n, m) <- sigmoid(Z + b): the bias, then the sigmoid of the whole
    block in one vectorised pass. An entry beyond the vector route's range
    (|z| > 707 in double, 80 in float), or a NaN, sends the block through the
    element-by-element route, where it alone takes libm's exp: every other
    entry gets the same bits either way."""
    cdef Py_ssize_t j
    cdef bint in_range
    cdef floating limit
    if floating is float:
        in_range = cmlp_active.add_bias_f(&Z[z0], &params[b0], n, m)
        limit = CMLP_SIGMOID_RANGE_F
    else:
        in_range = cmlp_active.add_bias_d(&Z[z0], &params[b0], n, m)
        limit = CMLP_SIGMOID_RANGE_D
    if in_range:
        if floating is float:
            cmlp_active.sigmoid_block_f(&Z[z0], n * m)
        else:
            cmlp_active.sigmoid_block_d(&Z[z0], n * m)
        return
    for j in range(z0, z0 + n * m):
        if not (Z[j] <= limit and Z[j] >= -limit):
            Z[j] = _sigmoid(Z[j])
        elif floating is float:
            Z[j] = cmlp_sigmoid_f(Z[j])
        else:
            Z[j] = cmlp_sigmoid_d(Z[j])


cdef void _softmax_row(floating[::1] Z, Py_ssize_t r, Py_ssize_t m) noexcept nogil:
    # Subtract the row maximum first: exp() then never overflows.
    cdef Py_ssize_t j
    cdef double top = Z[r], total = 0
    for j in range(1, m):
        if Z[r + j] > top:
            top = Z[r + j]
    for j in range(m):
        Z[r + j] = <floating>exp(Z[r + j] - top)
        total += Z[r + j]
    for j in range(m):
        Z[r + j] = <floating>(Z[r + j] / total)


cdef void _backprop_activation(int code, floating[::1] A, Py_ssize_t a0,
                               floating[::1] D, Py_ssize_t d0,
                               Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """INOUT D (n, m): dL/dA -> dL/dZ, using only the layer's output A.

    sigmoid' = a(1 - a), tanh' = 1 - a^2, relu' = [a > 0]; softmax couples a
    row, so its Jacobian-vector product is d_j <- a_j (d_j - sum_k d_k a_k).
    """
    cdef Py_ssize_t i, j, s = n * m
    cdef double dot
    cdef floating a, one = 1
    if s == 0:
        return
    if code == SIGMOID:
        if floating is float:
            cmlp_active.sigmoid_backprop_f(&D[d0], &A[a0], s)
        else:
            cmlp_active.sigmoid_backprop_d(&D[d0], &A[a0], s)
    elif code == TANH:
        for i in range(s):
            a = A[a0 + i]
            D[d0 + i] = D[d0 + i] * (one - a * a)
    elif code == RELU:
        for i in range(s):
            if not A[a0 + i] > 0:
                D[d0 + i] = 0
    elif code == SOFTMAX:
        for i in range(n):
            dot = 0
            for j in range(m):
                dot += D[d0 + i * m + j] * A[a0 + i * m + j]
            for j in range(m):
                D[d0 + i * m + j] = <floating>(A[a0 + i * m + j] * (D[d0 + i * m + j] - dot))


# ---------------------------------------------------------------------------
# The network: forward, the output delta (the loss), delta backpropagation, SGD
# ---------------------------------------------------------------------------

cdef void _forward(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                   floating[::1] params, floating[::1] A,
                   floating[::1] Z, bint keep_logits) noexcept nogil:
    """INOUT A: reads A^(0), writes A^(1) .. A^(L).

    With keep_logits (a softmax output), the output layer's z is also copied
    into Z (n, k): cross-entropy needs z itself for its log-sum-exp, as
    softmax(z) may have underflowed to 0.
    """
    _forward_from(sizes, codes, n, params, A, Z, keep_logits, 0, 0, 0)


cdef void _forward_from(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                        floating[::1] params, floating[::1] A, floating[::1] Z,
                        bint keep_logits, Py_ssize_t first, Py_ssize_t w0,
                        Py_ssize_t a_prev) noexcept nogil:
    """The layers from first on: layer first's input at A[a_prev], its
    weights at params[w0]; each output follows its input in A."""
    cdef Py_ssize_t L = codes.shape[0], l, n_in, n_out
    cdef Py_ssize_t a_next
    for l in range(first, L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        a_next = a_prev + n * n_in
        # Z = A_prev W^T + b ; A = f(Z)
        _gemm(False, True, n, n_out, n_in, A, a_prev, params, w0, A, a_next)
        _finish_layer(codes, l, n, n_out, params, w0 + n_out * n_in, A, a_next, Z, keep_logits)
        w0 += n_out * (n_in + 1)
        a_prev = a_next


cdef inline void _finish_layer(const int[::1] codes, Py_ssize_t l, Py_ssize_t n, Py_ssize_t n_out,
                               floating[::1] params, Py_ssize_t b0, floating[::1] A,
                               Py_ssize_t a0, floating[::1] Z, bint keep_logits) noexcept nogil:
    """INOUT A[a0:] (n, n_out): the product of layer l -> its activation,
    the bias added; the output layer's z kept in Z with keep_logits."""
    cdef Py_ssize_t i
    if keep_logits and l == codes.shape[0] - 1:
        _add_bias_and_activate(IDENTITY, A, a0, params, b0, n, n_out)
        memcpy(&Z[0], &A[a0], n * n_out * sizeof(floating))
        for i in range(n):
            _softmax_row(A, a0 + i * n_out, n_out)
    else:
        _add_bias_and_activate(codes[l], A, a0, params, b0, n, n_out)


cdef double _output_delta(int loss, floating[::1] A, Py_ssize_t a0,
                          const floating[::1] Y, floating[::1] D, Py_ssize_t d0,
                          floating[::1] Z, int code, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """OUT D (n, k) = dL/dZ of the output layer; returns the loss L.

    Where each 1/n lives (n samples, k outputs, a = A^(L), y = Y):

    ============== =============================== ===========================
    loss           L                               output delta dL/dz
    ============== =============================== ===========================
    mse            sum (a - y)^2 / (n k)           2 (a - y) / (n k) * f'(a)
    half_sse       sum 1/2 (a - y)^2 / n           (a - y) / n * f'(a)
    bce            -sum [y log a + (1 - y)         (a - y) / (n k)
                   log(1 - a)] / (n k)
    cross_entropy  -sum y log softmax(z) / n       (a sum(y) - y) / n
    ============== =============================== ===========================

    For bce (sigmoid output) and cross_entropy (softmax output, its z in Z)
    the delta is taken straight from a - y, never through f'(a): exact where
    f'(a) has underflowed to 0.
    """
    cdef Py_ssize_t i, j, r
    cdef double total = 0, e, top, lse, y_sum
    cdef double scale
    if loss == MSE or loss == HALF_SSE:
        scale = 2.0 / (n * k) if loss == MSE else 1.0 / n
        for i in range(n):
            for j in range(k):
                e = A[a0 + i * k + j] - Y[i * k + j]
                total += e * e
                D[d0 + i * k + j] = <floating>(scale * e)
        _backprop_activation(code, A, a0, D, d0, n, k)
        return total * scale / 2
    if loss == BCE:
        scale = 1.0 / (n * k)
        for i in range(n):
            for j in range(k):
                e = A[a0 + i * k + j]
                total -= (Y[i * k + j] * _clamped_log(e) + (1 - Y[i * k + j]) * _clamped_log(1 - e))
                D[d0 + i * k + j] = <floating>(scale * (e - Y[i * k + j]))
        return total * scale
    # CROSS_ENTROPY: log softmax(z) = z - logsumexp(z), from the kept z.
    for i in range(n):
        r = i * k
        top = Z[r]
        for j in range(1, k):
            if Z[r + j] > top:
                top = Z[r + j]
        lse = 0
        y_sum = 0
        for j in range(k):
            lse += exp(Z[r + j] - top)
            y_sum += Y[i * k + j]
        lse = log(lse)  # logsumexp(z) - top: adding top back would round away a small loss
        for j in range(k):
            if Y[i * k + j] != 0:  # 0 * log(0) counts as 0, as for one-hot targets
                total += Y[i * k + j] * ((top - Z[r + j]) + lse)
            D[d0 + r + j] = <floating>((A[a0 + r + j] * y_sum - Y[i * k + j]) / n)
    return total / n


cdef void _backward(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                    floating[::1] params, floating[::1] grads,
                    floating[::1] A, floating[::1] D, bint update, floating lr) noexcept nogil:
    """IN A, the output delta (end of D); OUT grads and the hidden deltas.

    For each layer from the output down:
        dW = delta^T A_prev,   db = sum over samples of delta,
        delta_prev = (delta W) * f'(A_prev).
    With update, the layer then takes its SGD step W <- W - lr dW, b <- b - lr db
    at once, while its gradient is still in cache: W has served delta_prev
    already, and no other layer reads it. The numbers are those of _sgd after.
    """
    _backward_down_to(sizes, codes, n, params, grads, A, D, update, lr, 0)


cdef void _backward_down_to(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                            floating[::1] params, floating[::1] grads, floating[::1] A,
                            floating[::1] D, bint update, floating lr,
                            Py_ssize_t last) noexcept nogil:
    """_backward for the layers from the output down to layer last: the
    offsets counted back from the ends of params, A and D, so A may begin
    with A^(last) (a sparse input is not in A)."""
    cdef Py_ssize_t L = codes.shape[0], l, n_in, n_out
    cdef Py_ssize_t w0 = params.shape[0], a_prev = A.shape[0], d0 = D.shape[0]
    a_prev -= n * sizes[L]
    for l in range(L - 1, last - 1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        w0 -= n_out * (n_in + 1)
        a_prev -= n * n_in
        d0 -= n * n_out
        _gemm(True, False, n_out, n_in, n, D, d0, A, a_prev, grads, w0)
        _column_sums(D, d0, n, n_out, grads, w0 + n_out * n_in)
        if l > 0:
            _gemm(False, False, n, n_in, n_out, D, d0, params, w0, D, d0 - n * n_in)
            _backprop_activation(codes[l - 1], A, a_prev, D, d0 - n * n_in, n, n_in)
        if update:
            _sgd(params, grads, lr, w0, w0 + n_out * (n_in + 1))


cdef void _column_sums(floating[::1] D, Py_ssize_t d0, Py_ssize_t n, Py_ssize_t m,
                       floating[::1] out, Py_ssize_t o0) noexcept nogil:
    """OUT out[o0:o0+m] = sum over the n rows of D (n, m)."""
    cdef Py_ssize_t j
    if n == 0:
        for j in range(m):
            out[o0 + j] = 0
    elif floating is float:
        cmlp_active.column_sums_f(&D[d0], n, m, &out[o0])
    else:
        cmlp_active.column_sums_d(&D[d0], n, m, &out[o0])


cdef void _sgd(floating[::1] params, const floating[::1] grads, floating lr,
               Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """INOUT params[start:stop] <- params - lr * grads, one pass.

    From SGD_BLAS_MIN entries on, BLAS's axpy (p + (-lr) g) takes it: it
    splits the pass over BLAS's threads, where a layer that large has just
    had its gradient written by them."""
    cdef int count = <int>(stop - start), one = 1
    cdef floating step = -lr
    if SGD_BLAS_MIN <= stop - start <= INT_MAX:
        if floating is float:
            saxpy(&count, &step, <float*>&grads[start], &one, &params[start], &one)
        else:
            daxpy(&count, &step, <double*>&grads[start], &one, &params[start], &one)
    elif floating is float:
        cmlp_active.sgd_f(&params[start], &grads[start], lr, stop - start)
    else:
        cmlp_active.sgd_d(&params[start], &grads[start], lr, stop - start)


cdef void _sgd_by_layer(const Py_ssize_t[::1] sizes, floating[::1] params,
                        const floating[::1] grads, floating lr) noexcept nogil:
    """The SGD step of every layer, each as _backward takes it: the same
    route (own loop or BLAS) for a layer of a given size, so the same bits."""
    cdef Py_ssize_t l, start = 0, stop
    for l in range(sizes.shape[0] - 1):
        stop = start + sizes[l + 1] * (sizes[l] + 1)
        _sgd(params, grads, lr, start, stop)
        start = stop


cdef double _add_weight_penalty(const Py_ssize_t[::1] sizes, const floating[::1] params,
                                floating[::1] grads, floating scale) noexcept nogil:
    """INOUT the gradient of every weight matrix += scale * W (the biases' are
    left as they are); returns sum(W**2) over the weights, in double."""
    cdef Py_ssize_t l, i, start = 0, stop
    cdef double squares = 0
    for l in range(sizes.shape[0] - 1):
        stop = start + sizes[l + 1] * sizes[l]
        for i in range(start, stop):
            squares += <double>params[i] * <double>params[i]
            grads[i] += scale * params[i]
        start = stop + sizes[l + 1]   # past the layer's biases
    return squares


cdef double _train_step(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                        floating[::1] params, floating[::1] grads,
                        floating[::1] A, floating[::1] D, floating[::1] Z,
                        const floating[::1] Y, int loss, floating lr) noexcept nogil:
    """One SGD step: forward (A^(0) already in A), loss, backward with the update."""
    _forward(sizes, codes, n, params, A, Z, codes[codes.shape[0] - 1] == SOFTMAX)
    cdef double value = _forward_loss(sizes, codes, n, A, D, Z, Y, loss)
    _backward(sizes, codes, n, params, grads, A, D, True, lr)
    return value


cdef double _forward_loss(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                          floating[::1] A, floating[::1] D, floating[::1] Z,
                          const floating[::1] Y, int loss) noexcept nogil:
    """The loss of the last forward pass against Y; OUT the output delta (end of D)."""
    cdef Py_ssize_t L = codes.shape[0], k = sizes[L]
    return _output_delta(loss, A, A.shape[0] - n * k, Y, D, D.shape[0] - n * k,
                         Z, codes[L - 1], n, k)


cdef double _loss_and_backward(const Py_ssize_t[::1] sizes, const int[::1] codes,
                               Py_ssize_t n, floating[::1] params, floating[::1] grads,
                               floating[::1] A, floating[::1] D, floating[::1] Z,
                               const floating[::1] Y, int loss) noexcept nogil:
    """Loss and all gradients from the activations of the last forward pass."""
    cdef double value = _forward_loss(sizes, codes, n, A, D, Z, Y, loss)
    _backward(sizes, codes, n, params, grads, A, D, False, 0)
    return value


cdef double _weighted_loss_and_backward(const Py_ssize_t[::1] sizes, const int[::1] codes,
                                        Py_ssize_t n, floating[::1] params,
                                        floating[::1] grads, floating[::1] A,
                                        floating[::1] D, floating[::1] Z,
                                        const floating[::1] Y, const double[::1] w,
                                        int loss) noexcept nogil:
    """The sample-weighted mean loss, sum_i w_i L_i / sum_i w_i, and its gradients.

    L_i is sample i's loss as _output_delta gives it for a batch of one; each
    row's delta is then scaled by w_i / sum(w), which puts the weighted mean's
    1/sum(w) inside the deltas as the unweighted mean puts its 1/n there.
    A batch whose weights sum to 0 has loss 0 and zero gradients.
    """
    cdef double total = _weighted_output_delta(sizes, codes, n, A, D, Z, Y, w, loss)
    _backward(sizes, codes, n, params, grads, A, D, False, 0)
    return total


cdef double _weighted_output_delta(const Py_ssize_t[::1] sizes, const int[::1] codes,
                                   Py_ssize_t n, floating[::1] A, floating[::1] D,
                                   floating[::1] Z, const floating[::1] Y,
                                   const double[::1] w, int loss) noexcept nogil:
    """The weighted mean loss; OUT the output delta, each row scaled by w_i / sum(w)."""
    cdef Py_ssize_t L = codes.shape[0], k = sizes[L], i, j
    cdef Py_ssize_t a0 = A.shape[0] - n * k, d0 = D.shape[0] - n * k
    cdef double weight_sum = 0, total = 0, share
    for i in range(n):
        weight_sum += w[i]
    for i in range(n):
        share = w[i] / weight_sum if weight_sum > 0 else 0.0
        total += share * _output_delta(loss, A, a0 + i * k, Y[i * k:], D, d0 + i * k,
                                       Z[i * k:], codes[L - 1], 1, k)
        for j in range(k):
            D[d0 + i * k + j] = <floating>(share * D[d0 + i * k + j])
    return total


# ---------------------------------------------------------------------------
# One epoch of plain SGD: the batch loop in compiled code
# ---------------------------------------------------------------------------

# The order of an epoch that takes the samples as they come: no indices at all
# (an epoch always holds at least one sample, so empty is never a real order).
_IN_ORDER = np.empty(0, dtype=np.intp)


cdef inline void _work_bounds(Py_ssize_t m, Py_ssize_t width_sum, Py_ssize_t n_in,
                              Py_ssize_t n_out, bint logits, Py_ssize_t* ends) noexcept nogil:
    """OUT ends[0..3]: where A, D, the kept logits Z and the targets of m samples
    end in the work storage, each block starting where the one before ends."""
    ends[0] = m * width_sum
    ends[1] = ends[0] + m * (width_sum - n_in)
    ends[2] = ends[1] + (m * n_out if logits else 0)
    ends[3] = ends[2] + m * n_out


cdef extern from *:
    """
    /* Ask the cache for the lines of a row that a later batch will copy: every
       64 bytes, and the last byte (a row need not start on a line). */
    static CMLP_INLINE void cmlp_prefetch_row(const char *row, Py_ssize_t nbytes) {
    #if defined(__GNUC__) || defined(__clang__)
        for (Py_ssize_t k = 0; k < nbytes; k += 64) __builtin_prefetch(row + k);
        __builtin_prefetch(row + nbytes - 1);
    #else
        (void)row; (void)nbytes;
    #endif
    }
    """
    void cmlp_prefetch_row(const char* row, Py_ssize_t nbytes) noexcept nogil


cdef void _prefetch_batch(const floating[:, ::1] X, const floating[:, ::1] Y,
                          const Py_ssize_t[::1] order, Py_ssize_t start,
                          Py_ssize_t m) noexcept nogil:
    """Start loading the rows of the batch at position start of order, to be
    gathered after the current batch's step: rows in a shuffled order are
    cache misses that no hardware prefetcher sees coming."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, row
    cdef const char* x0 = <const char*>&X[0, 0]
    cdef const char* y0 = <const char*>&Y[0, 0]
    for i in range(m):
        row = order[start + i]
        if row >= 0 and row < n:   # a prefetch never faults, but only X's rows are wanted
            cmlp_prefetch_row(x0 + row * n_in * sizeof(floating), n_in * sizeof(floating))
            cmlp_prefetch_row(y0 + row * n_out * sizeof(floating), n_out * sizeof(floating))


cdef bint _gather_batch(const floating[:, ::1] X, const floating[:, ::1] Y,
                        const Py_ssize_t[::1] order, Py_ssize_t start, Py_ssize_t m,
                        floating[::1] A, floating[::1] T) noexcept nogil:
    """OUT A^(0) (the front of A) and the targets T of one batch: the m samples
    that order lists from position start on (samples start .. start+m-1 when
    order is empty). False, with the batch unfinished, if an index lies outside
    X: the caller checked them all, but another thread may write into order."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, row
    if order.shape[0] == 0:
        memcpy(&A[0], &X[start, 0], m * n_in * sizeof(floating))
        memcpy(&T[0], &Y[start, 0], m * n_out * sizeof(floating))
        return True
    for i in range(m):
        row = order[start + i]   # read once: checked and used as the same value
        if row < 0 or row >= n:
            return False
        _copy_row(&A[i * n_in], &X[row, 0], n_in)
        _copy_row(&T[i * n_out], &Y[row, 0], n_out)
    return True


cdef inline void _copy_row(floating* out, const floating* row, Py_ssize_t count) noexcept nogil:
    # A short row is copied in place: a call to memcpy per row of a few
    # entries was half of what shuffling cost a small network's epoch.
    cdef Py_ssize_t j
    if count > SHORT_ROW:
        memcpy(out, row, count * sizeof(floating))
        return
    for j in range(count):
        out[j] = row[j]


cdef Py_ssize_t _epoch(const Py_ssize_t[::1] sizes, const int[::1] codes,
                       floating[::1] params, floating[::1] grads, floating[::1] storage,
                       const floating[:, ::1] X, const floating[:, ::1] Y,
                       const Py_ssize_t[::1] order, Py_ssize_t batch_size, int loss,
                       bint train, floating lr, double[::1] losses, bint* bad_row) noexcept nogil:
    """The batches of one epoch, each gathered into the work buffers. With
    train, each takes _train_step (the numbers of train_step on each batch in
    turn), and the epoch stops after the first batch whose loss is not
    finite; without, each takes the forward pass and the loss alone.

    IN X (n, n_in), Y (n, n_out), order (see _gather_batch); INOUT params;
    OUT losses[b]: the loss of batch b; the work buffers, laid out in storage
    as Engine._resize lays them out for the batch's size (the last batch of
    an epoch may be smaller). Stops before a batch with an index outside X
    (setting bad_row). Returns the number of batches run.
    """
    cdef Py_ssize_t L = codes.shape[0], n = X.shape[0], k = sizes[L], width_sum = 0, l
    cdef Py_ssize_t start = 0, m, m_views = 0, batch = 0
    cdef Py_ssize_t ends[4]
    cdef bint logits = codes[L - 1] == SOFTMAX
    cdef floating[::1] A, D, Z, T
    cdef double value
    for l in range(L + 1):
        width_sum += sizes[l]
    while start < n:
        m = min(batch_size, n - start)
        if m != m_views:
            _work_bounds(m, width_sum, sizes[0], k, logits, ends)
            A = storage[:ends[0]]
            D = storage[ends[0]:ends[1]]
            Z = storage[ends[1]:ends[2]]
            T = storage[ends[2]:ends[3]]
            m_views = m
        if not _gather_batch(X, Y, order, start, m, A, T):
            bad_row[0] = True
            break
        if order.shape[0] != 0 and start + m < n:
            _prefetch_batch(X, Y, order, start + m, min(batch_size, n - start - m))
        if train:
            value = _train_step(sizes, codes, m, params, grads, A, D, Z, T, loss, lr)
        else:
            _forward(sizes, codes, m, params, A, Z, logits)
            value = _forward_loss(sizes, codes, m, A, D, Z, T, loss)
        losses[batch] = value
        batch += 1
        start += m
        if train and not isfinite(value):
            break
    return batch


# ---------------------------------------------------------------------------
# Sparse input: the first layer's product and gradient from a CSR batch
# ---------------------------------------------------------------------------
#
# A batch of sparse samples is held in CSR form in buffers of the engine's
# own (_CSRBuffer): data, column indices (int32: a layer is at most
# MAX_BLAS_SIZE wide), and the batch's row pointers, from 0. It is gathered
# from the data set by _gather_csr, which checks every row range and every
# column index as it copies them; the kernels after it read only checked,
# owned memory. The input is not in A: the work buffers of a sparse pass are
# laid out as a dense pass's would be with no A^(0), A^(1) at the front.

cdef bint _gather_csr(const floating[::1] data, const int[::1] indices,
                      const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                      Py_ssize_t start, Py_ssize_t m, Py_ssize_t n_in,
                      floating[::1] bdata, int[::1] bindices,
                      Py_ssize_t[::1] bindptr) noexcept nogil:
    """OUT the batch CSR (bdata, bindices, bindptr[0..m]): rows order[start ..
    start+m-1] of the data set (start .. start+m-1 when order is empty).
    False, the batch unfinished, at a row outside the data set, a row range
    not within [0, nnz] and increasing, a column outside [0, n_in), or more
    nonzeros than the buffers hold: the caller checked them, but another
    thread may write into the arrays."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, nnz = min(data.shape[0], indices.shape[0])
    cdef Py_ssize_t room = min(bdata.shape[0], bindices.shape[0])
    cdef Py_ssize_t i, k, row, lo, hi, total = 0
    cdef int col
    if bindptr.shape[0] < m + 1 or (order.shape[0] != 0 and order.shape[0] < start + m):
        return False
    bindptr[0] = 0
    for i in range(m):
        row = start + i if order.shape[0] == 0 else order[start + i]
        if row < 0 or row >= n:
            return False
        lo = indptr[row]
        hi = indptr[row + 1]
        if lo < 0 or hi < lo or hi > nnz or hi - lo > room - total:
            return False
        for k in range(lo, hi):
            col = indices[k]
            if col < 0 or col >= n_in:
                return False
            bindices[total] = col
            bdata[total] = data[k]
            total += 1
        bindptr[i + 1] = total
    return True


cdef bint _gather_rows(const floating[:, ::1] Y, const Py_ssize_t[::1] order, Py_ssize_t start,
                       Py_ssize_t m, floating[::1] T) noexcept nogil:
    """OUT T: rows order[start .. start+m-1] of Y (start .. when order is
    empty), False at a row outside Y."""
    cdef Py_ssize_t n = Y.shape[0], k = Y.shape[1], i, row
    if T.shape[0] < m * k or (order.shape[0] != 0 and order.shape[0] < start + m):
        return False
    for i in range(m):
        row = start + i if order.shape[0] == 0 else order[start + i]
        if row < 0 or row >= n:
            return False
        _copy_row(&T[i * k], &Y[row, 0], k)
    return True


cdef void _csr_product(const floating[::1] data, const int[::1] indices,
                       const Py_ssize_t[::1] indptr, Py_ssize_t n, Py_ssize_t n_in,
                       Py_ssize_t n_out, const floating[::1] params,
                       floating[::1] A) noexcept nogil:
    """OUT A[0:n*n_out] = X W^T: X the checked CSR batch (n rows), W the first
    (n_out, n_in) block of params. Unit by unit: the row of W of a unit stays
    in cache while every nonzero of the batch reads from it."""
    cdef Py_ssize_t o, i, k, w
    cdef floating total
    for o in range(n_out):
        w = o * n_in
        for i in range(n):
            total = 0
            for k in range(indptr[i], indptr[i + 1]):
                total = total + data[k] * params[w + indices[k]]
            A[i * n_out + o] = total


cdef void _csr_gradient(const floating[::1] data, const int[::1] indices,
                        const Py_ssize_t[::1] indptr, Py_ssize_t n, Py_ssize_t n_in,
                        Py_ssize_t n_out, const floating[::1] D,
                        floating[::1] grads) noexcept nogil:
    """OUT grads[0:n_out*n_in] = delta^T X: delta (n, n_out) at the front of
    D, scattered into the zeroed gradient of W, a unit's row at a time."""
    cdef Py_ssize_t o, i, j, k, w
    cdef floating d
    for o in range(n_out):
        w = o * n_in
        for j in range(w, w + n_in):
            grads[j] = 0
        for i in range(n):
            d = D[i * n_out + o]
            for k in range(indptr[i], indptr[i + 1]):
                grads[w + indices[k]] += d * data[k]


cdef void _forward_sparse(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                          floating[::1] params, floating[::1] A, floating[::1] Z,
                          bint keep_logits, const floating[::1] data, const int[::1] indices,
                          const Py_ssize_t[::1] indptr) noexcept nogil:
    """_forward with the input the CSR batch: OUT A^(1) .. A^(L), A^(1) at A[0]."""
    cdef Py_ssize_t n_in = sizes[0], n_out = sizes[1]
    _csr_product(data, indices, indptr, n, n_in, n_out, params, A)
    _finish_layer(codes, 0, n, n_out, params, n_out * n_in, A, 0, Z, keep_logits)
    _forward_from(sizes, codes, n, params, A, Z, keep_logits, 1, n_out * (n_in + 1), 0)


cdef void _backward_sparse(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                           floating[::1] params, floating[::1] grads, floating[::1] A,
                           floating[::1] D, bint update, floating lr,
                           const floating[::1] data, const int[::1] indices,
                           const Py_ssize_t[::1] indptr) noexcept nogil:
    """_backward after _forward_sparse: the layers above the first as dense,
    then the first layer's gradient from the CSR batch (no input delta)."""
    cdef Py_ssize_t n_in = sizes[0], n_out = sizes[1]
    _backward_down_to(sizes, codes, n, params, grads, A, D, update, lr, 1)
    _csr_gradient(data, indices, indptr, n, n_in, n_out, D, grads)
    _column_sums(D, 0, n, n_out, grads, n_out * n_in)
    if update:
        _sgd(params, grads, lr, 0, n_out * (n_in + 1))


cdef double _sparse_pass(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                         floating[::1] params, floating[::1] grads, floating[::1] A,
                         floating[::1] D, floating[::1] Z, const floating[::1] Y,
                         const double[::1] w, bint weighted, int loss, int mode, floating lr,
                         const floating[::1] data, const int[::1] indices,
                         const Py_ssize_t[::1] indptr) noexcept nogil:
    """One pass on a CSR batch, as the mode names it (PREDICT and FORWARD
    return 0); GRADIENTS and BACKWARD with weighted are those of the
    w-weighted mean loss."""
    cdef bint logits = codes[codes.shape[0] - 1] == SOFTMAX and mode != PREDICT
    cdef double value
    if mode != BACKWARD:
        _forward_sparse(sizes, codes, n, params, A, Z, logits, data, indices, indptr)
    if mode == PREDICT or mode == FORWARD:
        return 0
    if weighted and (mode == GRADIENTS or mode == BACKWARD):
        value = _weighted_output_delta(sizes, codes, n, A, D, Z, Y, w, loss)
    else:
        value = _forward_loss(sizes, codes, n, A, D, Z, Y, loss)
    if mode != LOSS_ONLY:
        _backward_sparse(sizes, codes, n, params, grads, A, D, mode == TRAIN, lr,
                         data, indices, indptr)
    return value


cdef Py_ssize_t _sparse_epoch(const Py_ssize_t[::1] sizes, const int[::1] codes,
                              floating[::1] params, floating[::1] grads,
                              floating[::1] storage, const floating[::1] data,
                              const int[::1] indices, const Py_ssize_t[::1] indptr,
                              const floating[:, ::1] Y, const Py_ssize_t[::1] order,
                              Py_ssize_t batch_size, int loss, bint train, floating lr,
                              double[::1] losses, floating[::1] bdata, int[::1] bindices,
                              Py_ssize_t[::1] bindptr, bint* bad_row) noexcept nogil:
    """_epoch for a CSR data set (data, indices, indptr; Y its targets): each
    batch gathered into the batch CSR buffers and the targets' buffer, then
    _sparse_pass (TRAIN, or LOSS_ONLY without train). Stops, setting bad_row,
    before a batch that cannot be gathered."""
    cdef Py_ssize_t L = codes.shape[0], n = Y.shape[0], k = sizes[L], width_sum = 0, l
    cdef Py_ssize_t start = 0, m, m_views = 0, batch = 0
    cdef Py_ssize_t ends[4]
    cdef bint logits = codes[L - 1] == SOFTMAX
    cdef floating[::1] A, D, Z, T
    cdef double value
    for l in range(1, L + 1):
        width_sum += sizes[l]
    while start < n:
        m = min(batch_size, n - start)
        if m != m_views:
            _work_bounds(m, width_sum, 0, k, logits, ends)
            A = storage[:ends[0]]
            D = storage[ends[0]:ends[1]]
            Z = storage[ends[1]:ends[2]]
            T = storage[ends[2]:ends[3]]
            m_views = m
        if not (_gather_csr(data, indices, indptr, order, start, m, sizes[0],
                            bdata, bindices, bindptr)
                and _gather_rows(Y, order, start, m, T)):
            bad_row[0] = True
            break
        value = _sparse_pass(sizes, codes, m, params, grads, A, D, Z, T, losses, False, loss,
                             TRAIN if train else LOSS_ONLY, lr, bdata, bindices, bindptr)
        losses[batch] = value
        batch += 1
        start += m
        if train and not isfinite(value):
            break
    return batch


cdef Py_ssize_t _csr_batch_nonzeros(const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                                    Py_ssize_t start, Py_ssize_t stop, Py_ssize_t batch_size,
                                    Py_ssize_t nnz) noexcept:
    """The most nonzeros of any batch of batch_size rows (order[start:stop],
    or start .. stop-1 when order is empty), or -1 at a row outside the data
    set or a row range not within [0, nnz] and increasing."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, most = 0, total, i, end, row, lo, hi
    if order.shape[0] != 0 and order.shape[0] < stop:
        return -1
    while start < stop:
        end = min(start + batch_size, stop)
        total = 0
        for i in range(start, end):
            row = i if order.shape[0] == 0 else order[i]
            if row < 0 or row >= n:
                return -1
            lo = indptr[row]
            hi = indptr[row + 1]
            if lo < 0 or hi < lo or hi > nnz:
                return -1
            total += hi - lo
        most = max(most, total)
        start = end
    return most


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


cdef bint _predictions_finite(const Py_ssize_t[::1] sizes, const int[::1] codes,
                              floating[::1] params, floating[::1] P, floating[::1] Z,
                              const floating[:, ::1] X, Py_ssize_t batch_size) noexcept nogil:
    """Whether the forward pass gives a finite output for every row of X, taken
    batch_size rows at a time through P (room for batch_size samples)."""
    cdef Py_ssize_t L = codes.shape[0], n = X.shape[0], n_in = X.shape[1], k = sizes[L]
    cdef Py_ssize_t width_sum = 0, start = 0, m, l
    for l in range(L + 1):
        width_sum += sizes[l]
    while start < n:
        m = min(batch_size, n - start)
        memcpy(&P[0], &X[start, 0], m * n_in * sizeof(floating))
        _forward(sizes, codes, m, params, P, Z, False)
        if not _all_finite(P[m * (width_sum - k):m * width_sum]):
            return False
        start += m
    return True


cdef bint _all_finite(const floating[::1] v) noexcept nogil:
    """Whether no entry of v is NaN or infinite: x - x is 0 for every finite x
    and NaN otherwise, a test without branches that the compiler vectorises."""
    cdef Py_ssize_t i
    cdef floating zero = 0
    cdef bint finite = True
    for i in range(v.shape[0]):
        finite &= (v[i] - v[i]) == zero
    return finite


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


cdef object _check_order(object order, Py_ssize_t n):
    """order as _epoch reads it: n indices in [0, n), intp, C-contiguous."""
    cdef Py_ssize_t bad
    if order is None:
        return _IN_ORDER
    if not cnp.PyArray_Check(order) or cnp.PyArray_TYPE(order) != cnp.NPY_INTP:
        got = order.dtype if cnp.PyArray_Check(order) else type(order).__name__
        raise TypeError(f"order must be None or a numpy array of dtype intp, got {got}")
    order = np.asarray(order)   # the base class: nothing a subclass overrides is used
    if cnp.PyArray_NDIM(order) != 1 or cnp.PyArray_DIM(order, 0) != n:
        raise ValueError(f"order must hold one index per sample, shape ({n},), "
                         f"got {order.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(order) and cnp.PyArray_ISBEHAVED_RO(order)):
        raise ValueError("order must be C-contiguous, aligned and in native byte order")
    bad = _first_outside(order, n)
    if bad >= 0:
        raise ValueError(f"order must hold indices in [0, {n}), got order[{bad}] = {order[bad]}")
    return order


cdef int _check_losses(object losses, Py_ssize_t n_batches) except -1:
    """losses can take one float64 for each of n_batches batches."""
    if not cnp.PyArray_Check(losses) or cnp.PyArray_TYPE(losses) != cnp.NPY_DOUBLE:
        got = losses.dtype if cnp.PyArray_Check(losses) else type(losses).__name__
        raise TypeError(f"losses must be a numpy array of dtype float64, got {got}")
    if cnp.PyArray_NDIM(losses) != 1 or cnp.PyArray_DIM(losses, 0) < n_batches:
        raise ValueError(f"losses must be 1-D with room for the {n_batches} batches, "
                         f"got shape {losses.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(losses) and cnp.PyArray_ISBEHAVED(losses)):
        raise ValueError("losses must be C-contiguous, aligned and writable")
    return 0


cdef Py_ssize_t _first_outside(const Py_ssize_t[::1] order, Py_ssize_t n) noexcept:
    """The position of the first index of order outside [0, n), or -1."""
    cdef Py_ssize_t i
    for i in range(order.shape[0]):
        if order[i] < 0 or order[i] >= n:
            return i
    return -1


# ---------------------------------------------------------------------------
# Engine: the buffers of one network, and the checked doors into the kernels
# ---------------------------------------------------------------------------

# The buffers start on a cache line: a vector load of 64 bytes (an AVX-512
# register) that straddles two lines made the small-product kernel up to a
# third slower, and NumPy promises only 16-byte alignment.
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
    cdef Py_ssize_t[::1] _sizes
    cdef int[::1] _codes
    cdef int _typenum, _last_code
    cdef bint _double
    cdef Py_ssize_t _n_in, _n_out, _width_sum
    cdef Py_ssize_t _gil_min_batch    # from this many samples a pass releases the GIL
    cdef Py_ssize_t _max_batch        # the most samples whose work buffers can be addressed
    cdef double[::1] _p64, _g64, _A64, _D64, _Z64, _Y64, _P64
    cdef float[::1] _p32, _g32, _A32, _D32, _Z32, _Y32, _P32
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
        self._sizes = np.array(sizes, dtype=np.intp)
        self._codes = np.array(codes, dtype=np.intc)
        self.dtype = dtype
        self._double = self.dtype == np.float64
        self._typenum = self.dtype.num
        self._n_in = sizes[0]
        self._n_out = sizes[len(sizes) - 1]
        self._last_code = codes[len(codes) - 1]
        self._width_sum = sum(sizes)
        self._loss_codes = {name: code for name, code in LOSSES.items()
                            if (code != BCE or self._last_code == SIGMOID)
                            and (code != CROSS_ENTROPY or self._last_code == SOFTMAX)}
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
        if self._double:
            self._p64 = self._params
            self._g64 = self._grads
        else:
            self._p32 = self._params
            self._g32 = self._grads
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
        _work_bounds(n, self._width_sum - self._n_in + n_in, n_in, self._n_out,
                     self._last_code == SOFTMAX, ends)
        if self._storage is None or ends[3] > cnp.PyArray_DIM(self._storage, 0):
            self._storage = _aligned_zeros(ends[3], self.dtype)
        self._activations = self._storage[:ends[0]]
        self._deltas = self._storage[ends[0]:ends[1]]
        self._logits_buffer = self._storage[ends[1]:ends[2]]
        self._targets_buffer = self._storage[ends[2]:ends[3]]
        if self._double:
            self._A64 = self._activations
            self._D64 = self._deltas
            self._Z64 = self._logits_buffer
            self._Y64 = self._targets_buffer
        else:
            self._A32 = self._activations
            self._D32 = self._deltas
            self._Z32 = self._logits_buffer
            self._Y32 = self._targets_buffer
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
        if self._double:
            self._P64 = self._predict_buffer
        else:
            self._P32 = self._predict_buffer
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
        last = _name(self._last_code)
        if code == BCE:
            raise ValueError(f"loss='bce' needs a sigmoid output layer, not {last!r}")
        raise ValueError(f"loss='cross_entropy' needs a softmax output layer, not {last!r}")

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
        # Releasing and retaking the GIL costs about as much as a one-sample
        # pass of a tiny network; below GIL_MIN_WORK the pass is over before
        # another thread could have used it (NumPy's ufunc loops do the same).
        # For sgd_step, n = 1 counts one sweep over the parameters.
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
        if self._double:
            _forward(self._sizes, self._codes, n, self._p64, self._A64, self._Z64, keep_logits)
        else:
            _forward(self._sizes, self._codes, n, self._p32, self._A32, self._Z32, keep_logits)

    cdef void _forward_predict(self, Py_ssize_t n) noexcept nogil:
        if self._double:
            _forward(self._sizes, self._codes, n, self._p64, self._P64, self._Z64, False)
        else:
            _forward(self._sizes, self._codes, n, self._p32, self._P32, self._Z32, False)

    cdef double _backward_pass(self, Py_ssize_t n, int code) noexcept nogil:
        if self._double:
            return _loss_and_backward(self._sizes, self._codes, n, self._p64, self._g64,
                                      self._A64, self._D64, self._Z64, self._Y64, code)
        return _loss_and_backward(self._sizes, self._codes, n, self._p32, self._g32,
                                  self._A32, self._D32, self._Z32, self._Y32, code)

    cdef void _sgd_pass(self, double step) noexcept nogil:
        if self._double:
            _sgd_by_layer(self._sizes, self._p64, self._g64, step)
        else:
            _sgd_by_layer(self._sizes, self._p32, self._g32, <float>step)

    cdef double _train_pass(self, Py_ssize_t n, int code, double step) noexcept nogil:
        if self._double:
            return _train_step(self._sizes, self._codes, n, self._p64, self._g64,
                               self._A64, self._D64, self._Z64, self._Y64, code, step)
        return _train_step(self._sizes, self._codes, n, self._p32, self._g32,
                           self._A32, self._D32, self._Z32, self._Y32, code, <float>step)

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
                if _overlaps(out, self._activations):
                    # The pass would overwrite the activations it keeps for backward.
                    raise ValueError("out must not share memory with the network's activations "
                                     "(forward keeps them for backward); use predict, or "
                                     "another array")
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
        if self._double:
            return _weighted_loss_and_backward(self._sizes, self._codes, n, self._p64,
                                               self._g64, self._A64, self._D64, self._Z64,
                                               self._Y64, w, code)
        return _weighted_loss_and_backward(self._sizes, self._codes, n, self._p32, self._g32,
                                           self._A32, self._D32, self._Z32, self._Y32, w, code)

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
        cdef Py_ssize_t need = _csr_batch_nonzeros(indptr, order, start, start + m, m, nnz)
        cdef bint ok
        cdef const double[::1] d64
        cdef const float[::1] d32
        cdef const int[::1] ind = indices
        cdef const Py_ssize_t[::1] ptr = indptr
        cdef const Py_ssize_t[::1] rows = order
        cdef const double[:, ::1] Y64
        cdef const float[:, ::1] Y32
        if need < 0:
            raise ValueError(f"X's row pointers (indptr) must not fall, and lie within [0, {nnz}] "
                             "(its stored entries)")
        b.reserve(self.dtype, need, m)
        if self._double:
            d64 = data
            with nogil:
                ok = _gather_csr(d64, ind, ptr, rows, start, m, self._n_in, b.d64, b.ind, b.ptr)
            if ok and Y is not None:
                Y64 = Y
                ok = _gather_rows(Y64, rows, start, m, (self._P64 if predict else self._Y64))
        else:
            d32 = data
            with nogil:
                ok = _gather_csr(d32, ind, ptr, rows, start, m, self._n_in, b.d32, b.ind, b.ptr)
            if ok and Y is not None:
                Y32 = Y
                ok = _gather_rows(Y32, rows, start, m, (self._P32 if predict else self._Y32))
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
        cdef double[::1] d64 = b.d64
        cdef float[::1] d32 = b.d32
        cdef int[::1] ind = b.ind
        cdef Py_ssize_t[::1] ptr = b.ptr
        if self._releases_gil(n):
            with nogil:
                value = self._sparse_kernel(n, code, step, mode, w, weighted, d64, d32, ind, ptr,
                                            predict)
        else:
            value = self._sparse_kernel(n, code, step, mode, w, weighted, d64, d32, ind, ptr,
                                        predict)
        return value

    cdef double _sparse_kernel(self, Py_ssize_t n, int code, double step, int mode,
                               const double[::1] w, bint weighted, double[::1] d64,
                               float[::1] d32, int[::1] ind, Py_ssize_t[::1] ptr,
                               bint predict) noexcept nogil:
        if self._double:
            return _sparse_pass(self._sizes, self._codes, n, self._p64, self._g64,
                                self._P64 if predict else self._A64, self._D64, self._Z64,
                                self._Y64, w, weighted, code, mode, step, d64, ind, ptr)
        return _sparse_pass(self._sizes, self._codes, n, self._p32, self._g32,
                            self._P32 if predict else self._A32, self._D32, self._Z32,
                            self._Y32, w, weighted, code, mode, <float>step, d32, ind, ptr)

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
                if _overlaps(out, self._storage):
                    raise ValueError("out must not share memory with the network's activations "
                                     "(forward keeps them for backward); use predict, or "
                                     "another array")
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
        order = _check_order(order, n_rows)
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

    cdef object _run_sparse_epoch(self, data, indices, indptr, Y, order, Py_ssize_t batch_size,
                                  loss, bint train, double step, losses):
        cdef int code = self._loss_code(loss)
        cdef Py_ssize_t n, n_batches, ran, last, batch, need
        cdef bint bad_row = False
        cdef double[::1] out
        cdef double total = 0
        data, indices, indptr = self._csr(data, indices, indptr)
        n = cnp.PyArray_DIM(indptr, 0) - 1
        if n == 0:
            raise ValueError("X holds no samples: an epoch needs at least one")
        Y = self._data_set(Y, "Y", n, self._n_out, True)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_batches = n // batch_size + (n % batch_size != 0)
        order = _check_order(order, n)
        _check_losses(losses, n_batches)
        losses = np.asarray(losses)
        out = losses
        self._acquire()
        try:
            if min(batch_size, n) != self.batch_size or not self._sparse_layout:
                self._resize(min(batch_size, n), True)
            for given in (data, Y, losses):
                for buffer in (self._storage, self._params, self._grads):
                    if _overlaps(given, buffer):
                        raise ValueError("X, Y and losses must not share memory with the "
                                         "network's parameters, gradients or work buffers")
            if (_overlaps(losses, data) or _overlaps(losses, Y) or _overlaps(losses, order)
                    or _overlaps(losses, indices) or _overlaps(losses, indptr)):
                raise ValueError("losses must not share memory with X, Y or order")
            need = _csr_batch_nonzeros(indptr, order, 0, n, batch_size, cnp.PyArray_DIM(data, 0))
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
        for batch in range(ran):
            total += out[batch] * <double>min(batch_size, n - batch * batch_size)
        return ran, total

    cdef Py_ssize_t _sparse_epoch_pass(self, data, indices, indptr, Y, order,
                                       Py_ssize_t batch_size, int code, bint train, double step,
                                       double[::1] out, bint* bad_row) except -1:
        cdef const Py_ssize_t[::1] rows = order
        cdef const int[::1] ind = indices
        cdef const Py_ssize_t[::1] ptr = indptr
        cdef const double[::1] d64
        cdef const float[::1] d32
        cdef const double[:, ::1] Y64
        cdef const float[:, ::1] Y32
        cdef double[::1] S64
        cdef float[::1] S32
        cdef _CSRBuffer b = self._kept_csr
        cdef bint release = self._releases_gil(cnp.PyArray_DIM(Y, 0))
        if cnp.PyArray_DIM(Y, 1) != self._n_out or cnp.PyArray_DIM(Y, 0) != ptr.shape[0] - 1:
            raise ValueError("X and Y changed shape while the epoch was starting")
        if self._double:
            d64, Y64, S64 = data, Y, self._storage
            if release:
                with nogil:
                    return _sparse_epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                                         d64, ind, ptr, Y64, rows, batch_size, code, train, step,
                                         out, b.d64, b.ind, b.ptr, bad_row)
            return _sparse_epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                                 d64, ind, ptr, Y64, rows, batch_size, code, train, step,
                                 out, b.d64, b.ind, b.ptr, bad_row)
        d32, Y32, S32 = data, Y, self._storage
        if release:
            with nogil:
                return _sparse_epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                                     d32, ind, ptr, Y32, rows, batch_size, code, train,
                                     <float>step, out, b.d32, b.ind, b.ptr, bad_row)
        return _sparse_epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                             d32, ind, ptr, Y32, rows, batch_size, code, train, <float>step,
                             out, b.d32, b.ind, b.ptr, bad_row)

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
                if self._double:
                    if not _all_finite(self._P64[m * (width - k):m * width]):
                        return False
                elif not _all_finite(self._P32[m * (width - k):m * width]):
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
        cdef Py_ssize_t n, n_batches, ran, last, batch
        cdef bint bad_row = False
        cdef double[::1] out
        cdef double total = 0
        X = self._data_set(X, "X", 0, self._n_in, False)
        n = cnp.PyArray_DIM(X, 0)
        if n == 0:
            raise ValueError("X holds no samples: an epoch needs at least one")
        Y = self._data_set(Y, "Y", n, self._n_out, True)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_batches = n // batch_size + (n % batch_size != 0)
        order = _check_order(order, n)
        _check_losses(losses, n_batches)
        losses = np.asarray(losses)
        out = losses
        self._acquire()
        try:
            if min(batch_size, n) != self.batch_size or self._sparse_layout:
                self._resize(min(batch_size, n))
            for given in (X, Y, losses):
                for buffer in (self._storage, self._params, self._grads):
                    if _overlaps(given, buffer):
                        raise ValueError("X, Y and losses must not share memory with the "
                                         "network's parameters, gradients or work buffers")
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
        for batch in range(ran):
            total += out[batch] * <double>min(batch_size, n - batch * batch_size)
        return ran, total

    def predicts_finite(self, X, Py_ssize_t batch_size):
        """Whether predict(X) is finite for every sample of X: one compiled call.

        X as train_epoch takes it (the network's dtype, C-contiguous, read in
        place), batch_size samples at a time through predict's own buffer:
        the kept forward pass (activations, deltas) is left as it is.
        """
        cdef Py_ssize_t n
        cdef bint finite
        cdef const double[:, ::1] X64
        cdef const float[:, ::1] X32
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
            if self._double:
                X64 = X
                with nogil:
                    finite = _predictions_finite(self._sizes, self._codes, self._p64, self._P64,
                                                 self._Z64, X64, batch_size)
            else:
                X32 = X
                with nogil:
                    finite = _predictions_finite(self._sizes, self._codes, self._p32, self._P32,
                                                 self._Z32, X32, batch_size)
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
        if self._double:
            return _add_weight_penalty(self._sizes, self._p64, self._g64, scale)
        return _add_weight_penalty(self._sizes, self._p32, self._g32, <float>scale)

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
        if self._double:
            return _all_finite(self._p64)
        return _all_finite(self._p32)

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
        """_epoch on this engine's buffers, without the GIL if the epoch is big enough."""
        cdef const Py_ssize_t[::1] rows = order
        cdef const double[:, ::1] X64, Y64
        cdef const float[:, ::1] X32, Y32
        cdef double[::1] S64
        cdef float[::1] S32
        cdef bint release = self._releases_gil(cnp.PyArray_DIM(X, 0))
        if self._double:
            X64, Y64, S64 = X, Y, self._storage
            _check_epoch_views(X64, Y64, rows, self._n_in, self._n_out)
            if release:
                with nogil:
                    return _epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                                  X64, Y64, rows, batch_size, code, train, step, out, bad_row)
            return _epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                          X64, Y64, rows, batch_size, code, train, step, out, bad_row)
        X32, Y32, S32 = X, Y, self._storage
        _check_epoch_views(X32, Y32, rows, self._n_in, self._n_out)
        if release:
            with nogil:
                return _epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                              X32, Y32, rows, batch_size, code, train, <float>step, out, bad_row)
        return _epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                      X32, Y32, rows, batch_size, code, train, <float>step, out, bad_row)


cdef int _check_epoch_views(const floating[:, ::1] X, const floating[:, ::1] Y,
                            const Py_ssize_t[::1] order, Py_ssize_t n_in,
                            Py_ssize_t n_out) except -1:
    """The shapes _epoch indexes by, read from the buffers themselves: the
    arrays checked before the lock was taken may have been reshaped since."""
    if (X.shape[1] != n_in or Y.shape[1] != n_out or Y.shape[0] != X.shape[0]
            or (order.shape[0] != 0 and order.shape[0] != X.shape[0])):
        raise ValueError("X, Y and order changed shape while the epoch was starting")
    return 0


cdef inline void _copy_in(cnp.ndarray source, cnp.ndarray buffer) noexcept:
    """The opening block of buffer <- all of source (a checked, C-contiguous array)."""
    memcpy(cnp.PyArray_DATA(buffer), cnp.PyArray_DATA(source), cnp.PyArray_NBYTES(source))


cdef inline bint _overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether two C-contiguous arrays share any byte."""
    cdef char* a0 = <char*>cnp.PyArray_DATA(a)
    cdef char* b0 = <char*>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cdef inline void _copy_out(cnp.ndarray buffer, cnp.ndarray out) noexcept:
    """out <- the closing block of buffer: A^(L) ends the activation buffer."""
    cdef Py_ssize_t size = cnp.PyArray_NBYTES(out)
    memcpy(cnp.PyArray_DATA(out), <char*>cnp.PyArray_DATA(buffer) + cnp.PyArray_NBYTES(buffer) - size,
           size)


cdef double TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0


def shuffled_order(cnp.ndarray order, rng):
    """OUT order: a random permutation of 0 .. n-1, drawn from rng.

    rng is a ``numpy.random.Generator``, and gives one number:
    ``s = rng.integers(2**64, dtype=numpy.uint64)``. SplitMix64 spreads s
    into the state of a xoshiro256** generator (Blackman and Vigna's
    recommended seeding), whose outputs x give the uniforms
    u = (x >> 11) 2^-53, and the inside-out Fisher-Yates shuffle takes one
    each: for i = 0, 1, ..., n - 1, with j = min(floor(u * (i + 1)), i),
    ``order[i] = order[j]`` then ``order[j] = i``. NumPy's own generators cost
    three times as much per uniform, which was most of what shuffling added
    to an epoch of a small network. order is a writable C-contiguous intp
    array.
    """
    if not (cnp.PyArray_TYPE(order) == cnp.NPY_INTP and order.ndim == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(order) and cnp.PyArray_ISWRITEABLE(order)):
        raise ValueError("order must be a writable 1-D C-contiguous intp array")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    bit_generator = rng.bit_generator
    cdef bitgen_t* bitgen = <bitgen_t*>PyCapsule_GetPointer(bit_generator.capsule,
                                                            "BitGenerator")
    cdef uint64_t seed
    cdef uint64_t state[4]
    cdef Py_ssize_t[::1] out = order
    cdef Py_ssize_t i, j, n = out.shape[0]
    with bit_generator.lock:   # the lock every Generator method takes
        seed = bitgen.next_uint64(bitgen.state)   # what integers(2**64) draws
    with nogil:
        for i in range(4):
            state[i] = _splitmix64(&seed)
        for i in range(n):
            j = <Py_ssize_t>(<double>(_xoshiro256starstar(state) >> 11) * TWO_TO_MINUS_53
                             * <double>(i + 1))
            if j > i:   # never: u <= 1 - 2^-53 keeps u (i + 1) below i + 1; but
                j = i   # an index past i would write outside order
            out[i] = out[j]
            out[j] = i


cdef inline uint64_t _splitmix64(uint64_t* x) noexcept nogil:
    """The next output of SplitMix64 from state x (Steele, Lea and Flood)."""
    cdef uint64_t z
    x[0] += 0x9E3779B97F4A7C15ULL
    z = x[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _xoshiro256starstar(uint64_t* s) noexcept nogil:
    """The next output of xoshiro256** from state s (Blackman and Vigna)."""
    cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


# ---------------------------------------------------------------------------
# The variants of the vector kernels (see _vector_kernels.h and _vector_dispatch.c)
# ---------------------------------------------------------------------------

def vector_variants():
    """The variants of the vector kernels this processor runs, narrowest first.

    Import uses the last, the widest.
    """
    return [cmlp_variants[v].name.decode() for v in range(CMLP_N_VARIANTS)
            if cmlp_variant_runs(v)]


def vector_variant():
    """The name of the variant of the vector kernels in use."""
    return cmlp_active.name.decode()


def _use_vector_variant(str name):
    """Run the vector kernels of variant ``name``; return the name of the
    variant in use before.

    For the tests, which compare the variants, and the benchmarks; not for
    use while other threads are in the kernels.
    """
    cdef int v
    previous = vector_variant()
    for v in range(CMLP_N_VARIANTS):
        if cmlp_variant_runs(v) and cmlp_variants[v].name.decode() == name:
            cmlp_use_variant(v)
            return previous
    raise ValueError(f"this processor runs the variants {vector_variants()}, not {name!r}")


def blas_min_work():
    """Products of fewer multiply-adds than this go to the small-product kernel."""
    return BLAS_MIN_WORK


def gil_release_min_work():
    """Passes of at least this many multiply-adds release the GIL while they compute."""
    return GIL_MIN_WORK


def _set_blas_min_work(Py_ssize_t blas_min_work):
    """Set BLAS_MIN_WORK; return the previous value.

    For benchmarks/blas_threshold.py, which measures where BLAS starts to pay,
    and the tests, which send every product one way; not for use while other
    threads are in the kernels.
    """
    global BLAS_MIN_WORK
    previous = BLAS_MIN_WORK
    BLAS_MIN_WORK = blas_min_work
    return previous


# The variant CMLP_VECTOR_VARIANT asked for when cmlp was imported ("" if none):
# read once, so that what reports it (cmlp.show_config) and what acted on it agree.
VARIANT_ASKED_AT_IMPORT = os.environ.get("CMLP_VECTOR_VARIANT", "")


def _variant_at_import():
    """The widest variant the processor runs, or the one CMLP_VECTOR_VARIANT
    names, which must be one the processor runs."""
    runs = vector_variants()
    asked = VARIANT_ASKED_AT_IMPORT
    if not asked:
        return runs[len(runs) - 1]  # wraparound is off in this module
    if asked not in runs:
        built = [cmlp_variants[v].name.decode() for v in range(CMLP_N_VARIANTS)]
        why = "this processor does not run it" if asked in built else f"cmlp has the variants {built}"
        raise RuntimeError(f"CMLP_VECTOR_VARIANT={asked!r} cannot be used: {why}; "
                           f"this processor runs {runs}")
    return asked


_use_vector_variant(_variant_at_import())


cdef str _name(int code):
    for name, value in ACTIVATIONS.items():
        if value == code:
            return name
    return str(code)
