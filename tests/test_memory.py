"""Memory: nothing allocated per step, nothing kept per call, everything returned on delete.

Two meters: tracemalloc (every allocation NumPy or Python makes, attributed to
the innermost Python line) and the process's resident set size. The tracemalloc
counts are filtered to cmlp's own files and the measured loop, so the
measurement's own bookkeeping does not count. Within that, a step allocates
zero bytes; elsewhere "flat" means that what grows is not per call: NumPy and
CPython keep a few small caches (a dtype's name, a seed's entropy), a handful
of blocks however many calls are made, while a leak keeps one per call.

The million-call test is marked ``slow``: ``python -m pytest -m slow`` runs
it (CI does too); ``CMLP_MEMORY_CALLS`` sets another count.
"""
import gc
import os
import pathlib
import sys
import tracemalloc

import numpy as np
import pytest

import cmlp

CMLP_FILES = str(pathlib.Path(cmlp.__file__).parent / "*")

# Under AddressSanitizer (tools/sanitize.sh) freed memory sits in a quarantine
# and every allocation grows: these measurements would measure ASan.
pytestmark = pytest.mark.skipif(bool(os.environ.get("CMLP_SANITIZED")),
                                reason="memory is not measurable under ASan")


def resident_bytes():
    """The process's resident set size now (Linux), or None."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def small_problem(dtype=np.float64, batch=32):
    rng = np.random.default_rng(0)
    net = cmlp.MLP([16, 32, 4], activation=["tanh", "sigmoid"], dtype=dtype, seed=0)
    X = rng.normal(size=(batch, 16)).astype(dtype)
    Y = rng.uniform(size=(batch, 4)).astype(dtype)
    return net, X, Y


class Traced:
    """Allocations made from cmlp's files or from given lines, between start() and stop()."""

    def __init__(self, *lines):
        self.filters = [tracemalloc.Filter(True, CMLP_FILES)] + [
            tracemalloc.Filter(True, __file__, lineno=line) for line in lines]

    def __enter__(self):
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        tracemalloc.stop()

    def snapshot(self):
        return tracemalloc.take_snapshot().filter_traces(self.filters)

    @staticmethod
    def grown(before, after):
        """(bytes, blocks) allocated after and not before."""
        stats = after.compare_to(before, "lineno")
        return sum(s.size_diff for s in stats), sum(s.count_diff for s in stats)


def steps(net, X, Y, out, count):
    for _ in range(count):
        net.train_step(X, Y, 0.01)  # STEP


def forwards(net, X, out, count):
    for _ in range(count):
        net.forward(X, out=out)  # FORWARD


def line_of(marker):
    source = pathlib.Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(source, 1) if text.rstrip().endswith("# " + marker))


@pytest.mark.parametrize("batch", [1, 32])
def test_train_step_allocates_zero_bytes_over_ten_thousand_calls(dtype, batch):
    net, X, Y = small_problem(dtype, batch)
    out = np.empty((batch, 4), dtype=dtype)
    steps(net, X, Y, out, 3)  # warm-up: the work buffers for this batch size
    forwards(net, X, out, 3)
    with Traced(line_of("STEP"), line_of("FORWARD")) as traced:
        before = traced.snapshot()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        steps(net, X, Y, out, 10_000)
        forwards(net, X, out, 10_000)
        peak = tracemalloc.get_traced_memory()[1] - start
        after = traced.snapshot()
    assert Traced.grown(before, after) == (0, 0)
    # Not even transiently: a per-step copy of X (batch x 16 doubles) or of the
    # activations would show in the peak; a Python float return value does not.
    assert peak < 512, f"{peak} bytes allocated at once during the steps"


def test_a_refused_call_keeps_nothing():
    net, X, Y = small_problem()
    bad = [lambda: net.forward(np.ones((3, 5))), lambda: net.train_step(X, Y[:, :2], 0.1),
           lambda: net.train_step(X, Y, -1.0), lambda: net.backward(Y, loss="hinge"),
           lambda: net.forward(X, out=np.empty((32, 4), dtype=np.float32)),
           lambda: net.load_state_dict({"layer0.weight": 1})]

    def refuse_all(count):
        for _ in range(count):
            for call in bad:
                try:
                    call()  # REFUSED
                except (TypeError, ValueError, RuntimeError):
                    pass

    refuse_all(1000)  # warm-up: exceptions and NumPy fill their caches and free lists
    with Traced(line_of("REFUSED")) as traced:
        before = traced.snapshot()
        refuse_all(2000)
        after = traced.snapshot()
    grown, blocks = Traced.grown(before, after)
    calls = 2000 * len(bad)
    assert grown < calls, f"{grown} bytes in {blocks} blocks kept by {calls} refused calls"


@pytest.mark.slow  # 1,500 models, seconds
def test_creating_and_dropping_models_returns_memory():
    def churn():
        for seed in range(300):
            net = cmlp.MLP([64, 128, 10], seed=seed)  # CREATE
            net.train_step(np.ones((16, 64)), np.zeros((16, 10)), 0.1)
            net.predict(np.ones((3, 64)))
            del net
        gc.collect()

    churn()
    rss = []
    with Traced(line_of("CREATE")) as traced:
        before = traced.snapshot()
        for _ in range(5):
            churn()
            rss.append(resident_bytes())
        after = traced.snapshot()
    grown, blocks = Traced.grown(before, after)
    assert grown < 1500, f"{grown} bytes in {blocks} blocks kept by 1500 dropped models"
    if rss[0] is not None:
        # Each round allocates ~60 MB and frees it; the heap may keep some
        # pages, but round after round must not add to them.
        assert rss[-1] - rss[0] < 8 * 2**20, [r / 2**20 for r in rss]


@pytest.mark.slow
def test_a_million_train_and_predict_calls_keep_memory_flat():
    calls = int(os.environ.get("CMLP_MEMORY_CALLS", 1_000_000))
    checkpoints = 10
    net = cmlp.MLP([4, 8, 1], seed=0)
    X, Y = np.ones((1, 4)), np.ones((1, 1))
    x = np.ones(4)

    def train_and_predict(count):
        for _ in range(count):
            net.train_step(X, Y, 0.01)  # MILLION
            net.predict(x)  # MILLION

    train_and_predict(1000)
    traced_sizes, rss = [], []
    with Traced(line_of("MILLION")) as traced:
        first = traced.snapshot()
        for _ in range(checkpoints):
            train_and_predict(calls // checkpoints)
            traced_sizes.append(Traced.grown(first, traced.snapshot())[0])
            rss.append(resident_bytes())
    assert max(traced_sizes) < 1024, traced_sizes
    if rss[0] is not None:
        assert rss[-1] - rss[0] < 2**20, [r / 2**20 for r in rss]
    assert np.isfinite(net.params).all()
    print(f"{calls} train_step + predict calls: traced growth {traced_sizes}, "
          f"RSS {[round(r / 2**20, 2) for r in rss]} MiB", file=sys.stderr)
