"""``python -m cmlp``: the reference notebook, run with the compiled package.

The notebook trains a 2-1-1 sigmoid network (weights 0.5, biases 1.0, input
[1, 2], target 0.4, lr 0.1) for one step, twice: with PyTorch's ``MSELoss``
(output error ``2(a - y)``) and with the textbook delta rule in NumPy
(``1/2`` squared error, output error ``a - y``). This prints both cells'
numbers in the notebook's own format, as cmlp computes them.
"""
import argparse

import numpy as np

import cmlp

INPUT = np.array([1.0, 2.0])
TARGET = np.array([0.4])
LEARNING_RATE = 0.1


def notebook_network(dtype):
    """The notebook's 2-1-1 sigmoid network: every weight 0.5, every bias 1.0."""
    net = cmlp.MLP([2, 1, 1], activation="sigmoid", dtype=dtype)
    for W, b in zip(net.weights, net.biases):
        W[:] = 0.5
        b[:] = 1.0
    return net


def _torch_style(array):
    """An array as PyTorch prints a tensor's values: four decimals, commas."""
    return np.array2string(array, precision=4, floatmode="fixed", separator=", ")


def pytorch_cell():
    """The notebook's PyTorch cell: float32, loss='mse' (torch.nn.MSELoss)."""
    net = notebook_network(np.float32)
    print("# PyTorch cell: float32, loss='mse' (torch.nn.MSELoss)")
    print("Output of the MLP:", float(net.forward(INPUT)[0]))
    net.backward(TARGET, loss="mse")
    net.sgd_step(LEARNING_RATE)
    print("\nGradients after backward:")
    for (name, _), grad in zip(net.named_parameters(), _interleave(net.weight_grads, net.bias_grads)):
        print(f"{name} grad: {_torch_style(grad)}")
    print("\nUpdated weights and biases:")
    for name, param in net.named_parameters():
        print(name, _torch_style(param))


def numpy_cell():
    """The notebook's NumPy cell: float64, loss='half_sse' (the textbook delta rule)."""
    net = notebook_network(np.float64)
    print("# NumPy cell: float64, loss='half_sse' (textbook delta rule)")
    net.train_step(INPUT, TARGET, LEARNING_RATE, loss="half_sse")
    (W0, W1), (b0, b1) = net.weights, net.biases
    print("Updated weights and biases from input to hidden layer:")
    print("W0:", W0)
    print("b0:", b0)
    print("Updated weights and biases from hidden to output layer:")
    print("W1:", W1)
    print("b1:", b1)


def _interleave(weights, biases):
    for W, b in zip(weights, biases):
        yield W
        yield b


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cmlp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the reference notebook's example with cmlp and print its numbers.\n\n"
            "The network: 2 inputs, 1 hidden unit, 1 output, sigmoid on both layers, every\n"
            "weight 0.5 and every bias 1.0; input [1, 2], target 0.4, one SGD step of lr 0.1.\n"
            "It is run twice, as the notebook's two cells run it:\n"
            "  PyTorch cell  float32, loss='mse' (torch.nn.MSELoss): output error 2(a - y)\n"
            "  NumPy cell    float64, loss='half_sse' (textbook delta rule): output error a - y\n"
            "so every gradient of the first is twice that of the second."),
        epilog="The tutorial works through these numbers by hand: docs/tutorial.rst.")
    parser.add_argument("--version", action="version", version=f"cmlp {cmlp.__version__}")
    parser.parse_args(argv)
    pytorch_cell()
    print()
    numpy_cell()


if __name__ == "__main__":
    main()
