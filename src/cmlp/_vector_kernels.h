/* cmlp's vector kernels: the element-wise passes of a layer (bias, sigmoid,
   its derivative, column sums, the SGD step) and the product of matrices too
   small for BLAS. _kernels.pyx calls them by the names at the end of this
   file, after it has checked every shape and pointer.

   Each kernel is compiled three times on x86 (GCC or Clang): for SSE2, the
   wheel's baseline; for AVX2; and for AVX-512 (F, VL, DQ, BW). Module import
   picks the widest the processor runs. Each variant uses vectors as wide as
   its registers: a vector twice a register's width made GCC keep it in
   memory, and the AVX2 build of the small-product kernel ten times slower
   than BLAS. Other compilers and processors get the baseline. Contraction
   into FMA is off for the whole build (setup.py), every entry is computed by
   the same operations in the same order in every variant, and so every
   variant gives the same bits: the tests run them all and compare. */
#ifndef CMLP_VECTOR_KERNELS_H
#define CMLP_VECTOR_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* MSVC's C compiler spells these its own way outside /std:c11. */
#if defined(_MSC_VER)
#define CMLP_RESTRICT __restrict
#define CMLP_INLINE __inline
#else
#define CMLP_RESTRICT restrict
#define CMLP_INLINE inline
#endif

/* ------------------------------------------------------------------------
   The sigmoid

   glibc's exp() is a function call per element: with it the sigmoid was half
   the time of a small network's step. The exponentials here are written
   without branches, so that the compiler vectorises them: k = round(x / ln 2)
   by adding 1.5 * 2^52 (2^23 in float), a polynomial or rational
   approximation on the rest, and 2^k added to the exponent bits. In double it
   is fdlibm's (the one Java's StrictMath and FreeBSD use, error below 1 ulp),
   with its final division folded into the sigmoid's own; in float, Cephes'
   expf, in float lanes. An entry beyond their range, or a NaN, takes the
   scalar libm route in _kernels.pyx instead.
   ------------------------------------------------------------------------ */

/* e^x for -707 <= x <= 0, as fdlibm reduces it: x = k ln 2 + r with
   |r| <= ln(2) / 2, then e^r = 1 + r + r c / (2 - c), c a polynomial in
   r^2. It stops short of the division, which the sigmoid takes with its own. */
typedef struct { uint64_t k_bits; double r, c; } cmlp_exp_parts;

static CMLP_INLINE cmlp_exp_parts cmlp_exp_reduce(double x) {
    const double shift = 6755399441055744.0;        /* 1.5 * 2^52 */
    const double inv_ln2 = 1.44269504088896338700e+00;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                 P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
                 P5 = 4.13813679705723846039e-08;
    double kd = x * inv_ln2 + shift, t;
    cmlp_exp_parts p;
    memcpy(&p.k_bits, &kd, sizeof kd);   /* k in the low bits */
    kd -= shift;
    p.r = (x - kd * ln2_hi) - kd * ln2_lo;
    t = p.r * p.r;
    p.c = p.r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    return p;
}
/* y * 2^k, for a y * 2^k that is a normal number */
static CMLP_INLINE double cmlp_scale(double y, uint64_t k_bits) {
    uint64_t y_bits;
    memcpy(&y_bits, &y, sizeof y);
    y_bits += k_bits << 52;
    memcpy(&y, &y_bits, sizeof y);
    return y;
}

/* e^x for -80 <= x <= 0 in float: the same reduction in float (ln 2 in
   two parts, the first exact in 9 bits, Cody and Waite's), then Cephes'
   expf polynomial. Within 1 ulp of glibc's expf. */
static CMLP_INLINE float cmlp_expf_reduced(float x) {
    const float shift = 12582912.0f;                /* 1.5 * 2^23 */
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float kd = x * log2e + shift, r, y;
    uint32_t k_bits, y_bits;
    memcpy(&k_bits, &kd, sizeof kd);   /* k in the low bits */
    kd -= shift;
    r = (x - kd * ln2_hi) - kd * ln2_lo;
    y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = (y * (r * r) + r) + 1.0f;
    memcpy(&y_bits, &y, sizeof y);
    y_bits += k_bits << 23;            /* y * 2^k */
    memcpy(&y, &y_bits, sizeof y);
    return y;
}

/* Beyond these |z| (or at a NaN) an entry takes libm's exp instead: the
   vector exponentials hold down to e^-707 in double, and in float down to
   e^-80, where 2^k is still a normal number. */
#define CMLP_SIGMOID_RANGE_D 707.0
#define CMLP_SIGMOID_RANGE_F 80.0f

/* sigmoid(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) below, in range.
   In double, e^-|z| = 2^k (2 - c + 2r) / (2 - c) is left as a fraction, and
   one division gives the sigmoid: 1 / (1 + e) = (2 - c) / ((2 - c) + 2^k (2 - c + 2r)).
   On 2.1 million inputs it stays within 2.4 ulp of the exact sigmoid, as the
   two divisions did and as NumPy's 1 / (1 + exp(-z)) does (2.5); and a
   division is the slowest step of the block. In float, the float
   exponential, twice the lanes of double: within 2.4 ulp on 4 million
   inputs, as glibc's expf in the same formula. */
static CMLP_INLINE double cmlp_sigmoid_d(double z) {
    cmlp_exp_parts p = cmlp_exp_reduce(-fabs(z));
    double den = 2.0 - p.c, num = cmlp_scale(den + 2.0 * p.r, p.k_bits);
    return (z >= 0 ? den : num) / (den + num);
}
static CMLP_INLINE float cmlp_sigmoid_f(float z) {
    float e = cmlp_expf_reduced(-fabsf(z));
    return (z >= 0 ? 1.0f : e) / (1.0f + e);
}

/* ------------------------------------------------------------------------
   Vectors and variants
   ------------------------------------------------------------------------ */

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define CMLP_X86_VARIANTS 1
#else
#define CMLP_X86_VARIANTS 0
#endif

/* GCC's vector extensions (Clang has them too); without them (MSVC), or with
   CMLP_NO_VECTOR_EXTENSIONS defined (to test that route with GCC), plain C. */
#if defined(__GNUC__) && !defined(CMLP_NO_VECTOR_EXTENSIONS)
#define CMLP_HAS_VECTORS 1
#else
#define CMLP_HAS_VECTORS 0
#endif

#if CMLP_HAS_VECTORS
/* NR entries of real in GCC's vector extensions.
   Unaligned, and it may alias real: loads and stores through it leave
   accumulators in registers, where memcpy took their address. */
#define CMLP_VECTOR(real, NR) \
    real __attribute__((vector_size((NR) * sizeof(real)), aligned(sizeof(real)), may_alias))
/* Forced, so that the helpers' vectors never cross a call in memory. */
#define CMLP_KERNEL_INLINE static inline __attribute__((always_inline))
#endif

/* ------------------------------------------------------------------------
   The element-wise passes; each entry is computed alone

   In every macro below, attr is the variant's target attribute (empty for
   the baseline), sfx the suffix of its functions, NR the entries of real in
   one of its registers.
   ------------------------------------------------------------------------ */

/* z (n rows of m) <- z + b; returns whether every |z| is in range (false at
   a NaN): then the whole block may take the vector sigmoid. The test reads
   the bits of z as integers: with the sign bit cleared, they order finite
   magnitudes as the numbers do and put a NaN above infinity, and
   limit - bits(|z|) is negative exactly beyond the limit. Or-ed into one
   vector for the whole block and reduced once at the end: a flag reduced by
   the compiler at the end of every row made this pass cost a third of the
   sigmoid's. lane_int is a signed integer of real's width. */
#if CMLP_HAS_VECTORS
#define CMLP_DEFINE_ADD_BIAS(real, sfx, attr, NR, range, lane_int)                          \
attr static int cmlp_add_bias_##sfx(                                                        \
        real *CMLP_RESTRICT z, const real *CMLP_RESTRICT b, Py_ssize_t n, Py_ssize_t m) {   \
    typedef CMLP_VECTOR(real, NR) vec;                                                      \
    typedef lane_int __attribute__((vector_size((NR) * sizeof(real)))) lanes;              \
    const real limit = (range);                                                             \
    const lane_int all_but_sign = (lane_int)((1ull << (8 * sizeof(lane_int) - 1)) - 1);     \
    lane_int limit_bits, outside = 0;                                                       \
    memcpy(&limit_bits, &limit, sizeof limit);                                              \
    const lanes magnitude = (lanes){0} + all_but_sign, top = (lanes){0} + limit_bits;       \
    lanes outside_lanes = {0};                                                              \
    for (Py_ssize_t i = 0; i < n; i++, z += m) {                                            \
        Py_ssize_t j = 0;                                                                   \
        for (; j + (NR) <= m; j += (NR)) {                                                  \
            const vec v = *(vec *)(z + j) + *(const vec *)(b + j);                          \
            *(vec *)(z + j) = v;                                                            \
            outside_lanes |= top - ((lanes)v & magnitude);                                  \
        }                                                                                   \
        for (; j < m; j++) {                                                                \
            lane_int bits;                                                                  \
            z[j] = z[j] + b[j];                                                             \
            memcpy(&bits, z + j, sizeof bits);                                              \
            outside |= limit_bits - (bits & all_but_sign);                                  \
        }                                                                                   \
    }                                                                                       \
    for (int c = 0; c < (NR); c++) outside |= outside_lanes[c];                             \
    return outside >= 0;                                                                    \
}
#else
#define CMLP_DEFINE_ADD_BIAS(real, sfx, attr, NR, range, lane_int)                          \
static int cmlp_add_bias_##sfx(real *z, const real *b, Py_ssize_t n, Py_ssize_t m) {        \
    int ok = 1;                                                                             \
    for (Py_ssize_t i = 0; i < n; i++, z += m)                                              \
        for (Py_ssize_t j = 0; j < m; j++) {                                                \
            z[j] = z[j] + b[j];                                                             \
            ok &= (z[j] <= (range)) & (z[j] >= -(range));                                    \
        }                                                                                   \
    return ok;                                                                              \
}
#endif

/* The rest are plain loops, which the compiler vectorises for each variant. */
#define CMLP_DEFINE_ELEMENTWISE_PASSES(real, sfx, attr, NR, range, lane_int)                \
CMLP_DEFINE_ADD_BIAS(real, sfx, attr, NR, range, lane_int)                                  \
/* z <- sigmoid(z) over a block; every |z| in range */                                      \
attr static void cmlp_sigmoid_block_##sfx(real *CMLP_RESTRICT z, Py_ssize_t m) {            \
    for (Py_ssize_t j = 0; j < m; j++) z[j] = cmlp_sigmoid_##real(z[j]);                    \
}                                                                                           \
/* d <- d a (1 - a): dL/da to dL/dz through a sigmoid, from its output a */                 \
attr static void cmlp_sigmoid_backprop_##sfx(                                               \
        real *CMLP_RESTRICT d, const real *CMLP_RESTRICT a, Py_ssize_t count) {             \
    for (Py_ssize_t i = 0; i < count; i++) d[i] = d[i] * a[i] * ((real)1 - a[i]);           \
}                                                                                           \
/* out <- the sum of the n rows of D (n, m), added from the first row down */               \
attr static void cmlp_column_sums_##sfx(                                                    \
        const real *CMLP_RESTRICT D, Py_ssize_t n, Py_ssize_t m, real *CMLP_RESTRICT out) { \
    if (m == 1) {  /* one column: the same sum, without a loop of one */                    \
        real sum = 0;                                                                       \
        for (Py_ssize_t i = 0; i < n; i++) sum = sum + D[i];                                \
        out[0] = sum;                                                                       \
        return;                                                                             \
    }                                                                                       \
    for (Py_ssize_t j = 0; j < m; j++) out[j] = 0;                                          \
    for (Py_ssize_t i = 0; i < n; i++, D += m)                                              \
        for (Py_ssize_t j = 0; j < m; j++) out[j] = out[j] + D[j];                          \
}                                                                                           \
/* p <- p - lr g */                                                                         \
attr static void cmlp_sgd_##sfx(                                                            \
        real *CMLP_RESTRICT p, const real *CMLP_RESTRICT g, real lr, Py_ssize_t count) {    \
    for (Py_ssize_t i = 0; i < count; i++) p[i] = p[i] - lr * g[i];                         \
}

/* cmlp_sigmoid_##real above: the sigmoid of each precision by its type's name */
#define cmlp_sigmoid_double cmlp_sigmoid_d
#define cmlp_sigmoid_float cmlp_sigmoid_f

/* ------------------------------------------------------------------------
   The small-product kernel

   C(M, N) = op(A) op(B), all row-major, for K <= CMLP_GEMM_MAX_K: the
   products too small for BLAS.

   Blocks of MR rows by NR columns of C are held in vector accumulators while
   k runs (the classic outer-product kernel), each entry of C the sum over k
   in order from k = 0. op(B) is read along its rows; a block of B^T, or one
   narrower than NR, is first copied into a zero-padded panel, so that the
   loads are always NR wide. A one-row product with B^T is dot products
   instead, each of DOT partial sums (DOT fixed for each precision, whatever
   NR is, so that every variant adds in the same order).
   ------------------------------------------------------------------------ */
#define CMLP_GEMM_MR 4
#define CMLP_GEMM_MAX_K 256

#if CMLP_HAS_VECTORS
#define CMLP_DEFINE_SMALL_GEMM(real, sfx, attr, NR, DOT)                                     \
typedef CMLP_VECTOR(real, NR) cmlp_vec_##sfx;                                               \
                                                                                            \
CMLP_KERNEL_INLINE attr void cmlp_row_store_##sfx(real *C, const cmlp_vec_##sfx *v,         \
                                                  Py_ssize_t nr) {                          \
    if (nr == (NR))                                                                         \
        *(cmlp_vec_##sfx *)C = *v;                                                          \
    else                                                                                    \
        for (Py_ssize_t c = 0; c < nr; c++) C[c] = (*v)[c];                                 \
}                                                                                           \
                                                                                            \
/* MR rows of C by nr (<= NR) columns */                                                    \
CMLP_KERNEL_INLINE attr void cmlp_gemm_block_##sfx(                                         \
        Py_ssize_t nr, Py_ssize_t K,                                                        \
        const real *CMLP_RESTRICT A, Py_ssize_t a_row, Py_ssize_t a_col,                    \
        const real *CMLP_RESTRICT P, Py_ssize_t p_row,                                      \
        real *CMLP_RESTRICT C, Py_ssize_t ldc) {                                            \
    cmlp_vec_##sfx c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, p;                               \
    for (Py_ssize_t k = 0; k < K; k++) {                                                    \
        const real *a = A + k * a_col;                                                      \
        p = *(const cmlp_vec_##sfx *)(P + k * p_row);                                       \
        c0 = c0 + a[0] * p;                                                                 \
        c1 = c1 + a[a_row] * p;                                                             \
        c2 = c2 + a[2 * a_row] * p;                                                         \
        c3 = c3 + a[3 * a_row] * p;                                                         \
    }                                                                                       \
    cmlp_row_store_##sfx(C, &c0, nr);                                                       \
    cmlp_row_store_##sfx(C + ldc, &c1, nr);                                                 \
    cmlp_row_store_##sfx(C + 2 * ldc, &c2, nr);                                             \
    cmlp_row_store_##sfx(C + 3 * ldc, &c3, nr);                                             \
}                                                                                           \
/* one row of C by nr (<= NR) columns: the rows left below a multiple of MR */              \
CMLP_KERNEL_INLINE attr void cmlp_gemm_row_##sfx(                                           \
        Py_ssize_t nr, Py_ssize_t K, const real *CMLP_RESTRICT A, Py_ssize_t a_col,         \
        const real *CMLP_RESTRICT P, Py_ssize_t p_row, real *CMLP_RESTRICT C) {             \
    cmlp_vec_##sfx c0 = {0}, p;                                                             \
    for (Py_ssize_t k = 0; k < K; k++) {                                                    \
        p = *(const cmlp_vec_##sfx *)(P + k * p_row);                                       \
        c0 = c0 + A[k * a_col] * p;                                                         \
    }                                                                                       \
    cmlp_row_store_##sfx(C, &c0, nr);                                                       \
}                                                                                           \
                                                                                            \
/* a . b from its DOT partial sums over k < k_end (DOT / NR vectors, lane c of */         \
/* vector v the sum of lane v NR + c), added in turn, then the rest of k */                 \
CMLP_KERNEL_INLINE attr real cmlp_dot_finish_##sfx(const cmlp_vec_##sfx *partial,           \
        Py_ssize_t k_end, Py_ssize_t K, const real *CMLP_RESTRICT a,                        \
        const real *CMLP_RESTRICT b) {                                                      \
    real sum = 0;                                                                           \
    for (int v = 0; v < (DOT) / (NR); v++)                                                  \
        for (int c = 0; c < (NR); c++) sum = sum + partial[v][c];                           \
    for (Py_ssize_t k = k_end; k < K; k++) sum = sum + a[k] * b[k];                         \
    return sum;                                                                             \
}                                                                                           \
/* C[j] = a . B[j, :] for one row a: a panel of B^T would cost as much as the */          \
/* product, so each dot product runs along k, in DOT interleaved partial sums */            \
CMLP_KERNEL_INLINE attr void cmlp_dot_products_##sfx(                                       \
        Py_ssize_t N, Py_ssize_t K, const real *CMLP_RESTRICT a,                            \
        const real *CMLP_RESTRICT B, real *CMLP_RESTRICT C) {                               \
    const Py_ssize_t k_end = K - K % (DOT);                                                 \
    for (Py_ssize_t j = 0; j < N; j++) {                                                    \
        const real *b = B + j * K;                                                          \
        cmlp_vec_##sfx p[(DOT) / (NR)];                                                     \
        for (int v = 0; v < (DOT) / (NR); v++) p[v] = (cmlp_vec_##sfx){0};                  \
        for (Py_ssize_t k = 0; k < k_end; k += (DOT))                                       \
            for (int v = 0; v < (DOT) / (NR); v++)                                          \
                p[v] = p[v] + *(const cmlp_vec_##sfx *)(a + k + v * (NR))                   \
                            * *(const cmlp_vec_##sfx *)(b + k + v * (NR));                  \
        C[j] = cmlp_dot_finish_##sfx(p, k_end, K, a, b);                                    \
    }                                                                                       \
}                                                                                           \
                                                                                            \
attr static void cmlp_small_gemm_##sfx(                                                     \
        int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,                 \
        const real *CMLP_RESTRICT A, const real *CMLP_RESTRICT B, real *CMLP_RESTRICT C) {  \
    const Py_ssize_t a_row = trans_a ? 1 : K, a_col = trans_a ? M : 1;                      \
    real panel[CMLP_GEMM_MAX_K * (NR)] __attribute__((aligned(64)));                        \
    if (K == 1) {                                                                           \
        /* an outer product; op(A) and op(B) are stored as vectors either way. */          \
        /* 0 + a b, as the blocks sum it: -0 comes out +0 */                               \
        for (Py_ssize_t i = 0; i < M; i++)                                                  \
            for (Py_ssize_t j = 0; j < N; j++) C[i * N + j] = (real)0 + A[i] * B[j];        \
        return;                                                                             \
    }                                                                                       \
    if (N == 1 && M > 1) {                                                                  \
        /* a column of C is also the row C^T = op(B)^T op(A)^T: no padding */              \
        cmlp_small_gemm_##sfx(!trans_b, !trans_a, 1, M, K, B, A, C);                        \
        return;                                                                             \
    }                                                                                       \
    if (M == 1 && trans_b) {                                                                \
        cmlp_dot_products_##sfx(N, K, A, B, C);                                             \
        return;                                                                             \
    }                                                                                       \
    for (Py_ssize_t j0 = 0; j0 < N; j0 += (NR)) {                                           \
        const Py_ssize_t nr = N - j0 < (NR) ? N - j0 : (NR);                                \
        const real *P = B + j0;                                                             \
        Py_ssize_t p_row = N, i0 = 0;                                                       \
        if (trans_b || nr < (NR)) {                                                         \
            if (nr < (NR)) memset(panel, 0, K * (NR) * sizeof(real));                       \
            if (trans_b)                                                                    \
                for (Py_ssize_t c = 0; c < nr; c++)                                         \
                    for (Py_ssize_t k = 0; k < K; k++)                                      \
                        panel[k * (NR) + c] = B[(j0 + c) * K + k];                          \
            else                                                                            \
                for (Py_ssize_t k = 0; k < K; k++)                                          \
                    memcpy(panel + k * (NR), B + k * N + j0, nr * sizeof(real));            \
            P = panel;                                                                      \
            p_row = (NR);                                                                   \
        }                                                                                   \
        for (; i0 + CMLP_GEMM_MR <= M; i0 += CMLP_GEMM_MR)                                  \
            cmlp_gemm_block_##sfx(nr, K, A + i0 * a_row, a_row, a_col, P, p_row,            \
                                  C + i0 * N + j0, N);                                      \
        for (; i0 < M; i0++)                                                                \
            cmlp_gemm_row_##sfx(nr, K, A + i0 * a_row, a_col, P, p_row, C + i0 * N + j0);   \
    }                                                                                       \
}

#else
/* Without vector extensions: each entry summed in order of k, one at a time;
   a one-row product with B^T in the dot products' order. */
#define CMLP_DEFINE_SMALL_GEMM(real, sfx, attr, NR, DOT)                                     \
static void cmlp_small_gemm_##sfx(                                                          \
        int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,                 \
        const real *A, const real *B, real *C) {                                            \
    if (N == 1 && M > 1 && K > 1) {                                                         \
        cmlp_small_gemm_##sfx(!trans_b, !trans_a, 1, M, K, B, A, C);                        \
        return;                                                                             \
    }                                                                                       \
    if (M == 1 && trans_b && K > 1) {                                                       \
        const Py_ssize_t k_end = K - K % (DOT);                                             \
        for (Py_ssize_t j = 0; j < N; j++) {                                                \
            real partial[DOT], sum = 0;                                                     \
            for (int c = 0; c < (DOT); c++) partial[c] = 0;                                 \
            for (Py_ssize_t k = 0; k < k_end; k += (DOT))                                   \
                for (int c = 0; c < (DOT); c++)                                             \
                    partial[c] = partial[c] + A[k + c] * B[j * K + k + c];                  \
            for (int c = 0; c < (DOT); c++) sum = sum + partial[c];                         \
            for (Py_ssize_t k = k_end; k < K; k++) sum = sum + A[k] * B[j * K + k];         \
            C[j] = sum;                                                                     \
        }                                                                                   \
        return;                                                                             \
    }                                                                                       \
    for (Py_ssize_t i = 0; i < M; i++)                                                      \
        for (Py_ssize_t j = 0; j < N; j++) {                                                \
            real sum = 0;                                                                   \
            for (Py_ssize_t k = 0; k < K; k++)                                              \
                sum = sum + (trans_a ? A[k * M + i] : A[i * K + k])                         \
                          * (trans_b ? B[j * K + k] : B[k * N + j]);                        \
            C[i * N + j] = sum;                                                             \
        }                                                                                   \
}
#endif

/* ------------------------------------------------------------------------
   The variants, and the table import picks from
   ------------------------------------------------------------------------ */

/* Every kernel of one variant: bytes is the width of its vector registers. */
#define CMLP_DEFINE_VARIANT(isa, attr, bytes)                                                \
CMLP_DEFINE_ELEMENTWISE_PASSES(double, d_##isa, attr, (bytes) / 8, CMLP_SIGMOID_RANGE_D, int64_t) \
CMLP_DEFINE_ELEMENTWISE_PASSES(float, f_##isa, attr, (bytes) / 4, CMLP_SIGMOID_RANGE_F, int32_t)  \
CMLP_DEFINE_SMALL_GEMM(double, d_##isa, attr, (bytes) / 8, 8)                                \
CMLP_DEFINE_SMALL_GEMM(float, f_##isa, attr, (bytes) / 4, 16)

/* GCC 14 and Clang 18 split AVX-512 into its instructions and its 512-bit
   registers (evex512); older compilers know only the instructions. */
#if (defined(__clang__) && __clang_major__ >= 18) || (!defined(__clang__) && __GNUC__ >= 14)
#define CMLP_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw,evex512"
#else
#define CMLP_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw"
#endif

CMLP_DEFINE_VARIANT(baseline, , 16)
#if CMLP_X86_VARIANTS
CMLP_DEFINE_VARIANT(avx2, __attribute__((target("avx2"))), 32)
CMLP_DEFINE_VARIANT(avx512, __attribute__((target(CMLP_AVX512_TARGET))), 64)
#endif

typedef struct {
    const char *name;
    int (*add_bias_d)(double *, const double *, Py_ssize_t, Py_ssize_t);
    int (*add_bias_f)(float *, const float *, Py_ssize_t, Py_ssize_t);
    void (*sigmoid_block_d)(double *, Py_ssize_t);
    void (*sigmoid_block_f)(float *, Py_ssize_t);
    void (*sigmoid_backprop_d)(double *, const double *, Py_ssize_t);
    void (*sigmoid_backprop_f)(float *, const float *, Py_ssize_t);
    void (*column_sums_d)(const double *, Py_ssize_t, Py_ssize_t, double *);
    void (*column_sums_f)(const float *, Py_ssize_t, Py_ssize_t, float *);
    void (*sgd_d)(double *, const double *, double, Py_ssize_t);
    void (*sgd_f)(float *, const float *, float, Py_ssize_t);
    void (*small_gemm_d)(int, int, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                         const double *, const double *, double *);
    void (*small_gemm_f)(int, int, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                         const float *, const float *, float *);
} cmlp_vector_kernels;

#define CMLP_VARIANT_TABLE(isa)                                                              \
    {#isa, cmlp_add_bias_d_##isa, cmlp_add_bias_f_##isa,                                    \
     cmlp_sigmoid_block_d_##isa, cmlp_sigmoid_block_f_##isa,                                \
     cmlp_sigmoid_backprop_d_##isa, cmlp_sigmoid_backprop_f_##isa,                          \
     cmlp_column_sums_d_##isa, cmlp_column_sums_f_##isa, cmlp_sgd_d_##isa, cmlp_sgd_f_##isa, \
     cmlp_small_gemm_d_##isa, cmlp_small_gemm_f_##isa}

/* From the narrowest to the widest */
static const cmlp_vector_kernels cmlp_variants[] = {
    CMLP_VARIANT_TABLE(baseline),
#if CMLP_X86_VARIANTS
    CMLP_VARIANT_TABLE(avx2),
    CMLP_VARIANT_TABLE(avx512),
#endif
};
#define CMLP_N_VARIANTS ((int)(sizeof cmlp_variants / sizeof cmlp_variants[0]))

static const cmlp_vector_kernels *cmlp_active = &cmlp_variants[0];

/* Whether this processor (and its operating system) runs variant v. */
static int cmlp_variant_runs(int v) {
    if (v == 0)
        return 1;
#if CMLP_X86_VARIANTS
    __builtin_cpu_init();
    if (v == 1)
        return __builtin_cpu_supports("avx2") != 0;
    if (v == 2)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    return 0;
}

/* Run variant v from now on; v must be one that cmlp_variant_runs. */
static void cmlp_use_variant(int v) {
    cmlp_active = &cmlp_variants[v];
}

/* The kernels, through the variant in use */
static CMLP_INLINE int cmlp_add_bias_d(double *z, const double *b, Py_ssize_t n, Py_ssize_t m) {
    return cmlp_active->add_bias_d(z, b, n, m);
}
static CMLP_INLINE int cmlp_add_bias_f(float *z, const float *b, Py_ssize_t n, Py_ssize_t m) {
    return cmlp_active->add_bias_f(z, b, n, m);
}
static CMLP_INLINE void cmlp_sigmoid_block_d(double *z, Py_ssize_t m) {
    cmlp_active->sigmoid_block_d(z, m);
}
static CMLP_INLINE void cmlp_sigmoid_block_f(float *z, Py_ssize_t m) {
    cmlp_active->sigmoid_block_f(z, m);
}
static CMLP_INLINE void cmlp_sigmoid_backprop_d(double *d, const double *a, Py_ssize_t count) {
    cmlp_active->sigmoid_backprop_d(d, a, count);
}
static CMLP_INLINE void cmlp_sigmoid_backprop_f(float *d, const float *a, Py_ssize_t count) {
    cmlp_active->sigmoid_backprop_f(d, a, count);
}
static CMLP_INLINE void cmlp_column_sums_d(const double *D, Py_ssize_t n, Py_ssize_t m,
                                           double *out) {
    cmlp_active->column_sums_d(D, n, m, out);
}
static CMLP_INLINE void cmlp_column_sums_f(const float *D, Py_ssize_t n, Py_ssize_t m,
                                           float *out) {
    cmlp_active->column_sums_f(D, n, m, out);
}
static CMLP_INLINE void cmlp_sgd_d(double *p, const double *g, double lr, Py_ssize_t count) {
    cmlp_active->sgd_d(p, g, lr, count);
}
static CMLP_INLINE void cmlp_sgd_f(float *p, const float *g, float lr, Py_ssize_t count) {
    cmlp_active->sgd_f(p, g, lr, count);
}
static CMLP_INLINE void cmlp_small_gemm_d(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N,
                                          Py_ssize_t K, const double *A, const double *B,
                                          double *C) {
    cmlp_active->small_gemm_d(trans_a, trans_b, M, N, K, A, B, C);
}
static CMLP_INLINE void cmlp_small_gemm_f(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N,
                                          Py_ssize_t K, const float *A, const float *B,
                                          float *C) {
    cmlp_active->small_gemm_f(trans_a, trans_b, M, N, K, A, B, C);
}

#endif /* CMLP_VECTOR_KERNELS_H */
