"""The tutorial's 2-1-1 network, drawn with the values cmlp computes for it."""
import matplotlib.pyplot as plt
import numpy as np

import cmlp

net = cmlp.MLP([2, 1, 1])
for W, b in zip(net.weights, net.biases):
    W[:] = 0.5
    b[:] = 1.0
x = np.array([1.0, 2.0])
net.forward(x)
_, a1, a2 = (float(a[0, 0]) for a in net.activations)
# cmlp keeps activations, not weighted sums: z is recomputed from them.
z1 = float((net.weights[0] @ x + net.biases[0])[0])
z2 = float((net.weights[1] @ [a1] + net.biases[1])[0])

# unit -> (position, label inside the circle, label under it)
units = {
    "x1": ((0.0, 1.0), "x₁", "a⁽⁰⁾₁ = 1"),
    "x2": ((0.0, -1.0), "x₂", "a⁽⁰⁾₂ = 2"),
    "h": ((2.2, 0.0), "σ", f"z⁽¹⁾ = {z1:.4g}\na⁽¹⁾ = {a1:.6f}"),
    "o": ((4.4, 0.0), "σ", f"z⁽²⁾ = {z2:.6f}\na⁽²⁾ = {a2:.6f}"),
}
edges = [("x1", "h", "W₀[0,0] = 0.5"), ("x2", "h", "W₀[0,1] = 0.5"), ("h", "o", "W₁ = 0.5")]
biases = {"h": "b₀ = 1", "o": "b₁ = 1"}
radius = 0.32

fig, ax = plt.subplots(figsize=(7, 3.4))
for start, end, label in edges:
    (x0, y0), (x1, y1) = units[start][0], units[end][0]
    # Arrows run from circle edge to circle edge.
    ux, uy = np.subtract((x1, y1), (x0, y0)) / np.hypot(x1 - x0, y1 - y0)
    ax.annotate("", xy=(x1 - radius * ux, y1 - radius * uy),
                xytext=(x0 + radius * ux, y0 + radius * uy),
                arrowprops=dict(arrowstyle="-|>", color="0.35", lw=1.2,
                                shrinkA=0, shrinkB=0))
    # The weight's label sits beside its arrow, along it.
    angle = np.degrees(np.arctan2(uy, ux))
    ax.text((x0 + x1) / 2 - 0.2 * uy, (y0 + y1) / 2 + 0.2 * ux, label, ha="center",
            va="center", rotation=angle, rotation_mode="anchor", fontsize=9, color="0.15")
for name, ((cx, cy), inside, below) in units.items():
    colour = "#dbe9f6" if name.startswith("x") else "#fde4c8"
    ax.add_patch(plt.Circle((cx, cy), radius, facecolor=colour, edgecolor="0.25", lw=1.2))
    ax.text(cx, cy, inside, ha="center", va="center", fontsize=13)
    ax.text(cx, cy - radius - 0.12, below, ha="center", va="top", fontsize=9)
    if name in biases:
        ax.text(cx, cy + radius + 0.12, biases[name], ha="center", va="bottom", fontsize=9)
ax.text(5.05, 0.0, "target y = 0.4", va="center", fontsize=9, color="0.3")
ax.set_xlim(-0.7, 6.1)
ax.set_ylim(-1.6, 1.5)
ax.set_aspect("equal")
ax.axis("off")
