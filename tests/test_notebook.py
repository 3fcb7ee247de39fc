"""The reference notebook, reproduced: every number both of its cells printed."""
import subprocess
import sys

import numpy as np
import pytest

from notebook import (INPUT, LR, NUMPY_UPDATED, TARGET, TORCH_GRADS, TORCH_OUTPUT,
                      TORCH_PRINT_TOL, TORCH_UPDATED, notebook_network, numpy_cell)
from reference import gradients


def test_forward_output(dtype):
    net = notebook_network(dtype)
    out = net.forward(np.array(INPUT))
    assert out.shape == (1,) and out.dtype == dtype
    assert abs(float(out[0]) - TORCH_OUTPUT) < 1e-7


def test_float32_output_is_pytorchs_to_the_bit():
    out = notebook_network(np.float32).forward(INPUT)
    assert float(out[0]) == TORCH_OUTPUT


def test_pytorch_cell_gradients_and_update(dtype):
    net = notebook_network(dtype)
    net.forward(INPUT)
    net.backward(TARGET, loss="mse")
    grads = dict(zip(TORCH_GRADS, _interleave(net.weight_grads, net.bias_grads)))
    for name, printed in TORCH_GRADS.items():
        np.testing.assert_allclose(grads[name], printed, rtol=0, atol=TORCH_PRINT_TOL, err_msg=name)
    net.sgd_step(LR)
    for name, param in net.named_parameters():
        np.testing.assert_allclose(param, TORCH_UPDATED[name], rtol=0, atol=TORCH_PRINT_TOL,
                                   err_msg=name)


def test_numpy_cell_update(dtype):
    net = notebook_network(dtype)
    net.train_step(INPUT, TARGET, LR, loss="half_sse")
    # Printed to 8 decimals; float32 carries only about 7 of them.
    tol = 1e-8 if dtype == np.float64 else 1e-7
    for name, param in net.named_parameters():
        np.testing.assert_allclose(param, NUMPY_UPDATED[name], rtol=0, atol=tol, err_msg=name)


def test_numpy_cell_deltas_and_updates_exactly():
    cell = numpy_cell()
    net = notebook_network()
    net.forward(INPUT)
    net.backward(TARGET, loss="half_sse")
    np.testing.assert_allclose(net.activations[1].ravel(), cell["A1"], rtol=1e-15)
    np.testing.assert_allclose(net.activations[2].ravel(), cell["A2"], rtol=1e-15)
    np.testing.assert_allclose(net.deltas[1].ravel(), cell["delta_2"].ravel(), rtol=1e-13)
    np.testing.assert_allclose(net.deltas[0].ravel(), cell["delta_1"].ravel(), rtol=1e-13)
    net.sgd_step(LR)
    for name, param in net.named_parameters():
        np.testing.assert_allclose(param, cell["updated"][name], rtol=0, atol=1e-15, err_msg=name)


def test_mse_is_twice_half_sse_for_one_output():
    # The notebook's two cells differ by exactly the factor 2 of MSELoss.
    mse, half = notebook_network(), notebook_network()
    mse.forward(INPUT)
    half.forward(INPUT)
    loss_mse = mse.backward(TARGET, loss="mse")
    loss_half = half.backward(TARGET, loss="half_sse")
    assert loss_mse == pytest.approx(2 * loss_half, rel=1e-15)
    np.testing.assert_allclose(mse.grads, 2 * half.grads, rtol=1e-15)


@pytest.mark.parametrize("loss", ["mse", "half_sse"])
def test_float64_equals_numpy_reimplementation(loss):
    net = notebook_network()
    net.forward(INPUT)
    value = net.backward(TARGET, loss=loss)
    W = [np.full((1, 2), 0.5), np.full((1, 1), 0.5)]
    b = [np.ones(1), np.ones(1)]
    ref_value, ref_wg, ref_bg, _ = gradients(W, b, ["sigmoid"] * 2, [INPUT], [TARGET], loss)
    assert value == pytest.approx(ref_value, abs=1e-12)
    for got, want in zip(net.weight_grads + net.bias_grads, ref_wg + ref_bg):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.spawns_python
def test_python_m_cmlp_prints_the_notebook():
    result = subprocess.run([sys.executable, "-m", "cmlp"], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.splitlines()
    for expected in [
        "Output of the MLP: 0.8118491768836975",
        "layer0.weight grad: [[0.0044, 0.0088]]",
        "layer0.bias grad: [0.0044]",
        "layer1.weight grad: [[0.1163]]",
        "layer1.bias grad: [0.1258]",
        "layer0.weight [[0.4996, 0.4991]]",
        "layer0.bias [0.9996]",
        "layer1.weight [[0.4884]]",
        "layer1.bias [0.9874]",
        "W0: [[0.49977949 0.49955898]]",
        "b0: [0.99977949]",
        "W1: [[0.49418622]]",
        "b1: [0.993709]",
    ]:
        assert expected in lines, f"{expected!r} not printed:\n{result.stdout}"


@pytest.mark.spawns_python
def test_python_m_cmlp_version():
    import cmlp
    result = subprocess.run([sys.executable, "-m", "cmlp", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == f"cmlp {cmlp.__version__}"


def _interleave(weights, biases):
    for W, b in zip(weights, biases):
        yield W
        yield b
