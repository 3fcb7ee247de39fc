/* cmlp's vector kernels: the element-wise passes of a layer (bias, sigmoid,
   its derivative, column sums, the SGD step) and the product of matrices too
   small for BLAS. What every file of them shares: the scalar sigmoid, the
   table of one variant's kernels, and the dispatch that import fills.

   The kernels are written once, in _vector_kernels.c, as plain C. Each
   variant is one small file that names its functions and sets its target,
   then includes that body: _vector_baseline.c (SSE2 on x86-64, the wheel's
   baseline; every other processor and compiler), _vector_avx2.c and
   _vector_avx512.c (AVX-512 F, VL, DQ, BW), the last two on x86 with GCC or
   Clang only. _vector_dispatch.c holds the table of variants. _maths.pyx
   calls a kernel through the table, cmlp_active->small_gemm_d(...), after it
   has checked every shape and pointer.

   Contraction into FMA is off for the whole build (setup.py), every entry is
   computed by the same operations in the same order in every variant, and so
   every variant gives the same bits: the tests run them all and compare. */
#ifndef CMLP_VECTOR_KERNELS_H
#define CMLP_VECTOR_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Py_ssize_t, which is ptrdiff_t, without Python.h (the C test includes this). */
typedef ptrdiff_t cmlp_ssize_t;

/* MSVC's C compiler spells these its own way outside /std:c11. */
#if defined(_MSC_VER)
#define CMLP_RESTRICT __restrict
#define CMLP_INLINE __inline
#else
#define CMLP_RESTRICT restrict
#define CMLP_INLINE inline
#endif

/* The kernels are internal to the extension: not exported from it. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define CMLP_HIDDEN __attribute__((visibility("hidden")))
#else
#define CMLP_HIDDEN
#endif

/* The x86 variants need GCC's or Clang's target pragmas and CPU checks. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define CMLP_X86_VARIANTS 1
#else
#define CMLP_X86_VARIANTS 0
#endif

/* ------------------------------------------------------------------------
   The sigmoid

   glibc's exp() is a function call per element, where the sigmoid is most of
   a small network's step. The exponentials here are written without
   branches, so that the compiler vectorises them: k = round(x / ln 2) by
   adding 1.5 * 2^52 (2^23 in float), a polynomial or rational approximation
   on the rest, and 2^k added to the exponent bits. In double it is fdlibm's
   (the one Java's StrictMath and FreeBSD use, error below 1 ulp), with its
   final division folded into the sigmoid's own; in float, Cephes' expf, in
   float lanes. An entry beyond their range, or a NaN, takes the scalar libm
   route in _maths.pyx instead.
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
   one division gives the sigmoid: 1 / (1 + e) = (2 - c) / ((2 - c) + 2^k (2 - c + 2r)),
   within 2.4 ulp of the exact sigmoid (NumPy's 1 / (1 + exp(-z)): 2.5). In
   float, the float exponential, twice the lanes of double, within 2.4 ulp. */
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
   The small product's limits: C(M, N) = op(A) op(B) for K <= CMLP_GEMM_MAX_K
   ------------------------------------------------------------------------ */
#define CMLP_GEMM_MR 4
#define CMLP_GEMM_MAX_K 256

/* ------------------------------------------------------------------------
   One variant's kernels, and the variants import picks from
   ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    /* z (n rows of m) <- z + b; whether every |z| is in the sigmoid's range */
    int (*add_bias_d)(double *, const double *, cmlp_ssize_t, cmlp_ssize_t);
    int (*add_bias_f)(float *, const float *, cmlp_ssize_t, cmlp_ssize_t);
    /* z <- sigmoid(z) over a block; every |z| in range */
    void (*sigmoid_block_d)(double *, cmlp_ssize_t);
    void (*sigmoid_block_f)(float *, cmlp_ssize_t);
    /* d <- d a (1 - a) */
    void (*sigmoid_backprop_d)(double *, const double *, cmlp_ssize_t);
    void (*sigmoid_backprop_f)(float *, const float *, cmlp_ssize_t);
    /* out <- the sum of the n rows of D (n, m) */
    void (*column_sums_d)(const double *, cmlp_ssize_t, cmlp_ssize_t, double *);
    void (*column_sums_f)(const float *, cmlp_ssize_t, cmlp_ssize_t, float *);
    /* p <- p - lr g */
    void (*sgd_d)(double *, const double *, double, cmlp_ssize_t);
    void (*sgd_f)(float *, const float *, float, cmlp_ssize_t);
    /* C(M, N) = op(A) op(B), row-major, K <= CMLP_GEMM_MAX_K */
    void (*small_gemm_d)(int, int, cmlp_ssize_t, cmlp_ssize_t, cmlp_ssize_t,
                         const double *, const double *, double *);
    void (*small_gemm_f)(int, int, cmlp_ssize_t, cmlp_ssize_t, cmlp_ssize_t,
                         const float *, const float *, float *);
} cmlp_vector_kernels;

/* Each variant's table, defined by its _vector_<name>.c */
extern CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_baseline;
#if CMLP_X86_VARIANTS
extern CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_avx2;
extern CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_avx512;
#define CMLP_N_VARIANTS 3
#else
#define CMLP_N_VARIANTS 1
#endif

/* From the narrowest to the widest (_vector_dispatch.c) */
extern CMLP_HIDDEN const cmlp_vector_kernels *const cmlp_variants[CMLP_N_VARIANTS];
/* The variant in use: baseline until import picks one */
extern CMLP_HIDDEN const cmlp_vector_kernels *cmlp_active;
/* Whether this processor (and its operating system) runs variant v. */
CMLP_HIDDEN int cmlp_variant_runs(int v);
/* Run variant v from now on; v must be one that cmlp_variant_runs. */
CMLP_HIDDEN void cmlp_use_variant(int v);

#endif /* CMLP_VECTOR_KERNELS_H */
