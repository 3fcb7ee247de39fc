/* The variants of the vector kernels, and the one in use (_vector_kernels.h). */
#include "_vector_kernels.h"

CMLP_HIDDEN const cmlp_vector_kernels *const cmlp_variants[CMLP_N_VARIANTS] = {
    &cmlp_kernels_baseline,
#if CMLP_X86_VARIANTS
    &cmlp_kernels_avx2,
    &cmlp_kernels_avx512,
#endif
};

CMLP_HIDDEN const cmlp_vector_kernels *cmlp_active = &cmlp_kernels_baseline;

CMLP_HIDDEN int cmlp_variant_runs(int v) {
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

CMLP_HIDDEN void cmlp_use_variant(int v) {
    cmlp_active = cmlp_variants[v];
}
