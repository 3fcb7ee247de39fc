"""What each vector kernel buys: over the plain C loop, over the baseline, over BLAS.

Two measurements, for every variant this processor runs::

    python benchmarks/vector_kernels.py [--out benchmarks] [--cc gcc]

1. ``benchmarks/vector_kernels.c``, compiled with the variants' files twice:
   with GCC's vector extensions (what the x86 and aarch64 wheels run) and
   without (``-DCMLP_NO_VECTOR_EXTENSIONS``: the plain C loops MSVC builds).
   Each kernel at the sizes it serves, nanoseconds a call.
2. ``train_step`` on small networks, with every product in the small-product
   kernel and with every product in BLAS (``_set_blas_min_work``), under each
   variant in turn; CPU time of the thread, BLAS at one thread, the median of
   alternating repeats. BLAS picks its kernels for this processor whatever
   variant cmlp runs: under a forced narrower variant it is not the BLAS a
   processor of that variant would run.

Writes vector_kernels.md and vector_kernels.json into the folder given.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "cmlp"
VARIANT_FILES = [SRC / f"_vector_{v}.c" for v in ("baseline", "avx2", "avx512", "dispatch")]
# (layer sizes, batch): products on both sides of the BLAS threshold (2048 multiply-adds)
STEP_SHAPES = [([2, 1, 1], 1), ([16, 32, 1], 1), ([16, 32, 1], 2), ([16, 32, 1], 4),
               ([32, 32, 1], 1), ([4, 16, 4], 8), ([10, 10, 10], 8), ([64, 16, 1], 1)]


def c_table(cc):
    """variants, {(kernel, dtype, size): {column: ns}} from benchmarks/vector_kernels.c."""
    flags = ["-O3", "-ffp-contract=off", "-std=c99", "-D_POSIX_C_SOURCE=199309L", f"-I{SRC}"]
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for source in VARIANT_FILES[:-1]:  # the plain build, its tables renamed
            objects.append(Path(tmp) / f"plain{source.stem}.o")
            subprocess.run([cc, *flags, "-DCMLP_NO_VECTOR_EXTENSIONS",
                            *(f"-Dcmlp_kernels_{v}=cmlp_plain_{v}"
                              for v in ("baseline", "avx2", "avx512")),
                            "-c", str(source), "-o", str(objects[-1])], check=True)
        program = Path(tmp) / "vector_kernels"
        subprocess.run([cc, *flags, str(HERE / "vector_kernels.c"), *map(str, VARIANT_FILES),
                        *map(str, objects), "-o", str(program), "-lm"], check=True)
        lines = subprocess.run([str(program)], check=True, capture_output=True,
                               text=True).stdout.splitlines()
    columns = lines[0].split("\t")[3:]
    table = {}
    for line in lines[1:]:
        cells = line.split("\t")
        table[tuple(cells[:3])] = dict(zip(columns, map(float, cells[3:])))
    return [c for c in columns if not c.startswith("plain ")], table


def step_times(repeats=15, calls=1000):
    """{shape: {variant: {"small": s, "blas": s}}}, the variants and routes in turn."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    import cmlp
    from cmlp import _kernels

    out = {}
    variants = _kernels.vector_variants()
    before = _kernels.vector_variant()
    with threadpool_limits(1, user_api="blas"):
        for sizes, batch in STEP_SHAPES:
            net = cmlp.MLP(sizes, seed=0)
            rng = np.random.default_rng(0)
            X = rng.standard_normal((batch, sizes[0]))
            Y = rng.random((batch, sizes[-1]))
            samples = {(v, r): [] for v in variants for r in ("small", "blas")}
            for _ in range(repeats):
                for (variant, route), times in samples.items():
                    _kernels._use_vector_variant(variant)
                    previous = _kernels._set_blas_min_work(2**62 if route == "small" else 0)
                    try:
                        start = time.thread_time()
                        for _ in range(calls):
                            net.train_step(X, Y, 0.0)
                        times.append((time.thread_time() - start) / calls)
                    finally:
                        _kernels._set_blas_min_work(previous)
                        _kernels._use_vector_variant(before)
            out[f"{sizes} batch {batch}"] = {
                v: {r: statistics.median(samples[v, r]) for r in ("small", "blas")}
                for v in variants}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    args = parser.parse_args()
    variants, kernels = c_table(args.cc)
    steps = step_times()

    command = "python benchmarks/vector_kernels.py"
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [f"The vector kernels alone and in `train_step`, `{command}`, "
             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, on {processor} "
             f"({os.cpu_count()} cores), load average {os.getloadavg()[0]:.2f} at the end.", "",
             "Nanoseconds a call, the best of 7 interleaved rounds: each variant with vector "
             "extensions, then the plain C loops (no vector extensions) under the same variant's target. "
             "Sizes: rows x columns of a block, entries of an update, M x N x K of a "
             "product (T: that operand transposed).", "",
             "| kernel | dtype | size | " + " | ".join(variants) + " | "
             + " | ".join(f"plain {v}" for v in variants) + " |",
             "|---|---|---|" + "---:|" * (2 * len(variants))]
    for key, times in kernels.items():
        lines.append("| " + " | ".join(key) + " | "
                     + " | ".join(f"{times[v]:.1f}" for v in variants) + " | "
                     + " | ".join(f"{times['plain ' + v]:.1f}" for v in variants) + " |")
    lines += ["", "`train_step` (µs, CPU time, median of 15 alternating repeats of 1000 calls, "
              "BLAS at one thread) with every product in the small-product kernel, and with "
              "every product in BLAS; BLAS over small in brackets.", "",
              "| network | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for shape in steps:
        cells = []
        for v in variants:
            t = steps[shape][v]
            cells.append(f"{t['small'] * 1e6:.2f} / {t['blas'] * 1e6:.2f} "
                         f"(×{t['blas'] / t['small']:.2f})")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vector_kernels.md").write_text(report)
    (args.out / "vector_kernels.json").write_text(json.dumps(
        {"variants": variants, "kernels": {"\t".join(k): v for k, v in kernels.items()},
         "train_step": steps}, indent=1) + "\n")
    print(report)


if __name__ == "__main__":
    main()
