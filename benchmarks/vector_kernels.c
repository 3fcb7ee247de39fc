/* Each vector kernel under each variant this processor runs, at the sizes it
   serves in cmlp, with GCC's vector extensions and as the plain C loops that
   MSVC builds: nanoseconds a call, the best of 7 rounds of enough calls for a
   millisecond, every round running each variant of both builds in turn (a
   load that comes and goes weighs on all alike). benchmarks/vector_kernels.py
   builds it: the variants' files once as they are, and once more with
   -DCMLP_NO_VECTOR_EXTENSIONS and their tables renamed cmlp_plain_<variant>. */
#include "_vector_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double A[1 << 17], B[1 << 17], C[1 << 17];
static float Af[1 << 17], Bf[1 << 17], Cf[1 << 17];
/* a (1 - a) = -1 at a = (1 - sqrt 5) / 2: repeated backprops keep d normal */
static double G[1 << 17], C0[1 << 17];
static float Gf[1 << 17], C0f[1 << 17];
static volatile int sink;

/* The calls of one measurement: kernel k of the table at size s. */
enum { ADD_BIAS, SIGMOID, BACKPROP, COLUMN_SUMS, SGD, GEMM, N_KINDS };
static const char *kinds[] = {"add_bias", "sigmoid_block", "sigmoid_backprop", "column_sums",
                              "sgd", "small_gemm"};
typedef struct { int kind; int ta, tb; cmlp_ssize_t a, b, c; } job;

static void run(const cmlp_vector_kernels *t, const job *j, int dbl, long calls) {
    for (long r = 0; r < calls; r++) {
        switch (j->kind) {
        case ADD_BIAS:
            sink += dbl ? t->add_bias_d(C, B, j->a, j->b) : t->add_bias_f(Cf, Bf, j->a, j->b);
            break;
        case SIGMOID:
            if (dbl) t->sigmoid_block_d(C, j->a * j->b); else t->sigmoid_block_f(Cf, j->a * j->b);
            break;
        case BACKPROP:
            if (dbl) t->sigmoid_backprop_d(C, G, j->a * j->b);
            else t->sigmoid_backprop_f(Cf, Gf, j->a * j->b);
            break;
        case COLUMN_SUMS:
            if (dbl) t->column_sums_d(A, j->a, j->b, C); else t->column_sums_f(Af, j->a, j->b, Cf);
            break;
        case SGD:
            if (dbl) t->sgd_d(C, A, 1e-30, j->a); else t->sgd_f(Cf, Af, 1e-30f, j->a);
            break;
        case GEMM:
            if (dbl) t->small_gemm_d(j->ta, j->tb, j->a, j->b, j->c, A, B, C);
            else t->small_gemm_f(j->ta, j->tb, j->a, j->b, j->c, Af, Bf, Cf);
            break;
        }
    }
}

extern const cmlp_vector_kernels cmlp_plain_baseline;
#if CMLP_X86_VARIANTS
extern const cmlp_vector_kernels cmlp_plain_avx2, cmlp_plain_avx512;
static const cmlp_vector_kernels *plain[] = {&cmlp_plain_baseline, &cmlp_plain_avx2,
                                             &cmlp_plain_avx512};
#else
static const cmlp_vector_kernels *plain[] = {&cmlp_plain_baseline};
#endif

/* best[t]: ns a call of table t, the variants then their plain builds */
static void measure(const job *j, int dbl, double *best) {
    const cmlp_vector_kernels *tables[2 * CMLP_N_VARIANTS];
    long calls = 1;
    for (int v = 0; v < CMLP_N_VARIANTS; v++) {
        tables[v] = cmlp_variants[v];
        tables[CMLP_N_VARIANTS + v] = plain[v];
    }
    memcpy(C, C0, sizeof C);
    memcpy(Cf, C0f, sizeof Cf);
    for (;;) {
        double start = now();
        run(tables[0], j, dbl, calls);
        if (now() - start > 1e-3) break;
        calls *= 2;
    }
    for (int t = 0; t < 2 * CMLP_N_VARIANTS; t++) best[t] = 1e30;
    for (int rep = 0; rep < 7; rep++)
        for (int t = 0; t < 2 * CMLP_N_VARIANTS; t++) {
            if (!cmlp_variant_runs(t % CMLP_N_VARIANTS)) continue;
            double start = now();
            run(tables[t], j, dbl, calls);
            double took = (now() - start) / calls * 1e9;
            if (took < best[t]) best[t] = took;
        }
}

int main(void) {
    /* (kind, trans_a, trans_b, sizes): the blocks of the benchmarks' networks
       and the products below the BLAS threshold (M N K < 2048, K <= 256) */
    static const job jobs[] = {
        {ADD_BIAS, 0, 0, 1, 32, 0}, {ADD_BIAS, 0, 0, 32, 32, 0}, {ADD_BIAS, 0, 0, 64, 128, 0},
        {SIGMOID, 0, 0, 1, 32, 0}, {SIGMOID, 0, 0, 32, 32, 0}, {SIGMOID, 0, 0, 64, 128, 0},
        {BACKPROP, 0, 0, 1, 32, 0}, {BACKPROP, 0, 0, 32, 32, 0}, {BACKPROP, 0, 0, 64, 128, 0},
        {COLUMN_SUMS, 0, 0, 32, 1, 0}, {COLUMN_SUMS, 0, 0, 32, 32, 0},
        {COLUMN_SUMS, 0, 0, 64, 128, 0},
        {SGD, 0, 0, 577, 0, 0}, {SGD, 0, 0, 8192, 0, 0}, {SGD, 0, 0, 65535, 0, 0},
        {GEMM, 0, 1, 1, 32, 16}, {GEMM, 0, 1, 1, 16, 64}, {GEMM, 0, 1, 1, 8, 200},
        {GEMM, 0, 1, 4, 32, 16}, {GEMM, 0, 1, 8, 16, 16},
        {GEMM, 1, 0, 32, 16, 1}, {GEMM, 1, 0, 32, 16, 4}, {GEMM, 1, 0, 10, 64, 2},
        {GEMM, 0, 0, 8, 16, 15}, {GEMM, 0, 0, 1, 16, 32}, {GEMM, 0, 0, 2, 1, 1},
        {GEMM, 0, 1, 1, 1, 256},
    };
    srand(1);
    for (int i = 0; i < (1 << 17); i++) {
        A[i] = Af[i] = rand() / (double)RAND_MAX;
        B[i] = Bf[i] = rand() / (double)RAND_MAX - 0.5;
        C0[i] = C0f[i] = rand() / (double)RAND_MAX - 0.5;
        G[i] = Gf[i] = -0.6180339887498949;
    }
    printf("kernel\tdtype\tshape");
    for (int t = 0; t < 2 * CMLP_N_VARIANTS; t++)
        if (cmlp_variant_runs(t % CMLP_N_VARIANTS))
            printf("\t%s%s", t < CMLP_N_VARIANTS ? "" : "plain ",
                   cmlp_variants[t % CMLP_N_VARIANTS]->name);
    printf("\n");
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++)
        for (int dbl = 1; dbl >= 0; dbl--) {
            const job *j = &jobs[i];
            double best[2 * CMLP_N_VARIANTS];
            if (j->kind == GEMM)
                printf("%s\t%s\t%s%ldx%ldx%ld%s", kinds[j->kind], dbl ? "float64" : "float32",
                       j->ta ? "T " : "", (long)j->a, (long)j->b, (long)j->c, j->tb ? " T" : "");
            else if (j->kind == SGD)
                printf("%s\t%s\t%ld", kinds[j->kind], dbl ? "float64" : "float32", (long)j->a);
            else
                printf("%s\t%s\t%ldx%ld", kinds[j->kind], dbl ? "float64" : "float32",
                       (long)j->a, (long)j->b);
            measure(j, dbl, best);
            for (int t = 0; t < 2 * CMLP_N_VARIANTS; t++)
                if (cmlp_variant_runs(t % CMLP_N_VARIANTS)) printf("\t%.1f", best[t]);
            printf("\n");
        }
    return 0;
}
