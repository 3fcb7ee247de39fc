"""cmlp.plot.backprop: the numbers it places, read back from the text artists (no pixels)."""
import re

import numpy as np
import pytest

import cmlp
from notebook import (INPUT, LR, NUMPY_UPDATED, TARGET, TORCH_GRADS, TORCH_OUTPUT, TORCH_PRINT_TOL,
                      TORCH_UPDATED, notebook_network)

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import cmlp.plot  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    """Each test's figures closed after it: pyplot keeps every figure it made until then."""
    yield
    plt.close("all")


NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def drawn(ax):
    """gid -> the numbers of that text artist, in order ('w = 0.5 → 0.4942' -> [0.5, 0.4942])."""
    return {t.get_gid(): [float(n) for n in NUMBER.findall(t.get_text().rpartition("=")[2] or
                                                            t.get_text())]
            for t in ax.texts if t.get_gid()}


def test_the_notebook_network_carries_the_notebooks_numbers():
    net = notebook_network()
    numbers = drawn(cmlp.plot.backprop(net, INPUT, TARGET, loss="mse", digits=6))
    assert numbers["a 0 0"] == [1.0] and numbers["a 0 1"] == [2.0]
    assert numbers["z 1 0"] == [2.5]
    assert numbers["a 2 0"][0] == pytest.approx(TORCH_OUTPUT, rel=1e-5)
    # Each weight's value and its gradient; each bias the same.
    for (l, j, i), grad in {(0, 0, 0): TORCH_GRADS["layer0.weight"][0][0],
                            (0, 0, 1): TORCH_GRADS["layer0.weight"][0][1],
                            (1, 0, 0): TORCH_GRADS["layer1.weight"][0][0]}.items():
        assert numbers[f"w {l} {j} {i}"] == [0.5]
        assert numbers[f"grad w {l} {j} {i}"][0] == pytest.approx(grad, abs=0.5e-4)
    for l, name in ((1, "layer0.bias"), (2, "layer1.bias")):
        assert numbers[f"b {l} 0"] == [1.0]
        assert numbers[f"grad b {l} 0"][0] == pytest.approx(TORCH_GRADS[name][0], abs=0.5e-4)
        # δ of a unit is the gradient of its bias.
        assert numbers[f"delta {l} 0"] == numbers[f"grad b {l} 0"]


@pytest.mark.parametrize("loss, updated", [("mse", TORCH_UPDATED), ("half_sse", NUMPY_UPDATED)])
def test_a_learning_rate_draws_each_parameter_old_to_new_as_the_notebook_cells_print_them(loss,
                                                                                          updated):
    net = notebook_network()
    before = net.params.copy()
    numbers = drawn(cmlp.plot.backprop(net, INPUT, TARGET, loss=loss, lr=LR, digits=8))
    tol = TORCH_PRINT_TOL if loss == "mse" else 0.5e-8
    for l in (0, 1):
        for i, new in enumerate(updated[f"layer{l}.weight"][0]):
            assert numbers[f"w {l} 0 {i}"][0] == 0.5
            assert numbers[f"w {l} 0 {i}"][1] == pytest.approx(new, abs=tol)
        assert numbers[f"b {l + 1} 0"] == pytest.approx([1.0, updated[f"layer{l}.bias"][0]], abs=tol)
    # The step is drawn, not taken.
    assert np.array_equal(net.params, before)


def test_a_learning_rate_without_targets_is_refused():
    with pytest.raises(ValueError, match="needs the targets"):
        cmlp.plot.backprop(notebook_network(), INPUT, lr=LR)


def test_half_sse_gives_half_the_deltas_of_mse():
    mse = drawn(cmlp.plot.backprop(notebook_network(), INPUT, TARGET, loss="mse", digits=8))
    half = drawn(cmlp.plot.backprop(notebook_network(), INPUT, TARGET, loss="half_sse", digits=8))
    for unit in ("delta 1 0", "delta 2 0"):
        assert mse[unit][0] == pytest.approx(2 * half[unit][0], rel=1e-7)


def test_a_batch_shows_means_and_summed_deltas_of_an_independent_computation():
    rng = np.random.default_rng(3)
    net = cmlp.MLP([3, 4, 2], activation=["tanh", "sigmoid"], seed=1)
    X, Y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    numbers = drawn(cmlp.plot.backprop(net, X, Y, loss="mse", digits=10))
    (W0, W1), (b0, b1) = ([np.array(w) for w in net.weights], [np.array(b) for b in net.biases])
    # The textbook forward and backward pass, in NumPy.
    z1 = X @ W0.T + b0
    a1 = np.tanh(z1)
    z2 = a1 @ W1.T + b1
    a2 = 1 / (1 + np.exp(-z2))
    d2 = 2 * (a2 - Y) / Y.size * a2 * (1 - a2)
    d1 = d2 @ W1 * (1 - a1 ** 2)
    for l, (z, a, d) in enumerate([(z1, a1, d1), (z2, a2, d2)], start=1):
        for j in range(z.shape[1]):
            assert numbers[f"z {l} {j}"][0] == pytest.approx(z[:, j].mean(), rel=1e-8, abs=1e-12)
            assert numbers[f"a {l} {j}"][0] == pytest.approx(a[:, j].mean(), rel=1e-8)
            assert numbers[f"delta {l} {j}"][0] == pytest.approx(d[:, j].sum(), rel=1e-8, abs=1e-14)
    # These layers are too dense to label on their arrows: their weights are tables, same gids.
    for l, (d, a_in, W) in enumerate([(d1, X, W0), (d2, a1, W1)]):
        grad = d.T @ a_in
        for (j, i), value in np.ndenumerate(W):
            assert numbers[f"w {l} {j} {i}"] == pytest.approx([value], rel=1e-8)
            assert numbers[f"grad w {l} {j} {i}"] == pytest.approx([grad[j, i]], rel=1e-8)
    assert "mean z" in {t.get_text().split(" = ")[0] for t in cmlp.plot.backprop(net, X, Y).texts}


def test_forward_only_draws_no_gradient_and_changes_no_parameter():
    net = notebook_network()
    before = net.params.copy()
    numbers = drawn(cmlp.plot.backprop(net, INPUT))
    assert not any(gid.startswith(("delta", "grad")) for gid in numbers)
    assert all(len(values) == 1 for gid, values in numbers.items() if gid[0] in "wb")
    assert numbers["z 2 0"][0] == pytest.approx(1.462, abs=5e-4)
    assert np.array_equal(net.params, before)


def test_too_big_a_network_is_refused_with_its_counts():
    with pytest.raises(ValueError, match="at most 40 units and 120 weights; this network has 66"):
        cmlp.plot.backprop(cmlp.MLP([64, 2]), np.zeros(64))


def test_it_draws_into_the_axes_given_and_saves_as_svg(tmp_path):
    fig, ax = plt.subplots()
    assert cmlp.plot.backprop(notebook_network(), INPUT, TARGET, ax=ax) is ax
    fig.savefig(tmp_path / "net.svg")
    assert b"<svg" in (tmp_path / "net.svg").read_bytes()[:400]
    plt.close("all")


def test_its_own_figure_is_sized_for_the_network_at_one_inch_per_layout_unit():
    # Legible on a phone: the notebook's network fits in under 6 inches, so a
    # 400 px screen shows its 10 pt text at least two thirds of its size.
    fig = cmlp.plot.backprop(notebook_network(), INPUT, TARGET).figure
    assert fig.get_size_inches()[0] < 6
    sizes = {t.get_fontsize() for t in fig.axes[0].texts if t.get_gid()}
    assert min(sizes) >= 9
    plt.close(fig)


def test_a_dense_layers_table_draws_each_weight_old_to_new_with_its_gradient():
    net = cmlp.MLP([2, 3, 1], seed=2)
    X, Y = np.array([0.5, -1.0]), np.array([0.3])
    numbers = drawn(cmlp.plot.backprop(net, X, Y, lr=0.5, digits=10))
    W0, grad = np.array(net.weights[0]), np.array(net.weight_grads[0])
    for (j, i), value in np.ndenumerate(W0):
        assert numbers[f"w 0 {j} {i}"] == pytest.approx([value, value - 0.5 * grad[j, i]], rel=1e-8)
        assert numbers[f"grad w 0 {j} {i}"] == pytest.approx([grad[j, i]], rel=1e-8)
