"""One SGD step against PyTorch's autograd and optim.SGD, on random networks."""
import numpy as np
import pytest

import cmlp
from notebook import INPUT, TARGET, LR, notebook_network

torch = pytest.importorskip("torch")

TORCH_ACTIVATIONS = {
    "sigmoid": torch.nn.Sigmoid,
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "identity": torch.nn.Identity,
}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


def torch_twin(net):
    """A torch.nn.Sequential with cmlp's parameters; softmax output left to the loss."""
    layers = []
    for W, b, name in zip(net.weights, net.biases, net.activation):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=TORCH_DTYPES[net.dtype.type])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(linear)
        if name != "softmax":  # CrossEntropyLoss applies log-softmax itself
            layers.append(TORCH_ACTIVATIONS[name]())
    return torch.nn.Sequential(*layers)


def torch_loss(loss):
    return {"mse": torch.nn.MSELoss(), "bce": torch.nn.BCELoss(),
            "cross_entropy": torch.nn.CrossEntropyLoss()}[loss]


def random_case(seed, loss, dtype):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    sizes = [int(s) for s in rng.integers(1, 41, size=depth + 1)]
    hidden = [str(a) for a in rng.choice(list(TORCH_ACTIVATIONS), size=depth - 1)]
    output = {"mse": str(rng.choice(list(TORCH_ACTIVATIONS))), "bce": "sigmoid",
              "cross_entropy": "softmax"}[loss]
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
    net = cmlp.MLP(sizes, activation=hidden + [output], dtype=dtype, seed=seed)
    for b in net.biases:
        b[:] = rng.uniform(-0.5, 0.5, size=b.shape)
    n = int(rng.integers(1, 34))
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        Y = rng.integers(0, sizes[-1], size=n)
    elif loss == "bce":
        Y = rng.uniform(size=(n, sizes[-1])).astype(dtype)
    else:
        Y = rng.normal(size=(n, sizes[-1])).astype(dtype)
    return net, X, Y


def torch_step(model, X, Y, loss, lr):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    optimizer.zero_grad()
    value = torch_loss(loss)(model(torch.from_numpy(X)), torch.from_numpy(Y))
    value.backward()
    optimizer.step()
    return value.item()


@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
@pytest.mark.parametrize("seed", range(8))
def test_train_step_equals_torch_sgd(loss, seed, dtype):
    net, X, Y = random_case(seed, loss, dtype)
    model = torch_twin(net)
    want = torch_step(model, X, Y, loss, lr=0.5)
    got = net.train_step(X, Y, lr=0.5, loss=loss)
    expected = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    if dtype == np.float64:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(net.params, expected, rtol=0, atol=1e-12)
    else:
        assert got == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(net.params, expected, rtol=1e-5, atol=1e-6)


def test_notebook_state_dict_loads_and_reproduces_the_cell(dtype):
    class SimpleMLP(torch.nn.Module):  # the notebook's model, as written there
        def __init__(self):
            super().__init__()
            self.layer0 = torch.nn.Linear(2, 1)
            self.layer1 = torch.nn.Linear(1, 1)
            self.activation = torch.nn.Sigmoid()

        def forward(self, x):
            return self.activation(self.layer1(self.activation(self.layer0(x))))

    model = SimpleMLP().to(TORCH_DTYPES[dtype])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5 if p.dim() == 2 else 1.0)
    net = cmlp.MLP([2, 1, 1], dtype=dtype, seed=0)
    net.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(net.params, notebook_network(dtype).params)
    x = torch.tensor(INPUT, dtype=TORCH_DTYPES[dtype])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss = torch.nn.MSELoss()(model(x), torch.tensor(TARGET, dtype=TORCH_DTYPES[dtype]))
    loss.backward()
    optimizer.step()
    assert net.train_step(INPUT, TARGET, LR) == pytest.approx(loss.item(), rel=1e-7)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(dict(net.named_parameters())[name], param.detach().numpy(),
                                   rtol=1e-7 if dtype == np.float32 else 1e-15)
