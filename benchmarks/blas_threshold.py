"""Where BLAS starts to pay: one SGD step under several settings of the BLAS thresholds.

cmlp sends a product of fewer than ``BLAS_MIN_WORK`` multiply-adds (in
``_kernels.pyx``) to its own small-product kernel, the rest to
``sgemm``/``dgemm``. This script times ``train_step`` on networks whose
products straddle the threshold, for each candidate, and prints each time with
its ratio to the best candidate for that shape, for the variant of the vector
kernels in use or the one named. One threshold serves every variant (so that
a product takes the same route on every processor): choose the candidate
whose worst mean ratio over the variants is lowest::

    python benchmarks/blas_threshold.py [--variant baseline|avx2|avx512]

Times are CPU time of this thread (``time.thread_time``), medians of
alternating repeats, BLAS at one thread: on a shared machine that counts only
the time the step itself ran.
"""
import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import cmlp
from cmlp import _kernels

SHAPES = [([2, 1, 1], 1), ([16, 32, 1], 1), ([16, 32, 1], 8), ([16, 32, 1], 32),
          ([32, 32, 1], 4), ([64, 64, 1], 2), ([10, 10, 10], 16), ([10, 10, 10], 64),
          ([4, 16, 4], 64), ([32, 64, 10], 32), ([64, 64, 1], 64), ([100, 100, 10], 64),
          ([784, 128, 64, 10], 1), ([64, 128, 64, 10], 16)]
CANDIDATES = [512, 1024, 2048, 4096, 8192]


def step_seconds(net, X, Y, calls):
    start = time.thread_time()
    for _ in range(calls):
        net.train_step(X, Y, 0.0)
    return (time.thread_time() - start) / calls


def main(variant=None, repeats=7, calls=1000):
    total = dict.fromkeys(CANDIDATES, 0.0)
    previous_variant = _kernels._use_vector_variant(variant or _kernels.vector_variant())
    previous = _kernels._set_blas_min_work(CANDIDATES[0])
    print(f"vector kernels: {_kernels.vector_variant()}")
    try:
        with threadpool_limits(limits=1):
            for sizes, n in SHAPES:
                for dtype in (np.float32, np.float64):
                    net = cmlp.MLP(sizes, dtype=dtype, seed=0)
                    rng = np.random.default_rng(0)
                    X = rng.standard_normal((n, sizes[0])).astype(dtype)
                    Y = np.full((n, sizes[-1]), 0.5, dtype)
                    samples = {t: [] for t in CANDIDATES}
                    for _ in range(repeats):
                        for t in CANDIDATES:
                            _kernels._set_blas_min_work(t)
                            net.train_step(X, Y, 0.0)
                            samples[t].append(step_seconds(net, X, Y, calls))
                    median = {t: statistics.median(v) for t, v in samples.items()}
                    best = min(median.values())
                    for t in CANDIDATES:
                        total[t] += median[t] / best
                    print(f"{str(sizes):18s} batch {n:3d} {np.dtype(dtype).name:8s} " +
                          "  ".join(f"{t}: {median[t] * 1e6:6.2f} µs ({median[t] / best:.2f})"
                                    for t in CANDIDATES), flush=True)
    finally:
        _kernels._set_blas_min_work(previous)
        _kernels._use_vector_variant(previous_variant)
    count = 2 * len(SHAPES)
    print("mean ratio to the best, per threshold:",
          ", ".join(f"{t}: {v / count:.3f}" for t, v in total.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=_kernels.vector_variants(),
                        help="the variant of the vector kernels to time (default: the one in use)")
    main(parser.parse_args().variant)
