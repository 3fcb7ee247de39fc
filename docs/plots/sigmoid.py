"""The sigmoid and its slope a(1 − a) at the notebook's two activations, as cmlp computes them."""
import matplotlib.pyplot as plt
import numpy as np

import cmlp

net = cmlp.MLP([2, 1, 1])
for W, b in zip(net.weights, net.biases):
    W[:] = 0.5
    b[:] = 1.0

net.forward(np.array([1.0, 2.0]))
# The weighted sums are recomputed from the activations cmlp keeps.
a0, a1, a2 = (a[0] for a in net.activations)
z1 = net.weights[0] @ a0 + net.biases[0]
z2 = net.weights[1] @ a1 + net.biases[1]
points = [("a⁽¹⁾", z1[0], a1[0]), ("a⁽²⁾", z2[0], a2[0])]

z = np.linspace(-6, 6, 400)
fig, ax = plt.subplots(figsize=(4.6, 3.0), layout="constrained")
ax.plot(z, 1 / (1 + np.exp(-z)), color="0.2", lw=1.6, label="σ(z)")
# Each label in the empty lower right, joined to its point.
label_at = {"a⁽¹⁾": (1.2, 0.5), "a⁽²⁾": (1.2, 0.18)}
for (name, z_at, a), colour in zip(points, ["#1f77b4", "#b2182b"]):
    slope = a * (1 - a)
    # The tangent, one unit of z either side: its steepness is σ′(z) = a(1 − a).
    ax.plot([z_at - 1.2, z_at + 1.2], [a - 1.2 * slope, a + 1.2 * slope], color=colour, lw=2.2)
    ax.plot(z_at, a, "o", color=colour)
    ax.annotate(f"{name} = {a:.4f}\nslope a(1 − a) = {slope:.4f}", (z_at, a), xytext=label_at[name],
                ha="left", va="center", color=colour, fontsize=10,
                arrowprops=dict(arrowstyle="-", color=colour, lw=0.8, shrinkB=4))
ax.set_xlabel("z")
ax.set_ylabel("a = σ(z)")
ax.set_xlim(-6, 6)
ax.set_ylim(-0.05, 1.08)
ax.grid(True, alpha=0.3)
ax.set_title("The sigmoid flattens as a approaches 1", fontsize=10)
