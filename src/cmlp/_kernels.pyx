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
kernel (register-blocked C, in ``_vector_kernels.h``) for the layers where a
BLAS call costs more than the work, and ``scipy.linalg.cython_blas`` (no
link-time BLAS dependency) beyond that. The header's kernels, and the
element-wise passes beside them, are built for SSE2, AVX2 and AVX-512 on x86;
import picks the widest the processor runs (:func:`vector_variant`).
"""
from cython cimport floating
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_release_lock, PyThread_type_lock,
)
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.pycapsule cimport PyCapsule_GetPointer
from numpy.random cimport bitgen_t
from libc.math cimport exp, expf, isfinite, log, tanh, tanhf
from libc.limits cimport INT_MAX
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport daxpy, dgemm, saxpy, sgemm

cimport numpy as cnp
import numpy as np

from cmlp._validation import as_output, as_samples, as_targets, check_learning_rate

cnp.import_array()

# The element-wise passes and the small-product kernel, in C so that the
# compiler vectorises them, once for each instruction set (see the header).
cdef extern from "_vector_kernels.h":
    const double CMLP_SIGMOID_RANGE_D
    const float CMLP_SIGMOID_RANGE_F
    bint cmlp_add_bias_d(double* z, const double* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil
    bint cmlp_add_bias_f(float* z, const float* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil
    double cmlp_sigmoid_d(double z) noexcept nogil
    float cmlp_sigmoid_f(float z) noexcept nogil
    void cmlp_sigmoid_block_d(double* z, Py_ssize_t m) noexcept nogil
    void cmlp_sigmoid_block_f(float* z, Py_ssize_t m) noexcept nogil
    void cmlp_sigmoid_backprop_d(double* d, const double* a, Py_ssize_t count) noexcept nogil
    void cmlp_sigmoid_backprop_f(float* d, const float* a, Py_ssize_t count) noexcept nogil
    void cmlp_column_sums_d(const double* D, Py_ssize_t n, Py_ssize_t m, double* out) noexcept nogil
    void cmlp_column_sums_f(const float* D, Py_ssize_t n, Py_ssize_t m, float* out) noexcept nogil
    void cmlp_sgd_d(double* p, const double* g, double lr, Py_ssize_t count) noexcept nogil
    void cmlp_sgd_f(float* p, const float* g, float lr, Py_ssize_t count) noexcept nogil
    const Py_ssize_t CMLP_GEMM_MAX_K
    void cmlp_small_gemm_d(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const double* A, const double* B, double* C) noexcept nogil
    void cmlp_small_gemm_f(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const float* A, const float* B, float* C) noexcept nogil
    ctypedef struct cmlp_vector_kernels:
        const char* name
    const cmlp_vector_kernels cmlp_variants[]
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

cdef enum:
    MSE = 0
    HALF_SSE = 1
    BCE = 2
    CROSS_ENTROPY = 3

ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "tanh": TANH,
               "relu": RELU, "softmax": SOFTMAX}
LOSSES = {"mse": MSE, "half_sse": HALF_SSE, "bce": BCE,
          "cross_entropy": CROSS_ENTROPY}

# Where a product goes: below BLAS_MIN_WORK multiply-adds always to the
# compiled small-product kernel, where a BLAS call, its checks and its packing
# of the operands cost more than the arithmetic; below SMALL_GEMM_MAX_WORK
# too when C has at least SMALL_GEMM_MIN_SIDE rows and columns, enough to fill
# the kernel's blocks and repay its panel of B^T; BLAS beyond. Set for the
# variant of the vector kernels in use (GEMM_THRESHOLDS, below).
cdef Py_ssize_t BLAS_MIN_WORK
cdef Py_ssize_t SMALL_GEMM_MAX_WORK
cdef Py_ssize_t SMALL_GEMM_MIN_SIDE = 16
# Rows of at most this many entries are gathered by a loop, longer ones by memcpy.
cdef Py_ssize_t SHORT_ROW = 32
# From this many entries an SGD update goes to BLAS's axpy (see _sgd).
cdef Py_ssize_t SGD_BLAS_MIN = 65536
# Below this many multiply-adds (batch size times parameters) a pass keeps the
# GIL: releasing and retaking it would cost more than the pass itself.
cdef Py_ssize_t GIL_MIN_WORK = 4096
# The same, for the documentation's tests: the guides quote it.
GIL_RELEASE_MIN_WORK = GIL_MIN_WORK
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
        cmlp_small_gemm_f(trans_a, trans_b, M, N, K, &A[a0], &B[b0], &C[c0])
    else:
        cmlp_small_gemm_d(trans_a, trans_b, M, N, K, &A[a0], &B[b0], &C[c0])


cdef inline bint _blas_pays(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t work = M * N * K
    if K > CMLP_GEMM_MAX_K or work >= SMALL_GEMM_MAX_WORK:
        return True
    return work >= BLAS_MIN_WORK and (M < SMALL_GEMM_MIN_SIDE or N < SMALL_GEMM_MIN_SIDE)


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
        in_range = cmlp_add_bias_f(&Z[z0], &params[b0], n, m)
        limit = CMLP_SIGMOID_RANGE_F
    else:
        in_range = cmlp_add_bias_d(&Z[z0], &params[b0], n, m)
        limit = CMLP_SIGMOID_RANGE_D
    if in_range:
        if floating is float:
            cmlp_sigmoid_block_f(&Z[z0], n * m)
        else:
            cmlp_sigmoid_block_d(&Z[z0], n * m)
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
            cmlp_sigmoid_backprop_f(&D[d0], &A[a0], s)
        else:
            cmlp_sigmoid_backprop_d(&D[d0], &A[a0], s)
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
    cdef Py_ssize_t L = codes.shape[0], l, i, n_in, n_out
    cdef Py_ssize_t w0 = 0, a_prev = 0, a_next
    for l in range(L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        a_next = a_prev + n * n_in
        # Z = A_prev W^T + b ; A = f(Z)
        _gemm(False, True, n, n_out, n_in, A, a_prev, params, w0, A, a_next)
        if keep_logits and l == L - 1:
            _add_bias_and_activate(IDENTITY, A, a_next, params, w0 + n_out * n_in, n, n_out)
            memcpy(&Z[0], &A[a_next], n * n_out * sizeof(floating))
            for i in range(n):
                _softmax_row(A, a_next + i * n_out, n_out)
        else:
            _add_bias_and_activate(codes[l], A, a_next, params, w0 + n_out * n_in, n, n_out)
        w0 += n_out * (n_in + 1)
        a_prev = a_next


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
    cdef Py_ssize_t L = codes.shape[0], l, n_in, n_out
    cdef Py_ssize_t w0 = params.shape[0], a_prev = A.shape[0], d0 = D.shape[0]
    a_prev -= n * sizes[L]
    for l in range(L - 1, -1, -1):
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
        cmlp_column_sums_f(&D[d0], n, m, &out[o0])
    else:
        cmlp_column_sums_d(&D[d0], n, m, &out[o0])


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
        cmlp_sgd_f(&params[start], &grads[start], lr, stop - start)
    else:
        cmlp_sgd_d(&params[start], &grads[start], lr, stop - start)


cdef void _sgd_by_layer(const Py_ssize_t[::1] sizes, floating[::1] params,
                        const floating[::1] grads, floating lr) noexcept nogil:
    """The SGD step of every layer, each as _backward takes it: the same
    route (own loop or BLAS) for a layer of a given size, so the same bits."""
    cdef Py_ssize_t l, start = 0, stop
    for l in range(sizes.shape[0] - 1):
        stop = start + sizes[l + 1] * (sizes[l] + 1)
        _sgd(params, grads, lr, start, stop)
        start = stop


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


cdef bint _all_finite(const floating[::1] v) noexcept nogil:
    """Whether no entry of v is NaN or infinite: x - x is 0 for every finite x
    and NaN otherwise, a test without branches that the compiler vectorises."""
    cdef Py_ssize_t i
    cdef floating zero = 0
    cdef bint finite = True
    for i in range(v.shape[0]):
        finite &= (v[i] - v[i]) == zero
    return finite


cdef object _check_order(object order, Py_ssize_t n):
    """order as _epoch reads it: n indices in [0, n), intp, C-contiguous."""
    cdef Py_ssize_t bad
    if order is None:
        return _IN_ORDER
    if not cnp.PyArray_Check(order) or cnp.PyArray_TYPE(order) != cnp.NPY_INTP:
        got = order.dtype if cnp.PyArray_Check(order) else type(order).__name__
        raise TypeError(f"order must be None or a numpy array of dtype intp, got {got}")
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
    cdef Py_ssize_t start = <Py_ssize_t>((BUFFER_ALIGNMENT - address % BUFFER_ALIGNMENT)
                                          % BUFFER_ALIGNMENT)
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
    model never see half-updated buffers.

    Inputs that are already what the kernels read (an ndarray of the
    network's dtype, C-contiguous, aligned, native byte order, of an accepted
    shape) are checked in C and copied straight into the work buffers; only
    anything else goes through the Python checks of ``_validation``. That fast
    door is what keeps a one-sample step of a tiny network under a microsecond.
    """
    cdef readonly object dtype
    cdef readonly object params, grads
    cdef readonly object activations_buffer, deltas_buffer
    cdef readonly Py_ssize_t batch_size
    cdef readonly bint has_forward
    cdef bint _single   # the last kept forward pass was given one sample, 1-D
    cdef object _logits_buffer, _targets_buffer, _predict_buffer
    cdef object _storage, _predict_storage   # the allocations behind the work buffers
    cdef Py_ssize_t _capacity, _predict_capacity   # samples each storage has room for
    cdef Py_ssize_t _predict_size   # samples the predict buffer holds
    cdef dict _loss_codes           # the losses the output layer admits: name -> code
    cdef Py_ssize_t[::1] _sizes
    cdef int[::1] _codes
    cdef int _typenum, _last_code
    cdef bint _double
    cdef Py_ssize_t _n_in, _n_out, _width_sum
    cdef Py_ssize_t _work_per_sample  # multiply-adds of one sample's forward pass
    cdef double[::1] _p64, _g64, _A64, _D64, _Z64, _Y64, _P64
    cdef float[::1] _p32, _g32, _A32, _D32, _Z32, _Y32, _P32
    cdef PyThread_type_lock _lock

    def __cinit__(self, sizes, codes, dtype):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("could not allocate a lock")

    def __init__(self, sizes, codes, dtype):
        """Engine(sizes, codes, dtype): sizes and activation codes already checked."""
        self._sizes = np.array(sizes, dtype=np.intp)
        self._codes = np.array(codes, dtype=np.intc)
        self.dtype = np.dtype(dtype)
        self._double = self.dtype == np.float64
        self._typenum = self.dtype.num
        self._n_in = self._sizes[0]
        self._n_out = self._sizes[self._sizes.shape[0] - 1]
        self._last_code = self._codes[self._codes.shape[0] - 1]
        self._width_sum = int(np.sum(self._sizes))
        self._loss_codes = {name: code for name, code in LOSSES.items()
                            if (code != BCE or self._last_code == SIGMOID)
                            and (code != CROSS_ENTROPY or self._last_code == SOFTMAX)}
        sizes_list = [int(s) for s in sizes]
        n_params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes_list, sizes_list[1:]))
        self._work_per_sample = n_params
        self.params = _aligned_zeros(n_params, self.dtype)
        self.grads = _aligned_zeros(n_params, self.dtype)
        if self._double:
            self._p64 = self.params
            self._g64 = self.grads
        else:
            self._p32 = self.params
            self._g32 = self.grads
        self._resize(0)
        self._resize_predict(0)

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    # -- buffers --------------------------------------------------------------

    cdef _resize(self, Py_ssize_t n):
        """Size the work buffers for batches of n samples.

        The storage behind them only grows: a smaller batch (the last, partial
        one of an epoch) uses the front of it, so alternating batch sizes cost
        four array views, never a new buffer.
        """
        cdef Py_ssize_t ends[4]
        _check_batch_size(n)
        _work_bounds(n, self._width_sum, self._n_in, self._n_out, self._last_code == SOFTMAX, ends)
        if self._storage is None or n > self._capacity:
            self._storage = _aligned_zeros(ends[3], self.dtype)
            self._capacity = n
        self.activations_buffer = self._storage[:ends[0]]
        self.deltas_buffer = self._storage[ends[0]:ends[1]]
        self._logits_buffer = self._storage[ends[1]:ends[2]]
        self._targets_buffer = self._storage[ends[2]:ends[3]]
        if self._double:
            self._A64 = self.activations_buffer
            self._D64 = self.deltas_buffer
            self._Z64 = self._logits_buffer
            self._Y64 = self._targets_buffer
        else:
            self._A32 = self.activations_buffer
            self._D32 = self.deltas_buffer
            self._Z32 = self._logits_buffer
            self._Y32 = self._targets_buffer
        self.batch_size = n
        self.has_forward = False

    cdef _resize_predict(self, Py_ssize_t n):
        """Size the activations of predict (kept apart from forward's) for n samples; grows only."""
        _check_batch_size(n)
        if self._predict_storage is None or n > self._predict_capacity:
            self._predict_storage = _aligned_zeros(n * self._width_sum, self.dtype)
            self._predict_capacity = n
        self._predict_buffer = self._predict_storage[:n * self._width_sum]
        if self._double:
            self._P64 = self._predict_buffer
        else:
            self._P32 = self._predict_buffer
        self._predict_size = n

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
        if (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(out) == self._typenum
                and cnp.PyArray_NDIM(out) == nd and cnp.PyArray_DIM(out, 0) == dims[0]
                and (single or cnp.PyArray_DIM(out, 1) == dims[1])
                and cnp.PyArray_IS_C_CONTIGUOUS(out) and cnp.PyArray_ISBEHAVED(out)):
            return out
        shape = <tuple>(self._n_out,) if single else <tuple>(n, self._n_out)
        return as_output(out, shape, self.dtype)

    cdef int _loss_code(self, loss) except -1:
        try:
            return self._loss_codes[loss]
        except (KeyError, TypeError):
            pass
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

    cdef int _acquire(self) except -1:
        # Uncontended, this is one atomic operation; only waiting drops the GIL.
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)
        return 0

    cdef inline void _release(self) noexcept:
        PyThread_release_lock(self._lock)

    cdef inline bint _releases_gil(self, Py_ssize_t n) noexcept:
        # Releasing and retaking the GIL costs about as much as a one-sample
        # pass of a tiny network; below GIL_MIN_WORK the pass is over before
        # another thread could have used it (NumPy's ufunc loops do the same).
        # For sgd_step, n = 1 counts one sweep over the parameters.
        return n * self._work_per_sample >= GIL_MIN_WORK

    cdef void _load_batch(self, object X, object Y, Py_ssize_t n):
        """A^(0) <- X and, if Y is given, the targets buffer <- Y (lock held)."""
        if n != self.batch_size:
            self._resize(n)
        _copy_in(X, self.activations_buffer)
        if Y is not None:
            _copy_in(Y, self._targets_buffer)

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
                if _overlaps(out, self.activations_buffer):
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
                _copy_out(self.activations_buffer, out)
                self.has_forward = True
                self._single = single
            else:
                if n != self._predict_size:
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
            _copy_in(Y, self._targets_buffer)
            if self._releases_gil(n):
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

    cdef object _step(self, X, Y, loss, double step, bint update):
        """The one door of train_step and loss_and_grads: check, then one compiled pass."""
        cdef int code = self._loss_code(loss)
        cdef bint single
        cdef double value
        cdef Py_ssize_t n
        X = self._load_input(X, &n, &single)
        if n == 0:
            raise ValueError("X holds no samples: a step needs at least one")
        Y = self._load_targets(Y, n, single, code)
        self._acquire()
        try:
            self._load_batch(X, Y, n)
            if self._releases_gil(n):
                with nogil:
                    value = self._gradient_pass(n, code, step, update)
            else:
                value = self._gradient_pass(n, code, step, update)
            self.has_forward = True
            self._single = single
        finally:
            self._release()
        return value

    cdef double _gradient_pass(self, Py_ssize_t n, int code, double step,
                               bint update) noexcept nogil:
        if update:
            return self._train_pass(n, code, step)
        self._forward_kept(n, self._last_code == SOFTMAX)
        return self._backward_pass(n, code)

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
        out = losses
        self._acquire()
        try:
            if min(batch_size, n) != self.batch_size:
                self._resize(min(batch_size, n))
            for given in (X, Y, losses):
                for buffer in (self._storage, self.params, self.grads):
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
            if release:
                with nogil:
                    return _epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                                  X64, Y64, rows, batch_size, code, train, step, out, bad_row)
            return _epoch(self._sizes, self._codes, self._p64, self._g64, S64,
                          X64, Y64, rows, batch_size, code, train, step, out, bad_row)
        X32, Y32, S32 = X, Y, self._storage
        if release:
            with nogil:
                return _epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                              X32, Y32, rows, batch_size, code, train, <float>step, out, bad_row)
        return _epoch(self._sizes, self._codes, self._p32, self._g32, S32,
                      X32, Y32, rows, batch_size, code, train, <float>step, out, bad_row)


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
# The variants of the vector kernels (see _vector_kernels.h)
# ---------------------------------------------------------------------------

# (BLAS_MIN_WORK, SMALL_GEMM_MAX_WORK) for each variant. The narrower its
# vectors, the sooner BLAS, which also has FMA, pays. Measured with
# benchmarks/blas_threshold.py --variant (CPU time of one SGD step over 14
# networks and batches, both dtypes; mean ratio to the best setting for each).
GEMM_THRESHOLDS = {"baseline": (512, 512), "avx2": (2048, 2048), "avx512": (2048, 32768)}


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
    """Run the vector kernels of variant ``name``, with its product thresholds;
    return the name of the variant in use before.

    For the tests, which compare the variants, and the benchmarks; not for
    use while other threads are in the kernels.
    """
    cdef int v
    previous = vector_variant()
    for v in range(CMLP_N_VARIANTS):
        if cmlp_variant_runs(v) and cmlp_variants[v].name.decode() == name:
            cmlp_use_variant(v)
            _set_gemm_thresholds(*GEMM_THRESHOLDS[name])
            return previous
    raise ValueError(f"this processor runs the variants {vector_variants()}, not {name!r}")


def _set_gemm_thresholds(Py_ssize_t blas_min_work, Py_ssize_t small_gemm_max_work):
    """Set BLAS_MIN_WORK and SMALL_GEMM_MAX_WORK; return the previous pair.

    For benchmarks/blas_threshold.py, which measures where BLAS starts to pay;
    not for use while other threads are in the kernels.
    """
    global BLAS_MIN_WORK, SMALL_GEMM_MAX_WORK
    previous = (BLAS_MIN_WORK, SMALL_GEMM_MAX_WORK)
    BLAS_MIN_WORK, SMALL_GEMM_MAX_WORK = blas_min_work, small_gemm_max_work
    return previous


_use_vector_variant(vector_variants().pop())  # the widest


cdef int _check_batch_size(Py_ssize_t n) except -1:
    # BLAS counts rows in a C int: a larger batch would overflow it.
    if n > INT_MAX:
        raise ValueError(f"a batch holds at most {INT_MAX} samples, got {n}: split it")
    return 0


cdef str _name(int code):
    for name, value in ACTIVATIONS.items():
        if value == code:
            return name
    return str(code)
