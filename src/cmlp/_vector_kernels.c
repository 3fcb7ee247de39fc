/* The vector kernels, written once: each _vector_<variant>.c includes this
   file twice, for double and for float, after it has set its target and
   defined

     CMLP_VECTOR_BYTES  the width of the variant's vector registers
     CMLP_DOUBLE        1 for double, 0 for float
     CMLP_NAME(kernel)  the name of a kernel in this variant and precision,
                        e.g. cmlp_small_gemm_d_avx2 (its table lists them all)

   It is not compiled on its own. The functions are static: the variant's
   table, at the end of its file, is the only way in. */
#ifndef CMLP_NAME
#error "_vector_kernels.c is included by _vector_<variant>.c, not compiled on its own"
#endif

/* GCC's vector extensions (Clang has them too); without them (MSVC), or with
   CMLP_NO_VECTOR_EXTENSIONS defined (to test that route with GCC), plain C. */
#if defined(__GNUC__) && !defined(CMLP_NO_VECTOR_EXTENSIONS)
#define CMLP_HAS_VECTORS 1
#else
#define CMLP_HAS_VECTORS 0
#endif

#if CMLP_DOUBLE
#define real double
#define lane_int int64_t
#define CMLP_RANGE CMLP_SIGMOID_RANGE_D
#define CMLP_SIGMOID cmlp_sigmoid_d
/* partial sums of a dot product: fixed per precision, whatever the variant's
   width, so that every variant adds in the same order */
#define DOT 8
#else
#define real float
#define lane_int int32_t
#define CMLP_RANGE CMLP_SIGMOID_RANGE_F
#define CMLP_SIGMOID cmlp_sigmoid_f
#define DOT 16
#endif
/* entries of real in one vector register */
#define NR (CMLP_VECTOR_BYTES / (int)sizeof(real))

#if CMLP_HAS_VECTORS
/* NR entries of real; unaligned, and it may alias real: loads and stores
   through it leave accumulators in registers, where memcpy took their address.
   As wide as a register: a vector twice that width stays in memory. */
typedef real __attribute__((vector_size(NR * sizeof(real)), aligned(sizeof(real)), may_alias))
    CMLP_NAME(vec);
typedef lane_int __attribute__((vector_size(NR * sizeof(real)))) CMLP_NAME(lanes);
#define vec CMLP_NAME(vec)
#define lanes CMLP_NAME(lanes)
/* Forced, so that the helpers' vectors never cross a call in memory. */
#define CMLP_KERNEL_INLINE static inline __attribute__((always_inline))
#endif

/* ------------------------------------------------------------------------
   The element-wise passes; each entry is computed alone
   ------------------------------------------------------------------------ */

/* z (n rows of m) <- z + b; returns whether every |z| is in range (false at
   a NaN): then the whole block may take the vector sigmoid. */
#if CMLP_HAS_VECTORS
/* The test reads the bits of z as integers: with the sign bit cleared, they
   order finite magnitudes as the numbers do and put a NaN above infinity, and
   limit - bits(|z|) is negative exactly beyond the limit. Or-ed into one
   vector for the whole block and reduced once at the end, not once a row. */
static int CMLP_NAME(add_bias)(real *CMLP_RESTRICT z, const real *CMLP_RESTRICT b,
                               cmlp_ssize_t n, cmlp_ssize_t m) {
    const real limit = CMLP_RANGE;
    const lane_int all_but_sign = (lane_int)((1ull << (8 * sizeof(lane_int) - 1)) - 1);
    lane_int limit_bits, outside = 0;
    memcpy(&limit_bits, &limit, sizeof limit);
    const lanes magnitude = (lanes){0} + all_but_sign, top = (lanes){0} + limit_bits;
    lanes outside_lanes = {0};
    for (cmlp_ssize_t i = 0; i < n; i++, z += m) {
        cmlp_ssize_t j = 0;
        for (; j + NR <= m; j += NR) {
            const vec v = *(vec *)(z + j) + *(const vec *)(b + j);
            *(vec *)(z + j) = v;
            outside_lanes |= top - ((lanes)v & magnitude);
        }
        for (; j < m; j++) {
            lane_int bits;
            z[j] = z[j] + b[j];
            memcpy(&bits, z + j, sizeof bits);
            outside |= limit_bits - (bits & all_but_sign);
        }
    }
    for (int c = 0; c < NR; c++) outside |= outside_lanes[c];
    return outside >= 0;
}
#else
static int CMLP_NAME(add_bias)(real *z, const real *b, cmlp_ssize_t n, cmlp_ssize_t m) {
    int ok = 1;
    for (cmlp_ssize_t i = 0; i < n; i++, z += m)
        for (cmlp_ssize_t j = 0; j < m; j++) {
            z[j] = z[j] + b[j];
            ok &= (z[j] <= CMLP_RANGE) & (z[j] >= -CMLP_RANGE);
        }
    return ok;
}
#endif

/* The rest are plain loops, which the compiler vectorises for each variant. */

/* z <- sigmoid(z) over a block; every |z| in range */
static void CMLP_NAME(sigmoid_block)(real *CMLP_RESTRICT z, cmlp_ssize_t m) {
    for (cmlp_ssize_t j = 0; j < m; j++) z[j] = CMLP_SIGMOID(z[j]);
}

/* d <- d a (1 - a): dL/da to dL/dz through a sigmoid, from its output a */
static void CMLP_NAME(sigmoid_backprop)(real *CMLP_RESTRICT d, const real *CMLP_RESTRICT a,
                                        cmlp_ssize_t count) {
    for (cmlp_ssize_t i = 0; i < count; i++) d[i] = d[i] * a[i] * ((real)1 - a[i]);
}

/* out <- the sum of the n rows of D (n, m), added from the first row down */
static void CMLP_NAME(column_sums)(const real *CMLP_RESTRICT D, cmlp_ssize_t n, cmlp_ssize_t m,
                                   real *CMLP_RESTRICT out) {
    if (m == 1) {  /* one column: the same sum, without a loop of one */
        real sum = 0;
        for (cmlp_ssize_t i = 0; i < n; i++) sum = sum + D[i];
        out[0] = sum;
        return;
    }
    for (cmlp_ssize_t j = 0; j < m; j++) out[j] = 0;
    for (cmlp_ssize_t i = 0; i < n; i++, D += m)
        for (cmlp_ssize_t j = 0; j < m; j++) out[j] = out[j] + D[j];
}

/* p <- p - lr g */
static void CMLP_NAME(sgd)(real *CMLP_RESTRICT p, const real *CMLP_RESTRICT g, real lr,
                           cmlp_ssize_t count) {
    for (cmlp_ssize_t i = 0; i < count; i++) p[i] = p[i] - lr * g[i];
}

/* ------------------------------------------------------------------------
   The small-product kernel

   C(M, N) = op(A) op(B), all row-major, for K <= CMLP_GEMM_MAX_K: the
   products too small for BLAS.

   Blocks of MR rows by NR columns of C are held in vector accumulators while
   k runs (the classic outer-product kernel), each entry of C the sum over k
   in order from k = 0. op(B) is read along its rows; a block of B^T, or one
   narrower than NR, is first copied into a zero-padded panel, so that the
   loads are always NR wide. A one-row product with B^T is dot products
   instead (a panel of B^T would cost as much as the product).
   ------------------------------------------------------------------------ */

/* C[j] = a . B[j, :] for one row a, along k in DOT interleaved partial sums
   added in turn, then the rest of k. Plain C in both builds: the compiler
   vectorises the partial sums itself. */
static void CMLP_NAME(dot_products)(cmlp_ssize_t N, cmlp_ssize_t K, const real *CMLP_RESTRICT a,
                                    const real *CMLP_RESTRICT B, real *CMLP_RESTRICT C) {
    const cmlp_ssize_t k_end = K - K % DOT;
    for (cmlp_ssize_t j = 0; j < N; j++) {
        const real *b = B + j * K;
        real partial[DOT], sum = 0;
        for (int c = 0; c < DOT; c++) partial[c] = 0;
        for (cmlp_ssize_t k = 0; k < k_end; k += DOT)
            for (int c = 0; c < DOT; c++) partial[c] = partial[c] + a[k + c] * b[k + c];
        for (int c = 0; c < DOT; c++) sum = sum + partial[c];
        for (cmlp_ssize_t k = k_end; k < K; k++) sum = sum + a[k] * b[k];
        C[j] = sum;
    }
}

#if CMLP_HAS_VECTORS

CMLP_KERNEL_INLINE void CMLP_NAME(row_store)(real *C, const vec *v, cmlp_ssize_t nr) {
    if (nr == NR)
        *(vec *)C = *v;
    else
        for (cmlp_ssize_t c = 0; c < nr; c++) C[c] = (*v)[c];
}

/* MR rows of C by nr (<= NR) columns */
CMLP_KERNEL_INLINE void CMLP_NAME(gemm_block)(
        cmlp_ssize_t nr, cmlp_ssize_t K,
        const real *CMLP_RESTRICT A, cmlp_ssize_t a_row, cmlp_ssize_t a_col,
        const real *CMLP_RESTRICT P, cmlp_ssize_t p_row,
        real *CMLP_RESTRICT C, cmlp_ssize_t ldc) {
    vec c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, p;
    for (cmlp_ssize_t k = 0; k < K; k++) {
        const real *a = A + k * a_col;
        p = *(const vec *)(P + k * p_row);
        c0 = c0 + a[0] * p;
        c1 = c1 + a[a_row] * p;
        c2 = c2 + a[2 * a_row] * p;
        c3 = c3 + a[3 * a_row] * p;
    }
    CMLP_NAME(row_store)(C, &c0, nr);
    CMLP_NAME(row_store)(C + ldc, &c1, nr);
    CMLP_NAME(row_store)(C + 2 * ldc, &c2, nr);
    CMLP_NAME(row_store)(C + 3 * ldc, &c3, nr);
}

/* one row of C by nr (<= NR) columns: the rows left below a multiple of MR */
CMLP_KERNEL_INLINE void CMLP_NAME(gemm_row)(
        cmlp_ssize_t nr, cmlp_ssize_t K, const real *CMLP_RESTRICT A, cmlp_ssize_t a_col,
        const real *CMLP_RESTRICT P, cmlp_ssize_t p_row, real *CMLP_RESTRICT C) {
    vec c0 = {0}, p;
    for (cmlp_ssize_t k = 0; k < K; k++) {
        p = *(const vec *)(P + k * p_row);
        c0 = c0 + A[k * a_col] * p;
    }
    CMLP_NAME(row_store)(C, &c0, nr);
}

static void CMLP_NAME(small_gemm)(
        int trans_a, int trans_b, cmlp_ssize_t M, cmlp_ssize_t N, cmlp_ssize_t K,
        const real *CMLP_RESTRICT A, const real *CMLP_RESTRICT B, real *CMLP_RESTRICT C) {
    const cmlp_ssize_t a_row = trans_a ? 1 : K, a_col = trans_a ? M : 1;
    real panel[CMLP_GEMM_MAX_K * NR] __attribute__((aligned(64)));
    if (K == 1) {
        /* an outer product; op(A) and op(B) are stored as vectors either way.
           0 + a b, as the blocks sum it: -0 comes out +0 */
        for (cmlp_ssize_t i = 0; i < M; i++)
            for (cmlp_ssize_t j = 0; j < N; j++) C[i * N + j] = (real)0 + A[i] * B[j];
        return;
    }
    if (N == 1 && M > 1) {
        /* a column of C is also the row C^T = op(B)^T op(A)^T: no padding */
        CMLP_NAME(small_gemm)(!trans_b, !trans_a, 1, M, K, B, A, C);
        return;
    }
    if (M == 1 && trans_b) {
        CMLP_NAME(dot_products)(N, K, A, B, C);
        return;
    }
    for (cmlp_ssize_t j0 = 0; j0 < N; j0 += NR) {
        const cmlp_ssize_t nr = N - j0 < NR ? N - j0 : NR;
        const real *P = B + j0;
        cmlp_ssize_t p_row = N, i0 = 0;
        if (trans_b || nr < NR) {
            if (nr < NR) memset(panel, 0, K * NR * sizeof(real));
            if (trans_b)
                for (cmlp_ssize_t c = 0; c < nr; c++)
                    for (cmlp_ssize_t k = 0; k < K; k++)
                        panel[k * NR + c] = B[(j0 + c) * K + k];
            else
                for (cmlp_ssize_t k = 0; k < K; k++)
                    memcpy(panel + k * NR, B + k * N + j0, nr * sizeof(real));
            P = panel;
            p_row = NR;
        }
        for (; i0 + CMLP_GEMM_MR <= M; i0 += CMLP_GEMM_MR)
            CMLP_NAME(gemm_block)(nr, K, A + i0 * a_row, a_row, a_col, P, p_row,
                                  C + i0 * N + j0, N);
        for (; i0 < M; i0++)
            CMLP_NAME(gemm_row)(nr, K, A + i0 * a_row, a_col, P, p_row, C + i0 * N + j0);
    }
}

#else
/* Without vector extensions: each entry summed in order of k, one at a time;
   a one-row product with B^T by the dot products. */
static void CMLP_NAME(small_gemm)(
        int trans_a, int trans_b, cmlp_ssize_t M, cmlp_ssize_t N, cmlp_ssize_t K,
        const real *A, const real *B, real *C) {
    if (N == 1 && M > 1 && K > 1) {
        CMLP_NAME(small_gemm)(!trans_b, !trans_a, 1, M, K, B, A, C);
        return;
    }
    if (M == 1 && trans_b && K > 1) {
        CMLP_NAME(dot_products)(N, K, A, B, C);
        return;
    }
    for (cmlp_ssize_t i = 0; i < M; i++)
        for (cmlp_ssize_t j = 0; j < N; j++) {
            real sum = 0;
            for (cmlp_ssize_t k = 0; k < K; k++)
                sum = sum + (trans_a ? A[k * M + i] : A[i * K + k])
                          * (trans_b ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = sum;
        }
}
#endif

/* Ready for the other precision's inclusion */
#undef CMLP_HAS_VECTORS
#undef CMLP_DOUBLE
#undef CMLP_NAME
#undef real
#undef lane_int
#undef CMLP_RANGE
#undef CMLP_SIGMOID
#undef DOT
#undef NR
#undef vec
#undef lanes
#undef CMLP_KERNEL_INLINE
