/* The vector kernels for AVX-512 (F, VL, DQ, BW), on x86 with GCC or Clang
   (_vector_kernels.h). */
#include "_vector_kernels.h"

#if CMLP_X86_VARIANTS
/* Every function from here on is compiled for AVX-512; import runs them only
   where cmlp_variant_runs finds it. GCC 14 and Clang 18 split AVX-512 into
   its instructions and its 512-bit registers (evex512); older compilers know
   only the instructions. */
#if defined(__clang__) && __clang_major__ >= 18
#pragma clang attribute push (__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,evex512"))), apply_to = function)
#elif defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw"))), apply_to = function)
#elif __GNUC__ >= 14
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,evex512")
#else
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw")
#endif

#define CMLP_VECTOR_BYTES 64

#define CMLP_DOUBLE 1
#define CMLP_NAME(kernel) cmlp_##kernel##_d_avx512
#include "_vector_kernels.c"
#define CMLP_DOUBLE 0
#define CMLP_NAME(kernel) cmlp_##kernel##_f_avx512
#include "_vector_kernels.c"

#if defined(__clang__)
#pragma clang attribute pop
#endif

CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_avx512 = {
    "avx512",
    cmlp_add_bias_d_avx512, cmlp_add_bias_f_avx512,
    cmlp_sigmoid_block_d_avx512, cmlp_sigmoid_block_f_avx512,
    cmlp_sigmoid_backprop_d_avx512, cmlp_sigmoid_backprop_f_avx512,
    cmlp_column_sums_d_avx512, cmlp_column_sums_f_avx512,
    cmlp_sgd_d_avx512, cmlp_sgd_f_avx512,
    cmlp_small_gemm_d_avx512, cmlp_small_gemm_f_avx512,
};
#else
typedef int cmlp_no_avx512;  /* ISO C wants a declaration in every file */
#endif
