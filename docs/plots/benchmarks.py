"""Median time of one SGD step per engine and case, from benchmarks/latest.json."""
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# The plot directive runs this from docs/ (plot_working_directory in conf.py).
report = json.loads(Path("../benchmarks/latest.json").read_text())
ENGINE_COLOURS = {"cmlp": "#1f77b4", "numpy": "#ff7f0e", "python": "#8c564b",
                  "torch": "#d62728", "sklearn": "#2ca02c"}

steps = [r for r in report["results"] if r["operation"] == "train_step" and r["threads"] == 1]
dtypes = sorted({r["dtype"] for r in steps})
cases = [c for c in report["cases"] if any(r["case"] == c for r in steps)]
engines = [e for e in ENGINE_COLOURS if any(e in r["median_s"] for r in steps)]
height = 0.8 / len(engines)

# One panel per dtype, stacked, under 5 inches wide with short labels (the
# cases' layer sizes are in the text under the chart), so that a phone, which
# shows it about 370 px wide, keeps its 10 pt text legible.
fig, axes = plt.subplots(len(dtypes), 1, figsize=(4.4, (1.0 + 0.6 * len(cases)) * len(dtypes) + 0.5),
                         sharex=True, squeeze=False, layout="constrained")
axes = axes.T  # axes[0] runs over the dtypes, as the loops below read it
for ax, dtype in zip(axes[0], dtypes):
    rows = {r["case"]: r for r in steps if r["dtype"] == dtype}
    for i, engine in enumerate(engines):
        y = [k - 0.4 + (i + 0.5) * height for k, case in enumerate(cases)
             if engine in rows.get(case, {}).get("median_s", {})]
        t = [rows[case]["median_s"][engine] for case in cases
             if engine in rows.get(case, {}).get("median_s", {})]
        ax.barh(y, t, height=height, color=ENGINE_COLOURS[engine], label=engine)
    floors = [(k, rows[case]["gemm_floor_s"]) for k, case in enumerate(cases)
              if case in rows and rows[case]["gemm_floor_s"]]
    if floors:
        k, floor = zip(*floors)
        ax.plot(floor, k, "k|", markersize=22, markeredgewidth=2, label="GEMM floor")
    ax.set_xscale("log")
    if ax is axes[0][-1]:
        ax.set_xlabel("median seconds per step (log scale)", fontsize=10)
    ax.set_title(f"{dtype}, 1 BLAS thread", fontsize=11)
    ax.grid(True, axis="x", which="major", alpha=0.3)
for ax in axes[0]:
    ax.set_yticks(np.arange(len(cases)),
                  [f"{c}\nbatch {report['cases'][c]['batch_size']}" for c in cases], fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.invert_yaxis()
legend = {}
for ax in axes[0]:
    for handle, label in zip(*ax.get_legend_handles_labels()):
        legend.setdefault(label, handle)
order = [label for label in [*engines, "GEMM floor"] if label in legend]
fig.legend([legend[label] for label in order], order, loc="outside lower center",
           ncol=min(len(order), 3), fontsize=10, frameon=False)
