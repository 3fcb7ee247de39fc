"""The same SGD step in pure Python (lists and ``math.exp``): the Python engine.

What a student writes before reaching for NumPy: sigmoid layers, the
``torch.nn.MSELoss`` loss, a batch of samples as a list of lists. It is run on
the tiny case only, where it is the honest baseline: at a few units per layer
the interpreter, not the arithmetic, sets the time of every engine.
"""
import math


def sigmoid(z):
    # Branch on the sign, as cmlp does, so exp never overflows.
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


class PurePython:
    """Weights as lists of rows ``(n_out, n_in)``, biases as lists."""

    def __init__(self, weights, biases):
        self.weights = [[[float(w) for w in row] for row in W] for W in weights]
        self.biases = [[float(v) for v in b] for b in biases]

    def forward(self, x):
        """All layer outputs of one sample ``x`` (a list)."""
        A = [x]
        for W, b in zip(self.weights, self.biases):
            a = A[-1]
            A.append([sigmoid(sum(w * v for w, v in zip(row, a)) + b_j)
                      for row, b_j in zip(W, b)])
        return A

    def predict(self, x):
        return self.forward(x)[-1]

    def train_step(self, X, Y, lr):
        """One SGD step on the samples X (list of lists) with targets Y."""
        n, k = len(X), len(Y[0])
        grads_W = [[[0.0] * len(row) for row in W] for W in self.weights]
        grads_b = [[0.0] * len(b) for b in self.biases]
        for x, y in zip(X, Y):
            A = self.forward(x)
            delta = [2 * (a - t) / (n * k) * a * (1 - a) for a, t in zip(A[-1], y)]
            for l in range(len(self.weights) - 1, -1, -1):
                W, a_prev = self.weights[l], A[l]
                for j, d in enumerate(delta):
                    grads_b[l][j] += d
                    row = grads_W[l][j]
                    for i, v in enumerate(a_prev):
                        row[i] += d * v
                if l > 0:
                    delta = [sum(delta[j] * W[j][i] for j in range(len(delta))) * a * (1 - a)
                             for i, a in enumerate(a_prev)]
        for W, b, gW, gb in zip(self.weights, self.biases, grads_W, grads_b):
            for row, grow in zip(W, gW):
                for i, g in enumerate(grow):
                    row[i] -= lr * g
            for j, g in enumerate(gb):
                b[j] -= lr * g
