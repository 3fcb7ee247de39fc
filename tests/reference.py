"""A plain NumPy MLP, written independently of cmlp's kernels, for the tests.

Per-sample deltas as in the textbook; the batch mean is taken in the
gradients, ``dW = delta.T @ A_prev / n``, the way the reference notebook's
maths reads -- a different route to the same numbers than cmlp takes.
"""
import numpy as np


def activate(name, z):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "identity":
        return z.copy()
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(name)


def activation_vjp(name, a, g):
    """dL/dz from dL/da for a layer whose output is a."""
    if name == "sigmoid":
        return g * a * (1 - a)
    if name == "tanh":
        return g * (1 - a * a)
    if name == "relu":
        return g * (a > 0)
    if name == "identity":
        return g
    if name == "softmax":
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    raise ValueError(name)


def forward(weights, biases, activations, X):
    """All layer outputs A^(0) .. A^(L) and the last pre-activation z."""
    A = [np.asarray(X, dtype=float)]
    z = None
    for W, b, name in zip(weights, biases, activations):
        z = A[-1] @ W.T + b
        A.append(activate(name, z))
    return A, z


def loss_and_sample_deltas(loss, a, y, z, out_activation):
    """The loss and the per-sample output delta (dL_i/dz_i, without the 1/n)."""
    n, k = a.shape
    if loss == "mse":
        value = np.mean((a - y) ** 2)
        return value, activation_vjp(out_activation, a, 2 * (a - y) / k)
    if loss == "half_sse":
        value = np.sum(0.5 * (a - y) ** 2) / n
        return value, activation_vjp(out_activation, a, a - y)
    if loss == "bce":
        log_a = np.maximum(np.log(a), -100)
        log_1ma = np.maximum(np.log(1 - a), -100)
        value = -np.mean(y * log_a + (1 - y) * log_1ma)
        return value, (a - y) / k
    if loss == "cross_entropy":
        log_p = z - (z.max(axis=1, keepdims=True)
                     + np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)))
        value = -np.sum(y * log_p) / n
        return value, a * y.sum(axis=1, keepdims=True) - y
    raise ValueError(loss)


def gradients(weights, biases, activations, X, Y, loss):
    """(loss, weight grads, bias grads, per-sample deltas) of the batch mean loss."""
    A, z = forward(weights, biases, activations, X)
    n = A[0].shape[0]
    value, delta = loss_and_sample_deltas(loss, A[-1], np.asarray(Y, float), z, activations[-1])
    deltas = [delta]
    for l in range(len(weights) - 1, 0, -1):
        deltas.insert(0, activation_vjp(activations[l - 1], A[l], deltas[0] @ weights[l]))
    weight_grads = [d.T @ a / n for d, a in zip(deltas, A[:-1])]
    bias_grads = [d.sum(axis=0) / n for d in deltas]
    return value, weight_grads, bias_grads, deltas


MASK64 = 2**64 - 1


def splitmix64(x):
    """SplitMix64 from state x: (the new state, its output)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return x, z ^ (z >> 31)


def xoshiro256starstar_uniforms(seed, n):
    """n uniforms (x >> 11) 2^-53 from xoshiro256**, its state seeded by
    SplitMix64 from seed, as fit's shuffle draws them."""
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK64

    s = []
    for _ in range(4):
        seed, word = splitmix64(seed)
        s.append(word)
    u = []
    for _ in range(n):
        u.append((rotl((s[1] * 5) & MASK64, 7) * 9 & MASK64) >> 11)
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return np.array(u, dtype=np.float64) * 2.0**-53


def inside_out_order(u):
    """The inside-out Fisher-Yates shuffle driven by the uniforms u (one per sample)."""
    order = [0] * len(u)
    for i in range(len(u)):
        j = min(int(u[i] * (i + 1)), i)
        order[i] = order[j]
        order[j] = i
    return np.array(order, dtype=np.intp)


def shuffled_order(rng, n):
    """fit's documented shuffle of n samples, written out in Python: one
    number from rng seeds xoshiro256**, whose uniforms drive the shuffle."""
    seed = int(rng.integers(2**64, dtype=np.uint64))
    return inside_out_order(xoshiro256starstar_uniforms(seed, n))
