"""Coverage-guided fuzzing of cmlp's public API with atheris (libFuzzer for Python).

Each input is a byte string that decides an architecture and a sequence of
calls -- forward, predict, backward, train_step, sgd_step, load_state_dict,
fit, save and load (of the saved bytes, or of those bytes damaged) --
with arrays whose dtype, shape, memory layout and raw bits (so any NaN
payload, inf, subnormal) come from the fuzzer. What must hold for every input:

* a call either returns or raises TypeError, ValueError, RuntimeError or
  (fit's divergence) FloatingPointError with a message; anything else, and
  any crash (which libFuzzer catches), is a bug;
* a refused call leaves the parameters bit for bit as they were (a diverged
  fit leaves them finite);
* load gives back the saved model, or refuses damaged bytes;
* predict and forward agree (NaN where NaN), and return the documented shape and dtype;
* a fit that returns predicts finite numbers on its training data;
* ndarray subclasses whose attributes lie, tampered pickled states, finalizers
  that re-enter the model and snapshots taken while another thread restores
  never crash, hang or tear (issue 13).

Run it (``pip install atheris``), from the repository root:

    python fuzz/fuzz_cmlp.py -max_total_time=600          # ten minutes
    python fuzz/fuzz_cmlp.py fuzz/corpus -runs=100000     # keep a corpus between runs

Coverage guides the search through cmlp's Python layer (instrumented below);
the compiled kernels are reached with every shape and value the validation
lets through, and a memory error there crashes the process, which libFuzzer
reports with the input that caused it. Run it against the build of
tools/sanitize.sh to catch silent memory errors too.
"""
import io
import sys

import atheris

with atheris.instrument_imports(include=["cmlp"]):
    import numpy as np

    import cmlp

ACTIVATIONS = ["sigmoid", "tanh", "relu", "identity", "softmax"]
LOSSES = ["mse", "half_sse", "bce", "cross_entropy", "hinge"]
DTYPES = ["float64", "float32", "float16", "int8", "int64", "uint64", "bool", "complex128",
          "longdouble", ">f8", "<f4", "object", "U3"]
# FloatingPointError: fit's TrainingDivergedError, raised with the parameters restored.
DOCUMENTED = (TypeError, ValueError, RuntimeError, FloatingPointError)
REFUSED = object()


def draw_shape(fdp, n_in, n_out_like):
    """Mostly the shapes cmlp expects, but any rank from 0 to 3 with small dims."""
    kind = fdp.ConsumeIntInRange(0, 6)
    n = fdp.ConsumeIntInRange(0, 9)
    if kind <= 2:
        return (n, n_in)
    if kind == 3:
        return (n_in,)
    if kind == 4:
        return (n, n_out_like)
    rank = fdp.ConsumeIntInRange(0, 3)
    return tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(rank))


def draw_array(fdp, shape):
    dtype = np.dtype(fdp.PickValueInList(DTYPES))
    size = int(np.prod(shape))
    if dtype.kind in "biufc":
        raw = fdp.ConsumeBytes(size * dtype.itemsize)
        raw = raw + bytes(size * dtype.itemsize - len(raw))
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if dtype.kind == "b":
            array = array.view(np.uint8).astype(bool)  # only 0 and 1 are valid bools
    elif dtype.kind == "O":
        array = np.array([fdp.ConsumeRegularFloat() for _ in range(size)],
                         dtype=object).reshape(shape)
    else:
        array = np.array([fdp.ConsumeUnicode(3) for _ in range(size)], dtype=dtype).reshape(shape)
    return relayout(fdp, array)


def relayout(fdp, array):
    """The same values in another memory layout, or as nested lists."""
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 1:
        return np.asfortranarray(array)
    if how == 2 and array.ndim:
        return np.repeat(array, 2, axis=-1)[..., ::2]
    if how == 3 and array.ndim:
        flip = (slice(None, None, -1),) * array.ndim
        return array[flip].copy()[flip]
    if how == 4:
        array = array.copy()
        array.flags.writeable = False
        return array
    if how == 5 and array.dtype.kind in "biufc":
        raw = bytearray(array.nbytes + 1)
        moved = np.frombuffer(raw, dtype=array.dtype, count=array.size,
                              offset=1).reshape(array.shape)
        moved[...] = array
        return moved
    if how == 6:
        return array.tolist()
    return array


def call(function, *args, **kwargs):
    """function(...), or REFUSED if it refused in a documented way."""
    try:
        return function(*args, **kwargs)
    except DOCUMENTED as error:
        if not str(error):
            raise AssertionError(f"{type(error).__name__} without a message") from error
        return REFUSED


# ---------------------------------------------------------------------------
# Hostile use (issue 13)
# ---------------------------------------------------------------------------

def _lies(real):
    """Attributes an ndarray subclass may override, each with a lie about real."""
    return {
        "shape": property(lambda self: (1,)),
        "ndim": property(lambda self: 1 if real.ndim != 1 else 2),
        "dtype": property(lambda self: np.dtype(np.float64 if real.dtype != np.float64
                                                else np.float32)),
        "flags": property(lambda self: type("Flags", (), dict(
            c_contiguous=True, f_contiguous=True, aligned=True, writeable=True))()),
        "strides": property(lambda self: (8,) * real.ndim),
        "size": property(lambda self: 1),
        "reshape": lambda self, *shape, **kw: np.zeros((10**5, 1)),
    }


def liar(fdp, array):
    """array viewed as a subclass whose chosen attributes lie."""
    real = np.asarray(array)
    lies = _lies(real)
    chosen = {name: lies[name] for name in lies if fdp.ConsumeBool()}
    return real.view(type("Liar", (np.ndarray,), chosen))


def lying_subclass_call(fdp, net, n_in, n_out, before):
    """A lying subclass is refused, or read as what it really is (never a crash)."""
    X = np.ascontiguousarray(draw_array(fdp, draw_shape(fdp, n_in, n_out)))
    target = fdp.ConsumeIntInRange(0, 3)
    if target == 0:
        call(net.predict, liar(fdp, X))
    elif target == 1:
        out = np.zeros((X.shape[0] if X.ndim == 2 else 1, n_out), dtype=net.dtype)
        if fdp.ConsumeBool():
            out = out[::-1]
        call(net.predict, X, out=liar(fdp, out))
    elif target == 2:
        Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
        if call(net.train_step, liar(fdp, X), liar(fdp, Y), 0.01) is REFUSED:
            assert net.params.tobytes() == before.tobytes(), "a refused step changed params"
    else:
        grads = net.grads if fdp.ConsumeBool() else np.ones(fdp.ConsumeIntInRange(1, 40),
                                                              dtype=net.dtype)
        kind = cmlp.Adam if fdp.ConsumeBool() else cmlp.SGD
        opt = call(kind, liar(fdp, net.params), liar(fdp, grads))
        if opt is not REFUSED:
            opt.step()


def tampered_pickle(fdp, net):
    """Unpickling a tampered state is refused, or gives a model that works."""
    state = net.__getstate__()
    key = fdp.PickValueInList(sorted(state))
    state[key] = fdp.PickValueInList([
        None, 1.5, "sigmoid", (), (2, -1, 2), (0, 3), (2**40, 2), ("sigmoid",) * 9, ("bogus",),
        np.int32, np.zeros(fdp.ConsumeIntInRange(0, 50)), np.float64(3.0), [1, 2]])
    twin = cmlp.MLP.__new__(cmlp.MLP)
    if call(twin.__setstate__, state) is not REFUSED:
        out = twin.predict(np.ones((2, twin.layer_sizes[0])))
        assert out.shape == (2, twin.layer_sizes[-1])


def reentrant_finalizers(fdp, net, n_in):
    """A finalizer that uses the model inside one of its calls works or raises
    RuntimeError: a hang here is a timeout, which libFuzzer reports."""
    import gc

    def use():
        call(net.predict, np.ones((1, n_in)))

    class Cycle:
        def __init__(self):
            self.me = self

        def __del__(self):
            use()

    old = gc.get_threshold()
    gc.set_threshold(fdp.ConsumeIntInRange(1, 3))
    try:
        for n in range(2, 2 + fdp.ConsumeIntInRange(1, 40)):
            Cycle()
            call(net.forward, np.ones((n, n_in)))
    finally:
        gc.set_threshold(*old)


def concurrent_snapshots(fdp, net):
    """Snapshots taken while another thread restores are one state or the other."""
    import threading

    states = [net.params.copy(), np.linspace(-1, 1, net.params.shape[0]).astype(net.dtype)]
    rounds = fdp.ConsumeIntInRange(1, 50)

    def restore():
        for i in range(rounds):
            net._engine.restore(states[i % 2])

    thread = threading.Thread(target=restore)
    thread.start()
    snapshots = [net._engine.snapshot() for _ in range(rounds)]
    snapshots += [np.concatenate([v.ravel() for v in net.state_dict().values()])]
    thread.join()
    allowed = {state.tobytes() for state in states}
    assert all(s.tobytes() in allowed for s in snapshots), "a torn snapshot"


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    depth = fdp.ConsumeIntInRange(1, 3)
    sizes = [fdp.ConsumeIntInRange(1, 6) for _ in range(depth + 1)]
    activations = [fdp.PickValueInList(ACTIVATIONS) for _ in range(depth)]
    dtype = np.float32 if fdp.ConsumeBool() else np.float64
    net = cmlp.MLP(sizes, activation=activations, dtype=dtype, seed=0)
    n_in, n_out = sizes[0], sizes[-1]
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        action = fdp.ConsumeIntInRange(0, 12)
        before = net.params.copy()
        if action <= 1:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            kept = call(net.forward, X)
            predicted = call(net.predict, X)
            if (kept is REFUSED) != (predicted is REFUSED):
                raise AssertionError("forward and predict disagree on whether X is valid")
            if kept is not REFUSED:
                assert kept.dtype == net.dtype and kept.shape[-1] == n_out
                # Equal values; a NaN's payload bits carry no meaning and may differ.
                assert np.array_equal(kept, predicted, equal_nan=True), "predict differs from forward"
        elif action == 2:
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            call(net.backward, Y, loss=fdp.PickValueInList(LOSSES))
        elif action == 3:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            lr = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
            if call(net.train_step, X, Y, lr, loss=fdp.PickValueInList(LOSSES)) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused step changed params"
        elif action == 4:
            if call(net.sgd_step, fdp.ConsumeFloat()) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused step changed params"
        elif action == 5:
            state = {name: draw_array(fdp, value.shape if fdp.ConsumeBool() else
                                      draw_shape(fdp, n_in, n_out))
                     for name, value in net.named_parameters()}
            if call(net.load_state_dict, state) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused load changed params"
        elif action == 6:
            out = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            call(net.forward, draw_array(fdp, draw_shape(fdp, n_in, n_out)), out=out)
        elif action == 7:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            history = call(net.fit, X, Y, epochs=fdp.ConsumeIntInRange(0, 3),
                           batch_size=fdp.ConsumeIntInRange(1, 8), lr=fdp.ConsumeFloat(),
                           loss=fdp.PickValueInList(LOSSES),
                           optimizer=fdp.PickValueInList(["sgd", "adam"]),
                           momentum=fdp.ConsumeProbability())
            if history is REFUSED:
                # Refused up front, or diverged and restored to the start of an epoch.
                assert np.isfinite(net.params).all() or not np.isfinite(before).all()
            else:
                # A fit that succeeds, or stops on divergence, leaves finite parameters
                # wherever they started finite, and one that returns predicts finite
                # numbers on its (finite) training data.
                assert np.isfinite(net.params).all() or not np.isfinite(before).all()
                if history.epochs and np.isfinite(before).all():
                    assert np.isfinite(net.predict(X)).all(), "fit returned a model predicting NaN"
        elif action == 9:
            lying_subclass_call(fdp, net, n_in, n_out, before)
        elif action == 10:
            tampered_pickle(fdp, net)
        elif action == 11:
            reentrant_finalizers(fdp, net, n_in)
        elif action == 12:
            concurrent_snapshots(fdp, net)
        elif action == 8:
            saved = io.BytesIO()
            net.save(saved)
            data = bytearray(saved.getvalue())
            for _ in range(fdp.ConsumeIntInRange(0, 3)):  # damage it, or not
                data[fdp.ConsumeIntInRange(0, len(data) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
            loaded = call(cmlp.load, io.BytesIO(bytes(data)))
            if loaded is not REFUSED:
                assert repr(loaded) == repr(net), "load gave another architecture"
                assert np.array_equal(loaded.params, net.params, equal_nan=True), \
                    "load gave other parameters"
        assert net.params.shape == before.shape and net.params.dtype == net.dtype


def main():
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
