"""The network's maths on flat buffers: forward, output delta, δ recursion, SGD.

The buffers, as ``network.py`` allocates them and the engine hands them in:

``params`` (and ``grads``, same layout)
    for each layer ``l``: ``W`` of shape ``(n_out, n_in)`` row-major, then
    ``b`` of shape ``(n_out,)`` -- the order and shapes of ``torch.nn.Linear``.
``A`` (activations of one batch of ``n`` samples)
    ``A^(0)`` (the input, ``(n, sizes[0])``), then ``A^(1)`` ... ``A^(L)``; a
    pass on a sparse batch holds no ``A^(0)`` (``a_skip`` below).
``D`` (deltas of the same batch)
    ``delta^(1)`` ``(n, sizes[1])`` ... ``delta^(L)``: ``delta = dLoss/dZ`` of
    the *batch* loss, so the ``1/n`` of the batch mean is inside the deltas and
    the gradients are plain sums: ``dW = delta^T A_prev``, ``db = sum(delta)``.

Where each layer's blocks start is in a :c:type:`Layer` (``net_init`` fills
them from the sizes), so each kernel reads like the maths. Everything here
runs without the GIL on buffers the caller checked and sized: nothing here
allocates, validates or raises. The one train step is :c:func:`train_step`;
the engine (``_kernels.pyx``) and the epoch loops (``_batches.pyx``) call it.

Matrix products go through a row-major ``_gemm``: the compiled small-product
kernel (``_vector_kernels.c``, through the table of the variant in use) where a
BLAS call costs more than the work, ``scipy.linalg.cython_blas`` beyond.
Left out: buffers, locks, checks (``_kernels.pyx``); batching and shuffling
(``_batches.pyx``); optimizers with state (``_optim.pyx``).
"""
from cython cimport floating
from libc.math cimport exp, expf, log, tanh, tanhf
from libc.limits cimport INT_MAX
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport daxpy, dgemm, saxpy, sgemm

import os

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

# The codes' public spelling (the codes themselves: _maths.pxd).
ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "tanh": TANH,
               "relu": RELU, "softmax": SOFTMAX}
LOSSES = {"mse": MSE, "half_sse": HALF_SSE, "bce": BCE,
          "cross_entropy": CROSS_ENTROPY}
# The losses each output activation admits: bce needs a sigmoid output, cross_entropy a softmax.
LOSS_NEEDS = {"bce": "sigmoid", "cross_entropy": "softmax"}

# Where a product goes: below BLAS_MIN_WORK multiply-adds to the compiled
# small-product kernel, where a BLAS call, its checks and its packing of the
# operands cost more than the arithmetic; to BLAS beyond. One threshold for
# every variant of the vector kernels, so that a product takes the same route,
# and gives the same bits, on every processor (benchmarks/blas_threshold.py
# measures the choice under each variant).
cdef Py_ssize_t BLAS_MIN_WORK = 2048
# From this many entries an SGD update goes to BLAS's axpy (see sgd).
cdef Py_ssize_t SGD_BLAS_MIN = 65536
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
# The network: forward, the output delta (the loss), delta backpropagation, SGD
# ---------------------------------------------------------------------------

cdef int net_init(Net* net, Layer* layers, const Py_ssize_t* sizes, const int* codes,
                  Py_ssize_t L) noexcept nogil:
    """OUT net and layers[0 .. L-1]: the offsets of a network of L layers of
    the given sizes (L + 1 of them) and activation codes (L); layers is the
    caller's, and must outlive net."""
    cdef Py_ssize_t l, w = 0, a = 0, d = 0
    for l in range(L):
        layers[l].n_in = sizes[l]
        layers[l].n_out = sizes[l + 1]
        layers[l].w = w
        layers[l].b = w + sizes[l + 1] * sizes[l]
        layers[l].a_in = a
        layers[l].a_out = a + sizes[l]
        layers[l].d = d
        layers[l].f = codes[l]
        w += sizes[l + 1] * (sizes[l] + 1)
        a += sizes[l]
        d += sizes[l + 1]
    net.layers = layers
    net.L = L
    net.n_params = w
    net.width = a + sizes[L]
    net.width_d = d
    net.logits = L > 0 and codes[L - 1] == SOFTMAX
    return 0


cdef void forward(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] A,
                  floating[::1] Z, bint keep_logits) noexcept nogil:
    """INOUT A: reads A^(0), writes A^(1) .. A^(L).

    With keep_logits (a softmax output), the output layer's z is also copied
    into Z (n, k): cross-entropy needs z itself for its log-sum-exp, as
    softmax(z) may have underflowed to 0.
    """
    _forward_layers(net, 0, n, params, A, Z, keep_logits, 0)


cdef void _forward_layers(const Net* net, Py_ssize_t first, Py_ssize_t n, floating[::1] params,
                          floating[::1] A, floating[::1] Z, bint keep_logits,
                          Py_ssize_t a_skip) noexcept nogil:
    """The layers from first on; A holds no A^(0) .. when a_skip = sizes[0]."""
    cdef Py_ssize_t l
    cdef const Layer* layer
    for l in range(first, net.L):
        layer = &net.layers[l]
        # Z = A_prev W^T + b ; A = f(Z)
        _gemm(False, True, n, layer.n_out, layer.n_in, A, n * (layer.a_in - a_skip),
              params, layer.w, A, n * (layer.a_out - a_skip))
        _finish_layer(net, l, n, params, A, n * (layer.a_out - a_skip), Z, keep_logits)


cdef inline void _finish_layer(const Net* net, Py_ssize_t l, Py_ssize_t n, floating[::1] params,
                               floating[::1] A, Py_ssize_t a0, floating[::1] Z,
                               bint keep_logits) noexcept nogil:
    """INOUT A[a0:] (n, n_out): the product of layer l -> its activation,
    the bias added; the output layer's z kept in Z with keep_logits."""
    cdef Py_ssize_t i
    cdef const Layer* layer = &net.layers[l]
    if keep_logits and l == net.L - 1:
        _add_bias_and_activate(IDENTITY, A, a0, params, layer.b, n, layer.n_out)
        memcpy(&Z[0], &A[a0], n * layer.n_out * sizeof(floating))
        for i in range(n):
            _softmax_row(A, a0 + i * layer.n_out, layer.n_out)
    else:
        _add_bias_and_activate(layer.f, A, a0, params, layer.b, n, layer.n_out)


cdef double output_delta(int loss, floating[::1] A, Py_ssize_t a0,
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


cdef double forward_loss(const Net* net, Py_ssize_t n, floating[::1] A, floating[::1] D,
                         floating[::1] Z, const floating[::1] Y, int loss,
                         Py_ssize_t a_skip) noexcept nogil:
    """The loss of the last forward pass against Y; OUT the output delta delta^(L)."""
    cdef const Layer* out = &net.layers[net.L - 1]
    return output_delta(loss, A, n * (out.a_out - a_skip), Y, D, n * out.d, Z, out.f, n,
                        out.n_out)


cdef double weighted_output_delta(const Net* net, Py_ssize_t n, floating[::1] A,
                                  floating[::1] D, floating[::1] Z, const floating[::1] Y,
                                  const double[::1] w, int loss, Py_ssize_t a_skip) noexcept nogil:
    """The weighted mean loss, sum_i w_i L_i / sum_i w_i; OUT the output delta,
    each row scaled by w_i / sum(w).

    L_i is sample i's loss as output_delta gives it for a batch of one; the
    scaling puts the weighted mean's 1/sum(w) inside the deltas as the
    unweighted mean puts its 1/n there. A batch whose weights sum to 0 has
    loss 0 and zero gradients.
    """
    cdef const Layer* out = &net.layers[net.L - 1]
    cdef Py_ssize_t k = out.n_out, i, j
    cdef Py_ssize_t a0 = n * (out.a_out - a_skip), d0 = n * out.d
    cdef double weight_sum = 0, total = 0, share
    for i in range(n):
        weight_sum += w[i]
    for i in range(n):
        share = w[i] / weight_sum if weight_sum > 0 else 0.0
        total += share * output_delta(loss, A, a0 + i * k, Y[i * k:], D, d0 + i * k,
                                      Z[i * k:], out.f, 1, k)
        for j in range(k):
            D[d0 + i * k + j] = <floating>(share * D[d0 + i * k + j])
    return total


cdef void backward(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] grads,
                   floating[::1] A, floating[::1] D, bint update, floating lr) noexcept nogil:
    """IN A, the output delta delta^(L); OUT grads and the hidden deltas.

    For each layer from the output down:
        dW = delta^T A_prev,   db = sum over samples of delta,
        delta_prev = (delta W) * f'(A_prev).
    With update, the layer then takes its SGD step W <- W - lr dW, b <- b - lr db
    at once, while its gradient is still in cache: W has served delta_prev
    already, and no other layer reads it. The numbers are those of sgd after.
    """
    _backward_layers(net, n, params, grads, A, D, update, lr, 0, 0)


cdef void _backward_layers(const Net* net, Py_ssize_t n, floating[::1] params,
                           floating[::1] grads, floating[::1] A, floating[::1] D, bint update,
                           floating lr, Py_ssize_t last, Py_ssize_t a_skip) noexcept nogil:
    """backward for the layers from the output down to layer last; A holds
    no A^(0) when a_skip = sizes[0]."""
    cdef Py_ssize_t l, a_prev, d0
    cdef const Layer* layer
    cdef const Layer* below
    for l in range(net.L - 1, last - 1, -1):
        layer = &net.layers[l]
        a_prev = n * (layer.a_in - a_skip)
        d0 = n * layer.d
        _gemm(True, False, layer.n_out, layer.n_in, n, D, d0, A, a_prev, grads, layer.w)
        _column_sums(D, d0, n, layer.n_out, grads, layer.b)
        if l > 0:
            below = &net.layers[l - 1]
            _gemm(False, False, n, layer.n_in, layer.n_out, D, d0, params, layer.w,
                  D, n * below.d)
            _backprop_activation(below.f, A, a_prev, D, n * below.d, n, layer.n_in)
        if update:
            sgd(params, grads, lr, layer.w, layer.b + layer.n_out)


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


cdef void sgd(floating[::1] params, const floating[::1] grads, floating lr,
              Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """INOUT params[start:stop] <- params - lr * grads, one pass: the one SGD
    update, which backward, sgd_by_layer and the optimizers all take.

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
    else:
        sgd_entries(&params[start], &grads[start], lr, stop - start)


cdef void sgd_entries(floating* params, const floating* grads, floating lr,
                      Py_ssize_t count) noexcept nogil:
    """INOUT params[0:count] <- params - lr * grads: the update itself, in
    the vector kernels (p - lr g per entry, the same bits in every variant)."""
    if floating is float:
        cmlp_active.sgd_f(params, grads, lr, count)
    else:
        cmlp_active.sgd_d(params, grads, lr, count)


cdef void sgd_by_layer(const Net* net, floating[::1] params, const floating[::1] grads,
                       floating lr) noexcept nogil:
    """The SGD step of every layer, each as backward takes it: the same
    route (own loop or BLAS) for a layer of a given size, so the same bits."""
    cdef Py_ssize_t l
    for l in range(net.L):
        sgd(params, grads, lr, net.layers[l].w, net.layers[l].b + net.layers[l].n_out)


cdef double add_weight_penalty(const Net* net, const floating[::1] params, floating[::1] grads,
                               floating scale) noexcept nogil:
    """INOUT the gradient of every weight matrix += scale * W (the biases' are
    left as they are); returns sum(W**2) over the weights, in double."""
    cdef Py_ssize_t l, i
    cdef double squares = 0
    for l in range(net.L):
        for i in range(net.layers[l].w, net.layers[l].b):
            squares += <double>params[i] * <double>params[i]
            grads[i] += scale * params[i]
    return squares


cdef double train_step(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] grads,
                       floating[::1] A, floating[::1] D, floating[::1] Z,
                       const floating[::1] Y, int loss, floating lr) noexcept nogil:
    """One SGD step: forward (A^(0) already in A), loss, backward with the update."""
    return _train_step(net, n, params, grads, A, D, Z, Y, loss, lr)


cdef inline double _train_step(const Net* net, Py_ssize_t n, floating[::1] params,
                               floating[::1] grads, floating[::1] A, floating[::1] D,
                               floating[::1] Z, const floating[::1] Y, int loss,
                               floating lr) noexcept nogil:
    # train_step, for this module's callers: a static function the compiler may inline.
    _forward_layers(net, 0, n, params, A, Z, net.logits, 0)
    cdef double value = forward_loss(net, n, A, D, Z, Y, loss, 0)
    _backward_layers(net, n, params, grads, A, D, True, lr, 0, 0)
    return value


cdef double loss_and_backward(const Net* net, Py_ssize_t n, floating[::1] params,
                              floating[::1] grads, floating[::1] A, floating[::1] D,
                              floating[::1] Z, const floating[::1] Y, int loss) noexcept nogil:
    """Loss and all gradients from the activations of the last forward pass."""
    cdef double value = forward_loss(net, n, A, D, Z, Y, loss, 0)
    backward(net, n, params, grads, A, D, False, 0)
    return value


cdef double weighted_loss_and_backward(const Net* net, Py_ssize_t n, floating[::1] params,
                                       floating[::1] grads, floating[::1] A, floating[::1] D,
                                       floating[::1] Z, const floating[::1] Y,
                                       const double[::1] w, int loss) noexcept nogil:
    """The sample-weighted mean loss (weighted_output_delta) and its gradients."""
    cdef double total = weighted_output_delta(net, n, A, D, Z, Y, w, loss, 0)
    backward(net, n, params, grads, A, D, False, 0)
    return total


cdef bint all_finite(const floating[::1] v) noexcept nogil:
    """Whether no entry of v is NaN or infinite: x - x is 0 for every finite x
    and NaN otherwise, a test without branches that the compiler vectorises."""
    cdef Py_ssize_t i
    cdef floating zero = 0
    cdef bint finite = True
    for i in range(v.shape[0]):
        finite &= (v[i] - v[i]) == zero
    return finite


# ---------------------------------------------------------------------------
# Sparse input: the first layer's product and gradient from a CSR batch
# ---------------------------------------------------------------------------
#
# The batch is a checked CSR copy that the caller owns (_batches.gather_csr):
# data, column indices (int32: a layer is at most MAX_BLAS_SIZE wide) and the
# batch's row pointers, from 0. The input is not in A: the work buffers of a
# sparse pass are laid out as a dense pass's would be with no A^(0).

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


cdef void _forward_sparse(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] A,
                          floating[::1] Z, bint keep_logits, const floating[::1] data,
                          const int[::1] indices, const Py_ssize_t[::1] indptr) noexcept nogil:
    """forward with the input the CSR batch: OUT A^(1) .. A^(L), A^(1) at A[0]."""
    cdef const Layer* first = &net.layers[0]
    _csr_product(data, indices, indptr, n, first.n_in, first.n_out, params, A)
    _finish_layer(net, 0, n, params, A, 0, Z, keep_logits)
    _forward_layers(net, 1, n, params, A, Z, keep_logits, first.n_in)


cdef void _backward_sparse(const Net* net, Py_ssize_t n, floating[::1] params,
                           floating[::1] grads, floating[::1] A, floating[::1] D, bint update,
                           floating lr, const floating[::1] data, const int[::1] indices,
                           const Py_ssize_t[::1] indptr) noexcept nogil:
    """backward after _forward_sparse: the layers above the first as dense,
    then the first layer's gradient from the CSR batch (no input delta)."""
    cdef const Layer* first = &net.layers[0]
    _backward_layers(net, n, params, grads, A, D, update, lr, 1, first.n_in)
    _csr_gradient(data, indices, indptr, n, first.n_in, first.n_out, D, grads)
    _column_sums(D, 0, n, first.n_out, grads, first.b)
    if update:
        sgd(params, grads, lr, first.w, first.b + first.n_out)


cdef double sparse_pass(const Net* net, Py_ssize_t n, floating[::1] params,
                        floating[::1] grads, floating[::1] A, floating[::1] D, floating[::1] Z,
                        const floating[::1] Y, const double[::1] w, bint weighted, int loss,
                        int mode, floating lr, const floating[::1] data, const int[::1] indices,
                        const Py_ssize_t[::1] indptr) noexcept nogil:
    """One pass on a CSR batch, as the mode names it (PREDICT and FORWARD
    return 0); GRADIENTS and BACKWARD with weighted are those of the
    w-weighted mean loss."""
    cdef bint logits = net.logits and mode != PREDICT
    cdef Py_ssize_t skip = net.layers[0].n_in
    cdef double value
    if mode != BACKWARD:
        _forward_sparse(net, n, params, A, Z, logits, data, indices, indptr)
    if mode == PREDICT or mode == FORWARD:
        return 0
    if weighted and (mode == GRADIENTS or mode == BACKWARD):
        value = weighted_output_delta(net, n, A, D, Z, Y, w, loss, skip)
    else:
        value = forward_loss(net, n, A, D, Z, Y, loss, skip)
    if mode != LOSS_ONLY:
        _backward_sparse(net, n, params, grads, A, D, mode == TRAIN, lr, data, indices, indptr)
    return value


# ---------------------------------------------------------------------------
# The passes on one network's buffers, as its owner runs them
# ---------------------------------------------------------------------------

cdef class Views:
    """What an owner of buffers (the engine) runs on them, whatever their
    dtype: Views64 and Views32, generated from _views.pxi.tp, hold the typed
    views and make each pass a call within this module. Every nogil pass
    expects the buffers bound, checked and sized for the batch."""

    cdef int bind(self, object params, object grads) except -1:
        return 0

    cdef int bind_work(self, object A, object D, object Z, object Y) except -1:
        return 0

    cdef int bind_predict(self, object P) except -1:
        return 0

    cdef void forward_pass(self, Py_ssize_t n, bint keep_logits, bint predict) noexcept nogil:
        pass

    cdef double backward_pass(self, Py_ssize_t n, int code) noexcept nogil:
        return 0

    cdef double weighted_backward_pass(self, Py_ssize_t n, int code,
                                       const double[::1] w) noexcept nogil:
        return 0

    cdef double train(self, Py_ssize_t n, int code, double step) noexcept nogil:
        return 0

    cdef void sgd_pass(self, double step) noexcept nogil:
        pass

    cdef double weight_penalty(self, double scale) noexcept nogil:
        return 0

    cdef bint params_finite(self) noexcept nogil:
        return True

    cdef bint outputs_finite(self, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
        return True


include "_views.pxi"


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
