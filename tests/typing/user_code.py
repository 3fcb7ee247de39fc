"""Code a user writes against cmlp's public API, checked by mypy (.ci/run's lint step).

Not a test module: nothing here runs under pytest. mypy reads it with the
installed package's annotations and stubs, and must find no error.
"""
import io

import numpy as np

import cmlp
from cmlp.training import History

net = cmlp.MLP([2, 1, 1], activation=["sigmoid", "sigmoid"], dtype=np.float64, seed=0)
for W, b in zip(net.weights, net.biases):
    W[:] = 0.5
    b[:] = 1.0
out: np.ndarray = net.forward(np.array([1.0, 2.0]))
loss: float = net.backward(np.array([0.4]), loss="mse")
names = [name for name, _ in net.named_parameters()]
net.sgd_step(lr=0.1)
step_loss: float = net.train_step([[1.0, 2.0]], [[0.4]], lr=0.1)

X = np.random.default_rng(0).normal(size=(32, 2))
history: History = net.fit(X, X[:, :1] > 0, epochs=2, batch_size=8, optimizer="adam", lr=0.01,
                           validation_data=(X, X[:, :1] > 0), early_stopping=3,
                           callbacks=[lambda epoch, h: epoch > 5], seed=0)
last: float = history.loss[-1]
opt = cmlp.Adam(net.params, net.grads, lr=1e-3)
net.fit(X, X[:, :1] > 0, optimizer=opt)
net.fit(X, X[:, :1] > 0, optimizer=cmlp.LBFGS(max_fun=100))

buffer = io.BytesIO()
net.save(buffer)
buffer.seek(0)
again: cmlp.MLP = cmlp.load(buffer)
state = again.state_dict()
net.load_state_dict(state)
config = cmlp.show_config(mode="dicts")
sizes: tuple[int, ...] = net.layer_sizes

ens = cmlp.MLPEnsemble(8, [2, 4, 1], seed=0, n_threads=2)
step_losses: np.ndarray = ens.train_step(X, X[:, :1] > 0, lr=[0.1] * 8)
ens_history: cmlp.EnsembleHistory = ens.fit(X, X[:, :1] > 0, epochs=2, batch_size=4,
                                            sample_indices=np.zeros((8, 5), dtype=int))
first: cmlp.MLP = ens.models[0]
mean = ens.predict_mean(X)
