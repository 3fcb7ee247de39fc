"""Model-steps per second of each engine, on one and two cores, from benchmarks/many_models.json."""
import json
from pathlib import Path

import matplotlib.pyplot as plt

# The plot directive runs this from docs/ (plot_working_directory in conf.py).
runs = json.loads(Path("../benchmarks/many_models.json").read_text())
# One step of every model a call; the 100-steps-a-call rows are in the table.
ENGINE_COLOURS = {"cmlp ensemble": "#1f77b4", "jax.vmap (jit)": "#9467bd", "numba prange": "#ff7f0e",
                  "cmlp loop": "#8c564b", "cmlp threads": "#7f7f7f"}
threads = sorted(runs, key=int)
cases = list(runs[threads[0]])
engines = [e for e in ENGINE_COLOURS if any(e in runs[n][c] for n in threads for c in cases)]
height = 0.8 / len(engines)

# One panel per case, stacked and under 5 inches wide, so that a phone keeps
# the 10 pt labels legible; the thread counts are the rows of each panel.
fig, axes = plt.subplots(len(cases), 1, figsize=(4.4, 1.6 * len(cases) + 1.2),
                         squeeze=False, layout="constrained")
for ax, case in zip(axes[:, 0], cases):
    for i, engine in enumerate(engines):
        rows = [(k, runs[n][case][engine]) for k, n in enumerate(threads)
                if engine in runs[n][case]]
        ax.barh([k - 0.4 + (i + 0.5) * height for k, _ in rows], [r for _, r in rows],
                height=height, color=ENGINE_COLOURS[engine], label=engine)
    ax.set_xscale("log")
    ax.set_yticks(range(len(threads)),
                  [f"{n} core{'s' * (int(n) > 1)}" for n in threads], fontsize=10)
    ax.invert_yaxis()
    ax.set_title(case, fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
axes[-1, 0].set_xlabel("model-steps per second (log scale); longer is faster", fontsize=10)
fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=9, loc="outside lower center",
           ncol=2, frameon=False)
