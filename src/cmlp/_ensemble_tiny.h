/* Many tiny networks at once, one sample per model per step, vectorised
   across the models (struct of arrays): a block of CMLP_TINY_LANES models is
   transposed so that each parameter, activation and delta is one row of
   lanes, one lane per model, and every operation of the single-model step
   (_kernels.pyx on one sample: the dot products of _vector_kernels.c, the
   bias, the activation, the output delta, the delta recursion, the SGD
   update) is applied to a whole row in the same order, with the same
   roundings: each lane ends with the bits its model gets from MLP.train_step.

   Only what that single-model route does for one sample with every product
   in the small-product kernel is here: layers of identity, sigmoid, tanh or
   relu, and the mse, half_sse or bce loss, in float64 (see cmlp_tiny_fits).
   Everything else takes the per-model route in _ensemble.pyx. */
#ifndef CMLP_ENSEMBLE_TINY_H
#define CMLP_ENSEMBLE_TINY_H

#include <float.h>

#include "_vector_kernels.h"

#define CMLP_TINY_LANES 32
#if defined(__GNUC__) || defined(__clang__)
#define CMLP_TINY_ALIGNED __attribute__((aligned(64)))
#else
#define CMLP_TINY_ALIGNED
#endif
#define CMLP_TINY_MAX_LAYERS 8
#define CMLP_TINY_MAX_WIDTH 16
/* all widths added up (activations and deltas), and the parameters of one model */
#define CMLP_TINY_MAX_UNITS 96
#define CMLP_TINY_MAX_PARAMS 256

typedef struct {
    int n_layers;
    int loss;                                     /* 0 mse, 1 half_sse, 2 bce */
    cmlp_ssize_t sizes[CMLP_TINY_MAX_LAYERS + 1];
    int codes[CMLP_TINY_MAX_LAYERS];              /* 0 identity, 1 sigmoid, 2 tanh, 3 relu */
    cmlp_ssize_t n_params;
} cmlp_tiny_net;

/* The models m0 .. m1-1 (at most CMLP_TINY_LANES), each `steps` SGD steps.
   params (n_models, n_params), row m a model's flat buffer; X (n_models,
   n_rows, n_in) and Y (n_models, n_rows, n_out) each model's data; order
   (n_models, steps) the row of each step, or NULL for row t at step t; lr
   (n_models); OUT losses (n_models, steps). Every index was checked by the
   caller. OUT ran (n_models): the steps each model ran; a model stops after a
   step whose loss is not finite, as _kernels' _epoch does. strides: how far
   apart (in entries) the models' rows of params, X, Y and losses lie.
   Returns 0. */
typedef int (*cmlp_tiny_block_d)(const cmlp_tiny_net *net, cmlp_ssize_t m0, cmlp_ssize_t m1,
                                 double *params, const double *X, const double *Y,
                                 cmlp_ssize_t n_rows, const cmlp_ssize_t *order,
                                 cmlp_ssize_t steps, const double *lr, double *losses,
                                 cmlp_ssize_t *ran, const cmlp_ssize_t *strides);

/* The block kernel of variant v (0 baseline, 1 avx2, 2 avx512), as _kernels names them */
cmlp_tiny_block_d cmlp_tiny_kernel_d(int v);

#endif
