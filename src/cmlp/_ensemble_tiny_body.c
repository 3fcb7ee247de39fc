/* The block kernel of _ensemble_tiny.h, written once; _ensemble_tiny.c
   includes it once per variant, after setting the target and CMLP_TINY_NAME.
   Every loop over c runs across the lanes (the models) and is what the
   compiler vectorises; the operations on each lane are those of one model's
   step, in its order. */
#ifndef CMLP_TINY_NAME
#error "included by _ensemble_tiny.c"
#endif

#define LANES CMLP_TINY_LANES
#define FOR_LANES for (int c = 0; c < LANES; c++)

/* e^z's libm route for the entries the vector sigmoid does not cover, as
   _kernels.pyx's _sigmoid takes them */
static double CMLP_TINY_NAME(libm_sigmoid)(double z) {
    double e;
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    e = exp(z);
    return e / (1.0 + e);
}

/* a <- f(z) in place, one row of lanes */
static void CMLP_TINY_NAME(activate)(int code, double *a) {
    if (code == 1) {
        double s[LANES];
        int outside = 0;
        FOR_LANES s[c] = cmlp_sigmoid_d(a[c]);
        /* in one pass without branches: |z| beyond the range, or NaN */
        FOR_LANES outside |= !(fabs(a[c]) <= CMLP_SIGMOID_RANGE_D);
        if (outside)
            FOR_LANES if (!(a[c] <= CMLP_SIGMOID_RANGE_D && a[c] >= -CMLP_SIGMOID_RANGE_D))
                s[c] = CMLP_TINY_NAME(libm_sigmoid)(a[c]);
        FOR_LANES a[c] = s[c];
    } else if (code == 2) {
        FOR_LANES a[c] = tanh(a[c]);
    } else if (code == 3) {
        FOR_LANES a[c] = a[c] < 0 ? 0 : a[c];
    }
}

/* d <- d f'(a), f' written through the output a */
static void CMLP_TINY_NAME(backprop)(int code, double *d, const double *a) {
    if (code == 1)
        FOR_LANES d[c] = d[c] * a[c] * (1.0 - a[c]);
    else if (code == 2)
        FOR_LANES d[c] = d[c] * (1.0 - a[c] * a[c]);
    else if (code == 3)
        FOR_LANES d[c] = !(a[c] > 0) ? 0 : d[c];
}

static double CMLP_TINY_NAME(clamped_log)(double x) {
    double v = log(x);
    return v < -100.0 ? -100.0 : v;
}

static int CMLP_TINY_NAME(block)(const cmlp_tiny_net *net, cmlp_ssize_t m0, cmlp_ssize_t m1,
                                 double *params, const double *X, const double *Y,
                                 cmlp_ssize_t n_rows, const cmlp_ssize_t *order,
                                 cmlp_ssize_t steps, const double *lr, double *losses,
                                 cmlp_ssize_t *ran, const cmlp_ssize_t *strides) {
    const int L = net->n_layers;
    const cmlp_ssize_t P = net->n_params, nb = m1 - m0;
    const cmlp_ssize_t n_in = net->sizes[0], k = net->sizes[L];
    const cmlp_ssize_t ps = strides[0], xs = strides[1], ys = strides[2], ls = strides[3];
    (void)n_rows;
    double p[CMLP_TINY_MAX_PARAMS][LANES] CMLP_TINY_ALIGNED;
    double a[CMLP_TINY_MAX_UNITS][LANES] CMLP_TINY_ALIGNED;
    double d[CMLP_TINY_MAX_UNITS][LANES] CMLP_TINY_ALIGNED;
    double y[CMLP_TINY_MAX_WIDTH][LANES] CMLP_TINY_ALIGNED;
    double rate[LANES], total[LANES];
    int stopped[LANES] = {0};
    cmlp_ssize_t a_at[CMLP_TINY_MAX_LAYERS + 1], w_at[CMLP_TINY_MAX_LAYERS];
    a_at[0] = 0;
    w_at[0] = 0;
    for (int l = 0; l < L; l++) {
        a_at[l + 1] = a_at[l] + net->sizes[l];
        if (l + 1 < L) w_at[l + 1] = w_at[l] + net->sizes[l + 1] * (net->sizes[l] + 1);
    }
    /* In: the block's parameters transposed, the lanes beyond it zero. A
       full block without a test in the loop, which then gathers in vectors. */
    const double *block = params + m0 * ps;
    if (nb == LANES && ps == 8) {
        /* rows of one cache line (the ensemble's own buffers, up to 8
           parameters): a transpose of constant shape, done in vectors; the
           row's padding goes through unchanged */
        FOR_LANES {
            const double *row = block + c * 8;
            p[0][c] = row[0]; p[1][c] = row[1]; p[2][c] = row[2]; p[3][c] = row[3];
            p[4][c] = row[4]; p[5][c] = row[5]; p[6][c] = row[6]; p[7][c] = row[7];
        }
        FOR_LANES rate[c] = lr[m0 + c];
    } else if (nb == LANES) {
        for (cmlp_ssize_t i = 0; i < P; i++) FOR_LANES p[i][c] = block[c * ps + i];
        FOR_LANES rate[c] = lr[m0 + c];
    } else {
        for (cmlp_ssize_t i = 0; i < P; i++) FOR_LANES p[i][c] = 0.0;
        for (cmlp_ssize_t c = 0; c < nb; c++)
            for (cmlp_ssize_t i = 0; i < P; i++) p[i][c] = block[c * ps + i];
        FOR_LANES rate[c] = 0.0;
        for (cmlp_ssize_t c = 0; c < nb; c++) rate[c] = lr[m0 + c];
    }
    /* a, d and y are written before they are read, in every lane: no zeroing */

    for (cmlp_ssize_t t = 0; t < steps; t++) {
        /* A^(0) and the target of this step: where each lane's row starts,
           then one gather per input and per target */
        cmlp_ssize_t x_at[LANES], y_at[LANES];
        for (cmlp_ssize_t c = 0; c < LANES; c++) {
            const cmlp_ssize_t m = m0 + (c < nb ? c : 0), row = order ? order[m * steps + t] : t;
            x_at[c] = m * xs + row * n_in;
            y_at[c] = m * ys + row * k;
        }
        for (cmlp_ssize_t i = 0; i < n_in; i++) FOR_LANES a[i][c] = X[x_at[c] + i];
        for (cmlp_ssize_t j = 0; j < k; j++) FOR_LANES y[j][c] = Y[y_at[c] + j];
        /* forward: z_j = dot(a_prev, W[j, :]) in the dot-product kernel's order, + b_j */
        for (int l = 0; l < L; l++) {
            const cmlp_ssize_t n_i = net->sizes[l], n_o = net->sizes[l + 1];
            const cmlp_ssize_t k_end = n_i - n_i % 8;
            double (*ap)[LANES] = a + a_at[l], (*an)[LANES] = a + a_at[l + 1];
            double (*W)[LANES] = p + w_at[l], (*b)[LANES] = p + w_at[l] + n_o * n_i;
            for (cmlp_ssize_t j = 0; j < n_o; j++) {
                double sum[LANES];
                FOR_LANES sum[c] = 0.0;
                if (k_end > 0) {
                    double part[8][LANES];
                    for (int q = 0; q < 8; q++) FOR_LANES part[q][c] = 0.0;
                    for (cmlp_ssize_t i = 0; i < k_end; i += 8)
                        for (int q = 0; q < 8; q++)
                            FOR_LANES part[q][c] = part[q][c] + ap[i + q][c] * W[j * n_i + i + q][c];
                    for (int q = 0; q < 8; q++) FOR_LANES sum[c] = sum[c] + part[q][c];
                } else {
                    /* the eight partial sums, all zero, added to sum: +0 */
                    FOR_LANES sum[c] = sum[c] + 0.0;
                }
                for (cmlp_ssize_t i = k_end; i < n_i; i++)
                    FOR_LANES sum[c] = sum[c] + ap[i][c] * W[j * n_i + i][c];
                FOR_LANES an[j][c] = sum[c] + b[j][c];
            }
            for (cmlp_ssize_t j = 0; j < n_o; j++) CMLP_TINY_NAME(activate)(net->codes[l], an[j]);
        }
        /* the output delta and the loss */
        {
            double (*aL)[LANES] = a + a_at[L], (*dL)[LANES] = d + a_at[L];
            FOR_LANES total[c] = 0.0;
            if (net->loss == 2) {
                const double scale = 1.0 / (double)k;
                for (cmlp_ssize_t j = 0; j < k; j++) {
                    for (int c = 0; c < LANES; c++) {
                        const double e = aL[j][c];
                        total[c] -= (y[j][c] * CMLP_TINY_NAME(clamped_log)(e)
                                     + (1 - y[j][c]) * CMLP_TINY_NAME(clamped_log)(1 - e));
                    }
                    FOR_LANES dL[j][c] = scale * (aL[j][c] - y[j][c]);
                }
                FOR_LANES total[c] = total[c] * scale;
            } else {
                const double scale = net->loss == 0 ? 2.0 / (double)k : 1.0;
                for (cmlp_ssize_t j = 0; j < k; j++) {
                    double e[LANES];
                    FOR_LANES e[c] = aL[j][c] - y[j][c];
                    FOR_LANES total[c] += e[c] * e[c];
                    FOR_LANES dL[j][c] = scale * e[c];
                }
                for (cmlp_ssize_t j = 0; j < k; j++)
                    CMLP_TINY_NAME(backprop)(net->codes[L - 1], dL[j], aL[j]);
                FOR_LANES total[c] = total[c] * scale / 2;
            }
            for (cmlp_ssize_t c = 0; c < nb; c++)
                if (!stopped[c]) losses[(m0 + c) * ls + t] = total[c];
        }
        /* backward, each layer's update as soon as its delta_prev is out */
        for (int l = L - 1; l >= 0; l--) {
            const cmlp_ssize_t n_i = net->sizes[l], n_o = net->sizes[l + 1];
            double (*ap)[LANES] = a + a_at[l], (*dl)[LANES] = d + a_at[l + 1];
            double (*dp)[LANES] = d + a_at[l];
            double (*W)[LANES] = p + w_at[l], (*b)[LANES] = p + w_at[l] + n_o * n_i;
            if (l > 0) {
                /* delta_prev_i = sum over j from 0 of delta_j W[j, i] (the row kernel) */
                for (cmlp_ssize_t i = 0; i < n_i; i++) {
                    double sum[LANES];
                    FOR_LANES sum[c] = 0.0;
                    for (cmlp_ssize_t j = 0; j < n_o; j++)
                        FOR_LANES sum[c] = sum[c] + dl[j][c] * W[j * n_i + i][c];
                    FOR_LANES dp[i][c] = sum[c];
                }
                for (cmlp_ssize_t i = 0; i < n_i; i++)
                    CMLP_TINY_NAME(backprop)(net->codes[l - 1], dp[i], ap[i]);
            }
            /* dW = 0 + delta_j a_i (the outer product), db = 0 + delta_j; p <- p - lr g */
            for (cmlp_ssize_t j = 0; j < n_o; j++) {
                for (cmlp_ssize_t i = 0; i < n_i; i++)
                    FOR_LANES W[j * n_i + i][c] = W[j * n_i + i][c]
                        - rate[c] * (0.0 + dl[j][c] * ap[i][c]);
            }
            for (cmlp_ssize_t j = 0; j < n_o; j++)
                FOR_LANES b[j][c] = b[j][c] - rate[c] * (0.0 + dl[j][c]);
        }
        /* A model stops after a step whose loss is not finite, as _epoch does:
           its parameters go out now, and its lane runs on unread. */
        int any_bad = 0;
        FOR_LANES any_bad |= !(fabs(total[c]) <= DBL_MAX);
        if (any_bad) for (cmlp_ssize_t c = 0; c < nb; c++)
            if (!stopped[c] && !isfinite(total[c])) {
                stopped[c] = 1;
                ran[m0 + c] = t + 1;
                for (cmlp_ssize_t i = 0; i < P; i++) params[(m0 + c) * ps + i] = p[i][c];
            }
    }
    /* Out: the parameters back in place (a stopped model's went out already) */
    int any_stopped = 0;
    FOR_LANES any_stopped |= stopped[c];
    if (nb == LANES && !any_stopped && ps == 8) {
        double *out = params + m0 * ps;
        for (int i = 0; i < 8; i++) FOR_LANES out[c * 8 + i] = p[i][c];
        FOR_LANES ran[m0 + c] = steps;
    } else if (nb == LANES && !any_stopped) {
        double *out = params + m0 * ps;
        for (cmlp_ssize_t i = 0; i < P; i++) FOR_LANES out[c * ps + i] = p[i][c];
        FOR_LANES ran[m0 + c] = steps;
    } else {
        for (cmlp_ssize_t c = 0; c < nb; c++) {
            if (stopped[c]) continue;
            ran[m0 + c] = steps;
            for (cmlp_ssize_t i = 0; i < P; i++) params[(m0 + c) * ps + i] = p[i][c];
        }
    }
    return 0;
}

#undef FOR_LANES
#undef LANES
#undef CMLP_TINY_NAME
