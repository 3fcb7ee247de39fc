"""The benchmarks page's compact tables, written from benchmarks/latest.json at build time.

``.. benchmark-tables::`` puts two narrow tables where the page would
otherwise show the run's twelve-column one (which stays available, folded,
below them): the time of one training step of cmlp and how many times longer
each other engine takes, at one BLAS thread; and cmlp against the floor of the
matrix products alone, for the cases large enough to have one.
"""
import json
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "latest.json"
ENGINES = ["numpy", "python", "torch", "sklearn"]  # in the order benchmarks/run.py times them


def time(seconds):
    """0.35 µs, 356 µs, 29.7 ms: three significant digits in the unit that suits."""
    for unit, scale in (("µs", 1e6), ("ms", 1e3)):
        if seconds * scale < 1000:
            return f"{seconds * scale:.3g}\u00a0{unit}"  # no break between number and unit
    return f"{seconds:.3g}\u00a0s"


def list_table(header, rows, widths=None):
    """The lines of an rst list-table."""
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {' '.join(map(str, widths))}")
    lines.append("")
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
    return lines + [""]


def ratio(value):
    """×56.2, ×729, ×1247: no exponent, few digits."""
    return f"×{value:.3g}" if value < 100 else f"×{value:.0f}"


def step_table(report):
    """cmlp's time per step and each other engine's multiple of it, one BLAS thread.

    Five narrow columns, for a phone: case and dtype share one, and plain
    Python, timed on the tiny case alone, is left to the sentence under it.
    """
    steps = [r for r in report["results"] if r["operation"] == "train_step" and r["threads"] == 1]
    engines = [e for e in ENGINES if e != "python" and any(e in r["median_s"] for r in steps)]
    rows = [[f"{r['case']} {r['dtype'].replace('float', 'f')}", f"**{time(r['median_s']['cmlp'])}**",
             *(ratio(r["ratio_to_cmlp"][e]) if e in r["median_s"] else "—" for e in engines)]
            for r in steps]
    lines = list_table(["case", "cmlp", *engines], rows)
    python = [r for r in steps if "python" in r["median_s"]]
    if python:
        lines += ["Plain Python, timed on the "
                  + " and ".join(f"{r['case']} {r['dtype']}" for r in python) + " case: "
                  + " and ".join(ratio(r["ratio_to_cmlp"]["python"]) for r in python) + ".", ""]
    return lines


def cases_sentence(report):
    return ("The cases: " + "; ".join(f"{name} ``{case['layer_sizes']}``, batch {case['batch_size']}"
                                      for name, case in report["cases"].items()) + ".")


def floor_table(report):
    """cmlp's time over the GEMM floor's, where there is one."""
    rows = [[f"{r['case']} {r['dtype'].replace('float', 'f')}", str(r["threads"]),
             time(r["median_s"]["cmlp"]), f"{r['median_s']['cmlp'] / r['gemm_floor_s']:.2f}"]
            for r in report["results"] if r["operation"] == "train_step" and r["gemm_floor_s"]]
    return list_table(["case", "threads", "cmlp", "cmlp / floor"], rows)


class BenchmarkTables(SphinxDirective):
    def run(self):
        self.env.note_dependency(str(REPORT))
        report = json.loads(REPORT.read_text(encoding="utf-8"))
        machine = report["machine"]
        lines = [f"``{report['command']}`` on {report['created'][:10]}, {machine['processor']} "
                 f"({machine['cpu_count']} CPUs, cmlp's {machine['vector_kernels']} kernels). "
                 "One SGD step of cmlp, and how many times as long each other engine takes "
                 "(f32 and f64: float32 and float64), at one BLAS thread. "
                 + cases_sentence(report), ""]
        lines += step_table(report)
        lines += ["Where the matrix products dominate, cmlp against the GEMM floor "
                  "(1.00 would be the products alone):", ""]
        lines += floor_table(report)
        holder = nodes.container()
        self.state.nested_parse(StringList(lines, source=str(REPORT)), self.content_offset, holder)
        return holder.children


def setup(app):
    app.add_directive("benchmark-tables", BenchmarkTables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
