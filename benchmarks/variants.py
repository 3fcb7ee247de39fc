"""benchmarks/run.py once per variant of the vector kernels this processor runs.

A user's processor picks one variant (SSE2 on older x86 and the baseline on
ARM, AVX2 on most x86 machines, AVX-512 on some): each is forced in turn
with CMLP_VECTOR_VARIANT, in its own process, and the report puts cmlp's time
under each beside NumPy's in the same run, with the GEMM floor for the cases
that have one::

    python benchmarks/variants.py [--out benchmarks] [run.py's options...]

Writes variants.md and variants.json into the folder given. Ratios are within
one variant's run; compare variants by their ratios, not their times, on a
shared machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cmlp import _kernels

HERE = Path(__file__).resolve().parent


def run_variant(variant, options, folder):
    env = dict(os.environ, CMLP_VECTOR_VARIANT=variant)
    subprocess.run([sys.executable, str(HERE / "run.py"), *options, "--out", str(folder)],
                   env=env, check=True)
    report = json.loads((folder / "latest.json").read_text())
    assert report["machine"]["vector_kernels"] == variant, report["machine"]
    return report


def _time(seconds):
    return f"{seconds * 1e6:.3g} µs" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


def markdown(reports, command):
    variants = list(reports)
    first = reports[variants[0]]
    lines = [
        f"cmlp under each variant of its vector kernels, `{command}`, {first['created']}, "
        f"on {first['machine']['processor']} ({first['machine']['cpu_count']} cores); "
        "load averages at the start of each run: "
        + ", ".join(f"{v} {reports[v]['machine']['load_average'][0]:.2f}" for v in variants) + ".",
        "",
        "Each cell: cmlp's median SGD step, then NumPy's time over cmlp's in the same run "
        "(×N), and for the cases with one, cmlp's time over the GEMM floor (f: the step's "
        "products through numpy.matmul) and over the same products through SciPy's BLAS, "
        "which cmlp calls (s). BLAS kernels: "
        + (f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
           if os.environ.get("OPENBLAS_CORETYPE") else "the processor's own") + ".",
        "",
        "| case | dtype | threads | " + " | ".join(variants) + " |",
        "|---|---|---|" + "---|" * len(variants),
    ]
    for i, row in enumerate(first["results"]):
        cells = []
        for v in variants:
            r = reports[v]["results"][i]
            assert (r["case"], r["dtype"], r["threads"]) == (row["case"], row["dtype"], row["threads"])
            cell = _time(r["median_s"]["cmlp"])
            if "numpy" in r["ratio_to_cmlp"]:
                cell += f" (×{r['ratio_to_cmlp']['numpy']:.3g})"
            if r.get("gemm_floor_s"):
                cell += f" ({r['median_s']['cmlp'] / r['gemm_floor_s']:.2f} f)"
            if r.get("scipy_floor_s"):
                cell += f" ({r['median_s']['cmlp'] / r['scipy_floor_s']:.2f} s)"
            cells.append(cell)
        name = row["case"] + (" predict" if row["operation"] == "predict" else "")
        lines.append(f"| {name} | {row['dtype']} | {row['threads']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE), help="folder for variants.md and .json")
    args, options = parser.parse_known_args(argv)
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in _kernels.vector_variants():
            print(f"=== {variant}", flush=True)
            reports[variant] = run_variant(variant, options, Path(tmp) / variant)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    command = " ".join([*([f"OPENBLAS_CORETYPE={coretype}"] if coretype else []),
                        "python benchmarks/variants.py", *options])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variants.json").write_text(json.dumps(reports, indent=1) + "\n")
    (out / "variants.md").write_text(markdown(reports, command))
    print(markdown(reports, command))


if __name__ == "__main__":
    main()
