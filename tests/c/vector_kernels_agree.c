/* Every variant of cmlp's vector kernels, on every shape and transpose of the
   small product from a set of edge sizes and on each element-wise pass: prints
   one line per variant with a hash of all the bits they wrote. Built by
   tests/test_vector_kernels_c.py with the variants' files (_vector_*.c), with
   and without vector extensions; every
   line must carry the same hash. A variant the processor cannot run is
   reported as skipped, never executed. */
#include "_vector_kernels.h"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
  static double A[300*300], B[300*300], C[300*300]; static float Af[300*300], Bf[300*300], Cf[300*300];
  srand(1); for (int i = 0; i < 300*300; i++) { A[i] = Af[i] = rand() / (double)RAND_MAX - 0.5; B[i] = Bf[i] = rand() / (double)RAND_MAX - 0.5; }
  int sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 64};
  for (int v = 0; v < CMLP_N_VARIANTS; v++) {
    if (!cmlp_variant_runs(v)) { printf("%-9s skipped: this processor does not run it\n", cmlp_variants[v]->name); continue; }
    cmlp_use_variant(v);
    unsigned long long h = 1469598103934665603ULL;
    for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++)
    for (int a = 0; a < 13; a++) for (int b = 0; b < 13; b++) for (int c = 0; c < 13; c++) {
      int M = sizes[a], N = sizes[b], K = sizes[c];
      cmlp_active->small_gemm_d(ta, tb, M, N, K, A, B, C); cmlp_active->small_gemm_f(ta, tb, M, N, K, Af, Bf, Cf);
      for (int i = 0; i < M*N; i++) { unsigned long long x; memcpy(&x, C + i, 8); h = (h ^ x) * 1099511628211ULL; unsigned int y; memcpy(&y, Cf + i, 4); h = (h ^ y) * 1099511628211ULL; }
    }
    double z[1000]; float zf[1000];
    for (int i = 0; i < 1000; i++) { z[i] = zf[i] = (i - 500) * 0.07; }
    int ok = cmlp_active->add_bias_d(z, A, 40, 25) + cmlp_active->add_bias_f(zf, Af, 40, 25);
    cmlp_active->sigmoid_block_d(z, 1000); cmlp_active->sigmoid_block_f(zf, 1000);
    cmlp_active->sigmoid_backprop_d(z, A, 1000); cmlp_active->sigmoid_backprop_f(zf, Af, 1000);
    double cs[25]; float csf[25]; cmlp_active->column_sums_d(z, 40, 25, cs); cmlp_active->column_sums_f(zf, 40, 25, csf);
    cmlp_active->sgd_d(z, A, 0.1, 1000); cmlp_active->sgd_f(zf, Af, 0.1f, 1000);
    for (int i = 0; i < 1000; i++) { unsigned long long x; memcpy(&x, z + i, 8); h = (h ^ x) * 1099511628211ULL; unsigned int y; memcpy(&y, zf + i, 4); h = (h ^ y) * 1099511628211ULL; }
    for (int i = 0; i < 25; i++) { unsigned long long x; memcpy(&x, cs + i, 8); h = (h ^ x) * 1099511628211ULL; unsigned int y; memcpy(&y, csf + i, 4); h = (h ^ y) * 1099511628211ULL; }
    printf("%-9s ok=%d hash=%016llx\n", cmlp_variants[v]->name, ok, h);
  }
  return 0;
}
