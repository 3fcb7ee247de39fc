"""The reference notebook's NumPy cell, grown to any depth and batch: the NumPy engine.

Written the way the notebook writes it -- ``np.dot`` for the forward pass, the
delta recursion ``delta = (delta_next W) * a(1 - a)``, then each update in
place -- with two changes so that it computes the same step as PyTorch and cmlp:
the loss is ``torch.nn.MSELoss`` (hence the ``2 / (n k)`` in the output delta,
where the notebook's cell had the half sum of squares), and a batch of ``n``
samples is a matrix with one sample per row. A 1-D input is the notebook's own
case, one sample, and takes the notebook's own route (``np.dot(W, a)``,
``np.outer``). Nothing here is shared with cmlp's kernels.
"""
import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative(a):
    return a * (1 - a)


class NotebookNumPy:
    """Sigmoid layers, MSE loss, plain SGD; weights ``(n_out, n_in)`` as in PyTorch."""

    def __init__(self, weights, biases, dtype):
        self.weights = [np.array(W, dtype=dtype) for W in weights]
        self.biases = [np.array(b, dtype=dtype) for b in biases]

    def forward(self, x):
        A = [x]
        for W, b in zip(self.weights, self.biases):
            A.append(sigmoid(np.dot(A[-1], W.T) + b))
        return A

    def predict(self, x):
        return self.forward(x)[-1]

    def train_step(self, x, target, lr):
        if x.ndim == 1:
            return self._train_step_one_sample(x, target, lr)
        A = self.forward(x)
        n, k = A[-1].shape
        delta = 2 * (A[-1] - target) / (n * k) * sigmoid_derivative(A[-1])
        for l in range(len(self.weights) - 1, -1, -1):
            W = self.weights[l]
            delta_prev = np.dot(delta, W) * sigmoid_derivative(A[l]) if l > 0 else None
            W -= lr * np.dot(delta.T, A[l])
            self.biases[l] -= lr * delta.sum(axis=0)
            delta = delta_prev

    def _train_step_one_sample(self, x, target, lr):
        # The notebook's cell, layer by layer: Z = W a + b, A = sigmoid(Z).
        A = [x]
        for W, b in zip(self.weights, self.biases):
            A.append(sigmoid(np.dot(W, A[-1]) + b))
        delta = 2 * (A[-1] - target) / A[-1].shape[0] * sigmoid_derivative(A[-1])
        for l in range(len(self.weights) - 1, -1, -1):
            W = self.weights[l]
            delta_prev = np.dot(delta, W) * sigmoid_derivative(A[l]) if l > 0 else None
            W -= lr * np.outer(delta, A[l])
            self.biases[l] -= lr * delta
            delta = delta_prev
