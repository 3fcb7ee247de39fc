"""The reference notebook: its network, its inputs and every number it printed."""
import numpy as np

import cmlp

INPUT = [1.0, 2.0]
TARGET = [0.4]
LR = 0.1

# The PyTorch cell (float32, nn.MSELoss, optim.SGD), as printed.
TORCH_OUTPUT = 0.8118491768836975
TORCH_GRADS = {
    "layer0.weight": [[0.0044, 0.0088]],
    "layer0.bias": [0.0044],
    "layer1.weight": [[0.1163]],
    "layer1.bias": [0.1258],
}
TORCH_UPDATED = {
    "layer0.weight": [[0.4996, 0.4991]],
    "layer0.bias": [0.9996],
    "layer1.weight": [[0.4884]],
    "layer1.bias": [0.9874],
}
# PyTorch prints four decimals: a printed value is within half a unit of the last.
TORCH_PRINT_TOL = 0.5e-4 + 1e-7

# The NumPy cell (float64, textbook delta rule), as printed.
NUMPY_UPDATED = {
    "layer0.weight": [[0.49977949, 0.49955898]],
    "layer0.bias": [0.99977949],
    "layer1.weight": [[0.49418622]],
    "layer1.bias": [0.993709],
}


def notebook_network(dtype=np.float64):
    """The notebook's 2-1-1 sigmoid network: every weight 0.5, every bias 1.0."""
    net = cmlp.MLP([2, 1, 1], dtype=dtype)
    for W, b in zip(net.weights, net.biases):
        W[:] = 0.5
        b[:] = 1.0
    return net


def numpy_cell():
    """The notebook's NumPy cell, verbatim but for the prints: its deltas and updates."""
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def sigmoid_derivative(x):
        return x * (1 - x)

    W0 = np.array([[0.5, 0.5]])
    b0 = np.array([1.0])
    W1 = np.array([[0.5]])
    b1 = np.array([1.0])
    input_data = np.array([1.0, 2.0])
    target = np.array([0.4])
    lr = 0.1
    Z1 = np.dot(W0, input_data) + b0
    A1 = sigmoid(Z1)
    Z2 = np.dot(W1, A1) + b1
    A2 = sigmoid(Z2)
    delta_2 = (A2 - target) * sigmoid_derivative(A2)
    delta_1 = delta_2 * W1 * sigmoid_derivative(A1)
    W1 -= lr * delta_2 * A1.T
    b1 -= lr * delta_2
    W0 -= lr * np.dot(delta_1, input_data.reshape(1, -1))
    b0 -= lr * delta_1.squeeze()
    updated = {"layer0.weight": W0, "layer0.bias": b0, "layer1.weight": W1, "layer1.bias": b1}
    return {"A1": A1, "A2": A2, "delta_1": delta_1, "delta_2": delta_2, "updated": updated}
