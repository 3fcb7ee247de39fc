/* The vector kernels for AVX2, on x86 with GCC or Clang (_vector_kernels.h). */
#include "_vector_kernels.h"

#if CMLP_X86_VARIANTS
/* Every function from here on is compiled for AVX2; import runs them only
   where cmlp_variant_runs finds it. */
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif

#define CMLP_VECTOR_BYTES 32

#define CMLP_DOUBLE 1
#define CMLP_NAME(kernel) cmlp_##kernel##_d_avx2
#include "_vector_kernels.c"
#define CMLP_DOUBLE 0
#define CMLP_NAME(kernel) cmlp_##kernel##_f_avx2
#include "_vector_kernels.c"

#if defined(__clang__)
#pragma clang attribute pop
#endif

CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_avx2 = {
    "avx2",
    cmlp_add_bias_d_avx2, cmlp_add_bias_f_avx2,
    cmlp_sigmoid_block_d_avx2, cmlp_sigmoid_block_f_avx2,
    cmlp_sigmoid_backprop_d_avx2, cmlp_sigmoid_backprop_f_avx2,
    cmlp_column_sums_d_avx2, cmlp_column_sums_f_avx2,
    cmlp_sgd_d_avx2, cmlp_sgd_f_avx2,
    cmlp_small_gemm_d_avx2, cmlp_small_gemm_f_avx2,
};
#else
typedef int cmlp_no_avx2;  /* ISO C wants a declaration in every file */
#endif
