"""cmlp beside NumPy, pure Python, PyTorch and scikit-learn: one SGD step, timed.

Run from a clone, after ``pip install . && pip install --group bench`` (and ``pip install torch`` for the
PyTorch engine)::

    python benchmarks/run.py            # full run: writes benchmarks/latest.json and latest.md
    python benchmarks/run.py --quick    # checks, then tiny and small cases, few repeats (CI smoke)
    python benchmarks/run.py --check    # only the check that all engines agree after one step

Every case is one SGD step -- forward, backward, update -- of a network with
sigmoid layers and ``torch.nn.MSELoss``, learning rate 0.1, on a fixed batch:

=======  =====================  ======  ===============================================
case     layer sizes            batch   notes
=======  =====================  ======  ===============================================
tiny     [2, 1, 1]              1       the reference notebook: 1-D input [1, 2], target
                                        [0.4], weights 0.5, biases 1.0; also ``predict``
small1   [16, 32, 1]            1       one sample, as a 2-D (1, 16) batch
small32  [16, 32, 1]            32
medium   [784, 128, 64, 10]     64
large    [1024, 1024, 1024, 10] 256
=======  =====================  ======  ===============================================

Engines (each skipped when its package is missing):

``cmlp``    ``MLP.train_step`` and ``MLP.predict``.
``numpy``   the notebook's NumPy cell grown to batches (``reference_numpy.py``).
``python``  lists and ``math.exp`` (``reference_python.py``), tiny case only.
``torch``   eager ``nn.Sequential`` of ``Linear`` and ``Sigmoid``, ``MSELoss``,
            ``optim.SGD``: ``zero_grad``, forward, ``backward``, ``step``;
            ``predict`` is the forward under ``torch.no_grad()``.
``sklearn`` ``MLPRegressor.partial_fit`` (solver "sgd", no momentum, no L2, no
            shuffling, one batch per call). scikit-learn's regressor has an
            identity output layer and the half squared error: it is timed on
            that model, and checked against cmlp built the same way.
``gemm_floor`` not an engine: the same matrix products as one step (``A W^T``
            per layer, then ``delta^T A`` per layer and ``delta W`` for all but
            the first) done back to back by ``numpy.matmul`` into preallocated
            outputs. No implementation that computes them can beat it.
``scipy_floor`` the same products through ``scipy.linalg.blas`` (``sgemm``/``dgemm``):
            SciPy's own OpenBLAS, the library cmlp's kernels call, which is
            not always NumPy's build nor its version. The ratio of the two
            floors is what the BLAS library alone adds to cmlp's.

Before any timing, every engine takes one step from the same parameters and
its update is compared with the NumPy engine's in float64 (scikit-learn's with
cmlp's float64 twin): ``max|dp - dp_ref| <= rtol * max|dp_ref| + 4 eps max|p|``
per tensor, ``rtol`` 1e-9 in float64 and 1e-3 in float32. A mismatch stops the
run with exit status 1.

Timing: for every (case, dtype, threads) cell the engines run round-robin, each
repeat a loop of ``number`` calls (about ``--min-time`` seconds) with the
garbage collector off; the median over ``--repeats`` repeats, divided by
``number``, is the engine's time. Threads means BLAS and OpenMP threads
(``threadpoolctl``; ``torch.set_num_threads`` too). At more than one thread,
each repeat starts after a pause of ``POOL_SETTLE_S`` and one untimed call:
the engines use different thread pools, and one pool's workers still spinning
after its last call would otherwise share the cores with the next engine.

JSON schema (``schema`` 1; keys are only ever added)::

    {
      "schema": 1,
      "created": "2026-11-28T15:30:00+00:00",      # UTC, ISO 8601
      "command": "python benchmarks/run.py",
      "machine": {"platform", "processor", "cpu_count", "python",
                  "versions": {package: version},
                  "vector_kernels": cmlp's variant in use ("avx512", "avx2", "baseline"),
                  "load_average": [1, 5, 15 minutes] at the end of the run, or null},
      "blas": [{"user_api", "internal_api", "prefix", "filename",
                "version", "architecture", "threading_layer"}],   # threadpoolctl
      "settings": {"repeats", "min_time_s", "lr", "dtypes", "threads"},
      "cases": {case: {"layer_sizes", "batch_size", "one_dimensional_input",
                       "description"}},
      "checks": [{"case", "dtype", "engine", "reference", "max_error",
                  "allowed", "ok"}],
      "results": [{"case", "dtype", "threads", "operation",    # "train_step" | "predict"
                   "median_s": {engine: seconds},
                   "number": {engine: calls per repeat},
                   "ratio_to_cmlp": {engine: median / cmlp median},
                   "gemm_floor_s": seconds or null,
                   "scipy_floor_s": seconds or null,     # the products through SciPy's BLAS
                   "floor_fraction": {engine: floor / median} or {}}],
      "concurrency": {"case", "dtype", "threads_per_model", "steps",
                      "one_thread_s", "two_threads_s", "throughput_ratio",
                      "control", "control_ratio"} or null,  # control: numpy.matmul alone
      "fit": [{"case", "dtype", "shuffle", "batch_size", "epochs", "n_samples", "fit_s",
               "train_steps_s", "overhead"}] or null,     # overhead: fit / steps - 1
      "targets": [{"name", "value", "limit", "comparison", "met", "where"}]
    }

``ratio_to_cmlp`` above 1 means cmlp is that many times faster.
"""
import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import cmlp
from cmlp import _kernels
from scipy.linalg import blas as scipy_blas
from reference_numpy import NotebookNumPy
from reference_python import PurePython

try:
    import torch
except ImportError:
    torch = None
try:
    import sklearn
    from sklearn.neural_network import MLPRegressor
except ImportError:
    sklearn = None

HERE = Path(__file__).resolve().parent
LR = 0.1
SCHEMA = 1

CASES = {
    "tiny": dict(layer_sizes=[2, 1, 1], batch_size=1, one_dimensional_input=True,
                 description="the notebook's 2-1-1 net, one 1-D sample"),
    "small1": dict(layer_sizes=[16, 32, 1], batch_size=1, one_dimensional_input=False,
                   description="[16, 32, 1], batch 1"),
    "small32": dict(layer_sizes=[16, 32, 1], batch_size=32, one_dimensional_input=False,
                    description="[16, 32, 1], batch 32"),
    "medium": dict(layer_sizes=[784, 128, 64, 10], batch_size=64, one_dimensional_input=False,
                   description="[784, 128, 64, 10], batch 64"),
    "large": dict(layer_sizes=[1024, 1024, 1024, 10], batch_size=256,
                  one_dimensional_input=False,
                  description="[1024, 1024, 1024, 10], batch 256"),
}
FLOOR_CASES = ("medium", "large")
# OpenBLAS workers spin for 2^28 clock cycles (0.1 s at 2.7 GHz) after a call
# before they sleep; libgomp's, a few milliseconds. See time_round_robin.
POOL_SETTLE_S = 0.25
ENGINES = ("cmlp", "numpy", "python", "torch", "sklearn")

# The targets: (name, case, operation, engine, comparison, limit).
# "speedup" is engine time / cmlp time; "floor" is cmlp time / GEMM floor.
TARGETS = [
    ("tiny train_step vs torch", "tiny", "train_step", "torch", ">=", 100),
    ("tiny train_step vs numpy", "tiny", "train_step", "numpy", ">=", 20),
    ("tiny train_step vs python", "tiny", "train_step", "python", ">=", 5),
    ("tiny predict vs torch no_grad", "tiny", "predict", "torch", ">=", 50),
    ("small batch 1 vs torch", "small1", "train_step", "torch", ">=", 50),
    ("small batch 1 vs numpy", "small1", "train_step", "numpy", ">=", 10),
    ("small batch 32 vs torch", "small32", "train_step", "torch", ">=", 50),
    ("small batch 32 vs numpy", "small32", "train_step", "numpy", ">=", 10),
    ("medium within GEMM floor", "medium", "train_step", "gemm_floor", "<=", 1.15),
    ("large within GEMM floor", "large", "train_step", "gemm_floor", "<=", 1.05),
]


# ---------------------------------------------------------------------------
# The problem of each case: initial parameters, a batch, its targets
# ---------------------------------------------------------------------------

def make_problem(case, dtype):
    """(weights, biases, X, Y) in ``dtype``; the same numbers for every engine."""
    spec = CASES[case]
    sizes, n = spec["layer_sizes"], spec["batch_size"]
    if case == "tiny":
        weights = [np.full((1, 2), 0.5), np.full((1, 1), 0.5)]
        biases = [np.ones(1), np.ones(1)]
        X, Y = np.array([1.0, 2.0]), np.array([0.4])
    else:
        rng = np.random.default_rng(sum(sizes) + n)
        weights, biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (n_in + n_out))
            weights.append(rng.uniform(-limit, limit, size=(n_out, n_in)))
            biases.append(rng.uniform(-0.1, 0.1, size=n_out))
        X = rng.standard_normal((n, sizes[0]))
        Y = rng.uniform(0.1, 0.9, size=(n, sizes[-1]))
    cast = lambda arrays: [a.astype(dtype) for a in arrays]  # noqa: E731
    return cast(weights), cast(biases), X.astype(dtype), Y.astype(dtype)


# ---------------------------------------------------------------------------
# Engines: each builds from (weights, biases, X, Y) and offers step/predict/parameters
# ---------------------------------------------------------------------------

class CmlpEngine:
    name = "cmlp"

    def __init__(self, weights, biases, X, Y, activation="sigmoid", loss="mse"):
        sizes = [weights[0].shape[1]] + [W.shape[0] for W in weights]
        self.net = cmlp.MLP(sizes, activation=activation, dtype=X.dtype)
        for W, b, W0, b0 in zip(self.net.weights, self.net.biases, weights, biases):
            W[:] = W0
            b[:] = b0
        train_step, self.X, self.Y, self.loss = self.net.train_step, X, Y, loss
        self.step = lambda: train_step(X, Y, LR, loss)
        predict, x = self.net.predict, X if X.ndim == 1 else X[:1].copy()
        self.predict = lambda: predict(x)

    def parameters(self):
        return [(W.copy(), b.copy()) for W, b in zip(self.net.weights, self.net.biases)]


class NumPyEngine:
    name = "numpy"

    def __init__(self, weights, biases, X, Y):
        self.model = NotebookNumPy(weights, biases, X.dtype)
        train_step, predict = self.model.train_step, self.model.predict
        x = X if X.ndim == 1 else X[:1].copy()
        self.step = lambda: train_step(X, Y, LR)
        self.predict = lambda: predict(x)

    def parameters(self):
        return list(zip(self.model.weights, self.model.biases))


class PythonEngine:
    name = "python"

    def __init__(self, weights, biases, X, Y):
        self.model = PurePython(weights, biases)
        rows = lambda a: np.atleast_2d(a).astype(float).tolist()  # noqa: E731
        Xl, Yl = rows(X), rows(Y)
        train_step, predict, x = self.model.train_step, self.model.predict, Xl[0]
        self.step = lambda: train_step(Xl, Yl, LR)
        self.predict = lambda: predict(x)

    def parameters(self):
        return [(np.array(W), np.array(b)) for W, b in zip(self.model.weights, self.model.biases)]


class TorchEngine:
    name = "torch"

    def __init__(self, weights, biases, X, Y):
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        layers = []
        for W in weights:
            layers += [torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype), torch.nn.Sigmoid()]
        self.model = torch.nn.Sequential(*layers)
        self.linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, W, b in zip(self.linears, weights, biases):
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
        model, criterion = self.model, torch.nn.MSELoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        x_all, y_all = torch.from_numpy(X.copy()), torch.from_numpy(Y.copy())
        x_one = x_all if X.ndim == 1 else x_all[:1].clone()

        def step():
            optimizer.zero_grad()
            loss = criterion(model(x_all), y_all)
            loss.backward()
            optimizer.step()

        def predict():
            with torch.no_grad():
                return model(x_one)

        self.step, self.predict = step, predict

    def parameters(self):
        return [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy())
                for lin in self.linears]


class SklearnEngine:
    """partial_fit on scikit-learn's own model: sigmoid hidden layers, identity output."""
    name = "sklearn"
    activation = "identity"
    loss = "half_sse"

    def __init__(self, weights, biases, X, Y):
        X2 = np.atleast_2d(X)
        y = Y.reshape(X2.shape[0], -1)
        y = y.ravel() if y.shape[1] == 1 else y
        self.model = MLPRegressor(
            hidden_layer_sizes=[W.shape[0] for W in weights[:-1]], activation="logistic",
            solver="sgd", alpha=0.0, batch_size=X2.shape[0], learning_rate="constant",
            learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False, shuffle=False,
            random_state=0)
        self.model.partial_fit(X2, y)  # allocates the layers; then load our parameters
        self.model.coefs_ = [W.T.copy() for W in weights]  # never a view of ours
        self.model.intercepts_ = [b.copy() for b in biases]
        partial_fit = self.model.partial_fit
        self.step = lambda: partial_fit(X2, y)
        self.predict = None

    def parameters(self):
        return [(c.T.copy(), b.copy()) for c, b in zip(self.model.coefs_, self.model.intercepts_)]


def available_engines(case):
    engines = [CmlpEngine, NumPyEngine]
    if case == "tiny":
        engines.append(PythonEngine)
    if torch is not None:
        engines.append(TorchEngine)
    if sklearn is not None:
        engines.append(SklearnEngine)
    return engines


class GemmFloor:
    """The matrix products of one step, back to back, into preallocated outputs."""

    def __init__(self, sizes, n, dtype):
        rng = np.random.default_rng(0)
        shapes = list(zip(sizes[:-1], sizes[1:]))
        self.A = [rng.random((n, n_in), dtype=dtype) for n_in, _ in shapes]
        self.W = [rng.random((n_out, n_in), dtype=dtype) for n_in, n_out in shapes]
        self.D = [rng.random((n, n_out), dtype=dtype) for _, n_out in shapes]
        self.Z = [np.empty((n, n_out), dtype=dtype) for _, n_out in shapes]
        self.dW = [np.empty((n_out, n_in), dtype=dtype) for n_in, n_out in shapes]
        self.dA = [np.empty((n, n_in), dtype=dtype) for n_in, _ in shapes]
        self.gemm = scipy_blas.get_blas_funcs("gemm", dtype=dtype)

    def step(self):
        """The products through numpy.matmul: the GEMM floor."""
        matmul = np.matmul
        for A, W, Z in zip(self.A, self.W, self.Z):
            matmul(A, W.T, out=Z)                       # Z = A_prev W^T
        for l in range(len(self.W) - 1, -1, -1):
            matmul(self.D[l].T, self.A[l], out=self.dW[l])  # dW = delta^T A_prev
            if l > 0:
                matmul(self.D[l], self.W[l], out=self.dA[l])  # delta W

    def scipy_step(self):
        """The same products through SciPy's BLAS, which is column-major: a
        row-major C = A B is the column-major C^T = B^T A^T, and the .T of a
        C-ordered array is that array in Fortran order, as BLAS reads it."""
        gemm = self.gemm
        for A, W, Z in zip(self.A, self.W, self.Z):
            gemm(1.0, W.T, A.T, trans_a=1, c=Z.T, overwrite_c=1)        # Z = A_prev W^T
        for l in range(len(self.W) - 1, -1, -1):
            gemm(1.0, self.A[l].T, self.D[l].T, trans_b=1, c=self.dW[l].T,
                 overwrite_c=1)                                         # dW = delta^T A_prev
            if l > 0:
                gemm(1.0, self.W[l].T, self.D[l].T, c=self.dA[l].T, overwrite_c=1)  # delta W


# ---------------------------------------------------------------------------
# The check: one step of every engine from the same parameters
# ---------------------------------------------------------------------------

def check_case(case, dtype):
    """Rows of the check for one case and dtype; every engine against its reference."""
    weights, biases, X, Y = make_problem(case, dtype)
    before = list(zip(weights, biases))
    reference = NumPyEngine([W.astype(np.float64) for W in weights],
                            [b.astype(np.float64) for b in biases],
                            X.astype(np.float64), Y.astype(np.float64))
    reference.step()
    twin = None
    rows = []
    for Engine in available_engines(case):
        engine = Engine(weights, biases, X, Y)
        engine.step()
        ref, ref_name = reference, "numpy float64"
        if Engine is SklearnEngine:
            if twin is None:
                twin = CmlpEngine(*[[a.astype(np.float64) for a in arrays] for arrays in
                                    (weights, biases)],
                                  X.astype(np.float64), Y.astype(np.float64),
                                  activation=["sigmoid"] * (len(weights) - 1) + ["identity"],
                                  loss="half_sse")
                twin.step()
            ref, ref_name = twin, "cmlp float64, scikit-learn's model"
        error, allowed = _update_error(before, engine.parameters(), ref.parameters(), dtype)
        rows.append(dict(case=case, dtype=np.dtype(dtype).name, engine=Engine.name,
                         reference=ref_name, max_error=error, allowed=allowed,
                         ok=bool(error <= allowed)))
    return rows


def _update_error(before, after, expected, dtype):
    """Worst excess of |update - expected update| over what each tensor allows."""
    rtol = 1e-9 if np.dtype(dtype) == np.float64 else 1e-3
    eps = np.finfo(dtype).eps
    worst_error, worst_allowed, worst_ratio = 0.0, 1.0, -1.0
    for p0_pair, p1_pair, pr_pair in zip(before, after, expected):
        for p0, p1, pr in zip(p0_pair, p1_pair, pr_pair):
            p0 = np.asarray(p0, np.float64)
            step, step_ref = np.asarray(p1, np.float64) - p0, np.asarray(pr, np.float64) - p0
            error = float(np.max(np.abs(step - step_ref)))
            allowed = float(rtol * np.max(np.abs(step_ref)) + 4 * eps * np.max(np.abs(p0)))
            if error / allowed > worst_ratio:
                worst_error, worst_allowed, worst_ratio = error, allowed, error / allowed
    return worst_error, worst_allowed


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def _loop_seconds(fn, number, clock=time.perf_counter):
    repeat = itertools.repeat(None, number)
    start = clock()
    for _ in repeat:
        fn()
    return clock() - start


def _calibrate(fn, min_time, clock=time.perf_counter):
    """Calls per repeat so that one repeat lasts about min_time."""
    fn()  # warm-up: first-call allocations, lazy initialisation
    number = 1
    while True:
        seconds = _loop_seconds(fn, number, clock)
        if seconds >= min_time / 4 or number >= 10**6:
            return max(1, int(number * min_time / max(seconds, 1e-9)))
        number *= 10


def time_round_robin(functions, repeats, min_time, clock=time.perf_counter, settle=0.0):
    """{name: (median seconds per call, number)}, all timed in alternation.

    clock is wall time; time.thread_time (CPU time of this thread) suits code
    that runs on this thread alone, and leaves out the time other processes
    took the core.

    settle (seconds) is a pause before each repeat, followed by one untimed
    call. With more than one thread, the engines use different thread pools
    (SciPy's OpenBLAS for cmlp and scikit-learn, NumPy's for the NumPy engine
    and the floor, PyTorch's own), and a pool's workers keep spinning for a
    while after its last call: on a machine with as many cores as threads,
    the engine timed next would share its cores with them. The pause lets
    them go to sleep, so that each engine is timed as its own users run it.
    """
    numbers = {name: _calibrate(fn, min_time, clock) for name, fn in functions.items()}
    samples = {name: [] for name in functions}
    names = list(functions)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if settle:
                    time.sleep(settle)
                    functions[name]()
                samples[name].append(_loop_seconds(functions[name], numbers[name], clock)
                                     / numbers[name])
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: (statistics.median(samples[name]), numbers[name]) for name in names}


def _set_threads(threads):
    if torch is not None:
        torch.set_num_threads(threads)


def bench_cell(case, dtype, threads, repeats, min_time):
    """Result rows (train_step, and predict for the tiny case) of one cell."""
    weights, biases, X, Y = make_problem(case, dtype)
    with threadpool_limits(limits=threads):
        _set_threads(threads)
        engines = [Engine(weights, biases, X, Y) for Engine in available_engines(case)]
        functions = {e.name: e.step for e in engines}
        if case in FLOOR_CASES:
            spec = CASES[case]
            products = GemmFloor(spec["layer_sizes"], spec["batch_size"], dtype)
            functions["gemm_floor"], functions["scipy_floor"] = products.step, products.scipy_step
        settle = POOL_SETTLE_S if threads > 1 else 0.0
        timed = time_round_robin(functions, repeats, min_time, settle=settle)
        floor = timed.pop("gemm_floor", (None, None))[0]
        scipy_floor = timed.pop("scipy_floor", (None, None))[0]
        rows = [_result_row(case, dtype, threads, "train_step", timed, floor, scipy_floor)]
        if case == "tiny":
            predicts = {e.name: e.predict for e in engines if e.predict is not None}
            rows.append(_result_row(case, dtype, threads, "predict",
                                    time_round_robin(predicts, repeats, min_time, settle=settle),
                                    None))
    return rows


def _result_row(case, dtype, threads, operation, timed, floor, scipy_floor=None):
    medians = {name: t for name, (t, _) in timed.items()}
    base = medians["cmlp"]
    return dict(
        case=case, dtype=np.dtype(dtype).name, threads=threads, operation=operation,
        median_s=medians, number={name: n for name, (_, n) in timed.items()},
        ratio_to_cmlp={name: t / base for name, t in medians.items()},
        gemm_floor_s=floor, scipy_floor_s=scipy_floor,
        floor_fraction={name: floor / t for name, t in medians.items()} if floor else {})


def bench_concurrency(case="medium", dtype=np.float32, steps=200, repeats=5):
    """Throughput of two models on two threads over one model on one, BLAS at 1 thread.

    The control does the same with numpy.matmul of a similar duration, whose
    BLAS call holds no GIL either: on a machine whose other load leaves no
    second core free, the control shows it, and cmlp can do no better.
    """
    weights, biases, X, Y = make_problem(case, dtype)
    nets = [CmlpEngine(weights, biases, X, Y) for _ in range(2)]
    rng = np.random.default_rng(0)
    M = [rng.random((384, 384), dtype=dtype) for _ in range(2)]
    P = [np.empty_like(m) for m in M]
    controls = [lambda m=m, p=p: np.matmul(m, m, out=p) for m, p in zip(M, P)]

    def throughput_ratio(functions):
        def train(fn):
            for _ in range(steps):
                fn()

        def run(k):
            threads = [threading.Thread(target=train, args=(functions[i],)) for i in range(k)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - start

        train(functions[0])
        train(functions[1])
        one, two = [], []
        for _ in range(repeats):
            one.append(run(1))
            two.append(run(2))
        return statistics.median(one), statistics.median(two)

    with threadpool_limits(limits=1):
        _set_threads(1)
        one_s, two_s = throughput_ratio([net.step for net in nets])
        control_one, control_two = throughput_ratio(controls)
    return dict(case=case, dtype=np.dtype(dtype).name, threads_per_model=1, steps=steps,
                one_thread_s=one_s, two_threads_s=two_s, throughput_ratio=2 * one_s / two_s,
                control="numpy.matmul 384x384", control_ratio=2 * control_one / control_two)


def bench_fit(case, dtype=np.float64, shuffle=True, batch_size=32, batches=64, epochs=10,
              repeats=7):
    """fit against the same train_steps called from Python; None without fit.

    fit runs with its defaults but for the learning rate and shuffle; the
    train_steps go over the same batches in order, with no shuffling. Both
    run on this thread with BLAS at one thread: timed in CPU time.
    """
    if not hasattr(cmlp.MLP, "fit"):
        return None
    sizes = CASES[case]["layer_sizes"]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((batch_size * batches, sizes[0])).astype(dtype)
    Y = rng.uniform(0.1, 0.9, (X.shape[0], sizes[-1])).astype(dtype)
    net = cmlp.MLP(sizes, dtype=dtype, seed=0)
    split = [(X[i:i + batch_size], Y[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    train_step = net.train_step

    def by_steps():
        for _ in range(epochs):
            for Xb, Yb in split:
                train_step(Xb, Yb, LR)

    def by_fit():
        net.fit(X, Y, epochs=epochs, batch_size=batch_size, lr=LR, shuffle=shuffle, seed=0)

    with threadpool_limits(limits=1):
        _set_threads(1)
        timed = time_round_robin({"fit": by_fit, "train_steps": by_steps}, repeats, 0.05,
                                 clock=time.thread_time)
    fit_s, steps_s = timed["fit"][0], timed["train_steps"][0]
    return dict(case=case, dtype=np.dtype(dtype).name, shuffle=shuffle, batch_size=batch_size,
                epochs=epochs, n_samples=X.shape[0], fit_s=fit_s, train_steps_s=steps_s,
                overhead=fit_s / steps_s - 1)


# ---------------------------------------------------------------------------
# Targets, machine, output
# ---------------------------------------------------------------------------

def evaluate_targets(results, concurrency, fit):
    rows = []
    for name, case, operation, engine, comparison, limit in TARGETS:
        for r in results:
            if r["case"] != case or r["operation"] != operation:
                continue
            if engine == "gemm_floor":
                if r["gemm_floor_s"] is None:
                    continue
                value = r["median_s"]["cmlp"] / r["gemm_floor_s"]
            elif engine in r["ratio_to_cmlp"]:
                value = r["ratio_to_cmlp"][engine]
            else:
                continue
            met = value >= limit if comparison == ">=" else value <= limit
            rows.append(dict(name=name, value=value, limit=limit, comparison=comparison,
                             met=bool(met), where=f"{r['dtype']}, {r['threads']} thread(s)"))
    if concurrency:
        value = concurrency["throughput_ratio"]
        rows.append(dict(name="two models on two threads", value=value, limit=1.7,
                         comparison=">=", met=bool(value >= 1.7),
                         where=f"{concurrency['case']} {concurrency['dtype']}, BLAS 1 thread"))
    for f in fit or []:
        value = 1 + f["overhead"]
        rows.append(dict(name="fit over its train_steps", value=value, limit=1.10,
                         comparison="<=", met=bool(value <= 1.10),
                         where=f"{f['case']} {f['dtype']}, batch {f['batch_size']}, "
                               f"shuffle={f['shuffle']}"))
    return rows


def machine_info():
    processor = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next(line.split(":", 1)[1].strip() for line in f
                             if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"cmlp": cmlp.__version__, "numpy": np.__version__}
    for name in ("scipy", "torch", "sklearn", "threadpoolctl"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = module.__version__
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return dict(platform=platform.platform(), processor=processor, cpu_count=os.cpu_count(),
                python=platform.python_version(), versions=versions,
                vector_kernels=_kernels.vector_variant(), load_average=load)


def blas_info():
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer")
    return [dict({k: lib.get(k) for k in keep}, filename=os.path.basename(lib["filepath"]))
            for lib in threadpool_info()]


def _fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def markdown(report):
    engines = [e for e in ENGINES if any(e in r["median_s"] for r in report["results"])]
    head = ["case", "dtype", "threads"] + engines + ["GEMM floor", "cmlp / floor",
                                                      "SciPy floor / floor", "cmlp / SciPy floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        label = r["case"] + (" predict" if r["operation"] == "predict" else "")
        cells = [label, r["dtype"], str(r["threads"])]
        for e in engines:
            if e not in r["median_s"]:
                cells.append("—")
            elif e == "cmlp":
                cells.append(f"**{_fmt_time(r['median_s'][e])}**")
            else:
                cells.append(f"{_fmt_time(r['median_s'][e])} (×{r['ratio_to_cmlp'][e]:.3g})")
        floor, scipy_floor = r["gemm_floor_s"], r.get("scipy_floor_s")
        cells.append(_fmt_time(floor))
        cells.append(f"{r['median_s']['cmlp'] / floor:.3f}" if floor else "—")
        cells.append(f"{scipy_floor / floor:.3f}" if floor and scipy_floor else "—")
        cells.append(f"{r['median_s']['cmlp'] / scipy_floor:.3f}" if scipy_floor else "—")
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"Medians of one SGD step (sigmoid layers, MSE), `{report['command']}`, "
           f"{report['created'][:16]} UTC; (×N): that engine's time over cmlp's.", ""]
    out += lines
    if report["concurrency"]:
        c = report["concurrency"]
        out += ["", f"Two {c['case']} {c['dtype']} models on two threads (BLAS at 1 thread): "
                f"{c['throughput_ratio']:.2f}× the throughput of one; two threads of "
                f"{c['control']} alone, at the same time: {c['control_ratio']:.2f}×."]
    if report["fit"]:
        f0 = report["fit"][0]
        out += ["", f"`fit` over the same `train_step`s called from Python (batch "
                f"{f0['batch_size']}, {f0['epochs']} epochs of {f0['n_samples']} samples, "
                "CPU time):", "", "| case | dtype | shuffle | fit | train_steps | overhead |",
                "|---|---|---|---|---|---|"]
        for f in report["fit"]:
            out.append(f"| {f['case']} | {f['dtype']} | {f['shuffle']} | {_fmt_time(f['fit_s'])} "
                       f"| {_fmt_time(f['train_steps_s'])} | {100 * f['overhead']:+.1f}% |")
    out += ["", "| target | value | limit | met | where |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        out.append(f"| {t['name']} | {t['value']:.3g} | {t['comparison']} {t['limit']} | "
                   f"{'yes' if t['met'] else '**no**'} | {t['where']} |")
    blas = ", ".join(sorted({f"{b['internal_api']} {b['version']} ({b['architecture']})"
                             for b in report["blas"] if b["user_api"] == "blas"}))
    m = report["machine"]
    load = (f", load average {m['load_average'][1]:.1f} over the last 5 minutes"
            if m.get("load_average") else "")
    out += ["", f"Machine: {m['processor']}, {m['cpu_count']} CPUs{load}, Python {m['python']}; "
            f"BLAS: {blas}; cmlp's vector kernels: {m['vector_kernels']}; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + "."]
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="check every case, time the tiny and small ones, 3 repeats: "
                             "a smoke run")
    parser.add_argument("--check", action="store_true",
                        help="only check that all engines agree after one step")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32", "float64"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.01,
                        help="seconds per repeat of one engine")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder for latest.json and latest.md")
    args = parser.parse_args(argv)
    timed_cases = args.cases
    if args.quick:
        timed_cases = [c for c in args.cases if c in ("tiny", "small1", "small32")]
        args.repeats, args.min_time = 3, 0.002
    dtypes = [np.dtype(d) for d in args.dtypes]

    checks = [row for case in args.cases for dtype in dtypes for row in check_case(case, dtype)]
    for row in checks:
        print(f"check {row['case']:8s} {row['dtype']:8s} {row['engine']:8s} "
              f"error {row['max_error']:.2e} <= {row['allowed']:.2e}: "
              f"{'ok' if row['ok'] else 'MISMATCH'}", flush=True)
    if not all(row["ok"] for row in checks):
        print("engines disagree after one step: no timing", file=sys.stderr)
        return 1
    if args.check:
        return 0

    results = []
    for case in timed_cases:
        for dtype in dtypes:
            for threads in args.threads:
                for row in bench_cell(case, dtype, threads, args.repeats, args.min_time):
                    results.append(row)
                    print(f"{case:8s} {row['operation']:10s} {dtype.name:8s} {threads} thr: " +
                          "  ".join(f"{k} {_fmt_time(v)}" for k, v in row["median_s"].items()) +
                          (f"  floor {_fmt_time(row['gemm_floor_s'])}"
                           f"  SciPy floor {_fmt_time(row['scipy_floor_s'])}"
                           if row["gemm_floor_s"] else ""), flush=True)
    concurrency = None if "medium" not in timed_cases else bench_concurrency()
    fit = None
    if not args.quick and hasattr(cmlp.MLP, "fit"):
        fit = [bench_fit(case, dtype, shuffle) for case in ("small32", "medium")
               if case in timed_cases for dtype in dtypes for shuffle in (True, False)]
    command = "python benchmarks/run.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    report = dict(
        schema=SCHEMA,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command.replace(str(args.out), "<out>") if args.out != HERE else command,
        machine=machine_info(), blas=blas_info(),
        settings=dict(repeats=args.repeats, min_time_s=args.min_time, lr=LR,
                      dtypes=args.dtypes, threads=args.threads),
        cases={c: CASES[c] for c in timed_cases}, checks=checks, results=results,
        concurrency=concurrency, fit=fit,
        targets=evaluate_targets(results, concurrency, fit))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / "latest.md").write_text(table)
    print()
    print(table)
    # The many-model table beside the single-model one (its own processes,
    # each engine alone; benchmarks/many_models.py).
    many = [sys.executable, str(HERE / "many_models.py"), "--json",
            str(args.out / "many_models.json")] + (["--quick"] if args.quick else [])
    return subprocess.run(many).returncode


if __name__ == "__main__":
    sys.exit(main())
