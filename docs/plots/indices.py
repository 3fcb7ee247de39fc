"""Where the page's indices and cmlp's meet: W₀ feeds z⁽¹⁾, and net.deltas[0] is δ⁽¹⁾."""
import matplotlib.pyplot as plt

LAYERS = [  # (the page's names, cmlp's names) per layer of units, input first
    ("$a^{(0)} = x$", "net.activations[0]"),
    ("$z^{(1)},\\ a^{(1)},\\ \\delta^{(1)}$", "net.activations[1]\nnet.deltas[0]"),
    ("$z^{(2)},\\ a^{(2)},\\ \\delta^{(2)}$", "net.activations[2]\nnet.deltas[1]"),
]
CONNECTIONS = [("$W_0,\\ b_0$", "net.weights[0], net.biases[0]"),
               ("$W_1,\\ b_1$", "net.weights[1], net.biases[1]")]
CMLP_COLOUR = "#1f5f9f"
ROW = 1.25  # inches from one layer to the next
BOX_WIDTH, BOX_HEIGHT = 1.75, 0.5
CMLP_X = BOX_WIDTH + 0.35

fig, ax = plt.subplots(figsize=(4.5, ROW * len(LAYERS) + 0.1))
for k, (maths, cmlp_names) in enumerate(LAYERS):
    y = -k * ROW
    ax.add_patch(plt.Rectangle((0, y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                               facecolor="#fde4c8" if k else "#dbe9f6", edgecolor="0.3"))
    ax.text(BOX_WIDTH / 2, y, maths, ha="center", va="center", fontsize=11)
    ax.text(-0.1, y, f"layer {k}", ha="right", va="center", fontsize=10, color="0.35")
    ax.text(CMLP_X, y, cmlp_names, ha="left", va="center", fontsize=10, family="monospace",
            color=CMLP_COLOUR)
for k, (maths, cmlp_names) in enumerate(CONNECTIONS):
    top, bottom = -k * ROW - BOX_HEIGHT / 2, -(k + 1) * ROW + BOX_HEIGHT / 2
    ax.annotate("", xy=(BOX_WIDTH / 2, bottom), xytext=(BOX_WIDTH / 2, top),
                arrowprops=dict(arrowstyle="-|>", color="0.3", lw=1.3))
    ax.text(BOX_WIDTH / 2 + 0.12, (top + bottom) / 2, maths, ha="left", va="center", fontsize=11)
    ax.text(CMLP_X, (top + bottom) / 2, cmlp_names, ha="left", va="center", fontsize=9,
            family="monospace", color=CMLP_COLOUR)
ax.set_xlim(-0.85, 4.6)
ax.set_ylim(-ROW * (len(LAYERS) - 1) - 0.45, 0.45)
ax.set_aspect("equal")
ax.axis("off")
