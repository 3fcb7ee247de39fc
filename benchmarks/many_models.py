"""Many small models at once: K independent networks, one SGD step each per call.

Engines, each when installed, all on the same starting parameters and data:

* ``cmlp loop``: K :class:`cmlp.MLP`, ``train_step`` on each in a Python loop;
* ``cmlp threads``: the same loop split into chunks on a ``ThreadPoolExecutor``;
* ``numba prange``: a hand-written step (sigmoid layers, mse) in ``@njit(parallel=True)``,
  models spread over threads by ``prange``;
* ``jax.vmap``: ``value_and_grad`` of the same loss and the SGD update, ``vmap`` over the
  stacked parameters, under ``jit``;
* ``cmlp ensemble``: :class:`cmlp.MLPEnsemble`, ``train_step`` once per step for all K;
* the same two with 100 steps of every model in one call: ``jax.vmap`` of ``lax.scan``
  under ``jit``, and the ensemble's compiled pass over 100 batches (fit's route).

Cases: K = 64 networks [16, 32, 1], batch 32, float64, 100 steps; K = 1000 copies of
the notebook's 2-1-1 network, one sample each, 100 steps. Each case runs on 1 and on
2 cores (a child process per thread count, its CPU affinity limited to that many
cores and every thread pool sized to match). The ensemble's scaling is also
measured paired, in the process of the most threads: one thread, then all,
back to back, many times, and the median of the ratios taken (timings taken
minutes apart in separate processes carry the machine's drift into their ratio),
and beside it what the cores give to as many one-thread processes run at once,
the most that threads could give on the machine.
Before any timing, every engine's parameters after one step are checked against a
float64 NumPy reference (and the ensemble's against the loop's, bit for bit).
Throughput is model-steps per second, the median of the repeats; ratios are taken
within one run.

    python benchmarks/many_models.py            # both cases, 1 and 2 threads
    python benchmarks/many_models.py --quick    # the checks and a short timing (CI smoke)
    python benchmarks/many_models.py --json out.json --md out.md   # also write the results
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

CASES = {
    "K=64 [16,32,1] b=32": dict(K=64, sizes=(16, 32, 1), batch=32, steps=100),
    "K=1000 [2,1,1] b=1": dict(K=1000, sizes=(2, 1, 1), batch=1, steps=100),
}
LR = 0.1


def _limit_threads(n, first_core=0):
    """Before any engine is imported: n cores (from the first_core-th one on),
    and every pool sized n."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[first_core:first_core + n]
        os.sched_setaffinity(0, cores)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} "
                               f"intra_op_parallelism_threads={n}")


def _problem(case, seed=0):
    import numpy as np

    import cmlp
    K, sizes, n = case["K"], case["sizes"], case["batch"]
    rng = np.random.default_rng(seed)
    ens = cmlp.MLPEnsemble(K, list(sizes), seed=list(range(K)))
    X = rng.standard_normal((K, n, sizes[0]))
    Y = rng.uniform(0.1, 0.9, (K, n, sizes[-1]))
    return ens, X, Y


def _split(params, sizes):
    """(K, P) flat buffers -> [W1 (K, h, n_in), b1 (K, h), W2, b2], copies."""
    out, at = [], 0
    K = params.shape[0]
    for n_in, n_out in zip(sizes, sizes[1:]):
        out.append(params[:, at:at + n_out * n_in].reshape(K, n_out, n_in).copy())
        at += n_out * n_in
        out.append(params[:, at:at + n_out].copy())
        at += n_out
    return out


def _join(parts):
    import numpy as np
    K = parts[0].shape[0]
    return np.concatenate([np.asarray(p).reshape(K, -1) for p in parts], axis=1)


def reference_step(params, X, Y, sizes, lr):
    """One SGD step of every model, float64 NumPy, written from the maths."""
    import numpy as np
    W1, b1, W2, b2 = _split(params, sizes)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    n, k = X.shape[1], Y.shape[2]
    a1 = sig(np.einsum("kni,khi->knh", X, W1) + b1[:, None])
    a2 = sig(np.einsum("knh,koh->kno", a1, W2) + b2[:, None])
    d2 = 2 * (a2 - Y) / (n * k) * a2 * (1 - a2)
    d1 = np.einsum("kno,koh->knh", d2, W2) * a1 * (1 - a1)
    grads = [np.einsum("knh,kni->khi", d1, X), d1.sum(1), np.einsum("kno,knh->koh", d2, a1),
             d2.sum(1)]
    return _join([p - lr * g for p, g in zip([W1, b1, W2, b2], grads)])


# -- engines: each returns (step(), params()) over its own copy of the starting point --

def engine_cmlp_loop(ens, X, Y, n_threads):
    nets = [ens.model(k) for k in range(ens.n_models)]

    def step():
        for k, net in enumerate(nets):
            net.train_step(X[k], Y[k], LR)
    return step, lambda: _stack([net.params for net in nets])


def engine_cmlp_threads(ens, X, Y, n_threads):
    from concurrent.futures import ThreadPoolExecutor
    nets = [ens.model(k) for k in range(ens.n_models)]
    pool = ThreadPoolExecutor(n_threads)
    chunks = [range(i, len(nets), n_threads) for i in range(n_threads)]

    def run(chunk):
        for k in chunk:
            nets[k].train_step(X[k], Y[k], LR)

    def step():
        list(pool.map(run, chunks))
    return step, lambda: _stack([net.params for net in nets])


def engine_ensemble(ens, X, Y, n_threads):
    import cmlp
    e = cmlp.MLPEnsemble(ens.n_models, list(ens.layer_sizes), seed=[0] * ens.n_models,
                         n_threads=n_threads)
    e.params[:] = ens.params

    def step():
        e.train_step(X, Y, LR)
    step.ensemble = e   # for the paired scaling measurement
    return step, lambda: e.params.copy()


def engine_numba(ens, X, Y, n_threads):
    import numba
    import numpy as np
    numba.set_num_threads(n_threads)
    W1, b1, W2, b2 = _split(ens.params, ens.layer_sizes)
    kernel = _numba_kernel()

    def step():
        kernel(W1, b1, W2, b2, X, Y, LR)
    kernel(W1.copy(), b1.copy(), W2.copy(), b2.copy(), X, Y, LR)   # compile first
    return step, lambda: _join([W1, b1, W2, b2]) + np.zeros(1)


_NUMBA = None


def _numba_kernel():
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA
    import math

    import numba
    import numpy as np

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def train_step(W1, b1, W2, b2, X, Y, lr):
        K, n, n_in = X.shape
        h = W1.shape[1]
        k_out = W2.shape[1]
        for m in numba.prange(K):
            a1 = np.empty((n, h))
            a2 = np.empty((n, k_out))
            for i in range(n):
                for j in range(h):
                    z = b1[m, j]
                    for q in range(n_in):
                        z += X[m, i, q] * W1[m, j, q]
                    a1[i, j] = 1.0 / (1.0 + math.exp(-z))
                for o in range(k_out):
                    z = b2[m, o]
                    for j in range(h):
                        z += a1[i, j] * W2[m, o, j]
                    a2[i, o] = 1.0 / (1.0 + math.exp(-z))
            d2 = np.empty((n, k_out))
            d1 = np.zeros((n, h))
            for i in range(n):
                for o in range(k_out):
                    a = a2[i, o]
                    d2[i, o] = 2.0 * (a - Y[m, i, o]) / (n * k_out) * a * (1.0 - a)
                    for j in range(h):
                        d1[i, j] += d2[i, o] * W2[m, o, j]
                for j in range(h):
                    d1[i, j] *= a1[i, j] * (1.0 - a1[i, j])
            for o in range(k_out):
                gb = 0.0
                for i in range(n):
                    gb += d2[i, o]
                for j in range(h):
                    g = 0.0
                    for i in range(n):
                        g += d2[i, o] * a1[i, j]
                    W2[m, o, j] -= lr * g
                b2[m, o] -= lr * gb
            for j in range(h):
                gb = 0.0
                for i in range(n):
                    gb += d1[i, j]
                for q in range(n_in):
                    g = 0.0
                    for i in range(n):
                        g += d1[i, j] * X[m, i, q]
                    W1[m, j, q] -= lr * g
                b1[m, j] -= lr * gb

    _NUMBA = train_step
    return train_step


def engine_jax(ens, X, Y, n_threads):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def loss(p, x, y):
        W1, b1, W2, b2 = p
        a1 = jax.nn.sigmoid(x @ W1.T + b1)
        a2 = jax.nn.sigmoid(a1 @ W2.T + b2)
        return jnp.mean((a2 - y) ** 2)

    def one(p, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        return [w - LR * gw for w, gw in zip(p, g)], value

    step_all = jax.jit(jax.vmap(one))
    state = {"p": [jnp.asarray(a) for a in _split(ens.params, ens.layer_sizes)]}
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    jax.block_until_ready(step_all(state["p"], Xj, Yj))   # compile first

    def step():
        state["p"], _ = step_all(state["p"], Xj, Yj)
        jax.block_until_ready(state["p"])
    import numpy as np
    return step, lambda: _join([np.asarray(a) for a in state["p"]])


#: steps each model takes in one call of the many-steps engines
STEPS_PER_CALL = 100


def engine_ensemble_steps(ens, X, Y, n_threads):
    """STEPS_PER_CALL steps of every model in one compiled call (the route of
    fit's epochs): the batch repeated STEPS_PER_CALL times, taken in order."""
    import numpy as np

    import cmlp
    e = cmlp.MLPEnsemble(ens.n_models, list(ens.layer_sizes), seed=[0] * ens.n_models,
                         n_threads=n_threads)
    e.params[:] = ens.params
    n = X.shape[1]
    Xs = np.ascontiguousarray(np.tile(X, (1, STEPS_PER_CALL, 1)))
    Ys = np.ascontiguousarray(np.tile(Y, (1, STEPS_PER_CALL, 1)))
    rates = np.full(e.n_models, LR)

    def step():
        e._run(Xs, Ys, None, n, rates, 0)
    step.ensemble = e
    return step, lambda: e.params.copy()


def engine_jax_scan(ens, X, Y, n_threads):
    """jax.vmap over the models of lax.scan over STEPS_PER_CALL steps, under jit."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    def loss(p, x, y):
        W1, b1, W2, b2 = p
        a1 = jax.nn.sigmoid(x @ W1.T + b1)
        a2 = jax.nn.sigmoid(a1 @ W2.T + b2)
        return jnp.mean((a2 - y) ** 2)

    def steps(p, x, y):
        def one(p, _):
            g = jax.grad(loss)(p, x, y)
            return [w - LR * gw for w, gw in zip(p, g)], None
        return jax.lax.scan(one, p, None, length=STEPS_PER_CALL)[0]

    run = jax.jit(jax.vmap(steps))
    state = {"p": [jnp.asarray(a) for a in _split(ens.params, ens.layer_sizes)]}
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    jax.block_until_ready(run(state["p"], Xj, Yj))   # compile first

    def step():
        state["p"] = run(state["p"], Xj, Yj)
        jax.block_until_ready(state["p"])
    return step, lambda: _join([np.asarray(a) for a in state["p"]])


ENGINES = {
    "cmlp loop": (engine_cmlp_loop, None),
    "cmlp threads": (engine_cmlp_threads, None),
    "numba prange": (engine_numba, "numba"),
    "jax.vmap (jit)": (engine_jax, "jax"),
    "cmlp ensemble": (engine_ensemble, None),
    f"jax.vmap of lax.scan, {STEPS_PER_CALL} steps a call": (engine_jax_scan, "jax"),
    f"cmlp ensemble, {STEPS_PER_CALL} steps a call": (engine_ensemble_steps, None),
}


def _stack(rows):
    import numpy as np
    return np.stack(rows)


def _installed(module):
    import importlib.util
    return module is None or importlib.util.find_spec(module) is not None


def worker(n_threads, engine, quick, first_core=0):
    """One engine on every case, in a process of its own (no other engine's
    idle threads beside it): model-steps per second for each case."""
    _limit_threads(n_threads, first_core)
    import numpy as np
    make, _ = ENGINES[engine]
    results = {}
    for name, case in CASES.items():
        ens, X, Y = _problem(case)
        per_call = STEPS_PER_CALL if "a call" in engine else 1
        reference = ens.params
        for _ in range(per_call):
            reference = reference_step(reference, X, Y, case["sizes"], LR)
        steps = 5 if quick else case["steps"]
        if per_call > 1:
            steps = max(1, steps // per_call * (2 if not quick else 1))
        repeats = 1 if quick else 7
        step, params = make(ens, X, Y, n_threads)
        step()
        after = params()
        error = float(np.max(np.abs(after - reference)) / np.max(np.abs(reference)))
        if not error < 1e-10 * per_call:
            raise SystemExit(f"{engine} disagrees with the float64 reference on {name}: "
                             f"relative error {error:.2e}")
        if engine == "cmlp ensemble":
            alone = ens.params.copy()
            for k in range(ens.n_models):   # each model alone, as MLP trains it
                net = ens.model(k)
                net.train_step(X[k], Y[k], LR)
                alone[k] = net.params
            if not np.array_equal(after, alone):
                raise SystemExit(f"cmlp ensemble differs from MLP alone on {name}")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(steps):
                step()
            times.append(time.perf_counter() - started)
        results[name] = case["K"] * steps * per_call / sorted(times)[len(times) // 2]
        ensemble = getattr(step, "ensemble", None)
        if ensemble is not None and n_threads > 1:
            results[f"{name}, paired scaling"] = _paired_scaling(step, ensemble, n_threads,
                                                                 steps, 3 if quick else 41)
    return results


def _paired_scaling(step, ensemble, n_threads, steps, pairs):
    """The ensemble's throughput on n_threads over one thread's, in one process:
    the median over pairs of back-to-back timings, one thread then n_threads,
    so that both see the same machine (its load, its clock) within a pair."""
    ratios = []
    for _ in range(pairs):
        seconds = []
        for threads in (1, n_threads):
            ensemble.n_threads = threads
            started = time.perf_counter()
            for _ in range(steps):
                step()
            seconds.append(time.perf_counter() - started)
        ratios.append(seconds[0] / seconds[1])
    ensemble.n_threads = n_threads
    return sorted(ratios)[len(ratios) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--json", help="write the model-steps per second here (JSON)")
    parser.add_argument("--md", help="write the tables here (Markdown), with the command, "
                                     "date and machine")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.engine, args.quick, args.core)))
        return
    runs = {n: {name: {} for name in CASES} for n in args.threads}
    for n in args.threads:
        for engine, (_, module) in ENGINES.items():
            if not _installed(module):
                continue
            for name, rate in _workers(n, engine, args.quick, [0])[0].items():
                if name.endswith(", paired scaling"):
                    runs[n][name.removesuffix(", paired scaling")][f"{engine}, paired scaling"] \
                        = rate
                else:
                    runs[n][name][engine] = rate
        if n > 1:
            # What n cores give to n independent one-thread processes of the
            # ensemble, run at once: the most n threads could give on this machine.
            for name, rates in zip(CASES, zip(*[r.values() for r in _workers(
                    1, "cmlp ensemble", args.quick, list(range(n)))])):
                runs[n][name][CEILING] = sum(rates)
    table = _table(runs)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(_header(args) + "\n" + table + "\n")


CEILING = "cmlp ensemble, one thread in each of n processes at once"


def _workers(n_threads, engine, quick, cores):
    """The results of one worker process per core in cores, run at the same time."""
    cmd = [sys.executable, __file__, "--worker", str(n_threads), "--engine", engine]
    running = [subprocess.Popen(cmd + ["--core", str(core)] + (["--quick"] if quick else []),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for core in cores]
    results = []
    for process in running:
        out, err = process.communicate()
        if process.returncode != 0:
            sys.stderr.write(err)
            raise SystemExit(process.returncode)
        results.append({name: rate for name, rate in json.loads(out.strip().splitlines()[-1])
                        .items() if not name.endswith(", paired scaling")}
                       if len(cores) > 1 else json.loads(out.strip().splitlines()[-1]))
    return results


def _header(args):
    """The command, the date and the machine of a run, for the Markdown file."""
    import platform

    processor = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            processor = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), processor)
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else None
    command = "python benchmarks/many_models.py" + (" --quick" if args.quick else "")
    return (f"`{command}`, {time.strftime('%Y-%m-%dT%H:%M', time.gmtime())} UTC, on {processor} "
            f"({os.cpu_count()} CPUs" + (f", load average {load:.1f}" if load is not None else "")
            + "). Model-steps per second, the median of the repeats; each cell's ratio is the "
            "ensemble's throughput over that engine's, in the same run.\n")


def _table(runs):
    lines = []
    for name in CASES:
        lines.append(f"\n{name}: model-steps per second (ratio to cmlp ensemble's)")
        threads = sorted(runs)
        lines.append("| engine | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in threads)
                     + " |")
        lines.append("|---|" + "---|" * len(threads))
        engines = [e for e in [*ENGINES, CEILING] if any(e in runs[n][name] for n in threads)]
        paired = [(e, n, runs[n][name][f"{e}, paired scaling"]) for n in threads for e in engines
                  if f"{e}, paired scaling" in runs[n][name]]
        for engine in engines:
            cells = []
            for n in threads:
                rate = runs[n][name].get(engine)
                ours = runs[n][name].get("cmlp ensemble")
                cells.append("-" if rate is None else
                             f"{rate / 1e3:,.1f}k ({ours / rate:.2f}x)" if ours else f"{rate:,.0f}")
            lines.append(f"| {engine} | " + " | ".join(cells) + " |")
        if len(threads) > 1 and "cmlp ensemble" in runs[threads[0]][name]:
            base = runs[threads[0]][name]["cmlp ensemble"]
            lines.append("")
            lines.append("ensemble scaling, separate processes: " + ", ".join(
                f"{n} threads {runs[n][name]['cmlp ensemble'] / base:.2f}x" for n in threads[1:]))
            ceilings = [(n, runs[n][name][CEILING] / base) for n in threads[1:]
                        if CEILING in runs[n][name]]
            if ceilings:
                lines.append("")
                lines.append("what the machine gives: " + ", ".join(
                    f"{n} one-thread processes at once {ratio:.2f}x one alone"
                    for n, ratio in ceilings))
        if paired:
            lines.append("")
            lines.append("scaling paired in one process (median over back-to-back timings of "
                         "one thread and of n): " + ", ".join(
                             f"{e} {n} threads {ratio:.2f}x" for e, n, ratio in paired))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
