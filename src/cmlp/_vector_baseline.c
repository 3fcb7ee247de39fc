/* The vector kernels for the baseline: SSE2 on x86-64, and every processor
   and compiler the other variants leave out (_vector_kernels.h). */
#include "_vector_kernels.h"

#define CMLP_VECTOR_BYTES 16

#define CMLP_DOUBLE 1
#define CMLP_NAME(kernel) cmlp_##kernel##_d_baseline
#include "_vector_kernels.c"
#define CMLP_DOUBLE 0
#define CMLP_NAME(kernel) cmlp_##kernel##_f_baseline
#include "_vector_kernels.c"

CMLP_HIDDEN const cmlp_vector_kernels cmlp_kernels_baseline = {
    "baseline",
    cmlp_add_bias_d_baseline, cmlp_add_bias_f_baseline,
    cmlp_sigmoid_block_d_baseline, cmlp_sigmoid_block_f_baseline,
    cmlp_sigmoid_backprop_d_baseline, cmlp_sigmoid_backprop_f_baseline,
    cmlp_column_sums_d_baseline, cmlp_column_sums_f_baseline,
    cmlp_sgd_d_baseline, cmlp_sgd_f_baseline,
    cmlp_small_gemm_d_baseline, cmlp_small_gemm_f_baseline,
};
