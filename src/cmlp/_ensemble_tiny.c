/* The tiny-network block kernel of _ensemble_tiny.h, once per variant of the
   vector kernels (as _vector_<variant>.c build theirs): the same C, the same
   bits, wider lanes where the processor has them. */
#include "_ensemble_tiny.h"

#define CMLP_TINY_NAME(name) cmlp_tiny_##name##_baseline
#include "_ensemble_tiny_body.c"

#if CMLP_X86_VARIANTS
#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#define CMLP_TINY_NAME(name) cmlp_tiny_##name##_avx2
#include "_ensemble_tiny_body.c"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__) && __clang_major__ >= 18
#pragma clang attribute push (__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,evex512"))), apply_to = function)
#elif defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw"))), apply_to = function)
#elif __GNUC__ >= 14
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,evex512")
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw")
#endif
#define CMLP_TINY_NAME(name) cmlp_tiny_##name##_avx512
#include "_ensemble_tiny_body.c"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

cmlp_tiny_block_d cmlp_tiny_kernel_d(int v) {
#if CMLP_X86_VARIANTS
    if (v == 2) return cmlp_tiny_block_avx512;
    if (v == 1) return cmlp_tiny_block_avx2;
#endif
    (void)v;
    return cmlp_tiny_block_baseline;
}
