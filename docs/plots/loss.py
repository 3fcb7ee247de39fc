"""The loss of the notebook's network over 300 SGD steps towards the target 0.4."""
import matplotlib.pyplot as plt
import numpy as np

import cmlp

net = cmlp.MLP([2, 1, 1])
for W, b in zip(net.weights, net.biases):
    W[:] = 0.5
    b[:] = 1.0

x, y = np.array([1.0, 2.0]), np.array([0.4])
losses = [net.train_step(x, y, lr=0.1, loss="mse") for step in range(300)]

fig, ax = plt.subplots(figsize=(4.6, 3.0), layout="constrained")
ax.semilogy(losses)
ax.set_xlabel("SGD step (lr = 0.1)")
ax.set_ylabel("MSE loss")
ax.set_title("The notebook's network trained to the target 0.4", fontsize=10)
ax.grid(True, which="major", alpha=0.3)
