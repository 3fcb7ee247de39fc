"""State dicts: PyTorch's names for the parameters, and models to and from PyTorch."""
import subprocess
import sys

import numpy as np
import pytest

import cmlp
from cmlp.io import from_torch, layer_state_dict


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation", [["sigmoid", "sigmoid"], ["relu", "identity"],
                                        ["tanh", "softmax"], ["identity", "tanh"]])
def test_to_torch_outputs_equal_cmlps(activation, dtype):
    torch = pytest.importorskip("torch")
    net = cmlp.MLP([5, 9, 4], activation=activation, dtype=dtype, seed=2)
    for b in net.biases:
        b[:] = np.random.default_rng(2).normal(size=b.shape)
    model = cmlp.to_torch(net)
    X = np.random.default_rng(3).normal(size=(11, 5)).astype(dtype)
    with torch.no_grad():
        theirs = model(torch.from_numpy(X)).numpy()
    assert theirs.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(net.predict(X), theirs, rtol=0, atol=tolerance)
    assert list(model.state_dict())[:2] == ["0.weight", "0.bias"]


def test_to_torch_copies_the_parameters():
    pytest.importorskip("torch")
    net = cmlp.MLP([2, 2])
    model = cmlp.to_torch(net)
    net.params[:] = 0
    assert model[0].weight.abs().sum().item() > 0


@pytest.mark.spawns_python
def test_cmlp_does_not_import_torch():
    code = "import sys, cmlp, cmlp.io, cmlp.training; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True).stdout.strip() == "False"


def test_a_sequential_state_dict_loads():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 2), torch.nn.Sigmoid(),
                                torch.nn.Linear(2, 12), torch.nn.Sigmoid(),
                                torch.nn.Linear(12, 1)).double()
    assert "8.weight" in model.state_dict()  # index 8 after index 6: sorted as numbers
    net = cmlp.MLP([3, 8, 6, 2, 12, 1], activation=["relu", "tanh", "sigmoid", "sigmoid", "identity"])
    net.load_state_dict(model.state_dict())
    X = np.random.default_rng(0).normal(size=(4, 3))
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(X), model(torch.from_numpy(X)).numpy(),
                                   rtol=0, atol=1e-12)


def test_the_notebooks_state_dict_loads():
    torch = pytest.importorskip("torch")

    class SimpleMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer0 = torch.nn.Linear(2, 1)
            self.layer1 = torch.nn.Linear(1, 1)

    model = SimpleMLP()
    net = cmlp.MLP([2, 1, 1])
    net.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(net.weights[0], model.layer0.weight.detach().numpy())
    np.testing.assert_array_equal(net.biases[1], model.layer1.bias.detach().numpy())


def test_layer_state_dict_renaming_rules():
    w, b = np.zeros((2, 2)), np.zeros(2)
    assert list(layer_state_dict({"net.10.weight": w, "net.10.bias": b, "net.2.weight": w,
                                  "net.2.bias": b})) == [
        "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]
    renamed = layer_state_dict({"fc2.weight": 1, "fc2.bias": 2, "fc1.weight": 3, "fc1.bias": 4})
    assert renamed == {"layer0.weight": 1, "layer0.bias": 2, "layer1.weight": 3, "layer1.bias": 4}
    with pytest.raises(ValueError, match="running_mean"):
        layer_state_dict({"0.weight": w, "0.bias": b, "1.running_mean": b})
    with pytest.raises(ValueError, match="no 0.bias"):
        layer_state_dict({"0.weight": w})


def test_from_torch_round_trip(dtype):
    pytest.importorskip("torch")
    net = cmlp.MLP([3, 5, 4, 2], activation=["tanh", "relu", "softmax"], dtype=dtype, seed=4)
    back = from_torch(cmlp.to_torch(net))
    assert repr(back) == repr(net)
    np.testing.assert_array_equal(back.params, net.params)
    identity_hidden = cmlp.MLP([3, 4, 2], activation=["identity", "sigmoid"], seed=1)
    assert from_torch(cmlp.to_torch(identity_hidden)).activation == ("identity", "sigmoid")


def test_from_torch_refuses_what_cmlp_cannot_express():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Dropout"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()))
    with pytest.raises(ValueError, match="bias"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)))
    with pytest.raises(ValueError, match="dim=0"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=0)))
    with pytest.raises(ValueError, match="Tanh"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Tanh()))


def test_named_parameters_and_state_dict_roundtrip(dtype):
    net = cmlp.MLP([3, 4, 2], dtype=dtype, seed=0)
    names = [name for name, _ in net.named_parameters()]
    assert names == ["layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]
    state = net.state_dict()
    assert list(state) == names
    assert not any(np.shares_memory(v, net.params) for v in state.values())
    other = cmlp.MLP([3, 4, 2], dtype=dtype, seed=1)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.params, net.params)
    nested = {k: v.tolist() for k, v in state.items()}  # anything np.asarray takes
    cmlp.MLP([3, 4, 2], dtype=dtype).load_state_dict(nested)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("layer1.bias"), r"missing \['layer1.bias'\]"),
    (lambda d: d.update({"layer2.weight": np.ones(1)}), r"unexpected \['layer2.weight'\]"),
    (lambda d: d.update({"layer0.weight": np.ones((3, 4))}), r"layer0.weight must have shape \(4, 3\)"),
    (lambda d: d.update({"layer1.bias": np.ones((2, 1))}), r"layer1.bias must have shape \(2,\)"),
])
def test_load_state_dict_rejects_and_leaves_model_unchanged(change, message):
    net = cmlp.MLP([3, 4, 2], seed=0)
    before = net.params.copy()
    state = cmlp.MLP([3, 4, 2], seed=1).state_dict()
    change(state)
    with pytest.raises(ValueError, match=message):
        net.load_state_dict(state)
    np.testing.assert_array_equal(net.params, before)
